//! Cutting a stream of discovered paths into batches.
//!
//! The seed's rule: a batch holds at most `file_batch_size` paths (default
//! 40) and at most `file_batch_gb` of file data (default 1 GB); whichever
//! limit is reached first closes the batch. A single file larger than the
//! data limit travels alone. For streaming, a batch may also be capped by
//! its encoded message size. With dynamic sizing the path limit grows with
//! the number of paths discovered so far, or follows the run's total when
//! it is known before the first path (a snapdiff's; see `docs/batching.md`).

use crate::config::BatchSettings;

/// Limits that close a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchLimits {
    /// Most paths in one batch (`file_batch_size`).
    pub max_paths: usize,
    /// Most bytes of file data in one batch (`file_batch_gb`), if limited.
    pub max_data_bytes: Option<u64>,
    /// Most bytes of encoded message in one batch, if limited.
    pub max_message_bytes: Option<usize>,
    /// Grow `max_paths` with the total discovered (`enable_auto_file_batch_sizing`).
    pub dynamic: bool,
}

/// One decimal gigabyte, the unit of `file_batch_gb`.
pub const GB: u64 = 1_000_000_000;

/// The dynamic ranges: once at least `.0` paths have been discovered, a
/// batch may hold up to `.1` paths (never fewer than `max_paths`). From a
/// thousand paths on a batch holds 250: each batch is a task at every step
/// of a workflow, each with its flushes and messages, and a `site_sync` of
/// 2,000 changes ran 20-25 % faster in 8 batches than in 20 of 100
/// (docs/batching.md).
pub const DYNAMIC_RANGES: [(u64, usize); 4] = [(0, 40), (1_000, 250), (100_000, 500), (1_000_000, 1_000)];

impl BatchLimits {
    /// Large batches for streaming results: 10,000 paths or a 1 MiB message.
    pub const STREAMING: BatchLimits = BatchLimits {
        max_paths: 10_000,
        max_data_bytes: None,
        max_message_bytes: Some(1 << 20),
        dynamic: false,
    };

    /// Builds limits from the seed's settings (`file_batch_gb` may be
    /// fractional; `0` means no data limit).
    pub fn from_seed(file_batch_size: usize, file_batch_gb: f64, dynamic: bool) -> BatchLimits {
        let bytes = (file_batch_gb * GB as f64).round();
        BatchLimits {
            max_paths: file_batch_size.max(1),
            max_data_bytes: (bytes >= 1.0).then_some(bytes as u64),
            max_message_bytes: None,
            dynamic,
        }
    }

    /// Limits from the seed's site settings.
    pub fn from_settings(s: &BatchSettings) -> BatchLimits {
        BatchLimits::from_seed(s.file_batch_size, s.file_batch_gb, s.auto_sizing)
    }

    /// The path limit in force after `discovered` paths.
    pub fn paths_limit(&self, discovered: u64) -> usize {
        if !self.dynamic {
            return self.max_paths;
        }
        let ranged = DYNAMIC_RANGES
            .iter()
            .rev()
            .find(|(from, _)| discovered >= *from)
            .map_or(0, |r| r.1);
        self.max_paths.max(ranged)
    }
}

/// Accumulates items and hands out full batches.
#[derive(Debug)]
pub struct Batcher<T> {
    limits: BatchLimits,
    items: Vec<T>,
    data: u64,
    message: usize,
    discovered: u64,
    expected: u64,
}

