//! Everything presenced remembers, and the rules that change it: plain data and pure
//! functions, no I/O and no clock (callers pass `now`), so every rule is tested directly.
//!
//! Architecture invariant: this module never touches the network, the disk or the time of day.
//! The core owns the one [`State`] value; the store persists it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{FeedConfig, FirstRun};

/// Unix seconds, UTC.
pub type Unix = i64;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Keyed by the feed's configured URL.
    pub feeds: BTreeMap<String, FeedState>,
    pub articles: BTreeMap<u64, Article>,
    pub next_article: u64,
    /// Keyed by account name: cursors and network session data.
    pub accounts: BTreeMap<String, AccountState>,
    pub conversations: BTreeMap<u64, Conversation>,
    pub next_conversation: u64,
    /// Lookups rebuilt from `conversations` by [`State::reindex`]; never stored.
    #[serde(skip)]
    pub index: crate::inbox::Index,
    /// The articles with an announcement still to make (not posted or skipped yet), rebuilt
    /// by [`State::reindex`]; never stored. The core looks for work after every event, and a
    /// blog's history is hundreds of finished articles: scanning those each time took about
    /// 5 % of a 20-post burst's CPU, and most of an idle poll's.
    #[serde(skip)]
    open: BTreeSet<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedState {
    /// Where the feed is fetched now; differs from the configured URL after a permanent
    /// redirect.
    pub current_url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub baseline_taken: bool,
    /// Every identity (guid/id, else canonical link) ever seen. Never truncated: its size is
    /// bounded by the blog's history, and forgetting an entry would announce it again.
    pub seen_ids: BTreeSet<String>,
    /// Every canonical link ever seen, so that a guid change alone is not a new article.
    pub seen_links: BTreeSet<String>,
    pub newest_seen: Option<Unix>,
    pub last_fetch: Option<Unix>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub failures: u32,
}

