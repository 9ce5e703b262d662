//! `presence_feed::parse` on arbitrary bytes: RSS 0.9x/1.0/2.0, Atom, JSON Feed, and
//! anything else. Errors are fine; a panic, a hang or a broken guarantee is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_feed::{parse, Feed};
use url::Url;

/// The content type is picked by the input's length, so that seeds stay whole documents.
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/rss+xml"),
    Some("application/atom+xml; charset=iso-8859-1"),
    Some("text/xml; charset=utf-16"),
    Some("application/feed+json; charset=utf-8"),
    Some("text/html; charset=x-unknown"),
    Some("text/xml; charset=windows-1251"),
];

fuzz_target!(|data: &[u8]| {
    let base = Url::parse("https://blog.example/dir/feed.xml").expect("base url");
    let content_type = CONTENT_TYPES[data.len() % CONTENT_TYPES.len()];
    match parse(data, &base, content_type) {
        Ok(feed) => {
            check(&feed);
            // Parsing is a pure function of its input (checked on small inputs only, where
            // it costs little).
            if data.len() <= 4096 {
                let again = parse(data, &base, content_type).expect("second parse fails");
                assert_eq!(feed, again, "two parses differ");
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "multi-line error: {message:?}");
            assert!(!message.is_empty());
        }
    }
});

/// The guarantees documented on `Feed` and `Item`.
fn check(feed: &Feed) {
    assert!(feed.items.len() <= presence_feed::MAX_ITEMS);
    assert!(feed.warnings.len() <= presence_feed::MAX_WARNINGS + 1, "{}", feed.warnings.len());
    for w in &feed.warnings {
        assert!(!w.contains('\n'), "multi-line warning: {w:?}");
    }
    for item in &feed.items {
        assert!(item.title.chars().count() <= 1000, "title of {}", item.title.chars().count());
        assert!(
            item.summary.chars().count() <= 1000,
            "summary of {}",
            item.summary.chars().count()
        );
        assert!(item.tags.len() <= 64);
        for (i, tag) in item.tags.iter().enumerate() {
            assert!(!tag.is_empty(), "empty tag");
            assert!(tag.chars().count() <= 200, "tag of {}", tag.chars().count());
            assert!(!item.tags[..i].contains(tag), "duplicate tag {tag:?}");
        }
        if let Some(id) = &item.id {
            assert!(!id.is_empty() && id.trim() == id && id.len() <= 2048, "id {id:?}");
        }
        for url in [&item.link, &item.image].into_iter().flatten() {
            let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{url:?} is not a url: {e}"));
            assert!(matches!(parsed.scheme(), "http" | "https"), "not http(s): {url:?}");
        }
        assert!(item.identity().is_some(), "item without identity: {item:?}");
    }
}
