//! `/api/workflows/`: list, create (201), read, change (PATCH replaces
//! `fields` and `filter_rules` whole), delete (204). Fields and rules
//! are checked when written, so a workflow that cannot run is never
//! stored.

use super::{ApiError, ApiResult, ApiState, Base, Body, Caller, Id, Paging, Params, State, json};
use crate::hub::store::workflows::Workflow;
use crate::hub::workflows::{DISCOVERIES, parse_fields, parse_rules};
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/workflows/", get(list).post(create))
        .route("/api/workflows/{id}/", get(read).patch(patch).delete(delete))
}

/// A workflow in the seed's fields.
pub fn workflow_json(base: &Base, w: &Workflow) -> Value {
    json!({
        "url": base.url(&format!("/api/workflows/{}/", w.id)),
        "id": w.id,
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

/// Writable fields; `discovery` and `preferred_queue` may be set to null.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Fields {
    name: Option<String>,
    label: Option<String>,
    icon_classes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    discovery: Option<Option<String>>,
    enabled: Option<bool>,
    visible: Option<bool>,
    schedule_only: Option<bool>,
    external_only: Option<bool>,
    fields: Option<Value>,
    filter_rules: Option<Value>,
    discovery_options: Option<serde_json::Map<String, Value>>,
    #[serde(default, deserialize_with = "present")]
    preferred_queue: Option<Option<String>>,
}

/// A key given as null is `Some(None)`; an absent one `None`.
pub(super) fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
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
            for k in v.keys() {
                if k != "skip_missing" && k != "allow_missing_paths" {
                    return Err(ApiError::bad(format!(
                        "discovery_options.{k}: unknown option (known: skip_missing, allow_missing_paths)"
                    )));
                }
            }
            w.discovery_options = Value::Object(v);
        }
        if let Some(v) = self.preferred_queue {
            w.preferred_queue = v;
        }
        let fields = parse_fields(&w.fields).map_err(|e| ApiError::bad(e.to_string()))?;
        parse_rules(&w.filter_rules, &fields).map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(())
    }
}

async fn list(s: State, _c: Caller, base: Base, p: Params) -> ApiResult<Response> {
    let paging = Paging::read(&p, 100)?;
    let all = s.store.workflows().await?;
    let results = paging.slice(&all).iter().map(|w| workflow_json(&base, w)).collect();
    Ok(json(
        StatusCode::OK,
        paging.envelope(&base, all.len() as i64, results)?.into(),
    ))
}

async fn create(s: State, _c: Caller, base: Base, Body(f): Body<Fields>) -> ApiResult<Response> {
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
    };
    f.apply(&mut w)?;
    w.id = s.store.create_workflow(&w).await?;
    Ok(json(StatusCode::CREATED, workflow_json(&base, &w)))
}

async fn read(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let w = s
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    Ok(json(StatusCode::OK, workflow_json(&base, &w)))
}

async fn patch(s: State, _c: Caller, base: Base, Id(id): Id, Body(f): Body<Fields>) -> ApiResult<Response> {
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
    Ok(json(StatusCode::OK, workflow_json(&base, &w)))
}

async fn delete(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    if !s.store.delete_workflow(id).await? {
        return Err(ApiError::not_found("workflow"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
