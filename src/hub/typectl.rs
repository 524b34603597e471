//! Pausing and resuming one task type cluster-wide (every
//! `dynamo.tasks.delete_paths_from_gpfs`, say), in one place for the REST
//! API and the web page. A paused type's queued tasks, of every job, are
//! parked by the agents in the type's own queue and moved back on resume
//! (`hub::control`); running tasks finish. Pausing a paused type or
//! resuming a running one is a [`TypeCtlError::Conflict`] (409, as a job
//! action that does not fit the job's state).

use crate::agent::broker::Session;
use crate::config::HubSettings;
use crate::hub::control::{self, TypeHeld};
use crate::hub::store::tasktypes::TypePause;
use crate::hub::store::{Store, StoreError};
use crate::task::TaskName;
use std::sync::Arc;
use tracing::{info, warn};

/// A task type's state in a conflict: paused.
pub const PAUSED: &str = "PAUSED";
/// A task type's state in a conflict: not paused.
pub const RUNNING: &str = "RUNNING";

/// Why a task type action was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum TypeCtlError {
    /// No task ferry knows has this name.
    #[error("no task type {0:?}")]
    Unknown(String),
    /// The type is already in the state the action asks for.
    #[error("task type {task} is {state}: {why}")]
    Conflict {
        /// The task name.
        task: String,
        /// [`PAUSED`] or [`RUNNING`].
        state: &'static str,
        /// Why the action does not apply.
        why: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A task type as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskType {
    /// The task name.
    pub task: TaskName,
    /// The pause in force, if any.
    pub pause: Option<TypePause>,
    /// Tasks waiting in its parking queue; `None` without a broker.
    pub parked: Option<u32>,
}

fn known(name: &str) -> Result<TaskName, TypeCtlError> {
    TaskName::parse(name).ok_or_else(|| TypeCtlError::Unknown(name.to_string()))
}

/// Every task type ferry runs ([`TaskName::ALL`], in that order), with
/// its pause and how many of its tasks wait parked (counted on the broker
/// when there is a `session`; a type never paused has no queue and 0).
pub async fn list(
    store: &Store,
    settings: &HubSettings,
    session: Option<&Session>,
) -> Result<Vec<TaskType>, TypeCtlError> {
    let pauses = store.tasktype_pauses().await?;
    let mut out = Vec::with_capacity(TaskName::ALL.len());
    for task in TaskName::ALL {
        let row = pauses.iter().find(|p| p.task == task.as_str());
        let parked = match (session, row) {
            (None, _) => None,
            (Some(_), None) => Some(0),
            (Some(session), Some(_)) => {
                let park = settings.tasktype_parking_queue(task.as_str());
                match control::depth(session, &park).await {
                    Ok(n) => Some(n),
                    Err(e) => {
                        warn!(queue = %park, error = %e, "cannot count a parking queue");
                        None
                    }
                }
            }
        };
        out.push(TaskType {
            task,
            pause: row.filter(|p| p.paused).cloned(),
            parked,
        });
    }
    Ok(out)
}

/// The task type called `name` (as [`list`] gives it).
pub async fn get(
    store: &Store,
    settings: &HubSettings,
    session: Option<&Session>,
    name: &str,
) -> Result<TaskType, TypeCtlError> {
    let task = known(name)?;
    let all = list(store, settings, session).await?;
    Ok(all.into_iter().find(|t| t.task == task).expect("every task is listed"))
}

/// Pauses task type `name` for `reason`, by user `by`: the agents park its
/// queued tasks, of every job, in the type's parking queue instead of
/// running them (at once when there is a broker `session`, else with the
/// next snapshot); running tasks finish. A paused type is a conflict.
pub async fn pause(
    store: &Store,
    settings: &HubSettings,
    session: Option<&Session>,
    name: &str,
    reason: &str,
    by: &str,
) -> Result<TaskType, TypeCtlError> {
    let task = known(name)?;
    if store.pause_tasktype(task.as_str(), reason, by).await?.is_none() {
        return Err(TypeCtlError::Conflict {
            task: name.to_string(),
            state: PAUSED,
            why: "it is paused already",
        });
    }
    let held = [TypeHeld::new(settings, task.as_str())];
    match session {
        Some(session) => {
            let sent = async {
                control::declare_parking(session, &held[0].park).await?;
                control::publish(session, &control::tasktype_pause_message(&held)).await
            };
            if let Err(e) = sent.await {
                warn!(task = name, error = %e, "cannot send the pause now; the next snapshot carries it");
            }
        }
        None => warn!(task = name, "no broker: the pause goes out with the next snapshot"),
    }
    info!(task = name, reason, user = by, "task type paused");
    get(store, settings, session, name).await
}

/// Resumes paused task type `name`: the agents stop parking its tasks,
/// and what they parked goes back to the queues it came from, moved in the
/// background (at once when there is a broker, else within seconds of its
/// return), so the answer does not wait for thousands of moves. A type
/// not paused is a conflict.
pub async fn resume(
    store: &Store,
    settings: &HubSettings,
    session: Option<Arc<Session>>,
    name: &str,
    by: &str,
) -> Result<TaskType, TypeCtlError> {
    let task = known(name)?;
    if !store.resume_tasktype(task.as_str()).await? {
        return Err(TypeCtlError::Conflict {
            task: name.to_string(),
            state: RUNNING,
            why: "it is not paused",
        });
    }
    let answer = get(store, settings, session.as_deref(), name).await;
    match session {
        Some(session) => {
            let held = [TypeHeld::new(settings, task.as_str())];
            let msg = control::tasktype_resume_message(&held);
            if let Err(e) = control::publish(&session, &msg).await {
                warn!(task = name, error = %e, "cannot send the resume now; the agents' holds expire on their own");
            }
            let [TypeHeld { park, .. }] = held;
            let name = name.to_string();
            tokio::spawn(async move {
                match control::unpark(&session, &park).await {
                    Ok(n) => info!(task = name, tasks = n, "parked tasks moved back to their queues"),
                    Err(e) => warn!(task = name, error = %e, "cannot move parked tasks back now; within seconds"),
                }
            });
        }
        None => warn!(task = name, "no broker: the resume goes out when it returns"),
    }
    info!(task = name, user = by, "task type resumed");
    answer
}
