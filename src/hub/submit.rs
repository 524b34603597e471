//! Starting a job: the messages of its first tasks (a discovery, or with
//! `discovery: null` the action tasks the hub cuts from the input paths
//! with the rules the agent would apply), and the outbox publisher that
//! hands them to the broker after the job is committed.
//!
//! Every message carries `reply_to` = the hub's durable results queue;
//! the agent passes it to every child, so every result of the job comes
//! back there ([`crate::config::HubSettings::results_queue`]).

use super::store::jobs::{Append, NewJob, Outbound, Owner, RootTask};
use super::store::{Store, StoreError};
use super::workflows::{DiscoveryOptions, Known, compile, discovery_task, parse_fields, parse_rules, resolve_fields};
use crate::agent::broker::{self, Session, task_properties};
use crate::agent::celery::{HeaderValue, Outgoing, Signature, root_task};
use crate::agent::tasks::rules::Context;
use crate::agent::tasks::rules::{Rule, matching};
use crate::config::queue_name;
use crate::entry::FileType;
use crate::snapdiff::request::ROTATE_ON_ERROR;
use crate::task::args::kwargs_with;
use crate::task::{PathObject, TaskName};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

/// The name the hub signs its messages with (`origin`).
pub fn origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("ferry-hub@{}", host.trim())
}

/// A root task ready for the outbox.
pub fn outbound(out: Outgoing, task: &str, site: &str, queue: &str) -> RootTask {
    RootTask {
        task_id: out.id,
        tasktype: task.to_string(),
        site: site.to_string(),
        queue: queue.to_string(),
        headers: headers_json(&out.headers).to_string(),
        body: String::from_utf8(out.body).expect("the encoder writes UTF-8"),
    }
}

/// The discovery task of a job: `kwargs` is its keyword arguments (a JSON
/// object).
pub fn discovery(task: &str, kwargs: &str, site: &str, queue: &str, origin: &str) -> RootTask {
    let id = uuid::Uuid::new_v4().to_string();
    let out = root_task(id, task, kwargs, &[], origin);
    outbound(
        out,
        task,
        site,
        &queue_name(site, queue, crate::config::Function::Discovery),
    )
}

