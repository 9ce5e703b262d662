//! A Mastodon server for the tests: the REST and streaming (SSE) API that presenced uses, over
//! real HTTP/1.1 on 127.0.0.1, with the behaviours of the real server that a client has to
//! get right (see `shared/api/networks.md` §1 and §5):
//!
//! - `Idempotency-Key` per account for one hour of emulator time: a repeat returns the first
//!   status, bodies are not compared, the key is kept only once the create succeeded, and
//!   concurrent repeats are serialized so they never double-post;
//! - length counted in grapheme clusters with every URL as 23 and remote mentions without
//!   their domain; blank and over-long statuses are 422 with Mastodon's messages;
//! - notifications newest first with opaque increasing ids, `max_id`/`since_id`/`min_id`
//!   exactly as `to_a_paginated_by_id`, and `Link` headers built as Rails builds them;
//! - a mention notification only when the status mentions the account (a reply without an
//!   @mention notifies nobody);
//! - thread context (ancestors oldest first, descendants depth first, self-replies promoted);
//! - SSE streaming that opens with `:)`, beats `:thump`, sends `event:`/`data:` pairs and
//!   never replays;
//! - `X-RateLimit-*` headers with an ISO 8601 reset, 429 `Too many requests` with no
//!   `Retry-After`;
//! - injected faults (error statuses, dropped connections after the create, slowness, 429,
//!   truncated JSON, HTML bodies) and stream drops (all at once, or in the middle of an event).
//!
//! The server runs on its own thread and tokio runtime, so plain `#[test]` functions can use
//! it; it stops when the [`Mastodon`] value is dropped. Everything is in memory; ids come from
//! counters (increasing, fixed width, as strings); time is the wall clock plus whatever
//! [`Mastodon::advance_clock`] added.
//!
//! ```no_run
//! use presence_e2e::mastodon::{Fault, Mastodon};
//! let masto = Mastodon::start();
//! let me = masto.add_account("blogger", "Blogger");
//! let token = masto.token_for(&me);
//! let alice = masto.add_remote_account("alice", "other.host", "Alice");
//! // ... configure presenced with masto.url() and token, let it announce, then:
//! let article = masto.statuses_of(&me)[0]["id"].as_str().unwrap().to_owned();
//! masto.post_as(&alice, "@blogger nice post", Some(&article), &[]); // a mention
//! masto.post_as(&alice, "no mention", Some(&article), &[]); // in the thread, no notification
//! masto.inject("POST", "/api/v1/statuses", Fault::DropAfterCreate, 1);
//! let posts = masto.requests_to("POST", "/api/v1/statuses");
//! assert!(posts.iter().all(|r| r.header("idempotency-key").is_some()));
//! ```
//!
//! Not emulated: media, polls, scheduled statuses, edits and deletes, follows (so no home
//! timeline beyond one's own statuses), OAuth scopes (every token can do everything), the
//! separate 300-statuses-per-3-hours limiter, WebSocket streaming, grouped notifications.

mod server;
pub mod text;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::fault_queue::FaultQueue;

const ACCOUNT_ID_BASE: u64 = 109_000_000_000_000_000;
const STATUS_ID_BASE: u64 = 113_000_000_000_000_000;
const NOTIFICATION_ID_BASE: u64 = 34_975_000;

/// How long an `Idempotency-Key` is remembered (`SETEX 3600`).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(3600);

/// A failure injected in front of (or around) the normal handling of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a Mastodon-shaped `{"error": ...}` body; nothing is done.
    Status(u16),
    /// Handle the request normally (a POST /api/v1/statuses creates the status and keeps its
    /// idempotency key), then close the connection without sending any response.
    DropAfterCreate,
    /// Handle the request normally, then wait this long before answering (a client that
    /// gives up meanwhile has still created what it asked for).
    Slow(Duration),
    /// 429 `Too many requests` as the rate limiter sends it; nothing is done.
    TooManyRequests,
    /// Handle the request normally, then answer 200 with the JSON cut in half.
    Garbage,
    /// Answer 200 with an HTML page (`text/html`), as a proxy's maintenance page; nothing is
    /// done.
    WrongContentType,
}

