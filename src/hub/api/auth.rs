//! `/api/auth/`: tokens for a username and password, and client keys.

use super::http::{
    ApiError, ApiResult, ApiState, Base, Body, Caller, Detail, Id, Page, PageQuery, Paging, Query, State,
};
use crate::hub::auth::{new_client_key, password_matches};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(refresh))
        .routes(routes!(verify))
        .routes(routes!(public_key))
        .routes(routes!(list_keys, add_key))
        .routes(routes!(get_key, delete_key))
}

/// A username and password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

/// An access token (1 hour) and a refresh token (1 day).
#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    access: String,
    refresh: String,
}

/// Tokens for a username and password (no credentials needed).
#[utoipa::path(post, path = "/api/auth/token/", tag = "auth", request_body = Login, security(()),
    responses((status = 200, body = TokenPair), (status = 400, body = Detail), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn token(s: State, Body(l): Body<Login>) -> ApiResult<Json<TokenPair>> {
    let user = authenticate(&s.store, &l.username, l.password, "api").await?;
    let t = s.keys.issue(user.id).map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(Json(TokenPair {
        access: t.access,
        refresh: t.refresh,
    }))
}

/// The user a username and password name: what `POST /api/auth/token/`
/// and the web page's log in check. A refusal is a 401 and a WARN record
/// naming the user, why, and `via` (`api` or `web page`); the password
/// is never logged.
pub(crate) async fn authenticate(
    store: &crate::hub::store::Store,
    username: &str,
    password: String,
    via: &'static str,
) -> ApiResult<crate::hub::store::users::User> {
    let denied = |why: &'static str| {
        tracing::warn!(username = ?username, via, why, "log in refused");
        ApiError::unauthorized("No active account found with the given credentials")
    };
    let Some(user) = store.user_by_name(username).await? else {
        return Err(denied("no such user"));
    };
    // argon2 takes tens of milliseconds: off the async threads.
    let hash = user.password_hash.clone();
    let ok = tokio::task::spawn_blocking(move || password_matches(&password, &hash))
        .await
        .unwrap_or(false);
    if !ok {
        return Err(denied("wrong password"));
    }
    Ok(user)
}

/// A refresh token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    refresh: String,
}

/// A new access token.
#[derive(Serialize, ToSchema)]
pub struct Access {
    access: String,
}

/// A new access token for a refresh token.
#[utoipa::path(post, path = "/api/auth/token/refresh/", tag = "auth", request_body = Refresh, security(()),
    responses((status = 200, body = Access), (status = 400, body = Detail), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn refresh(s: State, Body(r): Body<Refresh>) -> ApiResult<Json<Access>> {
    let access = s
        .keys
        .refresh(&r.refresh)
        .map_err(|e| ApiError::unauthorized(&e.to_string()))?;
    Ok(Json(Access { access }))
}

/// A token to check, of type `access` (the default) or `refresh`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    token: String,
    #[serde(default = "access", rename = "type")]
    #[schema(schema_with = token_types)]
    kind: String,
}

/// The two kinds of token, `access` (the default) and `refresh`.
fn token_types() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(["access", "refresh"]))
        .build()
}

fn access() -> String {
    "access".into()
}

/// Nothing: the token is valid.
#[derive(Serialize, ToSchema)]
pub struct Empty {}

/// Checks a token (200 `{}` when valid, 401 otherwise).
#[utoipa::path(post, path = "/api/auth/token/verify/", tag = "auth", request_body = Verify, security(()),
    responses((status = 200, body = Empty), (status = 400, body = Detail), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn verify(s: State, Body(v): Body<Verify>) -> ApiResult<Json<Empty>> {
    if v.kind != "access" && v.kind != "refresh" {
        return Err(ApiError::bad(format!(
            "type: must be access or refresh, not {:?}",
            v.kind
        )));
    }
    s.keys
        .verify(&v.token, &v.kind)
        .map_err(|e| ApiError::unauthorized(&e.to_string()))?;
    Ok(Json(Empty {}))
}

/// The key tokens are verified with.
#[derive(Serialize, ToSchema)]
pub struct PublicKey {
    /// ES256 public key, PEM.
    public_key: String,
}

/// The tokens' verification key.
#[utoipa::path(get, path = "/api/auth/token/publickey/", tag = "auth",
    responses((status = 200, body = PublicKey), (status = 401, body = Detail)))]
