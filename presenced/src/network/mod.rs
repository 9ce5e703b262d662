//! The networks an account can live on, behind one trait, and the per-account worker that
//! drives a network for the core.
//!
//! Architecture invariant: network code never touches the state. It receives a [`Post`]
//! (everything needed, including the announcement key) and answers with a result; the core
//! records it.

pub mod bluesky;
pub mod facebook;
pub mod mastodon;
pub mod outbox;
#[cfg(test)]
pub(crate) mod responder;
pub mod x;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tokio_util::task::TaskTracker;

use crate::config::{AccountConfig, AccountKind, Config};
use crate::core::Event;
use crate::fit::Rules;
use crate::state::{Outcome, Unix};

/// One announcement to make, fully decided by the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub article: u64,
    pub key: String,
    pub text: String,
    pub title: String,
    pub url: String,
    pub summary: String,
    pub image: Option<String>,
    /// An earlier attempt may have gone through: look for it before posting again.
    pub in_doubt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub remote_id: String,
    pub url: Option<String>,
}

/// What the account can do, learned when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub rules: Rules,
    /// The account's own handle as others write it (`alice@example.social`).
    pub handle: String,
    /// How often to fetch mentions; `None` for an account that receives none (outbox).
    pub mention_interval: Option<Duration>,
    /// How many announcements may be in flight at once, their intents made durable in one
    /// write and their outcomes in one more. Each is in doubt after a crash, so more than
    /// one only where reconciling costs a cheap look-up: [`AT_ONCE_CHEAP_RECONCILE`].
    pub at_once: usize,
}

/// [`AccountInfo::at_once`] for the outbox (its key index), Bluesky (the record key derived
/// from the announcement key) and Mastodon (its last 120 statuses, at most three requests).
/// X and Facebook search with scarce, rate-limited API calls and keep one. A burst of 20
/// writes 4 journal records instead of 21; on a virtual machine each fdatasync is a good
/// part of a post's CPU.
pub const AT_ONCE_CHEAP_RECONCILE: usize = 8;

/// One message that arrived on the network: a mention, a reply or a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The network's id of this message (status id, post URI, ...): stored exactly once.
    pub remote_id: String,
    /// The network's id of the thread's root post: one conversation per thread.
    pub thread: String,
    /// The post it answers, if any.
    pub in_reply_to: Option<String>,
    /// Handle of the author, as one would @mention them (`bob@other.host`).
    pub author: String,
    pub display_name: String,
    /// Plain text (HTML rendered to text, links kept).
    pub text: String,
    /// Unix seconds.
    pub at: i64,
    pub url: Option<String>,
    /// The network's visibility of the message (`public`, `unlisted`, `private`, `direct`).
    pub visibility: Option<String>,
}

/// The result of one mention fetch: new messages, oldest first, and the cursors to store
/// together with them (in the same durable write).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mentions {
    pub items: Vec<Incoming>,
    pub cursors: BTreeMap<String, String>,
    /// More is waiting after these cursors: the worker stores this batch, then fetches
    /// again at once (without the watched threads, already read). Small batches make
    /// progress durable step by step through a long backlog.
    pub more: bool,
}

/// An answer the human wrote, fully decided by the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub conversation: u64,
    /// Stable for this answer across restarts; used like an announcement key.
    pub key: String,
    /// The text as the human wrote it; the adapter adds what its network needs (Mastodon
    /// prepends `@author`) unless it is already there.
    pub text: String,
    /// The message being answered.
    pub in_reply_to: String,
    pub thread: String,
    /// Handle of the person answered.
    pub to: String,
    pub visibility: Option<String>,
    /// An earlier attempt may have gone through: look for it before posting again.
    pub in_doubt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// Worth retrying later; the request certainly did not post anything.
    #[error("{message}")]
    Transient { message: String, retry_after: Option<Duration> },
    /// The request may or may not have posted (timeout, connection lost after sending).
    #[error("{message} (outcome unknown)")]
    InDoubt { message: String },
    /// The network refused the content; retrying the same post cannot help.
    #[error("{0}")]
    Rejected(String),
    /// The credentials are wrong or revoked.
    #[error("unauthorised: {0}")]
    Unauthorized(String),
}

