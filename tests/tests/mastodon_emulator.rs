//! The Mastodon emulator (`presence_e2e::mastodon`) against its own promises and against an
//! independent client, Mastodon.py (`tests/mastodon_py/check.py`).
//!
//! The Rust-side tests talk raw HTTP/1.1 over TCP so that they see exactly what a client
//! sees: headers as sent, dropped connections, chunked streams cut in the middle.

// Test code: a panic is the failure report, and the assertions say what was expected.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_e2e::mastodon::{Fault, Mastodon};
use serde_json::{json, Value};

/// A response as read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn addr(m: &Mastodon) -> String {
    m.url().trim_start_matches("http://").to_owned()
}

/// Sends one request (`Connection: close`) and reads the whole answer; Err when the
/// server closed the connection without answering.
fn raw_request(
    m: &Mastodon,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<(&str, String)>,
) -> Result<Resp, String> {
    let mut stream = TcpStream::connect(addr(m)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", addr(m));
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let payload = match body {
        Some((content_type, data)) => {
            req.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                data.len()
            ));
            data
        }
        None => String::new(),
    };
    req.push_str("\r\n");
    req.push_str(&payload);
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err("connection closed without a response".into());
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("bad status")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body).0;
    }
    Ok(Resp { status, headers, body })
}

fn get(m: &Mastodon, path: &str, token: Option<&str>) -> Resp {
    raw_request(m, "GET", path, token, &[], None).unwrap()
}

fn post_form(m: &Mastodon, token: &str, fields: &[(&str, &str)], extra: &[(&str, &str)]) -> Resp {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    raw_request(
        m,
        "POST",
        "/api/v1/statuses",
        Some(token),
        extra,
        Some(("application/x-www-form-urlencoded", body)),
    )
    .unwrap()
}

fn post_status(m: &Mastodon, token: &str, text: &str) -> Resp {
    post_form(m, token, &[("status", text)], &[])
}

/// Decodes complete chunks; returns the data and whether the terminating chunk was seen.
/// A last chunk whose data is all there is included even if its trailing CRLF is not.
fn dechunk(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_text = String::from_utf8_lossy(&raw[at..at + eol]).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            return (out, false);
        };
        let data = at + eol + 2;
        if size == 0 {
            return (out, true);
        }
        if raw.len() < data + size {
            return (out, false);
        }
        out.extend_from_slice(&raw[data..data + size]);
        at = data + size + 2;
        if at > raw.len() {
            return (out, false);
        }
    }
}

/// Setup shared by most tests: the blogger (local, with a token) and alice (remote).
struct World {
    m: Mastodon,
    me: String,
    token: String,
    alice: String,
}

fn world() -> World {
    let m = Mastodon::start();
    let me = m.add_account("blogger", "Blogger");
    let token = m.token_for(&me);
    let alice = m.add_remote_account("alice", "other.host", "Alice");
    World { m, me, token, alice }
}

fn date_headers(r: &Resp) -> Vec<String> {
    r.headers.iter().filter(|(k, _)| k == "date").map(|(_, v)| v.replace("GMT", "+0000")).collect()
}

fn link_of(r: &Resp, rel: &str) -> Option<String> {
    let link = r.header("link")?;
    link.split(", ")
        .find(|part| part.ends_with(&format!("rel=\"{rel}\"")))
        .map(|part| part.split(">;").next().unwrap_or_default().trim_start_matches('<').to_owned())
}

fn path_of(url: &str, m: &Mastodon) -> String {
    url.strip_prefix(&m.url()).unwrap().to_owned()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

/// Moves the emulator's clock to the start of a fresh rate-limit window, so that a test's
/// requests cannot straddle a window boundary (windows are fixed, as Rack::Attack's).
fn fresh_rate_window(m: &Mastodon, period: u64) {
    let into = m.now().timestamp().rem_euclid(period as i64) as u64;
    m.advance_clock(Duration::from_secs(period - into));
}

#[test]
fn credentials_and_tokens() {
    let w = world();
    let r = get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.token));
    assert_eq!(r.status, 200);
    let me = r.json();
    assert_eq!(me["id"], w.me);
    assert_eq!(me["username"], "blogger");
    assert_eq!(me["acct"], "blogger");
    assert_eq!(me["display_name"], "Blogger");
    assert_eq!(me["url"], format!("{}/@blogger", w.m.url()));
    assert!(me["source"].is_object(), "verify_credentials adds source");

    for token in [None, Some("nope")] {
        let r = get(&w.m, "/api/v1/accounts/verify_credentials", token);
        assert_eq!(r.status, 401);
        assert_eq!(r.json(), json!({"error": "The access token is invalid"}));
        assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    }
    // A bad token is refused even where none is needed, except on the instance endpoints.
    assert_eq!(get(&w.m, &format!("/api/v1/accounts/{}/statuses", w.me), Some("nope")).status, 401);
    assert_eq!(get(&w.m, &format!("/api/v1/accounts/{}/statuses", w.me), None).status, 200);
    assert_eq!(get(&w.m, "/api/v1/instance", Some("nope")).status, 200);

    w.m.revoke_token(&w.me);
    assert_eq!(get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.token)).status, 401);
    // Remote accounts have no token; the acct is user@domain.
    assert_eq!(w.m.acct_of(&w.alice), "alice@other.host");
    assert_eq!(
        get(&w.m, &format!("/api/v1/accounts/{}", w.alice), None).json()["acct"],
        "alice@other.host"
    );
}

