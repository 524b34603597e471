//! The memory budget of a run (`--mem-limit`): what the program, its
//! threads and its directory tables hold, and what is left for sorting.
//! Every figure here was measured on the 1 M-file benchmark tree with
//! `/usr/bin/time -v` (docs/benchmarks.md, "The memory budget kept"), so
//! that a run's peak resident set stays within the budget it was given.

use super::extsort::MERGE_MEMORY;

/// Memory a run holds besides its sorts, its threads and its directory
/// tables: the program (7 MB resident), the manifests' block indexes and
/// read buffers, the walk's queues. Measured with `/usr/bin/time -v` on
/// the 1 M-file benchmark tree: the live-tree walk (`none`, the most
/// hungry) peaks at 21 to 23 MB besides its sort with `-j 2`, threads
/// included (docs/benchmarks.md, "The memory budget kept").
pub const PROGRAM_MEMORY: usize = 18 << 20;

/// Memory a run holds per thread: its stack, its directory buffers and
/// the allocator arena it fills. Measured on the live-tree walk: 1.4 to
/// 2 MB more peak RSS per thread from `-j 2` to `-j 8` and `-j 32`, and
/// more with a small sort (glibc's arenas hold what the walk freed).
pub const THREAD_MEMORY: usize = 3 << 20;

/// The least memory a run sorts in: below it, runs of a few thousand
/// records would make merges of thousands of files.
pub const MIN_SORT: usize = 8 << 20;

/// The smallest memory budget a run accepts: two threads, no directory
/// tables and the least sort.
pub const MIN_MEMORY: usize = PROGRAM_MEMORY + 2 * THREAD_MEMORY + MERGE_MEMORY + MIN_SORT;

/// Memory a run holds per directory of its baseline: a directory table
/// entry (three hash map slots and the name, about 100 bytes) held twice,
/// the baseline's and the new snapshot's.
pub const DIR_MEMORY: usize = 200;

/// How a run spends its memory budget.
///
/// The new snapshot's records are sorted first and then merged into the
/// diff while it orders the changes: the sort may use the budget less the
/// program's, the threads' and the directory tables' memory and the
/// merge's buffers, and the diff as much again once the sort is merged.
/// A read of changes holds the changed inodes in memory
/// instead, [`CHANGE_MEMORY`] each, within the same share. One share: the
/// stages that use it come one after the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// For sorting the new manifest or holding a read of changes, then
    /// for ordering the changes.
    pub work: usize,
}

impl Memory {
    /// The shares of `total` for a run on `threads` threads with a
    /// baseline of `dirs` directories; an error if the budget cannot hold
    /// them and the least sort.
    pub fn fit(total: usize, threads: usize, dirs: u64) -> Result<Memory, BudgetError> {
        let tables = usize::try_from(dirs).unwrap_or(usize::MAX).saturating_mul(DIR_MEMORY);
        let reserve = PROGRAM_MEMORY.saturating_add(threads.max(1).saturating_mul(THREAD_MEMORY));
        let needed = reserve
            .saturating_add(tables)
            .saturating_add(MERGE_MEMORY)
            .saturating_add(MIN_SORT);
        if total < needed {
            return Err(BudgetError {
                total,
                needed,
                reserve,
                tables,
                threads,
                dirs,
            });
        }
        Ok(Memory {
            work: total - reserve - tables - MERGE_MEMORY,
        })
    }
}

/// Memory a read of changes holds per changed inode: its attributes,
/// links and handles while found, then its old and new records. The
/// journal's read holds the most: 57 MB over the program's for 39,000
/// changed inodes (peak RSS 72.4 MB for the benchmark's uniform 1 %, 15 MB
/// for its 0.01 %). The memory budget caps how many it reads, and how
/// many journaled events the journal's read takes in, before it reads the
/// whole snapshot instead, which spills.
pub const CHANGE_MEMORY: usize = 1536;

/// A memory budget too small for the run, with what would do.
#[derive(Debug, thiserror::Error)]
#[error(
    "a memory budget of {} MiB cannot hold this run: the program and its {threads} threads take {} MiB, \
     the directory tables of the last run's {dirs} directories {} MiB and the least sort and merge {} MiB; \
     give --mem-limit {}M or more (or fewer threads)",
    total >> 20, reserve >> 20, tables.div_ceil(1 << 20), (MIN_SORT + MERGE_MEMORY) >> 20, needed.div_ceil(1 << 20)
)]
pub struct BudgetError {
    /// The budget given.
    pub total: usize,
    /// The least budget that holds the run.
    pub needed: usize,
    /// What the program and its threads take.
    pub reserve: usize,
    /// What the directory tables take.
    pub tables: usize,
    /// The run's threads.
    pub threads: usize,
    /// Directories in the last run's manifest.
    pub dirs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sort_gets_what_the_program_threads_tables_and_merge_leave() {
        let m = Memory::fit(64 << 20, 2, 10_000).unwrap();
        let expect = (64 << 20) - PROGRAM_MEMORY - 2 * THREAD_MEMORY - 10_000 * DIR_MEMORY - MERGE_MEMORY;
        assert_eq!(m, Memory { work: expect });
        assert!(Memory::fit(MIN_MEMORY, 2, 0).unwrap().work == MIN_SORT);
    }

    #[test]
    fn a_budget_below_the_threads_and_tables_is_refused_with_what_would_do() {
        let e = Memory::fit(64 << 20, 32, 0).unwrap_err();
        assert_eq!(e.needed, PROGRAM_MEMORY + 32 * THREAD_MEMORY + MERGE_MEMORY + MIN_SORT);
        assert!(e.to_string().contains("give --mem-limit 126M or more"), "{e}");
        let e = Memory::fit(64 << 20, 2, 1_000_000).unwrap_err();
        assert_eq!(e.tables, 1_000_000 * DIR_MEMORY);
        assert!(Memory::fit(e.needed, 2, 1_000_000).is_ok());
        assert!(Memory::fit(e.needed - 1, 2, 1_000_000).is_err());
    }
}
