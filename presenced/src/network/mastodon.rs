//! Mastodon: announces articles with `POST /api/v1/statuses`, finds mentions through the
//! notifications API and a server-sent-events stream, and answers in threads.
//!
//! Sources for every API fact used here are in `shared/api/networks.md` §1.
//!
//! # Exactly once
//!
//! Every post and reply carries the core's key as `Idempotency-Key`: the server keeps it for
//! one hour per account and answers a repeat with the status it created the first time. That
//! window is too short to rely on after a long outage, so an attempt in doubt is first looked
//! for among the account's recent statuses (the article link for announcements, the parent
//! and the text for replies); only when it is not there is it posted again, still with the
//! same key, which covers the case where the first attempt is still being processed.
//!
//! # Errors
//!
//! A request that may have created a status (a `POST /api/v1/statuses` that reached the
//! server and then failed with a 5xx, a timeout or a dropped connection) is
//! [`NetError::InDoubt`]; everything that certainly created nothing is
//! [`NetError::Transient`] (connection refused, 429, 5xx on a read) or final
//! ([`NetError::Rejected`] for a 4xx, [`NetError::Unauthorized`] for 401 and 403: the token is
//! wrong, revoked, lacks a scope, or its account is disabled). A 429 waits until
//! `X-RateLimit-Reset`, which Mastodon sends as an ISO 8601 time, not epoch seconds.
//!
//! # Mentions
//!
//! `GET /api/v1/notifications` is walked forward from the stored cursor with `min_id`, which
//! pages without gaps, taken from the `Link: rel="prev"` header. Replies that do not
//! @-mention the account create no notification (mastodon#10865), so the threads of our
//! recent posts are read as well. A mention's conversation is the root of its thread.
//!
//! The stream (see [`stream`]) only says "something arrived"; what arrived is always read
//! over REST, so a missed or garbled event costs latency, never a message.
//!
//! Architecture invariant: nothing here logs or formats the token; it only ever goes into
//! an `Authorization` header.

mod stream;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use tokio::sync::mpsc;
use url::Url;

use super::{AccountInfo, Incoming, Mentions, NetError, Network, Post, Posted, Reply};
use crate::config::Secret;
use crate::fit::Rules;
use crate::http::{after_sending, describe, receive, Effect, Received};

/// The cursor key under which the newest notification id seen is stored.
pub const CURSOR: &str = "notifications";
/// The cursor of an account that had no mention when it was first fetched.
const FIRST_CURSOR: &str = "0";

/// Largest response body read; Mastodon's pages are far smaller (80 notifications with full
/// statuses are a few hundred KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest server-supplied error message kept (it ends up in logs and in the state).
const MAX_MESSAGE: usize = 300;
/// Notifications per page: the documented maximum since Mastodon 4.1 (older servers cap it
/// at 40 silently, which paging copes with).
const PAGE: usize = 80;
/// Pages of notifications read per fetch. A longer backlog is read by the following fetches
/// (`Mentions::more`), each page stored before the next is asked for, since the cursor only
/// moves past what was returned. Paging requests have their own, tighter rate limit (300 per
/// 15 minutes), which a backlog of a few thousand mentions stays within.
const MAX_PAGES: usize = 1;
/// Pages of our own statuses searched for an attempt in doubt (40 statuses each).
const MAX_OWN_PAGES: usize = 3;
/// Thread roots remembered between fetches, to save a context request per mention.
const MAX_ROOTS: usize = 10_000;
/// Longest a 429 makes us wait, whatever the header says: Mastodon's longest window is three
/// hours, and a clock far off must not stall an account for days.
const MAX_RATE_WAIT: Duration = Duration::from_secs(3 * 3600);
/// How often the core fetches mentions. The same with or without a working stream: replies
/// that do not @-mention us reach neither the stream nor the notifications and are only
/// found by this poll, and without a stream it is the only source of mentions. One fetch
/// costs one request plus one per watched post, well inside the 300 per 5 minutes allowed.
const MENTION_INTERVAL: Duration = Duration::from_secs(60);

