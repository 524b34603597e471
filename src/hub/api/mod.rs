//! The REST API under `/api/`, in the seed's shapes: every path ends in
//! `/`, lists are paged as `{count, next, previous, results}` with full
//! URLs, errors are `{"detail": ...}` with a 4xx that names the field at
//! fault, and every endpoint but token issue and health needs a JWT
//! (`Authorization: Bearer`) or a client key (`Authorization: Api-Key`).

mod alerts;
pub(crate) mod auth;
mod configs;
pub(crate) mod events;
mod files;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod jobs;
pub(crate) mod schedules;
mod sites;
mod stream;
mod submit;
mod tasks;
mod tasktypes;
pub(crate) mod workflows;

pub use crate::hub::submit::Submission;
pub use http::{ApiError, ApiState, parse_body};

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::State;
use std::sync::Arc;

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

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Api-Key <key>`: a client key from /api/auth/clientkeys/",
            ))),
        );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ferry hub",
        description = "The REST API of `ferry hub serve`, in the shapes of Ngenea Hub's API (docs/hub.md).",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    security(("jwt" = []), ("api_key" = []))
)]
struct ApiDoc;

fn build() -> (Router<Arc<ApiState>>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(sites::routes())
        .merge(workflows::routes())
        .merge(submit::routes())
        .merge(files::routes())
        .merge(jobs::routes())
        .merge(tasks::routes())
        .merge(health::routes())
        .merge(configs::routes())
        .merge(alerts::routes())
        .merge(events::routes())
        .merge(schedules::routes())
        .merge(tasktypes::routes())
        .split_for_parts()
}

/// The OpenAPI document of the API, generated from the handlers (checked
/// into docs/hub-openapi.json; a test compares the two).
pub fn openapi() -> utoipa::openapi::OpenApi {
    build().1
}

/// The API's routes, `/api/openapi.json`, Swagger UI at `/api/docs/`
/// (assets compiled in) and `/metrics`; `pages` are served beside them (the web page, `hub::ui`, which builds
/// on this module, so the caller brings it).
pub fn router(state: Arc<ApiState>, pages: Router<Arc<ApiState>>) -> Router {
    let limit = state.settings.max_body_bytes;
    let (api, spec) = build();
    let docs: Router<Arc<ApiState>> = utoipa_swagger_ui::SwaggerUi::new("/api/docs/")
        .url("/api/openapi.json", spec)
        .into();
    api.merge(docs)
        .merge(pages)
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async { ApiError::not_found("endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), timed))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}
