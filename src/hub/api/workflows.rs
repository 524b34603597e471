//! `/api/workflows/`: list, create (201), read, change (PATCH replaces
//! `fields` and `filter_rules` whole), delete (204). Fields and rules
//! are checked when written, so a workflow that cannot run is never
//! stored.

use super::http::{
    ApiError, ApiResult, ApiState, Base, Body, Caller, Detail, Id, Page, PageQuery, Paging, Query, State, present,
};
use crate::hub::store::workflows::{RecordFiles, Workflow};
use crate::hub::workflows::{DISCOVERIES, check_discovery_options, parse_fields, parse_rules};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, patch, delete))
        .routes(routes!(validate))
}

/// A workflow, in the seed's fields.
#[derive(Serialize, ToSchema)]
pub struct WorkflowOut {
    url: String,
    id: i64,
    name: String,
    label: String,
    icon_classes: Vec<String>,
    discovery: Option<String>,
    enabled: bool,
    visible: bool,
    schedule_only: bool,
    external_only: bool,
    /// Runtime fields: `{name, label, type, default, choices}`.
    #[schema(value_type = Vec<Object>)]
    fields: Value,
    /// Filter rules: `{state, type, action, include, exclude, ...}`.
    #[schema(value_type = Vec<Object>)]
    filter_rules: Value,
    #[schema(value_type = Object)]
    discovery_options: Value,
    preferred_queue: Option<String>,
    /// Which files its jobs keep a row for: `failures` (failed and aborted
    /// ones), `all`, or `none`. Counts are exact either way.
    record_files: RecordFiles,
}

fn workflow_out(base: &Base, w: &Workflow) -> WorkflowOut {
    WorkflowOut {
        url: base.url(&format!("/api/workflows/{}/", w.id)),
        id: w.id,
        name: w.name.clone(),
        label: w.label.clone(),
        icon_classes: serde_json::from_value(w.icon_classes.clone()).unwrap_or_default(),
        discovery: w.discovery.clone(),
        enabled: w.enabled,
        visible: w.visible,
        schedule_only: w.schedule_only,
        external_only: w.external_only,
        fields: w.fields.clone(),
        filter_rules: w.filter_rules.clone(),
        discovery_options: w.discovery_options.clone(),
        preferred_queue: w.preferred_queue.clone(),
        record_files: w.record_files,
    }
}

/// Writable fields; `discovery` and `preferred_queue` may be set to null.
/// `fields` and `filter_rules` are replaced whole. Unknown fields are
/// refused.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    /// Unique, without spaces; fixed once created.
    name: Option<String>,
    label: Option<String>,
    icon_classes: Option<Vec<String>>,
    /// `recursive`, `snapdiff` or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    discovery: Option<Option<String>>,
    enabled: Option<bool>,
    visible: Option<bool>,
    schedule_only: Option<bool>,
    external_only: Option<bool>,
    /// Runtime fields: `{name, label, type, default, choices}`, type one of
    /// string, int, bool, choices, enum[site], enum[queue], list.
    #[schema(value_type = Option<Vec<Object>>)]
    fields: Option<Value>,
    /// Filter rules, checked with the agent's own rule compiler.
    #[schema(value_type = Option<Vec<Object>>)]
    filter_rules: Option<Value>,
    /// `skip_missing` (alias `allow_missing_paths`); `min_age`: seconds
    /// since a file last changed below which discovery leaves it alone
    /// (reported as aborted), so no action races a writer.
    #[schema(value_type = Option<Object>)]
    discovery_options: Option<serde_json::Map<String, Value>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    preferred_queue: Option<Option<String>>,
    /// `failures` (the default: failed and aborted files), `all`, `none`.
    record_files: Option<RecordFiles>,
}

