//! Conversations end to end on Mastodon: the real daemon and presencectl against the local
//! Mastodon emulator (tests/src/mastodon.rs) and a local feed server.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use presence_e2e::feed_server::{blog, rss, FeedServer};
use presence_e2e::mastodon::{Fault, Mastodon};
use presence_e2e::{text, wait_until, Sandbox};
use serde_json::Value;

struct World {
    masto: Mastodon,
    me: String,
    server: FeedServer,
    sb: Sandbox,
}

/// A blogger's account on the emulator, a blog with 3 articles, presenced configured for
/// both (token in a 0600 file).
fn world() -> World {
    world_with("")
}

/// [`world`] with more settings for the feed.
fn world_with(feed_settings: &str) -> World {
    let masto = Mastodon::start();
    let me = masto.add_account("blogger", "The Blogger");
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    let token = sb.secret_file("masto.token", &masto.token_for(&me));
    sb.write_config(&format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\n{feed_settings}\n[[account]]\nname = \"masto\"\nkind = \"mastodon\"\nserver = {:?}\ntoken = {{ file = {token:?} }}\n",
        server.url,
        masto.url(),
    ));
    World { masto, me, server, sb }
}

impl World {
    fn statuses(&self) -> Vec<Value> {
        self.masto.statuses_of(&self.me)
    }

    fn list(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        self.sb.ctl_json(&all).as_array().unwrap().clone()
    }

    fn poll(&self) {
        assert!(self.sb.ctl(&["poll"]).status.success());
    }

    fn account_ready(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || {
                self.sb.ctl_json(&["status"])["accounts"][0]["health"] == "ok"
            }),
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

    /// Publishes two new articles and waits until both are announced.
    fn announce_two(&self) -> (String, String) {
        self.server.set_body(&rss(&blog(1..=5)));
        self.poll();
        assert!(
            wait_until(Duration::from_secs(10), || self.statuses().len() >= 2),
            "{}",
            self.sb.log()
        );
        let s = self.statuses();
        (s[1]["id"].as_str().unwrap().to_owned(), s[0]["id"].as_str().unwrap().to_owned())
    }

    /// Publishes 8 new articles, announced as one batch, and polls; the emulator answers
    /// each post 500 ms after making it, so the batch takes over 4 s.
    fn publish_slow_batch(&self) {
        self.masto.inject("POST", "/api/v1/statuses", Fault::Slow(Duration::from_millis(500)), 20);
        self.server.set_body(&rss(&blog(1..=11)));
        self.poll();
    }

    fn conversation_with(&self, handle: &str) -> Value {
        self.list(&["--all"])
            .into_iter()
            .find(|c| c["participants"].as_array().unwrap().iter().any(|p| p == handle))
            .unwrap_or_else(|| panic!("no conversation with {handle}"))
    }
}

