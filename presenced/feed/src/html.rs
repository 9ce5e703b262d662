//! HTML → plain text: tags stripped, character references decoded, whitespace collapsed.
//!
//! This is a small, linear-time tokenizer, not an HTML parser: it does not build a tree,
//! never recurses and never allocates more than the output. It is meant for feed titles and
//! summaries and for messages that arrive as HTML (Mastodon mentions), where the goal is
//! readable text, not a faithful rendering.

use crate::entities;

/// Converts HTML to one line of plain text.
///
/// Tags are removed (the text of links is kept), `<script>`, `<style>` and `<template>`
/// elements are dropped with their content, comments and declarations are dropped,
/// character references (`&amp;`, `&#8217;`, `&hellip;`, …) are decoded, block-level
/// tags and `<br>` become a space, and runs of whitespace collapse into one space.
/// A `<` that does not start markup (`x < y`) and an `&` that does not start a known,
/// semicolon-terminated reference (`?a=1&copy=2`) are kept as they are.
///
/// ```
/// use presence_feed::plain_text;
/// assert_eq!(plain_text("<p>Hello&nbsp;<b>world</b>!</p><p>Bye</p>"), "Hello world! Bye");
/// assert_eq!(plain_text("1 < 2 &amp;&amp; R&D"), "1 < 2 && R&D");
/// ```
pub fn plain_text(html: &str) -> String {
    render(html, false)
}

/// Like [`plain_text`], but keeps line structure: `<br>` becomes a line break, paragraphs
/// and other blocks are separated by an empty line (list items and `<div>`s by a line
/// break). Whitespace inside a line is collapsed; there is never more than one empty line
/// in a row and no leading or trailing whitespace.
///
/// ```
/// use presence_feed::plain_text_lines;
/// assert_eq!(
///     plain_text_lines("<p>Hi <span>@bob</span></p><p>line one<br>line two</p>"),
///     "Hi @bob\n\nline one\nline two"
/// );
/// ```
pub fn plain_text_lines(html: &str) -> String {
    render(html, true)
}

/// For text that is already plain (Atom `type="text"`, JSON `content_text`): character
/// references are decoded (feeds routinely double-escape them) and whitespace collapsed,
/// but markup is left as it is (`<b>` stays literal text).
pub(crate) fn decode_text(text: &str) -> String {
    let mut out = TextBuilder::new(false);
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_text(&rest[..amp]);
        let (decoded, used) = decode_reference(&rest[amp..]);
        match decoded {
            Some(d) => out.push_text(&d),
            None => out.push_char('&'),
        }
        rest = &rest[amp + used..];
    }
    out.push_text(rest);
    out.finish()
}

/// Truncates `text` to at most `max` characters (on a char boundary). When something is
/// cut, the cut is moved back to a word boundary if one is near and `…` is appended (the
/// result then has at most `max` characters including the ellipsis).
pub(crate) fn truncate_chars(mut text: String, max: usize) -> String {
    // No more bytes than `max` is no more characters either, without counting them.
    if text.len() <= max {
        return text;
    }
    let Some((cut, _)) = text.char_indices().nth(max) else {
        return text;
    };
    // Keep room for the ellipsis.
    let mut end = text[..cut].char_indices().last().map_or(0, |(i, _)| i);
    // Prefer to cut at whitespace if there is some in the last 10%.
    let window = max / 10;
    if let Some(space) = text[..end].rfind(char::is_whitespace) {
        if text[space..end].chars().count() <= window {
            end = space;
        }
    }
    text.truncate(end);
    let trimmed_len = text.trim_end().len();
    text.truncate(trimmed_len);
    text.push('…');
    text
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    None,
    Space,
    Line,
    Paragraph,
}

/// Accumulates text, collapsing whitespace and materialising breaks lazily so that the
/// output never starts or ends with whitespace.
struct TextBuilder {
    out: String,
    keep_lines: bool,
    pending: Break,
}

impl TextBuilder {
    fn new(keep_lines: bool) -> Self {
        TextBuilder { out: String::new(), keep_lines, pending: Break::None }
    }

    fn push_break(&mut self, brk: Break) {
        if brk > self.pending {
            self.pending = brk;
        }
    }

    fn push_text(&mut self, text: &str) {
        // ASCII, most of any feed's text, is handled here by byte: a run of printable
        // characters is copied at once, and whitespace is a space to collapse. The rest
        // goes through push_char.
        let bytes = text.as_bytes();
        let mut at = 0;
        while let Some(&b) = bytes.get(at) {
            if b.is_ascii_graphic() {
                let run = bytes[at..].iter().position(|b| !b.is_ascii_graphic());
                let end = run.map_or(bytes.len(), |n| at + n);
                self.break_before_text();
                self.out.push_str(&text[at..end]);
                at = end;
            } else if matches!(b, b'\t'..=b'\r' | b' ') {
                self.push_break(Break::Space);
                at += 1;
            } else {
                let Some(c) = text[at..].chars().next() else { break };
                self.push_char(c);
                at += c.len_utf8();
            }
        }
    }

