//! `presence-bench-peers`: presenced side by side with its peers from PyPI, feed2toot and
//! feediverse, on the same blog feed and the same Mastodon emulator
//! (`presence_e2e::mastodon`), in one run; and the parse throughput of `presence_feed::parse`
//! against Python's `feedparser.parse` on the same bytes.
//!
//! Run with `tests/bench-peers` (installs each peer in its own virtualenv, builds release, runs
//! this). Results and method: tests/bench-peers.md.
//!
//! Every tool gets its own account on the one emulator and its own copy of the blog (a
//! [`FeedServer`] serving identical bytes): FEED_ITEMS old articles. After the tool's first
//! run (the way its documentation starts it, which is also where it shows whether it posts old
//! articles) it runs ROUNDS rounds of two poll cycles: one with nothing new, one with
//! NEW_PER_CYCLE articles published just before it.
//!
//! - presenced (release, one long-running process, `kind = "mastodon"` account,
//!   `max_new_per_poll = 20`): a cycle is `presencectl poll --feeds` (what its feed timer
//!   does, and all the peers do: fetch, parse, announce) and waiting until it is done.
//!   CPU = delta of `/proc/<pid>/task/*/schedstat` (all threads); peak RSS = VmHWM after
//!   resetting it with `echo 5 > /proc/<pid>/clear_refs` before the cycle. Its inbox work,
//!   which the peers do not have, is measured apart: ROUNDS × `presencectl poll --mentions`.
//! - the peers are cron-style programs, one process per cycle ([`Peer`], [`Install`]):
//!   CPU = user+sys and peak RSS = maxrss of that process, from GNU `/usr/bin/time`.
//!
//! Everything listens on 127.0.0.1; every wait is bounded.

// A measuring tool: it fails loudly rather than handling every error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use presence_e2e::feed_server::{rss, FeedServer, Item};
use presence_e2e::mastodon::Mastodon;
use presence_e2e::measure::{cpu_ns, sibling_binary as release, status_kib};
use presence_e2e::{wait_until, NotifySocket, Sandbox};

const FEED_ITEMS: i64 = 500;
const NEW_PER_CYCLE: i64 = 20;
const ROUNDS: usize = 5;

// ---------------------------------------------------------------------------------------------
// The blog

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The blog every tool follows: FEED_ITEMS old articles one minute apart, the newest ten
/// minutes before the run started. New articles are dated when they are published, as a blog
/// dates them: feediverse goes by dates (it posts the entries newer than its last run and not
/// in the future), the others by ids.
#[derive(Debug, Clone, Copy)]
struct Blog {
    newest_old: i64,
}

/// One tool's copy of the blog on its own server; items newest first.
struct BlogServer {
    server: FeedServer,
    items: Vec<Item>,
}

impl Blog {
    fn new() -> Blog {
        Blog { newest_old: unix_now() as i64 - 600 }
    }

    fn article(n: i64, date: i64) -> Item {
        (
            format!("https://blog.test/?p={n}"),
            format!("https://blog.test/{n}/"),
            format!("Post number {n}: a title of ordinary length"),
            date,
        )
    }

    fn old_items(self) -> Vec<Item> {
        (1..=FEED_ITEMS)
            .rev()
            .map(|n| Blog::article(n, self.newest_old - (FEED_ITEMS - n) * 60))
            .collect()
    }

    fn serve(self) -> BlogServer {
        let items = self.old_items();
        BlogServer { server: FeedServer::start(&rss(&items)), items }
    }
}

impl BlogServer {
    /// Publishes `n` new articles dated now, in a later second than anything before (the
    /// tool's last run included), so that a date-based tool sees them as new.
    fn publish(&mut self, n: i64) {
        std::thread::sleep(Duration::from_secs_f64(1.01 - unix_now().fract()));
        let date = unix_now() as i64;
        for _ in 0..n {
            let number = self.items.len() as i64 + 1;
            self.items.insert(0, Blog::article(number, date));
        }
        self.server.set_body(&rss(&self.items));
    }
}

// ---------------------------------------------------------------------------------------------
// Cycles, shared by all tools

