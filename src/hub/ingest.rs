//! Results into the database: the consumer of the hub's durable results
//! queue. Deliveries are gathered into batches (at most [`BATCH`] or
//! [`LINGER`]), each batch is filed in one transaction, and the broker is
//! told only after the commit (one multiple-ack), so a crash of the hub
//! replays at most the batch it was filing and loses nothing; replayed
//! results are recognised and change nothing. When the database cannot
//! take a batch (locked, full, gone) the batch stays unacknowledged and
//! is retried until it can.
//!
//! A message that is not a result document goes, unchanged, to the
//! hub's rejected queue with the reason in its headers, and is logged.
//! So does a result the database refuses for good (a value it cannot
//! store, such as a NUL character in a task id on PostgreSQL): when a
//! batch fails for a reason that is not transient
//! ([`StoreError::is_transient`]), its results are filed one at a time,
//! and only those refused alone are set aside, so one bad message never
//! holds back the results behind it.

use super::metrics::HubMetrics;
use super::store::bisync::EventsDoc;
use super::store::files::reported_file;
use super::store::results::Finished;
use super::store::results::Progress;
use super::store::{Store, StoreError, now_us};
use crate::agent::broker::Session;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Most results filed in one transaction.
pub const BATCH: usize = 1000;

/// Longest wait for a batch to fill.
pub const LINGER: Duration = Duration::from_millis(20);

/// Why a message is not a result the hub can file.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON of a result document's shape.
    #[error("not a result document: {0}")]
    Shape(String),
}

#[derive(Deserialize)]
struct Doc<'a> {
    status: String,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    task_id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    children_count: Option<i64>,
    #[serde(borrow, default)]
    children: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(borrow, default)]
    jobid: Option<&'a RawValue>,
    #[serde(default)]
    date_done: Option<String>,
}

#[derive(Deserialize, Default)]
struct Value<'a> {
    #[serde(borrow, default)]
    jobid: Option<&'a RawValue>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(borrow, default)]
    status: Option<Status<'a>>,
}

#[derive(Deserialize, Default)]
struct Status<'a> {
    #[serde(default)]
    task: Option<String>,
    #[serde(borrow, default)]
    summary: Option<&'a RawValue>,
    #[serde(borrow, default)]
    details: Option<Details<'a>>,
    /// A dry run's counts per rule (kept in the trimmed result).
    #[serde(borrow, default)]
    plan: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Details<'a> {
    #[serde(borrow, default)]
    failures: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    aborted: Vec<&'a RawValue>,
    /// Kept as text: read only for a job that records them.
    #[serde(borrow, default)]
    processed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    skipped: Option<&'a RawValue>,
}

/// A job id as the agent passes it on: an integer, or a string of one.
fn jobid(raw: Option<&RawValue>) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(raw?.get()).ok()?;
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

/// The `result` of a document in Celery's custom state `status` (one
/// that is not a task's end); `None` for another state or shape.
fn custom<'a, R: Deserialize<'a>>(body: &'a [u8], status: &str) -> Option<R> {
    #[derive(Deserialize)]
    struct Doc<R> {
        status: String,
        result: Option<R>,
    }
    let doc: Doc<R> = serde_json::from_slice(body).ok()?;
    if doc.status != status {
        return None;
    }
    doc.result
}

/// Reads a `PROGRESS` document; `None` for anything else, or one that
/// names no job.
pub fn parse_progress(body: &[u8]) -> Option<Progress> {
    #[derive(Deserialize)]
    struct Report<'a> {
        #[serde(borrow)]
        jobid: Option<&'a RawValue>,
        #[serde(default)]
        files: i64,
        #[serde(default)]
        bytes: i64,
        #[serde(default)]
        children_sent: i64,
    }
    let r: Report = custom(body, "PROGRESS")?;
    Some(Progress {
        jobid: jobid(r.jobid)?,
        files: r.files.max(0),
        bytes: r.bytes.max(0),
        children: r.children_sent.max(0),
    })
}

