//! A Facebook Page: announces articles with `POST /{page-id}/feed`, turns comments on the
//! Page's recent posts into conversations, and answers with `POST /{comment-id}/comments`.
//!
//! Sources for every API fact used here are in `shared/api/networks.md` §4 (and §0, §5).
//!
//! # Token
//!
//! A Page access token from the credentials, sent as `Authorization: Bearer` (never in a
//! URL). Page tokens derived from a long-lived user token do not expire but die with a
//! password change, a lost role or a removed app: Graph then answers code 190, which is
//! [`NetError::Unauthorized`] so that `presencectl status` shows it. There is no refresh;
//! nothing is kept in the session map. `start` also checks that the token is the Page's own
//! (`GET /me` with a Page token is the Page).
//!
//! # Exactly once
//!
//! Graph has no idempotency. An attempt in doubt is looked for among the Page's 50 most
//! recent posts (`GET /{page-id}/posts?fields=id,link,message,created_time,permalink_url`):
//! a post whose `link`, or a URL in whose `message`, is the article (canonical links
//! compared) is the earlier attempt. A "duplicate post" refusal (code 506) is resolved the
//! same way.
//!
//! # Comments
//!
//! Each fetch reads the comments (`filter=stream`: replies too, newest first) on the posts
//! of `watch` that are Page posts (`{page-id}_…`; our answers are comments and are skipped)
//! and on the Page's posts of the last 7 days, down to the newest comment time stored (the
//! cursor, minus ten minutes for comments that become visible late; the core drops what it
//! has already). The very first fetch takes only the newest page of each post. Each
//! top-level comment is a conversation (its replies are in it); the Page's own comments are
//! skipped. Comments on older posts that are not in `watch`, and posts of others that tag
//! the Page, are not read.
//!
//! # Errors and usage
//!
//! Errors are decided on `error.code` ([`graph::graph_error`]). The usage headers are
//! watched: at 90 % of any quota the comment polling pauses for ten minutes; at 100 %, or
//! when Facebook names a time to regain access, everything waits that long.
//!
//! Architecture invariant: the token is never logged or formatted; it only goes into the
//! `Authorization` header.

mod graph;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde_json::Value;
use url::Url;

use graph::{Effect, Failure, Usage};

use super::{AccountInfo, Incoming, Mentions, NetError, Network, Post, Posted, Reply};
use crate::config::Secret;
use crate::fit::Rules;

/// The Graph API's base URL (with its pinned version) when the config names none.
pub const DEFAULT_API: &str = "https://graph.facebook.com/v25.0";

/// The cursor: the time of the newest comment stored, Unix seconds.
pub const CURSOR_SINCE: &str = "comments_since";

/// How often comments are polled: each poll costs one request per watched post.
pub const MENTION_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The Page's own posts this recent are polled for comments.
const POST_WINDOW: i64 = 7 * 24 * 3600;
/// Comments are read this far before the stored cursor: a comment may become visible
/// after newer ones (spam filter, moderation).
const OVERLAP: i64 = 10 * 60;
/// Comments per page, and pages per post and fetch.
const COMMENTS_LIMIT: u32 = 100;
const MAX_COMMENT_PAGES: usize = 5;
/// Recent Page posts polled per fetch, at most.
const MAX_RECENT_POSTS: u32 = 25;
/// Own posts searched for an attempt in doubt: pages of 25.
const OWN_POST_PAGES: usize = 2;
/// Usage (percent of any quota) at which comment polling pauses.
const READ_PAUSE_AT: u64 = 90;
/// How long a high usage pauses what it pauses, when Facebook names no time.
const USAGE_PAUSE: Duration = Duration::from_secs(10 * 60);

const COMMENT_FIELDS: &str = "id,from,message,created_time,parent,permalink_url";
const POST_FIELDS: &str = "id,link,message,created_time,permalink_url";

