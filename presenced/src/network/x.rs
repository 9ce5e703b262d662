//! X (Twitter API v2): announces articles with `POST /2/tweets`, reads mentions with
//! `GET /2/users/{id}/mentions`, and answers with `reply.in_reply_to_tweet_id`.
//!
//! Sources for every API fact used here are in `shared/api/networks.md` §3 (and §0, §5).
//!
//! # Login and the refresh token
//!
//! The account acts with an OAuth 2.0 user token obtained once by a human
//! ([`oauth::authorize_url`], [`oauth::exchange_code`], wired into `presencectl login x`) and
//! kept in the session map (keys in [`oauth`]'s docs), which the worker stores in the state
//! file whenever [`Network::session_data`] changes. Access tokens live 2 hours; each refresh
//! returns a new refresh token and invalidates the old one, so the new pair has to be durable
//! before anything depends on it. The worker stores the session only after a call returns,
//! hence:
//!
//! - a refresh is always the *last* request of a call: `start` returns right after one;
//!   `fetch_mentions` renews a token that has less than [`REFRESH_AHEAD`] left after its
//!   reads are done (it runs every [`MENTION_INTERVAL`], so tokens are renewed long before
//!   they expire); a post, reply or look-up that finds the token expired, or refused with
//!   401, renews it and ends with a [`NetError::Transient`] asking to be retried at once,
//!   without making its request;
//! - a call renews at most once.
//!
//! What remains: a crash (or kill) between X's answer to the refresh and the worker's
//! durable write (the time of one channel send and one state save, milliseconds) loses the
//! only valid refresh token; so does a refresh whose answer is lost on the way, and a
//! shutdown that cancels the worker while a refresh is in flight (the worker drops the
//! call's future). Either way the next start reports "X refused the stored refresh token …
//! run presencectl login x", and a human logs in again. X offers no grace period for the
//! old token that would close this window.
//!
//! # Exactly once
//!
//! X has no idempotency key. An attempt in doubt is looked for among the account's 100 most
//! recent posts (`GET /2/users/{id}/tweets`, `entities.urls[].expanded_url` compared as
//! canonical links with the article's URL; `text` only holds the t.co link). A 403
//! "duplicate content" answer is resolved the same way: found means posted.
//!
//! # Mentions
//!
//! `GET /2/users/{id}/mentions` newest first, from `since_id` (the newest mention stored),
//! paging backwards with `next_token` until the end (X keeps only the 800 most recent
//! mentions, 8 pages of 100), all returned in one batch with the new `since_id`. The first
//! fetch takes only the newest page; an account without any mention yet remembers the time
//! instead (`start_time`). The conversation is the post's `conversation_id`. Replies to our
//! posts carry our handle and so arrive as mentions; the threads of `watch` are not read
//! (search by `conversation_id` costs more and is limited to 7 days). Every read is billed
//! per post, so the interval is 5 minutes.
//!
//! The newest OpenAPI spec (v2.167) renames `tweet.fields`/`referenced_tweets`/
//! `includes.tweets` to `post.fields`/`referenced_posts`/`includes.posts`; whether the wire
//! changed is unknown. Both spellings are read in answers, and a 400 naming the fields
//! parameter switches to the other spelling.
//!
//! # Answers
//!
//! Self-serve apps may reply only to posts whose author "summoned" the account (mentioned
//! it or quoted one of its posts). X's refusal becomes a [`NetError::Rejected`] that says so;
//! the core shows it on the conversation, which stays open.
//!
//! Architecture invariant: no token is ever logged or formatted; tokens only go into
//! `Authorization` headers and the session map.

mod oauth;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use url::Url;

pub use oauth::{
    authorize_url, exchange_code, pkce_pair, random_state, AUTHORIZE_BASE, AUTHORIZE_PATH, SCOPES,
};
use oauth::{Session, Token};
use wire::{Effect, Failure};

use super::{AccountInfo, Incoming, Mentions, NetError, Network, Post, Posted, Reply};
use crate::config::Secret;
use crate::fit::Rules;

/// The API's base URL when the config names none.
pub const DEFAULT_API: &str = "https://api.x.com";

