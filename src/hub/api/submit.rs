//! `POST /api/file/workflow/`: run a workflow on paths of a site. The job
//! and its first tasks are written in one transaction and then published;
//! the answer is the job (201).

use super::http::{ApiError, ApiResult, ApiState, Base, Body, Caller, Detail, State, present};
use super::jobs::{JobOut, job_out};
use crate::agent::tasks::rules::Context;
use crate::hub::store::jobs::{Append, NewJob, Owner};
use crate::hub::submit::{actions, discovery, origin};
use crate::hub::workflows::{Known, compile, discovery_task, parse_fields, parse_rules, resolve_fields};
use crate::task::PathObject;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::sync::Arc;

pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<ApiState>> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(submit))
}

/// The submission, in the seed's fields. Unknown fields are refused.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The workflow's name.
    pub workflow: String,
    /// The site's name.
    pub site: String,
    /// Absolute paths, as strings or `{path, state}` objects.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub paths: Vec<Box<RawValue>>,
    /// The queue (the workflow's preferred one, else `default`).
    #[serde(default)]
    pub queue: Option<String>,
    /// Runtime field values.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// A discovery other than the workflow's; `null` for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub discovery: Option<Option<String>>,
    /// A running job (`PENDING` or `STARTED`) to run within: this
    /// submission's tasks join it and it ends once they are done too.
    #[serde(default)]
    pub job: Option<i64>,
    /// Include globs replacing the rules' own.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Exclude globs replacing the rules' own.
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    /// Do not append the site's include globs.
    #[serde(default)]
    pub ignore_site_includes: bool,
    /// Do not append the site's exclude globs.
    #[serde(default)]
    pub ignore_site_excludes: bool,
}

/// The schema of a field that may only be null.
/// The first thousand input paths are kept on the job, for display.
const INPUTS_KEPT: usize = 1000;

