//! Starting a job: the messages of its first tasks (a discovery, or with
//! `discovery: null` the action tasks the hub cuts from the input paths
//! with the rules the agent would apply), and the outbox publisher that
//! hands them to the broker after the job is committed.
//!
//! Every message carries `reply_to` = the hub's durable results queue;
//! the agent passes it to every child, so every result of the job comes
//! back there ([`crate::config::HubSettings::results_queue`]).

use super::store::jobs::{Outbound, RootTask};
use super::store::{Store, StoreError};
use crate::agent::broker::{self, Session, task_properties};
use crate::agent::celery::{HeaderValue, Outgoing, Signature, root_task};
use crate::agent::tasks::rules::{Rule, matching};
use crate::config::queue_name;
use crate::entry::FileType;
use crate::task::PathObject;
use crate::task::args::kwargs_with;
use serde_json::Value;
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
