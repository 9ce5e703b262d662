//! Tests of the Facebook adapter: error codes and usage headers directly, the HTTP parts
//! against the recording responder (the faithful emulator is in the `tests` crate).

use reqwest::header::HeaderMap;
use serde_json::json;

use super::*;
use crate::config::SecretSource;
use crate::network::responder::{drop_connection, in_turn, json, with_header, Req, Resp, Server};

const PAGE: &str = "546349135390552";
const TOKEN: &str = "EAAB-page-token";

fn error(code: i64, subcode: Option<i64>, message: &str) -> serde_json::Value {
    let mut e =
        json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf"});
    if let Some(s) = subcode {
        e["error_subcode"] = json!(s);
    }
    json!({ "error": e })
}

#[test]
fn errors_are_decided_on_their_code() {
    let map = |code: i64, subcode: Option<i64>, effect: Effect| {
        let e: graph::GraphError =
            serde_json::from_value(error(code, subcode, "m")["error"].clone()).unwrap();
        graph::graph_error(400, &e, &Usage::default(), "POST /{page-id}/feed", effect)
    };
    let e = map(190, Some(460), Effect::Read);
    assert!(
        matches!(&e, NetError::Unauthorized(m) if m.contains("invalid or expired") && m.contains("code 190, subcode 460")),
        "{e:?}"
    );
    assert!(matches!(map(200, None, Effect::Creates), NetError::Unauthorized(_)));
    assert!(matches!(map(10, None, Effect::Read), NetError::Unauthorized(_)));
    for code in [4, 17, 32, 613, 80001] {
        assert!(
            matches!(map(code, None, Effect::Creates), NetError::Transient { retry_after: Some(w), .. } if w == graph::RATE_WAIT),
            "{code}"
        );
    }
    assert!(matches!(map(506, Some(1_455_006), Effect::Creates), NetError::Rejected(_)));
    assert!(matches!(map(100, None, Effect::Creates), NetError::Rejected(_)));
    assert!(matches!(map(2, None, Effect::Creates), NetError::InDoubt { .. }));
    assert!(matches!(map(1, None, Effect::Read), NetError::Transient { .. }));
    assert!(matches!(
        map(1_609_005, None, Effect::Creates),
        NetError::Transient { retry_after: Some(_), .. }
    ));
    // A usage header's regain time wins over the default wait.
    let e: graph::GraphError =
        serde_json::from_value(error(32, None, "Page request limit reached")["error"].clone())
            .unwrap();
    let usage = Usage { percent: 100, regain: Some(Duration::from_secs(1200)) };
    assert!(matches!(
        graph::graph_error(403, &e, &usage, "GET", Effect::Read),
        NetError::Transient { retry_after: Some(w), .. } if w == Duration::from_secs(1200)
    ));
}

