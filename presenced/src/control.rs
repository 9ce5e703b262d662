//! The control socket: who may connect, the hello, and passing requests to the core.
//!
//! Every limit is explicit: [`MAX_CONNECTIONS`] at once, [`proto::HANDSHAKE_TIMEOUT`] for
//! the hello, [`IDLE_TIMEOUT`] for the next request to arrive whole (so a client trickling
//! one byte a second holds its slot for a minute at most), [`REQUEST_TIMEOUT`] for a reply
//! to be taken, [`proto::MAX_FRAME`] per frame (a longer length prefix is refused unread).
//! A bad client only ever loses its own connection.
//!
//! Slots go to those who use them. When all are taken, a newcomer gets the slot of a
//! connection waiting on its client (for a hello, a request, or to take a reply), which is
//! closed: one that has had an answer already before one that has not, the longest waiting
//! first. So however many idle or trickling connections there are, they cannot lock the
//! owner out, and the daemon holds [`MAX_CONNECTIONS`] of them at most; and a newcomer gets
//! its turn even while other clients flood the daemon with requests and reconnect when cut
//! (while some request is being handled, a newcomer waits up to [`ANSWER_PATIENCE`] for one
//! to be answered rather than cut a connection that has had nothing yet). A connection whose
//! request the core is handling is never cut, so a request is either answered or never
//! started; only when every slot stays busy like that for [`BUSY_PATIENCE`] is a newcomer
//! refused. Peer credentials come first: a client that may not use the daemon never holds
//! or takes a slot. Refusals are bounded too, [`MAX_REFUSALS`] being written at once; beyond
//! that a connection is closed without a word.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use presencectl::proto::{
    self, Conn, ErrorKind, ErrorReply, Hello, ProtoError, Request, Response, ServerHello,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::Event;

pub const MAX_CONNECTIONS: usize = 64;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a newcomer waits, while others are busy with requests, for one of them to be
/// answered and so become the one to cut, before it cuts a connection that has had no
/// answer yet (which may be the owner's, just arrived, under a flood of reconnecting clients).
pub const ANSWER_PATIENCE: Duration = Duration::from_millis(100);
/// How long a newcomer may wait for a slot while every one is busy with a request; less than
/// the client's own [`proto::HANDSHAKE_TIMEOUT`], so that it still reads the refusal.
pub const BUSY_PATIENCE: Duration = Duration::from_secs(2);
/// Refusals being written at once. Each is one small frame into an empty socket buffer, so
/// they finish at once; the limit only matters against a flood of connections.
pub const MAX_REFUSALS: usize = 64;

/// The listening socket, and whether we created its file (and so remove it on exit).
#[derive(Debug)]
pub struct Listener {
    pub listener: UnixListener,
    pub created: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{}: exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("{}: another presenced is listening there", .0.display())]
    InUse(PathBuf),
    #[error("{}: {op}: {source}", path.display())]
    Io { path: PathBuf, op: &'static str, source: io::Error },
}

impl Listener {
    /// The socket systemd passed us (socket activation), if any.
    pub fn from_systemd() -> io::Result<Option<Listener>> {
        let fds: Vec<_> = sd_notify::listen_fds()?.collect();
        let Some(&fd) = fds.first() else {
            return Ok(None);
        };
        #[allow(unsafe_code)]
        // SAFETY: systemd passes LISTEN_FDS descriptors starting at 3, open and owned by this
        // process from exec on; sd_notify checked LISTEN_PID. We take ownership exactly once
        // and unset nothing else.
        let std_listener = unsafe {
            use std::os::fd::FromRawFd;
            std::os::unix::net::UnixListener::from_raw_fd(fd)
        };
        std_listener.set_nonblocking(true)?;
        Ok(Some(Listener { listener: UnixListener::from_std(std_listener)?, created: None }))
    }

