//! The core: the one task that owns the [`State`]. Feed watchers, account workers and the
//! control server send it [`Event`]s; it applies the rules in `state`, makes every change
//! durable through the store *before* acting on it or acknowledging it, and only then hands
//! work to the account workers.
//!
//! Architecture invariant: nothing else reads or writes the state; there are no locks.

use std::collections::BTreeMap;
use std::time::Duration;

use presencectl::proto::{
    self, AccountStatus, AnnouncementState, AnnouncementView, ArticleView, ConversationDetail,
    ConversationFilter, ConversationState, ConversationView, ErrorKind, ErrorReply, FeedStatus,
    MessageView, PollScope, PostFilter, QueueSummary, Request, Response, StatusReport,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::feed::{FeedReport, FeedResult};
use crate::fit::{self, Parts, Rules};
use crate::inbox::{AnswerRef, ConvError};
use crate::network::{self, AccountInfo, Job, Mentions, Post, Reply, Worker};
use crate::notify;
use crate::state::{self, AnnStatus, Change, ConvStatus, Conversation, Outcome, State, Unix};
use crate::store::Store;

/// Capacity of the core's inbox: senders wait when the core is busy (backpressure), they
/// never grow a queue without bound.
pub const INBOX: usize = 64;

/// Everything that can make the core act. Every trigger is one arm of [`Core::handle`].
#[derive(Debug)]
pub enum Event {
    Control {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    Feed {
        feed: String,
        report: FeedReport,
    },
    Announced {
        article: u64,
        account: String,
        outcome: Outcome,
    },
    Answered {
        account: String,
        answer: AnswerRef,
        outcome: Outcome,
    },
    Mentions {
        account: String,
        mentions: Mentions,
    },
    /// A network's session data to keep (see [`network::Network::session_data`]).
    AccountData {
        account: String,
        data: BTreeMap<String, String>,
    },
    AccountHealth {
        account: String,
        health: String,
        info: Option<AccountInfo>,
    },
    Reload {
        config: Box<Config>,
        reply: oneshot::Sender<()>,
    },
    /// An OAuth code exchange finished (see `login_finish`).
    LoggedIn {
        account: String,
        session: Result<BTreeMap<String, String>, String>,
        reply: oneshot::Sender<Response>,
    },
}

/// A login begun by `presencectl login`, waiting for its redirect.
#[derive(Debug)]
struct PendingLogin {
    account: String,
    verifier: String,
    redirect_uri: String,
    since: Instant,
}

/// How long a login may take between its URL and its redirect, and how many may wait.
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_PENDING_LOGINS: usize = 8;
/// How often the status line is sent while announcements are in flight.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// A fetch that added more articles than this is saved whole instead of journaled.
const MAX_JOURNALED_ARTICLES: u64 = 64;

/// What the core knows about a running account beyond the state.
#[derive(Debug)]
struct Account {
    jobs: mpsc::Sender<Job>,
    health: String,
    rules: Option<Rules>,
    /// How many announcements may be in flight at once ([`AccountInfo::at_once`]).
    at_once: usize,
    /// What the worker is posting now.
    busy: Option<Busy>,
    /// Stops this account's worker alone (after a login, say).
    cancel: CancellationToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Busy {
    Article(u64),
    Answer(AnswerRef),
}

pub struct Core {
    config: Config,
    state: State,
    store: Store,
    inbox: mpsc::Receiver<Event>,
    sender: mpsc::Sender<Event>,
    accounts: BTreeMap<String, Account>,
    next_fetch: BTreeMap<String, Unix>,
    poll: watch::Sender<u64>,
    http: reqwest::Client,
    children: CancellationToken,
    tracker: TaskTracker,
    started_at: Unix,
    /// Set while the state cannot be written; nothing is posted meanwhile.
    not_durable: Option<String>,
    /// The state changed in a way only a full save records.
    dirty: bool,
    /// Announcement steps and fetch results since the last save, for the journal.
    changes: Vec<Change>,
    /// Among them, the outcome of a post that was in doubt: written at once, not with its
    /// batch, so that a daemon killed over and over still settles a post in each life.
    settled_doubt: bool,
    /// Replies to mutating requests wait until the change is durable.
    replies: Vec<(oneshot::Sender<Response>, Response)>,
    /// `presencectl answer` waits for the network's verdict, by answer key.
    answer_waiters: BTreeMap<String, oneshot::Sender<Response>>,
    watchdog: Option<Duration>,
    last_status_line: String,
    last_status_at: Option<Instant>,
    /// Logins waiting for their redirect, by OAuth `state`.
    logins: BTreeMap<String, PendingLogin>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("config", &self.config.path).finish_non_exhaustive()
    }
}

pub fn now() -> Unix {
    chrono::Utc::now().timestamp()
}

impl Core {
    /// A core over a loaded state. In-flight announcements found in it are in doubt: a
    /// crash may have happened after the network accepted them.
    pub fn new(
        config: Config,
        mut state: State,
        store: Store,
        http: reqwest::Client,
    ) -> (Core, mpsc::Sender<Event>) {
        state.reindex();
        mark_in_doubt(&mut state);
        let (sender, inbox) = mpsc::channel(INBOX);
        let core = Core {
            config,
            state,
            store,
            inbox,
            sender: sender.clone(),
            accounts: BTreeMap::new(),
            next_fetch: BTreeMap::new(),
            poll: watch::Sender::new(0),
            http,
            children: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started_at: now(),
            not_durable: None,
            dirty: false,
            changes: Vec::new(),
            settled_doubt: false,
            replies: Vec::new(),
            answer_waiters: BTreeMap::new(),
            watchdog: notify::watchdog_interval(),
            last_status_line: String::new(),
            last_status_at: None,
            logins: BTreeMap::new(),
        };
        (core, sender)
    }

    pub fn state_path(&self) -> String {
        self.store.path().display().to_string()
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        self.spawn_children();
        self.settle();
        let mut next_ping = Instant::now();
        loop {
            let wake = self.next_wake(next_ping);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                event = self.inbox.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                () = tokio::time::sleep_until(wake) => self.on_timer(),
            }
            self.settle();
            // Pinged here, after a full turn of the loop, so that a wedged core stops the
            // pings and systemd restarts the daemon.
            if let Some(interval) = self.watchdog {
                if Instant::now() >= next_ping {
                    notify::watchdog();
                    next_ping = Instant::now() + interval;
                }
            }
        }
        self.stop().await;
    }

    /// The earliest moment the core must wake without an event.
    fn next_wake(&self, next_ping: Instant) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut wake = far;
        if self.watchdog.is_some() {
            wake = wake.min(next_ping);
        }
        if self.not_durable.is_some() {
            wake = wake.min(Instant::now() + Duration::from_secs(5));
        }
        let timers = [
            self.state.next_retry(),
            self.state.next_answer_retry(),
            self.state.next_snooze_wake(),
        ];
        for at in timers.into_iter().flatten() {
            let secs = (at - now()).max(0) as u64;
            wake = wake.min(Instant::now() + Duration::from_secs(secs));
        }
        wake
    }

    fn on_timer(&mut self) {
        let now = now();
        if self.state.due_retries(now) + self.state.due_answer_retries(now) > 0 {
            self.dirty = true;
        }
        for id in self.state.wake_snoozed(now) {
            tracing::info!(conversation = %format!("c{id}"), "snooze over, back in the queue");
            self.dirty = true;
        }
        if self.not_durable.is_some() {
            self.dirty = true;
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Control { request, reply } => self.on_request(request, reply),
            Event::Feed { feed, report } => self.on_feed(&feed, report),
            Event::Announced { article, account, outcome } => {
                self.on_announced(article, &account, outcome)
            }
            Event::Answered { account, answer, outcome } => {
                self.on_answered(&account, answer, outcome)
            }
            Event::Mentions { account, mentions } => self.on_mentions(&account, mentions),
            Event::AccountData { account, data } => {
                self.state.accounts.entry(account).or_default().data = data;
                self.dirty = true;
            }
            Event::AccountHealth { account, health, info } => {
                if let Some(acc) = self.accounts.get_mut(&account) {
                    acc.health = health;
                    if let Some(info) = info {
                        acc.rules = Some(info.rules);
                        acc.at_once = info.at_once.max(1);
                    }
                }
            }
            Event::Reload { config, reply } => {
                self.reload(*config);
                let _ = reply.send(());
            }
            Event::LoggedIn { account, session, reply } => match session {
                Ok(session) => {
                    let who =
                        session.get("username").map(|u| format!(" as @{u}")).unwrap_or_default();
                    self.state.accounts.entry(account.clone()).or_default().data = session;
                    self.dirty = true;
                    tracing::info!(account = %account, "logged in{who}");
                    self.restart_account(&account);
                    self.replies
                        .push((reply, Response::Done(format!("{account}: logged in{who}"))));
                }
                Err(e) => {
                    let _ =
                        reply.send(error_response(ErrorKind::Failed, format!("{account}: {e}")));
                }
            },
        }
    }

    fn on_feed(&mut self, url: &str, report: FeedReport) {
        let Some(feed) = self.config.feeds.iter().find(|f| f.url == url).cloned() else {
            return;
        };
        self.next_fetch.insert(url.to_owned(), report.next_fetch);
        let fs = self.state.feeds.entry(url.to_owned()).or_default();
        if fs.current_url.is_empty() {
            fs.current_url = url.to_owned();
        }
        // An unchanged feed that was fine before changes nothing worth a save: idle polls
        // cost no disk write (the fetch time and status are kept in memory until the next).
        // New items are journaled as a change instead (see below).
        let changed = matches!(report.result, FeedResult::Failed { .. })
            || fs.last_error.is_some()
            || report.current_url != fs.current_url;
        if report.current_url != fs.current_url {
            tracing::info!(feed = %url, "feed moved permanently to {}", report.current_url);
            fs.current_url = report.current_url;
        }
        fs.last_fetch = Some(report.at);
        fs.last_status = Some(report.status);
        match report.result {
            FeedResult::NotModified => {
                fs.last_error = None;
                fs.failures = 0;
            }
            FeedResult::Failed { error } => {
                if fs.last_error.as_deref() != Some(&error) {
                    tracing::warn!(feed = %url, "feed failed: {error}");
                }
                fs.last_error = Some(error);
                fs.failures += 1;
            }
            FeedResult::Items { items, etag, last_modified } => {
                fs.last_error = None;
                fs.failures = 0;
                fs.etag = etag;
                fs.last_modified = last_modified;
                let accounts: Vec<String> =
                    self.config.accounts.iter().map(|a| a.name.clone()).collect();
                let before = self.state.next_article;
                let mut ingested = self.state.ingest(&feed, &accounts, items, now());
                crate::memory::give_back();
                if ingested.baseline > 0 {
                    tracing::info!(feed = %url, "baseline: {} existing articles will not be announced", ingested.baseline);
                }
                for id in ingested.new.iter().chain(&ingested.held) {
                    let a = &self.state.articles[id];
                    let held = ingested.held.contains(id);
                    tracing::info!(feed = %url, article_url = %a.link, held, "new article: {}", a.title);
                }
                // Already applied. A few new articles are journaled (with the first
                // announcement they start, in one record); a baseline or an archive's worth
                // goes straight to a full save rather than into a copy for the journal.
                let added = self.state.next_article - before;
                if added > MAX_JOURNALED_ARTICLES {
                    self.dirty = true;
                } else {
                    let (ids, links) = (
                        std::mem::take(&mut ingested.learned_ids),
                        std::mem::take(&mut ingested.learned_links),
                    );
                    self.changes.push(self.state.fetched(url, ids, links, before));
                }
            }
        }
        self.dirty |= changed;
    }

    fn on_announced(&mut self, article: u64, account: &str, outcome: Outcome) {
        if let Some(acc) = self.accounts.get_mut(account) {
            if acc.busy == Some(Busy::Article(article)) {
                acc.busy = None;
            }
        }
        let link = self.state.articles.get(&article).map(|a| a.link.clone()).unwrap_or_default();
        match &outcome {
            Outcome::Posted { remote_id, url } => tracing::info!(
                account = %account, article_url = %link, remote_id = %remote_id,
                "announced{}", url.as_ref().map(|u| format!(" at {u}")).unwrap_or_default()
            ),
            Outcome::Retry { error, .. } => {
                tracing::warn!(account = %account, article_url = %link, "announcement failed, will retry: {error}")
            }
            Outcome::GiveUp { error } => {
                tracing::error!(account = %account, article_url = %link, "announcement failed: {error}")
            }
        }
        if let Outcome::GiveUp { error } = &outcome {
            if error.starts_with("unauthorised") {
                if let Some(acc) = self.accounts.get_mut(account) {
                    acc.health = error.clone();
                }
            }
        }
        let ann = self.state.articles.get(&article).and_then(|a| a.announcements.get(account));
        self.settled_doubt |= ann.is_some_and(|ann| ann.in_doubt);
        self.change(Change::Finish { article, account: account.to_owned(), outcome, at: now() });
    }

    /// Applies one announcement step, to be made durable by the next [`Core::settle`].
    fn change(&mut self, change: Change) {
        self.state.apply(change.clone());
        self.changes.push(change);
    }

    fn on_answered(&mut self, account: &str, answer: AnswerRef, outcome: Outcome) {
        if let Some(acc) = self.accounts.get_mut(account) {
            if acc.busy.as_ref() == Some(&Busy::Answer(answer.clone())) {
                acc.busy = None;
            }
        }
        let conversation = format!("c{}", answer.0);
        let reply = match &outcome {
            Outcome::Posted { url, .. } => {
                tracing::info!(account = %account, conversation = %conversation, "answer posted");
                Response::Done(format!(
                    "{conversation}: answered{}",
                    url.as_ref().map(|u| format!(" {u}")).unwrap_or_default()
                ))
            }
            Outcome::Retry { error, .. } => {
                tracing::warn!(account = %account, conversation = %conversation, "answer failed, will retry: {error}");
                Response::Done(format!(
                    "{conversation}: answer saved, not posted yet ({error}); it will be retried"
                ))
            }
            Outcome::GiveUp { error } => {
                tracing::error!(account = %account, conversation = %conversation, "answer refused: {error}");
                error_response(
                    ErrorKind::Failed,
                    format!("{conversation}: the answer was not posted: {error}"),
                )
            }
        };
        self.state.finish_answer(&answer, outcome, now());
        self.dirty = true;
        if let Some(waiter) = self.answer_waiters.remove(&answer.1) {
            self.replies.push((waiter, reply));
        }
    }

    fn on_mentions(&mut self, account: &str, mentions: Mentions) {
        let ingested = self.state.ingest_mentions(account, mentions.items, mentions.cursors);
        for id in &ingested.new_conversations {
            tracing::info!(account = %account, conversation = %format!("c{id}"), "new conversation");
        }
        for id in &ingested.reopened {
            tracing::info!(account = %account, conversation = %format!("c{id}"), "conversation reopened by a new message");
        }
        if let Some(acc) = self.accounts.get_mut(account) {
            if acc.health.starts_with("mentions:") {
                acc.health = "ok".into();
            }
        }
        // A read that found nothing new writes nothing: mention polls of a quiet account
        // cost no disk write.
        self.dirty |= ingested.messages > 0 || ingested.cursors_moved;
    }

    /// After every event: start what can start, make it durable, then let it go out.
    fn settle(&mut self) {
        if self.not_durable.is_none() {
            self.begin_announcements();
        }
        // An outcome can wait for the write that ends its account's batch: the account's next
        // post is durably in flight already, and were the outcome lost in a crash, its post
        // would be reconciled like any in doubt. A burst costs two writes per batch, not one
        // per post. An outcome that settles a post in doubt does not wait (`settled_doubt`).
        let outcomes_can_wait = self.changes.iter().all(|change| {
            matches!(change, Change::Finish { account, .. } if self.state.next_in_flight(account).is_some())
        });
        if self.dirty || self.settled_doubt || !outcomes_can_wait {
            // Announcement steps and fetch results go to the journal. Anything else that
            // changed writes the whole state, which folds the journal in; so do a long
            // journal (the store decides) and a clean stop.
            let saved = if self.dirty {
                self.store.save(&self.state)
            } else {
                self.store.commit(&self.state, &self.changes)
            };
            match saved {
                Ok(()) => {
                    if let Some(err) = self.not_durable.take() {
                        tracing::info!("state is writable again (was: {err}); resuming");
                    }
                    self.dirty = false;
                    self.changes.clear();
                    self.settled_doubt = false;
                }
                Err(err) => {
                    let err = err.to_string();
                    if self.not_durable.as_deref() != Some(&err) {
                        tracing::error!("cannot write state, posting paused: {err}");
                    }
                    self.not_durable = Some(err);
                }
            }
        }
        let failed = self.not_durable.clone();
        for (reply, response) in self.replies.drain(..) {
            let response = match &failed {
                Some(err) => error_response(ErrorKind::Failed, format!("not saved: {err}")),
                None => response,
            };
            let _ = reply.send(response);
        }
        if self.not_durable.is_none() {
            self.dispatch();
        }
        self.update_status_line();
    }

    /// Pending → InFlight for every idle, ready account: the human's answers first, one at a
    /// time; else up to the account's `at_once` announcements, begun in one write.
    fn begin_announcements(&mut self) {
        let now = now();
        let mut begun = Vec::new();
        for (name, acc) in &self.accounts {
            let Some(rules) = acc.rules else { continue };
            if acc.busy.is_some() || self.state.answer_in_flight(name).is_some() {
                continue;
            }
            let announcing = self.state.next_in_flight(name).is_some();
            // Where a batch of announcements is in flight, an answer begins between two of
            // them (dispatch sends it next) instead of waiting for the whole batch.
            if !announcing || acc.at_once > 1 {
                if let Some(answer) = self.state.next_pending_answer(name) {
                    self.state.begin_answer(&answer, now);
                    self.dirty = true;
                    continue;
                }
            }
            if announcing {
                continue;
            }
            for id in self.state.next_pending(name, acc.at_once) {
                let article = &self.state.articles[&id];
                let template = self
                    .config
                    .feeds
                    .iter()
                    .find(|f| f.url == article.feed)
                    .map_or(crate::config::DEFAULT_TEMPLATE, |f| f.template.as_str());
                let parts = Parts {
                    title: &article.title,
                    url: &article.link,
                    summary: &article.summary,
                    tags: &article.tags,
                };
                let account = name.clone();
                match fit::render(template, &parts, &rules) {
                    Ok(text) => begun.push(Change::Begin { article: id, account, text, at: now }),
                    Err(e) => {
                        let error = format!("cannot fit the announcement: {e}");
                        begun.push(Change::Begin {
                            article: id,
                            account: account.clone(),
                            text: String::new(),
                            at: now,
                        });
                        let outcome = Outcome::GiveUp { error };
                        begun.push(Change::Finish { article: id, account, outcome, at: now });
                    }
                }
            }
        }
        for change in begun {
            self.change(change);
        }
    }

    /// Hands each idle account its in-flight post. Only called when the state on disk says
    /// it is in flight.
    fn dispatch(&mut self) {
        let names: Vec<String> = self.accounts.keys().cloned().collect();
        for name in names {
            let Some(acc) = self.accounts.get(&name) else { continue };
            if acc.busy.is_some() || acc.rules.is_none() {
                continue;
            }
            let (job, busy) = if let Some(answer) = self.state.answer_in_flight(&name) {
                let Some(reply) = self.reply_for(&answer) else { continue };
                (Job::Reply(reply), Busy::Answer(answer))
            } else if let Some(id) = self.state.next_in_flight(&name) {
                let article = &self.state.articles[&id];
                let ann = &article.announcements[&name];
                let post = Post {
                    article: id,
                    key: ann.key.clone(),
                    text: ann.text.clone().unwrap_or_default(),
                    title: article.title.clone(),
                    url: article.link.clone(),
                    summary: article.summary.clone(),
                    image: article.image.clone(),
                    in_doubt: ann.in_doubt,
                };
                (Job::Announce(post), Busy::Article(id))
            } else {
                continue;
            };
            if let Some(acc) = self.accounts.get_mut(&name) {
                if acc.jobs.try_send(job).is_ok() {
                    acc.busy = Some(busy);
                }
            }
        }
    }

    fn reply_for(&self, (id, key): &AnswerRef) -> Option<Reply> {
        let c = self.state.conversations.get(id)?;
        let m = c.messages.iter().find(|m| m.answer.as_ref().is_some_and(|a| &a.key == key))?;
        let a = m.answer.as_ref()?;
        Some(Reply {
            conversation: *id,
            key: key.clone(),
            text: m.text.clone(),
            in_reply_to: m.in_reply_to.clone().unwrap_or_default(),
            thread: c.thread.clone(),
            to: a.to.clone(),
            visibility: m.visibility.clone(),
            in_doubt: a.in_doubt,
        })
    }

    fn spawn_children(&mut self) {
        self.children = CancellationToken::new();
        self.accounts.clear();
        for account in self.config.accounts.clone() {
            self.spawn_account(&account);
        }
        for feed in self.config.feeds.clone() {
            let fs = self.state.feeds.get(&feed.url).cloned().unwrap_or_default();
            let watcher = crate::feed::Watcher {
                feed,
                current_url: fs.current_url,
                etag: fs.etag,
                last_modified: fs.last_modified,
                failures: fs.failures,
                http: self.http.clone(),
                core: self.sender.clone(),
                poll: self.poll.subscribe(),
                cancel: self.children.child_token(),
            };
            self.tracker.spawn(watcher.run());
        }
    }

    /// Stops one account's worker and starts a new one on the current state.
    fn restart_account(&mut self, name: &str) {
        if let Some(old) = self.accounts.remove(name) {
            old.cancel.cancel();
        }
        // Whatever the old worker had in flight may have reached the network.
        mark_in_doubt(&mut self.state);
        if let Some(account) = self.config.accounts.iter().find(|a| a.name == name).cloned() {
            self.spawn_account(&account);
        }
    }

    fn spawn_account(&mut self, account: &crate::config::AccountConfig) {
        {
            let (jobs, rx) = mpsc::channel(4);
            let name = account.name.clone();
            let cancel = self.children.child_token();
            let worker = Worker {
                account: name.clone(),
                jobs: rx,
                core: self.sender.clone(),
                cancel: cancel.clone(),
                cursors: self
                    .state
                    .accounts
                    .get(&name)
                    .map(|a| a.cursors.clone())
                    .unwrap_or_default(),
                watch: network::Watchlist::new(self.recent_posts(&name)),
                session: self.state.accounts.get(&name).map(|a| a.data.clone()).unwrap_or_default(),
                interval: account.interval,
            };
            let health =
                match network::spawn(account, &self.config, worker, &self.http, &self.tracker) {
                    Ok(()) => "starting".to_owned(),
                    Err(why) => {
                        tracing::error!(account = %name, "account cannot start: {why}");
                        why
                    }
                };
            let acc = Account { jobs, health, rules: None, at_once: 1, busy: None, cancel };
            self.accounts.insert(name, acc);
        }
    }

    /// `presencectl login`, first half: a PKCE pair and a state kept here, the URL sent back.
    fn login_start(&mut self, account: &str, redirect_uri: String) -> Response {
        let Some(acc) = self.config.accounts.iter().find(|a| a.name == account) else {
            return error_response(ErrorKind::NotFound, format!("no account {account:?}"));
        };
        if acc.kind != crate::config::AccountKind::X {
            let kind = acc.kind.as_str();
            return error_response(
                ErrorKind::Refused,
                format!("{account} is a {kind} account; only x accounts log in this way"),
            );
        }
        let client_id = acc.client_id.clone().unwrap_or_default();
        let base = acc.server.clone().unwrap_or_else(|| network::x::AUTHORIZE_BASE.to_owned());
        self.logins.retain(|_, l| l.since.elapsed() < LOGIN_WINDOW);
        while self.logins.len() >= MAX_PENDING_LOGINS {
            let oldest = self.logins.iter().min_by_key(|(_, l)| l.since).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.logins.remove(&k);
            }
        }
        let (verifier, challenge) = network::x::pkce_pair();
        let state = network::x::random_state();
        let url = network::x::authorize_url(&base, &client_id, &redirect_uri, &state, &challenge);
        let pending = PendingLogin {
            account: account.to_owned(),
            verifier,
            redirect_uri,
            since: Instant::now(),
        };
        self.logins.insert(state, pending);
        Response::LoginUrl(url)
    }

    /// Second half: the code is exchanged off the core (it is an HTTP call), the result
    /// comes back as [`Event::LoggedIn`].
    fn login_finish(
        &mut self,
        account: String,
        state: &str,
        code: String,
        reply: oneshot::Sender<Response>,
    ) {
        let pending = match self.logins.remove(state) {
            Some(p) if p.account == account && p.since.elapsed() < LOGIN_WINDOW => p,
            _ => {
                let msg = "this login is unknown or expired (its state does not match): run presencectl login again";
                let _ = reply.send(error_response(ErrorKind::Refused, msg.into()));
                return;
            }
        };
        let Some(acc) = self.config.accounts.iter().find(|a| a.name == account).cloned() else {
            let _ =
                reply.send(error_response(ErrorKind::NotFound, format!("no account {account:?}")));
            return;
        };
        let creds = self.config.credentials_directory.clone();
        let (http, core) = (self.http.clone(), self.sender.clone());
        self.tracker.spawn(async move {
            let session = async {
                let secret = match &acc.client_secret {
                    Some(source) => Some(
                        source.load(creds.as_deref()).map_err(|e| format!("client_secret: {e}"))?,
                    ),
                    None => None,
                };
                let api = acc.server.as_deref().unwrap_or(network::x::DEFAULT_API);
                let client_id = acc.client_id.as_deref().unwrap_or_default();
                network::x::exchange_code(
                    &http,
                    api,
                    client_id,
                    secret.as_ref(),
                    &code,
                    &pending.verifier,
                    &pending.redirect_uri,
                )
                .await
                .map_err(|e| e.to_string())
            }
            .await;
            let _ = core.send(Event::LoggedIn { account, session, reply }).await;
        });
    }

    /// The account's most recent posts (announcements and answers) with when they were
    /// posted, newest last: the threads where replies may arrive without notifying us.
    fn recent_posts(&self, account: &str) -> Vec<(String, Unix)> {
        let mut posts: Vec<(Unix, String)> = Vec::new();
        for a in self.state.articles.values() {
            if let Some(AnnStatus::Posted { remote_id, at, .. }) =
                a.announcements.get(account).map(|x| &x.status)
            {
                posts.push((*at, remote_id.clone()));
            }
        }
        for c in self.state.conversations.values().filter(|c| c.account == account) {
            for a in c.messages.iter().filter_map(|m| m.answer.as_ref()) {
                if let AnnStatus::Posted { remote_id, at, .. } = &a.status {
                    posts.push((*at, remote_id.clone()));
                }
            }
        }
        posts.sort();
        let skip = posts.len().saturating_sub(20);
        posts.into_iter().skip(skip).map(|(at, id)| (id, at)).collect()
    }

    fn reload(&mut self, config: Config) {
        if config == self.config {
            tracing::info!("configuration unchanged");
            return;
        }
        tracing::info!(
            "configuration reloaded: {} feeds, {} accounts",
            config.feeds.len(),
            config.accounts.len()
        );
        // Restart the watchers and workers with the new configuration. An announcement cut
        // off in the middle stays in flight and is reconciled by the new worker.
        self.children.cancel();
        mark_in_doubt(&mut self.state);
        self.dirty = true;
        self.config = config;
        self.spawn_children();
    }

    async fn stop(mut self) {
        self.children.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await.is_err() {
            tracing::warn!("some tasks did not stop within 5 s");
        }
        // Whatever arrived while stopping is recorded before the final save.
        while let Ok(event) = self.inbox.try_recv() {
            if !matches!(event, Event::Control { .. }) {
                self.handle(event);
            }
        }
        // The rest of a batch never reached a worker: pending again, so that the next start
        // sends it without looking for it on the network first.
        for (article, account) in self.state.in_flight() {
            let sent = self.accounts.get(&account).and_then(|acc| acc.busy.as_ref())
                == Some(&Busy::Article(article));
            if !sent && self.state.unbegin(article, &account) {
                self.dirty = true;
            }
        }
        // Outcomes that arrived while stopping are saved too (or the next start would have to
        // ask the network about them again), and the journal is folded in: a stopped
        // daemon leaves a state file complete on its own.
        if self.dirty || !self.changes.is_empty() || self.store.journaled() {
            if let Err(err) = self.store.save(&self.state) {
                tracing::error!("final save failed: {err}");
            }
        }
    }

    fn on_request(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        let response = match request {
            Request::Status => Response::Status(self.status_report()),
            Request::Posts { filter } => Response::Posts(self.posts(filter)),
            Request::Poll => self.poll_now(true, true),
            Request::PollOnly { scope: PollScope::Feeds } => self.poll_now(true, false),
            Request::PollOnly { scope: PollScope::Mentions } => self.poll_now(false, true),
            Request::PostAction { id, action } => {
                let action = match action {
                    proto::PostAction::Approve => state::Action::Approve,
                    proto::PostAction::Skip => state::Action::Skip,
                    proto::PostAction::Retry => state::Action::Retry,
                };
                match self.state.act(id, action) {
                    Ok(n) => {
                        self.dirty = true;
                        let verb = match action {
                            state::Action::Approve => "approved",
                            state::Action::Skip => "skipped",
                            state::Action::Retry => "queued again",
                        };
                        let msg = format!("a{id}: {n} announcement{} {verb}", plural(n));
                        self.replies.push((reply, Response::Done(msg)));
                        return;
                    }
                    Err(e @ state::ActError::NoSuchArticle(_)) => {
                        error_response(ErrorKind::NotFound, e.to_string())
                    }
                    Err(e) => error_response(ErrorKind::Refused, e.to_string()),
                }
            }
            Request::ListConversations { filter, limit } => {
                Response::Conversations(self.conversations(filter, limit))
            }
            Request::ShowConversation { id } => match self.conversation_detail(id) {
                Some(detail) => Response::Conversation(detail),
                None => error_response(ErrorKind::NotFound, format!("no conversation c{id}")),
            },
            Request::Answer { id, text } => match self.start_answer(id, &text) {
                Ok(key) => {
                    self.dirty = true;
                    self.answer_waiters.insert(key, reply);
                    return;
                }
                Err(refusal) => Response::Error(refusal),
            },
            Request::Snooze { id, until } => {
                let done = self.state.snooze(id, until, now());
                let msg = format!("c{id}: snoozed until {}", local_time(until));
                return self.reply_after_save(reply, done.map(|()| msg));
            }
            Request::Done { id } => {
                let done = self.state.done(id, now());
                return self.reply_after_save(reply, done.map(|()| format!("c{id}: done")));
            }
            Request::LoginStart { account, redirect_uri } => {
                self.login_start(&account, redirect_uri)
            }
            Request::LoginFinish { account, state, code } => {
                self.login_finish(account, &state, code, reply);
                return;
            }
            Request::Reopen { id } => {
                let done = self.state.reopen(id);
                return self.reply_after_save(reply, done.map(|()| format!("c{id}: open again")));
            }
        };
        let _ = reply.send(response);
    }

    /// `presencectl poll`: the feeds' watchers fetch now, the accounts' workers read their
    /// mentions now, or both.
    fn poll_now(&mut self, feeds: bool, mentions: bool) -> Response {
        let mut checking = Vec::new();
        if feeds {
            self.poll.send_modify(|generation| *generation += 1);
            let n = self.config.feeds.len();
            checking.push(format!("{n} feed{}", plural(n)));
        }
        if mentions {
            for acc in self.accounts.values() {
                // A full queue already holds work that will end in a fetch soon enough.
                let _ = acc.jobs.try_send(Job::FetchMentions);
            }
            let n = self.config.accounts.len();
            checking.push(format!("{n} account{}", plural(n)));
        }
        Response::Done(format!("checking {} now", checking.join(" and ")))
    }

    /// Replies once the change is durable, or at once with the refusal.
    fn reply_after_save(
        &mut self,
        reply: oneshot::Sender<Response>,
        done: Result<String, ConvError>,
    ) {
        match done {
            Ok(msg) => {
                self.dirty = true;
                self.replies.push((reply, Response::Done(msg)));
            }
            Err(e) => {
                let kind = match e {
                    ConvError::NoSuchConversation(_) => ErrorKind::NotFound,
                    _ => ErrorKind::Refused,
                };
                let _ = reply.send(error_response(kind, e.to_string()));
            }
        }
    }

    /// Checks and records an answer; returns its key, or the refusal to send.
    fn start_answer(&mut self, id: u64, text: &str) -> Result<String, ErrorReply> {
        let refuse = |kind, message: String| Err(ErrorReply { kind, message });
        let Some(c) = self.state.conversations.get(&id) else {
            return refuse(ErrorKind::NotFound, format!("no conversation c{id}"));
        };
        let Some(acc) = self.accounts.get(&c.account) else {
            return refuse(
                ErrorKind::Refused,
                format!("account {} is not configured any more", c.account),
            );
        };
        let Some(rules) = acc.rules else {
            return refuse(
                ErrorKind::Refused,
                format!("account {} is not ready: {}", c.account, acc.health),
            );
        };
        let to = c.messages.iter().rev().find(|m| !m.mine()).map(|m| m.author.clone());
        // Counted with the mention the network adapter may prepend, so that a text accepted
        // here is never refused there for its length.
        let counted = match &to {
            Some(to) if !text.trim_start().starts_with(&format!("@{to}")) => {
                format!("@{to} {}", text.trim())
            }
            _ => text.trim().to_owned(),
        };
        let length = fit::length(&counted, &rules);
        if !fit::fits(&counted, &rules) {
            return refuse(
                ErrorKind::Refused,
                format!(
                    "too long for {}: {length} of {} characters (with the @mention)",
                    c.account, rules.max_len
                ),
            );
        }
        match self.state.answer(id, text, now()) {
            Ok((_, key)) => Ok(key),
            Err(e @ ConvError::NoSuchConversation(_)) => refuse(ErrorKind::NotFound, e.to_string()),
            Err(e) => refuse(ErrorKind::Refused, e.to_string()),
        }
    }

    /// Sorted on a cheap key first, so that a short list of many conversations builds only
    /// the views it shows.
    fn conversations(&self, filter: ConversationFilter, limit: u32) -> Vec<ConversationView> {
        let mut keyed: Vec<((bool, Unix), u64, &Conversation)> = self
            .state
            .conversations
            .iter()
            .filter(|(_, c)| {
                matches!(
                    (filter, &c.status),
                    (ConversationFilter::All, _)
                        | (ConversationFilter::Open, ConvStatus::Open)
                        | (ConversationFilter::Snoozed, ConvStatus::Snoozed { .. })
                        | (ConversationFilter::Done, ConvStatus::Done { .. })
                )
            })
            .map(|(id, c)| {
                // Oldest waiting first; those nobody waits on after them, most recent first.
                let last = c.messages.last().map_or(0, |m| m.at);
                let waiting = crate::inbox::waiting_since(c);
                ((waiting.is_none(), waiting.unwrap_or(-last)), *id, c)
            })
            .collect();
        keyed.sort_by_key(|(key, id, _)| (*key, *id));
        let take = if limit == 0 { keyed.len() } else { limit as usize };
        keyed.into_iter().take(take).map(|(_, id, c)| conversation_view(id, c)).collect()
    }

    fn conversation_detail(&self, id: u64) -> Option<ConversationDetail> {
        let c = self.state.conversations.get(&id)?;
        let answer_limit = self
            .accounts
            .get(&c.account)
            .and_then(|a| a.rules)
            .map(|r| u32::try_from(r.max_len).unwrap_or(u32::MAX));
        Some(ConversationDetail {
            conversation: conversation_view(id, c),
            messages: c.messages.iter().map(message_view).collect(),
            answer_limit,
        })
    }

    fn status_report(&self) -> StatusReport {
        let feeds = self
            .config
            .feeds
            .iter()
            .map(|f| {
                let fs = self.state.feeds.get(&f.url);
                FeedStatus {
                    url: f.url.clone(),
                    current_url: fs
                        .map(|s| s.current_url.clone())
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| f.url.clone()),
                    interval_secs: f.interval.as_secs(),
                    last_fetch: fs.and_then(|s| s.last_fetch),
                    last_status: fs.and_then(|s| s.last_status.clone()),
                    last_error: fs.and_then(|s| s.last_error.clone()),
                    next_fetch: self.next_fetch.get(&f.url).copied(),
                    articles: self.state.articles.values().filter(|a| a.feed == f.url).count()
                        as u64,
                    baseline_taken: fs.is_some_and(|s| s.baseline_taken),
                }
            })
            .collect();
        let accounts = self
            .config
            .accounts
            .iter()
            .map(|a| {
                let mut st = AccountStatus {
                    name: a.name.clone(),
                    kind: a.kind.as_str().to_owned(),
                    health: self
                        .accounts
                        .get(&a.name)
                        .map_or_else(|| "stopped".to_owned(), |r| r.health.clone()),
                    posted: 0,
                    pending: 0,
                    held: 0,
                    failed: 0,
                };
                for ann in self.state.articles.values().filter_map(|x| x.announcements.get(&a.name))
                {
                    match ann.status {
                        AnnStatus::Posted { .. } => st.posted += 1,
                        AnnStatus::Pending | AnnStatus::InFlight { .. } => st.pending += 1,
                        AnnStatus::Held { .. } => st.held += 1,
                        AnnStatus::Failed { .. } => st.failed += 1,
                        AnnStatus::Skipped { .. } => {}
                    }
                }
                st
            })
            .collect();
        let mut queue = QueueSummary::default();
        for c in self.state.conversations.values() {
            match c.status {
                ConvStatus::Open => {
                    queue.open += 1;
                    if let Some(at) = crate::inbox::waiting_since(c) {
                        queue.waiting += 1;
                        queue.oldest_waiting =
                            Some(queue.oldest_waiting.map_or(at, |o: Unix| o.min(at)));
                    }
                }
                ConvStatus::Snoozed { until } => {
                    queue.snoozed += 1;
                    queue.next_wake = Some(queue.next_wake.map_or(until, |w: Unix| w.min(until)));
                }
                ConvStatus::Done { .. } => {}
            }
        }
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at: self.started_at,
            state_file: self.state_path(),
            state_error: self.not_durable.clone(),
            feeds,
            accounts,
            queue,
        }
    }

    fn posts(&self, filter: PostFilter) -> Vec<ArticleView> {
        const RECENT: usize = 20;
        let mut out: Vec<ArticleView> = Vec::new();
        let total = self.state.articles.len();
        for (i, (id, a)) in self.state.articles.iter().enumerate() {
            let views: Vec<AnnouncementView> =
                a.announcements.iter().map(|(name, ann)| announcement_view(name, ann)).collect();
            let any = |s: &[AnnouncementState]| views.iter().any(|v| s.contains(&v.state));
            let only_baseline = a
                .announcements
                .values()
                .all(|x| x.status == AnnStatus::Skipped { reason: state::SkipReason::Baseline });
            let keep = match filter {
                PostFilter::All => true,
                PostFilter::Failed => any(&[AnnouncementState::Failed]),
                PostFilter::Pending => any(&[
                    AnnouncementState::Held,
                    AnnouncementState::Pending,
                    AnnouncementState::InFlight,
                ]),
                PostFilter::Recent => {
                    !only_baseline
                        && (i + RECENT >= total
                            || !any(&[AnnouncementState::Posted, AnnouncementState::Skipped]))
                }
            };
            if keep {
                out.push(ArticleView {
                    id: *id,
                    feed: a.feed.clone(),
                    title: a.title.clone(),
                    url: a.link.clone(),
                    first_seen: a.first_seen,
                    published: a.published,
                    accounts: views,
                });
            }
        }
        out
    }

    fn update_status_line(&mut self) {
        let (mut pending, mut held, mut failed) = (0, 0, 0);
        for ann in self.state.open_articles().flat_map(|(_, a)| a.announcements.values()) {
            match ann.status {
                AnnStatus::Pending | AnnStatus::InFlight { .. } => pending += 1,
                AnnStatus::Held { .. } => held += 1,
                AnnStatus::Failed { .. } => failed += 1,
                _ => {}
            }
        }
        let open =
            self.state.conversations.values().filter(|c| c.status == ConvStatus::Open).count();
        let line = match &self.not_durable {
            Some(err) => format!("cannot write state, posting paused: {err}"),
            None => format!(
                "{} feeds, {} accounts; {pending} to announce, {held} held, {failed} failed; {open} waiting",
                self.config.feeds.len(),
                self.config.accounts.len()
            ),
        };
        // Mid-burst the line changes with every post: it is sent at most once a second
        // then, and when the burst is over (the line stays right, the service manager is
        // not sent a datagram per post).
        let mid_burst = self.not_durable.is_none()
            && !self.state.in_flight().is_empty()
            && self.last_status_at.is_some_and(|at| at.elapsed() < STATUS_EVERY);
        if line != self.last_status_line && !mid_burst {
            notify::status(&line);
            self.last_status_line = line;
            self.last_status_at = Some(Instant::now());
        }
    }
}

