//! Flag groups more than one command takes, declared once so they mean
//! the same everywhere, and the parsers of flag values.

use clap::Args;
use ferry::batch::BatchLimits;
use ferry::config::{BadValue, Config, ConfigError, GpfsSettings, defaults, parse_count};
use ferry::entry::Fields;
use ferry::output::Format;
use std::fmt;
use std::path::PathBuf;

/// Which configuration file to read.
#[derive(Args)]
pub struct ConfigArg {
    /// Configuration file (default: $FERRY_CONFIG, then
    /// /etc/ferry/ferry.conf if it exists; see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// Reads the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.config.as_deref())
    }
}

/// How much runs at once.
#[derive(Args)]
pub struct Concurrency {
    /// Work in flight: for walks (scan, snapdiff) the metadata calls in
    /// flight, 64 or more on a parallel filesystem where each call is a
    /// network round trip [default: the core count]; for operations the
    /// files worked on at once [default: `threads` in the configuration,
    /// 10].
    #[arg(short = 'j', long, value_name = "N", value_parser = parse_count)]
    pub threads: Option<usize>,
}

/// Whether to show a progress line on stderr.
#[derive(Args)]
pub struct ProgressArgs {
    /// Show a progress line on stderr (default: when stderr is a terminal).
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,

    /// Never show a progress line.
    #[arg(long)]
    no_progress: bool,
}

impl ProgressArgs {
    /// `Some(true)` always, `Some(false)` never, `None` on a terminal only.
    pub fn choice(&self) -> Option<bool> {
        if self.no_progress {
            Some(false)
        } else {
            self.progress.then_some(true)
        }
    }
}

/// How entries are written (scan and snapdiff).
#[derive(Args)]
pub struct OutputArgs {
    /// Write raw paths, each followed by a NUL byte (like find -print0).
    #[arg(short = '0', long = "null", conflicts_with_all = ["batch", "summary"])]
    pub null: bool,

    /// Write one JSON array of path objects per batch, one batch per line.
    #[arg(long, conflicts_with = "summary")]
    pub batch: bool,

    /// Most paths per batch (seed setting file_batch_size).
    #[arg(long, default_value_t = defaults::FILE_BATCH_SIZE, value_name = "N")]
    pub file_batch_size: usize,

    /// Most file data per batch in GB (10^9 bytes; seed setting
    /// file_batch_gb; 0 for no limit). Whichever limit is hit first
    /// closes the batch.
    #[arg(long, default_value_t = defaults::FILE_BATCH_GB, value_name = "GB")]
    pub file_batch_gb: f64,

    /// Grow the batch size with the number of paths found so far, or for
    /// snapdiff with its number of changes (seed setting
    /// enable_auto_file_batch_sizing, on by default for the agent;
    /// opt-in here so that --file-batch-size N means exactly N; see
    /// docs/batching.md).
    #[arg(long)]
    pub auto_batch_size: bool,

    /// Use large streaming batches (10,000 paths or 1 MiB of JSON) instead
    /// of the file_batch_* limits.
    #[arg(long, requires = "batch")]
    pub stream_batches: bool,

    /// Print only a status object with counts, not the entries.
    #[arg(long)]
    pub summary: bool,
}

impl OutputArgs {
    /// The output format, or `None` for a summary only.
    pub fn format(&self, fields: Fields) -> Option<Format> {
        if self.summary {
            None
        } else if self.null {
            Some(Format::Nul)
        } else if self.batch {
            let limits = if self.stream_batches {
                BatchLimits::STREAMING
            } else {
                BatchLimits::from_seed(self.file_batch_size, self.file_batch_gb, self.auto_batch_size)
            };
            Some(Format::Batches(fields, limits))
        } else {
            Some(Format::JsonLines(fields))
        }
    }
}

/// How to reach GPFS's commands; each flag overrides the configuration.
#[derive(Args)]
pub struct GpfsArgs {
    /// Directory of GPFS's mm* commands [default: gpfs_bin_dir in the
    /// configuration, else /usr/lpp/mmfs/bin].
    #[arg(long, value_name = "DIR")]
    gpfs_bin: Option<PathBuf>,

    /// GPFS filesystem device (e.g. gpfs0) [default: gpfs_device in the
    /// configuration, else the device mounted at the path].
    #[arg(long, value_name = "DEVICE")]
    gpfs_device: Option<String>,
}

impl GpfsArgs {
    /// `settings` with these flags applied.
    pub fn apply(&self, settings: &mut GpfsSettings) {
        if let Some(b) = &self.gpfs_bin {
            settings.bin_dir = b.clone();
        }
        if let Some(d) = &self.gpfs_device {
            settings.device = Some(d.clone());
        }
    }
}

/// A byte count as flags take and show it: with a K, M or G suffix
/// (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match [(30, 'G'), (20, 'M'), (10, 'K')]
            .into_iter()
            .find(|(shift, _)| n != 0 && n.is_multiple_of(1 << shift))
        {
            Some((shift, unit)) => write!(f, "{}{unit}", n >> shift),
            None => write!(f, "{n}"),
        }
    }
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub fn byte_size(s: &str) -> Result<usize, BadValue> {
    let (num, shift) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: usize = num.parse().map_err(|_| BadValue(format!("'{s}' is not a size")))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| BadValue(format!("'{s}' is too large")))
}

/// A byte count of at least `min`.
pub fn byte_size_at_least(s: &str, min: usize) -> Result<ByteSize, BadValue> {
    let n = byte_size(s)?;
    if n < min {
        return Err(BadValue(format!("at least {min} bytes ({})", ByteSize(min))));
    }
    Ok(ByteSize(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(byte_size("128K"), Ok(128 << 10));
        assert_eq!(byte_size("1G"), Ok(1 << 30));
        assert_eq!(byte_size("1g"), Ok(1 << 30));
        assert_eq!(byte_size("7"), Ok(7));
        assert!(byte_size("1T").is_err());
        assert!(byte_size_at_least("8M", 16 << 20).unwrap_err().0.contains("(16M)"));
        assert_eq!(ByteSize(128 << 10).to_string(), "128K");
        assert_eq!(ByteSize(1 << 30).to_string(), "1G");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }
}
