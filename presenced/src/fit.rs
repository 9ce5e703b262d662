//! Announcement text: renders a feed's template for one article and fits the result to one
//! network's length rules.
//!
//! A template is plain text with the placeholders `{title}`, `{url}`, `{summary}` and `{tags}`;
//! `{{` and `}}` stand for literal braces. When the rendered text is too long, it is shortened
//! in a fixed order, so that what readers lose first is what matters least: hashtags are dropped
//! from the end, then the summary is cut with an ellipsis (and dropped when little of it would
//! be left), then the title is cut the same way (and dropped as a last resort). The URL is
//! never cut, because a broken link makes the whole announcement useless; when the URL and the
//! template's own text alone are too long, [`render`] fails instead.
//!
//! # How each network counts
//!
//! Sources are the notes in `shared/api/networks.md` (§0, §1.2, §2.3, §3.2).
//!
//! - **Mastodon**: extended grapheme clusters of the text, with every `http(s)://` URL counted
//!   as `characters_reserved_per_url` (23). Current Mastodon's `StatusLengthValidator` uses
//!   `mb_chars.grapheme_length`; very old versions counted code points (`String#length`).
//!   Mastodon also counts a remote mention `@user@domain` as `@user` only. That concession is
//!   not applied here: announcements do not carry mentions, and counting the domain only ever
//!   over-estimates.
//! - **Bluesky**: extended grapheme clusters, URLs counted literally (there is no shortener; the
//!   link facet points at the text), and at most 3000 UTF-8 bytes.
//! - **X** (twitter-text config v3): weight 100 for code points in U+0000–U+10FF,
//!   U+2000–U+200D, U+2010–U+201F and U+2032–U+2037, 200 for all others, 280 × 100 allowed;
//!   every URL weighs 23 × 100 and an emoji sequence weighs 200 however many code points it has.
//! - **Facebook** and the local **outbox**: Unicode scalar values, URLs counted literally.
//!
//! # Where this deliberately over-estimates
//!
//! A post that is rejected for length is a failed announcement, while a post a few characters
//! shorter than it could have been costs nothing, so every guess errs on the long side:
//!
//! - A URL is taken to end at the last ASCII letter, digit, `/`, `_`, `-` or `#` of a run of
//!   characters that every network keeps inside URLs; anything after that (trailing
//!   punctuation, non-ASCII path characters) is counted as ordinary text. Only a URL whose host
//!   looks like a public domain name is given the fixed URL length; for any other URL-like text
//!   the larger of the fixed and the literal length is used, since a network may or may not
//!   link it.
//! - X also links bare domains such as `example.com` (its TLD list is not reproduced here), so
//!   on X anything shaped like `name.tld` counts as at least a URL: `Node.js` weighs 23.
//! - X counts the NFC form of the text. Normalising needs tables this crate does not carry; the
//!   text is counted as given, which is exact for NFC input (nearly all web text) and in the
//!   rare other cases mostly over-counts (`e` + U+0301 weighs 2 here, 1 on X).
//! - X knows only the emoji it has in its list. Pairs of regional indicators (flags) are
//!   counted per code point, since an unknown pair would be; keycaps count as one emoji only in
//!   their fully qualified form (with U+FE0F). A ZWJ sequence that X does not know is still
//!   counted as one emoji here; such sequences are not expected in blog titles.
//!
//! Parts are cleaned before use: runs of whitespace (including newlines) become one space, and
//! control characters, byte-order marks and the bidi embedding controls U+202A–U+202E (which
//! make a post invalid on X) are removed. Line breaks come only from the template.

use std::fmt;

use unicode_segmentation::UnicodeSegmentation;

/// The article fields a template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub title: &'a str,
    pub url: &'a str,
    pub summary: &'a str,
    /// Categories as the feed gives them; see [`hashtag`] for how they become hashtags.
    pub tags: &'a [String],
}

/// The unit a network counts text in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Unicode scalar values.
    Chars,
    /// Extended grapheme clusters (UAX #29).
    Graphemes,
    /// twitter-text v3 weighted length, reported in whole characters (weight / 100).
    XWeighted,
}

/// One network's length limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Maximum length in [`Rules::counting`] units.
    pub max_len: usize,
    /// `Some(n)`: every URL counts as `n`; `None`: URLs are counted like any other text.
    pub url_len: Option<usize>,
    pub counting: Counting,
    /// Maximum size of the UTF-8 encoding, where the network has one.
    pub max_bytes: Option<usize>,
}

impl Rules {
    /// `max_chars` and `url_len` come from the instance's `configuration.statuses`
    /// (`max_characters`, `characters_reserved_per_url`).
    pub fn mastodon(max_chars: usize, url_len: usize) -> Self {
        Rules {
            max_len: max_chars,
            url_len: Some(url_len),
            counting: Counting::Graphemes,
            max_bytes: None,
        }
    }

    pub fn bluesky() -> Self {
        Rules { max_len: 300, url_len: None, counting: Counting::Graphemes, max_bytes: Some(3000) }
    }

    pub fn x() -> Self {
        Rules { max_len: 280, url_len: Some(23), counting: Counting::XWeighted, max_bytes: None }
    }

    /// The sources state no limit for Page posts; 63,206 is the widely reported one. Whether
    /// Facebook counts UTF-16 units is unknown, which is moot for announcements this short.
    pub fn facebook() -> Self {
        Rules { max_len: 63_206, url_len: None, counting: Counting::Chars, max_bytes: None }
    }