impl<T> Batcher<T> {
    /// An empty batcher with these limits.
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            limits,
            items: Vec::new(),
            data: 0,
            message: 0,
            discovered: 0,
            expected: 0,
        }
    }

    /// Tells the batcher the run hands out at least `total` paths, so that
    /// dynamic sizing follows the total from the first batch on. The
    /// seed's sizing is by "the total number of files being processed": a
    /// walk learns it only as it goes (and sizes by the count so far), but
    /// a snapdiff knows its number of changes before it hands out the
    /// first, and 2,000 changes then go in 8 batches of 250 rather than
    /// 25 of 40 and 4 of 250 (every batch is a task at each step of a
    /// workflow, each with its own flush at the endpoint and destination).
    pub fn expect(&mut self, total: u64) {
        self.expected = self.expected.max(total);
    }

    /// Adds one item carrying `data_bytes` of file data and `message_bytes`
    /// of encoded size. Calls `emit` with every batch this closes: the
    /// current one if the item does not fit, and the new one as soon as it
    /// is full, so a full batch never waits for the next item.
    pub fn push(&mut self, item: T, data_bytes: u64, message_bytes: usize, mut emit: impl FnMut(Vec<T>)) {
        let max_paths = self.limits.paths_limit(self.discovered.max(self.expected));
        self.discovered += 1;
        let over_data = self
            .limits
            .max_data_bytes
            .is_some_and(|m| self.data.checked_add(data_bytes).is_none_or(|t| t > m));
        let over_msg = self
            .limits
            .max_message_bytes
            .is_some_and(|m| self.message.checked_add(message_bytes).is_none_or(|t| t > m));
        if !self.items.is_empty() && (self.items.len() >= max_paths || over_data || over_msg) {
            emit(self.take());
        }
        self.items.push(item);
        // Sizes can reach i64::MAX (sparse files): saturate, never wrap.
        self.data = self.data.saturating_add(data_bytes);
        self.message = self.message.saturating_add(message_bytes);
        let full_data = self.limits.max_data_bytes.is_some_and(|m| self.data >= m);
        let full_msg = self.limits.max_message_bytes.is_some_and(|m| self.message >= m);
        if self.items.len() >= max_paths || full_data || full_msg {
            emit(self.take());
        }
    }

    /// Returns the last, partial batch, if any.
    pub fn finish(mut self) -> Option<Vec<T>> {
        self.flush()
    }

    /// Closes the batch being filled early, if it holds anything.
    pub fn flush(&mut self) -> Option<Vec<T>> {
        (!self.items.is_empty()).then(|| self.take())
    }

    /// Paths pushed so far.
    pub fn discovered(&self) -> u64 {
        self.discovered
    }

    fn take(&mut self) -> Vec<T> {
        self.data = 0;
        self.message = 0;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limits: BatchLimits, sizes: &[u64]) -> Vec<usize> {
        let mut b = Batcher::new(limits);
        let mut out = Vec::new();
        for (i, &s) in sizes.iter().enumerate() {
            b.push(i, s, 0, |batch| out.push(batch.len()));
        }
        out.extend(b.finish().map(|v| v.len()));
        out
    }

    #[test]
    fn the_seeds_defaults() {
        let seed = BatchLimits::from_settings(&BatchSettings::default());
        assert_eq!(
            (seed.max_paths, seed.max_data_bytes, seed.dynamic),
            (40, Some(GB), true)
        );
        // Dynamic sizing grows the path limit with what was found so far.
        assert_eq!((seed.paths_limit(999), seed.paths_limit(1_000)), (40, 250));
    }

    #[test]
    fn seed_worked_example() {
        // 100 files of 500 MB, file_batch_gb 1, file_batch_size 10 -> 50 batches of 2.
        let sizes = vec![500_000_000; 100];
        let got = run(BatchLimits::from_seed(10, 1.0, false), &sizes);
        assert_eq!(got, vec![2; 50]);
    }

    #[test]
    fn count_limit_and_oversized_files() {
        let seed = BatchLimits::from_settings(&BatchSettings::default());
        assert_eq!(run(seed, &[1; 100]), vec![40, 40, 20]);
        // A 3 GB file travels alone; small files around it batch normally.
        let got = run(BatchLimits::from_seed(40, 1.0, false), &[10, 3 * GB, 10, 10]);
        assert_eq!(got, vec![1, 1, 2]);
    }

    #[test]
    fn message_limit() {
        let mut b = Batcher::new(BatchLimits::STREAMING);
        let mut out = Vec::new();
        for i in 0..5 {
            b.push(i, 0, 400_000, |v| out.push(v));
        }
        out.extend(b.finish());
        assert_eq!(out, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn dynamic_ranges_grow_with_total() {
        let l = BatchLimits::from_seed(40, 0.0, true);
        assert_eq!(l.max_data_bytes, None);
        assert_eq!(l.paths_limit(0), 40);
        assert_eq!(l.paths_limit(999), 40);
        assert_eq!(l.paths_limit(1_000), 250);
        assert_eq!(l.paths_limit(50_000), 250);
        assert_eq!(l.paths_limit(100_000), 500);
        assert_eq!(l.paths_limit(5_000_000), 1_000);
        let big = BatchLimits::from_seed(5_000, 0.0, true);
        assert_eq!(big.paths_limit(2_000_000), 5_000);
        let got = run(l, &vec![0; 1_200]);
        assert_eq!(got[..25], [40; 25]);
        assert_eq!(got[25..], [200]);
    }

    #[test]
    fn a_known_total_sizes_every_batch() {
        let mut b = Batcher::new(BatchLimits::from_seed(40, 0.0, true));
        b.expect(2_000);
        let mut got = Vec::new();
        for i in 0..2_000 {
            b.push(i, 0, 0, |batch| got.push(batch.len()));
        }
        got.extend(b.finish().map(|v| v.len()));
        assert_eq!(got, vec![250; 8]);
        // Without dynamic sizing the configured size stays exact.
        let mut fixed = Batcher::new(BatchLimits::from_seed(40, 0.0, false));
        fixed.expect(2_000);
        let mut sizes = Vec::new();
        for i in 0..100 {
            fixed.push(i, 0, 0, |batch| sizes.push(batch.len()));
        }
        assert_eq!(sizes, vec![40, 40]);
    }
}
