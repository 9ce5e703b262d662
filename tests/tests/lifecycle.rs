//! The daemon's lifecycle with the real binaries: start, status, signals, sd_notify, socket
//! activation, hostile clients, other users, damaged state.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use presence_e2e::{bin, ctl_at, text, wait_until, NotifySocket, Sandbox};
use presencectl::proto::{self, Hello, Request, Response, ServerHello};

const QUIET: &str = "";

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

fn raw_client(sandbox: &Sandbox) -> UnixStream {
    let s = UnixStream::connect(sandbox.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s
}

#[test]
fn status_answers_and_sigterm_stops_cleanly() {
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let mut daemon = sb.start();
    let out = sb.ctl(&["status"]);
    assert!(out.status.success());
    let shown = text(&out.stdout);
    assert!(shown.contains("presenced 0.1.0"), "{shown}");
    assert!(shown.contains(&sb.state_dir().join("state").display().to_string()), "{shown}");
    let json = sb.ctl_json(&["status"]);
    assert_eq!(json["version"], "0.1.0");
    assert_eq!(json["pid"], daemon.pid());
    assert_eq!(json["feeds"].as_array().map(Vec::len), Some(0));
    assert_eq!(json["queue"]["open"], 0);

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(2)).expect("exits within 2 s");
    assert!(status.success(), "exit {status:?}\n{}", sb.log());
    assert!(!sb.socket().exists(), "the socket file the daemon created is removed");
    // The state is durable after a clean stop.
    assert!(sb.state_dir().join("state").exists());
}

#[test]
fn sigint_also_stops_cleanly() {
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let mut daemon = sb.start();
    daemon.signal(Signal::SIGINT);
    let status = daemon.wait_exit(Duration::from_secs(2)).expect("exits within 2 s");
    assert!(status.success());
}

#[test]
fn unreachable_daemon_exits_69_with_a_hint() {
    let sb = Sandbox::new();
    let out = sb.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(69));
    let err = text(&out.stderr);
    assert!(err.contains("is presenced running? try: systemctl status presenced"), "{err}");
    let usage = sb.ctl(&["no-such-command"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn notify_ready_status_reload_and_stopping() {
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let mut notify = NotifySocket::bind(sb.path());
    let mut cmd = sb.daemon_command();
    cmd.env("NOTIFY_SOCKET", &notify.path);
    let mut daemon = sb.start_with(cmd);
    assert!(notify.wait_for("READY=1", Duration::from_secs(5)), "{:?}", notify.messages);
    let ready = notify.messages.iter().find(|m| m.contains("READY=1")).cloned().unwrap_or_default();
    assert!(ready.contains("STATUS="), "READY=1 comes with a status line: {ready:?}");

    // A broken config on SIGHUP: rejected, logged, the old one kept, still serving.
    std::fs::write(sb.config_path(), "this is = = not toml").unwrap();
    notify.messages.clear();
    daemon.signal(Signal::SIGHUP);
    assert!(notify.wait_for("RELOADING=1", Duration::from_secs(5)), "{:?}", notify.messages);
    let reloading = notify.messages.iter().find(|m| m.contains("RELOADING=1")).cloned().unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    assert!(notify.wait_for("READY=1", Duration::from_secs(5)), "{:?}", notify.messages);
    assert!(sb.ctl(&["status"]).status.success(), "still serving after a bad reload");
    assert!(
        wait_until(Duration::from_secs(5), || sb.log().contains("reload refused")),
        "the bad config is logged: {}",
        sb.log()
    );
    assert!(sb.log().contains("presenced.toml:1:"), "the log names file and line: {}", sb.log());

    daemon.signal(Signal::SIGTERM);
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(5)), "{:?}", notify.messages);
    assert!(daemon.wait_exit(Duration::from_secs(2)).expect("exits").success());
}

#[test]
fn watchdog_pings_come_when_asked_for() {
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let mut notify = NotifySocket::bind(sb.path());
    let mut cmd = sb.daemon_command();
    cmd.env("NOTIFY_SOCKET", &notify.path).env("WATCHDOG_USEC", "400000");
    let _daemon = sb.start_with(cmd);
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(3)), "{:?}", notify.messages);
}

#[test]
fn socket_activation_through_systemd_socket_activate() {
    let sb = Sandbox::new();
    // The configured socket path is deliberately elsewhere: the passed socket must be used.
    sb.write_config(QUIET);
    let activated = sb.path().join("activated.sock");
    let mut notify = NotifySocket::bind(sb.path());
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&activated)
        .arg("--fdname=control")
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify.path.display()))
        .arg(bin("presenced"))
        .arg("--config")
        .arg(sb.config_path())
        .stderr(std::fs::File::create(sb.log_path()).unwrap())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd) must be installed");
    assert!(wait_until(Duration::from_secs(5), || activated.exists()));
    // The first connection starts the daemon (lazy activation), as a .socket unit does.
    let out = ctl_at(&activated, &["--json", "status"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), sb.log());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pid"], child.id(), "the activated process answers");
    assert!(notify.wait_for("READY=1", Duration::from_secs(5)));
    assert!(!sb.socket().exists(), "the daemon did not bind its own socket");
    assert!(sb.log().contains("using the socket passed by systemd"), "{}", sb.log());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(activated.exists(), "a passed socket belongs to systemd and is not removed");
}

