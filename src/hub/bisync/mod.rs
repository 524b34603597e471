//! Bidirectional sync: the `bidirectional_snapdiff` discovery with the
//! `bidirectional_sync` workflow (seed 003:L11569-11634, L10817-10839),
//! one job per scheduled run, holding both directions.
//!
//! A run goes through stages, each started by the hub once every task of
//! the one before is counted ([`run`] watches for that; the ingest leaves
//! such a job open until [`DONE`]):
//!
//! 0. **Collect**: a snapdiff on each site, in `collect` mode: each holds
//!    its new snapshot and hands its changes to the hub as events
//!    (`crate::agent::tasks::collect`). Nothing is applied until the hub
//!    has both sets, because each conflict rule needs both.
//! 1. **Plan** ([`plan`]): every event gets a [`Decision`]: echoes of
//!    what earlier runs wrote are dropped; a delete loses to a change
//!    on the other side; a move the other site cannot replay is sent whole
//!    instead; a move onto a path the other site changed is refused and
//!    listed; a change under a path the other site moved is applied where
//!    it moved to.
//! 2. Site 1's deletes, moves and directory deletes on site 2, each
//!    waited for; then site 2's on site 1.
//! 3. Site 1's creates and updates on site 2, then site 2's on site 1,
//!    each through `check_sync_state` with `newest`: a file written on
//!    both sites keeps the last write.
//! 4. **Rotate** both held snapshots.
//!
//! Moves and deletes of both directions go before any data: a change
//! retargeted through the other site's move is read at its new place,
//! which exists only once that move is made. The seed's order "site 1 to
//! site 2, then site 2 to site 1" holds within each kind of change.

use super::store::Store;
use super::store::bisync::{Advance, Collected, DONE, Decided, Listed, StoredEvent, SyncRun};
use super::store::jobs::{Job, RootTask};
use super::store::ledger::state;
use super::submit::{actions, discovery, origin};
use super::workflows::{
    BIDIRECTIONAL_WORKFLOW as WORKFLOW, DESTINATION_SITE as SITE2_FIELD, compile, parse_fields, parse_rules,
};
use crate::agent::tasks::rules::{Context, Rule};
use crate::snapdiff::request::ROTATE_ON_ERROR;
use crate::task::surrogate::encode_string;
use crate::task::{PathObject, TaskName};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub mod plan;

pub use plan::{Applied, Decision, Event, plan};
use plan::{at_or_below_any, through};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// How often the hub looks for runs whose stage is done.
const POLL: Duration = Duration::from_millis(500);

/// How often old events are cleaned up (the seed's `0 * * * *`).
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);

/// A run's stages, in order (stored as their number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Collect = 0,
    Deletes1 = 1,
    Moves1 = 2,
    Dirs1 = 3,
    Deletes2 = 4,
    Moves2 = 5,
    Dirs2 = 6,
    Sends1 = 7,
    Sends2 = 8,
    Rotate = 9,
}

impl Stage {
    const AFTER_COLLECT: [Stage; 9] = [
        Stage::Deletes1,
        Stage::Moves1,
        Stage::Dirs1,
        Stage::Deletes2,
        Stage::Moves2,
        Stage::Dirs2,
        Stage::Sends1,
        Stage::Sends2,
        Stage::Rotate,
    ];

    /// The side whose changes the stage applies, and what it applies.
    fn work(self) -> Option<(usize, Work)> {
        Some(match self {
            Stage::Deletes1 => (0, Work::Deletes),
            Stage::Moves1 => (0, Work::Moves),
            Stage::Dirs1 => (0, Work::Dirs),
            Stage::Deletes2 => (1, Work::Deletes),
            Stage::Moves2 => (1, Work::Moves),
            Stage::Dirs2 => (1, Work::Dirs),
            Stage::Sends1 => (0, Work::Sends),
            Stage::Sends2 => (1, Work::Sends),
            Stage::Collect | Stage::Rotate => return None,
        })
    }
}

const _: () = assert!(Stage::Rotate as i64 + 1 == DONE);

/// What a stage applies of one side's changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// Deleted non-directories.
    Deletes,
    /// Every move, in one task (swaps and cycles work within a batch).
    Moves,
    /// Deleted directories, deepest first, in one task.
    Dirs,
    /// Created and updated entries, and resends.
    Sends,
}

/// A stored event with its decision, read back.
struct Decided2 {
    event: Event,
    obj: String,
    decision: Decision,
}

