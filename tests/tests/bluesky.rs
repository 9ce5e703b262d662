//! Bluesky accounts end to end: the real daemon and `presencectl` against a real local
//! Bluesky network (reference PLC, PDS and AppView from the npm registry, started by
//! `tests/run`; see `presence_e2e::bsky`). Every test makes its own accounts; presenced
//! reaches the PDS through a counting proxy that can fail or hold a call at an exact point.
//!
//! presenced fetches mentions when an account starts, once a minute, and on
//! `presencectl poll`, which is what the tests use.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::Duration;

use nix::sys::signal::Signal;
use presence_e2e::bsky::{
    self, facets_of, xrpc_error, Account, Fault, ImageServer, Net, Proxy, Ref,
};
use presence_e2e::feed_server::FeedServer;
use presence_e2e::{text, wait_until, Daemon, Sandbox};
use serde_json::Value;

const PUT: &str = "com.atproto.repo.putRecord";
const GET: &str = "com.atproto.repo.getRecord";
const LOGIN: &str = "com.atproto.server.createSession";
const REFRESH: &str = "com.atproto.server.refreshSession";
const NOTIFICATIONS: &str = "app.bsky.notification.listNotifications";
const WAIT: Duration = Duration::from_secs(30);

/// One article of the test blog.
struct Article {
    n: u32,
    image: Option<String>,
}

impl Article {
    fn link(&self) -> String {
        format!("https://blog.test/2026/{}/crabs/", self.n)
    }

    fn title(&self) -> String {
        format!("Crabs 🦀 über alles, part {}", self.n)
    }
}

fn article(n: u32) -> Article {
    Article { n, image: None }
}

/// RSS with a category per item (a hashtag in the template) and an image enclosure where
/// the article has one.
fn rss(articles: &[Article]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Test blog</title><link>https://blog.test/</link><description>t</description>\n",
    );
    for a in articles.iter().rev() {
        let enclosure = a
            .image
            .as_ref()
            .map(|u| format!("<enclosure url=\"{u}\" type=\"image/png\" length=\"67\"/>"))
            .unwrap_or_default();
        out.push_str(&format!(
            "<item><title>{}</title><link>{}</link><guid>https://blog.test/?p={}</guid>\
             <pubDate>Sat, 28 Nov 2026 {:02}:00:00 +0000</pubDate><category>Rust</category>\
             <description>All about crabs, part {}.</description>{enclosure}</item>\n",
            a.title(),
            a.link(),
            a.n,
            a.n % 24,
            a.n
        ));
    }
    out.push_str("</channel></rss>\n");
    out
}

/// A daemon with one Bluesky account, `alice`, reaching the PDS through `proxy`.
struct Setup {
    net: &'static Net,
    alice: Account,
    proxy: Proxy,
    feed: FeedServer,
    sb: Sandbox,
}

impl Setup {
    fn new(net: &'static Net, articles: &[Article]) -> Setup {
        Setup::with(net, articles, "{title} {url} {tags}", None)
    }

    /// With a feed `template` and, when given, a wrong app password.
    fn with(
        net: &'static Net,
        articles: &[Article],
        template: &str,
        password: Option<&str>,
    ) -> Setup {
        let alice = net.account("alice");
        let proxy = Proxy::start(net);
        let feed = FeedServer::start(&rss(articles));
        let sb = Sandbox::new();
        let secret = sb.secret_file(
            "bsky-password",
            &format!("{}\n", password.unwrap_or(&alice.app_password)),
        );
        sb.write_config(&format!(
            "[[feed]]\nurl = {:?}\ninterval = \"1h\"\ntemplate = {:?}\n\n\
             [[account]]\nname = \"sky\"\nkind = \"bluesky\"\nservice = {:?}\nhandle = {:?}\n\
             password = {{ file = {:?} }}\n",
            feed.url, template, proxy.url, alice.handle, secret
        ));
        Setup { net, alice, proxy, feed, sb }
    }

    /// Starts the daemon and waits until the account is ready and the baseline is taken.
    fn start(&self) -> Daemon {
        let daemon = self.sb.start();
        let ready = wait_until(WAIT, || {
            let st = self.sb.ctl_json(&["status"]);
            st["accounts"][0]["health"] == "ok" && st["feeds"][0]["baseline_taken"] == true
        });
        assert!(ready, "account ready and baseline taken: {}\n{}", self.sb.log(), self.proxy.log());
        daemon
    }