#[test]
fn instance_v1_and_v2() {
    let w = world();
    let v2 = get(&w.m, "/api/v2/instance", None);
    assert_eq!(v2.status, 200);
    let v2 = v2.json();
    assert_eq!(v2["configuration"]["statuses"]["max_characters"], 500);
    assert_eq!(v2["configuration"]["statuses"]["characters_reserved_per_url"], 23);
    assert_eq!(v2["configuration"]["urls"]["streaming"], w.m.streaming_url());
    assert!(w.m.streaming_url().starts_with("ws://127.0.0.1:"));
    assert_eq!(v2["api_versions"]["mastodon"], 2);

    w.m.set_max_characters(1000);
    // Rails ignores a trailing slash (Mastodon.py asks for /api/v1/instance/).
    let v1 = get(&w.m, "/api/v1/instance/", None).json();
    assert_eq!(v1["configuration"]["statuses"]["max_characters"], 1000);
    assert_eq!(v1["max_toot_chars"], 1000);
    assert_eq!(v1["urls"]["streaming_api"], w.m.streaming_url());
    assert!(v1["version"].as_str().unwrap().starts_with("4."));

    // One Date header, from the emulator's clock (Mastodon.py compares it with its own).
    let dates: Vec<_> = date_headers(&get(&w.m, "/api/v1/instance", None));
    assert_eq!(dates.len(), 1, "{dates:?}");
    let date = chrono::DateTime::parse_from_rfc2822(&dates[0]).unwrap();
    assert!((date.timestamp() - w.m.now().timestamp()).abs() <= 2);
    w.m.advance_clock(Duration::from_secs(7200));
    let later = date_headers(&get(&w.m, "/api/v1/instance", None));
    let later = chrono::DateTime::parse_from_rfc2822(&later[0]).unwrap();
    assert!(later.timestamp() - date.timestamp() >= 7200);

    w.m.set_instance_v2(false);
    let old = get(&w.m, "/api/v2/instance", None);
    assert_eq!(old.status, 404);
    assert_eq!(get(&w.m, "/api/v1/instance", None).status, 200);
}

#[test]
fn posting_form_and_json() {
    let w = world();
    let r = post_form(
        &w.m,
        &w.token,
        &[
            ("status", "New post: https://blog.example/p #Rust\n\nthanks @alice@other.host"),
            ("visibility", "unlisted"),
            ("language", "de"),
            ("spoiler_text", "long read"),
        ],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json();
    assert_eq!(s["visibility"], "unlisted");
    assert_eq!(s["language"], "de");
    assert_eq!(s["spoiler_text"], "long read");
    assert_eq!(s["sensitive"], true, "a spoiler makes it sensitive");
    assert_eq!(s["card"], Value::Null, "cards come later");
    assert_eq!(s["account"]["id"], w.me);
    assert_eq!(s["mentions"][0]["acct"], "alice@other.host");
    assert_eq!(s["mentions"][0]["id"], w.alice);
    assert_eq!(s["tags"][0]["name"], "rust");
    let content = s["content"].as_str().unwrap();
    assert!(content.starts_with("<p>New post: <a href=\"https://blog.example/p\""), "{content}");
    assert!(content.contains("</p><p>thanks <span class=\"h-card\""), "{content}");
    assert!(content.contains("class=\"u-url mention\">@<span>alice</span></a>"), "{content}");
    assert!(s["id"].as_str().unwrap().chars().all(|c| c.is_ascii_digit()));

    let body = json!({"status": "JSON body", "visibility": "private", "in_reply_to_id": s["id"]});
    let r = raw_request(
        &w.m,
        "POST",
        "/api/v1/statuses",
        Some(&w.token),
        &[],
        Some(("application/json", body.to_string())),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["visibility"], "private");
    assert_eq!(j["in_reply_to_id"], s["id"]);
    assert_eq!(j["in_reply_to_account_id"], w.me);
    assert_eq!(j["content"], "<p>JSON body</p>");
    assert!(j["id"].as_str().unwrap() > s["id"].as_str().unwrap(), "ids increase");

    // What the server has, for exactly-once checks: newest first.
    let mine = w.m.statuses_of(&w.me);
    assert_eq!(
        ids(&Value::Array(mine)),
        vec![j["id"].as_str().unwrap(), s["id"].as_str().unwrap()]
    );
    // A private status is not shown to others.
    assert_eq!(
        get(&w.m, &format!("/api/v1/statuses/{}", j["id"].as_str().unwrap()), None).status,
        404
    );
    let source = get(
        &w.m,
        &format!("/api/v1/statuses/{}/source", j["id"].as_str().unwrap()),
        Some(&w.token),
    );
    assert_eq!(source.json()["text"], "JSON body");
}

#[test]
fn validation_errors() {
    let w = world();
    for blank in ["", "   \n\t"] {
        let r = post_status(&w.m, &w.token, blank);
        assert_eq!(r.status, 422);
        assert_eq!(r.json(), json!({"error": "Validation failed: Text can't be blank"}));
    }
    // 500 grapheme clusters fit, 501 do not; a family emoji is one.
    let ok = "👨‍👩‍👧".repeat(500);
    assert_eq!(post_status(&w.m, &w.token, &ok).status, 200);
    let r = post_status(&w.m, &w.token, &"a".repeat(501));
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json(),
        json!({"error": "Validation failed: Text character limit of 500 exceeded"})
    );
    // Every URL counts 23 however long; the spoiler counts too.
    let url = format!("https://blog.example/{}", "x".repeat(300));
    assert_eq!(post_status(&w.m, &w.token, &format!("{} {url}", "b".repeat(476))).status, 200);
    assert_eq!(post_status(&w.m, &w.token, &format!("{} {url}", "b".repeat(477))).status, 422);
    let r = post_form(
        &w.m,
        &w.token,
        &[("status", &"c".repeat(490)), ("spoiler_text", &"s".repeat(11))],
        &[],
    );
    assert_eq!(r.status, 422);
    // A remote mention counts without its domain.
    let text = format!("@alice@other.host {}", "d".repeat(493));
    assert_eq!(post_status(&w.m, &w.token, &text).status, 200);

    w.m.set_max_characters(10);
    let r = post_status(&w.m, &w.token, "eleven char");
    assert_eq!(r.json()["error"], "Validation failed: Text character limit of 10 exceeded");

    let r = post_form(&w.m, &w.token, &[("status", "hi"), ("in_reply_to_id", "999")], &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "The post you are trying to reply to does not appear to exist.");
    let r = post_form(&w.m, &w.token, &[("status", "hi"), ("visibility", "everyone")], &[]);
    assert_eq!(r.status, 422);
    assert_eq!(w.m.statuses_of(&w.me).len(), 3, "only the valid ones were created");
}

