//! presencectl: the human's side of presence. Parses the command line, asks the daemon over
//! its control socket, prints the answer for a person (or as JSON with `--json`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use presencectl::client::{Client, ClientError};
use presencectl::proto::{
    self, AnnouncementState, ArticleView, ConversationDetail, ConversationFilter, ConversationView,
    MessageView, PollScope, PostAction, PostFilter, Request, Response, StatusReport,
};

mod editor;
mod login;
mod when;
use serde_json::{json, Value};

/// How many conversations `list` shows a person unless told otherwise.
const DEFAULT_LIST: u32 = 100;

/// Exit codes (contract): 0 ok, 1 refused by the daemon, 2 usage (clap), 69 unreachable.
const EXIT_REFUSED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "presencectl",
    version,
    about = "Talk to presenced: conversations, announcements, status"
)]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, env = "PRESENCECTL_SOCKET")]
    socket: Option<PathBuf>,
    /// An instance of the presenced@NAME template unit (its socket is
    /// /run/presenced-NAME/control.sock).
    #[arg(short = 'i', long, global = true, conflicts_with = "socket")]
    instance: Option<String>,
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
    /// Check all feeds and every account's mentions now.
    Poll(PollArgs),
    /// Conversations: open ones by default, oldest waiting first.
    List(ListArgs),
    /// A whole conversation, oldest message first.
    Show { id: String },
    /// Reply in the conversation's thread: TEXT, `-` for standard input, or nothing to
    /// write it in $VISUAL/$EDITOR.
    Answer { id: String, text: Option<String> },
    /// Hide a conversation until later: 2h, 3d, tomorrow, "tomorrow 14:00",
    /// "2026-12-01 09:00" (local time). A new message brings it back earlier.
    Snooze {
        id: String,
        #[arg(required_unless_present = "until")]
        duration: Option<String>,
        /// Snooze until this local time instead.
        #[arg(long, conflicts_with = "duration")]
        until: Option<String>,
    },
    /// Finish a conversation.
    Done { id: String },
    /// Put a snoozed or finished conversation back in the queue.
    Reopen { id: String },
    /// Log an account in (X: OAuth 2.0 with PKCE). Prints the URL to open, then waits for the
    /// browser's redirect on 127.0.0.1:PORT, or for the redirected URL pasted here.
    Login {
        #[arg(value_enum)]
        network: LoginNetwork,
        /// The account's name in presenced.toml.
        #[arg(long)]
        account: String,
        /// Loopback port of the redirect URI registered with the app
        /// (http://127.0.0.1:PORT/callback).
        #[arg(long, default_value_t = 8976)]
        port: u16,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `presencectl manpage > presencectl.1`.
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LoginNetwork {
    X,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Every conversation.
    #[arg(long, conflicts_with_all = ["snoozed", "done"])]
    all: bool,
    /// Only snoozed ones.
    #[arg(long, conflicts_with = "done")]
    snoozed: bool,
    /// Only finished ones.
    #[arg(long)]
    done: bool,
    /// Show at most this many (0: all). Default: 100, or all with --json.
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Debug, Args)]
struct PollArgs {
    /// Only the feeds: fetch them and announce what is new, as the feed timer does.
    #[arg(long, conflicts_with = "mentions")]
    feeds: bool,
    /// Only the mentions and the threads of recent posts.
    #[arg(long)]
    mentions: bool,
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
    // These two need no daemon.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "presencectl", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Manpage => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            return match page.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("presencectl: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    if let Command::Login { account, port, .. } = &cli.command {
        return login::run(&socket_path(&cli), account, *port, cli.json);
    }
    let request = match request_for(&cli.command) {
        // A person's list stops at the oldest hundred; scripts (--json) get everything.
        Ok(Request::ListConversations { filter, limit: 0 })
            if !cli.json && matches!(&cli.command, Command::List(ListArgs { limit: None, .. })) =>
        {
            Request::ListConversations { filter, limit: DEFAULT_LIST + 1 }
        }
        Ok(r) => r,
        Err(msg) => {
            eprintln!("presencectl: {msg}");
            return ExitCode::from(2);
        }
    };
    let socket = socket_path(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("presencectl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let request_limit = match &request {
        Request::ListConversations { limit, .. } => Some(*limit),
        _ => None,
    };
    let answer = runtime.block_on(async {
        let mut client = Client::connect(&socket).await?;
        match request {
            Request::Answer { id, text } if text.is_empty() => {
                answer_in_editor(&mut client, id).await
            }
            request => client.call(&request).await,
        }
    });
    match answer {
        Ok(Response::Error(err)) => {
            eprintln!("presencectl: {}", err.message);
            ExitCode::from(EXIT_REFUSED)
        }
        Ok(Response::Conversations(mut list)) if cli.json => {
            // The daemon was asked for one more than wanted (to tell a person there are more).
            if let Some(limit) = request_limit.filter(|l| *l > 0) {
                list.truncate((limit - 1) as usize);
            }
            print_response(&Response::Conversations(list), true);
            ExitCode::SUCCESS
        }
        Ok(Response::Conversations(mut list)) if !cli.json => {
            let shown = match &request_limit {
                Some(limit) if *limit > 0 => (*limit - 1) as usize,
                _ => list.len(),
            };
            let more = list.len() > shown;
            list.truncate(shown);
            print_conversations(&list);
            if more {
                println!(
                    "(the {shown} oldest waiting shown; presencectl list --limit 0 shows all)"
                );
            }
            ExitCode::SUCCESS
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

fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(name) = &cli.instance {
        return proto::instance_socket_path(name);
    }
    cli.socket.clone().unwrap_or_else(|| {
        proto::default_socket_path(
            nix::unistd::geteuid().is_root(),
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).as_deref(),
        )
    })
}

fn request_for(command: &Command) -> Result<Request, String> {
    Ok(match command {
        Command::Status => Request::Status,
        Command::Poll(args) => match (args.feeds, args.mentions) {
            (true, _) => Request::PollOnly { scope: PollScope::Feeds },
            (_, true) => Request::PollOnly { scope: PollScope::Mentions },
            _ => Request::Poll,
        },
        Command::List(args) => Request::ListConversations {
            filter: if args.all {
                ConversationFilter::All
            } else if args.snoozed {
                ConversationFilter::Snoozed
            } else if args.done {
                ConversationFilter::Done
            } else {
                ConversationFilter::Open
            },
            // One more than shown, to know whether to say there are more.
            limit: match args.limit {
                Some(0) => 0,
                Some(n) => n.saturating_add(1),
                None => 0,
            },
        },
        Command::Show { id } => Request::ShowConversation { id: conversation_id(id)? },
        Command::Answer { id, text } => {
            Request::Answer { id: conversation_id(id)?, text: answer_text(text.as_deref())? }
        }
        Command::Snooze { id, duration, until } => {
            let spec = until.as_deref().or(duration.as_deref()).unwrap_or_default();
            let until = when::parse(spec, chrono::Local::now())?;
            Request::Snooze { id: conversation_id(id)?, until }
        }
        Command::Done { id } => Request::Done { id: conversation_id(id)? },
        Command::Reopen { id } => Request::Reopen { id: conversation_id(id)? },
        Command::Completions { .. } | Command::Manpage | Command::Login { .. } => {
            return Err("not a single request".into());
        }
        Command::Posts(args) => match &args.action {
            Some(PostsAction::Approve { id }) => {
                Request::PostAction { id: article_id(id)?, action: PostAction::Approve }
            }
            Some(PostsAction::Skip { id }) => {
                Request::PostAction { id: article_id(id)?, action: PostAction::Skip }
            }
            Some(PostsAction::Retry { id }) => {
                Request::PostAction { id: article_id(id)?, action: PostAction::Retry }
            }
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

/// Conversation ids print as `c7`; the bare number is accepted too.
fn conversation_id(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix('c').unwrap_or(text);
    digits.parse().map_err(|_| format!("not a conversation id: {text:?} (expected e.g. c7)"))
}

/// The answer's text: given, read from standard input (`-`), or written in an editor.
fn answer_text(given: Option<&str>) -> Result<String, String> {
    let text = match given {
        Some("-") => {
            let mut buf = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
                .map_err(|e| format!("reading the answer from standard input: {e}"))?;
            buf
        }
        Some(text) => text.to_owned(),
        // Written in the editor once the thread is known (see `answer_in_editor`).
        None => return Ok(String::new()),
    };
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err("empty answer: nothing sent".into());
    }
    Ok(text)
}

/// `answer ID` without text: show the thread in the editor, then send what was written.
async fn answer_in_editor(client: &mut Client, id: u64) -> Result<Response, ClientError> {
    let detail = match client.call(&Request::ShowConversation { id }).await? {
        Response::Conversation(detail) => detail,
        other => return Ok(other),
    };
    let mut quoted = format!("Answering c{id} on {}.", detail.conversation.account);
    if let Some(limit) = detail.answer_limit {
        quoted.push_str(&format!(" Up to {limit} characters, with the @mention."));
    }
    quoted.push_str(" Lines starting with # are dropped; an empty answer sends nothing.\n");
    for m in &detail.messages {
        let who = if m.mine { "you" } else { m.author.as_str() };
        quoted.push_str(&format!("\n{who}, {}:\n", local(m.at)));
        for line in m.text.lines() {
            quoted.push_str(&format!("  {line}\n"));
        }
    }
    let text = match editor::compose(&quoted) {
        Ok(text) if !text.is_empty() => text,
        Ok(_) => return Ok(Response::Error(refusal("empty answer: nothing sent"))),
        Err(e) => return Ok(Response::Error(refusal(&e))),
    };
    client.call(&Request::Answer { id, text }).await
}

fn refusal(message: &str) -> proto::ErrorReply {
    proto::ErrorReply { kind: proto::ErrorKind::Refused, message: message.to_owned() }
}

/// Article ids print as `a12`; the bare number is accepted too.
fn article_id(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix('a').unwrap_or(text);
    digits.parse().map_err(|_| format!("not an article id: {text:?} (expected e.g. a12)"))
}

fn print_response(response: &Response, as_json: bool) {
    match response {
        Response::Status(report) if as_json => println!("{:#}", status_json(report)),
        Response::Status(report) => print_status(report),
        Response::Posts(articles) if as_json => {
            println!("{:#}", Value::Array(articles.iter().map(article_json).collect()))
        }
        Response::Posts(articles) => print_posts(articles),
        Response::Done(message) if as_json => println!("{:#}", json!({ "ok": message })),
        Response::Done(message) => println!("{message}"),
        Response::Error(err) => eprintln!("presencectl: {}", err.message),
        Response::Conversations(list) if as_json => {
            println!("{:#}", Value::Array(list.iter().map(conversation_json).collect()))
        }
        Response::Conversations(list) => print_conversations(list),
        Response::Conversation(detail) if as_json => println!("{:#}", detail_json(detail)),
        Response::Conversation(detail) => print_conversation(detail),
        // Client::call puts parts back together; a part never reaches here.
        Response::Partial(_) => {}
        Response::LoginUrl(url) => println!("{url}"),
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
            "waiting": r.queue.waiting,
            "oldest_waiting": opt_time(r.queue.oldest_waiting),
            "next_wake": opt_time(r.queue.next_wake),
        },
    })
}

fn print_status(r: &StatusReport) {
    println!("presenced {} (pid {}), up since {}", r.version, r.pid, relative(r.started_at));
    println!("state: {}", r.state_file);
    if let Some(err) = &r.state_error {
        println!("  NOT DURABLE, posting paused: {err}");
    }
    println!("feeds: {}", r.feeds.len());
    for f in &r.feeds {
        let fetched = f.last_fetch.map_or("never fetched".to_owned(), relative);
        let status = f.last_status.as_deref().unwrap_or("-");
        println!("  {}  {} articles, last fetch {fetched} ({status})", f.url, f.articles);
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
        Some(oldest) if r.queue.waiting > 0 => println!(
            "queue: {} waiting, oldest {}",
            r.queue.waiting,
            relative(oldest).trim_end_matches(" ago")
        ),
        _ => println!("queue: nothing waiting"),
    }
    let answered = r.queue.open - r.queue.waiting.min(r.queue.open);
    if answered > 0 {
        println!("       {answered} open and answered (presencectl done ID when finished)");
    }
    if let Some(wake) = r.queue.next_wake {
        println!("       {} snoozed, the next back {}", r.queue.snoozed, relative(wake));
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

fn message_json(m: &MessageView) -> Value {
    json!({
        "author": m.author,
        "display_name": m.display_name,
        "text": m.text,
        "at": rfc3339(m.at),
        "url": m.url,
        "mine": m.mine,
        "delivery": m.delivery.map(|d| d.as_str()),
        "error": m.error,
    })
}

fn conversation_json(c: &ConversationView) -> Value {
    json!({
        "id": format!("c{}", c.id),
        "account": c.account,
        "status": c.status.as_str(),
        "participants": c.participants,
        "waiting_since": opt_time(c.waiting_since),
        "snoozed_until": opt_time(c.snoozed_until),
        "last_message": c.last_message.as_ref().map(message_json),
    })
}

fn detail_json(d: &ConversationDetail) -> Value {
    let mut v = conversation_json(&d.conversation);
    v["messages"] = Value::Array(d.messages.iter().map(message_json).collect());
    v["answer_limit"] = json!(d.answer_limit);
    v
}

/// Width of the terminal, so that "last words" fit on one line.
fn terminal_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100)
}

fn one_line(text: &str, width: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn print_conversations(list: &[ConversationView]) {
    if list.is_empty() {
        println!("nobody is waiting");
        return;
    }
    let width = terminal_width();
    for c in list {
        let who = c.participants.join(", ");
        let since = match (c.waiting_since, c.snoozed_until) {
            (_, Some(until)) => format!("snoozed until {}", local(until)),
            (Some(t), None) => format!("waiting {}", relative(t).trim_end_matches(" ago")),
            (None, None) => "answered".to_owned(),
        };
        let head =
            format!("c{:<4} {:<10} {:<24} {:<16} ", c.id, c.account, one_line(&who, 24), since);
        let words = c.last_message.as_ref().map_or(String::new(), |m| {
            let who = if m.mine { "you" } else { m.author.as_str() };
            format!("{who}: {}", m.text)
        });
        let room = width.saturating_sub(head.chars().count()).max(10);
        println!("{head}{}", one_line(&words, room));
    }
}

fn print_conversation(d: &ConversationDetail) {
    let c = &d.conversation;
    println!("c{} on {} ({})", c.id, c.account, c.status.as_str());
    for m in &d.messages {
        let who = if m.mine {
            "you".to_owned()
        } else if m.display_name.is_empty() {
            m.author.clone()
        } else {
            format!("{} ({})", m.display_name, m.author)
        };
        let state = match (m.delivery, &m.error) {
            (Some(d), Some(e)) => format!(" [{}: {e}]", d.as_str()),
            (Some(d), None) if d != AnnouncementState::Posted => format!(" [{}]", d.as_str()),
            _ => String::new(),
        };
        println!();
        println!("{who}, {}{state}", local(m.at));
        for line in m.text.lines() {
            println!("  {line}");
        }
        if let Some(url) = &m.url {
            println!("  <{url}>");
        }
    }
    if let Some(limit) = d.answer_limit {
        println!();
        println!("answer with: presencectl answer c{} \"...\" (up to {limit} characters)", c.id);
    }
}

fn local(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
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
            let extra = s.remote_url.as_deref().or(s.detail.as_deref()).unwrap_or("");
            println!("     {:<12} {:<9} {extra}", s.account, s.state.as_str());
        }
    }
}