/// One Mastodon account.
#[derive(Debug)]
pub struct Mastodon {
    account: String,
    server: String,
    token: Secret,
    visibility: Option<String>,
    language: Option<String>,
    http: reqwest::Client,
    me: Option<Me>,
    /// Status id → id of its thread's root, learned from context requests.
    roots: HashMap<String, String>,
    wakeups_taken: bool,
}

/// What `start` learned about the account.
#[derive(Debug, Clone)]
struct Me {
    id: String,
    /// The account's default visibility, used when none is configured.
    default_visibility: Option<String>,
    /// `https://` base of the streaming server, when the instance names one.
    streaming: Option<Url>,
}

impl Mastodon {
    pub fn new(
        account: &str,
        server: &str,
        token: Secret,
        visibility: Option<String>,
        language: Option<String>,
        http: reqwest::Client,
    ) -> Mastodon {
        Mastodon {
            account: account.to_owned(),
            server: server.trim().trim_end_matches('/').to_owned(),
            token,
            visibility: visibility.filter(|v| !v.trim().is_empty()),
            language: language.filter(|l| !l.trim().is_empty()),
            http,
            me: None,
            roots: HashMap::new(),
            wakeups_taken: false,
        }
    }

    fn base(&self) -> Result<Url, NetError> {
        Url::parse(&self.server)
            .map_err(|e| NetError::Rejected(format!("server {:?}: {e}", self.server)))
    }

    /// The URL of an API path given as segments (ids are escaped as path segments).
    fn endpoint(&self, segments: &[&str]) -> Result<Url, NetError> {
        endpoint(&self.base()?, segments)
    }

    fn me(&self) -> Result<&Me, NetError> {
        self.me.as_ref().ok_or_else(|| NetError::Transient {
            message: "the account has not started".into(),
            retry_after: None,
        })
    }

    fn authorized(&self, request: RequestBuilder) -> Result<RequestBuilder, NetError> {
        Ok(request.header(AUTHORIZATION, bearer(&self.token)?).header(ACCEPT, "application/json"))
    }

    /// Sends a request that creates nothing and decodes its JSON answer.
    async fn get<T: DeserializeOwned>(&self, url: Url, what: &str) -> Result<Page<T>, NetError> {
        self.get_optional(url, what, false)
            .await?
            .ok_or_else(|| NetError::Rejected(format!("{what}: HTTP 404 Not Found")))
    }

    /// Like [`Mastodon::get`], with `None` for a 404 when `missing_ok`.
    async fn get_optional<T: DeserializeOwned>(
        &self,
        url: Url,
        what: &str,
        missing_ok: bool,
    ) -> Result<Option<Page<T>>, NetError> {
        let request = self.authorized(self.http.get(url))?;
        let Some(reply) = send(request, what, Effect::Read, missing_ok).await? else {
            return Ok(None);
        };
        let value = decode(&reply.body, what, Effect::Read)?;
        Ok(Some(Page { value, link: link_header(&reply.headers) }))
    }

    /// Creates a status: an announcement or an answer.
    async fn create_status(
        &self,
        key: &str,
        fields: &[(&str, &str)],
        what: &str,
    ) -> Result<Posted, NetError> {
        let key = HeaderValue::from_str(key)
            .map_err(|_| NetError::Rejected(format!("key {key:?} is not a valid header value")))?;
        let request = self
            .authorized(self.http.post(self.endpoint(&["api", "v1", "statuses"])?))?
            .header("Idempotency-Key", key)
            .form(fields);
        let reply = send(request, what, Effect::Creates, false)
            .await?
            .ok_or_else(|| NetError::Rejected(format!("{what}: HTTP 404 Not Found")))?;
        let status: Status = decode(&reply.body, what, Effect::Creates)?;
        Ok(status.posted())
    }