/// Reads an `EVENTS` document (a collecting snapdiff's changes,
/// `crate::agent::tasks::collect`); `None` for anything else. An events
/// document that names no job, site or run is not one.
pub fn parse_events(body: &[u8]) -> Option<EventsDoc> {
    #[derive(Deserialize)]
    struct Report<'a> {
        #[serde(borrow)]
        jobid: Option<&'a RawValue>,
        site: String,
        run: String,
        seq: i64,
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
    }
    let r: Report = custom(body, crate::agent::tasks::collect::EVENTS_STATUS)?;
    Some(EventsDoc {
        job: jobid(r.jobid)?,
        site: r.site,
        run: r.run,
        seq: r.seq,
        events: r.events.iter().map(|e| e.get().to_string()).collect(),
    })
}

/// Reads a result document; `None` for a state that is not final
/// (`STARTED`, `PROGRESS`, `RETRY`: a later message will end the task).
pub fn parse(body: &[u8]) -> Result<Option<Finished>, ParseError> {
    let doc: Doc = serde_json::from_slice(body).map_err(|e| ParseError::Shape(e.to_string()))?;
    let state = match doc.status.as_str() {
        "SUCCESS" => "SUCCESS",
        "FAILURE" => "FAILURE",
        "REVOKED" => "CANCELLED",
        "PENDING" | "RECEIVED" | "STARTED" | "RETRY" | "PROGRESS" => return Ok(None),
        crate::agent::tasks::collect::EVENTS_STATUS => return Ok(None),
        other => return Err(ParseError::Shape(format!("unknown status {other:?}"))),
    };
    let value: Value = match (state, doc.result) {
        ("SUCCESS", Some(r)) => serde_json::from_str(r.get()).unwrap_or_default(),
        _ => Value::default(),
    };
    let status = value.status.unwrap_or_default();
    let tasktype = doc.name.clone().or(status.task.clone()).unwrap_or_default();
    let summary = status.summary.map_or("{}".to_string(), |s| s.get().to_string());
    let files = super::store::results::counts(&summary);
    let mut failed = Vec::new();
    let mut completed_lists = Vec::new();
    if let Some(d) = &status.details {
        for (list, st) in [(&d.failures, "failures"), (&d.aborted, "aborted")] {
            failed.extend(list.iter().filter_map(|raw| reported_file(raw.get(), st)));
        }
        for (list, st) in [(d.processed, "processed"), (d.skipped, "skipped")] {
            if let Some(raw) = list.filter(|l| l.get() != "[]") {
                completed_lists.push((st, raw.get().to_string()));
            }
        }
    }
    let state = if state == "SUCCESS" && files.failures > 0 {
        "ERROR"
    } else {
        state
    };
    // Results keep their counts, not their file lists: the paths a task
    // processed are the job's bulk and the hub does not hold them.
    let result = match (state, doc.result) {
        ("SUCCESS" | "ERROR", _) => {
            let mut kept = serde_json::json!({
                "jobid": jobid(value.jobid).or(jobid(doc.jobid)),
                "queue": value.queue,
                "status": {"task": tasktype, "summary": serde_json::from_str::<serde_json::Value>(&summary).unwrap_or_default()},
            });
            if let Some(plan) = status
                .plan
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok())
            {
                kept["status"]["plan"] = plan;
            }
            kept.to_string()
        }
        (_, Some(r)) => r.get().to_string(),
        (_, None) => "null".to_string(),
    };
    let completed = doc
        .date_done
        .as_deref()
        .and_then(|d| crate::agent::celery::parse_time(d).ok())
        .map(|t| t.as_microsecond())
        .unwrap_or_else(now_us);
    let children_count = doc
        .children_count
        .unwrap_or_else(|| doc.children.as_ref().map_or(0, |c| c.len() as i64));
    Ok(Some(Finished {
        discovery: super::store::results::is_discovery(&tasktype),
        task_id: doc.task_id,
        parent_id: doc.parent_id,
        jobid: jobid(doc.jobid).or(jobid(value.jobid)),
        tasktype,
        node: doc.worker,
        queue: doc.queue,
        state,
        children_count,
        run: doc.run,
        summary,
        result,
        failed,
        completed_lists,
        completed,
    }))
}

