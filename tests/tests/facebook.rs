//! Facebook Page accounts end to end: the real daemon and presencectl against the local
//! Graph API emulator (tests/src/facebook.rs) and a local feed server.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::Duration;

use presence_e2e::facebook::{Facebook, Fault};
use presence_e2e::feed_server::{blog, rss, FeedServer};
use presence_e2e::{text, wait_until, Sandbox};
use serde_json::Value;

const TEMPLATE: &str = "New on the blog: {title} {url}";

struct World {
    fb: Facebook,
    page: String,
    token: String,
    server: FeedServer,
    sb: Sandbox,
}

/// A Page on the emulator, its token in a 0600 file, a blog with 3 articles, presenced
/// configured for both.
fn world() -> World {
    let fb = Facebook::start();
    let page = fb.add_page("My Blog");
    let token = fb.page_token(&page);
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    let token_file = sb.secret_file("fb.token", &token);
    sb.write_config(&format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\ntemplate = {TEMPLATE:?}\n\n[[account]]\nname = \"fb\"\nkind = \"facebook\"\npage_id = {page:?}\nserver = {:?}\ntoken = {{ file = {:?} }}\n",
        server.url,
        fb.url(),
        token_file
    ));
    World { fb, page, token, server, sb }
}

impl World {
    fn posts(&self) -> Vec<Value> {
        self.fb.posts_of(&self.page)
    }

    fn list(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        self.sb.ctl_json(&all).as_array().unwrap().clone()
    }

    fn poll(&self) {
        assert!(self.sb.ctl(&["poll"]).status.success());
    }

    fn health(&self) -> String {
        self.sb.ctl_json(&["status"])["accounts"][0]["health"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn account_ready(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.health() == "ok"),
            "account ready: {:#}\n{}",
            self.sb.ctl_json(&["status"]),
            self.sb.log()
        );
    }

    fn baseline(&self) {
        assert!(wait_until(Duration::from_secs(10), || {
            self.sb.ctl_json(&["status"])["feeds"][0]["baseline_taken"] == true
        }));
    }

    fn announcements(&self) -> Vec<Value> {
        self.sb
            .ctl_json(&["posts"])
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["accounts"][0].clone())
            .collect()
    }

    fn feed_path(&self) -> String {
        format!("/v25.0/{}/feed", self.page)
    }

    fn conversation_with(&self, who: &str) -> Value {
        self.list(&["--all"])
            .into_iter()
            .find(|c| c["participants"].as_array().unwrap().iter().any(|p| p == who))
            .unwrap_or_else(|| panic!("no conversation with {who}: {:#?}", self.list(&["--all"])))
    }
}

#[test]
fn two_new_articles_make_exactly_two_page_posts() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    assert!(w.posts().is_empty(), "the baseline announces nothing");
    w.server.set_body(&rss(&blog(1..=5)));
    w.poll();
    assert!(wait_until(Duration::from_secs(15), || w.posts().len() >= 2), "{}", w.sb.log());
    std::thread::sleep(Duration::from_millis(500));
    let posts = w.posts();
    assert_eq!(posts.len(), 2, "exactly two posts");
    let mut links: Vec<&str> = posts.iter().map(|p| p["link"].as_str().unwrap()).collect();
    links.sort();
    assert_eq!(links, vec!["https://blog.test/4/", "https://blog.test/5/"]);
    for p in &posts {
        let id = p["id"].as_str().unwrap();
        assert!(id.starts_with(&format!("{}_", w.page)), "{id}");
        assert!(p["message"].as_str().unwrap().starts_with("New on the blog: Post number"), "{p}");
    }
    let creates = w.fb.requests_to("POST", &w.feed_path());
    assert_eq!(creates.len(), 2);
    for r in &creates {
        assert_eq!(r.header("authorization"), Some(format!("Bearer {}", w.token).as_str()));
        assert!(!r.path_and_query.contains(&w.token), "the token is not in the URL");
        assert!(r.body.contains("link=https%3A%2F%2Fblog.test%2F"), "{}", r.body);
    }
    let shown = w.announcements();
    assert_eq!(shown.iter().filter(|a| a["state"] == "posted").count(), 2, "{shown:#?}");
}

