//! The configuration file: where it is, what it says, and whether it makes sense.
//!
//! Every error names the file and, where the problem has a place in it, the line:
//! `/etc/presenced/presenced.toml:12: account "masto": server is required`.
//! Secrets are never inline: an account names a systemd credential or a 0600 file, and the
//! secret itself is read when the account starts (see [`SecretSource::load`]).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The process environment that decides default paths; a struct so that tests can vary it.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub presenced_config: Option<PathBuf>,
    pub configuration_directory: Option<PathBuf>,
    pub state_directory: Option<PathBuf>,
    pub runtime_directory: Option<PathBuf>,
    pub credentials_directory: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub is_root: bool,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        // systemd may pass several directories separated by ':'; the first is ours.
        let first = |name: &str| {
            var(name).map(|p| {
                let s = p.to_string_lossy().into_owned();
                PathBuf::from(s.split(':').next().unwrap_or_default())
            })
        };
        Env {
            presenced_config: var("PRESENCED_CONFIG"),
            configuration_directory: first("CONFIGURATION_DIRECTORY"),
            state_directory: first("STATE_DIRECTORY"),
            runtime_directory: first("RUNTIME_DIRECTORY"),
            credentials_directory: var("CREDENTIALS_DIRECTORY"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            home: var("HOME"),
            is_root: nix::unistd::geteuid().is_root(),
        }
    }

    /// `--config`, else `$PRESENCED_CONFIG`, else systemd's configuration directory, else
    /// /etc for root, else the XDG config directory.
    pub fn config_path(&self, flag: Option<&Path>) -> PathBuf {
        if let Some(p) = flag {
            return p.to_owned();
        }
        if let Some(p) = &self.presenced_config {
            return p.clone();
        }
        if let Some(dir) = &self.configuration_directory {
            return dir.join("presenced.toml");
        }
        if self.is_root {
            return PathBuf::from("/etc/presenced/presenced.toml");
        }
        self.xdg_dir(&self.xdg_config_home, ".config").join("presenced/presenced.toml")
    }

    fn default_state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_directory {
            return dir.clone();
        }
        if self.is_root {
            return PathBuf::from("/var/lib/presenced");
        }
        self.xdg_dir(&self.xdg_state_home, ".local/state").join("presenced")
    }

    fn default_socket(&self) -> PathBuf {
        if let Some(dir) = &self.runtime_directory {
            return dir.join("control.sock");
        }
        if self.is_root {
            return PathBuf::from("/run/presenced/control.sock");
        }
        match &self.xdg_runtime_dir {
            Some(dir) => dir.join("presenced/control.sock"),
            None => std::env::temp_dir().join(format!("presenced-{}/control.sock", uid())),
        }
    }

    fn xdg_dir(&self, set: &Option<PathBuf>, fallback: &str) -> PathBuf {
        match (set, &self.home) {
            (Some(dir), _) => dir.clone(),
            (None, Some(home)) => home.join(fallback),
            (None, None) => PathBuf::from("/").join(fallback),
        }
    }
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub control_group: Option<String>,
    pub feeds: Vec<FeedConfig>,
    pub accounts: Vec<AccountConfig>,
    pub credentials_directory: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    pub url: String,
    pub interval: Duration,
    pub template: String,
    pub on_first_run: FirstRun,
    pub max_new_per_poll: usize,
    pub max_age: Duration,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRun {
    /// Everything already on the blog is recorded as seen and not announced.
    Baseline,
    /// The N newest articles are announced; the rest is the baseline.
    AnnounceLatest(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountConfig {
    pub name: String,
    pub kind: AccountKind,
    /// The Mastodon server, or the Bluesky PDS (`service` in the file).
    pub server: Option<String>,
    pub token: Option<SecretSource>,
    /// Bluesky: the account's handle and app password.
    pub handle: Option<String>,
    pub password: Option<SecretSource>,
    /// X: the OAuth 2.0 app's client id, and its secret for a confidential client.
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
    /// Facebook: the Page's id.
    pub page_id: Option<String>,
    /// How often to fetch mentions, when not the network's default (Mastodon and Bluesky
    /// 60 s, X and Facebook 5 min: their reads cost money or quota).
    pub interval: Option<Duration>,
    pub visibility: Option<String>,
    pub language: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Mastodon,
    Bluesky,
    X,
    Facebook,
    Outbox,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Mastodon => "mastodon",
            AccountKind::Bluesky => "bluesky",
            AccountKind::X => "x",
            AccountKind::Facebook => "facebook",
            AccountKind::Outbox => "outbox",
        }
    }
}

/// Where a secret lives. The secret itself is only read by [`SecretSource::load`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretSource {
    Credential(String),
    File(PathBuf),
}

