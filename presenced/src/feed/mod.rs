//! Watching one feed: fetch on its interval (or when asked to poll), parse, and report to the
//! core. Parsing itself lives in the `presence-feed` crate; deciding what is new lives in
//! `state`. A watcher keeps no state of its own beyond its validators and backoff.

pub mod fetch;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::FeedConfig;
use crate::core::{now, Event};
use crate::state::{Candidate, Unix};
use fetch::{Fetched, Validators};

#[derive(Debug)]
pub struct FeedReport {
    pub at: Unix,
    /// Where the feed is fetched from now: a permanent redirect, even one answered with a
    /// 304, moves it.
    pub current_url: String,
    pub status: String,
    pub result: FeedResult,
    pub next_fetch: Unix,
}

#[derive(Debug)]
pub enum FeedResult {
    NotModified,
    Items { items: Vec<Candidate>, etag: Option<String>, last_modified: Option<String> },
    Failed { error: String },
}

#[derive(Debug)]
pub struct Watcher {
    pub feed: FeedConfig,
    pub current_url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub failures: u32,
    pub http: reqwest::Client,
    pub core: mpsc::Sender<Event>,
    pub poll: watch::Receiver<u64>,
    pub cancel: CancellationToken,
}

impl Watcher {
    pub async fn run(mut self) {
        if self.current_url.is_empty() {
            self.current_url = self.feed.url.clone();
        }
        loop {
            let (status, result, wait) = self.check().await;
            if self.cancel.is_cancelled() {
                // Stopping or reloading: a cut-short fetch is no news for the core.
                return;
            }
            let report = FeedReport {
                at: now(),
                current_url: self.current_url.clone(),
                status,
                result,
                next_fetch: now() + wait.as_secs() as i64,
            };
            let event = Event::Feed { feed: self.feed.url.clone(), report };
            if self.core.send(event).await.is_err() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = self.poll.changed() => if changed.is_err() { return },
                () = self.cancel.cancelled() => return,
            }
        }
    }

    /// One fetch and parse; returns the status, the result and how long to wait.
    async fn check(&mut self) -> (String, FeedResult, Duration) {
        let validators =
            Validators { etag: self.etag.clone(), last_modified: self.last_modified.clone() };
        let fetched = tokio::select! {
            f = fetch::fetch(&self.http, &self.current_url, &validators, self.feed.max_bytes) => f,
            () = self.cancel.cancelled() => {
                return ("cancelled".into(), FeedResult::Failed { error: "cancelled".into() }, Duration::ZERO)
            }
        };
        let failed =
            |me: &mut Self, status: String, error: String, retry_after: Option<Duration>| {
                me.failures += 1;
                let wait = retry_after.unwrap_or_else(|| me.backoff());
                (status, FeedResult::Failed { error }, wait)
            };
        let fetch = match fetched {
            Ok(f) => f,
            Err(e) => {
                let status = match &e {
                    fetch::FetchError::Status { status, .. } => status.to_string(),
                    _ => "error".to_owned(),
                };
                let retry = e.retry_after();
                return failed(self, status, format!("{}: {e}", self.current_url), retry);
            }
        };
        if let Some(to) = &fetch.moved_to {
            self.current_url = to.clone();
        }
        match fetch.fetched {
            Fetched::NotModified => {
                self.failures = 0;
                (fetch.status, FeedResult::NotModified, self.feed.interval)
            }
            Fetched::Body { bytes, content_type, validators, url } => {
                let parsed = tokio::task::spawn_blocking(move || {
                    let parsed = presence_feed::parse(&bytes, &url, content_type.as_deref());
                    drop(bytes);
                    parsed
                })
                .await;
                let feed = match parsed {
                    Ok(Ok(feed)) => feed,
                    Ok(Err(e)) => {
                        let error = format!("{}: {e}", self.current_url);
                        return failed(self, fetch.status, error, None);
                    }
                    Err(e) => {
                        let error = format!("{}: parser failed: {e}", self.current_url);
                        return failed(self, fetch.status, error, None);
                    }
                };
                for warning in &feed.warnings {
                    tracing::warn!(feed = %self.feed.url, "{warning}");
                }
                self.failures = 0;
                self.etag = validators.etag.clone();
                self.last_modified = validators.last_modified.clone();
                let items = candidates(feed.items);
                let result = FeedResult::Items {
                    items,
                    etag: validators.etag,
                    last_modified: validators.last_modified,
                };
                (fetch.status, result, self.feed.interval)
            }
        }
    }

    /// Exponential from 30 s, with jitter so that many feeds on one host spread out, never
    /// longer than the feed's own interval.
    fn backoff(&self) -> Duration {
        let base = 30u64.saturating_mul(1 << self.failures.min(10));
        let jitter = fastrand::u64(0..=base / 4);
        Duration::from_secs(base + jitter).min(self.feed.interval)
    }
}

