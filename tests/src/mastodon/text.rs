//! What Mastodon does with the text of a local status: finds its entities (URLs, @mentions,
//! #hashtags), counts its length as `StatusLengthValidator` does (grapheme clusters, every
//! URL 23, a remote mention only by its `@user` part, the spoiler text included) and renders
//! it to the sanitized HTML of `TextFormatter` (`<p>`, `<br />`, h-card mentions, links with
//! invisible/ellipsis spans, hashtag links).
//!
//! Entity extraction is a close approximation of twitter-text's, not a port: URLs need an
//! explicit `http://` or `https://` (Mastodon passes `extract_url_without_protocol: false`),
//! and trailing punctuation is not part of a URL.

use unicode_segmentation::UnicodeSegmentation;

/// Characters every URL counts for (`URL_PLACEHOLDER_CHARS`).
pub const URL_CHARS: usize = 23;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityKind {
    Url(String),
    /// `user` or `user@domain`, as written (without the `@`).
    Mention(String),
    Hashtag(String),
}

/// An entity at byte offsets `start..end` of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub start: usize,
    pub end: usize,
    pub kind: EntityKind,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Consumes `first+ ([.-]+ first+)*` from `s` (byte offset `at`), returns the end offset.
fn dotted_run(s: &str, at: usize, ok: fn(char) -> bool) -> usize {
    let run = |from: usize| -> usize {
        s[from..].char_indices().find(|&(_, c)| !ok(c)).map_or(s.len(), |(i, _)| from + i)
    };
    let mut end = run(at);
    if end == at {
        return at;
    }
    loop {
        let seps = s[end..]
            .char_indices()
            .find(|&(_, c)| c != '.' && c != '-')
            .map_or(s.len(), |(i, _)| end + i);
        if seps == end {
            return end;
        }
        let next = run(seps);
        if next == seps {
            return end;
        }
        end = next;
    }
}

fn prev_char(s: &str, at: usize) -> Option<char> {
    s[..at].chars().next_back()
}

fn mentions(s: &str) -> Vec<Entity> {
    let mut out = Vec::new();
    for (i, c) in s.char_indices() {
        if c != '@' {
            continue;
        }
        if prev_char(s, i).is_some_and(|p| p == '=' || p == '/' || is_word(p)) {
            continue;
        }
        let user_end = dotted_run(s, i + 1, is_username_char);
        if user_end == i + 1 {
            continue;
        }
        let mut end = user_end;
        if s[user_end..].starts_with('@') {
            let domain_end = dotted_run(s, user_end + 1, is_word);
            if domain_end > user_end + 1 {
                end = domain_end;
            }
        }
        out.push(Entity { start: i, end, kind: EntityKind::Mention(s[i + 1..end].to_owned()) });
    }
    out
}