/// The action tasks of a job without discovery: each input path goes to
/// the rules that take it (its own `state`, type `file`: the hub does not
/// stat paths), cut into batches of at most `batch` paths per rule, each
/// batch a task of the rule's first action with the rest chained behind.
pub fn actions(
    rules: &[Rule],
    paths: &[PathObject],
    jobid: i64,
    batch: usize,
    site: &str,
    origin: &str,
) -> Vec<RootTask> {
    let jobid_raw = serde_json::value::RawValue::from_string(jobid.to_string()).expect("an integer");
    let mut per_rule: Vec<Vec<Vec<u8>>> = vec![Vec::new(); rules.len()];
    let mut out = Vec::new();
    let mut hits = Vec::new();
    let flush = |rule: &Rule, items: &mut Vec<Vec<u8>>, out: &mut Vec<RootTask>| {
        if items.is_empty() {
            return;
        }
        let first = &rule.actions[0];
        let joined = items.join(&b","[..]);
        let kwargs = kwargs_with(&first.kwargs, Some(&jobid_raw), Some(&joined));
        let chain: Vec<Signature> = rule.actions[1..]
            .iter()
            .rev()
            .map(|a| a.signature(Some(&jobid_raw)))
            .collect();
        let o = root_task(uuid::Uuid::new_v4().to_string(), &first.task, &kwargs, &chain, origin);
        out.push(outbound(o, &first.task, site, &first.queue));
        items.clear();
    };
    for p in paths {
        let state = p
            .extra
            .iter()
            .find(|(k, _)| k == "state")
            .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok())
            .unwrap_or_default();
        matching(rules, &p.path, FileType::File, &state, &mut hits);
        for &r in &hits {
            let mut json = Vec::new();
            p.write_json(&mut json);
            per_rule[r].push(json);
            if per_rule[r].len() >= batch {
                flush(&rules[r], &mut per_rule[r], &mut out);
            }
        }
    }
    for (r, items) in per_rule.iter_mut().enumerate() {
        flush(&rules[r], items, &mut out);
    }
    out
}

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The submission is wrong; the text names the field at fault.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key given as null is `Some(None)`; an absent one `None` (serde
/// cannot tell them apart on its own).
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn invalid(why: impl Into<String>) -> SubmitError {
    SubmitError::Invalid(why.into())
}

/// Tasks that read byte ranges, which the seed says are "incompatible
/// with recursive discovery".
const RANGED: [TaskName; 2] = [TaskName::RecallBytes, TaskName::ImportBytes];

/// The runtime fields that name a multi-site workflow's destination site
/// (`send` calls it `destinationsite`, `site_sync` `destination`).
const DESTINATION_SITE_FIELDS: [&str; 2] = [super::workflows::DESTINATION_SITE, "destination"];

/// The runtime field that names the queue on the destination site.
const DESTINATION_QUEUE_FIELD: &str = "destinationqueue";

/// Fills in a multi-site workflow's destination queue as the seed does
/// (003:L10094): the one given, or the job's own, "the same queue across
/// all sites"; where the destination site has no such queue, its
/// `default`. Workflows without a destination site are left alone.
async fn destination_queue(
    store: &Store,
    sites: &[super::store::sites::Site],
    queue: &str,
    fields: &mut Map<String, Value>,
) -> Result<(), SubmitError> {
    let Some(site) = DESTINATION_SITE_FIELDS
        .iter()
        .find_map(|f| fields.get(*f).and_then(Value::as_str))
        .and_then(|name| sites.iter().find(|s| s.name == name))
    else {
        return Ok(());
    };
    let wanted = match fields.get(DESTINATION_QUEUE_FIELD) {
        Some(Value::String(q)) if !q.is_empty() => q.clone(),
        _ => queue.to_string(),
    };
    let chosen = match store.queue_exists(site.id, &wanted).await? {
        true => wanted,
        false => "default".to_string(),
    };
    fields.insert(DESTINATION_QUEUE_FIELD.into(), Value::String(chosen));
    Ok(())
}

/// The submission, in the seed's fields. Unknown fields are refused.
#[derive(Clone, Deserialize, Serialize, utoipa::ToSchema)]
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
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub discovery: Option<Option<String>>,
    /// A running job (`PENDING` or `STARTED`) to run within: this
    /// submission's tasks join it and it ends once they are done too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// Only discover: the job reports, per rule, the files and bytes its
    /// actions would take, and runs none of them. Needs the `recursive`
    /// discovery (a snapdiff run moves the site's snapshot baseline on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// The first thousand input paths are kept on the job, for display.
const INPUTS_KEPT: usize = 1000;

/// Accepts a submission from `owner` (with client key `clientkey_id`):
/// checks it as the agents will run it, then writes the job and its
/// first tasks in one transaction (or adds them to the running job
/// `sub.job`). The caller wakes the outbox publisher. `resubmitted_from`
/// names the job this one submits again. A discovery holds back its
/// children while their queue holds `max_queue_depth` messages (0: no
/// limit). Returns the job's id.
pub async fn start(
    store: &Store,
    owner: Owner,
    clientkey_id: Option<i64>,
    sub: &Submission,
    resubmitted_from: Option<i64>,
    max_queue_depth: u32,
) -> Result<i64, SubmitError> {
    let how = How::Job {
        owner,
        clientkey_id,
        resubmitted_from,
    };
    Ok(submit(store, sub, how, max_queue_depth)
        .await?
        .expect("a job is written"))
}

/// What a schedule adds to the submissions of its runs: the schedule, so
/// its jobs carry it (`schedule_ids`) and may be of a `schedule_only`
/// workflow, and its `discovery_options`, which go where the workflow's
/// would (over the workflow's, which apply only when the schedule names
/// no discovery of its own, as for a submission).
#[derive(Clone, Copy, Debug)]
pub struct FromSchedule<'a> {
    /// The schedule's id.
    pub schedule_id: i64,
    /// Its `discovery_options`.
    pub discovery_options: &'a Map<String, Value>,
}

/// The owner of every scheduled job: the seed's `system` (id −2).
pub fn system() -> Owner {
    Owner {
        kind: "system".into(),
        id: -2,
        name: "system".into(),
    }
}