#[test]
fn idempotency_key_within_and_after_an_hour() {
    let w = world();
    let key = [("Idempotency-Key", "article-42-mastodon")];
    let first = post_form(&w.m, &w.token, &[("status", "first")], &key);
    let second = post_form(&w.m, &w.token, &[("status", "a different text")], &key);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 200);
    assert_eq!(first.json()["id"], second.json()["id"]);
    assert_eq!(second.json()["content"], "<p>first</p>", "the original is returned");
    assert_eq!(w.m.statuses_of(&w.me).len(), 1);
    let sent = w.m.requests_to("POST", "/api/v1/statuses");
    assert!(sent.iter().all(|r| r.header("idempotency-key") == Some("article-42-mastodon")));

    // Per account: the same key from someone else is a different status.
    let other = w.m.add_account("other", "Other");
    let theirs = post_form(&w.m, &w.m.token_for(&other), &[("status", "first")], &key);
    assert_ne!(theirs.json()["id"], first.json()["id"]);

    // Still remembered just before the hour, forgotten after it.
    w.m.advance_clock(Duration::from_secs(3599));
    assert_eq!(
        post_form(&w.m, &w.token, &[("status", "x")], &key).json()["id"],
        first.json()["id"]
    );
    w.m.advance_clock(Duration::from_secs(2));
    let after = post_form(&w.m, &w.token, &[("status", "after an hour")], &key);
    assert_ne!(after.json()["id"], first.json()["id"]);
    assert_eq!(w.m.statuses_of(&w.me).len(), 2);

    // Kept only once the create succeeded.
    let k2 = [("Idempotency-Key", "k2")];
    assert_eq!(post_form(&w.m, &w.token, &[("status", " ")], &k2).status, 422);
    let created = post_form(&w.m, &w.token, &[("status", "fixed")], &k2);
    assert_eq!(created.status, 200);
    assert_eq!(created.json()["content"], "<p>fixed</p>");
}

#[test]
fn concurrent_repeats_of_a_key_create_once() {
    let w = Arc::new(world());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let w = w.clone();
            std::thread::spawn(move || {
                let r = post_form(
                    &w.m,
                    &w.token,
                    &[("status", &format!("try {i}"))],
                    &[("Idempotency-Key", "same")],
                );
                r.json()["id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let got: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(got.iter().all(|id| *id == got[0]), "{got:?}");
    assert_eq!(w.m.statuses_of(&w.me).len(), 1);
}

#[test]
fn drop_after_create_then_retry_with_the_key() {
    let w = world();
    w.m.inject("POST", "/api/v1/statuses", Fault::DropAfterCreate, 1);
    let key = [("Idempotency-Key", "k")];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("status", "announce")])
        .finish();
    let dropped = raw_request(
        &w.m,
        "POST",
        "/api/v1/statuses",
        Some(&w.token),
        &key,
        Some(("application/x-www-form-urlencoded", body)),
    );
    assert!(dropped.is_err(), "the client sees no response: {dropped:?}");
    let created = w.m.statuses_of(&w.me);
    assert_eq!(created.len(), 1, "but the status exists");
    let retry = post_form(&w.m, &w.token, &[("status", "announce")], &key);
    assert_eq!(retry.status, 200);
    assert_eq!(retry.json()["id"], created[0]["id"]);
    assert_eq!(w.m.statuses_of(&w.me).len(), 1, "exactly once");
    let log = w.m.requests_to("POST", "/api/v1/statuses");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].status, None, "no answer was sent");
    assert_eq!(log[1].status, Some(200));
}

