//! The only place that wires the bridge together: builds the clients, spawns every task under one
//! `CancellationToken` + `TaskTracker`, and owns the orderly shutdown. A core task that ends on
//! its own is logged with its cause chain and makes `run` fail, so a supervisor restarts us.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;

/// A problem found while starting (database URL unusable or unreachable, port taken …): the
/// process exits with code 2 like a configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Spawns tracked tasks and notices when a core task stops by itself.
#[derive(Clone)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
    ended: mpsc::UnboundedSender<(&'static str, anyhow::Error)>,
}

impl Tasks {
    /// A fresh set and the receiver of core-task endings.
    pub fn new(
        token: CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<(&'static str, anyhow::Error)>) {
        let (ended, rx) = mpsc::unbounded_channel();
        (
            Self {
                token,
                tracker: TaskTracker::new(),
                ended,
            },
            rx,
        )
    }

    /// The token cancelled at shutdown.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Spawns a core task: it must run until cancelled; ending earlier (even with `Ok`) is fatal.
    pub fn spawn_core<F>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = self.token.clone();
        let ended = self.ended.clone();
        self.tracker.spawn(async move {
            let result = fut.await;
            if !token.is_cancelled() {
                let err = match result {
                    Ok(()) => anyhow!("{name} stopped unexpectedly"),
                    Err(e) => e,
                };
                let _ = ended.send((name, err));
            } else if let Err(e) = result {
                tracing::warn!(
                    task = name,
                    error = format!("{e:#}"),
                    "task_failed_during_shutdown"
                );
            }
        });
    }

    /// Spawns a helper task whose end is not fatal.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Cancels everything and waits up to `timeout` for every task to exit.
    pub async fn shutdown(&self, timeout: Duration) -> anyhow::Result<()> {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .map_err(|_| anyhow!("tasks still running after the shutdown timeout of {timeout:?}"))
    }
}

/// Runs the bridge until `shutdown` resolves or a core task fails.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    let (tasks, mut ended) = Tasks::new(token.clone());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        devices = settings.devices.len(),
        "bridge_starting"
    );

    tracing::info!("bridge_started");
    let failure = tokio::select! {
        () = shutdown => None,
        Some((name, err)) = ended.recv() => Some((name, err)),
    };
    if let Some((name, err)) = &failure {
        tracing::error!(task = name, error = format!("{err:#}"), "core_task_ended");
    }
    tracing::info!("bridge_stopping");
    tasks
        .shutdown(settings.bridge.shutdown_timeout)
        .await
        .context("orderly shutdown")?;
    tracing::info!("bridge_stopped");
    match failure {
        Some((name, err)) => Err(err.context(format!("core task {name} ended"))),
        None => Ok(()),
    }
}
