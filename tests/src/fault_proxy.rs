//! A fault-injecting HTTP/1.1 reverse proxy for the tests: it stands between presenced and a
//! server (an emulator, or the real local PDS) and does to chosen requests what bad servers
//! and bad networks do, the same way for every network:
//!
//! - lose the answer after the server carried the request out (close the connection);
//! - answer itself with an error status (429 with or without `Retry-After`, 5xx storms) or a
//!   proxy's HTML error page, without passing the request on;
//! - pass it on, then answer slowly (a trickle), stall after the headers, cut the body
//!   short, replace it with garbage or an HTML page, or send a huge body;
//! - pass it on, then duplicate or reverse the items of a list answer, or answer with an
//!   older answer of the same path (a page out of order);
//! - cut a server-sent event stream in the middle of an event.
//!
//! Faults are queued per method and path prefix and used in order, one per request; the
//! proxy records every request with what it did, the upstream status and when, so that a
//! test can count requests during a storm and measure the gaps between attempts.
//!
//! Answers with a JSON (or event stream) body have the upstream's address replaced by the
//! proxy's (and any alias given, such as the PDS's public name), so that URLs the server
//! hands out (a streaming URL, a DID document's PDS endpoint) lead back through the proxy.
//!
//! ```no_run
//! use presence_e2e::fault_proxy::{Fault, FaultProxy};
//! let proxy = FaultProxy::start("http://127.0.0.1:9", &[]);
//! proxy.inject("POST", "/api/v1/statuses", Fault::Lose, 1);
//! proxy.inject("GET", "/api/v1/notifications", Fault::Status { status: 503, retry_after: None }, 3);
//! // ... configure presenced with proxy.url, then:
//! let posts = proxy.requests_to("POST", "/api/v1/statuses");
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::fault_queue::FaultQueue;

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Pass it on and answer as the server did (to let a request through in a sequence).
    Pass,
    /// Pass it on, then close the connection without answering: the server did the work.
    Lose,
    /// Answer with this status and a JSON error body, with `Retry-After: n` when given; the
    /// server never sees the request.
    Status { status: u16, retry_after: Option<u64> },
    /// Answer with this status and an HTML page (`text/html`), as a load balancer does; the
    /// server never sees the request.
    Html(u16),
    /// Pass it on, then answer 200 with an HTML page instead of the server's JSON.
    HtmlAfter,
    /// Pass it on, then send the answer's head and the body one byte at a time, spread over
    /// this long (a slow-loris answer that does finish).
    Trickle(Duration),
    /// Pass it on, then send the head and a few bytes of the body, and nothing more until
    /// the client gives up (recorded as `gave up after`).
    Stall,
    /// Pass it on, then send half of the body (with the full `Content-Length`) and close.
    Truncate,
    /// Pass it on, then answer 200 `application/json` with bytes that are not JSON.
    Garbage,
    /// Pass it on, then answer 200 `application/json` with a body of this many bytes,
    /// streamed without a length.
    Huge(usize),
    /// Pass it on; every item of the answer's lists comes twice.
    Duplicate,
    /// Pass it on; the answer's lists come in reverse order.
    Reverse,
    /// Pass it on, then answer with the previous answer the server gave for this path (an
    /// older page, delivered again out of order); as `Pass` when there is none.
    Replay,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    /// Since the proxy started.
    pub at: Duration,
    /// The fault applied, `None` for a plain pass.
    pub fault: Option<Fault>,
    /// The status the server answered, when the request was passed on.
    pub upstream: Option<u16>,
    /// What happened on the client's side, for faults that wait on it (`Stall`).
    pub note: String,
    /// The request body as text (lossy), for telling which post a request was for.
    pub body: String,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct State {
    faults: FaultQueue<Fault>,
    seen: Vec<Seen>,
    /// The last answer the server gave per path (no query), for `Replay`.
    last: HashMap<String, Answer>,
    cut_events: usize,
    open_streams: usize,
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The proxy; it runs on its own threads until the value is dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to configure instead of the server's URL.
    pub url: String,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: String,
    /// (what to find in answers, what to put instead).
    rewrites: Vec<(String, String)>,
    started: Instant,
    state: Mutex<State>,
    stopped: AtomicBool,
    client: reqwest::blocking::Client,
}

fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_owned()
}

