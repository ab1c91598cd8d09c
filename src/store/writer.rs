//! The telemetry writer: a task that takes samples from a channel, writes them to the `Store` in
//! batches (by size and by age), keeps them in memory in arrival order while the database is
//! unreachable (bounded: past `buffer_capacity` the OLDEST are dropped, counted and logged as
//! `samples_dropped`), retries with exponential backoff and flushes in order when the database
//! returns. It exposes its counters through a cheap `WriterHandle` and reports database
//! up/down transitions on a `watch` channel. Touches only the store it is given.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{DatabaseSettings, Store, StoreError};
use crate::domain::Sample;

/// How often, at most, a continuing run of drops is logged (the first drop is logged at once).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// A batch refused for a non-transient reason is tried this many times, then rejected (dropped).
const MAX_NON_TRANSIENT_ATTEMPTS: u32 = 3;

/// Where the writer takes samples from.
#[derive(Debug)]
pub enum SampleSource {
    /// A broadcast receiver; lagging behind counts the missed samples as dropped.
    Broadcast(broadcast::Receiver<Sample>),
    /// A bounded mpsc receiver.
    Mpsc(mpsc::Receiver<Sample>),
}

impl From<broadcast::Receiver<Sample>> for SampleSource {
    fn from(rx: broadcast::Receiver<Sample>) -> Self {
        SampleSource::Broadcast(rx)
    }
}

impl From<mpsc::Receiver<Sample>> for SampleSource {
    fn from(rx: mpsc::Receiver<Sample>) -> Self {
        SampleSource::Mpsc(rx)
    }
}

// A short-lived return value, never stored in bulk: boxing the sample would only add an
// allocation per sample.
#[allow(clippy::large_enum_variant)]
enum Received {
    Sample(Sample),
    Lagged(u64),
    Closed,
}

impl SampleSource {
    async fn recv(&mut self) -> Received {
        match self {
            SampleSource::Broadcast(rx) => match rx.recv().await {
                Ok(s) => Received::Sample(s),
                Err(broadcast::error::RecvError::Lagged(n)) => Received::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => Received::Closed,
            },
            SampleSource::Mpsc(rx) => match rx.recv().await {
                Some(s) => Received::Sample(s),
                None => Received::Closed,
            },
        }
    }

    /// Non-blocking receive, for draining at shutdown.
    fn try_recv(&mut self) -> Option<Received> {
        match self {
            SampleSource::Broadcast(rx) => match rx.try_recv() {
                Ok(s) => Some(Received::Sample(s)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Received::Lagged(n)),
                Err(_) => None,
            },
            SampleSource::Mpsc(rx) => rx.try_recv().ok().map(Received::Sample),
        }
    }
}

/// Counters of the writer, as seen by the health job and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Samples held in memory now (waiting or being written).
    pub buffered: usize,
    /// Samples lost: dropped past the bound, missed by a lagging receiver, refused by the
    /// database for a non-transient reason, or left at shutdown.
    pub dropped: u64,
    /// Samples the database accepted (including ones it already had).
    pub written: u64,
    /// Rows that were new in the database.
    pub inserted: u64,
    /// Successful batch writes.
    pub batches: u64,
    /// Failed batch writes (each retry counts).
    pub failed_writes: u64,
    /// Text of the last write error.
    pub last_error: Option<String>,
    /// Whether the last write reached the database.
    pub db_up: bool,
    /// Whether the writer task has ended.
    pub stopped: bool,
}

/// Cheap, cloneable view on a running writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    stats: watch::Receiver<WriterStats>,
    db_up: watch::Receiver<bool>,
}

