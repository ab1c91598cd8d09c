//! The recorder task: persists applied commands (desired state and audit row, see
//! `control::Bookkeeping`) one after the other, after their answers went out. Owns the
//! receiving end of the record queue; touches the store only through `Bookkeeping::persist`.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::Bookkeeping;

/// Applied commands waiting to be recorded; a full queue holds the next command back.
pub(super) const RECORD_QUEUE: usize = 1024;

/// Persists applied commands (desired state and audit row) one after the other, in the order
/// they were applied, after their answers went out; at shutdown, what is queued is still written
/// (for at most [`RECORD_DRAIN`]).
/// One writer keeps a burst of commands from taking every database connection at once.
pub(super) async fn run_recorder(mut rx: mpsc::Receiver<Bookkeeping>, cancel: CancellationToken) {
    loop {
        let book = tokio::select! {
            biased;
            b = rx.recv() => match b {
                Some(b) => b,
                None => return,
            },
            _ = cancel.cancelled() => break,
        };
        book.persist().await;
    }
    // Shutdown: what is queued is still written, within a bound (the database may be down).
    let deadline = Instant::now() + RECORD_DRAIN;
    while let Ok(book) = rx.try_recv() {
        if tokio::time::timeout_at(deadline, book.persist())
            .await
            .is_err()
        {
            let lost = 1 + std::iter::from_fn(|| rx.try_recv().ok()).count();
            tracing::warn!(lost, "commands_not_recorded_at_shutdown");
            return;
        }
    }
}

/// How long shutdown waits for queued command records.
const RECORD_DRAIN: Duration = Duration::from_secs(3);
