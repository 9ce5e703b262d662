//! A small hyper server for the X and Facebook emulators: a thread with its own runtime,
//! a synchronous handler (the emulator's state is behind a mutex), and the answers an
//! emulator needs besides a plain reply: a dropped connection and a late answer.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;

use crate::mastodon::RecordedRequest;

/// One request as the handler sees it.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) method: String,
    /// The path without the query, percent-decoding left to the handler.
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Call {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request as the emulators record it.
    pub(crate) fn record(&self) -> RecordedRequest {
        let path_and_query = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        RecordedRequest {
            method: self.method.clone(),
            path_and_query,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect(),
            body: String::from_utf8_lossy(&self.body).into_owned(),
            status: None,
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::with_type(status, "application/json; charset=utf-8", value.to_string())
    }

    pub(crate) fn with_type(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// What the server does with a request.
#[derive(Debug)]
pub(crate) enum Answer {
    Reply(Reply),
    /// Close the connection without any answer.
    Drop,
    /// Answer after this long.
    Late(Reply, Duration),
}

pub(crate) type Handler = Arc<dyn Fn(Call) -> Answer + Send + Sync>;

/// A running server; stops when dropped.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

type Body = BoxBody<Bytes, io::Error>;

fn full(body: Vec<u8>) -> Body {
    Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {}).boxed()
}

/// Starts serving on a free port of 127.0.0.1 on a thread named `name`.
pub(crate) fn serve(name: &str, handler: Handler) -> Served {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind emulator");
    listener.set_nonblocking(true).expect("nonblocking listener");
    let addr = listener.local_addr().expect("emulator address");
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("emulator runtime");
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let handler = handler.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req| answer(handler.clone(), req));
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                        _ = stop.changed() => return,
                    }
                }
            });
        })
        .expect("spawn emulator thread");
    Served { addr, shutdown: Some(shutdown), thread: Some(thread) }
}

async fn answer(
    handler: Handler,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, 1 << 20).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let call = Call {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
    };
    // The handler may block on the state's mutex only briefly; it never awaits.
    let reply = match handler(call) {
        Answer::Reply(r) => r,
        Answer::Drop => return Err(io::Error::other("emulator: connection dropped")),
        Answer::Late(r, delay) => {
            tokio::time::sleep(delay).await;
            r
        }
    };
    let mut builder = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    Ok(builder.body(full(reply.body)).unwrap_or_else(|_| {
        let mut r = Response::new(full(b"emulator: bad response".to_vec()));
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    }))
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Decoded query (or form) pairs.
pub(crate) fn pairs(text: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text).into_owned().collect()
}

/// Standard base64 with padding, decoded (for `Authorization: Basic`).
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Base64url without padding (PKCE).
pub(crate) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
