//! What every handler of the API shares: the state, the error answer,
//! the caller's identity, and the extractors that read bodies, query
//! parameters, ids and the request's own URL, with the seed's paging.

use crate::config::HubSettings;
use crate::hub::auth::{Keys, secret_matches, split_client_key};
use crate::hub::store::{Store, StoreError};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

/// What every request handler shares.
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// The JWT key.
    pub keys: Keys,
    /// `[hub]`.
    pub settings: HubSettings,
    /// Wakes the outbox publisher after a job is written.
    pub outbox: Arc<Notify>,
    /// Wakes the scheduler after a schedule is written, so a change
    /// applies to a due time close ahead.
    pub schedules: Arc<Notify>,
    /// Whether the broker connection is up.
    pub broker_up: watch::Receiver<bool>,
    /// The broker session, while there is one.
    pub session: watch::Receiver<Option<Arc<crate::agent::broker::Session>>>,
    /// The `https` scheme is served.
    pub tls: bool,
    /// The hub's metrics.
    pub metrics: Arc<crate::hub::metrics::HubMetrics>,
    /// The global configurations in force.
    pub configs: Arc<crate::hub::configs::Live>,
}

/// Shared state, as handlers receive it.
pub type State = axum::extract::State<Arc<ApiState>>;

/// An error answer: a status and `{"detail": ...}`.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// What went wrong, for the caller.
    pub detail: String,
    /// The object's state, on a 409 (the request conflicts with it).
    pub state: Option<String>,
}

impl ApiError {
    /// 400 with `detail`.
    pub fn bad(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
            state: None,
        }
    }

    /// 404 naming what is missing.
    pub fn not_found(what: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            detail: format!("No {what} matches the given query."),
            state: None,
        }
    }

    /// 401 with `detail`.
    pub fn unauthorized(detail: &str) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            detail: detail.into(),
            state: None,
        }
    }

    /// 403 with `detail`.
    pub fn forbidden(detail: &str) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            detail: detail.into(),
            state: None,
        }
    }
}

impl From<StoreError> for ApiError {
    /// The database failing is not the caller's fault: 503 (try again),
    /// logged with its cause.
    fn from(e: StoreError) -> ApiError {
        if e.is_conflict() {
            return ApiError {
                status: StatusCode::BAD_REQUEST,
                detail: "an object with this name already exists".into(),
                state: None,
            };
        }
        tracing::error!(error = %e, "a request failed on the database");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: format!("the hub's database cannot answer now: {e}"),
            state: None,
        }
    }
}

impl From<crate::hub::jobctl::JobCtlError> for ApiError {
    /// No job: 404; a state the action does not fit: 409 with the state.
    fn from(e: crate::hub::jobctl::JobCtlError) -> ApiError {
        use crate::hub::jobctl::JobCtlError;
        match e {
            JobCtlError::NotFound(_) => ApiError::not_found("job"),
            JobCtlError::Conflict { ref state, .. } => ApiError {
                status: StatusCode::CONFLICT,
                state: Some(state.clone()),
                detail: e.to_string(),
            },
            JobCtlError::Store(e) => e.into(),
            JobCtlError::Submit(crate::hub::submit::SubmitError::Store(e)) => e.into(),
            JobCtlError::Submit(e) => ApiError::bad(format!("the job cannot be submitted again: {e}")),
        }
    }
}

impl From<crate::hub::typectl::TypeCtlError> for ApiError {
    /// An unknown task name: 404; a pause of a paused type or a resume of
    /// a running one: 409 with the type's state.
    fn from(e: crate::hub::typectl::TypeCtlError) -> ApiError {
        use crate::hub::typectl::TypeCtlError;
        match e {
            TypeCtlError::Unknown(_) => ApiError::not_found("task type"),
            TypeCtlError::Conflict { state, .. } => ApiError {
                status: StatusCode::CONFLICT,
                state: Some(state.to_string()),
                detail: e.to_string(),
            },
            TypeCtlError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.state {
            Some(state) => serde_json::json!({"detail": self.detail, "state": state}),
            None => serde_json::json!({"detail": self.detail}),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub username: String,
    /// An admin.
    pub is_admin: bool,
    /// The client key used, when one was.
    pub clientkey_id: Option<i64>,
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("Authentication credentials were not provided."))?;
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        match scheme {
            "Bearer" => {
                let claims = state
                    .keys
                    .verify(value, "access")
                    .map_err(|e| ApiError::unauthorized(&e.to_string()))?;
                let user = state
                    .store
                    .user_by_id(claims.user_id)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("User not found"))?;
                Ok(Caller {
                    user_id: user.id,
                    username: user.username,
                    is_admin: user.is_admin,
                    clientkey_id: None,
                })
            }
            "Api-Key" => {
                let bad = || ApiError::unauthorized("Invalid API key.");
                let (prefix, secret) = split_client_key(value).ok_or_else(bad)?;
                let key = state.store.clientkey_by_prefix(prefix).await?.ok_or_else(bad)?;
                if !secret_matches(secret, &key.secret_hash) {
                    return Err(bad());
                }
                let user = state.store.user_by_id(key.user_id).await?.ok_or_else(bad)?;
                Ok(Caller {
                    user_id: user.id,
                    username: user.username,
                    is_admin: user.is_admin,
                    clientkey_id: Some(key.id),
                })
            }
            _ => Err(ApiError::unauthorized(
                "Authorization must be `Bearer <token>` or `Api-Key <key>`.",
            )),
        }
    }
}