/// One Facebook Page.
#[derive(Debug)]
pub struct Facebook {
    account: String,
    api: String,
    page_id: String,
    token: Secret,
    http: reqwest::Client,
    page_name: Option<String>,
    /// Comment polling waits until then (usage near the quota).
    reads_paused: Option<Instant>,
    /// Everything waits until then (quota spent, or rate limited).
    blocked: Option<Instant>,
    /// The highest quota share the usage headers last reported, percent.
    usage: u64,
}

impl Facebook {
    /// `api` is the Graph base URL with its version; `session` is unused (a Page token needs
    /// nothing kept).
    pub fn new(
        account: &str,
        api: &str,
        page_id: &str,
        token: Secret,
        _session: BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> Facebook {
        Facebook {
            account: account.to_owned(),
            api: api.trim().trim_end_matches('/').to_owned(),
            page_id: page_id.trim().to_owned(),
            token,
            http,
            page_name: None,
            reads_paused: None,
            blocked: None,
            usage: 0,
        }
    }

    fn bearer(&self) -> Result<HeaderValue, NetError> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", self.token.expose())).map_err(|_| {
                NetError::Unauthorized(
                    "the Page token contains characters not allowed in a header".into(),
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// How long a request of this kind has to wait because of usage, if at all.
    fn waiting(&self, effect: Effect) -> Option<Duration> {
        let now = Instant::now();
        let mut until = self.blocked.filter(|b| *b > now);
        if effect == Effect::Read {
            until = until.max(self.reads_paused.filter(|p| *p > now));
        }
        until.map(|u| u - now)
    }

    fn note_usage(&mut self, usage: &Usage) {
        let now = Instant::now();
        self.usage = usage.percent;
        if let Some(wait) = usage.regain {
            self.blocked = self.blocked.max(Some(now + wait));
        }
        if usage.percent >= 100 {
            self.blocked = self.blocked.max(Some(now + USAGE_PAUSE));
        } else if usage.percent >= READ_PAUSE_AT {
            self.reads_paused = self.reads_paused.max(Some(now + USAGE_PAUSE));
        }
        if usage.percent >= READ_PAUSE_AT || usage.regain.is_some() {
            tracing::info!(account = %self.account, percent = usage.percent, "Facebook usage is high; slowing down");
        }
    }

    async fn call(
        &mut self,
        method: reqwest::Method,
        url: Url,
        form: &[(&str, &str)],
        what: &str,
        effect: Effect,
    ) -> Result<Value, Failure> {
        if let Some(wait) = self.waiting(effect) {
            return Err(Failure::Net(NetError::Transient {
                message: format!(
                    "{what}: not sent: the Page has used {}% of its Facebook call quota; waiting {} min",
                    self.usage,
                    wait.as_secs().div_ceil(60)
                ),
                retry_after: Some(wait.max(Duration::from_secs(1))),
            }));
        }
        let mut request = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.bearer().map_err(Failure::Net)?)
            .header(ACCEPT, "application/json");
        if !form.is_empty() {
            request = request.form(form);
        }
        match graph::send(request, what, effect).await {
            Ok(answer) => {
                self.note_usage(&answer.usage);
                Ok(answer.value)
            }
            Err(f) => {
                if let Some(usage) = f.usage() {
                    let usage = *usage;
                    self.note_usage(&usage);
                }
                if let NetError::Transient { retry_after: Some(wait), .. } = f.net_ref() {
                    if f.code().is_some_and(is_rate_code) {
                        self.blocked = self.blocked.max(Some(Instant::now() + *wait));
                    }
                }
                Err(f)
            }
        }
    }

    async fn get(&mut self, url: Url, what: &str) -> Result<Value, Failure> {
        self.call(reqwest::Method::GET, url, &[], what, Effect::Read).await
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, Failure> {
        let mut url = graph::endpoint(&self.api, segments).map_err(Failure::Net)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// The Page's most recent posts, newest first, `pages` pages of 25, with `fields`.
    async fn page_posts(
        &mut self,
        fields: &str,
        since: Option<i64>,
        pages: usize,
    ) -> Result<Vec<Value>, Failure> {
        let what = "GET /{page-id}/posts";
        let limit = MAX_RECENT_POSTS.to_string();
        let since = since.map(|s| s.to_string());
        let mut query = vec![("fields", fields), ("limit", limit.as_str())];
        if let Some(s) = &since {
            query.push(("since", s));
        }
        let page_id = self.page_id.clone();
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..pages {
            let mut q = query.clone();
            if let Some(a) = &after {
                q.push(("after", a));
            }
            let value = self.get(self.url(&[&page_id, "posts"], &q)?, what).await?;
            all.extend(data(&value));
            match next_cursor(&value) {
                Some(a) if after.as_deref() != Some(a.as_str()) => after = Some(a),
                _ => break,
            }
        }
        Ok(all)
    }

    async fn find_own_post(&mut self, post: &Post) -> Result<Option<Posted>, Failure> {
        let wanted = canonical(&post.url);
        let posts = self.page_posts(POST_FIELDS, None, OWN_POST_PAGES).await?;
        Ok(posts
            .iter()
            .find(|p| {
                let link = p.get("link").and_then(Value::as_str).map(canonical);
                let message = p.get("message").and_then(Value::as_str).unwrap_or_default();
                link.as_deref() == Some(wanted.as_str())
                    || urls_in(message).any(|u| canonical(u) == wanted)
            })
            .and_then(|p| {
                let id = str_field(p, "id")?;
                let url = str_field(p, "permalink_url").unwrap_or_else(|| post_url(&id));
                Some(Posted { remote_id: id, url: Some(url) })
            }))
    }

    /// Comments on one object (a post, or a comment for its replies), newest first, down to
    /// `boundary`; with no boundary, only the newest page.
    async fn comments(
        &mut self,
        object: &str,
        boundary: Option<i64>,
        stream: bool,
    ) -> Result<Vec<Value>, Failure> {
        let what = "GET /{object-id}/comments";
        let limit = COMMENTS_LIMIT.to_string();
        let query = vec![
            ("filter", if stream { "stream" } else { "toplevel" }),
            ("order", "reverse_chronological"),
            ("fields", COMMENT_FIELDS),
            ("limit", limit.as_str()),
        ];
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_COMMENT_PAGES {
            let mut q = query.clone();
            if let Some(a) = &after {
                q.push(("after", a));
            }
            let value = self.get(self.url(&[object, "comments"], &q)?, what).await?;
            let page = data(&value);
            let reached = boundary.map_or(true, |b| {
                page.iter().any(|c| time_field(c, "created_time").is_some_and(|t| t < b))
            });
            all.extend(page);
            match next_cursor(&value) {
                Some(a) if !reached && after.as_deref() != Some(a.as_str()) => after = Some(a),
                _ => break,
            }
        }
        Ok(all)
    }

    fn incoming(&self, post_id: &str, c: &Value) -> Option<Incoming> {
        let id = str_field(c, "id")?;
        let from = c.get("from");
        let from_id = from.and_then(|f| str_field(f, "id"));
        if from_id.as_deref() == Some(self.page_id.as_str()) {
            return None;
        }
        let name = from
            .and_then(|f| str_field(f, "name"))
            .filter(|n| !n.trim().is_empty())
            .or(from_id)
            .unwrap_or_else(|| "someone".to_owned());
        let parent = c.get("parent").and_then(|p| str_field(p, "id")).filter(|p| p != post_id);
        Some(Incoming {
            thread: parent.clone().unwrap_or_else(|| id.clone()),
            in_reply_to: Some(parent.unwrap_or_else(|| post_id.to_owned())),
            remote_id: id,
            author: name.clone(),
            display_name: name,
            text: str_field(c, "message").unwrap_or_default().trim().to_owned(),
            at: time_field(c, "created_time").unwrap_or_else(|| Utc::now().timestamp()),
            url: str_field(c, "permalink_url"),
            visibility: None,
        })
    }

    async fn poll(
        &mut self,
        cursors: &BTreeMap<String, String>,
        watch: &[String],
    ) -> Result<Mentions, Failure> {
        let now = Utc::now().timestamp();
        let since: Option<i64> = cursors.get(CURSOR_SINCE).and_then(|s| s.parse().ok());
        let boundary = since.map(|s| s - OVERLAP);

        // Which posts: the watched ones that are Page posts, then the Page's recent ones.
        let prefix = format!("{}_", self.page_id);
        let mut posts: Vec<String> = Vec::new();
        let mut seen_posts = BTreeSet::new();
        for id in watch.iter().rev().filter(|w| w.starts_with(&prefix)) {
            if seen_posts.insert(id.clone()) {
                posts.push(id.clone());
            }
        }
        for p in self.page_posts("id,created_time", Some(now - POST_WINDOW), 1).await? {
            if let Some(id) = str_field(&p, "id") {
                if seen_posts.insert(id.clone()) {
                    posts.push(id);
                }
            }
        }

        let mut items = Vec::new();
        let mut seen = BTreeSet::new();
        let mut newest = since;
        for post in &posts {
            let comments = match self.comments(post, boundary, true).await {
                Ok(c) => c,
                // The post is gone (deleted) or hidden from us: nothing to read there.
                Err(f) if f.code() == Some(100) => {
                    tracing::debug!(account = %self.account, post = %post, "comments not readable: {}", f.into_net());
                    continue;
                }
                Err(f) => return Err(f),
            };
            for c in &comments {
                let at = time_field(c, "created_time");
                if let (Some(b), Some(t)) = (boundary, at) {
                    if t < b {
                        continue;
                    }
                }
                if let Some(t) = at {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
                if let Some(item) = self.incoming(post, c) {
                    if seen.insert(item.remote_id.clone()) {
                        items.push(item);
                    }
                }
            }
        }
        items.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.remote_id.cmp(&b.remote_id)));
        let mut cursors = cursors.clone();
        let newest = newest.unwrap_or(now - OVERLAP);
        cursors.insert(CURSOR_SINCE.to_owned(), newest.to_string());
        Ok(Mentions { items, cursors, more: false })
    }
}

impl Failure {
    fn net_ref(&self) -> &NetError {
        match self {
            Failure::Net(e) | Failure::Graph { net: e, .. } => e,
        }
    }
}

fn is_rate_code(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 341 | 613 | 80000..=80099)
}

impl Network for Facebook {
    async fn start(&mut self) -> Result<AccountInfo, NetError> {
        let what = "GET /me";
        let url = self.url(&["me"], &[("fields", "id,name")]).map_err(Failure::into_net)?;
        let me = self.get(url, what).await.map_err(Failure::into_net)?;
        let id = str_field(&me, "id").unwrap_or_default();
        let name = str_field(&me, "name").unwrap_or_default();
        if id != self.page_id {
            return Err(NetError::Unauthorized(format!(
                "the token belongs to {name:?} ({id}), not to the Page {}: configure that Page's access token",
                self.page_id
            )));
        }
        tracing::debug!(account = %self.account, page = %name, "facebook page ready");
        self.page_name = Some(name.clone());
        Ok(AccountInfo {
            rules: Rules::facebook(),
            handle: name,
            mention_interval: Some(MENTION_INTERVAL),
            at_once: 1,
        })
    }