#[test]
fn announce_collect_answer_snooze_and_reopen() {
    let w = world();
    let alice = w.masto.add_remote_account("alice", "other.host", "Alice");
    let bob = w.masto.add_account("bob", "Bob");
    let carol = w.masto.add_remote_account("carol", "third.host", "Carol");
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    assert!(w.statuses().is_empty(), "the baseline announces nothing");

    let (first, second) = w.announce_two();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.statuses().len(), 2, "exactly two statuses");
    let posts = w.masto.requests_to("POST", "/api/v1/statuses");
    assert!(posts.iter().all(|r| r.header("idempotency-key").is_some_and(|k| k.len() == 32)));

    // Alice replies to the first announcement, Bob writes on his own, Carol replies to the
    // second without mentioning anyone (no notification: found through the thread).
    let a1 = w.masto.post_as(&alice, "@blogger Great post! What about Atom?", Some(&first), &[]);
    let b1 = w.masto.post_as(&bob, "@blogger hello there, a question about feeds", None, &[]);
    let c1 = w.masto.post_as(&carol, "Nice one, thanks.", Some(&second), &[]);
    assert!(w.masto.notifications_of(&w.me).len() == 2, "Carol's reply notified nobody");
    w.poll();
    assert!(
        wait_until(Duration::from_secs(15), || w.list(&[]).len() == 3),
        "three conversations: {:#?}\n{}",
        w.list(&["--all"]),
        w.sb.log()
    );
    let convs = w.list(&[]);
    for c in &convs {
        assert_eq!(c["account"], "masto");
        assert_eq!(c["status"], "open");
        assert!(c["id"].as_str().unwrap().starts_with('c'));
        assert!(c["waiting_since"].is_string(), "{c:#}");
        assert!(c["snoozed_until"].is_null());
        assert!(c["last_message"]["at"].is_string());
        assert!(c["last_message"]["url"].as_str().is_some_and(|u| u.starts_with("http")));
    }
    let alice_conv = w.conversation_with("alice@other.host");
    assert_eq!(alice_conv["last_message"]["author"], "alice@other.host");
    assert!(alice_conv["last_message"]["text"].as_str().unwrap().contains("What about Atom?"));
    let carol_conv = w.conversation_with("carol@third.host");
    assert_eq!(carol_conv["last_message"]["text"], "Nice one, thanks.");
    let bob_conv = w.conversation_with("bob");
    let human = text(&w.sb.ctl(&["list"]).stdout);
    assert!(human.contains("alice@other.host") && human.contains("waiting"), "{human}");
    let status = text(&w.sb.ctl(&["status"]).stdout);
    assert!(status.contains("3 waiting, oldest"), "{status}");

    // Answer Alice: one status, in reply to hers, starting with her full acct.
    let id = alice_conv["id"].as_str().unwrap();
    let out = w.sb.ctl(&["answer", id, "Thank you! Atom works too."]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("answered"), "{}", text(&out.stdout));
    let replies: Vec<Value> =
        w.statuses().into_iter().filter(|s| s["in_reply_to_id"] == a1.as_str()).collect();
    assert_eq!(replies.len(), 1, "one answer");
    assert!(
        replies[0]["content"].as_str().unwrap().contains("@<span>alice</span>"),
        "{}",
        replies[0]
    );
    let shown = w.sb.ctl_json(&["show", id]);
    let messages = shown["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["mine"], true);
    assert_eq!(messages[1]["delivery"], "posted");
    assert!(w.conversation_with("alice@other.host")["waiting_since"].is_null());
    // Too long is refused with the count, nothing is posted.
    let long = "word ".repeat(200);
    let refused = w.sb.ctl(&["answer", id, &long]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("of 500 characters"), "{}", text(&refused.stderr));

    // Snooze Bob for two seconds: hidden, then back by itself.
    let bob_id = bob_conv["id"].as_str().unwrap();
    assert!(w.sb.ctl(&["snooze", bob_id, "2s"]).status.success());
    assert!(w.list(&[]).iter().all(|c| c["id"] != bob_id));
    assert_eq!(w.list(&["--snoozed"]).len(), 1);
    assert!(w.list(&["--snoozed"])[0]["snoozed_until"].is_string());
    assert!(
        wait_until(Duration::from_secs(6), || w.list(&[]).iter().any(|c| c["id"] == bob_id)),
        "the snooze ends by itself"
    );

    // Done with Carol; her next reply (again without a mention) reopens it.
    let carol_id = carol_conv["id"].as_str().unwrap();
    assert!(w.sb.ctl(&["done", carol_id]).status.success());
    assert_eq!(w.list(&["--done"]).len(), 1);
    assert!(w.list(&[]).iter().all(|c| c["id"] != carol_id));
    w.masto.post_as(&carol, "One more thing.", Some(&c1), &[]);
    w.poll();
    assert!(
        wait_until(Duration::from_secs(15), || w.list(&[]).iter().any(|c| c["id"] == carol_id)),
        "a new message reopens a finished conversation\n{}",
        w.sb.log()
    );
    assert_eq!(w.sb.ctl_json(&["show", carol_id])["messages"].as_array().unwrap().len(), 2);
    let _ = b1;
    // Reopen and done round trip, and unknown ids.
    assert_eq!(w.sb.ctl(&["reopen", carol_id]).status.code(), Some(1), "already open");
    assert_eq!(w.sb.ctl(&["show", "c999"]).status.code(), Some(1));
}

#[test]
fn a_connection_dropped_after_the_status_was_created_gives_one_status() {
    let w = world();
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.masto.inject("POST", "/api/v1/statuses", Fault::DropAfterCreate, 1);
    w.server.set_body(&rss(&blog(1..=4)));
    w.poll();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let posts = w.sb.ctl_json(&["posts"]);
            posts.as_array().unwrap().iter().any(|a| a["accounts"][0]["state"] == "posted")
        }),
        "posted after reconciling: {}",
        w.sb.log()
    );
    assert!(!w.masto.requests_to("POST", "/api/v1/statuses").is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.statuses().len(), 1, "the dropped answer did not make a second status");
}

