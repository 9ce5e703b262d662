//! Fetching a feed: conditional GET, bounded bodies, redirects followed by hand so that a
//! permanent move can be recorded, and `file://` for local feeds.

use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::StatusCode;

/// Cached validators sent back as If-None-Match / If-Modified-Since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Body {
        bytes: Vec<u8>,
        content_type: Option<String>,
        validators: Validators,
        /// The final URL, to resolve relative links against.
        url: url::Url,
    },
}

#[derive(Debug)]
pub struct Fetch {
    pub status: String,
    pub fetched: Fetched,
    /// Set when every redirect on the way was permanent: the feed has moved.
    pub moved_to: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("http {status}")]
    Status { status: u16, retry_after: Option<Duration> },
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("bad redirect: {0}")]
    BadRedirect(String),
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    File(String),
}

impl FetchError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

const MAX_REDIRECTS: usize = 10;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!(
            "presenced/",
            env!("CARGO_PKG_VERSION"),
            " (+https://example.invalid/presence; announces new articles once)"
        ))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .gzip(true)
        .brotli(true)
        .build()
        .unwrap_or_default()
}

pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    validators: &Validators,
    max_bytes: u64,
) -> Result<Fetch, FetchError> {
    let mut current = url::Url::parse(url).map_err(|e| FetchError::Transport(e.to_string()))?;
    if current.scheme() == "file" {
        return fetch_file(&current, max_bytes).await;
    }
    let mut all_permanent = true;
    for _ in 0..=MAX_REDIRECTS {
        let mut headers = HeaderMap::new();
        if let Some(v) = validators.etag.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(header::IF_NONE_MATCH, v);
        }
        if let Some(v) =
            validators.last_modified.as_deref().and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(header::IF_MODIFIED_SINCE, v);
        }
        let response = http
            .get(current.clone())
            .headers(headers)
            .send()
            .await
            .map_err(|e| FetchError::Transport(crate::http::describe(&e)))?;
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let location =
                response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::BadRedirect(format!("{status} without Location")))?;
            current = current
                .join(location)
                .map_err(|e| FetchError::BadRedirect(format!("{location:?}: {e}")))?;
            all_permanent &=
                matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT);
            continue;
        }
        let moved_to = (all_permanent && current.as_str() != url).then(|| current.to_string());
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetch { status: "304".into(), fetched: Fetched::NotModified, moved_to });
        }
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            return Err(FetchError::Status { status: status.as_u16(), retry_after });
        }
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let validators = Validators {
            etag: header_text(header::ETAG),
            last_modified: header_text(header::LAST_MODIFIED),
        };
        let content_type = header_text(header::CONTENT_TYPE);
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(FetchError::TooLarge { limit: max_bytes });
        }
        let mut response = response;
        let cap = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let bytes = crate::http::read_body(&mut response, cap).await.map_err(|e| {
            if e.starts_with("the answer is larger") {
                FetchError::TooLarge { limit: max_bytes }
            } else {
                FetchError::Transport(e)
            }
        })?;
        return Ok(Fetch {
            status: status.as_u16().to_string(),
            fetched: Fetched::Body { bytes, content_type, validators, url: current },
            moved_to,
        });
    }
    Err(FetchError::TooManyRedirects)
}

async fn fetch_file(url: &url::Url, max_bytes: u64) -> Result<Fetch, FetchError> {
    let path = url.to_file_path().map_err(|()| FetchError::File(format!("bad file URL {url}")))?;
    let shown = path.display().to_string();
    let meta =
        tokio::fs::metadata(&path).await.map_err(|e| FetchError::File(format!("{shown}: {e}")))?;
    if meta.len() > max_bytes {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    let bytes =
        tokio::fs::read(&path).await.map_err(|e| FetchError::File(format!("{shown}: {e}")))?;
    Ok(Fetch {
        status: "read".into(),
        fetched: Fetched::Body {
            bytes,
            content_type: None,
            validators: Validators::default(),
            url: url.clone(),
        },
        moved_to: None,
    })
}

/// Retry-After as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (at.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}