#[test]
fn a_post_whose_answer_was_lost_is_found_on_the_page_and_not_repeated() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.fb.inject("POST", &w.feed_path(), Fault::DropAfterCreate, 1);
    w.server.set_body(&rss(&blog(1..=4)));
    w.poll();
    assert!(
        wait_until(Duration::from_secs(30), || w
            .announcements()
            .iter()
            .any(|a| a["state"] == "posted")),
        "posted after reconciling: {:#?}\n{}",
        w.announcements(),
        w.sb.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.posts().len(), 1, "the lost answer did not make a second post");
    assert_eq!(w.fb.requests_to("POST", &w.feed_path()).len(), 1, "found, so never sent again");
    let read = w.fb.requests_to("GET", &format!("/v25.0/{}/posts", w.page));
    assert!(
        read.iter().any(|r| r.query_param("fields").is_some_and(|f| f.contains("link"))),
        "reconciled by reading the Page's posts"
    );
}

#[test]
fn a_duplicate_refusal_is_resolved_as_posted() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    // The admin already shared the article by hand, with the same words.
    let by_hand = w.fb.post_as_page(
        &w.page,
        "New on the blog: Post number 4 https://blog.test/4/",
        Some("https://blog.test/4/"),
    );
    w.server.set_body(&rss(&blog(1..=4)));
    w.poll();
    assert!(
        wait_until(Duration::from_secs(15), || w
            .announcements()
            .iter()
            .any(|a| a["state"] == "posted")),
        "{:#?}\n{}",
        w.announcements(),
        w.sb.log()
    );
    let creates = w.fb.requests_to("POST", &w.feed_path());
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].status, Some(400), "refused as a duplicate (code 506)");
    assert_eq!(w.posts().len(), 1, "not doubled");
    let posted = w.announcements().into_iter().find(|a| a["state"] == "posted").unwrap();
    let num = by_hand.split('_').nth(1).unwrap();
    assert!(posted["remote_url"].as_str().unwrap().contains(num), "{posted}");
}

#[test]
fn comments_become_conversations_and_answers_land_under_the_comment() {
    let w = world();
    let jane = w.fb.add_user("Jane Doe");
    let max = w.fb.add_user("Max Power");
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.server.set_body(&rss(&blog(1..=4)));
    w.poll();
    assert!(wait_until(Duration::from_secs(15), || w.posts().len() == 1));
    let post = w.posts()[0]["id"].as_str().unwrap().to_owned();

    let c1 = w.fb.comment_as(&jane, &post, "Great article!");
    let c2 = w.fb.comment_as(&max, &c1, "Agreed, but what about part two?");
    let own = w.fb.comment_as(&w.page, &c1, "Thanks Jane (written in the browser)");
    let c3 = w.fb.comment_as(&max, &post, "Typo in the second paragraph");
    w.poll();
    assert!(
        wait_until(Duration::from_secs(15), || w.list(&[]).len() == 2),
        "one conversation per top-level comment: {:#?}\n{}",
        w.list(&["--all"]),
        w.sb.log()
    );
    let thread = w.conversation_with("Jane Doe");
    let shown = w.sb.ctl_json(&["show", thread["id"].as_str().unwrap()]);
    let texts: Vec<&str> =
        shown["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        vec!["Great article!", "Agreed, but what about part two?"],
        "the Page's own comment is not a message"
    );
    assert!(shown["messages"][0]["url"].as_str().unwrap().contains("comment_id="));
    let typo = w.list(&[]).into_iter().find(|c| c["id"] != thread["id"]).unwrap();
    assert_eq!(typo["last_message"]["text"], "Typo in the second paragraph");
    let comments = w.fb.requests_to("GET", &format!("/v25.0/{post}/comments"));
    let last = comments.last().unwrap();
    assert_eq!(last.query_param("filter").as_deref(), Some("stream"));
    assert_eq!(last.query_param("order").as_deref(), Some("reverse_chronological"));

    // The answer goes under Jane's top-level comment, as the Page.
    let id = thread["id"].as_str().unwrap();
    let out = w.sb.ctl(&["answer", id, "Part two is coming next week."]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let posted: Vec<Value> =
        w.fb.comments_on(&post)
            .into_iter()
            .filter(|c| c["message"] == "Part two is coming next week.")
            .collect();
    assert_eq!(posted.len(), 1, "one answer");
    assert_eq!(posted[0]["parent"]["id"], c1.as_str());
    assert_eq!(posted[0]["from"]["id"], w.page.as_str());
    assert_eq!(w.fb.requests_to("POST", &format!("/v25.0/{c1}/comments")).len(), 1);
    let shown = w.sb.ctl_json(&["show", id]);
    assert_eq!(shown["messages"].as_array().unwrap().last().unwrap()["delivery"], "posted");
    // Our answer does not come back as a message.
    w.poll();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.sb.ctl_json(&["show", id])["messages"].as_array().unwrap().len(), 3);
    let _ = (c2, own, c3);
}

