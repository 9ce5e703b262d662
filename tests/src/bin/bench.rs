//! `presence-bench`: numbers for BENCHMARKS.md, measured on the real release binaries.
//!
//! Run with `tests/bench` (which builds in release mode first). Measures, for feeds of
//! several sizes, the daemon's CPU time and memory per poll cycle with nothing new (a 304)
//! and with 20 new articles; and, for states of several sizes, start-to-READY time, state
//! file size and save time, and the `presencectl list` round trip.
//!
//! CPU time is read from `/proc/<pid>/task/*/schedstat` (nanoseconds on CPU, all threads),
//! memory from `/proc/<pid>/status` (VmRSS, VmHWM).

// A measuring tool: it fails loudly rather than handling every error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use presence_e2e::feed_server::{rss, FeedServer};
use presence_e2e::measure::{cpu_ns, sibling_binary as release, status_kib};
use presence_e2e::{wait_until, NotifySocket, Sandbox};
use presenced::state::{ConvStatus, Conversation, Message, State};

const T0: i64 = 1_795_860_000;

fn items(range: std::ops::RangeInclusive<i64>) -> Vec<(String, String, String, i64)> {
    let mut v: Vec<_> = range
        .map(|n| {
            (
                format!("https://blog.test/?p={n}"),
                format!("https://blog.test/{n}/"),
                format!("Post number {n}: a title of ordinary length"),
                T0 + n * 60,
            )
        })
        .collect();
    v.reverse();
    v
}

fn ctl(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    Command::new(release("presencectl"))
        .arg("--socket")
        .arg(sb.socket())
        .args(args)
        .output()
        .unwrap()
}

struct FeedRow {
    size: usize,
    ready_ms: f64,
    idle_poll_cpu_ms: f64,
    idle_poll_304: bool,
    new20_cpu_ms: f64,
    new20_wall_ms: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn feed_cycle(size: usize) -> FeedRow {
    let server = FeedServer::start(&rss(&items(1..=size as i64)));
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\nmax_new_per_poll = 20\n\n[[account]]\nname = \"dry\"\nkind = \"outbox\"\n",
        server.url
    ));
    let mut notify = NotifySocket::bind(sb.path());
    let mut cmd = sb.daemon_command_for(&release("presenced"));
    cmd.env("NOTIFY_SOCKET", &notify.path).env("PRESENCED_LOG", "info");
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    assert!(notify.wait_for("READY=1", Duration::from_secs(10)));
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    let pid = child.id();
    let status = |sb: &Sandbox| -> serde_json::Value {
        serde_json::from_slice(&ctl(sb, &["--json", "status"]).stdout).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(30), || status(&sb)["feeds"][0]["baseline_taken"] == true)
    );

    // Nothing new: 20 polls answered by 304; CPU per poll.
    let polls: u32 = 20;
    let before = cpu_ns(pid);
    let n304 = server.not_modified();
    for _ in 0..polls {
        let req = server.requests();
        ctl(&sb, &["poll"]);
        assert!(wait_until(Duration::from_secs(5), || server.requests() > req));
    }
    std::thread::sleep(Duration::from_millis(100));
    let idle_poll_cpu_ms = (cpu_ns(pid) - before) as f64 / 1e6 / f64::from(polls);
    let idle_poll_304 = server.not_modified() - n304 == u64::from(polls);

    // Twenty new articles in one poll, until all 20 are in the outbox.
    server.set_body(&rss(&items(1..=size as i64 + 20)));
    let before = cpu_ns(pid);
    let wall = Instant::now();
    ctl(&sb, &["poll"]);
    assert!(
        wait_until(Duration::from_secs(30), || sb.outbox_lines().len() >= 20),
        "20 announced: {} lines\n{}\n{}",
        sb.outbox_lines().len(),
        String::from_utf8_lossy(&ctl(&sb, &["posts", "--all"]).stdout),
        sb.log()
    );
    let new20_wall_ms = wall.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(Duration::from_millis(100));
    let new20_cpu_ms = (cpu_ns(pid) - before) as f64 / 1e6;
    std::thread::sleep(Duration::from_millis(500));
    let rss_kib = status_kib(pid, "VmRSS:");
    let hwm_kib = status_kib(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    FeedRow {
        size,
        ready_ms,
        idle_poll_cpu_ms,
        idle_poll_304,
        new20_cpu_ms,
        new20_wall_ms,
        rss_kib,
        hwm_kib,
    }
}

fn state_with(conversations: usize) -> State {
    let mut s = State::default();
    for i in 0..conversations as u64 {
        let author = format!("person{}@example.social", i % 997);
        let messages = (0..3)
            .map(|j| Message {
                remote_id: format!("{i}-{j}"),
                author: author.clone(),
                display_name: format!("Person {}", i % 997),
                text: "Thanks for the article! I wondered how you handle the case where the feed \
                       changes its guids after a migration."
                    .into(),
                at: T0 + (i * 10 + j) as i64,
                url: Some(format!("https://example.social/@p/{i}{j}")),
                visibility: Some("public".into()),
                in_reply_to: None,
                answer: None,
            })
            .collect();
        let status = if i % 3 == 0 { ConvStatus::Done { at: T0 } } else { ConvStatus::Open };
        s.conversations.insert(
            i + 1,
            Conversation { account: "dry".into(), thread: format!("t{i}"), status, messages },
        );
    }
    s.next_conversation = conversations as u64;
    s.accounts.entry("dry".into()).or_default().cursors =
        BTreeMap::from([("n".into(), "1".into())]);
    s
}

