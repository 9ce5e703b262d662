//! The template renderer and length fitter, `presenced::fit`, for every network's rules.
//!
//! Input: byte 0 picks the rules and which limits to override, bytes 1-3 are the overrides,
//! the rest is UTF-8 (lossily) split at NUL into template, title, url, summary and tags.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presenced::fit::{self, FitError, Parts, Rules};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let rules = rules(data[0], u16::from_le_bytes([data[1], data[2]]), data[3]);
    let text = String::from_utf8_lossy(&data[4..]);
    let mut fields = text.split('\0');
    let template = fields.next().unwrap_or_default();
    let title = fields.next().unwrap_or_default();
    let url = fields.next().unwrap_or_default();
    let summary = fields.next().unwrap_or_default();
    let tags: Vec<String> = fields.map(str::to_owned).collect();
    check(template, &Parts { title, url, summary, tags: &tags }, &rules);
});

fn rules(pick: u8, max_len: u16, extra: u8) -> Rules {
    let mut rules = match pick % 6 {
        0 => Rules::mastodon(500, 23),
        1 => Rules::bluesky(),
        2 => Rules::x(),
        3 => Rules::facebook(),
        4 => Rules::outbox(),
        _ => Rules::mastodon(usize::from(max_len), usize::from(extra)),
    };
    if pick & 0x08 != 0 {
        rules.max_len = usize::from(max_len) % (rules.max_len + 1);
    }
    if pick & 0x10 != 0 {
        rules.max_bytes = Some(usize::from(max_len));
    }
    if pick & 0x20 != 0 {
        rules.url_len = Some(usize::from(extra % 64));
    }
    if pick & 0x40 != 0 {
        rules.url_len = None;
    }
    rules
}

fn check(template: &str, parts: &Parts<'_>, rules: &Rules) {
    let syntax = fit::check_template(template);
    let rendered = fit::render(template, parts, rules);
    if let Err(e) = &syntax {
        assert_eq!(rendered.as_ref(), Err(e), "check_template and render disagree");
    }
    match rendered {
        Ok(text) => {
            assert!(syntax.is_ok());
            assert!(fit::fits(&text, rules), "{rules:?}: {text:?} does not fit");
            let url = parts.url.trim();
            if template.contains("{url}") && !template.contains("{{url}") {
                assert!(text.contains(url), "url {url:?} cut from {text:?}");
            }
            let unlimited = Rules { max_len: usize::MAX, max_bytes: None, ..*rules };
            let full = fit::render(template, parts, &unlimited).expect("renders without limits");
            if fit::fits(&full, rules) {
                assert_eq!(text, full, "shortened though the whole text fits");
            }
        }
        Err(FitError::UrlTooLong { length, max_len }) => {
            assert!(length > max_len);
            assert_eq!(max_len, rules.max_len);
        }
        Err(FitError::UrlTooManyBytes { bytes, max_bytes }) => {
            assert!(bytes > max_bytes);
            assert_eq!(Some(max_bytes), rules.max_bytes);
        }
        Err(FitError::InvalidUrl(_)) => assert!(syntax.is_ok()),
        Err(e) => assert!(syntax.is_err(), "{e}"),
    }
    // `fits` is exactly the two limits.
    for text in [template, parts.title, parts.summary] {
        let within = fit::length(text, rules) <= rules.max_len
            && text.len() <= rules.max_bytes.unwrap_or(usize::MAX);
        assert_eq!(fit::fits(text, rules), within);
        if rules.url_len.is_none() && rules.counting == fit::Counting::Chars {
            assert_eq!(fit::length(text, rules), text.chars().count());
        }
    }
    for tag in parts.tags {
        if let Some(h) = fit::hashtag(tag) {
            assert!(h.starts_with('#') && h.len() > 1, "{tag:?} -> {h:?}");
            assert!(!h.chars().any(char::is_whitespace), "{tag:?} -> {h:?}");
        }
    }
}
