//! HTTP for X: sending with bounded bodies, RFC 7807 problem bodies, and what an error
//! answer means for the core (`shared/api/networks.md` §3.5).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use crate::network::NetError;

/// Largest response body read: 100 posts with their fields and users are well below.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest server text kept (it ends up in logs and in the state).
const MAX_MESSAGE: usize = 300;
/// Longest wait a rate limit can impose: X's longest window is 24 hours.
pub(super) const MAX_RATE_WAIT: Duration = Duration::from_secs(24 * 3600);
/// How long a usage-capped answer (the plan's monthly cap is spent) keeps the account quiet:
/// asking again soon cannot help, and every request counts.
pub(super) const USAGE_CAPPED_WAIT: Duration = Duration::from_secs(6 * 3600);
/// The wait after a 429 that names no reset.
const DEFAULT_RATE_WAIT: Duration = Duration::from_secs(60);

pub(super) use crate::http::Effect;

#[derive(Debug)]
pub(super) struct Answer {
    pub(super) body: Vec<u8>,
}

/// A request that did not succeed.
#[derive(Debug)]
pub(super) enum Failure {
    /// No usable answer (not sent, dropped, unreadable), already classified.
    Net(NetError),
    /// An error answer: its status and problem body, and what it means by default.
    Status { status: u16, problem: Problem, net: NetError },
}

impl Failure {
    pub(super) fn into_net(self) -> NetError {
        match self {
            Failure::Net(e) | Failure::Status { net: e, .. } => e,
        }
    }

    /// 401: the access token is expired or revoked; a refresh may help.
    pub(super) fn token_refused(&self) -> bool {
        matches!(self, Failure::Status { status: 401, .. })
    }

    /// 403 "You are not allowed to create a Tweet with duplicate content."
    pub(super) fn duplicate(&self) -> bool {
        matches!(self, Failure::Status { status: 403, problem, .. }
            if problem.mentions("duplicate content") || problem.mentions("duplicate"))
    }

    /// A 400 that names the query parameter `name` (an API that wants the other spelling of
    /// the fields parameter).
    pub(super) fn rejects_parameter(&self, name: &str) -> bool {
        matches!(self, Failure::Status { status: 400, problem, .. } if problem.mentions(name))
    }

    pub(super) fn problem(&self) -> Option<&Problem> {
        match self {
            Failure::Status { problem, .. } => Some(problem),
            Failure::Net(_) => None,
        }
    }
}

