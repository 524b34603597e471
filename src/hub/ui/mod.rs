//! The hub's web page under `/ui/`: server-rendered HTML (askama
//! templates in `templates/`, checked when the hub is compiled), one CSS
//! file and vendored htmx, with no JavaScript build step.
//!
//! Every page works without JavaScript: links and forms do everything,
//! and htmx only refreshes parts of a page in place (the jobs table every
//! 5 s, a job's progress every 2 s). Pages need a log in ([`session`]);
//! every form that changes something carries the session's CSRF token.
//! Handlers are thin: each page's data is built by small functions of the
//! page's module, and the job actions are `hub::jobctl`'s, as the API's.
//!
//! Routes: `/` and `/ui/` go to `/ui/jobs/`; `/ui/login/`, `/ui/logout/`;
//! `/ui/jobs/` (and its rows, `/ui/jobs/rows/`), `/ui/jobs/{id}/` (its
//! live part `/ui/jobs/{id}/live/`, its actions `/ui/jobs/{id}/do/{action}/`
//! and their confirmation pages `/ui/jobs/{id}/confirm/{action}/`);
//! `/ui/health/`; `/ui/workflows/` (`new/`, `{id}/`, `{id}/delete/`);
//! `/ui/static/<name>-<hash>.<ext>`.

pub mod format;
mod health;
mod jobs;
mod login;
pub mod session;
mod workflows;

use crate::hub::api::{ApiError, ApiState};
use crate::hub::jobctl::JobCtlError;
use crate::hub::store::StoreError;
use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use std::sync::{Arc, LazyLock};

/// htmx 2.0.11 (`npm pack htmx.org@2`, `dist/htmx.min.js`, byte for byte;
/// sha256 d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717).
/// Licence: 0BSD (Zero-Clause BSD: use without conditions). To update,
/// copy the new `dist/htmx.min.js` over it: its URL changes with its
/// content.
const HTMX: &[u8] = include_bytes!("static/htmx.min.js");
/// The page's one style sheet.
const CSS: &[u8] = include_bytes!("static/ui.css");

/// `/ui/static/<stem>-<first 16 hex digits of BLAKE3(content)><ext>`: a
/// new build with other content has another URL, so browsers may keep
/// each for a year.
fn hashed(stem: &str, ext: &str, content: &[u8]) -> String {
    let hash = blake3::hash(content).to_hex();
    format!("/ui/static/{stem}-{}{ext}", &hash[..16])
}

static HTMX_URL: LazyLock<String> = LazyLock::new(|| hashed("htmx", ".min.js", HTMX));
static CSS_URL: LazyLock<String> = LazyLock::new(|| hashed("ui", ".css", CSS));

/// What a page's frame needs: the user (none on the log in page), the
/// session's CSRF token, the static files' URLs, the section shown.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The user logged in.
    pub user: Option<String>,
    /// The session's CSRF token (empty without a session).
    pub csrf: String,
    /// The style sheet's URL.
    pub css: &'static str,
    /// htmx's URL.
    pub htmx: &'static str,
    /// `jobs`, `health`, `workflows` or empty: the navigation item lit.
    pub section: &'static str,
}

impl Layout {
    /// The frame of a page of `section`, for `session` (if any).
    pub fn new(session: Option<&session::Session>, section: &'static str) -> Layout {
        Layout {
            user: session.map(|s| s.username.clone()),
            csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
            css: CSS_URL.as_str(),
            htmx: HTMX_URL.as_str(),
            section,
        }
    }
}

/// An error page: what went wrong, in words, with its status.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// A page asking to confirm an action, whose button posts (with the CSRF
/// token) to `action`: it works without JavaScript.
#[derive(Template)]
#[template(path = "confirm.html")]
pub(super) struct ConfirmPage {
    pub(super) layout: Layout,
    pub(super) title: String,
    pub(super) question: &'static str,
    pub(super) action: String,
    pub(super) button: &'static str,
    pub(super) testid: String,
    pub(super) back: String,
}

