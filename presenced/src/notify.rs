//! Telling the service manager how we are (sd_notify). Each function is a no-op outside
//! systemd (no `$NOTIFY_SOCKET`); failures to notify are logged, never fatal.
//!
//! Messages go out from a thread of their own, never from the caller: sending on the notify
//! socket blocks once the receiver's queue is full (ten datagrams by default), and the core
//! must not stop because a service manager reads slowly. A full hand-over queue drops the
//! message, as a lost datagram would be. The watchdog ping is still *enqueued* by the core
//! loop, so a wedged core stops the pings.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use sd_notify::NotifyState;

enum Message {
    /// Lines like `READY=1`, `STATUS=...`, sent as one datagram.
    Send(Vec<String>),
    /// Answered once everything before it was sent.
    Flush(SyncSender<()>),
}

fn sender() -> &'static SyncSender<Message> {
    static SENDER: OnceLock<SyncSender<Message>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = sync_channel(64);
        let spawned = std::thread::Builder::new().name("sd-notify".into()).spawn(move || run(rx));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the sd_notify thread: {e}");
        }
        tx
    })
}

fn run(rx: Receiver<Message>) {
    for message in rx {
        match message {
            Message::Send(lines) => {
                let states: Vec<NotifyState<'_>> =
                    lines.iter().map(|l| NotifyState::Custom(l)).collect();
                if let Err(e) = sd_notify::notify(false, &states) {
                    tracing::debug!("sd_notify failed: {e}");
                }
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let lines = states.iter().map(ToString::to_string).collect();
    match sender().try_send(Message::Send(lines)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => tracing::debug!("sd_notify queue full, message dropped"),
        Err(TrySendError::Disconnected(_)) => tracing::debug!("sd_notify thread gone"),
    }
}

/// Waits (a little) until everything enqueued so far was sent: before the process exits,
/// so that STOPPING=1 is not lost.
pub fn flush(limit: Duration) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let (done, wait) = sync_channel(1);
    if sender().try_send(Message::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(limit);
    }
}

/// Ready with a first status line, in one message so systemd never shows a stale status.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// RELOADING=1 with the monotonic timestamp systemd wants alongside it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// READY=1 again after a reload; the status line is left to the core.
pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, if systemd asked for pings.
/// Like libsystemd's `sd_watchdog_enabled`, `WATCHDOG_PID` is checked only when set (the
/// sd-notify crate insists on it, which a plain `WATCHDOG_USEC=` test setup lacks).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