/// Runs a workflow on paths of a site (201, the job). The job and its
/// first tasks are written together, then published; with the broker
/// away they wait and go out when it returns.
#[utoipa::path(post, path = "/api/file/workflow/", tag = "jobs", request_body = Submission,
    responses((status = 201, body = JobOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn submit(s: State, c: Caller, base: Base, Body(sub): Body<Submission>) -> ApiResult<Response> {
    let workflow = s
        .store
        .workflow_by_name(&sub.workflow)
        .await?
        .ok_or_else(|| ApiError::bad(format!("workflow: no workflow called {:?}", sub.workflow)))?;
    if !workflow.enabled {
        return Err(ApiError::bad(format!("workflow: {:?} is disabled", workflow.name)));
    }
    if workflow.schedule_only {
        return Err(ApiError::bad(format!(
            "workflow: {:?} runs only from a schedule",
            workflow.name
        )));
    }
    let site = s
        .store
        .site_by_name(&sub.site)
        .await?
        .ok_or_else(|| ApiError::bad(format!("site: no site called {:?}", sub.site)))?;
    let queue = sub
        .queue
        .clone()
        .or_else(|| workflow.preferred_queue.clone())
        .unwrap_or_else(|| "default".into());
    if !s.store.queue_exists(site.id, &queue).await? {
        return Err(ApiError::bad(format!(
            "queue: site {:?} has no queue {queue:?}",
            site.name
        )));
    }
    // Paths: absolute, readable as path objects.
    if sub.paths.is_empty() {
        return Err(ApiError::bad("paths: at least one path is needed"));
    }
    let mut paths = Vec::with_capacity(sub.paths.len());
    for (i, raw) in sub.paths.iter().enumerate() {
        let p = PathObject::parse(raw.get().as_bytes()).map_err(|e| ApiError::bad(format!("paths[{i}]: {e}")))?;
        if p.path.first() != Some(&b'/') {
            return Err(ApiError::bad(format!("paths[{i}]: must be an absolute path")));
        }
        paths.push(p);
    }
    // Fields and rules, as the agent will run them.
    let specs =
        parse_fields(&workflow.fields).map_err(|e| ApiError::bad(format!("workflow {}: {e}", workflow.name)))?;
    let sites: Vec<String> = s.store.sites().await?.into_iter().map(|x| x.name).collect();
    let queues: Vec<String> = s.store.queues(None).await?.into_iter().map(|q| q.name).collect();
    let fields = resolve_fields(
        &specs,
        &sub.fields,
        &Known {
            sites: &sites,
            queues: &queues,
        },
    )
    .map_err(|e| ApiError::bad(e.to_string()))?;
    let rule_specs = parse_rules(&workflow.filter_rules, &specs)
        .map_err(|e| ApiError::bad(format!("workflow {}: {e}", workflow.name)))?;
    let patterns = Context {
        include: sub.include.clone(),
        exclude: sub.exclude.clone(),
        site_includes: if sub.ignore_site_includes {
            vec![]
        } else {
            site.include.clone()
        },
        site_excludes: if sub.ignore_site_excludes {
            vec![]
        } else {
            site.exclude.clone()
        },
        fields: Map::new(),
    };
    let rules =
        compile(&rule_specs, &fields, &site.name, &queue, Some(&patterns)).map_err(|e| ApiError::bad(e.to_string()))?;
    let disc = match &sub.discovery {
        Some(d) => d.clone(),
        None => workflow.discovery.clone(),
    };
    let task = match &disc {
        None => None,
        Some(d) => Some(discovery_task(d).ok_or_else(|| {
            ApiError::bad(format!(
                "discovery: unknown discovery {d:?} (recursive, snapdiff or null)"
            ))
        })?),
    };
    let skip_missing = sub.discovery.is_none()
        && ["skip_missing", "allow_missing_paths"]
            .iter()
            .any(|k| workflow.discovery_options.get(k).and_then(Value::as_bool) == Some(true));
    let mut input_paths: Vec<Value> = Vec::new();
    for p in paths.iter().take(INPUTS_KEPT) {
        let mut j = Vec::new();
        p.write_json(&mut j);
        input_paths.push(serde_json::from_slice(&j).unwrap_or(Value::Null));
    }
    let first = input_paths
        .first()
        .and_then(|p| p.get("path").or(Some(p)).and_then(Value::as_str).map(str::to_string));
    let friendly_name = format!(
        "{} of '{}'{} on '{}'",
        workflow.label,
        first.unwrap_or_default(),
        if paths.len() > 1 {
            format!(" and {} more", paths.len() - 1)
        } else {
            String::new()
        },
        site.name
    );
    let new = NewJob {
        workflow: workflow.name.clone(),
        fields: Value::Object(fields.clone()),
        discovery: disc.clone(),
        site: site.name.clone(),
        queue: queue.clone(),
        friendly_name,
        owner: Owner {
            kind: "user".into(),
            id: c.user_id,
            name: c.username.clone(),
        },
        clientkey_id: c.clientkey_id,
        input_paths: Value::Array(input_paths),
    };
    let me = origin();
    let raw_paths: Vec<&RawValue> = sub.paths.iter().map(|p| &**p).collect();
    let roots = |jobid| match task {
        Some(t) => {
            let kwargs = json!({
                "paths": raw_paths,
                "jobid": jobid,
                "filter_rules": workflow.filter_rules,
                "fields": fields,
                "include": sub.include,
                "exclude": sub.exclude,
                "site_includes": patterns.site_includes,
                "site_excludes": patterns.site_excludes,
                "site": site.name,
                "queue": queue,
                "skip_missing": skip_missing,
                "file_batch_size": site.file_batch_size,
                "file_batch_gb": site.file_batch_gb,
                "enable_auto_file_batch_sizing": site.enable_auto_file_batch_sizing,
                "children_in_result": false,
            });
            vec![discovery(t.as_str(), &kwargs.to_string(), &site.name, &queue, &me)]
        }
        None => actions(
            &rules,
            &paths,
            jobid,
            site.file_batch_size.max(1) as usize,
            &site.name,
            &me,
        ),
    };
    let job_id = match sub.job {
        None => {
            let id = s.store.create_job(&new, roots).await?;
            if s.store.job(id).await?.is_some_and(|j| j.roots == 0) {
                // No input path went to any rule: nothing to run.
                s.store.end_empty_job(id).await?;
            }
            id
        }
        Some(id) => match s.store.append_to_job(id, task.is_some(), &roots(id)).await? {
            Append::Added => id,
            Append::Ended(state) => {
                return Err(ApiError::bad(format!(
                    "job: job {id} has ended ({state}); submit without `job` to start a new one"
                )));
            }
            Append::Missing => return Err(ApiError::bad(format!("job: no job {id}"))),
        },
    };
    s.outbox.notify_one();
    let job = s.store.job(job_id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let out = job_out(&s, &base, &job).await?;
    if out.queue_nodes_online == Some(0) {
        tracing::warn!(job = job_id, site = %job.site, queue = %job.queue, "job accepted, but no node online consumes its queue: it waits");
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