    async fn post(&mut self, post: &Post) -> Result<Posted, NetError> {
        let what = "POST /{page-id}/feed";
        let page_id = self.page_id.clone();
        let url = self.url(&[&page_id, "feed"], &[]).map_err(Failure::into_net)?;
        let form = [("message", post.text.as_str()), ("link", post.url.as_str())];
        match self.call(reqwest::Method::POST, url, &form, what, Effect::Creates).await {
            Ok(v) => match str_field(&v, "id") {
                Some(id) => Ok(Posted { url: Some(post_url(&id)), remote_id: id }),
                None => Err(NetError::InDoubt { message: format!("{what}: the answer has no id") }),
            },
            Err(f) if f.code() == Some(506) => {
                tracing::info!(account = %self.account, article_url = %post.url, "Facebook calls the post a duplicate; looking for it");
                match self.find_own_post(post).await {
                    Ok(Some(found)) => Ok(found),
                    Ok(None) => Err(NetError::Rejected(format!(
                        "{}; no recent post of the Page links {}",
                        f.into_net(),
                        post.url
                    ))),
                    Err(e) => Err(e.into_net()),
                }
            }
            Err(f) => Err(f.into_net()),
        }
    }

    async fn find_post(&mut self, post: &Post) -> Result<Option<Posted>, NetError> {
        self.find_own_post(post).await.map_err(Failure::into_net)
    }

