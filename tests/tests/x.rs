//! X accounts end to end: the real daemon and presencectl against the local X emulator
//! (tests/src/x.rs) and a local feed server.
//!
//! The daemon has no login command yet, so each test logs in the way `presencectl login x`
//! will: the emulator approves an authorization request (PKCE) and the test exchanges the
//! code with `presenced::network::x::exchange_code`. The session map it returns is written
//! into the state file (`state.accounts["x"].data`) before the daemon first starts. Keys:
//! `access_token`, `refresh_token`, `expires_at`, `scope`, `user_id`, `username`.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use presence_e2e::feed_server::{blog, rss, FeedServer};
use presence_e2e::x::{Fault, X};
use presence_e2e::{text, wait_until, Sandbox};
use presenced::network::x::{authorize_url, exchange_code, pkce_pair, random_state};
use serde_json::Value;

const CLIENT: &str = "presence-test-client";
const REDIRECT: &str = "http://127.0.0.1:8765/callback";
const TEMPLATE: &str = "New on the blog: {title} {url}";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// Logs `user` in through the emulator as `presencectl login x` will: PKCE, an approved
/// authorization, the code exchanged for a session.
fn login(x: &X, user: &str) -> BTreeMap<String, String> {
    let (verifier, challenge) = pkce_pair();
    let code = x.authorize(CLIENT, user, REDIRECT, &challenge);
    runtime()
        .block_on(exchange_code(&http(), &x.url(), CLIENT, None, &code, &verifier, REDIRECT))
        .unwrap()
}

/// The session the daemon has stored, read from the state file.
fn stored_session(sb: &Sandbox) -> BTreeMap<String, String> {
    let path = sb.state_dir().join("state");
    let bytes = std::fs::read(&path).unwrap();
    let state = presenced::store::decode(&bytes, &path).unwrap();
    state.accounts.get("x").map(|a| a.data.clone()).unwrap_or_default()
}

struct World {
    x: X,
    me: String,
    server: FeedServer,
    sb: Sandbox,
    session: BTreeMap<String, String>,
}

/// A blogger on the emulator, logged in for a public client; a blog with 3 articles;
/// presenced configured for both with the session seeded.
fn world_with(setup: impl FnOnce(&X)) -> World {
    let x = X::start();
    let me = x.add_user("blogger", "The Blogger");
    x.add_client(CLIENT, None, REDIRECT);
    setup(&x);
    let session = login(&x, "blogger");
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\ntemplate = {TEMPLATE:?}\n\n[[account]]\nname = \"x\"\nkind = \"x\"\nclient_id = {CLIENT:?}\nserver = {:?}\n",
        server.url,
        x.url(),
    ));
    sb.seed_account_data("x", &session);
    World { x, me, server, sb, session }
}

fn world() -> World {
    world_with(|_| {})
}

impl World {
    fn posts(&self) -> Vec<Value> {
        self.x.posts_of(&self.me)
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

    /// The account's announcement of each article, as `presencectl posts` shows it.
    fn announcements(&self) -> Vec<Value> {
        self.sb
            .ctl_json(&["posts"])
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["accounts"][0].clone())
            .collect()
    }

    fn conversation_with(&self, handle: &str) -> Value {
        self.list(&["--all"])
            .into_iter()
            .find(|c| c["participants"].as_array().unwrap().iter().any(|p| p == handle))
            .unwrap_or_else(|| {
                panic!("no conversation with {handle}: {:#?}", self.list(&["--all"]))
            })
    }
}

