//! The project's systemd units (`systemd/`), checked two ways.
//!
//! Tier 1, always: `systemd-analyze verify` of every unit with no output at all, the offline
//! exposure score at the goal (≤ 1.2 with Internet access kept), the example configuration,
//! and the paths the units and the binaries must agree on. Socket activation and sd_notify
//! without systemd are in `lifecycle.rs`.
//!
//! Tier 2: a real systemd 252 as PID 1 in `systemd-nspawn` (`tests/systemd/nspawn.sh`, which
//! runs `tests/systemd/incontainer.sh` inside) with the real binaries and the units installed
//! as the Debian package installs them. It needs root and a rootfs from
//! `tests/systemd/build-rootfs.sh`; `tests/run` provides both, or says loudly why it cannot.

// Test code writes fixtures directly and fails loudly: the daemon's rules do not apply here.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use presence_e2e::{bin, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

const SYSTEM_UNITS: &[&str] =
    &["presenced.service", "presenced.socket", "presenced@.service", "presenced@.socket"];
const USER_UNITS: &[&str] = &["presenced.service", "presenced.socket"];

/// Written straight to stderr, so that libtest's capture cannot hide it.
fn loud(message: &str) {
    let line = "!".repeat(78);
    let _ = writeln!(std::io::stderr(), "\n{line}\n{message}\n{line}");
}

fn analyze() -> Command {
    let probe = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: install Debian's `systemd` package (tests/run does)"
    );
    Command::new("systemd-analyze")
}

/// The units as shipped, in a scratch directory, with `/usr/bin/presenced` pointing at the
/// binary just built (verify insists that ExecStart= exists). Nothing else is changed.
struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    fn new() -> Staged {
        let dir = tempfile::tempdir().unwrap();
        let presenced = bin("presenced").display().to_string();
        std::fs::create_dir(dir.path().join("user")).unwrap();
        let units = SYSTEM_UNITS
            .iter()
            .map(|u| u.to_string())
            .chain(USER_UNITS.iter().map(|u| format!("user/{u}")));
        for unit in units {
            let shipped = std::fs::read_to_string(repo().join("systemd").join(&unit)).unwrap();
            std::fs::write(
                dir.path().join(&unit),
                shipped.replace("/usr/bin/presenced", &presenced),
            )
            .unwrap();
        }
        // The user manager's verify wants a runtime directory.
        std::fs::create_dir(dir.path().join("xdg")).unwrap();
        Staged { dir }
    }

    fn path(&self, unit: &str) -> PathBuf {
        self.dir.path().join(unit)
    }
}

fn unit_text(unit: &str) -> String {
    std::fs::read_to_string(repo().join("systemd").join(unit)).unwrap()
}

/// Every value of `key=` in a unit file, in order.
fn values(unit_text: &str, key: &str) -> Vec<String> {
    unit_text
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .collect()
}

#[test]
fn every_unit_verifies_with_no_output() {
    let staged = Staged::new();
    let mut system = analyze();
    system.current_dir(staged.dir.path()).args(["verify", "--man=no"]);
    for unit in SYSTEM_UNITS {
        system.arg(staged.path(unit));
    }
    let out = system.output().unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.is_empty(),
        "systemd-analyze verify {SYSTEM_UNITS:?}: {:?}\n{said}",
        out.status
    );

    let mut user = analyze();
    user.current_dir(staged.dir.path())
        .env("XDG_RUNTIME_DIR", staged.path("xdg"))
        .args(["--user", "verify", "--man=no"]);
    for unit in USER_UNITS {
        user.arg(staged.path(&format!("user/{unit}")));
    }
    let out = user.output().unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.is_empty(),
        "systemd-analyze --user verify user/{USER_UNITS:?}: {:?}\n{said}",
        out.status
    );
}