#[derive(Debug, Clone)]
struct Cycle {
    new: i64,
    cpu_ms: f64,
    wall_ms: f64,
    peak_kib: u64,
    statuses: usize,
    /// Mastodon requests made to announce (statuses, instance and account look-ups).
    announcing: usize,
    /// Mastodon requests of the inbox: notifications, conversation context, streams.
    inbox: usize,
    feed_304: u64,
    feed_200: u64,
}

/// Whether a Mastodon request is inbox work (following conversations), not announcing.
fn is_inbox(path: &str) -> bool {
    path.starts_with("/api/v1/notifications")
        || path.starts_with("/api/v1/streaming")
        || path.starts_with("/api/v1/conversations")
        || (path.starts_with("/api/v1/statuses/") && path.ends_with("/context"))
}

/// `METHOD path` with numeric path segments replaced by `:id`, for grouping.
fn request_shape(method: &str, path: &str) -> String {
    let path: Vec<&str> = path
        .split('/')
        .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { ":id" } else { s })
        .collect();
    format!("{method} {}", path.join("/"))
}

/// The emulator's and the feed server's counters at the start of a cycle.
struct Counters<'a> {
    masto: &'a Mastodon,
    me: &'a str,
    server: &'a FeedServer,
    statuses: usize,
    requests: usize,
    n304: u64,
    n200: u64,
}

impl<'a> Counters<'a> {
    fn take(masto: &'a Mastodon, me: &'a str, server: &'a FeedServer) -> Counters<'a> {
        Counters {
            masto,
            me,
            server,
            statuses: masto.statuses_of(me).len(),
            requests: masto.requests().len(),
            n304: server.not_modified(),
            n200: server.full_responses(),
        }
    }

    fn statuses_since(&self) -> usize {
        self.masto.statuses_of(self.me).len() - self.statuses
    }

    /// `METHOD path` of every Mastodon request since `take` (all accounts: one tool runs at
    /// a time).
    fn requests_since(&self) -> Vec<(String, String)> {
        self.masto.requests()[self.requests..]
            .iter()
            .map(|r| (r.method.clone(), r.path().to_owned()))
            .collect()
    }

    fn finish(&self, new: i64, (cpu_ms, peak_kib, wall_ms): (f64, u64, f64)) -> Cycle {
        let requests = self.requests_since();
        let inbox = requests.iter().filter(|(_, p)| is_inbox(p)).count();
        Cycle {
            new,
            cpu_ms,
            wall_ms,
            peak_kib,
            statuses: self.statuses_since(),
            announcing: requests.len() - inbox,
            inbox,
            feed_304: self.server.not_modified() - self.n304,
            feed_200: self.server.full_responses() - self.n200,
        }
    }
}

/// What one tool did: its cycles, first runs and the requests it made.
struct ToolResult {
    name: &'static str,
    /// Versions measured (peers: the Python packages).
    version: String,
    cycles: Vec<Cycle>,
    /// How it was first started on the existing feed, and what that did.
    first_runs: Vec<FirstRun>,
    /// Mastodon requests of the second round's cycles (steady state), by new-item count.
    listings: Vec<(i64, Vec<String>)>,
    /// CPU ms and maxrss KiB of starting the program without work (peers only).
    startup: Option<(f64, u64)>,
}

/// A first start on the blog with FEED_ITEMS old articles.
struct FirstRun {
    how: String,
    /// Statuses of old articles posted.
    statuses: usize,
    /// CPU ms and wall ms of the process (peers only).
    cost: Option<(f64, f64)>,
}

/// Runs ROUNDS rounds of {nothing new, NEW_PER_CYCLE new} on `blog` for the tool posting as
/// `me`. `cycle` runs one poll cycle until the tool is done and returns (CPU ms, peak RSS KiB,
/// wall ms).
fn measure_cycles(
    masto: &Mastodon,
    me: &str,
    blog: &mut BlogServer,
    mut cycle: impl FnMut(&Counters, i64) -> (f64, u64, f64),
) -> (Vec<Cycle>, Vec<(i64, Vec<String>)>) {
    let mut cycles = Vec::new();
    let mut listings = Vec::new();
    for round in 0..ROUNDS {
        for new in [0, NEW_PER_CYCLE] {
            if new > 0 {
                blog.publish(new);
            }
            let c = Counters::take(masto, me, &blog.server);
            let measured = cycle(&c, new);
            let done = c.finish(new, measured);
            assert_eq!(
                done.statuses, new as usize,
                "cycle with {new} new posted {}",
                done.statuses
            );
            if round == 1 {
                let shapes = c.requests_since().iter().map(|(m, p)| request_shape(m, p)).collect();
                listings.push((new, shapes));
            }
            cycles.push(done);
        }
    }
    (cycles, listings)
}

// ---------------------------------------------------------------------------------------------
// presenced

struct PresencedResult {
    tool: ToolResult,
    /// CPU ms and Mastodon requests of each `poll --mentions` after the cycles.
    inbox_reads: Vec<(f64, usize)>,
    idle_rss_kib: u64,
    peak_reset_ok: bool,
    startup_hwm_kib: u64,
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); false if the kernel refused.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn ctl(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    Command::new(release("presencectl"))
        .arg("--socket")
        .arg(sb.socket())
        .args(args)
        .output()
        .unwrap()
}

fn ctl_json(sb: &Sandbox, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_slice(&ctl(sb, &all).stdout).unwrap_or_default()
}

/// Waits until no Mastodon request came for 600 ms (at most 10 s): the daemon's follow-up
/// requests and state saves are part of its cycle.
fn wait_quiet(masto: &Mastodon) {
    let start = Instant::now();
    let mut seen = masto.requests().len();
    let mut stable = Instant::now();
    while stable.elapsed() < Duration::from_millis(600) && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        let now = masto.requests().len();
        if now != seen {
            seen = now;
            stable = Instant::now();
        }
    }
}

