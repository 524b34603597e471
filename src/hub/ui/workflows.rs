//! `/ui/workflows/`: the workflows, one workflow's JSON in an editor
//! (create, change), and delete. What is saved is checked by the API's
//! own code (`POST`/`PATCH /api/workflows/`): the same body reader, which
//! refuses unknown fields, and the same field and rule checks; an error
//! shows next to the editor, with the text as it was typed.

use super::format::{count, ordered_json};
use super::frame::{Form, Layout, Query, UiError, UiResult, delete_confirmation, deleted, editor_error, page};
use super::session::Session;
use crate::hub::api::workflows::{Fields, create_workflow, editable, update_workflow};
use crate::hub::api::{ApiState, parse_body};
use crate::hub::store::workflows::Workflow;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui/workflows/", get(list))
        .route("/ui/workflows/new/", get(new).post(create))
        .route("/ui/workflows/{id}/", get(show).post(save))
        .route("/ui/workflows/{id}/delete/", get(confirm_delete).post(delete))
}

/// A workflow as a row of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowRow {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Label.
    pub label: String,
    /// Discovery, or `none`.
    pub discovery: String,
    /// `yes` / `no`.
    pub enabled: &'static str,
    /// `yes` / `no`.
    pub visible: &'static str,
    /// Filter rules.
    pub rules: usize,
    /// Runtime fields.
    pub fields: usize,
    /// `1 rule · 2 runtime fields`.
    pub counts: String,
    /// Installed by ferry.
    pub builtin: bool,
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A workflow as a row.
pub fn workflow_row(w: &Workflow) -> WorkflowRow {
    WorkflowRow {
        id: w.id,
        name: w.name.clone(),
        label: w.label.clone(),
        discovery: w.discovery.clone().unwrap_or_else(|| "none".into()),
        enabled: yes(w.enabled),
        visible: yes(w.visible),
        rules: w.filter_rules.as_array().map_or(0, Vec::len),
        fields: w.fields.as_array().map_or(0, Vec::len),
        counts: format!(
            "{} · {}",
            count(w.filter_rules.as_array().map_or(0, Vec::len) as i64, "rule", "rules"),
            count(
                w.fields.as_array().map_or(0, Vec::len) as i64,
                "runtime field",
                "runtime fields"
            )
        ),
        builtin: w.builtin,
    }
}

/// The order of a workflow's keys in the editor: what names it first.
const KEY_ORDER: &[&str] = &[
    "name",
    "label",
    "discovery",
    "enabled",
    "visible",
    "schedule_only",
    "external_only",
    "preferred_queue",
    "icon_classes",
    "discovery_options",
    "fields",
    "filter_rules",
];

/// A workflow's JSON as the editor shows it: indented, its name and label
/// first, its rules last.
pub fn editor_text(w: &Workflow) -> String {
    ordered_json(&editable(w), KEY_ORDER)
}

/// The editor's text of a new workflow: a skeleton to fill in.
pub const NEW_WORKFLOW: &str = r#"{
  "name": "my_workflow",
  "label": "My workflow",
  "discovery": "recursive",
  "fields": [],
  "filter_rules": [
    {"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.migrate"}]}
  ]
}"#;

/// Reads and checks the editor's text as the API reads a body: the
/// fields, or the error to show beside it.
pub fn read_editor(text: &str) -> Result<Fields, String> {
    parse_body::<Fields>(text.as_bytes()).map_err(|e| editor_error(e.detail))
}

/// The list.
#[derive(Template)]
#[template(path = "workflows.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<WorkflowRow>,
    notice: Option<String>,
}

/// The editor of a workflow (`id` 0: a new one).
#[derive(Template)]
#[template(path = "workflow.html")]
struct EditPage {
    layout: Layout,
    id: i64,
    title: String,
    row: Option<WorkflowRow>,
    text: String,
    error: Option<String>,
    notice: Option<String>,
    action: String,
}

/// Notices after a change.
#[derive(Deserialize, Default)]
struct Notice {
    #[serde(default)]
    deleted: String,
    #[serde(default)]
    saved: String,
}

async fn list(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Query(n): Query<Notice>,
) -> UiResult<Response> {
    let all = s.store.workflows().await?;
    page(
        StatusCode::OK,
        &ListPage {
            layout: session.layout("workflows"),
            rows: all.iter().map(workflow_row).collect(),
            notice: (!n.deleted.is_empty()).then(|| format!("Workflow {:?} was deleted.", n.deleted)),
        },
    )
}

fn workflow_id(raw: &str) -> UiResult<i64> {
    raw.parse()
        .map_err(|_| UiError::not_found(&format!("workflow {raw:?}")))
}

