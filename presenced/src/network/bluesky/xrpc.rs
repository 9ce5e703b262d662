//! XRPC over HTTP: one request, its bounded answer, and what went wrong in terms the account
//! can act on. Knows nothing about sessions; the caller passes the token to send.
//!
//! Facts used (`shared/api/networks.md` §2.6): error bodies are `{"error","message"}` but a
//! proxy may answer with anything; rate-limited routes send `RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset` (epoch seconds) and, on 429, `Retry-After`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use crate::network::NetError;

/// Largest successful answer read. Notification pages of 100 with full records and
/// threads are well under this.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Largest error answer read: only `error` and `message` are used.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Longest server-supplied message kept (it ends up in logs and in the state).
const MAX_MESSAGE: usize = 300;
/// A rate-limit window that resets within this long is waited out before sending.
const WAIT_OUT: Duration = Duration::from_secs(5);
/// Longest a rate limit makes us wait, whatever the headers say: Bluesky's longest window is
/// a day, and a clock far off must not stall an account for longer.
pub(super) const MAX_RATE_WAIT: Duration = Duration::from_secs(24 * 3600);

/// What a request sends as its body. Its `Debug` shows no content: a login body carries the
/// app password.
#[derive(Clone)]
pub(super) enum Body {
    None,
    Json(Value),
    /// Raw bytes with their media type (`uploadBlob`).
    Bytes {
        data: Vec<u8>,
        mime: String,
    },
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::None => f.write_str("Body::None"),
            Body::Json(_) => f.write_str("Body::Json([redacted])"),
            Body::Bytes { data, mime } => write!(f, "Body::Bytes({mime}, {} bytes)", data.len()),
        }
    }
}

/// Whether a request can change something on the server: decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    Read,
    Writes,
}

/// An XRPC failure, before the caller judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The request certainly did not reach the server (no connection, or a rate limit we
    /// know about and wait out without asking).
    NotSent { message: String, wait: Option<Duration> },
    /// The request may have reached the server and no usable answer came back (timeout,
    /// connection lost, unreadable body).
    Lost(String),
    /// The server answered with an error status.
    Status { status: u16, error: String, message: String, wait: Option<Duration> },
    /// Already judged by the session layer (a failed login, say).
    Judged(NetError),
}

impl Failure {
    /// The XRPC error name of a server answer (`InvalidSwap`, `ExpiredToken`, ...).
    pub(super) fn error_name(&self) -> Option<&str> {
        match self {
            Failure::Status { error, .. } => Some(error),
            _ => None,
        }
    }

    /// A token problem that a refresh or a new login can fix.
    pub(super) fn is_auth(&self) -> bool {
        match self {
            Failure::Status { status: 401, .. } => true,
            Failure::Status { status: 400, error, .. } => {
                matches!(error.as_str(), "ExpiredToken" | "InvalidToken")
            }
            _ => false,
        }
    }

    /// What the core should do about this failure of `what`.
    pub(super) fn judge(self, what: &str, effect: Effect) -> NetError {
        match self {
            Failure::Judged(e) => e,
            Failure::NotSent { message, wait } => {
                NetError::Transient { message: format!("{what}: {message}"), retry_after: wait }
            }
            Failure::Lost(message) => {
                let message = format!("{what}: {message}");
                match effect {
                    Effect::Writes => NetError::InDoubt { message },
                    Effect::Read => NetError::Transient { message, retry_after: None },
                }
            }
            Failure::Status { status, error, message, wait } => {
                let text = describe_status(what, status, &error, &message);
                match status {
                    401 | 403 => NetError::Unauthorized(text),
                    400 if matches!(error.as_str(), "ExpiredToken" | "InvalidToken") => {
                        NetError::Unauthorized(text)
                    }
                    429 => NetError::Transient { message: text, retry_after: wait },
                    // The server gave up waiting for the request: it was never processed.
                    408 => NetError::Transient { message: text, retry_after: None },
                    400..=499 => NetError::Rejected(text),
                    // A 5xx after a write reached the PDS may come with the record written.
                    500..=599 if effect == Effect::Writes => NetError::InDoubt { message: text },
                    _ => NetError::Transient { message: text, retry_after: wait },
                }
            }
        }
    }
}

fn describe_status(what: &str, status: u16, error: &str, message: &str) -> String {
    match (error.is_empty(), message.is_empty()) {
        (true, true) => format!("{what}: HTTP {status}"),
        (false, true) => format!("{what}: HTTP {status} {error}"),
        (true, false) => format!("{what}: HTTP {status}: {message}"),
        (false, false) => format!("{what}: HTTP {status} {error}: {message}"),
    }
}

/// The HTTP side of one account: the client and what the server said about rate limits.
#[derive(Debug)]
pub(super) struct Xrpc {
    http: reqwest::Client,
    /// No request before this: the server said the window's budget is spent.
    not_before: Option<DateTime<Utc>>,
}