/// The `{id}` of a path, an integer; anything else is a 404 (no object
/// has that id).
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Id, ApiError> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("object"))?;
        raw.parse().map(Id).map_err(|_| ApiError::not_found("object"))
    }
}

/// A `{id}` of a path as text (a task's row id or Celery id).
pub struct Key(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Key, ApiError> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("object"))?;
        Ok(Key(raw))
    }
}

/// A JSON body read into `T`: malformed JSON, unknown fields and wrong
/// types are a 400 naming the field (`paths[3]: invalid type ...`); a body
/// over the limit is a 413.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<ApiState>> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Body<T>, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError {
                status: e.status(),
                state: None,
                detail: match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        format!(
                            "the request body is larger than {} bytes",
                            state.settings.max_body_bytes
                        )
                    }
                    _ => e.body_text(),
                },
            })?;
        parse_body(&bytes).map(Body)
    }
}

/// Reads a JSON body into `T`, naming the field of an error.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad(format!("JSON parse error: {inner}"))
        } else {
            ApiError::bad(format!("{path}: {inner}"))
        }
    })
}

pub(super) use crate::hub::submit::present;

/// Query parameters read into `T`: repeated keys make lists
/// (`state=A&state=B`, or the `state[]=` spelling); a value of the wrong
/// type is a 400 naming the parameter. Unknown parameters are ignored;
/// an empty `page` or `page_size` is as if absent (the seed's paging).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Query<T>, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .filter(|(k, v)| !(v.is_empty() && (k == "page" || k == "page_size")))
            .map(|(k, v)| (k.trim_end_matches("[]").to_string(), v.into_owned()))
            .collect();
        let text = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        serde_html_form::from_str(&text)
            .map(Query)
            .map_err(|e| ApiError::bad(format!("query: {e}")))
    }
}

/// A time given in a query (RFC 3339, or a date or date-time in UTC), in
/// microseconds.
pub fn query_time(key: &str, v: &str) -> ApiResult<i64> {
    v.parse::<jiff::Timestamp>()
        .or_else(|_| {
            v.parse::<jiff::civil::DateTime>()
                .or_else(|_| {
                    v.parse::<jiff::civil::Date>()
                        .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
                })
                .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()))
        })
        .map(|t| t.as_microsecond())
        .map_err(|_| {
            ApiError::bad(format!(
                "{key}: expected a time such as 2025-05-14T13:00:00Z, got {v:?}"
            ))
        })
}

/// A page as asked: `page` (from 1) and `page_size` (20..100, `0` for
/// all), clamped as the seed says.
#[derive(Clone, Copy, Debug)]
pub struct Paging {
    /// The page, from 1.
    pub page: i64,
    /// Rows per page; `None` for all.
    pub size: Option<i64>,
}

impl Paging {
    /// The seed's paging: `page_size` below 20 is 20, above `max` is `max`, 0 is all.
    pub fn read(p: &PageQuery, max: i64) -> ApiResult<Paging> {
        let page = p.page.unwrap_or(1);
        if page < 1 {
            return Err(ApiError::not_found("page: Invalid page."));
        }
        let size = match p.page_size {
            Some(0) => None,
            None => Some(20),
            Some(n) => Some(n.clamp(20, max)),
        };
        // A page whose first row is past any possible row does not exist.
        if size.is_some_and(|s| (page - 1).checked_mul(s).is_none()) {
            return Err(ApiError::not_found("page: Invalid page."));
        }
        Ok(Paging { page, size })
    }

    /// The store's page.
    pub fn store(&self) -> crate::hub::store::jobs::Page {
        crate::hub::store::jobs::Page {
            offset: self.size.map_or(0, |s| (self.page - 1) * s),
            limit: self.size,
        }
    }

    /// The page of `results` out of `count`; a page past the last is a
    /// 404, as in the seed's framework.
    pub fn page<T>(&self, base: &Base, count: i64, results: Vec<T>) -> ApiResult<Page<T>> {
        let pages = match self.size {
            Some(s) => ((count + s - 1) / s).max(1),
            None => 1,
        };
        if self.page > pages {
            return Err(ApiError::not_found("page: Invalid page."));
        }
        Ok(Page {
            count,
            next: (self.page < pages).then(|| base.with_page(self.page + 1)),
            previous: (self.page > 1).then(|| base.with_page(self.page - 1)),
            results,
        })
    }

