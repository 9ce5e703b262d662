//! The notification stream: server-sent events from
//! `GET /api/v1/streaming/user/notification`, turned into wake-ups for the account's worker.
//!
//! The stream is only a doorbell. Mastodon does not replay events after a reconnect, and an
//! event's payload could be cut by the line limit, so the worker always reads what arrived
//! over REST from its cursor; the stream only makes that happen sooner. For the same reason
//! a wake-up is sent after every (re)connect: whatever came while the stream was down is
//! then fetched.
//!
//! Wire format (Mastodon's `streaming/index.js`): the body opens with the comment `:)`, a
//! `:thump` comment comes every 15 seconds, and each event is `event: <name>`, `data: <one
//! line of JSON>` and an empty line. A stream that stays silent for three heartbeats is
//! taken for dead (a NAT or proxy may drop an idle connection without telling either side).

use std::time::Duration;

use reqwest::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::mpsc;
use tokio::time::Instant;
use url::Url;

use crate::config::Secret;

/// Silence after which the connection is considered dead: three missed heartbeats.
pub(super) const SILENCE: Duration = Duration::from_secs(45);
/// Longest line kept. A notification carries a whole status (with its account, media and
/// card) on one line: typically a few KiB, never near this.
const MAX_LINE: usize = 1024 * 1024;
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A connection that lived this long was healthy: the next failure starts backing off anew.
const HEALTHY: Duration = Duration::from_secs(60);
/// Upper bound on one connection. The shared client's 60 s total timeout is replaced for
/// this request, and a connection renewed hourly costs one REST fetch.
const MAX_CONNECTION: Duration = Duration::from_secs(3600);
const PATH: [&str; 5] = ["api", "v1", "streaming", "user", "notification"];

#[derive(Debug)]
pub(super) struct Config {
    pub account: String,
    /// Bases to connect to, tried in turn after failures: the streaming server the instance
    /// names, then the main host (which serves the stream itself on small instances).
    pub candidates: Vec<Url>,
    pub token: Secret,
    pub http: reqwest::Client,
    pub silence: Duration,
}

/// Starts the stream task; `None` outside a Tokio runtime or without a place to connect.
pub(super) fn spawn(config: Config) -> Option<mpsc::Receiver<()>> {
    if config.candidates.is_empty() {
        return None;
    }
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    // One pending wake-up is enough: the fetch it causes reads everything that arrived.
    let (tx, rx) = mpsc::channel(1);
    runtime.spawn(run(config, tx));
    Some(rx)
}

/// Why a connection ended.
#[derive(Debug)]
struct Ended {
    /// Whether the server accepted the stream before it ended.
    connected: bool,
    message: String,
}

