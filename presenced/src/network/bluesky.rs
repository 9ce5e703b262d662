//! Bluesky (AT Protocol): announces articles as `app.bsky.feed.post` records with link,
//! hashtag and mention facets and a link card, collects mentions, replies and quotes from
//! `app.bsky.notification.listNotifications`, and answers in threads.
//!
//! Sources for every API fact used here are in `shared/api/networks.md` §2; the behaviour of
//! the reference servers was checked against the real PDS and AppView that the end-to-end
//! tests run (`tests/bsky/`).
//!
//! # Session
//!
//! `com.atproto.server.createSession` is rate limited (30 per 5 minutes, 300 per day), so it
//! is called only when there is no session or the session cannot be renewed. The session
//! (access and refresh JWT, DID, handle, and the PDS endpoint from the DID document) is
//! handed to the worker through [`Network::session_data`], which keeps it in the state file,
//! and comes back to [`Bluesky::new`] on the next start: a restart checks it with
//! `getSession` and logs "session reused". An expired access token (400 `ExpiredToken`) or a
//! 401 is renewed with `refreshSession` (which rotates both tokens) and the request is sent
//! once more; only when the refresh token is refused too does the account log in again, and
//! never twice within five minutes. Login and refresh go to the configured service (the
//! entryway on bsky.social), everything else to the account's PDS.
//!
//! Architecture invariant: tokens and the app password never reach a log line, an error or
//! a `Debug` output; they only go into an `Authorization` header or the login body.
//!
//! # Exactly once
//!
//! The record key of a post is a TID derived from the core's key ([`richtext::tid`]): one key,
//! one possible record, whatever happens between attempts. Every attempt is
//! `com.atproto.repo.putRecord` with `swapRecord: null`, which creates the record when the
//! key is free, is a no-op when the identical record is already there, and fails with
//! `InvalidSwap` when something else is. (A repeated `createRecord` with the same key is a
//! 500 on the reference PDS, so it is never used.)
//!
//! For the replay to be a no-op the record must be byte-identical, `createdAt` included. The
//! core fixes the text and the key before the first attempt but keeps no time for the
//! adapter, and the trait offers no way to make adapter data durable *before* a request. So:
//!
//! - the record is built once, at the first attempt, with `createdAt` = that moment, and kept
//!   as a draft in memory and in the session data, which the worker stores after every
//!   call: every later attempt in this process, and every attempt after a restart that
//!   follows a completed call (a timeout, a 5xx, a lost answer), sends the identical record;
//! - the one case it cannot cover, a crash between sending and the worker storing the
//!   session, is covered by the key: after a crash the core marks the post in doubt, the
//!   worker calls [`Network::find_post`], which reads the record key back with `getRecord`,
//!   and a record found there is the post. If the crashed attempt lands only after that
//!   look (it was still in the PDS's queue), the new attempt's different `createdAt` makes
//!   it an `InvalidSwap`, and the record at the key is read back and taken as posted when it
//!   carries our text (for answers: the same parent). Anything else at our key is refused,
//!   never overwritten.
//!
//! A thumbnail blob is uploaded right before the write (unreferenced blobs are collected
//! after a while); a retry uploads the same image again, which gives the same blob reference
//! when the image is unchanged, and a `BlobNotFound` makes the post go out without it.
//!
//! # Mentions
//!
//! Notifications come newest first and page towards older ones; the AppView orders them by
//! the earlier of the post's `createdAt` and its indexing time, so a late-indexed post can
//! land just behind newer ones. A fetch therefore reads from the top until it reaches
//! notifications older than the stored cursor (the newest time seen) by more than
//! [`CURSOR_MARGIN`], and drops what it already handed to the core in this process; the core
//! drops duplicates by URI. Each call reads one page and returns it with
//! [`Mentions::more`] when older pages remain: the page cursor and the walk's newest time
//! are stored with the page, so a long backlog is taken in durable steps and a restart
//! resumes the walk where it stopped. The stored cursor moves to the walk's newest time only
//! when the walk is done. The first fetch of an account takes only the newest page (an
//! account without any notification gets the epoch as its cursor: all that comes is new).
//!
//! A message's conversation is its thread root (`reply.root` of the record, or the post
//! itself). The AppView notifies a reply to the authors of its ancestors up to five levels
//! up, so every reply to one of our posts, or to a reply to one, reaches us as a
//! notification; the threads of `watch` are therefore not read. (The AppView indexes
//! repositories in parallel, so a reply indexed before the post it answers notifies nobody;
//! a person answering an announcement they have read cannot hit that.)
//!
//! # Errors
//!
//! A write that may have reached the PDS and got no usable answer (timeout, lost connection,
//! 5xx) is [`NetError::InDoubt`]; a refused login or a token that cannot be renewed is
//! [`NetError::Unauthorized`]; 429 is [`NetError::Transient`] with `Retry-After` or
//! `RateLimit-Reset`, and a spent budget (`RateLimit-Remaining: 0`) holds further requests
//! until the reset; other 4xx answers are [`NetError::Rejected`].

