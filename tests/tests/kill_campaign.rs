//! The SIGKILL campaign (issue 8): for each account kind, at least 200 SIGKILLs at random
//! moments while bursts of articles are announced, mentions arrive and the human answers,
//! restarting each time. Afterwards a normal start finishes the work, and the remote's own
//! record (the outbox file, the emulators' stores, the PDS repository) must hold every new
//! article exactly once, none of the baseline, every answer the daemon acknowledged exactly
//! once and no other answer more than once; `presencectl --json list` must hold every mention
//! exactly once, one conversation each.
//!
//! One driver ([`campaign`]) runs every kind; a [`Remote`] says how to read the remote's
//! record and how another person writes to the account. The kill schedule comes from a
//! seeded PRNG: the seed is printed, and `PRESENCE_KILL_SEED=<seed>` replays the schedule
//! (the interleaving with the daemon's own timing differs from run to run);
//! `PRESENCE_KILLS=<n>` runs a longer campaign.
//!
//! What "acknowledged" means (presenced/src/core.rs `on_answered`, DESIGN.md §4–§6): an
//! answer is recorded when `presencectl answer` asks, made durable, then posted with the
//! same intent/outcome protocol as announcements; the command returns after the network's
//! verdict, once the outcome is durable. Exit 0 with "answered" or "answer saved, not posted
//! yet" means the answer is durable: it must land exactly once. Exit 1 is a refusal (nothing
//! recorded, or the network refused it): it must not land. A command cut off by the kill has
//! an unknown outcome: at most once, and exactly as the daemon's final record says.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use presence_e2e::bsky::{self, Account, Net, Proxy};
use presence_e2e::facebook::Facebook;
use presence_e2e::feed_server::{blog, rss, FeedServer};
use presence_e2e::mastodon::Mastodon;
use presence_e2e::x::X;
use presence_e2e::{bin, text, wait_until, Sandbox};
use presenced::state::{AnnStatus, State};
use serde_json::{json, Value};

/// Articles of the test blog before the campaign: the baseline, never to be announced.
const BASELINE: u64 = 3;

// ---------------------------------------------------------------------------------------
// The remotes.

/// One account kind: how another person writes to the account, and what the remote itself
/// keeps of the account's posts.
trait Remote {
    /// Everything the account has posted (announcements and answers), as the remote stores
    /// it: one JSON value per post or comment.
    fn own_posts(&self) -> Vec<Value>;

    /// Other people write these texts to the account, each starting a new thread. Kinds
    /// without mentions (the outbox) are never asked.
    fn mention(&mut self, texts: &[String]);
}

struct Outbox {
    sb_state: std::path::PathBuf,
}