    fn push_char(&mut self, c: char) {
        if c.is_whitespace() {
            self.push_break(Break::Space);
            return;
        }
        if is_invisible(c) {
            return;
        }
        self.break_before_text();
        self.out.push(c);
    }

    /// The pending break, written out now that text follows it.
    fn break_before_text(&mut self) {
        if !self.out.is_empty() {
            match self.pending {
                Break::None => {}
                Break::Space => self.out.push(' '),
                Break::Line if self.keep_lines => self.out.push('\n'),
                Break::Paragraph if self.keep_lines => self.out.push_str("\n\n"),
                Break::Line | Break::Paragraph => self.out.push(' '),
            }
        }
        self.pending = Break::None;
    }

    fn finish(self) -> String {
        self.out
    }
}

/// Characters that are dropped from text output: controls (C0 other than whitespace,
/// DEL, C1), zero-width space, byte order marks and noncharacters.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{200b}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

fn render(html: &str, keep_lines: bool) -> String {
    let mut out = TextBuilder::new(keep_lines);
    let mut rest = html;
    while !rest.is_empty() {
        let special = memchr::memchr2(b'<', b'&', rest.as_bytes()).unwrap_or(rest.len());
        if special > 0 {
            out.push_text(&rest[..special]);
            rest = &rest[special..];
            continue;
        }
        if rest.starts_with('&') {
            let (text, used) = decode_reference(rest);
            match text {
                Some(decoded) => out.push_text(&decoded),
                None => out.push_char('&'),
            }
            rest = &rest[used..];
            continue;
        }
        match markup(rest) {
            Some((used, action)) => {
                rest = &rest[used..];
                match action {
                    Markup::Ignore => {}
                    Markup::Tag { name, end } => {
                        out.push_break(tag_break(name));
                        if !end {
                            if let Some(raw) =
                                RAW_TEXT.iter().find(|r| name.eq_ignore_ascii_case(r))
                            {
                                rest = skip_raw_text(rest, raw);
                            }
                        }
                    }
                }
            }
            None => {
                out.push_char('<');
                rest = &rest[1..];
            }
        }
    }
    out.finish()
}

/// Elements whose content is never text to show.
const RAW_TEXT: [&str; 3] = ["script", "style", "template"];

enum Markup<'a> {
    Ignore,
    Tag { name: &'a str, end: bool },
}

/// Recognises markup at the start of `s` (which starts with `<`): returns the number of
/// bytes it spans and what it is, or `None` if the `<` is just a character.
fn markup(s: &str) -> Option<(usize, Markup<'_>)> {
    let bytes = s.as_bytes();
    let next = *bytes.get(1)?;
    if let Some(body) = s.strip_prefix("<!--") {
        // `<!-->` and `<!--->` are (bogus) empty comments in HTML.
        if body.starts_with('>') {
            return Some((5, Markup::Ignore));
        }
        if body.starts_with("->") {
            return Some((6, Markup::Ignore));
        }
        let used = body.find("-->").map_or(s.len(), |i| 4 + i + 3);
        return Some((used, Markup::Ignore));
    }
    if next == b'!' || next == b'?' {
        let used = s.find('>').map_or(s.len(), |i| i + 1);
        return Some((used, Markup::Ignore));
    }
    let (end, name_start) = if next == b'/' { (true, 2) } else { (false, 1) };
    let first = *bytes.get(name_start)?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let name_len = bytes[name_start..]
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'_' | b'.')))
        .unwrap_or(bytes.len() - name_start);
    let name = &s[name_start..name_start + name_len];
    let used = tag_end(s, name_start + name_len);
    Some((used, Markup::Tag { name, end }))
}

/// Finds the end of a tag whose attributes start at `from`: the byte after the `>` that is
/// not inside a quoted attribute value. An unterminated quote falls back to the first `>`
/// after it; a tag without `>` runs to the end of the input.
fn tag_end(s: &str, from: usize) -> usize {
    let bytes = s.as_bytes();
    let mut i = from;
    let mut after_equals = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'>' => return i + 1,
            b'=' => after_equals = true,
            b'"' | b'\'' if after_equals => {
                match s[i + 1..].find(b as char) {
                    Some(close) => i += close + 1,
                    None => return s[i..].find('>').map_or(s.len(), |p| i + p + 1),
                }
                after_equals = false;
            }
            b if b.is_ascii_whitespace() => {}
            _ => after_equals = false,
        }
        i += 1;
    }
    s.len()
}

