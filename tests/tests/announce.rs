//! Feed watching and exactly-once announcing, end to end: the real daemon, a real HTTP feed
//! server on loopback, the outbox account, `presencectl` for every check and action.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use presence_e2e::feed_server::{article, blog, rss, FeedServer};
use presence_e2e::{text, wait_until, Sandbox};
use serde_json::Value;

fn config(server: &FeedServer, extra_feed: &str) -> String {
    format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\n{extra_feed}\n\n[[account]]\nname = \"dry\"\nkind = \"outbox\"\n",
        server.url
    )
}

fn feed_status(sb: &Sandbox) -> Value {
    sb.ctl_json(&["status"])["feeds"][0].clone()
}

/// Polls and waits until the daemon has taken in a response counted after this call.
fn poll_and_wait(sb: &Sandbox, server: &FeedServer) {
    let before = server.requests();
    let fetched_before = feed_status(sb)["last_fetch"].clone();
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(
        wait_until(Duration::from_secs(10), || server.requests() > before),
        "the poll reached the server"
    );
    // The core handles events in order: once a status shows the fetch, it was ingested.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = feed_status(sb);
            st["last_fetch"] != Value::Null
                && (st["last_fetch"] != fetched_before || server.requests() > before)
        }),
        "the fetch was ingested"
    );
}

fn urls(sb: &Sandbox) -> Vec<String> {
    sb.outbox_lines().iter().map(|l| l["article_url"].as_str().unwrap().to_owned()).collect()
}

fn wait_outbox(sb: &Sandbox, n: usize) -> bool {
    wait_until(Duration::from_secs(10), || sb.outbox_lines().len() >= n)
}

fn baseline(sb: &Sandbox, server: &FeedServer) {
    assert!(
        wait_until(Duration::from_secs(10), || feed_status(sb)["baseline_taken"] == true),
        "baseline taken: {}",
        sb.log()
    );
    let _ = server;
}

#[test]
fn baseline_then_two_new_then_restart_posts_each_once() {
    let server = FeedServer::start(&rss(&blog(1..=5)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, ""));
    let mut daemon = sb.start();
    baseline(&sb, &server);
    assert!(sb.outbox_lines().is_empty(), "the first run announces nothing old");
    let all = sb.ctl_json(&["posts", "--all"]);
    assert_eq!(all.as_array().unwrap().len(), 5);
    assert!(all.as_array().unwrap().iter().all(
        |a| a["accounts"][0]["state"] == "skipped" && a["accounts"][0]["detail"] == "baseline"
    ));

    server.set_body(&rss(&blog(1..=7)));
    poll_and_wait(&sb, &server);
    assert!(wait_outbox(&sb, 2), "{}", sb.log());
    let mut got = urls(&sb);
    got.sort();
    assert_eq!(got, ["https://blog.test/6/", "https://blog.test/7/"]);
    let line = &sb.outbox_lines()[0];
    assert_eq!(line["account"], "dry");
    assert!(line["text"].as_str().unwrap().contains(line["article_url"].as_str().unwrap()));
    assert_eq!(line["key"].as_str().unwrap().len(), 32);
    assert!(wait_until(Duration::from_secs(5), || {
        let posts = sb.ctl_json(&["posts"]);
        posts.as_array().unwrap().iter().filter(|a| a["accounts"][0]["state"] == "posted").count()
            == 2
    }));

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(2)).unwrap().success());
    let _daemon = sb.start();
    poll_and_wait(&sb, &server);
    poll_and_wait(&sb, &server);
    assert_eq!(sb.outbox_lines().len(), 2, "a restart announces nothing again");
    assert!(server.not_modified() >= 1, "unchanged feed answered with 304 (conditional GET)");
}

