//! Textual pre-pass over a decoded XML document, before it reaches the XML tokenizer.
//!
//! * The XML declaration (and any whitespace before it) is removed: the text is UTF-8 now,
//!   whatever the declaration said.
//! * A `<!DOCTYPE>` whose internal subset declares entities is refused
//!   ([`ParseError::EntityDeclaration`]): no entity is ever expanded, so entity bombs and
//!   external entities (XXE) cannot do anything. Any other DOCTYPE (XHTML, Netscape RSS
//!   0.91) is removed; nothing it refers to is fetched.
//! * Character references are made safe for a strict XML tokenizer: the five predefined
//!   entities and valid numeric references are kept; HTML named entities (`&uuml;`, which
//!   RSS 0.91 feeds take from the Netscape DTD, or `&nbsp;`) become numeric references;
//!   numeric references to C1 controls are read as windows-1252 (as browsers do) and
//!   references to characters XML forbids become U+FFFD; any other `&` (a bare ampersand
//!   in a URL, `&copy=2`, `&undefined;`) is escaped so that it stays literal text.
//! * A document whose last tag is an unterminated end tag (`</rss` at end of input) gets
//!   its `>`.
//!
//! Removed text is replaced by as many line breaks as it contained, so line numbers in
//! later error messages still match the document.

use crate::html::numeric_reference_char;
use crate::{entities, line_at, ParseError, Warnings};

/// Runs the pre-pass. `text` is the decoded document.
pub(crate) fn prepare(text: &str, warnings: &mut Warnings) -> Result<String, ParseError> {
    let mut out = String::with_capacity(text.len() + text.len() / 64);
    let mut pos = skip_xml_declaration(text, &mut out);
    let mut counts = RefCounts::default();
    let bytes = text.as_bytes();

    while pos < text.len() {
        let rest = &text[pos..];
        let Some(special) = memchr::memchr2(b'<', b'&', rest.as_bytes()) else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..special]);
        pos += special;
        if bytes[pos] == b'&' {
            pos += fix_reference(text, pos, &mut out, &mut counts);
            continue;
        }
        let rest = &text[pos..];
        let copy_until = |terminator: &str, from: usize| {
            rest[from..].find(terminator).map_or(rest.len(), |i| from + i + terminator.len())
        };
        if rest.starts_with("<!--") {
            let end = copy_until("-->", 4);
            out.push_str(&rest[..end]);
            pos += end;
        } else if rest.starts_with("<![CDATA[") {
            let end = copy_until("]]>", 9);
            out.push_str(&rest[..end]);
            pos += end;
        } else if rest.starts_with("<?") {
            let end = copy_until("?>", 2);
            out.push_str(&rest[..end]);
            pos += end;
        } else if rest.get(..9).is_some_and(|s| s.eq_ignore_ascii_case("<!DOCTYPE")) {
            let end = doctype_end(rest).ok_or_else(|| ParseError::Xml {
                line: line_at(text, pos),
                message: "<!DOCTYPE> is not closed".to_owned(),
            })?;
            let doctype = &rest[..end];
            if declares_entities(doctype) {
                return Err(ParseError::EntityDeclaration { line: Some(line_at(text, pos)) });
            }
            push_newlines(&mut out, doctype);
            pos += end;
        } else {
            pos += copy_tag(text, pos, &mut out, &mut counts);
        }
    }

    complete_final_end_tag(&mut out, warnings);
    counts.report(text, warnings);
    Ok(out)
}

/// Skips leading whitespace and an XML declaration; returns where the document proper
/// starts, after pushing the line breaks that were skipped.
fn skip_xml_declaration(text: &str, out: &mut String) -> usize {
    let start =
        text.len() - text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}').len();
    let rest = &text[start..];
    let is_decl = rest.starts_with("<?xml")
        && rest[5..].starts_with(|c: char| c.is_ascii_whitespace() || c == '?');
    if !is_decl {
        push_newlines(out, &text[..start]);
        return start;
    }
    let end = rest.find("?>").map_or(text.len(), |i| start + i + 2);
    push_newlines(out, &text[..end]);
    end
}

fn push_newlines(out: &mut String, removed: &str) {
    for _ in removed.bytes().filter(|b| *b == b'\n') {
        out.push('\n');
    }
}

