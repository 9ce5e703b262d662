//! Connecting to presenced: the hello exchange and one request/response at a time.

use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use crate::proto::{self, Conn, Hello, PartialList, ProtoError, Request, Response, ServerHello};

/// Why talking to the daemon failed; the CLI maps each kind to its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach presenced at {path}: {source}")]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error("presenced refused: {0}")]
    Refused(String),
    #[error("{0}")]
    VersionMismatch(String),
    #[error("talking to presenced: {0}")]
    Protocol(#[from] ProtoError),
}

#[derive(Debug)]
pub struct Client {
    conn: Conn<UnixStream>,
    pub daemon_software: String,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Unreachable { path: path.to_owned(), source })?;
        let mut conn = Conn::new(stream);
        let software = format!("presencectl {}", env!("CARGO_PKG_VERSION"));
        // A daemon that refuses us may close before reading our hello: its refusal is
        // still waiting to be read, and says more than the broken pipe would.
        let sent = conn.send(&Hello::new(&software)).await;
        let hello: ServerHello = match conn.recv_within(proto::HANDSHAKE_TIMEOUT).await {
            Ok(hello) => hello,
            Err(e) => return Err(sent.err().unwrap_or(e).into()),
        };
        if hello.magic != proto::HELLO_MAGIC {
            return Err(ProtoError::Closed.into());
        }
        if let Some(refusal) = hello.refusal {
            return Err(ClientError::Refused(refusal));
        }
        if hello.version != proto::PROTOCOL_VERSION {
            return Err(ClientError::VersionMismatch(proto::version_mismatch(
                proto::PROTOCOL_VERSION,
                hello.version,
            )));
        }
        Ok(Client { conn, daemon_software: hello.software })
    }

    /// Sends one request and returns its response, put back together when the daemon sent
    /// a long list in several frames.
    pub async fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.conn.send(request).await?;
        let (mut posts, mut conversations) = (Vec::new(), Vec::new());
        loop {
            match self.conn.recv().await? {
                Response::Partial(PartialList::Posts(part)) => posts.extend(part),
                Response::Partial(PartialList::Conversations(part)) => conversations.extend(part),
                Response::Posts(last) => {
                    posts.extend(last);
                    return Ok(Response::Posts(posts));
                }
                Response::Conversations(last) => {
                    conversations.extend(last);
                    return Ok(Response::Conversations(conversations));
                }
                other => return Ok(other),
            }
        }
    }
}
