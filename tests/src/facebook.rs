//! A Facebook Graph API server for the tests: Pages with Page access tokens, Page posts
//! (`/{page-id}/feed`, `/{page-id}/posts`), comments and replies (`/{object-id}/comments`),
//! over real HTTP/1.1 on 127.0.0.1, with the behaviours a client has to get right
//! (`shared/api/networks.md` §4 and §5):
//!
//! - a version prefix (`/v25.0/…`; any `vN.N`, or none);
//! - the token in `Authorization: Bearer` or the `access_token` parameter; errors as
//!   `{"error":{"message","type","code","error_subcode","fbtrace_id"}}`, mostly with HTTP 400
//!   whatever happened: 104 no token, 190 unknown or invalidated token (with the subcode of
//!   the reason: 460 password changed, 463 expired, 467 invalid), 200 posting to another
//!   Page, 100 unknown fields, missing parameters and missing objects (subcode 33), 506
//!   "Duplicate status message" when a Page posts the message of its latest post again,
//!   1609005 for a link the scraper cannot fetch, 32 for the Page's request limit;
//! - ids `{page-id}_{post-id}` for posts and `{post-id}_{comment-id}` for comments;
//! - comments: `filter=toplevel` (default) or `stream` (replies too, with `parent`),
//!   `order=chronological` (default) or `reverse_chronological`; one level of nesting (a
//!   reply to a reply lands under the top-level comment);
//! - field selection (`fields=id,message,…`, `from{id,name}`), unknown fields refused;
//! - cursor paging: `paging.cursors.before/after`, `paging.next` (a full URL that carries
//!   the access token, as Graph builds it) while there is more; `since`/`until` on posts;
//! - `X-Business-Use-Case-Usage` on every answer with the Page's share of its hourly call
//!   quota ([`Facebook::set_call_limit`]); beyond it, code 32 with
//!   `estimated_time_to_regain_access`;
//! - injected faults: error statuses with Graph's transient error (code 2), any Graph error,
//!   a connection dropped after the post was made, slowness.
//!
//! The server runs on its own thread and runtime and stops when the [`Facebook`] value is
//! dropped. Time is the wall clock plus [`Facebook::advance_clock`].
//!
//! ```no_run
//! use presence_e2e::facebook::{Facebook, Fault};
//! let fb = Facebook::start();
//! let page = fb.add_page("My Blog");
//! let token = fb.page_token(&page);
//! let jane = fb.add_user("Jane Doe");
//! // ... configure presenced with fb.url(), page and token, let it announce, then:
//! let post = fb.posts_of(&page)[0]["id"].as_str().unwrap().to_owned();
//! let comment = fb.comment_as(&jane, &post, "Great article");
//! fb.inject("POST", "/v25.0/", Fault::DropAfterCreate, 1);
//! fb.invalidate_token(&page, 460);
//! ```
//!
//! Not emulated: user tokens and `/me/accounts`, app tokens and `debug_token`, webhooks,
//! visitor posts and tags, reactions, photos and attachments, edits and deletes, scheduled
//! and unpublished posts, ranked comment ordering, `appsecret_proof`.

mod graph;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::fault_queue::FaultQueue;
pub use crate::mastodon::RecordedRequest;
use crate::x::http;

const PAGE_ID_BASE: u64 = 546_349_135_390_000;
const USER_ID_BASE: u64 = 100_012_345_000;
const POST_NUM_BASE: u64 = 1_116_689_038_356_000;
const COMMENT_NUM_BASE: u64 = 987_654_000;

/// The Graph version in [`Facebook::url`].
pub const VERSION: &str = "v25.0";
/// The Page's hourly call quota unless changed.
pub const DEFAULT_CALL_LIMIT: u32 = 4800;