/// The cursor: the newest mention id stored.
pub const CURSOR_SINCE_ID: &str = "since_id";
/// The cursor of an account that had no mention at its first fetch: that time (RFC 3339).
pub const CURSOR_SINCE_TIME: &str = "since_time";

/// How often mentions are fetched. Each fetch costs at least one billed request (and every
/// post read is billed), well inside the 300 per 15 minutes allowed.
pub const MENTION_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// A token with less than this left is renewed at the end of a mention fetch.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(30 * 60);
/// A token this close to its expiry is treated as expired before a request.
const EXPIRY_SLACK: i64 = 60;
/// A 401 for a token renewed less than this long ago is not answered by renewing again (X
/// refusing fresh tokens would otherwise rotate the refresh token on every attempt).
const RENEWED_RECENTLY: Duration = Duration::from_secs(10 * 60);
/// Mentions per page (the maximum).
const PAGE: u32 = 100;
/// Mentions taken at the very first fetch: the recent ones, not the account's history.
const FIRST_PAGE: u32 = 20;
/// Pages per fetch: X keeps only the 800 most recent mentions.
const MAX_PAGES: usize = 8;
/// Own posts searched for an attempt in doubt.
const OWN_POSTS: u32 = 100;
/// A first fetch that found nothing starts the next one this much earlier than itself: our
/// clock may be ahead of X's, and a mention seen twice costs nothing (the core drops it).
const SINCE_TIME_MARGIN: i64 = 15 * 60;

const FIELDS_OLD: &str = "tweet.fields";
const FIELDS_NEW: &str = "post.fields";
const MENTION_FIELDS: &str =
    "created_at,author_id,conversation_id,in_reply_to_user_id,referenced_tweets,entities";
/// The same under the v2.167 names.
const MENTION_FIELDS_NEW: &str =
    "created_at,author_id,conversation_id,in_reply_to_user_id,referenced_posts,entities";
const OWN_FIELDS: &str = "created_at,entities,referenced_tweets";
const OWN_FIELDS_NEW: &str = "created_at,entities,referenced_posts";

/// What X answers a reply it does not allow.
pub const NOT_SUMMONED: &str = "X allows replies only to posts that mention or quote this account";

/// One X account.
#[derive(Debug)]
pub struct X {
    account: String,
    api: String,
    client_id: String,
    client_secret: Option<Secret>,
    http: reqwest::Client,
    session: Session,
    /// The fields parameter's spelling the API accepts (`tweet.fields` until told otherwise).
    fields_param: &'static str,
    /// When the token was last renewed by this process.
    renewed_at: Option<std::time::Instant>,
}

/// What `GET /2/users/me` says.
#[derive(Debug, Clone, Deserialize)]
struct Me {
    #[serde(deserialize_with = "id")]
    id: String,
    username: String,
}

