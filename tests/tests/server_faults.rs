//! Server faults, the same matrix for every network: presenced talks to the Mastodon, X and
//! Facebook emulators and to the real local Bluesky PDS through the fault proxy
//! (`presence_e2e::fault_proxy`), which loses answers after the server acted, answers 429
//! with and without `Retry-After`, 5xx and HTML error pages, trickles, truncates, garbles
//! and inflates answers (50 MiB), and duplicates, reverses and replays mention pages — on the
//! post endpoint and the mention endpoint at once, while new articles and mentions arrive.
//!
//! Checked from the remote's own record: every article exactly once, each mention exactly
//! once as a conversation; the daemon never exits, its memory stays bounded through the huge
//! bodies, `status` shows errors on one line without the secret, and retries back off (5 s
//! after a failure, the `Retry-After` when there is one, never more attempts than faults).
//!
//! The fault order is shuffled by a seed printed at the start (`FAULT_SEED=n` repeats it).

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use presence_e2e::fault_proxy::{Fault, FaultProxy};
use presence_e2e::feed_server::{blog, rss, FeedServer};
use presence_e2e::measure::status_kib;
use presence_e2e::{bsky, facebook, mastodon, text, wait_until, x, Daemon, Sandbox};
use serde_json::Value;

/// Articles in the feed when the daemon starts (the baseline).
const OLD: i64 = 3;
/// Mentions that arrive during the run.
const MENTIONS: usize = 6;
const HUGE: usize = 50 * 1024 * 1024;
/// Peak resident memory allowed to the (debug) daemon while 50 MiB answers come in: less
/// than buffering one of them would take on top of the daemon's own (measured 25-42 MiB).
const MAX_HWM_KIB: u64 = 56 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

fn seed() -> u64 {
    let seed = std::env::var("FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
    });
    eprintln!("FAULT_SEED={seed}");
    seed
}

/// A Fisher-Yates shuffle driven by a 64-bit LCG.
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed =
            seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        items.swap(i, ((*seed >> 33) % (i as u64 + 1)) as usize);
    }
}

/// One network behind the proxy, with what the matrix needs to know about it.
struct World {
    name: &'static str,
    proxy: FaultProxy,
    feed: FeedServer,
    sb: Sandbox,
    /// The credential that must never show.
    secret: String,
    /// Path prefix of the request that creates an announcement (POST).
    create: String,
    /// Path prefix of the request that lists mentions (GET).
    mentions: String,
    /// A 429 without any hint waits longer than this test (X: 60 s, Facebook: 15 min).
    long_429: bool,
    /// The article links of the account's announcements, from the remote's record.
    announced: Box<dyn Fn() -> Vec<String>>,
    /// Someone mentions the account; the text contains `note {i}`.
    mention: Box<dyn Fn(usize)>,
}

