//! Feed parsing for presence: RSS 0.9x, RSS 1.0 (RDF), RSS 2.0, Atom (1.0 and 0.3) and
//! JSON Feed (1.0, 1.1), from untrusted bytes to a list of [`Item`]s ready to announce.
//!
//! ```
//! let url = url::Url::parse("https://example.com/feed.xml").unwrap();
//! let xml = br#"<rss version="2.0"><channel><title>Blog</title>
//!   <item><title>Hello &amp; welcome</title><link>/hello</link>
//!   <pubDate>Tue, 02 Jan 2024 10:00:00 +0000</pubDate></item></channel></rss>"#;
//! let feed = presence_feed::parse(xml, &url, Some("application/rss+xml")).unwrap();
//! assert_eq!(feed.format, presence_feed::Format::Rss2);
//! assert_eq!(feed.items[0].title, "Hello & welcome");
//! assert_eq!(feed.items[0].link.as_deref(), Some("https://example.com/hello"));
//! assert_eq!(feed.items[0].published, Some(1704189600));
//! ```
//!
//! # What it guarantees
//!
//! * The format is recognised from the content (root element, or a JSON object with a
//!   JSON Feed `version`), never from the content type alone.
//! * Bytes in any encoding `encoding_rs` knows are decoded: a byte order mark wins, then
//!   the content type's `charset`, then the XML declaration, then UTF-8; a declaration
//!   the bytes contradict is overridden, and undeclared legacy bytes are detected with
//!   `chardetng`. Whitespace or a BOM before the XML declaration is tolerated.
//! * No DTD is read and no entity is expanded: a `<!DOCTYPE>` declaring entities is
//!   refused with [`ParseError::EntityDeclaration`] (entity bombs, XXE); other DOCTYPEs
//!   are ignored and nothing is ever fetched. HTML named entities (`&nbsp;`, `&uuml;`)
//!   are understood, undefined ones and bare `&` stay literal text.
//! * Titles, summaries and tags are plain text (see [`plain_text`]); links and images
//!   are absolute `http(s)` URLs, resolved against `xml:base` and the feed URL.
//! * One bad entry is skipped with a warning in [`Feed::warnings`], never failing the feed.
//!   Structural XML errors (mismatched tags, truncated document) do fail it, with the
//!   line number.
//! * Bounded work and memory: input up to [`MAX_INPUT_BYTES`], at most [`MAX_ITEMS`]
//!   items, nesting beyond 256 levels skipped, at most 256 KiB of text kept per field,
//!   at most 100 warnings; all passes are linear in the input; nothing recurses on input
//!   structure; nothing panics.
//!
//! The `rss` and `atom_syndication` crates are not used: `atom_syndication` rejects a
//! whole feed over one entry's unparseable date, both reject a whole feed over one bare
//! `&`, neither reports line numbers nor applies `xml:base`, and the recoveries the
//! corpus in `tests/corpus` needs (encodings, HTML entities, truncated end tag, nested
//! items) would have to be rebuilt around them anyway. One streaming `quick-xml` reader
//! handles all the XML formats instead.

#![forbid(unsafe_code)]

mod date;
mod decode;
mod entities;
mod html;
mod item;
mod json;
mod link;
mod sanitize;
mod xml;

pub use date::parse_date;
pub use html::{plain_text, plain_text_lines};
pub use link::canonical_link;

use url::Url;

/// Largest document accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 32 * 1024 * 1024;
/// Most items read from one feed; later ones are ignored with a warning.
pub const MAX_ITEMS: usize = 10_000;
/// Most warnings kept per feed (one more says how many were left out).
pub const MAX_WARNINGS: usize = 100;

/// A parsed feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    /// The feed's own title, as plain text.
    pub title: Option<String>,
    pub format: Format,
    /// Entries in document order (usually newest first). Entries that could not be used
    /// are left out (see `warnings`). Duplicates are kept: deduplication is the caller's.
    pub items: Vec<Item>,
    /// Problems that were recovered from, one line each, for logs.
    pub warnings: Vec<String>,
}

/// Which kind of document a feed was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RSS 0.90 (RDF-based), 0.91, 0.92 and the other 0.9x versions.
    Rss09x,
    /// RSS 2.0 (also an `<rss>` root without a version).
    Rss2,
    /// RSS 1.0 (RDF).
    Rss1Rdf,
    /// Atom 1.0 (and Atom 0.3, read the same way).
    Atom1,
    /// JSON Feed 1.0 or 1.1.
    JsonFeed,
}