    /// The outbox has no network behind it; its limit keeps dry runs comparable to real posts.
    pub fn outbox() -> Self {
        Rules { max_len: 500, url_len: None, counting: Counting::Chars, max_bytes: None }
    }
}

/// Why a template cannot be rendered for an article.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FitError {
    /// `{name}` where `name` is not one of the four placeholders.
    UnknownPlaceholder(String),
    /// A `{` (at this byte offset of the template) that is neither `{{` nor closed by `}`.
    UnclosedBrace { offset: usize },
    /// A `}` (at this byte offset of the template) that is not part of `}}` or a placeholder.
    UnmatchedBrace { offset: usize },
    /// The article URL is not an absolute http(s) URL without spaces.
    InvalidUrl(String),
    /// Even with no title, summary or tags the text is `length` long, more than `max_len`.
    UrlTooLong { length: usize, max_len: usize },
    /// Even with no title, summary or tags the text takes `bytes`, more than `max_bytes`.
    UrlTooManyBytes { bytes: usize, max_bytes: usize },
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FitError::UnknownPlaceholder(name) => write!(
                f,
                "unknown placeholder {{{name}}} (known: {{title}}, {{url}}, {{summary}}, {{tags}})"
            ),
            FitError::UnclosedBrace { offset } => {
                write!(f, "unclosed {{ at byte {offset} (write {{{{ for a literal brace)")
            }
            FitError::UnmatchedBrace { offset } => {
                write!(f, "unmatched }} at byte {offset} (write }}}} for a literal brace)")
            }
            FitError::InvalidUrl(url) => write!(f, "article url {url:?} is not an http(s) url"),
            FitError::UrlTooLong { length, max_len } => write!(
                f,
                "the url and the template's own text are {length} long, over the limit of {max_len}"
            ),
            FitError::UrlTooManyBytes { bytes, max_bytes } => write!(
                f,
                "the url and the template's own text take {bytes} bytes, over the limit of \
                 {max_bytes}"
            ),
        }
    }
}

impl std::error::Error for FitError {}

/// The length of `text` as the network described by `rules` counts it.
pub fn length(text: &str, rules: &Rules) -> usize {
    let scale = match rules.counting {
        Counting::XWeighted => X_SCALE,
        Counting::Chars | Counting::Graphemes => 1,
    };
    let total = match rules.url_len {
        None => count(text, rules.counting),
        Some(url_len) => {
            let url_units = url_len.saturating_mul(scale);
            let bare_domains = rules.counting == Counting::XWeighted;
            spans(text, bare_domains)
                .into_iter()
                .map(|(piece, kind)| match kind {
                    Span::Text => count(piece, rules.counting),
                    Span::Url => url_units,
                    Span::MaybeUrl => url_units.max(count(piece, rules.counting)),
                })
                .sum()
        }
    };
    total.div_ceil(scale)
}

/// Whether `text` is within both the length and the byte limit of `rules`.
pub fn fits(text: &str, rules: &Rules) -> bool {
    length(text, rules) <= rules.max_len && text.len() <= rules.max_bytes.unwrap_or(usize::MAX)
}

/// Checks a template's syntax: braces and placeholder names.
pub fn check_template(template: &str) -> Result<(), FitError> {
    parse_template(template).map(|_| ())
}

/// Renders `template` for `parts` and shortens the result until it fits `rules` (see the module
/// documentation for the order). The returned text always satisfies [`fits`].
pub fn render(template: &str, parts: &Parts<'_>, rules: &Rules) -> Result<String, FitError> {
    let pieces = parse_template(template)?;
    let url = clean_url(parts.url)?;
    let title = clean_text(parts.title);
    let summary = clean_text(parts.summary);
    let tags = hashtags(parts.tags);
    let uses = |field: Field| pieces.iter().any(|p| matches!(p, Piece::Field(f) if *f == field));
    let build =
        |title: &str, summary: &str, tags: &[String]| assemble(&pieces, title, url, summary, tags);
    let ok = |text: &str| fits(text, rules);

    let skeleton = build("", "", &[]);
    let needed = length(&skeleton, rules);
    if needed > rules.max_len {
        return Err(FitError::UrlTooLong { length: needed, max_len: rules.max_len });
    }
    if let Some(max_bytes) = rules.max_bytes.filter(|&max| skeleton.len() > max) {
        return Err(FitError::UrlTooManyBytes { bytes: skeleton.len(), max_bytes });
    }

    let full = build(&title, &summary, &tags);
    if ok(&full) {
        return Ok(full);
    }
    if uses(Field::Tags) {
        for kept in (0..tags.len()).rev() {
            let text = build(&title, &summary, &tags[..kept]);
            if ok(&text) {
                return Ok(text);
            }
        }
    }
    if uses(Field::Summary) {
        if let Some(text) = shorten(&summary, MIN_SUMMARY, |s| build(&title, s, &[]), ok) {
            return Ok(text);
        }
        let text = build(&title, "", &[]);
        if ok(&text) {
            return Ok(text);
        }
    }
    if uses(Field::Title) {
        if let Some(text) = shorten(&title, MIN_TITLE, |t| build(t, "", &[]), ok) {
            return Ok(text);
        }
    }
    Ok(skeleton)
}

