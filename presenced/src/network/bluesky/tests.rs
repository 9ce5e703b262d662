//! Unit tests of the pure parts: record keys, facets, rendering, error judgement, session
//! data. The end-to-end tests (`tests/tests/bluesky.rs`) run the adapter against a real
//! PDS and AppView.

// Test fixtures are written directly and failures are loud: the daemon's rules do not apply.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;

use super::richtext::{self, Feature, Span};
use super::xrpc::{self, Effect, Failure};
use super::*;

#[test]
fn record_keys_are_stable_valid_tids_in_the_past() {
    let a = richtext::tid("0123456789abcdef0123456789abcdef");
    assert_eq!(a, richtext::tid("0123456789abcdef0123456789abcdef"));
    assert_ne!(a, richtext::tid("0123456789abcdef0123456789abcdee"));
    for i in 0..2000 {
        let t = richtext::tid(&format!("key {i}"));
        assert!(richtext::is_tid(&t), "{t}");
        // Decode: 11 characters of timestamp, 2 of clock id.
        let value = t.bytes().fold(0u64, |acc, b| {
            let digit = b"234567abcdefghijklmnopqrstuvwxyz".iter().position(|&c| c == b).unwrap();
            (acc << 5) | digit as u64
        });
        let micros = value >> 10;
        assert!(micros >= 1_420_070_400_000_000, "{t} before 2015");
        assert!(micros < 1_701_600_000_000_000, "{t} after 2023");
    }
    assert!(richtext::is_tid("3jzfcijpj2z2a"));
    assert!(!richtext::is_tid("kjzfcijpj2z2a"));
    assert!(!richtext::is_tid("3jzfcijpj2z2"));
}

