//! What an operator does to a job (cancel, pause, resume, resubmit,
//! delete), in one place for the REST API and the web page, so both give
//! the same answers. A request
//! that does not fit the job's state (cancel a finished job, delete a
//! running one) is a [`JobCtlError::Conflict`] naming that state: the API
//! answers it 409, never 500 (issue 15: "a state change that conflicts
//! with the current state answers 409 with the current state").

use crate::agent::broker::Session;
use crate::config::HubSettings;
use crate::hub::control::{self, Held};
use crate::hub::store::holds::Hold;
use crate::hub::store::jobs::{Job, Owner, state};
use crate::hub::store::{Store, StoreError};
use crate::hub::submit::{Submission, SubmitError};
use std::sync::Arc;
use tracing::{info, warn};

/// Why a job action was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum JobCtlError {
    /// No job has this id.
    #[error("no job {0}")]
    NotFound(i64),
    /// The job's state does not allow the action.
    #[error("job {id} is {state}: {why}")]
    Conflict {
        /// The job.
        id: i64,
        /// Its state now.
        state: String,
        /// Why the action does not apply.
        why: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A resubmission was refused as a submission (the workflow or the
    /// site has gone, say).
    #[error("the job cannot be submitted again: {0}")]
    Submit(#[from] SubmitError),
}

fn conflict(id: i64, state: String, why: &'static str) -> JobCtlError {
    JobCtlError::Conflict { id, state, why }
}

/// Cancels job `id`: DEQUEUING at once; queued tasks are refused by the
/// agents (answered REVOKED), a running discovery stops publishing,
/// running tasks finish; CANCELLED once every task it published is
/// accounted for. The cancel goes to the agents now when there is a
/// broker `session`, else with the next snapshot. Returns the job as it
/// is after the request.
pub async fn cancel(store: &Store, session: Option<&Session>, id: i64) -> Result<Job, JobCtlError> {
    let Some(roots) = store.cancel_job(id).await? else {
        let j = store.job(id).await?.ok_or(JobCtlError::NotFound(id))?;
        return Err(JobCtlError::Conflict {
            id,
            state: j.state,
            why: "it has finished: nothing to cancel",
        });
    };
    match session {
        Some(session) if !roots.is_empty() => {
            if let Err(e) = control::publish(session, &control::cancel_message(&roots)).await {
                warn!(job = id, error = %e, "cannot send the cancel now; the next snapshot carries it");
            }
        }
        Some(_) => {}
        None => warn!(job = id, "no broker: the cancel goes out with the next snapshot"),
    }
    info!(job = id, roots = roots.len(), "job cancel requested");
    store.job(id).await?.ok_or(JobCtlError::NotFound(id))
}

/// Deletes job `id` with its tasks and file records. A job that has not
/// finished is refused: deleting it would lose the record of tasks still
/// running.
pub async fn delete(store: &Store, id: i64) -> Result<(), JobCtlError> {
    let j = store.job(id).await?.ok_or(JobCtlError::NotFound(id))?;
    if !state::FINAL.contains(&j.state.as_str()) {
        return Err(JobCtlError::Conflict {
            id,
            state: j.state,
            why: "cancel it first (deleting it would lose the record of tasks still running)",
        });
    }
    store.delete_job(id).await?;
    Ok(())
}

/// Pauses job `id`: `PAUSING` at once, `PAUSED` once none of its tasks
/// runs. Its queued tasks stay queued: each agent that is given one moves
/// it, unchanged, to the job's parking queue instead of running it;
/// running tasks finish. Only a `PENDING` or `STARTED` job pauses.
pub async fn pause(
    store: &Store,
    settings: &HubSettings,
    session: Option<&Session>,
    id: i64,
) -> Result<Job, JobCtlError> {
    let roots = match store.pause_job(id).await? {
        Hold::Done(roots) => roots,
        Hold::Missing => return Err(JobCtlError::NotFound(id)),
        Hold::Refused(st) => return Err(conflict(id, st, "only a PENDING or STARTED job can be paused")),
    };
    let park = settings.parking_queue(id);
    let holds: Vec<Held> = roots
        .iter()
        .map(|root| Held {
            root: root.clone(),
            park: park.clone(),
        })
        .collect();
    match session {
        Some(session) => {
            let sent = async {
                control::declare_parking(session, &park).await?;
                control::publish(session, &control::pause_message(&holds)).await
            };
            if let Err(e) = sent.await {
                warn!(job = id, error = %e, "cannot send the pause now; the next snapshot carries it");
            }
        }
        None => warn!(job = id, "no broker: the pause goes out with the next snapshot"),
    }
    info!(job = id, roots = roots.len(), "job pause requested");
    store.job(id).await?.ok_or(JobCtlError::NotFound(id))
}

/// Resumes paused job `id`: the agents stop parking its tasks, and what
/// they parked goes back to the queues it came from, moved in the
/// background (at once when there is a broker, else within seconds of its
/// return): the answer is the job as resumed, not as it is once thousands
/// of parked tasks have moved and run. Only a `PAUSING` or `PAUSED` job
/// resumes.
pub async fn resume(
    store: &Store,
    settings: &HubSettings,
    session: Option<Arc<Session>>,
    id: i64,
) -> Result<Job, JobCtlError> {
    let roots = match store.resume_job(id).await? {
        Hold::Done(roots) => roots,
        Hold::Missing => return Err(JobCtlError::NotFound(id)),
        Hold::Refused(st) => return Err(conflict(id, st, "only a PAUSING or PAUSED job can be resumed")),
    };
    let job = store.job(id).await?.ok_or(JobCtlError::NotFound(id))?;
    match session {
        Some(session) => {
            if let Err(e) = control::publish(&session, &control::resume_message(&roots)).await {
                warn!(job = id, error = %e, "cannot send the resume now; the agents' holds expire on their own");
            }
            let park = settings.parking_queue(id);
            tokio::spawn(async move {
                match control::unpark(&session, &park).await {
                    Ok(n) => info!(job = id, tasks = n, "parked tasks moved back to their queues"),
                    Err(e) => warn!(job = id, error = %e, "cannot move parked tasks back now; within seconds"),
                }
            });
        }
        None => warn!(job = id, "no broker: the resume goes out when it returns"),
    }
    info!(job = id, "job resumed");
    Ok(job)
}

/// Submits finished job `id` again as a new job for `owner`: the same
/// submission (workflow, site, queue, fields, discovery, paths, patterns),
/// or with `failed_only` its failed files' paths alone, without
/// discovery. The workflow is read as it is now. A job not finished is a
/// conflict, and so is `failed_only` on a job with no failed file.
/// Returns the new job's id.
pub async fn resubmit(
    store: &Store,
    max_queue_depth: u32,
    owner: Owner,
    clientkey_id: Option<i64>,
    id: i64,
    failed_only: bool,
) -> Result<i64, JobCtlError> {
    let j = store.job(id).await?.ok_or(JobCtlError::NotFound(id))?;
    if !state::FINAL.contains(&j.state.as_str()) {
        return Err(conflict(id, j.state, "only a finished job can be submitted again"));
    }
    let Some(request) = store.job_request(id).await? else {
        return Err(conflict(
            id,
            j.state,
            "it was submitted before the hub kept submissions",
        ));
    };
    let mut sub: Submission = serde_json::from_str(&request)
        .map_err(|e| SubmitError::Invalid(format!("the stored submission does not read back: {e}")))?;
    if failed_only {
        let failed = store.failed_paths(id).await?;
        if failed.is_empty() {
            return Err(conflict(id, j.state, "no file of it failed"));
        }
        let mut paths = Vec::with_capacity(failed.len());
        for p in failed {
            paths.push(
                serde_json::value::RawValue::from_string(p)
                    .map_err(|e| SubmitError::Invalid(format!("a recorded path does not read back: {e}")))?,
            );
        }
        sub.paths = paths;
        sub.discovery = Some(None);
    }
    let new = crate::hub::submit::start(store, owner, clientkey_id, &sub, Some(id), max_queue_depth).await?;
    info!(job = id, new, failed_only, "job resubmitted");
    Ok(new)
}
