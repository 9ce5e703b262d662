//! Disk faults with the real binaries: the state directory full (ENOSPC), read-only (EROFS),
//! and the state file replaced by a truncated copy while the daemon runs.
//!
//! The promise under test (core.rs `settle`): nothing is posted unless the state saying so
//! is on disk. While the state cannot be written the daemon posts nothing, says why in
//! `presencectl status` (`state_error`) and in its log, retries the save every 5 s, and
//! resumes by itself once the disk is back, announcing each article exactly once.
//!
//! The faults are real: a 1 MiB tmpfs filled to the last page, a read-only bind mount over
//! the state directory. Both need root (mount(2)); without root those tests say SKIPPED
//! loudly and pass. Each mount is undone when its guard drops, even when the test fails.
//! The truncated copy needs nothing special: the daemon rewrites the file whole from memory
//! at its next save, and never keeps a file it did not write as `state.prev` (store.rs).

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use presence_e2e::feed_server::{blog, rss, FeedServer};
use presence_e2e::{text, wait_until, Sandbox};
use serde_json::Value;

fn config(server: &FeedServer) -> String {
    format!(
        "[[feed]]\nurl = {:?}\ninterval = \"1h\"\n\n[[account]]\nname = \"dry\"\nkind = \"outbox\"\n",
        server.url
    )
}

fn is_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("\n!!!!!!!!!!\n!!! SKIPPED {test}: needs root to mount a filesystem\n!!!!!!!!!!\n");
    false
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out.stderr));
}