#[test]
fn injected_faults() {
    let w = world();
    w.m.inject("POST", "/api/v1/statuses", Fault::Status(503), 2);
    for _ in 0..2 {
        let r = post_status(&w.m, &w.token, "x");
        assert_eq!(r.status, 503);
        assert!(r.json()["error"].is_string());
    }
    assert!(w.m.statuses_of(&w.me).is_empty(), "an error before the app creates nothing");
    assert_eq!(post_status(&w.m, &w.token, "x").status, 200, "used up after 2");

    w.m.inject("POST", "/api/v1/statuses", Fault::Status(500), 1);
    assert_eq!(
        get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.token)).status,
        200,
        "GET unaffected"
    );
    assert_eq!(post_status(&w.m, &w.token, "y").status, 500);

    w.m.inject("*", "/api/v1/accounts", Fault::Slow(Duration::from_millis(300)), 1);
    let started = Instant::now();
    assert_eq!(get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.token)).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    w.m.inject("GET", "/api/v1/notifications", Fault::TooManyRequests, 1);
    let r = get(&w.m, "/api/v1/notifications", Some(&w.token));
    assert_eq!(r.status, 429);
    assert_eq!(r.json(), json!({"error": "Too many requests"}));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("retry-after").is_none());

    w.m.inject("POST", "/api/v1/statuses", Fault::Garbage, 1);
    let r = post_status(&w.m, &w.token, "garbled answer");
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err(), "{}", r.text());
    assert_eq!(w.m.statuses_of(&w.me).len(), 2, "a garbled answer still created it");

    w.m.inject("GET", "/api/v1/instance", Fault::WrongContentType, 1);
    let r = get(&w.m, "/api/v1/instance", None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("<html>"));

    w.m.inject("GET", "/api/v1/nothing", Fault::Status(502), 1);
    w.m.clear_faults();
    assert_eq!(get(&w.m, "/api/v1/nothing", None).status, 404);
}

#[test]
fn rate_limit_headers_and_429() {
    let w = world();
    fresh_rate_window(&w.m, 300);
    let r = get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.token));
    assert_eq!(r.header("x-ratelimit-limit"), Some("300"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("299"));

    w.m.set_rate_limit(3, Duration::from_secs(300));
    fresh_rate_window(&w.m, 300);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.token));
        assert_eq!(r.status, 200);
        remaining.push(r.header("x-ratelimit-remaining").unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.token));
    assert_eq!(r.status, 429);
    assert_eq!(r.json(), json!({"error": "Too many requests"}));
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("retry-after").is_none(), "Mastodon sends no Retry-After");
    let reset = r.header("x-ratelimit-reset").unwrap();
    let shape = reset.len() == 27
        && reset.ends_with(".000000Z")
        && chrono::NaiveDateTime::parse_from_str(&reset[..19], "%Y-%m-%dT%H:%M:%S").is_ok();
    assert!(shape, "ISO 8601 with microseconds, not epoch: {reset}");
    let reset_at = chrono::DateTime::parse_from_rfc3339(reset).unwrap();
    let now = w.m.now();
    assert!(reset_at > now && reset_at <= now + chrono::Duration::seconds(300), "{reset} vs {now}");
    assert_eq!(reset_at.timestamp() % 300, 0, "the end of a fixed window");
    // The window is per account.
    let other = w.m.add_account("other", "Other");
    assert_eq!(
        get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.m.token_for(&other))).status,
        200
    );
    // A new window begins at the reset.
    w.m.advance_clock(Duration::from_secs(300));
    assert_eq!(get(&w.m, "/api/v1/accounts/verify_credentials", Some(&w.token)).status, 200);
}

#[test]
fn notifications_only_for_mentions() {
    let w = world();
    let post = post_status(&w.m, &w.token, "My article https://blog.example/a").json();
    let post_id = post["id"].as_str().unwrap();
    // A reply without a mention (other fediverse software) notifies nobody...
    let silent = w.m.post_as(&w.alice, "nice post", Some(post_id), &[]);
    assert!(w.m.notifications_of(&w.me).is_empty());
    // ...but it is in the thread.
    let ctx = get(&w.m, &format!("/api/v1/statuses/{post_id}/context"), Some(&w.token)).json();
    assert_eq!(ids(&ctx["descendants"]), vec![silent.clone()]);
    // A written mention notifies; so does a Mention tag alone.
    let loud = w.m.post_as(&w.alice, "@blogger great read", Some(post_id), &[]);
    let tagged = w.m.post_as(&w.alice, "tagged only", Some(post_id), &["blogger"]);
    let notes = w.m.notifications_of(&w.me);
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["status"]["id"], tagged);
    assert_eq!(notes[1]["status"]["id"], loud);
    let n = &notes[1];
    assert_eq!(n["type"], "mention");
    assert_eq!(n["account"]["acct"], "alice@other.host");
    assert_eq!(n["group_key"], format!("ungrouped-{}", n["id"].as_str().unwrap()));
    assert_eq!(n["status"]["in_reply_to_id"], post_id);
    assert_eq!(n["status"]["in_reply_to_account_id"], w.me);
    let content = n["status"]["content"].as_str().unwrap();
    assert!(content.contains("<span class=\"h-card\" translate=\"no\"><a href=\""), "{content}");
    assert!(content.contains("class=\"u-url mention\">@<span>blogger</span></a></span> great read"));
    // Own statuses that mention oneself do not notify.
    post_status(&w.m, &w.token, "@blogger note to self");
    assert_eq!(w.m.notifications_of(&w.me).len(), 2);
    // Types filters.
    let r = get(&w.m, "/api/v1/notifications?exclude_types[]=mention", Some(&w.token));
    assert_eq!(r.json(), json!([]));
    assert!(r.header("link").is_none(), "no Link on an empty page");
    let r = get(&w.m, "/api/v1/notifications?types[]=follow", Some(&w.token));
    assert_eq!(r.json(), json!([]));
    let one =
        get(&w.m, &format!("/api/v1/notifications/{}", n["id"].as_str().unwrap()), Some(&w.token));
    assert_eq!(one.json()["id"], n["id"]);
}

