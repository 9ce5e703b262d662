//! Bluesky rich text and identifiers: facets for outgoing text (links, hashtags, mentions,
//! at UTF-8 byte offsets), plain text from incoming records (links expanded from their
//! facets), record keys derived from our keys, and at-URIs.
//!
//! Detection follows the official client's rules (`@atproto/api` `RichText.detectFacets`)
//! closely enough for announcement templates and hand-written answers: a URL starts with
//! `http(s)://` after a space, an opening parenthesis or the start; a hashtag is `#` after a
//! space or the start and needs one character that is not a digit; a mention is `@` followed
//! by a handle that looks like a domain name. Trailing punctuation is never part of any of
//! them. Facet offsets are UTF-8 byte offsets, start inclusive, end exclusive (§2.3).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use unicode_segmentation::UnicodeSegmentation;

/// The lexicon's collection of posts.
pub(super) const POST: &str = "app.bsky.feed.post";

/// What one facet does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Feature {
    Link(String),
    Tag(String),
    /// A handle, still to be resolved to a DID.
    Mention(String),
}

/// A facet found in text: byte range and feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Span {
    pub start: usize,
    pub end: usize,
    pub feature: Feature,
}

/// Longest hashtag the lexicon accepts, in graphemes.
const MAX_TAG: usize = 64;

/// The links, hashtags and mentions of `text`, in order, never overlapping. Occurrences of
/// the `exact` URLs are taken whole first, so the article's link is faceted exactly as the
/// core wrote it, whatever its last character.
pub(super) fn detect(text: &str, exact: &[&str]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for url in exact.iter().filter(|u| !u.is_empty()) {
        let mut from = 0;
        while let Some(i) = text[from..].find(url) {
            let start = from + i;
            let end = start + url.len();
            let free = text[..start].chars().next_back().map_or(true, opens);
            if free && !overlaps(&spans, start, end) {
                spans.push(Span { start, end, feature: Feature::Link((*url).to_owned()) });
            }
            from = end;
        }
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let before = text[..i].chars().next_back();
        let found = match bytes[i] {
            b'h' | b'H' if before.map_or(true, opens) => url_at(text, i),
            b'#' if before.map_or(true, char::is_whitespace) => tag_at(text, i),
            b'@' if before.map_or(true, |c| c.is_whitespace() || c == '(') => mention_at(text, i),
            _ => None,
        };
        match found {
            Some(span) if !overlaps(&spans, span.start, span.end) => {
                i = span.end;
                spans.push(span);
            }
            _ => i += text[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    spans.sort_by_key(|s| s.start);
    spans
}

/// Characters after which a URL may start.
fn opens(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | '[' | '<' | '"' | '\'' | '“' | '‘')
}

fn overlaps(spans: &[Span], start: usize, end: usize) -> bool {
    spans.iter().any(|s| start < s.end && s.start < end)
}

fn url_at(text: &str, at: usize) -> Option<Span> {
    let rest = &text[at..];
    let lower: String = rest.chars().take(8).collect::<String>().to_ascii_lowercase();
    let scheme = if lower.starts_with("https://") {
        8
    } else if lower.starts_with("http://") {
        7
    } else {
        return None;
    };
    let len = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
        .unwrap_or(rest.len());
    let mut url = &rest[..len];
    loop {
        let trimmed = url.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'', '…']);
        let unbalanced = (trimmed.ends_with(')') && !trimmed.contains('('))
            || (trimmed.ends_with(']') && !trimmed.contains('['));
        let trimmed = if unbalanced { &trimmed[..trimmed.len() - 1] } else { trimmed };
        if trimmed.len() == url.len() {
            break;
        }
        url = trimmed;
    }
    let host = url[scheme..].split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url::Url::parse(url).is_err() {
        return None;
    }
    Some(Span { start: at, end: at + url.len(), feature: Feature::Link(url.to_owned()) })
}

fn tag_at(text: &str, at: usize) -> Option<Span> {
    let body_start = at + 1;
    let rest = &text[body_start..];
    // `#️⃣` is a keycap emoji, not a hashtag.
    if rest.starts_with('\u{FE0F}') || rest.starts_with('\u{20E3}') {
        return None;
    }
    let len = rest.find(|c: char| c.is_whitespace() || is_invisible(c)).unwrap_or(rest.len());
    let tag = rest[..len].trim_end_matches(|c: char| !(c.is_alphanumeric() || c == '_'));
    if tag.is_empty()
        || !tag.chars().any(|c| !c.is_ascii_digit() && !c.is_whitespace())
        || tag.graphemes(true).count() > MAX_TAG
    {
        return None;
    }
    Some(Span { start: at, end: body_start + tag.len(), feature: Feature::Tag(tag.to_owned()) })
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{2060}' | '\u{200A}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{20E2}'
    )
}

fn mention_at(text: &str, at: usize) -> Option<Span> {
    let rest = &text[at + 1..];
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    let handle = rest[..len].trim_end_matches(['.', '-']);
    // What follows must end the handle: `@a.b@c` is an address, not a mention.
    if rest[handle.len()..].starts_with('@') || !is_handle(handle) {
        return None;
    }
    Some(Span {
        start: at,
        end: at + 1 + handle.len(),
        feature: Feature::Mention(handle.to_ascii_lowercase()),
    })
}