/// A secret read from a credential or file. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl SecretSource {
    pub fn load(&self, credentials_directory: Option<&Path>) -> Result<Secret, String> {
        use std::os::unix::fs::MetadataExt;
        let path = match self {
            SecretSource::File(p) => p.clone(),
            SecretSource::Credential(name) => match credentials_directory {
                Some(dir) => dir.join(name),
                None => {
                    return Err(format!(
                        "credential {name:?}: $CREDENTIALS_DIRECTORY is not set \
                         (use LoadCredential= in the unit, or token = {{ file = \"...\" }})"
                    ))
                }
            },
        };
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{}: readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                meta.mode() & 0o777
            ));
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(format!("{}: empty", path.display()));
        }
        Ok(Secret(secret.to_owned()))
    }
}

/// A configuration problem, displayed as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    control_group: Option<String>,
    #[serde(default)]
    feed: Vec<Spanned<RawFeed>>,
    #[serde(default)]
    account: Vec<Spanned<RawAccount>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    url: Spanned<String>,
    interval: Option<Spanned<String>>,
    template: Option<Spanned<String>>,
    on_first_run: Option<Spanned<String>>,
    announce_latest: Option<usize>,
    max_new_per_poll: Option<usize>,
    max_age: Option<Spanned<String>>,
    max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Spanned<String>,
    kind: AccountKind,
    server: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    token: Option<SecretSource>,
    handle: Option<String>,
    password: Option<SecretSource>,
    client_id: Option<String>,
    client_secret: Option<SecretSource>,
    page_id: Option<String>,
    interval: Option<Spanned<String>>,
    visibility: Option<String>,
    language: Option<String>,
}

pub const DEFAULT_TEMPLATE: &str = "{title} {url}";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_MAX_NEW: usize = 3;
const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Below this, a feed would be hammered; a typo like "10s" for "10m" is caught here.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub fn load(path: &Path, env: &Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path, env)
}

