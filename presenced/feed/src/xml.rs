//! Streaming reader for the XML feed formats: RSS 0.9x and 2.0, RSS 1.0 (RDF) and 0.90,
//! Atom 1.0 and 0.3.
//!
//! One pass over `quick-xml` events with an explicit stack (no recursion, so nesting depth
//! cannot overflow the call stack). Only the elements that matter are kept: the feed
//! title, and for each entry its direct children (id, links, title, summary, content,
//! categories, dates) plus Media RSS / enclosure / iTunes images anywhere inside it.
//! Everything else is skipped without being stored. Elements nested deeper than
//! [`MAX_DEPTH`] are skipped too, and the text kept for one field is capped at
//! [`MAX_FIELD_BYTES`].
//!
//! The document must be well-formed XML after [`crate::sanitize`] (which already fixed
//! stray `&`s, HTML entities and a truncated last end tag); mismatched tags and
//! truncation are errors with a line number.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use url::Url;

use crate::html::truncate_chars;
use crate::item::{
    short, to_text, Draft, Mode, IMAGE_ARTWORK, IMAGE_ENCLOSURE, IMAGE_THUMBNAIL, MAX_TAGS,
    MAX_TEXT_CHARS,
};
use crate::link::apply_xml_base;
use crate::{line_at, Feed, Format, ParseError, Warnings, MAX_ITEMS};

/// Deepest element nesting that is looked at; deeper elements are skipped.
pub(crate) const MAX_DEPTH: usize = 256;
/// Most text kept for one field (a title, a description, …), in bytes.
pub(crate) const MAX_FIELD_BYTES: usize = 256 * 1024;

