//! presenced's entry point: arguments, logging, the listening socket, signals; then
//! [`presenced::daemon::run`] does the work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use presenced::config;
use presenced::control::Listener;
use presenced::daemon::{self, Lifecycle};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(name = "presenced", version, about = "Announces each new blog article exactly once")]
struct Args {
    /// Configuration file (default: $PRESENCED_CONFIG, systemd's configuration directory,
    /// /etc/presenced/presenced.toml for root, else ~/.config/presenced/presenced.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Check the configuration and exit: 0 if it is valid, 1 with `file:line: message`.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    presenced::memory::limit_arenas();
    // Tokens live in this process's memory: keep them out of core dumps and ptrace.
    let _ = nix::sys::prctl::set_dumpable(false);
    let env = config::Env::from_process();
    let path = env.config_path(args.config.as_deref());
    let config = match config::load(&path, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        println!(
            "{}: ok ({} feeds, {} accounts)",
            path.display(),
            config.feeds.len(),
            config.accounts.len()
        );
        return ExitCode::SUCCESS;
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("presenced: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(config, env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // The journal may not be where a human looks first when start fails.
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                eprintln!("presenced: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn start(config: config::Config, env: config::Env) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = match Listener::from_systemd().context("socket activation")? {
        Some(l) => {
            tracing::info!("using the socket passed by systemd");
            l
        }
        None => {
            let l = Listener::bind(&config.socket, config.control_group.as_deref())?;
            tracing::info!(socket = %config.socket.display(), "listening");
            l
        }
    };
    let (tx, rx) = mpsc::channel(4);
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = term.recv() => Lifecycle::Shutdown,
                _ = int.recv() => Lifecycle::Shutdown,
                _ = hup.recv() => Lifecycle::Reload,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    daemon::run(config, listener, env, rx).await?;
    Ok(())
}

/// To the journal with structured fields under systemd, readable lines on stderr elsewhere.
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    // `Targets` takes the usual `level` or `target=level,...` directives without pulling a
    // regex engine into a daemon that should stay small.
    let filter = std::env::var("PRESENCED_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(journald.with_field_prefix(None))
                .init();
            return;
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false))
        .init();
}
