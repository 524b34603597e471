//! The task types on the health page: each running or paused
//! cluster-wide (with why, by whom, since when, and how many of its tasks
//! wait parked), with a Pause button (and a reason) or a Resume button,
//! carried out through `hub::typectl` as the API does
//! (`/ui/health/tasktypes/{name}/{pause|resume}/`, then back to the page).

use super::format::{Moment, moment, thousands};
use super::frame::{Form, UiError, UiResult};
use super::session::Session;
use crate::hub::api::ApiState;
use crate::hub::typectl::{self, TaskType};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/ui/health/tasktypes/{name}/{action}/", post(act))
}

/// A task type as a row of the health page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeRow {
    /// The task name.
    pub name: String,
    /// Paused cluster-wide.
    pub paused: bool,
    /// Why, by whom (while paused).
    pub reason: String,
    /// Who paused it (while paused).
    pub by: String,
    /// Since when (while paused).
    pub since: Option<Moment>,
    /// Tasks waiting parked, with separators, or `unknown`.
    pub parked: String,
}

/// `types` as rows, at `now` (µs).
pub fn type_rows(types: &[TaskType], now: i64) -> Vec<TypeRow> {
    types
        .iter()
        .map(|t| TypeRow {
            name: t.task.as_str().to_string(),
            paused: t.pause.is_some(),
            reason: t.pause.as_ref().map(|p| p.reason.clone()).unwrap_or_default(),
            by: t.pause.as_ref().map(|p| p.paused_by.clone()).unwrap_or_default(),
            since: t.pause.as_ref().map(|p| moment(p.since, now)),
            parked: t.parked.map_or_else(|| "unknown".into(), |n| thousands(i64::from(n))),
        })
        .collect()
}

/// The pause form's fields (beside the CSRF token).
#[derive(Deserialize)]
struct PauseForm {
    #[serde(default)]
    reason: String,
}

async fn act(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
    Form(f): Form<PauseForm>,
) -> UiResult<Response> {
    let broker = s.session.borrow().clone();
    let (store, settings) = (&s.store, &s.settings);
    let done = match action.as_str() {
        "pause" => {
            typectl::pause(
                store,
                settings,
                broker.as_deref(),
                &name,
                f.reason.trim(),
                &session.username,
            )
            .await
        }
        "resume" => typectl::resume(store, settings, broker, &name, &session.username).await,
        _ => return Err(UiError::not_found(&format!("action {action:?}"))),
    };
    done?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/health/#tasktypes")]).into_response())
}