async fn public_key(s: State, _c: Caller) -> Json<PublicKey> {
    Json(PublicKey {
        public_key: s.keys.public_pem.clone(),
    })
}

/// A client key as listed (never its secret).
#[derive(Serialize, ToSchema)]
pub struct ClientKeyOut {
    url: String,
    id: i64,
    name: String,
    /// Its owner.
    user: String,
}

fn key_out(base: &Base, k: &crate::hub::store::users::ClientKey) -> ClientKeyOut {
    ClientKeyOut {
        url: base.url(&format!("/api/auth/clientkeys/{}/", k.id)),
        id: k.id,
        name: k.name.clone(),
        user: k.username.clone(),
    }
}

/// Admins see every key; others their own.
fn owner_filter(c: &Caller) -> Option<i64> {
    (!c.is_admin).then_some(c.user_id)
}

/// Client keys.
#[utoipa::path(get, path = "/api/auth/clientkeys/", tag = "auth", params(PageQuery),
    responses((status = 200, body = Page<ClientKeyOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list_keys(
    s: State,
    c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
) -> ApiResult<Json<Page<ClientKeyOut>>> {
    let paging = Paging::read(&pq, 100)?;
    let all = s.store.clientkeys(owner_filter(&c)).await?;
    let results = paging.slice(&all).iter().map(|k| key_out(&base, k)).collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// A name for a new client key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// 1 to 200 characters.
    name: String,
}

/// A new client key: `api_key` is shown this once.
#[derive(Serialize, ToSchema)]
pub struct NewKeyOut {
    url: String,
    id: i64,
    name: String,
    /// `Authorization: Api-Key <api_key>`.
    api_key: String,
}

/// Makes a client key (with a JWT only: a key cannot mint keys).
#[utoipa::path(post, path = "/api/auth/clientkeys/", tag = "auth", request_body = NewKey,
    responses((status = 201, body = NewKeyOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 403, body = Detail), (status = 413, body = Detail)))]
async fn add_key(s: State, c: Caller, base: Base, Body(k): Body<NewKey>) -> ApiResult<Response> {
    if c.clientkey_id.is_some() {
        return Err(ApiError::forbidden(
            "client keys are made with a JWT, not with another client key",
        ));
    }
    if k.name.trim().is_empty() || k.name.len() > 200 {
        return Err(ApiError::bad("name: must be 1 to 200 characters"));
    }
    let (key, prefix, hash) = new_client_key().map_err(|e| ApiError::bad(e.to_string()))?;
    let id = s.store.add_clientkey(&k.name, &prefix, &hash, c.user_id).await?;
    let out = NewKeyOut {
        url: base.url(&format!("/api/auth/clientkeys/{id}/")),
        id,
        name: k.name,
        api_key: key,
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// A client key.
#[utoipa::path(get, path = "/api/auth/clientkeys/{id}/", tag = "auth", params(("id" = i64, Path)),
    responses((status = 200, body = ClientKeyOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn get_key(s: State, c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<ClientKeyOut>> {
    let keys = s.store.clientkeys(owner_filter(&c)).await?;
    let k = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found("client key"))?;
    Ok(Json(key_out(&base, k)))
}

/// Revokes a client key (with a JWT only; 204).
#[utoipa::path(delete, path = "/api/auth/clientkeys/{id}/", tag = "auth", params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = Detail), (status = 403, body = Detail), (status = 404, body = Detail)))]
async fn delete_key(s: State, c: Caller, Id(id): Id) -> ApiResult<Response> {
    if c.clientkey_id.is_some() {
        return Err(ApiError::forbidden("client keys are revoked with a JWT"));
    }
    if !s.store.delete_clientkey(id, owner_filter(&c)).await? {
        return Err(ApiError::not_found("client key"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