pub fn parse(text: &str, path: &Path, env: &Env) -> Result<Config, ConfigError> {
    let err = |span: Option<Range<usize>>, message: String| ConfigError {
        path: path.to_owned(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        err(e.span(), message)
    })?;

    let mut feeds = Vec::new();
    for spanned in &raw.feed {
        let f = spanned.get_ref();
        let at = |s: Range<usize>| Some(s);
        let url = match feed_url(f.url.get_ref().trim(), path) {
            Ok(u) => u,
            Err(e) => return Err(err(at(f.url.span()), e)),
        };
        match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https" | "file") => {}
            Ok(u) => {
                return Err(err(
                    at(f.url.span()),
                    format!("feed url {url:?}: scheme {:?} is not http, https or file", u.scheme()),
                ))
            }
            Err(e) => return Err(err(at(f.url.span()), format!("feed url {url:?}: {e}"))),
        }
        if feeds.iter().any(|other: &FeedConfig| other.url == url) {
            return Err(err(at(f.url.span()), format!("feed {url:?} is configured twice")));
        }
        let duration = |field: &Option<Spanned<String>>, name: &str, default: Duration| match field
        {
            None => Ok(default),
            Some(s) => humantime::parse_duration(s.get_ref()).map_err(|e| {
                err(at(s.span()), format!("feed {url:?}: {name} {:?}: {e}", s.get_ref()))
            }),
        };
        let interval = duration(&f.interval, "interval", DEFAULT_INTERVAL)?;
        if interval < MIN_INTERVAL {
            let span = f.interval.as_ref().map(|s| s.span());
            return Err(err(span, format!("feed {url:?}: interval must be at least 1s")));
        }
        let max_age = duration(&f.max_age, "max_age", DEFAULT_MAX_AGE)?;
        let template =
            f.template.as_ref().map_or(DEFAULT_TEMPLATE.to_owned(), |t| t.get_ref().clone());
        if let Err(e) = crate::fit::check_template(&template) {
            let span = f.template.as_ref().map(|s| s.span());
            return Err(err(span, format!("feed {url:?}: template: {e}")));
        }
        let on_first_run = match f.on_first_run.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("baseline", _)) => {
                if f.announce_latest.is_some() {
                    return Err(err(
                        Some(spanned.span()),
                        format!("feed {url:?}: announce_latest needs on_first_run = \"announce-latest\""),
                    ));
                }
                FirstRun::Baseline
            }
            Some(("announce-latest", _)) => FirstRun::AnnounceLatest(f.announce_latest.unwrap_or(1)),
            Some((other, span)) => {
                return Err(err(
                    Some(span),
                    format!(
                        "feed {url:?}: on_first_run {other:?}: expected \"baseline\" or \"announce-latest\""
                    ),
                ))
            }
        };
        let max_new_per_poll = f.max_new_per_poll.unwrap_or(DEFAULT_MAX_NEW);
        if max_new_per_poll == 0 {
            return Err(err(
                Some(spanned.span()),
                format!("feed {url:?}: max_new_per_poll must be at least 1"),
            ));
        }
        feeds.push(FeedConfig {
            url,
            interval,
            template,
            on_first_run,
            max_new_per_poll,
            max_age,
            max_bytes: f.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
        });
    }

    let mut accounts: Vec<AccountConfig> = Vec::new();
    for spanned in &raw.account {
        let a = spanned.get_ref();
        let name = a.name.get_ref().trim().to_owned();
        let here = Some(spanned.span());
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)) {
            return Err(err(
                Some(a.name.span()),
                format!("account name {name:?}: use letters, digits, '-', '_' or '.'"),
            ));
        }
        if accounts.iter().any(|other| other.name == name) {
            return Err(err(Some(a.name.span()), format!("account {name:?} is configured twice")));
        }
        let needs_server = matches!(a.kind, AccountKind::Mastodon);
        let needs_token = matches!(a.kind, AccountKind::Mastodon | AccountKind::Facebook);
        if a.kind == AccountKind::X && a.client_id.as_deref().map_or(true, |c| c.trim().is_empty())
        {
            return Err(err(
                here,
                format!(
                    "account {name:?}: client_id is required (the X app's OAuth 2.0 client id)"
                ),
            ));
        }
        if a.kind == AccountKind::Facebook
            && a.page_id.as_deref().map_or(true, |p| p.trim().is_empty())
        {
            return Err(err(here, format!("account {name:?}: page_id is required")));
        }
        if a.kind == AccountKind::Bluesky {
            if a.handle.as_deref().map_or(true, |h| h.trim().is_empty()) {
                return Err(err(
                    here,
                    format!(
                        "account {name:?}: handle is required, e.g. handle = \"you.bsky.social\""
                    ),
                ));
            }
            if a.password.is_none() {
                return Err(err(
                    here,
                    format!("account {name:?}: password is required (an app password), e.g. password = {{ credential = \"{name}-password\" }}"),
                ));
            }
        }
        if a.service.is_some() && a.kind != AccountKind::Bluesky {
            let span = a.service.as_ref().map(|s| s.span());
            return Err(err(
                span,
                format!("account {name:?}: service is for bluesky accounts; use server"),
            ));
        }
        let server = match a.server.as_ref().or(a.service.as_ref()) {
            Some(s) => {
                let text = s.get_ref().trim().trim_end_matches('/').to_owned();
                match url::Url::parse(&text) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => Some(text),
                    _ => {
                        return Err(err(
                            Some(s.span()),
                            format!("account {name:?}: server {text:?} is not an http(s) URL"),
                        ))
                    }
                }
            }
            None if needs_server => {
                return Err(err(here, format!("account {name:?}: server is required")))
            }
            None => None,
        };
        let interval = match &a.interval {
            None => None,
            Some(s) => match humantime::parse_duration(s.get_ref()) {
                Ok(d) if d >= MIN_INTERVAL => Some(d),
                Ok(_) => {
                    return Err(err(
                        Some(s.span()),
                        format!("account {name:?}: interval must be at least 1s"),
                    ))
                }
                Err(e) => {
                    return Err(err(
                        Some(s.span()),
                        format!("account {name:?}: interval {:?}: {e}", s.get_ref()),
                    ))
                }
            },
        };
        if needs_token && a.token.is_none() {
            return Err(err(
                here,
                format!(
                    "account {name:?}: token is required, e.g. token = {{ credential = \"{name}-token\" }}"
                ),
            ));
        }
        accounts.push(AccountConfig {
            name,
            kind: a.kind,
            server,
            token: a.token.clone(),
            handle: a.handle.as_ref().map(|h| h.trim().trim_start_matches('@').to_owned()),
            password: a.password.clone(),
            client_id: a.client_id.as_ref().map(|c| c.trim().to_owned()),
            client_secret: a.client_secret.clone(),
            page_id: a.page_id.as_ref().map(|p| p.trim().to_owned()),
            interval,
            visibility: a.visibility.clone(),
            language: a.language.clone(),
        });
    }

    let base = path.parent().unwrap_or(Path::new("."));
    Ok(Config {
        path: path.to_owned(),
        state_dir: raw.state_dir.map_or_else(|| env.default_state_dir(), |p| base.join(p)),
        socket: raw.socket.map_or_else(|| env.default_socket(), |p| base.join(p)),
        control_group: raw.control_group,
        feeds,
        accounts,
        credentials_directory: env.credentials_directory.clone(),
    })
}

