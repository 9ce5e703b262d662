//! Data-driven tests over the feed corpus in `tests/corpus/{real,hostile}` (see
//! `tests/corpus/README.md` and the MANIFEST.tsv files for where each file comes from
//! and its licence).
//!
//! `tests/corpus/expected.tsv` holds the reviewed expectation for every file: outcome,
//! format, item count, first item's title and link (or, for an error, a substring of the
//! message), the feed title, and a comment. It was generated with
//!
//! ```sh
//! PRESENCE_FEED_BLESS=1 cargo test -p presence-feed --test corpus
//! ```
//!
//! and then checked by hand against the files; regenerate only to review the diff (the
//! comment column is carried over).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use presence_feed::{parse, Feed, Format, ParseError};
use url::Url;

const COLUMNS: &str =
    "file\toutcome\tformat\titems\tfirst_title\tfirst_link_or_error\tfeed_title\tcomment";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Every corpus file, as `real/NAME` or `hostile/NAME`, sorted.
fn corpus_files() -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["real", "hostile"] {
        for entry in fs::read_dir(corpus_dir().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name != "MANIFEST.tsv" {
                files.push(format!("{dir}/{name}"));
            }
        }
    }
    files.sort();
    files
}

/// The URL each corpus file is parsed as if fetched from.
fn feed_url(file: &str) -> Url {
    Url::parse(&format!("https://feeds.example/corpus/{file}")).unwrap()
}

fn parse_file(file: &str) -> Result<Feed, ParseError> {
    let bytes = fs::read(corpus_dir().join(file)).unwrap();
    parse(&bytes, &feed_url(file), None)
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Rss09x => "rss0.9x",
        Format::Rss2 => "rss2",
        Format::Rss1Rdf => "rss1",
        Format::Atom1 => "atom",
        Format::JsonFeed => "json",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    file: String,
    outcome: String,
    format: String,
    items: String,
    first_title: String,
    first_link_or_error: String,
    feed_title: String,
    comment: String,
}

impl Row {
    fn actual(file: &str) -> Row {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        match parse_file(file) {
            Ok(feed) => {
                let first = feed.items.first();
                Row {
                    file: file.to_owned(),
                    outcome: "ok".to_owned(),
                    format: format_name(feed.format).to_owned(),
                    items: feed.items.len().to_string(),
                    first_title: clean(first.map_or("", |i| i.title.as_str())),
                    first_link_or_error: clean(first.and_then(|i| i.link.as_deref()).unwrap_or("")),
                    feed_title: clean(feed.title.as_deref().unwrap_or("")),
                    comment: String::new(),
                }
            }
            Err(e) => Row {
                file: file.to_owned(),
                outcome: "error".to_owned(),
                format: String::new(),
                items: String::new(),
                first_title: String::new(),
                first_link_or_error: clean(&e.to_string()),
                feed_title: String::new(),
                comment: String::new(),
            },
        }
    }

    fn to_line(&self) -> String {
        [
            &self.file,
            &self.outcome,
            &self.format,
            &self.items,
            &self.first_title,
            &self.first_link_or_error,
            &self.feed_title,
            &self.comment,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\t")
    }

    fn from_line(line: &str) -> Row {
        let f: Vec<&str> = line.split('\t').collect();
        assert!(f.len() == 8, "expected.tsv: 8 columns needed: {line:?}");
        Row {
            file: f[0].to_owned(),
            outcome: f[1].to_owned(),
            format: f[2].to_owned(),
            items: f[3].to_owned(),
            first_title: f[4].to_owned(),
            first_link_or_error: f[5].to_owned(),
            feed_title: f[6].to_owned(),
            comment: f[7].to_owned(),
        }
    }
}

fn expected_path() -> PathBuf {
    corpus_dir().join("expected.tsv")
}

fn read_expected() -> BTreeMap<String, Row> {
    let text = fs::read_to_string(expected_path()).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && *l != COLUMNS)
        .map(Row::from_line)
        .map(|r| (r.file.clone(), r))
        .collect()
}