fn urls(s: &str) -> Vec<Entity> {
    let mut out = Vec::new();
    let mut from = 0;
    while from < s.len() {
        let Some(rel) = s[from..].find("http") else { break };
        let start = from + rel;
        let rest = &s[start..];
        let scheme = if rest.starts_with("https://") {
            8
        } else if rest.starts_with("http://") {
            7
        } else {
            from = start + 4;
            continue;
        };
        if prev_char(s, start).is_some_and(|p| is_word(p) || p == '@' || p == '$' || p == '#') {
            from = start + 4;
            continue;
        }
        let mut end = rest
            .char_indices()
            .find(|&(_, c)| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .map_or(s.len(), |(i, _)| start + i);
        // Trailing punctuation ends a sentence, not a URL; an unbalanced `)` too.
        while let Some(last) = s[..end].chars().next_back() {
            let url = &s[start..end];
            let unbalanced_paren =
                last == ')' && url.matches('(').count() < url.matches(')').count();
            if matches!(last, '.' | ',' | ':' | ';' | '!' | '?' | '\'') || unbalanced_paren {
                end -= last.len_utf8();
            } else {
                break;
            }
        }
        let host_len = s[start + scheme..end].split(['/', '?', '#']).next().map_or(0, str::len);
        if host_len == 0 {
            from = start + scheme;
            continue;
        }
        out.push(Entity { start, end, kind: EntityKind::Url(s[start..end].to_owned()) });
        from = end;
    }
    out
}

fn hashtags(s: &str) -> Vec<Entity> {
    let mut out = Vec::new();
    for (i, c) in s.char_indices() {
        if c != '#' {
            continue;
        }
        if prev_char(s, i).is_some_and(|p| is_word(p) || p == '/' || p == ')' || p == '&') {
            continue;
        }
        let end = s[i + 1..]
            .char_indices()
            .find(|&(_, c)| !is_word(c))
            .map_or(s.len(), |(j, _)| i + 1 + j);
        let tag = &s[i + 1..end];
        if tag.is_empty() || tag.chars().all(|c| c.is_ascii_digit() || c == '_') {
            continue;
        }
        out.push(Entity { start: i, end, kind: EntityKind::Hashtag(tag.to_owned()) });
    }
    out
}

/// Overlapping entities: the one starting first wins (`remove_overlapping_entities`).
fn non_overlapping(mut all: Vec<Entity>) -> Vec<Entity> {
    all.sort_by_key(|e| (e.start, std::cmp::Reverse(e.end)));
    let mut out: Vec<Entity> = Vec::new();
    for e in all {
        if out.last().map_or(true, |last| e.start >= last.end) {
            out.push(e);
        }
    }
    out
}

/// URLs and mentions, as the length validator sees them.
pub fn urls_and_mentions(s: &str) -> Vec<Entity> {
    let mut all = urls(s);
    all.extend(mentions(s));
    non_overlapping(all)
}

/// URLs, mentions and hashtags, as the formatter sees them.
pub fn entities(s: &str) -> Vec<Entity> {
    let mut all = urls(s);
    all.extend(mentions(s));
    all.extend(hashtags(s));
    non_overlapping(all)
}

/// Whether Rails would call the string blank (empty or whitespace only).
pub fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

/// The length `StatusLengthValidator` compares with `max_characters`.
pub fn countable_length(text: &str, spoiler_text: &str) -> usize {
    let mut countable = String::from(spoiler_text);
    if !is_blank(text) {
        let mut last = 0;
        for e in urls_and_mentions(text) {
            countable.push_str(&text[last..e.start]);
            match &e.kind {
                EntityKind::Url(_) => countable.push_str(&"x".repeat(URL_CHARS)),
                EntityKind::Mention(name) => {
                    countable.push('@');
                    countable.push_str(name.split('@').next().unwrap_or_default());
                }
                EntityKind::Hashtag(_) => countable.push_str(&text[e.start..e.end]),
            }
            last = e.end;
        }
        countable.push_str(&text[last..]);
    }
    countable.graphemes(true).count()
}

/// `ERB::Util.h`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A resolved mention, for the formatter: the profile URL and the name shown.
#[derive(Debug, Clone)]
pub struct MentionLink {
    pub url: String,
    pub username: String,
}

fn link_to_url(url: &str) -> String {
    let prefix_len = ["https://www.", "http://www.", "https://", "http://"]
        .iter()
        .find(|p| url.starts_with(*p))
        .map_or(0, |p| p.len());
    let (prefix, rest) = url.split_at(prefix_len);
    let display: String = rest.chars().take(30).collect();
    let suffix: String = rest.chars().skip(30).collect();
    let cutoff = rest.chars().count() > 30;
    format!(
        "<a href=\"{}\" target=\"_blank\" rel=\"nofollow noopener noreferrer\" translate=\"no\">\
         <span class=\"invisible\">{}</span><span class=\"{}\">{}</span>\
         <span class=\"invisible\">{}</span></a>",
        escape(url),
        escape(prefix),
        if cutoff { "ellipsis" } else { "" },
        escape(&display),
        escape(&suffix)
    )
}

/// `TextFormatter#to_s` for a local status; `resolve` maps a written mention (`user` or
/// `user@domain`) to the account it names, or None to leave it as plain text.
pub fn to_html(
    text: &str,
    tag_base: &str,
    resolve: &dyn Fn(&str) -> Option<MentionLink>,
) -> String {
    if is_blank(text) {
        return String::new();
    }
    let mut html = String::new();
    let mut last = 0;
    for e in entities(text) {
        html.push_str(&escape(&text[last..e.start]));
        match &e.kind {
            EntityKind::Url(url) => html.push_str(&link_to_url(url)),
            EntityKind::Hashtag(tag) => html.push_str(&format!(
                "<a href=\"{}/tags/{}\" class=\"mention hashtag\" rel=\"tag\">#<span>{}</span></a>",
                escape(tag_base),
                escape(tag),
                escape(tag)
            )),
            EntityKind::Mention(name) => match resolve(name) {
                Some(link) => html.push_str(&format!(
                    "<span class=\"h-card\" translate=\"no\"><a href=\"{}\" class=\"u-url mention\">\
                     @<span>{}</span></a></span>",
                    escape(&link.url),
                    escape(&link.username)
                )),
                None => html.push_str(&escape(&text[e.start..e.end])),
            },
        }
        last = e.end;
    }
    html.push_str(&escape(&text[last..]));
    simple_format(&html)
}

/// Rails' `simple_format(html, {}, sanitize: false).delete("\n")`.
fn simple_format(html: &str) -> String {
    let normalized = html.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::new();
    let mut paragraphs: Vec<&str> = normalized.split("\n\n").collect();
    // Ruby's split drops trailing empty fields; runs of blank lines are one separator.
    while paragraphs.last().is_some_and(|p| p.trim_matches('\n').is_empty()) {
        paragraphs.pop();
    }
    let mut first = true;
    for p in paragraphs {
        let p = p.trim_matches('\n');
        if p.is_empty() && !first {
            continue;
        }
        first = false;
        out.push_str("<p>");
        out.push_str(&p.replace('\n', "<br />"));
        out.push_str("</p>");
    }
    out
}

/// The tags of a text, lowercased, in order, without duplicates.
pub fn tags(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in entities(text) {
        if let EntityKind::Hashtag(tag) = e.kind {
            let tag = tag.to_lowercase();
            if !out.contains(&tag) {
                out.push(tag);
            }
        }
    }
    out
}

/// The mentions written in a text (`user` or `user@domain`), in order.
pub fn written_mentions(text: &str) -> Vec<String> {
    entities(text)
        .into_iter()
        .filter_map(|e| match e.kind {
            EntityKind::Mention(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn counts_urls_as_23_and_remote_mentions_without_domain() {
        assert_eq!(countable_length("hello", ""), 5);
        let url = "https://blog.example/a/very/long/path/that/is/longer/than/23";
        assert_eq!(countable_length(url, ""), 23);
        assert_eq!(countable_length(&format!("see {url}."), ""), 4 + 23 + 1);
        assert_eq!(countable_length("@alice@other.host hi", ""), "@alice hi".len());
        assert_eq!(countable_length("hi", "cw"), 4);
        // One grapheme cluster each: a family emoji and an e with a combining accent.
        assert_eq!(countable_length("👨‍👩‍👧e\u{301}", ""), 2);
    }

    #[test]
    fn finds_entities_like_twitter_text() {
        let e = entities("@bob: see https://x.test/p?q=1, and (http://y.test/a_(b)) #Rust me@mail");
        let kinds: Vec<_> = e.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                EntityKind::Mention("bob".into()),
                EntityKind::Url("https://x.test/p?q=1".into()),
                EntityKind::Url("http://y.test/a_(b)".into()),
                EntityKind::Hashtag("Rust".into()),
            ]
        );
        // No mention inside a URL.
        assert_eq!(entities("https://other.host/@alice").len(), 1);
        assert_eq!(written_mentions("hi @alice@other.host."), vec!["alice@other.host"]);
    }

    #[test]
    fn renders_html_like_text_formatter() {
        let resolve = |name: &str| {
            (name == "alice@other.host").then(|| MentionLink {
                url: "https://other.host/@alice".into(),
                username: "alice".into(),
            })
        };
        let html = to_html(
            "@alice@other.host thanks <3\nsee https://blog.example/p\n\n@nobody bye",
            "http://h",
            &resolve,
        );
        assert_eq!(
            html,
            "<p><span class=\"h-card\" translate=\"no\"><a href=\"https://other.host/@alice\" \
             class=\"u-url mention\">@<span>alice</span></a></span> thanks &lt;3<br />see \
             <a href=\"https://blog.example/p\" target=\"_blank\" rel=\"nofollow noopener \
             noreferrer\" translate=\"no\"><span class=\"invisible\">https://</span><span \
             class=\"\">blog.example/p</span><span class=\"invisible\"></span></a></p>\
             <p>@nobody bye</p>"
        );
        let long = to_html("https://example.com/0123456789012345678901234567890123", "", &resolve);
        assert!(long.contains("<span class=\"ellipsis\">example.com/012345678901234567</span>"));
    }
}
