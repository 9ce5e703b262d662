//! Tests of the X adapter: the pure parts directly, the HTTP parts against the recording
//! responder (what was sent is asserted; the faithful emulator and the end-to-end tests are
//! in the `tests` crate).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::header::HeaderMap;
use serde_json::json;

use super::*;
use crate::config::SecretSource;
use crate::network::responder::{drop_connection, in_turn, json, with_header, Req, Resp, Server};

// ---------------------------------------------------------------------------------------
// Pure parts.

#[test]
fn pkce_matches_rfc_7636() {
    // RFC 7636 appendix B.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = oauth::base64(
        &<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()),
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    );
    assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    let (v, c) = pkce_pair();
    assert_eq!(v.len(), 43);
    assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(c.len(), 43);
    assert_ne!(pkce_pair().0, v, "fresh randomness each time");
    assert_eq!(random_state().len(), 32);
    assert_eq!(oauth::base64_standard(b"client:secret"), "Y2xpZW50OnNlY3JldA==");
    assert_eq!(oauth::base64_standard(b"ab"), "YWI=");
    assert_eq!(oauth::base64_standard(b""), "");
}

#[test]
fn authorize_url_is_as_documented() {
    let u = authorize_url("https://x.com", "cid", "http://127.0.0.1:8765/cb", "st+1", "chal");
    assert_eq!(
        u,
        "https://x.com/i/oauth2/authorize?response_type=code&client_id=cid&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcb&scope=tweet.read%20tweet.write%20users.read%20offline.access&state=st%2B1&code_challenge=chal&code_challenge_method=S256"
    );
    let full = authorize_url("http://127.0.0.1:9/i/oauth2/authorize", "c", "r", "s", "h");
    assert!(
        full.starts_with("http://127.0.0.1:9/i/oauth2/authorize?response_type=code&"),
        "{full}"
    );
}

