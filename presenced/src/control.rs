//! The control socket: who may connect, the hello, and passing requests to the core.
//!
//! Every limit is explicit: [`MAX_CONNECTIONS`] at once, [`proto::HANDSHAKE_TIMEOUT`] for
//! the hello, [`IDLE_TIMEOUT`] for the next request to arrive whole (so a client trickling
//! one byte a second holds its slot for a minute at most), [`REQUEST_TIMEOUT`] for a reply
//! to be taken, [`proto::MAX_FRAME`] per frame (a longer length prefix is refused unread).
//! A bad client only ever loses its own connection.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use presencectl::proto::{
    self, Conn, ErrorKind, ErrorReply, Hello, ProtoError, Request, Response, ServerHello,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::Event;

pub const MAX_CONNECTIONS: usize = 64;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

pub async fn serve(
    listener: UnixListener,
    core: mpsc::Sender<Event>,
    access: Access,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracker.spawn(refuse(stream, "too many connections; try again".into()));
            continue;
        };
        let (core, access, cancel) = (core.clone(), access.clone(), cancel.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = connection(stream, core, access) => {}
                () = cancel.cancelled() => {}
            }
            drop(permit);
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

async fn connection(stream: UnixStream, core: mpsc::Sender<Event>, access: Access) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot read peer credentials, closing: {e}");
            return;
        }
    };
    let mut conn = Conn::new(stream);
    let hello = conn.recv_within::<Hello>(proto::HANDSHAKE_TIMEOUT).await;
    if let Err(why) = access.check(cred.uid(), cred.gid()) {
        tracing::warn!(uid = cred.uid(), "refused a client: {why}");
        let _ = tokio::time::timeout(proto::HANDSHAKE_TIMEOUT, conn.send(&server_hello(Some(why))))
            .await;
        return;
    }
    let hello = match hello {
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
        let (tx, rx) = oneshot::channel();
        if core.send(Event::Control { request, reply: tx }).await.is_err() {
            return;
        }
        let Ok(response) = rx.await else { return };
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
