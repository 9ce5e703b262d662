//! URL helpers: resolving feed links and canonicalising them for identity.

use url::Url;

/// Query parameters that only track where a click came from. Dropped by
/// [`canonical_link`]: keys starting with `utm_` and these exact keys (case-insensitive).
const TRACKING_PARAMS: &[&str] = &[
    "fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid", "_hsenc", "_hsmi", "yclid", "igshid",
];

/// Canonical form of an absolute URL, for recognising the same article behind slightly
/// different links.
///
/// Scheme and host are lower-cased, a default port is dropped, the fragment is dropped,
/// tracking query parameters (`utm_*`, `fbclid`, `gclid`, `dclid`, `msclkid`, `mc_cid`,
/// `mc_eid`, `_hsenc`, `_hsmi`, `yclid`, `igshid`) are dropped and the other parameters
/// are kept in their order and spelling; an empty query is dropped. The path is left
/// alone (a trailing slash stays or stays absent). Returns `None` if `url` is not an
/// absolute URL.
///
/// ```
/// use presence_feed::canonical_link;
/// assert_eq!(
///     canonical_link("HTTPS://Example.COM:443/a/?utm_source=rss&id=3&fbclid=x#top").as_deref(),
///     Some("https://example.com/a/?id=3")
/// );
/// assert_eq!(canonical_link("/relative/path"), None);
/// ```
pub fn canonical_link(url: &str) -> Option<String> {
    let mut parsed = Url::parse(url.trim()).ok()?;
    parsed.set_fragment(None);
    if let Some(query) = parsed.query() {
        let kept: Vec<&str> =
            query.split('&').filter(|pair| !pair.is_empty() && !is_tracking(pair)).collect();
        let kept = kept.join("&");
        if kept.is_empty() {
            parsed.set_query(None);
        } else if kept != query {
            parsed.set_query(Some(&kept));
        }
    }
    Some(parsed.into())
}

fn is_tracking(pair: &str) -> bool {
    let key = pair.split('=').next().unwrap_or_default();
    let lower = key.to_ascii_lowercase();
    lower.starts_with("utm_") || TRACKING_PARAMS.contains(&lower.as_str())
}

/// Longest link or image URL kept (longer ones are dropped with a warning).
pub(crate) const MAX_URL_LEN: usize = 4096;

/// Why a link could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkError {
    Unparseable,
    Scheme(String),
    TooLong,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Unparseable => f.write_str("not a valid url"),
            LinkError::Scheme(s) => write!(f, "unsupported scheme {s:?}"),
            LinkError::TooLong => write!(f, "longer than {MAX_URL_LEN} bytes"),
        }
    }
}

/// Resolves a (possibly relative) link against `base` and keeps it only if it is an
/// `http`/`https` URL of sane length. `Ok(None)` if `raw` is blank.
pub(crate) fn resolve_http(base: &Url, raw: &str) -> Result<Option<String>, LinkError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > MAX_URL_LEN {
        return Err(LinkError::TooLong);
    }
    let url = base.join(raw).map_err(|_| LinkError::Unparseable)?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(LinkError::Scheme(other.to_owned())),
    }
    if url.host_str().map_or(true, str::is_empty) {
        return Err(LinkError::Unparseable);
    }
    let s: String = url.into();
    if s.len() > MAX_URL_LEN {
        return Err(LinkError::TooLong);
    }
    Ok(Some(s))
}