/// Starts the job of run `run_id` of a schedule, owned by `system`:
/// checks the submission as [`start`] does, then writes the job, marks it
/// with the schedule and records it on the run in one transaction
/// ([`Store::start_run_job`]). `None` when the run has its job already
/// (or is gone with its schedule): nothing is written, so a run started
/// twice (a retry after a crash) makes one job.
pub async fn start_scheduled(
    store: &Store,
    sub: &Submission,
    from: FromSchedule<'_>,
    run_id: i64,
    max_queue_depth: u32,
) -> Result<Option<i64>, SubmitError> {
    submit(store, sub, How::Run { from, run_id }, max_queue_depth).await
}

/// Checks a schedule's submission as [`start_scheduled`] would, writing
/// nothing: a subscription that could not run is refused when written.
pub async fn check_scheduled(store: &Store, sub: &Submission, from: FromSchedule<'_>) -> Result<(), SubmitError> {
    submit(store, sub, How::Check { from }, 0).await.map(|_| ())
}

/// What to do with a submission once it is checked.
enum How<'a> {
    /// Write a job (or add to `sub.job`).
    Job {
        owner: Owner,
        clientkey_id: Option<i64>,
        resubmitted_from: Option<i64>,
    },
    /// Write the job of a schedule's run.
    Run { from: FromSchedule<'a>, run_id: i64 },
    /// Write nothing.
    Check { from: FromSchedule<'a> },
}

async fn submit(
    store: &Store,
    sub: &Submission,
    how: How<'_>,
    max_queue_depth: u32,
) -> Result<Option<i64>, SubmitError> {
    let from = match &how {
        How::Job { .. } => None,
        How::Run { from, .. } | How::Check { from } => Some(*from),
    };
    let workflow = store
        .workflow_by_name(&sub.workflow)
        .await?
        .ok_or_else(|| invalid(format!("workflow: no workflow called {:?}", sub.workflow)))?;
    if !workflow.enabled {
        return Err(invalid(format!("workflow: {:?} is disabled", workflow.name)));
    }
    if workflow.schedule_only && from.is_none() {
        return Err(invalid(format!(
            "workflow: {:?} runs only from a schedule",
            workflow.name
        )));
    }
    let site = store
        .site_by_name(&sub.site)
        .await?
        .ok_or_else(|| invalid(format!("site: no site called {:?}", sub.site)))?;
    let queue = sub
        .queue
        .clone()
        .or_else(|| workflow.preferred_queue.clone())
        .unwrap_or_else(|| "default".into());
    if !store.queue_exists(site.id, &queue).await? {
        return Err(invalid(format!("queue: site {:?} has no queue {queue:?}", site.name)));
    }
    // Paths: readable as path objects (absolute unless they are keys:
    // checked once the steps are known).
    if sub.paths.is_empty() {
        return Err(invalid("paths: at least one path is needed"));
    }
    let mut paths = Vec::with_capacity(sub.paths.len());
    for (i, raw) in sub.paths.iter().enumerate() {
        let p = PathObject::parse(raw.get().as_bytes()).map_err(|e| invalid(format!("paths[{i}]: {e}")))?;
        if p.path.is_empty() {
            return Err(invalid(format!("paths[{i}]: must not be empty")));
        }
        paths.push(p);
    }
    // Fields and rules, as the agent will run them.
    let specs = parse_fields(&workflow.fields).map_err(|e| invalid(format!("workflow {}: {e}", workflow.name)))?;
    let all_sites = store.sites().await?;
    let sites: Vec<String> = all_sites.iter().map(|x| x.name.clone()).collect();
    let queues: Vec<String> = store.queues(None).await?.into_iter().map(|q| q.name).collect();
    let mut fields = resolve_fields(
        &specs,
        &sub.fields,
        &Known {
            sites: &sites,
            queues: &queues,
        },
    )
    .map_err(|e| invalid(e.to_string()))?;
    destination_queue(store, &all_sites, &queue, &mut fields).await?;
    let disc = match &sub.discovery {
        Some(d) => d.clone(),
        None => workflow.discovery.clone(),
    };
    let sync = bisync_sides(
        &workflow.name,
        disc.as_deref(),
        from.is_some(),
        &fields,
        &site.name,
        &paths,
    )?;

    // Two runs on one fileset would roll back each other's held snapshots
    // (another schedule's, since a schedule skips while its last run goes).
    if let (Some(s), How::Run { .. }) = (&sync, &how)
        && let Some(going) = store.sync_run_going(&s.fileset, &site.name, &s.site2).await?
    {
        return Err(invalid(format!(
            "paths: a bidirectional sync of {} between these sites is running (job {going})",
            s.fileset
        )));
    }
    let rule_specs =
        parse_rules(&workflow.filter_rules, &specs).map_err(|e| invalid(format!("workflow {}: {e}", workflow.name)))?;
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
        compile(&rule_specs, &fields, &site.name, &queue, Some(&patterns)).map_err(|e| invalid(e.to_string()))?;
    let task = match &disc {
        None => None,
        Some(d) => Some(discovery_task(d).ok_or_else(|| {
            invalid(format!(
                "discovery: unknown discovery {d:?} (recursive, snapdiff, bidirectional_snapdiff or null)"
            ))
        })?),
    };
    // The workflow's discovery options go with its own discovery only; a
    // schedule's go over them.
    let mut options = match (&sub.discovery, workflow.discovery_options.as_object()) {
        (None, Some(o)) => o.clone(),
        _ => Map::new(),
    };
    if let Some(f) = from {
        options.extend(f.discovery_options.clone());
    }
    let options = DiscoveryOptions::read(&options);
    // Byte ranges are of single named files: a walk would apply one
    // range to every file under a directory (003:L12401-12434).
    if task == Some(TaskName::RecursiveNavigate)
        && let Some(a) = rules
            .iter()
            .flat_map(|r| &r.actions)
            .find(|a| RANGED.iter().any(|t| t.as_str() == a.task))
    {
        return Err(invalid(format!(
            "discovery: {} is incompatible with the recursive discovery (a byte range names one file); submit the files themselves with no discovery",
            a.task
        )));
    }
    // An import's input is object keys, relative to its endpoint's prefix;
    // every other input is an absolute local path.
    let keys = task.is_none()
        && !rules.is_empty()
        && rules.iter().all(|r| {
            r.actions
                .first()
                .and_then(|a| TaskName::parse(&a.task))
                .is_some_and(TaskName::takes_keys)
        });
    if !keys && let Some(i) = paths.iter().position(|p| p.path.first() != Some(&b'/')) {
        return Err(invalid(format!("paths[{i}]: must be an absolute path")));
    }
    if sub.dry_run && task != Some(TaskName::RecursiveNavigate) {
        return Err(invalid(format!(
            "dry_run: needs the recursive discovery, not {}",
            disc.as_deref().map_or("none".to_string(), |d| format!("{d:?}"))
        )));
    }
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
    let (owner, clientkey_id, resubmitted_from) = match &how {
        How::Job {
            owner,
            clientkey_id,
            resubmitted_from,
        } => (owner.clone(), *clientkey_id, *resubmitted_from),
        How::Run { .. } | How::Check { .. } => (system(), None, None),
    };
    let new = NewJob {
        workflow: workflow.name.clone(),
        fields: Value::Object(fields.clone()),
        discovery: disc.clone(),
        site: site.name.clone(),
        queue: queue.clone(),
        friendly_name,
        owner,
        clientkey_id,
        input_paths: Value::Array(input_paths),
        request: Some(
            serde_json::to_string(&Submission {
                job: None,
                ..sub.clone()
            })
            .expect("json"),
        ),
        resubmitted_from,
        record_files: workflow.record_files,
        dry_run: sub.dry_run,
        sync: sync.clone(),
    };
    let me = origin();
    let raw_paths: Vec<&RawValue> = sub.paths.iter().map(|p| &**p).collect();
    let roots = |jobid| match task {
        Some(t) => {
            let mut kwargs = json!({
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
                "skip_missing": options.skip_missing,
                "min_age": options.min_age,
                "dry_run": sub.dry_run,
                "file_batch_size": site.file_batch_size,
                "file_batch_gb": site.file_batch_gb,
                "enable_auto_file_batch_sizing": site.enable_auto_file_batch_sizing,
                "children_in_result": false,
                "max_queue_depth": max_queue_depth,
            });
            // A sync workflow's runtime field `snappdiff_rotate_on_error`
            // (the seed's spelling, 003:L11909) is the snapdiff's own
            // argument: it decides whether a failed sync rotates.
            if let Some(rotate) = fields.get(ROTATE_ON_ERROR).filter(|v| v.is_boolean())
                && t == TaskName::Snapdiff
            {
                kwargs[ROTATE_ON_ERROR] = rotate.clone();
            }
            match &sync {
                None => vec![discovery(t.as_str(), &kwargs.to_string(), &site.name, &queue, &me)],
                // A bidirectional run starts with both sites' snapdiffs,
                // which hand their changes to the hub.
                Some(s) => {
                    kwargs["collect"] = true.into();
                    let mut there = kwargs.clone();
                    there["site"] = s.site2.clone().into();
                    there["queue"] = s.queue2.clone().into();
                    vec![
                        discovery(t.as_str(), &kwargs.to_string(), &site.name, &queue, &me),
                        discovery(t.as_str(), &there.to_string(), &s.site2, &s.queue2, &me),
                    ]
                }
            }
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
    let created = match (&how, sub.job) {
        (How::Check { .. }, _) => return Ok(None),
        (How::Run { from, run_id }, _) => store.start_run_job(*run_id, from.schedule_id, &new, roots).await?,
        (How::Job { .. }, None) => Some(store.create_job(&new, roots).await?),
        (How::Job { .. }, Some(id)) => match store.append_to_job(id, task.is_some(), &roots(id)).await? {
            Append::Added => return Ok(Some(id)),
            Append::Ended(state) => {
                return Err(invalid(format!(
                    "job: job {id} has ended ({state}); submit without `job` to start a new one"
                )));
            }
            Append::Missing => return Err(invalid(format!("job: no job {id}"))),
        },
    };
    if let Some(id) = created
        && store.job(id).await?.is_some_and(|j| j.roots == 0)
    {
        // No input path went to any rule: nothing to run.
        store.end_empty_job(id).await?;
    }
    Ok(created)
}

/// Checks the pairing of the `bidirectional_snapdiff` discovery with the
/// `bidirectional_sync` workflow (each only with the other, only from a
/// schedule, on one fileset, between two sites) and returns the run's
/// second site for a bidirectional job.
fn bisync_sides(
    workflow: &str,
    discovery: Option<&str>,
    scheduled: bool,
    fields: &Map<String, Value>,
    site: &str,
    paths: &[PathObject],
) -> Result<Option<super::store::bisync::NewSyncRun>, SubmitError> {
    use super::workflows::{
        BIDIRECTIONAL_DISCOVERY as DISCOVERY, BIDIRECTIONAL_WORKFLOW as WORKFLOW, DESTINATION_SITE as SITE2_FIELD,
    };
    match (workflow == WORKFLOW, discovery == Some(DISCOVERY)) {
        (false, false) => return Ok(None),
        (true, false) => {
            return Err(invalid(format!(
                "discovery: {WORKFLOW} runs only with the {DISCOVERY} discovery"
            )));
        }
        (false, true) => {
            return Err(invalid(format!(
                "discovery: {DISCOVERY} runs only the {WORKFLOW} workflow"
            )));
        }
        (true, true) => {}
    }
    if !scheduled {
        return Err(invalid(format!("discovery: {DISCOVERY} runs only from a schedule")));
    }
    let [fileset] = paths else {
        return Err(invalid(format!(
            "paths: {DISCOVERY} syncs one fileset, given as its one path"
        )));
    };
    let Some(site2) = fields.get(SITE2_FIELD).and_then(Value::as_str) else {
        return Err(invalid(format!("fields.{SITE2_FIELD}: the other site is needed")));
    };
    if site2 == site {
        return Err(invalid(format!(
            "fields.{SITE2_FIELD}: must be another site than the schedule's ({site})"
        )));
    }
    let fileset =
        String::from_utf8(fileset.path.clone()).map_err(|_| invalid("paths[0]: a fileset's path must be UTF-8"))?;
    Ok(Some(super::store::bisync::NewSyncRun {
        site2: site2.to_string(),
        queue2: fields
            .get(DESTINATION_QUEUE_FIELD)
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string(),
        fileset,
    }))
}

/// Headers as JSON, to keep in the outbox.
pub fn headers_json(h: &[(String, HeaderValue)]) -> Value {
    fn one(v: &HeaderValue) -> Value {
        match v {
            HeaderValue::Null => Value::Null,
            HeaderValue::Bool(b) => (*b).into(),
            HeaderValue::Int(n) => (*n).into(),
            HeaderValue::Float(x) => (*x).into(),
            HeaderValue::Str(s) => s.clone().into(),
            HeaderValue::Bytes(b) => String::from_utf8_lossy(b).into_owned().into(),
            HeaderValue::List(l) => l.iter().map(one).collect(),
            HeaderValue::Table(t) => headers_json(t),
        }
    }
    Value::Array(h.iter().map(|(k, v)| serde_json::json!([k, one(v)])).collect())
}

/// Headers back from their JSON.
pub fn headers_from_json(v: &Value) -> Vec<(String, HeaderValue)> {
    fn one(v: &Value) -> HeaderValue {
        match v {
            Value::Null => HeaderValue::Null,
            Value::Bool(b) => HeaderValue::Bool(*b),
            Value::Number(n) => n
                .as_i64()
                .map_or_else(|| HeaderValue::Float(n.as_f64().unwrap_or(0.0)), HeaderValue::Int),
            Value::String(s) => HeaderValue::Str(s.clone()),
            Value::Array(a) if a.first().is_some_and(Value::is_array) => HeaderValue::Table(headers_from_json(v)),
            Value::Array(a) => HeaderValue::List(a.iter().map(one).collect()),
            Value::Object(_) => HeaderValue::Null,
        }
    }
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair.get(0)?.as_str()?.to_string(), one(pair.get(1)?))))
        .collect()
}