#[test]
fn usage_headers_are_read() {
    let mut h = HeaderMap::new();
    h.insert(
        "x-app-usage",
        HeaderValue::from_static(r#"{"call_count":12,"total_cputime":3,"total_time":40}"#),
    );
    assert_eq!(Usage::from_headers(&h), Usage { percent: 40, regain: None });
    h.insert(
        "x-business-use-case-usage",
        HeaderValue::from_static(
            r#"{"546349135390552":[{"type":"pages","call_count":96,"total_cputime":10,"total_time":5,"estimated_time_to_regain_access":0}]}"#,
        ),
    );
    assert_eq!(Usage::from_headers(&h), Usage { percent: 96, regain: None });
    h.insert(
        "x-page-usage",
        HeaderValue::from_static(r#"{"call_count":100,"estimated_time_to_regain_access":7}"#),
    );
    assert_eq!(
        Usage::from_headers(&h),
        Usage { percent: 100, regain: Some(Duration::from_secs(420)) }
    );
    h.insert("x-app-usage", HeaderValue::from_static("not json"));
    assert_eq!(Usage::from_headers(&h).percent, 100);
}

#[test]
fn graph_times_and_paging() {
    let c = json!({"created_time": "2026-01-01T12:00:00+0000"});
    assert_eq!(time_field(&c, "created_time"), Some(1_767_268_800));
    assert_eq!(time_field(&json!({"t": 5}), "t"), Some(5));
    let page = json!({"data": [], "paging": {"cursors": {"before": "B", "after": "QVFI"}, "next": "https://graph.facebook.com/v25.0/1/comments?access_token=x&after=QVFI"}});
    assert_eq!(next_cursor(&page).as_deref(), Some("QVFI"));
    let last = json!({"data": [], "paging": {"cursors": {"before": "B", "after": "A"}}});
    assert_eq!(next_cursor(&last), None);
    let only_next = json!({"paging": {"next": "https://g/x?after=Z9&limit=2"}});
    assert_eq!(next_cursor(&only_next).as_deref(), Some("Z9"));
    assert_eq!(
        urls_in("see https://blog.test/p. and (https://x.y/z)").collect::<Vec<_>>(),
        vec!["https://blog.test/p"]
    );
}

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

fn fb(server: &Server) -> Facebook {
    Facebook::new(
        "fb",
        &format!("{}/v25.0/", server.base),
        PAGE,
        secret(),
        BTreeMap::new(),
        client(),
    )
}

fn me() -> Resp {
    json(200, json!({"id": PAGE, "name": "My Blog"}))
}

fn post(url: &str) -> Post {
    Post {
        article: 1,
        key: "k".into(),
        text: format!("New: Hello {url}"),
        title: "Hello".into(),
        url: url.into(),
        summary: String::new(),
        image: None,
        in_doubt: false,
    }
}

#[tokio::test]
async fn start_checks_the_token_is_the_pages() {
    let server = Server::start(|r| match r.path() {
        "/v25.0/me" => me(),
        _ => json(404, json!({})),
    })
    .await;
    let mut fb = fb(&server);
    let info = fb.start().await.unwrap();
    assert_eq!(info.handle, "My Blog");
    assert_eq!(info.rules, Rules::facebook());
    assert_eq!(info.mention_interval, Some(MENTION_INTERVAL));
    let req = &server.requests()[0];
    assert_eq!(req.header("authorization"), Some("Bearer EAAB-page-token"));
    assert!(!req.target.contains(TOKEN), "the token is not in the URL");
    assert_eq!(req.query("fields").as_deref(), Some("id,name"));

    let other = Server::start(|_| json(200, json!({"id": "999", "name": "Some User"}))).await;
    let err = Facebook::new("fb", &other.base, PAGE, secret(), BTreeMap::new(), client())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(&err, NetError::Unauthorized(m) if m.contains("not to the Page")), "{err:?}");
}

#[tokio::test]
async fn an_invalid_token_is_unauthorised_without_showing_it() {
    let server = Server::start(|_| {
        json(400, error(190, Some(460), "Error validating access token: The session has been invalidated because the user changed their password."))
    })
    .await;
    let err = fb(&server).start().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("unauthorised:")
            && text.contains("code 190")
            && text.contains("changed their password"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn posts_carry_message_and_link() {
    let server = Server::start(|r| match (r.method.as_str(), r.path()) {
        ("POST", "/v25.0/546349135390552/feed") => {
            json(200, json!({"id": "546349135390552_1116689038356556"}))
        }
        _ => me(),
    })
    .await;
    let mut fb = fb(&server);
    let posted = fb.post(&post("https://blog.test/p")).await.unwrap();
    assert_eq!(posted.remote_id, "546349135390552_1116689038356556");
    assert_eq!(
        posted.url.as_deref(),
        Some("https://www.facebook.com/546349135390552_1116689038356556")
    );
    let req = &server.requests_to("POST", "/v25.0/546349135390552/feed")[0];
    assert_eq!(req.form("message").as_deref(), Some("New: Hello https://blog.test/p"));
    assert_eq!(req.form("link").as_deref(), Some("https://blog.test/p"));
    assert_eq!(req.header("authorization"), Some("Bearer EAAB-page-token"));
}

fn page_posts() -> Resp {
    json(
        200,
        json!({"data": [
            {"id": "546349135390552_3", "message": "Just words", "created_time": "2026-01-03T12:00:00+0000"},
            {"id": "546349135390552_2", "message": "New: Hello https://blog.test/q?utm_source=fb", "created_time": "2026-01-02T12:00:00+0000",
             "permalink_url": "https://www.facebook.com/x/posts/2"},
            {"id": "546349135390552_1", "message": "New: Hi", "link": "https://Blog.test/p", "created_time": "2026-01-01T12:00:00+0000"},
        ], "paging": {"cursors": {"before": "b", "after": "a"}}}),
    )
}

#[tokio::test]
async fn a_duplicate_is_found_by_its_link() {
    let server = Server::start(|r| match (r.method.as_str(), r.path()) {
        ("POST", _) => json(400, error(506, Some(1_455_006), "Duplicate status message")),
        ("GET", "/v25.0/546349135390552/posts") => page_posts(),
        _ => me(),
    })
    .await;
    let mut fb = fb(&server);
    let posted = fb.post(&post("https://blog.test/p")).await.unwrap();
    assert_eq!(posted.remote_id, "546349135390552_1");
    let list = &server.requests_to("GET", "/v25.0/546349135390552/posts")[0];
    assert_eq!(list.query("fields").as_deref(), Some("id,link,message,created_time,permalink_url"));
    // A link in the message counts too; nothing found is refused with the reason.
    let found = fb.find_post(&post("https://blog.test/q")).await.unwrap().unwrap();
    assert_eq!(found.url.as_deref(), Some("https://www.facebook.com/x/posts/2"));
    assert_eq!(fb.find_post(&post("https://blog.test/none")).await.unwrap(), None);
    let err = fb.post(&post("https://blog.test/none")).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Rejected(m) if m.contains("Duplicate status message") && m.contains("code 506")),
        "{err:?}"
    );
}

#[tokio::test]
async fn failures_after_sending_are_in_doubt_and_rate_limits_wait() {
    let posts = in_turn(vec![
        drop_connection(),
        json(
            500,
            error(2, None, "An unexpected error has occurred. Please retry your request later."),
        ),
        with_header(
            json(400, error(32, None, "Page request limit reached")),
            "X-Business-Use-Case-Usage",
            r#"{"546349135390552":[{"type":"pages","call_count":100,"total_cputime":20,"total_time":20,"estimated_time_to_regain_access":12}]}"#,
        ),
    ]);
    let server = Server::start(move |r| match (r.method.as_str(), r.path()) {
        ("POST", _) => posts(),
        _ => me(),
    })
    .await;
    let mut fb = fb(&server);
    let p = post("https://blog.test/p");
    assert!(matches!(fb.post(&p).await, Err(NetError::InDoubt { .. })));
    assert!(matches!(fb.post(&p).await, Err(NetError::InDoubt { .. })));
    let err = fb.post(&p).await.unwrap_err();
    assert!(
        matches!(err, NetError::Transient { retry_after: Some(w), .. } if w == Duration::from_secs(720)),
        "{err:?}"
    );
    // Waiting: the next request is not even sent.
    let before = server.requests().len();
    let err = fb.fetch_mentions(&BTreeMap::new(), &[]).await.unwrap_err();
    assert!(
        matches!(err, NetError::Transient { retry_after: Some(w), .. } if w > Duration::from_secs(700)),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), before);
}