/// One request as the emulator received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path_and_query: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status answered; None while in flight, for a dropped connection, or a stream.
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }

    /// The decoded query parameters, in order (array keys keep their `[]`).
    pub fn query(&self) -> Vec<(String, String)> {
        match self.path_and_query.split_once('?') {
            Some((_, q)) => url::form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
            None => Vec::new(),
        }
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone)]
struct Account {
    id: u64,
    username: String,
    /// None for a local account.
    domain: Option<String>,
    display_name: String,
    created_at: DateTime<Utc>,
    token: Option<String>,
}

impl Account {
    fn acct(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}@{d}", self.username),
            None => self.username.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Status {
    id: u64,
    account_id: u64,
    text: String,
    content: String,
    spoiler_text: String,
    visibility: String,
    language: Option<String>,
    sensitive: bool,
    in_reply_to_id: Option<u64>,
    in_reply_to_account_id: Option<u64>,
    mentions: Vec<u64>,
    tags: Vec<String>,
    created_at: DateTime<Utc>,
    /// Posted through the API (has an application), rather than by [`Mastodon::post_as`].
    via_api: bool,
}

#[derive(Debug, Clone)]
struct Notification {
    id: u64,
    /// Whose notification it is.
    account_id: u64,
    from_account_id: u64,
    status_id: u64,
    created_at: DateTime<Utc>,
}

#[derive(Debug)]
enum StreamCmd {
    /// A complete event, written as is.
    Event(String),
    /// An event of which only the first half is written before the connection is cut.
    Cut(String),
    /// Close the connection (as a server restart or network drop would).
    Close,
}

#[derive(Debug)]
struct StreamReg {
    account_id: u64,
    notifications_only: bool,
    tx: tokio::sync::mpsc::UnboundedSender<StreamCmd>,
}

#[derive(Debug, Clone)]
struct Config {
    max_characters: usize,
    rate_limit: u32,
    rate_period: Duration,
    heartbeat: Duration,
    v2_instance: bool,
}

#[derive(Debug)]
struct State {
    /// `http://127.0.0.1:PORT`.
    base: String,
    config: Config,
    clock_offset: chrono::Duration,
    next_account: u64,
    next_status: u64,
    next_notification: u64,
    accounts: BTreeMap<u64, Account>,
    statuses: BTreeMap<u64, Status>,
    notifications: BTreeMap<u64, Notification>,
    /// (account, key) → (status, expiry).
    idempotency: HashMap<(u64, String), (u64, DateTime<Utc>)>,
    /// bucket → (window number, hits in that window).
    rate: HashMap<String, (i64, u32)>,
    faults: FaultQueue<Fault>,
    requests: Vec<RecordedRequest>,
    streams: Vec<StreamReg>,
    cut_next_events: usize,
}

/// Rate-limit figures for one request's headers.
#[derive(Debug, Clone)]
struct RateInfo {
    limit: u32,
    remaining: u32,
    reset: String,
    exceeded: bool,
}

/// What a status is created from, once validated.
#[derive(Debug)]
struct NewStatus<'a> {
    author: u64,
    text: &'a str,
    spoiler_text: &'a str,
    visibility: &'a str,
    language: Option<String>,
    sensitive: bool,
    in_reply_to: Option<u64>,
    extra_mentions: Vec<u64>,
    via_api: bool,
}