async fn run(config: Config, tx: mpsc::Sender<()>) {
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0u32;
    let mut candidate = 0usize;
    loop {
        let base = &config.candidates[candidate % config.candidates.len()];
        let started = Instant::now();
        let ended = tokio::select! {
            e = connection(&config, base, &tx) => e,
            () = tx.closed() => return,
        };
        if tx.is_closed() {
            return;
        }
        if started.elapsed() >= HEALTHY {
            backoff = MIN_BACKOFF;
            failures = 0;
        }
        if !ended.connected {
            candidate += 1;
        }
        failures += 1;
        // The first failure after a healthy stream is news; a server that stays down is not,
        // every time.
        if failures == 1 || failures % 10 == 0 {
            tracing::info!(account = %config.account, "mastodon stream: {}; reconnecting", ended.message);
        } else {
            tracing::debug!(account = %config.account, "mastodon stream: {}; reconnecting", ended.message);
        }
        let half = backoff.as_millis() as u64 / 2;
        let wait = Duration::from_millis(fastrand::u64(half..=half * 2));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection, until it fails, goes silent or is closed.
async fn connection(config: &Config, base: &Url, tx: &mpsc::Sender<()>) -> Ended {
    let fail = |connected: bool, message: String| Ended { connected, message };
    let Ok(url) = super::endpoint(base, &PATH) else {
        return fail(false, format!("{base}: not a base URL"));
    };
    let Ok(mut auth) =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", config.token.expose()))
    else {
        return fail(false, "the token is not a valid header value".into());
    };
    auth.set_sensitive(true);
    let sent = config
        .http
        .get(url.clone())
        .header(AUTHORIZATION, auth)
        .header(ACCEPT, "text/event-stream")
        // A compressed stream may sit in a decoder's buffer instead of waking anyone.
        .header(ACCEPT_ENCODING, "identity")
        .timeout(MAX_CONNECTION)
        .send();
    let mut response = match tokio::time::timeout(config.silence, sent).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(false, format!("{url}: {}", super::describe(&e))),
        Err(_) => return fail(false, format!("{url}: no answer")),
    };
    let status = response.status();
    if !status.is_success() {
        return fail(false, format!("{url}: HTTP {status}"));
    }
    let event_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if !event_stream {
        return fail(false, format!("{url}: not an event stream"));
    }
    tracing::debug!(account = %config.account, "mastodon stream connected to {url}");
    nudge(tx);
    let mut parser = Parser::default();
    let mut items = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(config.silence, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return fail(true, "closed by the server".into()),
            Ok(Err(e)) => return fail(true, super::describe(&e)),
            Err(_) => return fail(true, format!("silent for {:?}", config.silence)),
        };
        parser.push(&chunk, &mut items);
        if items.drain(..).any(|item| item.wakes()) {
            nudge(tx);
        }
    }
}

fn nudge(tx: &mpsc::Sender<()>) {
    // Full means a wake-up is already waiting; closed ends the task at its next check.
    let _ = tx.try_send(());
}

/// One thing read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// A comment line (`:)`, `:thump`), without the colon.
    Comment(String),
    /// A complete event; `data` is `None` when it was too long to keep.
    Event { name: String, data: Option<String> },
}

impl Item {
    /// Whether this item means "there may be a new mention".
    pub(super) fn wakes(&self) -> bool {
        let Item::Event { name, data } = self else {
            return false;
        };
        match name.as_str() {
            "notification" => {
                #[derive(serde::Deserialize)]
                struct Kind {
                    #[serde(rename = "type")]
                    kind: Option<String>,
                }
                // Favourites, boosts and follows arrive here too and need no fetch; anything
                // that cannot be read is fetched to be safe.
                match data.as_deref().and_then(|d| serde_json::from_str::<Kind>(d).ok()) {
                    Some(Kind { kind: Some(k) }) => matches!(k.as_str(), "mention" | "quote"),
                    _ => true,
                }
            }
            // Mastodon 4.3+: notifications were merged after a filter change.
            "notifications_merged" => true,
            _ => false,
        }
    }
}

/// An incremental parser for `text/event-stream` (the WHATWG rules that matter here: lines
/// end in LF, CRLF or CR; `:` starts a comment; `data` lines join with LF; an empty line ends
/// an event; a field without a colon has an empty value). Lines longer than [`MAX_LINE`] are
/// dropped, and the event they belong to is reported without its data.
#[derive(Debug, Default)]
pub(super) struct Parser {
    line: Vec<u8>,
    /// The current line went over the limit; the rest of it is skipped.
    overlong: bool,
    /// The last byte was a CR, so an LF right after it ends nothing.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    data_lost: bool,
}