/// Turns a feed category into a hashtag: `#` followed by the category's words with spaces and
/// punctuation removed, each word capitalised when there are several (`rust lang` →
/// `#RustLang`). Returns `None` when nothing of it would be linked as a hashtag: no letter at
/// all (Mastodon and X do not link `#2024`).
pub fn hashtag(tag: &str) -> Option<String> {
    let mut words: Vec<&str> = Vec::new();
    let mut start = None;
    for (i, g) in tag.grapheme_indices(true) {
        // Judging whole clusters keeps combining marks with their letter.
        let wordy = g.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_');
        match (wordy, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push(&tag[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(&tag[s..]);
    }
    if !words.iter().any(|w| w.chars().any(char::is_alphabetic)) {
        return None;
    }
    let mut out = String::from("#");
    if let [word] = words.as_slice() {
        out.push_str(word);
        return Some(out);
    }
    for word in words {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    Some(out)
}

/// A truncated summary shorter than this says nothing and only costs the reader a glance.
const MIN_SUMMARY: usize = 20;
/// Link cards repeat the title anyway, so a stub of one is worth less than the space.
const MIN_TITLE: usize = 8;
const ELLIPSIS: &str = "…";
const X_SCALE: usize = 100;
const X_EMOJI_WEIGHT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Title,
    Url,
    Summary,
    Tags,
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Field(Field),
}

fn parse_template(template: &str) -> Result<Vec<Piece>, FitError> {
    let bytes = template.as_bytes();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut from = 0;
    let mut i = 0;
    while i < bytes.len() {
        let brace = bytes[i];
        if brace != b'{' && brace != b'}' {
            i += 1;
            continue;
        }
        text.push_str(&template[from..i]);
        if bytes.get(i + 1) == Some(&brace) {
            text.push(char::from(brace));
            i += 2;
        } else if brace == b'}' {
            return Err(FitError::UnmatchedBrace { offset: i });
        } else {
            let name_len = template[i + 1..]
                .find(['{', '}'])
                .filter(|&n| bytes.get(i + 1 + n) == Some(&b'}'))
                .ok_or(FitError::UnclosedBrace { offset: i })?;
            let name = &template[i + 1..i + 1 + name_len];
            let field = match name {
                "title" => Field::Title,
                "url" => Field::Url,
                "summary" => Field::Summary,
                "tags" => Field::Tags,
                _ => return Err(FitError::UnknownPlaceholder(name.to_owned())),
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Field(field));
            i += name_len + 2;
        }
        from = i;
    }
    text.push_str(&template[from..]);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// Substitutes the parts and tidies whitespace: runs of spaces (often left by an empty
/// placeholder) become one and lines are trimmed. A line left blank by empty placeholders
/// disappears with its line break; blank lines written in the template separate paragraphs, at
/// most one between two lines of text. The text is trimmed.
fn assemble(pieces: &[Piece], title: &str, url: &str, summary: &str, tags: &[String]) -> String {
    // Parts never contain line breaks (see `clean_text`), so lines are the template's lines.
    let tags = tags.join(" ");
    let mut lines = vec![(String::new(), false)];
    for piece in pieces {
        let value = match piece {
            Piece::Text(t) => {
                for (k, segment) in t.split('\n').enumerate() {
                    if k > 0 {
                        lines.push((String::new(), false));
                    }
                    push_last(&mut lines, segment, false);
                }
                continue;
            }
            Piece::Field(Field::Title) => title,
            Piece::Field(Field::Url) => url,
            Piece::Field(Field::Summary) => summary,
            Piece::Field(Field::Tags) => &tags,
        };
        push_last(&mut lines, value, true);
    }
    let mut out = String::new();
    let mut blank = false;
    for (line, has_field) in &lines {
        let mut words = line.split([' ', '\t', '\r']).filter(|w| !w.is_empty()).peekable();
        if words.peek().is_none() {
            blank |= !has_field;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank { "\n\n" } else { "\n" });
        }
        blank = false;
        for (k, word) in words.enumerate() {
            if k > 0 {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

fn push_last(lines: &mut [(String, bool)], text: &str, field: bool) {
    if let Some((line, has_field)) = lines.last_mut() {
        line.push_str(text);
        *has_field |= field;
    }
}

fn clean_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gap = false;
    for c in s.chars() {
        if c.is_whitespace() {
            gap = true;
        } else if !is_unwanted(c) {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        }
    }
    out
}

fn is_unwanted(c: char) -> bool {
    c.is_control() || matches!(c, '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}' | '\u{202A}'..='\u{202E}')
}

/// An empty URL is allowed (the placeholder renders as nothing); anything else must be a URL
/// the networks can link, since it is the one part that is never shortened.
fn clean_url(url: &str) -> Result<&str, FitError> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(url);
    }
    let parsed = url::Url::parse(url).ok();
    let linkable = parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if linkable {
        Ok(url)
    } else {
        Err(FitError::InvalidUrl(url.to_owned()))
    }
}

fn hashtags(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for tag in tags {
        if let Some(h) = hashtag(tag) {
            // Networks treat hashtags case-insensitively, so `#Rust #rust` is one tag twice.
            let key = h.to_lowercase();
            if !seen.contains(&key) {
                seen.push(key);
                out.push(h);
            }
        }
    }
    out
}

/// Cuts `text` to the longest prefix that, with an ellipsis and passed through `build`, still
/// `fits`. Returns the built text, or `None` when less than `min` graphemes would remain.
fn shorten(
    text: &str,
    min: usize,
    build: impl Fn(&str) -> String,
    fits: impl Fn(&str) -> bool,
) -> Option<String> {
    // cuts[k] is the byte offset just after the first k + 1 graphemes, short of the whole text.
    let cuts: Vec<usize> = text.grapheme_indices(true).skip(1).map(|(i, _)| i).collect();
    let with_ellipsis = |kept: usize| {
        let mut prefix = ellipsis_base(&text[..cuts[kept - 1]]).to_owned();
        prefix.push_str(ELLIPSIS);
        prefix
    };
    let attempt = |kept: usize| {
        let built = build(&with_ellipsis(kept));
        fits(&built).then_some(built)
    };
    if cuts.len() < min.max(1) {
        return None;
    }
    // Longer prefixes give longer texts, so the longest one that fits can be searched for.
    let mut best = attempt(1)?;
    let (mut lo, mut hi) = (1, cuts.len());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match attempt(mid) {
            Some(built) => {
                lo = mid;
                best = built;
            }
            None => hi = mid - 1,
        }
    }
    let at_word_end = text[cuts[lo - 1]..].starts_with(char::is_whitespace);
    let mut kept = lo;
    if !at_word_end {
        // Prefer ending on a whole word, but not at the price of half the available room
        // (texts without spaces, such as Chinese, would otherwise lose everything).
        let word_end = (lo.div_ceil(2).max(min).max(1)..lo)
            .rev()
            .find(|&k| text[cuts[k - 1]..].starts_with(char::is_whitespace));
        if let Some((k, built)) = word_end.and_then(|k| Some((k, attempt(k)?))) {
            kept = k;
            best = built;
        }
    }
    let remaining = ellipsis_base(&text[..cuts[kept - 1]]).graphemes(true).count();
    (remaining >= min).then_some(best)
}

/// Drops trailing spaces and punctuation that would look wrong before an ellipsis, a whole
/// grapheme at a time.
fn ellipsis_base(prefix: &str) -> &str {
    const DANGLING: &[char] =
        &[',', ';', ':', '.', '-', '–', '—', '/', '(', '[', '“', '‘', '«', '„', '…', '·'];
    let mut end = prefix.len();
    for (i, g) in prefix.grapheme_indices(true).rev() {
        if !g.chars().all(|c| c.is_whitespace() || DANGLING.contains(&c)) {
            break;
        }
        end = i;
    }
    &prefix[..end]
}

fn count(text: &str, counting: Counting) -> usize {
    match counting {
        Counting::Chars => text.chars().count(),
        Counting::Graphemes => text.graphemes(true).count(),
        Counting::XWeighted => text.graphemes(true).map(x_cluster_weight).sum(),
    }
}

fn x_cluster_weight(cluster: &str) -> usize {
    let mut chars = cluster.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => x_char_weight(c),
        _ if is_emoji_sequence(cluster) => X_EMOJI_WEIGHT,
        _ => cluster.chars().map(x_char_weight).sum(),
    }
}

fn x_char_weight(c: char) -> usize {
    match u32::from(c) {
        // © and ® are the only emoji in the light ranges; X may count them as emoji (200).
        0xA9 | 0xAE => X_EMOJI_WEIGHT,
        0..=4351 | 8192..=8205 | 8208..=8223 | 8242..=8247 => 100,
        _ => 200,
    }
}

/// Whether a multi-code-point cluster is one emoji as X counts it: only emoji components, and
/// at least one pictograph or a fully qualified keycap. Flags are excluded (see module docs).
fn is_emoji_sequence(cluster: &str) -> bool {
    let (mut pictograph, mut keycap, mut qualified) = (false, false, false);
    for (k, c) in cluster.chars().enumerate() {
        match c {
            '\u{200D}' | '\u{1F3FB}'..='\u{1F3FF}' | '\u{E0020}'..='\u{E007F}' => {}
            '\u{FE0F}' => qualified = true,
            '\u{20E3}' => keycap = true,
            '0'..='9' | '#' | '*' if k == 0 => {}
            c if is_extended_pictographic(c) => pictograph = true,
            _ => return false,
        }
    }
    pictograph || (keycap && qualified)
}

/// unicode-segmentation keeps its Extended_Pictographic table private, but rule GB11 exposes it:
/// `c` ZWJ 😀 is a single grapheme cluster exactly when `c` is Extended_Pictographic. Asking the
/// segmenter keeps this in step with the Unicode version it implements.
fn is_extended_pictographic(c: char) -> bool {
    let probe: String = [c, '\u{200D}', '\u{1F600}'].iter().collect();
    probe.graphemes(true).count() == 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    Text,
    /// A URL every network is expected to link.
    Url,
    /// URL-like text a network may or may not link.
    MaybeUrl,
}

/// Splits `text` into plain text and URLs; with `bare_domains`, scheme-less `name.tld` runs
/// count as possible URLs too.
fn spans(text: &str, bare_domains: bool) -> Vec<(&str, Span)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    let mut i = 0;
    while i < bytes.len() {
        let found = scheme_url(text, i).or_else(|| {
            let run_start = i == 0 || !is_domain_byte(bytes[i - 1]);
            (bare_domains && run_start).then(|| bare_domain(text, i)).flatten()
        });
        match found {
            Some((end, kind)) => {
                if from < i {
                    out.push((&text[from..i], Span::Text));
                }
                out.push((&text[i..end], kind));
                i = end;
                from = end;
            }
            None => i += text[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    if from < text.len() {
        out.push((&text[from..], Span::Text));
    }
    out
}

/// An `http://` or `https://` URL starting at byte `at`: its end and how sure we are of it.
fn scheme_url(text: &str, at: usize) -> Option<(usize, Span)> {
    let rest = &text.as_bytes()[at..];
    let scheme_len = [&b"https://"[..], &b"http://"[..]]
        .into_iter()
        .find(|s| rest.len() >= s.len() && rest[..s.len()].eq_ignore_ascii_case(s))?
        .len();
    let body = &rest[scheme_len..];
    let mut len = body.iter().take_while(|&&b| is_url_byte(b)).count();
    while len > 0 && !is_url_end_byte(body[len - 1]) {
        len -= 1;
    }
    if len == 0 {
        return None;
    }
    let body = &text[at + scheme_len..at + scheme_len + len];
    // Networks do not link a URL glued to a preceding word, mention or hashtag.
    let glued = text[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '＠' | '$' | '#' | '＃'));
    let kind = if !glued && public_host(body) { Span::Url } else { Span::MaybeUrl };
    Some((at + scheme_len + len, kind))
}

/// Characters every network keeps inside a URL. Parentheses, brackets, quotes and non-ASCII
/// characters are left out because some networks end the URL there.
fn is_url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~/?#%&=+,;:!*'@$".contains(&b)
}

/// Characters both Mastodon and twitter-text allow as the last one of a URL.
fn is_url_end_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/_-#".contains(&b)
}

/// Whether a URL body (after the scheme) has a host that looks like a public domain name, the
/// kind the networks' URL recognisers accept.
fn public_host(body: &str) -> bool {
    let authority = body.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let port_ok = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
            if !port_ok {
                return false;
            }
            host
        }
        None => authority,
    };
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    labels.len() >= 2
        && labels.iter().all(|l| label_ok(l))
        && labels.last().is_some_and(|t| is_tld(t))
}

