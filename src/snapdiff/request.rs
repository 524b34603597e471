//! A snapdiff or a rotate as its caller asks for it: the command line
//! builds these from its flags, the agent reads them from a task's keyword
//! arguments, and both open the same provider with the same options from
//! here.

use super::output::ExtraFields;
use super::provider::{self, Kind, Provider, ProviderOptions};
use super::run::{SnapdiffError, SnapdiffOptions};
use crate::config::{GpfsSettings, defaults};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn yes() -> bool {
    true
}

/// Which fileset's snapshots, and where its run state lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct FilesetRequest {
    /// How snapshots are taken (`provider`: auto, btrfs, gpfs, none).
    pub provider: Kind,
    /// Where the last-snap, manifest and lock files live (`state_dir`;
    /// default `<filesystem root>/.rotate`).
    pub state_dir: Option<PathBuf>,
    /// Prefix of snapshot and state file names (`prefix`; null for the
    /// default).
    #[serde(deserialize_with = "prefix_or_default")]
    pub prefix: String,
    /// Read snapshots by walking them instead of the provider's fast way
    /// (`walk`).
    pub walk: bool,
}

fn prefix_or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let prefix: Option<String> = Deserialize::deserialize(d)?;
    Ok(prefix.unwrap_or_else(|| defaults::STATE_PREFIX.into()))
}

impl Default for FilesetRequest {
    fn default() -> Self {
        FilesetRequest {
            provider: Kind::Auto,
            state_dir: None,
            prefix: defaults::STATE_PREFIX.into(),
            walk: false,
        }
    }
}

impl FilesetRequest {
    /// Opens the fileset at `path` with the requested provider.
    pub fn open(&self, path: &Path, gpfs: &GpfsSettings) -> Result<Box<dyn Provider>, SnapdiffError> {
        let opts = ProviderOptions {
            walk: self.walk,
            gpfs: gpfs.clone(),
            state_dir: self.state_dir.clone(),
        };
        provider::open(self.provider, path, &opts).map_err(|source| SnapdiffError::Open {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Run options: the state location from the request, the lock's
    /// staleness and the walker threads from the caller's settings.
    pub fn options(&self, lock_threshold: Duration, threads: usize) -> SnapdiffOptions {
        SnapdiffOptions {
            state_dir: self.state_dir.clone(),
            prefix: self.prefix.clone(),
            lock_threshold,
            threads,
            ..SnapdiffOptions::default()
        }
    }
}

/// A snapdiff: the fileset and the seed's choices of what to report.
#[derive(Clone, Debug, Deserialize)]
pub struct SnapdiffRequest {
    /// The fileset.
    #[serde(flatten)]
    pub fileset: FilesetRequest,
    /// Report a moved directory once (`condense_moves`, default true).
    #[serde(default = "yes")]
    pub condense_moves: bool,
    /// Leave out created and updated entries whose ctime is older than the
    /// previous snapshot (`skip_old_ctimes`).
    #[serde(default)]
    pub skip_old_ctimes: bool,
    /// Extra fields under `additional_metadata` (`extra_fields`).
    #[serde(default)]
    pub extra_fields: ExtraFields,
    /// Rotate even if the sync of the changes failed (the seed's
    /// `snappdiff_rotate_on_error`, with its spelling; default true).
    #[serde(default = "yes", alias = "snapdiff_rotate_on_error")]
    pub snappdiff_rotate_on_error: bool,
    /// Keep the lock and the new snapshot for a later rotate (`hold`).
    #[serde(default)]
    pub hold: bool,
    /// Read the whole snapshot (or tree) even where only the changes
    /// could be read (`full`).
    #[serde(default)]
    pub full: bool,
    /// Hand every change to the hub as an event instead of to the rules
    /// (a `bidirectional_snapdiff` run: the hub compares both sites'
    /// changes before either is applied). Implies `hold`, and rolls back
    /// a run an earlier collect left held (its job never ended).
    #[serde(default)]
    pub collect: bool,
}

impl Default for SnapdiffRequest {
    fn default() -> Self {
        SnapdiffRequest {
            fileset: FilesetRequest::default(),
            condense_moves: true,
            skip_old_ctimes: false,
            extra_fields: ExtraFields::default(),
            snappdiff_rotate_on_error: true,
            hold: false,
            full: false,
            collect: false,
        }
    }
}

impl SnapdiffRequest {
    /// Run options (see [`FilesetRequest::options`]) with the diff's
    /// choices and `hold`.
    pub fn options(&self, lock_threshold: Duration, threads: usize) -> SnapdiffOptions {
        let mut o = self.fileset.options(lock_threshold, threads);
        o.diff.condense_moves = self.condense_moves;
        o.diff.skip_old_ctimes = self.skip_old_ctimes;
        o.hold = self.hold || self.collect;
        o.full = self.full;
        o.supersede = self.collect;
        o
    }
}

/// The end of a held run: rotate, or roll back.
#[derive(Clone, Debug, Deserialize)]
pub struct RotateRequest {
    /// The fileset.
    #[serde(flatten)]
    pub fileset: FilesetRequest,
    /// The sync of the held changes failed (`failed`).
    #[serde(default)]
    pub failed: bool,
    /// Rotate even so (`snappdiff_rotate_on_error`, default true).
    #[serde(default = "yes", alias = "snapdiff_rotate_on_error")]
    pub snappdiff_rotate_on_error: bool,
}

/// The name of the runtime field and task argument that says whether a
/// failed sync still rotates (the seed's spelling, with its double p):
/// the hub lifts a workflow's field of this name into the snapdiff's
/// arguments.
pub const ROTATE_ON_ERROR: &str = "snappdiff_rotate_on_error";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_arguments_read_with_the_seeds_defaults() {
        let r: SnapdiffRequest = serde_json::from_str(
            r#"{"provider": "none", "extra_fields": ["inode"], "snapdiff_rotate_on_error": false, "full": true, "other": 1}"#,
        )
        .unwrap();
        assert_eq!(r.fileset.provider, Kind::None);
        assert_eq!(r.fileset.prefix, defaults::STATE_PREFIX);
        assert!(r.condense_moves && r.extra_fields.inode && !r.snappdiff_rotate_on_error);
        assert!(r.full && r.options(Duration::from_secs(1), 1).full);
        let r: SnapdiffRequest = serde_json::from_str(r#"{"provider": null, "prefix": null}"#).unwrap();
        assert_eq!(
            (r.fileset.provider, r.fileset.prefix.as_str()),
            (Kind::Auto, defaults::STATE_PREFIX)
        );
        let e = serde_json::from_str::<SnapdiffRequest>(r#"{"provider": "zfs"}"#).unwrap_err();
        assert!(e.to_string().contains("auto, btrfs, gpfs or none"), "{e}");
        let e = serde_json::from_str::<SnapdiffRequest>(r#"{"extra_fields": ["colour"]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown extra field 'colour'"), "{e}");
    }

    #[test]
    fn the_rotate_field_the_hub_lifts_is_the_one_read_here() {
        let r: SnapdiffRequest = serde_json::from_value(serde_json::json!({ ROTATE_ON_ERROR: false })).unwrap();
        assert!(!r.snappdiff_rotate_on_error);
    }
}
