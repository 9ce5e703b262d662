//! Character encoding detection and transcoding to UTF-8.
//!
//! Order of authority: a byte order mark; then the `charset` of the content type; then
//! the encoding in the XML declaration; then UTF-8. A declared encoding that contradicts
//! the bytes is overridden: a document declared (or assumed) UTF-8 that is not valid
//! UTF-8 is decoded with the next candidate or, failing that, with the encoding that
//! `chardetng` guesses (or as UTF-8 with replacement characters when it is mostly valid
//! UTF-8); a document declared with a legacy encoding whose bytes are valid UTF-8 with
//! non-ASCII characters is read as UTF-8 (a common server misconfiguration). UTF-16
//! without a BOM is recognised from its first character. Unknown encoding names are
//! ignored with a warning.

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};

use crate::Warnings;

/// Bytes given to the encoding detector.
const DETECTION_SAMPLE: usize = 64 * 1024;

/// Decodes `bytes` into UTF-8 text (without BOM).
pub(crate) fn decode(bytes: &[u8], content_type: Option<&str>, warnings: &mut Warnings) -> String {
    let declared_charset = content_type.and_then(charset_param);
    let declared_xml = xml_declared_encoding(bytes);

    if let Some((encoding, bom_len)) = Encoding::for_bom(bytes) {
        for label in [&declared_charset, &declared_xml].into_iter().flatten() {
            if lookup(label) != Some(encoding) {
                warnings.push(format!(
                    "byte order mark says {}, declared encoding {label:?} ignored",
                    encoding.name().to_ascii_lowercase()
                ));
                break;
            }
        }
        let body = bytes.get(bom_len..).unwrap_or_default();
        return decode_with(encoding, body, warnings);
    }

    if let Some(encoding) = sniff_utf16(bytes) {
        return decode_with(encoding, bytes, warnings);
    }

    let candidates =
        [("content type charset", declared_charset), ("xml declaration", declared_xml)];
    for (source, label) in candidates {
        let Some(label) = label else { continue };
        let Some(encoding) = lookup(&label) else {
            warnings.push(format!("unknown encoding {label:?} in the {source}; ignored"));
            continue;
        };
        if encoding == UTF_16LE || encoding == UTF_16BE {
            // The declaration was readable as ASCII, so the document is not UTF-16.
            warnings.push(format!("{source} says {label:?} but the document is not utf-16"));
            continue;
        }
        if encoding == UTF_8 {
            if let Ok(text) = std::str::from_utf8(bytes) {
                return text.to_owned();
            }
            warnings.push(format!("{source} says {label:?} but the document is not valid utf-8"));
            continue;
        }
        if let Ok(text) = std::str::from_utf8(bytes) {
            if !text.is_ascii() {
                warnings.push(format!(
                    "{source} says {label:?} but the document is utf-8; decoded as utf-8"
                ));
                return text.to_owned();
            }
        }
        return decode_with(encoding, bytes, warnings);
    }

    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_owned();
    }

    // Not UTF-8 and nothing trustworthy declared.
    let (valid_non_ascii, invalid) = utf8_statistics(bytes);
    if valid_non_ascii > 0 && valid_non_ascii >= invalid {
        warnings.push(format!("{invalid} invalid utf-8 byte sequence(s) replaced with U+FFFD"));
        return String::from_utf8_lossy(bytes).into_owned();
    }
    // A prefix is plenty for detection and keeps the cost low on large documents.
    let sample = bytes.get(..DETECTION_SAMPLE).unwrap_or(bytes);
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(sample, true);
    let guess = detector.guess(None, false);
    warnings.push(format!(
        "document is not valid utf-8 and declares no usable encoding; decoded as {} (guessed)",
        guess.name().to_ascii_lowercase()
    ));
    decode_with(guess, bytes, warnings)
}

fn decode_with(encoding: &'static Encoding, bytes: &[u8], warnings: &mut Warnings) -> String {
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    if had_errors {
        warnings.push(format!(
            "bytes invalid in {} replaced with U+FFFD",
            encoding.name().to_ascii_lowercase()
        ));
    }
    text.into_owned()
}

/// An encoding for a label, refusing the "replacement" encoding (which would turn the
/// whole document into U+FFFD) and `x-user-defined`.
fn lookup(label: &str) -> Option<&'static Encoding> {
    let encoding = Encoding::for_label(label.trim().as_bytes())?;
    if encoding == encoding_rs::REPLACEMENT || encoding == encoding_rs::X_USER_DEFINED {
        return None;
    }
    Some(encoding)
}

/// Counts non-ASCII characters in valid UTF-8 runs and invalid sequences.
fn utf8_statistics(bytes: &[u8]) -> (usize, usize) {
    let mut valid_non_ascii = 0;
    let mut invalid = 0;
    for chunk in bytes.utf8_chunks() {
        valid_non_ascii += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        if !chunk.invalid().is_empty() {
            invalid += 1;
        }
    }
    (valid_non_ascii, invalid)
}

/// UTF-16 without a byte order mark, recognised by a first character that is ASCII markup
/// or whitespace with a zero high byte.
fn sniff_utf16(bytes: &[u8]) -> Option<&'static Encoding> {
    let likely = |b: u8| matches!(b, b'<' | b'{' | b' ' | b'\t' | b'\r' | b'\n');
    match bytes {
        [0, b, ..] if likely(*b) => Some(UTF_16BE),
        [b, 0, ..] if likely(*b) => Some(UTF_16LE),
        _ => None,
    }
}