impl Fields {
    fn apply(self, w: &mut Workflow) -> ApiResult<()> {
        if let Some(v) = self.label {
            w.label = v;
        }
        if let Some(v) = self.icon_classes {
            w.icon_classes = json!(v);
        }
        if let Some(v) = self.discovery {
            if let Some(d) = &v
                && !DISCOVERIES.iter().any(|(n, _)| n == d)
            {
                return Err(ApiError::bad(format!(
                    "discovery: must be {} or null, not {d:?}",
                    DISCOVERIES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )));
            }
            w.discovery = v;
        }
        if let Some(v) = self.enabled {
            w.enabled = v;
        }
        if let Some(v) = self.visible {
            w.visible = v;
        }
        if let Some(v) = self.schedule_only {
            w.schedule_only = v;
        }
        if let Some(v) = self.external_only {
            w.external_only = v;
        }
        if let Some(v) = self.fields {
            w.fields = v;
        }
        if let Some(v) = self.filter_rules {
            w.filter_rules = v;
        }
        if let Some(v) = self.discovery_options {
            check_discovery_options(&v).map_err(|e| ApiError::bad(e.to_string()))?;
            w.discovery_options = Value::Object(v);
        }
        if let Some(v) = self.preferred_queue {
            w.preferred_queue = v;
        }
        if let Some(v) = self.record_files {
            w.record_files = v;
        }
        let fields = parse_fields(&w.fields).map_err(|e| ApiError::bad(e.to_string()))?;
        parse_rules(&w.filter_rules, &fields).map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(())
    }
}