impl FaultProxy {
    /// Starts a proxy for `upstream` (`http://host:port`, no path). `aliases` are other
    /// names of the upstream (`http://localhost:2583`) that answers may contain.
    pub fn start(upstream: &str, aliases: &[&str]) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let upstream = upstream.trim_end_matches('/').to_owned();
        let mut rewrites = vec![(authority(&upstream), addr.to_string())];
        for alias in aliases {
            rewrites.push((authority(alias), addr.to_string()));
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(None::<Duration>)
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_brotli()
            .pool_max_idle_per_host(0)
            .build()
            .expect("proxy client");
        let inner = Arc::new(Inner {
            upstream,
            rewrites,
            started: Instant::now(),
            state: Mutex::new(State::default()),
            stopped: AtomicBool::new(false),
            client,
        });
        let served = inner.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if served.stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let inner = served.clone();
                    std::thread::spawn(move || {
                        let _ = inner.serve(stream);
                    });
                }
            })
            .expect("spawn proxy thread");
        FaultProxy { url: format!("http://{addr}"), inner }
    }

    /// Applies `fault` to the next `times` requests with this method (`"*"`: any) whose path
    /// starts with `path_prefix`. Faults injected for the same requests queue up in order.
    pub fn inject(&self, method: &str, path_prefix: &str, fault: Fault, times: usize) {
        self.inner.lock().faults.repeat(method, path_prefix, fault, times);
    }

    /// Applies `faults` in this order to the next matching requests, one each.
    pub fn inject_all(&self, method: &str, path_prefix: &str, faults: &[Fault]) {
        self.inner.lock().faults.push(method, path_prefix, faults.iter().cloned());
    }

    /// How many injected faults are still waiting for a request.
    pub fn pending(&self) -> usize {
        self.inner.lock().faults.waiting()
    }

    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    /// Drops the faults still waiting for requests with exactly this method and prefix.
    pub fn clear(&self, method: &str, path_prefix: &str) {
        self.inner.lock().faults.clear_for(method, path_prefix);
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Seen> {
        self.inner.lock().seen.clone()
    }

    /// The requests with this method (`"*"`: any) whose path starts with `path_prefix`.
    pub fn requests_to(&self, method: &str, path_prefix: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| {
                (method == "*" || s.method.eq_ignore_ascii_case(method))
                    && s.path().starts_with(path_prefix)
            })
            .collect()
    }

    /// Every request on one line each, for failure messages.
    pub fn log(&self) -> String {
        self.requests()
            .iter()
            .map(|s| {
                format!(
                    "{:7.3}s {} {} {:?} upstream {:?} {}\n",
                    s.at.as_secs_f64(),
                    s.method,
                    s.path_and_query,
                    s.fault,
                    s.upstream,
                    s.note
                )
            })
            .collect()
    }

    /// Event streams open through the proxy now.
    pub fn open_streams(&self) -> usize {
        self.inner.lock().open_streams
    }

    /// The next event on any stream through the proxy is cut in the middle, and that
    /// stream's connection closed.
    pub fn cut_next_stream_event(&self) {
        self.inner.lock().cut_events += 1;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// One request read off a connection.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let mut chunk = vec![0u8; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0u8; n];
        reader.read_exact(&mut body)?;
    }
    Ok(Some(Request { method, target, headers, body }))
}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "accept-encoding",
    "transfer-encoding",
    "content-encoding",
];

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn head(status: u16, headers: &[(String, String)], length: Option<usize>) -> Vec<u8> {
    let mut text = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    match length {
        Some(n) => text.push_str(&format!("content-length: {n}\r\n")),
        None => text.push_str("transfer-encoding: chunked\r\n"),
    }
    text.push_str("\r\n");
    text.into_bytes()
}

fn json_headers() -> Vec<(String, String)> {
    vec![("content-type".into(), "application/json; charset=utf-8".into())]
}

const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\
    <body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n";