#[test]
fn the_session_map_round_trips_and_never_shows_tokens() {
    let map: BTreeMap<String, String> = [
        ("access_token", "AAA"),
        ("refresh_token", "RRR"),
        ("expires_at", "1800000000"),
        ("scope", "tweet.read"),
        ("user_id", "42"),
        ("username", "@blogger"),
        ("future_key", "kept"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let session = Session::from_map(map.clone());
    assert_eq!(session.username.as_deref(), Some("blogger"));
    let mut expected = map;
    expected.insert("username".into(), "blogger".into());
    assert_eq!(session.to_map(), expected);
    let x = X::new("x", DEFAULT_API, "cid", None, session.to_map(), client());
    let shown = format!("{x:?}");
    assert!(!shown.contains("AAA") && !shown.contains("RRR"), "{shown}");
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

#[test]
fn rate_limits_wait_for_the_epoch_reset() {
    let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().with_timezone(&Utc);
    let t = now.timestamp();
    let wait = |pairs: &[(&str, &str)]| wire::rate_limit_wait(&headers(pairs), now);
    let reset = (t + 300).to_string();
    assert_eq!(
        wait(&[("x-rate-limit-remaining", "0"), ("x-rate-limit-reset", &reset)]),
        Some(Duration::from_secs(300))
    );
    // A spent 24-hour window outlasts the 15-minute one; an unspent one does not count.
    let day = (t + 20_000).to_string();
    assert_eq!(
        wait(&[
            ("x-rate-limit-reset", &reset),
            ("x-user-limit-24hour-remaining", "0"),
            ("x-user-limit-24hour-reset", &day)
        ]),
        Some(Duration::from_secs(20_000))
    );
    assert_eq!(
        wait(&[
            ("x-rate-limit-reset", &reset),
            ("x-app-limit-24hour-remaining", "5"),
            ("x-app-limit-24hour-reset", &day)
        ]),
        Some(Duration::from_secs(300))
    );
    assert_eq!(wait(&[("x-rate-limit-reset", &(t - 5).to_string())]), Some(Duration::from_secs(1)));
    assert_eq!(wait(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
    assert_eq!(wait(&[("x-rate-limit-reset", "soon")]), None);
    assert_eq!(wait(&[]), None);
}

#[test]
fn statuses_map_to_errors() {
    let now = Utc::now();
    let map = |code: u16, body: serde_json::Value, effect: Effect| {
        let problem: wire::Problem = serde_json::from_value(body).unwrap();
        let h = headers(&[("x-rate-limit-reset", &(now.timestamp() + 60).to_string())]);
        wire::status_error(
            StatusCode::from_u16(code).unwrap(),
            &h,
            &problem,
            "POST /2/tweets",
            effect,
            now,
        )
    };
    use reqwest::StatusCode;
    use Effect::{Creates, Read};
    assert_eq!(
        map(
            401,
            json!({"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}),
            Read
        ),
        NetError::Unauthorized("POST /2/tweets: HTTP 401: Unauthorized".into())
    );
    let NetError::Transient { retry_after: Some(w), .. } = map(
        429,
        json!({"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}),
        Creates,
    ) else {
        panic!()
    };
    assert!(w > Duration::from_secs(50) && w <= Duration::from_secs(60), "{w:?}");
    let capped = map(
        429,
        json!({"title":"UsageCapExceeded","detail":"Usage cap exceeded: Monthly product cap","type":"https://api.x.com/2/problems/usage-capped"}),
        Read,
    );
    assert!(
        matches!(&capped, NetError::Transient { retry_after: Some(w), message } if *w >= wire::USAGE_CAPPED_WAIT && message.contains("usage cap")),
        "{capped:?}"
    );
    assert!(matches!(map(503, json!({}), Creates), NetError::InDoubt { .. }));
    assert!(matches!(map(503, json!({}), Read), NetError::Transient { retry_after: None, .. }));
    assert!(matches!(
        map(400, json!({"title":"Invalid Request","detail":"One or more parameters to your request was invalid.","type":"https://api.twitter.com/2/problems/invalid-request","errors":[{"message":"The `text` field is too long."}]}), Creates),
        NetError::Rejected(m) if m.contains("One or more parameters") && m.contains("too long")
    ));
    assert!(matches!(
        map(
            403,
            json!({"title":"Client Forbidden","type":"https://api.twitter.com/2/problems/client-forbidden","detail":"attached to a Project"}),
            Read
        ),
        NetError::Unauthorized(_)
    ));
    assert!(matches!(
        map(
            403,
            json!({"detail":"You are not allowed to create a Tweet with duplicate content."}),
            Creates
        ),
        NetError::Rejected(_)
    ));
}

#[test]
fn texts_are_shown_with_links_and_entities_decoded() {
    let t: Tweet = serde_json::from_value(json!({
        "id": "5", "text": "@blogger Tom &amp; Jerry &lt;3 see https://t.co/abc",
        "entities": {"urls": [{"url": "https://t.co/abc", "expanded_url": "https://blog.test/p?utm_source=x", "display_url": "blog.test/p"}]},
        "referenced_posts": [{"type": "replied_to", "id": "4"}],
    }))
    .unwrap();
    assert_eq!(t.display_text(), "@blogger Tom & Jerry <3 see https://blog.test/p?utm_source=x");
    assert_eq!(t.replied_to(), Some("4"));
    assert_eq!(t.links().collect::<Vec<_>>(), vec!["https://blog.test/p?utm_source=x"]);
    assert!(id_less("999", "1000") && !id_less("1000", "999") && !id_less("5", "5"));
}

// ---------------------------------------------------------------------------------------
// Against the responder.

const ACCESS: &str = "acc-token-1";
const REFRESH: &str = "ref-token-1";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn secret(value: &str) -> Secret {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, value.as_bytes()).unwrap();
    SecretSource::File(path).load(None).unwrap()
}

/// A session whose access token has `left` seconds to live.
fn session(left: i64) -> BTreeMap<String, String> {
    Session {
        access: Some(Token(ACCESS.into())),
        refresh: Some(Token(REFRESH.into())),
        expires_at: Some(Utc::now().timestamp() + left),
        scope: Some(SCOPES.into()),
        user_id: Some("100".into()),
        username: Some("blogger".into()),
        other: BTreeMap::new(),
    }
    .to_map()
}

fn x(server: &Server, left: i64) -> X {
    X::new("xacc", &format!("{}/", server.base), "cid", None, session(left), client())
}

/// The token endpoint: rotates `ref-token-N` into `ref-token-N+1`, refuses anything else.
fn token_endpoint(req: &Req, count: &AtomicUsize) -> Resp {
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    let given = req.form("refresh_token").unwrap_or_default();
    if req.form("grant_type").as_deref() == Some("refresh_token")
        && given == format!("ref-token-{n}")
    {
        json(
            200,
            json!({"token_type":"bearer","expires_in":7200,"access_token":format!("acc-token-{}", n + 1),
                   "scope":SCOPES,"refresh_token":format!("ref-token-{}", n + 1)}),
        )
    } else {
        json(
            400,
            json!({"error":"invalid_request","error_description":"Value passed for the token was invalid."}),
        )
    }
}

fn me() -> Resp {
    json(200, json!({"data": {"id": "100", "name": "The Blogger", "username": "blogger"}}))
}

#[tokio::test]
async fn start_without_a_session_asks_for_a_login() {
    let server = Server::start(|_| me()).await;
    let mut x = X::new("xacc", &server.base, "cid", None, BTreeMap::new(), client());
    assert_eq!(
        x.start().await,
        Err(NetError::Unauthorized("not logged in: run presencectl login x --account xacc".into()))
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn start_with_a_fresh_token_only_checks_it() {
    let server = Server::start(|r| match r.path() {
        "/2/users/me" => me(),
        _ => json(404, json!({})),
    })
    .await;
    let mut x = x(&server, 7000);
    let before = x.session_data();
    let info = x.start().await.unwrap();
    assert_eq!(info.handle, "blogger");
    assert_eq!(info.rules, Rules::x());
    assert_eq!(info.mention_interval, Some(MENTION_INTERVAL));
    assert_eq!(x.session_data(), before, "nothing renewed");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), Some("Bearer acc-token-1"));
}

#[tokio::test]
async fn start_renews_a_token_near_expiry_and_returns_at_once() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let server = Server::start(move |r| match r.path() {
        "/2/oauth2/token" => token_endpoint(r, &c),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 600);
    x.start().await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "the refresh is the only request: {reqs:?}");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].form("client_id").as_deref(), Some("cid"), "a public client names itself");
    assert_eq!(reqs[0].header("authorization"), None);
    let data = x.session_data();
    assert_eq!(data["refresh_token"], "ref-token-2");
    assert_eq!(data["access_token"], "acc-token-2");
    let expires: i64 = data["expires_at"].parse().unwrap();
    assert!((expires - Utc::now().timestamp() - 7200).abs() < 5);
}

#[tokio::test]
async fn a_refused_refresh_token_asks_for_a_login_without_showing_tokens() {
    let server = Server::start(|r| match r.path() {
        "/2/oauth2/token" => json(400, json!({"error":"invalid_request","error_description":"Value passed for the token was invalid."})),
        _ => me(),
    })
    .await;
    let mut x = x(&server, -10);
    let err = x.start().await.unwrap_err();
    let NetError::Unauthorized(m) = &err else { panic!("{err:?}") };
    assert!(
        m.contains("Value passed for the token was invalid")
            && m.contains("presencectl login x --account xacc"),
        "{m}"
    );
    assert!(!m.contains(REFRESH) && !m.contains(ACCESS));
}

#[tokio::test]
async fn a_confidential_client_authenticates_with_basic() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let server = Server::start(move |r| token_endpoint(r, &c)).await;
    let mut x = X::new("xacc", &server.base, "cid", Some(secret("csecret")), session(10), client());
    x.start().await.unwrap();
    let req = &server.requests()[0];
    assert_eq!(req.header("authorization"), Some("Basic Y2lkOmNzZWNyZXQ="));
    assert_eq!(req.form("client_id"), None);
}

#[tokio::test]
async fn posts_are_created_with_json() {
    let server = Server::start(|r| match (r.method.as_str(), r.path()) {
        ("POST", "/2/tweets") => json(
            201,
            json!({"data": {"id": "1870000000000000000", "text": r.json()["text"], "edit_history_tweet_ids": ["1870000000000000000"]}}),
        ),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let posted =
        x.post(&post("New: Hello https://blog.test/p", "https://blog.test/p")).await.unwrap();
    assert_eq!(posted.remote_id, "1870000000000000000");
    assert_eq!(posted.url.as_deref(), Some("https://x.com/blogger/status/1870000000000000000"));
    let req = &server.requests_to("POST", "/2/tweets")[0];
    assert_eq!(req.json(), json!({"text": "New: Hello https://blog.test/p"}));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("authorization"), Some("Bearer acc-token-1"));
}

fn post(text: &str, url: &str) -> Post {
    Post {
        article: 1,
        key: "k".into(),
        text: text.into(),
        title: "Hello".into(),
        url: url.into(),
        summary: String::new(),
        image: None,
        in_doubt: false,
    }
}

fn own_timeline() -> Resp {
    json(
        200,
        json!({"data": [
            {"id": "30", "text": "Other https://t.co/b", "created_at": "2026-01-01T12:00:00.000Z",
             "entities": {"urls": [{"url": "https://t.co/b", "expanded_url": "https://blog.test/other"}]}},
            {"id": "20", "text": "New: Hello https://t.co/a", "created_at": "2026-01-01T11:00:00.000Z",
             "entities": {"urls": [{"url": "https://t.co/a", "expanded_url": "https://Blog.test/p?utm_source=rss"}]}},
        ], "meta": {"result_count": 2, "newest_id": "30", "oldest_id": "20"}}),
    )
}

#[tokio::test]
async fn a_duplicate_is_found_by_its_link() {
    let server = Server::start(|r| match (r.method.as_str(), r.path()) {
        ("POST", "/2/tweets") => json(403, json!({"detail":"You are not allowed to create a Tweet with duplicate content.","type":"about:blank","title":"Forbidden","status":403})),
        ("GET", "/2/users/100/tweets") => own_timeline(),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let posted =
        x.post(&post("New: Hello https://blog.test/p", "https://blog.test/p")).await.unwrap();
    assert_eq!(posted.remote_id, "20");
    let list = &server.requests_to("GET", "/2/users/100/tweets")[0];
    assert_eq!(list.query("exclude").as_deref(), Some("replies,retweets"));
    assert_eq!(list.query("max_results").as_deref(), Some("100"));
    assert!(list.query("tweet.fields").unwrap().contains("entities"));
    // Not there: refused, with the reason.
    let err = x.post(&post("t", "https://blog.test/missing")).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Rejected(m) if m.contains("duplicate content") && m.contains("no recent post")),
        "{err:?}"
    );
    // find_post always looks.
    let found = x.find_post(&post("t", "https://blog.test/p#top")).await.unwrap();
    assert_eq!(found.map(|p| p.remote_id).as_deref(), Some("20"));
    assert_eq!(x.find_post(&post("t", "https://blog.test/none")).await.unwrap(), None);
}

#[tokio::test]
async fn an_expired_token_is_renewed_before_and_instead_of_a_post() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let server = Server::start(move |r| match r.path() {
        "/2/oauth2/token" => token_endpoint(r, &c),
        "/2/tweets" => json(201, json!({"data": {"id": "9", "text": "x"}})),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    x.session.expires_at = Some(Utc::now().timestamp() - 1);
    let err = x.post(&post("t", "https://blog.test/p")).await.unwrap_err();
    assert!(matches!(err, NetError::Transient { retry_after: Some(_), .. }), "{err:?}");
    assert!(
        server.requests_to("POST", "/2/tweets").is_empty(),
        "nothing posted with a fresh, unstored refresh token"
    );
    assert_eq!(x.session_data()["refresh_token"], "ref-token-2");
    // The retry posts with the new token.
    x.post(&post("t", "https://blog.test/p")).await.unwrap();
    assert_eq!(
        server.requests_to("POST", "/2/tweets")[0].header("authorization"),
        Some("Bearer acc-token-2")
    );
}

#[tokio::test]
async fn a_401_renews_once_and_not_again_soon() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let server = Server::start(move |r| match r.path() {
        "/2/oauth2/token" => token_endpoint(r, &c),
        "/2/tweets" => json(401, json!({"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"})),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let err = x.post(&post("t", "https://blog.test/p")).await.unwrap_err();
    assert!(matches!(err, NetError::Transient { .. }), "{err:?}");
    assert_eq!(server.requests_to("POST", "/2/tweets").len(), 1);
    assert_eq!(server.requests_to("POST", "/2/oauth2/token").len(), 1);
    // Refused again with the token just renewed: no second renewal, the refusal stands.
    let err = x.post(&post("t", "https://blog.test/p")).await.unwrap_err();
    assert!(matches!(&err, NetError::Unauthorized(m) if m.contains("HTTP 401")), "{err:?}");
    assert_eq!(server.requests_to("POST", "/2/oauth2/token").len(), 1);
    assert_eq!(x.session_data()["refresh_token"], "ref-token-2");
    // Much later, a refusal is answered by renewing again.
    x.renewed_at = std::time::Instant::now().checked_sub(RENEWED_RECENTLY);
    let _ = x.post(&post("t", "https://blog.test/p")).await.unwrap_err();
    assert_eq!(server.requests_to("POST", "/2/oauth2/token").len(), 2);
    assert_eq!(x.session_data()["refresh_token"], "ref-token-3");
}

#[tokio::test]
async fn failures_after_sending_are_in_doubt() {
    let tweets = in_turn(vec![
        drop_connection(),
        json(
            503,
            json!({"title":"Service Unavailable","detail":"Service Unavailable","type":"about:blank","status":503}),
        ),
        with_header(
            with_header(
                json(
                    429,
                    json!({"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}),
                ),
                "x-rate-limit-remaining",
                "0",
            ),
            "x-rate-limit-reset",
            &(Utc::now().timestamp() + 120).to_string(),
        ),
    ]);
    let server = Server::start(move |r| match r.path() {
        "/2/tweets" => tweets(),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let p = post("t", "https://blog.test/p");
    assert!(matches!(x.post(&p).await, Err(NetError::InDoubt { .. })));
    assert!(matches!(x.post(&p).await, Err(NetError::InDoubt { .. })));
    let err = x.post(&p).await.unwrap_err();
    assert!(
        matches!(err, NetError::Transient { retry_after: Some(w), .. } if w > Duration::from_secs(100) && w <= Duration::from_secs(120)),
        "{err:?}"
    );
}

fn mention(
    id: &str,
    author: &str,
    text: &str,
    conversation: &str,
    reply_to: Option<&str>,
) -> serde_json::Value {
    let mut t = json!({
        "id": id, "text": text, "author_id": author, "conversation_id": conversation,
        "created_at": format!("2026-01-01T12:00:{:02}.000Z", id.parse::<u64>().unwrap() % 60),
        "edit_history_tweet_ids": [id],
        "entities": {"mentions": [{"start": 0, "end": 8, "username": "blogger", "id": "100"}]},
    });
    if let Some(r) = reply_to {
        t["referenced_tweets"] = json!([{"type": "replied_to", "id": r}]);
        t["in_reply_to_user_id"] = json!("100");
    }
    t
}

fn users() -> serde_json::Value {
    json!({"users": [{"id": "7", "name": "Alice A.", "username": "alice"}, {"id": "8", "name": "", "username": "bob"}]})
}

#[tokio::test]
async fn the_first_fetch_takes_the_newest_page() {
    let server = Server::start(|r| match r.path() {
        "/2/users/100/mentions" => json(
            200,
            json!({"data": [
                mention("53", "8", "@blogger hi", "53", None),
                mention("52", "100", "@blogger note to self", "52", None),
                mention("51", "7", "@blogger nice &amp; clear", "50", Some("50")),
            ], "includes": users(), "meta": {"result_count": 3, "newest_id": "53", "oldest_id": "51", "next_token": "n1"}}),
        ),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let m = x.fetch_mentions(&BTreeMap::new(), &["50".into()]).await.unwrap();
    let req = &server.requests_to("GET", "/2/users/100/mentions")[0];
    assert_eq!(req.query("max_results").as_deref(), Some("20"));
    assert_eq!(req.query("since_id"), None);
    assert_eq!(req.query("expansions").as_deref(), Some("author_id"));
    assert_eq!(req.query("user.fields").as_deref(), Some("username,name"));
    assert_eq!(
        req.query("tweet.fields").as_deref(),
        Some("created_at,author_id,conversation_id,in_reply_to_user_id,referenced_tweets,entities")
    );
    assert_eq!(server.requests_to("GET", "/2/users/100/mentions").len(), 1, "one page only");
    assert_eq!(m.cursors.get(CURSOR_SINCE_ID).map(String::as_str), Some("53"));
    assert!(!m.more);
    assert_eq!(m.items.len(), 2, "our own post is not a mention");
    let a = &m.items[0];
    assert_eq!(
        (a.remote_id.as_str(), a.thread.as_str(), a.in_reply_to.as_deref()),
        ("51", "50", Some("50"))
    );
    assert_eq!((a.author.as_str(), a.display_name.as_str()), ("alice", "Alice A."));
    assert_eq!(a.text, "@blogger nice & clear");
    assert_eq!(a.url.as_deref(), Some("https://x.com/alice/status/51"));
    assert_eq!(a.at, DateTime::parse_from_rfc3339("2026-01-01T12:00:51Z").unwrap().timestamp());
    let b = &m.items[1];
    assert_eq!(
        (b.author.as_str(), b.display_name.as_str(), b.thread.as_str()),
        ("bob", "bob", "53")
    );
}

#[tokio::test]
async fn later_fetches_page_from_since_id() {
    let server = Server::start(|r| match r.path() {
        "/2/users/100/mentions" => match r.query("pagination_token").as_deref() {
            None => json(200, json!({"data": [mention("63", "7", "@blogger c", "63", None), mention("62", "7", "@blogger b", "62", None)],
                "includes": users(), "meta": {"result_count": 2, "newest_id": "63", "oldest_id": "62", "next_token": "p2"}})),
            Some("p2") => json(200, json!({"data": [mention("61", "8", "@blogger a", "61", None)],
                "includes": users(), "meta": {"result_count": 1, "newest_id": "61", "oldest_id": "61"}})),
            Some(_) => json(400, json!({})),
        },
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let cursors: BTreeMap<String, String> = [(CURSOR_SINCE_ID.to_owned(), "60".to_owned())].into();
    let m = x.fetch_mentions(&cursors, &[]).await.unwrap();
    let reqs = server.requests_to("GET", "/2/users/100/mentions");
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.query("since_id").as_deref() == Some("60")
        && r.query("max_results").as_deref() == Some("100")));
    assert_eq!(reqs[1].query("pagination_token").as_deref(), Some("p2"));
    let ids: Vec<&str> = m.items.iter().map(|i| i.remote_id.as_str()).collect();
    assert_eq!(ids, vec!["61", "62", "63"], "oldest first");
    assert_eq!(m.cursors[CURSOR_SINCE_ID], "63");
}

#[tokio::test]
async fn an_account_without_mentions_starts_from_a_time() {
    let server = Server::start(|r| match r.path() {
        "/2/users/100/mentions" => json(200, json!({"meta": {"result_count": 0}})),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let m = x.fetch_mentions(&BTreeMap::new(), &[]).await.unwrap();
    assert!(m.items.is_empty());
    let since = m.cursors[CURSOR_SINCE_TIME].clone();
    assert!(DateTime::parse_from_rfc3339(&since).is_ok(), "{since}");
    let m2 = x.fetch_mentions(&m.cursors, &[]).await.unwrap();
    let req = &server.requests_to("GET", "/2/users/100/mentions")[1];
    assert_eq!(req.query("start_time").as_deref(), Some(since.as_str()));
    assert_eq!(req.query("max_results").as_deref(), Some("100"));
    assert_eq!(m2.cursors, m.cursors);
}

#[tokio::test]
async fn the_renamed_fields_are_understood() {
    let server = Server::start(|r| match r.path() {
        "/2/users/100/mentions" if r.query("tweet.fields").is_some() => json(400, json!({
            "errors": [{"parameters": {"tweet.fields": ["created_at"]}, "message": "The query parameter [tweet.fields] is not one of [id,max_results,post.fields]"}],
            "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.x.com/2/problems/invalid-request"})),
        "/2/users/100/mentions" => {
            let mut t = mention("71", "7", "@blogger hey", "70", None);
            t["referenced_posts"] = json!([{"type": "replied_to", "id": "70"}]);
            t["edit_history_post_ids"] = json!(["71"]);
            json(200, json!({"data": [t], "includes": {"users": users()["users"], "posts": [{"id": "70", "text": "root"}]},
                "meta": {"result_count": 1, "newest_id": "71", "oldest_id": "71"}}))
        }
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let m = x
        .fetch_mentions(&[(CURSOR_SINCE_ID.to_owned(), "1".to_owned())].into(), &[])
        .await
        .unwrap();
    assert_eq!(m.items[0].in_reply_to.as_deref(), Some("70"));
    let reqs = server.requests_to("GET", "/2/users/100/mentions");
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].query("post.fields").as_deref(),
        Some("created_at,author_id,conversation_id,in_reply_to_user_id,referenced_posts,entities")
    );
    // Remembered: the next fetch asks the new way at once.
    x.fetch_mentions(&m.cursors, &[]).await.unwrap();
    assert_eq!(server.requests_to("GET", "/2/users/100/mentions").len(), 3);
}

#[tokio::test]
async fn a_fetch_ends_by_renewing_a_token_that_expires_soon() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let server = Server::start(move |r| match r.path() {
        "/2/oauth2/token" => token_endpoint(r, &c),
        "/2/users/100/mentions" => json(
            200,
            json!({"data": [mention("81", "7", "@blogger x", "81", None)], "includes": users(),
            "meta": {"result_count": 1, "newest_id": "81", "oldest_id": "81"}}),
        ),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 3600);
    x.start().await.unwrap();
    assert!(server.requests_to("POST", "/2/oauth2/token").is_empty());
    x.session.expires_at = Some(Utc::now().timestamp() + 900);
    let m = x.fetch_mentions(&BTreeMap::new(), &[]).await.unwrap();
    assert_eq!(m.items.len(), 1);
    let reqs = server.requests();
    assert_eq!(reqs.last().unwrap().path(), "/2/oauth2/token", "the refresh is the last request");
    assert_eq!(x.session_data()["refresh_token"], "ref-token-2");
    // An expired token: renewed, nothing fetched, the cursors unchanged.
    x.session.expires_at = Some(Utc::now().timestamp() - 5);
    let before = server.requests_to("GET", "/2/users/100/mentions").len();
    let m = x
        .fetch_mentions(&[(CURSOR_SINCE_ID.to_owned(), "81".to_owned())].into(), &[])
        .await
        .unwrap();
    assert!(m.items.is_empty() && m.cursors[CURSOR_SINCE_ID] == "81");
    assert_eq!(server.requests_to("GET", "/2/users/100/mentions").len(), before);
    assert_eq!(x.session_data()["refresh_token"], "ref-token-3");
}

fn reply(text: &str, to: &str) -> Reply {
    Reply {
        conversation: 1,
        key: "rk".into(),
        text: text.into(),
        in_reply_to: to.into(),
        thread: "50".into(),
        to: "alice".into(),
        visibility: None,
        in_doubt: false,
    }
}

#[tokio::test]
async fn answers_reply_in_thread_and_report_the_summoned_rule() {
    let server = Server::start(|r| match (r.method.as_str(), r.path()) {
        ("POST", "/2/tweets") if r.json()["reply"]["in_reply_to_tweet_id"] == "51" => {
            json(201, json!({"data": {"id": "90", "text": "thanks"}}))
        }
        ("POST", "/2/tweets") => json(403, json!({"detail": "Reply to this conversation is not allowed because you have not been mentioned or otherwise engaged by the author of the post you are replying to.", "type": "about:blank", "title": "Forbidden", "status": 403})),
        ("GET", "/2/users/100/tweets") => json(200, json!({"data": [
            {"id": "90", "text": "@alice Thanks &amp; see https://t.co/z", "referenced_tweets": [{"type": "replied_to", "id": "51"}],
             "entities": {"urls": [{"url": "https://t.co/z", "expanded_url": "https://blog.test/more"}]}}
        ], "meta": {"result_count": 1}})),
        _ => me(),
    })
    .await;
    let mut x = x(&server, 7000);
    x.start().await.unwrap();
    let posted = x.reply(&reply("Thanks & see https://blog.test/more", "51")).await.unwrap();
    assert_eq!(posted.remote_id, "90");
    let sent = server.requests_to("POST", "/2/tweets")[0].json();
    assert_eq!(
        sent,
        json!({"text": "Thanks & see https://blog.test/more", "reply": {"in_reply_to_tweet_id": "51"}})
    );
    let err = x.reply(&reply("hello", "52")).await.unwrap_err();
    let NetError::Rejected(m) = &err else { panic!("{err:?}") };
    assert!(m.starts_with(NOT_SUMMONED) && m.contains("not been mentioned"), "{m}");
    // In doubt: the earlier answer is found by its parent and text.
    let found = x.find_reply(&reply("Thanks & see https://blog.test/more", "51")).await.unwrap();
    assert_eq!(found.map(|p| p.remote_id).as_deref(), Some("90"));
    assert_eq!(x.find_reply(&reply("Other words", "51")).await.unwrap(), None);
    let list = server.requests_to("GET", "/2/users/100/tweets");
    assert_eq!(list[0].query("exclude").as_deref(), Some("retweets"), "replies included");
}

#[tokio::test]
async fn a_code_is_exchanged_for_a_session() {
    let server = Server::start(|r| match r.path() {
        "/2/oauth2/token" if r.form("code").as_deref() == Some("good") => json(
            200,
            json!({"token_type":"bearer","expires_in":7200,"access_token":"A1","scope":SCOPES,"refresh_token":"R1"}),
        ),
        "/2/oauth2/token" => json(400, json!({"error":"invalid_request","error_description":"Value passed for the authorization code was invalid."})),
        "/2/users/me" if r.header("authorization") == Some("Bearer A1") => me(),
        _ => json(401, json!({"title":"Unauthorized","detail":"Unauthorized","type":"about:blank","status":401})),
    })
    .await;
    let s = secret("csecret");
    let map = exchange_code(
        &client(),
        &server.base,
        "cid",
        Some(&s),
        "good",
        "verif",
        "http://127.0.0.1:1/cb",
    )
    .await
    .unwrap();
    assert_eq!(map["access_token"], "A1");
    assert_eq!(map["refresh_token"], "R1");
    assert_eq!(map["user_id"], "100");
    assert_eq!(map["username"], "blogger");
    let req = &server.requests_to("POST", "/2/oauth2/token")[0];
    assert_eq!(req.form("grant_type").as_deref(), Some("authorization_code"));
    assert_eq!(req.form("code_verifier").as_deref(), Some("verif"));
    assert_eq!(req.form("redirect_uri").as_deref(), Some("http://127.0.0.1:1/cb"));
    assert!(req.header("authorization").unwrap().starts_with("Basic "));
    let err =
        exchange_code(&client(), &server.base, "cid", None, "bad", "v", "r").await.unwrap_err();
    assert!(
        matches!(&err, NetError::Rejected(m) if m.contains("authorization code was invalid")),
        "{err:?}"
    );
}