fn expanded_urls(post: &Value) -> Vec<String> {
    post["entities"]["urls"]
        .as_array()
        .map(|u| u.iter().map(|e| e["expanded_url"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn two_new_articles_make_exactly_two_posts() {
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
    let mut links: Vec<String> = posts.iter().flat_map(expanded_urls).collect();
    links.sort();
    assert_eq!(links, vec!["https://blog.test/4/", "https://blog.test/5/"]);
    for p in &posts {
        assert!(p["text"].as_str().unwrap().contains("https://t.co/"), "{p}");
    }
    let creates = w.x.requests_to("POST", "/2/tweets");
    assert_eq!(creates.len(), 2);
    assert!(creates.iter().all(
        |r| r.header("authorization") == Some(&format!("Bearer {}", w.session["access_token"]))
    ));
    let shown = w.announcements();
    assert!(shown.iter().filter(|a| a["state"] == "posted").count() == 2, "{shown:#?}");
    assert!(shown
        .iter()
        .filter(|a| a["state"] == "posted")
        .all(|a| a["remote_url"].as_str().unwrap().starts_with("https://x.com/blogger/status/")));
}

#[test]
fn a_post_whose_answer_was_lost_is_found_by_listing_and_not_repeated() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.x.inject("POST", "/2/tweets", Fault::DropAfterCreate, 1);
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
    assert_eq!(w.x.requests_to("POST", "/2/tweets").len(), 1, "found, so never sent again");
    let listing = w.x.requests_to("GET", &format!("/2/users/{}/tweets", w.me));
    assert!(!listing.is_empty(), "reconciled by listing the account's posts");
    assert!(listing[0].query_param("tweet.fields").unwrap().contains("entities"));
    let remote = w.announcements().into_iter().find(|a| a["state"] == "posted").unwrap();
    assert!(remote["remote_url"].as_str().unwrap().ends_with(w.posts()[0]["id"].as_str().unwrap()));
}

#[test]
fn a_duplicate_content_refusal_is_resolved_as_posted() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    // The blogger already posted the very text by hand.
    let by_hand = w.x.post_as(&w.me, "New on the blog: Post number 4 https://blog.test/4/", None);
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
    let creates = w.x.requests_to("POST", "/2/tweets");
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].status, Some(403), "X refused it as duplicate content");
    assert_eq!(w.posts().len(), 1, "not doubled");
    let posted = w.announcements().into_iter().find(|a| a["state"] == "posted").unwrap();
    assert!(posted["remote_url"].as_str().unwrap().ends_with(&by_hand), "{posted}");
}

