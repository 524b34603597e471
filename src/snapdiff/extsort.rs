//! Sorting more items than the memory budget allows: items are packed into
//! one byte arena with a small index, sorted runs spill to temporary files
//! when the budget is reached, and the runs are merged on the way out.

use super::codec;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// An item the sorter can pack into bytes and order.
pub trait SortItem: Ord + Sized {
    /// A cheap prefix of the order: items with different keys compare as
    /// their keys do; equal keys fall back to the full order.
    type Key: Ord + Copy;
    /// The key of this item.
    fn key(&self) -> Self::Key;
    /// Appends the item's bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads an item written by `encode` (the slice holds exactly one).
    fn decode(buf: &[u8]) -> io::Result<Self>;
}

/// Most runs merged at once; more are merged in rounds.
const FAN_IN: usize = 64;
/// Read buffer per run while merging.
const RUN_BUFFER: usize = 64 * 1024;
/// The most a merge of spilled runs holds in buffers.
pub const MERGE_MEMORY: usize = FAN_IN * RUN_BUFFER;

/// The smallest budget a sorter works with; smaller ones are raised to it.
///
/// An item must fit in an empty buffer, whose arena is three quarters of
/// the budget: 16 KiB leaves 12 KiB, room for the largest ordinary item, a
/// change moving an entry between two `PATH_MAX` (4 KiB) paths with its
/// record (under 400 bytes, a `NAME_MAX` name included), so a small budget
/// does not refuse one. (Relative paths longer than `PATH_MAX`, possible in
/// very deep trees, need a bigger budget.) The index quarter then holds 170
/// items per run. `ferry snapdiff` never comes near it (`--mem-limit` is at
/// least 36M); library callers and tests may go this low to make sorts
/// spill on small inputs.
pub const MIN_BUDGET: usize = 16 * 1024;

/// Collects items and yields them in order, within a memory budget.
pub struct ExternalSorter<T: SortItem> {
    budget: usize,
    dir: PathBuf,
    arena: Vec<u8>,
    index: Vec<(T::Key, u32, u32)>,
    runs: Vec<File>,
    scratch: Vec<u8>,
    len: u64,
    _item: PhantomData<T>,
}

impl<T: SortItem> ExternalSorter<T> {
    /// A sorter holding at most about `budget` bytes (at least
    /// [`MIN_BUDGET`]) in memory, spilling sorted runs as unnamed temporary
    /// files in `spill_dir`.
    pub fn new(budget: usize, spill_dir: &Path) -> Self {
        ExternalSorter {
            budget: budget.max(MIN_BUDGET),
            dir: spill_dir.to_path_buf(),
            arena: Vec::new(),
            index: Vec::new(),
            runs: Vec::new(),
            scratch: Vec::new(),
            len: 0,
            _item: PhantomData,
        }
    }

    fn entry_size() -> usize {
        std::mem::size_of::<(T::Key, u32, u32)>()
    }

    /// Reserves the whole budget up front (address space only: pages are
    /// touched as they fill), so the buffers never reallocate and memory
    /// never exceeds the budget.
    fn reserve(&mut self) {
        let index_bytes = self.budget / 4;
        self.index.reserve_exact((index_bytes / Self::entry_size()).max(16));
        self.arena
            .reserve_exact((self.budget - index_bytes).min(u32::MAX as usize));
    }

