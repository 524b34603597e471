//! Choosing a provider: by the name the command line and the agent both
//! give (`auto`, `btrfs`, `gpfs`, `none`), with the options that say how
//! it reads snapshots.

use super::{Provider, btrfs, gpfs, none};
use std::io;
use std::path::Path;

/// Which provider to use, by the name the command line's `--provider`
/// and a task's `provider` argument both give (`auto`, `btrfs`, `gpfs`,
/// `none`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// btrfs if the path is a btrfs subvolume, otherwise none.
    #[default]
    Auto,
    /// [`btrfs::Btrfs`].
    Btrfs,
    /// [`gpfs::Gpfs`].
    Gpfs,
    /// [`none::NoSnapshots`].
    None,
}

impl Kind {
    /// Every kind's name, for help texts.
    pub const NAMES: [&'static str; 4] = ["auto", "btrfs", "gpfs", "none"];
}

/// A provider name that is not one of [`Kind::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider must be auto, btrfs, gpfs or none, not {0:?}")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Kind, UnknownKind> {
        match s {
            "auto" => Ok(Kind::Auto),
            "btrfs" => Ok(Kind::Btrfs),
            "gpfs" => Ok(Kind::Gpfs),
            "none" => Ok(Kind::None),
            other => Err(UnknownKind(other.to_string())),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Kind {
    /// A name, or null for `auto` (Python callers send `None` for "the
    /// default").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let name: Option<String> = serde::Deserialize::deserialize(d)?;
        name.map_or(Ok(Kind::Auto), |n| n.parse().map_err(serde::de::Error::custom))
    }
}

/// How providers read snapshots.
#[derive(Clone, Debug, Default)]
pub struct ProviderOptions {
    /// Walk snapshots instead of reading them the provider's fast way (the
    /// btrfs tree search, the GPFS policy scan).
    pub walk: bool,
    /// How to reach GPFS.
    pub gpfs: crate::config::GpfsSettings,
    /// The runs' state directory, where `none` and `btrfs` find the event journal
    /// (default `<filesystem root>/.rotate`).
    pub state_dir: Option<std::path::PathBuf>,
}

/// Opens the fileset at `path` with provider `kind`.
pub fn open(kind: Kind, path: &Path, opts: &ProviderOptions) -> io::Result<Box<dyn Provider>> {
    Ok(match kind {
        Kind::Btrfs => Box::new(btrfs::Btrfs::open(path, opts.walk, opts.state_dir.as_deref())?),
        Kind::Gpfs => Box::new(gpfs::Gpfs::open(path, &opts.gpfs, opts.walk)?),
        Kind::None => Box::new(none::NoSnapshots::open(path, opts.state_dir.as_deref())?),
        Kind::Auto => match btrfs::Btrfs::open(path, opts.walk, opts.state_dir.as_deref()) {
            Ok(b) => Box::new(b),
            Err(_) => Box::new(none::NoSnapshots::open(path, opts.state_dir.as_deref())?),
        },
    })
}