/// Applies an `xml:base` value to the base in scope. An empty value (or one that does
/// not parse) leaves the base unchanged: an empty relative reference resolves to the
/// base itself.
pub(crate) fn apply_xml_base(current: &Url, value: &str) -> Option<Url> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    current.join(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_link_normalises() {
        let c = |s: &str| canonical_link(s);
        assert_eq!(c("HTTP://EXAMPLE.com/Path").as_deref(), Some("http://example.com/Path"));
        assert_eq!(c("http://example.com:80/a").as_deref(), Some("http://example.com/a"));
        assert_eq!(c("https://example.com:443/a").as_deref(), Some("https://example.com/a"));
        assert_eq!(c("https://example.com:8443/a").as_deref(), Some("https://example.com:8443/a"));
        assert_eq!(c("https://example.com/a#frag").as_deref(), Some("https://example.com/a"));
        assert_eq!(c("https://example.com/a/").as_deref(), Some("https://example.com/a/"));
        assert_eq!(c("https://example.com/a").as_deref(), Some("https://example.com/a"));
        assert_eq!(c("  https://example.com/a \n").as_deref(), Some("https://example.com/a"));
        assert_eq!(c("https://example.com").as_deref(), Some("https://example.com/"));
    }

    #[test]
    fn canonical_link_drops_tracking_params_only() {
        let c = |s: &str| canonical_link(s);
        assert_eq!(
            c("https://e.com/p?utm_source=rss&utm_medium=feed&UTM_Campaign=x").as_deref(),
            Some("https://e.com/p")
        );
        assert_eq!(
            c("https://e.com/p?b=2&fbclid=abc&a=1&gclid=x&dclid=y&msclkid=z").as_deref(),
            Some("https://e.com/p?b=2&a=1")
        );
        assert_eq!(
            c("https://e.com/p?mc_cid=1&mc_eid=2&_hsenc=3&_hsmi=4&yclid=5&igshid=6&id=7")
                .as_deref(),
            Some("https://e.com/p?id=7")
        );
        // Not tracking: kept as spelled, in order; `ref` is kept (too often meaningful).
        assert_eq!(
            c("https://e.com/p?z=1&a=%20x&ref=home&utm=keep&q=a+b").as_deref(),
            Some("https://e.com/p?z=1&a=%20x&ref=home&utm=keep&q=a+b")
        );
        assert_eq!(c("https://e.com/p?").as_deref(), Some("https://e.com/p"));
        assert_eq!(c("https://e.com/p?&&a=1&&").as_deref(), Some("https://e.com/p?a=1"));
        assert_eq!(c("https://e.com/p?utm_source").as_deref(), Some("https://e.com/p"));
    }

    #[test]
    fn canonical_link_rejects_garbage() {
        assert_eq!(canonical_link(""), None);
        assert_eq!(canonical_link("/a/b"), None);
        assert_eq!(canonical_link("example.com/a"), None);
        assert_eq!(canonical_link("http://[::1"), None);
        assert_eq!(canonical_link("http://exa mple.com/"), None);
        // Non-http absolute URLs are still canonicalised (ids can be URNs).
        assert_eq!(canonical_link("urn:uuid:1234").as_deref(), Some("urn:uuid:1234"));
    }

    #[test]
    fn resolves_relative_links() {
        let base = Url::parse("https://example.com/blog/feed.xml").unwrap();
        let r = |s: &str| resolve_http(&base, s);
        assert_eq!(r("/a").unwrap().as_deref(), Some("https://example.com/a"));
        assert_eq!(r("post.html").unwrap().as_deref(), Some("https://example.com/blog/post.html"));
        assert_eq!(
            r("//cdn.example.net/x.png").unwrap().as_deref(),
            Some("https://cdn.example.net/x.png")
        );
        assert_eq!(r("http://other.org/").unwrap().as_deref(), Some("http://other.org/"));
        assert_eq!(r("  ").unwrap(), None);
        assert_eq!(r("javascript:alert(1)"), Err(LinkError::Scheme("javascript".into())));
        assert_eq!(r("mailto:a@b.c"), Err(LinkError::Scheme("mailto".into())));
        assert_eq!(r("http://[::1"), Err(LinkError::Unparseable));
        assert_eq!(r(&format!("/{}", "a".repeat(5000))), Err(LinkError::TooLong));
    }

    #[test]
    fn xml_base_chain() {
        let doc = Url::parse("https://example.com/feeds/atom.xml").unwrap();
        assert_eq!(apply_xml_base(&doc, ""), None);
        let b1 = apply_xml_base(&doc, "/blog/").unwrap();
        assert_eq!(b1.as_str(), "https://example.com/blog/");
        let b2 = apply_xml_base(&b1, "2024/").unwrap();
        assert_eq!(b2.as_str(), "https://example.com/blog/2024/");
        assert_eq!(
            resolve_http(&b2, "post").unwrap().as_deref(),
            Some("https://example.com/blog/2024/post")
        );
        let other = apply_xml_base(&b2, "http://other.example/x/").unwrap();
        assert_eq!(other.as_str(), "http://other.example/x/");
    }
}