/// A failure injected in front of (or around) the normal handling of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and Graph's transient error (code 2); nothing is done.
    Status(u16),
    /// Answer HTTP 400 with this Graph error code and subcode; nothing is done.
    Graph { code: i64, subcode: Option<i64> },
    /// Handle the request normally (a post or comment is made), then close the connection
    /// without an answer.
    DropAfterCreate,
    /// Handle the request normally, then answer this much later.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Page {
    id: String,
    name: String,
    token: String,
    /// Why the token no longer works (subcode), once invalidated.
    invalidated: Option<i64>,
}

#[derive(Debug, Clone)]
struct User {
    name: String,
}

#[derive(Debug, Clone)]
struct PostRec {
    seq: u64,
    id: String,
    num: String,
    page_id: String,
    message: Option<String>,
    link: Option<String>,
    created: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct CommentRec {
    seq: u64,
    id: String,
    post_id: String,
    /// The top-level comment this one replies to.
    parent: Option<String>,
    /// A Page or a user id.
    from_id: String,
    message: String,
    created: DateTime<Utc>,
}

#[derive(Debug)]
struct State {
    base: String,
    clock_offset: chrono::Duration,
    next: u64,
    pages: BTreeMap<String, Page>,
    users: BTreeMap<String, User>,
    posts: BTreeMap<u64, PostRec>,
    comments: BTreeMap<u64, CommentRec>,
    call_limit: u32,
    unreachable_links: Vec<String>,
    /// (page, hour window) → calls.
    calls: HashMap<(String, i64), u32>,
    faults: FaultQueue<Fault>,
    requests: Vec<RecordedRequest>,
}

/// Graph's time format: `2026-01-01T12:00:00+0000`.
fn graph_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

impl State {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn post(&self, id: &str) -> Option<&PostRec> {
        self.posts.values().find(|p| p.id == id)
    }

    fn comment(&self, id: &str) -> Option<&CommentRec> {
        self.comments.values().find(|c| c.id == id)
    }

    fn name_of(&self, id: &str) -> String {
        self.pages
            .get(id)
            .map(|p| p.name.clone())
            .or_else(|| self.users.get(id).map(|u| u.name.clone()))
            .unwrap_or_default()
    }

    fn create_post(&mut self, page: &str, message: Option<&str>, link: Option<&str>) -> String {
        let seq = self.seq();
        let num = (POST_NUM_BASE + seq).to_string();
        let id = format!("{page}_{num}");
        let created = self.now();
        self.posts.insert(
            seq,
            PostRec {
                seq,
                id: id.clone(),
                num,
                page_id: page.to_owned(),
                message: message.map(str::to_owned),
                link: link.map(str::to_owned),
                created,
            },
        );
        id
    }

    /// A comment on a post, or a reply to a comment (one level: a reply to a reply joins
    /// the top-level comment). None when the object is neither.
    fn create_comment(&mut self, from: &str, object: &str, message: &str) -> Option<String> {
        let (post_id, parent) = if let Some(p) = self.post(object) {
            (p.id.clone(), None)
        } else {
            let c = self.comment(object)?;
            (c.post_id.clone(), Some(c.parent.clone().unwrap_or_else(|| c.id.clone())))
        };
        let post_num = self.post(&post_id)?.num.clone();
        let seq = self.seq();
        let id = format!("{post_num}_{}", COMMENT_NUM_BASE + seq);
        let created = self.now();
        self.comments.insert(
            seq,
            CommentRec {
                seq,
                id: id.clone(),
                post_id,
                parent,
                from_id: from.to_owned(),
                message: message.to_owned(),
                created,
            },
        );
        Some(id)
    }

    fn post_json(&self, p: &PostRec, fields: &[graph::Field]) -> Value {
        let mut v = json!({});
        for f in fields {
            match f.name.as_str() {
                "id" => v["id"] = json!(p.id),
                "message" => {
                    if let Some(m) = &p.message {
                        v["message"] = json!(m);
                    }
                }
                "link" => {
                    if let Some(l) = &p.link {
                        v["link"] = json!(l);
                    }
                }
                "created_time" => v["created_time"] = json!(graph_time(p.created)),
                "updated_time" => v["updated_time"] = json!(graph_time(p.created)),
                "permalink_url" => {
                    v["permalink_url"] =
                        json!(format!("https://www.facebook.com/{}/posts/{}", p.page_id, p.num))
                }
                "from" => v["from"] = self.author_json(&p.page_id, f),
                "is_published" => v["is_published"] = json!(true),
                "status_type" => {
                    v["status_type"] = json!(if p.link.is_some() {
                        "shared_story"
                    } else {
                        "mobile_status_update"
                    })
                }
                _ => {}
            }
        }
        v
    }

