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

/// Drops `value` on a thread of its own, so that the caller does not
/// wait for many allocations to be freed (a read of changes holds tens of
/// thousands of names and records).
pub fn drop_in_background<T: Send + 'static>(value: T) {
    // Where no thread can be had, the closure, and `value` with it, is
    // dropped here.
    let _ = std::thread::Builder::new()
        .name("ferry-drop".into())
        .spawn(move || drop(value));
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

    #[test]
    fn a_value_dropped_in_the_background_is_dropped_on_another_thread() {
        struct Tell(std::sync::mpsc::Sender<std::thread::ThreadId>);
        impl Drop for Tell {
            fn drop(&mut self) {
                let _ = self.0.send(std::thread::current().id());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        drop_in_background(Tell(tx));
        let on = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_ne!(on, std::thread::current().id());
    }
}