mod richtext;
#[cfg(test)]
mod tests;
mod xrpc;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use self::richtext::{Feature, POST};
use self::xrpc::{Body, Effect, Failure, Xrpc};
use super::{AccountInfo, Incoming, Mentions, NetError, Network, Post, Posted, Reply};
use crate::config::Secret;
use crate::fit::Rules;

/// Where accounts live when the config names no PDS.
pub const DEFAULT_SERVICE: &str = "https://bsky.social";

/// The cursor key under which the time of the newest notification seen is stored.
pub const CURSOR: &str = "notifications";
/// While reading a backlog page by page: the newest time of the walk, and the page to read
/// next (empty when no walk is under way).
const WALK_TOP: &str = "notifications.walk_top";
const WALK_PAGE: &str = "notifications.walk_page";
/// The cursor of an account that had no notification when it was first read.
const EMPTY_CURSOR: &str = "1970-01-01T00:00:00.000Z";

/// How often mentions are fetched. Bluesky offers clients no push for notifications short of
/// the whole-network firehose, so this poll is the only source; one fetch is usually one
/// request.
pub const MENTION_INTERVAL: Duration = Duration::from_secs(60);
/// No second login within this time: createSession allows 300 a day.
const LOGIN_GAP: Duration = Duration::from_secs(300);
/// Notifications per page (the lexicon allows 1–100).
const PAGE: usize = 50;
/// How far behind the cursor a fetch keeps reading (see the module docs).
const CURSOR_MARGIN: chrono::Duration = chrono::Duration::minutes(15);
/// Notification URIs remembered as handed to the core, per process.
const MAX_SEEN: usize = 4096;
/// The lexicon's limit for a link card's thumbnail.
const MAX_THUMB: usize = 1_000_000;
/// The whole thumbnail fetch, redirects included, must finish within this.
const THUMB_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_THUMB_REDIRECTS: usize = 3;
/// Link card descriptions are cut here; the card shows two or three lines anyway.
const MAX_DESCRIPTION: usize = 1000;
/// Drafts kept for posts whose outcome is unknown; older ones are dropped first.
const MAX_DRAFTS: usize = 32;
/// Handle → DID lookups remembered.
const MAX_DIDS: usize = 1024;

/// Keys of the session data.
const K_IDENTIFIER: &str = "identifier";
const K_DID: &str = "did";
const K_HANDLE: &str = "handle";
const K_PDS: &str = "pds";
const K_ACCESS: &str = "access_jwt";
const K_REFRESH: &str = "refresh_jwt";
const K_DRAFT: &str = "draft:";

/// A JWT; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    did: String,
    handle: String,
    /// Origin of the account's PDS, from the DID document.
    pds: String,
    access: Token,
    refresh: Token,
}

/// One Bluesky account.
pub struct Bluesky {
    account: String,
    /// Where login and refresh go: the configured service.
    service: String,
    /// The configured handle, used to log in.
    identifier: String,
    password: Secret,
    xrpc: Xrpc,
    session: Option<Session>,
    /// Records built for keys whose outcome is not known yet, by key (see the module docs).
    drafts: BTreeMap<String, Value>,
    last_login: Option<Instant>,
    logins: u64,
    dids: HashMap<String, String>,
    seen: VecDeque<String>,
    seen_set: HashSet<String>,
    mention_interval: Duration,
}

impl std::fmt::Debug for Bluesky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bluesky")
            .field("account", &self.account)
            .field("service", &self.service)
            .field("handle", &self.identifier)
            .field("did", &self.session.as_ref().map(|s| s.did.as_str()))
            .field("drafts", &self.drafts.len())
            .finish_non_exhaustive()
    }
}

/// A record read back from our repository.
#[derive(Debug)]
struct Found {
    uri: String,
    value: Value,
}

/// The post being answered, as a strong reference plus what the answer needs of it.
#[derive(Debug)]
struct Parent {
    uri: String,
    cid: String,
    author_did: String,
    author_handle: Option<String>,
    /// `reply.root` of the parent's record, when it is itself a reply.
    root: Option<(String, String)>,
}

