//! How a command ended, as its exit status says it: one mapping for every
//! command (the table is in `cli/mod.rs` and docs/architecture.md).

/// How a command that ran ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Success = 0,
    /// Done, but some paths failed.
    PathsFailed = 1,
    /// Nothing done: usage or setup.
    Setup = 2,
    /// Nothing done: the fileset is locked by another run.
    Locked = 3,
    /// `ferry client`: the wait for a job ended (`--timeout`) before the
    /// job did; the job goes on running on the hub.
    TimedOut = 4,
}

/// A command that stopped, what to tell the user, and the status.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub status: Status,
    /// What to tell the user.
    pub message: String,
}

impl Failure {
    /// Bad usage or setup: nothing was done.
    pub fn setup(message: impl ToString) -> Failure {
        Failure {
            status: Status::Setup,
            message: message.to_string(),
        }
    }

    /// Some of the paths failed (the rest were done).
    pub fn paths(message: impl ToString) -> Failure {
        Failure {
            status: Status::PathsFailed,
            message: message.to_string(),
        }
    }

    /// The wait for a job ended before the job did.
    pub fn timed_out(message: impl ToString) -> Failure {
        Failure {
            status: Status::TimedOut,
            message: message.to_string(),
        }
    }

    /// Another run holds the lock.
    pub fn locked(message: impl ToString) -> Failure {
        Failure {
            status: Status::Locked,
            message: message.to_string(),
        }
    }
}