/// `systemd-analyze security --offline=true`: the goal is an exposure of 1.2 or less while
/// the service keeps Internet access (feeds and social networks are anywhere).
#[test]
fn exposure_is_at_most_1_2_with_internet_access() {
    let staged = Staged::new();
    for unit in ["presenced.service", "presenced@.service"] {
        let shipped = unit_text(unit);
        let families = values(&shipped, "RestrictAddressFamilies").join(" ");
        assert!(
            families.contains("AF_INET") && families.contains("AF_INET6"),
            "{unit} must keep Internet access: RestrictAddressFamilies={families}"
        );
        for key in ["PrivateNetwork", "IPAddressDeny"] {
            assert!(values(&shipped, key).is_empty(), "{unit}: {key}= cuts the Internet");
        }
        // --threshold is on the 0..100 scale: an exposure shown as 1.2 is 12.
        let out = analyze()
            .current_dir(staged.dir.path())
            .args(["security", "--offline=true", "--threshold=12", "--no-pager"])
            .arg(staged.path(unit))
            .output()
            .unwrap();
        let report = text(&out.stdout);
        let overall =
            report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| {
                panic!("no overall score for {unit}:\n{report}{}", text(&out.stderr))
            });
        let score: f64 = overall
            .rsplit(':')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the score in {overall:?}"));
        assert!(
            out.status.success() && score <= 1.2,
            "{unit}: exposure {score} (goal ≤ 1.2), {:?}\n{report}",
            out.status
        );
    }
}