/// End of a `<!DOCTYPE …>` (including an internal subset in `[…]`), or `None` if it is
/// not closed.
fn doctype_end(s: &str) -> Option<usize> {
    let mut quote = None;
    let mut in_subset = false;
    for (i, b) in s.bytes().enumerate().skip(9) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'[') if !in_subset => in_subset = true,
            (None, b']') if in_subset => in_subset = false,
            (None, b'>') if !in_subset => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn declares_entities(doctype: &str) -> bool {
    let Some(open) = doctype.find('[') else {
        return false;
    };
    let subset = &doctype[open..];
    subset.as_bytes().windows(8).any(|w| w.eq_ignore_ascii_case(b"<!ENTITY"))
}

/// Copies a tag (from `<` to its `>`), fixing references inside quoted attribute values.
/// Returns the number of bytes consumed.
fn copy_tag(text: &str, start: usize, out: &mut String, counts: &mut RefCounts) -> usize {
    let bytes = text.as_bytes();
    let mut i = start;
    let mut quote: Option<u8> = None;
    let mut run_start = start;
    while i < bytes.len() {
        let b = bytes[i];
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), b'&') => {
                out.push_str(&text[run_start..i]);
                i += fix_reference(text, i, out, counts);
                run_start = i;
                continue;
            }
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'>') => {
                out.push_str(&text[run_start..=i]);
                return i + 1 - start;
            }
            // A `<` outside quotes means this tag was never closed; let the tokenizer
            // report it.
            (None, b'<') if i > start => break,
            _ => {}
        }
        i += 1;
    }
    out.push_str(&text[run_start..i]);
    i - start
}

#[derive(Default)]
struct RefCounts {
    html_named: usize,
    undefined: usize,
    undefined_first: Option<(usize, String)>,
    bare_ampersands: usize,
    bare_first: Option<usize>,
    replaced_numeric: usize,
}

impl RefCounts {
    fn report(&self, text: &str, warnings: &mut Warnings) {
        if let Some((pos, name)) = &self.undefined_first {
            warnings.push(format!(
                "line {}: undefined entity &{name}; kept as text ({} in all)",
                line_at(text, *pos),
                self.undefined
            ));
        }
        if let Some(pos) = self.bare_first {
            warnings.push(format!(
                "line {}: unescaped & kept as text ({} in all)",
                line_at(text, pos),
                self.bare_ampersands
            ));
        }
        if self.replaced_numeric > 0 {
            warnings.push(format!(
                "{} character reference(s) to characters not allowed in xml replaced with U+FFFD",
                self.replaced_numeric
            ));
        }
    }
}

/// Handles the `&` at `pos`, pushing its safe replacement; returns bytes consumed.
fn fix_reference(text: &str, pos: usize, out: &mut String, counts: &mut RefCounts) -> usize {
    let rest = &text[pos..];
    let bytes = rest.as_bytes();
    if bytes.get(1) == Some(&b'#') {
        let hex = matches!(bytes.get(2), Some(b'x' | b'X'));
        let digits_start = if hex { 3 } else { 2 };
        let digits = bytes[digits_start..]
            .iter()
            .take_while(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() })
            .count();
        let end = digits_start + digits;
        if digits > 0 && bytes.get(end) == Some(&b';') {
            let value = if digits > 8 {
                None
            } else {
                u32::from_str_radix(&rest[digits_start..end], if hex { 16 } else { 10 }).ok()
            };
            let c = value.map_or('\u{fffd}', numeric_reference_char);
            if is_xml_char(c) && value == Some(u32::from(c)) {
                out.push_str(&rest[..=end]);
            } else {
                let c = if is_xml_char(c) { c } else { '\u{fffd}' };
                if c == '\u{fffd}' {
                    counts.replaced_numeric += 1;
                }
                push_char_reference(out, c);
            }
            return end + 1;
        }
    } else {
        let name_len = bytes[1..]
            .iter()
            .take(40)
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
            .count();
        if name_len > 0 && bytes.get(1 + name_len) == Some(&b';') {
            let name = &rest[1..1 + name_len];
            if matches!(name, "lt" | "gt" | "amp" | "quot" | "apos") {
                out.push_str(&rest[..name_len + 2]);
                return name_len + 2;
            }
            if let Some(value) = entities::lookup(name) {
                counts.html_named += 1;
                for c in value.chars() {
                    push_char_reference(out, c);
                }
                return name_len + 2;
            }
            counts.undefined += 1;
            if counts.undefined_first.is_none() {
                counts.undefined_first = Some((pos, name.to_owned()));
            }
            out.push_str("&amp;");
            return 1;
        }
    }
    counts.bare_ampersands += 1;
    if counts.bare_first.is_none() {
        counts.bare_first = Some(pos);
    }
    out.push_str("&amp;");
    1
}