    fn author_json(&self, id: &str, field: &graph::Field) -> Value {
        let all = json!({"id": id, "name": self.name_of(id)});
        if field.sub.is_empty() {
            return all;
        }
        let mut v = json!({});
        for s in &field.sub {
            if let Some(x) = all.get(s.as_str()) {
                v[s.as_str()] = x.clone();
            }
        }
        v
    }

    fn comment_json(&self, c: &CommentRec, fields: &[graph::Field]) -> Value {
        let mut v = json!({});
        let post = self.post(&c.post_id);
        for f in fields {
            match f.name.as_str() {
                "id" => v["id"] = json!(c.id),
                "message" => v["message"] = json!(c.message),
                "created_time" => v["created_time"] = json!(graph_time(c.created)),
                "from" => v["from"] = self.author_json(&c.from_id, f),
                "parent" => {
                    if let Some(p) = c.parent.as_deref().and_then(|p| self.comment(p)) {
                        let sub = if f.sub.is_empty() {
                            graph::Field::list("created_time,from,message,id")
                        } else {
                            f.sub.iter().map(|s| graph::Field::plain(s)).collect()
                        };
                        v["parent"] = self.comment_json(p, &sub);
                    }
                }
                "permalink_url" => {
                    if let Some(p) = post {
                        let cnum = c.id.rsplit('_').next().unwrap_or_default();
                        v["permalink_url"] = json!(format!(
                            "https://www.facebook.com/{}/posts/{}?comment_id={cnum}",
                            p.page_id, p.num
                        ));
                    }
                }
                "comment_count" => {
                    v["comment_count"] = json!(self
                        .comments
                        .values()
                        .filter(|r| r.parent.as_deref() == Some(c.id.as_str()))
                        .count())
                }
                "like_count" => v["like_count"] = json!(0),
                "can_comment" => v["can_comment"] = json!(c.parent.is_none()),
                "is_hidden" => v["is_hidden"] = json!(false),
                _ => {}
            }
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
pub struct Facebook {
    state: Arc<Mutex<State>>,
    served: http::Served,
}

impl Facebook {
    /// Starts a server on 127.0.0.1 (a free port) with no Pages.
    pub fn start() -> Facebook {
        let state = Arc::new(Mutex::new(State {
            base: String::new(),
            clock_offset: chrono::Duration::zero(),
            next: 0,
            pages: BTreeMap::new(),
            users: BTreeMap::new(),
            posts: BTreeMap::new(),
            comments: BTreeMap::new(),
            call_limit: DEFAULT_CALL_LIMIT,
            unreachable_links: Vec::new(),
            calls: HashMap::new(),
            faults: FaultQueue::default(),
            requests: Vec::new(),
        }));
        let handled = state.clone();
        let served =
            http::serve("facebook-emulator", Arc::new(move |call| graph::handle(&handled, call)));
        lock(&state).base = format!("http://{}", served.addr);
        Facebook { state, served }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `http://127.0.0.1:PORT/v25.0`: the Graph base to configure.
    pub fn url(&self) -> String {
        format!("http://{}/{VERSION}", self.served.addr)
    }

    /// Adds a Page with a Page access token; returns its id.
    pub fn add_page(&self, name: &str) -> String {
        let mut s = self.lock();
        let seq = s.seq();
        let id = (PAGE_ID_BASE + seq).to_string();
        let token = format!("EAAG{seq}ZBpage{:x}", seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        s.pages.insert(
            id.clone(),
            Page { id: id.clone(), name: name.to_owned(), token, invalidated: None },
        );
        id
    }

    /// The Page's access token.
    pub fn page_token(&self, page: &str) -> String {
        self.lock()
            .pages
            .get(page)
            .map(|p| p.token.clone())
            .unwrap_or_else(|| panic!("no page {page}"))
    }

    /// The token stops working: every request with it gets code 190 with this subcode
    /// (460 password changed, 463 expired, 467 invalid).
    pub fn invalidate_token(&self, page: &str, subcode: i64) {
        let mut s = self.lock();
        let p = s.pages.get_mut(page).unwrap_or_else(|| panic!("no page {page}"));
        p.invalidated = Some(subcode);
    }

    /// A new token for the Page (the old one stays dead); returns it.
    pub fn renew_token(&self, page: &str) -> String {
        let mut s = self.lock();
        let seq = s.seq();
        let p = s.pages.get_mut(page).unwrap_or_else(|| panic!("no page {page}"));
        p.token = format!("EAAG{seq}ZBrenewed{:x}", seq.wrapping_mul(0x2545_F491_4F6C_DD1D));
        p.invalidated = None;
        p.token.clone()
    }

    /// Adds a person who can comment; returns their id.
    pub fn add_user(&self, name: &str) -> String {
        let mut s = self.lock();
        let seq = s.seq();
        let id = (USER_ID_BASE + seq).to_string();
        s.users.insert(id.clone(), User { name: name.to_owned() });
        id
    }

    /// A post made by the Page's admin in the web interface; returns its id.
    pub fn post_as_page(&self, page: &str, message: &str, link: Option<&str>) -> String {
        let mut s = self.lock();
        assert!(s.pages.contains_key(page), "no page {page}");
        s.create_post(page, Some(message), link)
    }

    /// A comment by `from` (a user or Page id) on a post, or a reply to a comment; returns
    /// its id.
    pub fn comment_as(&self, from: &str, object: &str, message: &str) -> String {
        let mut s = self.lock();
        assert!(s.users.contains_key(from) || s.pages.contains_key(from), "no one called {from}");
        s.create_comment(from, object, message)
            .unwrap_or_else(|| panic!("no post or comment {object}"))
    }

    /// The Page's posts, newest first, with every field.
    pub fn posts_of(&self, page: &str) -> Vec<Value> {
        let s = self.lock();
        let fields = graph::Field::list("id,message,link,created_time,permalink_url,from");
        s.posts
            .values()
            .rev()
            .filter(|p| p.page_id == page)
            .map(|p| s.post_json(p, &fields))
            .collect()
    }

    /// Every comment on a post (replies too), oldest first, with every field.
    pub fn comments_on(&self, post: &str) -> Vec<Value> {
        let s = self.lock();
        let fields = graph::Field::list("id,message,created_time,from,parent{id},permalink_url");
        s.comments
            .values()
            .filter(|c| c.post_id == post)
            .map(|c| s.comment_json(c, &fields))
            .collect()
    }

    /// Applies `fault` to the next `times` requests whose method is `method` (`"*"`: any)
    /// and whose path starts with `path_prefix` (with the version: `/v25.0/…`).
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

    /// Moves the emulator's clock forward (times, the hourly quota window).
    pub fn advance_clock(&self, by: Duration) {
        let mut s = self.lock();
        s.clock_offset +=
            chrono::Duration::from_std(by).unwrap_or_else(|_| chrono::Duration::zero());
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.lock().now()
    }

    /// Calls a Page may make per hour (default 4800). Resets the counters.
    pub fn set_call_limit(&self, limit: u32) {
        let mut s = self.lock();
        s.call_limit = limit;
        s.calls.clear();
    }

    /// Facebook's scraper cannot fetch this link: posting it fails with code 1609005.
    pub fn set_unreachable_link(&self, link: &str) {
        self.lock().unreachable_links.push(link.to_owned());
    }
}