/// `https://blog.test/N/` links found in `text`.
fn blog_links(text: &str) -> Vec<String> {
    text.match_indices("https://blog.test/")
        .filter_map(|(at, _)| {
            let rest = &text[at + 18..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (!digits.is_empty()).then(|| format!("https://blog.test/{digits}/"))
        })
        .collect()
}

fn feed_config(feed: &FeedServer) -> String {
    format!("[[feed]]\nurl = {:?}\ninterval = \"1h\"\nmax_new_per_poll = 20\n\n", feed.url)
}

fn mastodon_world() -> World {
    let masto = std::rc::Rc::new(mastodon::Mastodon::start());
    masto.set_rate_limit(100_000, Duration::from_secs(300));
    let me = masto.add_account("blogger", "The Blogger");
    let fan = masto.add_remote_account("fan", "other.host", "Fan");
    let proxy = FaultProxy::start(&masto.url(), &[]);
    let feed = FeedServer::start(&rss(&blog(1..=OLD)));
    let sb = Sandbox::new();
    let secret = masto.token_for(&me);
    let file = sb.secret_file("token", &secret);
    sb.write_config(&format!(
        "{}[[account]]\nname = \"masto\"\nkind = \"mastodon\"\nserver = {:?}\ninterval = \"2s\"\ntoken = {{ file = {file:?} }}\n",
        feed_config(&feed),
        proxy.url
    ));
    let (m1, m2) = (masto.clone(), masto);
    World {
        name: "mastodon",
        proxy,
        feed,
        sb,
        secret,
        create: "/api/v1/statuses".into(),
        mentions: "/api/v1/notifications".into(),
        long_429: false,
        announced: Box::new(move || {
            m1.statuses_of(&me)
                .iter()
                .filter(|s| s["in_reply_to_id"].is_null())
                .flat_map(|s| blog_links(s["content"].as_str().unwrap_or_default()))
                .collect()
        }),
        mention: Box::new(move |i| {
            m2.post_as(&fan, &format!("@blogger fault note {i}"), None, &[]);
        }),
    }
}

fn x_world() -> World {
    const CLIENT: &str = "fault-client";
    let x = std::rc::Rc::new(x::X::start());
    let me = x.add_user("blogger", "The Blogger");
    let fan = x.add_user("fan", "Fan");
    x.add_client(CLIENT, None, "http://127.0.0.1:1/callback");
    let proxy = FaultProxy::start(&x.url(), &[]);
    let feed = FeedServer::start(&rss(&blog(1..=OLD)));
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "{}[[account]]\nname = \"x\"\nkind = \"x\"\nclient_id = {CLIENT:?}\nserver = {:?}\ninterval = \"2s\"\n",
        feed_config(&feed),
        proxy.url
    ));
    // The session a login leaves, written where the daemon keeps it.
    let session = x.session_for(&me, CLIENT);
    let access = session["access_token"].clone();
    sb.seed_account_data("x", &session);
    let (x1, x2) = (x.clone(), x);
    let mentions = format!("/2/users/{me}/mentions");
    World {
        name: "x",
        proxy,
        feed,
        sb,
        secret: access,
        create: "/2/tweets".into(),
        mentions,
        long_429: true,
        announced: Box::new(move || {
            x1.posts_of(&me)
                .iter()
                .filter(|p| p["referenced_tweets"].is_null())
                .flat_map(|p| {
                    let urls = p["entities"]["urls"].as_array().cloned().unwrap_or_default();
                    urls.iter()
                        .flat_map(|u| blog_links(u["expanded_url"].as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                })
                .collect()
        }),
        mention: Box::new(move |i| {
            x2.post_as(&fan, &format!("@blogger fault note {i}"), None);
        }),
    }
}

fn facebook_world() -> World {
    let fb = std::rc::Rc::new(facebook::Facebook::start());
    let page = fb.add_page("My Blog");
    let secret = fb.page_token(&page);
    let fan = fb.add_user("Fan Person");
    let origin = fb.url().trim_end_matches("/v25.0").to_owned();
    let proxy = FaultProxy::start(&origin, &[]);
    let feed = FeedServer::start(&rss(&blog(1..=OLD)));
    let sb = Sandbox::new();
    let file = sb.secret_file("token", &secret);
    sb.write_config(&format!(
        "{}[[account]]\nname = \"fb\"\nkind = \"facebook\"\npage_id = {page:?}\nserver = {:?}\ninterval = \"2s\"\ntoken = {{ file = {file:?} }}\n",
        feed_config(&feed),
        format!("{}/v25.0", proxy.url)
    ));
    let (f1, f2, p2) = (fb.clone(), fb, page.clone());
    World {
        name: "facebook",
        proxy,
        feed,
        sb,
        secret,
        create: format!("/v25.0/{page}/feed"),
        // Comments on the Page's posts (`/v25.0/PAGE_POST/comments`).
        mentions: format!("/v25.0/{page}_"),
        long_429: true,
        announced: Box::new(move || {
            f1.posts_of(&page)
                .iter()
                .flat_map(|p| blog_links(p["link"].as_str().unwrap_or_default()))
                .collect()
        }),
        mention: Box::new(move |i| {
            // A top-level comment on the oldest announcement: a conversation of its own.
            let posts = f2.posts_of(&p2);
            let post =
                posts.last().expect("a Page post to comment on")["id"].as_str().unwrap().to_owned();
            f2.comment_as(&fan, &post, &format!("fault note {i}"));
        }),
    }
}

fn bluesky_world(net: &'static bsky::Net) -> World {
    let alice = std::rc::Rc::new(net.account("alice"));
    let carol = net.account("carol");
    let proxy = FaultProxy::start(&net.pds, &[&net.pds_public]);
    let feed = FeedServer::start(&rss(&blog(1..=OLD)));
    let sb = Sandbox::new();
    let secret = alice.app_password.clone();
    let file = sb.secret_file("password", &secret);
    sb.write_config(&format!(
        "{}[[account]]\nname = \"sky\"\nkind = \"bluesky\"\nservice = {:?}\nhandle = {:?}\ninterval = \"2s\"\npassword = {{ file = {file:?} }}\n",
        feed_config(&feed),
        proxy.url,
        alice.handle
    ));
    let a2 = alice.clone();
    World {
        name: "bluesky",
        proxy,
        feed,
        sb,
        secret,
        create: "/xrpc/com.atproto.repo.putRecord".into(),
        mentions: "/xrpc/app.bsky.notification.listNotifications".into(),
        long_429: false,
        announced: Box::new(move || {
            alice
                .posts()
                .iter()
                .filter(|(_, v)| v.get("reply").is_none())
                .flat_map(|(_, v)| {
                    bsky::facets_of(v, "link")
                        .into_iter()
                        .flat_map(|(_, f)| blog_links(f["uri"].as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                })
                .collect()
        }),
        mention: Box::new(move |i| {
            carol.mention(&a2, &format!("fault note {i}"));
            net.process_all();
        }),
    }
}

fn post_faults(long_429: bool) -> Vec<Fault> {
    let mut faults = vec![
        Fault::Lose,
        Fault::Status { status: 429, retry_after: Some(1) },
        Fault::Status { status: 503, retry_after: None },
        Fault::Status { status: 500, retry_after: None },
        Fault::Html(502),
        Fault::HtmlAfter,
        Fault::Truncate,
        Fault::Garbage,
        Fault::Huge(HUGE),
        Fault::Trickle(Duration::from_secs(2)),
    ];
    if !long_429 {
        faults.push(Fault::Status { status: 429, retry_after: None });
    }
    faults
}

fn mention_faults(long_429: bool) -> Vec<Fault> {
    let mut faults = vec![
        Fault::Status { status: 503, retry_after: None },
        Fault::Status { status: 502, retry_after: None },
        Fault::Status { status: 429, retry_after: Some(1) },
        Fault::Lose,
        Fault::Truncate,
        Fault::Garbage,
        Fault::HtmlAfter,
        Fault::Html(503),
        Fault::Huge(HUGE),
        Fault::Duplicate,
        Fault::Reverse,
        Fault::Replay,
        Fault::Trickle(Duration::from_secs(1)),
    ];
    if !long_429 {
        faults.push(Fault::Status { status: 429, retry_after: None });
    }
    faults
}

impl World {
    fn status(&self) -> Value {
        self.sb.ctl_json(&["status"])
    }

    fn announcements(&self) -> Vec<Value> {
        self.sb.ctl_json(&["posts", "--all"]).as_array().unwrap().clone()
    }

    fn conversations(&self) -> Vec<Value> {
        self.sb.ctl_json(&["list", "--all"]).as_array().unwrap().clone()
    }

    fn start(&self) -> Daemon {
        let daemon = self.sb.start();
        let ready = wait_until(LIMIT, || {
            let st = self.status();
            st["accounts"][0]["health"] == "ok" && st["feeds"][0]["baseline_taken"] == true
        });
        assert!(ready, "{}: ready: {:#}\n{}", self.name, self.status(), self.sb.log());
        daemon
    }

    /// Every error text `status` and `posts` show now (account health, announcement
    /// details), checked to be one line without the secret.
    fn shown_errors(&self) -> Vec<String> {
        let mut shown = Vec::new();
        if let Some(h) = self.status()["accounts"][0]["health"].as_str() {
            if h != "ok" {
                shown.push(h.to_owned());
            }
        }
        for a in self.announcements() {
            if let Some(d) = a["accounts"][0]["detail"].as_str() {
                if a["accounts"][0]["state"] == "failed" {
                    shown.push(d.to_owned());
                }
            }
        }
        let human = text(&self.sb.ctl(&["status"]).stdout);
        for e in &shown {
            assert!(!e.contains('\n') && e.len() < 1000, "{}: one short line: {e:?}", self.name);
            assert!(!e.contains(&self.secret), "{}: the secret shows: {e}", self.name);
        }
        assert!(!human.contains(&self.secret), "{}: the secret shows: {human}", self.name);
        shown
    }
}

/// The matrix on one network: faults on the post and mention endpoints at once, new
/// articles and mentions arriving meanwhile.
fn matrix(w: World) {
    let mut seed = seed();
    let started = Instant::now();
    let mut daemon = w.start();
    let pid = daemon.pid() as u32;
    let mut posts = post_faults(w.long_429);
    let mut reads = mention_faults(w.long_429);
    shuffle(&mut posts, &mut seed);
    shuffle(&mut reads, &mut seed);
    eprintln!("{}: post faults {posts:?}\n{}: mention faults {reads:?}", w.name, w.name);
    w.proxy.inject_all("POST", &w.create, &posts);
    w.proxy.inject_all("GET", &w.mentions, &reads);
    if w.long_429 {
        // Last, so that its long wait holds up no other article.
        w.proxy.inject("POST", &w.create, Fault::Status { status: 429, retry_after: None }, 1);
    }
    let newest = OLD + posts.len() as i64 + i64::from(w.long_429);
    w.feed.set_body(&rss(&blog(1..=newest)));
    assert!(w.sb.ctl(&["poll"]).status.success());

    let mut errors = Vec::new();
    let mut mentioned = 0;
    let mut hwm = 0;
    let mut retried_by_hand = false;
    let mut polls = 1;
    let posted = |w: &World| {
        w.announcements().iter().filter(|a| a["accounts"][0]["state"] == "posted").count()
    };
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        assert!(
            daemon.wait_exit(Duration::ZERO).is_none(),
            "{}: the daemon exited\n{}",
            w.name,
            w.sb.log()
        );
        hwm = hwm.max(status_kib(pid, "VmHWM:"));
        errors.extend(w.shown_errors());
        if mentioned < MENTIONS && !(w.announced)().is_empty() {
            (w.mention)(mentioned);
            mentioned += 1;
        }
        let all_posted = posted(&w) == (newest - OLD) as usize;
        if w.long_429 && !retried_by_hand && w.proxy.pending() == 0 {
            // The 429 without a hint: that article waits long (no second attempt yet), until
            // a person says retry.
            // The article that met the bare 429, known from the proxy's record.
            let bare = Some(Fault::Status { status: 429, retry_after: None });
            let met = w.proxy.requests_to("POST", &w.create).into_iter().find(|r| r.fault == bare);
            let held = met.as_ref().and_then(|r| {
                w.announcements().into_iter().find(|a| is_for(r, a["url"].as_str().unwrap()))
            });
            if let Some(a) = held.filter(|a| a["accounts"][0]["state"] == "failed") {
                let at = a["accounts"][0]["at"].as_str().unwrap();
                let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().timestamp();
                let wait = at - chrono::Utc::now().timestamp();
                assert!(wait >= 50, "{}: a bare 429 waits at least a minute: {a:#}", w.name);
                std::thread::sleep(Duration::from_secs(2));
                let link = a["url"].as_str().unwrap();
                let since = met.as_ref().unwrap().at;
                let later = w
                    .proxy
                    .requests_to("POST", &w.create)
                    .iter()
                    .filter(|r| is_for(r, link) && r.at > since)
                    .count();
                assert_eq!(later, 0, "{}: no attempt during the wait\n{}", w.name, w.proxy.log());
                let out = w.sb.ctl(&["posts", "retry", a["id"].as_str().unwrap()]);
                assert!(out.status.success(), "{}", text(&out.stderr));
                retried_by_hand = true;
            }
        }
        let done = all_posted
            && w.proxy.pending() == 0
            && mentioned == MENTIONS
            && w.conversations().len() >= MENTIONS;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not done: {} of {} posted, {} faults left, {} conversations\n{:#?}\n{}\n{}",
            w.name,
            posted(&w),
            newest - OLD,
            w.proxy.pending(),
            w.conversations().len(),
            w.announcements(),
            w.sb.log(),
            w.proxy.log()
        );
        assert!(w.sb.ctl(&["poll"]).status.success());
        polls += 1;
        std::thread::sleep(Duration::from_millis(700));
    }
    // Late doubles would show up now.
    std::thread::sleep(Duration::from_secs(3));
    let took = started.elapsed();

    // Every article exactly once, on the remote's own record.
    let mut links = (w.announced)();
    links.sort();
    let expected: Vec<String> =
        ((OLD + 1)..=newest).map(|n| format!("https://blog.test/{n}/")).collect();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(links, want, "{}: each article once\n{}", w.name, w.proxy.log());

    // Each mention exactly once, one conversation each.
    let convs = w.conversations();
    let mut notes: Vec<String> = Vec::new();
    for c in &convs {
        let shown = w.sb.ctl_json(&["show", c["id"].as_str().unwrap()]);
        for m in shown["messages"].as_array().unwrap() {
            let t = m["text"].as_str().unwrap();
            if let Some(at) = t.find("fault note ") {
                notes.push(t[at..].to_owned());
            }
        }
    }
    notes.sort();
    let mut want: Vec<String> = (0..MENTIONS).map(|i| format!("fault note {i}")).collect();
    want.sort();
    assert_eq!(notes, want, "{}: each mention once: {convs:#?}\n{}", w.name, w.proxy.log());
    assert_eq!(convs.len(), MENTIONS, "{}: one conversation per mention", w.name);

    // Backoff: per article, never more attempts than faults it met plus one; after a
    // failure without a hint the next attempt waits the 5 s backoff, after `Retry-After: 1`
    // it comes sooner.
    let creates = w.proxy.requests_to("POST", &w.create);
    for link in &expected {
        let attempts: Vec<_> = creates.iter().filter(|r| is_for(r, link)).collect();
        let faulted = attempts.iter().filter(|r| r.fault.is_some()).count();
        assert!(!attempts.is_empty(), "{}: {link} was never sent\n{}", w.name, w.proxy.log());
        assert!(
            attempts.len() <= faulted + 1,
            "{}: {link}: {} attempts for {faulted} faults\n{}",
            w.name,
            attempts.len(),
            w.proxy.log()
        );
        for pair in attempts.windows(2) {
            let gap = pair[1].at.saturating_sub(pair[0].at).as_secs_f64();
            match &pair[0].fault {
                // Sooner than the backoff, unless the worker was busy meanwhile (a trickle):
                // the two-account test measures it alone.
                Some(Fault::Status { retry_after: Some(_), .. }) => {}
                Some(Fault::Status { status: 429, retry_after: None }) if w.long_429 => {}
                Some(_) => assert!(
                    gap >= 3.9,
                    "{}: {link}: backoff after {:?}: {gap:.1}s\n{}",
                    w.name,
                    pair[0].fault,
                    w.proxy.log()
                ),
                None => {}
            }
        }
    }
    // Mention reads: no hammering either. A fetch comes on each 2 s tick and on each of
    // the test's polls (a person's poll reads every watched thread), and reads each thread
    // (watched post, or the one notification list) at most once.
    let reads = w.proxy.requests_to("GET", &w.mentions).len() as f64;
    let fetches = f64::from(polls) + took.as_secs_f64() / 2.0 + 2.0;
    let threads = (w.announced)().len() as f64 + 1.0;
    assert!(
        reads <= fetches * threads,
        "{}: {reads} mention reads in {took:?} ({polls} polls, {threads} threads)",
        w.name
    );

    assert!(!errors.is_empty(), "{}: the faults showed in status", w.name);
    let mut distinct = errors.clone();
    distinct.sort();
    distinct.dedup();
    assert!(hwm > 0 && hwm < MAX_HWM_KIB, "{}: VmHWM {hwm} KiB through 50 MiB answers", w.name);
    assert!(daemon.wait_exit(Duration::ZERO).is_none(), "{}: still running", w.name);
    assert!(!w.sb.log().contains("panicked"), "{}: {}", w.name, w.sb.log());
    eprintln!(
        "{}: {} articles, {MENTIONS} mentions, {} requests through the proxy in {:.1}s; \
         VmHWM {hwm} KiB; {} distinct errors shown, e.g. {:?}",
        w.name,
        expected.len(),
        w.proxy.requests().len(),
        took.as_secs_f64(),
        distinct.len(),
        distinct.first()
    );
    if std::env::var_os("FAULT_LOG").is_some() {
        eprintln!("{}\n{}", w.proxy.log(), w.sb.log());
    }
    daemon.kill9();
}

/// Whether a create request carries this article (its link, plain or form-encoded).
fn is_for(r: &presence_e2e::fault_proxy::Seen, link: &str) -> bool {
    let encoded: String = url::form_urlencoded::byte_serialize(link.as_bytes()).collect();
    r.body.contains(link) || r.body.contains(&encoded)
}

#[test]
fn mastodon_survives_server_faults() {
    matrix(mastodon_world());
}

#[test]
fn x_survives_server_faults() {
    matrix(x_world());
}

#[test]
fn facebook_survives_server_faults() {
    matrix(facebook_world());
}

#[test]
fn bluesky_survives_server_faults() {
    let Some(net) = bsky::network() else { return };
    matrix(bluesky_world(net));
}

/// Two Mastodon accounts in one daemon, each behind its own proxy, so that a 60-second stall
/// on one runs beside the storms on the other:
/// - `stalled`: the answer to its post stalls after the headers (slow loris); the daemon
///   gives up on its own timeout, the post is in doubt, found, and not repeated;
/// - `stormy`: a 5xx storm on its post (backoff 5 s, then 10 s), a 5xx storm on its
///   notifications (one request per interval, no hammering), a 429 with `Retry-After: 5`
///   (no request before it), and its event stream cut in the middle of an event — each
///   mention once, the article once.
#[test]
fn a_stalled_answer_and_storms_on_mastodon() {
    let started = Instant::now();
    let masto = mastodon::Mastodon::start();
    masto.set_rate_limit(100_000, Duration::from_secs(300));
    let (a, b) = (masto.add_account("blogger", "Blogger"), masto.add_account("second", "Second"));
    let fan = masto.add_remote_account("fan", "other.host", "Fan");
    let (pa, pb) = (FaultProxy::start(&masto.url(), &[]), FaultProxy::start(&masto.url(), &[]));
    let feed = FeedServer::start(&rss(&blog(1..=OLD)));
    let sb = Sandbox::new();
    let (ta, tb) = (masto.token_for(&a), masto.token_for(&b));
    let (fa, fb) = (sb.secret_file("a.token", &ta), sb.secret_file("b.token", &tb));
    let account = |name: &str, proxy: &FaultProxy, file: &str| {
        format!(
            "[[account]]\nname = {name:?}\nkind = \"mastodon\"\nserver = {:?}\ninterval = \"2s\"\ntoken = {{ file = {file:?} }}\n\n",
            proxy.url
        )
    };
    sb.write_config(&format!(
        "{}{}{}",
        feed_config(&feed),
        account("stalled", &pa, &fa),
        account("stormy", &pb, &fb)
    ));
    let mut daemon = sb.start();
    let ready = wait_until(LIMIT, || {
        let st = sb.ctl_json(&["status"]);
        st["accounts"].as_array().unwrap().iter().all(|a| a["health"] == "ok")
            && st["feeds"][0]["baseline_taken"] == true
            && pb.open_streams() == 1
    });
    assert!(ready, "{:#}\n{}", sb.ctl_json(&["status"]), sb.log());
    let alive = |daemon: &mut Daemon| {
        assert!(daemon.wait_exit(Duration::ZERO).is_none(), "the daemon exited\n{}", sb.log());
    };
    let link = "https://blog.test/4/";
    let statuses_with = |who: &str| {
        masto
            .statuses_of(who)
            .iter()
            .filter(|s| blog_links(s["content"].as_str().unwrap()).contains(&link.to_owned()))
            .count()
    };

    pa.inject("POST", "/api/v1/statuses", Fault::Stall, 1);
    pb.inject("POST", "/api/v1/statuses", Fault::Status { status: 503, retry_after: None }, 2);
    pb.inject("POST", "/api/v1/statuses", Fault::Status { status: 429, retry_after: Some(3) }, 1);
    let storm = Fault::Status { status: 503, retry_after: None };
    pb.inject("GET", "/api/v1/notifications", storm, 1000);
    let storm_started = pb.requests().last().unwrap().at;
    feed.set_body(&rss(&blog(1..=OLD + 1)));
    assert!(sb.ctl(&["poll"]).status.success());
    masto.post_as(&fan, "@second storm note", None, &[]);

    // The notification storm: 12 s of 503s.
    std::thread::sleep(Duration::from_secs(12));
    alive(&mut daemon);
    pb.clear("GET", "/api/v1/notifications");
    let in_storm: Vec<_> = pb
        .requests_to("GET", "/api/v1/notifications")
        .into_iter()
        .filter(|r| r.at > storm_started && r.fault.is_some())
        .collect();
    // One fetch per 2 s tick, plus the stream's nudges and the one poll.
    assert!(
        (3..=10).contains(&in_storm.len()),
        "{} notification requests in a 12 s storm\n{}",
        in_storm.len(),
        pb.log()
    );
    let health = sb.ctl_json(&["status"])["accounts"][1]["health"].as_str().unwrap().to_owned();
    assert!(health.contains("503") && !health.contains('\n') && !health.contains(&tb), "{health}");

    // The post storm: two 503s, 5 s then 10 s apart, then a 429 with `Retry-After: 3`
    // (instead of the next backoff, 20 s), then the status, once.
    let posted_b = wait_until(LIMIT, || {
        pb.requests_to("POST", "/api/v1/statuses").len() == 4 && statuses_with(&b) == 1
    });
    assert!(posted_b, "{}\n{}", pb.log(), sb.log());
    let attempts = pb.requests_to("POST", "/api/v1/statuses");
    let gaps: Vec<f64> =
        attempts.windows(2).map(|p| p[1].at.saturating_sub(p[0].at).as_secs_f64()).collect();
    assert!(
        gaps[0] >= 3.9 && gaps[1] >= 8.9 && gaps[1] < 13.0 && gaps[2] >= 1.9 && gaps[2] < 6.0,
        "backoff 5 s, 10 s, then Retry-After 3 s: {gaps:?}\n{}",
        pb.log()
    );

    // Retry-After on the notifications: nothing before it, whatever the ticks and polls.
    pb.inject(
        "GET",
        "/api/v1/notifications",
        Fault::Status { status: 429, retry_after: Some(5) },
        1,
    );
    assert!(wait_until(LIMIT, || pb.pending() == 0));
    let limited = pb.requests_to("GET", "/api/v1/notifications").last().unwrap().at;
    for _ in 0..3 {
        assert!(sb.ctl(&["poll"]).status.success());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(wait_until(LIMIT, || pb
        .requests_to("GET", "/api/v1/notifications")
        .last()
        .unwrap()
        .at
        > limited));
    let next = pb
        .requests_to("GET", "/api/v1/notifications")
        .into_iter()
        .find(|r| r.at > limited)
        .unwrap();
    let gap = next.at.saturating_sub(limited).as_secs_f64();
    assert!(gap >= 3.9, "Retry-After 5 honoured: next request after {gap:.1}s\n{}", pb.log());

    // The stream cut in the middle of an event.
    assert!(wait_until(LIMIT, || pb.open_streams() == 1), "the stream is back");
    pb.cut_next_stream_event();
    masto.post_as(&fan, "@second cut note", None, &[]);
    let notes = || {
        let list = sb.ctl_json(&["list", "--all"]);
        let texts: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["last_message"]["text"].as_str().unwrap().to_owned())
            .collect();
        texts
    };
    assert!(wait_until(LIMIT, || notes().len() == 2), "{:?}\n{}\n{}", notes(), pb.log(), sb.log());
    let mut got = notes();
    got.sort();
    assert_eq!(got, ["@second cut note", "@second storm note"], "each mention once");

    // The stall: the daemon gives up on its own, and the post it made is found, not repeated.
    let gave_up = wait_until(Duration::from_secs(80), || {
        pa.requests_to("POST", "/api/v1/statuses")
            .first()
            .is_some_and(|r| r.note.starts_with("gave up"))
    });
    assert!(gave_up, "{}", pa.log());
    let note = pa.requests_to("POST", "/api/v1/statuses")[0].note.clone();
    let secs: f64 =
        note.trim_start_matches("gave up after ").trim_end_matches('s').parse().unwrap();
    assert!((50.0..=75.0).contains(&secs), "the request timeout ends a stalled answer: {note}");
    let posted = wait_until(LIMIT, || {
        sb.ctl_json(&["posts"])
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["accounts"].as_array().unwrap().iter().all(|a| a["state"] == "posted"))
    });
    assert!(posted, "{:#}\n{}", sb.ctl_json(&["posts"]), pa.log());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(statuses_with(&a), 1, "the stalled post once\n{}", pa.log());
    assert_eq!(statuses_with(&b), 1);
    assert_eq!(pa.requests_to("POST", "/api/v1/statuses").len(), 1, "found, not sent again");
    alive(&mut daemon);
    assert!(!sb.log().contains(&ta) && !sb.log().contains(&tb));
    eprintln!(
        "stall: gave up after {secs:.1}s; post storm gaps {gaps:?}; {} notification requests \
         in a 12 s storm; Retry-After 5 → next after {gap:.1}s; {:.1}s in all",
        in_storm.len(),
        started.elapsed().as_secs_f64()
    );
}