#[test]
fn the_example_configuration_is_valid() {
    let out = Command::new(bin("presenced"))
        .arg("--config")
        .arg(repo().join("systemd/presenced.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd/presenced.toml: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The sockets are where presencectl looks by default, the group is the one sysusers
/// creates, and every service runs the binary and checks its configuration first.
#[test]
fn units_agree_with_the_binaries_and_each_other() {
    let system_socket = presencectl::proto::default_socket_path(true, None);
    assert_eq!(
        values(&unit_text("presenced.socket"), "ListenStream"),
        [system_socket.display().to_string()]
    );
    // A user whose own daemon's socket exists is sent there by presencectl.
    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir(xdg.path().join("presenced")).unwrap();
    std::fs::write(xdg.path().join("presenced/control.sock"), "").unwrap();
    let user_socket = presencectl::proto::default_socket_path(false, Some(xdg.path()));
    let user_listen = values(&unit_text("user/presenced.socket"), "ListenStream");
    assert_eq!(user_listen, ["%t/presenced/control.sock"]);
    assert_eq!(user_socket, xdg.path().join("presenced/control.sock"));

    let sysusers = std::fs::read_to_string(repo().join("systemd/presenced.sysusers")).unwrap();
    let group = sysusers
        .lines()
        .find_map(|l| l.strip_prefix("g "))
        .and_then(|l| l.split_whitespace().next())
        .expect("presenced.sysusers creates a group");
    for socket in ["presenced.socket", "presenced@.socket"] {
        assert_eq!(values(&unit_text(socket), "SocketGroup"), [group], "{socket}");
        assert_eq!(values(&unit_text(socket), "SocketMode"), ["0660"], "{socket}");
    }
    let example = std::fs::read_to_string(repo().join("systemd/presenced.toml")).unwrap();
    assert!(
        example.contains(&format!("control_group = \"{group}\"")),
        "the example config lets group {group} in"
    );

    for service in ["presenced.service", "presenced@.service", "user/presenced.service"] {
        let unit = unit_text(service);
        assert_eq!(values(&unit, "Type"), ["notify"], "{service}");
        assert_eq!(values(&unit, "ExecStart"), ["/usr/bin/presenced"], "{service}");
        assert_eq!(
            values(&unit, "ExecStartPre"),
            ["/usr/bin/presenced --check-config"],
            "{service}"
        );
        assert!(
            values(&unit, "ExecReload").contains(&"/bin/kill -HUP $MAINPID".to_owned()),
            "{service}"
        );
        assert!(!values(&unit, "WatchdogSec").is_empty(), "{service}");
    }
}

/// Where the root file system for tier 2 is, or why there is none (loudly, never silently).
fn nspawn_rootfs() -> Result<PathBuf, String> {
    if let Ok(reason) = std::env::var("PRESENCE_NSPAWN_SKIP") {
        if !reason.is_empty() {
            return Err(reason);
        }
    }
    let rootfs = std::env::var_os("PRESENCE_NSPAWN_ROOTFS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/presence-tests/rootfs"));
    if !nix::unistd::geteuid().is_root() {
        return Err("not root: systemd-nspawn needs root (tests/run as root runs it)".into());
    }
    if !rootfs.join(".presence-rootfs").exists() {
        return Err(format!(
            "no rootfs at {}: tests/run builds it (tests/systemd/build-rootfs.sh DIR)",
            rootfs.display()
        ));
    }
    Ok(rootfs)
}

/// Runs `tests/systemd/nspawn.sh ROOTFS WHAT` and returns its PASS lines, failing on any
/// FAIL line or a non-zero exit.
fn run_nspawn(rootfs: &Path, what: &Path, results: &str) -> (Vec<String>, String) {
    let results = Path::new(env!("CARGO_TARGET_TMPDIR")).join(results);
    let _ = std::fs::remove_dir_all(&results);
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(repo().join("tests/systemd/nspawn.sh"))
        .arg(rootfs)
        .arg(what)
        .arg(&results)
        .output()
        .unwrap();
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let passed: Vec<String> =
        log.lines().filter(|l| l.starts_with("PASS: ")).map(str::to_owned).collect();
    let failed: Vec<&str> = log.lines().filter(|l| l.starts_with("FAIL: ")).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "nspawn suite: {:?}, failed:\n{}\n\nwhole log (journal in {}):\n{log}",
        out.status,
        failed.join("\n"),
        results.display()
    );
    let _ = writeln!(
        std::io::stderr(),
        "systemd in nspawn ({}): {} checks passed in {:.0} s (log and journal in {})",
        what.display(),
        passed.len(),
        started.elapsed().as_secs_f64(),
        results.display()
    );
    (passed, log)
}

#[test]
fn under_a_real_systemd_in_nspawn() {
    let rootfs = match nspawn_rootfs() {
        Ok(r) => r,
        Err(why) => {
            loud(&format!(
                "SKIPPED: the systemd tests under a real systemd (nspawn) did not run:\n{why}"
            ));
            // tests/run always says why; without a reason, CI must not pass silently.
            assert!(
                std::env::var_os("CI").is_none()
                    || std::env::var("PRESENCE_NSPAWN_SKIP").is_ok_and(|r| !r.is_empty()),
                "CI without the nspawn tests and without a reason: {why}"
            );
            return;
        }
    };
    let bin_dir = bin("presenced").parent().unwrap().to_owned();
    let (passed, log) = run_nspawn(&rootfs, &bin_dir, "nspawn-results");
    // The checks the issue asks for, each by the words of its PASS line.
    for must in [
        "the first 'presencectl status' is answered",
        "presenced.service is active after the first connection",
        "systemctl status: active (running) with the daemon's Status line",
        "journalctl -u presenced ACCOUNT=dry-run ARTICLE_URL=",
        "the state was loaded again",
        "its credential was loaded from $CREDENTIALS_DIRECTORY",
        "neither secret appears in the journal",
        "the reloaded configuration is in use",
        "frozen daemon (SIGSTOP) -> watchdog -> restarted",
        "presencectl poll sent right after kill -9 is answered",
        "the socket unit was never stopped",
        "every (article, account) exactly once after all the restarts",
        "PID 1 got STOPPING=1",
        "stopped cleanly: Result=success",
        "alice (group presence) can run presencectl status",
        "bob (not in presence) cannot",
        "presenced@blog2 announced into its own outbox",
        "carol's 'presencectl status' (default socket) starts her presenced",
    ] {
        assert!(passed.iter().any(|l| l.contains(must)), "no PASS line with {must:?}:\n{log}");
    }
}

/// The same suite with the Debian package installed by dpkg (and purged at the end), when
/// `PRESENCE_DEB` names one (`systemd/debian/build-deb.sh` builds it; CI does not, to save
/// the release build).
#[test]
fn the_debian_package_under_a_real_systemd() {
    let Some(deb) = std::env::var_os("PRESENCE_DEB").filter(|v| !v.is_empty()) else {
        return;
    };
    let rootfs = nspawn_rootfs().unwrap_or_else(|why| panic!("PRESENCE_DEB is set, but {why}"));
    let (passed, log) = run_nspawn(&rootfs, Path::new(&deb), "nspawn-deb-results");
    for must in ["dpkg -i presence.deb", "dpkg --purge presence", "units, binaries and state gone"]
    {
        assert!(passed.iter().any(|l| l.contains(must)), "no PASS line with {must:?}:\n{log}");
    }
}