    /// Adds one item, spilling a run first if it does not fit.
    pub fn push(&mut self, item: &T) -> io::Result<()> {
        self.scratch.clear();
        item.encode(&mut self.scratch);
        let n = self.scratch.len();
        if self.arena.capacity() == 0 {
            self.reserve();
        }
        if self.arena.len() + n > self.arena.capacity() || self.index.len() == self.index.capacity() {
            self.spill()?;
            self.reserve();
            if n > self.arena.capacity() {
                return Err(io::Error::other("item larger than the sort budget"));
            }
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(&self.scratch);
        self.index.push((item.key(), start as u32, n as u32));
        self.len += 1;
        Ok(())
    }

    /// Items pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs written to disk so far: how many times the items outgrew the
    /// budget (0 while they fit in memory).
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    fn sort_index(&mut self) -> io::Result<()> {
        let arena = &self.arena;
        let mut err = None;
        self.index.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                let get = |e: &(T::Key, u32, u32)| T::decode(&arena[e.1 as usize..(e.1 + e.2) as usize]);
                match (get(a), get(b)) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    (Err(e), _) | (_, Err(e)) => {
                        err.get_or_insert(e);
                        std::cmp::Ordering::Equal
                    }
                }
            })
        });
        err.map_or(Ok(()), Err)
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.index.is_empty() {
            return Ok(());
        }
        self.sort_index()?;
        let mut w = BufWriter::with_capacity(RUN_BUFFER, tempfile::tempfile_in(&self.dir)?);
        for &(_, off, len) in &self.index {
            write_framed(&mut w, &self.arena[off as usize..(off + len) as usize])?;
        }
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        f.rewind()?;
        self.runs.push(f);
        // Give the memory back: the next run starts small again.
        self.arena = Vec::new();
        self.index = Vec::new();
        Ok(())
    }

    /// Sorts what is left and returns every item in order.
    pub fn finish(mut self) -> io::Result<Sorted<T>> {
        if self.runs.is_empty() {
            self.sort_index()?;
            return Ok(Sorted::Memory {
                arena: self.arena,
                index: self.index.into_iter(),
            });
        }
        self.spill()?;
        let mut runs = std::mem::take(&mut self.runs);
        while runs.len() > FAN_IN {
            let rest = runs.split_off(FAN_IN);
            let mut merged = BufWriter::with_capacity(RUN_BUFFER, tempfile::tempfile_in(&self.dir)?);
            let mut m = Merge::<T>::new(runs)?;
            while let Some(item) = m.next_framed()? {
                write_framed(&mut merged, &item)?;
            }
            let mut f = merged.into_inner().map_err(|e| e.into_error())?;
            f.rewind()?;
            runs = rest;
            runs.push(f);
        }
        Ok(Sorted::Merge(Merge::new(runs)?))
    }
}

fn write_framed(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut len = Vec::with_capacity(5);
    codec::put_u64(&mut len, bytes.len() as u64);
    w.write_all(&len)?;
    w.write_all(bytes)
}

/// Reads one length-prefixed item; `None` at a clean end of the run.
fn read_framed(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = 0u64;
    for i in 0..10 {
        let mut b = [0u8];
        if r.read(&mut b)? == 0 {
            if i == 0 {
                return Ok(false);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spill run truncated"));
        }
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            buf.clear();
            buf.resize(len as usize, 0);
            r.read_exact(buf)?;
            return Ok(true);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "bad length in spill run"))
}

/// Items in order, from memory or from merged runs.
pub enum Sorted<T: SortItem> {
    /// Everything fit in the budget.
    Memory {
        /// The packed items.
        arena: Vec<u8>,
        /// Their order.
        index: std::vec::IntoIter<(T::Key, u32, u32)>,
    },
    /// Runs on disk, merged.
    Merge(Merge<T>),
}

impl<T: SortItem> Iterator for Sorted<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<io::Result<T>> {
        match self {
            Sorted::Memory { arena, index } => {
                let (_, off, len) = index.next()?;
                Some(T::decode(&arena[off as usize..(off + len) as usize]))
            }
            Sorted::Merge(m) => m.next_item().transpose(),
        }
    }
}

struct Head<T> {
    item: T,
    bytes: Vec<u8>,
    run: usize,
}

impl<T: Ord> PartialEq for Head<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl<T: Ord> Eq for Head<T> {}
impl<T: Ord> PartialOrd for Head<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for Head<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.item.cmp(&other.item).then(self.run.cmp(&other.run))
    }
}