    /// Our own recent statuses, newest first, a few pages deep.
    async fn own_statuses(&self, exclude_replies: bool) -> Result<Vec<Status>, NetError> {
        let me = self.me()?;
        let mut url = self.endpoint(&["api", "v1", "accounts", &me.id, "statuses"])?;
        url.query_pairs_mut().append_pair("limit", "40").append_pair("exclude_reblogs", "true");
        if exclude_replies {
            url.query_pairs_mut().append_pair("exclude_replies", "true");
        }
        let what = "GET /api/v1/accounts/:id/statuses";
        let mut all = Vec::new();
        for _ in 0..MAX_OWN_PAGES {
            let page: Page<Vec<Status>> = self.get(url.clone(), what).await?;
            if page.value.is_empty() {
                break;
            }
            all.extend(page.value);
            let Some(max_id) = page.link.as_deref().and_then(|l| link_param(l, "next", "max_id"))
            else {
                break;
            };
            set_param(&mut url, "max_id", &max_id);
        }
        // A reblog of someone else's post of the same link is not our announcement.
        all.retain(|s| s.reblog.is_none());
        Ok(all)
    }

    /// The thread context of a status; `None` when it is gone or hidden from us (404).
    async fn context(&mut self, id: &str) -> Result<Option<Context>, NetError> {
        let url = self.endpoint(&["api", "v1", "statuses", id, "context"])?;
        let what = "GET /api/v1/statuses/:id/context";
        let Some(page) = self.get_optional::<Context>(url, what, true).await? else {
            return Ok(None);
        };
        let context = page.value;
        let root = context.ancestors.first().map_or(id, |a| a.id.as_str()).to_owned();
        self.remember_root(id, &root);
        for s in context.ancestors.iter().chain(&context.descendants) {
            self.remember_root(&s.id, &root);
        }
        Ok(Some(context))
    }

    fn remember_root(&mut self, id: &str, root: &str) {
        if self.roots.len() >= MAX_ROOTS {
            self.roots.clear();
        }
        self.roots.insert(id.to_owned(), root.to_owned());
    }

    /// The root of the thread a status is in.
    async fn thread_of(&mut self, status: &Status) -> Result<String, NetError> {
        let Some(parent) = &status.in_reply_to_id else {
            return Ok(status.id.clone());
        };
        for known in [&status.id, parent] {
            if let Some(root) = self.roots.get(known) {
                return Ok(root.clone());
            }
        }
        let root = match self.context(&status.id).await? {
            Some(c) => c.ancestors.first().map(|a| a.id.clone()),
            None => None,
        };
        // With the ancestors hidden (a followers-only parent) or the status gone, its parent
        // is the best guess for the root.
        Ok(root.unwrap_or_else(|| parent.clone()))
    }

    /// Notifications after `cursor` (or the newest page when there is none), oldest first,
    /// and the cursor to store with them.
    async fn notifications(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<Notification>, Option<String>, bool), NetError> {
        let what = "GET /api/v1/notifications";
        let mut url = self.endpoint(&["api", "v1", "notifications"])?;
        url.query_pairs_mut()
            .append_pair("types[]", "mention")
            .append_pair("types[]", "quote")
            .append_pair("limit", &PAGE.to_string());
        let mut cursor = cursor.map(str::to_owned);
        let first_run = cursor.is_none();
        let mut pages: Vec<Vec<Notification>> = Vec::new();
        // Whether the walk reached the newest notification (or cannot go on).
        let mut at_end = first_run;
        for _ in 0..MAX_PAGES {
            let mut request = url.clone();
            if let Some(c) = &cursor {
                set_param(&mut request, "min_id", c);
            }
            let page: Page<Vec<Notification>> = self.get(request, what).await?;
            if page.value.is_empty() {
                at_end = true;
                break;
            }
            // Pages come newest first; `prev` points at what is newer than this page.
            let next = page
                .link
                .as_deref()
                .and_then(|l| link_param(l, "prev", "min_id"))
                .or_else(|| page.value.first().map(|n| n.id.clone()));
            pages.push(page.value);
            // A server that repeats the cursor would make this loop forever.
            if next.is_none() || next == cursor {
                at_end = true;
                break;
            }
            cursor = next;
            // The first fetch takes what is there now, not the account's whole history.
            if first_run {
                break;
            }
        }
        // An account without a single mention yet has no id to start from. Ids sort (they
        // are snowflakes on Mastodon, ULIDs or flake ids elsewhere) above "0", and nothing is
        // older than now that was not just seen, so walking from "0" next time loses nothing,
        // where another "first fetch" would skip all but the newest page.
        if first_run && pages.is_empty() {
            cursor = Some(FIRST_CURSOR.to_owned());
        }
        let items = pages.into_iter().flat_map(|p| p.into_iter().rev()).collect();
        Ok((items, cursor, !at_end))
    }

