//! What an operator can do to a job from its page (Pause, Resume,
//! Cancel, Re-submit, Re-submit failed, Delete): the buttons a job's state
//! offers, and their execution through `hub::jobctl`, as the API does.

use super::session::Session;
use crate::hub::api::ApiState;
use crate::hub::jobctl::{self, JobCtlError};
use crate::hub::store::jobs::state;

/// Something an operator can do to a job, as a button.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// Its name in the URL and the test id (`cancel`).
    pub name: &'static str,
    /// The button's words.
    pub label: &'static str,
    /// The question of its confirmation page; `None` acts at once.
    pub confirm: Option<&'static str>,
    /// What the page says after it was done.
    pub done: &'static str,
}

pub const CANCEL: Action = Action {
    name: "cancel",
    label: "Cancel",
    confirm: None,
    done: "Cancel requested: the job is DEQUEUING until every queued task is removed and running tasks finish.",
};
pub const DELETE: Action = Action {
    name: "delete",
    label: "Delete",
    confirm: Some(
        "Delete this job with its task records and failed-file records? The files themselves are not touched. This cannot be undone.",
    ),
    done: "",
};

const PAUSE: Action = Action {
    name: "pause",
    label: "Pause",
    confirm: None,
    done: "Pause requested: queued tasks are held and running ones finish; the job is PAUSED once none runs.",
};
const RESUME: Action = Action {
    name: "resume",
    label: "Resume",
    confirm: None,
    done: "Resumed: held tasks are back in their queues.",
};
const RESUBMIT: Action = Action {
    name: "resubmit",
    label: "Re-submit",
    confirm: Some("Run this job again as a new job, on the same paths with the same workflow and fields?"),
    done: "",
};
const RESUBMIT_FAILED: Action = Action {
    name: "resubmit-failed",
    label: "Re-submit failed",
    confirm: Some("Run a new job over this job's failed files only, without discovery?"),
    done: "",
};

/// The actions a job in `state` offers: only those that would do
/// something (a finished job cannot be cancelled, a running one cannot be
/// deleted). A new action is one line here and one arm in [`run`].
pub fn actions(job_state: &str) -> Vec<Action> {
    let running = !state::FINAL.contains(&job_state);
    let pausable = [state::PENDING, state::STARTED].contains(&job_state);
    let paused = ["PAUSING", "PAUSED"].contains(&job_state);
    [
        (pausable, PAUSE),
        (paused, RESUME),
        (running, CANCEL),
        (!running, RESUBMIT),
        (job_state == state::FAILURE, RESUBMIT_FAILED),
        (!running, DELETE),
    ]
    .into_iter()
    .filter_map(|(offered, a)| offered.then_some(a))
    .collect()
}

pub fn action(name: &str) -> Option<Action> {
    [PAUSE, RESUME, CANCEL, RESUBMIT, RESUBMIT_FAILED, DELETE]
        .into_iter()
        .find(|a| a.name == name)
}

/// What an action left.
pub enum Outcome {
    /// The job, changed.
    Job,
    /// A new job (a resubmission).
    New(i64),
    /// No job any more.
    Gone,
}

/// Carries out `action` on job `id` for `who` with `hub::jobctl`, as the
/// API does.
pub async fn run(s: &ApiState, who: &Session, id: i64, action: &Action) -> Result<Outcome, JobCtlError> {
    let session = s.session.borrow().clone();
    let owner = || crate::hub::store::jobs::Owner {
        kind: "user".into(),
        id: who.user_id,
        name: who.username.clone(),
    };
    match action.name {
        "cancel" => jobctl::cancel(&s.store, session.as_deref(), id)
            .await
            .map(|_| Outcome::Job),
        "pause" => jobctl::pause(&s.store, &s.settings, session.as_deref(), id)
            .await
            .map(|_| Outcome::Job),
        "resume" => jobctl::resume(&s.store, &s.settings, session, id)
            .await
            .map(|_| Outcome::Job),
        "resubmit" | "resubmit-failed" => {
            let new = jobctl::resubmit(
                &s.store,
                s.configs.get().queue_depth(),
                owner(),
                None,
                id,
                action.name == "resubmit-failed",
            )
            .await?;
            s.outbox.notify_one();
            Ok(Outcome::New(new))
        }
        "delete" => jobctl::delete(&s.store, id).await.map(|()| Outcome::Gone),
        _ => Err(JobCtlError::NotFound(id)),
    }
}
