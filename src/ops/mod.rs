//! File operations on batches of paths: one module per operation, each
//! returning one [`Outcome`] per input path in the seed's per-file states.
//!
//! Shared pieces have a file each: [`context`] (configuration, open
//! endpoints, progress counters), [`mod@file`] (opening without following
//! symlinks, the stat facts that prove a file did not change, times,
//! sparse writes), [`window`] (commit windows, hard links, an ordered
//! parallel map) and [`run`] (the loop the command line and the agent both
//! drive an operation with); `cloud` holds what the cloud-side tasks
//! share. Locks and ferry's xattrs have their own modules. The data-safety
//! rules every operation follows are in `docs/operations.md`.

pub mod browse;
pub mod check;
mod cloud;
pub mod context;
pub mod delete;
pub mod dirtimes;
pub mod ensure_in_cloud;
pub mod entry;
pub mod error;
pub mod file;
pub mod import;
pub mod import_bytes;
pub mod lock;
pub mod migrate;
pub mod move_in_cloud;
pub mod moves;
pub mod recall;
pub mod recall_bytes;
mod relocate;
pub mod remove_from_cloud;
pub mod reverse_stub;
pub mod route;
pub mod run;
pub mod stat;
pub mod sync_metadata;
pub mod unmanage;
pub mod window;
pub mod xattrs;

pub use context::OpContext;
pub use error::OpError;
pub use run::{RunTotals, run_batches};
pub use window::COMMIT_WINDOW;

pub(crate) use file::{OpenError, Reachable, Snap, chosen_times, open_file, set_times, write_sparse};
pub(crate) use window::{Inodes, Step, for_each_window, par_map};

use crate::task::{ArgumentError, Outcome, PathObject, TaskName, parse_kwargs};

/// One operation with its arguments, as a task or a command asks for it.
#[derive(Clone, Debug)]
pub enum Operation {
    /// `dynamo.tasks.migrate` (premigrate too, by its argument).
    Migrate(migrate::MigrateArgs),
    /// `dynamo.tasks.recall`.
    Recall(recall::RecallArgs),
    /// `dynamo.tasks.reverse_stub`.
    ReverseStub(reverse_stub::ReverseStubArgs),
    /// `dynamo.tasks.unmanage`.
    Unmanage(unmanage::UnmanageArgs),
    /// `dynamo.tasks.remove_location_xattrs_for_moved`.
    RemoveLocations,
    /// `dynamo.tasks.stat_paths`.
    Stat,
    /// `dynamo.tasks.delete_paths_from_gpfs`.
    Delete(delete::DeleteArgs),
    /// `dynamo.tasks.move_paths_on_gpfs`.
    Move(moves::MoveArgs),
    /// `dynamo.tasks.one_step_move_paths_on_gpfs`.
    OneStepMove(moves::MoveArgs),
    /// `dynamo.tasks.remove_from_cloud`.
    RemoveFromCloud(remove_from_cloud::RemoveFromCloudArgs),
    /// `dynamo.tasks.move_in_cloud`.
    MoveInCloud(move_in_cloud::MoveInCloudArgs),
    /// `dynamo.tasks.ensure_cloud_file_exists`.
    EnsureInCloud(ensure_in_cloud::EnsureArgs),
    /// `dynamo.tasks.recall_bytes`.
    RecallBytes(recall_bytes::RecallBytesArgs),
    /// `dynamo.tasks.ngenea_sync_metadata`.
    SyncMetadata(sync_metadata::SyncMetadataArgs),
    /// `dynamo.tasks.import_files_from_external_target` (paths are object
    /// keys or prefixes).
    Import(import::ImportArgs),
    /// `dynamo.tasks.copy_files_from_external_target` (paths are object
    /// keys or prefixes).
    CopyImport(import::ImportArgs),
    /// `dynamo.tasks.import_bytes` (paths are object keys).
    ImportBytes(import_bytes::ImportBytesArgs),
}

impl Operation {
    /// The seed's task name.
    pub fn task_name(&self) -> TaskName {
        match self {
            Operation::Migrate(_) => TaskName::Migrate,
            Operation::Recall(_) => TaskName::Recall,
            Operation::ReverseStub(_) => TaskName::ReverseStub,
            Operation::Unmanage(_) => TaskName::Unmanage,
            Operation::RemoveLocations => TaskName::RemoveLocationXattrsForMoved,
            Operation::Stat => TaskName::StatPaths,
            Operation::Delete(_) => TaskName::DeletePathsFromGpfs,
            Operation::Move(_) => TaskName::MovePathsOnGpfs,
            Operation::OneStepMove(_) => TaskName::OneStepMovePathsOnGpfs,
            Operation::RemoveFromCloud(_) => TaskName::RemoveFromCloud,
            Operation::MoveInCloud(_) => TaskName::MoveInCloud,
            Operation::EnsureInCloud(_) => TaskName::EnsureCloudFileExists,
            Operation::RecallBytes(_) => TaskName::RecallBytes,
            Operation::SyncMetadata(_) => TaskName::NgeneaSyncMetadata,
            Operation::Import(_) => TaskName::ImportFilesFromExternalTarget,
            Operation::CopyImport(_) => TaskName::CopyFilesFromExternalTarget,
            Operation::ImportBytes(_) => TaskName::ImportBytes,
        }
    }