/// A feed given as a plain path (no scheme) is a local file, relative to the config file.
fn feed_url(text: &str, config_path: &Path) -> Result<String, String> {
    if text.contains("://") {
        return Ok(text.to_owned());
    }
    let base = config_path.parent().unwrap_or(Path::new("."));
    let full =
        std::path::absolute(base.join(text)).map_err(|e| format!("feed path {text:?}: {e}"))?;
    url::Url::from_file_path(&full)
        .map(String::from)
        .map_err(|()| format!("feed path {text:?}: not a usable file path"))
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env { home: Some("/home/u".into()), ..Env::default() }
    }

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("/c.toml"), &env()).unwrap_err().to_string()
    }

    #[test]
    fn paths_follow_the_documented_order() {
        let mut e = env();
        assert_eq!(e.config_path(None), PathBuf::from("/home/u/.config/presenced/presenced.toml"));
        e.xdg_config_home = Some("/x".into());
        assert_eq!(e.config_path(None), PathBuf::from("/x/presenced/presenced.toml"));
        e.is_root = true;
        assert_eq!(e.config_path(None), PathBuf::from("/etc/presenced/presenced.toml"));
        e.configuration_directory = Some("/etc/sd".into());
        assert_eq!(e.config_path(None), PathBuf::from("/etc/sd/presenced.toml"));
        e.presenced_config = Some("/env.toml".into());
        assert_eq!(e.config_path(None), PathBuf::from("/env.toml"));
        assert_eq!(e.config_path(Some(Path::new("/flag.toml"))), PathBuf::from("/flag.toml"));
    }

    #[test]
    fn defaults_for_state_and_socket() {
        let mut e = env();
        e.xdg_runtime_dir = Some("/run/user/1000".into());
        let c = parse("", Path::new("/c.toml"), &e).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/home/u/.local/state/presenced"));
        assert_eq!(c.socket, PathBuf::from("/run/user/1000/presenced/control.sock"));
        e.state_directory = Some("/var/lib/presenced".into());
        e.runtime_directory = Some("/run/presenced".into());
        let c = parse("", Path::new("/c.toml"), &e).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/presenced"));
        assert_eq!(c.socket, PathBuf::from("/run/presenced/control.sock"));
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(
            r#"
state_dir = "/s"
socket = "/s/c.sock"
control_group = "presence"

[[feed]]
url = "https://blog.example/feed/"
interval = "5m"
template = "New: {title} {url}"
on_first_run = "announce-latest"
announce_latest = 2

[[account]]
name = "masto"
kind = "mastodon"
server = "https://mastodon.social/"
token = { credential = "masto-token" }
interval = "2m"

[[account]]
name = "dry-run"
kind = "outbox"
"#,
            Path::new("/c.toml"),
            &env(),
        )
        .unwrap();
        assert_eq!(c.feeds[0].interval, Duration::from_secs(300));
        assert_eq!(c.feeds[0].on_first_run, FirstRun::AnnounceLatest(2));
        assert_eq!(c.accounts[0].server.as_deref(), Some("https://mastodon.social"));
        assert_eq!(c.accounts[0].token, Some(SecretSource::Credential("masto-token".into())));
        assert_eq!(c.accounts[0].interval, Some(Duration::from_secs(120)));
        assert_eq!(c.accounts[1].kind, AccountKind::Outbox);
        assert_eq!(c.accounts[1].interval, None);
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(
            parse_err("[[feed]]\nurl = \"https://a/\"\ninterval = \"often\"\n"),
            "/c.toml:3: feed \"https://a/\": interval \"often\": expected number at 0"
        );
        assert!(parse_err("[[account]]\nname = \"m\"\nkind = \"myspace\"\n")
            .starts_with("/c.toml:3: unknown variant `myspace`"));
        assert_eq!(
            parse_err("\n[[account]]\nname = \"m\"\nkind = \"mastodon\"\n"),
            "/c.toml:2: account \"m\": server is required"
        );
        assert!(parse_err("bogus = 1\n").starts_with("/c.toml:1: unknown field `bogus`"));
        assert!(parse_err("[[feed]]\nurl = \"ftp://x/\"\n").starts_with("/c.toml:2: feed"));
        assert!(parse_err("[[feed]]\nurl = \"https://a/\"\ntemplate = \"{nope}\"\n")
            .starts_with("/c.toml:3: feed \"https://a/\": template:"));
    }

    #[test]
    fn inline_tokens_are_refused() {
        let e = parse_err(
            "[[account]]\nname = \"m\"\nkind = \"mastodon\"\nserver = \"https://m/\"\ntoken = \"abc\"\n",
        );
        assert!(e.starts_with("/c.toml:5:"), "{e}");
    }

    #[test]
    fn secret_files_must_be_private_and_never_print() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::File::create(&path).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let source = SecretSource::File(path.clone());
        assert!(source.load(None).unwrap_err().contains("readable by group or others"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret = source.load(None).unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert!(!format!("{secret:?}").contains("s3cret"));
    }
}