/// Workflows.
#[utoipa::path(get, path = "/api/workflows/", tag = "workflows", params(PageQuery),
    responses((status = 200, body = Page<WorkflowOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list(s: State, _c: Caller, base: Base, Query(pq): Query<PageQuery>) -> ApiResult<Json<Page<WorkflowOut>>> {
    let paging = Paging::read(&pq, 100)?;
    let all = s.store.workflows().await?;
    let results = paging.slice(&all).iter().map(|w| workflow_out(&base, w)).collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// One problem a validation found: the field and what is wrong.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// The field at fault (`filter_rules[0].action[1]`, ...).
    name: String,
    /// What is wrong with it.
    description: String,
}

/// What `POST /api/workflows/validate/` found.
#[derive(Serialize, ToSchema)]
pub struct Validation {
    /// Whether `POST /api/workflows/` would take it.
    is_valid: bool,
    /// Why not (the first problem: the checks stop there, as a create does).
    errors: Vec<Problem>,
    /// What is allowed but worth knowing.
    warnings: Vec<Problem>,
}

fn problem(detail: &str) -> Problem {
    match detail.split_once(": ") {
        Some((name, rest)) if !name.contains(' ') => Problem {
            name: name.to_string(),
            description: rest.to_string(),
        },
        _ => Problem {
            name: "workflow".into(),
            description: detail.to_string(),
        },
    }
}

/// Checks a workflow as `POST /api/workflows/` would, without saving it
/// (200 whatever the verdict): `errors` says why it would be refused,
/// `warnings` what would stop it running as one might expect.
#[utoipa::path(post, path = "/api/workflows/validate/", tag = "workflows", request_body = Fields,
    responses((status = 200, body = Validation), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn validate(s: State, _c: Caller, body: axum::body::Bytes) -> ApiResult<Json<Validation>> {
    let checked = match super::http::parse_body::<Fields>(&body) {
        Ok(f) => check_new(&s, f).await,
        Err(e) => Err(e),
    };
    Ok(Json(match checked {
        Ok(w) => {
            let mut warnings = Vec::new();
            if !w.enabled {
                warnings.push(problem("enabled: false: jobs cannot be submitted with it"));
            }
            if w.schedule_only {
                warnings.push(problem("schedule_only: true: it runs only from a schedule"));
            }
            if w.filter_rules.as_array().is_some_and(Vec::is_empty) {
                warnings.push(problem("filter_rules: none: its jobs do nothing"));
            }
            Validation {
                is_valid: true,
                errors: vec![],
                warnings,
            }
        }
        Err(e) if e.status == axum::http::StatusCode::BAD_REQUEST => Validation {
            is_valid: false,
            errors: vec![problem(&e.detail)],
            warnings: vec![],
        },
        Err(e) => return Err(e),
    }))
}

/// Checks a new workflow without storing it.
async fn check_new(s: &ApiState, f: Fields) -> ApiResult<Workflow> {
    let name = f
        .name
        .clone()
        .ok_or_else(|| ApiError::bad("name: This field is required."))?;
    if name.is_empty() || name.contains(char::is_whitespace) || name.len() > 100 {
        return Err(ApiError::bad("name: 1 to 100 characters without spaces"));
    }
    if f.label.is_none() {
        return Err(ApiError::bad("label: This field is required."));
    }
    if s.store.workflow_by_name(&name).await?.is_some() {
        return Err(ApiError::bad(format!("name: a workflow called {name:?} exists")));
    }
    let mut w = Workflow {
        id: 0,
        name,
        label: String::new(),
        icon_classes: json!([]),
        discovery: None,
        enabled: true,
        visible: true,
        schedule_only: false,
        external_only: false,
        fields: json!([]),
        filter_rules: json!([]),
        discovery_options: json!({}),
        preferred_queue: None,
        builtin: false,
        record_files: Default::default(),
    };
    f.apply(&mut w)?;
    Ok(w)
}

/// Checks and stores a new workflow: what `POST /api/workflows/` and the
/// web page's editor do.
pub(crate) async fn create_workflow(s: &ApiState, f: Fields) -> ApiResult<Workflow> {
    let mut w = check_new(s, f).await?;
    w.id = s.store.create_workflow(&w).await?;
    Ok(w)
}

/// Checks and stores a change to workflow `id`: what `PATCH
/// /api/workflows/{id}/` and the web page's editor do.
pub(crate) async fn update_workflow(s: &ApiState, id: i64, f: Fields) -> ApiResult<Workflow> {
    let mut w = s
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    if f.name.as_ref().is_some_and(|n| *n != w.name) {
        return Err(ApiError::bad("name: a workflow's name cannot change"));
    }
    f.apply(&mut w)?;
    s.store.update_workflow(&w).await?;
    Ok(w)
}

/// A workflow's writable fields as JSON, the shape [`Fields`] reads: what
/// the web page's editor shows.
pub(crate) fn editable(w: &Workflow) -> Value {
    json!({
        "name": w.name,
        "label": w.label,
        "icon_classes": w.icon_classes,
        "discovery": w.discovery,
        "enabled": w.enabled,
        "visible": w.visible,
        "schedule_only": w.schedule_only,
        "external_only": w.external_only,
        "fields": w.fields,
        "filter_rules": w.filter_rules,
        "discovery_options": w.discovery_options,
        "preferred_queue": w.preferred_queue,
    })
}

/// Creates a workflow (201).
#[utoipa::path(post, path = "/api/workflows/", tag = "workflows", request_body = Fields,
    responses((status = 201, body = WorkflowOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn create(s: State, _c: Caller, base: Base, Body(f): Body<Fields>) -> ApiResult<Response> {
    let w = create_workflow(&s, f).await?;
    Ok((StatusCode::CREATED, Json(workflow_out(&base, &w))).into_response())
}

/// A workflow.
#[utoipa::path(get, path = "/api/workflows/{id}/", tag = "workflows", params(("id" = i64, Path)),
    responses((status = 200, body = WorkflowOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn read(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<WorkflowOut>> {
    let w = s
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    Ok(Json(workflow_out(&base, &w)))
}

/// Changes a workflow; `fields` and `filter_rules` are replaced whole.
#[utoipa::path(patch, path = "/api/workflows/{id}/", tag = "workflows", params(("id" = i64, Path)), request_body = Fields,
    responses((status = 200, body = WorkflowOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail), (status = 413, body = Detail)))]
async fn patch(s: State, _c: Caller, base: Base, Id(id): Id, Body(f): Body<Fields>) -> ApiResult<Json<WorkflowOut>> {
    let w = update_workflow(&s, id, f).await?;
    Ok(Json(workflow_out(&base, &w)))
}

/// Deletes a workflow (204); its jobs keep its name.
#[utoipa::path(delete, path = "/api/workflows/{id}/", tag = "workflows", params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn delete(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    if !s.store.delete_workflow(id).await? {
        return Err(ApiError::not_found("workflow"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