/// After a crash or a worker restart, whatever was in flight may or may not have reached
/// the network: the next attempt must look before posting.
fn mark_in_doubt(state: &mut State) {
    for (article, account) in state.in_flight() {
        if let Some(ann) = state.announcement_mut(article, &account) {
            ann.in_doubt = true;
        }
    }
    for answer in state.answers_in_flight() {
        if let Some(a) = state.answer_mut(&answer) {
            a.in_doubt = true;
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn error_response(kind: ErrorKind, message: String) -> Response {
    Response::Error(ErrorReply { kind, message })
}

fn conversation_view(id: u64, c: &Conversation) -> ConversationView {
    let mut participants: Vec<String> = Vec::new();
    for m in c.messages.iter().filter(|m| !m.mine()) {
        if !participants.contains(&m.author) {
            participants.push(m.author.clone());
        }
    }
    let (status, snoozed_until) = match c.status {
        ConvStatus::Open => (ConversationState::Open, None),
        ConvStatus::Snoozed { until } => (ConversationState::Snoozed, Some(until)),
        ConvStatus::Done { .. } => (ConversationState::Done, None),
    };
    ConversationView {
        id,
        account: c.account.clone(),
        status,
        participants,
        waiting_since: crate::inbox::waiting_since(c),
        snoozed_until,
        last_message: c.messages.last().map(message_view),
    }
}

fn message_view(m: &state::Message) -> MessageView {
    let (delivery, error) = match &m.answer {
        None => (None, None),
        Some(a) => match &a.status {
            AnnStatus::Posted { .. } => (Some(AnnouncementState::Posted), None),
            AnnStatus::InFlight { .. } => (Some(AnnouncementState::InFlight), None),
            AnnStatus::Failed { error, .. } => {
                (Some(AnnouncementState::Failed), Some(error.clone()))
            }
            _ => (Some(AnnouncementState::Pending), None),
        },
    };
    MessageView {
        author: m.author.clone(),
        display_name: m.display_name.clone(),
        text: m.text.clone(),
        at: m.at,
        url: m.url.clone(),
        mine: m.mine(),
        delivery,
        error,
    }
}

/// For confirmations: the daemon's local time, which is the human's on a personal server.
fn local_time(unix: Unix) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| unix.to_string())
}

fn announcement_view(account: &str, ann: &state::Announcement) -> AnnouncementView {
    let (state, detail, remote_url, at) = match &ann.status {
        AnnStatus::Pending => (AnnouncementState::Pending, None, None, None),
        AnnStatus::Held { reason } => (
            AnnouncementState::Held,
            Some(match reason {
                state::HoldReason::TooMany => "more new articles at once than max_new_per_poll",
                state::HoldReason::TooOld => "dated long before the newest article",
            }),
            None,
            None,
        ),
        AnnStatus::InFlight { since } => (AnnouncementState::InFlight, None, None, Some(*since)),
        AnnStatus::Posted { url, at, .. } => {
            (AnnouncementState::Posted, None, url.clone(), Some(*at))
        }
        AnnStatus::Failed { error, retry_at } => {
            return AnnouncementView {
                account: account.to_owned(),
                state: AnnouncementState::Failed,
                detail: Some(error.clone()),
                remote_url: None,
                at: *retry_at,
                attempts: ann.attempts,
            }
        }
        AnnStatus::Skipped { reason } => (
            AnnouncementState::Skipped,
            Some(match reason {
                state::SkipReason::Baseline => "baseline",
                state::SkipReason::Human => "skipped by hand",
            }),
            None,
            None,
        ),
    };
    AnnouncementView {
        account: account.to_owned(),
        state,
        detail: detail.map(str::to_owned),
        remote_url,
        at,
        attempts: ann.attempts,
    }
}
