//! The real Bluesky network for the Bluesky tests, and what the tests do on it.
//!
//! `tests/bsky/run-network.sh` runs the reference PLC directory, PDS and AppView from the npm
//! registry on loopback; `tests/run` installs and starts it and exports
//! `PRESENCE_BSKY_INFO` (the control server's URL, which answers with the network's URLs as
//! JSON). [`network`] finds it there, or at the default control port; when `tests/run` could
//! not install it, it exports `PRESENCE_BSKY_SKIP` with the reason and every test says so
//! loudly on the terminal and returns.
//!
//! - [`Net`] creates accounts on the PDS (`*.test` handles, app passwords) and waits for the
//!   AppView with `/processAll` instead of sleeping.
//! - [`Account`] posts, replies and mentions as another person would, and reads repositories,
//!   threads and notifications.
//! - [`Proxy`] stands between presenced and the PDS: it counts every XRPC call by method and
//!   can hold, fail or answer a call itself (a lost answer after the PDS wrote, an expired
//!   token), which is how the tests kill the daemon at an exact moment.
//! - [`ImageServer`] serves an article's picture for link cards.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Where `run-network.sh` puts the control server when `PRESENCE_BSKY_INFO` is not set.
pub const DEFAULT_INFO: &str = "http://127.0.0.1:2589/";

/// The URLs of a running network.
#[derive(Debug, Clone)]
pub struct Net {
    /// The PDS as the tests reach it (127.0.0.1, not `localhost`).
    pub pds: String,
    /// The PDS origin as the network names it in DID documents.
    pub pds_public: String,
    pub appview_did: String,
    pub control: String,
}

fn http() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client")
    })
}

/// Writes straight to the terminal: libtest captures `eprintln!` of passing tests, and a
/// skipped suite must never pass unnoticed.
pub fn shout(message: &str) {
    let line = "!".repeat(78);
    let text = format!("\n{line}\n!! {message}\n{line}\n");
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The running network, or `None` (after saying so loudly) when `tests/run` could not
/// install it. Panics with instructions when it should be there and is not.
pub fn network() -> Option<&'static Net> {
    static NET: OnceLock<Result<Net, String>> = OnceLock::new();
    if let Some(why) = std::env::var("PRESENCE_BSKY_SKIP").ok().filter(|w| !w.is_empty()) {
        shout(&format!(
            "BLUESKY TEST SKIPPED: the local Bluesky network could not be installed: {why}"
        ));
        return None;
    }
    match NET.get_or_init(locate) {
        Ok(net) => Some(net),
        Err(why) => panic!("{why}"),
    }
}

fn locate() -> Result<Net, String> {
    let info_url = std::env::var("PRESENCE_BSKY_INFO")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_INFO.to_owned());
    let info: Value =
        http().get(&info_url).send().and_then(reqwest::blocking::Response::json).map_err(|e| {
            format!(
                "no Bluesky network answers at {info_url} ({e}). Run the suite with tests/run, \
                 which installs and starts it, or start it by hand: \
                 tests/bsky/run-network.sh install && tests/bsky/run-network.sh start"
            )
        })?;
    let field = |k: &str| {
        info[k].as_str().map(str::to_owned).ok_or(format!("{info_url}: no {k} in {info}"))
    };
    let pds_public = field("pds")?.trim_end_matches('/').to_owned();
    let pds = pds_public.replace("://localhost:", "://127.0.0.1:");
    Ok(Net { pds, pds_public, appview_did: field("appviewDid")?, control: field("control")? })
}

/// A unique suffix for handles, so that tests and runs never share an account.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}",
        (u64::from(nanos) ^ (u64::from(std::process::id()) << 20)).wrapping_add(n * 7919)
            & 0xff_ffff
    )
}