/// A page saying what went wrong, with `status`.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        layout: Layout::new(None, ""),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or(""),
        message,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, message.to_string()).into_response(),
    }
}

/// Why a page cannot be shown: its status and a sentence.
#[derive(Debug)]
pub struct UiError {
    /// The status.
    pub status: StatusCode,
    /// What went wrong, for the reader.
    pub message: String,
}

impl UiError {
    /// 404 naming what is missing.
    pub fn not_found(what: &str) -> UiError {
        UiError {
            status: StatusCode::NOT_FOUND,
            message: format!("There is no {what}: it may have been deleted."),
        }
    }
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> UiError {
        let api = ApiError::from(e);
        UiError {
            status: api.status,
            message: api.detail,
        }
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError {
            status: e.status,
            message: e.detail,
        }
    }
}

impl From<JobCtlError> for UiError {
    fn from(e: JobCtlError) -> UiError {
        match e {
            JobCtlError::NotFound(id) => UiError::not_found(&format!("job {id}")),
            JobCtlError::Conflict { .. } => UiError {
                status: StatusCode::CONFLICT,
                message: e.to_string(),
            },
            JobCtlError::Store(e) => e.into(),
        }
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> UiError {
        tracing::error!(error = %e, "web page: a template failed to render");
        UiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("the page could not be rendered: {e}"),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        error_page(self.status, &self.message)
    }
}

/// A page handler's result.
pub type UiResult<T> = Result<T, UiError>;

/// Renders `t` as a page with `status`.
pub fn page(status: StatusCode, t: &impl Template) -> UiResult<Response> {
    Ok((status, Html(t.render()?)).into_response())
}

/// A form body (`application/x-www-form-urlencoded`) read into `T`; a
/// body that does not fit is a 400 page.
pub struct Form<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Form<T> {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &S) -> Result<Form<T>, UiError> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| UiError {
            status: e.status(),
            message: e.body_text(),
        })?;
        serde_html_form::from_bytes(&bytes).map(Form).map_err(|e| UiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("the form cannot be read: {e}"),
        })
    }
}

/// A query string read into `T` (unknown keys ignored); one that does
/// not fit is a 400 page.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Query<T>, UiError> {
        serde_html_form::from_str(parts.uri.query().unwrap_or(""))
            .map(Query)
            .map_err(|e| UiError {
                status: StatusCode::BAD_REQUEST,
                message: format!("the address's query cannot be read: {e}"),
            })
    }
}

/// A static file by its hashed name, kept by browsers for a year.
async fn static_file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = if format!("/ui/static/{name}") == *HTMX_URL {
        (HTMX, "text/javascript; charset=utf-8")
    } else if format!("/ui/static/{name}") == *CSS_URL {
        (CSS, "text/css; charset=utf-8")
    } else {
        return error_page(StatusCode::NOT_FOUND, "There is no such file.");
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// What every answer of the web page carries: no caching of pages (they
/// hold a user's data), no framing, no inline script or style, no
/// sniffing, no referrer to other sites.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

/// The web page's routes, to merge into the hub's router (before its
/// body limit and timing layers).
pub fn routes(state: Arc<ApiState>) -> Router<Arc<ApiState>> {
    let pages = Router::new()
        .merge(jobs::routes())
        .merge(health::routes())
        .merge(workflows::routes())
        .route("/ui/logout/", axum::routing::post(login::logout))
        .route_layer(axum::middleware::from_fn_with_state(state, session::require));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/jobs/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/jobs/") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/jobs/") }))
        .route("/ui/login/", get(login::form).post(login::submit))
        .route("/ui/static/{name}", get(static_file))
        .merge(pages)
        .route(
            "/ui/{*rest}",
            get(|| async { error_page(StatusCode::NOT_FOUND, "There is no such page.") }),
        )
        .layer(axum::middleware::map_response(security_headers))
}

#[cfg(test)]
mod tests;
