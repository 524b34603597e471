//! What an operator does to a job (cancel, delete), in one place for the
//! REST API and the web page, so both give the same answers. A request
//! that does not fit the job's state (cancel a finished job, delete a
//! running one) is a [`JobCtlError::Conflict`] naming that state: the API
//! answers it 409, never 500 (issue 15: "a state change that conflicts
//! with the current state answers 409 with the current state").

use crate::agent::broker::Session;
use crate::hub::control;
use crate::hub::store::jobs::{Job, state};
use crate::hub::store::{Store, StoreError};
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
