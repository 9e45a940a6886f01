//! Telling the service manager what the host is doing (systemd's notify protocol, for
//! `Type=notify` units, through the `sd-notify` crate): `READY=1` once the host can do its job
//! — its plugins loaded and, in a cluster, the member joined; a single host once it consumes —
//! `STOPPING=1` when it starts draining, `STATUS=` lines on the way, and `WATCHDOG=1` at half
//! the unit's `WatchdogSec` while the runtime keeps running tasks. Without `NOTIFY_SOCKET`
//! (not under systemd) every call does nothing.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("telling the service manager {states:?}: {e}");
    }
}

/// The host is ready: `what` says why (shown by `systemctl status`).
pub fn ready(what: &str) {
    tracing::info!("ready: {what}");
    send(&[NotifyState::Ready, NotifyState::Status(what)]);
}

/// What the host is doing now, without a change of state.
pub fn status(what: &str) {
    send(&[NotifyState::Status(what)]);
}

/// The host is draining and will exit.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining in-flight activations"),
    ]);
}

/// Pets the watchdog at half its interval when the unit has one (`WATCHDOG_USEC`), from a
/// task on the host's runtime: a runtime that stops running tasks stops petting it, and
/// systemd restarts the host.
pub fn watch() -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let every = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(?interval, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}