    /// Pages a list held whole (the small tables).
    pub fn slice<T: Clone>(&self, all: &[T]) -> Vec<T> {
        let s = self.store();
        let from = (s.offset as usize).min(all.len());
        let to = s.limit.map_or(all.len(), |l| (from + l as usize).min(all.len()));
        all[from..to].to_vec()
    }
}

/// The URL a request came to: for `url` fields and page links.
#[derive(Clone, Debug)]
pub struct Base {
    /// `http(s)://host:port`.
    pub origin: String,
    /// The path.
    pub path: String,
    /// The query, without `page`.
    pub query: Vec<(String, String)>,
}

impl Base {
    /// `origin` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    pub(super) fn with_page(&self, page: i64) -> String {
        self.with("page", page)
    }

    /// This URL with `key=value` in place of `page` and of any `key`.
    fn with(&self, key: &str, value: i64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.query.iter().filter(|(k, _)| k != key) {
            q.append_pair(k, v);
        }
        q.append_pair(key, &value.to_string());
        format!("{}{}?{}", self.origin, self.path, q.finish())
    }
}

impl FromRequestParts<Arc<ApiState>> for Base {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Base, ApiError> {
        let origin = match &state.settings.public_url {
            Some(u) => u.clone(),
            None => {
                let host = parts
                    .headers
                    .get(axum::http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| state.settings.listen().to_string());
                format!("{}://{host}", if state.tls { "https" } else { "http" })
            }
        };
        let query = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(Base {
            origin,
            path: parts.uri.path().to_string(),
            query,
        })
    }
}

/// The error answer: `{"detail": ...}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Detail {
    /// What went wrong, naming the field at fault.
    pub detail: String,
}

/// The answer to a request that conflicts with the object's state (409).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Conflict {
    /// What was asked and why it does not apply.
    pub detail: String,
    /// The object's state now.
    pub state: String,
}

/// A page of a list, as the seed's hub pages them.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// Items in the whole list.
    pub count: i64,
    /// The next page's full URL.
    pub next: Option<String>,
    /// The previous page's full URL.
    pub previous: Option<String>,
    /// This page's items.
    pub results: Vec<T>,
}

/// `page` and `page_size` (20 to 100; below 20 is 20, above 100 is 100,
/// 0 is every item).
#[derive(serde::Deserialize, utoipa::IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The page, from 1.
    pub page: Option<i64>,
    /// Items per page.
    pub page_size: Option<i64>,
}

/// `after`: keyset paging, for lists that may hold millions of rows.
#[derive(serde::Deserialize, utoipa::IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct AfterQuery {
    /// Row id: the page is the rows with a larger id, by id (the list's
    /// `next` link gives it). Any depth costs one index range; `page`
    /// does not go with it, and `previous` is null.
    pub after: Option<i64>,
}

/// A keyset page as asked: the rows after `after` by id, at most `size`.
#[derive(Clone, Copy, Debug)]
pub struct Keyset {
    after: i64,
    size: i64,
}

impl Keyset {
    /// The keyset page of `a`, if it asks for one (`None` pages by
    /// `page`): `page_size` clamped to 20..`max` as [`Paging::read`]
    /// does; a negative `after`, a `page` beside it or `page_size=0`
    /// (every row) are a 400.
    pub fn read(p: &PageQuery, a: &AfterQuery, max: i64) -> ApiResult<Option<Keyset>> {
        let Some(after) = a.after else { return Ok(None) };
        if after < 0 {
            return Err(ApiError::bad(format!(
                "after: expected a row id (0 or more), got {after}"
            )));
        }
        if p.page.is_some() {
            return Err(ApiError::bad("page: a page is given by page or by after, not both"));
        }
        let size = match p.page_size {
            Some(0) => return Err(ApiError::bad("page_size: 0 (every row) does not go with after")),
            None => 20,
            Some(n) => n.clamp(20, max),
        };
        Ok(Some(Keyset { after, size }))
    }

    /// `filter` bounded to the rows after this page's id.
    pub fn bound(&self, mut filter: crate::hub::store::jobs::Filter) -> crate::hub::store::jobs::Filter {
        filter.cmp("id", ">", crate::hub::store::jobs::Bind::Int(self.after));
        filter
    }

    /// The store's page: one row more than shown, which says whether
    /// there is a next page.
    pub fn store(&self) -> crate::hub::store::jobs::Page {
        crate::hub::store::jobs::Page {
            offset: 0,
            limit: Some(self.size + 1),
        }
    }

    /// The page of `rows` (read with [`Keyset::store`]) in a list of
    /// `count`; `next` goes on after the last row's `id`.
    pub fn page<T, O>(
        &self,
        base: &Base,
        count: i64,
        mut rows: Vec<T>,
        id: impl Fn(&T) -> i64,
        out: impl Fn(&T) -> O,
    ) -> Page<O> {
        let more = rows.len() as i64 > self.size;
        rows.truncate(self.size as usize);
        Page {
            count,
            next: rows.last().filter(|_| more).map(|r| base.with("after", id(r))),
            previous: None,
            results: rows.iter().map(out).collect(),
        }
    }
}
