//! Waiting for a job to end: poll its progress (a cheap call), read the
//! whole job when the progress says it is done, when work has begun on a
//! job still PENDING, and every fifth poll (for its state), until it has
//! ended or the time allowed has passed.
//!
//! A hub that does not answer for a while (a restart) does not end the
//! wait: transient failures are retried until [`WaitOptions::lost_after`]
//! without one good answer.

use super::error::ClientError;
use super::http::HubClient;
use super::views::{Job, ProgressView};
use std::time::{Duration, Instant};

/// How to wait.
#[derive(Clone, Debug)]
pub struct WaitOptions {
    /// Give up after this long (`None`: wait as long as the job runs).
    pub timeout: Option<Duration>,
    /// The first pause between polls; it grows by half each poll...
    pub first_poll: Duration,
    /// ...up to this.
    pub max_poll: Duration,
    /// Fail when the hub has not answered for this long.
    pub lost_after: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: None,
            first_poll: Duration::from_millis(200),
            max_poll: Duration::from_secs(2),
            lost_after: Duration::from_secs(60),
        }
    }
}

/// What a wait saw on one poll, for a progress display.
#[derive(Clone, Debug)]
pub struct Seen<'a> {
    /// The job's state, as last read.
    pub state: &'a str,
    /// Its progress.
    pub progress: &'a ProgressView,
}

/// How a wait ended.
#[derive(Debug)]
pub enum WaitEnd {
    /// The job ended (in any final state): the job.
    Ended(Job),
    /// The time allowed passed first: the job as last read. It goes on
    /// running on the hub.
    TimedOut(Job),
}

/// Waits for `job` (as submitted) to end; `seen` is called after every
/// poll. Errors the hub gives for good (the job deleted, the key revoked)
/// end the wait at once.
pub async fn wait_for_job(
    client: &HubClient,
    job: Job,
    opts: &WaitOptions,
    mut seen: impl FnMut(Seen<'_>),
) -> Result<WaitEnd, ClientError> {
    let start = Instant::now();
    let id = job.view.id;
    let mut job = job;
    let mut progress = job.view.progress.clone().unwrap_or_default();
    let mut pause = opts.first_poll;
    let mut last_answer = Instant::now();
    let mut polls: u64 = 0;
    // Hubs without /progress/ (an older or another hub): read the job each time.
    let mut progress_served = true;
    loop {
        seen(Seen {
            state: &job.view.state,
            progress: &progress,
        });
        if job.view.is_final() {
            return Ok(WaitEnd::Ended(job));
        }
        let left = opts.timeout.map(|t| t.saturating_sub(start.elapsed()));
        if left == Some(Duration::ZERO) {
            // The freshest state to report, if the hub answers now.
            if let Ok(j) = client.job(id).await {
                job = j;
            }
            return Ok(WaitEnd::TimedOut(job));
        }
        tokio::time::sleep(left.map_or(pause, |l| l.min(pause))).await;
        pause = (pause * 3 / 2).min(opts.max_poll);
        polls += 1;
        let read_job = if progress_served {
            match client.progress(id).await {
                Ok(p) => {
                    let done = p.percent >= 100.0;
                    // Work has begun: read the job for its new state.
                    let begun = job.view.state == "PENDING" && (p.files_found > 0 || p.files_done > 0);
                    progress = p;
                    last_answer = Instant::now();
                    done || begun || polls.is_multiple_of(5)
                }
                Err(e) if e.status() == Some(404) => {
                    progress_served = false;
                    true
                }
                Err(e) => {
                    lost_or_retry(e, last_answer, opts)?;
                    false
                }
            }
        } else {
            true
        };
        if read_job {
            match client.job(id).await {
                Ok(j) => {
                    if let Some(p) = &j.view.progress
                        && !progress_served
                    {
                        progress = p.clone();
                    }
                    job = j;
                    last_answer = Instant::now();
                }
                Err(e) => lost_or_retry(e, last_answer, opts)?,
            }
        }
    }
}

/// Ok to poll again after a transient failure, unless the hub has been
/// silent for too long; the error otherwise.
fn lost_or_retry(e: ClientError, last_answer: Instant, opts: &WaitOptions) -> Result<(), ClientError> {
    if e.is_transient() && last_answer.elapsed() < opts.lost_after {
        tracing::debug!(error = %e, "the hub did not answer; asking again");
        return Ok(());
    }
    Err(e)
}