fn is_tld(label: &str) -> bool {
    let bytes = label.as_bytes();
    let letters = bytes.len() >= 2 && bytes.iter().all(u8::is_ascii_alphabetic);
    letters || (bytes.len() > 4 && bytes[..4].eq_ignore_ascii_case(b"xn--"))
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// A scheme-less `name.tld` starting at byte `at` (the start of a run of letters, digits, dots
/// and hyphens): the end of its last TLD-like label.
fn bare_domain(text: &str, at: usize) -> Option<(usize, Span)> {
    let run_len = text.as_bytes()[at..].iter().take_while(|&&b| is_domain_byte(b)).count();
    let run = &text[at..at + run_len];
    let mut end = None;
    let mut offset = 0;
    for (k, label) in run.split('.').enumerate() {
        offset += label.len();
        if k > 0 && is_tld(label) && !run.starts_with('.') {
            end = Some(offset);
        }
        offset += 1;
    }
    end.map(|end| (at + end, Span::MaybeUrl))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAMILY: &str = "👨\u{200D}👩\u{200D}👧";
    const URL: &str = "https://blog.example/2026/01/a-rather-long-article-slug";

    fn parts<'a>(title: &'a str, summary: &'a str, tags: &'a [String]) -> Parts<'a> {
        Parts { title, url: URL, summary, tags }
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn with_max(rules: Rules, max_len: usize) -> Rules {
        Rules { max_len, ..rules }
    }

    #[test]
    fn chars_count_scalar_values() {
        let r = Rules::outbox();
        assert_eq!(length("hello", &r), 5);
        assert_eq!(length("中文字", &r), 3);
        assert_eq!(length(FAMILY, &r), 5);
        assert_eq!(length("e\u{301}", &r), 2);
        assert_eq!(length(URL, &r), URL.chars().count());
        assert_eq!(length(URL, &Rules::facebook()), URL.len());
    }

    #[test]
    fn graphemes_count_clusters_and_bluesky_urls_literally() {
        let r = Rules::bluesky();
        assert_eq!(length("hello", &r), 5);
        assert_eq!(length("中文字", &r), 3);
        assert_eq!(length(FAMILY, &r), 1);
        assert_eq!(length("e\u{301}", &r), 1);
        assert_eq!(length("🇫🇷", &r), 1);
        assert_eq!(length("👍🏽", &r), 1);
        assert_eq!(length(&format!("see {URL}"), &r), 4 + URL.len());
    }

    #[test]
    fn mastodon_counts_graphemes_and_fixed_url_length() {
        let r = Rules::mastodon(500, 23);
        assert_eq!(length(FAMILY, &r), 1);
        assert_eq!(length(URL, &r), 23);
        assert_eq!(length("https://a.io", &r), 23);
        assert_eq!(length(&format!("New: {URL} {URL}"), &r), 5 + 23 + 1 + 23);
        assert_eq!(length(&format!("{URL}."), &r), 24);
        assert_eq!(length(&format!("({URL})"), &r), 25);
        assert_eq!(length("HTTPS://Blog.Example/x", &r), 23);
        // Mastodon does not link bare domains.
        assert_eq!(length("blog.example", &r), 12);
        // A host that is not a public domain may stay unlinked: never count less than it.
        let local = "http://localhost:8080/some/long/path/here";
        assert_eq!(length(local, &r), local.len());
        assert_eq!(length("http://10.0.0.1/", &r), 23);
        assert_eq!(length("http://", &r), 7);
        // Non-ASCII path characters may or may not be part of the link; count them apart.
        assert_eq!(length("https://blog.example/café", &r), 24);
    }

    #[test]
    fn x_weights_code_points() {
        let r = Rules::x();
        assert_eq!(length("hello", &r), 5);
        assert_eq!(length("中文字", &r), 6);
        assert_eq!(length("é", &r), 1);
        assert_eq!(length("e\u{301}", &r), 2);
        assert_eq!(length("—’", &r), 2);
        assert_eq!(length("€", &r), 2);
        assert_eq!(length(ELLIPSIS, &r), 2);
        assert_eq!(length("한국어", &r), 6);
        assert!(fits(&"a".repeat(280), &r));
        assert!(!fits(&"a".repeat(281), &r));
        assert!(fits(&"中".repeat(140), &r));
        assert!(!fits(&"中".repeat(141), &r));
        assert!(!fits(&format!("{}中", "a".repeat(279)), &r));
    }

    #[test]
    fn x_counts_emoji_sequences_as_two() {
        let r = Rules::x();
        assert_eq!(length(FAMILY, &r), 2);
        assert_eq!(length("👍🏽", &r), 2);
        assert_eq!(length("😀", &r), 2);
        assert_eq!(length("❤\u{FE0F}", &r), 2);
        assert_eq!(length("1\u{FE0F}\u{20E3}", &r), 2);
        assert_eq!(length("©", &r), 2);
        assert_eq!(length(&format!("a{FAMILY}b"), &r), 4);
        // Conservative cases (see module docs).
        assert_eq!(length("🇫🇷", &r), 4);
        assert_eq!(length("1\u{20E3}", &r), 3);
        assert_eq!(length("☺\u{301}", &r), 3);
    }

    #[test]
    fn x_counts_urls_and_bare_domains_as_23() {
        let r = Rules::x();
        assert_eq!(length(URL, &r), 23);
        assert_eq!(length("https://a.io", &r), 23);
        assert_eq!(length(&format!("中 {URL}"), &r), 2 + 1 + 23);
        assert_eq!(length("see example.com", &r), 4 + 23);
        assert_eq!(length("Node.js", &r), 23);
        assert_eq!(length("e.g. v1.2 U.S.", &r), 14);
        assert_eq!(length("xhttps://blog.example/", &r), 24);
        let long_bare = "a-really-long-domain-name-here.example";
        assert_eq!(length(long_bare, &r), long_bare.len());
        let literal = Rules { url_len: None, ..r };
        assert_eq!(length(&format!("{URL} and more"), &literal), URL.len() + 9);
    }

    #[test]
    fn extended_pictographic_probe() {
        assert!(is_extended_pictographic('😀'));
        assert!(is_extended_pictographic('©'));
        assert!(is_extended_pictographic('❤'));
        assert!(!is_extended_pictographic('a'));
        assert!(!is_extended_pictographic('🇦'));
        assert!(!is_extended_pictographic('\u{1F3FB}'));
        assert!(!is_extended_pictographic('\u{200D}'));
    }

    #[test]
    fn bluesky_caps_bytes() {
        let r = Rules::bluesky();
        let families = FAMILY.repeat(200);
        assert_eq!(length(&families, &r), 200);
        assert!(families.len() > 3000);
        assert!(!fits(&families, &r));
        let summary = FAMILY.repeat(250);
        let text = render("{title}\n\n{summary}\n{url}", &parts("Title", &summary, &[]), &r)
            .expect("renders");
        assert!(fits(&text, &r), "{} bytes", text.len());
        assert!(text.len() > 2900, "the byte cap, not the grapheme cap, binds");
        assert!(text.contains(URL) && text.contains('…'));
        let four_byte = "𝕏".repeat(1000);
        let text = render("{summary} {url}", &parts("", &four_byte, &[]), &r).expect("renders");
        assert!(fits(&text, &r));
        assert_eq!(length(&text, &r), 300);
    }

    #[test]
    fn hashtags_from_categories() {
        assert_eq!(hashtag("rust lang").as_deref(), Some("#RustLang"));
        assert_eq!(hashtag("rust").as_deref(), Some("#rust"));
        assert_eq!(hashtag("self-hosting").as_deref(), Some("#SelfHosting"));
        assert_eq!(hashtag("#already").as_deref(), Some("#already"));
        assert_eq!(hashtag("snake_case").as_deref(), Some("#snake_case"));
        assert_eq!(
            hashtag("cafe\u{301} cre\u{300}me").as_deref(),
            Some("#Cafe\u{301}Cre\u{300}me")
        );
        assert_eq!(hashtag("日本 語").as_deref(), Some("#日本語"));
        assert_eq!(hashtag("!!!"), None);
        assert_eq!(hashtag("  "), None);
        assert_eq!(hashtag("2024"), None);
        assert_eq!(hashtags(&tags(&["Rust", "rust", "", "web dev"])), tags(&["#Rust", "#WebDev"]));
    }

    #[test]
    fn template_escapes_and_errors() {
        let r = Rules::outbox();
        let text = render("{{title}} {title} }}{{", &parts("T", "", &[]), &r).expect("renders");
        assert_eq!(text, "{title} T }{");
        assert_eq!(
            render("{nope} {url}", &parts("T", "", &[]), &r),
            Err(FitError::UnknownPlaceholder("nope".into()))
        );
        assert_eq!(check_template("{Title}"), Err(FitError::UnknownPlaceholder("Title".into())));
        assert_eq!(check_template("a {title"), Err(FitError::UnclosedBrace { offset: 2 }));
        assert_eq!(check_template("{tit{le}"), Err(FitError::UnclosedBrace { offset: 0 }));
        assert_eq!(check_template("a } b"), Err(FitError::UnmatchedBrace { offset: 2 }));
        assert_eq!(check_template("New: {title} {url}\n\n{summary}\n{tags}"), Ok(()));
        assert_eq!(check_template(""), Ok(()));
        let e = check_template("{nope}").expect_err("unknown");
        assert!(e.to_string().starts_with("unknown placeholder {nope}"), "{e}");
    }

    #[test]
    fn invalid_urls_are_refused() {
        let r = Rules::outbox();
        for bad in ["ftp://a.example/", "not a url", "https://a.example/b c", "/relative"] {
            let p = Parts { title: "T", url: bad, summary: "", tags: &[] };
            assert!(matches!(render("{url}", &p, &r), Err(FitError::InvalidUrl(_))), "{bad}");
        }
        let p = Parts { title: "T", url: "", summary: "", tags: &[] };
        assert_eq!(render("{title} {url}", &p, &r).as_deref(), Ok("T"));
    }

    #[test]
    fn whitespace_is_tidied() {
        let r = Rules::outbox();
        let t = tags(&["a b"]);
        let render_ok = |tpl: &str, p: &Parts<'_>| render(tpl, p, &r).expect("renders");
        assert_eq!(render_ok("{title} {summary} {url}", &parts("T", "", &[])), format!("T {URL}"));
        assert_eq!(
            render_ok("{title}\n\n{summary}\n\n{url}", &parts("T", "", &[])),
            format!("T\n\n{URL}")
        );
        assert_eq!(
            render_ok("{title}\n{summary} {tags}\n{url}", &parts("T", "", &[])),
            format!("T\n{URL}")
        );
        assert_eq!(
            render_ok("  {tags}\r\n{title}:  {summary}\n{url}\n\n\n{tags}  ", &parts("T", "", &t)),
            format!("#AB\nT:\n{URL}\n\n#AB")
        );
        assert_eq!(
            render_ok("{title}\n{summary}", &parts(" a\n\tb ", "x\n\n\ny\u{7}\u{202E}", &[])),
            "a b\nx y"
        );
    }

    #[test]
    fn fitting_drops_tags_from_the_end_first() {
        let t = tags(&["one", "two", "three"]);
        let p = parts("A title", "A summary.", &t);
        let tpl = "{title}: {summary} {url} {tags}";
        let full = render(tpl, &p, &Rules::outbox()).expect("renders");
        let r = with_max(Rules::mastodon(500, 23), length(&full, &Rules::mastodon(500, 23)) - 1);
        let text = render(tpl, &p, &r).expect("renders");
        assert_eq!(text, format!("A title: A summary. {URL} #one #two"));
        let r = Rules { max_len: 45, ..r };
        let text = render(tpl, &p, &r).expect("renders");
        assert_eq!(text, format!("A title: A summary. {URL}"));
    }

    #[test]
    fn fitting_then_shortens_the_summary_at_a_word() {
        let t = tags(&["one"]);
        let summary = "The quick brown fox jumps over the lazy dog, and then it runs away";
        let p = parts("A title", summary, &t);
        let tpl = "{title}: {summary} {url} {tags}";
        let r = with_max(Rules::x(), 9 + 23 + 40);
        let text = render(tpl, &p, &r).expect("renders");
        assert!(fits(&text, &r));
        assert!(!text.contains('#'));
        let (head, _) = text.split_once(" https://").expect("url kept");
        assert!(head.starts_with("A title: The quick"));
        assert!(head.ends_with('…'));
        let cut = head.trim_start_matches("A title: ").trim_end_matches('…');
        assert!(summary.starts_with(cut));
        assert!(summary[cut.len()..].starts_with(' '), "cut at a word: {head:?}");
        assert!(!cut.ends_with(','));
    }

    #[test]
    fn fitting_drops_a_tiny_summary_then_shortens_the_title() {
        let summary = "A summary that is long enough to need cutting somewhere.";
        let title = "An article title with a number of words in it";
        let p = parts(title, summary, &[]);
        let tpl = "{title}\n{summary}\n{url}";
        // Room for the title and a few characters of summary: less than the minimum.
        let room = title.len() + 1 + 5 + 1 + 23;
        let r = with_max(Rules::mastodon(500, 23), room);
        assert_eq!(render(tpl, &p, &r).expect("renders"), format!("{title}\n{URL}"));
        let r = with_max(Rules::mastodon(500, 23), 20 + 1 + 23);
        let text = render(tpl, &p, &r).expect("renders");
        assert!(fits(&text, &r));
        let (head, url) = text.split_once('\n').expect("two lines");
        assert_eq!(url, URL);
        assert_eq!(head, "An article title…");
    }

    #[test]
    fn fitting_order_holds_for_every_limit() {
        let t = tags(&["alpha", "beta gamma", "delta"]);
        let title = "Title words that go on for a while";
        let summary = "Summary words that go on for quite a bit longer than the title does";
        let tpl = "{title}\n\n{summary}\n\n{url}\n{tags}";
        for base in [Rules::x(), Rules::bluesky(), Rules::mastodon(500, 23), Rules::outbox()] {
            let mut previous = 0;
            for max_len in 0..=250 {
                let r = with_max(base, max_len);
                let Ok(text) = render(tpl, &parts(title, summary, &t), &r) else {
                    assert!(max_len < length(URL, &r), "{max_len}");
                    continue;
                };
                assert!(fits(&text, &r));
                let len = length(&text, &r);
                assert!(len >= previous, "more room gave a shorter text at {max_len}");
                previous = len;
                let tags_kept = text.matches('#').count();
                let summary_whole = text.contains(summary);
                let summary_gone = !text.contains("Summary");
                let title_whole = text.contains(title);
                if tags_kept > 0 {
                    assert!(summary_whole && title_whole, "{text:?}");
                }
                if !summary_whole {
                    assert_eq!(tags_kept, 0, "{text:?}");
                    assert!(title_whole || summary_gone, "{text:?}");
                }
                assert!(text.contains(URL));
            }
        }
    }

    #[test]
    fn fitting_drops_the_title_last_and_never_cuts_the_url() {
        let p = parts("A fairly long title here", "Summary", &[]);
        let r = with_max(Rules::mastodon(500, 23), 23 + 6);
        assert_eq!(render("{title} {url}", &p, &r).expect("renders"), URL);
        let r = with_max(Rules::bluesky(), URL.len() - 1);
        assert_eq!(
            render("{title} {url}", &p, &r),
            Err(FitError::UrlTooLong { length: URL.len(), max_len: URL.len() - 1 })
        );
        let r = with_max(Rules::mastodon(500, 23), 30);
        assert_eq!(
            render("New on the blog: {title} {url}", &p, &r),
            Err(FitError::UrlTooLong { length: 17 + 23, max_len: 30 })
        );
        let r = Rules { max_bytes: Some(40), ..Rules::bluesky() };
        assert_eq!(
            render("{url}", &p, &r),
            Err(FitError::UrlTooManyBytes { bytes: URL.len(), max_bytes: 40 })
        );
    }

    #[test]
    fn shortening_never_splits_a_grapheme() {
        let summary = format!("{}e\u{301}{}", FAMILY.repeat(30), "中e\u{301}".repeat(30));
        for extra in 0..=100 {
            for rules in [Rules::x(), Rules::mastodon(500, 23), Rules::outbox()] {
                let r = with_max(rules, length(URL, &rules) + extra);
                let text =
                    render("{summary} {url}", &parts("", &summary, &[]), &r).expect("renders");
                assert!(fits(&text, &r));
                let body = text.trim_end_matches(URL).trim_end().trim_end_matches('…');
                assert!(summary.starts_with(body), "{body:?}");
                let rest = &summary[body.len()..];
                let whole = rest.is_empty()
                    || rest.starts_with(FAMILY)
                    || rest.starts_with("e\u{301}")
                    || rest.starts_with('中');
                assert!(whole, "split before {rest:?}");
            }
        }
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next_u64() % n as u64).expect("small")
        }

        fn text(&mut self, words: usize) -> String {
            const WORDS: &[&str] = &[
                "rust",
                "a",
                "announcement",
                "中文字",
                "日本語の",
                "e\u{301}te\u{301}",
                FAMILY,
                "👍🏽",
                "🇫🇷",
                "𝕏𝕏𝕏",
                "—",
                "“quoted”",
                "example.com",
                "Node.js",
                "https://x.io/p",
                "한국어",
                "Привет",
                "مرحبا",
                "©",
                "1\u{FE0F}\u{20E3}",
                "end.",
                "(aside)",
                "\u{202E}",
            ];
            let n = self.below(words + 1);
            (0..n).map(|_| WORDS[self.below(WORDS.len())]).collect::<Vec<_>>().join(" ")
        }
    }

    #[test]
    fn rendered_text_always_fits() {
        const TEMPLATES: &[&str] = &[
            "{title} {url}",
            "New on the blog: {title} {url}",
            "{title}\n\n{summary}\n\n{url}\n\n{tags}",
            "{tags} {title}: {summary} → {url}",
            "{summary}",
            "{title} ({url}) {{{tags}}}",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut rendered = 0;
        for round in 0..3000 {
            let title = rng.text(12);
            let summary = rng.text(80);
            let tag_list: Vec<String> = (0..rng.below(6)).map(|_| rng.text(3)).collect();
            let template = TEMPLATES[round % TEMPLATES.len()];
            let base = match rng.below(5) {
                0 => Rules::x(),
                1 => Rules::bluesky(),
                2 => Rules::mastodon(500, 23),
                3 => Rules::outbox(),
                _ => Rules { max_bytes: Some(20 + rng.below(400)), ..Rules::bluesky() },
            };
            let r = with_max(base, rng.below(base.max_len.min(400) + 1));
            let p = parts(&title, &summary, &tag_list);
            match render(template, &p, &r) {
                Ok(text) => {
                    rendered += 1;
                    assert!(fits(&text, &r), "{r:?} {template:?}: {text:?}");
                    if template.contains("{url}") {
                        assert!(text.contains(URL), "url cut: {text:?}");
                    }
                    let unlimited = Rules { max_len: usize::MAX, ..Rules::outbox() };
                    let full = render(template, &p, &unlimited).expect("renders");
                    if fits(&full, &r) {
                        assert_eq!(text, full, "shortened though the whole text fits");
                    }
                }
                Err(FitError::UrlTooLong { length: l, max_len }) => {
                    assert!(l > max_len);
                    assert_eq!(max_len, r.max_len);
                }
                Err(FitError::UrlTooManyBytes { bytes, max_bytes }) => assert!(bytes > max_bytes),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(rendered > 1500, "only {rendered} rendered");
    }
}