fn iso_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl State {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    fn account_by_token(&self, token: &str) -> Option<u64> {
        self.accounts.values().find(|a| a.token.as_deref() == Some(token)).map(|a| a.id)
    }

    /// An account by id or by acct (`user` for local, `user@domain` for remote).
    fn find_account(&self, reference: &str) -> Option<u64> {
        let reference = reference.trim_start_matches('@');
        if let Ok(id) = reference.parse::<u64>() {
            if self.accounts.contains_key(&id) {
                return Some(id);
            }
        }
        self.accounts.values().find(|a| a.acct().eq_ignore_ascii_case(reference)).map(|a| a.id)
    }

    /// The account a written mention (`user` or `user@domain`) names, as the formatter
    /// resolves it: `user` is local, `user@<our host>` too.
    fn resolve_mention(&self, written: &str) -> Option<u64> {
        let (user, domain) = match written.split_once('@') {
            Some((u, d)) => (u, Some(d)),
            None => (written, None),
        };
        let host = self.base.trim_start_matches("http://");
        let domain = domain.filter(|d| !d.eq_ignore_ascii_case(host));
        self.accounts
            .values()
            .find(|a| {
                a.username.eq_ignore_ascii_case(user)
                    && match (&a.domain, domain) {
                        (None, None) => true,
                        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                        _ => false,
                    }
            })
            .map(|a| a.id)
    }

    fn profile_url(&self, a: &Account) -> String {
        match &a.domain {
            Some(d) => format!("https://{d}/@{}", a.username),
            None => format!("{}/@{}", self.base, a.username),
        }
    }

    fn actor_uri(&self, a: &Account) -> String {
        match &a.domain {
            Some(d) => format!("https://{d}/users/{}", a.username),
            None => format!("{}/users/{}", self.base, a.username),
        }
    }

    fn add_account(&mut self, username: &str, domain: Option<&str>, display_name: &str) -> u64 {
        let acct = match domain {
            Some(d) => format!("{username}@{d}"),
            None => username.to_owned(),
        };
        assert!(self.find_account(&acct).is_none(), "account {acct} exists already");
        self.next_account += 1;
        let id = ACCOUNT_ID_BASE + self.next_account;
        let token = domain.is_none().then(|| format!("emu-{username}-{}", self.next_account));
        let account = Account {
            id,
            username: username.to_owned(),
            domain: domain.map(str::to_owned),
            display_name: display_name.to_owned(),
            created_at: self.now(),
            token,
        };
        self.accounts.insert(id, account);
        id
    }

    /// Whether `viewer` (None: anonymous) may see the status.
    fn visible(&self, s: &Status, viewer: Option<u64>) -> bool {
        match s.visibility.as_str() {
            "public" | "unlisted" => true,
            // Followers are not emulated: a private status is seen by its author and the
            // accounts it mentions, like a direct one.
            _ => viewer.is_some_and(|v| v == s.account_id || s.mentions.contains(&v)),
        }
    }

    fn statuses_count(&self, account_id: u64) -> usize {
        self.statuses.values().filter(|s| s.account_id == account_id).count()
    }

    fn account_json(&self, id: u64, with_source: bool) -> Value {
        let Some(a) = self.accounts.get(&id) else { return Value::Null };
        let last_status_at = self
            .statuses
            .values()
            .rev()
            .find(|s| s.account_id == id)
            .map(|s| s.created_at.format("%Y-%m-%d").to_string());
        let midnight = a.created_at.date_naive().and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let avatar = format!("{}/avatars/original/missing.png", self.base);
        let header = format!("{}/headers/original/missing.png", self.base);
        let mut v = json!({
            "id": id.to_string(),
            "username": a.username,
            "acct": a.acct(),
            "display_name": a.display_name,
            "locked": false,
            "bot": false,
            "discoverable": true,
            "indexable": false,
            "group": false,
            "created_at": iso_millis(midnight.unwrap_or(a.created_at)),
            "note": "",
            "url": self.profile_url(a),
            "uri": self.actor_uri(a),
            "avatar": avatar,
            "avatar_static": avatar,
            "header": header,
            "header_static": header,
            "followers_count": 0,
            "following_count": 0,
            "statuses_count": self.statuses_count(id),
            "last_status_at": last_status_at,
            "hide_collections": null,
            "noindex": false,
            "emojis": [],
            "roles": [],
            "fields": [],
        });
        if with_source {
            v["source"] = json!({
                "privacy": "public",
                "sensitive": false,
                "language": "",
                "note": "",
                "fields": [],
                "follow_requests_count": 0,
                "hide_collections": false,
                "discoverable": true,
                "indexable": false,
            });
            v["role"] = json!({
                "id": "-99", "name": "", "permissions": "0", "color": "", "highlighted": false
            });
        }
        v
    }

    fn status_json(&self, id: u64, viewer: Option<u64>) -> Value {
        let Some(s) = self.statuses.get(&id) else { return Value::Null };
        let Some(author) = self.accounts.get(&s.account_id) else { return Value::Null };
        let (uri, url) = match &author.domain {
            Some(d) => (
                format!("https://{d}/users/{}/statuses/{id}", author.username),
                format!("https://{d}/@{}/{id}", author.username),
            ),
            None => (
                format!("{}/users/{}/statuses/{id}", self.base, author.username),
                format!("{}/@{}/{id}", self.base, author.username),
            ),
        };
        let mentions: Vec<Value> = s
            .mentions
            .iter()
            .filter_map(|m| self.accounts.get(m))
            .map(|m| {
                json!({
                    "id": m.id.to_string(),
                    "username": m.username,
                    "url": self.profile_url(m),
                    "acct": m.acct(),
                })
            })
            .collect();
        let tags: Vec<Value> = s
            .tags
            .iter()
            .map(|t| json!({"name": t, "url": format!("{}/tags/{t}", self.base)}))
            .collect();
        let replies = self.statuses.values().filter(|r| r.in_reply_to_id == Some(id)).count();
        let mut v = json!({
            "id": id.to_string(),
            "created_at": iso_millis(s.created_at),
            "in_reply_to_id": s.in_reply_to_id.map(|i| i.to_string()),
            "in_reply_to_account_id": s.in_reply_to_account_id.map(|i| i.to_string()),
            "sensitive": s.sensitive,
            "spoiler_text": s.spoiler_text,
            "visibility": s.visibility,
            "language": s.language,
            "uri": uri,
            "url": url,
            "replies_count": replies,
            "reblogs_count": 0,
            "favourites_count": 0,
            "edited_at": null,
            "content": s.content,
            "reblog": null,
            "account": self.account_json(s.account_id, false),
            "media_attachments": [],
            "mentions": mentions,
            "tags": tags,
            "emojis": [],
            // The server fetches link previews after the create (LinkCrawlWorker).
            "card": null,
            "poll": null,
        });
        if s.via_api && viewer == Some(s.account_id) {
            v["application"] = json!({"name": "presence-e2e", "website": null});
        }
        if let Some(viewer) = viewer {
            v["favourited"] = json!(false);
            v["reblogged"] = json!(false);
            v["muted"] = json!(false);
            v["bookmarked"] = json!(false);
            v["filtered"] = json!([]);
            if viewer == s.account_id {
                v["pinned"] = json!(false);
            }
        }
        v
    }

    fn notification_json(&self, id: u64) -> Value {
        let Some(n) = self.notifications.get(&id) else { return Value::Null };
        json!({
            "id": id.to_string(),
            "type": "mention",
            "created_at": iso_millis(n.created_at),
            "group_key": format!("ungrouped-{id}"),
            "account": self.account_json(n.from_account_id, false),
            "status": self.status_json(n.status_id, Some(n.account_id)),
        })
    }

    /// Creates a status (already validated): mentions, notifications, stream events.
    fn create_status(&mut self, new: NewStatus<'_>) -> u64 {
        self.next_status += 1;
        let id = STATUS_ID_BASE + self.next_status;
        let mut mentions: Vec<u64> = Vec::new();
        for written in text::written_mentions(new.text) {
            if let Some(m) = self.resolve_mention(&written) {
                if !mentions.contains(&m) {
                    mentions.push(m);
                }
            }
        }
        for m in new.extra_mentions {
            if !mentions.contains(&m) {
                mentions.push(m);
            }
        }
        let content = {
            let resolve = |written: &str| {
                let a = self.accounts.get(&self.resolve_mention(written)?)?;
                Some(text::MentionLink { url: self.profile_url(a), username: a.username.clone() })
            };
            text::to_html(new.text, &self.base, &resolve)
        };
        let in_reply_to_account_id =
            new.in_reply_to.and_then(|p| self.statuses.get(&p)).map(|p| p.account_id);
        let now = self.now();
        let status = Status {
            id,
            account_id: new.author,
            text: new.text.to_owned(),
            content,
            spoiler_text: new.spoiler_text.to_owned(),
            visibility: new.visibility.to_owned(),
            language: new.language,
            sensitive: new.sensitive || !new.spoiler_text.is_empty(),
            in_reply_to_id: new.in_reply_to,
            in_reply_to_account_id,
            mentions: mentions.clone(),
            tags: text::tags(new.text),
            created_at: now,
            via_api: new.via_api,
        };
        self.statuses.insert(id, status);

        // The author's own user streams get the status (home timeline).
        let update = format!("event: update\ndata: {}\n\n", self.status_json(id, Some(new.author)));
        self.send_to_streams(new.author, false, &update);

        for m in mentions {
            let local = self.accounts.get(&m).is_some_and(|a| a.domain.is_none());
            if !local || m == new.author {
                continue;
            }
            self.next_notification += 1;
            let nid = NOTIFICATION_ID_BASE + self.next_notification;
            self.notifications.insert(
                nid,
                Notification {
                    id: nid,
                    account_id: m,
                    from_account_id: new.author,
                    status_id: id,
                    created_at: now,
                },
            );
            let event = format!("event: notification\ndata: {}\n\n", self.notification_json(nid));
            self.send_to_streams(m, true, &event);
        }
        id
    }

    /// Sends an event to the open streams of `account_id`: all of them for a notification,
    /// the `user` ones (not `user/notification`) otherwise.
    fn send_to_streams(&mut self, account_id: u64, notification: bool, event: &str) {
        self.streams.retain(|s| !s.tx.is_closed());
        for i in 0..self.streams.len() {
            let s = &self.streams[i];
            if s.account_id != account_id || (!notification && s.notifications_only) {
                continue;
            }
            let cmd = if self.cut_next_events > 0 {
                self.cut_next_events -= 1;
                StreamCmd::Cut(event.to_owned())
            } else {
                StreamCmd::Event(event.to_owned())
            };
            let _ = self.streams[i].tx.send(cmd);
        }
    }

    /// Counts one request against `bucket` (fixed windows, as Rack::Attack).
    fn rate_hit(&mut self, bucket: &str) -> RateInfo {
        let period = self.config.rate_period.as_secs().max(1) as i64;
        let now = self.now().timestamp();
        let window = now.div_euclid(period);
        let entry = self.rate.entry(bucket.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += 1;
        let count = entry.1;
        let limit = self.config.rate_limit;
        RateInfo {
            limit,
            remaining: limit.saturating_sub(count),
            reset: self.rate_reset(),
            exceeded: count > limit,
        }
    }

    /// The end of the current rate-limit window, as Mastodon formats it (`iso8601(6)`).
    fn rate_reset(&self) -> String {
        let period = self.config.rate_period.as_secs().max(1) as i64;
        let now = self.now().timestamp();
        let reset = (now.div_euclid(period) + 1) * period;
        DateTime::from_timestamp(reset, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        self.faults.take(method, path)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The emulator; the server stops when this is dropped.
#[derive(Debug)]
pub struct Mastodon {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Mastodon {
    /// Starts a server on 127.0.0.1 (a free port) with no accounts.
    pub fn start() -> Mastodon {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind mastodon emulator");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("emulator address");
        let state = Arc::new(Mutex::new(State {
            base: format!("http://{addr}"),
            config: Config {
                max_characters: 500,
                rate_limit: 300,
                rate_period: Duration::from_secs(300),
                heartbeat: Duration::from_secs(15),
                v2_instance: true,
            },
            clock_offset: chrono::Duration::zero(),
            next_account: 0,
            next_status: 0,
            next_notification: 0,
            accounts: BTreeMap::new(),
            statuses: BTreeMap::new(),
            notifications: BTreeMap::new(),
            idempotency: HashMap::new(),
            rate: HashMap::new(),
            faults: FaultQueue::default(),
            requests: Vec::new(),
            streams: Vec::new(),
            cut_next_events: 0,
        }));
        let (shutdown, stop) = tokio::sync::watch::channel(false);
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("mastodon-emulator".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("emulator runtime");
                runtime.block_on(server::serve(listener, served, stop));
            })
            .expect("spawn emulator thread");
        Mastodon { state, addr, shutdown: Some(shutdown), thread: Some(thread) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `http://127.0.0.1:PORT`, the instance URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, the instance's domain.
    pub fn domain(&self) -> String {
        self.addr.to_string()
    }

    /// `ws://127.0.0.1:PORT`, as `configuration.urls.streaming` announces it.
    pub fn streaming_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Adds a local account with a personal access token; returns its id.
    pub fn add_account(&self, username: &str, display_name: &str) -> String {
        self.lock().add_account(username, None, display_name).to_string()
    }

    /// Adds an account of another server (acct `username@domain`, no token); returns its id.
    pub fn add_remote_account(&self, username: &str, domain: &str, display_name: &str) -> String {
        self.lock().add_account(username, Some(domain), display_name).to_string()
    }

    /// The access token of a local account (by id or acct).
    pub fn token_for(&self, account: &str) -> String {
        let s = self.lock();
        let id = s.find_account(account).unwrap_or_else(|| panic!("no account {account}"));
        s.accounts
            .get(&id)
            .and_then(|a| a.token.clone())
            .unwrap_or_else(|| panic!("{account} is remote or its token was revoked"))
    }

    /// Revokes the token of a local account: every later request with it is 401.
    pub fn revoke_token(&self, account: &str) {
        let mut s = self.lock();
        let id = s.find_account(account).unwrap_or_else(|| panic!("no account {account}"));
        if let Some(a) = s.accounts.get_mut(&id) {
            a.token = None;
        }
    }

    /// The acct of an account (`user` or `user@domain`), by id or acct.
    pub fn acct_of(&self, account: &str) -> String {
        let s = self.lock();
        let id = s.find_account(account).unwrap_or_else(|| panic!("no account {account}"));
        s.accounts.get(&id).map(Account::acct).unwrap_or_default()
    }

    /// Posts a public status as `author` (id or acct, local or remote), as if it had been
    /// written on its server and delivered here; returns its id. Mentions are those written
    /// in the text that name known accounts (`@user` a local one, `@user@domain` a remote
    /// one), plus `mentions` (ids or accts: Mention tags the remote software attached
    /// without writing them). Local mentioned accounts get a
    /// `mention` notification (and a stream event); a reply that mentions nobody notifies
    /// nobody. No validation: a remote server's status is taken as it comes.
    pub fn post_as(
        &self,
        author: &str,
        text: &str,
        in_reply_to: Option<&str>,
        mentions: &[&str],
    ) -> String {
        self.post_as_with_visibility(author, text, in_reply_to, mentions, "public")
    }

    /// [`Mastodon::post_as`] with a visibility (`public`, `unlisted`, `private`, `direct`).
    pub fn post_as_with_visibility(
        &self,
        author: &str,
        text: &str,
        in_reply_to: Option<&str>,
        mentions: &[&str],
        visibility: &str,
    ) -> String {
        let mut s = self.lock();
        let author = s.find_account(author).unwrap_or_else(|| panic!("no account {author}"));
        let in_reply_to = in_reply_to.map(|p| {
            p.parse::<u64>()
                .ok()
                .filter(|p| s.statuses.contains_key(p))
                .unwrap_or_else(|| panic!("no status {p}"))
        });
        let extra_mentions = mentions
            .iter()
            .map(|m| s.find_account(m).unwrap_or_else(|| panic!("no account {m}")))
            .collect();
        s.create_status(NewStatus {
            author,
            text,
            spoiler_text: "",
            visibility,
            language: Some("en".into()),
            sensitive: false,
            in_reply_to,
            extra_mentions,
            via_api: false,
        })
        .to_string()
    }

    /// Every status of an account (id or acct), newest first, as its author sees them.
    pub fn statuses_of(&self, account: &str) -> Vec<Value> {
        let s = self.lock();
        let id = s.find_account(account).unwrap_or_else(|| panic!("no account {account}"));
        s.statuses
            .values()
            .rev()
            .filter(|st| st.account_id == id)
            .map(|st| s.status_json(st.id, Some(id)))
            .collect()
    }

    /// One status as its author sees it, if it exists.
    pub fn status(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        let st = s.statuses.get(&id.parse::<u64>().ok()?)?;
        Some(s.status_json(st.id, Some(st.account_id)))
    }

    /// The notifications of an account (id or acct), newest first.
    pub fn notifications_of(&self, account: &str) -> Vec<Value> {
        let s = self.lock();
        let id = s.find_account(account).unwrap_or_else(|| panic!("no account {account}"));
        s.notifications
            .values()
            .rev()
            .filter(|n| n.account_id == id)
            .map(|n| s.notification_json(n.id))
            .collect()
    }

    /// Applies `fault` to the next `times` requests whose method is `method` (`"*"`: any)
    /// and whose path starts with `path_prefix`. Injections are consulted in order.
    pub fn inject(&self, method: &str, path_prefix: &str, fault: Fault, times: usize) {
        self.lock().faults.repeat(method, path_prefix, fault, times);
    }

    /// Removes the injections not used up yet.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The requests with this method and a path starting with `path_prefix`.
    pub fn requests_to(&self, method: &str, path_prefix: &str) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path().starts_with(path_prefix))
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Moves the emulator's clock forward (idempotency keys, rate-limit windows, timestamps,
    /// the `Date` header).
    pub fn advance_clock(&self, by: Duration) {
        let mut s = self.lock();
        s.clock_offset +=
            chrono::Duration::from_std(by).unwrap_or_else(|_| chrono::Duration::zero());
    }

    /// The emulator's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.lock().now()
    }

    /// `configuration.statuses.max_characters` and the limit enforced (default 500).
    pub fn set_max_characters(&self, max: usize) {
        self.lock().config.max_characters = max;
    }

    /// Requests allowed per `period` per account (or, unauthenticated, per IP); default 300
    /// per 5 minutes. Resets the counters.
    pub fn set_rate_limit(&self, limit: u32, period: Duration) {
        let mut s = self.lock();
        s.config.rate_limit = limit;
        s.config.rate_period = period;
        s.rate.clear();
    }

    /// The interval of `:thump` heartbeats on streams opened from now on (default 15 s).
    pub fn set_heartbeat(&self, every: Duration) {
        self.lock().config.heartbeat = every;
    }

    /// Whether `GET /api/v2/instance` exists (false: 404, as servers older than 4.0).
    pub fn set_instance_v2(&self, available: bool) {
        self.lock().config.v2_instance = available;
    }

    /// How many streams are open now.
    pub fn open_streams(&self) -> usize {
        let mut s = self.lock();
        s.streams.retain(|r| !r.tx.is_closed());
        s.streams.len()
    }

    /// Closes every open stream abruptly (no end of the chunked body), as a restart of the
    /// streaming server or a network drop would. Nothing is replayed on reconnect.
    pub fn drop_streams(&self) {
        let mut s = self.lock();
        for r in s.streams.drain(..) {
            let _ = r.tx.send(StreamCmd::Close);
        }
    }

    /// The next stream event (on whichever stream gets it first) is written only half, then
    /// that stream's connection is cut. The notification itself exists (REST shows it).
    pub fn cut_next_stream_event(&self) {
        self.lock().cut_next_events += 1;
    }
}

impl Drop for Mastodon {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
