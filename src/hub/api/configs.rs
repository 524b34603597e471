//! `/api/configurations/`: the hub's global configurations (seed §1.14,
//! the subset ferry uses). JWT only, as the seed's: a client key in a
//! script cannot change how the hub treats every job.

use super::http::{ApiError, ApiResult, ApiState, Body, Caller, Detail, State};
use crate::hub::configs::{ConfigError, Configurations};
use axum::Json;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(get_configurations, patch_configurations))
}

fn jwt_only(c: &Caller) -> ApiResult<()> {
    match c.clientkey_id {
        Some(_) => Err(ApiError::forbidden(
            "configurations need a JWT (Authorization: Bearer), not a client key",
        )),
        None => Ok(()),
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> ApiError {
        match e {
            ConfigError::Store(e) => e.into(),
            e => ApiError::bad(e.to_string()),
        }
    }
}

/// The configurations in force.
#[utoipa::path(get, path = "/api/configurations/", tag = "configurations",
    responses((status = 200, body = Configurations), (status = 401, body = Detail), (status = 403, body = Detail)))]
async fn get_configurations(s: State, c: Caller) -> ApiResult<Json<Configurations>> {
    jwt_only(&c)?;
    Ok(Json(s.configs.get()))
}

/// Changes some configurations (the others keep their values); in force
/// at once and kept across restarts. A value out of range or of the wrong
/// type, or an unknown name, is a 400 and changes nothing.
#[utoipa::path(patch, path = "/api/configurations/", tag = "configurations", request_body = Object,
    responses((status = 200, body = Configurations), (status = 400, body = Detail), (status = 401, body = Detail), (status = 403, body = Detail)))]
async fn patch_configurations(
    s: State,
    c: Caller,
    Body(patch): Body<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Json<Configurations>> {
    jwt_only(&c)?;
    let now = s.configs.patch(&s.store, &patch).await?;
    tracing::info!(user = %c.username, change = %serde_json::Value::Object(patch), "configurations changed");
    Ok(Json(now))
}