    /// The operation task `task` asks for, with its keyword arguments (a
    /// JSON object; unknown keys are ignored, as the seed's `**kwargs`
    /// does). `None` when `task` is not an operation (a discovery task,
    /// or `check_sync_state`, which asks another site);
    /// `Err` when an argument has the wrong type.
    pub fn from_task(task: TaskName, kwargs: &str) -> Option<Result<Operation, ArgumentError>> {
        Some(match task {
            TaskName::Migrate => parse_kwargs(kwargs).map(Operation::Migrate),
            TaskName::Recall => parse_kwargs(kwargs).map(Operation::Recall),
            TaskName::ReverseStub => parse_kwargs(kwargs).map(Operation::ReverseStub),
            TaskName::Unmanage => parse_kwargs(kwargs).map(Operation::Unmanage),
            TaskName::RemoveLocationXattrsForMoved => Ok(Operation::RemoveLocations),
            TaskName::StatPaths => Ok(Operation::Stat),
            TaskName::DeletePathsFromGpfs => parse_kwargs(kwargs).map(Operation::Delete),
            TaskName::MovePathsOnGpfs => parse_kwargs(kwargs).map(Operation::Move),
            TaskName::OneStepMovePathsOnGpfs => parse_kwargs(kwargs).map(Operation::OneStepMove),
            TaskName::RemoveFromCloud => parse_kwargs(kwargs).map(Operation::RemoveFromCloud),
            TaskName::MoveInCloud => parse_kwargs(kwargs).map(Operation::MoveInCloud),
            TaskName::EnsureCloudFileExists => parse_kwargs(kwargs).map(Operation::EnsureInCloud),
            TaskName::RecallBytes => parse_kwargs(kwargs).map(Operation::RecallBytes),
            TaskName::NgeneaSyncMetadata => parse_kwargs(kwargs).map(Operation::SyncMetadata),
            TaskName::ImportFilesFromExternalTarget => parse_kwargs(kwargs).map(Operation::Import),
            TaskName::CopyFilesFromExternalTarget => parse_kwargs(kwargs).map(Operation::CopyImport),
            TaskName::ImportBytes => parse_kwargs(kwargs).map(Operation::ImportBytes),
            // Tasks that talk to other tasks, or answer with something
            // else than per-file outcomes: the agent runs them.
            TaskName::RecursiveNavigate
            | TaskName::Snapdiff
            | TaskName::RotateSnapshot
            | TaskName::CheckSyncState
            | TaskName::Browse => return None,
        })
    }

    /// How many paths one call of [`Operation::run`] should get: a move
    /// batch is taken whole (its two steps must see every move, or a swap
    /// split across calls would lose a file, and one-step moves keep their
    /// given order); the others a commit window.
    pub fn batch_limit(&self) -> usize {
        if matches!(self, Operation::Move(_) | Operation::OneStepMove(_)) {
            usize::MAX
        } else {
            COMMIT_WINDOW
        }
    }

    /// Whether its paths are object keys or prefixes on an endpoint (the
    /// imports), not local paths.
    pub fn takes_keys(&self) -> bool {
        matches!(
            self,
            Operation::Import(_) | Operation::CopyImport(_) | Operation::ImportBytes(_)
        )
    }

    /// Whether its paths are SOURCE DEST pairs (the moves, and the moves of
    /// their objects).
    pub fn takes_pairs(&self) -> bool {
        matches!(
            self,
            Operation::Move(_) | Operation::OneStepMove(_) | Operation::MoveInCloud(_)
        )
    }

    /// Runs the operation on `paths`: one outcome per path, in order, or an
    /// error for the whole task (unknown endpoint, conflicting arguments).
    pub fn run(&self, ctx: &OpContext, paths: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
        match self {
            Operation::Migrate(a) => migrate::migrate(ctx, a, paths),
            Operation::Recall(a) => recall::recall(ctx, a, paths),
            Operation::ReverseStub(a) => reverse_stub::reverse_stub(ctx, a, paths),
            Operation::Unmanage(a) => unmanage::unmanage(ctx, a, paths),
            Operation::RemoveLocations => Ok(unmanage::remove_location_xattrs(ctx, paths)),
            Operation::Stat => Ok(stat::stat_paths(ctx, paths)),
            Operation::Delete(a) => Ok(delete::delete(ctx, a, paths)),
            Operation::Move(a) => Ok(moves::move_paths(ctx, a, paths)),
            Operation::OneStepMove(a) => Ok(moves::one_step_move_paths(ctx, a, paths)),
            Operation::RemoveFromCloud(a) => remove_from_cloud::remove_from_cloud(ctx, a, paths),
            Operation::MoveInCloud(a) => move_in_cloud::move_in_cloud(ctx, a, paths),
            Operation::EnsureInCloud(a) => ensure_in_cloud::ensure_cloud_file_exists(ctx, a, paths),
            Operation::RecallBytes(a) => recall_bytes::recall_bytes(ctx, a, paths),
            Operation::SyncMetadata(a) => sync_metadata::sync_metadata(ctx, a, paths),
            Operation::Import(a) => import::import(ctx, a, false, paths),
            Operation::CopyImport(a) => import::import(ctx, a, true, paths),
            Operation::ImportBytes(a) => import_bytes::import_bytes(ctx, a, paths),
        }
    }
}
