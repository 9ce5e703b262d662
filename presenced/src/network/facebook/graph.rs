//! HTTP for the Graph API: bounded bodies, `{"error":{...}}` bodies decided on their code
//! (not the HTTP status), and the usage headers (`shared/api/networks.md` §4.5).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::network::NetError;

/// Largest response body read: a page of 100 comments is far below.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest server text kept (it ends up in logs and in the state).
const MAX_MESSAGE: usize = 300;
/// The wait after a rate-limit error that names none: Graph limits are rolling hourly
/// windows.
pub(super) const RATE_WAIT: Duration = Duration::from_secs(15 * 60);
/// The wait after Facebook could not read the link (code 1609005): the blog may have been
/// down for a moment, or may block Facebook's crawler.
const SCRAPE_WAIT: Duration = Duration::from_secs(30 * 60);
/// Longest wait any header or error can impose.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

pub(super) use crate::http::Effect;

/// A successful answer: its JSON and what the usage headers say.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) value: Value,
    pub(super) usage: Usage,
}

/// A request that did not succeed.
#[derive(Debug)]
pub(super) enum Failure {
    /// No usable answer, already classified.
    Net(NetError),
    /// A Graph error: its code, the usage headers, and what it means by default.
    Graph { code: i64, usage: Usage, net: NetError },
}

impl Failure {
    pub(super) fn into_net(self) -> NetError {
        match self {
            Failure::Net(e) | Failure::Graph { net: e, .. } => e,
        }
    }

    pub(super) fn code(&self) -> Option<i64> {
        match self {
            Failure::Graph { code, .. } => Some(*code),
            Failure::Net(_) => None,
        }
    }

    pub(super) fn usage(&self) -> Option<&Usage> {
        match self {
            Failure::Graph { usage, .. } => Some(usage),
            Failure::Net(_) => None,
        }
    }
}

/// The error object of a Graph error body.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct GraphError {
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default)]
    pub(super) code: Option<i64>,
    #[serde(default)]
    pub(super) error_subcode: Option<i64>,
    #[serde(default)]
    pub(super) is_transient: Option<bool>,
    #[serde(default)]
    pub(super) error_user_msg: Option<String>,
}

/// What the usage headers (`X-App-Usage`, `X-Page-Usage`, `X-Business-Use-Case-Usage`)
/// report: the highest percentage of any quota, and the longest announced wait.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Usage {
    pub(super) percent: u64,
    pub(super) regain: Option<Duration>,
}

impl Usage {
    pub(super) fn from_headers(headers: &HeaderMap) -> Usage {
        let mut usage = Usage::default();
        for name in ["x-app-usage", "x-page-usage", "x-ad-account-usage"] {
            if let Some(v) = json_header(headers, name) {
                usage.absorb(&v);
            }
        }
        // `{"<id>": [{"type": "pages", "call_count": .., ...}, ...], ...}`
        if let Some(Value::Object(map)) = json_header(headers, "x-business-use-case-usage") {
            for entries in map.values() {
                for entry in entries.as_array().into_iter().flatten() {
                    usage.absorb(entry);
                }
            }
        }
        usage
    }

    fn absorb(&mut self, v: &Value) {
        for key in ["call_count", "total_cputime", "total_time", "acc_id_util_pct"] {
            if let Some(p) = number(v.get(key)) {
                self.percent = self.percent.max(p);
            }
        }
        if let Some(minutes) = number(v.get("estimated_time_to_regain_access")).filter(|&m| m > 0) {
            let wait = Duration::from_secs(minutes * 60).min(MAX_WAIT);
            self.regain = Some(self.regain.map_or(wait, |w| w.max(wait)));
        }
    }
}

fn json_header(headers: &HeaderMap, name: &str) -> Option<Value> {
    let text = headers.get(name)?.to_str().ok()?;
    serde_json::from_str(text).ok()
}

fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The URL of a Graph path below `base` (which carries the version), given as segments.
pub(super) fn endpoint(base: &str, segments: &[&str]) -> Result<Url, NetError> {
    let base = Url::parse(base.trim())
        .map_err(|e| NetError::Rejected(format!("Graph API base {base:?}: {e}")))?;
    crate::http::endpoint(&base, segments)
}

/// Sends a request and reads its JSON answer.
pub(super) async fn send(
    request: RequestBuilder,
    what: &str,
    effect: Effect,
) -> Result<Answer, Failure> {
    let Received { status, headers, body } =
        receive(request, what, effect, MAX_BODY).await.map_err(Failure::Net)?;
    let usage = Usage::from_headers(&headers);
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).clamp(Duration::from_secs(1), MAX_WAIT));
    let value: Option<Value> = serde_json::from_slice(&body).ok();
    // Graph sometimes answers an error with 200; the body decides.
    let error = value
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object())
        .and_then(|e| serde_json::from_value::<GraphError>(e.clone()).ok());
    if let Some(error) = error {
        let code = error.code.unwrap_or(0);
        let net = graph_error(status.as_u16(), &error, &usage, what, effect);
        return Err(Failure::Graph { code, usage, net });
    }
    if !status.is_success() {
        let message = format!("{what}: HTTP {status}");
        let net = match status.as_u16() {
            401 | 403 => NetError::Unauthorized(message),
            // Graph itself says 400 with a rate-limit code; a bare 429 comes from something
            // in front of it, which says how long in `Retry-After` when it knows.
            429 => NetError::Transient {
                message,
                retry_after: Some(retry_after.or(usage.regain).unwrap_or(RATE_WAIT)),
            },
            400..=499 => NetError::Rejected(message),
            500..=599 if effect == Effect::Creates => NetError::InDoubt { message },
            _ => NetError::Transient { message, retry_after: None },
        };
        return Err(Failure::Net(net));
    }
    match value {
        Some(value) => Ok(Answer { value, usage }),
        None => Err(Failure::Net(after_sending(format!("{what}: the answer is not JSON"), effect))),
    }
}

/// What a Graph error means for the core, decided on `error.code` (the HTTP status is
/// usually 400 whatever happened).
pub(super) fn graph_error(
    status: u16,
    error: &GraphError,
    usage: &Usage,
    what: &str,
    effect: Effect,
) -> NetError {
    let code = error.code.unwrap_or(0);
    let codes = match error.error_subcode {
        Some(sub) => format!("code {code}, subcode {sub}"),
        None => format!("code {code}"),
    };
    let text = error
        .message
        .as_deref()
        .or(error.error_user_msg.as_deref())
        .map(clean)
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = format!("{what}: {text} ({codes})");
    match code {
        190 => NetError::Unauthorized(format!(
            "{what}: the Page access token is invalid or expired ({codes}): {text}"
        )),
        // 102: session key invalid; 104: no token; 10 and 200-299: a permission is missing.
        102 | 104 | 10 | 200..=299 => NetError::Unauthorized(message),
        // 4 app, 17 user, 32 Page, 613 custom, 341 app limit, 80001 Pages business use case.
        4 | 17 | 32 | 341 | 613 | 80000..=80099 => NetError::Transient {
            message: format!("{message}: rate limited"),
            retry_after: Some(usage.regain.unwrap_or(RATE_WAIT).min(MAX_WAIT)),
        },
        1609005 => NetError::Transient {
            message: format!("{message}: Facebook could not read the link (is the article reachable, with Open Graph tags?)"),
            retry_after: Some(SCRAPE_WAIT),
        },
        // 1 and 2: unknown or temporary; the request may have been carried out.
        1 | 2 => after_sending(message, effect),
        _ if error.is_transient == Some(true) => after_sending(message, effect),
        _ if status >= 500 => after_sending(message, effect),
        _ => NetError::Rejected(message),
    }
}

pub(super) use crate::http::after_sending;
use crate::http::{receive, Received};

/// Server text for a log line: no control characters, bounded length.
pub(super) fn clean(text: &str) -> String {
    let mut out: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_MESSAGE).collect();
    if text.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out.trim().to_owned()
}
