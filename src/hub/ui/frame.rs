//! What every page of the web page shares: its frame ([`Layout`]: the
//! user, the CSRF token, the static files' URLs), error pages, the form
//! and query readers, and the confirmation page.

use crate::hub::api::ApiError;
use crate::hub::jobctl::JobCtlError;
use crate::hub::store::StoreError;
use askama::Template;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use std::sync::LazyLock;

/// htmx 2.0.11 (`npm pack htmx.org@2`, `dist/htmx.min.js`, byte for byte;
/// sha256 d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717).
/// Licence: 0BSD (Zero-Clause BSD: use without conditions). To update,
/// copy the new `dist/htmx.min.js` over it: its URL changes with its
/// content.
pub(super) const HTMX: &[u8] = include_bytes!("static/htmx.min.js");
/// The page's one style sheet.
pub(super) const CSS: &[u8] = include_bytes!("static/ui.css");
/// The page's icon (browsers ask for one; without it, a 404 each page).
pub(super) const ICON: &[u8] = include_bytes!("static/icon.svg");

/// `/ui/static/<stem>-<first 16 hex digits of BLAKE3(content)><ext>`: a
/// new build with other content has another URL, so browsers may keep
/// each for a year.
fn hashed(stem: &str, ext: &str, content: &[u8]) -> String {
    let hash = blake3::hash(content).to_hex();
    format!("/ui/static/{stem}-{}{ext}", &hash[..16])
}

pub(super) static HTMX_URL: LazyLock<String> = LazyLock::new(|| hashed("htmx", ".min.js", HTMX));
pub(super) static CSS_URL: LazyLock<String> = LazyLock::new(|| hashed("ui", ".css", CSS));
pub(super) static ICON_URL: LazyLock<String> = LazyLock::new(|| hashed("icon", ".svg", ICON));

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
    /// The icon's URL.
    pub icon: &'static str,
    /// `jobs`, `health`, `workflows` or empty: the navigation item lit.
    pub section: &'static str,
}

impl Layout {
    /// The frame of a page of `section` for `user` with the session's
    /// `csrf` token.
    pub fn new(user: &str, csrf: &str, section: &'static str) -> Layout {
        Layout {
            user: Some(user.to_string()),
            csrf: csrf.to_string(),
            section,
            ..Layout::anonymous()
        }
    }

    /// The frame of a page without a session (log in, errors).
    pub fn anonymous() -> Layout {
        Layout {
            user: None,
            csrf: String::new(),
            css: CSS_URL.as_str(),
            htmx: HTMX_URL.as_str(),
            icon: ICON_URL.as_str(),
            section: "",
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

/// The API's error about an editor's text (a JSON document), as the
/// page shows it beside the editor: where serde could not say where in
/// the document (`?: `), the text is no JSON.
pub(super) fn editor_error(detail: String) -> String {
    match detail.strip_prefix("?: ") {
        Some(rest) => format!("not JSON: {rest}"),
        None => detail,
    }
}

/// The page (in `layout`) asking before object `id` of `section`
/// (`workflows`, `schedules`), called `title`, is deleted by a POST to
/// its `delete/`.
pub(super) fn delete_confirmation(
    layout: Layout,
    section: &'static str,
    id: i64,
    title: String,
    question: &'static str,
) -> ConfirmPage {
    ConfirmPage {
        layout,
        title,
        question,
        action: format!("/ui/{section}/{id}/delete/"),
        button: "Delete",
        testid: "confirm-delete".into(),
        back: format!("/ui/{section}/{id}/"),
    }
}

/// After object `name` of `section` is deleted: back to the list, which
/// says so.
pub(super) fn deleted(section: &str, name: &str) -> Response {
    let q: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    (
        StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, format!("/ui/{section}/?deleted={q}"))],
    )
        .into_response()
}

/// A page saying what went wrong, with `status`.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        layout: Layout::anonymous(),
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
            JobCtlError::Submit(crate::hub::submit::SubmitError::Store(e)) => e.into(),
            JobCtlError::Submit(_) => UiError {
                status: StatusCode::BAD_REQUEST,
                message: e.to_string(),
            },
        }
    }
}

impl From<crate::hub::typectl::TypeCtlError> for UiError {
    /// As the API answers it: an unknown task name 404, a conflict 409.
    fn from(e: crate::hub::typectl::TypeCtlError) -> UiError {
        ApiError::from(e).into()
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