/// The commit the product was built from, and whether its sources had uncommitted edits.
fn source_revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "an unknown revision (no git)".into();
    };
    match git(&["status", "--porcelain", "--", "presenced", "presencectl", "Cargo.lock"]) {
        Some(dirty) if !dirty.is_empty() => {
            format!("commit {head} plus uncommitted edits to presenced/presencectl")
        }
        _ => format!("commit {head}"),
    }
}

fn run_presenced(masto: &Mastodon, blog: Blog) -> PresencedResult {
    let me = masto.add_account("blogger", "The Blogger");
    let mut feed = blog.serve();
    let sb = Sandbox::new();
    let token = sb.secret_file("masto.token", &masto.token_for(&me));
    sb.write_config(&format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\nmax_new_per_poll = {NEW_PER_CYCLE}\n\n\
         [[account]]\nname = \"masto\"\nkind = \"mastodon\"\nserver = {:?}\ntoken = {{ file = {:?} }}\n",
        feed.server.url,
        masto.url(),
        token
    ));
    let mut notify = NotifySocket::bind(sb.path());
    let mut cmd = sb.daemon_command_for(&release("presenced"));
    cmd.env("NOTIFY_SOCKET", &notify.path).env("PRESENCED_LOG", "info");
    let mut child = cmd.spawn().unwrap();
    assert!(notify.wait_for("READY=1", Duration::from_secs(10)), "READY\n{}", sb.log());
    let pid = child.id();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = ctl_json(&sb, &["status"]);
            s["feeds"][0]["baseline_taken"] == true && s["accounts"][0]["health"] == "ok"
        }),
        "baseline + account ok: {:#}\n{}",
        ctl_json(&sb, &["status"]),
        sb.log()
    );
    wait_quiet(masto);
    let first_run_statuses = masto.statuses_of(&me).len();
    let startup_hwm_kib = status_kib(pid, "VmHWM:");

    let mut peak_reset_ok = true;
    let (cycles, listings) = measure_cycles(masto, &me, &mut feed, |c, new| {
        peak_reset_ok &= reset_peak(pid);
        let feed_requests = c.server.requests();
        let cpu = cpu_ns(pid);
        let wall = Instant::now();
        assert!(ctl(&sb, &["poll", "--feeds"]).status.success());
        assert!(wait_until(Duration::from_secs(10), || c.server.requests() > feed_requests));
        assert!(
            wait_until(Duration::from_secs(60), || c.statuses_since() >= new as usize),
            "{new} announced: {}\n{}",
            c.statuses_since(),
            sb.log()
        );
        let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
        wait_quiet(masto);
        ((cpu_ns(pid) - cpu) as f64 / 1e6, status_kib(pid, "VmHWM:"), wall_ms)
    });
    let inbox_reads = (0..ROUNDS)
        .map(|_| {
            let requests = masto.requests().len();
            let cpu = cpu_ns(pid);
            assert!(ctl(&sb, &["poll", "--mentions"]).status.success());
            assert!(wait_until(Duration::from_secs(10), || masto.requests().len() > requests));
            wait_quiet(masto);
            ((cpu_ns(pid) - cpu) as f64 / 1e6, masto.requests().len() - requests)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss_kib = status_kib(pid, "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    PresencedResult {
        tool: ToolResult {
            name: "presenced",
            version: format!("release build of {}", source_revision()),
            cycles,
            first_runs: vec![FirstRun {
                how: "default `on_first_run = baseline`".into(),
                statuses: first_run_statuses,
                cost: None,
            }],
            listings,
            startup: None,
        },
        inbox_reads,
        idle_rss_kib,
        peak_reset_ok,
        startup_hwm_kib,
    }
}

// ---------------------------------------------------------------------------------------------
// The peers: cron-style Python programs from PyPI

/// A peer, as its documentation has a user install and run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Feed2toot,
    Feediverse,
}

