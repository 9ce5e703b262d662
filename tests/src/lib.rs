//! Helpers for the end-to-end tests: run the real `presenced` and `presencectl` binaries on a
//! temporary config, state directory and socket; capture sd_notify messages; serve feeds
//! over real HTTP; wait for conditions instead of sleeping.
//!
//! The binaries come from the same target directory as the test executable (`tests/run`
//! builds them first).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub mod bsky;
pub mod facebook;
pub mod fault_proxy;
pub mod fault_queue;
pub mod feed_server;
pub mod mastodon;
pub mod measure;
pub mod x;

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (tests/run does)",
        path.display()
    );
    path
}

/// Polls `check` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A datagram socket standing in for systemd's `$NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct NotifySocket {
    pub path: PathBuf,
    socket: UnixDatagram,
    pub messages: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        NotifySocket { path, socket, messages: Vec::new() }
    }

    /// Reads until a message containing `needle` arrives (true) or `limit` passes (false).
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        if self.messages.iter().any(|m| m.contains(needle)) {
            return true;
        }
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.contains(needle);
                self.messages.push(msg);
                if hit {
                    return true;
                }
            }
        }
        false
    }
}

/// A temporary home for one daemon: config, state directory, socket.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("control.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("presenced.toml")
    }

    /// Stores `data` as the account's session data in the state, where a login leaves it
    /// (the daemon must not be running).
    pub fn seed_account_data(
        &self,
        account: &str,
        data: &std::collections::BTreeMap<String, String>,
    ) {
        let store = presenced::store::Store::open(&self.state_dir()).expect("state dir");
        let mut state = store.load().expect("state").unwrap_or_default();
        state.accounts.entry(account.to_owned()).or_default().data = data.clone();
        store.save(&state).expect("state saved");
    }

    /// How many articles have an announcement whose status `which` picks, in the state on
    /// disk (state file and journal, read without the daemon's lock).
    pub fn articles_on_disk(&self, which: impl Fn(&presenced::state::AnnStatus) -> bool) -> usize {
        let state =
            presenced::store::peek(&self.state_dir()).expect("state").expect("a state file");
        state
            .articles
            .values()
            .filter(|a| a.announcements.values().any(|x| which(&x.status)))
            .count()
    }

    /// What identifies each of the files `state` and `state.journal` as last written (inode,
    /// mtime, length; `None` for a missing file): unchanged stamps mean nothing was written.
    pub fn state_files(&self) -> [Option<(u64, i64, i64, u64)>; 2] {
        use std::os::unix::fs::MetadataExt;
        ["state", "state.journal"].map(|f| {
            std::fs::metadata(self.state_dir().join(f))
                .ok()
                .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
        })
    }

    /// Writes a secret (a token, a password) into the sandbox as a file of mode 0600, as
    /// presenced requires, and returns its path as a config names it.
    pub fn secret_file(&self, name: &str, secret: &str) -> String {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("creates the secret file");
        f.write_all(secret.as_bytes()).expect("writes the secret");
        path.display().to_string()
    }

    /// Writes the config: state dir and socket in the sandbox, then `body` (feeds, accounts).
    pub fn write_config(&self, body: &str) {
        let text = format!(
            "state_dir = {:?}\nsocket = {:?}\n{body}\n",
            self.state_dir().display().to_string(),
            self.socket().display().to_string()
        );
        let mut f = std::fs::File::create(self.config_path()).expect("config");
        f.write_all(text.as_bytes()).expect("write config");
    }

    /// Where the daemons of this sandbox log (appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.path().join("presenced.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file")
    }

    /// The complete lines of the outbox. A SIGKILL during the append can leave a torn last
    /// line (a write that spans a page boundary stops between pages); that is not a post, and
    /// the daemon cuts it off when it next starts.
    pub fn outbox_lines(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.state_dir().join("outbox.jsonl")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().map(|l| serde_json::from_str(l).expect("outbox line is JSON")).collect()
    }

    /// The daemon command for this sandbox, not yet started.
    pub fn daemon_command(&self) -> Command {
        self.daemon_command_for(&bin("presenced"))
    }

    /// The same with another build of the daemon (the benchmarks use the release one).
    pub fn daemon_command_for(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--config")
            .arg(self.config_path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .env("PRESENCED_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file());
        cmd
    }

    /// Starts the daemon and waits until `presencectl status` answers.
    pub fn start(&self) -> Daemon {
        self.start_with(self.daemon_command())
    }

    pub fn start_with(&self, cmd: Command) -> Daemon {
        self.start_on(cmd, self.socket())
    }

    /// Starts the daemon without waiting for it (for killing it at a random moment).
    pub fn spawn(&self) -> Daemon {
        let child = self.daemon_command().spawn().expect("spawn presenced");
        Daemon { child: Some(child), socket: self.socket() }
    }

    /// Starts `cmd` and waits until it answers on `socket`.
    pub fn start_on(&self, mut cmd: Command, socket: PathBuf) -> Daemon {
        let child = cmd.spawn().expect("spawn presenced");
        let daemon = Daemon { child: Some(child), socket: socket.clone() };
        assert!(
            wait_until(Duration::from_secs(10), || ctl_at(&socket, &["status"]).status.success()),
            "presenced did not answer on {}",
            socket.display()
        );
        daemon
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_at(&self.socket(), args)
    }

    /// `presencectl --json ARGS`, which must succeed, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        assert!(out.status.success(), "presencectl {args:?} failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("presencectl --json prints JSON")
    }
}

pub fn ctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("presencectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("PRESENCECTL_SOCKET")
        .output()
        .expect("run presencectl")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running daemon; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Waits for the exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                self.child = Some(child);
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