    async fn fetch_mentions(
        &mut self,
        cursors: &BTreeMap<String, String>,
        watch: &[String],
    ) -> Result<Mentions, NetError> {
        self.poll(cursors, watch).await.map_err(Failure::into_net)
    }

    async fn reply(&mut self, reply: &Reply) -> Result<Posted, NetError> {
        // Facebook nests one level: answers go under the top-level comment.
        let target = if reply.thread.is_empty() { &reply.in_reply_to } else { &reply.thread };
        let what = "POST /{comment-id}/comments";
        let url = self.url(&[target, "comments"], &[]).map_err(Failure::into_net)?;
        let form = [("message", reply.text.as_str())];
        match self.call(reqwest::Method::POST, url, &form, what, Effect::Creates).await {
            Ok(v) => match str_field(&v, "id") {
                Some(id) => Ok(Posted { remote_id: id, url: None }),
                None => Err(NetError::InDoubt { message: format!("{what}: the answer has no id") }),
            },
            Err(f) if f.code() == Some(100) => Err(NetError::Rejected(format!(
                "{} (the comment may have been deleted)",
                f.into_net()
            ))),
            Err(f) => Err(f.into_net()),
        }
    }

    async fn find_reply(&mut self, reply: &Reply) -> Result<Option<Posted>, NetError> {
        let target =
            if reply.thread.is_empty() { reply.in_reply_to.clone() } else { reply.thread.clone() };
        let wanted = comparable(&reply.text);
        let replies = self.comments(&target, None, false).await.map_err(Failure::into_net)?;
        let page_id = self.page_id.clone();
        Ok(replies
            .iter()
            .find(|c| {
                c.get("from").and_then(|f| str_field(f, "id")).as_deref() == Some(page_id.as_str())
                    && comparable(&str_field(c, "message").unwrap_or_default()) == wanted
            })
            .and_then(|c| {
                Some(Posted { remote_id: str_field(c, "id")?, url: str_field(c, "permalink_url") })
            }))
    }
}

/// Where a post can be seen: Facebook resolves `{page-id}_{post-id}` itself.
fn post_url(id: &str) -> String {
    format!("https://www.facebook.com/{id}")
}

fn canonical(url: &str) -> String {
    presence_feed::canonical_link(url).unwrap_or_else(|| url.trim().to_owned())
}

/// The http(s) URLs written in a text, trailing punctuation dropped.
fn urls_in(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(|w| w.trim_end_matches(|c: char| ".,;:!?)]}\"'".contains(c)))
}

/// Letters and digits only, lower-cased: a text as it survives Facebook's handling.
fn comparable(text: &str) -> String {
    text.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

fn data(v: &Value) -> Vec<Value> {
    v.get("data").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// The cursor of the next page: `paging.cursors.after`, or the `after` of `paging.next`.
/// None when there is no `next` (the last page). Only the cursor is used, never the link,
/// which carries the token and could point anywhere.
fn next_cursor(v: &Value) -> Option<String> {
    let paging = v.get("paging")?;
    let next = paging.get("next").and_then(Value::as_str)?;
    paging
        .get("cursors")
        .and_then(|c| c.get("after"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            Url::parse(next)
                .ok()?
                .query_pairs()
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|a| !a.is_empty())
}

/// A string field; numbers (ids in some dialects) as text.
fn str_field(v: &Value, name: &str) -> Option<String> {
    match v.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A Graph time (`2026-01-01T12:00:00+0000`, RFC 3339, or Unix seconds) as Unix seconds.
fn time_field(v: &Value, name: &str) -> Option<i64> {
    match v.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%z")
            .or_else(|_| DateTime::parse_from_rfc3339(s))
            .ok()
            .map(|t| t.timestamp()),
        _ => None,
    }
}
