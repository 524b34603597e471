//! Every task ferry runs, by the seed's name, and the queue function that
//! runs it. This is the one place a `dynamo.tasks.*` name is written: the
//! agent's dispatch, discovery's routing of actions, the operations' result
//! objects and the command line all read it from here.

use crate::config::Function;
use std::fmt;

/// A task ferry runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskName {
    /// Walks paths and publishes batches (`dynamo.tasks.recursive_navigate`).
    RecursiveNavigate,
    /// Diffs a fileset's snapshots and publishes batches (`dynamo.tasks.snapdiff`).
    Snapdiff,
    /// Ends a held snapdiff run (`dynamo.tasks.rotate_snapshot`).
    RotateSnapshot,
    /// Copies data to an endpoint and stubs (`dynamo.tasks.migrate`).
    Migrate,
    /// Brings data back (`dynamo.tasks.recall`).
    Recall,
    /// Makes stubs from objects (`dynamo.tasks.reverse_stub`).
    ReverseStub,
    /// Forgets endpoints (`dynamo.tasks.unmanage`).
    Unmanage,
    /// Drops moved files' locations (`dynamo.tasks.remove_location_xattrs_for_moved`).
    RemoveLocationXattrsForMoved,
    /// Reports attributes (`dynamo.tasks.stat_paths`).
    StatPaths,
    /// Deletes paths (`dynamo.tasks.delete_paths_from_gpfs`).
    DeletePathsFromGpfs,
    /// Renames in two steps (`dynamo.tasks.move_paths_on_gpfs`).
    MovePathsOnGpfs,
    /// Renames directly (`dynamo.tasks.one_step_move_paths_on_gpfs`).
    OneStepMovePathsOnGpfs,
    /// Compares paths with another site's before they are sent there
    /// (`dynamo.tasks.check_sync_state`).
    CheckSyncState,
    /// Lists a directory for the hub's file browser (`dynamo.tasks.browse`,
    /// ferry's name: the seed names no browsing task).
    Browse,
    /// Deletes paths' objects (`dynamo.tasks.remove_from_cloud`).
    RemoveFromCloud,
    /// Moves objects after their files moved (`dynamo.tasks.move_in_cloud`).
    MoveInCloud,
    /// Checks that paths' objects exist (`dynamo.tasks.ensure_cloud_file_exists`).
    EnsureCloudFileExists,
    /// Brings back a byte range of stubs (`dynamo.tasks.recall_bytes`).
    RecallBytes,
    /// Aligns files' location and state with their objects (`dynamo.tasks.ngenea_sync_metadata`).
    NgeneaSyncMetadata,
    /// Builds stubs or files from objects named by key
    /// (`dynamo.tasks.import_files_from_external_target`).
    ImportFilesFromExternalTarget,
    /// Copies objects named by key to plain local files
    /// (`dynamo.tasks.copy_files_from_external_target`).
    CopyFilesFromExternalTarget,
    /// Writes a byte range of an object named by key to a new local file
    /// (`dynamo.tasks.import_bytes`).
    ImportBytes,
}

impl TaskName {
    /// Every task, discovery tasks first.
    pub const ALL: [TaskName; 22] = [
        TaskName::RecursiveNavigate,
        TaskName::Snapdiff,
        TaskName::RotateSnapshot,
        TaskName::Migrate,
        TaskName::Recall,
        TaskName::ReverseStub,
        TaskName::Unmanage,
        TaskName::RemoveLocationXattrsForMoved,
        TaskName::StatPaths,
        TaskName::DeletePathsFromGpfs,
        TaskName::MovePathsOnGpfs,
        TaskName::OneStepMovePathsOnGpfs,
        TaskName::CheckSyncState,
        TaskName::Browse,
        TaskName::RemoveFromCloud,
        TaskName::MoveInCloud,
        TaskName::EnsureCloudFileExists,
        TaskName::RecallBytes,
        TaskName::NgeneaSyncMetadata,
        TaskName::ImportFilesFromExternalTarget,
        TaskName::CopyFilesFromExternalTarget,
        TaskName::ImportBytes,
    ];