/// The queues the ingest uses.
#[derive(Clone, Debug)]
pub struct Queues {
    /// Where results arrive.
    pub results: String,
    /// Where what is not a result goes.
    pub rejected: String,
}

/// Consumes the results queue on `session` until the session ends.
pub async fn run(store: Store, session: Arc<Session>, metrics: Arc<HubMetrics>, queues: Queues) -> lapin::Result<()> {
    session.declare_queue(&queues.results).await?;
    session.declare_queue(&queues.rejected).await?;
    let channel = session.channel().await?;
    channel
        .basic_qos((2 * BATCH) as u16, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queues.results.as_str().into(),
            "ferry-hub-ingest".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let Some(first) = consumer.next().await else {
            return Ok(());
        };
        let mut deliveries = vec![first?];
        let deadline = tokio::time::Instant::now() + LINGER;
        while deliveries.len() < BATCH {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => deliveries.push(d?),
                Ok(None) | Err(_) => break,
            }
        }
        let mut batch = Vec::with_capacity(deliveries.len());
        // The delivery each result of the batch came in.
        let mut from = Vec::with_capacity(deliveries.len());
        let mut progress = Vec::new();
        let mut events = Vec::new();
        let mut events_from = Vec::new();
        for (i, d) in deliveries.iter().enumerate() {
            match parse(&d.data) {
                Ok(Some(f)) => {
                    batch.push(f);
                    from.push(i);
                }
                Ok(None) => match parse_events(&d.data) {
                    Some(e) => {
                        events.push(e);
                        events_from.push(i);
                    }
                    None => progress.extend(parse_progress(&d.data)),
                },
                Err(e) => {
                    warn!(error = %e, bytes = d.data.len(), kept_in = %queues.rejected, "a message on the results queue is not a result");
                    if !set_aside(&session, &queues, &metrics, d, &e.to_string()).await {
                        return Ok(());
                    }
                }
            }
        }
        // Events before results: a collecting snapdiff's result counts
        // only once every event it sent is on file. Kept until the
        // database takes them, like results.
        if !events.is_empty() {
            match until_filed(&session, "sync events", events.len(), || {
                store.record_sync_events(&events)
            })
            .await
            {
                Filed::Done(()) => {}
                Filed::SessionGone => return Ok(()),
                Filed::Refused(e) => {
                    warn!(error = %e, documents = events.len(), kept_in = %queues.rejected, "the database refuses sync events; their run's plan will lack them");
                    for &i in &events_from {
                        let why = format!("the database refuses it: {e}");
                        if !set_aside(&session, &queues, &metrics, &deliveries[i], &why).await {
                            return Ok(());
                        }
                    }
                }
            }
        }
        // File the batch, retrying while the database cannot take it; the
        // deliveries stay unacknowledged meanwhile.
        let t0 = std::time::Instant::now();
        // Results of the batch set aside (by their place in it).
        let mut refused = Vec::new();
        let done = match file(&store, &session, &batch).await {
            Filed::Done(done) => done,
            Filed::SessionGone => return Ok(()),
            Filed::Refused(e) => {
                warn!(error = %e, results = batch.len(), "the database refuses this batch for good; filing its results one at a time");
                let mut done = super::store::results::Ingested::default();
                for (k, (r, &i)) in batch.iter().zip(&from).enumerate() {
                    match file(&store, &session, std::slice::from_ref(r)).await {
                        Filed::Done(one) => done.absorb(one),
                        Filed::SessionGone => return Ok(()),
                        Filed::Refused(e) => {
                            refused.push(k);
                            let d = &deliveries[i];
                            warn!(error = %e, task_id = %r.task_id, kept_in = %queues.rejected, "the database refuses a result");
                            if !set_aside(&session, &queues, &metrics, d, &format!("the database refuses it: {e}"))
                                .await
                            {
                                return Ok(());
                            }
                        }
                    }
                }
                done
            }
        };
        metrics.commit_seconds.observe(t0.elapsed().as_secs_f64());
        // Progress reports are hints (the results count): one that cannot
        // be written is dropped, the next one says more.
        if !progress.is_empty()
            && let Err(e) = store.record_progress(&progress).await
        {
            warn!(error = %e, reports = progress.len(), "cannot record discovery progress");
        }
        let last = deliveries.last().expect("one at least");
        if last.acker.ack(BasicAckOptions { multiple: true }).await.is_err() {
            // The channel went after the commit: the broker redelivers the
            // batch and the store recognises every result.
            return Ok(());
        }
        // What was set aside is counted as rejected, not as filed.
        let mut k = 0;
        batch.retain(|_| {
            k += 1;
            !refused.contains(&(k - 1))
        });
        let now = now_us();
        metrics.batch_size.observe(batch.len() as f64);
        for f in &batch {
            metrics.lag_seconds.observe((now - f.completed).max(0) as f64 / 1e6);
        }
        metrics.record(&done, &batch);
        for (job, end) in &done.finished_jobs {
            info!(job, state = end, "job finished");
        }
    }
}

