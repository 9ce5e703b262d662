//! The networks an account can live on, behind one trait, and the per-account worker that
//! drives a network for the core.
//!
//! Architecture invariant: network code never touches the state. It receives a [`Post`]
//! (everything needed, including the announcement key) and answers with a result; the core
//! records it.

pub mod outbox;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::Event;
use crate::fit::Rules;
use crate::state::Outcome;

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
}

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
}

/// Runs one account: starts it, then carries out jobs one at a time, reporting each result
/// to the core. One job at a time keeps at most one announcement per account in doubt.
pub async fn run_worker<N: Network>(
    account: String,
    mut network: N,
    mut jobs: mpsc::Receiver<Job>,
    core: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_secs(5);
    let info = loop {
        let started = tokio::select! {
            r = network.start() => r,
            () = cancel.cancelled() => return,
        };
        match started {
            Ok(info) => break info,
            Err(err) => {
                tracing::warn!(account = %account, "account cannot start: {err}");
                let health = err.to_string();
                if core
                    .send(Event::AccountHealth {
                        account: account.clone(),
                        health,
                        info: None,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(600));
            }
        }
    };
    let ready = Event::AccountHealth {
        account: account.clone(),
        health: "ok".into(),
        info: Some(info),
    };
    if core.send(ready).await.is_err() {
        return;
    }
    loop {
        let job = tokio::select! {
            j = jobs.recv() => match j { Some(j) => j, None => return },
            () = cancel.cancelled() => return,
        };
        match job {
            Job::Announce(post) => {
                // A cancelled attempt is simply left in flight: the next start reconciles it.
                let outcome = tokio::select! {
                    o = announce(&mut network, &post) => o,
                    () = cancel.cancelled() => return,
                };
                let event = Event::Announced {
                    article: post.article,
                    account: account.clone(),
                    outcome,
                };
                if core.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn announce<N: Network>(network: &mut N, post: &Post) -> Outcome {
    if post.in_doubt {
        match network.find_post(post).await {
            Ok(Some(found)) => {
                return Outcome::Posted {
                    remote_id: found.remote_id,
                    url: found.url,
                };
            }
            Ok(None) => {}
            Err(err) => return outcome_of(err),
        }
    }
    match network.post(post).await {
        Ok(posted) => Outcome::Posted {
            remote_id: posted.remote_id,
            url: posted.url,
        },
        Err(err) => outcome_of(err),
    }
}

fn outcome_of(err: NetError) -> Outcome {
    match err {
        NetError::Transient {
            message,
            retry_after,
        } => Outcome::Retry {
            error: message,
            after: retry_after.map(|d| d.as_secs() as i64),
            in_doubt: false,
        },
        NetError::InDoubt { message } => Outcome::Retry {
            error: message,
            after: None,
            in_doubt: true,
        },
        e @ (NetError::Rejected(_) | NetError::Unauthorized(_)) => Outcome::GiveUp {
            error: e.to_string(),
        },
    }
}
