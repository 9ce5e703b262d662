//! Tests of the Mastodon adapter: the pure parts directly, the HTTP parts against a tiny
//! responder that records every request and answers with canned responses, so that what
//! was sent can be asserted.

use tokio::net::TcpListener;

use super::*;
use crate::config::SecretSource;
use crate::network::responder::{json, with_header, Req, Resp, Server};

// ---------------------------------------------------------------------------------------
// Pure parts.

#[test]
fn link_headers_give_cursors() {
    let h = r#"<https://ex.social/api/v1/notifications?max_id=34975535>; rel="next", <https://ex.social/api/v1/notifications?min_id=34975861&types%5B%5D=mention>; rel="prev""#;
    assert_eq!(link_param(h, "prev", "min_id").as_deref(), Some("34975861"));
    assert_eq!(link_param(h, "next", "max_id").as_deref(), Some("34975535"));
    assert_eq!(link_param(h, "next", "min_id"), None);
    assert_eq!(link_param(h, "last", "min_id"), None);
    // Commas inside the target or quotes do not split; relations are lists; relative
    // targets are fine.
    let h = r#"</a?min_id=x,y>; title="a, b"; rel="prev first", <https://h/b?max_id=2>;rel=next"#;
    assert_eq!(
        parse_link_header(h),
        vec![
            ("prev".into(), "/a?min_id=x,y".into()),
            ("first".into(), "/a?min_id=x,y".into()),
            ("next".into(), "https://h/b?max_id=2".into()),
        ]
    );
    assert_eq!(link_param(h, "prev", "min_id").as_deref(), Some("x,y"));
    assert_eq!(parse_link_header("garbage"), vec![]);
    assert_eq!(parse_link_header("<unterminated; rel=prev"), vec![]);
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
}

#[test]
fn rate_limit_reset_is_an_iso_time() {
    let now = at("2026-01-01T12:00:00Z");
    let wait = |pairs: &[(&str, &str)]| rate_limit_wait(&headers(pairs), now);
    assert_eq!(
        wait(&[("X-RateLimit-Reset", "2026-01-01T12:05:00.000000Z")]),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        wait(&[("x-ratelimit-reset", "2026-01-01T13:00:30+01:00")]),
        Some(Duration::from_secs(30))
    );
    // Already past (clock skew): wait a little, not zero.
    assert_eq!(
        wait(&[("X-RateLimit-Reset", "2026-01-01T11:00:00Z")]),
        Some(Duration::from_secs(1))
    );
    // Far future: capped.
    assert_eq!(wait(&[("X-RateLimit-Reset", "2027-01-01T00:00:00Z")]), Some(MAX_RATE_WAIT));
    // Other servers' dialects: epoch seconds, a delay, a proxy's Retry-After.
    let epoch = now.timestamp() + 90;
    assert_eq!(wait(&[("X-RateLimit-Reset", &epoch.to_string())]), Some(Duration::from_secs(90)));
    assert_eq!(wait(&[("X-RateLimit-Reset", "42")]), Some(Duration::from_secs(42)));
    assert_eq!(wait(&[("Retry-After", "120")]), Some(Duration::from_secs(120)));
    assert_eq!(
        wait(&[("Retry-After", "Thu, 01 Jan 2026 12:01:00 GMT")]),
        Some(Duration::from_secs(60))
    );
    assert_eq!(wait(&[("X-RateLimit-Reset", "soon")]), None);
    assert_eq!(wait(&[]), None);
}