impl Xrpc {
    pub(super) fn new(http: reqwest::Client) -> Xrpc {
        Xrpc { http, not_before: None }
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends one XRPC request to `base` (`https://host[:port]`) and returns the decoded
    /// answer (`Value::Null` for an empty one).
    pub(super) async fn call(
        &mut self,
        base: &str,
        method: Method,
        nsid: &str,
        query: &[(&str, &str)],
        body: &Body,
        token: Option<&str>,
    ) -> Result<Value, Failure> {
        if let Some(until) = self.not_before {
            let now = Utc::now();
            if until > now {
                let wait = (until - now).to_std().unwrap_or(Duration::ZERO);
                // A window about to reset is waited out here: refusing would count as a
                // failed attempt and lengthen the post's backoff for nothing.
                if wait > WAIT_OUT {
                    return Err(Failure::NotSent {
                        message: format!(
                            "rate limit reached; waiting {}s for the window to reset",
                            wait.as_secs().max(1)
                        ),
                        wait: Some(wait.clamp(Duration::from_secs(1), MAX_RATE_WAIT)),
                    });
                }
                tokio::time::sleep(wait).await;
            }
            self.not_before = None;
        }
        let now = Utc::now();
        let mut url = url::Url::parse(&format!("{}/xrpc/{nsid}", base.trim_end_matches('/')))
            .map_err(|e| Failure::Judged(NetError::Rejected(format!("{base}: {e}"))))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, bearer(token)?);
        }
        request = match body {
            Body::None => request,
            Body::Json(v) => request
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(v).unwrap_or_default()),
            Body::Bytes { data, mime } => {
                request.header(CONTENT_TYPE, mime.as_str()).body(data.clone())
            }
        };
        let mut response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            self.note_budget(&headers, now);
            let bytes = read_body(&mut response, MAX_BODY).await.map_err(|e| {
                Failure::Lost(format!("HTTP {}: reading the answer: {e}", status.as_u16()))
            })?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Lost(format!("HTTP {}: the answer is not JSON: {e}", status.as_u16()))
            });
        }
        // The error body only adds detail; losing it changes nothing about the outcome.
        let bytes = read_body(&mut response, MAX_ERROR_BODY).await.unwrap_or_default();
        let (error, message) = error_body(&bytes);
        let wait = rate_limit_wait(&headers, now);
        if status.as_u16() == 429 {
            if let Some(w) = wait {
                self.not_before = Some(now + chrono::Duration::from_std(w).unwrap_or_default());
            }
        }
        Err(Failure::Status { status: status.as_u16(), error, message, wait })
    }

    /// Remembers an exhausted budget (`RateLimit-Remaining: 0`) so that the next request
    /// waits for the reset instead of spending a 429.
    fn note_budget(&mut self, headers: &HeaderMap, now: DateTime<Utc>) {
        let remaining = header(headers, "ratelimit-remaining").and_then(|v| v.parse::<i64>().ok());
        if remaining == Some(0) {
            if let Some(reset) = reset_time(headers) {
                if reset > now {
                    let cap = now + chrono::Duration::from_std(MAX_RATE_WAIT).unwrap_or_default();
                    self.not_before = Some(reset.min(cap));
                }
            }
        }
    }
}

/// The `Authorization` header for a token; the value is marked sensitive so that it never
/// shows in reqwest's own `Debug` output.
fn bearer(token: &str) -> Result<HeaderValue, Failure> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        // The error would name the value: say nothing about it.
        Failure::Judged(NetError::Unauthorized(
            "the session token contains characters not allowed in a header".into(),
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn transport_error(e: &reqwest::Error) -> Failure {
    let message = describe(e);
    // No connection means nothing was sent. Anything later (a timeout, a reset while the
    // answer was on its way) may have left a write behind.
    if e.is_connect() || e.is_builder() {
        Failure::NotSent { message, wait: None }
    } else {
        Failure::Lost(message)
    }
}

pub(super) use crate::http::{describe, read_body};

/// `error` and `message` of an XRPC error body, cleaned; empty when the body is something
/// else (a proxy's HTML page).
pub(super) fn error_body(body: &[u8]) -> (String, String) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return (String::new(), String::new());
    };
    let field = |k: &str| map.get(k).and_then(Value::as_str).map(clean).unwrap_or_default();
    (field("error"), field("message"))
}

/// Server text for a log line: no control characters, bounded length.
pub(super) fn clean(text: &str) -> String {
    let mut out: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_MESSAGE).collect();
    if text.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out.trim().to_owned()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `RateLimit-Reset` as a time: epoch seconds on the reference servers; a small number is
/// taken as seconds from now, as in the IETF draft.
fn reset_time(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let n: i64 = header(headers, "ratelimit-reset")?.parse().ok()?;
    if n > 1_000_000_000 {
        DateTime::from_timestamp(n, 0)
    } else {
        Some(Utc::now() + chrono::Duration::seconds(n.max(0)))
    }
}

/// How long a 429 asks us to wait: `Retry-After` (seconds or an HTTP date), else until
/// `RateLimit-Reset`.
pub(super) fn rate_limit_wait(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let until = |t: DateTime<Utc>| (t - now).to_std().unwrap_or(Duration::ZERO);
    let wait = if let Some(retry) = header(headers, "retry-after") {
        match retry.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => until(DateTime::parse_from_rfc2822(retry).ok()?.with_timezone(&Utc)),
        }
    } else {
        until(reset_time(headers)?)
    };
    // A reset already past (clock skew) still means "not this very second".
    Some(wait.clamp(Duration::from_secs(1), MAX_RATE_WAIT))
}