#[test]
fn notification_paging_and_link_headers() {
    let w = world();
    let bob = w.m.add_account("bob", "Bob");
    let mut made = Vec::new();
    for i in 0..7 {
        w.m.post_as(&w.alice, &format!("@blogger hello {i}"), None, &[]);
        w.m.post_as(&w.alice, &format!("@bob hi {i}"), None, &[]);
        made.push(w.m.notifications_of(&w.me)[0]["id"].as_str().unwrap().to_owned());
    }
    made.reverse(); // newest first
    assert!(made.windows(2).all(|p| p[0] > p[1]), "ids increase: {made:?}");
    assert_eq!(w.m.notifications_of(&bob).len(), 7);

    let r = get(&w.m, "/api/v1/notifications?types[]=mention&limit=3", Some(&w.token));
    assert_eq!(ids(&r.json()), made[..3]);
    let base = w.m.url();
    assert_eq!(
        r.header("link").unwrap(),
        format!(
            "<{base}/api/v1/notifications?limit=3&max_id={}&types%5B%5D=mention>; rel=\"next\", \
             <{base}/api/v1/notifications?limit=3&min_id={}&types%5B%5D=mention>; rel=\"prev\"",
            made[2], made[0]
        )
    );

    // Backwards by "next" until an empty page: everything once, in order.
    let mut seen = Vec::new();
    let mut path = "/api/v1/notifications?types[]=mention&limit=3".to_owned();
    loop {
        let r = get(&w.m, &path, Some(&w.token));
        let page = ids(&r.json());
        if page.is_empty() {
            assert!(r.header("link").is_none());
            break;
        }
        seen.extend(page);
        path = path_of(&link_of(&r, "next").unwrap(), &w.m);
    }
    assert_eq!(seen, made);

    // Forwards from a cursor by min_id and "prev": the oldest ones newer than the cursor,
    // newest first within a page, no gaps.
    let cursor = &made[6];
    let mut pages = Vec::new();
    let mut path = format!("/api/v1/notifications?min_id={cursor}&limit=2");
    loop {
        let r = get(&w.m, &path, Some(&w.token));
        let page = ids(&r.json());
        if page.is_empty() {
            break;
        }
        pages.push(page);
        path = path_of(&link_of(&r, "prev").unwrap(), &w.m);
    }
    let expected: Vec<Vec<String>> = vec![
        vec![made[4].clone(), made[5].clone()],
        vec![made[2].clone(), made[3].clone()],
        vec![made[0].clone(), made[1].clone()],
    ];
    assert_eq!(pages, expected);

    // since_id gives the newest page instead; max_id + min_id bound both sides.
    let r = get(&w.m, &format!("/api/v1/notifications?since_id={cursor}&limit=2"), Some(&w.token));
    assert_eq!(ids(&r.json()), made[..2]);
    let r = get(
        &w.m,
        &format!("/api/v1/notifications?min_id={}&max_id={}", made[6], made[3]),
        Some(&w.token),
    );
    assert_eq!(ids(&r.json()), made[4..6]);
    // The client's request is in the log, min_id and all.
    let asked = w.m.requests_to("GET", "/api/v1/notifications");
    assert!(asked.iter().any(|r| r.query_param("min_id").as_deref() == Some(cursor.as_str())));

    // limit: default 40, at most 80.
    for i in 0..83 {
        w.m.post_as(&w.alice, &format!("@blogger more {i}"), None, &[]);
    }
    assert_eq!(
        get(&w.m, "/api/v1/notifications", Some(&w.token)).json().as_array().unwrap().len(),
        40
    );
    let r = get(&w.m, "/api/v1/notifications?limit=500", Some(&w.token));
    assert_eq!(r.json().as_array().unwrap().len(), 80);
}