impl Remote for Outbox {
    fn own_posts(&self) -> Vec<Value> {
        // Complete lines only: a line torn by a kill is not a post (the daemon cuts it off).
        let text = std::fs::read_to_string(self.sb_state.join("outbox.jsonl")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn mention(&mut self, _: &[String]) {
        unreachable!("the outbox receives nothing")
    }
}

struct Masto {
    masto: Mastodon,
    me: String,
    people: Vec<String>,
}

impl Remote for Masto {
    fn own_posts(&self) -> Vec<Value> {
        self.masto.statuses_of(&self.me)
    }

    fn mention(&mut self, texts: &[String]) {
        for (i, t) in texts.iter().enumerate() {
            let who = &self.people[i % self.people.len()];
            self.masto.post_as(who, &format!("@blogger {t}"), None, &[]);
        }
    }
}

struct Xw {
    x: X,
    me: String,
    people: Vec<&'static str>,
}

impl Remote for Xw {
    fn own_posts(&self) -> Vec<Value> {
        self.x.posts_of(&self.me)
    }

    fn mention(&mut self, texts: &[String]) {
        for (i, t) in texts.iter().enumerate() {
            self.x.post_as(self.people[i % self.people.len()], &format!("@blogger {t}"), None);
        }
    }
}

struct Fb {
    fb: Facebook,
    page: String,
    people: Vec<String>,
}

impl Remote for Fb {
    fn own_posts(&self) -> Vec<Value> {
        let posts = self.fb.posts_of(&self.page);
        let mut out = Vec::new();
        for p in &posts {
            for c in self.fb.comments_on(p["id"].as_str().unwrap()) {
                if c["from"]["id"] == self.page.as_str() {
                    out.push(c);
                }
            }
        }
        out.extend(posts);
        out
    }

    /// Top-level comments on the Page's newest post: the daemon reads the comments of the
    /// Page's 25 most recent posts (facebook.rs: older posts are documented as not read).
    fn mention(&mut self, texts: &[String]) {
        let newest = self.fb.posts_of(&self.page)[0]["id"].as_str().unwrap().to_owned();
        for (i, t) in texts.iter().enumerate() {
            self.fb.comment_as(&self.people[i % self.people.len()], &newest, t);
        }
    }
}

struct Sky {
    net: &'static Net,
    alice: Account,
    people: Vec<Account>,
    /// presenced reaches the PDS through it (it rewrites the PDS address of the DID
    /// document); kept alive for the whole test.
    _proxy: Proxy,
}

impl Remote for Sky {
    /// Every record of alice's `app.bsky.feed.post` collection, page by page.
    fn own_posts(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = vec![
                ("repo", self.alice.did.as_str()),
                ("collection", "app.bsky.feed.post"),
                ("limit", "100"),
            ];
            if let Some(c) = &cursor {
                params.push(("cursor", c.as_str()));
            }
            let page = self.net.xrpc("GET", "com.atproto.repo.listRecords", &params, None, None);
            assert_eq!(page.status, 200, "listRecords: {}", page.body);
            let records = page.body["records"].as_array().unwrap();
            out.extend(records.iter().map(|r| json!({"uri": r["uri"], "value": r["value"]})));
            match page.body["cursor"].as_str() {
                Some(c) if !records.is_empty() => cursor = Some(c.to_owned()),
                _ => return out,
            }
        }
    }

    fn mention(&mut self, texts: &[String]) {
        for (i, t) in texts.iter().enumerate() {
            self.people[i % self.people.len()].mention(&self.alice, t);
        }
        // The AppView must have indexed them before they are notifications.
        self.net.process_all();
    }
}

// ---------------------------------------------------------------------------------------
// The world of one campaign.

/// How long each life of the daemon lasts before the SIGKILL.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Uniform in this range, in milliseconds...
    min_ms: u64,
    max_ms: u64,
    /// ...except one life in `long_every`, which lasts up to `long_ms` (so that answers can
    /// be acknowledged and bursts make progress).
    long_every: u64,
    long_ms: u64,
}

struct World {
    /// The account's name in presenced.toml (and the kind, for messages).
    account: &'static str,
    sb: Sandbox,
    feed: FeedServer,
    remote: Box<dyn Remote>,
    /// Whether the account receives mentions and can answer.
    conversations: bool,
    timing: Timing,
    /// Articles per burst.
    burst: (u64, u64),
    /// Mentions per round.
    mentions: usize,
    /// One answer in this many waits for the daemon's verdict before the kill.
    ack_every: u64,
    /// How long the final, normal run may take to finish everything.
    settle: Duration,
}

/// The feed section every kind uses: hourly (the daemon fetches at each start anyway) and
/// bursts of up to 20 announced without approval.
fn feed_config(feed: &FeedServer) -> String {
    format!("[[feed]]\nurl = {:?}\ninterval = \"1h\"\nmax_new_per_poll = 20\n", feed.url)
}

fn new_feed() -> FeedServer {
    FeedServer::start(&rss(&blog(1..=BASELINE as i64)))
}

const FAST: Timing = Timing { min_ms: 3, max_ms: 50, long_every: 6, long_ms: 300 };

impl World {
    /// An account with conversations on a local emulator: the settings every kind starts
    /// from.
    fn new(account: &'static str, sb: Sandbox, feed: FeedServer, remote: Box<dyn Remote>) -> World {
        World {
            account,
            sb,
            feed,
            remote,
            conversations: true,
            timing: FAST,
            burst: (10, 20),
            mentions: 3,
            ack_every: 4,
            settle: Duration::from_secs(30),
        }
    }
}