fn read_decided(side: usize, s: &StoredEvent) -> Option<Decided2> {
    let event = Event::parse(side, &s.obj)?;
    let decision = Decision::from_name(s.decision.as_deref()?, s.target.as_deref())?;
    Some(Decided2 {
        event,
        obj: s.obj.clone(),
        decision,
    })
}

/// The path object `obj` at `path`, in `state`, without a source unless
/// `keep_source`.
fn restate(obj: &str, path: Option<&[u8]>, state: Option<&str>, keep_source: bool) -> PathObject {
    let mut p = PathObject::parse(obj.as_bytes()).expect("stored objects parse");
    if let Some(path) = path {
        p.path = path.to_vec();
    }
    if !keep_source {
        p.source = None;
    }
    if let Some(st) = state {
        for (k, v) in p.extra.iter_mut() {
            if k == "state" {
                *v = RawValue::from_string(format!("\"{st}\"")).expect("json");
            }
        }
    }
    p
}

/// Watches for bidirectional runs whose stage is done and starts the
/// next, forever; cleans up old events every hour. Errors are logged and
/// the run tried again at the next poll.
pub async fn run(store: Store, outbox: Arc<Notify>) {
    let mut cleaned = std::time::Instant::now() - CLEANUP_EVERY;
    loop {
        tokio::time::sleep(POLL).await;
        match store.sync_runs_due().await {
            Ok(jobs) => {
                for job in jobs {
                    match advance(&store, job).await {
                        Ok(()) => outbox.notify_one(),
                        Err(BisyncError::Rules(why)) => {
                            // Trying again would not help: the run ends,
                            // failed, and its held snapshots are rolled
                            // back by the next run's collect.
                            warn!(job, reason = %why, "a bidirectional sync cannot go on; it ends failed");
                            if let Err(e) = give_up(&store, job, &why).await {
                                warn!(job, error = %e, "cannot end a bidirectional sync; tried again");
                            }
                        }
                        Err(e) => warn!(job, error = %e, "cannot start a bidirectional sync's next stage; tried again"),
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot look for bidirectional syncs to advance"),
        }
        if cleaned.elapsed() >= CLEANUP_EVERY {
            cleaned = std::time::Instant::now();
            match store.cleanup_sync_events().await {
                Ok(0) => {}
                Ok(n) => info!(events = n, "cleaned up old bidirectional sync events"),
                Err(e) => warn!(error = %e, "cannot clean up old bidirectional sync events"),
            }
        }
    }
}

/// Why a run could not advance.
#[derive(Debug, thiserror::Error)]
pub enum BisyncError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    /// The job's workflow or fields no longer make rules.
    #[error("{0}")]
    Rules(String),
}

/// Ends the run of `job` failed, listing `why` against its fileset.
async fn give_up(store: &Store, job: i64, why: &str) -> Result<(), super::store::StoreError> {
    let Some(run) = store.sync_run(job).await? else {
        return Ok(());
    };
    let listed = [Listed {
        path: json!(run.fileset).to_string(),
        state: "failures",
        message: format!("the run cannot go on: {why}"),
    }];
    let step = Advance {
        listed: &listed,
        ..Advance::default()
    };
    store.advance_sync(job, run.stage, DONE, &step).await?;
    Ok(())
}

/// Starts the next stage of the run of `job` that has tasks (or ends it).
pub async fn advance(store: &Store, job: i64) -> Result<(), BisyncError> {
    let (Some(run), Some(j)) = (store.sync_run(job).await?, store.job(job).await?) else {
        return Ok(());
    };
    if run.stage >= DONE {
        return Ok(());
    }
    if j.state == state::DEQUEUING {
        // Cancelled: nothing more runs. Its held snapshots are rolled back
        // by the next run's collect.
        store.advance_sync(job, run.stage, DONE, &Advance::default()).await?;
        return Ok(());
    }
    let collected = store.collected(job).await?;
    let sides = [&run.site1, &run.site2];
    let ok: Vec<Option<&Collected>> = sides
        .iter()
        .map(|s| collected.iter().find(|c| &c.site == *s && c.state == "SUCCESS"))
        .collect();
    let mut decided = Vec::new();
    let mut listed = Vec::new();
    // The events: at the collect stage, those of each site's counted
    // execution (read once: planned, then applied below); after it, the
    // decided ones.
    let mut stored: [Vec<StoredEvent>; 2] = Default::default();
    for (side, site) in sides.iter().enumerate() {
        stored[side] = match run.stage == Stage::Collect as i64 {
            true => match ok[side] {
                Some(c) => store.sync_events(job, site, c.run.as_deref()).await?,
                None => Vec::new(),
            },
            false => store.sync_events(job, site, None).await?,
        };
    }
    if run.stage == Stage::Collect as i64 {
        // Every change a site reported must be on file: a plan on part of
        // them could apply a delete whose path the missing part rewrote.
        let mut incomplete = Vec::new();
        for (side, c) in ok.iter().enumerate() {
            let Some(c) = c else { continue };
            let have = stored[side].len() as u64;
            if c.events != Some(have) {
                incomplete.push(Listed {
                    path: json!(run.fileset).to_string(),
                    state: "failures",
                    message: format!(
                        "the hub holds {have} of the changes {} reported ({}); nothing was applied, and the next run diffs again",
                        sides[side],
                        c.events.map_or("an unknown number".into(), |n| n.to_string())
                    ),
                });
            }
        }
        if ok.iter().any(Option::is_none) || !incomplete.is_empty() {
            // A site could not diff: nothing is applied; the site that did
            // rolls back, so the next run sees its changes again.
            let (roots, rotating) = rotate_roots(&run, &ok, &j, false);
            store
                .advance_sync(
                    job,
                    run.stage,
                    Stage::Rotate as i64,
                    &Advance {
                        roots: &roots,
                        listed: &incomplete,
                        rotating: Some(rotating),
                        ..Advance::default()
                    },
                )
                .await?;
            return Ok(());
        }
        let (d, l) = decide(store, &run, &stored).await?;
        decided = d;
        listed = l;
    }
    // The events with their decisions (just made, or stored).
    let fresh: HashMap<i64, &Decided> = decided.iter().map(|d| (d.id, d)).collect();
    let mut events: [Vec<Decided2>; 2] = Default::default();
    for (side, stored) in stored.into_iter().enumerate() {
        for mut s in stored {
            if let Some(d) = fresh.get(&s.id) {
                s.decision = Some(d.decision.to_string());
                s.target = d.target.clone();
            }
            if let Some(d) = read_decided(side, &s) {
                events[side].push(d);
            }
        }
    }
    let mut stage = run.stage + 1;
    let mut roots = Vec::new();
    let mut rotating = None;
    while stage < DONE {
        let s = Stage::AFTER_COLLECT[(stage - 1) as usize];
        roots = match s.work() {
            Some((side, work)) => stage_roots(store, &run, &j, &events, side, work).await?,
            None => {
                let (roots, flags) = rotate_roots(&run, &ok, &j, true);
                rotating = Some(flags);
                roots
            }
        };
        if !roots.is_empty() {
            break;
        }
        stage += 1;
    }
    let step = Advance {
        decided: &decided,
        roots: &roots,
        listed: &listed,
        rotating,
    };
    if store.advance_sync(job, run.stage, stage, &step).await? {
        info!(job, stage, tasks = roots.len(), "bidirectional sync: next stage");
    }
    Ok(())
}

/// Plans the run: given both sites' events (of the executions whose
/// results counted), reads the earlier runs' applied ones, decides each,
/// and lists the paths a site loses.
async fn decide(
    store: &Store,
    run: &SyncRun,
    reported: &[Vec<StoredEvent>; 2],
) -> Result<(Vec<Decided>, Vec<Listed>), BisyncError> {
    let sides = [&run.site1, &run.site2];
    let mut stored = Vec::new();
    let mut events = Vec::new();
    for (side, site) in sides.iter().enumerate() {
        for s in &reported[side] {
            if let Some(e) = Event::parse(side, &s.obj) {
                events.push(e);
                stored.push(s);
            } else {
                warn!(job = run.job_id, site = %site, event = %s.obj, "an event is not a change; ignored");
            }
        }
    }
    // Echoes: what earlier runs applied to each site since the run whose
    // snapshot of that site this diff starts from (a run that rolled back,
    // or could not diff, left the base where it was).
    let mut before = HashSet::new();
    let past = store.previous_sync_runs(run).await?;
    for (to, site) in sides.iter().enumerate() {
        for p in &past {
            // Applied to `site`: the changes the other site reported.
            let from = if *site == &run.site1 { &run.site2 } else { &run.site1 };
            for s in store.sync_events(p.job_id, from, None).await? {
                let Some(d) = read_decided(1 - to, &s) else { continue };
                if d.decision.applied() {
                    let at = d.decision.target().unwrap_or(&d.event.path).to_vec();
                    before.insert(Applied::of(&d.event, &d.decision, to, &at));
                }
            }
            if p.committed.iter().any(|c| c == *site) {
                break;
            }
        }
    }
    let decisions = plan(&events, &before);
    let mut decided = Vec::with_capacity(events.len());
    let mut listed = Vec::new();
    for ((s, e), (d, note)) in stored.iter().zip(&events).zip(decisions) {
        let site = sides[e.side];
        let other = sides[1 - e.side];
        let path = encode_string(&e.path);
        match d {
            Decision::Refused => listed.push(Listed {
                path: path.clone(),
                state: "failures",
                message: format!("{site} → {other}: {}", note.clone().unwrap_or_default()),
            }),
            Decision::Beaten => listed.push(Listed {
                path: path.clone(),
                state: "skipped",
                message: format!("{site} → {other}: {}", note.clone().unwrap_or_default()),
            }),
            _ => {}
        }
        decided.push(Decided {
            id: s.id,
            decision: d.name(),
            target: d.target().map(encode_string),
            note,
        });
    }
    // One row per path (the job's files are by path): a path both sites
    // lost by gets both reasons, and fails if either does.
    let mut merged: Vec<Listed> = Vec::with_capacity(listed.len());
    let mut at: HashMap<String, usize> = HashMap::new();
    for l in listed {
        match at.get(&l.path) {
            Some(&i) => {
                let m = &mut merged[i];
                m.message = format!("{}; {}", m.message, l.message);
                if l.state == "failures" {
                    m.state = "failures";
                }
            }
            None => {
                at.insert(l.path.clone(), merged.len());
                merged.push(l);
            }
        }
    }
    Ok((decided, merged))
}

/// The workflow's rules for one direction: from `side`'s site to the
/// other's, and the rules a resent directory's walk uses (the `created`
/// rule for every entry).
async fn direction_rules(
    store: &Store,
    run: &SyncRun,
    j: &Job,
    side: usize,
) -> Result<(Vec<Rule>, Value, Map<String, Value>), BisyncError> {
    let w = store
        .workflow_by_name(WORKFLOW)
        .await?
        .ok_or_else(|| BisyncError::Rules(format!("no workflow {WORKFLOW}")))?;
    let specs = parse_fields(&w.fields).map_err(|e| BisyncError::Rules(e.to_string()))?;
    let mut fields = j.fields.as_object().cloned().unwrap_or_default();
    let (me, other) = sides(run, side);
    fields.insert(SITE2_FIELD.into(), json!(other.0));
    fields.insert("destinationqueue".into(), json!(other.1));
    let rule_specs = parse_rules(&w.filter_rules, &specs).map_err(|e| BisyncError::Rules(e.to_string()))?;
    let site = store.site_by_name(me.0).await?;
    let patterns = Context {
        site_includes: site.as_ref().map(|s| s.include.clone()).unwrap_or_default(),
        site_excludes: site.as_ref().map(|s| s.exclude.clone()).unwrap_or_default(),
        ..Context::default()
    };
    let rules =
        compile(&rule_specs, &fields, me.0, me.1, Some(&patterns)).map_err(|e| BisyncError::Rules(e.to_string()))?;
    // A resent directory is walked: its entries carry no state, so they
    // take the `created` rule widened to every state.
    let resend = Value::Array(
        w.filter_rules
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r.get("state").and_then(Value::as_str) == Some("created"))
            .map(|r| {
                let mut r = r.clone();
                r["state"] = json!("all");
                r
            })
            .collect(),
    );
    Ok((rules, resend, fields))
}

/// (site, queue) of `side`, and of the other side.
fn sides(run: &SyncRun, side: usize) -> ((&str, &str), (&str, &str)) {
    let one = (run.site1.as_str(), run.queue1.as_str());
    let two = (run.site2.as_str(), run.queue2.as_str());
    if side == 0 { (one, two) } else { (two, one) }
}

/// The tasks of one stage: `side`'s changes of kind `work`, applied on
/// the other site.
async fn stage_roots(
    store: &Store,
    run: &SyncRun,
    j: &Job,
    events: &[Vec<Decided2>; 2],
    side: usize,
    work: Work,
) -> Result<Vec<RootTask>, BisyncError> {
    let mine = &events[side];
    let moved_to: HashSet<&[u8]> = mine
        .iter()
        .filter(|d| d.event.state == "moved" && d.decision.applied())
        .map(|d| d.event.path.as_slice())
        .collect();
    // Directories are deleted after the moves, which may have carried
    // them (a deleted directory has its last path, before its site's
    // moves): where each site's moves put them.
    let applied = |side: usize| -> BTreeMap<Vec<u8>, Vec<u8>> {
        events[side]
            .iter()
            .filter(|d| d.event.state == "moved" && d.decision == Decision::Apply)
            .filter_map(|d| Some((d.event.source.clone()?, d.event.path.clone())))
            .collect()
    };
    let (own, theirs) = (applied(side), applied(1 - side));
    let mut paths = Vec::new();
    let mut walks = Vec::new();
    for d in mine.iter().filter(|d| d.decision.applied()) {
        let e = &d.event;
        let at = d.decision.target();
        match (work, e.state.as_str(), &d.decision) {
            (Work::Deletes, "deleted", _) if !e.dir => paths.push(restate(&d.obj, at, None, false)),
            (Work::Dirs, "deleted", _) if e.dir && !moved_to.contains(e.path.as_slice()) => {
                let carried = through(&own, &e.path).unwrap_or_else(|| e.path.clone());
                let now = through(&theirs, &carried).unwrap_or(carried);
                paths.push(restate(&d.obj, Some(&now), None, false))
            }
            (Work::Moves, "moved", Decision::Apply) => paths.push(restate(&d.obj, None, None, true)),
            (Work::Sends, "moved", Decision::Resend) if e.dir => walks.push(e.path.clone()),
            (Work::Sends, "moved", Decision::Resend) => paths.push(restate(&d.obj, None, Some("created"), false)),
            (Work::Sends, "created" | "updated", _) => paths.push(restate(&d.obj, at, None, false)),
            _ => {}
        }
    }
    if work == Work::Sends {
        // One send per path: a renamed file is also reported updated (its
        // ctime moved), and two sends of one path would race to place it.
        // Nor one that a resent directory's walk sends too.
        let walked: BTreeSet<Vec<u8>> = walks.iter().cloned().collect();
        let mut seen = HashSet::new();
        paths.retain(|p| !at_or_below_any(&walked, &p.path) && seen.insert(p.path.clone()));
    }
    if paths.is_empty() && walks.is_empty() {
        return Ok(Vec::new());
    }
    if work == Work::Dirs {
        // Deepest first: a directory goes only once it is empty.
        paths.sort_by_key(|p| std::cmp::Reverse(p.path.iter().filter(|&&b| b == b'/').count()));
    }
    let (rules, resend, fields) = direction_rules(store, run, j, side).await?;
    let (me, _) = sides(run, side);
    let site = store.site_by_name(me.0).await?;
    let batch = match work {
        Work::Moves | Work::Dirs => usize::MAX,
        _ => site.as_ref().map_or(1000, |s| s.file_batch_size.max(1) as usize),
    };
    let me_origin = origin();
    let mut roots = actions(&rules, &paths, j.id, batch, me.0, &me_origin);
    for w in walks {
        let path = RawValue::from_string(encode_string(&w)).expect("json");
        let kwargs = json!({
            "paths": [path],
            "jobid": j.id,
            "filter_rules": resend,
            "fields": fields,
            "site": me.0,
            "queue": me.1,
            "site_includes": site.as_ref().map(|s| s.include.clone()).unwrap_or_default(),
            "site_excludes": site.as_ref().map(|s| s.exclude.clone()).unwrap_or_default(),
            "file_batch_size": site.as_ref().map_or(1000, |s| s.file_batch_size),
            "children_in_result": false,
        });
        roots.push(discovery(
            TaskName::RecursiveNavigate.as_str(),
            &kwargs.to_string(),
            me.0,
            me.1,
            &me_origin,
        ));
    }
    Ok(roots)
}

/// The rotations that end a run: each site whose collect succeeded
/// rotates, or rolls back when `applied` is false (nothing was applied)
/// or something failed and the job's `snappdiff_rotate_on_error` is false.
/// Also says whether each site is asked to rotate.
fn rotate_roots(run: &SyncRun, ok: &[Option<&Collected>], j: &Job, applied: bool) -> (Vec<RootTask>, [bool; 2]) {
    let failed = !applied || j.tasks_failed > 0 || j.files_failures > 0;
    let rotate_on_error = applied && j.fields.get(ROTATE_ON_ERROR).and_then(Value::as_bool).unwrap_or(true);
    let rotates = !failed || rotate_on_error;
    let me = origin();
    let roots = [(&run.site1, &run.queue1), (&run.site2, &run.queue2)]
        .iter()
        .zip(ok)
        .filter(|(_, c)| c.is_some())
        .map(|((site, queue), _)| {
            let kwargs = json!({
                "paths": [run.fileset],
                "jobid": j.id,
                "failed": failed,
                ROTATE_ON_ERROR: rotate_on_error,
            });
            discovery(TaskName::RotateSnapshot.as_str(), &kwargs.to_string(), site, queue, &me)
        })
        .collect();
    (roots, [ok[0].is_some() && rotates, ok[1].is_some() && rotates])
}