    fn incoming(&self, status: &Status, thread: String) -> Incoming {
        let account = &status.account;
        let display_name = account
            .display_name
            .clone()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| account.username.clone().unwrap_or_default());
        Incoming {
            remote_id: status.id.clone(),
            thread,
            in_reply_to: status.in_reply_to_id.clone(),
            author: account.acct.clone().unwrap_or_default(),
            display_name,
            text: status_text(status),
            at: status
                .created_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or_else(|| Utc::now().timestamp(), |t| t.timestamp()),
            url: status.url.clone().or_else(|| status.uri.clone()),
            visibility: status.visibility.clone(),
        }
    }
}

impl Network for Mastodon {
    async fn start(&mut self) -> Result<AccountInfo, NetError> {
        let base = self.base()?;
        let what = "GET /api/v1/accounts/verify_credentials";
        let url = endpoint(&base, &["api", "v1", "accounts", "verify_credentials"])?;
        let account: Account = self.get(url, what).await?.value;
        let acct = account.acct.clone().unwrap_or_default();
        if acct.is_empty() {
            return Err(NetError::Rejected(format!("{what}: the answer has no acct")));
        }

        let instance = self.instance(&base).await?;
        let statuses = instance.configuration.as_ref().and_then(|c| c.statuses.as_ref());
        let max_chars = statuses
            .and_then(|s| s.max_characters)
            .or(instance.max_toot_chars)
            .filter(|&n| n > 0)
            .unwrap_or(500);
        let url_len =
            statuses.and_then(|s| s.characters_reserved_per_url).filter(|&n| n > 0).unwrap_or(23);
        let domain = instance
            .domain
            .clone()
            .or_else(|| instance.uri.as_deref().map(host_of))
            .filter(|d| !d.is_empty())
            .or_else(|| base.host_str().map(str::to_owned))
            .unwrap_or_default();
        let handle =
            if acct.contains('@') || domain.is_empty() { acct } else { format!("{acct}@{domain}") };
        let streaming = instance
            .configuration
            .as_ref()
            .and_then(|c| c.urls.as_ref())
            .and_then(|u| u.streaming.clone())
            .or_else(|| instance.urls.as_ref().and_then(|u| u.streaming_api.clone()))
            .and_then(|s| streaming_base(&s));
        self.me = Some(Me {
            id: account.id,
            default_visibility: account.source.and_then(|s| s.privacy),
            streaming,
        });
        tracing::debug!(account = %self.account, %handle, max_chars, url_len, "mastodon account ready");
        Ok(AccountInfo {
            rules: Rules::mastodon(max_chars as usize, url_len as usize),
            handle,
            mention_interval: Some(MENTION_INTERVAL),
            at_once: super::AT_ONCE_CHEAP_RECONCILE,
        })
    }

    async fn post(&mut self, post: &Post) -> Result<Posted, NetError> {
        let mut fields = vec![("status", post.text.as_str())];
        if let Some(v) = &self.visibility {
            fields.push(("visibility", v));
        }
        if let Some(l) = &self.language {
            fields.push(("language", l));
        }
        self.create_status(&post.key, &fields, "POST /api/v1/statuses").await
    }

    async fn find_post(&mut self, post: &Post) -> Result<Option<Posted>, NetError> {
        let canonical =
            |url: &str| presence_feed::canonical_link(url).unwrap_or_else(|| url.trim().to_owned());
        let wanted = canonical(&post.url);
        let statuses = self.own_statuses(true).await?;
        Ok(statuses
            .iter()
            .find(|s| links_of(s).any(|l| canonical(&l) == wanted))
            .map(Status::posted))
    }