fn outbox_world() -> World {
    let feed = new_feed();
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "{}\n[[account]]\nname = \"dry\"\nkind = \"outbox\"\n",
        feed_config(&feed)
    ));
    let remote = Box::new(Outbox { sb_state: sb.state_dir() });
    World {
        conversations: false,
        timing: Timing { min_ms: 1, max_ms: 30, long_every: 8, long_ms: 150 },
        mentions: 0,
        ..World::new("dry", sb, feed, remote)
    }
}

fn mastodon_world() -> World {
    let masto = Mastodon::start();
    // 200 starts cost far more than the real 300 requests per 5 minutes; limits are not
    // what this campaign is about.
    masto.set_rate_limit(1_000_000, Duration::from_secs(300));
    let me = masto.add_account("blogger", "The Blogger");
    let people = (0..5)
        .map(|i| masto.add_remote_account(&format!("p{i}"), "crowd.host", &format!("P {i}")))
        .collect();
    let feed = new_feed();
    let sb = Sandbox::new();
    let token = sb.secret_file("masto.token", &masto.token_for(&me));
    sb.write_config(&format!(
        "{}\n[[account]]\nname = \"masto\"\nkind = \"mastodon\"\nserver = {:?}\ntoken = {{ file = {token:?} }}\n",
        feed_config(&feed),
        masto.url(),
    ));
    World::new("masto", sb, feed, Box::new(Masto { masto, me, people }))
}

const X_CLIENT: &str = "presence-campaign";

fn x_world() -> World {
    let x = X::start();
    for endpoint in [
        "POST /2/tweets",
        "GET /2/users/:id/mentions",
        "GET /2/users/:id/tweets",
        "GET /2/users/me",
    ] {
        x.set_rate_limit(endpoint, 1_000_000);
    }
    let me = x.add_user("blogger", "The Blogger");
    let people = vec!["alice", "bob", "carol"];
    for p in &people {
        x.add_user(p, p);
    }
    x.add_client(X_CLIENT, None, "http://127.0.0.1:8765/callback");
    let feed = new_feed();
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "{}\n[[account]]\nname = \"x\"\nkind = \"x\"\nclient_id = {X_CLIENT:?}\nserver = {:?}\n",
        feed_config(&feed),
        x.url(),
    ));
    // A completed login, as `presencectl login x` leaves it.
    sb.seed_account_data("x", &x.session_for("blogger", X_CLIENT));
    World::new("x", sb, feed, Box::new(Xw { x, me, people }))
}

fn facebook_world() -> World {
    let fb = Facebook::start();
    // 200 starts cost more than the default call quota; quotas are not what this campaign
    // is about.
    fb.set_call_limit(100_000_000);
    let page = fb.add_page("My Blog");
    // Something to comment on before the first announcement; it names no article.
    fb.post_as_page(&page, "Welcome to the page", None);
    let people = (0..4).map(|i| fb.add_user(&format!("Person {i}"))).collect();
    let feed = new_feed();
    let sb = Sandbox::new();
    let token = sb.secret_file("fb.token", &fb.page_token(&page));
    sb.write_config(&format!(
        "{}\n[[account]]\nname = \"fb\"\nkind = \"facebook\"\npage_id = {page:?}\nserver = {:?}\ntoken = {{ file = {token:?} }}\n",
        feed_config(&feed),
        fb.url(),
    ));
    World {
        // Fewer than the 25 recent posts whose comments are read, so that a comment on the
        // newest post is still read after the next burst.
        burst: (10, 15),
        ..World::new("fb", sb, feed, Box::new(Fb { fb, page, people }))
    }
}

fn bluesky_world(net: &'static Net) -> World {
    let alice = net.account("alice");
    let people = vec![net.account("bob"), net.account("carol")];
    let proxy = Proxy::start(net);
    let feed = new_feed();
    let sb = Sandbox::new();
    let password = sb.secret_file("bsky-password", &alice.app_password);
    sb.write_config(&format!(
        "{}\n[[account]]\nname = \"sky\"\nkind = \"bluesky\"\nservice = {:?}\nhandle = {:?}\npassword = {{ file = {password:?} }}\n",
        feed_config(&feed),
        proxy.url,
        alice.handle,
    ));
    World {
        timing: Timing { min_ms: 20, max_ms: 160, long_every: 6, long_ms: 600 },
        mentions: 2,
        ack_every: 5,
        settle: Duration::from_secs(90),
        ..World::new("sky", sb, feed, Box::new(Sky { net, alice, people, _proxy: proxy }))
    }
}