impl WriterHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> WriterStats {
        self.stats.borrow().clone()
    }

    /// A receiver that changes whenever a counter does.
    pub fn subscribe(&self) -> watch::Receiver<WriterStats> {
        self.stats.clone()
    }

    /// A receiver that changes only on database up/down transitions (raise/clear
    /// `database_unavailable` on it).
    pub fn db_status(&self) -> watch::Receiver<bool> {
        self.db_up.clone()
    }

    /// Waits until `pred` holds for the counters, at most `timeout`; returns the last snapshot
    /// either way (`Err` on timeout).
    pub async fn wait_for(
        &self,
        pred: impl Fn(&WriterStats) -> bool,
        timeout: Duration,
    ) -> Result<WriterStats, WriterStats> {
        let mut rx = self.stats.clone();
        let res = tokio::time::timeout(timeout, async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Some(s.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match res {
            Ok(Some(s)) => Ok(s),
            _ => {
                let s = self.stats();
                if pred(&s) { Ok(s) } else { Err(s) }
            }
        }
    }
}

/// Starts the writer on the current runtime. It ends when `cancel` fires (after a final flush
/// bounded by `shutdown_flush_timeout`) or when the source closes and everything is written.
pub fn spawn_writer(
    store: Arc<dyn Store>,
    source: impl Into<SampleSource>,
    settings: &DatabaseSettings,
    cancel: CancellationToken,
) -> (WriterHandle, JoinHandle<()>) {
    let initial = WriterStats {
        db_up: true,
        ..Default::default()
    };
    let (stats_tx, stats_rx) = watch::channel(initial.clone());
    let (db_tx, db_rx) = watch::channel(true);
    let writer = Writer {
        store,
        batch_size: settings.batch_size.max(1),
        batch_interval: settings.batch_interval,
        capacity: settings.buffer_capacity.max(1),
        retry_initial: settings.retry_initial,
        retry_max: settings.retry_max.max(settings.retry_initial),
        write_timeout: settings.write_timeout,
        shutdown_flush_timeout: settings.shutdown_flush_timeout,
        buffer: VecDeque::new(),
        inflight_len: 0,
        backoff: settings.retry_initial,
        retry_at: None,
        non_transient_attempts: 0,
        drops_unlogged: 0,
        last_drop_log: None,
        stats: initial,
        stats_tx,
        db_tx,
    };
    let task = tokio::spawn(writer.run(source.into(), cancel));
    (
        WriterHandle {
            stats: stats_rx,
            db_up: db_rx,
        },
        task,
    )
}

type WriteFuture = Pin<Box<dyn Future<Output = (Vec<Sample>, Result<u64, StoreError>)> + Send>>;

struct Writer {
    store: Arc<dyn Store>,
    batch_size: usize,
    batch_interval: Duration,
    capacity: usize,
    retry_initial: Duration,
    retry_max: Duration,
    write_timeout: Duration,
    shutdown_flush_timeout: Duration,
    /// Waiting samples with their arrival instant, oldest first.
    buffer: VecDeque<(Instant, Sample)>,
    /// Samples in the batch being written now.
    inflight_len: usize,
    backoff: Duration,
    retry_at: Option<Instant>,
    non_transient_attempts: u32,
    drops_unlogged: u64,
    last_drop_log: Option<Instant>,
    stats: WriterStats,
    stats_tx: watch::Sender<WriterStats>,
    db_tx: watch::Sender<bool>,
}

impl Writer {
    async fn run(mut self, mut source: SampleSource, cancel: CancellationToken) {
        let mut source_open = true;
        let mut inflight: Option<WriteFuture> = None;
        loop {
            let now = Instant::now();
            if inflight.is_none() && self.write_due(now, source_open) {
                inflight = Some(self.start_write());
                self.publish();
            }
            if !source_open && inflight.is_none() && self.buffer.is_empty() {
                break;
            }
            let wake = self.next_wake(inflight.is_some(), source_open);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                res = async { inflight.as_mut().expect("guarded by if").await },
                    if inflight.is_some() => {
                    inflight = None;
                    self.write_done(res.0, res.1);
                }
                r = source.recv(), if source_open => match r {
                    Received::Sample(s) => self.push(s),
                    Received::Lagged(n) => self.note_dropped(n, "lagged"),
                    Received::Closed => source_open = false,
                },
                _ = sleep_until_opt(wake) => {}
            }
            self.maybe_log_drops(false);
            self.publish();
        }
        self.final_flush(inflight, &mut source).await;
    }

    fn write_due(&self, now: Instant, source_open: bool) -> bool {
        let Some((first, _)) = self.buffer.front() else {
            return false;
        };
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        !source_open
            || self.retry_at.is_some()
            || self.buffer.len() >= self.batch_size
            || now >= *first + self.batch_interval
    }

    fn next_wake(&self, inflight: bool, source_open: bool) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        if !inflight && let Some((first, _)) = self.buffer.front() {
            let due = if !source_open || self.buffer.len() >= self.batch_size {
                Instant::now()
            } else {
                *first + self.batch_interval
            };
            // After a failure the retry instant rules; the batch is already due by then.
            wake = Some(self.retry_at.unwrap_or(due));
        }
        if self.drops_unlogged > 0
            && let Some(last) = self.last_drop_log
        {
            let t = last + DROP_LOG_EVERY;
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        wake
    }

    fn start_write(&mut self) -> WriteFuture {
        let n = self.batch_size.min(self.buffer.len());
        let batch: Vec<Sample> = self.buffer.drain(..n).map(|(_, s)| s).collect();
        self.inflight_len = batch.len();
        let store = self.store.clone();
        let timeout = self.write_timeout;
        Box::pin(async move {
            let res = match tokio::time::timeout(timeout, store.insert_samples(&batch)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "write timed out after {}",
                    humantime::format_duration(timeout)
                ))),
            };
            (batch, res)
        })
    }

    fn write_done(&mut self, batch: Vec<Sample>, res: Result<u64, StoreError>) {
        self.inflight_len = 0;
        match res {
            Ok(new_rows) => {
                self.stats.written += batch.len() as u64;
                self.stats.inserted += new_rows;
                self.stats.batches += 1;
                self.backoff = self.retry_initial;
                self.retry_at = None;
                self.non_transient_attempts = 0;
                self.set_db_up(true, None);
            }
            Err(e) => {
                self.stats.failed_writes += 1;
                self.stats.last_error = Some(e.to_string());
                let transient = e.is_transient();
                if transient {
                    self.non_transient_attempts = 0;
                    self.set_db_up(false, Some(&e));
                } else {
                    self.non_transient_attempts += 1;
                    tracing::error!(
                        error = %e,
                        attempt = self.non_transient_attempts,
                        samples = batch.len(),
                        "samples_write_failed"
                    );
                }
                if !transient && self.non_transient_attempts >= MAX_NON_TRANSIENT_ATTEMPTS {
                    // The database refuses this batch; keeping it would block everything behind.
                    self.non_transient_attempts = 0;
                    self.note_dropped(batch.len() as u64, "rejected");
                } else {
                    self.requeue(batch);
                }
                let jitter = rand::rng().random_range(0.8..1.2);
                let wait = self.backoff.mul_f64(jitter);
                self.retry_at = Some(Instant::now() + wait);
                self.backoff = (self.backoff * 2).min(self.retry_max);
            }
        }
    }

    /// Puts a failed batch back at the front (order kept), then enforces the bound.
    fn requeue(&mut self, batch: Vec<Sample>) {
        let now = Instant::now();
        let due = now.checked_sub(self.batch_interval).unwrap_or(now);
        for s in batch.into_iter().rev() {
            self.buffer.push_front((due, s));
        }
        let excess = self.buffer.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.buffer.drain(..excess);
            self.note_dropped(excess as u64, "buffer_full");
        }
    }

    fn push(&mut self, s: Sample) {
        let mut dropped = 0;
        while self.buffer.len() + self.inflight_len >= self.capacity && !self.buffer.is_empty() {
            self.buffer.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            self.note_dropped(dropped, "buffer_full");
        }
        self.buffer.push_back((Instant::now(), s));
    }

    fn note_dropped(&mut self, n: u64, reason: &'static str) {
        if n == 0 {
            return;
        }
        self.stats.dropped += n;
        self.drops_unlogged += n;
        if self.last_drop_log.is_none() {
            // First drop of an episode: say it at once.
            tracing::warn!(
                dropped = self.drops_unlogged,
                total = self.stats.dropped,
                reason,
                "samples_dropped"
            );
            self.drops_unlogged = 0;
            self.last_drop_log = Some(Instant::now());
        }
    }

    fn maybe_log_drops(&mut self, force: bool) {
        let Some(last) = self.last_drop_log else {
            return;
        };
        if last.elapsed() < DROP_LOG_EVERY && !force {
            return;
        }
        if self.drops_unlogged > 0 {
            tracing::warn!(
                dropped = self.drops_unlogged,
                total = self.stats.dropped,
                "samples_dropped"
            );
            self.drops_unlogged = 0;
            self.last_drop_log = Some(Instant::now());
        } else {
            // A quiet period ends the episode; the next drop is logged at once again.
            self.last_drop_log = None;
        }
    }

    fn set_db_up(&mut self, up: bool, err: Option<&StoreError>) {
        if self.stats.db_up == up {
            return;
        }
        self.stats.db_up = up;
        if up {
            tracing::info!(buffered = self.buffer.len(), "database_available");
        } else {
            tracing::warn!(
                error = %err.map(|e| e.to_string()).unwrap_or_default(),
                buffered = self.buffer.len() + self.inflight_len,
                "database_unavailable"
            );
        }
        self.db_tx.send_replace(up);
    }

    fn publish(&mut self) {
        self.stats.buffered = self.buffer.len() + self.inflight_len;
        let s = &self.stats;
        self.stats_tx.send_if_modified(|cur| {
            if cur == s {
                false
            } else {
                cur.clone_from(s);
                true
            }
        });
    }

    /// At shutdown: finish the write in flight, drain what the channel holds and write it all,
    /// within `shutdown_flush_timeout`; what is left is counted as dropped.
    async fn final_flush(mut self, inflight: Option<WriteFuture>, source: &mut SampleSource) {
        let deadline = Instant::now() + self.shutdown_flush_timeout;
        if let Some(f) = inflight {
            match tokio::time::timeout_at(deadline, f).await {
                Ok((batch, res)) => self.write_done(batch, res),
                Err(_) => {
                    let n = self.inflight_len as u64;
                    self.inflight_len = 0;
                    self.note_dropped(n, "shutdown");
                }
            }
        }
        while let Some(r) = source.try_recv() {
            match r {
                Received::Sample(s) => self.push(s),
                Received::Lagged(n) => self.note_dropped(n, "lagged"),
                Received::Closed => break,
            }
        }
        while !self.buffer.is_empty() && Instant::now() < deadline {
            let f = self.start_write();
            match tokio::time::timeout_at(deadline, f).await {
                Ok((batch, res)) => {
                    let failed = res.is_err();
                    self.write_done(batch, res);
                    if failed {
                        break;
                    }
                }
                Err(_) => {
                    let n = self.inflight_len as u64;
                    self.inflight_len = 0;
                    self.note_dropped(n, "shutdown");
                    break;
                }
            }
        }
        let left = self.buffer.len() as u64;
        self.buffer.clear();
        self.note_dropped(left, "shutdown");
        self.maybe_log_drops(true);
        self.stats.stopped = true;
        self.publish();
        tracing::info!(
            written = self.stats.written,
            dropped = self.stats.dropped,
            "writer_stopped"
        );
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