/// The `charset` parameter of a content type, unquoted.
pub(crate) fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The `encoding` pseudo-attribute of an XML declaration at the start of the document
/// (after optional whitespace), read as ASCII.
fn xml_declared_encoding(bytes: &[u8]) -> Option<String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = bytes.get(start..)?;
    let head = head.get(..head.len().min(1024))?;
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(head.get(5..end)?).ok()?;
    let after = decl.split_once("encoding")?.1.trim_start();
    let after = after.strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = after[1..].split(quote).next()?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], ct: Option<&str>) -> (String, Vec<String>) {
        let mut w = Warnings::default();
        let text = decode(bytes, ct, &mut w);
        (text, w.into_vec())
    }

    #[test]
    fn utf8_default_and_bom() {
        assert_eq!(dec("<rss>é</rss>".as_bytes(), None).0, "<rss>é</rss>");
        let (t, w) = dec(b"\xef\xbb\xbf<rss/>", None);
        assert_eq!(t, "<rss/>");
        assert!(w.is_empty());
    }

    #[test]
    fn xml_declaration_encodings() {
        let mut doc = b"<?xml version='1.0' encoding='windows-1251'?><t>".to_vec();
        doc.extend_from_slice(&[0xcf, 0xf0, 0xe8, 0xe2, 0xe5, 0xf2]);
        assert!(dec(&doc, None).0.ends_with("<t>Привет"));

        let doc = b"  \n<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<t>caf\xe9</t>";
        assert!(dec(doc, None).0.ends_with("<t>café</t>"));

        // GB2312 (decoded as its superset GBK).
        let doc = b"<?xml version=\"1.0\" encoding=\"gb2312\"?><t>\xd6\xd0\xce\xc4</t>";
        assert!(dec(doc, None).0.ends_with("<t>中文</t>"));
    }

    #[test]
    fn content_type_charset_wins_over_declaration() {
        let doc = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><t>caf\xe9</t>";
        let (t, _) = dec(doc, Some("text/xml; Charset=\"ISO-8859-1\""));
        assert!(t.ends_with("<t>café</t>"));
        // ... unless it is contradicted by the bytes.
        let doc = "<?xml version=\"1.0\" encoding=\"koi8-r\"?><t>é€</t>".as_bytes();
        let (t, w) = dec(doc, Some("application/rss+xml; charset=windows-1252"));
        assert!(t.ends_with("<t>é€</t>"), "{t}");
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn declared_utf8_but_latin1() {
        let doc = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><t>Espa\xf1a \xa3</t>";
        let (t, w) = dec(doc, None);
        assert!(t.ends_with("<t>España £</t>"), "{t}");
        assert!(w.iter().any(|w| w.contains("not valid utf-8")), "{w:?}");
    }

    #[test]
    fn mostly_utf8_keeps_utf8() {
        let doc = b"<t>\xe2\x80\x99 quote \xe2\x80\x9d and stray \xa9</t>";
        let (t, w) = dec(doc, Some("text/xml; charset=utf-8"));
        assert_eq!(t, "<t>\u{2019} quote \u{201d} and stray \u{fffd}</t>");
        assert!(w.iter().any(|w| w.contains("replaced")), "{w:?}");
    }

    #[test]
    fn unknown_encoding_falls_back() {
        let (t, w) = dec(b"<?xml version=\"1.0\" encoding=\"x-fake\"?><rss/>", None);
        assert!(t.ends_with("<rss/>"));
        assert!(w[0].contains("unknown encoding \"x-fake\""), "{w:?}");
        // The replacement encoding is never used.
        let (t, _) = dec(b"<?xml version=\"1.0\" encoding=\"iso-2022-kr\"?><rss/>", None);
        assert!(t.ends_with("<rss/>"));
    }

    #[test]
    fn utf16_with_and_without_bom() {
        let text = "<rss version=\"2.0\">Ω</rss>";
        let be: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        let le: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        assert_eq!(dec(&be, None).0, text);
        assert_eq!(dec(&le, None).0, text);
        let mut bom_le = vec![0xff, 0xfe];
        bom_le.extend_from_slice(&le);
        assert_eq!(dec(&bom_le, None).0, text);
        // A lying declaration inside a UTF-16 document does not matter.
        let decl = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><a>Ω</a>";
        let be: Vec<u8> = decl.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        assert_eq!(dec(&be, None).0, decl);
    }

    #[test]
    fn bom_beats_declaration() {
        let (t, w) =
            dec(b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"us-ascii\"?><t>\xc3\xa9</t>", None);
        assert!(t.ends_with("<t>é</t>"));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn charset_parameter_parsing() {
        assert_eq!(charset_param("text/xml; charset=UTF-8").as_deref(), Some("UTF-8"));
        assert_eq!(charset_param("text/xml;charset='koi8-r' ; q=1").as_deref(), Some("koi8-r"));
        assert_eq!(charset_param("text/xml"), None);
        assert_eq!(charset_param("text/xml; charset="), None);
    }
}