/// An X error body: RFC 7807 problem JSON (`title`, `detail`, `type`), maybe with an
/// `errors` array (400s), or an OAuth error (`error`, `error_description`).
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct Problem {
    #[serde(default)]
    pub(super) title: Option<String>,
    #[serde(default)]
    pub(super) detail: Option<String>,
    #[serde(default, rename = "type")]
    pub(super) kind: Option<String>,
    #[serde(default)]
    errors: Vec<ProblemError>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct ProblemError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

impl Problem {
    fn parse(body: &[u8]) -> Problem {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The problem as one cleaned line, most specific parts first.
    pub(super) fn text(&self) -> Option<String> {
        let mut parts: Vec<&str> = Vec::new();
        if let Some(e) = self.error.as_deref() {
            parts.push(e);
        }
        if let Some(d) = self.error_description.as_deref() {
            parts.push(d);
        }
        if let Some(d) = self.detail.as_deref().or(self.title.as_deref()) {
            parts.push(d);
        }
        for e in &self.errors {
            if let Some(m) = e.message.as_deref().or(e.detail.as_deref()) {
                if !parts.contains(&m) {
                    parts.push(m);
                }
            }
        }
        let parts: Vec<&str> = parts.into_iter().filter(|p| !p.trim().is_empty()).collect();
        (!parts.is_empty()).then(|| clean(&parts.join(": ")))
    }

    /// Whether any part of the problem contains `needle` (case-insensitively).
    pub(super) fn mentions(&self, needle: &str) -> bool {
        let needle = needle.to_lowercase();
        [&self.detail, &self.title, &self.kind, &self.error, &self.error_description]
            .into_iter()
            .flatten()
            .chain(self.errors.iter().flat_map(|e| e.message.iter().chain(&e.detail)))
            .any(|t| t.to_lowercase().contains(&needle))
    }

    /// `invalid_request`/`invalid_grant` from the token endpoint: the code or refresh token
    /// is not (or no longer) valid.
    pub(super) fn is_invalid_grant(&self) -> bool {
        matches!(self.error.as_deref(), Some("invalid_request" | "invalid_grant"))
    }

    fn usage_capped(&self) -> bool {
        self.kind.as_deref().is_some_and(|k| k.ends_with("/usage-capped"))
            || self.title.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("UsageCapExceeded"))
    }
}

/// The URL of an API path below `base`, given as segments (ids escaped as segments).
pub(super) fn endpoint(base: &str, segments: &[&str]) -> Result<Url, NetError> {
    let base = Url::parse(base.trim())
        .map_err(|e| NetError::Rejected(format!("X API base {base:?}: {e}")))?;
    crate::http::endpoint(&base, segments)
}

/// Sends a request and reads its answer.
pub(super) async fn send(
    request: RequestBuilder,
    what: &str,
    effect: Effect,
) -> Result<Answer, Failure> {
    let Received { status, headers, body } =
        receive(request, what, effect, MAX_BODY).await.map_err(Failure::Net)?;
    if status.is_success() {
        return Ok(Answer { body });
    }
    let problem = Problem::parse(&body);
    let net = status_error(status, &headers, &problem, what, effect, Utc::now());
    Err(Failure::Status { status: status.as_u16(), problem, net })
}

pub(super) fn decode<T: DeserializeOwned>(
    body: &[u8],
    what: &str,
    effect: Effect,
) -> Result<T, NetError> {
    serde_json::from_slice(body).map_err(|e| {
        after_sending(format!("{what}: the answer is not the expected JSON: {e}"), effect)
    })
}

pub(super) use crate::http::after_sending;
use crate::http::{receive, Received};

/// What an error answer means by default; callers refine 401 (refresh) and 403 (duplicate,
/// reply restrictions).
pub(super) fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    problem: &Problem,
    what: &str,
    effect: Effect,
    now: DateTime<Utc>,
) -> NetError {
    let message = match problem.text() {
        Some(d) => format!("{what}: HTTP {}: {d}", status.as_u16()),
        None => format!("{what}: HTTP {status}"),
    };
    match status.as_u16() {
        401 => NetError::Unauthorized(message),
        // The app is not allowed to use this endpoint at all (no project, wrong plan).
        403 if problem.kind.as_deref().is_some_and(|k| k.ends_with("/client-forbidden")) => {
            NetError::Unauthorized(message)
        }
        429 if problem.usage_capped() => {
            let wait = rate_limit_wait(headers, now).unwrap_or_default().max(USAGE_CAPPED_WAIT);
            NetError::Transient {
                message: format!("{message} (the plan's usage cap is reached)"),
                retry_after: Some(wait.min(MAX_RATE_WAIT)),
            }
        }
        429 => NetError::Transient {
            message,
            retry_after: Some(rate_limit_wait(headers, now).unwrap_or(DEFAULT_RATE_WAIT)),
        },
        408 => NetError::Transient { message, retry_after: None },
        300..=399 => NetError::Transient {
            message: format!("{message}: redirected; check the X API base URL"),
            retry_after: None,
        },
        400..=499 => NetError::Rejected(message),
        500..=599 if effect == Effect::Creates => NetError::InDoubt { message },
        _ => NetError::Transient { message, retry_after: None },
    }
}

/// How long a 429 asks us to wait: until the latest exhausted window's reset among
/// `x-rate-limit-*` (15 minutes) and the 24-hour `x-user-limit-24hour-*` /
/// `x-app-limit-24hour-*` headers, all epoch seconds; else `Retry-After`.
pub(super) fn rate_limit_wait(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let mut wait: Option<Duration> = None;
    for prefix in ["x-rate-limit", "x-user-limit-24hour", "x-app-limit-24hour"] {
        let remaining = header(headers, &format!("{prefix}-remaining"));
        let Some(reset) = header(headers, &format!("{prefix}-reset")) else { continue };
        // The 15-minute window explains any 429; a 24-hour one only when it is spent.
        if prefix != "x-rate-limit" && remaining != Some("0") {
            continue;
        }
        let Ok(epoch) = reset.parse::<i64>() else { continue };
        let Some(at) = DateTime::from_timestamp(epoch, 0) else { continue };
        let w = (at - now).to_std().unwrap_or(Duration::ZERO);
        wait = Some(wait.map_or(w, |old| old.max(w)));
    }
    let wait = wait.or_else(|| {
        let secs: u64 = header(headers, "retry-after")?.parse().ok()?;
        Some(Duration::from_secs(secs))
    })?;
    Some(wait.clamp(Duration::from_secs(1), MAX_RATE_WAIT))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
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