#[test]
fn mentions_become_conversations_and_answers_reply_in_the_thread() {
    let w = world();
    w.x.add_user("alice", "Alice");
    w.x.add_user("bob", "Bob");
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.server.set_body(&rss(&blog(1..=4)));
    w.poll();
    assert!(wait_until(Duration::from_secs(15), || w.posts().len() == 1));
    let announcement = w.posts()[0]["id"].as_str().unwrap().to_owned();

    let a1 = w.x.post_as("alice", "@blogger What about Atom feeds?", None);
    let b1 = w.x.post_as("bob", "Nice one!", Some(&announcement));
    let b2 = w.x.post_as("bob", "And the follow-up? @blogger", Some(&b1));
    w.poll();
    assert!(
        wait_until(Duration::from_secs(15), || w.list(&[]).len() == 2),
        "two conversations: {:#?}\n{}",
        w.list(&["--all"]),
        w.sb.log()
    );
    let alice = w.conversation_with("alice");
    assert_eq!(alice["account"], "x");
    assert_eq!(alice["last_message"]["text"], "@blogger What about Atom feeds?");
    assert_eq!(alice["last_message"]["url"], format!("https://x.com/alice/status/{a1}"));
    let bob = w.conversation_with("bob");
    let shown = w.sb.ctl_json(&["show", bob["id"].as_str().unwrap()]);
    let texts: Vec<&str> =
        shown["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        vec!["@blogger Nice one!", "And the follow-up? @blogger"],
        "one thread, oldest first"
    );
    // The next fetch goes on from the newest mention stored.
    let newest = w.x.mentions_of(&w.me)[0]["id"].as_str().unwrap().to_owned();
    w.poll();
    assert!(wait_until(Duration::from_secs(10), || {
        let mentions = w.x.requests_to("GET", &format!("/2/users/{}/mentions", w.me));
        mentions.last().unwrap().query_param("since_id").as_deref() == Some(newest.as_str())
    }));
    let mentions = w.x.requests_to("GET", &format!("/2/users/{}/mentions", w.me));
    assert_eq!(mentions.last().unwrap().query_param("expansions").as_deref(), Some("author_id"));

    // Alice mentioned the account herself: the answer goes out in her thread.
    let id = alice["id"].as_str().unwrap();
    let out = w.sb.ctl(&["answer", id, "Atom works too, thanks!"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replies: Vec<Value> =
        w.posts().into_iter().filter(|p| p["conversation_id"] == a1.as_str()).collect();
    assert_eq!(replies.len(), 1, "one answer");
    assert_eq!(
        replies[0]["referenced_tweets"][0],
        serde_json::json!({"type": "replied_to", "id": a1})
    );
    assert_eq!(replies[0]["text"], "@alice Atom works too, thanks!");
    let shown = w.sb.ctl_json(&["show", id]);
    assert_eq!(shown["messages"][1]["delivery"], "posted");
    let _ = b2;
}

#[test]
fn a_reply_x_refuses_shows_its_error_and_the_conversation_stays_open() {
    let w = world();
    w.x.add_user("bob", "Bob");
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.server.set_body(&rss(&blog(1..=4)));
    w.poll();
    assert!(wait_until(Duration::from_secs(15), || w.posts().len() == 1));
    let announcement = w.posts()[0]["id"].as_str().unwrap().to_owned();
    // Bob replies under the announcement: X puts @blogger in front, so it is a mention,
    // but Bob did not summon the account himself.
    w.x.post_as("bob", "Interesting.", Some(&announcement));
    w.poll();
    assert!(wait_until(Duration::from_secs(15), || w.list(&[]).len() == 1), "{}", w.sb.log());
    let id = w.list(&[])[0]["id"].as_str().unwrap().to_owned();
    let _ = w.sb.ctl(&["answer", &id, "Thanks Bob"]);
    let failed = || {
        let shown = w.sb.ctl_json(&["show", &id]);
        shown["messages"].as_array().unwrap().iter().find(|m| m["mine"] == true).cloned()
    };
    assert!(
        wait_until(Duration::from_secs(15), || failed().is_some_and(|m| m["delivery"] == "failed")),
        "{:#?}\n{}",
        w.sb.ctl_json(&["show", &id]),
        w.sb.log()
    );
    let answer = failed().unwrap();
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("X allows replies only to posts that mention or quote this account"),
        "{error}"
    );
    assert_eq!(
        w.sb.ctl_json(&["show", &id])["status"],
        "open",
        "{:#}",
        w.sb.ctl_json(&["show", &id])
    );
    assert!(w.list(&[]).iter().any(|c| c["id"] == id.as_str()), "still in the queue");
    let refused =
        w.x.requests_to("POST", "/2/tweets").into_iter().filter(|r| r.status == Some(403)).count();
    assert_eq!(refused, 1, "refused once, not retried");
    assert_eq!(w.posts().len(), 1, "only the announcement");
}

#[test]
fn the_rotated_refresh_token_survives_restarts() {
    let w = world();
    let first_refresh = w.session["refresh_token"].clone();
    // The session's access token is about to expire (10 minutes left by our clock).
    let mut near = w.session.clone();
    near.insert("expires_at".into(), (chrono::Utc::now().timestamp() + 600).to_string());
    w.sb.seed_account_data("x", &near);

    let mut daemon = w.sb.start();
    w.account_ready();
    // start renewed it at once, and the worker stored the rotated pair.
    assert!(
        wait_until(Duration::from_secs(10), || stored_session(&w.sb)["refresh_token"]
            != first_refresh),
        "rotated and stored"
    );
    let second = stored_session(&w.sb);
    assert!(!w.x.refresh_token_valid(&first_refresh), "the old refresh token is dead");
    assert!(w.x.refresh_token_valid(&second["refresh_token"]));
    assert_eq!(w.x.requests_to("POST", "/2/oauth2/token").len(), 2, "the login, then one refresh");
    // The old refresh token is refused by the token endpoint.
    let refused = reqwest::blocking::Client::new()
        .post(format!("{}/2/oauth2/token", w.x.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", first_refresh.as_str()),
            ("client_id", CLIENT),
        ])
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    assert!(refused.text().unwrap().contains("Value passed for the token was invalid."));

    // A crash, and a restart with what was stored: it works without a login.
    daemon.kill9();
    let mut daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.server.set_body(&rss(&blog(1..=4)));
    w.poll();
    assert!(wait_until(Duration::from_secs(15), || w.posts().len() == 1), "{}", w.sb.log());
    let post = w.x.requests_to("POST", "/2/tweets")[0].clone();
    assert_eq!(
        post.header("authorization"),
        Some(format!("Bearer {}", second["access_token"]).as_str())
    );

    // Two hours later X refuses the access token: renewed (rotating again), then posted.
    w.x.advance_clock(Duration::from_secs(2 * 3600 + 60));
    w.server.set_body(&rss(&blog(1..=5)));
    w.poll();
    assert!(
        wait_until(Duration::from_secs(20), || w.posts().len() == 2),
        "{:#?}\n{}",
        w.announcements(),
        w.sb.log()
    );
    let third = stored_session(&w.sb);
    assert_ne!(third["refresh_token"], second["refresh_token"]);
    assert!(!w.x.refresh_token_valid(&second["refresh_token"]));
    assert!(w.x.refresh_token_valid(&third["refresh_token"]));
    assert_eq!(
        w.x.valid_refresh_tokens(),
        vec![third["refresh_token"].clone()],
        "exactly one live refresh token"
    );
    daemon.kill9();
    let _daemon = w.sb.start();
    w.account_ready();
    assert_eq!(stored_session(&w.sb)["refresh_token"], third["refresh_token"]);
    let log = w.sb.log();
    for secret in
        [&first_refresh, &second["refresh_token"], &third["refresh_token"], &third["access_token"]]
    {
        assert!(!log.contains(secret.as_str()), "tokens never reach the log");
    }
}

#[test]
fn without_a_session_the_account_asks_for_a_login() {
    let w = world();
    w.sb.seed_account_data("x", &BTreeMap::new());
    let _daemon = w.sb.start();
    assert!(
        wait_until(Duration::from_secs(10), || w.health().contains("not logged in")),
        "{}",
        w.health()
    );
    assert!(w.health().contains("presencectl login x --account x"), "{}", w.health());
}

#[test]
fn the_login_flow_works_against_the_emulator() {
    let x = X::start();
    x.add_user("blogger", "The Blogger");
    x.add_client(CLIENT, None, REDIRECT);
    let (verifier, challenge) = pkce_pair();
    let state = random_state();
    let url = authorize_url(&x.url(), CLIENT, REDIRECT, &state, &challenge);
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Not logged in: the page asks for a login and redirects nowhere.
    let page = browser.get(&url).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    // Approved: redirected to the callback with the state and a code.
    let approved = browser.get(&url).header("X-Emulator-User", "blogger").send().unwrap();
    assert_eq!(approved.status().as_u16(), 302);
    let location = url::Url::parse(approved.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(REDIRECT));
    let param = |k: &str| location.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned());
    assert_eq!(param("state").as_deref(), Some(state.as_str()));
    let code = param("code").unwrap();

    let rt = runtime();
    // A wrong verifier is refused, and the code is spent by that attempt.
    let wrong = rt.block_on(exchange_code(
        &http(),
        &x.url(),
        CLIENT,
        None,
        &code,
        "not-the-verifier-at-all-not-the-verifier",
        REDIRECT,
    ));
    assert!(
        matches!(&wrong, Err(presenced::network::NetError::Rejected(m)) if m.contains("authorization code was invalid")),
        "{wrong:?}"
    );
    let reused =
        rt.block_on(exchange_code(&http(), &x.url(), CLIENT, None, &code, &verifier, REDIRECT));
    assert!(reused.is_err(), "a code works once");

    // A fresh code, exchanged in time: the session.
    let code = x.authorize(CLIENT, "blogger", REDIRECT, &challenge);
    let session = rt
        .block_on(exchange_code(&http(), &x.url(), CLIENT, None, &code, &verifier, REDIRECT))
        .unwrap();
    let keys: Vec<&str> = session.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec!["access_token", "expires_at", "refresh_token", "scope", "user_id", "username"]
    );
    assert_eq!(session["username"], "blogger");
    assert_eq!(session["user_id"], x.user_id("blogger"));
    assert!(x.access_token_valid(&session["access_token"]));
    assert!(x.refresh_token_valid(&session["refresh_token"]));
    assert_eq!(session["scope"], "tweet.read tweet.write users.read offline.access");

    // A code older than 30 seconds is refused.
    let late = x.authorize(CLIENT, "blogger", REDIRECT, &challenge);
    x.advance_clock(Duration::from_secs(31));
    assert!(rt
        .block_on(exchange_code(&http(), &x.url(), CLIENT, None, &late, &verifier, REDIRECT))
        .is_err());
}