#[test]
fn edits_and_guid_or_link_churn_are_not_new() {
    let server = FeedServer::start(&rss(&blog(1..=5)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, ""));
    let _daemon = sb.start();
    baseline(&sb, &server);

    let mut items = blog(1..=5);
    items[0].2 = "Post number 5 (edited)".into(); // edit: same guid and link
    items[1].0 = "urn:uuid:new-guid-for-4".into(); // guid churn: same link
    items[2].1 = "https://BLOG.test:443/3/?utm_source=rss#top".into(); // same guid, noisy link
    items[3].1 = "https://blog.test/moved/2/".into(); // link churn: same guid
                                                      // And one real new article, so we know the fetch was taken in.
    items.insert(0, article(6));
    server.set_body(&rss(&items));
    poll_and_wait(&sb, &server);
    assert!(wait_outbox(&sb, 1), "{}", sb.log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(urls(&sb), ["https://blog.test/6/"], "only the real new article");
}

#[test]
fn a_burst_of_ten_posts_three_and_holds_seven_until_approved() {
    let server = FeedServer::start(&rss(&blog(1..=2)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, ""));
    let _daemon = sb.start();
    baseline(&sb, &server);

    server.set_body(&rss(&blog(1..=12)));
    poll_and_wait(&sb, &server);
    assert!(wait_outbox(&sb, 3), "{}", sb.log());
    let mut got = urls(&sb);
    got.sort();
    assert_eq!(got, ["https://blog.test/10/", "https://blog.test/11/", "https://blog.test/12/"]);
    let pending = sb.ctl_json(&["posts", "--pending"]);
    let held: Vec<&Value> = pending.as_array().unwrap().iter().collect();
    assert_eq!(held.len(), 7, "{pending:#}");
    assert!(held.iter().all(|a| a["accounts"][0]["state"] == "held"));

    let id = held[0]["id"].as_str().unwrap().to_owned();
    let approved_url = held[0]["url"].as_str().unwrap().to_owned();
    let out = sb.ctl(&["posts", "approve", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(wait_outbox(&sb, 4));
    assert!(urls(&sb).contains(&approved_url));

    let skip_id = held[1]["id"].as_str().unwrap().to_owned();
    assert!(sb.ctl(&["posts", "skip", &skip_id]).status.success());
    let again = sb.ctl(&["posts", "approve", &skip_id]);
    assert_eq!(again.status.code(), Some(1), "nothing held any more: refused");
    assert!(text(&again.stderr).contains("nothing is held"), "{}", text(&again.stderr));
    let missing = sb.ctl(&["posts", "approve", "a999"]);
    assert_eq!(missing.status.code(), Some(1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sb.outbox_lines().len(), 4);
    assert_eq!(sb.ctl_json(&["posts", "--pending"]).as_array().unwrap().len(), 5);
}

#[test]
fn a_503_is_visible_and_the_article_goes_out_once_after_recovery() {
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, ""));
    let _daemon = sb.start();
    baseline(&sb, &server);

    server.set_body(&rss(&blog(1..=4)));
    server.fail_with(Some((503, Some(1))));
    poll_and_wait(&sb, &server);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = feed_status(&sb);
            st["last_status"] == "503"
                && st["last_error"].as_str().is_some_and(|e| e.contains("503"))
        }),
        "the error is visible in status: {:#}",
        feed_status(&sb)
    );
    let human = text(&sb.ctl(&["status"]).stdout);
    assert!(human.contains("error:") && human.contains("503"), "{human}");
    assert!(sb.outbox_lines().is_empty());

    server.fail_with(None);
    // Retry-After: 1 brings the watcher back by itself.
    assert!(wait_outbox(&sb, 1), "{}", sb.log());
    assert!(wait_until(Duration::from_secs(5), || feed_status(&sb)["last_error"].is_null()));
    poll_and_wait(&sb, &server);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(urls(&sb), ["https://blog.test/4/"]);
}