/// Skips the content of a raw-text element up to and including its end tag.
fn skip_raw_text<'a>(s: &'a str, name: &str) -> &'a str {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(pos) = s[from..].find("</") {
        let start = from + pos;
        let name_end = start + 2 + name.len();
        if let Some(candidate) = s.get(start + 2..name_end) {
            let boundary = bytes
                .get(name_end)
                .map_or(true, |b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/');
            if candidate.eq_ignore_ascii_case(name) && boundary {
                return &s[tag_end(s, name_end)..];
            }
        }
        from = start + 2;
    }
    ""
}

fn tag_break(name: &str) -> Break {
    const PARAGRAPH: &[&str] = &[
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "pre",
        "ul",
        "ol",
        "dl",
        "table",
        "hr",
        "figure",
        "section",
        "article",
        "aside",
        "header",
        "footer",
        "nav",
        "main",
        "address",
        "details",
        "fieldset",
    ];
    const LINE: &[&str] = &[
        "br",
        "div",
        "li",
        "dt",
        "dd",
        "tr",
        "figcaption",
        "caption",
        "summary",
        "option",
        "legend",
        "body",
        "html",
        "head",
        "title",
    ];
    const SPACE: &[&str] = &["td", "th", "img", "iframe", "video", "audio", "embed", "object"];
    let is = |list: &[&str]| list.iter().any(|t| name.eq_ignore_ascii_case(t));
    if is(PARAGRAPH) {
        Break::Paragraph
    } else if is(LINE) {
        Break::Line
    } else if is(SPACE) {
        Break::Space
    } else {
        Break::None
    }
}

/// Decodes a character reference at the start of `s` (which starts with `&`).
///
/// Returns the decoded text (`None` when this `&` is not a reference and stays literal)
/// and the number of bytes consumed. Named references must end with `;` (so `&copy=2`
/// in a URL stays as it is); numeric ones may omit it, as in HTML.
pub(crate) fn decode_reference(s: &str) -> (Option<String>, usize) {
    let bytes = s.as_bytes();
    if bytes.get(1) == Some(&b'#') {
        let (hex, digits_start) = match bytes.get(2) {
            Some(b'x' | b'X') => (true, 3),
            _ => (false, 2),
        };
        let digits = bytes[digits_start..]
            .iter()
            .take_while(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() })
            .count();
        if digits == 0 {
            return (None, 1);
        }
        let end = digits_start + digits;
        let used = if bytes.get(end) == Some(&b';') { end + 1 } else { end };
        let text = &s[digits_start..end];
        let value = if digits > 8 {
            None
        } else {
            u32::from_str_radix(text, if hex { 16 } else { 10 }).ok()
        };
        let c = value.map_or('\u{fffd}', numeric_reference_char);
        return (Some(c.to_string()), used);
    }
    let name_len = bytes[1..].iter().take(40).take_while(|b| b.is_ascii_alphanumeric()).count();
    if name_len == 0 || bytes.get(1 + name_len) != Some(&b';') {
        return (None, 1);
    }
    match entities::lookup(&s[1..1 + name_len]) {
        Some(text) => (Some(text.to_owned()), name_len + 2),
        None => (None, 1),
    }
}

/// The character a numeric reference stands for, with HTML's error handling: NUL,
/// surrogates and out-of-range values become U+FFFD, and C1 controls are read as the
/// windows-1252 characters that legacy content meant.
pub(crate) fn numeric_reference_char(value: u32) -> char {
    if (0x80..=0x9f).contains(&value) {
        return windows_1252_c1(value);
    }
    if value == 0 {
        return '\u{fffd}';
    }
    char::from_u32(value).unwrap_or('\u{fffd}')
}