/// Publishes what the outbox holds whenever woken (and every second),
/// each message confirmed by the broker before it leaves the outbox.
/// While the broker is away the messages wait: a job submitted then is
/// recorded at once and started when the broker returns.
pub async fn publish_outbox(
    store: Store,
    wake: Arc<Notify>,
    sessions: watch::Receiver<Option<Arc<Session>>>,
    reply_to: String,
) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(session) = sessions.borrow().clone() else {
            continue;
        };
        loop {
            let batch = match store.outbox(200).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "cannot read the outbox; retrying");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            match publish_all(&store, &session, &batch, &reply_to).await {
                Ok(()) => {}
                Err(e) => {
                    warn!(error = %e, "cannot publish a job's tasks yet; they wait in the outbox");
                    break;
                }
            }
        }
    }
}

/// Why an outbox message did not leave.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The broker did not take it.
    #[error("broker: {0}")]
    Broker(#[from] broker::BrokerError),
    /// The database did not record it.
    #[error("{0}")]
    Store(#[from] StoreError),
}

async fn publish_all(store: &Store, session: &Session, batch: &[Outbound], reply_to: &str) -> Result<(), OutboxError> {
    // Publish the lot, then wait for the confirmations: one round trip per
    // batch, not per message.
    let mut pending = Vec::with_capacity(batch.len());
    for o in batch {
        session
            .declare_queue(&o.queue)
            .await
            .map_err(broker::BrokerError::from)?;
        let headers = headers_from_json(&serde_json::from_str(&o.headers).unwrap_or(Value::Null));
        let props = task_properties(&o.task_id, Some(reply_to), &headers);
        let confirm = session
            .publish("", &o.queue, o.body.as_bytes(), props)
            .await
            .map_err(broker::BrokerError::from)?;
        pending.push((o, confirm));
    }
    for (o, confirm) in pending {
        broker::confirmed(confirm.await)?;
        store.published(o).await?;
        debug!(job = o.job_id, task = %o.task_id, queue = %o.queue, "published");
    }
    info!(messages = batch.len(), "published jobs' first tasks");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_the_outbox() {
        let out = root_task(
            "i".into(),
            "dynamo.tasks.recursive_navigate",
            r#"{"paths":["/x"]}"#,
            &[],
            "h",
        );
        let back = headers_from_json(&serde_json::from_str(&headers_json(&out.headers).to_string()).unwrap());
        assert_eq!(back, out.headers);
    }
}