#[test]
fn a_revoked_token_shows_in_status_without_the_token() {
    let w = world();
    let token = w.masto.token_for(&w.me);
    w.masto.revoke_token(&w.me);
    let _daemon = w.sb.start();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let health = w.sb.ctl_json(&["status"])["accounts"][0]["health"].clone();
            health.as_str().is_some_and(|h| h.contains("unauthorised"))
        }),
        "{:#}",
        w.sb.ctl_json(&["status"])
    );
    let shown = text(&w.sb.ctl(&["status"]).stdout);
    assert!(!shown.contains(&token) && !w.sb.log().contains(&token), "the token never shows");
}

/// SIGKILL at random moments while 500 mentions are being taken in, restarting each time:
/// every mention ends up stored exactly once.
#[test]
fn sigkill_during_ingestion_of_500_mentions_loses_and_doubles_nothing() {
    let w = world();
    let mut daemon = w.sb.start();
    w.account_ready();
    // The first fetch records the cursor; what comes after it must all arrive.
    assert!(wait_until(Duration::from_secs(10), || {
        !w.masto.requests_to("GET", "/api/v1/notifications").is_empty()
    }));
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill9();
    let people: Vec<String> = (0..25)
        .map(|i| w.masto.add_remote_account(&format!("p{i}"), "crowd.host", &format!("P {i}")))
        .collect();
    let mut expected = BTreeSet::new();
    for i in 0..500 {
        let text = format!("@blogger mention number {i}");
        w.masto.post_as(&people[i % people.len()], &text, None, &[]);
        expected.insert(format!("mention number {i}"));
    }
    let mut seed =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("seed {seed}");
    // Conversations stored so far, read straight from the state file.
    let stored = || {
        let path = w.sb.state_dir().join("state");
        let bytes = std::fs::read(&path).unwrap_or_default();
        presenced::store::decode(&bytes, &path).map(|s| s.conversations.len()).unwrap_or(0)
    };
    let mut progress = Vec::new();
    while progress.len() < 40 && stored() < 500 {
        let mut d = w.sb.spawn();
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_micros(15_000 + (seed >> 33) % 150_000));
        d.kill9();
        progress.push(stored());
    }
    eprintln!("conversations stored after each kill: {progress:?}");
    assert!(
        progress.iter().any(|&n| n > 0 && n < 500),
        "some kills must land in the middle of the ingestion: {progress:?}"
    );
    let _daemon = w.sb.start();
    w.poll();
    assert!(
        wait_until(Duration::from_secs(30), || w.list(&["--all"]).len() >= 500),
        "all 500 arrive: {}\n{}",
        w.list(&["--all"]).len(),
        w.sb.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let all = w.list(&["--all"]);
    assert_eq!(all.len(), 500, "one conversation per stand-alone mention");
    let mut seen = BTreeSet::new();
    for c in &all {
        let text = c["last_message"]["text"].as_str().unwrap();
        let key = text.trim_start_matches("@blogger ").to_owned();
        assert!(seen.insert(key.clone()), "stored twice: {key}");
    }
    assert_eq!(seen, expected);
    // A person's list stops at the oldest hundred and says so; scripts choose.
    let human = text(&w.sb.ctl(&["list"]).stdout);
    assert_eq!(human.lines().filter(|l| l.starts_with('c')).count(), 100, "{human}");
    assert!(human.contains("--limit 0 shows all"), "{human}");
    assert_eq!(w.list(&["--limit", "10"]).len(), 10);
}

#[test]
fn a_dropped_stream_is_back_filled() {
    let w = world();
    let alice = w.masto.add_remote_account("alice", "other.host", "Alice");
    let _daemon = w.sb.start();
    w.account_ready();
    assert!(
        wait_until(Duration::from_secs(10), || w.masto.open_streams() == 1),
        "the daemon listens on the stream"
    );
    // Real time: a mention arrives through the stream without any poll.
    w.masto.post_as(&alice, "@blogger streamed", None, &[]);
    assert!(
        wait_until(Duration::from_secs(10), || w.list(&[]).len() == 1),
        "arrived by the stream: {}",
        w.sb.log()
    );
    // The stream drops; what is said meanwhile comes by the back-fill after reconnecting.
    w.masto.drop_streams();
    w.masto.post_as(&alice, "@blogger while you were away", None, &[]);
    assert!(
        wait_until(Duration::from_secs(15), || w.list(&[]).len() == 2),
        "back-filled after the reconnect: {}",
        w.sb.log()
    );
    // An event cut in the middle is not lost either.
    w.masto.cut_next_stream_event();
    w.masto.post_as(&alice, "@blogger cut short", None, &[]);
    assert!(wait_until(Duration::from_secs(15), || w.list(&[]).len() == 3), "{}", w.sb.log());
}