#[test]
fn context_and_account_statuses() {
    let w = world();
    let bob = w.m.add_remote_account("bob", "third.host", "Bob");
    let root = post_status(&w.m, &w.token, "root").json()["id"].as_str().unwrap().to_owned();
    let a1 = w.m.post_as(&w.alice, "@blogger a1", Some(&root), &[]);
    let b1 = w.m.post_as(&bob, "@alice@other.host b1", Some(&a1), &[]);
    let reply_form = [("status", "self reply"), ("in_reply_to_id", root.as_str())];
    let s1 = post_form(&w.m, &w.token, &reply_form, &[]).json()["id"].as_str().unwrap().to_owned();
    let a2 = w.m.post_as(&w.alice, "a2", Some(&root), &[]);
    let to_alice = [("status", "@alice@other.host thanks"), ("in_reply_to_id", a1.as_str())];
    let r1 = post_form(&w.m, &w.token, &to_alice, &[]).json()["id"].as_str().unwrap().to_owned();

    let ctx = get(&w.m, &format!("/api/v1/statuses/{root}/context"), Some(&w.token)).json();
    assert_eq!(ctx["ancestors"], json!([]));
    // Depth first, children by id, the author's self-replies promoted first.
    assert_eq!(
        ids(&ctx["descendants"]),
        vec![s1.clone(), a1.clone(), b1.clone(), r1.clone(), a2.clone()]
    );
    let ctx = get(&w.m, &format!("/api/v1/statuses/{b1}/context"), None).json();
    assert_eq!(ids(&ctx["ancestors"]), vec![root.clone(), a1.clone()]);
    assert_eq!(ctx["descendants"], json!([]));
    let missing = get(&w.m, "/api/v1/statuses/12345/context", Some(&w.token));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), json!({"error": "Record not found"}));
    assert_eq!(get(&w.m, "/api/v1/statuses/12345", None).status, 404);
    let shown = get(&w.m, &format!("/api/v1/statuses/{root}"), None).json();
    assert_eq!(shown["replies_count"], 3);

    // Own statuses: exclude_replies keeps self-replies (threads) only.
    let path = format!("/api/v1/accounts/{}/statuses", w.me);
    let all = get(&w.m, &path, Some(&w.token));
    assert_eq!(ids(&all.json()), vec![r1.clone(), s1.clone(), root.clone()]);
    let no_replies = get(&w.m, &format!("{path}?exclude_replies=true&limit=40"), Some(&w.token));
    assert_eq!(ids(&no_replies.json()), vec![s1.clone(), root.clone()]);
    assert!(link_of(&no_replies, "next").is_none(), "no next link on a short page");
    assert_eq!(
        link_of(&no_replies, "prev").unwrap(),
        format!("{}{path}?exclude_replies=true&limit=40&min_id={s1}", w.m.url())
    );
    let page = get(&w.m, &format!("{path}?limit=2"), Some(&w.token));
    assert_eq!(ids(&page.json()), vec![r1.clone(), s1.clone()]);
    let next = link_of(&page, "next").unwrap();
    assert_eq!(next, format!("{}{path}?limit=2&max_id={s1}", w.m.url()));
    let rest = get(&w.m, &path_of(&next, &w.m), Some(&w.token));
    assert_eq!(ids(&rest.json()), vec![root.clone()]);
    let newer = get(&w.m, &format!("{path}?min_id={root}&limit=1"), Some(&w.token));
    assert_eq!(ids(&newer.json()), vec![s1.clone()]);
    assert_eq!(get(&w.m, "/api/v1/accounts/999/statuses", None).status, 404);
}

/// An open SSE connection read raw.
struct Stream {
    tcp: TcpStream,
    raw: Vec<u8>,
    head_end: usize,
}

impl Stream {
    fn open(m: &Mastodon, path: &str, token: Option<&str>) -> Stream {
        let mut tcp = TcpStream::connect(addr(m)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(tcp, "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}\r\n", addr(m)).unwrap();
        let mut s = Stream { tcp, raw: Vec::new(), head_end: 0 };
        assert!(s.read_until(Duration::from_secs(5), |s| s.head_end > 0));
        s
    }

    fn head(&self) -> String {
        String::from_utf8_lossy(&self.raw[..self.head_end]).into_owned()
    }

    /// (decoded body so far, whether the chunked body ended properly)
    fn body(&self) -> (String, bool) {
        let (data, complete) = dechunk(&self.raw[self.head_end..]);
        (String::from_utf8_lossy(&data).into_owned(), complete)
    }

    /// Reads until `done` or `limit`; returns whether `done` became true. Sets `closed` in
    /// `eof` when the server closed the connection.
    fn read_until(&mut self, limit: Duration, done: impl Fn(&Stream) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            if self.head_end == 0 {
                if let Some(p) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    self.head_end = p + 4;
                }
            }
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            match self.tcp.read(&mut buf) {
                Ok(0) => return done(self),
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }

    /// Reads until the server closes the connection; true if it did within `limit`.
    fn wait_closed(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.tcp.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => {}
            }
        }
        false
    }
}

fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let lines: Vec<&str> = block.lines().filter(|l| !l.starts_with(':')).collect();
            let name = lines.iter().find_map(|l| l.strip_prefix("event: "))?;
            let data = lines.iter().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_owned(), serde_json::from_str(data).ok()?))
        })
        .collect()
}