fn push_char_reference(out: &mut String, c: char) {
    use std::fmt::Write;
    let _ = write!(out, "&#{};", u32::from(c));
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// `…</rss` at the very end (only whitespace after it): add the missing `>`.
fn complete_final_end_tag(out: &mut String, warnings: &mut Warnings) {
    let trimmed = out.trim_end();
    let Some(open) = trimmed.rfind("</") else {
        return;
    };
    let name = &trimmed[open + 2..];
    let valid_name = name.starts_with(|c: char| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if valid_name {
        warnings.push(format!("document ends inside its last end tag </{name}; completed it"));
        let len = trimmed.len();
        out.truncate(len);
        out.push_str(">\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(s: &str) -> Result<String, ParseError> {
        prepare(s, &mut Warnings::default())
    }

    #[test]
    fn removes_declaration_keeping_lines() {
        assert_eq!(prep("\n  <?xml version=\"1.0\" encoding=\"x\"?>\n<a/>").unwrap(), "\n\n<a/>");
        assert_eq!(
            prep("<?xml-stylesheet href=\"x\"?><a/>").unwrap(),
            "<?xml-stylesheet href=\"x\"?><a/>"
        );
    }

    #[test]
    fn references() {
        assert_eq!(
            prep("<a>&amp;&lt;&gt;&quot;&apos;&#65;&#x42;</a>").unwrap(),
            "<a>&amp;&lt;&gt;&quot;&apos;&#65;&#x42;</a>"
        );
        assert_eq!(prep("<a>tsch&uuml;ss&nbsp;</a>").unwrap(), "<a>tsch&#252;ss&#160;</a>");
        assert_eq!(
            prep("<a>&doesnotexist; a&b &copy=2 & &#;</a>").unwrap(),
            "<a>&amp;doesnotexist; a&amp;b &amp;copy=2 &amp; &amp;#;</a>"
        );
        assert_eq!(
            prep("<a>&#128;&#0;&#xD800;&#x110000;&#1;</a>").unwrap(),
            "<a>&#8364;&#65533;&#65533;&#65533;&#65533;</a>"
        );
        assert_eq!(
            prep("<a href=\"?a=1&b=2&amp;c&eacute;\" t='&x'>&</a>").unwrap(),
            "<a href=\"?a=1&amp;b=2&amp;c&#233;\" t='&amp;x'>&amp;</a>"
        );
    }

    #[test]
    fn leaves_cdata_comments_and_pis_alone() {
        let s = "<a><![CDATA[a & b &nbsp;]]><!-- & --><?pi & ?></a>";
        assert_eq!(prep(s).unwrap(), s);
    }

    #[test]
    fn doctypes() {
        assert_eq!(
            prep("<!DOCTYPE rss PUBLIC \"-//Netscape Communications//DTD RSS 0.91//EN\"\n \"http://my.netscape.com/publish/formats/rss-0.91.dtd\">\n<rss/>").unwrap(),
            "\n\n<rss/>"
        );
        let bomb = "<!DOCTYPE x [\n<!ENTITY a \"aaaa\">\n<!ENTITY b \"&a;&a;\">\n]>\n<x>&b;</x>";
        assert!(matches!(prep(bomb), Err(ParseError::EntityDeclaration { line: Some(1) })));
        let param = "<!DOCTYPE rss SYSTEM \"http://x/evil.dtd\" [ <!entity % r SYSTEM \"http://x\"> %r; ]><rss/>";
        assert!(matches!(prep(param), Err(ParseError::EntityDeclaration { .. })));
        // An internal subset without entity declarations is tolerated (and dropped).
        assert_eq!(prep("<!DOCTYPE x [ <!ELEMENT x ANY> ]><x/>").unwrap(), "<x/>");
        assert!(matches!(prep("<!DOCTYPE x [ <!ELEMENT x ANY>"), Err(ParseError::Xml { .. })));
    }

    #[test]
    fn completes_truncated_last_end_tag() {
        let mut w = Warnings::default();
        assert_eq!(prepare("<rss>\n</rss\n", &mut w).unwrap(), "<rss>\n</rss>\n");
        assert_eq!(w.into_vec().len(), 1);
        assert_eq!(prep("<rss></rss>").unwrap(), "<rss></rss>");
        assert_eq!(prep("<rss>a </ b").unwrap(), "<rss>a </ b");
    }
}