#[test]
fn an_invalid_token_shows_in_status_and_never_in_output() {
    let w = world();
    w.fb.invalidate_token(&w.page, 460);
    let _daemon = w.sb.start();
    assert!(
        wait_until(Duration::from_secs(10), || w.health().contains("code 190")),
        "{}",
        w.health()
    );
    let health = w.health();
    assert!(
        health.starts_with("unauthorised") && health.contains("invalid or expired"),
        "{health}"
    );
    let human = text(&w.sb.ctl(&["status"]).stdout);
    assert!(human.contains("code 190"), "{human}");
    let json = text(&w.sb.ctl(&["--json", "status"]).stdout);
    for shown in [&human, &json, &w.sb.log()] {
        assert!(!shown.contains(&w.token), "the token never shows");
    }
}

#[test]
fn a_token_invalidated_while_running_shows_in_status() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    w.fb.invalidate_token(&w.page, 463);
    w.poll();
    assert!(
        wait_until(Duration::from_secs(10), || w.health().contains("code 190, subcode 463")),
        "{}\n{}",
        w.health(),
        w.sb.log()
    );
    assert!(!w.sb.log().contains(&w.token));
}

#[test]
fn a_page_near_its_quota_stops_polling() {
    let w = world();
    w.fb.set_call_limit(6);
    let _daemon = w.sb.start();
    w.account_ready();
    for _ in 0..6 {
        w.poll();
    }
    assert!(
        wait_until(Duration::from_secs(10), || w.health().contains("call quota")),
        "{}\n{}",
        w.health(),
        w.sb.log()
    );
    let asked = w.fb.requests().len();
    assert!(asked <= 6, "stopped at the quota, never beyond: {asked}");
    for _ in 0..3 {
        w.poll();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.fb.requests().len(), asked, "no calls while the Page waits to regain access");
}

#[test]
fn a_rate_limit_error_shows_in_status_and_is_not_hammered() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    w.fb.inject("GET", "/v25.0/", Fault::Graph { code: 32, subcode: None }, 1);
    w.poll();
    assert!(
        wait_until(Duration::from_secs(10), || w.health().contains("rate limited")),
        "{}\n{}",
        w.health(),
        w.sb.log()
    );
    assert!(w.health().contains("code 32"), "{}", w.health());
    let asked = w.fb.requests().len();
    for _ in 0..3 {
        w.poll();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.fb.requests().len(), asked, "no calls during the wait");
}

// ---------------------------------------------------------------------------------------
// The emulator itself: the behaviours the adapter relies on, checked over HTTP.

fn graph(
    fb: &Facebook,
    token: Option<&str>,
    method: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::blocking::Client::new();
    let url = format!("{}{path}", fb.url());
    let mut req = if method == "POST" { client.post(url).form(form) } else { client.get(url) };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().unwrap_or(Value::Null))
}