/// One account on one network. Implementations are thin adapters over the network's API;
/// they never see the state, only what the core hands them.
pub trait Network: Send + 'static {
    /// Checks the credentials and learns the account's limits.
    fn start(&mut self) -> impl Future<Output = Result<AccountInfo, NetError>> + Send;
    /// Posts an announcement. Posting the same key twice must not make two posts where the
    /// network allows that to be guaranteed.
    fn post(&mut self, post: &Post) -> impl Future<Output = Result<Posted, NetError>> + Send;
    /// Looks for an earlier attempt of this post on the network; `Ok(None)` is a proven
    /// absence.
    fn find_post(
        &mut self,
        post: &Post,
    ) -> impl Future<Output = Result<Option<Posted>, NetError>> + Send;
    /// Messages that arrived after `cursors` (as returned by the previous fetch, empty the
    /// first time), plus replies in the threads of `watch` (our recent posts' remote ids)
    /// that did not notify us. May return messages already seen: the core drops those.
    fn fetch_mentions(
        &mut self,
        _cursors: &BTreeMap<String, String>,
        _watch: &[String],
    ) -> impl Future<Output = Result<Mentions, NetError>> + Send {
        async { Ok(Mentions::default()) }
    }
    /// A live stream's nudges: each message means "fetch mentions now". Taken once, after
    /// `start`; the adapter reconnects by itself and nudges after each reconnect so that
    /// nothing sent while it was away is missed.
    fn take_wakeups(&mut self) -> Option<mpsc::Receiver<()>> {
        None
    }
    /// Posts the human's answer in its thread, exactly once per key where the network
    /// allows that to be guaranteed.
    fn reply(&mut self, _reply: &Reply) -> impl Future<Output = Result<Posted, NetError>> + Send {
        async { Err(NetError::Rejected("this account cannot answer".into())) }
    }
    /// Session data the account wants kept across restarts (refreshable tokens, resolved
    /// endpoints), handed back to the constructor on the next start. The worker stores it
    /// whenever it changes. Never logged.
    fn session_data(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    /// Looks for an earlier attempt of this answer; `Ok(None)` is a proven absence.
    fn find_reply(
        &mut self,
        _reply: &Reply,
    ) -> impl Future<Output = Result<Option<Posted>, NetError>> + Send {
        async { Ok(None) }
    }
}

/// Work the core hands to an account's worker.
#[derive(Debug)]
pub enum Job {
    Announce(Post),
    Reply(Reply),
    /// Fetch mentions now (`presencectl poll`).
    FetchMentions,
}

/// Builds the account's network adapter and runs its worker on `tracker`. An error (a
/// missing or unreadable secret, say) is the account's health; the daemon runs on.
pub fn spawn(
    account: &AccountConfig,
    config: &Config,
    worker: Worker,
    http: &reqwest::Client,
    tracker: &TaskTracker,
) -> Result<(), String> {
    let secret = |source: &Option<crate::config::SecretSource>, what: &str| {
        source
            .as_ref()
            .ok_or_else(|| format!("{what} is not configured"))?
            .load(config.credentials_directory.as_deref())
            .map_err(|e| format!("{what}: {e}"))
    };
    let name = account.name.as_str();
    match account.kind {
        AccountKind::Outbox => {
            let path = config.state_dir.join("outbox.jsonl");
            tracker.spawn(worker.run(outbox::Outbox::new(name, path)));
        }
        AccountKind::Mastodon => {
            let token = secret(&account.token, "token")?;
            let server = account.server.as_deref().ok_or("server is not configured")?;
            let (visibility, language) = (account.visibility.clone(), account.language.clone());
            let net =
                mastodon::Mastodon::new(name, server, token, visibility, language, http.clone());
            tracker.spawn(worker.run(net));
        }
        AccountKind::Bluesky => {
            let password = secret(&account.password, "password")?;
            let service = account.server.as_deref().unwrap_or(bluesky::DEFAULT_SERVICE);
            let handle = account.handle.as_deref().unwrap_or_default();
            let session = worker.session.clone();
            let net = bluesky::Bluesky::new(name, service, handle, password, session, http.clone());
            tracker.spawn(worker.run(net));
        }
        AccountKind::X => {
            let client_id = account.client_id.as_deref().ok_or("client_id is not configured")?;
            let client_secret = match &account.client_secret {
                Some(_) => Some(secret(&account.client_secret, "client_secret")?),
                None => None,
            };
            let api = account.server.as_deref().unwrap_or(x::DEFAULT_API);
            let session = worker.session.clone();
            let net = x::X::new(name, api, client_id, client_secret, session, http.clone());
            tracker.spawn(worker.run(net));
        }
        AccountKind::Facebook => {
            let token = secret(&account.token, "token")?;
            let page_id = account.page_id.as_deref().ok_or("page_id is not configured")?;
            let api = account.server.as_deref().unwrap_or(facebook::DEFAULT_API);
            let session = worker.session.clone();
            let net = facebook::Facebook::new(name, api, page_id, token, session, http.clone());
            tracker.spawn(worker.run(net));
        }
    }
    Ok(())
}

