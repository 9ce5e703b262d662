//! What every HTTP client in the daemon (feed fetching, the network adapters) needs alike:
//! bounded bodies, one-line error descriptions, and what a failure means for a request that
//! may have created something.

use crate::network::NetError;

/// Whether a request can create something on the server (a post, a reply): that decides
/// what a failure after sending means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Creates,
}

/// Largest error body read: only a few of its fields are ever used.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// A server's answer, body read.
#[derive(Debug)]
pub struct Received {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// Sends a request and reads its answer: a successful body up to `cap` (failing to read it
/// is a failure after sending), an error body up to [`MAX_ERROR_BODY`] and empty when it
/// cannot be read (it only adds detail; losing it changes nothing about the outcome).
pub async fn receive(
    request: reqwest::RequestBuilder,
    what: &str,
    effect: Effect,
    cap: usize,
) -> Result<Received, NetError> {
    let mut response = request.send().await.map_err(|e| transport_error(&e, what, effect))?;
    let status = response.status();
    let body = if status.is_success() {
        read_body(&mut response, cap)
            .await
            .map_err(|e| after_sending(format!("{what}: reading the answer: {e}"), effect))?
    } else {
        read_body(&mut response, MAX_ERROR_BODY).await.unwrap_or_default()
    };
    Ok(Received { status, headers: response.headers().clone(), body })
}

/// Reads at most `cap` bytes of body; a longer body is an error, not a truncated answer.
pub async fn read_body(response: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(format!("the answer is larger than {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(format!("the answer is larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its causes on one line, without the URL (callers name the request, and a
/// URL may carry a token).
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The URL of a path below `base` (which may carry a path of its own, like the Graph API's
/// version), given as segments so that ids are escaped as segments.
pub fn endpoint(base: &url::Url, segments: &[&str]) -> Result<url::Url, NetError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| NetError::Rejected(format!("server {base} cannot have a path")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A failure once the server has taken the request: something may exist for a creating one.
pub fn after_sending(message: String, effect: Effect) -> NetError {
    match effect {
        Effect::Creates => NetError::InDoubt { message },
        Effect::Read => NetError::Transient { message, retry_after: None },
    }
}

/// A request that failed in transport. No connection means nothing was sent; anything later
/// (a timeout, a reset while the answer was on its way) may have left something behind.
pub fn transport_error(e: &reqwest::Error, what: &str, effect: Effect) -> NetError {
    let message = format!("{what}: {}", describe(e));
    if e.is_connect() || e.is_builder() {
        return NetError::Transient { message, retry_after: None };
    }
    after_sending(message, effect)
}
