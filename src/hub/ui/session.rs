//! Who is looking at the web page, and whether a form came from it.
//!
//! Logging in checks the same users, with the same code, as `POST
//! /api/auth/token/`, and keeps the two JWTs it issues in cookies
//! (`HttpOnly; SameSite=Strict; Path=/`, and `Secure` when the hub is
//! reached over https): the access token, renewed from the refresh token
//! when it expires, and the refresh token, whose end (a day after log in)
//! ends the session.
//!
//! Every request that changes something (every POST but the log in's)
//! must carry the session's CSRF token, in the form field `csrf` or the
//! header `X-CSRF-Token` (htmx sends it from `hx-headers`): a keyed hash
//! of the refresh token's `jti` ([`Keys::csrf_token`]), which another
//! site cannot read or compute. POSTs whose `Origin` or `Sec-Fetch-Site`
//! says they come from another site are refused too, the log in's
//! included.

use crate::hub::api::ApiState;
use crate::hub::auth::Keys;
use crate::hub::store::Store;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The cookie holding the access token.
pub const ACCESS_COOKIE: &str = "ferry_access";
/// The cookie holding the refresh token.
pub const REFRESH_COOKIE: &str = "ferry_refresh";
/// The form field, and the header, carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The header htmx sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The logged-in user of a request, as handlers receive it.
#[derive(Clone, Debug)]
pub struct Session {
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub username: String,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
}

impl Session {
    /// The frame of a page of `section` for this session.
    pub fn layout(&self, section: &'static str) -> super::frame::Layout {
        super::frame::Layout::new(&self.username, &self.csrf, section)
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v)
        })
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: `value` for `max_age` seconds (0 deletes it),
/// unreadable to scripts, sent only with requests from the hub's own
/// pages, over https only when `secure`.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a JWT and these attributes are header-safe")
}

/// Whether cookies must be `Secure`: the hub serves https, or is reached
/// through an https `public_url`.
pub fn secure(s: &ApiState) -> bool {
    s.tls
        || s.settings
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
}

/// Whether a POST may come from where its headers say it comes from: not
/// when `Sec-Fetch-Site` is there and says another site (or a sibling
/// subdomain), nor when `Origin` is there and names another host and port
/// than the request's `Host` or `public_url`'s. Without either header
/// (curl, old browsers) the CSRF token alone decides. Returns why not.
pub fn origin_allowed(headers: &HeaderMap, public_url: Option<&str>) -> Result<(), &'static str> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Err("the form was sent from another site (Sec-Fetch-Site)");
    }
    let Some(origin) = get("origin") else {
        return Ok(());
    };
    let authority = |url: &str| {
        url.split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or("").to_ascii_lowercase())
    };
    let Some(from) = authority(origin) else {
        return Err("the form was sent from a page with no origin (Origin: null)");
    };
    let host = get("host").map(str::to_ascii_lowercase);
    let public = public_url.and_then(authority);
    if Some(&from) == host.as_ref() || Some(&from) == public.as_ref() {
        Ok(())
    } else {
        Err("the form was sent from another site (Origin)")
    }
}

/// Where to go after logging in: `next` when it is a page of this hub's
/// web page (`/ui/...`), else the jobs list; never another site.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/ui/jobs/",
    }
}

/// The log in page's URL, coming back to `next` afterwards.
pub fn login_url(next: Option<&str>) -> String {
    match next {
        Some(n) if safe_next(Some(n)) == n && n != "/ui/jobs/" => {
            let q: String = form_urlencoded::byte_serialize(n.as_bytes()).collect();
            format!("/ui/login/?next={q}")
        }
        _ => "/ui/login/".into(),
    }
}

/// What a request's cookies prove.
#[derive(Debug, PartialEq, Eq)]
pub enum Proof {
    /// A valid access token of the refresh token's user.
    Valid {
        /// The user.
        user_id: i64,
        /// The refresh token's `jti`: the session.
        session: String,
    },
    /// The access token is gone or expired, the refresh token valid: a
    /// new access token goes with the answer.
    Renewed {
        /// The user.
        user_id: i64,
        /// The session.
        session: String,
        /// The new access token.
        access: String,
    },
    /// No session (none, expired, or forged): log in.
    None,
}