impl FeedState {
    /// A copy without the seen-sets, the part that grows with the blog's history.
    fn without_seen(&self) -> FeedState {
        // Destructured whole, so that a new field cannot be forgotten here.
        let FeedState {
            current_url,
            etag,
            last_modified,
            baseline_taken,
            seen_ids: _,
            seen_links: _,
            newest_seen,
            last_fetch,
            last_status,
            last_error,
            failures,
        } = self;
        FeedState {
            current_url: current_url.clone(),
            etag: etag.clone(),
            last_modified: last_modified.clone(),
            baseline_taken: *baseline_taken,
            seen_ids: BTreeSet::new(),
            seen_links: BTreeSet::new(),
            newest_seen: *newest_seen,
            last_fetch: *last_fetch,
            last_status: last_status.clone(),
            last_error: last_error.clone(),
            failures: *failures,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Article {
    /// The configured URL of the feed it came from.
    pub feed: String,
    pub identity: String,
    pub link: String,
    pub title: String,
    pub summary: String,
    pub tags: Vec<String>,
    pub image: Option<String>,
    pub published: Option<Unix>,
    pub first_seen: Unix,
    /// Keyed by account name.
    pub announcements: Announcements,
}

/// An article's announcements by account name, in name order. A sorted `Vec`: an article has
/// one per account, a few at most, where a `BTreeMap` allocates room for eleven (1.5 KB per
/// article, which was most of the daemon's heap with a blog's history in it). Stored exactly
/// as the map it replaced: bincode writes both as a length and the pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Announcements(Vec<(String, Announcement)>);

impl Announcements {
    fn position(&self, account: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(name, _)| name.as_str().cmp(account))
    }

    pub fn get(&self, account: &str) -> Option<&Announcement> {
        self.position(account).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, account: &str) -> Option<&mut Announcement> {
        self.position(account).ok().map(|i| &mut self.0[i].1)
    }

    /// Adds or replaces the account's announcement.
    pub fn insert(&mut self, account: String, announcement: Announcement) {
        match self.position(&account) {
            Ok(i) => self.0[i].1 = announcement,
            Err(i) => self.0.insert(i, (account, announcement)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Announcement)> {
        self.0.iter().map(|(name, a)| (name, a))
    }

    pub fn values(&self) -> impl Iterator<Item = &Announcement> {
        self.0.iter().map(|(_, a)| a)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Announcement> {
        self.0.iter_mut().map(|(_, a)| a)
    }
}

impl<'a> IntoIterator for &'a Announcements {
    type Item = (&'a String, &'a Announcement);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Announcement)>,
        fn(&'a (String, Announcement)) -> (&'a String, &'a Announcement),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, a)| (name, a))
    }
}

/// Like a map's: the account must have one.
impl<K: std::borrow::Borrow<str> + ?Sized> std::ops::Index<&K> for Announcements {
    type Output = Announcement;
    fn index(&self, account: &K) -> &Announcement {
        let account = account.borrow();
        match self.get(account) {
            Some(a) => a,
            None => panic!("no announcement for account {account:?}"),
        }
    }
}

impl FromIterator<(String, Announcement)> for Announcements {
    fn from_iter<I: IntoIterator<Item = (String, Announcement)>>(pairs: I) -> Self {
        let mut all = Announcements::default();
        for (account, announcement) in pairs {
            all.insert(account, announcement);
        }
        all
    }
}

impl<const N: usize> From<[(String, Announcement); N]> for Announcements {
    fn from(pairs: [(String, Announcement); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Serialize for Announcements {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (account, announcement) in &self.0 {
            map.serialize_entry(account, announcement)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Announcements {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Announcements;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of account names to announcements")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                // No capacity from the (untrusted) length: the pairs are pushed as they decode.
                let mut all = Announcements::default();
                while let Some((account, announcement)) = map.next_entry()? {
                    all.insert(account, announcement);
                }
                Ok(all)
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// Derived from (account, feed, identity): the same after any restart, and what the
    /// networks use to make a retried post a no-op.
    pub key: String,
    pub status: AnnStatus,
    /// The text, fixed when the announcement first goes in flight so that every retry
    /// sends exactly the same post.
    pub text: Option<String>,
    pub attempts: u32,
    /// An earlier attempt may have reached the network: the next one must reconcile first.
    pub in_doubt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnnStatus {
    Pending,
    Held {
        reason: HoldReason,
    },
    InFlight {
        since: Unix,
    },
    Posted {
        remote_id: String,
        url: Option<String>,
        at: Unix,
    },
    /// `retry_at: None` waits for a human (`posts retry`).
    Failed {
        error: String,
        retry_at: Option<Unix>,
    },
    Skipped {
        reason: SkipReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldReason {
    /// More new articles at once than `max_new_per_poll`.
    TooMany,
    /// Dated more than `max_age` before the newest article already seen.
    TooOld,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    Baseline,
    Human,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountState {
    /// Network cursors (notification ids, since ids, ...), by name.
    pub cursors: BTreeMap<String, String>,
    /// Network session data (refreshable tokens, resolved endpoints), by name.
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub account: String,
    /// The network's identity of the thread (its root post).
    pub thread: String,
    pub status: ConvStatus,
    /// Oldest first.
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvStatus {
    Open,
    Snoozed { until: Unix },
    Done { at: Unix },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The network's id; empty for an answer not posted yet.
    pub remote_id: String,
    pub author: String,
    pub display_name: String,
    pub text: String,
    pub at: Unix,
    pub url: Option<String>,
    pub visibility: Option<String>,
    pub in_reply_to: Option<String>,
    /// Set for the human's own answers: their way out to the network.
    pub answer: Option<Answer>,
}

impl Message {
    pub fn mine(&self) -> bool {
        self.answer.is_some()
    }
}

/// An answer's journey, with the same intent/outcome protocol as announcements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub key: String,
    /// Pending, InFlight, Posted or Failed.
    pub status: AnnStatus,
    /// Handle of the person answered.
    pub to: String,
    pub attempts: u32,
    pub in_doubt: bool,
}

/// One article as the parser saw it, reduced to what the rules need.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub identity: String,
    pub canonical_link: Option<String>,
    pub link: String,
    pub title: String,
    pub summary: String,
    pub tags: Vec<String>,
    pub image: Option<String>,
    pub published: Option<Unix>,
}

/// What one ingest decided, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    pub baseline: usize,
    pub new: Vec<u64>,
    pub held: Vec<u64>,
    /// Identities and canonical links seen for the first time, for [`State::fetched`].
    pub learned_ids: Vec<String>,
    pub learned_links: Vec<String>,
}

/// The announcement key for (account, feed, identity): stable across restarts.
pub fn announcement_key(account: &str, feed: &str, identity: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [account, feed, identity] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl Article {
    /// Whether an announcement of it is still to be made (or to be decided by a human).
    fn open(&self) -> bool {
        self.announcements
            .values()
            .any(|x| !matches!(x.status, AnnStatus::Posted { .. } | AnnStatus::Skipped { .. }))
    }
}

impl State {
    /// Rebuilds the lookups after loading.
    pub fn reindex(&mut self) {
        self.index = crate::inbox::Index::of(&self.conversations);
        self.open = self.articles.iter().filter(|(_, a)| a.open()).map(|(id, _)| *id).collect();
    }

    /// After a change to article `id`: whether it still has work left.
    fn note(&mut self, id: u64) {
        if self.articles.get(&id).is_some_and(Article::open) {
            self.open.insert(id);
        } else {
            self.open.remove(&id);
        }
    }

    /// The articles with an announcement still to make, oldest id first.
    pub fn open_articles(&self) -> impl Iterator<Item = (u64, &Article)> {
        self.open.iter().filter_map(|id| self.articles.get(id).map(|a| (*id, a)))
    }

    /// Decides which of a successful fetch's items are new and what happens to them
    /// (DESIGN §5): known identities or links are not new (edits, guid churn, link churn);
    /// the first fetch is a baseline; an item far older than the newest seen is held; more
    /// than `max_new_per_poll` at once: the newest go out, the rest are held.
    pub fn ingest(
        &mut self,
        feed: &FeedConfig,
        accounts: &[String],
        items: Vec<Candidate>,
        now: Unix,
    ) -> Ingested {
        let fs = self.feeds.entry(feed.url.clone()).or_default();
        let mut report = Ingested::default();
        let mut fresh: Vec<(usize, Candidate)> = Vec::new();
        for (order, item) in items.into_iter().enumerate() {
            let known = fs.seen_ids.contains(&item.identity)
                || item.canonical_link.as_ref().is_some_and(|l| fs.seen_links.contains(l));
            // Remember both identities either way: a guid that changed while the link stayed
            // (or the reverse) is learned, so the next change is recognised too.
            if fs.seen_ids.insert(item.identity.clone()) {
                report.learned_ids.push(item.identity.clone());
            }
            if let Some(link) = &item.canonical_link {
                if fs.seen_links.insert(link.clone()) {
                    report.learned_links.push(link.clone());
                }
            }
            if !known {
                fresh.push((order, item));
            }
        }
        let newest_before = fs.newest_seen;
        let newest_now = fresh.iter().filter_map(|(_, c)| c.published).max();
        fs.newest_seen = newest_before.max(newest_now);
        let first_run = !fs.baseline_taken;
        fs.baseline_taken = true;

        // Newest first: by date, and for undated items by feed order (feeds list newest first).
        fresh.sort_by(|(oa, a), (ob, b)| b.published.cmp(&a.published).then(oa.cmp(ob)));

        let mut released = 0usize;
        for (_, item) in fresh {
            let status = if first_run {
                match feed.on_first_run {
                    FirstRun::AnnounceLatest(n) if released < n => {
                        released += 1;
                        AnnStatus::Pending
                    }
                    _ => AnnStatus::Skipped { reason: SkipReason::Baseline },
                }
            } else {
                let too_old = match (item.published, newest_before) {
                    (Some(p), Some(newest)) => {
                        p < newest.saturating_sub(feed.max_age.as_secs() as i64)
                    }
                    _ => false,
                };
                if too_old {
                    AnnStatus::Held { reason: HoldReason::TooOld }
                } else if released < feed.max_new_per_poll {
                    released += 1;
                    AnnStatus::Pending
                } else {
                    AnnStatus::Held { reason: HoldReason::TooMany }
                }
            };
            let id = self.add_article(&feed.url, accounts, item, &status, now);
            match status {
                AnnStatus::Pending => report.new.push(id),
                AnnStatus::Held { .. } => report.held.push(id),
                _ => report.baseline += 1,
            }
        }
        report
    }

    fn add_article(
        &mut self,
        feed: &str,
        accounts: &[String],
        item: Candidate,
        status: &AnnStatus,
        now: Unix,
    ) -> u64 {
        self.next_article += 1;
        let id = self.next_article;
        let announcements = accounts
            .iter()
            .map(|account| {
                let ann = Announcement {
                    key: announcement_key(account, feed, &item.identity),
                    status: status.clone(),
                    text: None,
                    attempts: 0,
                    in_doubt: false,
                };
                (account.clone(), ann)
            })
            .collect();
        let article = Article {
            feed: feed.to_owned(),
            identity: item.identity,
            link: item.link,
            title: item.title,
            summary: item.summary,
            tags: item.tags,
            image: item.image,
            published: item.published,
            first_seen: now,
            announcements,
        };
        self.articles.insert(id, article);
        self.note(id);
        id
    }

    /// The next `n` announcements to send on `account`: the oldest pending ones, in order.
    pub fn next_pending(&self, account: &str, n: usize) -> Vec<u64> {
        let mut pending: Vec<(Unix, u64)> = self
            .open_articles()
            .filter(|(_, a)| {
                a.announcements.get(account).is_some_and(|x| x.status == AnnStatus::Pending)
            })
            .map(|(id, a)| (a.published.unwrap_or(a.first_seen), id))
            .collect();
        pending.sort_unstable();
        pending.into_iter().take(n).map(|(_, id)| id).collect()
    }

    /// The account's announcement in flight that goes out first: the oldest, as they were
    /// begun by [`State::next_pending`].
    pub fn next_in_flight(&self, account: &str) -> Option<u64> {
        self.open_articles()
            .filter(|(_, a)| {
                a.announcements
                    .get(account)
                    .is_some_and(|x| matches!(x.status, AnnStatus::InFlight { .. }))
            })
            .min_by_key(|(id, a)| (a.published.unwrap_or(a.first_seen), *id))
            .map(|(id, _)| id)
    }

    /// Every announcement left in flight, e.g. by a crash: each is in doubt.
    pub fn in_flight(&self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for (id, a) in self.open_articles() {
            for (account, ann) in &a.announcements {
                if matches!(ann.status, AnnStatus::InFlight { .. }) {
                    out.push((id, account.clone()));
                }
            }
        }
        out
    }

    pub fn announcement_mut(&mut self, article: u64, account: &str) -> Option<&mut Announcement> {
        self.articles.get_mut(&article)?.announcements.get_mut(account)
    }

    /// Pending → InFlight with the text fixed. Returns false if it was not pending.
    pub fn begin(&mut self, article: u64, account: &str, text: String, now: Unix) -> bool {
        match self.announcement_mut(article, account) {
            Some(ann) if ann.status == AnnStatus::Pending => {
                ann.status = AnnStatus::InFlight { since: now };
                // A text fixed by an earlier attempt stays: a retry must send the same post.
                ann.text.get_or_insert(text);
                ann.attempts += 1;
                true
            }
            _ => false,
        }
    }

    /// In flight → pending again, for an announcement that never reached a worker (begun
    /// with its batch, and the daemon stops): the next start sends it without looking for
    /// it first. False if it was not in flight, or is in doubt.
    pub fn unbegin(&mut self, article: u64, account: &str) -> bool {
        match self.announcement_mut(article, account) {
            Some(ann) if matches!(ann.status, AnnStatus::InFlight { .. }) && !ann.in_doubt => {
                ann.status = AnnStatus::Pending;
                ann.attempts = ann.attempts.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// Records what the network said about an in-flight announcement.
    pub fn finish(&mut self, article: u64, account: &str, outcome: Outcome, now: Unix) {
        let Some(ann) = self.announcement_mut(article, account) else {
            return;
        };
        if !matches!(ann.status, AnnStatus::InFlight { .. }) {
            return;
        }
        match outcome {
            Outcome::Posted { remote_id, url } => {
                ann.status = AnnStatus::Posted { remote_id, url, at: now };
                ann.in_doubt = false;
            }
            Outcome::Retry { error, after, in_doubt } => {
                ann.in_doubt |= in_doubt;
                let wait = after.unwrap_or_else(|| backoff(ann.attempts));
                ann.status = AnnStatus::Failed { error, retry_at: Some(now + wait) };
            }
            Outcome::GiveUp { error } => {
                ann.status = AnnStatus::Failed { error, retry_at: None };
            }
        }
        self.note(article);
    }

    /// What a fetch changed, after [`State::ingest`] (`from`: `next_article` before it), as
    /// a [`Change`] for the journal: the feed's state with only what it learned in its
    /// seen-sets, and the articles it added.
    pub fn fetched(
        &self,
        feed: &str,
        learned_ids: Vec<String>,
        learned_links: Vec<String>,
        from: u64,
    ) -> Change {
        let mut state = self.feeds.get(feed).map(FeedState::without_seen).unwrap_or_default();
        state.seen_ids = learned_ids.into_iter().collect();
        state.seen_links = learned_links.into_iter().collect();
        let articles = self.articles.range(from + 1..).map(|(id, a)| (*id, a.clone())).collect();
        Change::Fetched { feed: feed.to_owned(), state, articles }
    }

    /// Replays one journaled change (see [`Change`]).
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Fetched { feed, mut state, articles } => {
                let fs = self.feeds.entry(feed).or_default();
                state.seen_ids.append(&mut fs.seen_ids);
                state.seen_links.append(&mut fs.seen_links);
                *fs = state;
                for (id, article) in articles {
                    self.next_article = self.next_article.max(id);
                    self.articles.insert(id, article);
                    self.note(id);
                }
            }
            Change::Begin { article, account, text, at } => {
                self.begin(article, &account, text, at);
            }
            Change::Finish { article, account, outcome, at } => {
                self.finish(article, &account, outcome, at);
            }
        }
    }

    /// Failed announcements whose retry time has come go back to pending.
    pub fn due_retries(&mut self, now: Unix) -> usize {
        let mut n = 0;
        for id in &self.open {
            let Some(a) = self.articles.get_mut(id) else { continue };
            for ann in a.announcements.values_mut() {
                if let AnnStatus::Failed { retry_at: Some(t), .. } = ann.status {
                    if t <= now {
                        ann.status = AnnStatus::Pending;
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// The earliest automatic retry, for the core's timer.
    pub fn next_retry(&self) -> Option<Unix> {
        self.open_articles()
            .flat_map(|(_, a)| a.announcements.values())
            .filter_map(|ann| match ann.status {
                AnnStatus::Failed { retry_at, .. } => retry_at,
                _ => None,
            })
            .min()
    }

    /// A human's decision about an article; returns how many announcements it changed.
    pub fn act(&mut self, article: u64, action: Action) -> Result<usize, ActError> {
        let a = self.articles.get_mut(&article).ok_or(ActError::NoSuchArticle(article))?;
        let mut changed = 0;
        for ann in a.announcements.values_mut() {
            let next = match (&ann.status, action) {
                (AnnStatus::Held { .. }, Action::Approve) => Some(AnnStatus::Pending),
                (AnnStatus::Failed { .. }, Action::Retry) => Some(AnnStatus::Pending),
                (
                    AnnStatus::Held { .. } | AnnStatus::Pending | AnnStatus::Failed { .. },
                    Action::Skip,
                ) => Some(AnnStatus::Skipped { reason: SkipReason::Human }),
                // A baseline article can still be announced on purpose.
                (AnnStatus::Skipped { reason: SkipReason::Baseline }, Action::Approve) => {
                    Some(AnnStatus::Pending)
                }
                _ => None,
            };
            if let Some(next) = next {
                ann.status = next;
                changed += 1;
            }
        }
        if changed == 0 {
            return Err(ActError::NothingToDo { article, action });
        }
        self.note(article);
        Ok(changed)
    }
}

/// One change to the state, exactly as the core made it: the store journals these between
/// full saves (a burst of posts appends a few hundred bytes per post instead of rewriting
/// the whole state), and loading replays them through [`State::apply`]. Part of the
/// journal's format: append-only, like the state types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// [`State::begin`]: pending → in flight, with the text fixed.
    Begin { article: u64, account: String, text: String, at: Unix },
    /// [`State::finish`]: what the network said.
    Finish { article: u64, account: String, outcome: Outcome, at: Unix },
    /// [`State::fetched`]: a fetch's result, replayed as it was decided (not decided again).
    Fetched { feed: String, state: FeedState, articles: Vec<(u64, Article)> },
}

/// What a network said about one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Posted {
        remote_id: String,
        url: Option<String>,
    },
    /// Try again later; `in_doubt` if the attempt may have been posted.
    Retry {
        error: String,
        after: Option<i64>,
        in_doubt: bool,
    },
    /// Retrying cannot help (rejected content, revoked token): wait for a human.
    GiveUp {
        error: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Skip,
    Retry,
}

impl Action {
    fn object(self) -> &'static str {
        match self {
            Action::Approve => "approve (nothing is held)",
            Action::Skip => "skip (all are posted or skipped)",
            Action::Retry => "retry (nothing failed)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    #[error("no article a{0}")]
    NoSuchArticle(u64),
    #[error("article a{article} has no announcement to {}", action.object())]
    NothingToDo { article: u64, action: Action },
}

/// Seconds to wait after `attempts` failed attempts: 5 s doubling up to an hour. The first
/// retry comes soon because most failures are a dropped connection; networks that want a
/// longer pause say so (Retry-After, rate-limit resets) and are obeyed instead.
pub fn backoff(attempts: u32) -> i64 {
    5i64.saturating_mul(1 << attempts.saturating_sub(1).min(10)).min(3600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn feed() -> FeedConfig {
        FeedConfig {
            url: "https://blog/feed".into(),
            interval: Duration::from_secs(600),
            template: "{title} {url}".into(),
            on_first_run: FirstRun::Baseline,
            max_new_per_poll: 3,
            max_age: Duration::from_secs(7 * 86_400),
            max_bytes: 1 << 20,
        }
    }

    fn item(n: i64) -> Candidate {
        Candidate {
            identity: format!("guid-{n}"),
            canonical_link: Some(format!("https://blog/{n}")),
            link: format!("https://blog/{n}?utm_source=x"),
            title: format!("Post {n}"),
            summary: String::new(),
            tags: vec![],
            image: None,
            published: Some(1_000_000 + n * 3600),
        }
    }

    fn accounts() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn statuses(s: &State, account: &str) -> Vec<AnnStatus> {
        s.articles.values().map(|a| a.announcements[account].status.clone()).collect()
    }

    #[test]
    fn first_fetch_is_a_baseline() {
        let mut s = State::default();
        let r = s.ingest(&feed(), &accounts(), (1..=5).map(item).collect(), 10);
        assert_eq!(r.baseline, 5);
        assert!(r.new.is_empty());
        assert!(statuses(&s, "a")
            .iter()
            .all(|st| *st == AnnStatus::Skipped { reason: SkipReason::Baseline }));
        assert_eq!(s.next_pending("a", 8), Vec::<u64>::new());
    }

    #[test]
    fn announce_latest_releases_the_newest_n() {
        let mut s = State::default();
        let mut f = feed();
        f.on_first_run = FirstRun::AnnounceLatest(1);
        let r = s.ingest(&f, &accounts(), (1..=5).map(item).collect(), 10);
        assert_eq!(r.new.len(), 1);
        assert_eq!(s.articles[&r.new[0]].identity, "guid-5");
    }

    #[test]
    fn new_items_edits_and_churn() {
        let mut s = State::default();
        s.ingest(&feed(), &accounts(), (1..=3).map(item).collect(), 10);
        let mut items: Vec<_> = (1..=5).map(item).collect();
        items[0].title = "Post 1, edited".into(); // edit: same guid
        items[1].identity = "new-guid-for-2".into(); // guid churn: same link
        items[2].canonical_link = Some("https://blog/moved-3".into()); // link churn: same guid
        let r = s.ingest(&feed(), &accounts(), items, 20);
        assert_eq!(r.new.len(), 2, "only 4 and 5 are new: {r:?}");
        // The churned guid was learned: changing the link of item 2 now is still not new.
        let mut again = item(2);
        again.identity = "new-guid-for-2".into();
        again.canonical_link = Some("https://blog/elsewhere".into());
        assert!(s.ingest(&feed(), &accounts(), vec![again], 30).new.is_empty());
    }

    #[test]
    fn a_burst_releases_the_newest_and_holds_the_rest() {
        let mut s = State::default();
        s.ingest(&feed(), &accounts(), vec![item(0)], 10);
        let r = s.ingest(&feed(), &accounts(), (1..=10).map(item).collect(), 20);
        assert_eq!(r.new.len(), 3);
        assert_eq!(r.held.len(), 7);
        let released: Vec<_> = r.new.iter().map(|id| s.articles[id].identity.clone()).collect();
        assert_eq!(released, ["guid-10", "guid-9", "guid-8"]);
        assert_eq!(s.act(r.held[0], Action::Approve), Ok(2));
        assert_eq!(
            s.act(r.held[0], Action::Approve),
            Err(ActError::NothingToDo { article: r.held[0], action: Action::Approve })
        );
        assert_eq!(s.act(r.held[1], Action::Skip), Ok(2));
        assert_eq!(s.act(999, Action::Skip), Err(ActError::NoSuchArticle(999)));
    }

    #[test]
    fn a_backdated_item_is_held_not_dropped() {
        let mut s = State::default();
        s.ingest(&feed(), &accounts(), vec![item(1000)], 10);
        let mut old = item(1);
        old.published = Some(1_000_000 + 1000 * 3600 - 8 * 86_400);
        let r = s.ingest(&feed(), &accounts(), vec![old], 20);
        assert_eq!(r.held.len(), 1);
        assert_eq!(
            s.articles[&r.held[0]].announcements["a"].status,
            AnnStatus::Held { reason: HoldReason::TooOld }
        );
    }

    #[test]
    fn duplicate_items_in_one_fetch_make_one_article() {
        let mut s = State::default();
        s.ingest(&feed(), &accounts(), vec![item(0)], 10);
        let r = s.ingest(&feed(), &accounts(), vec![item(1), item(1)], 20);
        assert_eq!(r.new.len(), 1);
    }

    #[test]
    fn an_announcement_never_sent_can_be_put_back_but_not_one_in_doubt() {
        let mut s = State::default();
        s.ingest(&feed(), &accounts(), vec![item(0)], 10);
        let id = s.ingest(&feed(), &accounts(), vec![item(1)], 20).new[0];
        assert!(!s.unbegin(id, "a"), "not in flight");
        assert!(s.begin(id, "a", "text".into(), 30));
        assert!(s.unbegin(id, "a"));
        let ann = &s.articles[&id].announcements["a"];
        assert_eq!((&ann.status, ann.attempts), (&AnnStatus::Pending, 0));
        assert_eq!(s.next_pending("a", 8), vec![id]);
        assert!(s.begin(id, "a", "other".into(), 40));
        assert_eq!(s.articles[&id].announcements["a"].text.as_deref(), Some("text"));
        s.announcement_mut(id, "a").unwrap().in_doubt = true;
        assert!(!s.unbegin(id, "a"), "it may have been sent");
    }

    #[test]
    fn the_post_cycle_keeps_its_text_and_key() {
        let mut s = State::default();
        s.ingest(&feed(), &accounts(), vec![item(0)], 10);
        let id = s.ingest(&feed(), &accounts(), vec![item(1)], 20).new[0];
        let key = s.articles[&id].announcements["a"].key.clone();
        assert_eq!(key, announcement_key("a", "https://blog/feed", "guid-1"));
        assert_eq!(s.next_pending("a", 8), vec![id]);
        assert!(s.begin(id, "a", "first text".into(), 30));
        assert!(!s.begin(id, "a", "again".into(), 30));
        assert_eq!(s.in_flight(), vec![(id, "a".to_owned())]);
        s.finish(id, "a", Outcome::Retry { error: "503".into(), after: None, in_doubt: true }, 40);
        assert_eq!(s.next_retry(), Some(40 + backoff(1)));
        assert_eq!(s.due_retries(40), 0);
        assert_eq!(s.due_retries(40 + backoff(1)), 1);
        assert!(s.begin(id, "a", "different text".into(), 100));
        let ann = &s.articles[&id].announcements["a"];
        assert_eq!(ann.text.as_deref(), Some("first text"));
        assert!(ann.in_doubt);
        s.finish(id, "a", Outcome::Posted { remote_id: "1".into(), url: None }, 110);
        let ann = &s.articles[&id].announcements["a"];
        assert!(matches!(ann.status, AnnStatus::Posted { at: 110, .. }));
        assert!(!ann.in_doubt);
        assert_eq!(ann.attempts, 2);
    }

    /// Replaying a fetch's journaled change gives exactly the state the fetch left: new
    /// articles, learned identities (guid churn included), the feed's fields.
    #[test]
    fn a_fetched_change_replays_the_ingest() {
        let mut s = State::default();
        s.ingest(&feed(), &accounts(), (1..=3).map(item).collect(), 10);
        let before = s.clone();
        let from = s.next_article;
        let mut items: Vec<_> = (1..=8).map(item).collect();
        items[1].identity = "new-guid-for-2".into();
        let r = s.ingest(&feed(), &accounts(), items, 20);
        let fs = s.feeds.get_mut("https://blog/feed").unwrap();
        fs.etag = Some("\"v2\"".into());
        fs.last_fetch = Some(20);
        assert_eq!((r.new.len(), r.held.len(), r.learned_ids.len()), (3, 2, 6));
        let change = s.fetched("https://blog/feed", r.learned_ids, r.learned_links, from);
        let Change::Fetched { state, articles, .. } = &change else { unreachable!() };
        assert_eq!((state.seen_ids.len(), articles.len()), (6, 5), "only what is new");
        let mut replayed = before;
        replayed.apply(change);
        assert_eq!(replayed, s);
    }

    /// The index of open articles is what a full scan would find, after any sequence of the
    /// steps that change an announcement.
    #[test]
    fn the_open_index_follows_every_change() {
        let mut s = State::default();
        s.ingest(&feed(), &accounts(), (0..5).map(item).collect(), 1);
        let mut seed = 0x2545_f491_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..2000 {
            let now = 10 + step;
            let id = 1 + next(s.next_article.max(1));
            let account = ["a", "b"][next(2) as usize];
            match next(8) {
                0 => {
                    let items = (0..next(6)).map(|_| item(next(60) as i64)).collect();
                    s.ingest(&feed(), &accounts(), items, now);
                }
                1 | 2 => {
                    s.begin(id, account, "text".into(), now);
                }
                3 => {
                    let outcome = match next(3) {
                        0 => Outcome::Posted { remote_id: step.to_string(), url: None },
                        1 => Outcome::Retry { error: "503".into(), after: None, in_doubt: false },
                        _ => Outcome::GiveUp { error: "422".into() },
                    };
                    s.finish(id, account, outcome, now);
                }
                4 => {
                    s.due_retries(now + next(100) as i64);
                }
                _ => {
                    let action = [Action::Approve, Action::Skip, Action::Retry][next(3) as usize];
                    let _ = s.act(id, action);
                }
            }
            let mut scanned = s.clone();
            scanned.reindex();
            assert_eq!(s.open, scanned.open, "after step {step}");
        }
        assert!(!s.open.is_empty() && s.open.len() < s.articles.len(), "{:?}", s.open);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), 5);
        assert_eq!(backoff(2), 10);
        assert_eq!(backoff(5), 80);
        assert_eq!(backoff(20), 3600);
    }
}