#[test]
fn a_confidential_client_logs_in_with_its_secret() {
    use std::os::unix::fs::PermissionsExt;
    let x = X::start();
    x.add_user("blogger", "The Blogger");
    x.add_client("conf", Some("s3cret"), REDIRECT);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "s3cret\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = presenced::config::SecretSource::File(path).load(None).unwrap();
    let (verifier, challenge) = pkce_pair();
    let rt = runtime();
    let code = x.authorize("conf", "blogger", REDIRECT, &challenge);
    let without =
        rt.block_on(exchange_code(&http(), &x.url(), "conf", None, &code, &verifier, REDIRECT));
    assert!(matches!(&without, Err(presenced::network::NetError::Unauthorized(_))), "{without:?}");
    let code = x.authorize("conf", "blogger", REDIRECT, &challenge);
    let session = rt
        .block_on(exchange_code(
            &http(),
            &x.url(),
            "conf",
            Some(&secret),
            &code,
            &verifier,
            REDIRECT,
        ))
        .unwrap();
    assert!(x.refresh_token_valid(&session["refresh_token"]));
    let token_req = x.requests_to("POST", "/2/oauth2/token").pop().unwrap();
    assert!(token_req.header("authorization").unwrap().starts_with("Basic "));
    assert!(!token_req.body.contains("s3cret"));
}