#[test]
fn statuses_map_to_errors() {
    let now = at("2026-01-01T12:00:00Z");
    let map = |code: u16, body: &str, effect: Effect| {
        let h = headers(&[("X-RateLimit-Reset", "2026-01-01T12:00:10.000000Z")]);
        status_error(
            StatusCode::from_u16(code).unwrap(),
            &h,
            body.as_bytes(),
            "POST /api/v1/statuses",
            effect,
            now,
        )
    };
    use Effect::{Creates, Read};
    assert_eq!(
        map(401, r#"{"error":"The access token is invalid"}"#, Creates),
        NetError::Unauthorized(
            "POST /api/v1/statuses: HTTP 401: The access token is invalid".into()
        )
    );
    assert!(matches!(
        map(403, r#"{"error":"This action is outside the authorized scopes"}"#, Read),
        NetError::Unauthorized(m) if m.contains("outside the authorized scopes")
    ));
    assert_eq!(
        map(
            422,
            r#"{"error":"Validation failed: Text character limit of 500 exceeded"}"#,
            Creates
        ),
        NetError::Rejected(
            "POST /api/v1/statuses: HTTP 422: Validation failed: Text character limit of 500 exceeded"
                .into()
        )
    );
    assert_eq!(
        map(429, r#"{"error":"Too many requests"}"#, Creates),
        NetError::Transient {
            message: "POST /api/v1/statuses: HTTP 429: Too many requests".into(),
            retry_after: Some(Duration::from_secs(10)),
        }
    );
    for code in [500, 502, 503, 504] {
        assert!(
            matches!(map(code, "<html>oops</html>", Creates), NetError::InDoubt { .. }),
            "{code}"
        );
        // The window a 200 would describe is no reason to wait after a 5xx.
        assert!(
            matches!(map(code, "", Read), NetError::Transient { retry_after: None, .. }),
            "{code}"
        );
    }
    assert!(matches!(map(408, "", Creates), NetError::Transient { .. }));
    assert!(matches!(map(404, r#"{"error":"Record not found"}"#, Creates), NetError::Rejected(_)));
    assert!(matches!(map(301, "", Creates), NetError::Transient { .. }));
    // OAuth errors carry a description; a body that is not JSON is not quoted.
    assert_eq!(
        map(401, r#"{"error":"invalid_token","error_description":"The access token was revoked"}"#, Read)
            .to_string(),
        "unauthorised: POST /api/v1/statuses: HTTP 401: invalid_token: The access token was revoked"
    );
    assert_eq!(
        map(502, "<html>Bad gateway</html>", Read).to_string(),
        "POST /api/v1/statuses: HTTP 502 Bad Gateway"
    );
    // Server text is cleaned and bounded before it reaches a log.
    let long = format!(r#"{{"error":"a\nb{}"}}"#, "x".repeat(1000));
    let NetError::Rejected(m) = map(422, &long, Creates) else { panic!() };
    assert!(m.contains("a b") && !m.contains('\n') && m.chars().count() < 400, "{m}");
}

#[test]
fn visibility_only_narrows() {
    let n = |a: Option<&str>, b: Option<&str>| narrower(a, b);
    assert_eq!(n(Some("public"), Some("direct")).as_deref(), Some("direct"));
    assert_eq!(n(Some("public"), Some("private")).as_deref(), Some("private"));
    assert_eq!(n(Some("unlisted"), Some("public")).as_deref(), Some("unlisted"));
    assert_eq!(n(Some("private"), Some("unlisted")).as_deref(), Some("private"));
    assert_eq!(n(Some("direct"), Some("public")).as_deref(), Some("direct"));
    assert_eq!(n(None, Some("unlisted")).as_deref(), Some("unlisted"));
    assert_eq!(n(Some("unlisted"), None).as_deref(), Some("unlisted"));
    assert_eq!(n(None, None), None);
    // Unknown values (another server's "local") never widen a known one.
    assert_eq!(n(Some("private"), Some("local")).as_deref(), Some("private"));
    assert_eq!(n(None, Some("local")), None);
}

#[test]
fn answers_start_with_the_mention() {
    assert_eq!(with_mention("bob@other.host", "Thanks!"), "@bob@other.host Thanks!");
    assert_eq!(with_mention("@bob@other.host", "Thanks!"), "@bob@other.host Thanks!");
    assert_eq!(with_mention("bob@other.host", "@bob@other.host thanks"), "@bob@other.host thanks");
    assert_eq!(with_mention("bob", "@Bob, thanks"), "@Bob, thanks");
    assert_eq!(with_mention("bob", "@bob"), "@bob");
    // A longer handle that merely starts the same is someone else.
    assert_eq!(with_mention("bob", "@bobby hi"), "@bob @bobby hi");
    assert_eq!(with_mention("bob", "@bob@elsewhere hi"), "@bob @bob@elsewhere hi");
    assert_eq!(with_mention("", "hi"), "hi");
}

#[test]
fn answers_compare_as_rendered() {
    let sent = with_mention("bob@other.host", "Thanks! See https://blog.example/p\nBye");
    let content = r#"<p><span class="h-card" translate="no"><a href="https://other.host/@bob" class="u-url mention">@<span>bob</span></a></span> Thanks! See <a href="https://blog.example/p" target="_blank" rel="nofollow noopener" translate="no"><span class="invisible">https://</span><span class="">blog.example/p</span><span class="invisible"></span></a><br />Bye</p>"#;
    assert_eq!(comparable(&presence_feed::plain_text(content)), comparable(&sent));
    assert_ne!(comparable("@bob Thanks"), comparable("@bob Thanks again"));
}

const CONTENT: &str = r#"<p><span class="h-card" translate="no"><a href="https://ex.social/@alice" class="u-url mention">@<span>alice</span></a></span> Loved &quot;Hello&quot; &amp; the follow-up:<br />see <a href="https://other.host/tags/rust" class="mention hashtag" rel="tag">#<span>rust</span></a> and <a href="https://example.com/a/very/long/path/that/mastodon/shortens?x=1&amp;y=2" target="_blank" rel="nofollow noopener" translate="no"><span class="invisible">https://</span><span class="ellipsis">example.com/a/very/long/path/t</span><span class="invisible">hat/mastodon/shortens?x=1&amp;y=2</span></a></p><p>Second paragraph 🎉</p>"#;

#[test]
fn status_content_becomes_text_with_whole_links() {
    let status: Status = serde_json::from_value(serde_json::json!({
        "id": "1", "account": {"id": "2"}, "content": CONTENT,
        "spoiler_text": "long read",
        "media_attachments": [{"type": "image", "url": "https://files/x.png", "description": "a cat"}],
    }))
    .unwrap();
    assert_eq!(
        status_text(&status),
        "CW: long read\n\n@alice Loved \"Hello\" & the follow-up:\nsee #rust and \
         https://example.com/a/very/long/path/that/mastodon/shortens?x=1&y=2\n\n\
         Second paragraph 🎉\n[image: a cat]"
    );
    assert_eq!(
        hrefs(CONTENT).collect::<Vec<_>>(),
        vec![
            "https://ex.social/@alice",
            "https://other.host/tags/rust",
            "https://example.com/a/very/long/path/that/mastodon/shortens?x=1&y=2",
        ]
    );
}

#[test]
fn entities_tolerate_other_dialects() {
    // Numeric ids, nulls where Mastodon has empty lists, unknown fields.
    let status: Status = serde_json::from_value(serde_json::json!({
        "id": 12, "account": {"id": 3, "acct": "x"}, "in_reply_to_id": 11,
        "media_attachments": null, "content": null, "card": null, "reblog": null, "extra": [1],
    }))
    .unwrap();
    assert_eq!((status.id.as_str(), status.in_reply_to_id.as_deref()), ("12", Some("11")));
    assert!(status.reblog.is_none());
    let reblogged: Status = serde_json::from_value(serde_json::json!({
        "id": "5", "account": {"id": "3"}, "reblog": {"id": "4"},
    }))
    .unwrap();
    assert!(reblogged.reblog.is_some());
    assert!(serde_json::from_value::<Status>(serde_json::json!({"id": "1"})).is_err());
}

#[test]
fn streaming_urls_become_http() {
    let s = |u: &str| streaming_base(u).map(String::from);
    assert_eq!(s("wss://streaming.ex.social").as_deref(), Some("https://streaming.ex.social/"));
    assert_eq!(s("ws://127.0.0.1:4000").as_deref(), Some("http://127.0.0.1:4000/"));
    assert_eq!(s("ftp://x"), None);
    assert_eq!(s(""), None);
    assert_eq!(host_of("https://ex.social/"), "ex.social");
    assert_eq!(host_of("ex.social"), "ex.social");
}

const TOKEN: &str = "s3cr3t-t0ken";

fn secret() -> Secret {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, TOKEN.as_bytes()).unwrap();
    SecretSource::File(path).load(None).unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn mastodon(server: &Server, visibility: Option<&str>) -> Mastodon {
    Mastodon::new(
        "masto",
        &format!("{}/", server.base),
        secret(),
        visibility.map(str::to_owned),
        Some("en".into()),
        client(),
    )
}

fn account(id: &str, acct: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "username": acct.split('@').next(), "acct": acct,
        "display_name": "", "url": format!("https://ex.social/@{acct}")})
}

fn status(id: &str, author: &str, reply_to: Option<&str>, content: &str) -> serde_json::Value {
    let author_id = if author == "alice" { "1" } else { "77" };
    serde_json::json!({
        "id": id, "created_at": format!("2026-01-01T12:00:{:02}.000Z", id.parse::<u64>().unwrap_or(0) % 60),
        "uri": format!("https://ex.social/users/{author}/statuses/{id}"),
        "url": format!("https://ex.social/@{author}/{id}"),
        "account": account(author_id, author), "content": content, "visibility": "public",
        "spoiler_text": "", "in_reply_to_id": reply_to, "reblog": null, "card": null,
        "media_attachments": [], "mentions": [],
    })
}

/// A minimal server for `start`: alice on ex.social, instance API as given.
fn basics(req: &Req, v2: bool) -> Option<Resp> {
    match req.path() {
        "/api/v1/accounts/verify_credentials" => {
            let mut me = account("1", "alice");
            me["source"] = serde_json::json!({"privacy": "unlisted"});
            Some(json(200, me))
        }
        "/api/v2/instance" if v2 => Some(json(
            200,
            serde_json::json!({"domain": "ex.social", "configuration": {
                "urls": {"streaming": "wss://streaming.ex.social"},
                "statuses": {"max_characters": 1000, "characters_reserved_per_url": 23}}}),
        )),
        "/api/v2/instance" => Some(json(404, serde_json::json!({"error": "Not found"}))),
        "/api/v1/instance" => Some(json(
            200,
            serde_json::json!({"uri": "ex.social", "urls": {"streaming_api": "wss://ex.social"},
                "configuration": {"statuses": {"max_characters": 640}}}),
        )),
        _ => None,
    }
}

fn post(key: &str) -> Post {
    Post {
        article: 1,
        key: key.into(),
        text: "Hello world https://blog.example/p".into(),
        title: "Hello world".into(),
        url: "https://blog.example/p".into(),
        summary: String::new(),
        image: None,
        in_doubt: false,
    }
}

// ---------------------------------------------------------------------------------------
// HTTP parts.

#[tokio::test]
async fn start_learns_the_account_and_falls_back_to_v1_instance() {
    let server =
        Server::start(|r| basics(r, false).unwrap_or_else(|| json(500, serde_json::json!({}))))
            .await;
    let mut m = mastodon(&server, None);
    let info = m.start().await.unwrap();
    assert_eq!(info.handle, "alice@ex.social");
    assert_eq!(info.rules, Rules::mastodon(640, 23));
    assert_eq!(info.mention_interval, Some(MENTION_INTERVAL));
    let me = m.me.as_ref().unwrap();
    assert_eq!(me.id, "1");
    assert_eq!(me.default_visibility.as_deref(), Some("unlisted"));
    assert_eq!(me.streaming.as_ref().map(Url::as_str), Some("https://ex.social/"));
    let paths: Vec<String> = server.requests().iter().map(|r| r.path().to_owned()).collect();
    assert_eq!(
        paths,
        ["/api/v1/accounts/verify_credentials", "/api/v2/instance", "/api/v1/instance"]
    );
    for r in server.requests() {
        assert_eq!(r.method, "GET");
        assert_eq!(r.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    }
}

#[tokio::test]
async fn start_reads_v2_instance_and_reports_a_bad_token() {
    let server =
        Server::start(|r| basics(r, true).unwrap_or_else(|| json(500, serde_json::json!({}))))
            .await;
    let mut m = mastodon(&server, None);
    let info = m.start().await.unwrap();
    assert_eq!(info.handle, "alice@ex.social");
    assert_eq!(info.rules, Rules::mastodon(1000, 23));
    assert_eq!(
        m.me.as_ref().unwrap().streaming.as_ref().map(Url::as_str),
        Some("https://streaming.ex.social/")
    );

    let server =
        Server::start(|_| json(401, serde_json::json!({"error": "The access token is invalid"})))
            .await;
    let mut m = mastodon(&server, None);
    let err = m.start().await.unwrap_err();
    assert!(matches!(err, NetError::Unauthorized(_)), "{err:?}");
    assert!(!format!("{err} {err:?} {m:?}").contains(TOKEN));
}

#[tokio::test]
async fn post_sends_the_key_and_fields() {
    let server = Server::start(|r| {
        basics(r, true).unwrap_or_else(|| {
            let mut s = status("500", "alice", None, "<p>Hello</p>");
            s["visibility"] = "unlisted".into();
            json(200, s)
        })
    })
    .await;
    let mut m = mastodon(&server, Some("unlisted"));
    m.start().await.unwrap();
    let posted = m.post(&post("k-123")).await.unwrap();
    assert_eq!(
        posted,
        Posted { remote_id: "500".into(), url: Some("https://ex.social/@alice/500".into()) }
    );
    let sent = server.requests_to("POST", "/api/v1/statuses");
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("idempotency-key"), Some("k-123"));
    assert_eq!(r.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(r.form("status").as_deref(), Some("Hello world https://blog.example/p"));
    assert_eq!(r.form("visibility").as_deref(), Some("unlisted"));
    assert_eq!(r.form("language").as_deref(), Some("en"));
    assert_eq!(r.form("in_reply_to_id"), None);
}

#[tokio::test]
async fn post_failures_say_whether_a_status_may_exist() {
    let outcome = |resp: Resp| async move {
        let server = Server::start(move |r| basics(r, true).unwrap_or_else(|| resp.clone())).await;
        let mut m = mastodon(&server, None);
        m.start().await.unwrap();
        m.post(&post("k")).await.unwrap_err()
    };
    let rejected =
        outcome(json(422, serde_json::json!({"error": "Validation failed: Text can't be blank"})))
            .await;
    assert_eq!(
        rejected,
        NetError::Rejected(
            "POST /api/v1/statuses: HTTP 422: Validation failed: Text can't be blank".into()
        )
    );
    let limited = outcome(with_header(
        json(429, serde_json::json!({"error": "Too many requests"})),
        "X-RateLimit-Reset",
        &(Utc::now() + chrono::Duration::seconds(120)).to_rfc3339(),
    ))
    .await;
    let NetError::Transient { retry_after: Some(wait), .. } = limited else {
        panic!("{limited:?}")
    };
    assert!((Duration::from_secs(100)..=Duration::from_secs(120)).contains(&wait), "{wait:?}");
    assert!(matches!(
        outcome(json(503, serde_json::json!({"error": "try again"}))).await,
        NetError::InDoubt { .. }
    ));
    // The server took the request and hung up, or answered with something unreadable: the
    // status may exist.
    let dropped =
        outcome(Resp { status: 0, headers: vec![], body: String::new(), hold: None }).await;
    assert!(matches!(dropped, NetError::InDoubt { .. }), "{dropped:?}");
    let garbled =
        outcome(Resp { status: 200, headers: vec![], body: "{\"id\":".into(), hold: None }).await;
    assert!(matches!(garbled, NetError::InDoubt { .. }), "{garbled:?}");
    let huge =
        outcome(Resp { status: 200, headers: vec![], body: "x".repeat(MAX_BODY + 1), hold: None })
            .await;
    assert!(matches!(huge, NetError::InDoubt { .. }), "{huge:?}");
}

#[tokio::test]
async fn nothing_listening_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut m = Mastodon::new("m", &format!("http://{addr}"), secret(), None, None, client());
    let err = m.start().await.unwrap_err();
    assert!(matches!(err, NetError::Transient { .. }), "{err:?}");
    m.me = Some(Me { id: "1".into(), default_visibility: None, streaming: None });
    let err = m.post(&post("k")).await.unwrap_err();
    assert!(matches!(err, NetError::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn find_post_matches_the_article_link_in_recent_statuses() {
    let server = Server::start(|r| {
        if let Some(b) = basics(r, true) {
            return b;
        }
        let page = r.query_all("max_id");
        match page.first().map(String::as_str) {
            None => {
                let mut boosted = status("30", "alice", None, r#"<a href="https://blog.example/p">x</a>"#);
                boosted["reblog"] = status("29", "bob", None, "");
                with_header(
                    json(
                        200,
                        serde_json::json!([
                            boosted,
                            status("20", "alice", None, r#"<p>Other <a href="https://blog.example/other">x</a></p>"#),
                        ]),
                    ),
                    "Link",
                    &format!("<{}/api/v1/accounts/1/statuses?max_id=20>; rel=\"next\", <{}/api/v1/accounts/1/statuses?min_id=30>; rel=\"prev\"", "http://h", "http://h"),
                )
            }
            Some("20") => {
                let mut carded = status("10", "alice", None, "<p>Hello world</p>");
                carded["card"] = serde_json::json!({"url": "HTTPS://Blog.Example/p?utm_source=x"});
                json(200, serde_json::json!([carded]))
            }
            _ => json(200, serde_json::json!([])),
        }
    })
    .await;
    let mut m = mastodon(&server, None);
    m.start().await.unwrap();
    let found = m.find_post(&post("k")).await.unwrap();
    assert_eq!(found.map(|p| p.remote_id).as_deref(), Some("10"));
    let asked = server.requests_to("GET", "/api/v1/accounts/1/statuses");
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].query_all("exclude_replies"), ["true"]);
    assert_eq!(asked[0].query_all("limit"), ["40"]);
    assert_eq!(asked[1].query_all("max_id"), ["20"]);

    let mut absent = post("k");
    absent.url = "https://blog.example/never".into();
    assert_eq!(m.find_post(&absent).await.unwrap(), None);
}

/// A mention notification whose status answers `reply_to`.
fn mention(id: &str, status_id: &str, reply_to: Option<&str>) -> serde_json::Value {
    serde_json::json!({"id": id, "type": "mention", "created_at": "2026-01-01T12:00:00.000Z",
        "account": account("77", "bob@other.host"),
        "status": status(status_id, "bob@other.host", reply_to,
            &format!(r#"<p><span class="h-card"><a href="https://ex.social/@alice" class="u-url mention">@<span>alice</span></a></span> hi {status_id}</p>"#))})
}

fn notifications_server() -> impl Fn(&Req) -> Resp + Send + Sync + 'static {
    |r: &Req| {
        if let Some(b) = basics(r, true) {
            return b;
        }
        let link = |min: &str| {
            format!("<http://ex.social/api/v1/notifications?min_id={min}>; rel=\"prev\"")
        };
        match (r.path(), r.query_all("min_id").first().map(String::as_str)) {
            ("/api/v1/notifications", None) => with_header(
                json(
                    200,
                    serde_json::json!([mention("n2", "102", None), mention("n1", "101", None)]),
                ),
                "Link",
                &link("n2"),
            ),
            ("/api/v1/notifications", Some("n2")) => with_header(
                json(
                    200,
                    serde_json::json!([
                        mention("n4", "104", Some("103")),
                        mention("n3", "103", Some("500"))
                    ]),
                ),
                "Link",
                &link("n4"),
            ),
            ("/api/v1/notifications", Some("n4")) => with_header(
                json(200, serde_json::json!([{"id": "n5", "type": "mention", "status": null}])),
                "Link",
                &link("n5"),
            ),
            ("/api/v1/notifications", Some(_)) => json(200, serde_json::json!([])),
            ("/api/v1/statuses/103/context", _) => json(
                200,
                serde_json::json!({"ancestors": [status("500", "alice", None, "")], "descendants": []}),
            ),
            ("/api/v1/statuses/500/context", _) => json(
                200,
                serde_json::json!({"ancestors": [], "descendants": [
                    status("103", "bob@other.host", Some("500"), "<p>@alice hi</p>"),
                    status("104", "bob@other.host", Some("103"), "<p>@alice hi again</p>"),
                    status("105", "alice", Some("104"), "<p>@bob thanks</p>"),
                    status("106", "carol@third.host", Some("500"), "<p>nice post</p>"),
                ]}),
            ),
            ("/api/v1/statuses/404/context", _) => {
                json(404, serde_json::json!({"error": "Record not found"}))
            }
            _ => json(500, serde_json::json!({})),
        }
    }
}

#[tokio::test]
async fn mentions_walk_forward_from_the_cursor() {
    let server = Server::start(notifications_server()).await;
    let mut m = mastodon(&server, None);
    m.start().await.unwrap();

    // First run: the newest page only, and its cursor.
    let first = m.fetch_mentions(&BTreeMap::new(), &[]).await.unwrap();
    let ids: Vec<&str> = first.items.iter().map(|i| i.remote_id.as_str()).collect();
    assert_eq!(ids, ["101", "102"]);
    assert_eq!(first.cursors.get(CURSOR).map(String::as_str), Some("n2"));
    let item = &first.items[0];
    assert_eq!(item.thread, "101");
    assert_eq!(item.author, "bob@other.host");
    assert_eq!(item.display_name, "bob");
    assert_eq!(item.text, "@alice hi 101");
    assert_eq!(item.visibility.as_deref(), Some("public"));
    assert_eq!(item.url.as_deref(), Some("https://ex.social/@bob@other.host/101"));
    assert_eq!(server.requests_to("GET", "/api/v1/notifications").len(), 1);
    let asked = &server.requests_to("GET", "/api/v1/notifications")[0];
    assert_eq!(asked.query_all("types[]"), ["mention", "quote"]);
    assert_eq!(asked.query_all("limit"), ["80"]);

    assert!(!first.more, "a first run takes the newest page only");

    // Then forward, one page per fetch, each saying whether more is waiting, until an
    // empty page; replies get their thread's root.
    let mut cursors = first.cursors.clone();
    let mut items = Vec::new();
    let mut fetches = 0;
    loop {
        let next = m.fetch_mentions(&cursors, &[]).await.unwrap();
        fetches += 1;
        items.extend(next.items);
        cursors = next.cursors;
        if !next.more {
            break;
        }
        assert!(fetches < 10, "the walk ends");
    }
    let asked: Vec<Vec<String>> = server
        .requests_to("GET", "/api/v1/notifications")
        .iter()
        .skip(1)
        .map(|r| r.query_all("min_id"))
        .collect();
    assert_eq!(asked, [["n2"], ["n4"], ["n5"]]);
    assert_eq!(cursors.get(CURSOR).map(String::as_str), Some("n5"));
    let got: Vec<(&str, &str, Option<&str>)> = items
        .iter()
        .map(|i| (i.remote_id.as_str(), i.thread.as_str(), i.in_reply_to.as_deref()))
        .collect();
    assert_eq!(got, [("103", "500", Some("500")), ("104", "500", Some("103"))]);
    // 104's root came from 103's context: one context request for both.
    assert_eq!(server.requests_to("GET", "/api/v1/statuses/103/context").len(), 1);
    assert_eq!(server.requests_to("GET", "/api/v1/statuses/104/context").len(), 0);
    assert!(items.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn watched_threads_yield_replies_without_mentions() {
    let server = Server::start(notifications_server()).await;
    let mut m = mastodon(&server, None);
    m.start().await.unwrap();
    let mut cursors = BTreeMap::new();
    cursors.insert(CURSOR.to_owned(), "n9".to_owned());
    cursors.insert("other".to_owned(), "kept".to_owned());
    let got = m.fetch_mentions(&cursors, &["500".to_owned(), "404".to_owned()]).await.unwrap();
    let mut ids: Vec<(&str, &str)> =
        got.items.iter().map(|i| (i.remote_id.as_str(), i.thread.as_str())).collect();
    ids.sort_unstable();
    // Ours (105) is left out; a deleted watched post (404) is skipped.
    assert_eq!(ids, [("103", "500"), ("104", "500"), ("106", "500")]);
    assert_eq!(got.cursors, cursors, "no new notification keeps the cursor");
}

#[tokio::test]
async fn an_account_without_mentions_starts_from_the_beginning() {
    let server = Server::start(|r| {
        basics(r, true).unwrap_or_else(|| match r.query_all("min_id").first().map(String::as_str) {
            Some("0") => json(200, serde_json::json!([mention("n1", "101", None)])),
            _ => json(200, serde_json::json!([])),
        })
    })
    .await;
    let mut m = mastodon(&server, None);
    m.start().await.unwrap();
    let first = m.fetch_mentions(&BTreeMap::new(), &[]).await.unwrap();
    assert!(first.items.is_empty());
    assert_eq!(first.cursors.get(CURSOR).map(String::as_str), Some("0"));
    // Everything that arrived meanwhile is read, not just the newest page.
    let next = m.fetch_mentions(&first.cursors, &[]).await.unwrap();
    assert_eq!(next.items.len(), 1);
    assert_eq!(next.cursors.get(CURSOR).map(String::as_str), Some("n1"));
}

#[tokio::test]
async fn rate_limited_fetches_wait_for_the_reset() {
    let server = Server::start(|r| {
        basics(r, true).unwrap_or_else(|| {
            with_header(
                json(429, serde_json::json!({"error": "Too many requests"})),
                "X-RateLimit-Reset",
                &(Utc::now() + chrono::Duration::seconds(60)).to_rfc3339(),
            )
        })
    })
    .await;
    let mut m = mastodon(&server, None);
    m.start().await.unwrap();
    let err = m.fetch_mentions(&BTreeMap::new(), &[]).await.unwrap_err();
    assert!(
        matches!(err, NetError::Transient { retry_after: Some(d), .. } if d > Duration::from_secs(30)),
        "{err:?}"
    );
}

fn answer(text: &str, visibility: Option<&str>) -> Reply {
    Reply {
        conversation: 7,
        key: "answer-7-1".into(),
        text: text.into(),
        in_reply_to: "104".into(),
        thread: "500".into(),
        to: "bob@other.host".into(),
        visibility: visibility.map(str::to_owned),
        in_doubt: false,
    }
}

#[tokio::test]
async fn replies_mention_the_author_and_narrow_visibility() {
    let server = Server::start(|r| {
        if let Some(b) = basics(r, true) {
            return b;
        }
        match r.path() {
            "/api/v1/statuses" => json(200, status("600", "alice", Some("104"), "<p>ok</p>")),
            "/api/v1/accounts/1/statuses" => json(
                200,
                serde_json::json!([
                    status("601", "alice", Some("999"), "<p>@bob Thanks, glad you liked it</p>"),
                    status("600", "alice", Some("104"), r#"<p><span class="h-card"><a href="https://other.host/@bob" class="u-url mention">@<span>bob</span></a></span> Thanks, glad you liked it!</p>"#),
                ]),
            ),
            _ => json(500, serde_json::json!({})),
        }
    })
    .await;
    let mut m = mastodon(&server, Some("public"));
    m.start().await.unwrap();
    let posted = m.reply(&answer("Thanks, glad you liked it!", Some("private"))).await.unwrap();
    assert_eq!(posted.remote_id, "600");
    let r = &server.requests_to("POST", "/api/v1/statuses")[0];
    assert_eq!(r.header("idempotency-key"), Some("answer-7-1"));
    assert_eq!(r.form("status").as_deref(), Some("@bob@other.host Thanks, glad you liked it!"));
    assert_eq!(r.form("in_reply_to_id").as_deref(), Some("104"));
    assert_eq!(r.form("visibility").as_deref(), Some("private"));
    assert_eq!(r.form("language"), None);

    // No visibility configured: the account's default (unlisted) is not widened to public.
    let mut m = mastodon(&server, None);
    m.start().await.unwrap();
    m.reply(&answer("@bob@other.host ok", Some("public"))).await.unwrap();
    let r = &server.requests_to("POST", "/api/v1/statuses")[1];
    assert_eq!(r.form("status").as_deref(), Some("@bob@other.host ok"));
    assert_eq!(r.form("visibility").as_deref(), Some("unlisted"));

    // An attempt in doubt is found by its parent and text, not by text alone.
    let found = m.find_reply(&answer("Thanks, glad you liked it!", None)).await.unwrap();
    assert_eq!(found.map(|p| p.remote_id).as_deref(), Some("600"));
    let asked = server.requests_to("GET", "/api/v1/accounts/1/statuses");
    assert_eq!(asked[0].query_all("exclude_replies"), Vec::<String>::new());
    assert_eq!(m.find_reply(&answer("Something else", None)).await.unwrap(), None);
}

fn sse(body: &str, hold: Duration) -> Resp {
    Resp {
        status: 200,
        headers: vec![("Content-Type".into(), "text/event-stream".into())],
        body: body.into(),
        hold: Some(hold),
    }
}

async fn next_wakeup(rx: &mut mpsc::Receiver<()>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.is_ok_and(|r| r.is_some())
}

#[tokio::test]
async fn the_stream_wakes_on_connect_and_on_mentions() {
    let server = Server::start(|r| match r.path() {
        "/api/v1/streaming/user/notification" => sse(
            ":)\n\0:thump\nevent: notification\ndata: {\"type\":\"favourite\"}\n\n",
            Duration::from_millis(200),
        ),
        _ => json(404, serde_json::json!({})),
    })
    .await;
    let base = Url::parse(&server.base).unwrap();
    let mut rx = stream::spawn(stream::Config {
        account: "m".into(),
        candidates: vec![base],
        token: secret(),
        http: client(),
        silence: Duration::from_secs(5),
    })
    .unwrap();
    // On connect; a favourite does not wake; after the server closes, a reconnect does.
    assert!(next_wakeup(&mut rx).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "a favourite woke the worker");
    assert!(next_wakeup(&mut rx).await);
    let r = &server.requests()[0];
    assert_eq!(r.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    drop(rx);

    let server = Server::start(|_| {
        sse(":)\n\0event: notification\ndata: {\"type\":\"mention\"}\n\n", Duration::from_secs(30))
    })
    .await;
    let mut rx = stream::spawn(stream::Config {
        account: "m".into(),
        candidates: vec![Url::parse(&server.base).unwrap()],
        token: secret(),
        http: client(),
        silence: Duration::from_secs(5),
    })
    .unwrap();
    assert!(next_wakeup(&mut rx).await, "connect");
    assert!(next_wakeup(&mut rx).await, "mention");
}

#[tokio::test]
async fn the_stream_falls_back_to_the_main_host_and_drops_silent_connections() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = Url::parse(&format!("http://{}", dead.local_addr().unwrap())).unwrap();
    drop(dead);
    let server = Server::start(|_| sse(":)\n", Duration::from_secs(30))).await;
    let mut m = mastodon(&server, None);
    m.me = Some(Me { id: "1".into(), default_visibility: None, streaming: Some(dead_url) });
    let mut rx = m.take_wakeups().unwrap();
    assert!(m.take_wakeups().is_none(), "taken once");
    assert!(next_wakeup(&mut rx).await, "connected to the main host");
    assert_eq!(server.requests().len(), 1);
    drop(rx);

    // A stream that sends nothing after its preamble is reconnected.
    let mut rx = stream::spawn(stream::Config {
        account: "m".into(),
        candidates: vec![Url::parse(&server.base).unwrap()],
        token: secret(),
        http: client(),
        silence: Duration::from_millis(200),
    })
    .unwrap();
    assert!(next_wakeup(&mut rx).await);
    assert!(next_wakeup(&mut rx).await, "reconnected after silence");
}