/// An XRPC call's answer: status and JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Net {
    /// Waits until the AppView has indexed everything the PDS has written.
    pub fn process_all(&self) {
        let r = http().get(&self.control).send().expect("processAll");
        assert!(r.status().is_success(), "processAll: {:?}", r.text());
    }

    /// One XRPC call to the PDS; app.bsky reads are proxied to the AppView.
    pub fn xrpc(
        &self,
        method: &str,
        nsid: &str,
        params: &[(&str, &str)],
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Answer {
        let url = format!("{}/xrpc/{nsid}", self.pds);
        let mut req = match method {
            "GET" => http().get(&url),
            _ => http().post(&url),
        };
        req = req.query(params);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if nsid.starts_with("app.bsky.") {
            req = req.header("atproto-proxy", format!("{}#bsky_appview", self.appview_did));
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let r = req.send().unwrap_or_else(|e| panic!("{nsid}: {e}"));
        let status = r.status().as_u16();
        let body = r.json().unwrap_or(Value::Null);
        Answer { status, body }
    }

    fn ok(
        &self,
        method: &str,
        nsid: &str,
        params: &[(&str, &str)],
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Value {
        let a = self.xrpc(method, nsid, params, body, token);
        assert_eq!(a.status, 200, "{nsid}: {}", a.body);
        a.body
    }

    /// A new account with a `*.test` handle starting with `name`, logged in, with an app
    /// password for presenced.
    pub fn account(&self, name: &str) -> Account {
        let name: String = name.chars().filter(char::is_ascii_alphanumeric).take(10).collect();
        let handle = format!("{name}{}.test", unique());
        let password = format!("pw-{}-{}", unique(), unique());
        let created = self.ok(
            "POST",
            "com.atproto.server.createAccount",
            &[],
            Some(&json!({"handle": handle, "email": format!("{handle}@example.test"), "password": password})),
            None,
        );
        let access = created["accessJwt"].as_str().expect("accessJwt").to_owned();
        let did = created["did"].as_str().expect("did").to_owned();
        let app = self.ok(
            "POST",
            "com.atproto.server.createAppPassword",
            &[],
            Some(&json!({"name": "presenced"})),
            Some(&access),
        );
        Account {
            net: self.clone(),
            handle,
            did,
            app_password: app["password"].as_str().expect("app password").to_owned(),
            access,
        }
    }
}

/// A strong reference to a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub uri: String,
    pub cid: String,
}

impl Ref {
    pub fn json(&self) -> Value {
        json!({"uri": self.uri, "cid": self.cid})
    }

    pub fn rkey(&self) -> &str {
        self.uri.rsplit('/').next().unwrap_or_default()
    }
}

/// An account on the local PDS, acting as a person would.
#[derive(Debug, Clone)]
pub struct Account {
    net: Net,
    pub handle: String,
    pub did: String,
    /// For presenced's config.
    pub app_password: String,
    access: String,
}

impl Account {
    /// Writes any post record as this account.
    pub fn post_record(&self, record: Value) -> Ref {
        self.create(record)
    }

    fn create(&self, record: Value) -> Ref {
        let r = self.net.ok(
            "POST",
            "com.atproto.repo.createRecord",
            &[],
            Some(&json!({"repo": self.did, "collection": "app.bsky.feed.post", "record": record})),
            Some(&self.access),
        );
        Ref {
            uri: r["uri"].as_str().expect("uri").to_owned(),
            cid: r["cid"].as_str().expect("cid").to_owned(),
        }
    }

    fn record(text: &str, facets: Vec<Value>) -> Value {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": now, "facets": facets})
    }

    /// A post @-mentioning `whom` (with its mention facet) at the start of `text`.
    pub fn mention(&self, whom: &Account, text: &str) -> Ref {
        let (full, facet) = mention_facet(whom, text);
        self.create(Self::record(&full, vec![facet]))
    }

    /// A post with arbitrary facets.
    pub fn post_with_facets(&self, text: &str, facets: Vec<Value>) -> Ref {
        self.create(Self::record(text, facets))
    }

    /// A reply to `parent` in the thread of `root`, without a mention.
    pub fn reply(&self, root: &Ref, parent: &Ref, text: &str) -> Ref {
        let mut record = Self::record(text, Vec::new());
        record["reply"] = json!({"root": root.json(), "parent": parent.json()});
        self.create(record)
    }

    /// The posts in this account's repository.
    pub fn posts(&self) -> Vec<(Ref, Value)> {
        let r = self.net.ok(
            "GET",
            "com.atproto.repo.listRecords",
            &[("repo", self.did.as_str()), ("collection", "app.bsky.feed.post"), ("limit", "100")],
            None,
            None,
        );
        r["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|rec| {
                let uri = rec["uri"].as_str().expect("uri").to_owned();
                let cid = rec["cid"].as_str().expect("cid").to_owned();
                (Ref { uri, cid }, rec["value"].clone())
            })
            .collect()
    }

    /// `app.bsky.feed.getPostThread` as this account sees it.
    pub fn thread(&self, uri: &str) -> Value {
        self.net.ok(
            "GET",
            "app.bsky.feed.getPostThread",
            &[("uri", uri), ("depth", "10")],
            None,
            Some(&self.access),
        )
    }
}

/// `@handle text` and the mention facet selecting `@handle`.
pub fn mention_facet(whom: &Account, text: &str) -> (String, Value) {
    let at = format!("@{}", whom.handle);
    let facet = json!({
        "index": {"byteStart": 0, "byteEnd": at.len()},
        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": whom.did}],
    });
    (format!("{at} {text}"), facet)
}