    /// Whether the task's input paths are object keys on an endpoint (the
    /// imports), not local paths.
    pub fn takes_keys(self) -> bool {
        matches!(
            self,
            TaskName::ImportFilesFromExternalTarget | TaskName::CopyFilesFromExternalTarget | TaskName::ImportBytes
        )
    }

    /// The seed's name, `dynamo.tasks.<name>`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskName::RecursiveNavigate => "dynamo.tasks.recursive_navigate",
            TaskName::Snapdiff => "dynamo.tasks.snapdiff",
            TaskName::RotateSnapshot => "dynamo.tasks.rotate_snapshot",
            TaskName::Migrate => "dynamo.tasks.migrate",
            TaskName::Recall => "dynamo.tasks.recall",
            TaskName::ReverseStub => "dynamo.tasks.reverse_stub",
            TaskName::Unmanage => "dynamo.tasks.unmanage",
            TaskName::RemoveLocationXattrsForMoved => "dynamo.tasks.remove_location_xattrs_for_moved",
            TaskName::StatPaths => "dynamo.tasks.stat_paths",
            TaskName::DeletePathsFromGpfs => "dynamo.tasks.delete_paths_from_gpfs",
            TaskName::MovePathsOnGpfs => "dynamo.tasks.move_paths_on_gpfs",
            TaskName::OneStepMovePathsOnGpfs => "dynamo.tasks.one_step_move_paths_on_gpfs",
            TaskName::CheckSyncState => "dynamo.tasks.check_sync_state",
            TaskName::Browse => "dynamo.tasks.browse",
            TaskName::RemoveFromCloud => "dynamo.tasks.remove_from_cloud",
            TaskName::MoveInCloud => "dynamo.tasks.move_in_cloud",
            TaskName::EnsureCloudFileExists => "dynamo.tasks.ensure_cloud_file_exists",
            TaskName::RecallBytes => "dynamo.tasks.recall_bytes",
            TaskName::NgeneaSyncMetadata => "dynamo.tasks.ngenea_sync_metadata",
            TaskName::ImportFilesFromExternalTarget => "dynamo.tasks.import_files_from_external_target",
            TaskName::CopyFilesFromExternalTarget => "dynamo.tasks.copy_files_from_external_target",
            TaskName::ImportBytes => "dynamo.tasks.import_bytes",
        }
    }

    /// The task called `name`, if ferry runs it.
    pub fn parse(name: &str) -> Option<TaskName> {
        TaskName::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The queue function that runs it: discovery tasks on `#discovery`,
    /// browsing on `#interactive` (003:L9942), the rest on `#worker`.
    pub fn function(self) -> Function {
        match self {
            TaskName::RecursiveNavigate | TaskName::Snapdiff | TaskName::RotateSnapshot => Function::Discovery,
            TaskName::Browse => Function::Interactive,
            _ => Function::Worker,
        }
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prefix of plugin tasks, which run on `#custom` queues.
pub const CUSTOM_PREFIX: &str = "dynamo.custom.";

/// The queue function a task called `name` runs on, whether or not ferry
/// runs it itself (a workflow may route a step to another worker):
/// plugin tasks (`dynamo.custom.*`) on `#custom`, unknown tasks on
/// `#worker`.
pub fn function_of(name: &str) -> Function {
    match TaskName::parse(name) {
        Some(t) => t.function(),
        None if name.starts_with(CUSTOM_PREFIX) => Function::Custom,
        None => Function::Worker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_route() {
        for t in TaskName::ALL {
            assert_eq!(TaskName::parse(t.as_str()), Some(t));
        }
        assert_eq!(function_of("dynamo.tasks.snapdiff"), Function::Discovery);
        assert_eq!(function_of("dynamo.tasks.migrate"), Function::Worker);
        assert_eq!(function_of("dynamo.custom.thing"), Function::Custom);
        assert_eq!(function_of("other.task"), Function::Worker);
    }
}
