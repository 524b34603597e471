//! `/api/auth/`: tokens for a username and password, and client keys.

use super::{ApiError, ApiResult, ApiState, Base, Body, Caller, Id, Paging, Params, State, json};
use crate::hub::auth::{new_client_key, password_matches};
use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/auth/token/", post(token))
        .route("/api/auth/token/refresh/", post(refresh))
        .route("/api/auth/token/verify/", post(verify))
        .route("/api/auth/token/publickey/", get(public_key))
        .route("/api/auth/clientkeys/", get(list_keys).post(add_key))
        .route("/api/auth/clientkeys/{id}/", get(get_key).delete(delete_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

async fn token(s: State, Body(l): Body<Login>) -> ApiResult<Response> {
    let denied = || ApiError {
        status: StatusCode::UNAUTHORIZED,
        detail: "No active account found with the given credentials".into(),
    };
    let user = s.store.user_by_name(&l.username).await?.ok_or_else(denied)?;
    // argon2 takes tens of milliseconds: off the async threads.
    let (pw, hash) = (l.password, user.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || password_matches(&pw, &hash))
        .await
        .unwrap_or(false);
    if !ok {
        return Err(denied());
    }
    let t = s.keys.issue(user.id).map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(json(StatusCode::OK, json!({"access": t.access, "refresh": t.refresh})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refresh {
    refresh: String,
}

async fn refresh(s: State, Body(r): Body<Refresh>) -> ApiResult<Response> {
    let access = s.keys.refresh(&r.refresh).map_err(|e| ApiError {
        status: StatusCode::UNAUTHORIZED,
        detail: e.to_string(),
    })?;
    Ok(json(StatusCode::OK, json!({"access": access})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verify {
    token: String,
    #[serde(default = "access", rename = "type")]
    kind: String,
}

fn access() -> String {
    "access".into()
}

async fn verify(s: State, Body(v): Body<Verify>) -> ApiResult<Response> {
    if v.kind != "access" && v.kind != "refresh" {
        return Err(ApiError::bad(format!(
            "type: must be access or refresh, not {:?}",
            v.kind
        )));
    }
    s.keys.verify(&v.token, &v.kind).map_err(|e| ApiError {
        status: StatusCode::UNAUTHORIZED,
        detail: e.to_string(),
    })?;
    Ok(json(StatusCode::OK, json!({})))
}

async fn public_key(s: State, _c: Caller) -> Response {
    json(StatusCode::OK, json!({"public_key": s.keys.public_pem}))
}

fn key_json(base: &Base, k: &crate::hub::store::users::ClientKey) -> serde_json::Value {
    json!({
        "url": base.url(&format!("/api/auth/clientkeys/{}/", k.id)),
        "id": k.id,
        "name": k.name,
        "user": k.username,
    })
}

/// Admins see every key; others their own.
fn owner_filter(c: &Caller) -> Option<i64> {
    (!c.is_admin).then_some(c.user_id)
}

async fn list_keys(s: State, c: Caller, base: Base, p: Params) -> ApiResult<Response> {
    let paging = Paging::read(&p, 100)?;
    let all = s.store.clientkeys(owner_filter(&c)).await?;
    let results = paging.slice(&all).iter().map(|k| key_json(&base, k)).collect();
    Ok(json(
        StatusCode::OK,
        paging.envelope(&base, all.len() as i64, results)?.into(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
}

/// Keys are made only with a JWT (a key cannot mint keys), as the seed
/// says.
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
    Ok(json(
        StatusCode::CREATED,
        json!({"url": base.url(&format!("/api/auth/clientkeys/{id}/")), "id": id, "name": k.name, "api_key": key}),
    ))
}

async fn get_key(s: State, c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let keys = s.store.clientkeys(owner_filter(&c)).await?;
    let k = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found("client key"))?;
    let mut v = key_json(&base, k);
    v["url"] = base.url(&base.path).into();
    Ok(json(StatusCode::OK, v))
}

async fn delete_key(s: State, c: Caller, Id(id): Id) -> ApiResult<Response> {
    if c.clientkey_id.is_some() {
        return Err(ApiError::forbidden("client keys are revoked with a JWT"));
    }
    if !s.store.delete_clientkey(id, owner_filter(&c)).await? {
        return Err(ApiError::not_found("client key"));
    }
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}