struct StateRow {
    conversations: usize,
    file_kib: u64,
    save_ms: f64,
    ready_ms: f64,
    list_ms: f64,
    list_json_ms: f64,
    rss_kib: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn state_scale(conversations: usize) -> StateRow {
    let sb = Sandbox::new();
    sb.write_config("[[account]]\nname = \"dry\"\nkind = \"outbox\"\n");
    let state = state_with(conversations);
    let store = presenced::store::Store::open(&sb.state_dir()).unwrap();
    let t = Instant::now();
    store.save(&state).unwrap();
    let save_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(store);
    let file_kib = std::fs::metadata(sb.state_dir().join("state")).unwrap().len() / 1024;
    let mut notify = NotifySocket::bind(sb.path());
    let started = Instant::now();
    let mut child = Command::new(release("presenced"))
        .arg("--config")
        .arg(sb.config_path())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("PRESENCED_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(notify.wait_for("READY=1", Duration::from_secs(30)));
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    let time = |args: &[&str]| {
        median(
            (0..15)
                .map(|_| {
                    let t = Instant::now();
                    let out = ctl(&sb, args);
                    assert!(out.status.success());
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    let list_ms = time(&["list"]);
    let list_json_ms = time(&["--json", "list"]);
    let rss_kib = status_kib(child.id(), "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    StateRow { conversations, file_kib, save_ms, ready_ms, list_ms, list_json_ms, rss_kib }
}

struct IngestRow {
    mentions: usize,
    wall_ms: f64,
    cpu_ms: f64,
    per_second: f64,
    hwm_kib: u64,
}

/// Mentions posted on the local Mastodon emulator while the daemon waits, then taken in by
/// one `presencectl poll` (page by page, each page stored before the next).
fn mention_ingest(n: usize) -> IngestRow {
    let masto = presence_e2e::mastodon::Mastodon::start();
    let me = masto.add_account("blogger", "Blogger");
    let sb = Sandbox::new();
    let token = sb.secret_file("masto.token", &masto.token_for(&me));
    sb.write_config(&format!(
        "[[account]]\nname = \"masto\"\nkind = \"mastodon\"\nserver = {:?}\ntoken = {{ file = {:?} }}\ninterval = \"1h\"\n",
        masto.url(),
        token
    ));
    let mut notify = NotifySocket::bind(sb.path());
    let mut cmd = sb.daemon_command_for(&release("presenced"));
    cmd.env("NOTIFY_SOCKET", &notify.path).env("PRESENCED_LOG", "warn");
    let mut child = cmd.spawn().unwrap();
    assert!(notify.wait_for("READY=1", Duration::from_secs(10)));
    let pid = child.id();
    let status = |sb: &Sandbox| -> serde_json::Value {
        serde_json::from_slice(&ctl(sb, &["--json", "status"]).stdout).unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(10), || status(&sb)["accounts"][0]["health"] == "ok"));
    assert!(wait_until(Duration::from_secs(10), || {
        !masto.requests_to("GET", "/api/v1/notifications").is_empty()
    }));
    let people: Vec<String> = (0..50)
        .map(|i| masto.add_remote_account(&format!("p{i}"), "crowd.host", &format!("P {i}")))
        .collect();
    // The daemon listens on the stream and starts taking mentions in while they are still
    // being posted: time and CPU count from the first one.
    let before = cpu_ns(pid);
    let wall = Instant::now();
    for i in 0..n {
        masto.post_as(
            &people[i % people.len()],
            &format!("@blogger question number {i}"),
            None,
            &[],
        );
    }
    ctl(&sb, &["poll"]);
    assert!(wait_until(Duration::from_secs(600), || {
        status(&sb)["queue"]["open"].as_u64() == Some(n as u64)
    }));
    let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
    let cpu_ms = (cpu_ns(pid) - before) as f64 / 1e6;
    let hwm_kib = status_kib(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    IngestRow { mentions: n, wall_ms, cpu_ms, per_second: n as f64 / (wall_ms / 1e3), hwm_kib }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let feed_sizes: &[usize] = if quick { &[50, 500] } else { &[50, 500, 5000] };
    let state_sizes: &[usize] = if quick { &[1000, 10_000] } else { &[1000, 10_000, 100_000] };
    let _ = Path::new(".");

    println!("## Feed poll cycle (presenced, outbox account, local HTTP feed)\n");
    println!("| items | start→READY ms | CPU per 304 poll ms | 304 used | CPU for 20 new ms | wall for 20 new ms | RSS KiB | peak RSS KiB |");
    println!("|---:|---:|---:|:---:|---:|---:|---:|---:|");
    for &size in feed_sizes {
        let r = feed_cycle(size);
        println!(
            "| {} | {:.1} | {:.3} | {} | {:.1} | {:.1} | {} | {} |",
            r.size,
            r.ready_ms,
            r.idle_poll_cpu_ms,
            if r.idle_poll_304 { "yes" } else { "NO" },
            r.new20_cpu_ms,
            r.new20_wall_ms,
            r.rss_kib,
            r.hwm_kib
        );
    }
    println!("\n## Mentions taken in (local Mastodon emulator, one poll)\n");
    println!("| mentions | wall ms | daemon CPU ms | mentions/s | peak RSS KiB |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in if quick { &[1000][..] } else { &[1000, 10_000][..] } {
        let r = mention_ingest(n);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} |",
            r.mentions, r.wall_ms, r.cpu_ms, r.per_second, r.hwm_kib
        );
    }
    println!("\n## State size (conversations of 3 messages)\n");
    println!("| conversations | state file KiB | save ms | start→READY ms | `list` ms | `--json list` ms | RSS KiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in state_sizes {
        let r = state_scale(n);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {} |",
            r.conversations,
            r.file_kib,
            r.save_ms,
            r.ready_ms,
            r.list_ms,
            r.list_json_ms,
            r.rss_kib
        );
    }
}