/// Regression (server_faults): a bare 429 with `Retry-After` from a proxy in front of Graph
/// waited the 15-minute default instead.
#[tokio::test]
async fn a_bare_429_waits_its_retry_after() {
    let posts = in_turn(vec![
        with_header(json(429, json!({"error": "slow down"})), "Retry-After", "3"),
        json(429, json!({"error": "slow down"})),
    ]);
    let server = Server::start(move |r| match (r.method.as_str(), r.path()) {
        ("POST", _) => posts(),
        _ => me(),
    })
    .await;
    let mut fb = fb(&server);
    let p = post("https://blog.test/p");
    let err = fb.post(&p).await.unwrap_err();
    assert!(
        matches!(err, NetError::Transient { retry_after: Some(w), .. } if w == Duration::from_secs(3)),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = fb.post(&p).await.unwrap_err();
    assert!(
        matches!(err, NetError::Transient { retry_after: Some(w), .. } if w == graph::RATE_WAIT),
        "{err:?}"
    );
}

fn comment(
    id: &str,
    from: (&str, &str),
    message: &str,
    time: &str,
    parent: Option<&str>,
) -> serde_json::Value {
    let mut c = json!({"id": id, "from": {"id": from.0, "name": from.1}, "message": message,
        "created_time": time, "permalink_url": format!("https://www.facebook.com/c/{id}")});
    if let Some(p) = parent {
        c["parent"] = json!({"id": p});
    }
    c
}

#[tokio::test]
async fn comments_become_conversations_per_top_level_comment() {
    let server = Server::start(|r: &Req| match r.path() {
        "/v25.0/546349135390552/posts" => json(200, json!({"data": [
            {"id": "546349135390552_2", "created_time": "2026-01-02T12:00:00+0000"},
        ], "paging": {"cursors": {"before": "b", "after": "a"}}})),
        "/v25.0/546349135390552_1/comments" => json(200, json!({"data": [
            comment("1_13", ("77", "Jane Doe"), "Thanks!", "2026-01-01T12:03:00+0000", Some("1_11")),
            comment("1_12", (PAGE, "My Blog"), "Glad you liked it", "2026-01-01T12:02:00+0000", Some("1_11")),
            comment("1_11", ("77", "Jane Doe"), "Great article", "2026-01-01T12:01:00+0000", None),
        ], "paging": {"cursors": {"before": "b", "after": "a"}}})),
        "/v25.0/546349135390552_2/comments" => json(400, error(100, Some(33), "Unsupported get request. Object with ID '546349135390552_2' does not exist")),
        _ => me(),
    })
    .await;
    let mut fb = fb(&server);
    let watch = vec!["546349135390552_1".to_owned(), "1_99".to_owned()];
    let m = fb.fetch_mentions(&BTreeMap::new(), &watch).await.unwrap();
    let posts_req = &server.requests_to("GET", "/v25.0/546349135390552/posts")[0];
    let since: i64 = posts_req.query("since").unwrap().parse().unwrap();
    assert!((Utc::now().timestamp() - since - 7 * 24 * 3600).abs() < 10);
    let reqs = server.requests_to("GET", "/v25.0/546349135390552_1/comments");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].query("filter").as_deref(), Some("stream"));
    assert_eq!(reqs[0].query("order").as_deref(), Some("reverse_chronological"));
    assert_eq!(
        reqs[0].query("fields").as_deref(),
        Some("id,from,message,created_time,parent,permalink_url")
    );
    assert!(
        server.requests_to("GET", "/v25.0/1_99/comments").is_empty(),
        "our answers are not polled"
    );
    let ids: Vec<(&str, &str, Option<&str>)> = m
        .items
        .iter()
        .map(|i| (i.remote_id.as_str(), i.thread.as_str(), i.in_reply_to.as_deref()))
        .collect();
    assert_eq!(
        ids,
        vec![("1_11", "1_11", Some("546349135390552_1")), ("1_13", "1_11", Some("1_11"))]
    );
    assert_eq!(m.items[0].author, "Jane Doe");
    assert_eq!(m.items[0].url.as_deref(), Some("https://www.facebook.com/c/1_11"));
    assert_eq!(m.cursors[CURSOR_SINCE], "1767268980", "the newest comment's time");
}

