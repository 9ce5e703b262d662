//! Hostile local clients against the real daemon (control.rs): 10 000 idle connections, a
//! client trickling one byte a second, a flood of requests from many clients, another uid
//! while every slot is taken; and secrets: tokens never in the log or in `presencectl`
//! output, and the process not dumpable. Through all of it the owner's `presencectl status`
//! must keep answering, and the daemon's memory must stay bounded.
//!
//! Wrong protocol version, garbage and a 4 GiB length prefix are in lifecycle.rs
//! (`hostile_frames_are_refused_while_others_keep_working`), as is a plain refusal of
//! another uid.
//!
//! Every loop here is bounded in count and time, and talks only to the sandbox's socket and
//! to emulators on 127.0.0.1.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_e2e::feed_server::{blog, rss, FeedServer};
use presence_e2e::mastodon::Mastodon;
use presence_e2e::{bin, text, wait_until, Sandbox};
use presencectl::proto::{self, Hello, Request, Response, ServerHello};

/// presenced's `control::MAX_CONNECTIONS`.
const SLOTS: usize = presenced::control::MAX_CONNECTIONS;
const NOBODY: u32 = 65534;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn read_frame(stream: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

/// A connection that has said hello: the stream, and the refusal if there was one.
fn hello(sb: &Sandbox) -> (UnixStream, Option<String>) {
    let mut s = UnixStream::connect(sb.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&frame(&proto::encode(&Hello::new("hostile")).unwrap()));
    let reply: ServerHello = proto::decode(&read_frame(&mut s).expect("a server hello")).unwrap();
    (s, reply.refusal)
}

/// Whether the daemon has closed this connection (EOF or reset), without blocking.
fn closed_by_daemon(mut s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue, // a refusal frame, then EOF
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

fn proc_field(pid: i32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let line = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key}"));
    line[key.len()..].split_whitespace().next().unwrap().parse().unwrap()
}

/// The daemon's resident memory, KiB.
fn rss_kib(pid: i32) -> u64 {
    proc_field(pid, "status", "VmRSS:")
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// (soft, hard) RLIMIT_NOFILE of a process ("self" or a pid).
fn nofile(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    let mut next = || fields.next().unwrap().parse().unwrap_or(u64::MAX);
    (next(), next())
}

/// Raises this process's RLIMIT_NOFILE to at least `want`, with prlimit(1) on ourselves
/// (the nix crate is built here without its `resource` feature). Returns the soft limit.
fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = nofile("self");
    if soft >= want {
        return soft;
    }
    let hard = if nix::unistd::geteuid().is_root() { hard.max(want) } else { hard };
    let _ = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={}:{hard}", want.min(hard)))
        .status();
    nofile("self").0
}

/// `presencectl --json status` as the owner: how long it took, or what it said.
fn owner_status(sb: &Sandbox) -> Result<Duration, String> {
    let t = Instant::now();
    let out = sb.ctl(&["--json", "status"]);
    if out.status.success() {
        Ok(t.elapsed())
    } else {
        Err(text(&out.stderr))
    }
}

/// Every call succeeded; returns the slowest.
fn all_served(calls: &[Result<Duration, String>]) -> Duration {
    let failed: Vec<&String> = calls.iter().filter_map(|c| c.as_ref().err()).collect();
    assert!(failed.is_empty(), "the owner was turned away {} times: {failed:?}", failed.len());
    calls.iter().filter_map(|c| c.as_ref().ok()).max().copied().unwrap_or_default()
}

fn quiet_daemon() -> (Sandbox, presence_e2e::Daemon) {
    let sb = Sandbox::new();
    sb.write_config("");
    let daemon = sb.start();
    // Warm up: the first requests allocate what every later one reuses.
    for _ in 0..20 {
        owner_status(&sb).unwrap();
    }
    (sb, daemon)
}

/// 10 000 connections that never say a word, opened as fast as possible, twice. The daemon
/// holds MAX_CONNECTIONS of them and closes each one that has waited longest when another
/// comes in, so memory and descriptors stay flat and the owner never waits for a slot.
#[test]
fn ten_thousand_idle_connections_cost_bounded_memory_and_never_lock_the_owner_out() {
    const IDLE: usize = 10_000;
    let limit = raise_nofile(IDLE as u64 + 512);
    if limit < IDLE as u64 + 512 {
        eprintln!("\n!!! SKIPPED: cannot open {IDLE} descriptors here (RLIMIT_NOFILE {limit})\n");
        return;
    }
    let (sb, daemon) = quiet_daemon();
    let pid = daemon.pid();
    let (rss0, fds0) = (rss_kib(pid), open_fds(pid));
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let mut conns = Vec::with_capacity(IDLE);
        let mut owner = Vec::new();
        let mut peak = (0, 0);
        for i in 0..IDLE {
            conns.push(UnixStream::connect(sb.socket()).unwrap());
            if i % 500 == 499 {
                owner.push(owner_status(&sb));
                peak = (peak.0.max(rss_kib(pid)), peak.1.max(open_fds(pid)));
            }
        }
        let opened = t.elapsed();
        owner.push(owner_status(&sb));
        let slowest = all_served(&owner);
        let closed = conns.iter().filter(|c| closed_by_daemon(c)).count();
        assert!(closed >= IDLE - SLOTS, "the daemon holds {SLOTS} at most: {closed} closed");
        drop(conns);
        assert!(wait_until(Duration::from_secs(10), || open_fds(pid) <= fds0 + 2));
        rounds.push((opened, slowest, closed, peak, rss_kib(pid)));
    }
    let rss2 = rss_kib(pid);
    eprintln!(
        "{IDLE} idle connections, twice: daemon RLIMIT_NOFILE {:?}; RSS {rss0} KiB before; \
         per round (time to open, slowest owner status, closed by the daemon, (peak RSS KiB, \
         peak fds), RSS after): {rounds:?}; fds {fds0} before",
        nofile(&pid.to_string()),
    );
    // Bounded: a little allocator growth in the first round, nothing more in the second.
    assert!(rss2 < rss0 + 8 * 1024, "RSS grew from {rss0} to {rss2} KiB");
    assert!(rss2 < rounds[0].4 + 2 * 1024, "the second round grew RSS again: {rounds:?}");
    for (_, slowest, _, (_, fds), _) in &rounds {
        assert!(*fds <= fds0 + 2 * SLOTS + 16, "descriptors bounded: {fds}");
        assert!(*slowest < Duration::from_secs(2), "the owner answered fast: {slowest:?}");
    }
}

