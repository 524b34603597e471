//! `GET /api/file/`: browse a site's filesystem (003:L21263-21344). The
//! site's agent lists the directory (`dynamo.tasks.browse`,
//! [`crate::hub::browse`]); the hub checks the request, waits up to
//! `stat_timeout` and adds the page links.

use super::http::{ApiError, ApiResult, ApiState, Base, Caller, Detail, Query, State};
use crate::hub::browse::{self, BrowseError};
use crate::ops::browse::BrowseArgs;
use crate::task::errors::error_code;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(get_file))
}

/// What to browse.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The directory (an absolute path; a file's path gives its own
    /// attributes and no children).
    path: Option<String>,
    /// The site whose filesystem to browse.
    site: Option<String>,
    /// The page, from 1.
    page: Option<u64>,
    /// Entries per page: 20 to 100, or 0 for all (20 by default).
    page_size: Option<u64>,
    /// Each entry's times and disk usage too.
    details: Option<bool>,
    /// Include restricted (hidden) entries.
    restricted: Option<bool>,
    /// Only entries of this type: `file`, `directory` or `symlink`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
}

/// A directory and one page of its entries.
#[derive(Serialize, ToSchema)]
pub struct FileListing {
    /// This view.
    url: String,
    /// The site.
    site: String,
    /// The path (non-UTF-8 bytes as `\udcXX` escapes).
    path: String,
    /// `directory`, `file`, `symlink` or `other`.
    #[serde(rename = "type")]
    kind: String,
    /// Size in bytes.
    size: u64,
    /// Times, ISO 8601 in UTC.
    ctime: Option<String>,
    /// Last modification.
    mtime: Option<String>,
    /// Last access.
    atime: Option<String>,
    /// Its entries.
    children: Children,
}

/// A page of entries.
#[derive(Serialize, ToSchema)]
pub struct Children {
    /// Entries in all (after the `restricted` and `type` filters).
    count: u64,
    /// The next page, if any.
    next: Option<String>,
    /// The previous page, if any.
    previous: Option<String>,
    /// `{site, path, name, type, size, deleted, restricted, status}`, and
    /// with `details` `ctime`, `mtime`, `atime` and `disk_usage`.
    results: Vec<serde_json::Value>,
}

/// The agent's listing, with its strings kept as sent (escapes and all).
#[derive(Deserialize)]
struct Listing<'a> {
    #[serde(borrow)]
    site: &'a RawValue,
    #[serde(borrow)]
    path: &'a RawValue,
    #[serde(borrow, rename = "type")]
    kind: &'a RawValue,
    #[serde(borrow)]
    size: &'a RawValue,
    #[serde(borrow)]
    ctime: &'a RawValue,
    #[serde(borrow)]
    mtime: &'a RawValue,
    #[serde(borrow)]
    atime: &'a RawValue,
    #[serde(borrow)]
    children: Kids<'a>,
}

#[derive(Deserialize)]
struct Kids<'a> {
    count: u64,
    #[serde(borrow)]
    results: &'a RawValue,
}

/// Lists a directory of a site, as its agent sees it.
#[utoipa::path(get, path = "/api/file/", tag = "files", params(FileQuery),
    responses((status = 200, body = FileListing), (status = 400, body = Detail), (status = 401, body = Detail),
              (status = 403, body = Detail), (status = 404, body = Detail), (status = 502, body = Detail),
              (status = 503, body = Detail), (status = 504, body = Detail)))]
async fn get_file(s: State, _c: Caller, base: Base, Query(q): Query<FileQuery>) -> ApiResult<Response> {
    let path = q.path.ok_or_else(|| ApiError::bad("path: This field is required."))?;
    if !path.starts_with('/') {
        return Err(ApiError::bad("path: must be an absolute path"));
    }
    let site = q.site.ok_or_else(|| ApiError::bad("site: This field is required."))?;
    if s.store.site_by_name(&site).await?.is_none() {
        return Err(ApiError::not_found("site"));
    }
    let args = BrowseArgs {
        page: q.page.unwrap_or(1),
        page_size: q.page_size.unwrap_or(BrowseArgs::default().page_size),
        details: q.details.unwrap_or(false),
        restricted: q.restricted.unwrap_or(false),
        kind: q.kind,
    };
    args.check()
        .map_err(|(field, why)| ApiError::bad(format!("{field}: {why}")))?;
    let kwargs = serde_json::json!({
        "paths": [path], "page": args.page, "page_size": args.page_size,
        "details": args.details, "restricted": args.restricted, "type": args.kind,
    })
    .to_string();
    let session = s
        .session
        .borrow()
        .clone()
        .ok_or_else(|| status(StatusCode::SERVICE_UNAVAILABLE, "the hub has no broker connection now"))?;
    let timeout = s.configs.get().stat();
    let doc = browse::ask(&session, &site, &kwargs, &crate::hub::submit::origin(), timeout)
        .await
        .map_err(refused)?;
    let listing: Listing<'_> = serde_json::from_slice(&doc).map_err(|e| {
        status(
            StatusCode::BAD_GATEWAY,
            &format!("site {site} answered a listing the hub cannot read: {e}"),
        )
    })?;
    let link = |page: u64| base.with_page(page as i64);
    let pages = match args.page_size {
        0 => 1,
        n => listing.children.count.div_ceil(n).max(1),
    };
    // Written by hand around the agent's raw strings, which may hold
    // `\udcXX` escapes no Rust string can carry.
    let mut out = Vec::with_capacity(doc.len() + 512);
    out.extend_from_slice(b"{\"url\":");
    out.extend_from_slice(serde_json::to_string(&link(args.page)).expect("json").as_bytes());
    for (k, v) in [
        ("site", listing.site),
        ("path", listing.path),
        ("type", listing.kind),
        ("size", listing.size),
        ("ctime", listing.ctime),
        ("mtime", listing.mtime),
        ("atime", listing.atime),
    ] {
        out.extend_from_slice(format!(",\"{k}\":{}", v.get()).as_bytes());
    }
    let opt = |p: Option<u64>| p.map_or("null".to_string(), |p| serde_json::to_string(&link(p)).expect("json"));
    out.extend_from_slice(
        format!(
            ",\"children\":{{\"count\":{},\"next\":{},\"previous\":{},\"results\":{}}}}}",
            listing.children.count,
            opt((args.page < pages).then_some(args.page + 1)),
            opt((args.page > 1).then(|| (args.page - 1).min(pages))),
            listing.children.results.get()
        )
        .as_bytes(),
    );
    Ok(([("content-type", "application/json")], out).into_response())
}

fn status(code: StatusCode, detail: &str) -> ApiError {
    ApiError {
        status: code,
        detail: detail.to_string(),
        state: None,
    }
}

/// A site's refusal as an answer: a missing path 404, a forbidden one
/// 403, a site that is down or silent 503 or 504, anything else 502.
fn refused(e: BrowseError) -> ApiError {
    let code = match &e {
        BrowseError::Failed { message } => match error_code(message).as_deref() {
            Some("ENOENT") | Some("ENOTDIR") => StatusCode::NOT_FOUND,
            Some("EACCES") | Some("EPERM") => StatusCode::FORBIDDEN,
            Some("EINVAL") => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        },
        BrowseError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        BrowseError::NoQueue(_) | BrowseError::Broker { .. } | BrowseError::Lost(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    status(code, &e.to_string())
}