async fn load(s: &ApiState, id: i64) -> UiResult<Workflow> {
    s.store
        .workflow(id)
        .await?
        .ok_or_else(|| UiError::not_found(&format!("workflow {id}")))
}

async fn new(Extension(session): Extension<Session>) -> UiResult<Response> {
    page(
        StatusCode::OK,
        &EditPage {
            layout: session.layout("workflows"),
            id: 0,
            title: "New workflow".into(),
            row: None,
            text: NEW_WORKFLOW.into(),
            error: None,
            notice: None,
            action: "/ui/workflows/new/".into(),
        },
    )
}

/// What the editor sends.
#[derive(Deserialize)]
struct Editor {
    #[serde(default)]
    json: String,
}

async fn create(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Form(f): Form<Editor>,
) -> UiResult<Response> {
    let made = match read_editor(&f.json) {
        Ok(fields) => create_workflow(&s, fields).await.map_err(|e| (e.status, e.detail)),
        Err(e) => Err((StatusCode::BAD_REQUEST, e)),
    };
    match made {
        Ok(w) => Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/ui/workflows/{}/?saved=created", w.id))],
        )
            .into_response()),
        Err((status, error)) if status.is_client_error() => page(
            status,
            &EditPage {
                layout: session.layout("workflows"),
                id: 0,
                title: "New workflow".into(),
                row: None,
                text: f.json,
                error: Some(error),
                notice: None,
                action: "/ui/workflows/new/".into(),
            },
        ),
        Err((status, message)) => Err(UiError { status, message }),
    }
}

async fn show(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> UiResult<Response> {
    let w = load(&s, workflow_id(&id)?).await?;
    page(
        StatusCode::OK,
        &EditPage {
            layout: session.layout("workflows"),
            id: w.id,
            title: format!("Workflow {}", w.name),
            row: Some(workflow_row(&w)),
            text: editor_text(&w),
            error: None,
            notice: match n.saved.as_str() {
                "created" => Some("Created.".into()),
                "" => None,
                _ => Some("Saved.".into()),
            },
            action: format!("/ui/workflows/{}/", w.id),
        },
    )
}

async fn save(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(f): Form<Editor>,
) -> UiResult<Response> {
    let id = workflow_id(&id)?;
    let w = load(&s, id).await?;
    let saved = match read_editor(&f.json) {
        Ok(fields) => update_workflow(&s, id, fields).await.map_err(|e| (e.status, e.detail)),
        Err(e) => Err((StatusCode::BAD_REQUEST, e)),
    };
    match saved {
        Ok(_) => Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/ui/workflows/{id}/?saved=1"))],
        )
            .into_response()),
        Err((status, error)) if status.is_client_error() => page(
            status,
            &EditPage {
                layout: session.layout("workflows"),
                id,
                title: format!("Workflow {}", w.name),
                row: Some(workflow_row(&w)),
                text: f.json,
                error: Some(error),
                notice: None,
                action: format!("/ui/workflows/{id}/"),
            },
        ),
        Err((status, message)) => Err(UiError { status, message }),
    }
}

async fn confirm_delete(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let w = load(&s, workflow_id(&id)?).await?;
    let title = format!("Delete workflow {}", w.name);
    page(
        StatusCode::OK,
        &delete_confirmation(
            session.layout("workflows"),
            "workflows",
            w.id,
            title,
            "Delete this workflow? Jobs already run with it keep its name; it can no longer be submitted. A built-in workflow comes back, as installed, when the hub restarts.",
        ),
    )
}

async fn delete(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> UiResult<Response> {
    let w = load(&s, workflow_id(&id)?).await?;
    if !s.store.delete_workflow(w.id).await? {
        return Err(UiError::not_found(&format!("workflow {}", w.id)));
    }
    Ok(deleted("workflows", &w.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_editor_reads_as_the_api_does() {
        assert!(read_editor(NEW_WORKFLOW).is_ok());
        let e = read_editor(r#"{"name": "x", "colour": "red"}"#).err().unwrap();
        assert!(e.contains("colour"), "{e}");
        let e = read_editor("{not json").err().unwrap();
        assert!(e.starts_with("not JSON: key must be a string at line 1"), "{e}");
    }

    #[test]
    fn the_editor_shows_what_it_reads_back() {
        let w = crate::hub::workflows::builtins().remove(0);
        let text = editor_text(&w);
        assert!(text.starts_with("{\n  \"name\": \"migrate\",\n  \"label\": "), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, editable(&w), "every key, once");
        assert!(read_editor(&text).is_ok());
        let r = workflow_row(&w);
        assert_eq!((r.enabled, r.rules), ("yes", 1));
    }
}