#[test]
fn a_usage_cap_stops_the_polling_and_shows_in_status() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    assert!(wait_until(Duration::from_secs(10), || !w
        .x
        .requests_to("GET", "/2/users/")
        .is_empty()));
    w.x.set_usage_capped(true);
    w.poll();
    assert!(
        wait_until(Duration::from_secs(10), || w.health().contains("usage cap")),
        "{}\n{}",
        w.health(),
        w.sb.log()
    );
    let asked = w.x.requests_to("GET", "/2/users/").len();
    for _ in 0..3 {
        w.poll();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.x.requests_to("GET", "/2/users/").len(), asked, "no hammering while capped");
}

#[test]
fn the_renamed_fields_of_the_newest_spec_work() {
    let w = world_with(|x| {
        x.set_renamed_fields(true);
        x.add_user("carol", "Carol");
    });
    let _daemon = w.sb.start();
    w.account_ready();
    let root = w.x.post_as("carol", "@blogger a question", None);
    let follow = w.x.post_as("carol", "@blogger and another", Some(&root));
    w.poll();
    assert!(
        wait_until(Duration::from_secs(15), || w
            .list(&["--all"])
            .iter()
            .any(|c| c["last_message"]["text"] == "@blogger and another")),
        "{:#?}\n{}",
        w.list(&["--all"]),
        w.sb.log()
    );
    let conv = w.conversation_with("carol");
    let shown = w.sb.ctl_json(&["show", conv["id"].as_str().unwrap()]);
    let texts: Vec<&str> =
        shown["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        vec!["@blogger a question", "@blogger and another"],
        "one thread (conversation_id)"
    );
    let mentions = w.x.requests_to("GET", &format!("/2/users/{}/mentions", w.me));
    assert!(
        mentions.iter().any(|r| r.query_param("post.fields").is_some()),
        "switched to post.fields"
    );
    let _ = follow;
}

// ---------------------------------------------------------------------------------------
// The emulator itself: the behaviours the adapter relies on, checked over HTTP.

fn api(
    x: &X,
    token: &str,
) -> impl Fn(&str, &str, Option<Value>) -> (u16, reqwest::header::HeaderMap, Value) {
    let base = x.url();
    let token = token.to_owned();
    move |method, path, body| {
        let client = reqwest::blocking::Client::new();
        let mut req = match method {
            "POST" => client.post(format!("{base}{path}")),
            _ => client.get(format!("{base}{path}")),
        }
        .bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let value = resp.json().unwrap_or(Value::Null);
        (status, headers, value)
    }
}