fn windows_1252_c1(value: u32) -> char {
    const TABLE: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    value.checked_sub(0x80).and_then(|i| TABLE.get(i as usize)).copied().unwrap_or('\u{fffd}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_and_collapses_whitespace() {
        assert_eq!(plain_text("  <b>Hello</b>\n\n  <i>world</i>  "), "Hello world");
        assert_eq!(plain_text("a<br>b<br/>c</p><p>d"), "a b c d");
        assert_eq!(plain_text("<em>in</em>line"), "inline");
        assert_eq!(plain_text(""), "");
        assert_eq!(plain_text("   "), "");
    }

    #[test]
    fn keeps_link_text() {
        assert_eq!(
            plain_text(
                r#"Read <a href="https://example.com/?a=1&amp;b=2" title='x > y'>the post</a>."#
            ),
            "Read the post."
        );
        // Mastodon mention and link markup.
        let mastodon = r#"<p><span class="h-card"><a href="https://m.example/@bob" class="u-url mention">@<span>bob</span></a></span> see <a href="https://example.com/a/b"><span class="invisible">https://</span><span class="">example.com/a/b</span><span class="invisible"></span></a></p>"#;
        assert_eq!(plain_text(mastodon), "@bob see https://example.com/a/b");
    }

    #[test]
    fn decodes_references() {
        assert_eq!(plain_text("caf&eacute; &amp; &lt;tea&gt; &#8217;&#x2019;"), "café & <tea> ’’");
        assert_eq!(plain_text("a&nbsp;&nbsp;b"), "a b");
        assert_eq!(plain_text("&hellip;&mdash;&rsquo;"), "…—’");
        // Unknown names and references without `;` stay literal.
        assert_eq!(plain_text("&doesnotexist; ?page=1&copy=2"), "&doesnotexist; ?page=1&copy=2");
        assert_eq!(plain_text("AT&T & co"), "AT&T & co");
        // Numeric: C1 range read as windows-1252, invalid values replaced.
        assert_eq!(plain_text("&#150;&#x80;&#0;&#xD800;&#1114112;"), "–€\u{fffd}\u{fffd}\u{fffd}");
        assert_eq!(plain_text("&#8217 s"), "’ s");
        assert_eq!(plain_text("&#99999999999999;"), "\u{fffd}");
        assert_eq!(plain_text("&#;&#x;"), "&#;&#x;");
    }

    #[test]
    fn literal_less_than() {
        assert_eq!(plain_text("1 < 2 and 3 <4 but <b>x</b>"), "1 < 2 and 3 <4 but x");
        assert_eq!(plain_text("<"), "<");
        assert_eq!(plain_text("a <"), "a <");
        assert_eq!(plain_text("</"), "</");
    }

    #[test]
    fn drops_scripts_styles_comments() {
        assert_eq!(
            plain_text("a<script>alert('<b>x</b>')</script>b<style>p{}</style>c<!-- <p>d</p> -->e"),
            "abce"
        );
        assert_eq!(plain_text("a<SCRIPT type=x>1</Script >b"), "ab");
        assert_eq!(plain_text("a<script>never closed"), "a");
        assert_eq!(plain_text("a<!-- never closed"), "a");
        assert_eq!(plain_text("<!DOCTYPE html><html><body>x</body></html>"), "x");
        assert_eq!(plain_text("a<!---->b<!-->c"), "abc");
        assert_eq!(plain_text("<?php echo 1; ?>x"), "x");
    }

    #[test]
    fn unterminated_tags_and_quotes() {
        assert_eq!(plain_text("a <b"), "a");
        assert_eq!(plain_text(r#"a<a href="x>b"#), "ab");
        assert_eq!(plain_text(r#"x<img alt="unterminated>y"#), "x y");
    }

    #[test]
    fn drops_invisible_characters() {
        assert_eq!(plain_text("a\u{0}b\u{200b}c\u{feff}d\u{86}e\u{7}"), "abcde");
        // Joiners are kept (emoji sequences need them).
        assert_eq!(plain_text("👩\u{200d}💻"), "👩\u{200d}💻");
    }

    #[test]
    fn lines_variant() {
        assert_eq!(
            plain_text_lines("<p>one</p>\n<p>two<br>three</p><ul><li>a</li><li>b</li></ul>"),
            "one\n\ntwo\nthree\n\na\nb"
        );
        assert_eq!(plain_text_lines("<br><br><p></p>x<br><br><br>y<p>"), "x\ny");
        assert_eq!(plain_text_lines("text with\nsource newlines"), "text with source newlines");
    }

    #[test]
    fn decode_text_keeps_markup() {
        assert_eq!(
            decode_text(" <b>x</b> &amp;ldquo; &ldquo;A&rdquo;\n b "),
            "<b>x</b> &ldquo; “A” b"
        );
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate_chars("short".into(), 10), "short");
        assert_eq!(truncate_chars("exactly10!".into(), 10), "exactly10!");
        let t = truncate_chars("ééééééééééééé".into(), 5);
        assert_eq!(t, "éééé…");
        let t = truncate_chars("The quick brown fox jumps over the lazy dog".into(), 20);
        assert_eq!(t, "The quick brown fox…");
        assert!(t.chars().count() <= 20);
    }

    #[test]
    fn linear_time_on_pathological_input() {
        let nasty = "<a href='".repeat(20_000) + &"<!--".repeat(20_000) + &"&#".repeat(20_000);
        let start = std::time::Instant::now();
        let _ = plain_text(&nasty);
        let many_scripts = "<script>".repeat(50_000);
        let _ = plain_text(&many_scripts);
        let many_ends = "</scrip".repeat(50_000);
        let _ = plain_text(&format!("<script>{many_ends}"));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