#[test]
fn emulator_graph_behaviour() {
    let fb = Facebook::start();
    let page = fb.add_page("My Blog");
    let other = fb.add_page("Someone Else");
    let token = fb.page_token(&page);
    let t = Some(token.as_str());

    // Tokens: none, unknown, another Page's.
    let (status, _, e) = graph(&fb, None, "GET", "/me", &[]);
    assert_eq!((status, e["error"]["code"].as_i64()), (400, Some(104)));
    let (status, headers, e) = graph(&fb, Some("nope"), "GET", "/me", &[]);
    assert_eq!((status, e["error"]["code"].as_i64()), (400, Some(190)));
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(
        graph(&fb, t, "GET", "/me", &[]).2,
        serde_json::json!({"id": page, "name": "My Blog"})
    );
    let (status, _, e) = graph(&fb, t, "POST", &format!("/{other}/feed"), &[("message", "hi")]);
    assert_eq!((status, e["error"]["code"].as_i64()), (403, Some(200)));

    // Posts: ids, duplicates of the latest message, unknown fields, usage header.
    let (status, headers, p1) = graph(
        &fb,
        t,
        "POST",
        &format!("/{page}/feed"),
        &[("message", "one"), ("link", "https://blog.test/1/")],
    );
    assert_eq!(status, 200);
    let p1 = p1["id"].as_str().unwrap().to_owned();
    assert!(p1.starts_with(&format!("{page}_")));
    let usage: Value =
        serde_json::from_str(headers["x-business-use-case-usage"].to_str().unwrap()).unwrap();
    assert_eq!(usage[&page][0]["type"], "pages");
    let (_, _, e) = graph(&fb, t, "POST", &format!("/{page}/feed"), &[("message", "one")]);
    assert_eq!(
        (e["error"]["code"].as_i64(), e["error"]["error_subcode"].as_i64()),
        (Some(506), Some(1_455_006))
    );
    let (_, _, e) = graph(&fb, t, "POST", &format!("/{page}/feed"), &[]);
    assert_eq!(e["error"]["code"], 100);
    let (_, _, e) = graph(&fb, t, "GET", &format!("/{page}/posts?fields=id,bogus"), &[]);
    assert!(e["error"]["message"].as_str().unwrap().contains("nonexisting field (bogus)"));
    fb.set_unreachable_link("https://blog.test/down/");
    let (_, _, e) = graph(
        &fb,
        t,
        "POST",
        &format!("/{page}/feed"),
        &[("message", "two"), ("link", "https://blog.test/down/")],
    );
    assert_eq!(e["error"]["code"], 1_609_005);

    // Comments: ids, one level of nesting, filter and order, cursor paging with the token
    // in `next`, missing objects.
    let jane = fb.add_user("Jane Doe");
    let c1 = fb.comment_as(&jane, &p1, "first");
    let r1 = fb.comment_as(&jane, &c1, "reply");
    let r2 = fb.comment_as(&jane, &r1, "reply to the reply");
    let c2 = fb.comment_as(&jane, &p1, "second");
    assert!(c1.starts_with(&format!("{}_", p1.split('_').nth(1).unwrap())));
    let ids = |v: &Value| -> Vec<String> {
        v["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, _, top) = graph(&fb, t, "GET", &format!("/{p1}/comments"), &[]);
    assert_eq!(ids(&top), vec![c1.clone(), c2.clone()], "top level, oldest first");
    let (_, _, stream) = graph(
        &fb,
        t,
        "GET",
        &format!(
            "/{p1}/comments?filter=stream&order=reverse_chronological&fields=id,parent&limit=2"
        ),
        &[],
    );
    assert_eq!(ids(&stream), vec![c2.clone(), r2.clone()]);
    assert_eq!(
        stream["data"][1]["parent"]["id"],
        c1.as_str(),
        "a reply to a reply joins the top-level comment"
    );
    let next = stream["paging"]["next"].as_str().unwrap();
    assert!(next.contains(&format!("access_token={token}")), "Graph's next links carry the token");
    let after = stream["paging"]["cursors"]["after"].as_str().unwrap();
    let (_, _, rest) = graph(&fb, t, "GET", &format!("/{p1}/comments?filter=stream&order=reverse_chronological&fields=id,parent&limit=2&after={after}"), &[]);
    assert_eq!(ids(&rest), vec![r1.clone(), c1.clone()]);
    assert!(rest["paging"].get("next").is_none(), "the last page has no next");
    let (_, _, replies) = graph(&fb, t, "GET", &format!("/{c1}/comments"), &[]);
    assert_eq!(ids(&replies), vec![r1, r2]);
    let (status, _, e) = graph(&fb, t, "GET", "/123_456/comments", &[]);
    assert_eq!(
        (status, e["error"]["code"].as_i64(), e["error"]["error_subcode"].as_i64()),
        (400, Some(100), Some(33))
    );

    // An invalidated token: 190 with the reason's subcode.
    fb.invalidate_token(&page, 460);
    let (_, _, e) = graph(&fb, t, "GET", "/me", &[]);
    assert_eq!(
        (e["error"]["code"].as_i64(), e["error"]["error_subcode"].as_i64()),
        (Some(190), Some(460))
    );
    let renewed = fb.renew_token(&page);
    assert_eq!(graph(&fb, Some(&renewed), "GET", "/me", &[]).0, 200);
    assert_eq!(
        graph(&fb, t, "GET", "/me", &[]).2["error"]["code"],
        190,
        "the old token stays dead"
    );
}