#[test]
fn emulator_posts_timelines_and_problems() {
    let x = X::start();
    let me = x.add_user("blogger", "The Blogger");
    let alice = x.add_user("alice", "Alice");
    x.add_client(CLIENT, None, REDIRECT);
    let (access, _) = x.issue_tokens("blogger", CLIENT);
    let call = api(&x, &access);

    let (status, headers, created) = call(
        "POST",
        "/2/tweets",
        Some(serde_json::json!({"text": "Hello https://blog.test/a?utm_source=x"})),
    );
    assert_eq!(status, 201);
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    assert!(created["data"]["text"].as_str().unwrap().starts_with("Hello https://t.co/"));
    assert_eq!(created["data"]["edit_history_tweet_ids"][0], id.as_str());
    let reset: i64 = headers["x-rate-limit-reset"].to_str().unwrap().parse().unwrap();
    assert!(reset > chrono::Utc::now().timestamp() && reset % 900 == 0, "epoch seconds: {reset}");
    assert_eq!(headers["x-rate-limit-limit"], "100");
    assert_eq!(headers["x-rate-limit-remaining"], "99");
    // Same text again: 403 duplicate content; too long: refused.
    let (status, _, dup) = call(
        "POST",
        "/2/tweets",
        Some(serde_json::json!({"text": "Hello https://blog.test/a?utm_source=x"})),
    );
    assert_eq!(
        (status, dup["detail"].as_str()),
        (403, Some("You are not allowed to create a Tweet with duplicate content."))
    );
    // Weighted length: every link counts 23, so 256 + 1 + 23 = 280 fits and 281 does not.
    let fits = "x".repeat(256) + " https://example.com/a/long/link/that/counts/as/twenty/three";
    assert_eq!(call("POST", "/2/tweets", Some(serde_json::json!({"text": fits}))).0, 201);
    let too_long = "y".repeat(257) + " https://example.com/x";
    let (status, _, refused) =
        call("POST", "/2/tweets", Some(serde_json::json!({"text": too_long})));
    assert_eq!(status, 403);
    assert!(refused["detail"].as_str().unwrap().contains("too long"));
    assert_eq!(
        call("POST", "/2/tweets", Some(serde_json::json!({"text": "日".repeat(141)}))).0,
        403,
        "CJK weighs 2"
    );

    // The user timeline: default fields only unless asked; entities carry the real link.
    let (_, _, page) = call(
        "GET",
        &format!("/2/users/{me}/tweets?max_results=5&tweet.fields=entities,created_at"),
        None,
    );
    let first = page["data"].as_array().unwrap().iter().find(|p| p["id"] == id.as_str()).unwrap();
    assert_eq!(first["entities"]["urls"][0]["expanded_url"], "https://blog.test/a?utm_source=x");
    assert!(first.get("author_id").is_none(), "only the fields asked for");
    assert_eq!(
        call("GET", &format!("/2/users/{me}/tweets?max_results=2"), None).0,
        400,
        "max_results 5..100"
    );
    let (status, _, unknown) =
        call("GET", &format!("/2/users/{me}/tweets?post.fields=entities"), None);
    assert_eq!(status, 400, "the old dialect does not know post.fields");
    assert!(unknown["errors"][0]["message"].as_str().unwrap().contains("[post.fields]"));

    // Mentions: paging backwards with next_token; `data` absent when empty.
    for i in 0..12 {
        x.post_as("alice", &format!("@blogger number {i}"), None);
    }
    let path = format!(
        "/2/users/{me}/mentions?max_results=5&expansions=author_id&user.fields=username,name"
    );
    let (_, _, p1) = call("GET", &path, None);
    assert_eq!(p1["meta"]["result_count"], 5);
    assert_eq!(p1["includes"]["users"][0]["username"], "alice");
    let newest = p1["meta"]["newest_id"].as_str().unwrap().to_owned();
    let mut seen = 5;
    let mut token = p1["meta"]["next_token"].as_str().map(str::to_owned);
    while let Some(t) = token {
        let (_, _, p) = call("GET", &format!("{path}&pagination_token={t}"), None);
        seen += p["meta"]["result_count"].as_u64().unwrap();
        token = p["meta"]["next_token"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 12);
    let (_, _, none) = call("GET", &format!("{path}&since_id={newest}"), None);
    assert_eq!(none, serde_json::json!({"meta": {"result_count": 0}}));

    // The summoned rule: a reply to Alice's mention is fine, to her plain post it is not.
    let mention = x.post_as("alice", "@blogger a question", None);
    let plain = x.post_as("alice", "just thinking aloud", None);
    let (status, _, reply) = call(
        "POST",
        "/2/tweets",
        Some(serde_json::json!({"text": "an answer", "reply": {"in_reply_to_tweet_id": mention}})),
    );
    assert_eq!(status, 201, "{reply}");
    assert_eq!(x.post(reply["data"]["id"].as_str().unwrap()).unwrap()["text"], "@alice an answer");
    let (status, _, refused) = call(
        "POST",
        "/2/tweets",
        Some(serde_json::json!({"text": "hi", "reply": {"in_reply_to_tweet_id": plain}})),
    );
    assert_eq!(status, 403);
    assert!(refused["detail"].as_str().unwrap().contains("not been mentioned"));
    let _ = alice;

    // Expired tokens: 401 problem JSON.
    x.advance_clock(Duration::from_secs(7201));
    let (status, _, problem) = call("GET", "/2/users/me", None);
    assert_eq!(status, 401);
    assert_eq!(
        problem,
        serde_json::json!({"title": "Unauthorized", "detail": "Unauthorized", "type": "about:blank", "status": 401})
    );
}

#[test]
fn emulator_rate_limits_and_renamed_fields() {
    let x = X::start();
    let me = x.add_user("blogger", "The Blogger");
    x.add_user("carol", "Carol");
    x.add_client(CLIENT, None, REDIRECT);
    let (access, _) = x.issue_tokens("blogger", CLIENT);
    let call = api(&x, &access);
    x.set_rate_limit("GET /2/users/:id/mentions", 2);
    let path = format!("/2/users/{me}/mentions");
    assert_eq!(call("GET", &path, None).0, 200);
    assert_eq!(call("GET", &path, None).0, 200);
    let (status, headers, body) = call("GET", &path, None);
    assert_eq!(status, 429);
    assert_eq!(headers["x-rate-limit-remaining"], "0");
    assert_eq!(body["title"], "Too Many Requests");
    x.set_rate_limit("GET /2/users/:id/mentions", 300);
    x.set_usage_capped(true);
    let (status, _, body) = call("GET", &path, None);
    assert_eq!(
        (status, body["type"].as_str()),
        (429, Some("https://api.x.com/2/problems/usage-capped"))
    );
    x.set_usage_capped(false);

    x.set_renamed_fields(true);
    let root = x.post_as("carol", "@blogger root", None);
    x.post_as("carol", "@blogger reply", Some(&root));
    assert_eq!(call("GET", &format!("{path}?tweet.fields=referenced_tweets"), None).0, 400);
    let (status, _, page) = call(
        "GET",
        &format!(
            "{path}?post.fields=referenced_posts,conversation_id&expansions=referenced_posts.id"
        ),
        None,
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"][0]["referenced_posts"][0]["id"], root.as_str());
    assert_eq!(page["data"][0]["conversation_id"], root.as_str());
    assert!(page["data"][0]["edit_history_post_ids"].is_array());
    assert_eq!(page["includes"]["posts"][0]["id"], root.as_str());
}

/// `presencectl login x`: the URL comes from the daemon, the browser's redirect lands on
/// presencectl's loopback port, the daemon exchanges the code and keeps the session; the
/// account then works without a restart.
#[test]
fn presencectl_login_x_logs_the_account_in() {
    let x = X::start();
    let me = x.add_user("blogger", "The Blogger");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    x.add_client(CLIENT, None, &redirect);
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\ntemplate = {TEMPLATE:?}\n\n[[account]]\nname = \"x\"\nkind = \"x\"\nclient_id = {CLIENT:?}\nserver = {:?}\n",
        server.url,
        x.url(),
    ));
    let _daemon = sb.start();
    let health =
        || sb.ctl_json(&["status"])["accounts"][0]["health"].as_str().unwrap_or("").to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || health().contains("not logged in")),
        "{}",
        health()
    );

    let mut login = std::process::Command::new(presence_e2e::bin("presencectl"))
        .arg("--socket")
        .arg(sb.socket())
        .args(["login", "x", "--account", "x", "--port", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The URL to open is printed on stderr.
    let stderr = login.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.trim().starts_with("http").then(|| l.trim().to_owned()))
        .expect("an authorize URL");
    assert!(url.contains("code_challenge_method=S256") && url.contains(CLIENT), "{url}");
    // The human approves in the browser: the emulator redirects to presencectl's port.
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let approved = browser.get(&url).header("X-Emulator-User", "blogger").send().unwrap();
    let location = approved.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&redirect), "{location}");
    let landed = browser.get(&location).send().unwrap();
    assert!(landed.text().unwrap().contains("logged in"));
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("x: logged in as @blogger"), "{}", text(&out.stdout));

    // The account starts with the new session: an article goes out, and the session is
    // in the state file.
    assert!(wait_until(Duration::from_secs(10), || health() == "ok"), "{}", health());
    assert!(stored_session(&sb).contains_key("refresh_token"));
    server.set_body(&rss(&blog(1..=4)));
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(wait_until(Duration::from_secs(10), || x.posts_of(&me).len() == 1), "{}", sb.log());
    // A stale or forged state is refused.
    let forged = sb.ctl(&["login", "x", "--account", "nobody"]);
    assert_eq!(forged.status.code(), Some(1));
}