#[test]
fn hostile_frames_are_refused_while_others_keep_working() {
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let _daemon = sb.start();

    // A well-behaved client holds its connection open throughout.
    let mut good = raw_client(&sb);
    good.write_all(&frame(&proto::encode(&Hello::new("test")).unwrap())).unwrap();
    let hello: ServerHello = proto::decode(&read_frame(&mut good).unwrap()).unwrap();
    assert_eq!(hello.refusal, None);

    // Garbage instead of a hello.
    let mut garbage = raw_client(&sb);
    garbage.write_all(&frame(b"GET / HTTP/1.1\r\n\r\n")).unwrap();
    let reply: ServerHello = proto::decode(&read_frame(&mut garbage).unwrap()).unwrap();
    assert!(reply.refusal.unwrap().contains("expected a presencectl hello"));
    assert!(read_frame(&mut garbage).is_none(), "connection closed");

    // A 4 GiB length prefix: refused unread, connection closed.
    let mut huge = raw_client(&sb);
    huge.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    let reply = read_frame(&mut huge);
    if let Some(body) = reply {
        let hello: ServerHello = proto::decode(&body).unwrap();
        assert!(hello.refusal.is_some());
    }
    assert!(read_frame(&mut huge).is_none(), "connection closed");

    // A wrong protocol version: the refusal names both versions.
    let mut old = raw_client(&sb);
    let mut h = Hello::new("presencectl 9.9");
    h.version = 99;
    old.write_all(&frame(&proto::encode(&h).unwrap())).unwrap();
    let reply: ServerHello = proto::decode(&read_frame(&mut old).unwrap()).unwrap();
    let why = reply.refusal.expect("refused");
    assert!(why.contains("99") && why.contains(&proto::PROTOCOL_VERSION.to_string()), "{why}");

    // Garbage after a good hello: an error reply, then only that connection closes.
    let mut bad_request = raw_client(&sb);
    bad_request.write_all(&frame(&proto::encode(&Hello::new("t")).unwrap())).unwrap();
    read_frame(&mut bad_request).unwrap();
    bad_request.write_all(&frame(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0])).unwrap();
    let reply: Response = proto::decode(&read_frame(&mut bad_request).unwrap()).unwrap();
    assert!(matches!(reply, Response::Error(_)), "{reply:?}");
    assert!(read_frame(&mut bad_request).is_none());

    // The good client still gets answers.
    good.write_all(&frame(&proto::encode(&Request::Status).unwrap())).unwrap();
    let reply: Response = proto::decode(&read_frame(&mut good).unwrap()).unwrap();
    assert!(matches!(reply, Response::Status(_)), "{reply:?}");
    assert!(sb.ctl(&["status"]).status.success());
}

#[test]
fn another_uid_is_refused_by_peer_credentials() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to run a client as nobody");
        return;
    }
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let _daemon = sb.start();
    // Open the file permissions wide so that only the peer-credential check stands between
    // nobody and the daemon.
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(sb.socket(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("presencectl"))
        .arg("--socket")
        .arg(sb.socket())
        .arg("status")
        .output()
        .expect("setpriv (util-linux)");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused, exit 1: {err}");
    assert!(err.contains("uid 65534 may not use presenced"), "{err}");
    assert!(sb.ctl(&["status"]).status.success(), "the owner still gets in");
}

#[test]
fn a_live_socket_is_not_stolen_and_a_non_socket_is_not_replaced() {
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let _first = sb.start();
    // A second daemon on another state dir but the same socket path must refuse to start.
    let other_state = sb.path().join("other-state");
    let text_cfg = format!(
        "state_dir = {:?}\nsocket = {:?}\n",
        other_state.display().to_string(),
        sb.socket().display().to_string()
    );
    let cfg = sb.path().join("second.toml");
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = Command::new(bin("presenced")).arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("another presenced is listening"), "{}", text(&out.stderr));

    let plain = sb.path().join("plain-file");
    std::fs::write(&plain, "keep me").unwrap();
    let cfg2 = sb.path().join("third.toml");
    std::fs::write(
        &cfg2,
        format!(
            "state_dir = {:?}\nsocket = {:?}\n",
            other_state.display().to_string(),
            plain.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(bin("presenced")).arg("--config").arg(&cfg2).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not a socket"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let mut first = sb.start();
    first.kill9(); // leaves the socket file behind, nobody listening
    assert!(sb.socket().exists());
    let _second = sb.start();
    assert!(sb.ctl(&["status"]).status.success());
}

fn damaged_state_refuses_to_start(damage: impl Fn(&mut Vec<u8>), expect: &str) {
    let sb = Sandbox::new();
    sb.write_config(QUIET);
    let mut daemon = sb.start();
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(2)).expect("stops");
    let path = sb.state_dir().join("state");
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let out = sb.daemon_command().stderr(std::process::Stdio::piped()).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "must not start on a damaged state");
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    assert!(err.contains(expect), "says what is wrong ({expect}): {err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file is untouched");
}

#[test]
fn corrupt_state_is_refused() {
    damaged_state_refuses_to_start(|b| b[20] ^= 0xff, "checksum mismatch");
}

#[test]
fn truncated_state_is_refused() {
    damaged_state_refuses_to_start(|b| b.truncate(b.len() / 2), "truncated");
}

#[test]
fn newer_state_is_refused() {
    damaged_state_refuses_to_start(|b| b[5] = 200, "written by a newer presenced");
}

#[test]
fn check_config_reports_file_and_line() {
    let sb = Sandbox::new();
    sb.write_config("[[account]]\nname = \"m\"\nkind = \"mastodon\"\n");
    let out = Command::new(bin("presenced"))
        .arg("--check-config")
        .arg("--config")
        .arg(sb.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let want = format!("{}:3: account \"m\": server is required", sb.config_path().display());
    assert!(err.contains(&want), "{err}");

    sb.write_config("[[account]]\nname = \"dry\"\nkind = \"outbox\"\n");
    let out = Command::new(bin("presenced"))
        .arg("--check-config")
        .env("PRESENCED_CONFIG", sb.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}
