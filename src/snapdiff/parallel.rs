//! One piece of work per scoped thread: what the reads of changes (btrfs
//! tree search, GPFS inode scan, the journal's stats) and the baseline's
//! record lookups do with their shares of the inode space.

/// Runs `f` on each item, each on a thread of its own, and returns the
/// results in the items' order. A thread's panic is raised again here,
/// with its own message.
pub fn each_on_a_thread<I, T, F>(items: I, f: F) -> Vec<T>
where
    I: IntoIterator,
    I::Item: Send,
    T: Send,
    F: Fn(I::Item) -> T + Sync,
{
    std::thread::scope(|sc| {
        let f = &f;
        let handles: Vec<_> = items.into_iter().map(|item| sc.spawn(move || f(item))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order_from_distinct_threads() {
        let main = std::thread::current().id();
        let out = each_on_a_thread(0..4u32, |i| (i * 10, std::thread::current().id()));
        assert_eq!(out.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 10, 20, 30]);
        assert!(out.iter().all(|r| r.1 != main));
    }
}