/// Parses a prepared (decoded, sanitised) XML document.
pub(crate) fn parse(
    text: &str,
    feed_url: &Url,
    warnings: &mut Warnings,
) -> Result<Feed, ParseError> {
    let mut parser = Parser {
        text,
        feed_url,
        kind: None,
        format: Format::Rss2,
        stack: Vec::new(),
        bases: Vec::new(),
        overflow: 0,
        depth_warned: false,
        capture: None,
        item: None,
        items: Vec::new(),
        items_seen: 0,
        feed_title: None,
        done: false,
        lines: LineCounter::default(),
        warnings,
    };
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    reader.config_mut().expand_empty_elements = false;

    loop {
        let position = reader.buffer_position() as usize;
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (Ns::of(&ns), event),
            Err(e) => {
                let at = reader.error_position() as usize;
                return Err(parser.xml_error(at, e));
            }
        };
        match event {
            Event::Start(e) => parser.start(ns, &e, position)?,
            Event::Empty(e) => {
                parser.start(ns, &e, position)?;
                parser.end(local_name(&e));
            }
            Event::End(e) => {
                let name = e.local_name();
                parser.end(std::str::from_utf8(name.as_ref()).unwrap_or_default());
            }
            Event::Text(t) => {
                if let Some(capture) = parser.capture.as_mut() {
                    match t.unescape() {
                        Ok(s) => capture.push_text(&s),
                        Err(_) => capture.push_text(&String::from_utf8_lossy(&t)),
                    }
                }
            }
            Event::CData(c) => {
                if let Some(capture) = parser.capture.as_mut() {
                    capture.push_text(&String::from_utf8_lossy(&c));
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
        if parser.done {
            break;
        }
    }
    parser.finish()
}

/// Namespaces that matter, resolved from the URI (or, for an undeclared prefix, from
/// the conventional prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ns {
    None,
    /// RSS 1.0, RSS 0.90 or one of the namespaces some RSS 2.0 feeds declare.
    Rss,
    Atom,
    Dc,
    Content,
    Media,
    Itunes,
    Other,
}

impl Ns {
    fn of(result: &ResolveResult) -> Ns {
        match result {
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Bound(ns) => Ns::from_uri(ns.as_ref()),
            ResolveResult::Unknown(prefix) => Ns::from_prefix(prefix),
        }
    }

    fn from_uri(uri: &[u8]) -> Ns {
        let uri = std::str::from_utf8(uri).unwrap_or_default().trim();
        let uri = uri.trim_end_matches(['/', '#']);
        let uri =
            uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://")).unwrap_or(uri);
        match uri {
            "purl.org/rss/1.0"
            | "my.netscape.com/rdf/simple/0.9"
            | "backend.userland.com/rss2"
            | "blogs.law.harvard.edu/tech/rss" => Ns::Rss,
            "www.w3.org/2005/Atom" | "purl.org/atom/ns" => Ns::Atom,
            "purl.org/dc/elements/1.1" | "purl.org/dc/terms" => Ns::Dc,
            "purl.org/rss/1.0/modules/content" => Ns::Content,
            "search.yahoo.com/mrss" => Ns::Media,
            "www.itunes.com/dtds/podcast-1.0.dtd" => Ns::Itunes,
            _ => Ns::Other,
        }
    }

    fn from_prefix(prefix: &[u8]) -> Ns {
        match prefix {
            b"atom" | b"atom10" => Ns::Atom,
            b"dc" | b"dcterms" => Ns::Dc,
            b"content" => Ns::Content,
            b"media" => Ns::Media,
            b"itunes" => Ns::Itunes,
            _ => Ns::Other,
        }
    }

    /// Core RSS vocabulary: no namespace or an RSS namespace.
    fn is_rss(self) -> bool {
        matches!(self, Ns::None | Ns::Rss)
    }

    /// Core Atom vocabulary: the Atom namespace (or none, for sloppy feeds).
    fn is_atom(self) -> bool {
        matches!(self, Ns::None | Ns::Atom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rss,
    Atom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `<rss>` or `<rdf:RDF>`.
    Root,
    /// `<channel>`, or Atom's `<feed>`.
    Channel,
    Item,
    /// Below an item, not a field: only images are looked for.
    InItem,
    /// Inside a field whose text is being captured.
    Captured,
    Other,
}

struct Frame {
    role: Role,
    /// Element name, kept for the first few levels (for error messages).
    name: Option<Box<str>>,
    pushed_base: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    FeedTitle,
    Title,
    Link,
    Guid,
    Id,
    Summary,
    Content,
    Tag,
    Published,
    /// `dc:date`, kept apart from `pubDate` so that `pubDate` wins whatever the order.
    DcDate,
    Updated,
}

struct Capture {
    target: Target,
    mode: Mode,
    buf: String,
    /// Stack index of the captured element.
    depth: usize,
    full: bool,
}

impl Capture {
    fn push(&mut self, s: &str) {
        if self.full {
            return;
        }
        let room = MAX_FIELD_BYTES.saturating_sub(self.buf.len());
        if s.len() <= room {
            self.buf.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.buf.push_str(&s[..cut]);
            self.full = true;
        }
    }

    fn push_text(&mut self, s: &str) {
        if self.mode == Mode::Xhtml {
            let escaped = s.replace('&', "&amp;").replace('<', "&lt;");
            self.push(&escaped);
        } else {
            self.push(s);
        }
    }

    /// Records a nested start tag (an empty element gets its end tag from `end` too).
    fn open_tag(&mut self, name: &str) {
        if self.mode != Mode::Text {
            self.push("<");
            self.push(name);
            self.push(">");
        }
    }

    fn close_tag(&mut self, name: &str) {
        if self.mode != Mode::Text {
            self.push("</");
            self.push(name);
            self.push(">");
        }
    }
}

/// An entry being read.
struct RawItem {
    draft: Draft,
    guid: Option<(String, bool, Url)>,
    link: Option<(String, Url)>,
    about: Option<(String, Url)>,
    /// Atom links: rel, type, href, base.
    atom_links: Vec<(String, Option<String>, String, Url)>,
    pub_date: Option<String>,
    dc_date: Option<String>,
    published: Option<String>,
    updated: Option<String>,
}

struct Parser<'a, 'w> {
    text: &'a str,
    feed_url: &'a Url,
    kind: Option<Kind>,
    format: Format,
    stack: Vec<Frame>,
    bases: Vec<Url>,
    /// Open elements beyond `MAX_DEPTH`.
    overflow: usize,
    depth_warned: bool,
    capture: Option<Capture>,
    item: Option<RawItem>,
    items: Vec<crate::Item>,
    items_seen: usize,
    feed_title: Option<String>,
    done: bool,
    lines: LineCounter,
    warnings: &'w mut Warnings,
}

/// Line numbers for increasing offsets in linear total time.
#[derive(Default)]
struct LineCounter {
    pos: usize,
    line: usize,
}

impl LineCounter {
    fn line_at(&mut self, text: &str, pos: usize) -> usize {
        let pos = pos.min(text.len());
        if pos < self.pos {
            return line_at(text, pos);
        }
        self.line += text.as_bytes()[self.pos..pos].iter().filter(|b| **b == b'\n').count();
        self.pos = pos;
        self.line + 1
    }
}

fn local_name<'e>(e: &'e BytesStart) -> &'e str {
    std::str::from_utf8(e.local_name().into_inner()).unwrap_or_default()
}

/// Value of the first attribute whose local name is `name` (any prefix), or whose
/// qualified name is `name` when it contains a `:`.
fn attr(e: &BytesStart, name: &str) -> Option<String> {
    let qualified = name.contains(':');
    e.attributes().with_checks(false).flatten().find_map(|a| {
        let key = if qualified { a.key.as_ref() } else { a.key.local_name().into_inner() };
        if key != name.as_bytes() {
            return None;
        }
        let value = match a.unescape_value() {
            Ok(v) => v.into_owned(),
            Err(_) => String::from_utf8_lossy(&a.value).into_owned(),
        };
        Some(value)
    })
}

fn text_construct_mode(e: &BytesStart) -> Option<Mode> {
    let kind = attr(e, "type").map(|t| t.trim().to_ascii_lowercase());
    let base = match kind.as_deref() {
        None | Some("" | "text" | "text/plain") => Mode::Text,
        Some("html" | "text/html") => Mode::Html,
        Some("xhtml" | "application/xhtml+xml") => Mode::Xhtml,
        Some(other) if other.starts_with("text/") => Mode::Text,
        Some(other) if other.ends_with("+xml") || other.ends_with("/xml") => Mode::Xhtml,
        Some(_) => return None,
    };
    // Atom 0.3's `mode` attribute.
    match attr(e, "mode").as_deref().map(str::trim) {
        Some("base64") => None,
        Some("escaped") if base == Mode::Xhtml => Some(Mode::Html),
        Some("xml") if base == Mode::Html => Some(Mode::Xhtml),
        _ => Some(base),
    }
}

fn looks_like_image(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    [".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".svg"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

impl Parser<'_, '_> {
    fn base(&self) -> &Url {
        self.bases.last().unwrap_or(self.feed_url)
    }

    fn xml_error(&self, at: usize, error: quick_xml::Error) -> ParseError {
        use quick_xml::errors::{IllFormedError, SyntaxError};
        let message = match &error {
            quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => {
                format!("unexpected </{}> (expected </{}>)", short(found), short(expected))
            }
            quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(name)) => {
                format!("unexpected </{}>", short(name))
            }
            quick_xml::Error::Syntax(SyntaxError::UnclosedTag) => {
                "tag not closed before end of document (truncated?)".to_owned()
            }
            quick_xml::Error::Syntax(SyntaxError::UnclosedComment) => {
                "comment not closed before end of document (truncated?)".to_owned()
            }
            quick_xml::Error::Syntax(SyntaxError::UnclosedCData) => {
                "cdata section not closed before end of document (truncated?)".to_owned()
            }
            quick_xml::Error::Syntax(SyntaxError::UnclosedPIOrXmlDecl) => {
                "processing instruction not closed before end of document (truncated?)".to_owned()
            }
            other => short(&one_line(&other.to_string())),
        };
        // Names come from the document: keep the message on one line.
        let message = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        ParseError::Xml { line: line_at(self.text, at), message }
    }

    fn start(&mut self, ns: Ns, e: &BytesStart, position: usize) -> Result<(), ParseError> {
        if self.overflow > 0 || self.stack.len() >= MAX_DEPTH {
            // Balanced by `end`, which also runs for empty elements.
            self.overflow += 1;
            if !self.depth_warned {
                self.depth_warned = true;
                self.warnings.push(format!(
                    "line {}: elements nested deeper than {MAX_DEPTH} levels skipped",
                    line_at(self.text, position)
                ));
            }
            return Ok(());
        }
        let local = local_name(e);

        let pushed_base = match attr(e, "xml:base") {
            Some(value) => match apply_xml_base(self.base(), &value) {
                Some(url) => {
                    self.bases.push(url);
                    true
                }
                None => false,
            },
            None => false,
        };

        let depth = self.stack.len();
        let role = if let Some(capture) = self.capture.as_mut() {
            capture.open_tag(local);
            Role::Captured
        } else {
            match self.stack.last().map(|f| f.role) {
                None => self.root(ns, local, e)?,
                Some(Role::Root) => {
                    if ns.is_rss() && local == "channel" {
                        Role::Channel
                    } else if ns.is_rss() && local == "item" {
                        self.begin_item(e, position)
                    } else {
                        Role::Other
                    }
                }
                Some(Role::Channel) => self.channel_child(ns, local, e, position, depth),
                Some(Role::Item) => self.item_child(ns, local, e, depth),
                Some(Role::InItem) => {
                    self.media(ns, local, e);
                    Role::InItem
                }
                Some(Role::Captured | Role::Other) => Role::Other,
            }
        };
        let name = (depth < 16).then(|| Box::from(local));
        self.stack.push(Frame { role, name, pushed_base });
        Ok(())
    }

    fn end(&mut self, local: &str) {
        if self.overflow > 0 {
            self.overflow -= 1;
            return;
        }
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let depth = self.stack.len();
        if let Some(capture) = self.capture.as_mut() {
            if capture.depth == depth {
                if let Some(capture) = self.capture.take() {
                    self.finish_capture(capture);
                }
            } else {
                capture.close_tag(local);
            }
        }
        if frame.pushed_base {
            self.bases.pop();
        }
        if frame.role == Role::Item {
            self.finish_item();
        }
        if self.stack.is_empty() {
            self.done = true;
        }
    }

    fn root(&mut self, ns: Ns, local: &str, e: &BytesStart) -> Result<Role, ParseError> {
        match local {
            "rss" if ns.is_rss() => {
                let version = attr(e, "version").unwrap_or_default();
                self.format =
                    if version.trim().starts_with("0.9") { Format::Rss09x } else { Format::Rss2 };
                self.kind = Some(Kind::Rss);
                Ok(Role::Root)
            }
            "RDF" => {
                let netscape = e.attributes().with_checks(false).flatten().any(|a| {
                    a.value.as_ref().starts_with(b"http://my.netscape.com/rdf/simple/0.9")
                });
                self.format = if netscape { Format::Rss09x } else { Format::Rss1Rdf };
                self.kind = Some(Kind::Rss);
                Ok(Role::Root)
            }
            "feed" if ns.is_atom() => {
                self.format = Format::Atom1;
                self.kind = Some(Kind::Atom);
                Ok(Role::Channel)
            }
            _ => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                Err(ParseError::NotAFeed(format!("root element <{}>", short(&name))))
            }
        }
    }

    fn channel_child(
        &mut self,
        ns: Ns,
        local: &str,
        e: &BytesStart,
        position: usize,
        depth: usize,
    ) -> Role {
        match self.kind {
            Some(Kind::Atom) if ns.is_atom() => match local {
                "entry" => self.begin_item(e, position),
                "title" if self.feed_title.is_none() => match text_construct_mode(e) {
                    Some(mode) => self.begin_capture(Target::FeedTitle, mode, depth),
                    None => Role::Other,
                },
                _ => Role::Other,
            },
            Some(Kind::Rss) if ns.is_rss() => match local {
                "item" => self.begin_item(e, position),
                "title" if self.feed_title.is_none() => {
                    self.begin_capture(Target::FeedTitle, Mode::Html, depth)
                }
                _ => Role::Other,
            },
            _ => Role::Other,
        }
    }

    fn begin_capture(&mut self, target: Target, mode: Mode, depth: usize) -> Role {
        self.capture = Some(Capture { target, mode, buf: String::new(), depth, full: false });
        Role::Captured
    }

    fn begin_item(&mut self, e: &BytesStart, position: usize) -> Role {
        if self.items_seen >= MAX_ITEMS {
            self.warnings
                .push(format!("more than {MAX_ITEMS} items; only the first {MAX_ITEMS} were read"));
            self.done = true;
            return Role::Other;
        }
        self.items_seen += 1;
        let about = attr(e, "about").map(|a| (a, self.base().clone()));
        self.item = Some(RawItem {
            draft: Draft {
                index: self.items_seen,
                line: Some(self.lines.line_at(self.text, position)),
                ..Draft::default()
            },
            guid: None,
            link: None,
            about,
            atom_links: Vec::new(),
            pub_date: None,
            dc_date: None,
            published: None,
            updated: None,
        });
        Role::Item
    }

    fn item_child(&mut self, ns: Ns, local: &str, e: &BytesStart, depth: usize) -> Role {
        let Some(kind) = self.kind else {
            return Role::Other;
        };
        let base = self.base().clone();
        let Some(item) = self.item.as_mut() else {
            return Role::Other;
        };
        let target = match (kind, ns, local) {
            (Kind::Rss, ns, _) if ns.is_rss() => match local {
                "title" => Some((Target::Title, Mode::Html)),
                "link" => Some((Target::Link, Mode::Text)),
                "guid" => {
                    if item.guid.is_none() {
                        let permalink = attr(e, "isPermaLink")
                            .map_or(true, |v| !v.trim().eq_ignore_ascii_case("false"));
                        item.guid = Some((String::new(), permalink, base.clone()));
                        Some((Target::Guid, Mode::Text))
                    } else {
                        None
                    }
                }
                "description" => Some((Target::Summary, Mode::Html)),
                "pubDate" => Some((Target::Published, Mode::Text)),
                "category" => Some((Target::Tag, Mode::Html)),
                "enclosure" => {
                    if let Some(url) = attr(e, "url") {
                        let is_image = attr(e, "type").map_or_else(
                            || looks_like_image(&url),
                            |t| t.trim().to_ascii_lowercase().starts_with("image/"),
                        );
                        if is_image {
                            item.draft.images.push((IMAGE_ENCLOSURE, url, base.clone()));
                        }
                    }
                    None
                }
                _ => None,
            },
            (Kind::Atom, ns, _) if ns.is_atom() => match local {
                "id" => Some((Target::Id, Mode::Text)),
                "title" => text_construct_mode(e).map(|m| (Target::Title, m)),
                "summary" => text_construct_mode(e).map(|m| (Target::Summary, m)),
                "content" if attr(e, "src").is_none() => {
                    text_construct_mode(e).map(|m| (Target::Content, m))
                }
                "published" | "issued" | "created" => Some((Target::Published, Mode::Text)),
                "updated" | "modified" => Some((Target::Updated, Mode::Text)),
                "link" => {
                    Self::atom_link(item, e, base.clone());
                    None
                }
                "category" => {
                    if let Some(term) = attr(e, "term").or_else(|| attr(e, "label")) {
                        if item.draft.tags.len() < MAX_TAGS {
                            item.draft.tags.push((term, Mode::Text));
                        }
                    }
                    None
                }
                _ => None,
            },
            (Kind::Rss, Ns::Atom, "link") => {
                Self::atom_link(item, e, base.clone());
                None
            }
            (_, Ns::Dc, "date") => Some((Target::DcDate, Mode::Text)),
            (_, Ns::Dc, "subject") => Some((Target::Tag, Mode::Html)),
            (_, Ns::Content, "encoded") => Some((Target::Content, Mode::Html)),
            (_, Ns::Itunes, "image") => {
                if let Some(href) = attr(e, "href") {
                    item.draft.images.push((IMAGE_ARTWORK, href, base.clone()));
                }
                None
            }
            _ => None,
        };
        match target {
            Some((target, mode)) => self.begin_capture(target, mode, depth),
            None => {
                self.media(ns, local, e);
                Role::InItem
            }
        }
    }

    fn atom_link(item: &mut RawItem, e: &BytesStart, base: Url) {
        let Some(href) = attr(e, "href") else {
            return;
        };
        let rel = attr(e, "rel")
            .map(|r| r.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "alternate".to_owned());
        let kind = attr(e, "type").map(|t| t.trim().to_ascii_lowercase());
        if rel == "enclosure" {
            let is_image = kind
                .as_deref()
                .map_or_else(|| looks_like_image(&href), |t| t.starts_with("image/"));
            if is_image {
                item.draft.images.push((IMAGE_ENCLOSURE, href.clone(), base.clone()));
            }
        }
        if item.atom_links.len() < 32 {
            item.atom_links.push((rel, kind, href, base));
        }
    }

    /// Media RSS images, anywhere inside an item.
    fn media(&mut self, ns: Ns, local: &str, e: &BytesStart) {
        if ns != Ns::Media {
            return;
        }
        let base = self.base().clone();
        let Some(item) = self.item.as_mut() else {
            return;
        };
        if item.draft.images.len() >= 32 {
            return;
        }
        match local {
            "content" => {
                let Some(url) = attr(e, "url") else { return };
                let medium = attr(e, "medium").map(|m| m.trim().to_ascii_lowercase());
                let kind = attr(e, "type").map(|t| t.trim().to_ascii_lowercase());
                let is_image = match (medium.as_deref(), kind.as_deref()) {
                    (Some(m), _) if !m.is_empty() => m == "image",
                    (_, Some(t)) if !t.is_empty() => t.starts_with("image/"),
                    _ => looks_like_image(&url),
                };
                if is_image {
                    item.draft.images.push((IMAGE_ENCLOSURE, url, base));
                }
            }
            "thumbnail" => {
                if let Some(url) = attr(e, "url") {
                    item.draft.images.push((IMAGE_THUMBNAIL, url, base));
                }
            }
            _ => {}
        }
    }

    fn finish_capture(&mut self, capture: Capture) {
        let Capture { target, mode, buf, .. } = capture;
        if target == Target::FeedTitle {
            let title = truncate_chars(to_text(&buf, mode), MAX_TEXT_CHARS);
            if !title.is_empty() {
                self.feed_title = Some(title);
            }
            return;
        }
        let base = self.base().clone();
        let Some(item) = self.item.as_mut() else {
            return;
        };
        let draft = &mut item.draft;
        match target {
            Target::FeedTitle => {}
            Target::Title => {
                draft.title.get_or_insert((buf, mode));
            }
            Target::Link => {
                if item.link.is_none() && !buf.trim().is_empty() {
                    item.link = Some((buf, base));
                }
            }
            Target::Guid => {
                if let Some((guid, _, _)) = item.guid.as_mut() {
                    if guid.is_empty() {
                        *guid = buf;
                    }
                }
            }
            Target::Id => {
                if draft.id.is_none() {
                    draft.id = Some(buf);
                }
            }
            Target::Summary => {
                draft.summary.get_or_insert((buf, mode));
            }
            Target::Content => {
                draft.content.get_or_insert((buf, mode));
            }
            Target::Tag => {
                if draft.tags.len() < MAX_TAGS {
                    draft.tags.push((buf, mode));
                }
            }
            Target::DcDate => {
                item.dc_date.get_or_insert(buf);
            }
            Target::Published => {
                let slot = if self.kind == Some(Kind::Atom) {
                    &mut item.published
                } else {
                    &mut item.pub_date
                };
                slot.get_or_insert(buf);
            }
            Target::Updated => {
                item.updated.get_or_insert(buf);
            }
        }
    }

    fn finish_item(&mut self) {
        let Some(raw) = self.item.take() else {
            return;
        };
        let RawItem {
            mut draft,
            guid,
            link,
            about,
            atom_links,
            pub_date,
            dc_date,
            published,
            updated,
        } = raw;

        // Links, in order of preference.
        if let Some(link) = link {
            draft.links.push(link);
        }
        let alternates = atom_links.iter().filter(|(rel, _, _, _)| rel == "alternate");
        let html_first = alternates
            .clone()
            .filter(|(_, kind, _, _)| kind.as_deref().map_or(true, |k| k.contains("html")))
            .chain(alternates);
        for (_, _, href, base) in html_first.take(4) {
            draft.links.push((href.clone(), base.clone()));
        }
        if let Some((guid, permalink, base)) = &guid {
            let g = guid.trim();
            let url_like = g.starts_with("http://")
                || g.starts_with("https://")
                || (g.starts_with('/') && !g.starts_with("//"));
            if *permalink && url_like {
                draft.links.push((g.to_owned(), base.clone()));
            }
        }
        if let Some(about) = about {
            draft.links.push(about);
        }

        if let Some((guid, _, _)) = guid {
            draft.id.get_or_insert(guid);
        }
        draft.published.extend(pub_date);
        draft.published.extend(dc_date);
        draft.published.extend(published);
        draft.updated.extend(updated);

        if let Some(item) = draft.finish(self.warnings) {
            self.items.push(item);
        }
    }

    fn finish(self) -> Result<Feed, ParseError> {
        if self.kind.is_none() {
            return Err(ParseError::NotAFeed("no root element".to_owned()));
        }
        if !self.done {
            let open = self.stack.iter().rev().find_map(|f| f.name.as_deref()).unwrap_or("root");
            return Err(ParseError::Xml {
                line: line_at(self.text, self.text.len()),
                message: format!("document ends inside <{open}> (truncated?)"),
            });
        }
        Ok(Feed {
            title: self.feed_title,
            format: self.format,
            items: self.items,
            warnings: Vec::new(),
        })
    }
}

/// First line of a message, lower-cased initial, no final period.
fn one_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    let first = first.trim_end_matches('.');
    let mut chars = first.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