/// Handle syntax: a domain name of at least two labels whose last label starts with a letter.
pub(super) fn is_handle(handle: &str) -> bool {
    let labels: Vec<&str> = handle.split('.').collect();
    handle.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels.last().is_some_and(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// The lexicon form of the spans; mentions whose handle `did_of` cannot resolve are left out
/// (plain text, as the official client does).
pub(super) fn facets(spans: &[Span], did_of: impl Fn(&str) -> Option<String>) -> Vec<Value> {
    spans
        .iter()
        .filter_map(|s| {
            let feature = match &s.feature {
                Feature::Link(uri) => json!({"$type": "app.bsky.richtext.facet#link", "uri": uri}),
                Feature::Tag(tag) => json!({"$type": "app.bsky.richtext.facet#tag", "tag": tag}),
                Feature::Mention(handle) => {
                    json!({"$type": "app.bsky.richtext.facet#mention", "did": did_of(handle)?})
                }
            };
            Some(json!({"index": {"byteStart": s.start, "byteEnd": s.end}, "features": [feature]}))
        })
        .collect()
}

/// The text of a post as plain text, with each link facet's full URL in place of the visible
/// text where that text is a shortened form of it, or after it in parentheses where it is
/// something else ("my blog (https://…)"). Facets with bad offsets are ignored.
pub(super) fn render(text: &str, facets: Option<&Value>) -> String {
    let mut links: Vec<(usize, usize, &str)> = facets
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let start = usize::try_from(f.pointer("/index/byteStart")?.as_u64()?).ok()?;
            let end = usize::try_from(f.pointer("/index/byteEnd")?.as_u64()?).ok()?;
            let uri = f.get("features")?.as_array()?.iter().find_map(|feature| {
                let kind = feature.get("$type")?.as_str()?;
                (kind == "app.bsky.richtext.facet#link").then(|| feature.get("uri")?.as_str())?
            })?;
            (start < end && text.get(start..end).is_some()).then_some((start, end, uri))
        })
        .collect();
    links.sort_by_key(|l| l.0);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, uri) in links {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        let visible = &text[start..end];
        if shortened_form(visible, uri) {
            out.push_str(uri);
        } else {
            out.push_str(visible);
            out.push_str(" (");
            out.push_str(uri);
            out.push(')');
        }
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Whether `visible` is how clients show `uri` shortened: scheme dropped, the end cut with
/// an ellipsis.
fn shortened_form(visible: &str, uri: &str) -> bool {
    let strip = |s: &str| -> String {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        let s = if lower.starts_with("https://") {
            &s[8..]
        } else if lower.starts_with("http://") {
            &s[7..]
        } else {
            s
        };
        s.strip_prefix("www.").unwrap_or(s).to_owned()
    };
    let shown = strip(visible);
    let shown = shown.trim_end_matches("...").trim_end_matches('…');
    !shown.is_empty() && strip(uri).starts_with(shown)
}

/// The answer's text with `@to` in front, unless it already starts with it. The same rule
/// as the core's length check, so a text accepted there fits here.
pub(super) fn with_mention(to: &str, text: &str) -> String {
    if to.is_empty() || text.trim_start().starts_with(&format!("@{to}")) {
        text.trim().to_owned()
    } else {
        format!("@{to} {}", text.trim())
    }
}

const TID_ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
/// 2015-01-01T00:00:00Z in microseconds: the start of the window that a derived record key's
/// timestamp falls in.
const TID_BASE_MICROS: u64 = 1_420_070_400_000_000;
/// 2^48 µs, about 8.9 years: every derived timestamp lies between 2015 and late 2023, in the
/// past, so no consumer can mistake it for a post from the future.
const TID_SPAN_MICROS: u64 = 1 << 48;

/// The record key for one of our keys: a syntactically valid TID (13 characters, 53-bit
/// timestamp and 10-bit clock id, base32-sortable) whose bits come from SHA-256 of the key.
/// The same key always gives the same record key, so a record can be written at most once
/// whatever happens between attempts. Its timestamp says nothing about when the post was
/// made; readers order posts by `createdAt`.
pub(super) fn tid(key: &str) -> String {
    let digest = Sha256::digest(format!("presence/bluesky/rkey\0{key}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let bits = u64::from_be_bytes(first);
    let clock = bits & 0x3ff;
    let micros = TID_BASE_MICROS + (bits >> 10) % TID_SPAN_MICROS;
    let value = (micros << 10) | clock;
    (0..13).map(|i| TID_ALPHABET[((value >> (60 - 5 * i)) & 31) as usize] as char).collect()
}

#[cfg(test)]
/// TID syntax: `^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$`.
pub(super) fn is_tid(s: &str) -> bool {
    s.len() == 13
        && s.bytes().all(|b| TID_ALPHABET.contains(&b))
        && b"234567abcdefghij".contains(&s.as_bytes()[0])
}

/// The parts of `at://<authority>/<collection>/<rkey>`.
pub(super) fn parse_at_uri(uri: &str) -> Option<(&str, &str, &str)> {
    let rest = uri.strip_prefix("at://")?;
    let mut parts = rest.splitn(3, '/');
    let authority = parts.next().filter(|s| !s.is_empty())?;
    let collection = parts.next().filter(|s| !s.is_empty())?;
    let rkey = parts.next().filter(|s| !s.is_empty() && !s.contains('/'))?;
    Some((authority, collection, rkey))
}

/// Where a person opens a post in the Bluesky web app.
pub(super) fn web_url(actor: &str, uri: &str) -> Option<String> {
    let (_, collection, rkey) = parse_at_uri(uri)?;
    (collection == POST).then(|| format!("https://bsky.app/profile/{actor}/post/{rkey}"))
}
