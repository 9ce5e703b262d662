//! `presence-bench-peers`: presenced side by side with feed2toot (PyPI) on the same feed, in
//! one run, both posting to the Mastodon emulator (`presence_e2e::mastodon`); and the parse
//! throughput of `presence_feed::parse` against Python's `feedparser.parse` on the same bytes.
//!
//! Run with `tests/bench-peers` (installs feed2toot and feedparser with pip if missing, builds
//! release, runs this). Results and method: tests/bench-peers.md.
//!
//! Per tool, after a baseline (presenced: its first poll; feed2toot: `--populate-cache`), it
//! runs ROUNDS rounds of two cycles on a 500-item RSS feed: one with nothing new, one with 20
//! new articles published after the previous cycle.
//!
//! - presenced (release, one long-running process, `kind = "mastodon"` account,
//!   `max_new_per_poll = 20`): a cycle is `presencectl poll` and waiting until it is done.
//!   CPU = delta of `/proc/<pid>/task/*/schedstat` (all threads); peak RSS = VmHWM after
//!   resetting it with `echo 5 > /proc/<pid>/clear_refs` before the cycle.
//! - feed2toot (a cron-style program: one process per cycle, `feed2toot -c config.ini -l 20`):
//!   CPU = user+sys and peak RSS = maxrss of that process, from GNU `/usr/bin/time`.
//!
//! Everything listens on 127.0.0.1; every wait is bounded.

// A measuring tool: it fails loudly rather than handling every error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use presence_e2e::feed_server::{rss, FeedServer};
use presence_e2e::mastodon::Mastodon;
use presence_e2e::measure::{cpu_ns, sibling_binary as release, status_kib};
use presence_e2e::{wait_until, NotifySocket, Sandbox};

