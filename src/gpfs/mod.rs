//! IBM Storage Scale (GPFS) through its documented commands: running the
//! `mm*` commands of [`GpfsSettings::bin_dir`], finding the device a path
//! lives on, listing filesets, and parsing what the commands print
//! ([`policy`]). The snapdiff provider and the delete operation both use
//! this one interface.
//!
//! Commands are called by their documented interfaces only and their
//! messages are never parsed: a failed command is reported with its status
//! and stderr, and callers check the resulting state by listing.

pub mod policy;

use crate::config::GpfsSettings;
use policy::{ParseError, parse_y};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One row of a `-Y` table, column name to decoded value.
pub type Row = HashMap<String, Vec<u8>>;

/// Why a GPFS command or lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum GpfsError {
    /// The command could not be started (missing, not executable).
    #[error("cannot run {}: {source}", path.display())]
    Spawn {
        /// The command's path.
        path: PathBuf,
        /// Why it could not start.
        source: io::Error,
    },
    /// The command ran and failed; GPFS commands fail while nodes are busy,
    /// so this may be worth retrying.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr, on one line.
        stderr: String,
    },
    /// The command printed something that does not parse (the parser's
    /// message names the command).
    #[error("{source}")]
    Output {
        /// The command.
        command: String,
        /// What is wrong with its output.
        source: ParseError,
    },
    /// The path is not on a mounted GPFS filesystem and no device is
    /// configured.
    #[error("{} is not on a mounted GPFS filesystem (set gpfs_device, or give --gpfs-device)", path.display())]
    NotGpfs {
        /// The path.
        path: PathBuf,
    },
    /// The mount table could not be read.
    #[error("reading /proc/self/mountinfo: {0}")]
    MountTable(io::Error),
}

impl GpfsError {
    /// Whether trying again later may succeed (a command that failed, as
    /// opposed to one that cannot run or printed nonsense).
    pub fn is_transient(&self) -> bool {
        matches!(self, GpfsError::Failed { .. })
    }
}

/// Runs `<bin_dir>/cmd args` and returns what it printed on stdout.
pub fn run(settings: &GpfsSettings, cmd: &str, args: &[&str]) -> Result<Vec<u8>, GpfsError> {
    let path = settings.bin_dir.join(cmd);
    let out = Command::new(&path)
        .args(args)
        .output()
        .map_err(|source| GpfsError::Spawn { path, source })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(GpfsError::Failed {
        command: format!("{cmd} {}", args.join(" ")),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().replace('\n', " / "),
    })
}

/// Runs a listing command with `-Y` output and returns its rows.
pub fn table(settings: &GpfsSettings, cmd: &str, args: &[&str]) -> Result<Vec<Row>, GpfsError> {
    let out = run(settings, cmd, args)?;
    parse_y(&out, cmd).map_err(|source| GpfsError::Output {
        command: cmd.to_string(),
        source,
    })
}

/// Every fileset of `device` (`mmlsfileset <device> -Y`).
pub fn filesets(settings: &GpfsSettings, device: &str) -> Result<Vec<Row>, GpfsError> {
    table(settings, "mmlsfileset", &[device, "-Y"])
}

/// The device to use for `path`: the configured one, else the GPFS
/// device mounted at or above `path` in the mount table.
pub fn device_for(settings: &GpfsSettings, path: &Path) -> Result<String, GpfsError> {
    if let Some(d) = &settings.device {
        return Ok(d.clone());
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(GpfsError::MountTable)?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|&x| x == "-") else {
            continue;
        };
        let (Some(mp), Some(fstype), Some(source)) = (f.get(4), f.get(dash + 1), f.get(dash + 2)) else {
            continue;
        };
        if *fstype == "gpfs" && path.starts_with(mp) && best.as_ref().is_none_or(|b| mp.len() > b.0) {
            best = Some((mp.len(), source.trim_start_matches("/dev/").to_string()));
        }
    }
    best.map(|b| b.1).ok_or_else(|| GpfsError::NotGpfs {
        path: path.to_path_buf(),
    })
}

/// The junction paths of every linked fileset of the GPFS filesystem that
/// holds `path` (`mmlsfileset -Y`), or `None` when `path` is not on GPFS
/// and no device is configured. Deletes keep these directories.
pub fn linked_junctions(settings: &GpfsSettings, path: &Path) -> Result<Option<Vec<Vec<u8>>>, GpfsError> {
    let device = match device_for(settings, path) {
        Ok(d) => d,
        Err(GpfsError::NotGpfs { .. } | GpfsError::MountTable(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(
        filesets(settings, &device)?
            .into_iter()
            .filter(|r| r.get("status").is_some_and(|s| s == b"Linked"))
            .filter_map(|mut r| r.remove("path"))
            .collect(),
    ))
}