/// A client that sends one byte a second (a request that would take minutes to arrive)
/// delays nobody. IDLE_TIMEOUT (60 s) would close it in the end; that is not waited for
/// here. What matters is shown directly: meanwhile the owner is served at once, and when
/// every slot is taken the trickler, waiting longest on its client, is the one to go, while
/// a slot given back by a client that leaves costs nobody their connection.
#[test]
fn a_client_sending_one_byte_a_second_delays_nobody() {
    let (sb, _daemon) = quiet_daemon();
    let (mut slow, refusal) = hello(&sb);
    assert_eq!(refusal, None);
    let request = frame(&proto::encode(&Request::Status).unwrap());
    let mut owner = Vec::new();
    let mut sent = 0;
    // Three bytes, a second apart: the frame (length prefix first) stays incomplete.
    while sent < 3 {
        slow.write_all(&request[sent..=sent]).unwrap();
        sent += 1;
        let next = Instant::now() + Duration::from_secs(1);
        while Instant::now() < next {
            owner.push(owner_status(&sb));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let slowest = all_served(&owner);

    // Every other slot taken by clients that said hello and then nothing.
    let fillers: Vec<UnixStream> = (1..SLOTS)
        .map(|_| {
            let (s, refusal) = hello(&sb);
            assert_eq!(refusal, None);
            s
        })
        .collect();
    let full = owner_status(&sb);
    assert!(full.is_ok(), "the owner is served with every slot taken: {full:?}");
    assert!(
        wait_until(Duration::from_secs(2), || closed_by_daemon(&slow)),
        "the trickler, waiting longest, made room"
    );
    assert!(slow.write_all(&request[sent..]).is_err() || closed_by_daemon(&slow));
    assert!(fillers.iter().all(|f| !closed_by_daemon(f)), "nobody else was cut");

    // A client that leaves gives its slot back: the next one takes it and cuts nobody.
    let (leaver, _) = hello(&sb);
    drop(leaver);
    std::thread::sleep(Duration::from_millis(100));
    let after = owner_status(&sb);
    assert!(after.is_ok(), "{after:?}");
    assert!(fillers.iter().all(|f| !closed_by_daemon(f)), "a free slot was used");
    eprintln!(
        "one byte a second: {} owner calls while trickling, slowest {slowest:?}; with every \
         slot taken: {full:?}; after a client left: {after:?}",
        owner.len()
    );
}

/// More clients than slots, each sending Status requests back to back for 2 s (at most 300
/// each). They are limited (some are kept waiting, cut or refused), the owner's `presencectl
/// status` keeps answering promptly, and memory comes back down.
#[test]
fn a_flood_of_requests_is_limited_and_the_owner_keeps_being_served() {
    const CLIENTS: usize = 96;
    const EACH: usize = 300;
    const FOR: Duration = Duration::from_secs(2);
    let (sb, daemon) = quiet_daemon();
    let pid = daemon.pid();
    let (rss0, fds0) = (rss_kib(pid), open_fds(pid));
    let (served, refused, cut) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let socket = sb.socket();
    let deadline = Instant::now() + FOR;
    let request = frame(&proto::encode(&Request::Status).unwrap());
    let hello_frame = frame(&proto::encode(&Hello::new("flood")).unwrap());
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (served, refused, cut) = (served.clone(), refused.clone(), cut.clone());
            let (socket, request, hello_frame) =
                (socket.clone(), request.clone(), hello_frame.clone());
            std::thread::spawn(move || {
                let mut conn: Option<UnixStream> = None;
                let mut sent = 0;
                while sent < EACH && Instant::now() < deadline {
                    let s = match conn.as_mut() {
                        Some(s) => s,
                        None => {
                            let mut s = UnixStream::connect(&socket).unwrap();
                            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            let _ = s.write_all(&hello_frame);
                            let ok = read_frame(&mut s)
                                .and_then(|b| proto::decode::<ServerHello>(&b).ok())
                                .is_some_and(|h| h.refusal.is_none());
                            if !ok {
                                refused.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                            conn.insert(s)
                        }
                    };
                    sent += 1;
                    let answered = s.write_all(&request).is_ok()
                        && read_frame(s)
                            .and_then(|b| proto::decode::<Response>(&b).ok())
                            .is_some_and(|r| matches!(r, Response::Status(_)));
                    if answered {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        cut.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            })
        })
        .collect();
    let mut owner = Vec::new();
    let mut peak = (0, 0);
    while Instant::now() < deadline {
        owner.push(owner_status(&sb));
        peak = (peak.0.max(rss_kib(pid)), peak.1.max(open_fds(pid)));
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in threads {
        t.join().unwrap();
    }
    let slowest = all_served(&owner);
    assert!(wait_until(Duration::from_secs(10), || open_fds(pid) <= fds0 + 2));
    let rss1 = rss_kib(pid);
    let (served, refused, cut) = (
        served.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        cut.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {CLIENTS} clients for {FOR:?}: {served} requests served ({}/s), {refused} hellos \
         refused, {cut} connections cut; owner: {} calls, slowest {slowest:?}; RSS {rss0} → \
         peak {} → {rss1} KiB; fds {fds0} → peak {}",
        served as f64 / FOR.as_secs_f64(),
        owner.len(),
        peak.0,
        peak.1
    );
    assert!(served > 0);
    assert!(slowest < Duration::from_secs(2), "the owner answered within 2 s: {slowest:?}");
    assert!(peak.1 <= fds0 + 2 * SLOTS + 16, "descriptors bounded: {}", peak.1);
    assert!(rss1 < rss0 + 8 * 1024, "RSS grew from {rss0} to {rss1} KiB");
}

/// Another uid is refused on its peer credentials before it may hold or take a slot: with
/// every slot held by the owner's idle clients, its connections cut none of them, and it is
/// told why (not "too many connections").
#[test]
fn another_uid_never_takes_a_slot() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("\n!!! SKIPPED another_uid_never_takes_a_slot: needs root to run as nobody\n");
        return;
    }
    let (sb, _daemon) = quiet_daemon();
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(sb.socket(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let fillers: Vec<UnixStream> = (0..SLOTS).map(|_| hello(&sb).0).collect();
    let strangers: Vec<_> = (0..20)
        .map(|_| {
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin("presencectl"))
                .arg("--socket")
                .arg(sb.socket())
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("setpriv (util-linux)")
        })
        .collect();
    for s in strangers {
        let out = s.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("uid 65534 may not use presenced"), "{err}");
    }
    assert!(fillers.iter().all(|f| !closed_by_daemon(f)), "no slot went to another uid");
    let owner = owner_status(&sb);
    assert!(owner.is_ok(), "{owner:?}");
    eprintln!("another uid: 20 refused by uid with all {SLOTS} slots held; owner {owner:?}");
}

/// Tokens by reference only, and never shown: with debug logging, a post, a conversation and
/// a revoked token (401), neither the log nor any `presencectl` output nor the state files
/// contain the token.
#[test]
fn tokens_never_appear_in_logs_outputs_or_state() {
    let masto = Mastodon::start();
    let me = masto.add_account("zq7xblogger", "Blogger");
    let alice = masto.add_remote_account("alice", "other.host", "Alice");
    let token = masto.token_for(&me);
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    let token_file = sb.secret_file("masto.token", &token);
    sb.write_config(&format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\n\n[[account]]\nname = \"masto\"\nkind = \"mastodon\"\nserver = {:?}\ntoken = {{ file = {:?} }}\n",
        server.url,
        masto.url(),
        token_file
    ));
    let mut cmd = sb.daemon_command();
    cmd.env("PRESENCED_LOG", "debug");
    let daemon = sb.start_with(cmd);
    let health = || sb.ctl_json(&["status"])["accounts"][0]["health"].clone();
    assert!(wait_until(Duration::from_secs(10), || health() == "ok"), "{}", sb.log());
    assert!(wait_until(Duration::from_secs(10), || {
        sb.ctl_json(&["status"])["feeds"][0]["baseline_taken"] == true
    }));

    // A post, and a reply to it that becomes a conversation.
    server.set_body(&rss(&blog(1..=4)));
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(wait_until(Duration::from_secs(10), || masto.statuses_of(&me).len() == 1));
    let posted = masto.statuses_of(&me)[0]["id"].as_str().unwrap().to_owned();
    masto.post_as(&alice, "@zq7xblogger nice one", Some(&posted), &[]);
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(
        wait_until(Duration::from_secs(15), || {
            !sb.ctl_json(&["list"]).as_array().unwrap().is_empty()
        }),
        "{}",
        sb.log()
    );

    // The token revoked: the next post is a 401.
    masto.revoke_token(&me);
    server.set_body(&rss(&blog(1..=5)));
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(
        wait_until(Duration::from_secs(15), || {
            health().as_str().is_some_and(|h| h.contains("unauthorised"))
        }),
        "{:#}\n{}",
        sb.ctl_json(&["status"]),
        sb.log()
    );

    let mut seen = vec![("log".to_owned(), sb.log())];
    for args in [
        &["status"][..],
        &["--json", "status"],
        &["posts"],
        &["posts", "--all"],
        &["--json", "posts", "--all"],
        &["list", "--all"],
        &["--json", "list", "--all"],
        &["show", "c1"],
        &["--json", "show", "c1"],
    ] {
        let out = sb.ctl(args);
        seen.push((format!("presencectl {args:?}"), text(&out.stdout) + &text(&out.stderr)));
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", daemon.pid())).unwrap();
    seen.push(("/proc/PID/cmdline".into(), String::from_utf8_lossy(&cmdline).into_owned()));
    for entry in std::fs::read_dir(sb.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            seen.push((path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    assert!(sb.log().contains("DEBUG"), "debug logging was on");
    assert!(sb.log().contains("401") || sb.log().contains("unauthorised"), "{}", sb.log());
    // The emulator's tokens are `emu-<username>-<n>`: the username is not secret, but the
    // token as a whole is, and so is any Authorization header.
    for (what, content) in &seen {
        assert!(!content.contains(&token), "the token is in {what}");
        assert!(!content.contains("Bearer"), "an Authorization header is in {what}");
    }
    let bytes: usize = seen.iter().map(|(_, c)| c.len()).sum();
    eprintln!(
        "token {} chars: absent from {} sources, {bytes} bytes searched",
        token.len(),
        seen.len()
    );
}

/// main.rs sets PR_SET_DUMPABLE to 0 so that a token in memory cannot be read through a core
/// dump or ptrace. The kernel offers no way to read another process's flag directly, so
/// this looks at its effects, with a control: a daemon running as nobody, and a plain
/// `sleep` running as nobody too. The kernel gives a non-dumpable process's /proc files to
/// root, and refuses its `environ` even to its own uid (ptrace access check); for the
/// dumpable `sleep`, both are nobody's.
#[test]
fn the_daemon_is_not_dumpable() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("\n!!! SKIPPED the_daemon_is_not_dumpable: needs root to run as nobody\n");
        return;
    }
    let sb = Sandbox::new();
    sb.write_config("");
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    let nogroup = Some(nix::unistd::Gid::from_raw(NOBODY));
    nix::unistd::chown(sb.path(), nobody, nogroup).unwrap();
    let mut cmd = sb.daemon_command();
    cmd.uid(NOBODY).gid(NOBODY);
    let daemon = sb.start_with(cmd);
    let mut control = Command::new("sleep").arg("30").uid(NOBODY).gid(NOBODY).spawn().unwrap();

    let owner = |pid: u32| std::fs::metadata(format!("/proc/{pid}/environ")).unwrap().uid();
    let read_as_nobody = |pid: u32| {
        Command::new("cat")
            .arg(format!("/proc/{pid}/environ"))
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let daemon_pid = daemon.pid() as u32;
    assert_eq!(proc_field(daemon.pid(), "status", "Uid:"), u64::from(NOBODY), "runs as nobody");
    let (control_owner, control_read) = (owner(control.id()), read_as_nobody(control.id()));
    let (daemon_owner, daemon_read) = (owner(daemon_pid), read_as_nobody(daemon_pid));
    let _ = control.kill();
    let _ = control.wait();
    assert_eq!(control_owner, NOBODY, "control: a dumpable process's /proc files are its own");
    assert!(control_read.status.success(), "control: {}", text(&control_read.stderr));
    assert_eq!(daemon_owner, 0, "presenced's /proc files belong to root: not dumpable");
    assert!(!daemon_read.status.success(), "its environ is closed even to its own uid");
    assert!(
        text(&daemon_read.stderr).contains("Permission denied"),
        "{}",
        text(&daemon_read.stderr)
    );
    eprintln!(
        "dumpable: control sleep /proc owner {control_owner}, environ readable by its uid; \
         presenced /proc owner {daemon_owner}, its uid reading environ: {}",
        text(&daemon_read.stderr).trim()
    );
}