    async fn fetch_mentions(
        &mut self,
        cursors: &BTreeMap<String, String>,
        watch: &[String],
    ) -> Result<Mentions, NetError> {
        let me_id = self.me()?.id.clone();
        let mut items = Vec::new();
        let mut seen = HashSet::new();

        // Replies in our threads first: their contexts also teach the roots of most
        // mentions, which then need no context request of their own.
        for id in watch {
            let Some(context) = self.context(id).await? else {
                continue;
            };
            let thread =
                context.ancestors.first().map_or(id.as_str(), |a| a.id.as_str()).to_owned();
            for status in &context.descendants {
                if status.account.id != me_id && seen.insert(status.id.clone()) {
                    items.push(self.incoming(status, thread.clone()));
                }
            }
        }

        let (notifications, cursor, more) =
            self.notifications(cursors.get(CURSOR).map(String::as_str)).await?;
        for n in notifications {
            // Older servers ignore `types[]`; a deleted status leaves `status` null.
            if !matches!(n.kind.as_str(), "mention" | "quote") {
                continue;
            }
            let Some(status) = n.status else { continue };
            if status.account.id == me_id || !seen.insert(status.id.clone()) {
                continue;
            }
            let thread = self.thread_of(&status).await?;
            items.push(self.incoming(&status, thread));
        }
        items.sort_by_key(|i| i.at);

        let mut cursors = cursors.clone();
        if let Some(c) = cursor {
            cursors.insert(CURSOR.to_owned(), c);
        }
        Ok(Mentions { items, cursors, more })
    }

    fn take_wakeups(&mut self) -> Option<mpsc::Receiver<()>> {
        if self.wakeups_taken {
            return None;
        }
        let base = self.base().ok()?;
        let mut candidates: Vec<Url> = Vec::new();
        if let Some(s) = self.me.as_ref().and_then(|m| m.streaming.clone()) {
            candidates.push(s);
        }
        if !candidates.iter().any(|c| same_origin(c, &base)) {
            candidates.push(base);
        }
        let rx = stream::spawn(stream::Config {
            account: self.account.clone(),
            candidates,
            token: self.token.clone(),
            http: self.http.clone(),
            silence: stream::SILENCE,
        })?;
        self.wakeups_taken = true;
        Some(rx)
    }

    async fn reply(&mut self, reply: &Reply) -> Result<Posted, NetError> {
        let text = with_mention(&reply.to, &reply.text);
        let configured = self
            .visibility
            .clone()
            .or_else(|| self.me.as_ref().and_then(|m| m.default_visibility.clone()));
        let visibility = narrower(configured.as_deref(), reply.visibility.as_deref());
        let mut fields =
            vec![("status", text.as_str()), ("in_reply_to_id", reply.in_reply_to.as_str())];
        if let Some(v) = &visibility {
            fields.push(("visibility", v));
        }
        // No `language`: the configured one describes the blog, while an answer is in
        // whatever language the human wrote it; the server's guess is better than a wrong tag.
        self.create_status(&reply.key, &fields, "POST /api/v1/statuses (reply)").await
    }

    async fn find_reply(&mut self, reply: &Reply) -> Result<Option<Posted>, NetError> {
        let wanted = comparable(&with_mention(&reply.to, &reply.text));
        let statuses = self.own_statuses(false).await?;
        Ok(statuses
            .iter()
            .find(|s| {
                s.in_reply_to_id.as_deref() == Some(reply.in_reply_to.as_str())
                    && comparable(&presence_feed::plain_text(s.content.as_deref().unwrap_or("")))
                        == wanted
            })
            .map(Status::posted))
    }
}

impl Mastodon {
    /// `GET /api/v2/instance`, or `/api/v1/instance` on servers older than 4.0.
    async fn instance(&self, base: &Url) -> Result<Instance, NetError> {
        let v2 = endpoint(base, &["api", "v2", "instance"])?;
        if let Some(page) = self.get_optional::<Instance>(v2, "GET /api/v2/instance", true).await? {
            return Ok(page.value);
        }
        let v1 = endpoint(base, &["api", "v1", "instance"])?;
        Ok(self.get::<Instance>(v1, "GET /api/v1/instance").await?.value)
    }
}

// ---------------------------------------------------------------------------------------
// HTTP: sending, bounded reading, error mapping.

#[derive(Debug)]
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Page<T> {
    value: T,
    link: Option<String>,
}