/// Idle costs nothing on disk with an account either: polls that find no new mention, no
/// reply in a watched thread and an unchanged feed write no state; a mention is still saved.
#[test]
fn polls_that_find_nothing_write_no_state() {
    let w = world();
    let alice = w.masto.add_remote_account("alice", "other.host", "Alice");
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    let (first, _) = w.announce_two();
    w.masto.post_as(&alice, "@blogger hello", Some(&first), &[]);
    assert!(wait_until(Duration::from_secs(10), || w.list(&[]).len() == 1), "{}", w.sb.log());
    // Quiet from here on; whatever the daemon still had to write is written.
    std::thread::sleep(Duration::from_millis(500));
    let before = w.sb.state_files();
    let reads = w.masto.requests().len();
    for _ in 0..3 {
        let before_poll = w.masto.requests().len();
        w.poll();
        assert!(
            wait_until(Duration::from_secs(10), || w.masto.requests().len() > before_poll),
            "the poll read the account"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(w.masto.requests().len() >= reads + 3, "three polls read the account");
    assert_eq!(w.sb.state_files(), before, "nothing written");
    // A new message in a watched thread is written at once.
    w.masto.post_as(&alice, "just a reply, no mention", Some(&first), &[]);
    w.poll();
    assert!(
        wait_until(Duration::from_secs(10), || w.sb.state_files()[0] != before[0]),
        "a new message is saved: {}",
        w.sb.log()
    );
}

/// `poll --feeds` checks the feeds and announces, as the feed timer does, without reading
/// the account; `poll --mentions` reads the account without fetching the feeds.
#[test]
fn poll_can_check_only_the_feeds_or_only_the_mentions() {
    let w = world();
    let alice = w.masto.add_remote_account("alice", "other.host", "Alice");
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    let (first, _) = w.announce_two();
    // No @mention: no notification and no stream event, only a read of the thread finds it.
    w.masto.post_as(&alice, "a reply to the thread", Some(&first), &[]);
    std::thread::sleep(Duration::from_millis(500));
    let inbox_reads = || {
        let notifications = w.masto.requests_to("GET", "/api/v1/notifications").len();
        let contexts = w.masto.requests().iter().filter(|r| r.path().ends_with("/context")).count();
        notifications + contexts
    };

    let (fetches, reads) = (w.server.requests(), inbox_reads());
    w.server.set_body(&rss(&blog(1..=6)));
    let said = w.sb.ctl(&["poll", "--feeds"]);
    assert!(said.status.success());
    assert_eq!(text(&said.stdout).trim(), "checking 1 feed now");
    assert!(
        wait_until(Duration::from_secs(10), || w.statuses().len() == 3),
        "the new article is announced: {}",
        w.sb.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.server.requests(), fetches + 1, "one feed fetch");
    assert_eq!(inbox_reads(), reads, "the account's mentions were not read");
    assert!(w.list(&[]).is_empty(), "Alice's reply not read yet");

    let fetches = w.server.requests();
    let said = w.sb.ctl(&["poll", "--mentions"]);
    assert!(said.status.success());
    assert_eq!(text(&said.stdout).trim(), "checking 1 account now");
    assert!(
        wait_until(Duration::from_secs(10), || w.list(&[]).len() == 1),
        "Alice's reply arrives: {}",
        w.sb.log()
    );
    assert!(inbox_reads() > reads, "the account was read");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.server.requests(), fetches, "the feed was not fetched");

    let both = w.sb.ctl(&["poll"]);
    assert_eq!(text(&both.stdout).trim(), "checking 1 feed and 1 account now");
    let refused = w.sb.ctl(&["poll", "--feeds", "--mentions"]);
    assert_eq!(refused.status.code(), Some(2), "the two options exclude each other");
}

/// The human's answer goes before announcements: on Mastodon, where 8 announcements are
/// begun at once, an answer written while they go out is posted between two of them, not
/// after the whole batch.
#[test]
fn an_answer_goes_out_between_the_announcements_of_a_batch() {
    let w = world_with("max_new_per_poll = 20\n");
    let alice = w.masto.add_remote_account("alice", "other.host", "Alice");
    let _daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.masto.post_as(&alice, "@blogger a question", None, &[]);
    w.poll();
    assert!(wait_until(Duration::from_secs(10), || w.list(&[]).len() == 1), "{}", w.sb.log());
    let conversation = w.list(&[])[0]["id"].as_str().unwrap().to_owned();

    w.publish_slow_batch();
    assert!(wait_until(Duration::from_secs(10), || !w.statuses().is_empty()), "batch started");
    let out = w.sb.ctl(&["answer", &conversation, "Thanks for asking!"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        wait_until(Duration::from_secs(20), || w.statuses().len() == 9),
        "8 announcements and the answer: {}",
        w.sb.log()
    );
    let mut made: Vec<String> =
        w.statuses().iter().map(|s| s["content"].as_str().unwrap().to_owned()).collect();
    made.reverse();
    let answer = made.iter().position(|c| c.contains("Thanks for asking!")).unwrap();
    assert!(
        (1..8).contains(&answer),
        "the answer went out between announcements, not after all 8: {made:#?}"
    );
}

/// A crash in the middle of a batch leaves its announcements in doubt. After the restart
/// each is looked up and then posted or found, exactly once, and each such outcome is
/// written at once rather than with the batch: a daemon killed again and again still
/// settles a post in each life.
#[test]
fn a_batch_cut_by_a_crash_is_settled_post_by_post() {
    use presenced::state::{AnnStatus, Change};
    let w = world_with("max_new_per_poll = 20\n");
    let mut daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.publish_slow_batch();
    let in_flight = || w.sb.articles_on_disk(|s| matches!(s, AnnStatus::InFlight { .. }));
    assert!(
        wait_until(Duration::from_secs(10), || !w.statuses().is_empty() && in_flight() == 8),
        "the batch of 8 is begun and its first post made: {}",
        w.sb.log()
    );
    daemon.kill9();
    w.masto.clear_faults();
    let made_before = w.statuses().len();
    assert!((1..8).contains(&made_before), "killed in the middle: {made_before} made");

    let _daemon = w.sb.start();
    assert!(
        wait_until(Duration::from_secs(20), || in_flight() == 0),
        "all settled: {}",
        w.sb.log()
    );
    let mut links: Vec<String> = w
        .statuses()
        .iter()
        .map(|s| s["content"].as_str().unwrap().to_owned())
        .map(|c| c.split("href=\"").nth(1).unwrap().split('"').next().unwrap().to_owned())
        .collect();
    links.sort();
    links.dedup();
    assert_eq!((w.statuses().len(), links.len()), (8, 8), "each of the 8 once: {links:?}");
    let outcomes: Vec<usize> = presenced::store::peek_journal(&w.sb.state_dir())
        .unwrap()
        .iter()
        .map(|record| record.iter().filter(|c| matches!(c, Change::Finish { .. })).count())
        .filter(|&n| n > 0)
        .collect();
    // A full save in between (none is expected) would fold some records into the state file.
    assert!(
        !outcomes.is_empty() && outcomes.iter().all(|&n| n == 1),
        "one record per settled post: {outcomes:?}"
    );
}

/// A clean stop in the middle of a batch puts back what never reached the network: after
/// the restart at most the post that was out is looked for, and each goes out once.
#[test]
fn a_clean_stop_mid_batch_leaves_only_the_post_being_sent_in_doubt() {
    use presenced::state::AnnStatus;
    let w = world_with("max_new_per_poll = 20\n");
    let mut daemon = w.sb.start();
    w.account_ready();
    w.baseline();
    w.publish_slow_batch();
    assert!(wait_until(Duration::from_secs(10), || !w.statuses().is_empty()), "batch started");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).unwrap().success());
    let in_flight = w.sb.articles_on_disk(|s| matches!(s, AnnStatus::InFlight { .. }));
    let pending = w.sb.articles_on_disk(|s| *s == AnnStatus::Pending);
    assert!(in_flight <= 1 && pending >= 6, "{in_flight} in flight, {pending} pending");

    w.masto.clear_faults();
    let lookups = || {
        let own = w.masto.requests_to("GET", "/api/v1/accounts/");
        own.iter().filter(|r| r.path().ends_with("/statuses")).count()
    };
    let before = lookups();
    let _daemon = w.sb.start();
    assert!(
        wait_until(Duration::from_secs(20), || w.statuses().len() >= 8),
        "the rest goes out: {}",
        w.sb.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.statuses().len(), 8, "each once");
    // One post in doubt costs at most three pages of own statuses (MAX_OWN_PAGES).
    assert!(lookups() - before <= 3, "{} look-ups", lookups() - before);
}