impl Bluesky {
    /// `service` is the PDS (or entryway) URL, `session` the data kept from the last run.
    pub fn new(
        account: &str,
        service: &str,
        handle: &str,
        password: Secret,
        session: BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> Bluesky {
        let identifier = handle.trim().trim_start_matches('@').to_owned();
        let get = |k: &str| session.get(k).filter(|v| !v.is_empty()).cloned();
        // A session of another handle (the config changed) is not ours to reuse.
        let same_account = get(K_IDENTIFIER).is_some_and(|i| i.eq_ignore_ascii_case(&identifier));
        let stored = match (get(K_DID), get(K_HANDLE), get(K_PDS), get(K_ACCESS), get(K_REFRESH)) {
            (Some(did), Some(handle), Some(pds), Some(access), Some(refresh)) if same_account => {
                Some(Session { did, handle, pds, access: Token(access), refresh: Token(refresh) })
            }
            _ => None,
        };
        let drafts = session
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(K_DRAFT)?;
                let record: Value = serde_json::from_str(v).ok()?;
                record.is_object().then(|| (key.to_owned(), record))
            })
            .collect();
        Bluesky {
            account: account.to_owned(),
            service: service.trim().trim_end_matches('/').to_owned(),
            identifier,
            password,
            xrpc: Xrpc::new(http),
            session: stored,
            drafts,
            last_login: None,
            logins: 0,
            dids: HashMap::new(),
            seen: VecDeque::new(),
            seen_set: HashSet::new(),
            mention_interval: MENTION_INTERVAL,
        }
    }

    /// Fetches mentions every `every` instead of every minute (never more often than every
    /// ten seconds). For a configuration key that does not exist yet.
    pub fn with_mention_interval(mut self, every: Duration) -> Bluesky {
        self.mention_interval = every.max(Duration::from_secs(10));
        self
    }

    /// Our DID, logging in first when there is no session (a failed renewal leaves none).
    async fn did(&mut self) -> Result<String, NetError> {
        if self.session.is_none() {
            self.login().await?;
        }
        self.session.as_ref().map(|s| s.did.clone()).ok_or_else(|| NetError::Transient {
            message: "not logged in".into(),
            retry_after: None,
        })
    }

    // -----------------------------------------------------------------------------------
    // Session.

    /// `createSession` with the app password, at most once per [`LOGIN_GAP`].
    async fn login(&mut self) -> Result<(), NetError> {
        let what = "com.atproto.server.createSession";
        if let Some(at) = self.last_login {
            let since = at.elapsed();
            if since < LOGIN_GAP {
                return Err(NetError::Transient {
                    message: format!(
                        "{what}: the session needs a new login, but the last one was {}s ago; \
                         waiting, since logins are rate limited",
                        since.as_secs()
                    ),
                    retry_after: Some(LOGIN_GAP - since),
                });
            }
        }
        let body = Body::Json(json!({
            "identifier": self.identifier,
            "password": self.password.expose(),
        }));
        let answer = self.xrpc.call(&self.service, Method::POST, what, &[], &body, None).await;
        drop(body);
        // Only an attempt that reached the server counts against its rate limit.
        if !matches!(answer, Err(Failure::NotSent { .. })) {
            self.last_login = Some(Instant::now());
        }
        let value = answer.map_err(|f| login_error(f, what))?;
        let session = self.session_from(&value, what)?;
        tracing::info!(account = %self.account, handle = %session.handle, did = %session.did, "logged in (new session)");
        self.session = Some(session);
        self.logins += 1;
        Ok(())
    }

    /// `refreshSession`. `Ok(false)`: the refresh token is refused, a login is needed.
    async fn refresh(&mut self) -> Result<bool, NetError> {
        let what = "com.atproto.server.refreshSession";
        let Some(refresh) = self.session.as_ref().map(|s| s.refresh.0.clone()) else {
            return Ok(false);
        };
        let answer = self
            .xrpc
            .call(&self.service, Method::POST, what, &[], &Body::None, Some(&refresh))
            .await;
        match answer {
            Ok(value) => {
                let session = self.session_from(&value, what)?;
                tracing::info!(account = %self.account, "session renewed (refreshSession)");
                self.session = Some(session);
                Ok(true)
            }
            Err(f) if f.is_auth() => {
                let why = f.judge(what, Effect::Read);
                tracing::info!(account = %self.account, "the stored session cannot be renewed ({why}); logging in again");
                Ok(false)
            }
            Err(f) => Err(f.judge(what, Effect::Read)),
        }
    }

    async fn renew(&mut self) -> Result<(), NetError> {
        if !self.refresh().await? {
            self.session = None;
            self.login().await?;
        }
        Ok(())
    }

    /// A session from a `createSession`/`refreshSession` answer. The PDS comes from the
    /// DID document when there is one, else stays what it was, else is the service.
    fn session_from(&self, v: &Value, what: &str) -> Result<Session, NetError> {
        if v.get("active").and_then(Value::as_bool) == Some(false) {
            let status = v.get("status").and_then(Value::as_str).unwrap_or("inactive");
            return Err(NetError::Unauthorized(format!(
                "{what}: the account is {}",
                xrpc::clean(status)
            )));
        }
        let field = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let (Some(did), Some(handle), Some(access), Some(refresh)) =
            (field("did"), field("handle"), field("accessJwt"), field("refreshJwt"))
        else {
            return Err(NetError::Transient {
                message: format!("{what}: the answer lacks the session fields"),
                retry_after: None,
            });
        };
        let pds = v
            .get("didDoc")
            .and_then(pds_endpoint)
            .or_else(|| self.session.as_ref().map(|s| s.pds.clone()))
            .unwrap_or_else(|| self.service.clone());
        Ok(Session {
            did: did.to_owned(),
            handle: handle.to_owned(),
            pds,
            access: Token(access.to_owned()),
            refresh: Token(refresh.to_owned()),
        })
    }

    /// One XRPC request to the account's PDS with the access token, logging in first when
    /// there is no session and renewing the session once when the token is refused.
    async fn call(
        &mut self,
        method: Method,
        nsid: &str,
        query: &[(&str, &str)],
        body: &Body,
    ) -> Result<Value, Failure> {
        if self.session.is_none() {
            self.login().await.map_err(Failure::Judged)?;
        }
        let mut renewed = false;
        loop {
            let Some((pds, token)) =
                self.session.as_ref().map(|s| (s.pds.clone(), s.access.0.clone()))
            else {
                return Err(Failure::Judged(NetError::Transient {
                    message: "not logged in".into(),
                    retry_after: None,
                }));
            };
            match self.xrpc.call(&pds, method.clone(), nsid, query, body, Some(&token)).await {
                Err(f) if f.is_auth() && !renewed => {
                    renewed = true;
                    self.renew().await.map_err(Failure::Judged)?;
                }
                other => return other,
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Writing posts.

    /// Writes `record` at `rkey` exactly once (see the module docs). `ours` tells whether a
    /// record found at the key is this post. The draft for `key` is kept while the outcome
    /// is open and dropped once it is settled.
    async fn put(
        &mut self,
        key: &str,
        rkey: &str,
        mut record: Value,
        ours: impl Fn(&Value) -> bool + Send,
    ) -> Result<Posted, NetError> {
        let what = "com.atproto.repo.putRecord";
        let did = self.did().await?;
        let mut dropped_thumb = false;
        let result = loop {
            self.keep_draft(key, &record);
            let body = Body::Json(json!({
                "repo": did,
                "collection": POST,
                "rkey": rkey,
                "record": record,
                "swapRecord": Value::Null,
            }));
            match self.call(Method::POST, what, &[], &body).await {
                Ok(v) => match v.get("uri").and_then(Value::as_str) {
                    Some(uri) => break Ok(self.posted(uri)),
                    None => {
                        break Err(NetError::InDoubt {
                            message: format!("{what}: the answer names no record"),
                        })
                    }
                },
                Err(f) if f.error_name() == Some("InvalidSwap") => {
                    break match self.get_own(rkey).await {
                        Ok(Some(found)) if ours(&found.value) => {
                            tracing::info!(account = %self.account, uri = %found.uri, "already posted by an earlier attempt");
                            Ok(self.posted(&found.uri))
                        }
                        Ok(Some(found)) => Err(NetError::Rejected(format!(
                            "{what}: another post already sits at {}; not overwriting it",
                            found.uri
                        ))),
                        Ok(None) => Err(NetError::Transient {
                            message: format!("{what}: InvalidSwap, yet nothing is at {rkey}"),
                            retry_after: None,
                        }),
                        Err(e) => Err(e),
                    };
                }
                Err(f) if f.error_name() == Some("BlobNotFound") && !dropped_thumb => {
                    // The thumbnail an earlier attempt uploaded has been collected.
                    tracing::warn!(account = %self.account, "the link card's thumbnail is gone from the PDS; posting without it");
                    if let Some(external) =
                        record.pointer_mut("/embed/external").and_then(Value::as_object_mut)
                    {
                        external.remove("thumb");
                    }
                    dropped_thumb = true;
                }
                Err(f) => break Err(f.judge(what, Effect::Writes)),
            }
        };
        if matches!(result, Ok(_) | Err(NetError::Rejected(_) | NetError::Unauthorized(_))) {
            self.drafts.remove(key);
        }
        result
    }

    fn keep_draft(&mut self, key: &str, record: &Value) {
        self.drafts.insert(key.to_owned(), record.clone());
        while self.drafts.len() > MAX_DRAFTS {
            let oldest = self
                .drafts
                .iter()
                .min_by_key(|(_, r)| {
                    r.get("createdAt").and_then(Value::as_str).unwrap_or("").to_owned()
                })
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.drafts.remove(&k),
                None => break,
            };
        }
    }

    /// The record at `rkey` in our repository, if any.
    async fn get_own(&mut self, rkey: &str) -> Result<Option<Found>, NetError> {
        let what = "com.atproto.repo.getRecord";
        let did = self.did().await?;
        let query = [("repo", did.as_str()), ("collection", POST), ("rkey", rkey)];
        match self.call(Method::GET, what, &query, &Body::None).await {
            Ok(v) => {
                let uri = v.get("uri").and_then(Value::as_str).unwrap_or_default().to_owned();
                let value = v.get("value").cloned().unwrap_or(Value::Null);
                if uri.is_empty() {
                    return Err(NetError::Transient {
                        message: format!("{what}: the answer names no record"),
                        retry_after: None,
                    });
                }
                Ok(Some(Found { uri, value }))
            }
            Err(Failure::Status { status: 400, error, message, .. })
                if error == "RecordNotFound" || message.starts_with("Could not locate record") =>
            {
                Ok(None)
            }
            Err(f) => Err(f.judge(what, Effect::Read)),
        }
    }

    fn posted(&self, uri: &str) -> Posted {
        let actor = self.session.as_ref().map_or("", |s| s.did.as_str());
        Posted { remote_id: uri.to_owned(), url: richtext::web_url(actor, uri) }
    }

    /// Facets for `text`; mentions are resolved through `known` (handle → DID), the cache or
    /// the PDS, and left as plain text when that fails.
    async fn facets(
        &mut self,
        text: &str,
        exact: &[&str],
        known: &[(String, String)],
    ) -> Vec<Value> {
        let spans = richtext::detect(text, exact);
        for span in &spans {
            let Feature::Mention(handle) = &span.feature else { continue };
            if known.iter().any(|(h, _)| h == handle) || self.dids.contains_key(handle) {
                continue;
            }
            if let Some(did) = self.resolve_handle(handle).await {
                if self.dids.len() >= MAX_DIDS {
                    self.dids.clear();
                }
                self.dids.insert(handle.clone(), did);
            }
        }
        richtext::facets(&spans, |h| {
            known
                .iter()
                .find(|(k, _)| k == h)
                .map(|(_, d)| d.clone())
                .or_else(|| self.dids.get(h).cloned())
        })
    }

    async fn resolve_handle(&mut self, handle: &str) -> Option<String> {
        let what = "com.atproto.identity.resolveHandle";
        match self.call(Method::GET, what, &[("handle", handle)], &Body::None).await {
            Ok(v) => v
                .get("did")
                .and_then(Value::as_str)
                .filter(|d| d.starts_with("did:"))
                .map(str::to_owned),
            Err(f) => {
                let why = f.judge(what, Effect::Read);
                tracing::info!(account = %self.account, "@{handle} stays plain text: {why}");
                None
            }
        }
    }

    /// The announcement's record: text and facets, and a link card for the article.
    async fn announcement(&mut self, post: &Post) -> Value {
        let facets = self.facets(&post.text, &[post.url.as_str()], &[]).await;
        let mut record = json!({"$type": POST, "text": post.text, "createdAt": now_iso()});
        if !facets.is_empty() {
            record["facets"] = Value::Array(facets);
        }
        if !post.url.is_empty() {
            let title =
                if post.title.trim().is_empty() { post.url.as_str() } else { post.title.trim() };
            let mut external = json!({
                "uri": post.url,
                "title": title,
                "description": description(&post.summary),
            });
            if let Some(image) = &post.image {
                if let Some(blob) = self.thumbnail(image).await {
                    external["thumb"] = blob;
                }
            }
            record["embed"] = json!({"$type": "app.bsky.embed.external", "external": external});
        }
        record
    }

    /// Uploads the image again for a retried record that had a thumbnail: the blob of the
    /// first attempt may have been collected. The same image gives the same reference.
    async fn refresh_thumb(&mut self, record: &mut Value, image: Option<&str>) {
        let Some(image) = image else { return };
        if record.pointer("/embed/external/thumb").is_none() {
            return;
        }
        if let Some(blob) = self.thumbnail(image).await {
            if let Some(external) = record.pointer_mut("/embed/external") {
                external["thumb"] = blob;
            }
        }
    }

    /// Fetches the article's image (bounded in time and size) and uploads it as a blob.
    /// Any failure only costs the card its picture.
    async fn thumbnail(&mut self, image: &str) -> Option<Value> {
        let fetched = tokio::time::timeout(THUMB_TIMEOUT, fetch_image(self.xrpc.http(), image))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", THUMB_TIMEOUT.as_secs())));
        let (data, mime) = match fetched {
            Ok(x) => x,
            Err(why) => {
                tracing::warn!(account = %self.account, image = %image, "link card without a thumbnail: {why}");
                return None;
            }
        };
        let what = "com.atproto.repo.uploadBlob";
        match self.call(Method::POST, what, &[], &Body::Bytes { data, mime }).await {
            Ok(v) => v.get("blob").filter(|b| b.is_object()).cloned(),
            Err(f) => {
                let why = f.judge(what, Effect::Read);
                tracing::warn!(account = %self.account, image = %image, "link card without a thumbnail: {why}");
                None
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Answers.

    /// The post at `uri` as a strong reference: from the AppView (which knows every
    /// network's posts), else from the repository through our PDS.
    async fn parent(&mut self, uri: &str) -> Result<Parent, NetError> {
        let what = "app.bsky.feed.getPosts";
        let posts = self
            .call(Method::GET, what, &[("uris", uri)], &Body::None)
            .await
            .map_err(|f| f.judge(what, Effect::Read))?;
        let root_of = |record: &Value| {
            let r = record.pointer("/reply/root")?;
            Some((r.get("uri")?.as_str()?.to_owned(), r.get("cid")?.as_str()?.to_owned()))
        };
        if let Some(p) = posts.get("posts").and_then(Value::as_array).and_then(|a| a.first()) {
            let field = |ptr: &str| p.pointer(ptr).and_then(Value::as_str).map(str::to_owned);
            if let (Some(uri), Some(cid), Some(did)) =
                (field("/uri"), field("/cid"), field("/author/did"))
            {
                return Ok(Parent {
                    uri,
                    cid,
                    author_did: did,
                    author_handle: field("/author/handle"),
                    root: p.get("record").and_then(root_of),
                });
            }
        }
        let what = "com.atproto.repo.getRecord";
        let gone = || {
            NetError::Rejected(format!(
                "the post being answered ({uri}) is gone: deleted, or not visible to this account"
            ))
        };
        let (repo, collection, rkey) = richtext::parse_at_uri(uri).ok_or_else(gone)?;
        let query = [("repo", repo), ("collection", collection), ("rkey", rkey)];
        match self.call(Method::GET, what, &query, &Body::None).await {
            Ok(v) => {
                let cid = v.get("cid").and_then(Value::as_str).ok_or_else(gone)?.to_owned();
                Ok(Parent {
                    uri: uri.to_owned(),
                    cid,
                    author_did: repo.to_owned(),
                    author_handle: None,
                    root: v.get("value").and_then(root_of),
                })
            }
            Err(Failure::Status { status: 400, .. }) => Err(gone()),
            Err(f) => Err(f.judge(what, Effect::Read)),
        }
    }

    /// The answer's record: `@to` in front, a mention facet for them, and `reply` strong
    /// references to the thread's root and the post answered.
    async fn answer(&mut self, reply: &Reply) -> Result<Value, NetError> {
        let parent = self.parent(&reply.in_reply_to).await?;
        if !reply.thread.is_empty() {
            if let Some((root, _)) = &parent.root {
                if root != &reply.thread {
                    tracing::debug!(account = %self.account, "the answered post names root {root}, the conversation {}", reply.thread);
                }
            }
        }
        let (root_uri, root_cid) =
            parent.root.clone().unwrap_or_else(|| (parent.uri.clone(), parent.cid.clone()));
        let text = richtext::with_mention(&reply.to, &reply.text);
        let mut known = vec![(reply.to.to_ascii_lowercase(), parent.author_did.clone())];
        if let Some(h) = &parent.author_handle {
            known.push((h.to_ascii_lowercase(), parent.author_did.clone()));
        }
        let facets = self.facets(&text, &[], &known).await;
        let mut record = json!({
            "$type": POST,
            "text": text,
            "createdAt": now_iso(),
            "reply": {
                "root": {"uri": root_uri, "cid": root_cid},
                "parent": {"uri": parent.uri, "cid": parent.cid},
            },
        });
        if !facets.is_empty() {
            record["facets"] = Value::Array(facets);
        }
        Ok(record)
    }

    // -----------------------------------------------------------------------------------
    // Mentions.

    fn incoming(&self, n: &Value) -> Option<Incoming> {
        let uri = n.get("uri")?.as_str()?;
        let record = n.get("record")?;
        let author = n.get("author")?;
        let did = author.get("did")?.as_str()?;
        let handle = author
            .get("handle")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty() && *h != "handle.invalid")
            .unwrap_or(did);
        let display_name = author
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .unwrap_or(handle);
        let text = richtext::render(
            record.get("text").and_then(Value::as_str).unwrap_or_default(),
            record.get("facets"),
        );
        let thread = record.pointer("/reply/root/uri").and_then(Value::as_str).unwrap_or(uri);
        let at = n
            .get("indexedAt")
            .or_else(|| record.get("createdAt"))
            .and_then(Value::as_str)
            .and_then(parse_time)
            .map_or_else(|| Utc::now().timestamp(), |t| t.timestamp());
        Some(Incoming {
            remote_id: uri.to_owned(),
            thread: thread.to_owned(),
            in_reply_to: record
                .pointer("/reply/parent/uri")
                .and_then(Value::as_str)
                .map(str::to_owned),
            author: handle.to_owned(),
            display_name: display_name.to_owned(),
            text,
            at,
            url: richtext::web_url(handle, uri),
            visibility: None,
        })
    }

    fn remember_seen(&mut self, uri: &str) -> bool {
        if !self.seen_set.insert(uri.to_owned()) {
            return false;
        }
        self.seen.push_back(uri.to_owned());
        while self.seen.len() > MAX_SEEN {
            if let Some(old) = self.seen.pop_front() {
                self.seen_set.remove(&old);
            }
        }
        true
    }
}

impl Network for Bluesky {
    async fn start(&mut self) -> Result<AccountInfo, NetError> {
        let what = "com.atproto.server.getSession";
        if self.session.is_none() {
            self.login().await?;
        } else {
            let logins = self.logins;
            let v = self
                .call(Method::GET, what, &[], &Body::None)
                .await
                .map_err(|f| f.judge(what, Effect::Read))?;
            if v.get("active").and_then(Value::as_bool) == Some(false) {
                let status = v.get("status").and_then(Value::as_str).unwrap_or("inactive");
                return Err(NetError::Unauthorized(format!(
                    "{what}: the account is {}",
                    xrpc::clean(status)
                )));
            }
            if let (Some(s), Some(handle)) =
                (self.session.as_mut(), v.get("handle").and_then(Value::as_str))
            {
                handle.clone_into(&mut s.handle);
            }
            if self.logins == logins {
                tracing::info!(account = %self.account, "session reused (no login)");
            }
        }
        let handle =
            self.session.as_ref().map_or_else(|| self.identifier.clone(), |s| s.handle.clone());
        Ok(AccountInfo {
            rules: Rules::bluesky(),
            handle,
            mention_interval: Some(self.mention_interval),
            at_once: super::AT_ONCE_CHEAP_RECONCILE,
        })
    }

    async fn post(&mut self, post: &Post) -> Result<Posted, NetError> {
        let rkey = richtext::tid(&post.key);
        let record = match self.drafts.get(&post.key).cloned() {
            Some(mut record) => {
                self.refresh_thumb(&mut record, post.image.as_deref()).await;
                record
            }
            None => self.announcement(post).await,
        };
        let text = post.text.clone();
        let ours = move |v: &Value| v.get("text").and_then(Value::as_str) == Some(text.as_str());
        self.put(&post.key, &rkey, record, ours).await
    }

    async fn find_post(&mut self, post: &Post) -> Result<Option<Posted>, NetError> {
        let rkey = richtext::tid(&post.key);
        match self.get_own(&rkey).await? {
            None => Ok(None),
            Some(found)
                if found.value.get("text").and_then(Value::as_str) == Some(post.text.as_str()) =>
            {
                self.drafts.remove(&post.key);
                Ok(Some(self.posted(&found.uri)))
            }
            Some(found) => Err(NetError::Rejected(format!(
                "another post already sits at {}, where this announcement belongs",
                found.uri
            ))),
        }
    }

    async fn fetch_mentions(
        &mut self,
        cursors: &BTreeMap<String, String>,
        _watch: &[String],
    ) -> Result<Mentions, NetError> {
        let what = "app.bsky.notification.listNotifications";
        let me = self.did().await?;
        let cursor = |k: &str| cursors.get(k).filter(|v| !v.is_empty()).cloned();
        let stored = cursor(CURSOR);
        let stop_before = stored.as_deref().and_then(parse_time).map(|t| t - CURSOR_MARGIN);
        let walk_page = cursor(WALK_PAGE);
        // The newest time of this walk: known from its first page when resuming one.
        let mut top: Option<(DateTime<Utc>, String)> = cursor(WALK_TOP)
            .filter(|_| walk_page.is_some())
            .and_then(|s| parse_time(&s).map(|t| (t, s)));
        let limit = PAGE.to_string();
        let mut query = vec![
            ("limit", limit.as_str()),
            ("reasons", "mention"),
            ("reasons", "reply"),
            ("reasons", "quote"),
        ];
        if let Some(page) = &walk_page {
            query.push(("cursor", page.as_str()));
        }
        let v = self
            .call(Method::GET, what, &query, &Body::None)
            .await
            .map_err(|f| f.judge(what, Effect::Read))?;
        let list = v.get("notifications").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut items = Vec::new();
        let mut reached = false;
        for n in &list {
            let Some(at_text) = n.get("indexedAt").and_then(Value::as_str) else { continue };
            let Some(at) = parse_time(at_text) else { continue };
            if top.as_ref().map_or(true, |(t, _)| *t < at) {
                top = Some((at, at_text.to_owned()));
            }
            if stop_before.is_some_and(|stop| at < stop) {
                reached = true;
                continue;
            }
            // Older AppViews ignore `reasons`.
            let reason = n.get("reason").and_then(Value::as_str).unwrap_or_default();
            if !matches!(reason, "mention" | "reply" | "quote")
                || n.pointer("/author/did").and_then(Value::as_str) == Some(me.as_str())
            {
                continue;
            }
            let Some(item) = self.incoming(n) else { continue };
            if self.remember_seen(&item.remote_id) {
                items.push(item);
            }
        }
        items.sort_by_key(|i| i.at);
        let next_page = v.get("cursor").and_then(Value::as_str).filter(|c| !c.is_empty());
        let mut cursors = cursors.clone();
        // The first fetch of an account takes only the newest page, not its whole history.
        let done = reached || stored.is_none() || list.is_empty() || next_page.is_none();
        let more = match (done, next_page) {
            (false, Some(page)) => {
                // Older pages remain: this page is stored now, the walk resumes from here.
                if let Some((_, t)) = &top {
                    cursors.insert(WALK_TOP.to_owned(), t.clone());
                }
                cursors.insert(WALK_PAGE.to_owned(), page.to_owned());
                true
            }
            _ => {
                let newest =
                    match (top, stored.as_deref().and_then(|s| parse_time(s).map(|t| (t, s)))) {
                        (Some(a), Some(b)) if b.0 > a.0 => Some(b.1.to_owned()),
                        (Some(a), _) => Some(a.1),
                        (None, b) => b.map(|b| b.1.to_owned()),
                    };
                // No notification at all yet: everything that comes later is new.
                let newest = newest.unwrap_or_else(|| EMPTY_CURSOR.to_owned());
                cursors.insert(CURSOR.to_owned(), newest);
                // A finished walk leaves empty markers: the core only ever adds cursors.
                for k in [WALK_TOP, WALK_PAGE] {
                    if cursors.contains_key(k) {
                        cursors.insert(k.to_owned(), String::new());
                    }
                }
                false
            }
        };
        Ok(Mentions { items, cursors, more })
    }

    async fn reply(&mut self, reply: &Reply) -> Result<Posted, NetError> {
        let rkey = richtext::tid(&reply.key);
        let record = match self.drafts.get(&reply.key).cloned() {
            Some(record) => record,
            None => self.answer(reply).await?,
        };
        let parent = reply.in_reply_to.clone();
        let ours = move |v: &Value| {
            v.pointer("/reply/parent/uri").and_then(Value::as_str) == Some(parent.as_str())
        };
        self.put(&reply.key, &rkey, record, ours).await
    }

    async fn find_reply(&mut self, reply: &Reply) -> Result<Option<Posted>, NetError> {
        let rkey = richtext::tid(&reply.key);
        match self.get_own(&rkey).await? {
            None => Ok(None),
            Some(found)
                if found.value.pointer("/reply/parent/uri").and_then(Value::as_str)
                    == Some(reply.in_reply_to.as_str()) =>
            {
                self.drafts.remove(&reply.key);
                Ok(Some(self.posted(&found.uri)))
            }
            Some(found) => Err(NetError::Rejected(format!(
                "another post already sits at {}, where this answer belongs",
                found.uri
            ))),
        }
    }

    fn session_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::new();
        data.insert(K_IDENTIFIER.to_owned(), self.identifier.clone());
        if let Some(s) = &self.session {
            data.insert(K_DID.to_owned(), s.did.clone());
            data.insert(K_HANDLE.to_owned(), s.handle.clone());
            data.insert(K_PDS.to_owned(), s.pds.clone());
            data.insert(K_ACCESS.to_owned(), s.access.0.clone());
            data.insert(K_REFRESH.to_owned(), s.refresh.0.clone());
        }
        for (key, record) in &self.drafts {
            data.insert(format!("{K_DRAFT}{key}"), record.to_string());
        }
        data
    }
}

fn login_error(f: Failure, what: &str) -> NetError {
    match &f {
        Failure::Status { status: 401, message, .. } => NetError::Unauthorized(format!(
            "{what}: the handle or app password was refused{}",
            if message.is_empty() { String::new() } else { format!(" ({message})") }
        )),
        Failure::Status { error, .. } if error == "AuthFactorTokenRequired" => {
            NetError::Unauthorized(format!(
                "{what}: the account asks for a code sent by email; use an app password"
            ))
        }
        Failure::Status { error, .. } if error == "AccountTakedown" => {
            NetError::Unauthorized(format!("{what}: the account has been taken down"))
        }
        _ => f.judge(what, Effect::Read),
    }
}

/// The origin of the `#atproto_pds` service in a DID document (§2.2).
fn pds_endpoint(doc: &Value) -> Option<String> {
    doc.get("service")?.as_array()?.iter().find_map(|s| {
        let id = s.get("id")?.as_str()?;
        let kind = s.get("type")?.as_str()?;
        if !id.ends_with("#atproto_pds") || kind != "AtprotoPersonalDataServer" {
            return None;
        }
        let url = url::Url::parse(s.get("serviceEndpoint")?.as_str()?).ok()?;
        matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
    })
}

fn now_iso() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// The feed item's summary for the link card: one line, bounded.
fn description(summary: &str) -> String {
    let one_line = summary.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_DESCRIPTION {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_DESCRIPTION - 1).collect();
    cut.push('…');
    cut
}

/// Fetches an image over http(s), following a few redirects, reading at most
/// [`MAX_THUMB`] bytes. Returns the bytes and their media type.
async fn fetch_image(http: &reqwest::Client, url: &str) -> Result<(Vec<u8>, String), String> {
    let mut url = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    for _ in 0..=MAX_THUMB_REDIRECTS {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{} URLs are not fetched", url.scheme()));
        }
        let mut response = http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "image/*")
            .send()
            .await
            .map_err(|e| xrpc::describe(&e))?;
        let status = response.status();
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("HTTP {} without a Location", status.as_u16()))?;
            url = url.join(to).map_err(|e| format!("bad redirect: {e}"))?;
            continue;
        }
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let declared = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .unwrap_or_default();
        let data = xrpc::read_body(&mut response, MAX_THUMB)
            .await
            .map_err(|e| format!("{e} (a thumbnail may have at most {MAX_THUMB} bytes)"))?;
        let mime = if declared.starts_with("image/") {
            declared
        } else {
            sniff_image(&data).ok_or_else(|| format!("not an image ({declared:?})"))?.to_owned()
        };
        return Ok((data, mime));
    }
    Err("too many redirects".into())
}

/// The media type of common image formats, from their first bytes.
fn sniff_image(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}