/// A k-way merge of sorted runs.
pub struct Merge<T: SortItem> {
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<Head<T>>>,
}

impl<T: SortItem> Merge<T> {
    fn new(runs: Vec<File>) -> io::Result<Self> {
        let mut m = Merge {
            readers: runs
                .into_iter()
                .map(|f| BufReader::with_capacity(RUN_BUFFER, f))
                .collect(),
            heap: BinaryHeap::new(),
        };
        for run in 0..m.readers.len() {
            m.refill(run, Vec::new())?;
        }
        Ok(m)
    }

    fn refill(&mut self, run: usize, mut bytes: Vec<u8>) -> io::Result<()> {
        if read_framed(&mut self.readers[run], &mut bytes)? {
            let item = T::decode(&bytes)?;
            self.heap.push(Reverse(Head { item, bytes, run }));
        }
        Ok(())
    }

    /// The smallest item; its run's next item takes its place, read into
    /// the same buffer.
    fn next_item(&mut self) -> io::Result<Option<T>> {
        let Some(Reverse(head)) = self.heap.pop() else {
            return Ok(None);
        };
        self.refill(head.run, head.bytes)?;
        Ok(Some(head.item))
    }

    fn next_framed(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(Reverse(head)) = self.heap.pop() else {
            return Ok(None);
        };
        let out = head.bytes.clone();
        self.refill(head.run, head.bytes)?;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
    struct Item(u64, Vec<u8>);

    impl SortItem for Item {
        type Key = u64;
        fn key(&self) -> u64 {
            self.0 / 4
        }
        fn encode(&self, out: &mut Vec<u8>) {
            codec::put_u64(out, self.0);
            out.extend_from_slice(&self.1);
        }
        fn decode(mut buf: &[u8]) -> io::Result<Self> {
            let v = codec::get_u64(&mut buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Ok(Item(v, buf.to_vec()))
        }
    }

    fn items(n: u64) -> Vec<Item> {
        // A scrambled order with repeated keys and ties broken by the name.
        (0..n)
            .map(|i| Item((i * 7919) % n, vec![b'x'; (i % 13) as usize]))
            .collect()
    }

    #[test]
    fn sorts_in_memory_and_across_many_runs() {
        let dir = tempfile::tempdir().unwrap();
        for (n, budget, spills) in [(1000, 1 << 20, false), (200_000, 64 * 1024, true)] {
            let mut s = ExternalSorter::new(budget, dir.path());
            let input = items(n);
            for it in &input {
                s.push(it).unwrap();
            }
            assert_eq!(s.spilled_runs() > 0, spills);
            if spills {
                assert!(s.spilled_runs() > FAN_IN, "exercise merge rounds: {}", s.spilled_runs());
            }
            let out: Vec<Item> = s.finish().unwrap().map(Result::unwrap).collect();
            let mut want = input.clone();
            want.sort();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn a_tiny_budget_is_raised_to_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        // The largest ordinary item (two PATH_MAX paths and a record) fits.
        let mut s = ExternalSorter::new(0, dir.path());
        s.push(&Item(1, vec![b'x'; 2 * 4096 + 400])).unwrap();
        // One that cannot fit in the floor's arena is refused, not truncated.
        let err = s.push(&Item(2, vec![b'x'; MIN_BUDGET])).unwrap_err();
        assert_eq!(err.to_string(), "item larger than the sort budget");
        // Small items spill, and come back in order.
        let mut s = ExternalSorter::new(1, dir.path());
        let input = items(2000);
        for it in &input {
            s.push(it).unwrap();
        }
        assert!(s.spilled_runs() > 1, "{} runs", s.spilled_runs());
        let out: Vec<Item> = s.finish().unwrap().map(Result::unwrap).collect();
        let mut want = input;
        want.sort();
        assert_eq!(out, want);
    }
}