/// How filing a batch ended.
enum Filed<T> {
    /// Filed.
    Done(T),
    /// The database refuses it for a reason a retry does not change.
    Refused(StoreError),
    /// The broker session ended while the database was unavailable.
    SessionGone,
}

/// Files `batch` of results.
async fn file(store: &Store, session: &Session, batch: &[Finished]) -> Filed<super::store::results::Ingested> {
    until_filed(session, "results", batch.len(), || store.ingest(batch)).await
}

/// Runs `write` (of `n` of `what`), retrying with backoff (0.1 s to
/// 10 s) while the database cannot take it for a transient reason; the
/// deliveries stay unacknowledged meanwhile.
async fn until_filed<T, F, W>(session: &Session, what: &str, n: usize, mut write: W) -> Filed<T>
where
    W: FnMut() -> F,
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(done) => return Filed::Done(done),
            Err(e) if !e.is_transient() => return Filed::Refused(e),
            Err(e) => {
                warn!(error = %e, n, retry_in = ?wait, "cannot file {what}; they stay in the queue until the database takes them");
                if !session.alive() {
                    return Filed::SessionGone;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Copies a delivery, unchanged but for the header `x-ferry-reason`, to
/// the rejected queue (confirmed), and counts it; false when the session
/// is going (the delivery is then redelivered, nothing is lost).
async fn set_aside(
    session: &Session,
    queues: &Queues,
    metrics: &HubMetrics,
    d: &lapin::message::Delivery,
    reason: &str,
) -> bool {
    metrics.rejected.inc();
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-ferry-reason".into(),
        lapin::types::AMQPValue::LongString(reason.as_bytes().to_vec().into()),
    );
    let props = d.properties.clone().with_headers(headers);
    match session.publish_confirmed("", &queues.rejected, &d.data, props).await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "cannot keep a rejected message; the session is going");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_agents_result_documents() {
        let doc = br#"{"status":"SUCCESS","result":{"jobid":7,"queue":"s.default#worker","paths":[{"path":"/a"}],
            "status":{"task":"dynamo.tasks.migrate","input_total":3,"summary":{"processed":1,"skipped":0,"aborted":1,"failures":1},
            "details":{"failures":[{"path":"/b\udcff","message":["cannot read: Permission denied (os error 13)"]}],
                       "aborted":[{"path":"/c","message":["locked"]}],
                       "processed":[{"path":"/d"},{"path":"/e","message":["ok"]}],"skipped":[]}}},
            "traceback":null,"children":[],"children_count":0,"run":"0000000000000000",
            "date_done":"2026-11-23T10:00:00.123456+00:00","task_id":"t","parent_id":"p",
            "name":"dynamo.tasks.migrate","worker":"ferry@n1","queue":"s.default#worker","jobid":7}"#;
        let f = parse(doc).unwrap().unwrap();
        assert_eq!((f.state, f.jobid, f.children_count), ("ERROR", Some(7), 0));
        assert_eq!(f.failed.len(), 2);
        assert_eq!(f.failed[0].path, r#""/b\udcff""#);
        assert_eq!(f.failed[0].code.as_deref(), Some("EACCES"));
        assert_eq!((f.failed[1].state, f.failed[1].code.as_deref()), ("aborted", None));
        assert_eq!(f.completed, 1_795_428_000_123_456);
        assert!(!f.result.contains("/a"), "file lists are not kept: {}", f.result);
        // Processed and skipped files: kept as text, read on demand (an
        // empty list is left out).
        assert_eq!(
            f.completed_lists,
            [(
                "processed",
                r#"[{"path":"/d"},{"path":"/e","message":["ok"]}]"#.to_string()
            )]
        );
        let done = crate::hub::store::files::completed_files(&f.completed_lists, |_| true);
        assert_eq!(
            done.iter()
                .map(|d| (d.path.as_str(), d.state, d.message.as_str()))
                .collect::<Vec<_>>(),
            [(r#""/d""#, "processed", "[]"), (r#""/e""#, "processed", r#"["ok"]"#)]
        );
        // A task that failed whole, as the agent reports it.
        let doc = br#"{"status":"FAILURE","result":{"exc_type":"InvalidArguments","exc_message":["no paths"],"exc_module":"ferry"},
            "traceback":"no paths","children":[],"task_id":"u","name":"dynamo.tasks.migrate","jobid":"8"}"#;
        let f = parse(doc).unwrap().unwrap();
        assert_eq!((f.state, f.jobid), ("FAILURE", Some(8)));
        assert!(f.result.contains("InvalidArguments"));
        assert!(parse(br#"{"status":"PROGRESS","task_id":"x"}"#).unwrap().is_none());
        assert_eq!(
            parse_progress(
                br#"{"status":"PROGRESS","task_id":"x","result":{"jobid":"7","files":10,"bytes":5,"children_sent":2}}"#
            ),
            Some(Progress {
                jobid: 7,
                files: 10,
                bytes: 5,
                children: 2
            })
        );
        assert_eq!(
            parse_progress(br#"{"status":"PROGRESS","task_id":"x","result":{}}"#),
            None
        );
        assert_eq!(parse_progress(br#"{"status":"SUCCESS","result":{"jobid":1}}"#), None);
        // A collecting snapdiff's events: not a result, kept whole (names
        // that are not UTF-8 as the agent escaped them); one that names no
        // job is not an events document.
        let events =
            br#"{"status":"EVENTS","task_id":"x","result":{"jobid":"7","site":"s1","run":"00000000000000aa","seq":3,
            "events":[{"path":"/f/a\udcff","state":"deleted"},{"path":"/f/b","state":"moved","source":"/f/a"}]}}"#;
        assert!(parse(events).unwrap().is_none());
        let doc = parse_events(events).unwrap();
        assert_eq!(
            (doc.job, doc.site.as_str(), doc.run.as_str(), doc.seq),
            (7, "s1", "00000000000000aa", 3)
        );
        assert_eq!(doc.events[0], r#"{"path":"/f/a\udcff","state":"deleted"}"#);
        assert_eq!(doc.events.len(), 2);
        assert_eq!(
            parse_events(br#"{"status":"EVENTS","result":{"site":"s","run":"r","seq":0,"events":[]}}"#),
            None
        );
        assert_eq!(parse_events(br#"{"status":"PROGRESS","result":{"jobid":1}}"#), None);
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"status":"WEIRD","task_id":"x"}"#,
            br#"{"task_id":"x"}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