#[test]
fn streaming_sse() {
    let w = world();
    w.m.set_heartbeat(Duration::from_millis(100));
    assert_eq!(get(&w.m, "/api/v1/streaming/health", None).text(), "OK");
    let r = get(&w.m, "/api/v1/streaming/nonsense", Some(&w.token));
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "Unknown channel requested"}));
    assert_eq!(get(&w.m, "/api/v1/streaming/user", None).status, 401);
    assert_eq!(get(&w.m, "/api/v1/streaming/user", Some("nope")).status, 401);

    let mut s = Stream::open(&w.m, "/api/v1/streaming/user/notification", Some(&w.token));
    let head = s.head().to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(s.read_until(Duration::from_secs(5), |s| s.body().0.matches(":thump\n").count() >= 2));
    assert!(s.body().0.starts_with(":)\n:thump\n"), "{:?}", s.body().0);
    assert_eq!(w.m.open_streams(), 1);

    // A reply without a mention sends nothing; a mention sends one notification event.
    let post = post_status(&w.m, &w.token, "article").json()["id"].as_str().unwrap().to_owned();
    w.m.post_as(&w.alice, "no mention", Some(&post), &[]);
    let mention = w.m.post_as(&w.alice, "@blogger hi", Some(&post), &[]);
    assert!(s.read_until(Duration::from_secs(5), |s| !events(&s.body().0).is_empty()));
    let got = events(&s.body().0);
    assert_eq!(got.len(), 1, "only the mention, and no update on the notification channel");
    assert_eq!(got[0].0, "notification");
    assert_eq!(got[0].1["type"], "mention");
    assert_eq!(got[0].1["status"]["id"], mention);
    assert_eq!(got[0].1["id"], w.m.notifications_of(&w.me)[0]["id"]);
    assert!(s.body().0.contains("event: notification\ndata: {"));

    // Dropped: the connection ends without the final chunk.
    w.m.drop_streams();
    assert!(s.wait_closed(Duration::from_secs(5)));
    assert!(!s.body().1, "no terminating chunk");
    assert_eq!(w.m.open_streams(), 0);

    // No replay on reconnect; the user channel also carries one's own statuses.
    let mut s = Stream::open(&w.m, "/api/v1/streaming/user", Some(&w.token));
    assert!(s.read_until(Duration::from_secs(5), |s| s.body().0.contains(":thump")));
    assert!(events(&s.body().0).is_empty(), "nothing replayed");
    let own = post_status(&w.m, &w.token, "own status").json()["id"].as_str().unwrap().to_owned();
    assert!(s.read_until(Duration::from_secs(5), |s| !events(&s.body().0).is_empty()));
    let got = events(&s.body().0);
    assert_eq!(got[0].0, "update");
    assert_eq!(got[0].1["id"], own);

    // Cut in the middle of an event: half of it, then the connection is gone; the
    // notification is there over REST.
    w.m.cut_next_stream_event();
    let cut = w.m.post_as(&w.alice, "@blogger cut", None, &[]);
    assert!(s.wait_closed(Duration::from_secs(5)));
    let (body, complete) = s.body();
    assert!(!complete);
    let tail = body.rsplit(":thump\n").next().unwrap_or_default();
    let last = body[body.rfind("event: ").unwrap()..].to_owned();
    assert!(last.starts_with("event: notification\ndata: {"), "{tail:?}");
    assert!(!last.ends_with("\n\n"), "half an event: {last:?}");
    assert_eq!(w.m.notifications_of(&w.me)[0]["status"]["id"], cut);

    // The access_token query parameter works too.
    let s = Stream::open(&w.m, &format!("/api/v1/streaming/user?access_token={}", w.token), None);
    assert!(s.head().starts_with("HTTP/1.1 200"));
}

fn python_with_mastodon_py() {
    let probe =
        Command::new("python3").args(["-c", "import mastodon; print(mastodon.__file__)"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "Mastodon.py is not installed: run `python3 -m pip install Mastodon.py` \
             (tests/run installs it). python3 said: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 is missing ({e}); then run `python3 -m pip install Mastodon.py`"),
    }
}

const CHECK_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mastodon_py/check.py");

