//! The daemon's lifecycle: load the state, start the core and the control server, say READY,
//! reload on request, and stop in phases.
//!
//! Shutdown phases: STOPPING=1 → stop accepting connections → cancel the core, which stops
//! its watchers and workers (drained with a deadline) and persists → remove the socket file
//! if we created it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config};
use crate::control::{self, Listener};
use crate::core::{Core, Event};
use crate::notify;
use crate::store::Store;

/// What the outside world (signals, in production) asks of a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// SIGHUP: read the configuration again.
    Reload,
    /// SIGTERM / SIGINT.
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Runs the daemon until a [`Lifecycle::Shutdown`] arrives (or the sender is dropped).
/// Reloads re-read the configuration from `config.path` with `env`.
pub async fn run(
    config: Config,
    listener: Listener,
    env: config::Env,
    mut lifecycle: mpsc::Receiver<Lifecycle>,
) -> Result<(), StartError> {
    let store = Store::open(&config.state_dir)?;
    let (state, first_start) = match store.load()? {
        Some(state) => (state, false),
        None => {
            // Written at once: proves the directory is writable before READY, and makes
            // the first start a start like any other.
            let state = crate::state::State::default();
            store.save(&state)?;
            (state, true)
        }
    };
    tracing::info!(
        state = %store.path().display(),
        "state loaded: {} articles, {} conversations{}",
        state.articles.len(),
        state.conversations.len(),
        if first_start { " (first start)" } else { "" }
    );
    let access = control::Access::new(config.control_group.as_deref());
    let feeds = config.feeds.len();
    let accounts = config.accounts.len();
    let config_path = config.path.clone();
    let (core, events) = Core::new(config, state, store, crate::feed::fetch::client());

    let core_stop = CancellationToken::new();
    let core_task = tokio::spawn(core.run(core_stop.clone()));
    let server_stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let server = tokio::spawn(control::serve(
        listener.listener,
        events.clone(),
        access,
        server_stop.clone(),
        connections.clone(),
    ));
    notify::ready(&format!("watching {feeds} feeds for {accounts} accounts"));
    tracing::info!("ready");

    while let Some(signal) = lifecycle.recv().await {
        match signal {
            Lifecycle::Shutdown => break,
            Lifecycle::Reload => reload(&config_path, &env, &events).await,
        }
    }

    notify::stopping();
    tracing::info!("stopping");
    server_stop.cancel();
    let _ = server.await;
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
    core_stop.cancel();
    let _ = core_task.await;
    remove_socket(listener.created);
    notify::flush(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

async fn reload(path: &Path, env: &config::Env, events: &mpsc::Sender<Event>) {
    notify::reloading();
    match config::load(path, env) {
        Ok(config) => {
            let (tx, rx) = oneshot::channel();
            if events.send(Event::Reload { config: Box::new(config), reply: tx }).await.is_ok() {
                let _ = rx.await;
            }
        }
        Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
    }
    notify::reloaded();
}

fn remove_socket(created: Option<PathBuf>) {
    if let Some(path) = created {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
}