#[test]
fn corpus_matches_expectations() {
    let files = corpus_files();
    let expected = read_expected();

    if std::env::var_os("PRESENCE_FEED_BLESS").is_some() {
        let mut out = String::new();
        out.push_str("# Reviewed expectations for every corpus file; see tests/corpus.rs.\n");
        out.push_str(
            "# For errors, first_link_or_error is a substring the message must contain.\n",
        );
        out.push_str(
            "# Each file is parsed as fetched from https://feeds.example/corpus/<file>, \
             with no content type.\n",
        );
        out.push_str(COLUMNS);
        out.push('\n');
        for file in &files {
            let mut row = Row::actual(file);
            if let Some(old) = expected.get(file) {
                row.comment = old.comment.clone();
            }
            out.push_str(&row.to_line());
            out.push('\n');
        }
        // Regenerating a test fixture on request, not daemon state.
        #[allow(clippy::disallowed_methods)]
        fs::write(expected_path(), out).unwrap();
        return;
    }

    let mut failures = Vec::new();
    for file in &files {
        let Some(want) = expected.get(file) else {
            failures.push(format!("{file}: no row in expected.tsv"));
            continue;
        };
        let got = Row::actual(file);
        let same = if want.outcome == "error" {
            got.outcome == "error" && got.first_link_or_error.contains(&want.first_link_or_error)
        } else {
            Row { comment: String::new(), ..want.clone() } == got
        };
        if !same {
            failures.push(format!("{file}:\n  want {}\n  got  {}", want.to_line(), got.to_line()));
        }
    }
    for file in expected.keys() {
        if !files.contains(file) {
            failures.push(format!("{file}: in expected.tsv but not in the corpus"));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Every file in the corpus directories has a manifest row (so that its origin and
/// licence are known), and every manifest row has its file.
#[test]
fn manifests_cover_the_corpus() {
    for dir in ["real", "hostile"] {
        let manifest = fs::read_to_string(corpus_dir().join(dir).join("MANIFEST.tsv")).unwrap();
        let listed: Vec<String> = manifest
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{dir}/{}", l.split('\t').next().unwrap()))
            .collect();
        let present: Vec<String> =
            corpus_files().into_iter().filter(|f| f.starts_with(&format!("{dir}/"))).collect();
        for f in &present {
            assert!(listed.contains(f), "{f} is not in {dir}/MANIFEST.tsv");
        }
        for f in &listed {
            assert!(present.contains(f), "{f} is listed but missing");
        }
    }
}

/// Parsing never panics and each file takes bounded time, also when the bytes are cut
/// short or damaged.
#[test]
fn every_file_and_damaged_copies_parse_without_panic_in_bounded_time() {
    let limit = Duration::from_secs(if cfg!(debug_assertions) { 10 } else { 2 });
    for file in corpus_files() {
        let bytes = fs::read(corpus_dir().join(&file)).unwrap();
        let url = feed_url(&file);
        let start = Instant::now();
        let _ = parse(&bytes, &url, None);
        assert!(start.elapsed() < limit, "{file} took {:?}", start.elapsed());

        // Truncations and byte damage at a few spread-out places (small files only, to
        // keep the test fast).
        if bytes.len() > 100_000 {
            continue;
        }
        for k in 1..6 {
            let cut = bytes.len() * k / 6;
            let _ = parse(&bytes[..cut], &url, None);
            let mut damaged = bytes.clone();
            for b in damaged.iter_mut().skip(cut).step_by(97).take(20) {
                const NASTY: &[u8] = b"<&>\"'\0\xff;";
                *b = NASTY[(*b as usize) % NASTY.len()];
            }
            let _ = parse(&damaged, &url, Some("text/xml; charset=utf-8"));
        }
    }
}

#[test]
fn entity_attacks_are_refused_quickly() {
    for file in [
        "hostile/local__rss2-billion-laughs.xml",
        "hostile/defusedxml__entity-expansion-bomb.xml",
        "hostile/local__rss2-xxe-external-entity.xml",
        "hostile/local__rss2-xxe-parameter-entity.xml",
        "hostile/feedvalidator__rss2-system-entity-file.xml",
    ] {
        let start = Instant::now();
        let err = parse_file(file).unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(500), "{file}");
        assert!(matches!(err, ParseError::EntityDeclaration { .. }), "{file}: {err}");
        assert!(err.to_string().contains("entity declarations are not allowed"), "{err}");
    }
}

/// Error messages are one line, start lower-case and have no final period.
#[test]
fn error_messages_are_one_clean_line() {
    for file in corpus_files() {
        if let Err(e) = parse_file(&file) {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{file}: {m:?}");
            assert!(!m.ends_with('.'), "{file}: {m:?}");
            assert!(
                m.starts_with(|c: char| c.is_lowercase() || c.is_ascii_digit()),
                "{file}: {m:?}"
            );
        }
    }
}

/// Items in the real feeds are usable: every kept item has an identity; links and images
/// are absolute http(s) URLs; texts are trimmed single lines within their limits.
#[test]
fn real_feed_items_are_well_formed() {
    for file in corpus_files() {
        let Ok(feed) = parse_file(&file) else {
            continue;
        };
        for (i, item) in feed.items.iter().enumerate() {
            let ctx = format!("{file} item {}", i + 1);
            assert!(item.identity().is_some(), "{ctx}");
            for url in item.link.iter().chain(item.image.iter()) {
                let parsed = Url::parse(url).unwrap();
                assert!(matches!(parsed.scheme(), "http" | "https"), "{ctx}: {url}");
            }
            for text in [&item.title, &item.summary].into_iter().chain(item.tags.iter()) {
                assert_eq!(text.trim(), text.as_str(), "{ctx}");
                assert!(!text.contains(['\n', '\t', '\r']), "{ctx}: {text:?}");
                assert!(text.chars().count() <= 1000, "{ctx}");
            }
            if let Some(id) = &item.id {
                assert!(!id.is_empty() && id.trim() == id, "{ctx}");
            }
        }
    }
}

fn utc(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

/// The date zoo states the expected reading of each pubDate in its description.
#[test]
fn date_zoo() {
    let feed = parse_file("hostile/local__rss2-date-zoo.xml").unwrap();
    assert_eq!(feed.items.len(), 27);
    let t = Some(utc("2006-02-09T23:59:45Z"));
    let expected: [Option<i64>; 27] = [
        t,
        t,
        t,
        t,
        t,
        t, // no zone: assumed UTC
        t,
        t, // wrong weekday ignored
        None,
        None,
        t,
        t, // no zone: UTC
        t,
        Some(utc("2006-02-09T22:59:45Z")),
        Some(utc("2006-02-09T00:00:00Z")),
        None, // bare unix number
        t,
        Some(utc("2006-02-09T22:59:45Z")), // "Do," (German weekday), +0100
        Some(utc("2006-02-09T22:59:45Z")), // French weekday and month, +0100
        Some(utc("2006-09-09T23:59:45Z")),
        Some(utc("2016-12-31T23:59:59Z")),
        Some(utc("0001-01-01T00:00:00Z")),
        Some(utc("9999-12-31T23:59:59Z")),
        None,
        t,
        None,
        t,
    ];
    for (i, (item, want)) in feed.items.iter().zip(expected).enumerate() {
        assert_eq!(item.published, want, "item {}: {}", i + 1, item.summary);
    }
}

/// feedvalidator's date tests: every item's description states its date.
#[test]
fn date_variants() {
    let feed = parse_file("hostile/feedvalidator__rss2-date-variants.xml").unwrap();
    assert_eq!(feed.items.len(), 30);
    let t = utc("2006-02-09T23:59:45Z");
    for item in &feed.items {
        let n: usize = item.title[..2].parse().unwrap();
        let want = match n {
            4 => utc("2006-02-09T23:59:00Z"),
            6 => utc("1996-02-09T23:59:45Z"),
            // Military zones read as UTC (RFC 2822 §4.3); one of the listed answers.
            9 => utc("2006-02-09T16:59:45Z"),
            10 => utc("2006-02-09T12:59:45Z"),
            11 => utc("2006-02-10T03:59:45Z"),
            27 => utc("1806-02-09T23:59:45Z"),
            28 => utc("1906-02-09T23:59:45Z"),
            29 => utc("2016-02-09T23:59:45Z"),
            30 => utc("2106-02-09T23:59:45Z"),
            _ => t,
        };
        assert_eq!(item.published, Some(want), "{}", item.title);
    }
}

#[test]
fn hostile_recoveries() {
    // HTML entities with the Netscape RSS 0.91 DOCTYPE.
    let feed =
        parse_file("hostile/feedvalidator__rss091-netscape-doctype-html-entities.xml").unwrap();
    assert_eq!(feed.format, Format::Rss09x);
    assert_eq!(feed.items[0].title, "Und tschüss.");

    // Undefined entity and legacy entity without `;` stay literal.
    let feed = parse_file("hostile/feedparser__undefined-entity.xml").unwrap();
    assert_eq!(feed.title.as_deref(), Some("testing &doesnotexist; entity"));
    let feed = parse_file("hostile/gofeed__legacy-entity-no-semicolon.xml").unwrap();
    assert_eq!(feed.title.as_deref(), Some("?page=1&copy=2;mode=x & done"));

    // Raw `&` in a link.
    let feed = parse_file("hostile/nodefeedparser__unescaped-ampersand-in-link.xml").unwrap();
    assert_eq!(feed.items.len(), 3);
    assert_eq!(feed.items[1].link.as_deref(), Some("http://example.com/bad?foo=1&bar=2"));

    // Atom type="text" title keeps its literal markup.
    let feed = parse_file("hostile/feedvalidator__atom-title-escaped-html-type-text.xml").unwrap();
    assert_eq!(feed.items[0].title, "<b>Invalid title</b>");

    // Script is dropped from an HTML title.
    let feed = parse_file("hostile/feedparser__atom-title-xss-crazy.xml").unwrap();
    assert!(!feed.items[0].title.contains("alert"), "{}", feed.items[0].title);
    assert!(!feed.items[0].title.contains('<'), "{}", feed.items[0].title);

    // Encodings.
    let feed = parse_file("hostile/miniflux__utf8-declared-windows1252.xml").unwrap();
    assert_eq!(feed.title.as_deref(), Some("Euro €"));
    let feed = parse_file("hostile/feedvalidator__declared-us-ascii-has-8bit.xml").unwrap();
    assert_eq!(feed.title.as_deref(), Some("£"));
    let feed = parse_file("hostile/simplepie__utf16be-no-bom-no-decl.xml").unwrap();
    assert_eq!(feed.items.len(), 1);
    let feed = parse_file("hostile/feedparser__greek-iso8859-7-date.xml").unwrap();
    assert!(feed.items.is_empty());

    // Duplicates are kept (deduplication is the caller's).
    let feed = parse_file("hostile/feedvalidator__rss2-duplicate-guid.xml").unwrap();
    assert_eq!(feed.items.len(), 2);
    assert_eq!(feed.items[0].identity(), feed.items[1].identity());

    // First of two guids.
    let feed = parse_file("hostile/nodefeedparser__braingle-two-guids-one-item.xml").unwrap();
    assert_eq!(feed.items[0].id.as_deref(), Some("http://www.braingle.com/50366.html"));

    // No guid and no link: kept, identity synthesised from the title.
    let feed = parse_file("hostile/feedvalidator__rss2-missing-guid-and-link.xml").unwrap();
    let item = &feed.items[0];
    assert_eq!((item.id.as_deref(), item.link.as_deref()), (None, None));
    assert!(item.identity().unwrap().starts_with("urn:presence-feed:text:"));
    assert!(feed.warnings.iter().any(|w| w.contains("no id or link")), "{:?}", feed.warnings);

    // Deep nesting: the item is read, the depth is reported.
    let feed = parse_file("hostile/local__rss2-deep-nesting.xml").unwrap();
    assert_eq!(feed.items.len(), 1);
    assert!(feed.warnings.iter().any(|w| w.contains("nested deeper")), "{:?}", feed.warnings);

    // Huge item: both items, bounded summary.
    let feed = parse_file("hostile/local__rss2-huge-item.xml").unwrap();
    assert_eq!(feed.items.len(), 2);
    assert!(feed.items[0].summary.chars().count() <= 1000);
}

#[test]
fn relative_links_and_xml_base() {
    // Atom, no xml:base: relative to the fetch URL.
    let feed = parse_file("hostile/feedrs__atom-relative-urls.xml").unwrap();
    assert_eq!(feed.items[0].link.as_deref(), Some("https://feeds.example/blog/2003/12/13/atom03"));

    // JSON Feed relative URLs.
    let feed = parse_file("hostile/feedextractor__jsonfeed-relative-urls.json").unwrap();
    assert_eq!(
        feed.items[0].link.as_deref(),
        Some("https://feeds.example/2020/08/07/json-feed-version.html")
    );

    // xml:base="" on the feed: the document URL.
    let feed = parse_file("hostile/nodefeedparser__atom-empty-xml-base.xml").unwrap();
    for item in &feed.items {
        assert!(item.link.as_deref().unwrap().starts_with("https://"), "{:?}", item.link);
    }
}