fn links(spans: &[Span]) -> Vec<(usize, usize, String)> {
    spans
        .iter()
        .filter_map(|s| match &s.feature {
            Feature::Link(u) => Some((s.start, s.end, u.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_article_link_is_faceted_at_its_utf8_bytes() {
    let url = "https://blog.example/2026/über-🦀/";
    let text = format!("Neu: „Krabben“ 🦀 — {url} #Rust #2024 #Go.");
    let spans = richtext::detect(&text, &[url]);
    let l = links(&spans);
    assert_eq!(l.len(), 1);
    let (start, end, uri) = &l[0];
    assert_eq!(&text.as_bytes()[*start..*end], url.as_bytes());
    assert_eq!(uri, url);
    let tags: Vec<&str> = spans
        .iter()
        .filter_map(|s| match &s.feature {
            Feature::Tag(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(tags, ["Rust", "Go"], "digits only is no tag, trailing dot is not part of one");
    let go = spans.iter().find(|s| s.feature == Feature::Tag("Go".into())).unwrap();
    assert_eq!(&text[go.start..go.end], "#Go");
}

#[test]
fn urls_lose_trailing_punctuation_but_keep_balanced_parentheses() {
    let text = "see https://a.example/x. and (https://b.example/y) or https://en.wikipedia.org/wiki/Rust_(language), ok";
    let got: Vec<String> = links(&richtext::detect(text, &[])).into_iter().map(|l| l.2).collect();
    assert_eq!(
        got,
        [
            "https://a.example/x",
            "https://b.example/y",
            "https://en.wikipedia.org/wiki/Rust_(language)"
        ]
    );
    assert!(links(&richtext::detect("nohttps://x.example", &[])).is_empty());
}

#[test]
fn mentions_need_a_domain_shaped_handle() {
    let text = "@alice.test hi, cc @Bob.Example.com. and me@mail.example and @nodot (@carol.test)";
    let got: Vec<String> = richtext::detect(text, &[])
        .into_iter()
        .filter_map(|s| match s.feature {
            Feature::Mention(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(got, ["alice.test", "bob.example.com", "carol.test"]);
}

#[test]
fn facets_skip_unresolved_mentions() {
    let text = "@alice.test and @ghost.test https://x.example/";
    let spans = richtext::detect(text, &[]);
    let facets =
        richtext::facets(&spans, |h| (h == "alice.test").then(|| "did:plc:alice".to_owned()));
    assert_eq!(facets.len(), 2);
    assert_eq!(facets[0]["index"], json!({"byteStart": 0, "byteEnd": 11}));
    assert_eq!(facets[0]["features"][0]["did"], "did:plc:alice");
    assert_eq!(facets[1]["features"][0]["$type"], "app.bsky.richtext.facet#link");
}

#[test]
fn incoming_text_gets_full_links_from_facets() {
    // "example.com/a-very-long…" shortened by the client, "my blog" as anchor text.
    let text = "read example.com/a-very-lo... and my blog, ünïcödé";
    let short_start = text.find("example").unwrap();
    let short_end = text.find(" and").unwrap();
    let blog_start = text.find("my blog").unwrap();
    let facets = json!([
        {"index": {"byteStart": short_start, "byteEnd": short_end},
         "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/a-very-long-path"}]},
        {"index": {"byteStart": blog_start, "byteEnd": blog_start + 7},
         "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://blog.example/"}]},
        {"index": {"byteStart": 1000, "byteEnd": 1010},
         "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://bad.example/"}]},
    ]);
    assert_eq!(
        richtext::render(text, Some(&facets)),
        "read https://example.com/a-very-long-path and my blog (https://blog.example/), ünïcödé"
    );
    assert_eq!(richtext::render("plain", None), "plain");
}

#[test]
fn answers_start_with_the_mention_once() {
    assert_eq!(richtext::with_mention("bob.test", " thanks! "), "@bob.test thanks!");
    assert_eq!(richtext::with_mention("bob.test", "@bob.test thanks"), "@bob.test thanks");
}

#[test]
fn at_uris_and_web_urls() {
    let uri = "at://did:plc:abc/app.bsky.feed.post/3jzfcijpj2z2a";
    assert_eq!(
        richtext::parse_at_uri(uri),
        Some(("did:plc:abc", "app.bsky.feed.post", "3jzfcijpj2z2a"))
    );
    assert_eq!(
        richtext::web_url("bob.test", uri).as_deref(),
        Some("https://bsky.app/profile/bob.test/post/3jzfcijpj2z2a")
    );
    assert_eq!(richtext::parse_at_uri("at://did:plc:abc/app.bsky.feed.post"), None);
}

#[test]
fn errors_are_judged_by_what_they_mean_for_a_write() {
    let status = |status: u16, error: &str| Failure::Status {
        status,
        error: error.into(),
        message: "m".into(),
        wait: Some(Duration::from_secs(7)),
    };
    assert!(matches!(
        status(500, "InternalServerError").judge("w", Effect::Writes),
        NetError::InDoubt { .. }
    ));
    assert!(matches!(status(502, "").judge("r", Effect::Read), NetError::Transient { .. }));
    assert!(matches!(
        status(401, "AuthenticationRequired").judge("w", Effect::Writes),
        NetError::Unauthorized(_)
    ));
    assert!(matches!(
        status(400, "ExpiredToken").judge("w", Effect::Writes),
        NetError::Unauthorized(_)
    ));
    assert!(matches!(
        status(400, "InvalidRequest").judge("w", Effect::Writes),
        NetError::Rejected(_)
    ));
    assert_eq!(
        status(429, "RateLimitExceeded").judge("w", Effect::Writes),
        NetError::Transient {
            message: "w: HTTP 429 RateLimitExceeded: m".into(),
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(matches!(
        Failure::Lost("t".into()).judge("w", Effect::Writes),
        NetError::InDoubt { .. }
    ));
    assert!(matches!(
        Failure::Lost("t".into()).judge("r", Effect::Read),
        NetError::Transient { .. }
    ));
    assert!(status(400, "ExpiredToken").is_auth());
    assert!(status(401, "").is_auth());
    assert!(!status(400, "InvalidSwap").is_auth());
}

#[test]
fn rate_limit_headers() {
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut h = HeaderMap::new();
    h.insert("ratelimit-reset", HeaderValue::from_static("1800000090"));
    assert_eq!(xrpc::rate_limit_wait(&h, now), Some(Duration::from_secs(90)));
    h.insert("retry-after", HeaderValue::from_static("30"));
    assert_eq!(xrpc::rate_limit_wait(&h, now), Some(Duration::from_secs(30)));
    let mut past = HeaderMap::new();
    past.insert("ratelimit-reset", HeaderValue::from_static("1700000000"));
    assert_eq!(xrpc::rate_limit_wait(&past, now), Some(Duration::from_secs(1)));
    assert_eq!(xrpc::rate_limit_wait(&HeaderMap::new(), now), None);
}

#[test]
fn error_bodies_tolerate_proxies() {
    assert_eq!(
        xrpc::error_body(br#"{"error":"InvalidSwap","message":"Record was at bafy"}"#),
        ("InvalidSwap".to_owned(), "Record was at bafy".to_owned())
    );
    assert_eq!(xrpc::error_body(b"<html>502</html>"), (String::new(), String::new()));
}

fn secret() -> Secret {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "app-pass-word-here\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    crate::config::SecretSource::File(path).load(None).unwrap()
}

#[test]
fn the_session_survives_a_restart_and_secrets_stay_out_of_debug() {
    let mut stored = BTreeMap::new();
    for (k, v) in [
        ("identifier", "alice.test"),
        ("did", "did:plc:alice"),
        ("handle", "alice.test"),
        ("pds", "http://127.0.0.1:2583"),
        ("access_jwt", "ACCESS-SECRET"),
        ("refresh_jwt", "REFRESH-SECRET"),
    ] {
        stored.insert(k.to_owned(), v.to_owned());
    }
    stored.insert(
        "draft:k1".into(),
        json!({"text": "t", "createdAt": "2026-01-01T00:00:00.000Z"}).to_string(),
    );
    let b = Bluesky::new(
        "bsky",
        "https://pds.example/",
        "@alice.test",
        secret(),
        stored.clone(),
        reqwest::Client::new(),
    );
    assert_eq!(b.session_data(), stored);
    let debug = format!("{b:?}");
    assert!(!debug.contains("SECRET") && !debug.contains("app-pass"), "{debug}");
    assert!(debug.contains("did:plc:alice"));

    // Another handle in the config: the stored session is not used.
    let other = Bluesky::new(
        "bsky",
        "https://pds.example",
        "bob.test",
        secret(),
        stored,
        reqwest::Client::new(),
    );
    assert!(other.session.is_none());
    assert!(!other.session_data().contains_key("access_jwt"));
}

#[test]
fn the_pds_comes_from_the_did_document() {
    let doc = json!({"service": [
        {"id": "#other", "type": "X", "serviceEndpoint": "https://nope.example"},
        {"id": "did:plc:x#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example:8443/path"}
    ]});
    assert_eq!(pds_endpoint(&doc).as_deref(), Some("https://pds.example:8443"));
    assert_eq!(pds_endpoint(&json!({})), None);
}

#[test]
fn notifications_become_incoming_messages_in_their_threads() {
    let b = Bluesky::new(
        "bsky",
        DEFAULT_SERVICE,
        "me.test",
        secret(),
        BTreeMap::new(),
        reqwest::Client::new(),
    );
    let n = json!({
        "uri": "at://did:plc:bob/app.bsky.feed.post/3bbb",
        "cid": "bafybob",
        "reason": "reply",
        "indexedAt": "2026-11-28T10:00:05.000Z",
        "author": {"did": "did:plc:bob", "handle": "bob.test", "displayName": ""},
        "record": {"$type": "app.bsky.feed.post", "text": "nice", "createdAt": "2026-11-28T10:00:04.000Z",
                   "reply": {"root": {"uri": "at://did:plc:me/app.bsky.feed.post/3root", "cid": "c1"},
                             "parent": {"uri": "at://did:plc:me/app.bsky.feed.post/3par", "cid": "c2"}}}
    });
    let i = b.incoming(&n).unwrap();
    assert_eq!(i.thread, "at://did:plc:me/app.bsky.feed.post/3root");
    assert_eq!(i.in_reply_to.as_deref(), Some("at://did:plc:me/app.bsky.feed.post/3par"));
    assert_eq!((i.author.as_str(), i.display_name.as_str()), ("bob.test", "bob.test"));
    assert_eq!(i.at, 1_795_860_005);
    let mut mention = n.clone();
    mention["record"].as_object_mut().unwrap().remove("reply");
    assert_eq!(b.incoming(&mention).unwrap().thread, "at://did:plc:bob/app.bsky.feed.post/3bbb");
}

#[test]
fn descriptions_and_images() {
    assert_eq!(description("a\n\n b  c"), "a b c");
    assert_eq!(description(&"x".repeat(5000)).chars().count(), MAX_DESCRIPTION);
    assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
    assert_eq!(sniff_image(b"<html>"), None);
}

/// Regression (server_faults): a 429 with `Retry-After: 1` on one call made every call in the
/// next second fail unsent, each counted as a failed attempt of the post it was for, so that
/// a post's backoff grew to 40 s from two real faults. A window about to reset is waited out.
#[tokio::test]
async fn a_short_rate_limit_window_is_waited_out_not_failed() {
    use crate::network::responder::{json as answer, with_header, Server};
    let server = Server::start(|r| match r.path() {
        "/xrpc/app.bsky.notification.listNotifications" => with_header(
            answer(429, json!({"error": "RateLimitExceeded", "message": "slow down"})),
            "Retry-After",
            "1",
        ),
        _ => answer(200, json!({"uri": "at://x", "cid": "bafy"})),
    })
    .await;
    let mut xrpc = xrpc::Xrpc::new(reqwest::Client::new());
    let nsid = "app.bsky.notification.listNotifications";
    let limited = xrpc.call(&server.base, Method::GET, nsid, &[], &xrpc::Body::None, None).await;
    assert!(matches!(limited, Err(Failure::Status { status: 429, .. })), "{limited:?}");
    let started = std::time::Instant::now();
    let put = "com.atproto.repo.putRecord";
    let body = xrpc::Body::Json(json!({}));
    let written = xrpc.call(&server.base, Method::POST, put, &[], &body, None).await;
    assert!(written.is_ok(), "{written:?}");
    assert!(started.elapsed() >= Duration::from_millis(500), "the window was waited out");
    assert_eq!(server.requests().len(), 2);
}