fn bearer(token: &Secret) -> Result<HeaderValue, NetError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        // The error would name the value: say nothing about it.
        .map_err(|_| {
            NetError::Unauthorized("the token contains characters not allowed in a header".into())
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Sends a request and reads its answer; `None` for a 404 when `missing_ok`.
async fn send(
    request: RequestBuilder,
    what: &str,
    effect: Effect,
    missing_ok: bool,
) -> Result<Option<Answer>, NetError> {
    let Received { status, headers, body } = receive(request, what, effect, MAX_BODY).await?;
    if status.is_success() {
        return Ok(Some(Answer { headers, body }));
    }
    if status == StatusCode::NOT_FOUND && missing_ok {
        return Ok(None);
    }
    Err(status_error(status, &headers, &body, what, effect, Utc::now()))
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str, effect: Effect) -> Result<T, NetError> {
    serde_json::from_slice(body).map_err(|e| {
        after_sending(format!("{what}: the answer is not the expected JSON: {e}"), effect)
    })
}

/// Maps an unsuccessful answer to the error the core acts on.
fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
    effect: Effect,
    now: DateTime<Utc>,
) -> NetError {
    let detail = error_message(body);
    let message = match &detail {
        Some(d) => format!("{what}: HTTP {}: {d}", status.as_u16()),
        None => format!("{what}: HTTP {status}"),
    };
    match status.as_u16() {
        401 | 403 => NetError::Unauthorized(message),
        429 => NetError::Transient { message, retry_after: rate_limit_wait(headers, now) },
        // The server gave up waiting for the request: it was never processed.
        408 => NetError::Transient { message, retry_after: None },
        300..=399 => {
            let to = headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere");
            NetError::Transient {
                message: format!("{message}: redirected to {}; check the server URL", clean(to)),
                retry_after: None,
            }
        }
        400..=499 => NetError::Rejected(message),
        // A 5xx after the request reached the application may come with the status
        // created (a 503 is also what a concurrent retry holding the key's lock gets).
        500..=599 if effect == Effect::Creates => NetError::InDoubt { message },
        // Mastodon sends `X-RateLimit-Reset` on most answers; outside a 429 it only
        // describes the window and is no reason to wait.
        _ => NetError::Transient { message, retry_after: retry_after(headers, now) },
    }
}

/// The `error` of a Mastodon error body (`{"error":"..."}`), with `error_description` when
/// there is one, cleaned for logs.
fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: Option<String>,
        error_description: Option<String>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let text = match (body.error, body.error_description) {
        (Some(e), Some(d)) if !d.is_empty() => format!("{e}: {d}"),
        (Some(e), _) => e,
        (None, Some(d)) => d,
        (None, None) => return None,
    };
    Some(clean(&text)).filter(|t| !t.is_empty())
}

/// Server text for a log line: no control characters, bounded length.
fn clean(text: &str) -> String {
    let mut out: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_MESSAGE).collect();
    if text.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out.trim().to_owned()
}

/// How long a rate limit asks us to wait: until `X-RateLimit-Reset` (an ISO 8601 time on
/// Mastodon; epoch seconds are accepted too), else `Retry-After`, which a proxy may add.
fn rate_limit_wait(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let Some(reset) = header(headers, "x-ratelimit-reset") else {
        return retry_after(headers, now);
    };
    let wait = if let Ok(t) = DateTime::parse_from_rfc3339(reset) {
        until(t.with_timezone(&Utc), now)
    } else {
        let n: i64 = reset.parse().ok()?;
        // A number this large is a time, smaller ones are a delay.
        if n > 1_000_000_000 {
            until(DateTime::from_timestamp(n, 0)?, now)
        } else {
            Duration::from_secs(n.max(0) as u64)
        }
    };
    Some(bounded_wait(wait))
}

/// `Retry-After`, in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = header(headers, "retry-after")?;
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => until(DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc), now),
    };
    Some(bounded_wait(wait))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or(Duration::ZERO)
}

/// A time already past (clock skew) still means "not this very second"; one far away is
/// capped.
fn bounded_wait(wait: Duration) -> Duration {
    wait.clamp(Duration::from_secs(1), MAX_RATE_WAIT)
}