/// The facets of `record` with `feature` (`link`, `mention`, `tag`): the selected text and
/// the feature.
pub fn facets_of(record: &Value, feature: &str) -> Vec<(String, Value)> {
    let text = record["text"].as_str().unwrap_or_default().as_bytes();
    let kind = format!("app.bsky.richtext.facet#{feature}");
    record["facets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let start = usize::try_from(f["index"]["byteStart"].as_u64()?).ok()?;
            let end = usize::try_from(f["index"]["byteEnd"].as_u64()?).ok()?;
            let feat = f["features"].as_array()?.iter().find(|x| x["$type"] == kind.as_str())?;
            let selected = String::from_utf8(text.get(start..end)?.to_vec()).ok()?;
            Some((selected, feat.clone()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The proxy.

/// What the proxy does with the next calls of one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Pass the call on as usual (to reach the second call of a method with a fault).
    Pass,
    /// Answer with this status and JSON body; the PDS never sees the call.
    Answer(u16, Value),
    /// Answer 429 `RateLimitExceeded` as the reference PDS does, with `Retry-After` and
    /// `RateLimit-*` headers asking to wait this many seconds; the PDS never sees the call.
    RateLimited(u64),
    /// Pass the call to the PDS, then answer with this status and body instead of its answer
    /// (the PDS did the work; the client cannot know).
    ForwardThenAnswer(u16, Value),
    /// Pass the call to the PDS, then never answer: the connection stays open until
    /// [`Proxy::release`] closes it.
    ForwardThenHang,
    /// Hold the call without passing it on until [`Proxy::release`].
    Hang,
}

#[derive(Debug, Default)]
struct ProxyState {
    /// Every call, in order: (method, nsid, what the proxy did).
    calls: Vec<(String, String, String)>,
    faults: VecDeque<(String, Fault)>,
    released: u64,
    hanging: u64,
}

fn since_start() -> f64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// An XRPC proxy in front of the PDS, on 127.0.0.1; stops with the test process.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub url: String,
    upstream: String,
    upstream_public: String,
    state: Arc<(Mutex<ProxyState>, Condvar)>,
}

impl Proxy {
    pub fn start(net: &Net) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let proxy = Proxy {
            url,
            upstream: net.pds.clone(),
            upstream_public: net.pds_public.clone(),
            state: Arc::new((Mutex::new(ProxyState::default()), Condvar::new())),
        };
        let p = proxy.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let p = p.clone();
                std::thread::spawn(move || {
                    let _ = p.serve(stream);
                });
            }
        });
        proxy
    }

    fn lock(&self) -> MutexGuard<'_, ProxyState> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next call of `nsid` gets `fault` (faults queue up, each used once).
    pub fn fault(&self, nsid: &str, fault: Fault) {
        self.lock().faults.push_back((nsid.to_owned(), fault));
    }

    /// How many calls of `nsid` arrived (whatever the proxy did with them).
    pub fn count(&self, nsid: &str) -> usize {
        self.lock().calls.iter().filter(|(_, n, _)| n == nsid).count()
    }

    /// How many calls of `nsid` reached the PDS.
    pub fn forwarded(&self, nsid: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|(_, n, what)| n == nsid && what.starts_with("forwarded"))
            .count()
    }

    /// What the proxy did with each call of `nsid`, in order.
    pub fn calls(&self, nsid: &str) -> Vec<String> {
        self.lock().calls.iter().filter(|(_, n, _)| n == nsid).map(|(_, _, w)| w.clone()).collect()
    }

    /// Every call so far, for failure messages.
    pub fn log(&self) -> String {
        self.lock().calls.iter().map(|(m, n, w)| format!("{m} {n}: {w}\n")).collect()
    }

    /// How many calls are being held now.
    pub fn hanging(&self) -> u64 {
        self.lock().hanging
    }

    /// Lets every held call go: a held call that was not passed on is dropped unanswered.
    pub fn release(&self) {
        self.lock().released += 1;
        self.state.1.notify_all();
    }

    fn hang(&self) {
        let mut s = self.lock();
        let generation = s.released;
        s.hanging += 1;
        while s.released == generation {
            s = self.state.1.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.hanging -= 1;
    }

    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let target = parts.next().unwrap_or_default().to_owned();
            let mut headers: Vec<(String, String)> = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h)? == 0 {
                    return Ok(());
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body)?;
            let nsid = target
                .split('?')
                .next()
                .unwrap_or_default()
                .trim_start_matches("/xrpc/")
                .to_owned();
            let fault = {
                let mut s = self.lock();
                let at = s.faults.iter().position(|(n, _)| *n == nsid);
                at.and_then(|i| s.faults.remove(i)).map(|(_, f)| f)
            };
            let record = |what: &str| {
                let paged = if target.contains("cursor=") { ", with a page cursor" } else { "" };
                let what = format!("{what}{paged} at {:.3}s", since_start());
                self.lock().calls.push((method.clone(), nsid.clone(), what));
            };
            let (status, content_type, extra, payload) = match fault {
                Some(Fault::Answer(status, body)) => {
                    record(&format!("answered {status} by the proxy"));
                    (
                        status,
                        "application/json".to_owned(),
                        Vec::new(),
                        body.to_string().into_bytes(),
                    )
                }
                Some(Fault::RateLimited(secs)) => {
                    record("answered 429 by the proxy");
                    let reset =
                        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
                            + secs;
                    let headers = vec![
                        ("Retry-After".to_owned(), secs.to_string()),
                        ("RateLimit-Limit".to_owned(), "30".to_owned()),
                        ("RateLimit-Remaining".to_owned(), "0".to_owned()),
                        ("RateLimit-Reset".to_owned(), reset.to_string()),
                        ("RateLimit-Policy".to_owned(), "30;w=300".to_owned()),
                    ];
                    let body = xrpc_error("RateLimitExceeded", "Rate Limit Exceeded");
                    (429, "application/json".to_owned(), headers, body.to_string().into_bytes())
                }
                Some(Fault::Hang) => {
                    record("held, never passed on");
                    self.hang();
                    return Ok(());
                }
                Some(Fault::ForwardThenHang) => {
                    let answer = self.forward(&method, &target, &headers, &body);
                    record(&format!("forwarded ({}), then held", answer.0));
                    self.hang();
                    return Ok(());
                }
                Some(Fault::ForwardThenAnswer(status, replacement)) => {
                    let answer = self.forward(&method, &target, &headers, &body);
                    record(&format!("forwarded ({}), answered {status} by the proxy", answer.0));
                    (
                        status,
                        "application/json".to_owned(),
                        Vec::new(),
                        replacement.to_string().into_bytes(),
                    )
                }
                None | Some(Fault::Pass) => {
                    let answer = self.forward(&method, &target, &headers, &body);
                    record(&format!("forwarded ({})", answer.0));
                    answer
                }
            };
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
                payload.len()
            );
            for (k, v) in extra {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            writer.write_all(head.as_bytes())?;
            writer.write_all(&payload)?;
            writer.flush()?;
        }
    }

    /// Sends the call to the PDS; the answer's PDS URLs are rewritten to the proxy's, so that
    /// the DID document sends presenced back here.
    fn forward(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> (u16, String, Vec<(String, String)>, Vec<u8>) {
        let url = format!("{}{target}", self.upstream);
        let mut req = match method {
            "GET" => http().get(&url),
            _ => http().post(&url),
        };
        for (k, v) in headers {
            if !matches!(
                k.as_str(),
                "host" | "content-length" | "connection" | "accept-encoding" | "transfer-encoding"
            ) {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        if method != "GET" {
            req = req.body(body.to_vec());
        }
        let Ok(r) = req.send() else {
            return (
                502,
                "application/json".into(),
                Vec::new(),
                br#"{"error":"UpstreamFailure"}"#.to_vec(),
            );
        };
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let extra = r
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("ratelimit-") || k.as_str() == "retry-after")
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut bytes = r.bytes().map(|b| b.to_vec()).unwrap_or_default();
        if content_type.contains("json") {
            let text = String::from_utf8_lossy(&bytes)
                .replace(&self.upstream_public, &self.url)
                .replace(&self.upstream, &self.url);
            bytes = text.into_bytes();
        }
        (status, content_type, extra, bytes)
    }
}

/// An XRPC error body as the reference PDS sends it.
pub fn xrpc_error(error: &str, message: &str) -> Value {
    json!({"error": error, "message": message})
}

// ---------------------------------------------------------------------------------------
// Pictures.

/// A valid 1×1 PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

/// Serves [`PNG`] at every path over HTTP/1.1 on 127.0.0.1 and counts the requests.
#[derive(Debug, Clone)]
pub struct ImageServer {
    pub url: String,
    requests: Arc<AtomicU64>,
}

impl ImageServer {
    pub fn start() -> ImageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind image server");
        let url = format!("http://{}/cover.png", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    PNG.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(PNG);
            }
        });
        ImageServer { url, requests }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}