#[test]
fn mastodon_py_against_the_emulator() {
    python_with_mastodon_py();
    let w = world();
    w.m.set_heartbeat(Duration::from_millis(100));
    // Five mentions to page through, and replies that must not show up.
    let mut mentions = Vec::new();
    for i in 0..5 {
        w.m.post_as(&w.alice, &format!("@blogger mention {i}"), None, &[]);
        mentions.push(w.m.notifications_of(&w.me)[0]["id"].as_str().unwrap().to_owned());
    }
    mentions.reverse();

    let mut child = Command::new("python3")
        .args([CHECK_PY, "main", &w.m.url(), &w.token])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut summary = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        if v["ready"] == "stream" {
            w.m.post_as(&w.alice, "@blogger streamed hello", None, &[]);
        } else {
            summary = Some(v);
        }
    }
    let out = child.wait_with_output().unwrap();
    let summary = summary.unwrap_or_else(|| {
        panic!("check.py printed no summary; stderr:\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success(), "check.py failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("Mastodon.py summary: {summary:#}");

    assert_eq!(summary["me"], json!({"id": w.me, "username": "blogger", "acct": "blogger"}));
    assert_eq!(summary["version"], "4.3.0");
    assert_eq!(summary["instance"]["max_characters"], 500);
    assert_eq!(summary["instance"]["characters_reserved_per_url"], 23);
    assert_eq!(summary["instance"]["streaming"], w.m.streaming_url());
    assert_eq!(summary["instance"]["api_version"], 2);

    let idem = &summary["idempotency"];
    assert_eq!(idem["first"], idem["second"]);
    assert_eq!(idem["card"], Value::Null);
    assert!(idem["content"].as_str().unwrap().contains("href=\"https://blog.example/posts/1\""));
    let first = idem["first"].as_str().unwrap();

    let ctx = &summary["context"];
    assert_eq!(ctx["reply_in_reply_to"], first);
    assert_eq!(ctx["reply_mentions"], json!(["alice@other.host"]));
    assert_eq!(ctx["descendants_of_first"], json!([ctx["reply"]]));
    assert_eq!(ctx["ancestors_of_reply"], json!([first]));

    assert_eq!(summary["first_notification"]["type"], "mention");
    let backward: Vec<Vec<String>> =
        serde_json::from_value(summary["backward_pages"].clone()).unwrap();
    assert_eq!(
        backward,
        vec![mentions[..2].to_vec(), mentions[2..4].to_vec(), mentions[4..].to_vec()]
    );
    assert_eq!(summary["oldest"], mentions[4]);
    let forward: Vec<Vec<String>> =
        serde_json::from_value(summary["forward_pages"].clone()).unwrap();
    assert_eq!(forward, vec![mentions[2..4].to_vec(), mentions[..2].to_vec()]);

    let reply = ctx["reply"].as_str().unwrap();
    let answer = summary["answer"]["id"].as_str().unwrap();
    assert_eq!(summary["answer"]["in_reply_to_account_id"], w.alice);
    assert_eq!(summary["account_statuses"], json!([reply, first]), "self-replies stay");
    assert_eq!(summary["account_statuses_all"], json!([answer, reply, first]));

    let blank = &summary["blank"];
    assert_eq!(blank["type"], "MastodonAPIError");
    assert_eq!(blank["args"][1], "422");
    assert_eq!(blank["args"][3], "Validation failed: Text can't be blank");
    assert_eq!(
        summary["too_long"]["args"][3],
        "Validation failed: Text character limit of 500 exceeded"
    );
    assert!(summary["long_url_accepted"].is_string());
    let unauthorized = &summary["unauthorized"];
    assert_eq!(unauthorized["type"], "MastodonUnauthorizedError");
    assert_eq!(unauthorized["args"][1], "401");
    assert_eq!(unauthorized["args"][3], "The access token is invalid");

    // Mastodon.py parsed the ISO reset (it raises if it cannot) into an epoch in the window.
    let rl = &summary["ratelimit"];
    assert_eq!(rl["limit"], 300);
    assert!(rl["remaining"].as_i64().unwrap() < 300);
    let (reset, now) = (rl["reset"].as_f64().unwrap(), rl["now"].as_f64().unwrap());
    assert!(reset > now - 2.0 && reset <= now + 302.0, "reset {reset} now {now}");

    let stream = &summary["stream"];
    assert!(stream["heartbeats"].as_i64().unwrap() >= 2, "{stream}");
    assert_eq!(stream["notification"]["type"], "mention", "{stream}");
    assert_eq!(stream["notification"]["account"], "alice@other.host");
    assert!(stream["notification"]["content"].as_str().unwrap().contains("streamed hello"));

    // Exactly once on the server: the article (one despite two posts with its key), the
    // self-reply, the answer to alice, and the status with the long URL.
    assert_eq!(w.m.statuses_of(&w.me).len(), 4);
    let posts = w.m.requests_to("POST", "/api/v1/statuses");
    assert_eq!(
        posts.iter().filter(|r| r.header("idempotency-key") == Some("article-1")).count(),
        2
    );
    let paged = w.m.requests_to("GET", "/api/v1/notifications");
    assert!(paged.iter().any(|r| r.query_param("min_id").as_deref() == Some(mentions[4].as_str())));
}

#[test]
fn mastodon_py_sees_the_rate_limit() {
    python_with_mastodon_py();
    let w = world();
    w.m.set_rate_limit(4, Duration::from_secs(300));
    fresh_rate_window(&w.m, 300);
    let out = Command::new("python3")
        .args([CHECK_PY, "ratelimit", &w.m.url(), &w.token])
        .output()
        .unwrap();
    assert!(out.status.success(), "check.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
    let summary: Value = serde_json::from_str(&last).unwrap();
    eprintln!("Mastodon.py summary: {summary:#}");
    assert_eq!(summary["calls"], 4);
    assert_eq!(summary["error"]["type"], "MastodonRatelimitError");
    assert_eq!(summary["remaining"], 0);
    assert_eq!(summary["limit"], 4);
    let (reset, now) = (summary["reset"].as_f64().unwrap(), summary["now"].as_f64().unwrap());
    assert!(reset > now && reset <= now + 302.0, "reset {reset} now {now}");
}