/// Batches of mentions taken in one go before the worker looks at its other work.
const MAX_ROUNDS: usize = 50;

/// How many of our recent posts a worker watches for replies that did not notify us.
const WATCH: usize = 20;
/// After this, a post's thread is no longer read: replies come in the first days.
const WATCH_FOR: i64 = 7 * 24 * 3600;

/// Our recent posts whose threads are read for replies that did not notify us, newest last.
/// A thread is read often while its post is fresh and less as it ages (every tenth of its
/// age, between one minute and one hour), and not after a week: reading all 20 on every
/// fetch would cost 20 requests a minute for as long as the daemon runs.
#[derive(Debug, Default)]
pub struct Watchlist {
    posts: Vec<Watched>,
}

#[derive(Debug)]
struct Watched {
    id: String,
    posted: Unix,
    read: Option<Unix>,
}

impl Watchlist {
    /// From `(remote id, posted at)`, newest last.
    pub fn new(recent: Vec<(String, Unix)>) -> Watchlist {
        let mut list = Watchlist::default();
        for (id, posted) in recent {
            list.add(id, posted);
        }
        list
    }

    pub fn add(&mut self, id: String, posted: Unix) {
        self.posts.push(Watched { id, posted, read: None });
        if self.posts.len() > WATCH {
            self.posts.remove(0);
        }
    }

    /// The posts whose threads are due to be read at `now` (with `all`, every one younger
    /// than a week: a human asked), newest last.
    pub fn due(&self, now: Unix, all: bool) -> Vec<String> {
        self.posts
            .iter()
            .filter(|w| {
                let age = now - w.posted;
                // A few seconds' slack: fetches come every minute, give or take.
                let every = (age / 10).clamp(60, 3600) - 5;
                age <= WATCH_FOR && (all || w.read.map_or(true, |read| now - read >= every))
            })
            .map(|w| w.id.clone())
            .collect()
    }

    /// The threads of `ids` were read at `now`.
    pub fn read(&mut self, ids: &[String], now: Unix) {
        for w in self.posts.iter_mut().filter(|w| ids.contains(&w.id)) {
            w.read = Some(now);
        }
    }
}

/// Everything a worker needs besides its network.
#[derive(Debug)]
pub struct Worker {
    pub account: String,
    pub jobs: mpsc::Receiver<Job>,
    pub core: mpsc::Sender<Event>,
    pub cancel: CancellationToken,
    /// The cursors stored in the state: fetching resumes where the last durable fetch ended.
    pub cursors: BTreeMap<String, String>,
    /// Our recent posts, newest last.
    pub watch: Watchlist,
    /// The session data last stored for this account.
    pub session: BTreeMap<String, String>,
    /// The configured mention interval, over the network's default.
    pub interval: Option<Duration>,
}

