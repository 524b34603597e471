//! `/ui/login/` and `/ui/logout/`: the same users and tokens as `POST
//! /api/auth/token/`, kept in cookies ([`super::session`]).

use super::frame::{Form, Layout, Query, UiResult, page};
use super::session::{ACCESS_COOKIE, REFRESH_COOKIE, Session, origin_allowed, safe_next, secure, set_cookie};
use crate::config::defaults::{HUB_ACCESS_TOKEN_LIFETIME, HUB_REFRESH_TOKEN_LIFETIME};
use crate::hub::api::ApiState;
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

/// The log in page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    next: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

/// Where to go after logging in.
#[derive(Deserialize, Default)]
pub(super) struct NextQuery {
    next: Option<String>,
}

/// The log in form.
pub(super) async fn form(Query(q): Query<NextQuery>) -> UiResult<Response> {
    page(
        StatusCode::OK,
        &LoginPage {
            layout: Layout::anonymous(),
            next: safe_next(q.next.as_deref()),
            username: "",
            error: None,
        },
    )
}

/// What the log in form sends.
#[derive(Deserialize)]
pub(super) struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// Checks the username and password (as the API does, logging a
/// refusal), then sets the session cookies and goes to `next`.
pub(super) async fn submit(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(c): Form<Credentials>,
) -> UiResult<Response> {
    let next = safe_next(c.next.as_deref());
    let again = |status, error: &str| {
        page(
            status,
            &LoginPage {
                layout: Layout::anonymous(),
                next,
                username: &c.username,
                error: Some(error),
            },
        )
    };
    if let Err(why) = origin_allowed(&headers, s.settings.public_url.as_deref()) {
        return again(StatusCode::FORBIDDEN, &format!("Refused: {why}."));
    }
    let user = match crate::hub::api::auth::authenticate(&s.store, &c.username, c.password.clone(), "web page").await {
        Ok(u) => u,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return again(StatusCode::UNAUTHORIZED, "Wrong username or password.");
        }
        Err(e) => return Err(e.into()),
    };
    let t = s.keys.issue(user.id).map_err(|e| super::frame::UiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })?;
    let secure = secure(&s);
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, next)]).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(ACCESS_COOKIE, &t.access, HUB_ACCESS_TOKEN_LIFETIME.as_secs(), secure),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(REFRESH_COOKIE, &t.refresh, HUB_REFRESH_TOKEN_LIFETIME.as_secs(), secure),
    );
    tracing::info!(user = ?user.username, "logged in to the web page");
    Ok(resp)
}

/// Forgets the session's cookies (the tokens themselves stay valid until
/// they expire: the hub keeps no revocation list) and shows the log in
/// page.
pub(super) async fn logout(State(s): State<Arc<ApiState>>, Extension(_session): Extension<Session>) -> Response {
    let secure = secure(&s);
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/login/")]).into_response();
    for name in [ACCESS_COOKIE, REFRESH_COOKIE] {
        resp.headers_mut()
            .append(header::SET_COOKIE, set_cookie(name, "", 0, secure));
    }
    resp
}