/// Reads the session cookies.
pub fn prove(keys: &Keys, headers: &HeaderMap) -> Proof {
    let Some(refresh) = cookie(headers, REFRESH_COOKIE).and_then(|t| keys.verify(t, "refresh").ok()) else {
        return Proof::None;
    };
    let access = cookie(headers, ACCESS_COOKIE).and_then(|t| keys.verify(t, "access").ok());
    match access {
        Some(a) if a.user_id == refresh.user_id => Proof::Valid {
            user_id: a.user_id,
            session: refresh.jti,
        },
        _ => match cookie(headers, REFRESH_COOKIE).map(|t| keys.refresh(t)) {
            Some(Ok(access)) => Proof::Renewed {
                user_id: refresh.user_id,
                session: refresh.jti,
                access,
            },
            _ => Proof::None,
        },
    }
}

/// The CSRF token a form's body carries, if any.
pub fn form_token(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned())
}

/// Sends a request without a session to the log in page: a redirect
/// (303) coming back to the page asked for, or for htmx's refreshes an
/// `HX-Redirect` to it (htmx then loads the log in page whole).
fn to_login(req: &Request) -> Response {
    let hx = req.headers().contains_key("hx-request");
    let next = if hx {
        req.headers()
            .get("hx-current-url")
            .and_then(|v| v.to_str().ok())
            .and_then(|u| u.split_once("://").map(|(_, r)| r))
            .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
    } else if req.method() == Method::GET {
        req.uri().path_and_query().map(|p| p.as_str().to_string())
    } else {
        None
    };
    let to = login_url(next.as_deref());
    if hx {
        return (StatusCode::OK, [("hx-redirect", to)]).into_response();
    }
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// The middleware of every page but the log in's: no session, the log
/// in page; a session whose access token expired, renewed; a POST from
/// another site or without the session's CSRF token, 403. The handler
/// gets the [`Session`] as an extension.
pub async fn require(State(s): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let (user_id, session, renewed) = match prove(&s.keys, req.headers()) {
        Proof::Valid { user_id, session } => (user_id, session, None),
        Proof::Renewed {
            user_id,
            session,
            access,
        } => (user_id, session, Some(access)),
        Proof::None => return to_login(&req),
    };
    let user = match user(&s.store, user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return to_login(&req),
        Err(r) => return *r,
    };
    let csrf = s.keys.csrf_token(&session);
    let mut req = req;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Err(why) = origin_allowed(req.headers(), s.settings.public_url.as_deref()) {
            return forbidden(why);
        }
        let header_token = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let given = match header_token {
            Some(t) => Some(t),
            None => {
                let (parts, body) = req.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, s.settings.max_body_bytes).await else {
                    return super::frame::error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
                };
                let t = form_token(&bytes);
                req = Request::from_parts(parts, Body::from(bytes));
                t
            }
        };
        if !given.is_some_and(|t| s.keys.csrf_matches(&session, &t)) {
            tracing::warn!(user = ?user.username, path = %req.uri().path(), "web page: a POST without this session's CSRF token was refused");
            return forbidden(
                "the form does not carry this session's token: it was made for an earlier session, or by another site",
            );
        }
    }
    req.extensions_mut().insert(Session {
        user_id: user.id,
        username: user.username,
        csrf,
    });
    let mut resp = next.run(req).await;
    if let Some(access) = renewed {
        let life = crate::config::defaults::HUB_ACCESS_TOKEN_LIFETIME.as_secs();
        resp.headers_mut()
            .append(header::SET_COOKIE, set_cookie(ACCESS_COOKIE, &access, life, secure(&s)));
    }
    resp
}

async fn user(store: &Store, id: i64) -> Result<Option<crate::hub::store::users::User>, Box<Response>> {
    store
        .user_by_id(id)
        .await
        .map_err(|e| Box::new(super::frame::UiError::from(e).into_response()))
}