/// The same JSON with every list's items twice, or reversed.
fn rewrite_lists(body: &[u8], duplicate: bool) -> Option<Vec<u8>> {
    fn walk(v: &mut serde_json::Value, duplicate: bool, depth: usize) {
        match v {
            serde_json::Value::Array(items) => {
                if duplicate {
                    let copy = items.clone();
                    *items = copy.iter().flat_map(|i| [i.clone(), i.clone()]).collect();
                } else {
                    items.reverse();
                }
            }
            serde_json::Value::Object(map) if depth == 0 => {
                for (_, item) in map.iter_mut() {
                    walk(item, duplicate, depth + 1);
                }
            }
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    walk(&mut value, duplicate, 0);
    serde_json::to_vec(&value).ok()
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        self.lock().faults.take(method, path)
    }

    fn record(&self, req: &Request, fault: &Option<Fault>, upstream: Option<u16>) -> usize {
        let mut s = self.lock();
        s.seen.push(Seen {
            method: req.method.clone(),
            path_and_query: req.target.clone(),
            at: self.started.elapsed(),
            fault: fault.clone().filter(|f| *f != Fault::Pass),
            upstream,
            note: String::new(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
        });
        s.seen.len() - 1
    }

    fn note(&self, index: usize, note: String) {
        if let Some(seen) = self.lock().seen.get_mut(index) {
            seen.note = note;
        }
    }

    fn rewrite(&self, body: Vec<u8>) -> Vec<u8> {
        let Ok(mut text) = String::from_utf8(body.clone()) else { return body };
        for (from, to) in &self.rewrites {
            text = text.replace(from.as_str(), to);
        }
        text.into_bytes()
    }

    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        while let Some(req) = read_request(&mut reader)? {
            if self.stopped.load(Ordering::Relaxed) {
                return Ok(());
            }
            let path = req.target.split('?').next().unwrap_or_default().to_owned();
            let fault = self.take_fault(&req.method, &path);
            let keep_going = match &fault {
                Some(Fault::Status { status, retry_after }) => {
                    self.record(&req, &fault, None);
                    let mut headers = json_headers();
                    if let Some(secs) = retry_after {
                        headers.push(("retry-after".into(), secs.to_string()));
                    }
                    let body = format!(r#"{{"error":"injected {status}"}}"#).into_bytes();
                    writer.write_all(&head(*status, &headers, Some(body.len())))?;
                    writer.write_all(&body)?;
                    true
                }
                Some(Fault::Html(status)) => {
                    self.record(&req, &fault, None);
                    let headers = vec![("content-type".into(), "text/html".into())];
                    writer.write_all(&head(*status, &headers, Some(HTML_PAGE.len())))?;
                    writer.write_all(HTML_PAGE.as_bytes())?;
                    true
                }
                _ => self.pass_on(&req, &path, fault, &mut reader, &mut writer)?,
            };
            writer.flush()?;
            if !keep_going {
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Sends the request upstream and answers according to `fault`; false when the
    /// connection must be closed.
    fn pass_on(
        &self,
        req: &Request,
        path: &str,
        fault: Option<Fault>,
        reader: &mut BufReader<TcpStream>,
        writer: &mut TcpStream,
    ) -> std::io::Result<bool> {
        let url = format!("{}{}", self.upstream, req.target);
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut builder = self.client.request(method, &url);
        for (k, v) in &req.headers {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                builder = builder.header(k.as_str(), v.as_str());
            }
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body.clone());
        }
        let mut response = match builder.send() {
            Ok(r) => r,
            Err(_) => {
                self.record(req, &fault, None);
                let body = br#"{"error":"the proxy cannot reach the server"}"#;
                writer.write_all(&head(502, &json_headers(), Some(body.len())))?;
                writer.write_all(body)?;
                return Ok(true);
            }
        };
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let index = self.record(req, &fault, Some(status));
        if content_type.starts_with("text/event-stream") {
            return self.stream(status, &headers, &mut response, writer);
        }
        let mut body = Vec::new();
        response.read_to_end(&mut body)?;
        if content_type.contains("json") {
            body = self.rewrite(body);
        }
        let previous = {
            let mut s = self.lock();
            let previous = s.last.get(path).cloned();
            if (200..300).contains(&status) {
                let answer = Answer { status, headers: headers.clone(), body: body.clone() };
                s.last.insert(path.to_owned(), answer);
            }
            previous
        };
        match fault {
            None | Some(Fault::Pass) | Some(Fault::Status { .. }) | Some(Fault::Html(_)) => {
                writer.write_all(&head(status, &headers, Some(body.len())))?;
                writer.write_all(&body)?;
                Ok(true)
            }
            Some(Fault::Lose) => Ok(false),
            Some(Fault::HtmlAfter) => {
                let headers = vec![("content-type".into(), "text/html".into())];
                writer.write_all(&head(200, &headers, Some(HTML_PAGE.len())))?;
                writer.write_all(HTML_PAGE.as_bytes())?;
                Ok(true)
            }
            Some(Fault::Trickle(over)) => {
                writer.write_all(&head(status, &headers, Some(body.len())))?;
                writer.flush()?;
                let each = over / (body.len().max(1) as u32);
                for byte in &body {
                    std::thread::sleep(each);
                    writer.write_all(std::slice::from_ref(byte))?;
                    writer.flush()?;
                }
                Ok(true)
            }
            Some(Fault::Stall) => {
                writer.write_all(&head(status, &headers, Some(body.len())))?;
                writer.write_all(&body[..body.len().min(3)])?;
                writer.flush()?;
                // Waits for the client to close its end.
                let started = Instant::now();
                let mut socket = reader.get_ref().try_clone()?;
                socket.set_read_timeout(Some(Duration::from_millis(200)))?;
                let mut byte = [0u8; 1];
                loop {
                    match socket.read(&mut byte) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            if self.stopped.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                self.note(index, format!("gave up after {:.1}s", started.elapsed().as_secs_f64()));
                Ok(false)
            }
            Some(Fault::Truncate) => {
                writer.write_all(&head(status, &headers, Some(body.len())))?;
                writer.write_all(&body[..body.len() / 2])?;
                Ok(false)
            }
            Some(Fault::Garbage) => {
                let garbage = b"{\"id\": \"12\x00\xff\xfe garbage ]]]}";
                writer.write_all(&head(200, &json_headers(), Some(garbage.len())))?;
                writer.write_all(garbage)?;
                Ok(true)
            }
            Some(Fault::Huge(size)) => {
                writer.write_all(&head(200, &json_headers(), None))?;
                let piece =
                    "{\"id\":\"1\",\"content\":\"".to_owned() + &"x".repeat(65_000) + "\"},";
                let mut sent = 0;
                writer.write_all(b"1\r\n[\r\n")?;
                while sent < size {
                    let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                    if writer.write_all(chunk.as_bytes()).is_err() {
                        break;
                    }
                    sent += piece.len();
                }
                let _ = writer.write_all(b"0\r\n\r\n");
                Ok(false)
            }
            Some(f @ (Fault::Duplicate | Fault::Reverse)) => {
                let body = rewrite_lists(&body, f == Fault::Duplicate).unwrap_or(body);
                writer.write_all(&head(status, &headers, Some(body.len())))?;
                writer.write_all(&body)?;
                Ok(true)
            }
            Some(Fault::Replay) => {
                let answer = previous.unwrap_or(Answer { status, headers, body });
                writer.write_all(&head(answer.status, &answer.headers, Some(answer.body.len())))?;
                writer.write_all(&answer.body)?;
                Ok(true)
            }
        }
    }

    /// Passes an event stream on as it comes, cutting it in the middle of an event when
    /// asked to. Returns false: the connection is done either way.
    fn stream(
        &self,
        status: u16,
        headers: &[(String, String)],
        response: &mut reqwest::blocking::Response,
        writer: &mut TcpStream,
    ) -> std::io::Result<bool> {
        writer.write_all(&head(status, headers, None))?;
        writer.flush()?;
        self.lock().open_streams += 1;
        let result = (|| -> std::io::Result<()> {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = response.read(&mut buf)?;
                if n == 0 || self.stopped.load(Ordering::Relaxed) {
                    writer.write_all(b"0\r\n\r\n")?;
                    return Ok(());
                }
                let data = self.rewrite(buf[..n].to_vec());
                let cut = {
                    let mut s = self.lock();
                    let event = data.windows(6).any(|w| w == b"event:");
                    let cut = event && s.cut_events > 0;
                    if cut {
                        s.cut_events -= 1;
                    }
                    cut
                };
                let data = if cut { &data[..data.len() / 2] } else { &data[..] };
                writer.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
                writer.write_all(data)?;
                if cut {
                    writer.flush()?;
                    return Ok(());
                }
                writer.write_all(b"\r\n")?;
                writer.flush()?;
            }
        })();
        self.lock().open_streams -= 1;
        let _ = writer.shutdown(Shutdown::Both);
        result.map(|()| false)
    }
}
