//! The REST API under `/api/`, in the seed's shapes: every path ends in
//! `/`, lists are paged as `{count, next, previous, results}` with full
//! URLs, errors are `{"detail": ...}` with a 4xx that names the field at
//! fault, and every endpoint but token issue and health needs a JWT
//! (`Authorization: Bearer`) or a client key (`Authorization: Api-Key`).

mod auth;
mod health;
mod jobs;
mod sites;
mod submit;
mod workflows;

use super::auth::{Keys, secret_matches, split_client_key};
use super::store::{Store, StoreError};
use crate::config::HubSettings;
use axum::Router;
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
    /// Whether the broker connection is up.
    pub broker_up: watch::Receiver<bool>,
    /// The broker session, while there is one.
    pub session: watch::Receiver<Option<Arc<crate::agent::broker::Session>>>,
    /// The `https` scheme is served.
    pub tls: bool,
    /// The hub's metrics.
    pub metrics: Arc<crate::hub::metrics::HubMetrics>,
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
}

impl ApiError {
    /// 400 with `detail`.
    pub fn bad(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
        }
    }

    /// 404 naming what is missing.
    pub fn not_found(what: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            detail: format!("No {what} matches the given query."),
        }
    }

    fn unauthorized(detail: &str) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            detail: detail.into(),
        }
    }

    /// 403 with `detail`.
    pub fn forbidden(detail: &str) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            detail: detail.into(),
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
            };
        }
        tracing::error!(error = %e, "a request failed on the database");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: format!("the hub's database cannot answer now: {e}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(serde_json::json!({"detail": self.detail}))).into_response()
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON answer with a status.
pub fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

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

/// Query parameters, repeated keys kept (`state=A&state=B`, or the
/// `state[]=` spelling).
#[derive(Clone, Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        Ok(Params(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.trim_end_matches("[]").to_string(), v.into_owned()))
                .collect(),
        ))
    }
}

impl Params {
    /// The last value of `key`, when given and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, commas split.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            })
            .collect()
    }

    /// `key` as an integer, if given.
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad(format!("{key}: expected an integer, got {v:?}")))
            })
            .transpose()
    }

    /// Every value of `key` as integers.
    pub fn ints(&self, key: &str) -> ApiResult<Vec<i64>> {
        self.all(key)
            .iter()
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad(format!("{key}: expected integers, got {v:?}")))
            })
            .collect()
    }

    /// `key` as a time (RFC 3339, or a date), microseconds.
    pub fn time(&self, key: &str) -> ApiResult<Option<i64>> {
        self.get(key)
            .map(|v| {
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
            })
            .transpose()
    }
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
    pub fn read(p: &Params, max: i64) -> ApiResult<Paging> {
        let page = p.int("page")?.unwrap_or(1);
        if page < 1 {
            return Err(ApiError::not_found("page: Invalid page."));
        }
        let size = match p.int("page_size")? {
            Some(0) => None,
            None => Some(20),
            Some(n) => Some(n.clamp(20, max)),
        };
        Ok(Paging { page, size })
    }

    /// The store's page.
    pub fn store(&self) -> super::store::jobs::Page {
        super::store::jobs::Page {
            offset: self.size.map_or(0, |s| (self.page - 1) * s),
            limit: self.size,
        }
    }

    /// The `{count, next, previous, results}` envelope; a page past the
    /// last is a 404, as in the seed's framework.
    pub fn envelope(
        &self,
        base: &Base,
        count: i64,
        results: Vec<serde_json::Value>,
    ) -> ApiResult<serde_json::Map<String, serde_json::Value>> {
        let pages = match self.size {
            Some(s) => ((count + s - 1) / s).max(1),
            None => 1,
        };
        if self.page > pages {
            return Err(ApiError::not_found("page: Invalid page."));
        }
        let link = |page: i64| serde_json::Value::String(base.with_page(page));
        let mut m = serde_json::Map::new();
        m.insert("count".into(), count.into());
        m.insert(
            "next".into(),
            if self.page < pages {
                link(self.page + 1)
            } else {
                serde_json::Value::Null
            },
        );
        m.insert(
            "previous".into(),
            if self.page > 1 {
                link(self.page - 1)
            } else {
                serde_json::Value::Null
            },
        );
        m.insert("results".into(), results.into());
        Ok(m)
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

    fn with_page(&self, page: i64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.query {
            q.append_pair(k, v);
        }
        q.append_pair("page", &page.to_string());
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

/// `/metrics`, without credentials (as the agent's).
async fn metrics(s: State) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// Times each request by its route (the matched path pattern, so ids do
/// not make a label each).
async fn timed(s: State, req: Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched".to_string(), |m| m.as_str().to_string());
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    s.metrics.http(&route, t0.elapsed().as_secs_f64());
    resp
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.settings.max_body_bytes;
    Router::new()
        .merge(auth::routes())
        .merge(sites::routes())
        .merge(workflows::routes())
        .merge(submit::routes())
        .merge(jobs::routes())
        .merge(health::routes())
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async { ApiError::not_found("endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), timed))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}