fn forbidden(why: &str) -> Response {
    super::frame::error_page(
        StatusCode::FORBIDDEN,
        &format!("Refused: {why}. Reload the page and try again."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[
            ("cookie", "a=1; ferry_access_x=no; ferry_access=tok.en.sig"),
            ("cookie", "ferry_refresh=\"quoted\"; empty="),
        ]);
        assert_eq!(cookie(&h, ACCESS_COOKIE), Some("tok.en.sig"));
        assert_eq!(cookie(&h, REFRESH_COOKIE), Some("quoted"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "empty"), None);
        assert_eq!(cookie(&h, "missing"), None);
        assert_eq!(cookie(&HeaderMap::new(), ACCESS_COOKIE), None);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_https() {
        let c = set_cookie(ACCESS_COOKIE, "v", 3600, false);
        assert_eq!(
            c.to_str().unwrap(),
            "ferry_access=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600"
        );
        let c = set_cookie(REFRESH_COOKIE, "", 0, true);
        assert!(c.to_str().unwrap().ends_with("Max-Age=0; Secure"));
    }

    #[test]
    fn posts_from_other_sites_are_refused() {
        let host = ("host", "127.0.0.1:8000");
        assert!(origin_allowed(&headers(&[host]), None).is_ok());
        assert!(origin_allowed(&headers(&[host, ("origin", "http://127.0.0.1:8000")]), None).is_ok());
        assert!(origin_allowed(&headers(&[host, ("sec-fetch-site", "same-origin")]), None).is_ok());
        assert!(origin_allowed(&headers(&[host, ("sec-fetch-site", "none")]), None).is_ok());
        assert!(origin_allowed(&headers(&[host, ("sec-fetch-site", "cross-site")]), None).is_err());
        assert!(origin_allowed(&headers(&[host, ("sec-fetch-site", "same-site")]), None).is_err());
        assert!(origin_allowed(&headers(&[host, ("origin", "http://evil.example:8000")]), None).is_err());
        assert!(origin_allowed(&headers(&[host, ("origin", "http://127.0.0.1:8001")]), None).is_err());
        assert!(origin_allowed(&headers(&[host, ("origin", "null")]), None).is_err());
        // Behind a proxy: the public URL's origin.
        let proxied = headers(&[("host", "127.0.0.1:8000"), ("origin", "https://hub.example.com")]);
        assert!(origin_allowed(&proxied, None).is_err());
        assert!(origin_allowed(&proxied, Some("https://hub.example.com/")).is_ok());
        assert!(origin_allowed(&proxied, Some("https://HUB.example.com")).is_ok());
    }

    #[test]
    fn next_stays_on_the_web_page() {
        assert_eq!(safe_next(Some("/ui/jobs/7/?tab=failed")), "/ui/jobs/7/?tab=failed");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil.example",
            "/api/jobs/",
            "/ui/\\evil",
            "/ui/x\ny",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/jobs/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/ui/jobs/");
        assert_eq!(
            login_url(Some("/ui/jobs/7/?tab=failed")),
            "/ui/login/?next=%2Fui%2Fjobs%2F7%2F%3Ftab%3Dfailed"
        );
        assert_eq!(login_url(Some("//evil")), "/ui/login/");
        assert_eq!(login_url(None), "/ui/login/");
    }

    #[test]
    fn sessions_are_proved_by_the_refresh_token_and_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let t = keys.issue(3).unwrap();
        let jti = keys.verify(&t.refresh, "refresh").unwrap().jti;
        let both = format!("{ACCESS_COOKIE}={}; {REFRESH_COOKIE}={}", t.access, t.refresh);
        assert_eq!(
            prove(&keys, &headers(&[("cookie", &both)])),
            Proof::Valid {
                user_id: 3,
                session: jti.clone()
            }
        );
        let only_refresh = format!("{REFRESH_COOKIE}={}", t.refresh);
        match prove(&keys, &headers(&[("cookie", &only_refresh)])) {
            Proof::Renewed {
                user_id,
                session,
                access,
                ..
            } => {
                assert_eq!((user_id, session), (3, jti));
                assert_eq!(keys.verify(&access, "access").unwrap().user_id, 3);
            }
            other => panic!("{other:?}"),
        }
        let only_access = format!("{ACCESS_COOKIE}={}", t.access);
        assert_eq!(prove(&keys, &headers(&[("cookie", &only_access)])), Proof::None);
        // Tokens swapped: the access token is no refresh token.
        let swapped = format!("{ACCESS_COOKIE}={}; {REFRESH_COOKIE}={}", t.refresh, t.access);
        assert_eq!(prove(&keys, &headers(&[("cookie", &swapped)])), Proof::None);
        // Another user's access token with this refresh token: renewed.
        let other = keys.issue(4).unwrap();
        let mixed = format!("{ACCESS_COOKIE}={}; {REFRESH_COOKIE}={}", other.access, t.refresh);
        assert!(matches!(
            prove(&keys, &headers(&[("cookie", &mixed)])),
            Proof::Renewed { user_id: 3, .. }
        ));
    }

    #[test]
    fn the_csrf_token_is_read_from_the_form() {
        assert_eq!(form_token(b"a=1&csrf=abc%20d&b=2"), Some("abc d".into()));
        assert_eq!(form_token(b"a=1"), None);
        assert_eq!(form_token(b""), None);
    }
}