impl X {
    /// `api` is the API base URL, `session` the tokens kept from the last run (or stored by
    /// `presencectl login x`), in the format [`exchange_code`] returns.
    pub fn new(
        account: &str,
        api: &str,
        client_id: &str,
        client_secret: Option<Secret>,
        session: BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> X {
        X {
            account: account.to_owned(),
            api: api.trim().trim_end_matches('/').to_owned(),
            client_id: client_id.trim().to_owned(),
            client_secret,
            http,
            session: Session::from_map(session),
            fields_param: FIELDS_OLD,
            renewed_at: None,
        }
    }

    fn info(&self) -> AccountInfo {
        AccountInfo {
            rules: Rules::x(),
            handle: self.session.username.clone().unwrap_or_default(),
            mention_interval: Some(MENTION_INTERVAL),
            at_once: 1,
        }
    }

    fn not_logged_in(&self) -> NetError {
        NetError::Unauthorized(format!(
            "not logged in: run presencectl login x --account {}",
            self.account
        ))
    }

    fn user_id(&self) -> Result<String, NetError> {
        self.session.user_id.clone().ok_or_else(|| NetError::Transient {
            message: "the account has not started".into(),
            retry_after: None,
        })
    }

    /// Seconds the access token has left (negative: expired); `None` without a token.
    fn token_left(&self) -> Option<i64> {
        self.session.access.as_ref()?;
        Some(self.session.expires_at.map_or(0, |t| t - Utc::now().timestamp()))
    }

    fn expired(&self) -> bool {
        self.token_left().map_or(true, |left| left <= EXPIRY_SLACK)
    }

    /// Renews the access token with the refresh token.
    async fn renew(&mut self) -> Result<(), NetError> {
        if self.session.access.is_none() && self.session.refresh.is_none() {
            return Err(self.not_logged_in());
        }
        oauth::refresh(
            &self.http,
            &self.api,
            &self.client_id,
            self.client_secret.as_ref(),
            &mut self.session,
            &self.account,
        )
        .await?;
        self.renewed_at = Some(std::time::Instant::now());
        tracing::info!(account = %self.account, "X access token renewed (new refresh token to store)");
        Ok(())
    }

    fn renewed_recently(&self) -> bool {
        self.renewed_at.is_some_and(|at| at.elapsed() < RENEWED_RECENTLY)
    }

    /// Before a post, reply or look-up: renews an expired token. `Err` ends the call: with
    /// the renewal's failure, or with a request to come back at once, so that the new
    /// refresh token is stored before the request is made.
    async fn ready(&mut self) -> Result<(), NetError> {
        if self.session.access.is_none() && self.session.refresh.is_none() {
            return Err(self.not_logged_in());
        }
        if self.expired() {
            self.renew().await?;
            return Err(renewed());
        }
        Ok(())
    }

    /// After a 401: renews the token and ends the call (see [`X::ready`]); a token renewed
    /// only minutes ago is not renewed again, the refusal stands.
    async fn after_refusal(&mut self, failure: Failure) -> NetError {
        let refused = failure.into_net();
        if self.renewed_recently() {
            return refused;
        }
        tracing::info!(account = %self.account, "X refused the access token: {refused}");
        match self.renew().await {
            Ok(()) => renewed(),
            Err(e) => e,
        }
    }

    fn bearer(&self) -> Result<HeaderValue, NetError> {
        let token = self.session.access.as_ref().ok_or_else(|| self.not_logged_in())?;
        bearer(token)
    }

    async fn get<T: DeserializeOwned>(&self, url: Url, what: &str) -> Result<T, Failure> {
        let request = self
            .http
            .get(url)
            .header(AUTHORIZATION, self.bearer().map_err(Failure::Net)?)
            .header(ACCEPT, "application/json");
        let answer = wire::send(request, what, Effect::Read).await?;
        wire::decode(&answer.body, what, Effect::Read).map_err(Failure::Net)
    }

    /// A read with the fields parameter (`fields` in the old spelling, `fields_new` in the
    /// new): when X refuses the parameter's name, the other spelling is tried once and kept.
    async fn get_with_fields<T: DeserializeOwned>(
        &mut self,
        url: &Url,
        fields: &str,
        fields_new: &str,
        what: &str,
    ) -> Result<T, Failure> {
        let with = |param: &str| {
            let mut url = url.clone();
            let value = if param == FIELDS_NEW { fields_new } else { fields };
            url.query_pairs_mut().append_pair(param, value);
            url
        };
        match self.get(with(self.fields_param), what).await {
            Err(f) if f.rejects_parameter(self.fields_param) => {
                let other = if self.fields_param == FIELDS_OLD { FIELDS_NEW } else { FIELDS_OLD };
                tracing::info!(account = %self.account, "X refuses {}; using {other}", self.fields_param);
                let result = self.get(with(other), what).await;
                if result.is_ok() {
                    self.fields_param = other;
                }
                result
            }
            result => result,
        }
    }

    /// Creates a post (an announcement or an answer) and returns its id.
    async fn create(&self, body: &Value, what: &str) -> Result<String, Failure> {
        let request = self
            .http
            .post(wire::endpoint(&self.api, &["2", "tweets"]).map_err(Failure::Net)?)
            .header(AUTHORIZATION, self.bearer().map_err(Failure::Net)?)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let answer = wire::send(request, what, Effect::Creates).await?;
        let created: Envelope<Created> =
            wire::decode(&answer.body, what, Effect::Creates).map_err(Failure::Net)?;
        created.data.map(|d| d.id).ok_or_else(|| {
            Failure::Net(NetError::InDoubt { message: format!("{what}: the answer has no id") })
        })
    }

    fn post_url(&self, id: &str) -> String {
        match &self.session.username {
            Some(u) => format!("https://x.com/{u}/status/{id}"),
            None => format!("https://x.com/i/web/status/{id}"),
        }
    }

    /// The account's most recent posts, newest first (replies included unless excluded).
    async fn own_posts(&mut self, exclude_replies: bool) -> Result<Vec<Tweet>, Failure> {
        let me = self.user_id().map_err(Failure::Net)?;
        let mut url =
            wire::endpoint(&self.api, &["2", "users", &me, "tweets"]).map_err(Failure::Net)?;
        url.query_pairs_mut()
            .append_pair("max_results", &OWN_POSTS.to_string())
            .append_pair("exclude", if exclude_replies { "replies,retweets" } else { "retweets" });
        let page: Envelope<Vec<Tweet>> = self
            .get_with_fields(&url, OWN_FIELDS, OWN_FIELDS_NEW, "GET /2/users/:id/tweets")
            .await?;
        Ok(page.data.unwrap_or_default())
    }

    async fn find_own_post(&mut self, post: &Post) -> Result<Option<Posted>, Failure> {
        let wanted = canonical(&post.url);
        let posts = self.own_posts(true).await?;
        Ok(posts
            .iter()
            .find(|t| t.links().any(|l| canonical(l) == wanted))
            .map(|t| Posted { remote_id: t.id.clone(), url: Some(self.post_url(&t.id)) }))
    }

    async fn find_own_reply(&mut self, reply: &Reply) -> Result<Option<Posted>, Failure> {
        let wanted = comparable(&reply.text);
        let posts = self.own_posts(false).await?;
        Ok(posts
            .iter()
            .find(|t| {
                t.replied_to() == Some(reply.in_reply_to.as_str())
                    && comparable(&t.display_text()) == wanted
            })
            .map(|t| Posted { remote_id: t.id.clone(), url: Some(self.post_url(&t.id)) }))
    }

    /// Mentions after the cursors, as described in the module docs.
    async fn mentions(&mut self, cursors: &BTreeMap<String, String>) -> Result<Mentions, Failure> {
        let me = self.user_id().map_err(Failure::Net)?;
        let since_id = cursors.get(CURSOR_SINCE_ID).filter(|v| is_id(v)).cloned();
        let since_time = cursors.get(CURSOR_SINCE_TIME).filter(|v| !v.is_empty()).cloned();
        let first = since_id.is_none() && since_time.is_none();
        let mut url =
            wire::endpoint(&self.api, &["2", "users", &me, "mentions"]).map_err(Failure::Net)?;
        url.query_pairs_mut()
            .append_pair("max_results", &(if first { FIRST_PAGE } else { PAGE }).to_string())
            .append_pair("expansions", "author_id")
            .append_pair("user.fields", "username,name");
        if let Some(s) = &since_id {
            url.query_pairs_mut().append_pair("since_id", s);
        } else if let Some(t) = &since_time {
            url.query_pairs_mut().append_pair("start_time", t);
        }
        let what = "GET /2/users/:id/mentions";
        let mut tweets: Vec<Tweet> = Vec::new();
        let mut users: HashMap<String, User> = HashMap::new();
        let mut newest: Option<String> = None;
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut page_url = url.clone();
            if let Some(t) = &token {
                page_url.query_pairs_mut().append_pair("pagination_token", t);
            }
            let page: Envelope<Vec<Tweet>> =
                self.get_with_fields(&page_url, MENTION_FIELDS, MENTION_FIELDS_NEW, what).await?;
            let meta = page.meta.unwrap_or_default();
            if newest.is_none() {
                newest = meta.newest_id.clone();
            }
            for t in page.data.unwrap_or_default() {
                if newest.as_deref().map_or(true, |n| id_less(n, &t.id)) {
                    newest = Some(t.id.clone());
                }
                tweets.push(t);
            }
            for u in page.includes.map(|i| i.users).unwrap_or_default() {
                users.insert(u.id.clone(), u);
            }
            // A server that repeats the token would make this loop forever.
            match meta.next_token.filter(|n| !n.is_empty()) {
                Some(next) if !first && token.as_deref() != Some(next.as_str()) => {
                    token = Some(next)
                }
                _ => break,
            }
        }

        let mut items: Vec<Incoming> = tweets
            .iter()
            .filter(|t| t.author_id.as_deref() != Some(me.as_str()))
            .map(|t| incoming(t, &users))
            .collect();
        items.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| id_cmp(&a.remote_id, &b.remote_id)));
        items.dedup_by(|a, b| a.remote_id == b.remote_id);

        let mut cursors = cursors.clone();
        let newest = match (newest, since_id) {
            (Some(n), Some(old)) if id_less(&n, &old) => Some(old),
            (n, old) => n.or(old),
        };
        match newest {
            Some(n) => {
                cursors.insert(CURSOR_SINCE_ID.to_owned(), n);
                cursors.remove(CURSOR_SINCE_TIME);
            }
            None if first => {
                let t = Utc::now() - chrono::Duration::seconds(SINCE_TIME_MARGIN);
                cursors.insert(
                    CURSOR_SINCE_TIME.to_owned(),
                    t.to_rfc3339_opts(SecondsFormat::Secs, true),
                );
            }
            None => {}
        }
        Ok(Mentions { items, cursors, more: false })
    }
}

