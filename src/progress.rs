//! A live progress line on stderr for long scans: entries, entries per
//! second, bytes and errors. Shown only when stderr is a terminal.

use crate::task::SummaryCounters;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running progress display; stops when dropped.
pub struct Progress {
    bar: Option<ProgressBar>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts a display of `counters` if `enabled` (`None` means: when
    /// stderr is a terminal).
    pub fn start(counters: Arc<SummaryCounters>, enabled: Option<bool>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let enabled = enabled.unwrap_or_else(|| std::io::stderr().is_terminal());
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            bar.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("valid template"));
            // Drawn at once, so even a short scan shows that it ran.
            bar.set_message("starting");
            bar.tick();
            bar
        });
        let thread = bar.clone().map(|bar| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let s = counters.snapshot();
                    let rate = s.entries() as f64 / start.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!(
                        "{} entries ({:.0}/s), {} dirs, {}, {} errors",
                        s.entries(),
                        rate,
                        s.dirs,
                        HumanBytes(s.bytes),
                        s.failures
                    ));
                    bar.tick();
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        Progress { bar, stop, thread }
    }

    /// Runs `f` (which writes to stderr) with the progress line cleared, so
    /// that messages and the line do not garble each other.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