// ---------------------------------------------------------------------------------------
// URLs and the Link header.

use crate::http::endpoint;

/// Replaces (or adds) one query parameter.
fn set_param(url: &mut Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair(name, value);
}

fn link_header(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> =
        headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The links of a `Link` header (RFC 8288) as (relation, target) pairs. Targets are taken
/// as they are; a comma inside `<...>` or inside a quoted parameter does not split.
fn parse_link_header(header: &str) -> Vec<(String, String)> {
    let mut links = Vec::new();
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let target = &after[..close];
        let mut params = &after[close + 1..];
        // The parameters run to the next comma outside quotes.
        let mut end = params.len();
        let mut quoted = false;
        for (i, c) in params.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        rest = &params[end..];
        params = &params[..end];
        for param in params.split(';') {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("rel") {
                for rel in value.trim().trim_matches('"').split_whitespace() {
                    links.push((rel.to_ascii_lowercase(), target.to_owned()));
                }
            }
        }
    }
    links
}

/// One query parameter of the link with relation `rel`: the cursor for the next request.
/// Only the cursor is used, never the link itself, so a link to another host cannot lead
/// the token there.
fn link_param(header: &str, rel: &str, param: &str) -> Option<String> {
    parse_link_header(header).into_iter().filter(|(r, _)| r == rel).find_map(|(_, target)| {
        let url = Url::parse(&target).or_else(|_| Url::parse("http://x/")?.join(&target)).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == param)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    })
}

/// The `https://` (or `http://`) base for server-sent events on the streaming server that
/// the instance names as `wss://` (or `ws://`).
fn streaming_base(url: &str) -> Option<Url> {
    let mut url = Url::parse(url.trim()).ok()?;
    let scheme = match url.scheme() {
        "wss" | "https" => "https",
        "ws" | "http" => "http",
        _ => return None,
    };
    url.set_scheme(scheme).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    Some(url)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The host of `mastodon.social` or `https://mastodon.social/` (v1 `uri` is either).
fn host_of(uri: &str) -> String {
    Url::parse(uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| uri.trim().trim_end_matches('/').to_owned())
}

// ---------------------------------------------------------------------------------------
// Text: statuses to plain text, answers and their comparison.

/// A status as the human reads it: the content warning, the text, and what is attached.
fn status_text(status: &Status) -> String {
    let mut text = String::new();
    if let Some(cw) = status.spoiler_text.as_deref().filter(|s| !s.trim().is_empty()) {
        text.push_str("CW: ");
        text.push_str(cw.trim());
        text.push_str("\n\n");
    }
    text.push_str(&presence_feed::plain_text_lines(status.content.as_deref().unwrap_or("")));
    for media in &status.media_attachments {
        let kind = media.kind.as_deref().unwrap_or("attachment");
        let about = media
            .description
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .or(media.url.as_deref())
            .unwrap_or("");
        text.push_str(&format!("\n[{kind}: {}]", about.trim()));
    }
    text.trim().to_owned()
}

/// Every link a status carries: the `href`s of its content and its preview card.
fn links_of(status: &Status) -> impl Iterator<Item = String> + '_ {
    hrefs(status.content.as_deref().unwrap_or(""))
        .chain(status.card.as_ref().and_then(|c| c.url.clone()))
}

/// The `href` values of the links in sanitised HTML, character references decoded.
fn hrefs(html: &str) -> impl Iterator<Item = String> + '_ {
    html.match_indices("href=").filter_map(move |(at, _)| {
        let rest = &html[at + 5..];
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let value = &rest[1..];
        let end = value.find(quote)?;
        Some(presence_feed::plain_text(&value[..end]))
    })
}

/// The answer's text with the mention Mastodon needs to notify its addressee in front,
/// unless the human already wrote it there.
fn with_mention(to: &str, text: &str) -> String {
    let to = to.trim().trim_start_matches('@');
    if to.is_empty() {
        return text.to_owned();
    }
    let mention = format!("@{to}");
    let trimmed = text.trim_start();
    let starts =
        trimmed.get(..mention.len()).is_some_and(|head| head.eq_ignore_ascii_case(&mention))
            && trimmed[mention.len()..]
                .chars()
                .next()
                .map_or(true, |c| c.is_whitespace() || ",:;!?".contains(c));
    if starts {
        text.to_owned()
    } else {
        format!("{mention} {text}")
    }
}