impl Parser {
    pub(super) fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Item>) {
        if chunk.is_empty() {
            return;
        }
        if std::mem::take(&mut self.after_cr) && chunk[0] == b'\n' {
            chunk = &chunk[1..];
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.append(&chunk[..end]);
            self.line_done(out);
            let crlf = chunk[end] == b'\r' && chunk.get(end + 1) == Some(&b'\n');
            if chunk[end] == b'\r' && end + 1 == chunk.len() {
                self.after_cr = true;
            }
            chunk = &chunk[end + if crlf { 2 } else { 1 }..];
        }
        self.append(chunk);
    }

    fn append(&mut self, part: &[u8]) {
        if self.overlong {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE {
            self.overlong = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn line_done(&mut self, out: &mut Vec<Item>) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.overlong) {
            // Almost certainly a data line; either way the event cannot be trusted whole.
            self.data_lost = true;
            return;
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if let Some(comment) = line.strip_prefix(':') {
            out.push(Item::Comment(comment.to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_LINE {
                    self.data_lost = true;
                } else {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                self.has_data = true;
            }
            // `id` and `retry` matter to browsers' reconnection, which is done here instead.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Item>) {
        let name = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        let lost = std::mem::take(&mut self.data_lost);
        if !std::mem::take(&mut self.has_data) && !lost {
            return;
        }
        out.push(Item::Event {
            name: if name.is_empty() { "message".into() } else { name },
            data: (!lost).then_some(data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Item> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out);
        }
        out
    }

    fn event(name: &str, data: &str) -> Item {
        Item::Event { name: name.into(), data: Some(data.into()) }
    }

    #[test]
    fn preamble_heartbeat_and_events() {
        let items = parse(&[
            b":)\n:thump\nevent: notification\ndata: {\"type\":\"mention\"}\n\n",
            b"event: delete\ndata: 123\n\n:thump\n",
        ]);
        assert_eq!(
            items,
            vec![
                Item::Comment(")".into()),
                Item::Comment("thump".into()),
                event("notification", "{\"type\":\"mention\"}"),
                event("delete", "123"),
                Item::Comment("thump".into()),
            ]
        );
    }

    #[test]
    fn lines_split_across_chunks_and_any_line_ending() {
        let whole: &[u8] = b"event: notification\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n";
        let expected = vec![event("notification", "{\"a\":\n1}")];
        for cut in 0..whole.len() {
            assert_eq!(parse(&[&whole[..cut], &whole[cut..]]), expected, "cut at {cut}");
        }
        // One byte at a time, CR only.
        let cr: Vec<u8> = whole.iter().copied().filter(|&b| b != b'\n').collect();
        let bytes: Vec<&[u8]> = cr.chunks(1).collect();
        assert_eq!(parse(&bytes), expected);
    }

    #[test]
    fn an_event_needs_data_and_a_blank_line() {
        assert_eq!(parse(&[b"event: notification\n\n"]), vec![]);
        assert_eq!(parse(&[b"event: notification\ndata: x\n"]), vec![]);
        assert_eq!(parse(&[b"data\n\n"]), vec![event("message", "")]);
    }

    #[test]
    fn an_overlong_line_is_dropped_and_its_event_still_reported() {
        let mut p = Parser::default();
        let mut out = Vec::new();
        p.push(b"event: notification\ndata: ", &mut out);
        let big = vec![b'x'; 64 * 1024];
        for _ in 0..(MAX_LINE / big.len() + 2) {
            p.push(&big, &mut out);
        }
        p.push(b"\n\n:thump\nevent: notification\ndata: {}\n\n", &mut out);
        assert_eq!(
            out,
            vec![
                Item::Event { name: "notification".into(), data: None },
                Item::Comment("thump".into()),
                event("notification", "{}"),
            ]
        );
        assert!(p.line.capacity() <= MAX_LINE, "the buffer stayed bounded");
    }

    #[test]
    fn only_mentions_and_unknowns_wake() {
        assert!(event("notification", r#"{"id":"1","type":"mention"}"#).wakes());
        assert!(event("notification", r#"{"id":"1","type":"quote"}"#).wakes());
        assert!(!event("notification", r#"{"id":"1","type":"favourite"}"#).wakes());
        assert!(event("notification", "not json").wakes());
        assert!(Item::Event { name: "notification".into(), data: None }.wakes());
        assert!(event("notifications_merged", "1").wakes());
        assert!(!event("update", "{}").wakes());
        assert!(!Item::Comment("thump".into()).wakes());
    }
}