// ---------------------------------------------------------------------------------------
// Reading records.

/// The numbers `n` written as `{prefix}{n}{suffix}` in `text`.
fn tokens(text: &str, prefix: &str, suffix: &str) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && rest[digits.len()..].starts_with(suffix) {
            out.insert(digits.parse().unwrap());
        }
    }
    out
}

fn article_of(text: &str) -> BTreeSet<u64> {
    tokens(text, "https://blog.test/", "/")
}

fn answer_text(n: u64) -> String {
    format!("Thanks for writing, answer-{n}-end")
}

fn answer_of(text: &str) -> BTreeSet<u64> {
    tokens(text, "answer-", "-end")
}

fn mention_text(n: u64) -> String {
    format!("a question, mention-{n}-end")
}

fn mention_of(text: &str) -> BTreeSet<u64> {
    tokens(text, "mention-", "-end")
}

/// What the remote holds: how many posts name each article, and each answer.
#[derive(Debug, Default)]
struct Record {
    articles: BTreeMap<u64, usize>,
    answers: BTreeMap<u64, usize>,
}

fn record_of(remote: &dyn Remote) -> Record {
    let mut r = Record::default();
    for post in remote.own_posts() {
        let s = post.to_string();
        let (articles, answers) = (article_of(&s), answer_of(&s));
        assert!(
            articles.len() + answers.len() <= 1,
            "a post names one article or one answer: {post:#}"
        );
        for a in articles {
            *r.articles.entry(a).or_default() += 1;
        }
        for a in answers {
            *r.answers.entry(a).or_default() += 1;
        }
    }
    r
}

/// The daemon's state on disk, the state file with its journal replayed, as the next start
/// will see it: loaded with the state directory's lock while no daemon runs, peeked at
/// without it while one does.
fn state_of(sb: &Sandbox) -> Option<State> {
    match presenced::store::Store::open(&sb.state_dir()) {
        Ok(store) => store.load().unwrap(),
        Err(presenced::store::StoreError::Locked { .. }) => {
            presenced::store::peek(&sb.state_dir()).ok().flatten()
        }
        Err(e) => panic!("{e}"),
    }
}

/// What the daemon still has to do, by its state on disk.
#[derive(Debug, Default, Clone, PartialEq)]
struct Progress {
    /// Articles in the state (the baseline included): what the feed fetches brought.
    seen: u64,
    /// New articles announced (recorded as posted).
    posted: u64,
    /// New articles held for approval: a fetch saw more than `max_new_per_poll` new ones.
    held: u64,
    /// Mentions stored.
    mentions: usize,
    /// Answers recorded but not finished (pending, in flight, failed with a retry).
    answers_open: usize,
    /// Conversations that can be answered now: (id, an answer is already under way).
    conversations: Vec<(u64, bool)>,
    /// Answers that ended refused by the network.
    answers_given_up: usize,
    /// Announcements (by article) and answers (by number) in flight: in doubt at the next
    /// start.
    in_flight: (BTreeSet<u64>, BTreeSet<u64>),
}

fn progress(sb: &Sandbox, account: &str) -> Progress {
    let Some(state) = state_of(sb) else { return Progress::default() };
    let mut p = Progress { seen: state.articles.len() as u64, ..Progress::default() };
    for a in state.articles.values() {
        if let Some(ann) = a.announcements.get(account) {
            match ann.status {
                AnnStatus::Posted { .. } => p.posted += 1,
                AnnStatus::Held { .. } => p.held += 1,
                AnnStatus::InFlight { .. } => p.in_flight.0.extend(article_of(&a.link)),
                _ => {}
            }
        }
    }
    for (id, c) in state.conversations.iter().filter(|(_, c)| c.account == account) {
        let mut busy = false;
        for m in &c.messages {
            match &m.answer {
                None => p.mentions += mention_of(&m.text).len(),
                Some(a) => {
                    if matches!(a.status, AnnStatus::InFlight { .. }) {
                        p.in_flight.1.extend(answer_of(&m.text));
                    }
                    match a.status {
                        AnnStatus::Posted { .. } => {}
                        AnnStatus::Failed { retry_at: None, .. } => p.answers_given_up += 1,
                        _ => {
                            busy = true;
                            p.answers_open += 1;
                        }
                    }
                }
            }
        }
        p.conversations.push((*id, busy));
    }
    p
}

