//! An X (Twitter API v2) server for the tests: OAuth 2.0 with PKCE, posting, the user
//! timeline and the mentions timeline, over real HTTP/1.1 on 127.0.0.1, with the behaviours
//! a client has to get right (`shared/api/networks.md` §3 and §5):
//!
//! - OAuth 2.0 Authorization Code with PKCE: an authorize page that redirects with `code`
//!   and `state` (approval is given by the `X-Emulator-User` header, standing in for the
//!   browser's session), codes that live 30 s and work once, S256 and plain verifiers,
//!   confidential clients (HTTP Basic) and public ones (`client_id` in the body), access
//!   tokens that expire (2 h of emulator time by default), refresh tokens that **rotate**:
//!   each refresh kills the one used, and a used one is refused with 400
//!   `{"error":"invalid_request","error_description":"Value passed for the token was invalid."}`;
//! - 401 `about:blank` problem JSON for a missing, unknown or expired access token; scopes
//!   checked per endpoint (403 without `tweet.write` for a post);
//! - `POST /2/tweets` → 201 with `data.id`; URLs in the text become `https://t.co/…` links
//!   with `entities.urls[].expanded_url`; weighted length (280, URLs 23, code points outside
//!   the light ranges 2) → 400; the same text again from the same author → 403 "duplicate
//!   content" problem; replies get the replied-to author's handle auto-populated in front
//!   (not counted), a `conversation_id` and `referenced_tweets`;
//! - the 2026 self-serve rule: a reply is refused (403) unless the post replied to was
//!   written by the replier, mentions it in its own words, or quotes one of its posts
//!   (auto-populated reply mentions do not summon, by default);
//! - `GET /2/users/{id}/tweets` and `/mentions` newest first with `since_id`, `until_id`,
//!   `start_time`, `end_time`, `max_results` (5–100), `pagination_token`/`meta.next_token`,
//!   `data` omitted when empty, `tweet.fields`, `expansions=author_id` with
//!   `includes.users`; unknown parameters and field names are 400; only the 800 most recent
//!   mentions are reachable;
//! - the v2.167 spelling (`post.fields`, `referenced_posts`, `edit_history_post_ids`,
//!   `includes.posts`) as a switch ([`X::set_renamed_fields`]): then the old one is refused;
//! - `x-rate-limit-limit/remaining/reset` (epoch seconds) on every API answer, per user and
//!   endpoint in 15-minute windows (100 posts, 300 mention reads, 900 timeline reads, 75
//!   `users/me`), 429 problem when spent; a usage cap ([`X::set_usage_capped`]): 429 with
//!   type `…/usage-capped`;
//! - injected faults: error statuses, a connection dropped after the post was created,
//!   slowness, 429, usage cap.
//!
//! The server runs on its own thread and runtime and stops when the [`X`] value is dropped.
//! Time is the wall clock plus [`X::advance_clock`].
//!
//! ```no_run
//! use presence_e2e::x::{Fault, X};
//! let x = X::start();
//! let me = x.add_user("blogger", "The Blogger");
//! x.add_client("cid", None, "http://127.0.0.1:8765/callback");
//! let (access, refresh) = x.issue_tokens("blogger", "cid");
//! let alice = x.add_user("alice", "Alice");
//! let post = x.post_as("alice", "@blogger nice post", None); // a mention
//! x.inject("POST", "/2/tweets", Fault::DropAfterCreate, 1);
//! assert!(x.refresh_token_valid(&refresh));
//! ```
//!
//! Not emulated: media, polls, deletes and edits, likes and reposts, OAuth 1.0a, app-only
//! bearer tokens, the 24-hour limits, `GET /2/tweets/search`, streaming, NFC normalisation
//! and the emoji-sequence rule in the length (each code point is weighed).

mod api;
pub(crate) mod http;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::fault_queue::FaultQueue;
pub use crate::mastodon::RecordedRequest;

const USER_ID_BASE: u64 = 2_244_994_000;
const POST_ID_BASE: u64 = 1_870_000_000_000_000_000;