impl Worker {
    /// Runs one account: starts it, then carries out jobs one at a time and fetches
    /// mentions on its interval or when the network's stream says so, reporting everything
    /// to the core. One job at a time: a crash leaves at most one post per account half
    /// sent (and in doubt at most `at_once` announcements and one answer).
    pub async fn run<N: Network>(mut self, mut network: N) {
        let Some(info) = self.start(&mut network).await else { return };
        if !self.store_session(&network).await {
            return;
        }
        let mut wakeups = network.take_wakeups();
        // An account that receives nothing (outbox) stays without a ticker whatever is set.
        let every = info.mention_interval.map(|default| self.interval.unwrap_or(default));
        let mut ticker = every.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut not_before = tokio::time::Instant::now();
        loop {
            let tick = async {
                match ticker.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            };
            let wake = async {
                match wakeups.as_mut() {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            };
            // None: no fetch; Some(true): a human asked (`poll`), every watched thread.
            let fetch = tokio::select! {
                job = self.jobs.recv() => match job {
                    Some(Job::FetchMentions) => Some(true),
                    Some(job) => {
                        if !self.carry_out(&mut network, job).await {
                            return;
                        }
                        None
                    }
                    None => return,
                },
                _ = tick => Some(false),
                woke = wake => {
                    if woke.is_none() {
                        wakeups = None;
                    }
                    Some(false)
                }
                () = self.cancel.cancelled() => return,
            };
            if let (Some(all), true) = (fetch, tokio::time::Instant::now() >= not_before) {
                match self.fetch(&mut network, all).await {
                    Ok(()) => {}
                    Err(Some(wait)) => not_before = tokio::time::Instant::now() + wait,
                    Err(None) => return,
                }
            }
            if !self.store_session(&network).await {
                return;
            }
        }
    }

    async fn start<N: Network>(&mut self, network: &mut N) -> Option<AccountInfo> {
        let mut delay = Duration::from_secs(5);
        loop {
            let started = tokio::select! {
                r = network.start() => r,
                () = self.cancel.cancelled() => return None,
            };
            let err = match started {
                Ok(info) => {
                    let health = "ok".to_owned();
                    let ready = Event::AccountHealth {
                        account: self.account.clone(),
                        health,
                        info: Some(info.clone()),
                    };
                    return self.core.send(ready).await.ok().map(|()| info);
                }
                Err(err) => err,
            };
            tracing::warn!(account = %self.account, "account cannot start: {err}");
            let event = Event::AccountHealth {
                account: self.account.clone(),
                health: err.to_string(),
                info: None,
            };
            self.core.send(event).await.ok()?;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(600));
        }
    }

    /// Sends the network's session data to the core when it changed (a refreshed token must
    /// be durable before it is relied on). Returns false when the core is gone.
    async fn store_session<N: Network>(&mut self, network: &N) -> bool {
        let data = network.session_data();
        if data == self.session {
            return true;
        }
        self.session = data.clone();
        self.core.send(Event::AccountData { account: self.account.clone(), data }).await.is_ok()
    }

    /// Returns false when the core is gone or the worker is cancelled. A cancelled attempt
    /// is simply left in flight: the next start reconciles it.
    async fn carry_out<N: Network>(&mut self, network: &mut N, job: Job) -> bool {
        let event = match job {
            Job::Announce(post) => {
                let outcome = tokio::select! {
                    o = announce(network, &post) => o,
                    () = self.cancel.cancelled() => return false,
                };
                self.remember(&outcome);
                Event::Announced { article: post.article, account: self.account.clone(), outcome }
            }
            Job::Reply(reply) => {
                let outcome = tokio::select! {
                    o = answer(network, &reply) => o,
                    () = self.cancel.cancelled() => return false,
                };
                self.remember(&outcome);
                Event::Answered {
                    account: self.account.clone(),
                    answer: (reply.conversation, reply.key),
                    outcome,
                }
            }
            Job::FetchMentions => return true,
        };
        self.core.send(event).await.is_ok()
    }

    fn remember(&mut self, outcome: &Outcome) {
        if let Outcome::Posted { remote_id, .. } = outcome {
            self.watch.add(remote_id.clone(), chrono::Utc::now().timestamp());
        }
    }

    /// One fetch of mentions. `Err(Some(wait))`: do not fetch again before `wait`;
    /// `Err(None)`: the core is gone.
    async fn fetch<N: Network>(
        &mut self,
        network: &mut N,
        all: bool,
    ) -> Result<(), Option<Duration>> {
        // Bounded, so that a network that always says "more" cannot keep the worker from its
        // other work.
        let now = chrono::Utc::now().timestamp();
        let due = self.watch.due(now, all);
        for round in 0..MAX_ROUNDS {
            let watch: &[String] = if round == 0 { &due } else { &[] };
            let fetched = tokio::select! {
                f = network.fetch_mentions(&self.cursors, watch) => f,
                () = self.cancel.cancelled() => return Err(None),
            };
            let mentions = match fetched {
                Ok(mentions) => mentions,
                Err(err) => return self.fetch_failed(err).await,
            };
            if round == 0 {
                self.watch.read(&due, now);
            }
            let more = mentions.more;
            let moved = mentions.cursors.iter().any(|(k, v)| self.cursors.get(k) != Some(v));
            if !mentions.items.is_empty() || moved {
                self.cursors.extend(mentions.cursors.clone());
                let event = Event::Mentions { account: self.account.clone(), mentions };
                self.core.send(event).await.map_err(|_| None)?;
            }
            if !more || !moved {
                break;
            }
        }
        Ok(())
    }