/// The call's answer after it renewed the token instead of making its request.
fn renewed() -> NetError {
    NetError::Transient {
        message: "the X access token was renewed; the request follows at once".into(),
        retry_after: Some(Duration::from_secs(1)),
    }
}

fn bearer(token: &Token) -> Result<HeaderValue, NetError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0)).map_err(|_| {
        NetError::Unauthorized(
            "the access token contains characters not allowed in a header".into(),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `GET /2/users/me` with `token`.
async fn users_me(http: &reqwest::Client, api: &str, token: &Token) -> Result<Me, Failure> {
    let what = "GET /2/users/me";
    let url = wire::endpoint(api, &["2", "users", "me"]).map_err(Failure::Net)?;
    let request = http
        .get(url)
        .header(AUTHORIZATION, bearer(token).map_err(Failure::Net)?)
        .header(ACCEPT, "application/json");
    let answer = wire::send(request, what, Effect::Read).await?;
    let me: Envelope<Me> = wire::decode(&answer.body, what, Effect::Read).map_err(Failure::Net)?;
    me.data.ok_or_else(|| {
        Failure::Net(NetError::Transient {
            message: format!("{what}: the answer has no data"),
            retry_after: None,
        })
    })
}

impl Network for X {
    async fn start(&mut self) -> Result<AccountInfo, NetError> {
        if self.session.access.is_none() && self.session.refresh.is_none() {
            return Err(self.not_logged_in());
        }
        let mut renewed_now = false;
        if self.token_left().map_or(true, |left| left < REFRESH_AHEAD.as_secs() as i64) {
            self.renew().await?;
            renewed_now = true;
            // The renewal proved the session; return at once so that the worker stores the
            // new refresh token before any other request.
            if self.session.user_id.is_some() && self.session.username.is_some() {
                return Ok(self.info());
            }
        }
        let token = self.session.access.clone().ok_or_else(|| self.not_logged_in())?;
        match users_me(&self.http, &self.api, &token).await {
            Ok(me) => {
                self.session.user_id = Some(me.id);
                self.session.username = Some(me.username);
                tracing::debug!(account = %self.account, "x account ready");
                Ok(self.info())
            }
            Err(f) if f.token_refused() && !renewed_now && !self.renewed_recently() => {
                tracing::info!(account = %self.account, "X refused the access token: {}", f.into_net());
                self.renew().await?;
                if self.session.user_id.is_some() && self.session.username.is_some() {
                    Ok(self.info())
                } else {
                    Err(renewed())
                }
            }
            Err(f) => Err(f.into_net()),
        }
    }

    async fn post(&mut self, post: &Post) -> Result<Posted, NetError> {
        self.ready().await?;
        let what = "POST /2/tweets";
        match self.create(&json!({ "text": post.text }), what).await {
            Ok(id) => Ok(Posted { url: Some(self.post_url(&id)), remote_id: id }),
            Err(f) if f.token_refused() => Err(self.after_refusal(f).await),
            Err(f) if f.duplicate() => {
                // X keeps no id for us: the post with the same text is found by its link.
                tracing::info!(account = %self.account, article_url = %post.url, "X calls the post a duplicate; looking for it");
                match self.find_own_post(post).await {
                    Ok(Some(found)) => Ok(found),
                    Ok(None) => Err(NetError::Rejected(format!(
                        "{}; no recent post of this account links {}",
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
        self.ready().await?;
        match self.find_own_post(post).await {
            Ok(found) => Ok(found),
            Err(f) if f.token_refused() => Err(self.after_refusal(f).await),
            Err(f) => Err(f.into_net()),
        }
    }

    async fn fetch_mentions(
        &mut self,
        cursors: &BTreeMap<String, String>,
        _watch: &[String],
    ) -> Result<Mentions, NetError> {
        let nothing = || Mentions { items: Vec::new(), cursors: cursors.clone(), more: false };
        if self.session.access.is_none() && self.session.refresh.is_none() {
            return Err(self.not_logged_in());
        }
        if self.expired() {
            // Renewed and nothing else: the worker stores the new session right away; the
            // mentions come with the next fetch.
            self.renew().await?;
            return Ok(nothing());
        }
        match self.mentions(cursors).await {
            Ok(mentions) => {
                if self.token_left().is_some_and(|left| left < REFRESH_AHEAD.as_secs() as i64) {
                    // The last request of this call: the session is stored with the mentions.
                    if let Err(e) = self.renew().await {
                        tracing::warn!(account = %self.account, "renewing the X access token failed: {e}");
                    }
                }
                Ok(mentions)
            }
            Err(f) if f.token_refused() && !self.renewed_recently() => {
                tracing::info!(account = %self.account, "X refused the access token: {}", f.into_net());
                self.renew().await?;
                Ok(nothing())
            }
            Err(f) => Err(f.into_net()),
        }
    }

    async fn reply(&mut self, reply: &Reply) -> Result<Posted, NetError> {
        self.ready().await?;
        let what = "POST /2/tweets (reply)";
        let body = json!({
            "text": reply.text,
            "reply": { "in_reply_to_tweet_id": reply.in_reply_to },
        });
        match self.create(&body, what).await {
            Ok(id) => Ok(Posted { url: Some(self.post_url(&id)), remote_id: id }),
            Err(f) if f.token_refused() => Err(self.after_refusal(f).await),
            Err(f) if f.duplicate() => match self.find_own_reply(reply).await {
                Ok(Some(found)) => Ok(found),
                Ok(None) => Err(NetError::Rejected(format!(
                    "{} (the same text was posted before; change the answer)",
                    f.into_net()
                ))),
                Err(e) => Err(e.into_net()),
            },
            Err(f) if not_summoned(&f) => {
                let detail = f.problem().and_then(wire::Problem::text).unwrap_or_default();
                Err(NetError::Rejected(format!("{NOT_SUMMONED} (X said: {detail})")))
            }
            Err(f) => Err(f.into_net()),
        }
    }

    async fn find_reply(&mut self, reply: &Reply) -> Result<Option<Posted>, NetError> {
        self.ready().await?;
        match self.find_own_reply(reply).await {
            Ok(found) => Ok(found),
            Err(f) if f.token_refused() => Err(self.after_refusal(f).await),
            Err(f) => Err(f.into_net()),
        }
    }

    fn session_data(&self) -> BTreeMap<String, String> {
        self.session.to_map()
    }
}

/// A 403 on a reply that is about who may reply (the summoned rule), rather than about
/// the content or the app.
fn not_summoned(f: &Failure) -> bool {
    let Failure::Status { status: 403, problem, .. } = f else { return false };
    ["mentioned", "engaged", "summon", "reply to this conversation", "not allowed to reply"]
        .iter()
        .any(|n| problem.mentions(n))
}

fn canonical(url: &str) -> String {
    presence_feed::canonical_link(url).unwrap_or_else(|| url.trim().to_owned())
}

/// A form of a text that survives X's rendering (t.co links expanded back, entities
/// unescaped, the replied-to handles X puts in front of a reply): leading mentions dropped,
/// letters and digits only, lower-cased.
fn comparable(text: &str) -> String {
    let mut rest = text.trim_start();
    while rest.starts_with('@') {
        rest = rest.split_once(char::is_whitespace).map_or("", |(_, after)| after).trim_start();
    }
    rest.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

fn incoming(t: &Tweet, users: &HashMap<String, User>) -> Incoming {
    let user = t.author_id.as_deref().and_then(|a| users.get(a));
    let username = user.map(|u| u.username.clone());
    let author = username.clone().or_else(|| t.author_id.clone()).unwrap_or_default();
    let display_name = user
        .and_then(|u| u.name.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| author.clone());
    let url = match &username {
        Some(u) => format!("https://x.com/{u}/status/{}", t.id),
        None => format!("https://x.com/i/web/status/{}", t.id),
    };
    Incoming {
        remote_id: t.id.clone(),
        thread: t.conversation_id.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| t.id.clone()),
        in_reply_to: t.replied_to().map(str::to_owned),
        author,
        display_name,
        text: t.display_text(),
        at: t
            .created_at
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map_or_else(|| Utc::now().timestamp(), |c| c.timestamp()),
        url: Some(url),
        visibility: None,
    }
}

/// Post ids are decimal numbers as strings (snowflakes, up to 19 digits).
fn is_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit())
}

fn id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn id_less(a: &str, b: &str) -> bool {
    id_cmp(a, b) == std::cmp::Ordering::Less
}

// ---------------------------------------------------------------------------------------
// The parts of X's objects that are used. Both spellings of the renamed fields are read.

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    #[serde(default = "Option::default")]
    data: Option<T>,
    #[serde(default)]
    includes: Option<Includes>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Debug, Default, Deserialize)]
struct Includes {
    #[serde(default, deserialize_with = "list")]
    users: Vec<User>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default, deserialize_with = "optional_id")]
    newest_id: Option<String>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Created {
    #[serde(deserialize_with = "id")]
    id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    #[serde(deserialize_with = "id")]
    id: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Tweet {
    #[serde(deserialize_with = "id")]
    id: String,
    #[serde(default)]
    text: String,
    #[serde(default, deserialize_with = "optional_id")]
    author_id: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default, deserialize_with = "optional_id")]
    conversation_id: Option<String>,
    #[serde(default, deserialize_with = "list")]
    referenced_tweets: Vec<Referenced>,
    #[serde(default, deserialize_with = "list")]
    referenced_posts: Vec<Referenced>,
    #[serde(default)]
    entities: Option<Entities>,
}

#[derive(Debug, Clone, Deserialize)]
struct Referenced {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(deserialize_with = "id")]
    id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Entities {
    #[serde(default, deserialize_with = "list")]
    urls: Vec<UrlEntity>,
}

#[derive(Debug, Clone, Deserialize)]
struct UrlEntity {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    expanded_url: Option<String>,
    #[serde(default)]
    unwound_url: Option<String>,
}

impl Tweet {
    fn replied_to(&self) -> Option<&str> {
        self.referenced_tweets
            .iter()
            .chain(&self.referenced_posts)
            .find(|r| r.kind == "replied_to")
            .map(|r| r.id.as_str())
    }

    /// Every link the post carries, as written (expanded and unwound forms).
    fn links(&self) -> impl Iterator<Item = &str> {
        self.entities
            .iter()
            .flat_map(|e| &e.urls)
            .flat_map(|u| u.expanded_url.iter().chain(&u.unwound_url))
            .map(String::as_str)
    }

    /// The text as the human reads it: t.co links replaced by what they stand for, and the
    /// HTML entities X escapes (`&amp;`, `&lt;`, `&gt;`) decoded.
    fn display_text(&self) -> String {
        let mut text = self.text.clone();
        for u in self.entities.iter().flat_map(|e| &e.urls) {
            if let (Some(short), Some(long)) =
                (&u.url, u.unwound_url.as_ref().or(u.expanded_url.as_ref()))
            {
                if !short.is_empty() {
                    text = text.replace(short.as_str(), long);
                }
            }
        }
        text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").trim().to_owned()
    }
}

/// Ids are strings; a server that sends numbers gets them as text.
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    optional_id(d)?.ok_or_else(|| serde::de::Error::custom("missing id"))
}

fn optional_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!("an id cannot be {other}"))),
    }
}

/// A list that may be null.
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}
