//! How ferry reaches IBM Storage Scale (GPFS): the `[settings]` keys for
//! the `mm*` command directory, the filesystem device, the nodes that run
//! policy scans and the inode scan's threads and buckets.
//!
//! These reach every user of GPFS through this one type: the command line
//! (whose flags override the file) and the agent build their snapdiff and
//! delete requests from it, so a setting made in the file is never lost on
//! one path.

use super::defaults;
use super::ini::{BadValue, ConfigError, Section, parse_count};
use std::path::PathBuf;

/// The `[settings]` keys [`GpfsSettings::read`] knows.
pub const GPFS_KEYS: &str = "gpfs_bin_dir, gpfs_device, gpfs_nodes, gpfs_iscan_threads, gpfs_iscan_buckets";

/// How to reach GPFS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpfsSettings {
    /// Directory of the `mm*` commands (`gpfs_bin_dir`).
    pub bin_dir: PathBuf,
    /// The filesystem device, e.g. `gpfs0` (`gpfs_device`); by default the
    /// mount table's device for the path at hand.
    pub device: Option<String>,
    /// Nodes that run the snapdiff policy scan (`mmapplypolicy -N`; the
    /// seed's worker setting `gpfs_nodes`).
    pub nodes: Vec<String>,
    /// Inode scan threads (`mmapplypolicy -a`; the seed's
    /// `gpfs_iscan_threads`, site setting `iscanThreads`).
    pub iscan_threads: Option<u32>,
    /// Inode scan buckets (`mmapplypolicy -A`; the seed's
    /// `gpfs_iscan_buckets`, site setting `iscanBuckets`).
    pub iscan_buckets: Option<u32>,
}

impl Default for GpfsSettings {
    fn default() -> Self {
        GpfsSettings {
            bin_dir: PathBuf::from(defaults::GPFS_BIN_DIR),
            device: None,
            nodes: Vec::new(),
            iscan_threads: None,
            iscan_buckets: None,
        }
    }
}

impl GpfsSettings {
    /// Reads the GPFS keys of `[settings]`.
    pub fn read(s: &mut Section<'_>) -> Result<GpfsSettings, ConfigError> {
        let mut g = GpfsSettings::default();
        if let Some(v) = s.take("gpfs_bin_dir") {
            if !v.text.starts_with('/') {
                return Err(s.error(v.line, "`gpfs_bin_dir` must be an absolute path"));
            }
            g.bin_dir = PathBuf::from(v.text);
        }
        if let Some(v) = s.take("gpfs_device") {
            if v.text.is_empty() || v.text.contains(['/', ' ']) {
                return Err(s.error(
                    v.line,
                    format!(
                        "`gpfs_device`: expected a device name such as gpfs0, found {:?}",
                        v.text
                    ),
                ));
            }
            g.device = Some(v.text);
        }
        if let Some(nodes) = s.take_parsed("gpfs_nodes", parse_nodes)? {
            g.nodes = nodes;
        }
        g.iscan_threads = s.take_parsed("gpfs_iscan_threads", parse_u32)?;
        g.iscan_buckets = s.take_parsed("gpfs_iscan_buckets", parse_u32)?;
        Ok(g)
    }
}

fn parse_u32(s: &str) -> Result<u32, BadValue> {
    parse_count(s).and_then(|n| u32::try_from(n).map_err(|_| BadValue(format!("{n} is too large"))))
}

/// Parses a node list as the seed writes it (`["node1","node2"]`, a
/// Python/JSON list) or as a comma-separated list (`node1,node2`).
pub fn parse_nodes(s: &str) -> Result<Vec<String>, BadValue> {
    let nodes: Vec<String> = if s.trim_start().starts_with('[') {
        serde_json::from_str(s).map_err(|e| {
            BadValue(format!(
                "expected a list of host names such as [\"node1\",\"node2\"]: {e}"
            ))
        })?
    } else {
        s.split(',').map(|n| n.trim().to_string()).collect()
    };
    match nodes.iter().find(|n| n.is_empty() || n.contains([' ', ','])) {
        Some(bad) => Err(BadValue(format!("{bad:?} is not a node name"))),
        None => Ok(nodes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_in_both_spellings() {
        assert_eq!(parse_nodes(r#"["n1", "n2"]"#).unwrap(), ["n1", "n2"]);
        assert_eq!(parse_nodes("n1, n2").unwrap(), ["n1", "n2"]);
        assert!(parse_nodes("n1,,n2").is_err());
        assert!(parse_nodes("[1]").is_err());
    }
}
