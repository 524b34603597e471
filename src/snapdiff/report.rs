//! What a snapdiff run reports: how it ended, what it found, how it read
//! the snapshot and what that cost (`--summary`, and a task's status).

use super::diff::DiffSummary;
use super::provider::Provider;
use super::set::Compaction;
use serde::Serialize;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// The new snapshot is now the last synced one.
    Rotated,
    /// Nothing changed on disk (`--dry-run`).
    DryRun,
    /// Waiting for `rotate` (`--hold`).
    Held,
    /// The new snapshot was discarded; the next run diffs from the old one.
    RolledBack,
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct SnapdiffReport {
    /// Provider kind.
    pub provider: &'static str,
    /// Fileset name.
    pub fileset: String,
    /// Fileset id.
    pub fileset_id: String,
    /// The baseline snapshot (`None` on a first run).
    pub old_snapshot: Option<String>,
    /// The snapshot taken by this run.
    pub new_snapshot: String,
    /// No baseline: everything is `created`.
    pub first_run: bool,
    /// Counts of changes.
    pub summary: DiffSummary,
    /// How it ended.
    pub outcome: RunEnd,
    /// Things that went wrong without failing the run (an old snapshot
    /// that could not be deleted).
    pub warnings: Vec<String>,
    /// When it started.
    pub started: String,
    /// Seconds spent reading the snapshot into a manifest.
    pub manifest_seconds: f64,
    /// Seconds spent diffing and writing changes.
    pub diff_seconds: f64,
    /// Entries in the new manifest.
    pub entries: u64,
    /// Bytes of manifest this run wrote: a delta (in proportion to the
    /// change) once there is a baseline, a whole base otherwise.
    pub manifest_bytes: u64,
    /// The compaction that followed the rotation, if the deltas had grown.
    pub compaction: Option<Compaction>,
    /// How the snapshot was read: `full` (every inode), `changes` (only
    /// what changed since the last synced snapshot, found by the
    /// provider: the btrfs tree search, GPFS's inode scan) or `journal`
    /// (only what the event journal's events since then named).
    pub read: ReadMethod,
    /// Inodes the read examined: all of them for a full read, about the
    /// changed ones for a read of changes.
    pub examined: u64,
}

/// How a run read its snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMethod {
    /// Every inode, then a diff of whole manifests.
    #[default]
    Full,
    /// Only what changed since the last synced snapshot.
    Changes,
    /// Only what the event journal named since the last synced snapshot.
    Journal,
}

impl SnapdiffReport {
    /// The run as a task's result reports it (`status.snapdiff`).
    pub fn task_status(&self) -> serde_json::Value {
        serde_json::json!({
            "snapshot": self.new_snapshot,
            "previous_snapshot": self.old_snapshot,
            "first_run": self.first_run,
            "outcome": self.outcome,
            "warnings": self.warnings,
        })
    }

    /// A report with no changes counted and no timings yet.
    pub(super) fn new(
        provider: &dyn Provider,
        old_snapshot: Option<String>,
        new_snapshot: String,
        outcome: RunEnd,
        started: String,
    ) -> Self {
        let fs = provider.fileset();
        SnapdiffReport {
            provider: provider.kind(),
            fileset: fs.name.clone(),
            fileset_id: fs.id.clone(),
            first_run: old_snapshot.is_none(),
            old_snapshot,
            new_snapshot,
            summary: DiffSummary::default(),
            outcome,
            warnings: Vec::new(),
            started,
            manifest_seconds: 0.0,
            diff_seconds: 0.0,
            entries: 0,
            manifest_bytes: 0,
            compaction: None,
            read: ReadMethod::Full,
            examined: 0,
        }
    }
}