/// One entry of a feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `guid` / `atom:id` / JSON Feed `id`, trimmed; `None` if absent or empty.
    pub id: Option<String>,
    /// Absolute `http(s)` URL of the entry (RSS `link`, else the Atom alternate link,
    /// else a permalink `guid`, else RSS 1.0 `rdf:about`; JSON Feed `url`, else
    /// `external_url`), resolved against `xml:base` and the feed URL.
    pub link: Option<String>,
    /// Plain text (HTML stripped, references decoded, whitespace collapsed), at most
    /// 1000 characters; empty if the entry has no title.
    pub title: String,
    /// Plain text from the description / summary, or the content when there is none; at
    /// most 1000 characters (cut at a word boundary, with `…`).
    pub summary: String,
    /// Categories (RSS `category`, `dc:subject`, Atom `category/@term`, JSON `tags`), as
    /// plain text, without duplicates, at most 64.
    pub tags: Vec<String>,
    /// Publication time, unix seconds UTC (`pubDate`, `dc:date`, `published`,
    /// `date_published`). `None` if absent or unparseable.
    pub published: Option<i64>,
    /// Last update time, unix seconds UTC (Atom `updated`, JSON `date_modified`).
    pub updated: Option<i64>,
    /// Absolute `http(s)` URL of an image for the entry: an image enclosure or Media RSS
    /// `media:content`, else `media:thumbnail`, else `itunes:image`; JSON `image`,
    /// `banner_image` or an image attachment.
    pub image: Option<String>,
}

impl Item {
    /// A stable key to recognise this entry across fetches: the id if there is one, else
    /// the [`canonical_link`] of the link, else (for entries with neither, which are rare
    /// and otherwise unidentifiable) a hash of the title, or of the summary when there is
    /// no title, and the publication time, as `urn:presence-feed:text:<16 hex digits>`.
    /// `None` only for an entry with no id, link, title or summary, which
    /// [`parse`] never returns.
    pub fn identity(&self) -> Option<String> {
        if let Some(id) = &self.id {
            return Some(id.clone());
        }
        if let Some(link) = self.link.as_deref().and_then(canonical_link) {
            return Some(link);
        }
        let text = if self.title.is_empty() { &self.summary } else { &self.title };
        if text.is_empty() {
            return None;
        }
        let mut hash = Fnv1a::default();
        hash.write(text.as_bytes());
        hash.write(&[0]);
        if let Some(published) = self.published {
            hash.write(&published.to_le_bytes());
        }
        Some(format!("urn:presence-feed:text:{:016x}", hash.0))
    }
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms (unlike `DefaultHasher`).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Why a document could not be read as a feed. The message is one line, starting
/// lower-case, without a final period, and says where when it can (`line 12: …`); the
/// caller adds which feed it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing but whitespace.
    #[error("empty document")]
    Empty,
    /// Larger than [`MAX_INPUT_BYTES`].
    #[error("document too large: {size} bytes (limit {limit})")]
    TooLarge { size: usize, limit: usize },
    /// A `<!DOCTYPE>` declares entities: refused without expanding anything.
    #[error("{}entity declarations are not allowed (possible entity expansion attack)", line_prefix(*.line))]
    EntityDeclaration { line: Option<usize> },
    /// Well-formed (or at least readable) but not a feed: HTML, another XML vocabulary,
    /// RSS-in-JSON, …
    #[error("not a feed: {0}")]
    NotAFeed(String),
    /// Not well-formed XML.
    #[error("line {line}: {message}")]
    Xml { line: usize, message: String },
    /// Not valid JSON.
    #[error("line {line}, column {column}: invalid json: {message}")]
    Json { line: usize, column: usize, message: String },
}

fn line_prefix(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

/// Parses a feed document.
///
/// `feed_url` is where the document was fetched from: relative links are resolved
/// against it (and against `xml:base`). `content_type` is the HTTP `Content-Type`, if
/// any; only its `charset` is used (the format is recognised from the content).
pub fn parse(bytes: &[u8], feed_url: &Url, content_type: Option<&str>) -> Result<Feed, ParseError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(ParseError::TooLarge { size: bytes.len(), limit: MAX_INPUT_BYTES });
    }
    let mut warnings = Warnings::default();
    let text = decode::decode(bytes, content_type, &mut warnings);
    let body = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    let mut feed = match body.chars().next() {
        None => return Err(ParseError::Empty),
        Some('{' | '[') => json::parse(body, feed_url, &mut warnings)?,
        Some('<') => {
            let prepared = sanitize::prepare(&text, &mut warnings)?;
            xml::parse(&prepared, feed_url, &mut warnings)?
        }
        Some(_) => return Err(ParseError::NotAFeed("document is neither xml nor json".to_owned())),
    };
    feed.warnings = warnings.into_vec();
    Ok(feed)
}

/// Bounded list of warnings.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    list: Vec<String>,
    dropped: usize,
}

impl Warnings {
    pub(crate) fn push(&mut self, warning: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(warning);
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list.push(format!("{} more warnings left out", self.dropped));
        }
        self.list
    }
}

/// 1-based line number of byte offset `pos` in `text`.
pub(crate) fn line_at(text: &str, pos: usize) -> usize {
    let end = pos.min(text.len());
    1 + text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count()
}