/// How a peer is started: its arguments and, for a first run of feediverse, the answer to its
/// setup question "Shall already existing entries be tooted, too?".
#[derive(Debug, Clone, Copy)]
struct Run {
    args: &'static [&'static str],
    toot_existing: Option<bool>,
}

impl Peer {
    const ALL: [Peer; 2] = [Peer::Feed2toot, Peer::Feediverse];

    fn name(self) -> &'static str {
        match self {
            Peer::Feed2toot => "feed2toot",
            Peer::Feediverse => "feediverse",
        }
    }

    /// The virtualenv `tests/bench-peers` made for this peer (`$BENCH_PEERS_VENVS/<name>`),
    /// if any: the two need different major versions of Mastodon.py.
    fn venv_bin(self, program: &str) -> PathBuf {
        match std::env::var_os("BENCH_PEERS_VENVS") {
            Some(dir) => Path::new(&dir).join(self.name()).join("bin").join(program),
            None => PathBuf::from(program),
        }
    }

    fn program(self) -> PathBuf {
        self.venv_bin(self.name())
    }

    fn python(self) -> PathBuf {
        self.venv_bin("python3")
    }

    /// Starts the program without work: interpreter start-up and imports.
    fn startup(self) -> Run {
        let args: &'static [&'static str] = match self {
            Peer::Feed2toot => &["--version"],
            Peer::Feediverse => &["--help"],
        };
        Run { args, toot_existing: None }
    }

    /// How a new user first runs it on a blog that already has articles (each on a fresh
    /// install and account), besides [`Peer::baseline`].
    fn first_runs(self) -> Vec<(&'static str, Run)> {
        match self {
            Peer::Feed2toot => vec![
                ("defaults (`-l 10` implied)", Run { args: &[], toot_existing: None }),
                (
                    "`-l 20`, as the 20-new cycles need",
                    Run { args: &["-l", "20"], toot_existing: None },
                ),
            ],
            Peer::Feediverse => vec![(
                "setup answered `y` to \"Shall already existing entries be tooted, too?\"",
                Run { args: &[], toot_existing: Some(true) },
            )],
        }
    }

    /// The first run of the measured install: the tool's own way not to post old articles.
    fn baseline(self) -> (&'static str, Run) {
        match self {
            Peer::Feed2toot => (
                "`-l 20 --populate-cache` (the measured install)",
                Run { args: &["-l", "20", "--populate-cache"], toot_existing: None },
            ),
            Peer::Feediverse => (
                "setup answered `n` (the measured install)",
                Run { args: &[], toot_existing: Some(false) },
            ),
        }
    }

    /// One poll cycle, as cron runs it.
    fn cycle(self) -> Run {
        let args: &'static [&'static str] = match self {
            Peer::Feed2toot => &["-l", "20"],
            Peer::Feediverse => &[],
        };
        Run { args, toot_existing: None }
    }

    /// Versions of the peer, Mastodon.py and feedparser in its environment.
    fn versions(self) -> String {
        let out = Command::new(self.python())
            .arg("-c")
            .arg(format!(
                "import importlib.metadata as m; print(' '.join(f'{{p}} {{m.version(p)}}' for p in \
                 ['{}', 'Mastodon.py', 'feedparser']))",
                self.name()
            ))
            .output();
        match out {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
            _ => format!("{} (versions unknown: not in {})", self.name(), self.python().display()),
        }
    }
}

