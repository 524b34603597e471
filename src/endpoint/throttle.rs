//! A cap on an agent's transfer rate (`bandwidth`, Mb/s as the seed's site
//! setting): every byte sent to or read from an endpoint is paid for
//! before it moves, from one budget shared by all of the process's
//! transfers, so many files in flight share the cap instead of each
//! getting it.
//!
//! The budget is a virtual clock: `next` is when the bytes paid so far
//! will have gone at the capped rate. Paying `n` bytes moves it on by
//! `n / rate` and waits until then. An idle spell banks at most [`BURST`]
//! of unused time, so the rate over any stretch of a few seconds stays at
//! the cap.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most unused time an idle spell banks: the burst a transfer may
/// make after one.
pub const BURST: Duration = Duration::from_millis(250);

/// A shared transfer budget.
#[derive(Debug)]
pub struct Throttle {
    /// Bytes per second.
    rate: f64,
    next: Mutex<Option<Instant>>,
}

impl Throttle {
    /// A budget of `megabits` per second (decimal, as network links are
    /// rated); `None` for 0, which means no cap.
    pub fn megabits(megabits: u64) -> Option<Throttle> {
        (megabits > 0).then(|| Throttle {
            rate: megabits as f64 * 1e6 / 8.0,
            next: Mutex::new(None),
        })
    }

    /// Pays for `n` bytes, waiting as long as the cap asks.
    pub fn pay(&self, n: u64) {
        let wait = self.pay_at(Instant::now(), n);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Pays for `n` bytes at `now`; how long the payer must wait.
    fn pay_at(&self, now: Instant, n: u64) -> Duration {
        let mut next = self.next.lock().expect("throttle");
        // Time not used while idle is banked up to the burst, no more.
        let floor = now.checked_sub(BURST).unwrap_or(now);
        let from = next.map_or(floor, |t| t.max(floor));
        let due = from + Duration::from_secs_f64(n as f64 / self.rate);
        *next = Some(due);
        due.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payers_wait_so_the_rate_stays_at_the_cap() {
        // 8 Mb/s is 1 MB/s.
        let t = Throttle::megabits(8).unwrap();
        let t0 = Instant::now();
        // The burst goes at once; the rest waits for its turn.
        assert_eq!(t.pay_at(t0, 250_000), Duration::ZERO);
        let w = t.pay_at(t0, 1_000_000);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-3, "{w:?}");
        // Two payers in flight share the budget: the second waits for both.
        let w = t.pay_at(t0, 500_000);
        assert!((w.as_secs_f64() - 1.5).abs() < 1e-3, "{w:?}");
        // After a long idle spell only the burst is banked.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(t.pay_at(later, 250_000), Duration::ZERO);
        let w = t.pay_at(later, 1_000_000);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-3, "{w:?}");
    }

    #[test]
    fn zero_is_no_cap() {
        assert!(Throttle::megabits(0).is_none());
    }
}
