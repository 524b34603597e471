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
//! `/ui/health/` (and its task types' `tasktypes/{name}/{pause|resume}/`);
//! `/ui/workflows/` (`new/`, `{id}/`, `{id}/delete/`);
//! `/ui/schedules/` (`new/`, `{id}/`, `{id}/run/`, `{id}/delete/`);
//! `/ui/static/<name>-<hash>.<ext>`.

mod actions;
pub mod format;
pub mod frame;
mod health;
mod jobs;
mod login;
mod schedules;
pub mod session;
mod sync_changes;
mod tasktypes;
mod workflows;

use crate::hub::api::ApiState;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use frame::{CSS, CSS_URL, HTMX, HTMX_URL, ICON, ICON_URL, error_page};
use std::sync::Arc;

/// A static file by its hashed name, kept by browsers for a year.
async fn static_file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = if format!("/ui/static/{name}") == *HTMX_URL {
        (HTMX, "text/javascript; charset=utf-8")
    } else if format!("/ui/static/{name}") == *CSS_URL {
        (CSS, "text/css; charset=utf-8")
    } else if format!("/ui/static/{name}") == *ICON_URL {
        (ICON, "image/svg+xml")
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
        .merge(schedules::routes())
        .merge(tasktypes::routes())
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