#[test]
fn a_malformed_feed_is_a_clear_error_and_the_daemon_keeps_serving() {
    let server = FeedServer::start("<rss><channel><item><title>broken");
    let sb = Sandbox::new();
    sb.write_config(&config(&server, ""));
    let _daemon = sb.start();
    assert!(
        wait_until(Duration::from_secs(10), || feed_status(&sb)["last_error"].is_string()),
        "{}",
        sb.log()
    );
    let err = feed_status(&sb)["last_error"].as_str().unwrap().to_owned();
    assert!(err.starts_with(&server.url), "the error names the feed: {err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert_eq!(feed_status(&sb)["baseline_taken"], false, "no baseline from a broken fetch");
    assert!(sb.ctl(&["status"]).status.success());
}

/// SIGKILL at random moments during 20-article bursts, restarting each time, until 50 kills
/// have landed in the middle of a burst: every article ends up in the outbox exactly once.
#[test]
fn sigkill_during_bursts_never_loses_or_doubles_an_article() {
    let server = FeedServer::start(&rss(&blog(1..=1)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, "max_new_per_poll = 20"));
    let mut daemon = sb.start();
    baseline(&sb, &server);
    daemon.kill9();

    let mut seed =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("seed {seed}");
    let (mut mid_burst_kills, mut bursts) = (0, 0);
    while mid_burst_kills < 50 {
        bursts += 1;
        let target = 20 * bursts;
        server.set_body(&rss(&blog(1..=1 + target as i64)));
        let mut progress = Vec::new();
        // The daemon fetches at start, so a kill a few milliseconds after exec lands
        // anywhere: during start, the fetch, the ingest, between a post and its record.
        while sb.outbox_lines().len() < target && progress.len() < 200 {
            let mut d = sb.spawn();
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            std::thread::sleep(Duration::from_micros(1_000 + (seed >> 33) % 12_000));
            d.kill9();
            let lines = sb.outbox_lines().len();
            if lines < target {
                mid_burst_kills += 1;
            }
            progress.push(lines);
        }
        eprintln!("burst {bursts}: outbox lines after each kill: {progress:?}");
        assert!(bursts < 20, "the daemon makes progress between kills");
    }
    let _daemon = sb.start();
    let total = 20 * bursts;
    assert!(
        wait_until(Duration::from_secs(20), || sb.outbox_lines().len() >= total),
        "all {total} announced eventually: {} lines\n{}",
        sb.outbox_lines().len(),
        sb.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let outbox = std::fs::read(sb.state_dir().join("outbox.jsonl")).unwrap();
    assert_eq!(outbox.last(), Some(&b'\n'), "a torn last line is cut off at start");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for url in urls(&sb) {
        *counts.entry(url).or_default() += 1;
    }
    assert_eq!(counts.len(), total, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "every article exactly once: {counts:?}");
    assert!(!counts.contains_key("https://blog.test/1/"), "the baseline stays unannounced");
    let posts = sb.ctl_json(&["posts", "--all"]);
    let posted =
        posts.as_array().unwrap().iter().filter(|a| a["accounts"][0]["state"] == "posted").count();
    assert_eq!(posted, total);
}

/// README's first command: the bundled dry-run config announces the newest article once.
#[test]
fn the_bundled_demo_announces_the_newest_article_once() {
    let sb = Sandbox::new();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../presenced/examples/demo");
    for file in ["presenced.toml", "feed.xml"] {
        std::fs::copy(format!("{demo}/{file}"), sb.path().join(file)).unwrap();
    }
    let socket = sb.state_dir().join("control.sock");
    let mut daemon = sb.start_on(sb.daemon_command(), socket.clone());
    assert!(wait_outbox(&sb, 1), "{}", sb.log());
    let line = &sb.outbox_lines()[0];
    assert_eq!(line["article_url"], "https://blog.example/2026/11/being-present/");
    let announced = line["text"].as_str().unwrap();
    assert!(
        announced.starts_with("New on the blog: Being present without faking it"),
        "{announced}"
    );
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(2)).unwrap().success());
    let _again = sb.start_on(sb.daemon_command(), socket);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.outbox_lines().len(), 1, "a second run announces nothing more");
}

/// Many polls in a row (each also asks every account to fetch mentions) must not stall the
/// announcements that follow.
#[test]
fn polls_do_not_stall_announcing() {
    let server = FeedServer::start(&rss(&blog(1..=50)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, "max_new_per_poll = 20"));
    let _daemon = sb.start();
    baseline(&sb, &server);
    for _ in 0..20 {
        let before = server.requests();
        assert!(sb.ctl(&["poll"]).status.success());
        assert!(wait_until(Duration::from_secs(5), || server.requests() > before));
    }
    server.set_body(&rss(&blog(1..=70)));
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(
        wait_until(Duration::from_secs(20), || sb.outbox_lines().len() >= 20),
        "{} lines\n{}",
        sb.outbox_lines().len(),
        sb.log()
    );
}

