//! The event journals the agent keeps while it runs (`journal` setting):
//! one writer thread per fileset ([`crate::snapdiff::journal::writer`]),
//! started again after a failure (each start is a gap the next snapdiff
//! of that fileset walks over, and says so) and stopped at shutdown.

use crate::snapdiff::journal::writer;
use crate::snapdiff::provider::none::NoSnapshots;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Wait before a failed writer is started again.
const RESTART_AFTER: Duration = Duration::from_secs(30);

/// Starts a writer for each fileset in `filesets` (journals in
/// `state_dir`, default each filesystem's `.rotate`); they stop when
/// `shutdown` turns true.
pub fn start(filesets: &[PathBuf], state_dir: Option<&Path>, mut shutdown: watch::Receiver<bool>) {
    if filesets.is_empty() {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for path in filesets {
        let (path, state_dir, stop) = (path.clone(), state_dir.map(Path::to_path_buf), stop.clone());
        std::thread::Builder::new()
            .name("ferry-journal".into())
            .spawn(move || keep(&path, state_dir.as_deref(), &stop))
            .expect("a journal thread");
    }
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        stop.store(true, Ordering::Relaxed);
    });
}

/// Runs the writer of `path` until `stop`, starting it again after a
/// failure.
fn keep(path: &Path, state_dir: Option<&Path>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let result = NoSnapshots::open(path, state_dir)
            .map_err(|e| e.to_string())
            .and_then(|tree| {
                let files = tree.journal_files().clone();
                let mut log = |m: &str| info!(fileset = %path.display(), "{m}");
                writer::run(path, &files, stop, &mut log).map_err(|e| e.to_string())
            });
        match result {
            Ok(stats) => {
                info!(fileset = %path.display(), events = stats.events, barriers = stats.barriers,
                    overflows = stats.overflows, "event journal stopped");
                return;
            }
            Err(e) => {
                warn!(fileset = %path.display(), error = %e, retry_in = ?RESTART_AFTER,
                    "the event journal failed; the next snapdiff of this fileset walks the whole tree");
                let mut waited = Duration::ZERO;
                while waited < RESTART_AFTER && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    waited += Duration::from_millis(200);
                }
            }
        }
    }
}