/// A form of an answer's text that survives Mastodon's rendering: leading mentions dropped
/// (a remote `@bob@host` is shown as `@bob`), only letters and digits kept, lower-cased.
fn comparable(text: &str) -> String {
    let mut rest = text.trim_start();
    while rest.starts_with('@') {
        rest = rest.split_once(char::is_whitespace).map_or("", |(_, after)| after).trim_start();
    }
    rest.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// The narrower of two visibilities (public < unlisted < private < direct); an unknown or
/// missing one gives way to the other.
fn narrower(a: Option<&str>, b: Option<&str>) -> Option<String> {
    fn rank(v: &str) -> Option<u8> {
        match v {
            "public" => Some(0),
            "unlisted" => Some(1),
            "private" => Some(2),
            "direct" => Some(3),
            _ => None,
        }
    }
    match (a, b) {
        (Some(a), Some(b)) => match (rank(a), rank(b)) {
            (Some(x), Some(y)) if y > x => Some(b.to_owned()),
            (None, Some(_)) => Some(b.to_owned()),
            _ => Some(a.to_owned()),
        },
        (Some(a), None) => Some(a.to_owned()),
        (None, Some(b)) => rank(b).map(|_| b.to_owned()),
        (None, None) => None,
    }
}

// ---------------------------------------------------------------------------------------
// The parts of Mastodon's entities that are used. Every field may be missing or null, so
// that another server's dialect degrades to defaults instead of failing a whole page.

#[derive(Debug, Deserialize)]
struct Account {
    #[serde(deserialize_with = "id")]
    id: String,
    #[serde(default)]
    acct: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    source: Option<Source>,
}

#[derive(Debug, Deserialize)]
struct Source {
    #[serde(default)]
    privacy: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(deserialize_with = "id")]
    id: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default, deserialize_with = "optional_id")]
    in_reply_to_id: Option<String>,
    account: Account,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    spoiler_text: Option<String>,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    card: Option<Card>,
    #[serde(default)]
    reblog: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "list")]
    media_attachments: Vec<Media>,
}

impl Status {
    fn posted(&self) -> Posted {
        Posted { remote_id: self.id.clone(), url: self.url.clone().or_else(|| self.uri.clone()) }
    }
}

#[derive(Debug, Deserialize)]
struct Card {
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Media {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Notification {
    #[serde(deserialize_with = "id")]
    id: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Debug, Default, Deserialize)]
struct Context {
    #[serde(default, deserialize_with = "list")]
    ancestors: Vec<Status>,
    #[serde(default, deserialize_with = "list")]
    descendants: Vec<Status>,
}

/// `/api/v2/instance` and `/api/v1/instance` in one: the fields differ, none overlap.
#[derive(Debug, Default, Deserialize)]
struct Instance {
    /// v2: the domain in handles (may differ from the web host).
    #[serde(default)]
    domain: Option<String>,
    /// v1: the same, sometimes as a URL.
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    configuration: Option<Configuration>,
    /// v1: `streaming_api`.
    #[serde(default)]
    urls: Option<V1Urls>,
    /// v1 before 3.4 on some forks (glitch-soc, Pleroma).
    #[serde(default)]
    max_toot_chars: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Configuration {
    #[serde(default)]
    statuses: Option<StatusLimits>,
    #[serde(default)]
    urls: Option<V2Urls>,
}

#[derive(Debug, Default, Deserialize)]
struct StatusLimits {
    #[serde(default)]
    max_characters: Option<u64>,
    #[serde(default)]
    characters_reserved_per_url: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct V2Urls {
    #[serde(default)]
    streaming: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct V1Urls {
    #[serde(default)]
    streaming_api: Option<String>,
}

/// Ids are opaque strings; a server that sends numbers gets them as text.
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    optional_id(d)?.ok_or_else(|| serde::de::Error::custom("missing id"))
}

fn optional_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!("an id cannot be {other}"))),
    }
}

/// A list that may be null.
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}