/// A feed that moved permanently is fetched from its new place from then on (and the move is
/// visible in status); a temporary move is followed but not remembered. Either way each
/// article goes out once.
#[test]
fn permanent_redirects_update_the_feed_url_and_temporary_ones_do_not() {
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, ""));
    let _daemon = sb.start();
    baseline(&sb, &server);
    let moved_url = server.url.replace("/feed.xml", "/moved.xml");

    server.move_to(Some((302, "/moved.xml")));
    server.set_body(&rss(&blog(1..=4)));
    poll_and_wait(&sb, &server);
    assert!(wait_outbox(&sb, 1), "{}", sb.log());
    assert_eq!(feed_status(&sb)["current_url"], server.url.as_str(), "a 302 is not remembered");

    server.move_to(Some((301, "/moved.xml")));
    poll_and_wait(&sb, &server);
    assert!(
        wait_until(Duration::from_secs(10), || feed_status(&sb)["current_url"]
            == moved_url.as_str()),
        "{:#}",
        feed_status(&sb)
    );
    assert!(sb.log().contains("moved permanently"), "{}", sb.log());
    let asked_before = server.paths().iter().filter(|p| *p == "/feed.xml").count();
    server.set_body(&rss(&blog(1..=5)));
    poll_and_wait(&sb, &server);
    assert!(wait_outbox(&sb, 2), "{}", sb.log());
    let asked_after = server.paths().iter().filter(|p| *p == "/feed.xml").count();
    assert_eq!(asked_before, asked_after, "the old URL is not asked for any more");
    assert_eq!(urls(&sb), ["https://blog.test/4/", "https://blog.test/5/"]);
    assert_eq!(feed_status(&sb)["url"], server.url.as_str(), "the configured URL stays");
}

/// Idle costs nothing on disk: polls of an unchanged feed, answered 304, write no state.
#[test]
fn an_unchanged_feed_is_polled_without_writing_the_state() {
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, ""));
    let _daemon = sb.start();
    baseline(&sb, &server);
    let before = sb.state_files();
    let not_modified = server.not_modified();
    for _ in 0..3 {
        poll_and_wait(&sb, &server);
    }
    assert_eq!(server.not_modified() - not_modified, 3, "three 304s");
    assert_eq!(sb.state_files(), before, "no state written");
    assert_eq!(feed_status(&sb)["last_status"], "304", "the fetch still shows in status");
    // A change is still saved at once (journaled, here).
    server.set_body(&rss(&blog(1..=4)));
    poll_and_wait(&sb, &server);
    assert!(
        wait_until(Duration::from_secs(5), || sb.state_files() != before),
        "a new article is written"
    );
    let on_disk = presenced::store::peek(&sb.state_dir()).unwrap().unwrap();
    assert!(on_disk.articles.values().any(|a| a.link == "https://blog.test/4/"), "{on_disk:?}");
}

/// A burst goes out in batches on the outbox (reconciled by its key index): the intents of up
/// to 8 announcements are made durable in one journal record, their outcomes in the record
/// that begins the next batch. Oldest first, each once.
#[test]
fn a_burst_is_written_in_batches_and_announced_oldest_first() {
    use presenced::state::{AnnStatus, Change};
    let server = FeedServer::start(&rss(&blog(1..=1)));
    let sb = Sandbox::new();
    sb.write_config(&config(&server, "max_new_per_poll = 20"));
    let _daemon = sb.start();
    baseline(&sb, &server);
    assert!(
        wait_until(Duration::from_secs(10), || sb.ctl_json(&["status"])["accounts"][0]["health"]
            == "ok"),
        "the outbox is ready"
    );
    server.set_body(&rss(&blog(1..=11)));
    poll_and_wait(&sb, &server);
    assert!(wait_outbox(&sb, 10), "{}", sb.log());
    let want: Vec<String> = (2..=11).map(|n| format!("https://blog.test/{n}/")).collect();
    assert_eq!(urls(&sb), want, "oldest first, each once");
    let posted = |s: &presenced::state::AnnStatus| matches!(s, AnnStatus::Posted { .. });
    assert!(
        wait_until(Duration::from_secs(5), || sb.articles_on_disk(posted) == 10),
        "every outcome written when the burst is done"
    );
    let records = presenced::store::peek_journal(&sb.state_dir()).unwrap();
    let shape: Vec<[usize; 3]> = records
        .iter()
        .map(|record| {
            let mut n = [0; 3];
            for change in record {
                n[match change {
                    Change::Fetched { .. } => 0,
                    Change::Begin { .. } => 1,
                    Change::Finish { .. } => 2,
                }] += 1;
            }
            n
        })
        .collect();
    // Before the burst: the baseline's fetch, journaled or saved whole.
    let burst = shape.iter().position(|n| n[1] > 0).unwrap_or(shape.len());
    assert_eq!(
        shape[burst..],
        [[1, 8, 0], [0, 2, 8], [0, 0, 2]],
        "records as [fetches, intents, outcomes]: {shape:?}"
    );
}