/// One user's installation of a peer for one account and feed: its own HOME holding its
/// configuration.
struct Install {
    peer: Peer,
    dir: tempfile::TempDir,
    masto_url: String,
    token: String,
    feed_url: String,
}

impl Install {
    fn new(peer: Peer, masto: &Mastodon, account: &str, feed_url: &str) -> Install {
        let inst = Install {
            peer,
            dir: tempfile::tempdir().unwrap(),
            masto_url: masto.url(),
            token: masto.token_for(account),
            feed_url: feed_url.to_owned(),
        };
        match peer {
            Peer::Feed2toot => inst.configure_feed2toot(),
            // feediverse's interactive setup writes its YAML on the first run.
            Peer::Feediverse => {}
        }
        inst
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// feed2toot's INI file and the two Mastodon.py credential files it names.
    fn configure_feed2toot(&self) {
        let secret = |name: &str, text: String| {
            std::fs::write(self.path(name), text).unwrap();
            std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        };
        // client id, secret, base URL / token, base URL.
        secret(
            "client.secret",
            format!("bench-client-id\nbench-client-secret\n{}\n", self.masto_url),
        );
        secret("user.secret", format!("{}\n{}\n", self.token, self.masto_url));
        std::fs::write(
            self.path("feed2toot.ini"),
            format!(
                "[mastodon]\ninstance_url={url}\nuser_credentials={user}\nclient_credentials={client}\n\
                 toot_visibility=public\n\n[cache]\ncachefile={cache}\n\n[lock]\nlock_file={lock}\n\n\
                 [rss]\nuri={feed}\ntoot={{title}} {{link}}\n",
                url = self.masto_url,
                user = self.path("user.secret"),
                client = self.path("client.secret"),
                cache = self.path("cache.db"),
                lock = self.path("feed2toot.lock"),
                feed = self.feed_url,
            ),
        )
        .unwrap();
    }

    /// The answers to feediverse's `setup()` questions, in its order: instance URL; app
    /// credentials already? (y: a token from the server's settings, no password); client id;
    /// client secret; access token; feed URL; toot existing entries?; attach images? (n).
    fn feediverse_answers(&self, toot_existing: bool) -> String {
        let yn = if toot_existing { "y" } else { "n" };
        format!(
            "{}\ny\nbench-client-id\nbench-client-secret\n{}\n{}\n{yn}\nn\n",
            self.masto_url, self.token, self.feed_url
        )
    }

    /// Runs the peer once; (user+sys ms, maxrss KiB, wall ms) from GNU time.
    fn run(&self, run: Run) -> (f64, u64, f64) {
        let time_out = self.path("time.out");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("peer.log"))
            .unwrap();
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-o", &time_out, "-f", "%U %S %M"]).arg(self.peer.program());
        match self.peer {
            Peer::Feed2toot => cmd.args([
                "-c",
                &self.path("feed2toot.ini"),
                "--lockfile",
                &self.path("feed2toot.lock"),
            ]),
            Peer::Feediverse => cmd.args(["-c", &self.path("feediverse.yml")]),
        };
        cmd.args(run.args)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("PYTHONWARNINGS", "ignore")
            .stdin(if run.toot_existing.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let wall = Instant::now();
        let mut child = cmd.spawn().expect("run /usr/bin/time <peer>");
        if let Some(toot_existing) = run.toot_existing {
            let answers = self.feediverse_answers(toot_existing);
            child.stdin.take().unwrap().write_all(answers.as_bytes()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} ran for more than 300 s\n{}", self.peer.name(), self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
        assert!(status.success(), "{} {run:?} failed: {status}\n{}", self.peer.name(), self.log());
        let text = std::fs::read_to_string(&time_out).unwrap();
        // GNU time may put "Command exited…" lines first; the format line is the last.
        let f: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
        let user: f64 = f[0].parse().unwrap();
        let sys: f64 = f[1].parse().unwrap();
        let maxrss: u64 = f[2].parse().unwrap();
        ((user + sys) * 1e3, maxrss, wall_ms)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("peer.log")).unwrap_or_default()
    }
}

fn run_peer(masto: &Mastodon, blog: Blog, peer: Peer) -> ToolResult {
    let name = peer.name();
    let old_feed = blog.serve();
    let mut first_runs = Vec::new();
    let mut startup = None;
    for (i, (what, run)) in peer.first_runs().into_iter().enumerate() {
        let account = masto.add_account(&format!("{name}first{i}"), &format!("{name}: {what}"));
        let inst = Install::new(peer, masto, &account, &old_feed.server.url);
        if startup.is_none() {
            let (cpu, rss, _) = inst.run(peer.startup());
            startup = Some((cpu, rss));
        }
        let (cpu, _, wall) = inst.run(run);
        let statuses = masto.statuses_of(&account).len();
        first_runs.push(FirstRun { how: what.to_owned(), statuses, cost: Some((cpu, wall)) });
    }

    let me = masto.add_account(name, name);
    let mut feed = blog.serve();
    let inst = Install::new(peer, masto, &me, &feed.server.url);
    let (what, baseline) = peer.baseline();
    let (cpu, _, wall) = inst.run(baseline);
    let statuses = masto.statuses_of(&me).len();
    assert_eq!(statuses, 0, "{name}: {what} posted\n{}", inst.log());
    first_runs.push(FirstRun { how: what.to_owned(), statuses, cost: Some((cpu, wall)) });
    let (cycles, listings) = measure_cycles(masto, &me, &mut feed, |_, _| inst.run(peer.cycle()));
    ToolResult { name, version: peer.versions(), cycles, first_runs, listings, startup }
}

// ---------------------------------------------------------------------------------------------
// Parse throughput

const PY_PARSE: &str = r#"
import sys, time, feedparser
data = open(sys.argv[1], 'rb').read()
n = int(sys.argv[2])
items = len(feedparser.parse(data, response_headers={'content-type': 'application/rss+xml; charset=utf-8'}).entries)
t = time.perf_counter()
total = 0
for _ in range(n):
    total += len(feedparser.parse(data, response_headers={'content-type': 'application/rss+xml; charset=utf-8'}).entries)
secs = time.perf_counter() - t
assert total == items * n
print(f"items={items} seconds={secs:.6f} version={feedparser.__version__}")
"#;

fn kv(out: &str, key: &str) -> String {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
}

struct ParseRow {
    who: String,
    items: usize,
    parses: u32,
    seconds: f64,
}

fn parse_throughput(feed: &Path) -> Vec<ParseRow> {
    let mut rows = Vec::new();
    let example = release("examples/parse_throughput");
    let n = 200;
    let out = Command::new(example).arg(feed).arg(n.to_string()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    rows.push(ParseRow {
        who: "`presence_feed::parse` (Rust, release)".into(),
        items: kv(&out, "items").parse().unwrap(),
        parses: n,
        seconds: kv(&out, "seconds").parse().unwrap(),
    });
    let n = 10;
    // feedparser from feed2toot's environment (feediverse's has the same version).
    let out = Command::new(Peer::Feed2toot.python())
        .arg("-c")
        .arg(PY_PARSE)
        .arg(feed)
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    rows.push(ParseRow {
        who: format!("`feedparser.parse` {} (Python)", kv(&out, "version")),
        items: kv(&out, "items").parse().unwrap(),
        parses: n,
        seconds: kv(&out, "seconds").parse().unwrap(),
    });
    rows
}

// ---------------------------------------------------------------------------------------------
// Report

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A mean with one decimal, or the integer when it is one.
fn per(total: usize, n: usize) -> String {
    if n == 0 {
        return "–".into();
    }
    if total % n == 0 {
        format!("{}", total / n)
    } else {
        format!("{:.1}", total as f64 / n as f64)
    }
}

/// Milliseconds: two decimals for presenced's small figures, none for the peers' (GNU time
/// measures in 10 ms steps).
fn ms(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

struct Summary {
    cpu_ms: f64,
    peak_kib: u64,
    wall_ms: f64,
    statuses: String,
    announcing_per_cycle: String,
    inbox_per_cycle: String,
    announcing_per_post: String,
    feed: String,
}

fn summary(tool: &ToolResult, new: i64) -> Summary {
    let these: Vec<&Cycle> = tool.cycles.iter().filter(|c| c.new == new).collect();
    let n = these.len();
    let sum = |f: fn(&Cycle) -> usize| these.iter().map(|c| f(c)).sum::<usize>();
    let posts = sum(|c| c.statuses);
    let announcing = sum(|c| c.announcing);
    Summary {
        cpu_ms: median(these.iter().map(|c| c.cpu_ms).collect()),
        peak_kib: these.iter().map(|c| c.peak_kib).max().unwrap_or(0),
        wall_ms: median(these.iter().map(|c| c.wall_ms).collect()),
        statuses: per(posts, n),
        announcing_per_cycle: per(announcing, n),
        inbox_per_cycle: per(sum(|c| c.inbox), n),
        announcing_per_post: if posts > 0 {
            format!("{:.2}", announcing as f64 / posts as f64)
        } else {
            "–".into()
        },
        feed: format!(
            "{}×304 / {}×200",
            these.iter().map(|c| c.feed_304).sum::<u64>(),
            these.iter().map(|c| c.feed_200).sum::<u64>()
        ),
    }
}

fn print_listing(what: &str, paths: &[String]) {
    println!("\nMastodon requests during a cycle of {what} (grouped):\n");
    let mut grouped: Vec<(&String, usize)> = Vec::new();
    for path in paths {
        match grouped.iter_mut().find(|(p, _)| *p == path) {
            Some((_, n)) => *n += 1,
            None => grouped.push((path, 1)),
        }
    }
    if grouped.is_empty() {
        println!("- none");
    }
    for (path, n) in grouped {
        println!("- {n} × `{path}`");
    }
}

fn main() {
    let masto = Mastodon::start();
    // Not under test here; raised so feediverse's first run can post all 500 old articles
    // without Mastodon.py sleeping until the 5-minute window resets.
    masto.set_rate_limit(1_000_000, Duration::from_secs(300));
    let blog = Blog::new();
    let dir = tempfile::tempdir().unwrap();
    let feed_file = dir.path().join("feed.xml");
    std::fs::write(&feed_file, rss(&blog.old_items())).unwrap();

    eprintln!("presenced…");
    let p = run_presenced(&masto, blog);
    let mut tools = vec![];
    let mut peers = vec![];
    // `--presenced-only`: presenced's cycles alone, for working on its side of the table.
    let only_presenced = std::env::args().any(|a| a == "--presenced-only");
    for peer in Peer::ALL.into_iter().filter(|_| !only_presenced) {
        eprintln!("{}…", peer.name());
        peers.push(run_peer(&masto, blog, peer));
    }
    tools.push(&p.tool);
    tools.extend(&peers);
    let parse = if only_presenced {
        vec![]
    } else {
        eprintln!("parse throughput…");
        parse_throughput(&feed_file)
    };

    println!("Versions:\n");
    for t in &tools {
        println!("- {}: {}", t.name, t.version);
    }
    println!(
        "\n## One poll cycle, {FEED_ITEMS}-item RSS feed, posting to the Mastodon emulator \
         (median CPU and wall / max peak RSS / mean counts of {ROUNDS} cycles each)\n"
    );
    println!(
        "| tool | new items | CPU ms | peak RSS KiB | wall ms | statuses created | \
         announcing requests per post | Mastodon requests per cycle: announcing + inbox | \
         feed answers ({ROUNDS} cycles) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for t in &tools {
        for new in [0, NEW_PER_CYCLE] {
            let s = summary(t, new);
            println!(
                "| {} | {new} | {} | {} | {:.0} | {} | {} | {} + {} | {} |",
                t.name,
                ms(s.cpu_ms),
                s.peak_kib,
                s.wall_ms,
                s.statuses,
                s.announcing_per_post,
                s.announcing_per_cycle,
                s.inbox_per_cycle,
                s.feed
            );
        }
    }
    println!("\nAll cycles:\n");
    for t in &tools {
        for c in &t.cycles {
            println!(
                "- {} new={}: cpu {} ms, peak {} KiB, wall {:.0} ms, {} statuses, \
                 {} announcing + {} inbox requests, feed {}×304 {}×200",
                t.name,
                c.new,
                ms(c.cpu_ms),
                c.peak_kib,
                c.wall_ms,
                c.statuses,
                c.announcing,
                c.inbox,
                c.feed_304,
                c.feed_200
            );
        }
    }

    println!("\n## Ratios and targets\n");
    let cpu = |t: &ToolResult, new| summary(t, new).cpu_ms;
    for peer in &peers {
        for new in [NEW_PER_CYCLE, 0] {
            let r = cpu(peer, new) / cpu(&p.tool, new);
            let target = if peer.name == "feed2toot" && new == NEW_PER_CYCLE {
                format!(" (target ≥ 50×: {})", if r >= 50.0 { "met" } else { "NOT met" })
            } else {
                String::new()
            };
            println!("- {} CPU / presenced CPU, {new} new: {r:.0}×{target}", peer.name);
        }
    }
    for t in &tools {
        let quiet: Vec<&Cycle> = t.cycles.iter().filter(|c| c.new == 0).collect();
        let answered_304 = quiet.iter().filter(|c| c.feed_304 == 1 && c.feed_200 == 0).count();
        println!(
            "- {}: nothing-new polls answered 304 (conditional GET, no body to parse): {answered_304} of {}",
            t.name,
            quiet.len()
        );
    }
    let (inbox_cpu, inbox_requests): (Vec<f64>, Vec<usize>) = p.inbox_reads.iter().copied().unzip();
    println!(
        "- presenced's inbox read apart (`presencectl poll --mentions`, not in the cycles above): \
         median {} ms CPU for {} Mastodon requests (cycles: {}); `presencectl poll` does both",
        ms(median(inbox_cpu.clone())),
        per(inbox_requests.iter().sum(), inbox_requests.len()),
        inbox_cpu.iter().map(|c| ms(*c)).collect::<Vec<_>>().join(", ")
    );
    let idle_mib = p.idle_rss_kib as f64 / 1024.0;
    println!(
        "- presenced idle RSS after the cycles: {} KiB = {idle_mib:.2} MiB (target ≤ 8 MiB: {}); VmHWM at startup+baseline: {} KiB",
        p.idle_rss_kib,
        if idle_mib <= 8.0 { "met" } else { "NOT met" },
        p.startup_hwm_kib
    );
    if !p.peak_reset_ok {
        println!("- WARNING: /proc/<pid>/clear_refs refused: presenced's peak RSS is since start, not per cycle");
    }

    println!("\n## First run on an existing {FEED_ITEMS}-item feed (statuses of old articles)\n");
    for t in &tools {
        for r in &t.first_runs {
            let cost = r
                .cost
                .map(|(cpu, wall)| format!(" ({cpu:.0} ms CPU, {:.1} s wall)", wall / 1e3))
                .unwrap_or_default();
            println!("- {}, {}: {}{cost}", t.name, r.how, r.statuses);
        }
    }
    println!();
    for t in &peers {
        if let Some((cpu, rss)) = t.startup {
            println!(
                "- {} start-up alone (interpreter + imports, no work): {cpu:.0} ms CPU, {rss} KiB peak RSS",
                t.name
            );
        }
    }
    for t in &tools {
        for (new, paths) in &t.listings {
            print_listing(&format!("{}, {new} new (second round)", t.name), paths);
        }
    }

    if parse.is_empty() {
        return;
    }
    println!(
        "\n## Parse throughput, same {FEED_ITEMS}-item RSS bytes ({} KiB)\n",
        std::fs::metadata(&feed_file).unwrap().len() / 1024
    );
    println!("| parser | items per parse | parses | seconds | ms per parse | items/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &parse {
        let ms = r.seconds * 1e3 / f64::from(r.parses);
        let ips = r.items as f64 * f64::from(r.parses) / r.seconds;
        println!(
            "| {} | {} | {} | {:.3} | {ms:.3} | {ips:.0} |",
            r.who, r.items, r.parses, r.seconds
        );
    }
    let speed = |r: &ParseRow| r.items as f64 * f64::from(r.parses) / r.seconds;
    println!(
        "\npresence_feed is {:.0}× faster than feedparser on this feed.",
        speed(&parse[0]) / speed(&parse[1])
    );
}
