//! A tiny HTTP/1.1 responder for the adapters' unit tests: it records every request and
//! answers from a handler, so that what was sent can be asserted. Not an emulator: the
//! faithful ones live in the `tests` crate.

// Test code fails loudly.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Req {
    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        self.query_all(name).into_iter().next()
    }

    /// Every value of a query parameter, in order.
    pub(crate) fn query_all(&self, name: &str) -> Vec<String> {
        let q = self.target.split_once('?').map_or("", |(_, q)| q);
        url::form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    }

    /// The first value of a form field in the body.
    pub(crate) fn form(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Resp {
    /// 0: close the connection without answering.
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    /// An event stream: no length, a pause of 200 ms at each NUL in the body, and the
    /// connection held open this long after it.
    pub(crate) hold: Option<Duration>,
}

pub(crate) fn json(status: u16, body: serde_json::Value) -> Resp {
    Resp {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_string(),
        hold: None,
    }
}

pub(crate) fn with_header(mut r: Resp, name: &str, value: &str) -> Resp {
    r.headers.push((name.into(), value.into()));
    r
}

pub(crate) fn drop_connection() -> Resp {
    Resp { status: 0, headers: Vec::new(), body: String::new(), hold: None }
}

/// Answers its calls with `answers` in turn, the last one again once they run out: a
/// server whose successive answers to one request tell a story (a drop, a 500, a limit).
pub(crate) fn in_turn(answers: Vec<Resp>) -> impl Fn() -> Resp + Send + Sync {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    move || {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        answers[n.min(answers.len() - 1)].clone()
    }
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) base: String,
    requests: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    pub(crate) async fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let log = log.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut socket).await else { return };
                    log.lock().unwrap().push(req.clone());
                    let resp = handler(&req);
                    if resp.status == 0 {
                        return;
                    }
                    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
                    if resp.hold.is_none() {
                        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
                    }
                    for (k, v) in &resp.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = socket.write_all(head.as_bytes()).await;
                    if let Some(hold) = resp.hold {
                        for (i, part) in resp.body.split('\0').enumerate() {
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            let _ = socket.write_all(part.as_bytes()).await;
                        }
                        tokio::time::sleep(hold).await;
                    } else {
                        let _ = socket.write_all(resp.body.as_bytes()).await;
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        Server { base, requests }
    }

    pub(crate) fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }

    pub(crate) fn requests_to(&self, method: &str, path: &str) -> Vec<Req> {
        self.requests().into_iter().filter(|r| r.method == method && r.path() == path).collect()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Req { method, target, headers, body: String::from_utf8_lossy(&body).into_owned() })
}
