//! Telling systemd how the agent is (`Type=notify`): ready once its
//! configuration is valid, a status line while it connects and serves,
//! stopping during the drain, and watchdog pings while its runtime is
//! alive. Outside systemd every call does nothing.

use std::time::Duration;

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(state);
}

/// The agent is ready: its configuration is valid and it is serving or
/// connecting.
pub fn ready() {
    notify(&[sd_notify::NotifyState::Ready]);
}

/// The status line `systemctl status` shows.
pub fn status(s: &str) {
    notify(&[sd_notify::NotifyState::Status(s)]);
}

/// The agent is draining and will exit.
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings the watchdog at half its interval for as long as the runtime
/// runs, if the unit has a watchdog (`WatchdogSec=`). A hung runtime stops
/// the pings and systemd restarts the agent.
pub async fn watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let tick = (interval / 2).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(tick).await;
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}