/// How long an access token lives unless changed ([`X::set_access_token_lifetime`]).
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// How long an authorization code can be exchanged.
pub const AUTH_CODE_LIFETIME: Duration = Duration::from_secs(30);
/// The weighted length limit of a post.
pub const MAX_WEIGHTED_LENGTH: usize = 280;
/// X's words for a reply the self-serve rule forbids.
pub const NOT_SUMMONED_DETAIL: &str = "Reply to this conversation is not allowed because you have not been mentioned or otherwise engaged by the author of the post you are replying to.";
/// X's words for a post whose text the author has posted before.
pub const DUPLICATE_DETAIL: &str = "You are not allowed to create a Tweet with duplicate content.";
/// The header that approves an authorization request, naming the user (the emulator's
/// stand-in for a logged-in browser).
pub const APPROVE_HEADER: &str = "x-emulator-user";

/// A failure injected in front of (or around) the normal handling of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a problem body; nothing is done.
    Status(u16),
    /// Handle the request normally (a post is created), then close the connection without
    /// an answer.
    DropAfterCreate,
    /// Handle the request normally, then answer this much later.
    Slow(Duration),
    /// 429 Too Many Requests with the rate-limit headers; nothing is done.
    TooManyRequests,
    /// 429 with type `https://api.x.com/2/problems/usage-capped`; nothing is done.
    UsageCapped,
}