#[tokio::test]
async fn later_fetches_page_down_to_the_cursor() {
    let server = Server::start(|r: &Req| match r.path() {
        "/v25.0/546349135390552/posts" => json(200, json!({"data": []})),
        "/v25.0/546349135390552_1/comments" => match r.query("after").as_deref() {
            None => json(200, json!({"data": [
                comment("1_25", ("78", "Max"), "e", "2026-01-01T13:05:00+0000", None),
                comment("1_24", ("78", "Max"), "d", "2026-01-01T13:04:00+0000", None),
            ], "paging": {"cursors": {"before": "b", "after": "P2"}, "next": "https://graph.facebook.com/v25.0/x?after=P2"}})),
            Some("P2") => json(200, json!({"data": [
                comment("1_23", ("78", "Max"), "c", "2026-01-01T13:00:00+0000", None),
                comment("1_22", ("78", "Max"), "b", "2026-01-01T12:40:00+0000", None),
            ], "paging": {"cursors": {"before": "b", "after": "P3"}, "next": "https://graph.facebook.com/v25.0/x?after=P3"}})),
            Some(_) => json(500, json!({})),
        },
        _ => me(),
    })
    .await;
    let mut fb = fb(&server);
    // Stored: 13:00. Read back to 12:50 (the overlap), not further.
    let cursors: BTreeMap<String, String> =
        [(CURSOR_SINCE.to_owned(), "1767272400".to_owned())].into();
    let m = fb.fetch_mentions(&cursors, &["546349135390552_1".into()]).await.unwrap();
    assert_eq!(server.requests_to("GET", "/v25.0/546349135390552_1/comments").len(), 2);
    let ids: Vec<&str> = m.items.iter().map(|i| i.remote_id.as_str()).collect();
    assert_eq!(ids, vec!["1_23", "1_24", "1_25"]);
    assert_eq!(m.cursors[CURSOR_SINCE], "1767272700");
}