    /// Binds at `path`. A stale socket file (nobody answers on it) is replaced; a live one or
    /// a file that is not a socket is an error.
    pub fn bind(path: &Path, group: Option<&str>) -> Result<Listener, BindError> {
        let err = |op| move |source| BindError::Io { path: path.to_owned(), op, source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err("create directory"))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(BindError::InUse(path.to_owned()));
                }
                std::fs::remove_file(path).map_err(err("remove stale socket"))?;
            }
            Ok(_) => return Err(BindError::NotASocket(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("stat")(e)),
        }
        let listener = UnixListener::bind(path).map_err(err("bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(err("chmod"))?;
        if let Some(name) = group {
            match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => {
                    if let Err(e) = nix::unistd::chown(path, None, Some(g.gid)) {
                        tracing::warn!("cannot give {} to group {name}: {e}", path.display());
                    }
                }
                _ => tracing::warn!("control_group {name:?} does not exist"),
            }
        }
        Ok(Listener { listener, created: Some(path.to_owned()) })
    }
}

/// Who may use the socket: root, the daemon's own user, members of `control_group`.
#[derive(Debug, Clone)]
pub struct Access {
    pub own_uid: u32,
    pub group: Option<(String, u32)>,
}

impl Access {
    pub fn new(control_group: Option<&str>) -> Access {
        let group = control_group.and_then(|name| match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some((name.to_owned(), g.gid.as_raw())),
            _ => {
                tracing::warn!("control_group {name:?} does not exist; only root and the daemon's user may connect");
                None
            }
        });
        Access { own_uid: nix::unistd::geteuid().as_raw(), group }
    }

    pub fn check(&self, uid: u32, gid: u32) -> Result<(), String> {
        if uid == 0 || uid == self.own_uid {
            return Ok(());
        }
        if let Some((name, group_gid)) = &self.group {
            if gid == *group_gid || user_in_group(uid, *group_gid) {
                return Ok(());
            }
            return Err(format!("uid {uid} may not use presenced (not root, not the daemon's user, not in group {name})"));
        }
        Err(format!("uid {uid} may not use presenced (only root and the daemon's user may)"))
    }
}

fn user_in_group(uid: u32, gid: u32) -> bool {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|groups| groups.iter().any(|g| g.as_raw() == gid))
        .unwrap_or(false)
}

/// The connections holding a slot, to choose whom to cut when a newcomer needs one.
#[derive(Debug, Default)]
struct Table {
    slots: Mutex<Slots>,
    /// Signalled when a slot is given back or its connection starts waiting on its client:
    /// a newcomer kept out by busy slots may get one now.
    freed: Notify,
}

#[derive(Debug, Default)]
struct Slots {
    next: u64,
    open: BTreeMap<u64, SlotState>,
}

#[derive(Debug)]
struct SlotState {
    /// Since when the connection has been waiting on its client; `None` while the core
    /// handles its request.
    waiting_since: Option<Instant>,
    /// Whether it has had a request answered: such a one makes room before a newcomer.
    answered: bool,
    cut: CancellationToken,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Held for a few map operations that cannot panic; a poisoned table is still whole.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a newcomer, waiting up to [`BUSY_PATIENCE`] while every slot is busy with
    /// a request. The token fires when this connection is cut in turn.
    async fn take(self: &Arc<Self>) -> Option<(Slot, CancellationToken)> {
        let now = tokio::time::Instant::now();
        let (spare_until, deadline) = (now + ANSWER_PATIENCE, now + BUSY_PATIENCE);
        if self.lock().open.len() >= MAX_CONNECTIONS {
            // Someone is about to be cut: first let every connection with something to do
            // do it, so that one accepted just before reads its hello and its request
            // rather than be cut in a burst of accepts.
            tokio::task::yield_now().await;
        }
        loop {
            let spare = tokio::time::Instant::now() < spare_until;
            if let Some(taken) = self.try_take(spare) {
                return Some(taken);
            }
            // A wake-up between the attempt and here is kept by notify_one, not lost.
            let wake = if spare { spare_until } else { deadline };
            if tokio::time::timeout_at(wake, self.freed.notified()).await.is_err() && !spare {
                return None;
            }
        }
    }