    async fn fetch_failed(&mut self, err: NetError) -> Result<(), Option<Duration>> {
        tracing::warn!(account = %self.account, "fetching mentions failed: {err}");
        let wait = match &err {
            NetError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        };
        let event = Event::AccountHealth {
            account: self.account.clone(),
            health: format!("mentions: {err}"),
            info: None,
        };
        self.core.send(event).await.map_err(|_| None)?;
        Err(wait.or(Some(Duration::ZERO)))
    }
}

async fn announce<N: Network>(network: &mut N, post: &Post) -> Outcome {
    if post.in_doubt {
        match network.find_post(post).await {
            Ok(Some(found)) => {
                return Outcome::Posted { remote_id: found.remote_id, url: found.url };
            }
            Ok(None) => {}
            Err(err) => return outcome_of(err),
        }
    }
    match network.post(post).await {
        Ok(posted) => Outcome::Posted { remote_id: posted.remote_id, url: posted.url },
        Err(err) => outcome_of(err),
    }
}

async fn answer<N: Network>(network: &mut N, reply: &Reply) -> Outcome {
    if reply.in_doubt {
        match network.find_reply(reply).await {
            Ok(Some(found)) => {
                return Outcome::Posted { remote_id: found.remote_id, url: found.url };
            }
            Ok(None) => {}
            Err(err) => return outcome_of(err),
        }
    }
    match network.reply(reply).await {
        Ok(posted) => Outcome::Posted { remote_id: posted.remote_id, url: posted.url },
        Err(err) => outcome_of(err),
    }
}

fn outcome_of(err: NetError) -> Outcome {
    match err {
        NetError::Transient { message, retry_after } => Outcome::Retry {
            error: message,
            after: retry_after.map(|d| d.as_secs() as i64),
            in_doubt: false,
        },
        NetError::InDoubt { message } => {
            Outcome::Retry { error: message, after: None, in_doubt: true }
        }
        e @ (NetError::Rejected(_) | NetError::Unauthorized(_)) => {
            Outcome::GiveUp { error: e.to_string() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_threads_are_read_less_as_their_posts_age_and_not_after_a_week() {
        let t0 = 1_790_000_000;
        let mut list = Watchlist::new(vec![
            ("week-old".into(), t0 - WATCH_FOR - 1),
            ("day-old".into(), t0 - 24 * 3600),
            ("fresh".into(), t0 - 30),
        ]);
        assert_eq!(list.due(t0, false), ["day-old", "fresh"]);
        let due = list.due(t0, false);
        list.read(&due, t0);
        assert!(list.due(t0 + 30, false).is_empty());
        assert_eq!(list.due(t0 + 30, true), ["day-old", "fresh"], "a human's poll reads all");
        // A fresh post every minute; a day-old one every hour.
        assert_eq!(list.due(t0 + 60, false), ["fresh"]);
        list.read(&["fresh".to_owned()], t0 + 60);
        assert_eq!(list.due(t0 + 3600, false), ["day-old", "fresh"]);
        // Two hours old: every 12 to 13 minutes.
        list.read(&list.due(t0 + 7200, false), t0 + 7200);
        assert_eq!(list.due(t0 + 7200 + 600, false), Vec::<String>::new());
        assert_eq!(list.due(t0 + 7200 + 800, false), ["fresh"]);
        // Only the newest WATCH posts are kept.
        for i in 0..WATCH {
            list.add(format!("new{i}"), t0);
        }
        assert_eq!(list.due(t0, false).len(), WATCH);
        assert!(!list.due(t0, false).contains(&"fresh".to_owned()));
    }
}