#[derive(Debug, Clone)]
struct User {
    id: u64,
    username: String,
    name: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct UrlEntity {
    start: usize,
    end: usize,
    url: String,
    expanded: String,
}

#[derive(Debug, Clone)]
struct MentionEntity {
    start: usize,
    end: usize,
    username: String,
    id: u64,
}

#[derive(Debug, Clone)]
struct Post {
    id: u64,
    author: u64,
    /// As shown: auto-populated mentions in front, links as t.co.
    text: String,
    /// As the author wrote it (what the duplicate check compares).
    written: String,
    urls: Vec<UrlEntity>,
    mentions: Vec<MentionEntity>,
    /// How many of the leading mentions X added (reply metadata), not the author.
    auto_mentions: usize,
    created_at: DateTime<Utc>,
    conversation_id: u64,
    in_reply_to_user_id: Option<u64>,
    /// (`replied_to` | `quoted`, id)
    referenced: Vec<(String, u64)>,
}

#[derive(Debug, Clone)]
struct Client {
    secret: Option<String>,
    redirect_uris: Vec<String>,
}

#[derive(Debug, Clone)]
struct AuthCode {
    client_id: String,
    user: u64,
    redirect_uri: String,
    challenge: String,
    method: String,
    scope: String,
    expires: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct AccessToken {
    user: u64,
    scope: String,
    expires: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct RefreshToken {
    user: u64,
    client_id: String,
    scope: String,
    valid: bool,
}

#[derive(Debug, Clone)]
struct Config {
    access_lifetime: Duration,
    renamed_fields: bool,
    usage_capped: bool,
    summoned_only: bool,
    auto_mentions_summon: bool,
    limits: HashMap<String, u32>,
}

#[derive(Debug)]
struct State {
    clock_offset: chrono::Duration,
    next_user: u64,
    next_post: u64,
    next_token: u64,
    users: BTreeMap<u64, User>,
    posts: BTreeMap<u64, Post>,
    clients: BTreeMap<String, Client>,
    codes: HashMap<String, AuthCode>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    config: Config,
    /// (user, endpoint) → (window number, hits).
    rate: HashMap<(u64, String), (i64, u32)>,
    faults: FaultQueue<Fault>,
    requests: Vec<RecordedRequest>,
}

fn iso_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The default rate limits per user and 15 minutes (`shared/api/networks.md` §3.5).
fn default_limits() -> HashMap<String, u32> {
    [(api::EP_CREATE, 100), (api::EP_MENTIONS, 300), (api::EP_TWEETS, 900), (api::EP_ME, 75)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

impl State {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    fn user_by_name(&self, username: &str) -> Option<u64> {
        let name = username.trim_start_matches('@');
        self.users.values().find(|u| u.username.eq_ignore_ascii_case(name)).map(|u| u.id)
    }

    /// A user by username or id.
    fn find_user(&self, reference: &str) -> Option<u64> {
        if let Ok(id) = reference.parse::<u64>() {
            if self.users.contains_key(&id) {
                return Some(id);
            }
        }
        self.user_by_name(reference)
    }

    fn new_token(&mut self, kind: &str) -> String {
        self.next_token += 1;
        let n = self.next_token;
        // Opaque, unguessable enough for a test, and never reused.
        let mix = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (self.now().timestamp_micros() as u64))
            .rotate_left(17);
        format!("{kind}{n}x{mix:016x}")
    }

    fn issue(&mut self, user: u64, client_id: &str, scope: &str) -> (String, Option<String>) {
        let access = self.new_token("AT");
        let expires = self.now()
            + chrono::Duration::from_std(self.config.access_lifetime)
                .unwrap_or_else(|_| chrono::Duration::hours(2));
        self.access.insert(access.clone(), AccessToken { user, scope: scope.to_owned(), expires });
        let refresh = scope.split_whitespace().any(|s| s == "offline.access").then(|| {
            let r = self.new_token("RT");
            self.refresh.insert(
                r.clone(),
                RefreshToken {
                    user,
                    client_id: client_id.to_owned(),
                    scope: scope.to_owned(),
                    valid: true,
                },
            );
            r
        });
        (access, refresh)
    }

    fn t_co(&mut self) -> String {
        self.next_token += 1;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut n = self.next_token.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let code: String = (0..10)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect();
        format!("https://t.co/{code}")
    }

    /// Creates a post as it is written by `author` (no validation); returns its id.
    fn create_post(
        &mut self,
        author: u64,
        written: &str,
        reply_to: Option<u64>,
        quote: Option<u64>,
    ) -> u64 {
        self.next_post += 1;
        let id = POST_ID_BASE + self.next_post * 1000 + (self.next_post % 997);
        let target = reply_to.and_then(|r| self.posts.get(&r)).cloned();
        // Replying to someone else puts their handle in front (reply metadata).
        let mut prefix = String::new();
        let mut auto_mentions = 0;
        if let Some(t) = &target {
            if t.author != author {
                if let Some(u) = self.users.get(&t.author) {
                    let handle = format!("@{}", u.username);
                    let starts = written
                        .trim_start()
                        .get(..handle.len())
                        .is_some_and(|h| h.eq_ignore_ascii_case(&handle));
                    if !starts {
                        prefix = format!("{handle} ");
                        auto_mentions = 1;
                    }
                }
            }
        }
        let full = format!("{prefix}{}", written.trim());
        let (text, urls) = self.shorten_links(&full);
        let mentions = self.find_mentions(&text);
        let mut referenced = Vec::new();
        if let Some(t) = &target {
            referenced.push(("replied_to".to_owned(), t.id));
        }
        if let Some(q) = quote.filter(|q| self.posts.contains_key(q)) {
            referenced.push(("quoted".to_owned(), q));
        }
        let post = Post {
            id,
            author,
            text,
            written: written.trim().to_owned(),
            urls,
            mentions,
            auto_mentions,
            created_at: self.now(),
            conversation_id: target.as_ref().map_or(id, |t| t.conversation_id),
            in_reply_to_user_id: target.as_ref().map(|t| t.author),
            referenced,
        };
        self.posts.insert(id, post);
        id
    }

    /// Replaces every http(s) link by a t.co link; the entities index the new text in code
    /// points.
    fn shorten_links(&mut self, text: &str) -> (String, Vec<UrlEntity>) {
        let mut out = String::new();
        let mut urls = Vec::new();
        let mut rest = text;
        while let Some(at) = api::find_link(rest) {
            out.push_str(&rest[..at.0]);
            let link = &rest[at.0..at.1];
            let short = self.t_co();
            let start = out.chars().count();
            out.push_str(&short);
            urls.push(UrlEntity {
                start,
                end: start + short.chars().count(),
                url: short,
                expanded: link.to_owned(),
            });
            rest = &rest[at.1..];
        }
        out.push_str(rest);
        (out, urls)
    }

    /// `@username` of known users, as X recognises them (after a non-word character).
    fn find_mentions(&self, text: &str) -> Vec<MentionEntity> {
        let chars: Vec<char> = text.chars().collect();
        let mut found = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            if chars[i] == '@' && (i == 0 || !word(chars[i - 1])) {
                let end = (i + 1..chars.len()).find(|&j| !word(chars[j])).unwrap_or(chars.len());
                if end > i + 1 && end - i - 1 <= 15 {
                    let name: String = chars[i + 1..end].iter().collect();
                    if let Some(u) = self.user_by_name(&name).and_then(|id| self.users.get(&id)) {
                        found.push(MentionEntity {
                            start: i,
                            end,
                            username: u.username.clone(),
                            id: u.id,
                        });
                    }
                }
                i = end.max(i + 1);
            } else {
                i += 1;
            }
        }
        found
    }

    /// Whether `replier` may reply to `target` under the self-serve rule.
    fn summoned(&self, replier: u64, target: &Post) -> bool {
        if !self.config.summoned_only || target.author == replier {
            return true;
        }
        let skip = if self.config.auto_mentions_summon { 0 } else { target.auto_mentions };
        if target.mentions.iter().skip(skip).any(|m| m.id == replier) {
            return true;
        }
        target.referenced.iter().any(|(kind, id)| {
            kind == "quoted" && self.posts.get(id).is_some_and(|q| q.author == replier)
        })
    }

    /// The post as the API shows it with `fields` (None: every field), in the old or the
    /// v2.167 spelling.
    fn post_json(&self, p: &Post, fields: Option<&[String]>, renamed: bool) -> Value {
        let want = |f: &str| fields.map_or(true, |fs| fs.iter().any(|x| x == f));
        let mut v = json!({ "id": p.id.to_string(), "text": p.text });
        let history = if renamed { "edit_history_post_ids" } else { "edit_history_tweet_ids" };
        v[history] = json!([p.id.to_string()]);
        if want("created_at") {
            v["created_at"] = json!(iso_millis(p.created_at));
        }
        if want("author_id") {
            v["author_id"] = json!(p.author.to_string());
        }
        if want("conversation_id") {
            v["conversation_id"] = json!(p.conversation_id.to_string());
        }
        if want("in_reply_to_user_id") {
            if let Some(u) = p.in_reply_to_user_id {
                v["in_reply_to_user_id"] = json!(u.to_string());
            }
        }
        let referenced = if renamed { "referenced_posts" } else { "referenced_tweets" };
        if want(referenced) && !p.referenced.is_empty() {
            v[referenced] = Value::Array(
                p.referenced
                    .iter()
                    .map(|(kind, id)| json!({"type": kind, "id": id.to_string()}))
                    .collect(),
            );
        }
        if want("entities") && (!p.urls.is_empty() || !p.mentions.is_empty()) {
            let mut e = json!({});
            if !p.mentions.is_empty() {
                e["mentions"] = p
                    .mentions
                    .iter()
                    .map(|m| json!({"start": m.start, "end": m.end, "username": m.username, "id": m.id.to_string()}))
                    .collect();
            }
            if !p.urls.is_empty() {
                e["urls"] = p
                    .urls
                    .iter()
                    .map(|u| {
                        let display = u
                            .expanded
                            .trim_start_matches("https://")
                            .trim_start_matches("http://")
                            .to_owned();
                        json!({"start": u.start, "end": u.end, "url": u.url,
                               "expanded_url": u.expanded, "display_url": display})
                    })
                    .collect();
            }
            v["entities"] = e;
        }
        v
    }

    fn user_json(&self, id: u64, fields: &[String]) -> Value {
        let Some(u) = self.users.get(&id) else { return Value::Null };
        let mut v = json!({"id": u.id.to_string(), "name": u.name, "username": u.username});
        if fields.iter().any(|f| f == "created_at") {
            v["created_at"] = json!(iso_millis(u.created_at));
        }
        if fields.iter().any(|f| f == "protected") {
            v["protected"] = json!(false);
        }
        v
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
pub struct X {
    state: Arc<Mutex<State>>,
    served: http::Served,
}

impl X {
    /// Starts a server on 127.0.0.1 (a free port) with no users and no clients.
    pub fn start() -> X {
        let state = Arc::new(Mutex::new(State {
            clock_offset: chrono::Duration::zero(),
            next_user: 0,
            next_post: 0,
            next_token: 0,
            users: BTreeMap::new(),
            posts: BTreeMap::new(),
            clients: BTreeMap::new(),
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            config: Config {
                access_lifetime: ACCESS_TOKEN_LIFETIME,
                renamed_fields: false,
                usage_capped: false,
                summoned_only: true,
                auto_mentions_summon: false,
                limits: default_limits(),
            },
            rate: HashMap::new(),
            faults: FaultQueue::default(),
            requests: Vec::new(),
        }));
        let handled = state.clone();
        let served = http::serve("x-emulator", Arc::new(move |call| api::handle(&handled, call)));
        X { state, served }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `http://127.0.0.1:PORT`: the API base (also the authorize page's site).
    pub fn url(&self) -> String {
        format!("http://{}", self.served.addr)
    }

    /// Adds a user; returns its id.
    pub fn add_user(&self, username: &str, name: &str) -> String {
        let mut s = self.lock();
        assert!(s.user_by_name(username).is_none(), "user {username} exists already");
        s.next_user += 1;
        let id = USER_ID_BASE + s.next_user * 7;
        let user =
            User { id, username: username.to_owned(), name: name.to_owned(), created_at: s.now() };
        s.users.insert(id, user);
        id.to_string()
    }

    /// The id of a user (by username or id).
    pub fn user_id(&self, user: &str) -> String {
        self.lock().find_user(user).unwrap_or_else(|| panic!("no user {user}")).to_string()
    }

    /// Registers an OAuth 2.0 app: confidential with a secret, public without.
    pub fn add_client(&self, client_id: &str, secret: Option<&str>, redirect_uri: &str) {
        let mut s = self.lock();
        let client = s
            .clients
            .entry(client_id.to_owned())
            .or_insert(Client { secret: secret.map(str::to_owned), redirect_uris: Vec::new() });
        client.redirect_uris.push(redirect_uri.to_owned());
    }

    /// What the authorize page does when `user` approves: a code for this client, redirect
    /// URI and PKCE challenge (S256), with the full scopes.
    pub fn authorize(
        &self,
        client_id: &str,
        user: &str,
        redirect_uri: &str,
        code_challenge: &str,
    ) -> String {
        let mut s = self.lock();
        let user = s.find_user(user).unwrap_or_else(|| panic!("no user {user}"));
        assert!(s.clients.contains_key(client_id), "no client {client_id}");
        let code = s.new_token("AC");
        let expires = s.now() + chrono::Duration::seconds(AUTH_CODE_LIFETIME.as_secs() as i64);
        s.codes.insert(
            code.clone(),
            AuthCode {
                client_id: client_id.to_owned(),
                user,
                redirect_uri: redirect_uri.to_owned(),
                challenge: code_challenge.to_owned(),
                method: "S256".into(),
                scope: api::ALL_SCOPES.into(),
                expires,
            },
        );
        code
    }

    /// Tokens for `user` and `client_id` as a completed login would give them (full scopes,
    /// with `offline.access`): (access token, refresh token).
    pub fn issue_tokens(&self, user: &str, client_id: &str) -> (String, String) {
        let mut s = self.lock();
        let user = s.find_user(user).unwrap_or_else(|| panic!("no user {user}"));
        let (access, refresh) = s.issue(user, client_id, api::ALL_SCOPES);
        (access, refresh.unwrap_or_default())
    }

    /// The session a completed `presencectl login x` leaves for `user` (name or id) with
    /// this client, as presenced stores it (presenced/src/network/x.rs): fresh tokens, their
    /// expiry and scope, the user's id and name. Store it with `Sandbox::seed_account_data`.
    pub fn session_for(&self, user: &str, client_id: &str) -> BTreeMap<String, String> {
        let (access, refresh) = self.issue_tokens(user, client_id);
        let (id, username) = {
            let s = self.lock();
            let id = s.find_user(user).unwrap_or_else(|| panic!("no user {user}"));
            (id, s.users[&id].username.clone())
        };
        let expires = Utc::now().timestamp() + ACCESS_TOKEN_LIFETIME.as_secs() as i64;
        [
            ("access_token", access),
            ("refresh_token", refresh),
            ("expires_at", expires.to_string()),
            ("scope", presenced::network::x::SCOPES.to_owned()),
            ("user_id", id.to_string()),
            ("username", username),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Whether a refresh token can still be used (rotated ones cannot).
    pub fn refresh_token_valid(&self, token: &str) -> bool {
        self.lock().refresh.get(token).is_some_and(|r| r.valid)
    }

    /// Whether an access token is known and not expired.
    pub fn access_token_valid(&self, token: &str) -> bool {
        let s = self.lock();
        let now = s.now();
        s.access.get(token).is_some_and(|a| a.expires > now)
    }

    /// The refresh tokens issued so far that are still valid.
    pub fn valid_refresh_tokens(&self) -> Vec<String> {
        self.lock().refresh.iter().filter(|(_, r)| r.valid).map(|(t, _)| t.clone()).collect()
    }

    /// Revokes every token of a user (as the user removing the app would).
    pub fn revoke_tokens(&self, user: &str) {
        let mut s = self.lock();
        let user = s.find_user(user).unwrap_or_else(|| panic!("no user {user}"));
        s.access.retain(|_, a| a.user != user);
        for r in s.refresh.values_mut().filter(|r| r.user == user) {
            r.valid = false;
        }
    }

    /// The life of access tokens issued from now on (default 2 hours).
    pub fn set_access_token_lifetime(&self, life: Duration) {
        self.lock().config.access_lifetime = life;
    }

    /// Posts as `user` (by username or id), as if written in the app; returns the id. A
    /// reply (`in_reply_to`) gets the replied-to author's handle in front unless it is
    /// already there. No validation.
    pub fn post_as(&self, user: &str, text: &str, in_reply_to: Option<&str>) -> String {
        let mut s = self.lock();
        let author = s.find_user(user).unwrap_or_else(|| panic!("no user {user}"));
        let reply_to = in_reply_to.map(|r| {
            r.parse::<u64>()
                .ok()
                .filter(|r| s.posts.contains_key(r))
                .unwrap_or_else(|| panic!("no post {r}"))
        });
        s.create_post(author, text, reply_to, None).to_string()
    }

    /// A quote of `quoted` by `user`; returns the id.
    pub fn quote_as(&self, user: &str, text: &str, quoted: &str) -> String {
        let mut s = self.lock();
        let author = s.find_user(user).unwrap_or_else(|| panic!("no user {user}"));
        let quoted = quoted.parse::<u64>().ok().filter(|q| s.posts.contains_key(q));
        assert!(quoted.is_some(), "no post to quote");
        s.create_post(author, text, None, quoted).to_string()
    }

    /// Every post of a user, newest first, with every field (old spelling).
    pub fn posts_of(&self, user: &str) -> Vec<Value> {
        let s = self.lock();
        let id = s.find_user(user).unwrap_or_else(|| panic!("no user {user}"));
        s.posts
            .values()
            .rev()
            .filter(|p| p.author == id)
            .map(|p| s.post_json(p, None, false))
            .collect()
    }

    /// One post with every field.
    pub fn post(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        let p = s.posts.get(&id.parse::<u64>().ok()?)?;
        Some(s.post_json(p, None, false))
    }

    /// The posts that mention a user, newest first, with every field.
    pub fn mentions_of(&self, user: &str) -> Vec<Value> {
        let s = self.lock();
        let id = s.find_user(user).unwrap_or_else(|| panic!("no user {user}"));
        s.posts
            .values()
            .rev()
            .filter(|p| p.mentions.iter().any(|m| m.id == id))
            .map(|p| s.post_json(p, None, false))
            .collect()
    }

    /// Applies `fault` to the next `times` requests whose method is `method` (`"*"`: any)
    /// and whose path starts with `path_prefix`.
    pub fn inject(&self, method: &str, path_prefix: &str, fault: Fault, times: usize) {
        self.lock().faults.repeat(method, path_prefix, fault, times);
    }

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

    /// Moves the emulator's clock forward (token and code expiry, rate windows, times).
    pub fn advance_clock(&self, by: Duration) {
        let mut s = self.lock();
        s.clock_offset +=
            chrono::Duration::from_std(by).unwrap_or_else(|_| chrono::Duration::zero());
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.lock().now()
    }

    /// Speak the v2.167 spelling (`post.fields`, `referenced_posts`, `includes.posts`,
    /// `edit_history_post_ids`) and refuse the old one, or the reverse (the default).
    pub fn set_renamed_fields(&self, renamed: bool) {
        self.lock().config.renamed_fields = renamed;
    }

    /// Every API request answers 429 usage-capped while set.
    pub fn set_usage_capped(&self, capped: bool) {
        self.lock().config.usage_capped = capped;
    }

    /// Requests allowed per user and 15 minutes on an endpoint: `"POST /2/tweets"`,
    /// `"GET /2/users/:id/mentions"`, `"GET /2/users/:id/tweets"`, `"GET /2/users/me"`.
    /// Resets the counters.
    pub fn set_rate_limit(&self, endpoint: &str, limit: u32) {
        let mut s = self.lock();
        assert!(s.config.limits.contains_key(endpoint), "no endpoint {endpoint}");
        s.config.limits.insert(endpoint.to_owned(), limit);
        s.rate.clear();
    }

    /// Whether replies must be summoned (default true, as for self-serve apps).
    pub fn set_summoned_only(&self, on: bool) {
        self.lock().config.summoned_only = on;
    }

    /// Whether the handle X puts in front of a reply counts as summoning (default false:
    /// only mentions the author wrote, or a quote, do).
    pub fn set_auto_mentions_summon(&self, on: bool) {
        self.lock().config.auto_mentions_summon = on;
    }
}