#[tokio::test]
async fn high_usage_pauses_polling_but_not_posting() {
    let server = Server::start(|r: &Req| {
        let resp = match (r.method.as_str(), r.path()) {
            ("POST", _) => json(200, json!({"id": "546349135390552_5"})),
            (_, "/v25.0/546349135390552/posts") => json(200, json!({"data": []})),
            _ => me(),
        };
        with_header(resp, "X-App-Usage", r#"{"call_count":95,"total_cputime":10,"total_time":10}"#)
    })
    .await;
    let mut fb = fb(&server);
    fb.fetch_mentions(&BTreeMap::new(), &[]).await.unwrap();
    let n = server.requests().len();
    let err = fb.fetch_mentions(&BTreeMap::new(), &[]).await.unwrap_err();
    assert!(matches!(err, NetError::Transient { retry_after: Some(_), .. }));
    assert_eq!(server.requests().len(), n, "no request while paused");
    fb.post(&post("https://blog.test/p")).await.unwrap();
}

#[tokio::test]
async fn answers_go_under_the_top_level_comment() {
    let server = Server::start(|r: &Req| match (r.method.as_str(), r.path()) {
        ("POST", "/v25.0/1_11/comments") => json(200, json!({"id": "1_40"})),
        ("POST", _) => json(400, error(100, Some(33), "Unsupported post request.")),
        ("GET", "/v25.0/1_11/comments") => json(200, json!({"data": [
            comment("1_40", (PAGE, "My Blog"), "Thank you, Jane!", "2026-01-01T12:09:00+0000", None),
        ]})),
        _ => me(),
    })
    .await;
    let mut fb = fb(&server);
    let reply = Reply {
        conversation: 1,
        key: "rk".into(),
        text: "Thank you, Jane!".into(),
        in_reply_to: "1_13".into(),
        thread: "1_11".into(),
        to: "Jane Doe".into(),
        visibility: None,
        in_doubt: false,
    };
    let posted = fb.reply(&reply).await.unwrap();
    assert_eq!(posted.remote_id, "1_40");
    assert_eq!(
        server.requests_to("POST", "/v25.0/1_11/comments")[0].form("message").as_deref(),
        Some("Thank you, Jane!")
    );
    assert_eq!(fb.find_reply(&reply).await.unwrap().map(|p| p.remote_id).as_deref(), Some("1_40"));
    let other = Reply { text: "Something else".into(), ..reply.clone() };
    assert_eq!(fb.find_reply(&other).await.unwrap(), None);
    let gone = Reply { thread: "1_66".into(), ..reply };
    assert!(matches!(fb.reply(&gone).await, Err(NetError::Rejected(m)) if m.contains("deleted")));
}
