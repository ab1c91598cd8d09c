//! The task set every subsystem spawns into: one `CancellationToken`, one `TaskTracker`, and a
//! channel on which a core task reports that it ended by itself. Touches nothing else.

use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A problem found while starting (database unreachable, port taken …): a runtime failure,
/// the process exits with code 1 (configuration errors are found before, by validation: 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// The end of a core task: its name and why it ended.
pub type Ended = (&'static str, anyhow::Error);

/// Spawns tracked tasks and notices when a core task stops by itself.
#[derive(Clone)]
pub struct Tasks {
    token: CancellationToken,
    /// Tracker of every spawned task (shutdown waits for all of them).
    pub tracker: TaskTracker,
    ended: mpsc::UnboundedSender<Ended>,
}

impl Tasks {
    /// A fresh set and the receiver of core-task endings.
    pub fn new(token: CancellationToken) -> (Self, mpsc::UnboundedReceiver<Ended>) {
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

    /// Spawns a helper that runs `tick` every `every` (the first at once) until shutdown.
    pub fn spawn_every<F, Fut>(&self, every: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let cancel = self.token.clone();
        self.tracker.spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = interval.tick() => tick().await,
                }
            }
        });
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
