//! Turning what a format parser collected about one entry into an [`Item`].

use url::Url;

use crate::date::parse_date;
use crate::html::{decode_text, plain_text, truncate_chars};
use crate::link::resolve_http;
use crate::{Item, Warnings};

/// Longest title and summary kept, in characters.
pub(crate) const MAX_TEXT_CHARS: usize = 1000;
/// Longest id kept, in bytes; a longer one is dropped (with a warning).
pub(crate) const MAX_ID_LEN: usize = 2048;
/// Most tags kept per item, and the longest tag, in characters.
pub(crate) const MAX_TAGS: usize = 64;
const MAX_TAG_CHARS: usize = 200;

/// How a piece of feed text is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Plain text: only whitespace is collapsed.
    Text,
    /// HTML source: tags stripped, references decoded.
    Html,
    /// Inline XHTML, reserialised as HTML.
    Xhtml,
}

/// Plain text for a field: markup handled according to `mode`, then
/// [`repair_mojibake`].
pub(crate) fn to_text(text: &str, mode: Mode) -> String {
    let text = match mode {
        Mode::Text => decode_text(text),
        Mode::Html | Mode::Xhtml => plain_text(text),
    };
    repair_mojibake(text)
}

/// Undoes the most common double encoding: UTF-8 text that was decoded as
/// windows-1252/Latin-1 and encoded again ("Itâ€™s" for "It’s"). Applied only when the
/// whole text maps back to windows-1252 bytes that are valid UTF-8 and contain
/// multi-byte sequences, which legitimate text practically never does.
pub(crate) fn repair_mojibake(text: String) -> String {
    // Every UTF-8 lead byte read as windows-1252 is in U+00C2..=U+00F4.
    if text.is_ascii() || !text.chars().any(|c| ('\u{c2}'..='\u{f4}').contains(&c)) {
        return text;
    }
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    if unmappable {
        return text;
    }
    match std::str::from_utf8(&bytes) {
        Ok(repaired) if repaired.len() < text.len() => repaired.to_owned(),
        _ => text,
    }
}

/// Image candidate priority (lower first).
pub(crate) const IMAGE_ENCLOSURE: u8 = 0;
pub(crate) const IMAGE_THUMBNAIL: u8 = 1;
pub(crate) const IMAGE_ARTWORK: u8 = 2;

/// Everything a parser collected about one entry, unprocessed.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    /// 1-based position of the entry in the document.
    pub index: usize,
    /// Line of the entry's start tag, when known.
    pub line: Option<usize>,
    pub id: Option<String>,
    /// Link candidates in order of preference, each with the base it is relative to.
    pub links: Vec<(String, Url)>,
    pub title: Option<(String, Mode)>,
    /// Short text (description, summary).
    pub summary: Option<(String, Mode)>,
    /// Long text (content:encoded, content), used when there is no summary.
    pub content: Option<(String, Mode)>,
    pub tags: Vec<(String, Mode)>,
    /// Publication date candidates in order of preference.
    pub published: Vec<String>,
    pub updated: Vec<String>,
    /// Image candidates: priority, URL, base.
    pub images: Vec<(u8, String, Url)>,
}

/// Which item a warning is about; written out only when there is a warning.
#[derive(Clone, Copy)]
struct Context {
    index: usize,
    line: Option<usize>,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "item {} (line {line})", self.index),
            None => write!(f, "item {}", self.index),
        }
    }
}

impl Draft {
    fn context(&self) -> Context {
        Context { index: self.index, line: self.line }
    }

    /// Builds the item, or `None` (with a warning) if it has to be skipped.
    pub(crate) fn finish(self, warnings: &mut Warnings) -> Option<Item> {
        let context = self.context();

        let mut id = self.id.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        if id.as_ref().is_some_and(|s| s.len() > MAX_ID_LEN) {
            warnings.push(format!("{context}: id longer than {MAX_ID_LEN} bytes ignored"));
            id = None;
        }

        let mut link = None;
        let mut link_problem = None;
        for (raw, base) in &self.links {
            match resolve_http(base, raw) {
                Ok(Some(resolved)) => {
                    link = Some(resolved);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    if link_problem.is_none() {
                        link_problem =
                            Some(format!("{context}: link {:?} ignored: {e}", short(raw)));
                    }
                }
            }
        }
        if link.is_none() {
            if let Some(problem) = link_problem {
                warnings.push(problem);
            }
        }

        let title = self
            .title
            .map(|(t, mode)| truncate_chars(to_text(&t, mode), MAX_TEXT_CHARS))
            .unwrap_or_default();
        let mut summary = self.summary.map(|(t, mode)| to_text(&t, mode)).unwrap_or_default();
        if summary.is_empty() {
            if let Some((t, mode)) = self.content {
                summary = to_text(&t, mode);
            }
        }
        let summary = truncate_chars(summary, MAX_TEXT_CHARS);

        let mut tags: Vec<String> = Vec::new();
        for (raw, mode) in self.tags {
            let tag = truncate_chars(to_text(&raw, mode), MAX_TAG_CHARS);
            if !tag.is_empty() && !tags.contains(&tag) && tags.len() < MAX_TAGS {
                tags.push(tag);
            }
        }

        let published = first_date(&self.published, context, warnings);
        let updated = first_date(&self.updated, context, warnings);

        let mut images = self.images;
        images.sort_by_key(|(priority, _, _)| *priority);
        let image = images
            .iter()
            .filter_map(|(_, raw, base)| resolve_http(base, raw).ok().flatten())
            .find(|url| !is_avatar(url));

        if id.is_none() && link.is_none() {
            if title.is_empty() && summary.is_empty() {
                warnings.push(format!("{context}: skipped: no id, link, title or text"));
                return None;
            }
            warnings
                .push(format!("{context}: no id or link; its identity is derived from its text"));
        }

        Some(Item { id, link, title, summary, tags, published, updated, image })
    }
}

/// Author avatars that WordPress.com adds as `media:content` to every item: not an image
/// of the article.
fn is_avatar(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h == "gravatar.com" || h.ends_with(".gravatar.com")))
        .unwrap_or(false)
}

fn first_date(candidates: &[String], context: Context, warnings: &mut Warnings) -> Option<i64> {
    let mut result = None;
    for raw in candidates {
        if raw.trim().is_empty() {
            continue;
        }
        match parse_date(raw) {
            Some(t) => {
                result = Some(t);
                break;
            }
            None => warnings.push(format!("{context}: unparseable date {:?}", short(raw.trim()))),
        }
    }
    result
}

/// At most 80 characters of `s`, for warnings.
pub(crate) fn short(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mojibake_is_repaired_only_when_unambiguous() {
        let r = |s: &str| repair_mojibake(s.to_owned());
        assert_eq!(r("Itâ€™s â€œquotedâ€\u{9d} â€¦"), "It’s “quoted” …");
        assert_eq!(r("cafÃ© EspaÃ±a"), "café España");
        // Legitimate Latin-1 text, mixed scripts, and plain ASCII stay as they are.
        assert_eq!(r("café, España, Ærøskøbing"), "café, España, Ærøskøbing");
        assert_eq!(r("Â is a letter"), "Â is a letter");
        assert_eq!(r("Ã© and Привет"), "Ã© and Привет");
        assert_eq!(r("plain"), "plain");
        // Through the HTML path: entity-encoded mojibake.
        assert_eq!(to_text("&acirc;&#128;&brvbar;", Mode::Html), "…");
    }
}