// ---------------------------------------------------------------------------------------
// Answers.

/// How `presencectl answer` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// Exit 0, "answered": posted.
    Posted,
    /// Exit 0, "answer saved, not posted yet": durable, will be retried.
    Saved,
    /// Exit 1: the daemon (or the network) refused it.
    Refused,
    /// The command never reached a daemon.
    NotSent,
    /// Cut off by the kill: the outcome is unknown.
    Unknown,
}

fn classify(out: &Output) -> Ack {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    match out.status.code() {
        Some(0) if stdout.contains("answered") => Ack::Posted,
        Some(0) if stdout.contains("answer saved, not posted yet") => Ack::Saved,
        Some(0) => panic!("unexpected answer output: {stdout}{stderr}"),
        Some(1) => Ack::Refused,
        Some(69) if stderr.contains("cannot reach presenced") => Ack::NotSent,
        _ => Ack::Unknown,
    }
}

fn spawn_answer(sb: &Sandbox, conversation: u64, n: u64) -> Child {
    Command::new(bin("presencectl"))
        .arg("--socket")
        .arg(sb.socket())
        .args(["answer", &format!("c{conversation}"), &answer_text(n)])
        .env_remove("PRESENCECTL_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run presencectl")
}

// ---------------------------------------------------------------------------------------
// The driver.

/// splitmix64: a small, seedable PRNG for the kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A round ends when its work is done, or after this many kills once its articles are
/// fetched (so that a stuck round shows up as a failure at the end rather than as a
/// campaign that never ends).
const MAX_KILLS_PER_ROUND: u32 = 40;

/// Starts the daemon normally once: account ready, baseline taken, and (for accounts with
/// mentions) the first fetch stored, so that what comes after it is new.
fn set_up(w: &World) {
    let mut daemon = w.sb.start();
    let ready = wait_until(Duration::from_secs(30), || {
        let st = w.sb.ctl_json(&["status"]);
        st["accounts"][0]["health"] == "ok"
            && st["feeds"][0]["baseline_taken"] == true
            && (!w.conversations
                || state_of(&w.sb).is_some_and(|s| {
                    s.accounts.get(w.account).is_some_and(|a| !a.cursors.is_empty())
                }))
    });
    assert!(ready, "{}: ready, baseline, first fetch: {}", w.account, w.sb.log());
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("presenced stops on SIGTERM");
    assert!(status.success(), "{}", w.sb.log());
    let record = record_of(w.remote.as_ref());
    assert!(record.articles.is_empty() && record.answers.is_empty(), "{record:?}");
}

/// What the campaign did, for the report and the final checks.
#[derive(Debug, Default)]
struct Tally {
    kills: u32,
    /// Kills after which the state on disk still had work to do.
    mid_work: u32,
    /// Kills that left a post in flight (in doubt at the next start)...
    in_doubt: u32,
    /// ...of which the remote already had it: killed between the write and its record.
    unrecorded: u32,
    rounds: u32,
    published: u64,
    mentions: u64,
    answers: Vec<(u64, u64, Ack)>,
    /// Lives that waited for an answer's verdict before the kill.
    waited: u32,
    /// Why the daemon refused answers (digits dropped), and how often.
    refusals: BTreeMap<String, usize>,
}

impl Tally {
    fn acks(&self, kind: Ack) -> usize {
        self.answers.iter().filter(|(_, _, a)| *a == kind).count()
    }

    fn summary(&self, account: &str, took: Duration) -> String {
        format!(
            "{account}: {} kills ({} with work left on disk, {} with a post in doubt, {} of them \
             after the remote had it) in {:.1}s, {} rounds, {} new articles, {} mentions, \
             answers: {} posted, {} saved, {} refused, {} not sent, {} cut off ({} lives waited \
             for a verdict)",
            self.kills,
            self.mid_work,
            self.in_doubt,
            self.unrecorded,
            took.as_secs_f64(),
            self.rounds,
            self.published - BASELINE,
            self.mentions,
            self.acks(Ack::Posted),
            self.acks(Ack::Saved),
            self.acks(Ack::Refused),
            self.acks(Ack::NotSent),
            self.acks(Ack::Unknown),
            self.waited,
        )
    }
}