    /// A free slot, or else the slot of a connection waiting on its client, which is cut:
    /// one answered before, the longest waiting first. With `spare_new`, one that has had
    /// no answer yet is not cut while another is busy with a request (and so will soon be
    /// answered and the one to cut). `None` when there is nobody to cut.
    fn try_take(self: &Arc<Self>, spare_new: bool) -> Option<(Slot, CancellationToken)> {
        let mut slots = self.lock();
        if slots.open.len() >= MAX_CONNECTIONS {
            let spare_new = spare_new && slots.open.values().any(|s| s.waiting_since.is_none());
            let (_, victim) = slots
                .open
                .iter()
                .filter(|(_, s)| s.answered || !spare_new)
                .filter_map(|(id, s)| Some(((!s.answered, s.waiting_since?), *id)))
                .min()?;
            if let Some(cut) = slots.open.remove(&victim) {
                cut.cut.cancel();
            }
        }
        let id = slots.next;
        slots.next += 1;
        let cut = CancellationToken::new();
        let state =
            SlotState { waiting_since: Some(Instant::now()), answered: false, cut: cut.clone() };
        slots.open.insert(id, state);
        Some((Slot { id, table: self.clone() }, cut))
    }
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
struct Slot {
    id: u64,
    table: Arc<Table>,
}

impl Slot {
    /// Its request answered, the connection waits on its client, and may be cut for a
    /// newcomer.
    fn answered(&self) {
        if let Some(s) = self.table.lock().open.get_mut(&self.id) {
            s.waiting_since.get_or_insert_with(Instant::now);
            s.answered = true;
        }
        self.table.freed.notify_one();
    }

    /// The core is about to handle a request: not to be cut until it is answered. False when
    /// the connection was cut already; the request must then not be started.
    fn busy(&self) -> bool {
        match self.table.lock().open.get_mut(&self.id) {
            Some(s) => {
                s.waiting_since = None;
                true
            }
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.lock().open.remove(&self.id);
        self.table.freed.notify_one();
    }
}

pub async fn serve(
    listener: UnixListener,
    core: mpsc::Sender<Event>,
    access: Access,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let table = Arc::new(Table::default());
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = cancel.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Before the hello: a client that may not connect never holds or takes a slot.
        let refusal = match stream.peer_cred() {
            Ok(cred) => access.check(cred.uid(), cred.gid()).err().inspect(|why| {
                tracing::warn!(uid = cred.uid(), "refused a client: {why}");
            }),
            Err(e) => {
                tracing::warn!("cannot read peer credentials, closing: {e}");
                continue;
            }
        };
        // Waiting here for a busy slot leaves the next newcomers in the listen backlog,
        // where they cost the daemon nothing.
        let taken = match refusal {
            Some(_) => None,
            None => tokio::select! {
                taken = table.take() => taken,
                () = cancel.cancelled() => return,
            },
        };
        let Some((slot, cut)) = taken else {
            let why = refusal.unwrap_or_else(|| "too many connections; try again".into());
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tracker.spawn(async move {
                    refuse(stream, why).await;
                    drop(permit);
                });
            }
            continue;
        };
        let (core, cancel) = (core.clone(), cancel.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = connection(stream, core, &slot) => {}
                () = cut.cancelled() => {
                    tracing::debug!("closed the longest idle connection for a newcomer");
                }
                () = cancel.cancelled() => {}
            }
            drop(slot);
        });
    }
}

fn server_hello(refusal: Option<String>) -> ServerHello {
    ServerHello {
        magic: proto::HELLO_MAGIC,
        version: proto::PROTOCOL_VERSION,
        software: format!("presenced {}", env!("CARGO_PKG_VERSION")),
        refusal,
    }
}

async fn refuse(stream: UnixStream, why: String) {
    let mut conn = Conn::new(stream);
    let _ =
        tokio::time::timeout(proto::HANDSHAKE_TIMEOUT, conn.send(&server_hello(Some(why)))).await;
}