    fn stop(&self, mut daemon: Daemon) {
        daemon.signal(Signal::SIGTERM);
        let status = daemon.wait_exit(Duration::from_secs(10)).expect("presenced stops on SIGTERM");
        assert!(status.success(), "{}", self.sb.log());
    }

    fn restart(&self, daemon: Daemon) -> Daemon {
        self.stop(daemon);
        self.start()
    }

    fn publish(&self, articles: &[Article]) {
        self.feed.set_body(&rss(articles));
        let poll = self.sb.ctl(&["poll"]);
        assert!(poll.status.success(), "{}", text(&poll.stderr));
    }

    /// The announcement states of the account, by article URL.
    fn states(&self) -> Vec<(String, String)> {
        let posts = self.sb.ctl_json(&["posts", "--all"]);
        posts
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["url"].as_str().unwrap().to_owned(),
                    a["accounts"][0]["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn wait_posted(&self, n: usize) {
        let ok =
            wait_until(WAIT, || self.states().iter().filter(|(_, s)| s == "posted").count() >= n);
        assert!(ok, "{n} posted: {:?}\n{}\n{}", self.states(), self.sb.log(), self.proxy.log());
    }

    /// The announcements in alice's repository (posts that are not replies).
    fn announcements(&self) -> Vec<(Ref, Value)> {
        self.alice.posts().into_iter().filter(|(_, v)| v.get("reply").is_none()).collect()
    }

    fn conversations(&self) -> Vec<Value> {
        self.sb.ctl_json(&["list", "--all"]).as_array().unwrap().clone()
    }
}

fn logged(sb: &Sandbox, needle: &str) -> usize {
    sb.log().matches(needle).count()
}

#[test]
fn new_articles_are_posted_once_with_link_facets_and_cards() {
    let Some(net) = bsky::network() else { return };
    let image = ImageServer::start();
    let bob = net.account("bob");
    // A mention of a real account gets a facet; one of an unknown handle stays plain text.
    let template = format!("{{title}} {{url}} {{tags}} cc @{} @nobody.test", bob.handle);
    let s = Setup::with(net, &[article(1), article(2), article(3)], &template, None);
    let daemon = s.start();
    assert!(s.announcements().is_empty(), "the baseline is not announced");
    assert_eq!(s.proxy.forwarded(LOGIN), 1);

    let mut fourth = article(4);
    fourth.image = Some(image.url.clone());
    // An image that cannot be fetched costs the card its picture, not the post.
    let mut fifth = article(5);
    fifth.image = Some("http://127.0.0.1:9/gone.png".to_owned());
    s.publish(&[article(1), article(2), article(3), fourth, fifth]);
    s.wait_posted(2);

    let posts = s.announcements();
    assert_eq!(posts.len(), 2, "exactly two posts: {posts:#?}");
    for n in [4, 5] {
        let a = article(n);
        let (r, record) = posts
            .iter()
            .find(|(_, v)| v["text"].as_str().unwrap().contains(&a.link()))
            .unwrap_or_else(|| panic!("a post for {}: {posts:#?}", a.link()));
        assert!(bsky_tid(r.rkey()), "record key {} is a TID", r.rkey());
        let expected = format!("{} {} #Rust cc @{} @nobody.test", a.title(), a.link(), bob.handle);
        assert_eq!(record["text"], expected);
        let mentions = facets_of(record, "mention");
        assert_eq!(mentions.len(), 1, "{record:#}");
        assert_eq!(mentions[0].0, format!("@{}", bob.handle));
        assert_eq!(mentions[0].1["did"], bob.did.as_str());
        let links = facets_of(record, "link");
        assert_eq!(links.len(), 1, "{record:#}");
        assert_eq!(links[0].0, a.link(), "the link facet's byte offsets select exactly the URL");
        assert_eq!(links[0].1["uri"], a.link());
        let tags = facets_of(record, "tag");
        assert_eq!(tags.len(), 1);
        assert_eq!((tags[0].0.as_str(), &tags[0].1["tag"]), ("#Rust", &Value::from("Rust")));
        let card = &record["embed"];
        assert_eq!(card["$type"], "app.bsky.embed.external");
        assert_eq!(card["external"]["uri"], a.link());
        assert_eq!(card["external"]["title"], a.title());
        assert_eq!(card["external"]["description"], format!("All about crabs, part {n}."));
        if n == 4 {
            assert_eq!(card["external"]["thumb"]["mimeType"], "image/png", "{record:#}");
            assert_eq!(card["external"]["thumb"]["size"], bsky::PNG.len());
        } else {
            assert!(card["external"].get("thumb").is_none());
        }
    }
    assert!(image.requests() >= 1);

    // `posts` links to each post; the repository holds nothing else.
    let listed = s.sb.ctl_json(&["posts"]);
    for a in listed.as_array().unwrap() {
        let url = a["accounts"][0]["remote_url"].as_str().unwrap();
        assert!(posts.iter().any(|(r, _)| url.ends_with(&format!("/post/{}", r.rkey()))), "{url}");
    }

    // A restart reuses the stored session and posts nothing again.
    let daemon = s.restart(daemon);
    let before = s.feed.requests();
    s.publish(&[article(1), article(2), article(3), article(4), article(5)]);
    assert!(wait_until(WAIT, || s.feed.requests() > before));
    assert_eq!(s.announcements().len(), 2);
    assert_eq!(s.proxy.forwarded(LOGIN), 1, "no second login: {}", s.proxy.log());
    assert_eq!(s.proxy.forwarded(PUT), 2, "{}", s.proxy.log());
    assert_eq!(logged(&s.sb, "logged in (new session)"), 1, "{}", s.sb.log());
    assert_eq!(logged(&s.sb, "session reused (no login)"), 1, "{}", s.sb.log());
    let log = s.sb.log();
    assert!(!log.contains(&s.alice.app_password), "the app password is never logged");
    assert!(!log.contains("eyJ"), "no JWT is ever logged");
    s.stop(daemon);
}

fn bsky_tid(s: &str) -> bool {
    s.len() == 13
        && s.bytes().all(|b| b"234567abcdefghijklmnopqrstuvwxyz".contains(&b))
        && b"234567abcdefghij".contains(&s.as_bytes()[0])
}

#[test]
fn sigkill_after_the_pds_wrote_leaves_exactly_one_post() {
    let Some(net) = bsky::network() else { return };
    let s = Setup::new(net, &[article(1)]);
    let mut daemon = s.start();

    // The write reaches the PDS; its answer never comes back; the daemon dies waiting.
    s.proxy.fault(PUT, Fault::ForwardThenHang);
    s.publish(&[article(1), article(2)]);
    assert!(wait_until(WAIT, || s.proxy.hanging() == 1), "{}", s.proxy.log());
    assert_eq!(s.announcements().len(), 1, "the PDS has the post");
    daemon.kill9();
    s.proxy.release();

    // After the restart the post is in doubt: it is looked up, found, and not written again.
    let daemon = s.start();
    s.wait_posted(1);
    assert_eq!(s.announcements().len(), 1);
    assert_eq!(s.proxy.forwarded(PUT), 1, "no second write: {}", s.proxy.log());
    assert!(s.proxy.forwarded(GET) >= 1, "the record key was read back: {}", s.proxy.log());
    s.stop(daemon);
}

#[test]
fn sigkill_before_the_write_reached_the_pds_posts_once_after_restart() {
    let Some(net) = bsky::network() else { return };
    let s = Setup::new(net, &[article(1)]);
    let mut daemon = s.start();

    s.proxy.fault(PUT, Fault::Hang);
    s.publish(&[article(1), article(2)]);
    assert!(wait_until(WAIT, || s.proxy.hanging() == 1), "{}", s.proxy.log());
    daemon.kill9();
    s.proxy.release();
    assert!(s.announcements().is_empty());

    let daemon = s.start();
    s.wait_posted(1);
    assert_eq!(s.announcements().len(), 1);
    assert_eq!(s.proxy.forwarded(PUT), 1, "{}", s.proxy.log());
    s.stop(daemon);
}

#[test]
fn a_lost_answer_is_in_doubt_and_the_identical_retry_is_a_no_op() {
    let Some(net) = bsky::network() else { return };
    let s = Setup::new(net, &[article(1)]);
    let daemon = s.start();

    // The PDS writes the post, the client sees a 502: in doubt.
    s.proxy.fault(PUT, Fault::ForwardThenAnswer(502, xrpc_error("UpstreamFailure", "bad gateway")));
    // The look-up before the retry is told (wrongly) that nothing is there, so the retry
    // writes again: the identical record at the same key must be a no-op.
    s.proxy.fault(GET, Fault::Answer(400, xrpc_error("RecordNotFound", "Could not locate record")));
    s.publish(&[article(1), article(2)]);
    let failed = wait_until(WAIT, || s.states().iter().any(|(_, st)| st == "failed"));
    assert!(failed, "{:?}\n{}", s.states(), s.sb.log());
    let first = s.announcements();
    assert_eq!(first.len(), 1, "the PDS has the post");

    let id = s.sb.ctl_json(&["posts", "--all"]).as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Retried now rather than after the backoff (which may also get there first).
    let _ = s.sb.ctl(&["posts", "retry", &id]);
    s.wait_posted(1);
    let after = s.announcements();
    assert_eq!(after.len(), 1, "still exactly one post: {after:#?}");
    assert_eq!(after[0], first[0], "the same record, not a rewrite: {}", s.proxy.log());
    assert_eq!(s.proxy.forwarded(PUT), 2, "{}", s.proxy.log());
    s.stop(daemon);
}

#[test]
fn an_expired_token_is_refreshed_and_a_dead_session_logs_in_again() {
    let Some(net) = bsky::network() else { return };
    let s = Setup::new(net, &[article(1)]);
    let daemon = s.start();
    assert_eq!(s.proxy.forwarded(LOGIN), 1);

    // The access token has expired when the post goes out: refreshed, sent again, once.
    s.proxy.fault(PUT, Fault::Answer(400, xrpc_error("ExpiredToken", "Token has expired")));
    s.publish(&[article(1), article(2)]);
    s.wait_posted(1);
    assert_eq!(s.announcements().len(), 1);
    assert_eq!(s.proxy.forwarded(REFRESH), 1, "{}", s.proxy.log());
    assert_eq!(s.proxy.forwarded(LOGIN), 1, "no login for an expired token");
    assert_eq!(s.proxy.count(PUT), 2);

    // The refreshed session is the one stored: a restart reuses it without logging in.
    let daemon = s.restart(daemon);
    assert_eq!(s.proxy.forwarded(LOGIN), 1, "{}", s.proxy.log());

    // A session whose refresh token is revoked too: one new login, and the account works.
    s.proxy.fault(
        "com.atproto.server.getSession",
        Fault::Answer(400, xrpc_error("ExpiredToken", "Token has expired")),
    );
    s.proxy
        .fault(REFRESH, Fault::Answer(400, xrpc_error("ExpiredToken", "Token has been revoked")));
    let daemon = s.restart(daemon);
    assert_eq!(s.proxy.forwarded(LOGIN), 2, "{}", s.proxy.log());
    s.publish(&[article(1), article(2), article(3)]);
    s.wait_posted(2);
    assert_eq!(s.announcements().len(), 2);
    assert!(!s.sb.log().contains("eyJ"), "no JWT is ever logged");
    s.stop(daemon);
}

#[test]
fn mentions_and_replies_become_conversations_and_answers_land_in_the_thread() {
    let Some(net) = bsky::network() else { return };
    let s = Setup::new(net, &[article(1)]);
    let bob = net.account("bob");
    let carol = net.account("carol");
    let daemon = s.start();
    s.publish(&[article(1), article(2)]);
    s.wait_posted(1);
    let (announcement, _) = s.announcements().pop().unwrap();
    // People answer what they have seen: the AppView must have the post before a reply to
    // it can notify (it indexes repositories in parallel).
    s.net.process_all();

    // Bob replies to the announcement; Carol mentions Alice with a shortened link.
    let bobs = bob.reply(&announcement, &announcement, "Great post! Pinching it for the club.");
    let visible = "example.com/crab-facts-and-...";
    let (carol_text, mention) = bsky::mention_facet(&s.alice, &format!("have you seen {visible}?"));
    let start = carol_text.find(visible).unwrap();
    let link = serde_json::json!({
        "index": {"byteStart": start, "byteEnd": start + visible.len()},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/crab-facts-and-figures"}],
    });
    let carols = carol.post_with_facets(&carol_text, vec![mention, link]);
    s.net.process_all();

    assert!(s.sb.ctl(&["poll"]).status.success());
    assert!(
        wait_until(WAIT, || s.conversations().len() == 2),
        "{:#?}\n{}",
        s.conversations(),
        s.sb.log()
    );
    let list = s.conversations();
    let by = |who: &Account| {
        list.iter()
            .find(|c| c["participants"] == serde_json::json!([who.handle]))
            .unwrap_or_else(|| panic!("{list:#?}"))
            .clone()
    };
    let (cb, cc) = (by(&bob), by(&carol));
    for c in [&cb, &cc] {
        assert_eq!(c["account"], "sky");
        assert_eq!(c["status"], "open");
        assert!(c["waiting_since"].is_string(), "{c:#}");
        assert!(c["snoozed_until"].is_null());
        assert!(c["last_message"]["at"].is_string());
        assert!(c["last_message"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://bsky.app/profile/"));
    }
    assert_eq!(cb["last_message"]["author"], bob.handle.as_str());
    assert_eq!(cb["last_message"]["text"], "Great post! Pinching it for the club.");
    assert_eq!(
        cc["last_message"]["text"],
        format!("@{} have you seen https://example.com/crab-facts-and-figures?", s.alice.handle),
        "links are expanded from facets"
    );

    // Answer Bob: a reply under his post in the announcement's thread, mentioning him.
    let id = cb["id"].as_str().unwrap();
    let out = s.sb.ctl(&["answer", id, "Thanks, Bob!"]);
    assert!(out.status.success(), "{}{}\n{}", text(&out.stdout), text(&out.stderr), s.sb.log());
    let replies: Vec<(Ref, Value)> =
        s.alice.posts().into_iter().filter(|(_, v)| v.get("reply").is_some()).collect();
    assert_eq!(replies.len(), 1, "{replies:#?}");
    let (answer, record) = &replies[0];
    assert_eq!(record["reply"]["root"], announcement.json());
    assert_eq!(record["reply"]["parent"], bobs.json());
    assert_eq!(record["text"], format!("@{} Thanks, Bob!", bob.handle));
    let mentions = facets_of(record, "mention");
    assert_eq!(mentions.len(), 1, "{record:#}");
    assert_eq!(mentions[0].0, format!("@{}", bob.handle));
    assert_eq!(mentions[0].1["did"], bob.did.as_str());
    s.net.process_all();
    let thread = bob.thread(&announcement.uri);
    let under_bob = thread["thread"]["replies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["post"]["uri"] == bobs.uri.as_str())
        .unwrap_or_else(|| panic!("{thread:#}"));
    assert_eq!(under_bob["replies"][0]["post"]["uri"], answer.uri.as_str(), "{thread:#}");

    // Answer Carol: her post is the root and the parent.
    let id = cc["id"].as_str().unwrap();
    assert!(s.sb.ctl(&["answer", id, "Not yet, thanks!"]).status.success());
    let to_carol = s
        .alice
        .posts()
        .into_iter()
        .find(|(_, v)| v["reply"]["parent"]["uri"] == carols.uri.as_str())
        .expect("the answer to Carol");
    assert_eq!(to_carol.1["reply"]["root"], carols.json());

    // Bob answers Alice's answer: it lands in the same conversation, which waits again.
    s.net.process_all();
    bob.reply(&announcement, answer, "Any time.");
    s.net.process_all();
    assert!(s.sb.ctl(&["poll"]).status.success());
    let back = wait_until(WAIT, || {
        s.conversations()
            .iter()
            .any(|c| c["id"] == cb["id"] && c["last_message"]["text"] == "Any time.")
    });
    assert!(back, "{:#?}\n{}", s.conversations(), s.sb.log());
    assert_eq!(s.conversations().len(), 2, "no new conversation for a reply in a known thread");
    let shown = s.sb.ctl_json(&["show", cb["id"].as_str().unwrap()]);
    let texts: Vec<&str> =
        shown["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        ["Great post! Pinching it for the club.", "Thanks, Bob!", "Any time."],
        "{shown:#}"
    );
    s.stop(daemon);
}

#[test]
fn a_backlog_of_mentions_is_read_page_by_page_and_resumed_after_sigkill() {
    let Some(net) = bsky::network() else { return };
    let s = Setup::new(net, &[article(1)]);
    let carol = net.account("carol");
    let mut daemon = s.start();
    let root = carol.mention(&s.alice, "a long thread, 0");
    s.net.process_all();
    assert!(s.sb.ctl(&["poll"]).status.success());
    assert!(wait_until(WAIT, || s.conversations().len() == 1), "{}", s.sb.log());
    s.stop(daemon);

    // 109 more mentions in that thread while the daemon is away: three pages of 50.
    for i in 1..110 {
        let (text, facet) = bsky::mention_facet(&s.alice, &format!("a long thread, {i}"));
        carol.post_record(serde_json::json!({
            "$type": "app.bsky.feed.post", "text": text, "facets": [facet],
            "createdAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "reply": {"root": root.json(), "parent": root.json()},
        }));
    }
    s.net.process_all();

    // The first page is taken and stored; the daemon dies while asking for the second.
    s.proxy.fault(NOTIFICATIONS, Fault::Pass);
    s.proxy.fault(NOTIFICATIONS, Fault::Hang);
    daemon = s.sb.start();
    assert!(wait_until(WAIT, || s.proxy.hanging() == 1), "{}", s.proxy.log());
    let first = s.conversations();
    assert_eq!(first.len(), 1, "{first:#?}");
    let id = first[0]["id"].as_str().unwrap().to_owned();
    let stored = s.sb.ctl_json(&["show", &id])["messages"].as_array().unwrap().len();
    assert_eq!(stored, 51, "the first page is durable before the second is asked for");
    daemon.kill9();
    s.proxy.release();

    let before = s.proxy.count(NOTIFICATIONS);
    let daemon = s.start();
    assert!(wait_until(WAIT, || s.proxy.count(NOTIFICATIONS) > before));
    let resumed = &s.proxy.calls(NOTIFICATIONS)[before];
    assert!(resumed.contains("with a page cursor"), "the walk resumes where it stopped: {resumed}");
    let all = wait_until(WAIT, || {
        s.sb.ctl_json(&["show", &id])["messages"].as_array().unwrap().len() >= 110
    });
    assert!(all, "{}\n{}", s.sb.log(), s.proxy.log());
    let shown = s.sb.ctl_json(&["show", &id]);
    let mut texts: Vec<String> = shown["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 110, "each mention exactly once");
    assert_eq!(s.conversations().len(), 1, "one thread, one conversation");
    s.stop(daemon);
}

#[test]
fn a_rate_limit_is_waited_out_and_a_wrong_password_is_reported_without_hammering() {
    let Some(net) = bsky::network() else { return };
    let s = Setup::new(net, &[article(1)]);
    let daemon = s.start();

    // 429 with Retry-After: 2 s: the announcement waits that long, then goes out once.
    s.proxy.fault(PUT, Fault::RateLimited(2));
    s.publish(&[article(1), article(2)]);
    let waiting = wait_until(WAIT, || {
        let posts = s.sb.ctl_json(&["posts", "--all"]);
        let ann = &posts.as_array().unwrap().last().unwrap()["accounts"][0];
        ann["state"] == "failed" && ann["detail"].as_str().unwrap_or_default().contains("429")
    });
    assert!(waiting, "{:?}\n{}", s.states(), s.sb.log());
    s.wait_posted(1);
    assert_eq!(s.announcements().len(), 1);
    assert_eq!(s.proxy.forwarded(PUT), 1, "{}", s.proxy.log());
    s.stop(daemon);

    // A refused app password: the account says so, and the daemon does not retry the login
    // every few seconds (createSession allows 30 per 5 minutes).
    let bad = Setup::with(net, &[article(1)], "{title} {url}", Some("wrong-password"));
    let _daemon = bad.sb.start();
    let refused = wait_until(WAIT, || {
        let health = bad.sb.ctl_json(&["status"])["accounts"][0]["health"].clone();
        health.as_str().unwrap_or_default().contains("refused")
    });
    assert!(refused, "{}\n{}", bad.sb.log(), bad.proxy.log());
    // The worker tries to start again after 5 s; that attempt must not log in again.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(bad.proxy.count(LOGIN), 1, "{}", bad.proxy.log());
    let health = bad.sb.ctl_json(&["status"])["accounts"][0]["health"].clone();
    assert!(health.as_str().unwrap().contains("rate limited"), "{health}");
    assert!(!bad.sb.log().contains("wrong-password"), "the password is never logged");
}