/// What one life of the daemon does besides its own work.
enum Plan {
    /// Nothing: killed after this many milliseconds.
    Sleep(u64),
    /// `presencectl answer` to conversation `id` after `at` ms, killed at `life` ms.
    Answer { id: u64, at: u64, life: u64 },
    /// `presencectl answer` to conversation `id` once the account is ready; killed a random
    /// moment (up to `after` ms) after the daemon's verdict.
    AnswerAndWait { id: u64, after: u64 },
}

fn plan(w: &World, rng: &mut Rng, p: &Progress) -> Plan {
    let t = w.timing;
    let life = if rng.range(1, t.long_every) == 1 {
        rng.range(t.max_ms, t.long_ms)
    } else {
        rng.range(t.min_ms, t.max_ms)
    };
    // Half the lives, the human answers a conversation nothing is being answered in.
    let answerable: Vec<u64> =
        p.conversations.iter().filter(|(_, busy)| !busy).map(|(id, _)| *id).collect();
    if !w.conversations || answerable.is_empty() || rng.next() % 2 == 0 {
        return Plan::Sleep(life);
    }
    let id = answerable[(rng.next() % answerable.len() as u64) as usize];
    if rng.range(1, w.ack_every) == 1 {
        Plan::AnswerAndWait { id, after: rng.range(0, t.max_ms) }
    } else {
        Plan::Answer { id, at: rng.range(0, life), life }
    }
}

/// Starts the daemon, carries out `plan`, kills the daemon. Returns the answer given, if
/// any: (conversation, answer number, the `presencectl answer` process).
fn live(w: &World, plan: Plan, number: u64) -> Option<(u64, u64, Child)> {
    let mut daemon = w.sb.spawn();
    let given = match plan {
        Plan::Sleep(life) => {
            std::thread::sleep(Duration::from_millis(life));
            None
        }
        Plan::Answer { id, at, life } => {
            std::thread::sleep(Duration::from_millis(at));
            let child = spawn_answer(&w.sb, id, number);
            std::thread::sleep(Duration::from_millis(life - at));
            Some((id, number, child))
        }
        Plan::AnswerAndWait { id, after } => {
            let ready = wait_until(Duration::from_secs(10), || {
                let out = w.sb.ctl(&["--json", "status"]);
                out.status.success()
                    && serde_json::from_slice::<Value>(&out.stdout)
                        .is_ok_and(|st| st["accounts"][0]["health"] == "ok")
            });
            assert!(ready, "{}: the account gets ready\n{}", w.account, w.sb.log());
            let mut child = spawn_answer(&w.sb, id, number);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(after));
            Some((id, number, child))
        }
    };
    daemon.kill9();
    given
}

/// Starts a round: a burst of new articles in the feed and, for accounts with
/// conversations, new mentions on the remote.
fn new_round(w: &mut World, rng: &mut Rng, t: &mut Tally) {
    t.rounds += 1;
    t.published += rng.range(w.burst.0, w.burst.1);
    w.feed.set_body(&rss(&blog(1..=t.published as i64)));
    if w.conversations {
        let texts: Vec<String> =
            (t.mentions..t.mentions + w.mentions as u64).map(mention_text).collect();
        w.remote.mention(&texts);
        t.mentions += w.mentions as u64;
    }
}