/// A mount over `path`, undone on drop (lazily if something still holds it).
struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` bytes: a disk that fills up.
    fn tmpfs(path: &Path, size: usize) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        let opts = format!("size={size},mode=0700");
        run("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", path.to_str().unwrap()]);
        Mount(path.to_owned())
    }

    /// `path` again, read-only. Only this mount is read-only: the daemon's open lock file
    /// lives on the one underneath, which is why a remount of the whole filesystem would be
    /// refused as busy, and why chmod would not do (root ignores modes).
    fn read_only_over(path: &Path) -> Mount {
        let p = path.to_str().unwrap();
        run("mount", &["--bind", p, p]);
        let guard = Mount(path.to_owned());
        run("mount", &["-o", "remount,bind,ro", p]);
        guard
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let p = self.0.to_str().unwrap();
        let ok = Command::new("umount").arg(p).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

fn status(sb: &Sandbox) -> Value {
    sb.ctl_json(&["status"])
}

fn urls(sb: &Sandbox) -> Vec<String> {
    sb.outbox_lines().iter().map(|l| l["article_url"].as_str().unwrap().to_owned()).collect()
}

/// Starts the daemon on `server` with the outbox account and waits for the baseline.
fn start(sb: &Sandbox, server: &FeedServer) -> presence_e2e::Daemon {
    sb.write_config(&config(server));
    let daemon = sb.start();
    assert!(
        wait_until(Duration::from_secs(10), || status(sb)["feeds"][0]["baseline_taken"] == true),
        "baseline: {}",
        sb.log()
    );
    daemon
}

/// Publishes article 4, polls, and waits until the daemon has taken in the fetch.
fn publish_and_poll(sb: &Sandbox, server: &FeedServer) {
    server.set_body(&rss(&blog(1..=4)));
    let before = server.requests();
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(wait_until(Duration::from_secs(10), || server.requests() > before));
    assert!(
        wait_until(Duration::from_secs(10), || status(sb)["feeds"][0]["articles"] == 4),
        "the new article was taken in: {:#}",
        status(sb)
    );
}

/// While `fault` holds: the daemon says why (status, human status, log) and posts nothing.
/// Returns how long the daemon took to notice.
fn paused_and_says_why(sb: &Sandbox, errno_text: &str) -> Duration {
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || status(sb)["state_error"].is_string()),
        "state_error set: {:#}\n{}",
        status(sb),
        sb.log()
    );
    let noticed = t.elapsed();
    let why = status(sb)["state_error"].as_str().unwrap().to_owned();
    assert!(why.contains(errno_text), "says what failed ({errno_text}): {why}");
    assert!(why.contains(&sb.state_dir().display().to_string()), "names the path: {why}");
    let human = text(&sb.ctl(&["status"]).stdout);
    assert!(human.contains("NOT DURABLE, posting paused"), "{human}");
    assert!(sb.log().contains("cannot write state, posting paused"), "{}", sb.log());
    // Longer than one retry period (5 s) would be the real proof; two retries of the poll
    // and a second of waiting show that nothing goes out meanwhile.
    for _ in 0..2 {
        assert!(sb.ctl(&["poll"]).status.success());
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(sb.outbox_lines().is_empty(), "nothing posted without durability: {:?}", urls(sb));
    // Tried only if its intent fitted in the journal's room written ahead, and then failed
    // on the same disk.
    for line in sb.log().lines().filter(|l| l.contains("announcement failed")) {
        assert!(line.contains(errno_text), "{line}");
    }
    let posts = sb.ctl_json(&["posts", "--all"]);
    let fourth = posts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["url"] == "https://blog.test/4/")
        .expect("article 4 known")
        .clone();
    let state = &fourth["accounts"][0]["state"];
    assert!(state == "pending" || state == "in_flight", "not posted: {fourth:#}");
    assert!(status(sb)["state_error"].is_string(), "still paused");
    noticed
}

/// After the fault is gone: resumes by itself, article 4 exactly once, and a restart
/// (which reads the state file) finds everything and announces nothing again.
/// Returns how long recovery took.
fn resumes_exactly_once(
    sb: &Sandbox,
    server: &FeedServer,
    daemon: &mut presence_e2e::Daemon,
) -> Duration {
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || sb.outbox_lines().len() == 1),
        "posting resumed by itself: {:#}\n{}",
        status(sb),
        sb.log()
    );
    let recovered = t.elapsed();
    assert!(wait_until(Duration::from_secs(5), || status(sb)["state_error"].is_null()));
    assert!(sb.log().contains("state is writable again"), "{}", sb.log());
    assert!(!text(&sb.ctl(&["status"]).stdout).contains("NOT DURABLE"));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).expect("stops").success(), "{}", sb.log());
    *daemon = sb.start();
    let before = server.requests();
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(wait_until(Duration::from_secs(10), || server.requests() > before));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(urls(sb), ["https://blog.test/4/"], "exactly once, across the fault and a restart");
    recovered
}

#[test]
fn a_full_state_dir_pauses_posting_until_space_returns() {
    if !is_root("a_full_state_dir_pauses_posting_until_space_returns") {
        return;
    }
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    let _disk = Mount::tmpfs(&sb.state_dir(), 1 << 20);
    let mut daemon = start(&sb, &server);

    // Fill the disk to the last page.
    let filler = sb.state_dir().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    while filled < 4 << 20 {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    drop(f);
    assert!(filled < 4 << 20, "the tmpfs filled up");

    publish_and_poll(&sb, &server);
    let noticed = paused_and_says_why(&sb, "No space left on device");

    std::fs::remove_file(&filler).unwrap();
    let recovered = resumes_exactly_once(&sb, &server, &mut daemon);
    eprintln!("ENOSPC: filled {filled} bytes; noticed in {noticed:?}; resumed {recovered:?} after space returned");
}

#[test]
fn a_read_only_state_dir_pauses_posting_until_writable() {
    if !is_root("a_read_only_state_dir_pauses_posting_until_writable") {
        return;
    }
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    let mut daemon = start(&sb, &server);

    let read_only = Mount::read_only_over(&sb.state_dir());
    assert!(std::fs::File::create(sb.state_dir().join("probe")).is_err(), "really read-only");
    publish_and_poll(&sb, &server);
    let noticed = paused_and_says_why(&sb, "Read-only file system");

    drop(read_only);
    let recovered = resumes_exactly_once(&sb, &server, &mut daemon);
    eprintln!("EROFS: noticed in {noticed:?}; resumed {recovered:?} after the remount");
}

/// The state file replaced by a truncated copy behind the daemon's back. The in-memory state
/// is the truth: the next save (there is one before every post: a journal append checks the
/// file first) writes a whole file again, and the article goes out once. A daemon killed before that save refuses to start on the
/// truncated file, naming it, and `state.prev` is the good copy a human recovers from.
#[test]
fn a_state_file_truncated_while_running_is_rewritten_whole() {
    let server = FeedServer::start(&rss(&blog(1..=3)));
    let sb = Sandbox::new();
    let mut daemon = start(&sb, &server);
    // A clean stop folds the journaled baseline into the state file: a second save, so that
    // there is a state.prev.
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).expect("stops").success());
    let mut daemon = sb.start();
    let path = sb.state_dir().join("state");
    let prev = sb.state_dir().join("state.prev");
    assert!(prev.exists());
    let truncate = || {
        let bytes = std::fs::read(&path).unwrap();
        let cut = sb.state_dir().join("state.cut");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::rename(&cut, &path).unwrap();
    };
    let decodes = |p: &Path| presenced::store::decode(&std::fs::read(p).unwrap(), p);

    truncate();
    assert!(decodes(&path).is_err());
    // Any change makes a save: a feed that changed (same articles, a new ETag) will do. (An
    // unchanged feed answered 304 changes nothing worth a write.)
    server.set_body(&rss(&blog(1..=3)));
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(
        wait_until(Duration::from_secs(10), || decodes(&path).is_ok()),
        "rewritten whole from memory: {}",
        sb.log()
    );
    assert!(status(&sb)["state_error"].is_null());
    // A file presenced did not write never becomes the "previous good" one.
    assert!(decodes(&prev).is_ok(), "state.prev is still good: {:?}", decodes(&prev).err());
    assert!(sb.log().contains("changed or replaced while presenced was running"), "{}", sb.log());
    publish_and_poll(&sb, &server);
    assert!(wait_until(Duration::from_secs(10), || sb.outbox_lines().len() == 1), "{}", sb.log());
    assert!(status(&sb)["state_error"].is_null());
    // The state file is whole again (above); with its journal, it records the post.
    assert!(
        wait_until(Duration::from_secs(5), || {
            presenced::store::peek(&sb.state_dir()).is_ok_and(|s| {
                let Some(s) = s else { return false };
                s.articles.values().any(|a| {
                    a.link == "https://blog.test/4/"
                        && matches!(
                            a.announcements["dry"].status,
                            presenced::state::AnnStatus::Posted { .. }
                        )
                })
            })
        }),
        "the state file is whole again and, with its journal, records the post"
    );
    assert!(decodes(&prev).is_ok(), "state.prev is a good file: {:?}", decodes(&prev).err());

    // Truncated again, and killed before any save: the restart refuses, naming the file.
    truncate();
    daemon.kill9();
    let out = sb.daemon_command().stderr(std::process::Stdio::piped()).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "must not start on a truncated state");
    assert!(err.contains(&path.display().to_string()) && err.contains("truncated"), "{err}");
    // The human's way back: state.prev.
    std::fs::copy(&prev, &path).unwrap();
    let _daemon = sb.start();
    let before = server.requests();
    assert!(sb.ctl(&["poll"]).status.success());
    assert!(wait_until(Duration::from_secs(10), || server.requests() > before));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(urls(&sb), ["https://blog.test/4/"], "exactly once");
}