async fn connection(stream: UnixStream, core: mpsc::Sender<Event>, slot: &Slot) {
    let mut conn = Conn::new(stream);
    let hello = match conn.recv_within::<Hello>(proto::HANDSHAKE_TIMEOUT).await {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!("bad hello: {e}");
            let why = format!("expected a presencectl hello: {e}");
            let _ =
                tokio::time::timeout(proto::HANDSHAKE_TIMEOUT, conn.send(&server_hello(Some(why))))
                    .await;
            return;
        }
    };
    if hello.magic != proto::HELLO_MAGIC {
        let why = "expected a presencectl hello: bad magic".to_owned();
        let _ = conn.send(&server_hello(Some(why))).await;
        return;
    }
    if hello.version != proto::PROTOCOL_VERSION {
        let why = proto::version_mismatch(hello.version, proto::PROTOCOL_VERSION);
        tracing::warn!("refused {}: {why}", hello.software);
        let _ = conn.send(&server_hello(Some(why))).await;
        return;
    }
    if conn.send(&server_hello(None)).await.is_err() {
        return;
    }
    loop {
        let request: Request = match conn.recv_within(IDLE_TIMEOUT).await {
            Ok(r) => r,
            Err(ProtoError::Closed | ProtoError::Timeout) => return,
            Err(e) => {
                let reply = Response::Error(ErrorReply {
                    kind: ErrorKind::BadRequest,
                    message: format!("bad request: {e}"),
                });
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.send(&reply)).await;
                return;
            }
        };
        if !slot.busy() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if core.send(Event::Control { request, reply: tx }).await.is_err() {
            return;
        }
        let Ok(response) = rx.await else { return };
        // Answered; taking the reply and sending the next request are up to the client.
        slot.answered();
        let frames = match proto::split(response) {
            Ok(frames) => frames,
            Err(e) => {
                tracing::error!("cannot send a reply: {e}");
                let reply = Response::Error(ErrorReply {
                    kind: ErrorKind::Failed,
                    message: format!("the reply cannot be sent: {e}"),
                });
                match proto::encode(&reply) {
                    Ok(body) => vec![body],
                    Err(_) => return,
                }
            }
        };
        for frame in frames {
            match tokio::time::timeout(REQUEST_TIMEOUT, conn.send_encoded(frame)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(table: &Arc<Table>) -> Vec<(Slot, CancellationToken)> {
        (0..MAX_CONNECTIONS).map(|_| table.try_take(false).unwrap()).collect()
    }

    #[test]
    fn a_newcomer_cuts_the_connection_waiting_longest_never_a_busy_one() {
        let table = Arc::new(Table::default());
        let held = fill(&table);
        // The oldest is busy with a request: the second oldest goes.
        assert!(held[0].0.busy());
        let (_newcomer, _) = table.try_take(false).unwrap();
        assert!(!held[0].1.is_cancelled());
        assert!(held[1].1.is_cancelled());
        assert!(!held[1].0.busy(), "a cut connection starts no request");
        assert!(held[2..].iter().all(|(_, cut)| !cut.is_cancelled()));
        assert_eq!(table.lock().open.len(), MAX_CONNECTIONS);
        // One that has had an answer goes before older ones that have not.
        assert!(held[40].0.busy());
        held[40].0.answered();
        let (_second, _) = table.try_take(false).unwrap();
        assert!(held[40].1.is_cancelled());
        assert!(!held[2].1.is_cancelled());
    }

    #[test]
    fn while_others_are_busy_a_connection_not_yet_answered_is_spared() {
        let table = Arc::new(Table::default());
        let held = fill(&table);
        assert!(held[10].0.busy());
        assert!(table.try_take(true).is_none(), "wait for the busy one to be answered");
        held[10].0.answered();
        let (_newcomer, _) = table.try_take(true).unwrap();
        assert!(held[10].1.is_cancelled(), "the answered one made room");
        assert!(held.iter().filter(|(_, cut)| cut.is_cancelled()).count() == 1);
        // Nobody busy: nothing to wait for, the longest waiting goes.
        let (_third, _) = table.try_take(true).unwrap();
        assert!(held[0].1.is_cancelled());
    }

    #[test]
    fn all_busy_refuses_and_a_slot_given_back_is_free() {
        let table = Arc::new(Table::default());
        let mut held = fill(&table);
        assert!(held.iter().all(|(slot, _)| slot.busy()));
        assert!(table.try_take(false).is_none(), "every slot busy: no room");
        held[5].0.answered();
        let (_newcomer, _) = table.try_take(false).expect("a connection waiting on its client");
        assert!(held[5].1.is_cancelled());
        held.truncate(10);
        assert!(table.try_take(false).is_some(), "slots given back are free, nobody is cut");
        assert!(held.iter().filter(|(_, cut)| cut.is_cancelled()).count() == 1);
    }
}