/// The parser's items as the rules see them. A link shared by several items of one fetch
/// (a podcast whose episodes all point at the show's page) identifies none of them: such
/// items without a guid are told apart by their title and date instead, and the shared
/// link is not remembered, or every later episode would look already seen.
fn candidates(items: Vec<presence_feed::Item>) -> Vec<Candidate> {
    let canonical: Vec<Option<String>> =
        items.iter().map(|i| i.link.as_deref().and_then(presence_feed::canonical_link)).collect();
    let mut links: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for link in canonical.iter().flatten() {
        *links.entry(link).or_default() += 1;
    }
    let shared: Vec<bool> = canonical
        .iter()
        .map(|l| l.as_deref().is_some_and(|l| links.get(l).copied().unwrap_or(0) > 1))
        .collect();
    drop(links);
    items
        .into_iter()
        .zip(canonical)
        .zip(shared)
        .filter_map(|((item, canonical_link), shared)| candidate(item, canonical_link, shared))
        .collect()
}

fn candidate(
    item: presence_feed::Item,
    mut canonical_link: Option<String>,
    shared_link: bool,
) -> Option<Candidate> {
    let mut identity = item.identity()?;
    if shared_link {
        if item.id.is_none() {
            let published = item.published.map(|p| p.to_string()).unwrap_or_default();
            let key = crate::state::announcement_key(&identity, &item.title, &published);
            identity = format!("urn:presence:shared-link:{key}");
        }
        canonical_link = None;
    }
    Some(Candidate {
        identity,
        canonical_link,
        link: item.link.unwrap_or_default(),
        title: item.title,
        summary: item.summary,
        tags: item.tags,
        image: item.image,
        published: item.published.or(item.updated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(title: &str, link: &str, id: Option<&str>) -> presence_feed::Item {
        presence_feed::Item {
            id: id.map(str::to_owned),
            link: Some(link.to_owned()),
            title: title.to_owned(),
            summary: String::new(),
            tags: vec![],
            published: Some(1),
            updated: None,
            image: None,
        }
    }

    #[test]
    fn a_link_shared_by_several_items_identifies_none() {
        let c = candidates(vec![
            item("Episode 2", "https://pod/show", None),
            item("Episode 1", "https://pod/show", None),
            item("Episode 0", "https://pod/show", Some("guid-0")),
            item("Post", "https://pod/post", None),
        ]);
        assert_ne!(c[0].identity, c[1].identity);
        assert!(c[0].identity.starts_with("urn:presence:shared-link:"));
        assert_eq!(c[2].identity, "guid-0");
        assert!(c[..3].iter().all(|c| c.canonical_link.is_none()));
        assert_eq!(c[3].identity, "https://pod/post");
        assert_eq!(c[3].canonical_link.as_deref(), Some("https://pod/post"));
        // Stable across fetches.
        let again = candidates(vec![
            item("Episode 2", "https://pod/show", None),
            item("Episode 1", "https://pod/show", None),
        ]);
        assert_eq!(again[0].identity, c[0].identity);
    }
}