/// After a kill: what the answer command said, and where the kill landed.
fn after_kill(w: &World, t: &mut Tally, given: Option<(u64, u64, Child)>) {
    t.kills += 1;
    if let Some((id, n, child)) = given {
        let out = child.wait_with_output().unwrap();
        let ack = classify(&out);
        if ack == Ack::Refused {
            let why: String =
                text(&out.stderr).trim().chars().filter(|c| !c.is_ascii_digit()).collect();
            *t.refusals.entry(why).or_default() += 1;
        }
        t.answers.push((n, id, ack));
    }
    let after = progress(&w.sb, w.account);
    if after.posted < t.published - BASELINE
        || (after.mentions as u64) < t.mentions
        || after.answers_open > 0
    {
        t.mid_work += 1;
    }
    let (articles, answers) = &after.in_flight;
    if !articles.is_empty() || !answers.is_empty() {
        t.in_doubt += 1;
        let record = record_of(w.remote.as_ref());
        if articles.iter().any(|n| record.articles.contains_key(n))
            || answers.iter().any(|n| record.answers.contains_key(n))
        {
            t.unrecorded += 1;
        }
    }
}

fn campaign(mut w: World) {
    let kills = env_u64("PRESENCE_KILLS").unwrap_or(200) as u32;
    let seed = env_u64("PRESENCE_KILL_SEED").unwrap_or_else(|| {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("{}: seed {seed} (replay: PRESENCE_KILL_SEED={seed})", w.account);
    let started = Instant::now();
    set_up(&w);

    let mut rng = Rng(seed);
    let mut t = Tally { published: BASELINE, ..Tally::default() };
    let mut round_start = 0;
    while t.kills < kills {
        let p = progress(&w.sb, w.account);
        let done = p.posted == t.published - BASELINE
            && p.mentions as u64 == t.mentions
            && p.answers_open == 0;
        // Never more new articles at once than a fetch announces without approval.
        let fetched = p.seen == t.published;
        if done || (fetched && t.kills - round_start >= MAX_KILLS_PER_ROUND) {
            round_start = t.kills;
            new_round(&mut w, &mut rng, &mut t);
        }
        let plan = plan(&w, &mut rng, &p);
        if matches!(plan, Plan::AnswerAndWait { .. }) {
            t.waited += 1;
        }
        let given = live(&w, plan, t.answers.len() as u64);
        after_kill(&w, &mut t, given);
    }
    let summary = t.summary(w.account, started.elapsed());
    eprintln!("{summary}\n{}: refusals: {:?}", w.account, t.refusals);
    assert!(
        t.mid_work * 2 >= t.kills,
        "most kills must land while there is work to do: {summary} (seed {seed})"
    );

    // A normal start finishes the work.
    let mut daemon = w.sb.start();
    let _ = w.sb.ctl(&["poll"]);
    let new = t.published - BASELINE;
    let settled = wait_until(w.settle, || {
        let p = progress(&w.sb, w.account);
        p.posted == new && p.mentions as u64 == t.mentions && p.answers_open == 0
    });
    assert!(
        settled,
        "{}: everything done after the campaign: {:?}, want {new} posted and {} mentions \
         (seed {seed})\n{}",
        w.account,
        progress(&w.sb, w.account),
        t.mentions,
        w.sb.log()
    );
    // Quiet: one more fetch of everything, and time for anything late to show.
    std::thread::sleep(Duration::from_millis(500));
    let _ = w.sb.ctl(&["poll"]);
    std::thread::sleep(Duration::from_millis(500));
    check(&w, &t, &format!("{summary} (seed {seed})"));
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("presenced stops on SIGTERM");
    assert!(status.success(), "{}", w.sb.log());
    eprintln!("{}: done in {:.1}s", w.account, started.elapsed().as_secs_f64());
}

/// The final checks, from the remote's record and `presencectl --json`.
fn check(w: &World, t: &Tally, ctx: &str) {
    let record = record_of(w.remote.as_ref());

    // Articles: every new one exactly once, none of the baseline, nothing else.
    let doubled: Vec<_> = record.articles.iter().filter(|(_, &c)| c > 1).collect();
    assert!(doubled.is_empty(), "announced more than once (article: posts): {doubled:?}\n{ctx}");
    let missing: Vec<u64> =
        (BASELINE + 1..=t.published).filter(|n| !record.articles.contains_key(n)).collect();
    assert!(missing.is_empty(), "never announced: {missing:?}\n{ctx}");
    let unexpected: Vec<&u64> =
        record.articles.keys().filter(|&&n| n <= BASELINE || n > t.published).collect();
    assert!(unexpected.is_empty(), "announced but not new: {unexpected:?}\n{ctx}");
    let posts = w.sb.ctl_json(&["posts", "--all"]);
    let posted =
        posts.as_array().unwrap().iter().filter(|a| a["accounts"][0]["state"] == "posted").count()
            as u64;
    assert_eq!(posted, t.published - BASELINE, "the daemon agrees\n{ctx}");

    if !w.conversations {
        return;
    }
    // Mentions: one conversation each, each mention once.
    let list = w.sb.ctl_json(&["list", "--all"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len() as u64, t.mentions, "one conversation per mention\n{ctx}");
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut mine: BTreeMap<u64, String> = BTreeMap::new();
    for c in list {
        let id = c["id"].as_str().unwrap();
        let shown = w.sb.ctl_json(&["show", id]);
        let mut here = 0;
        for m in shown["messages"].as_array().unwrap() {
            let text = m["text"].as_str().unwrap();
            if m["mine"] == true {
                for n in answer_of(text) {
                    mine.insert(n, m["delivery"].as_str().unwrap_or_default().to_owned());
                }
            } else {
                for n in mention_of(text) {
                    *seen.entry(n).or_default() += 1;
                    here += 1;
                }
            }
        }
        assert_eq!(here, 1, "{id} holds exactly one mention: {shown:#}\n{ctx}");
    }
    let expected: BTreeSet<u64> = (0..t.mentions).collect();
    assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), expected, "every mention\n{ctx}");
    assert!(seen.values().all(|&c| c == 1), "each mention once: {seen:?}\n{ctx}");

    // Answers: acknowledged → exactly once; refused or never sent → never; cut off → at
    // most once, and exactly as the daemon's record says.
    let acknowledged = t.answers.iter().filter(|(_, _, a)| matches!(a, Ack::Posted | Ack::Saved));
    assert!(acknowledged.count() > 0, "some answers must be acknowledged\n{ctx}");
    let issued: BTreeSet<u64> = t.answers.iter().map(|(n, _, _)| *n).collect();
    let strays: Vec<&u64> = record.answers.keys().filter(|n| !issued.contains(n)).collect();
    assert!(strays.is_empty(), "answers nobody gave: {strays:?}\n{ctx}");
    for (n, conversation, ack) in &t.answers {
        let on_remote = record.answers.get(n).copied().unwrap_or(0);
        let in_daemon = mine.get(n);
        let why = format!(
            "answer {n} to c{conversation}: {ack:?}, {on_remote} on the remote, daemon: {in_daemon:?}\n{ctx}"
        );
        match ack {
            Ack::Posted | Ack::Saved => assert_eq!(on_remote, 1, "{why}"),
            Ack::Refused | Ack::NotSent => assert_eq!(on_remote, 0, "{why}"),
            Ack::Unknown => assert!(on_remote <= 1, "{why}"),
        }
        match in_daemon.map(String::as_str) {
            Some("posted") => assert_eq!(on_remote, 1, "{why}"),
            Some("failed") if *ack != Ack::Posted && *ack != Ack::Saved => {
                assert_eq!(on_remote, 0, "{why}")
            }
            Some(other) => panic!("an answer left {other}: {why}"),
            None => assert_eq!(on_remote, 0, "{why}"),
        }
    }
    let cut: Vec<u64> =
        t.answers.iter().filter(|(_, _, a)| *a == Ack::Unknown).map(|(n, _, _)| *n).collect();
    let landed = cut.iter().filter(|n| record.answers.contains_key(n)).count();
    eprintln!(
        "{}: of {} answers cut off by a kill, {landed} landed once (durable before the kill), \
         {} never",
        w.account,
        cut.len(),
        cut.len() - landed
    );
}

// ---------------------------------------------------------------------------------------
// One test per account kind.

#[test]
fn outbox_survives_200_sigkills() {
    campaign(outbox_world());
}

#[test]
fn mastodon_survives_200_sigkills() {
    campaign(mastodon_world());
}

#[test]
fn x_survives_200_sigkills() {
    campaign(x_world());
}

#[test]
fn facebook_survives_200_sigkills() {
    campaign(facebook_world());
}

#[test]
fn bluesky_survives_200_sigkills() {
    let Some(net) = bsky::network() else { return };
    campaign(bluesky_world(net));
}