const T0: i64 = 1_795_860_000;
const FEED_ITEMS: i64 = 500;
const NEW_PER_CYCLE: i64 = 20;
const ROUNDS: i64 = 3;

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); false if the kernel refused.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Items 1..=last, newest first: (guid, link, title, pubDate).
fn items(last: i64) -> Vec<(String, String, String, i64)> {
    (1..=last)
        .rev()
        .map(|n| {
            (
                format!("https://blog.test/?p={n}"),
                format!("https://blog.test/{n}/"),
                format!("Post number {n}: a title of ordinary length"),
                T0 + n * 60,
            )
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Cycle {
    tool: &'static str,
    new: i64,
    cpu_ms: f64,
    wall_ms: f64,
    peak_kib: Option<u64>,
    statuses: usize,
    masto_requests: usize,
    feed_304: u64,
    feed_200: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

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

    /// (statuses, mastodon requests, feed 304s, feed 200s) since `take`.
    fn deltas(&self) -> (usize, usize, u64, u64) {
        (
            self.statuses_since(),
            self.masto.requests().len() - self.requests,
            self.server.not_modified() - self.n304,
            self.server.full_responses() - self.n200,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// presenced

struct PresencedResult {
    first_run_statuses: usize,
    cycles: Vec<Cycle>,
    idle_rss_kib: u64,
    peak_reset_ok: bool,
    startup_hwm_kib: u64,
    /// Mastodon requests (method path) of the second round's cycles, by new-item count.
    paths: Vec<(i64, Vec<String>)>,
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

fn run_presenced(masto: &Mastodon) -> PresencedResult {
    let me = masto.add_account("blogger", "The Blogger");
    let server = FeedServer::start(&rss(&items(FEED_ITEMS)));
    let sb = Sandbox::new();
    let token = sb.path().join("masto.token");
    std::fs::write(&token, masto.token_for(&me)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    sb.write_config(&format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\nmax_new_per_poll = {NEW_PER_CYCLE}\n\n\
         [[account]]\nname = \"masto\"\nkind = \"mastodon\"\nserver = {:?}\ntoken = {{ file = {:?} }}\n",
        server.url,
        masto.url(),
        token.display().to_string()
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
    std::thread::sleep(Duration::from_millis(500));
    let first_run_statuses = masto.statuses_of(&me).len();
    let startup_hwm_kib = status_kib(pid, "VmHWM:");

    let mut cycles = Vec::new();
    let mut peak_reset_ok = true;
    let mut last = FEED_ITEMS;
    let mut paths = Vec::new();
    for round in 0..ROUNDS {
        for new in [0, NEW_PER_CYCLE] {
            if new > 0 {
                last += new;
                server.set_body(&rss(&items(last)));
            }
            let c = Counters::take(masto, &me, &server);
            peak_reset_ok &= reset_peak(pid);
            let feed_req = server.requests();
            let cpu = cpu_ns(pid);
            let wall = Instant::now();
            assert!(ctl(&sb, &["poll"]).status.success());
            assert!(wait_until(Duration::from_secs(10), || server.requests() > feed_req));
            if new > 0 {
                assert!(
                    wait_until(Duration::from_secs(60), || c.statuses_since() >= new as usize),
                    "{new} announced: {}\n{}",
                    c.statuses_since(),
                    sb.log()
                );
            }
            let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
            // Let the daemon finish (follow-up requests, state saves) before reading its
            // counters: until no Mastodon request for 600 ms (at most 10 s).
            let quiet_since = Instant::now();
            let mut seen = masto.requests().len();
            let mut stable = Instant::now();
            while stable.elapsed() < Duration::from_millis(600)
                && quiet_since.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(50));
                let now = masto.requests().len();
                if now != seen {
                    seen = now;
                    stable = Instant::now();
                }
            }
            if round == 1 {
                paths.push((
                    new,
                    masto.requests()[c.requests..]
                        .iter()
                        .map(|r| format!("{} {}", r.method, r.path()))
                        .collect(),
                ));
            }
            let cpu_ms = (cpu_ns(pid) - cpu) as f64 / 1e6;
            let (statuses, masto_requests, feed_304, feed_200) = c.deltas();
            cycles.push(Cycle {
                tool: "presenced",
                new,
                cpu_ms,
                wall_ms,
                peak_kib: Some(status_kib(pid, "VmHWM:")),
                statuses,
                masto_requests,
                feed_304,
                feed_200,
            });
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss_kib = status_kib(pid, "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    PresencedResult {
        first_run_statuses,
        cycles,
        idle_rss_kib,
        peak_reset_ok,
        startup_hwm_kib,
        paths,
    }
}

// ---------------------------------------------------------------------------------------------
// feed2toot

struct Feed2tootResult {
    /// CPU ms and maxrss KiB of `feed2toot --version` (interpreter start + imports).
    version_cost: (f64, u64),
    first_run_statuses: usize,
    first_run_limit_20_statuses: usize,
    cycles: Vec<Cycle>,
    request_paths: Vec<String>,
}

struct Feed2toot {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Feed2toot {
    fn new(masto: &Mastodon, account: &str, feed_url: &str) -> Feed2toot {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        // Mastodon.py credential files: client id, secret, base URL / token, base URL.
        std::fs::write(
            p("client.secret"),
            format!("bench-client-id\nbench-client-secret\n{}\n", masto.url()),
        )
        .unwrap();
        std::fs::write(
            p("user.secret"),
            format!("{}\n{}\n", masto.token_for(account), masto.url()),
        )
        .unwrap();
        for f in ["client.secret", "user.secret"] {
            std::fs::set_permissions(p(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let config = dir.path().join("feed2toot.ini");
        std::fs::write(
            &config,
            format!(
                "[mastodon]\ninstance_url={url}\nuser_credentials={user}\nclient_credentials={client}\n\
                 toot_visibility=public\n\n[cache]\ncachefile={cache}\n\n[lock]\nlock_file={lock}\n\n\
                 [rss]\nuri={feed_url}\ntoot={{title}} {{link}}\n",
                url = masto.url(),
                user = p("user.secret"),
                client = p("client.secret"),
                cache = p("cache.db"),
                lock = p("feed2toot.lock"),
            ),
        )
        .unwrap();
        Feed2toot { dir, config }
    }

    /// Runs feed2toot once with `args`; (user+sys ms, maxrss KiB, wall ms).
    fn run(&self, args: &[&str]) -> (f64, u64, f64) {
        let time_out = self.dir.path().join("time.out");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("feed2toot.log"))
            .unwrap();
        let wall = Instant::now();
        let mut child = Command::new("/usr/bin/time")
            .arg("-o")
            .arg(&time_out)
            .arg("-f")
            .arg("%U %S %M")
            .arg("feed2toot")
            .arg("-c")
            .arg(&self.config)
            .arg("--lockfile")
            .arg(self.dir.path().join("feed2toot.lock"))
            .args(args)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run /usr/bin/time feed2toot");
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("feed2toot ran for more than 300 s\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
        assert!(status.success(), "feed2toot {args:?} failed: {status}\n{}", self.log());
        let text = std::fs::read_to_string(&time_out).unwrap();
        // GNU time may put "Command exited…" lines first; the format line is the last.
        let f: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
        let user: f64 = f[0].parse().unwrap();
        let sys: f64 = f[1].parse().unwrap();
        let maxrss: u64 = f[2].parse().unwrap();
        ((user + sys) * 1e3, maxrss, wall_ms)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("feed2toot.log")).unwrap_or_default()
    }
}

fn run_feed2toot(masto: &Mastodon) -> Feed2tootResult {
    // First run with the defaults, as a new user would start it (separate account and cache).
    let first = masto.add_account("f2tfirst", "feed2toot first run");
    let first_server = FeedServer::start(&rss(&items(FEED_ITEMS)));
    let f = Feed2toot::new(masto, &first, &first_server.url);
    let (v_cpu, v_rss, _) = f.run(&["--version"]);
    let version_cost = (v_cpu, v_rss);
    f.run(&[]);
    let first_run_statuses = masto.statuses_of(&first).len();
    // The same with `-l 20`, the setting the measured cycles need to post 20 new at once.
    let first20 = masto.add_account("f2tfirst20", "feed2toot first run, -l 20");
    let f = Feed2toot::new(masto, &first20, &first_server.url);
    f.run(&["-l", "20"]);
    let first_run_limit_20_statuses = masto.statuses_of(&first20).len();

    // The measured instance: baseline with --populate-cache (documented for this purpose).
    let me = masto.add_account("f2t", "feed2toot");
    let server = FeedServer::start(&rss(&items(FEED_ITEMS)));
    let f = Feed2toot::new(masto, &me, &server.url);
    f.run(&["-l", "20", "--populate-cache"]);
    assert_eq!(masto.statuses_of(&me).len(), 0, "--populate-cache posted\n{}", f.log());

    let mut cycles = Vec::new();
    let mut request_paths = Vec::new();
    let mut last = FEED_ITEMS;
    for round in 0..ROUNDS {
        for new in [0, NEW_PER_CYCLE] {
            if new > 0 {
                last += new;
                server.set_body(&rss(&items(last)));
            }
            let c = Counters::take(masto, &me, &server);
            let (cpu_ms, maxrss, wall_ms) = f.run(&["-l", "20"]);
            let (statuses, masto_requests, feed_304, feed_200) = c.deltas();
            if round == 0 && new > 0 {
                request_paths = masto.requests()[c.requests..]
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path()))
                    .collect();
            }
            cycles.push(Cycle {
                tool: "feed2toot",
                new,
                cpu_ms,
                wall_ms,
                peak_kib: Some(maxrss),
                statuses,
                masto_requests,
                feed_304,
                feed_200,
            });
        }
    }
    Feed2tootResult {
        version_cost,
        first_run_statuses,
        first_run_limit_20_statuses,
        cycles,
        request_paths,
    }
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
        who: "presence_feed::parse (Rust, release)".into(),
        items: kv(&out, "items").parse().unwrap(),
        parses: n,
        seconds: kv(&out, "seconds").parse().unwrap(),
    });
    let n = 10;
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_PARSE)
        .arg(feed)
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    rows.push(ParseRow {
        who: format!("feedparser.parse {} (Python)", kv(&out, "version")),
        items: kv(&out, "items").parse().unwrap(),
        parses: n,
        seconds: kv(&out, "seconds").parse().unwrap(),
    });
    rows
}

// ---------------------------------------------------------------------------------------------

fn summary(cycles: &[Cycle], tool: &str, new: i64) -> (f64, u64, f64, usize, f64, String) {
    let these: Vec<&Cycle> = cycles.iter().filter(|c| c.tool == tool && c.new == new).collect();
    let cpu = median(these.iter().map(|c| c.cpu_ms).collect());
    let wall = median(these.iter().map(|c| c.wall_ms).collect());
    let peak = these.iter().filter_map(|c| c.peak_kib).max().unwrap_or(0);
    let statuses: usize = these.iter().map(|c| c.statuses).sum::<usize>() / these.len();
    let reqs: usize = these.iter().map(|c| c.masto_requests).sum();
    let posts: usize = these.iter().map(|c| c.statuses).sum();
    let per_post = if posts > 0 { reqs as f64 / posts as f64 } else { f64::NAN };
    let n304: u64 = these.iter().map(|c| c.feed_304).sum();
    let n200: u64 = these.iter().map(|c| c.feed_200).sum();
    (cpu, peak, wall, statuses, per_post, format!("{n304}×304 / {n200}×200"))
}

fn main() {
    let masto = Mastodon::start();
    let dir = tempfile::tempdir().unwrap();
    let feed_file = dir.path().join("feed.xml");
    std::fs::write(&feed_file, rss(&items(FEED_ITEMS))).unwrap();

    eprintln!("presenced…");
    let p = run_presenced(&masto);
    eprintln!("feed2toot…");
    let f = run_feed2toot(&masto);
    eprintln!("parse throughput…");
    let parse = parse_throughput(&feed_file);

    println!(
        "## One poll cycle, {FEED_ITEMS}-item RSS feed, posting to the Mastodon emulator \
         (median CPU / max peak RSS of {ROUNDS} cycles each)\n"
    );
    println!("| tool | new items | CPU ms | peak RSS KiB | wall ms | statuses created | Mastodon requests per post | feed answers ({ROUNDS} cycles) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let mut cpu = std::collections::HashMap::new();
    for tool in ["presenced", "feed2toot"] {
        let cycles = if tool == "presenced" { &p.cycles } else { &f.cycles };
        for new in [0, NEW_PER_CYCLE] {
            let (c, peak, wall, statuses, per_post, feed) = summary(cycles, tool, new);
            cpu.insert((tool, new), c);
            let per_post = if per_post.is_nan() { "–".into() } else { format!("{per_post:.2}") };
            println!("| {tool} | {new} | {c:.2} | {peak} | {wall:.0} | {statuses} | {per_post} | {feed} |");
        }
    }
    println!("\nAll cycles (CPU ms, peak KiB, statuses, Mastodon requests, feed 304/200):\n");
    for c in p.cycles.iter().chain(&f.cycles) {
        println!(
            "- {} new={}: cpu {:.2} ms, peak {} KiB, wall {:.0} ms, {} statuses, {} requests, feed {}/{}",
            c.tool,
            c.new,
            c.cpu_ms,
            c.peak_kib.unwrap_or(0),
            c.wall_ms,
            c.statuses,
            c.masto_requests,
            c.feed_304,
            c.feed_200
        );
    }
    println!("\n## Ratios and targets\n");
    let r20 = cpu[&("feed2toot", NEW_PER_CYCLE)] / cpu[&("presenced", NEW_PER_CYCLE)];
    let r0 = cpu[&("feed2toot", 0)] / cpu[&("presenced", 0)];
    let nothing_new_304 =
        p.cycles.iter().filter(|c| c.new == 0).all(|c| c.feed_304 == 1 && c.feed_200 == 0);
    println!(
        "- feed2toot CPU / presenced CPU, 20 new: {r20:.0}× (target ≥ 50×: {})",
        if r20 >= 50.0 { "met" } else { "NOT met" }
    );
    println!("- feed2toot CPU / presenced CPU, nothing new: {r0:.0}×");
    println!(
        "- presenced nothing-new poll answered by 304 (no body, so no parse): {}",
        if nothing_new_304 { "yes, every time" } else { "NO" }
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
    println!("\n## First run on an existing {FEED_ITEMS}-item feed\n");
    println!("- presenced (default on_first_run = baseline): {} statuses", p.first_run_statuses);
    println!(
        "- feed2toot, defaults (no --populate-cache, -l 10): {} statuses of old articles",
        f.first_run_statuses
    );
    println!("- feed2toot, -l 20: {} statuses of old articles", f.first_run_limit_20_statuses);
    println!(
        "\nfeed2toot start-up alone (`feed2toot --version`: interpreter + imports, no work): {:.0} ms CPU, {} KiB peak RSS",
        f.version_cost.0, f.version_cost.1
    );
    let mut listings = vec![("feed2toot, 20 new".to_owned(), f.request_paths.clone())];
    for (new, paths) in &p.paths {
        listings
            .push((format!("presenced, {new} new (second round: steady state)"), paths.clone()));
    }
    for (what, paths) in listings {
        println!("\nMastodon requests during a cycle of {what} (grouped):\n");
        let mut grouped: Vec<(String, usize)> = Vec::new();
        for path in &paths {
            match grouped.iter_mut().find(|(p, _)| p == path) {
                Some((_, n)) => *n += 1,
                None => grouped.push((path.clone(), 1)),
            }
        }
        if grouped.is_empty() {
            println!("- none");
        }
        for (path, n) in grouped {
            println!("- {n} × `{path}`");
        }
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
    if parse.len() == 2 {
        let speed = |r: &ParseRow| r.items as f64 * f64::from(r.parses) / r.seconds;
        println!(
            "\npresence_feed is {:.0}× faster than feedparser on this feed.",
            speed(&parse[0]) / speed(&parse[1])
        );
    }
}
