//! presencectl: the human's side of presence. Parses the command line, asks the daemon over
//! its control socket, prints the answer for a person (or as JSON with `--json`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use presencectl::client::{Client, ClientError};
use presencectl::proto::{
    self, ArticleView, PostAction, PostFilter, Request, Response, StatusReport,
};
use serde_json::{json, Value};

/// Exit codes (contract): 0 ok, 1 refused by the daemon, 2 usage (clap), 69 unreachable.
const EXIT_REFUSED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "presencectl",
    version,
    about = "Talk to presenced: announcements, status"
)]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, env = "PRESENCECTL_SOCKET")]
    socket: Option<PathBuf>,
    /// Print machine-readable JSON (stable fields, see README).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The daemon, its feeds and accounts, and the queue.
    Status,
    /// Announcements per article and account.
    Posts(PostsArgs),
    /// Check all feeds now.
    Poll,
}

#[derive(Debug, Args)]
struct PostsArgs {
    #[command(subcommand)]
    action: Option<PostsAction>,
    /// Only held, pending or in-flight announcements.
    #[arg(long, conflicts_with_all = ["failed", "all"])]
    pending: bool,
    /// Only failed announcements.
    #[arg(long, conflicts_with = "all")]
    failed: bool,
    /// Every article ever seen, including the baseline.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum PostsAction {
    /// Release an article's held announcements.
    Approve { id: String },
    /// Never announce this article (held, pending or failed announcements are dropped).
    Skip { id: String },
    /// Try an article's failed announcements again now.
    Retry { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let request = match request_for(&cli.command) {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("presencectl: {msg}");
            return ExitCode::from(2);
        }
    };
    let socket = cli.socket.clone().unwrap_or_else(|| {
        proto::default_socket_path(
            nix::unistd::geteuid().is_root(),
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .as_deref(),
        )
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("presencectl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = runtime.block_on(async {
        let mut client = Client::connect(&socket).await?;
        client.call(&request).await
    });
    match answer {
        Ok(Response::Error(err)) => {
            eprintln!("presencectl: {}", err.message);
            ExitCode::from(EXIT_REFUSED)
        }
        Ok(response) => {
            print_response(&response, cli.json);
            ExitCode::SUCCESS
        }
        Err(err @ ClientError::Unreachable { .. }) => {
            eprintln!("presencectl: {err}");
            eprintln!("hint: is presenced running? try: systemctl status presenced");
            ExitCode::from(EXIT_UNREACHABLE)
        }
        Err(err @ (ClientError::Refused(_) | ClientError::VersionMismatch(_))) => {
            eprintln!("presencectl: {err}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(err) => {
            eprintln!("presencectl: {err}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

fn request_for(command: &Command) -> Result<Request, String> {
    Ok(match command {
        Command::Status => Request::Status,
        Command::Poll => Request::Poll,
        Command::Posts(args) => match &args.action {
            Some(PostsAction::Approve { id }) => Request::PostAction {
                id: article_id(id)?,
                action: PostAction::Approve,
            },
            Some(PostsAction::Skip { id }) => Request::PostAction {
                id: article_id(id)?,
                action: PostAction::Skip,
            },
            Some(PostsAction::Retry { id }) => Request::PostAction {
                id: article_id(id)?,
                action: PostAction::Retry,
            },
            None => Request::Posts {
                filter: if args.pending {
                    PostFilter::Pending
                } else if args.failed {
                    PostFilter::Failed
                } else if args.all {
                    PostFilter::All
                } else {
                    PostFilter::Recent
                },
            },
        },
    })
}

/// Article ids print as `a12`; the bare number is accepted too.
fn article_id(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix('a').unwrap_or(text);
    digits
        .parse()
        .map_err(|_| format!("not an article id: {text:?} (expected e.g. a12)"))
}

fn print_response(response: &Response, as_json: bool) {
    match response {
        Response::Status(report) if as_json => println!("{:#}", status_json(report)),
        Response::Status(report) => print_status(report),
        Response::Posts(articles) if as_json => {
            println!(
                "{:#}",
                Value::Array(articles.iter().map(article_json).collect())
            )
        }
        Response::Posts(articles) => print_posts(articles),
        Response::Done(message) if as_json => println!("{:#}", json!({ "ok": message })),
        Response::Done(message) => println!("{message}"),
        Response::Error(err) => eprintln!("presencectl: {}", err.message),
    }
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn opt_time(unix: Option<i64>) -> Value {
    unix.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// "3m ago", "2d ago", "in 5m": compact, like a person would say it.
fn relative(unix: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let delta = now - unix;
    let span = delta.unsigned_abs();
    let amount = match span {
        0..=59 => format!("{span}s"),
        60..=3599 => format!("{}m", span / 60),
        3600..=86_399 => format!("{}h", span / 3600),
        _ => format!("{}d", span / 86_400),
    };
    if delta >= 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

fn status_json(r: &StatusReport) -> Value {
    json!({
        "version": r.version,
        "pid": r.pid,
        "started_at": rfc3339(r.started_at),
        "state_file": r.state_file,
        "state_error": r.state_error,
        "feeds": r.feeds.iter().map(|f| json!({
            "url": f.url,
            "current_url": f.current_url,
            "interval_secs": f.interval_secs,
            "last_fetch": opt_time(f.last_fetch),
            "last_status": f.last_status,
            "last_error": f.last_error,
            "next_fetch": opt_time(f.next_fetch),
            "articles": f.articles,
            "baseline_taken": f.baseline_taken,
        })).collect::<Vec<_>>(),
        "accounts": r.accounts.iter().map(|a| json!({
            "name": a.name,
            "kind": a.kind,
            "health": a.health,
            "posted": a.posted,
            "pending": a.pending,
            "held": a.held,
            "failed": a.failed,
        })).collect::<Vec<_>>(),
        "queue": {
            "open": r.queue.open,
            "snoozed": r.queue.snoozed,
            "oldest_waiting": opt_time(r.queue.oldest_waiting),
            "next_wake": opt_time(r.queue.next_wake),
        },
    })
}

fn print_status(r: &StatusReport) {
    println!(
        "presenced {} (pid {}), up since {}",
        r.version,
        r.pid,
        relative(r.started_at)
    );
    println!("state: {}", r.state_file);
    if let Some(err) = &r.state_error {
        println!("  NOT DURABLE, posting paused: {err}");
    }
    println!("feeds: {}", r.feeds.len());
    for f in &r.feeds {
        let fetched = f.last_fetch.map_or("never fetched".to_owned(), relative);
        let status = f.last_status.as_deref().unwrap_or("-");
        println!(
            "  {}  {} articles, last fetch {fetched} ({status})",
            f.url, f.articles
        );
        if f.current_url != f.url {
            println!("    moved to {}", f.current_url);
        }
        if let Some(err) = &f.last_error {
            println!("    error: {err}");
        }
    }
    println!("accounts: {}", r.accounts.len());
    for a in &r.accounts {
        println!(
            "  {} ({}): {}; {} posted, {} pending, {} held, {} failed",
            a.name, a.kind, a.health, a.posted, a.pending, a.held, a.failed
        );
    }
    match r.queue.oldest_waiting {
        Some(oldest) if r.queue.open > 0 => println!(
            "queue: {} waiting, oldest {}",
            r.queue.open,
            relative(oldest).trim_end_matches(" ago")
        ),
        _ => println!("queue: nothing waiting"),
    }
}

fn article_json(a: &ArticleView) -> Value {
    json!({
        "id": format!("a{}", a.id),
        "feed": a.feed,
        "title": a.title,
        "url": a.url,
        "first_seen": rfc3339(a.first_seen),
        "published": opt_time(a.published),
        "accounts": a.accounts.iter().map(|s| json!({
            "account": s.account,
            "state": s.state.as_str(),
            "detail": s.detail,
            "remote_url": s.remote_url,
            "at": opt_time(s.at),
            "attempts": s.attempts,
        })).collect::<Vec<_>>(),
    })
}

fn print_posts(articles: &[ArticleView]) {
    if articles.is_empty() {
        println!("no announcements to show");
        return;
    }
    for a in articles {
        println!("a{}  {}  (seen {})", a.id, a.title, relative(a.first_seen));
        println!("     {}", a.url);
        for s in &a.accounts {
            let extra = s
                .remote_url
                .as_deref()
                .or(s.detail.as_deref())
                .unwrap_or("");
            println!("     {:<12} {:<9} {extra}", s.account, s.state.as_str());
        }
    }
}
