//! The store-and-forward task of an edge bridge: replays the telemetry rows queued in the local
//! SQLite store (and the command audit, and the device list) to the central database, oldest
//! first, in batches, each acknowledged locally only after the centre committed it (a replay
//! after a crash is ignored centrally by the (site, device, time) key). Keeps the backlog under
//! `central.max_backlog` by dropping the oldest queued rows (counted, logged), backs off while
//! the centre is unreachable, bounds every central operation by `central.timeout`, and reports
//! rows forwarded, backlog, drops and last success as metrics and in a watch channel. Runs in
//! its own task with its own pools: local control never waits on it. With an identity
//! ([`Forwarder::with_identity`]) it also claims its site centrally as its instance with its
//! batteries each round, and raises `site_id_conflict` (cleared once it ends) when another
//! instance claims the same site with other batteries. Touches the local queue (through
//! `store::forward`), the central database (through `store::central`) and the alert channel.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::central::CentralSettings;
use crate::domain::{Alert, AlertKind, AlertSender, AlertState, Severity};
use crate::store::central::{Central, Claim};
use crate::store::forward::EdgeQueue;
use crate::store::{Store, StoreError};

/// What the forwarder did since it started (and the persisted part of its state).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForwardStats {
    /// Telemetry rows acknowledged by the centre since start.
    pub forwarded: u64,
    /// Of those, rows the centre already had (a replay after an interrupted round).
    pub duplicates: u64,
    /// Command audit rows acknowledged since start.
    pub commands: u64,
    /// Queued rows dropped since start (backlog bound or pruned locally first).
    pub dropped: u64,
    /// Rows waiting after the last round.
    pub backlog: u64,
    /// Last telemetry sequence acknowledged (persisted high-water mark).
    pub hwm: i64,
    /// Rounds that failed since start.
    pub failures: u64,
    /// End of the last successful round.
    pub last_success: Option<DateTime<Utc>>,
    /// The error of the last failed round, cleared by a success.
    pub last_error: Option<String>,
}

/// Watches a running forwarder.
#[derive(Debug, Clone)]
pub struct ForwarderHandle {
    stats: watch::Receiver<ForwardStats>,
}

impl ForwarderHandle {
    /// The latest statistics.
    pub fn stats(&self) -> ForwardStats {
        self.stats.borrow().clone()
    }

    /// Waits until `pred` holds for the statistics (or the forwarder ended); returns them.
    pub async fn wait_for(&self, pred: impl FnMut(&ForwardStats) -> bool) -> ForwardStats {
        let mut rx = self.stats.clone();
        let seen = rx.wait_for(pred).await.map(|s| s.clone());
        seen.unwrap_or_else(|_| rx.borrow().clone())
    }
}

/// The forwarder of one site.
pub struct Forwarder {
    settings: CentralSettings,
    site: String,
    queue: EdgeQueue,
    store: Arc<dyn Store>,
    central: Option<Central>,
    stats: watch::Sender<ForwardStats>,
    /// This edge's claim on its site, and where a conflict is raised.
    identity: Option<(Claim, Option<AlertSender>)>,
    /// Whether `site_id_conflict` is raised.
    conflicting: bool,
}

/// Opens the forwarder's local pool on `local_url` (the SQLite store, already migrated with
/// forwarding enabled) and returns the forwarder (spawn [`Forwarder::run`]) with its handle.
/// `store` lists the devices. Does not reach the central database yet.
pub async fn prepare(
    settings: &CentralSettings,
    site: &str,
    local_url: &str,
    store: Arc<dyn Store>,
) -> Result<(Forwarder, ForwarderHandle), StoreError> {
    let queue = EdgeQueue::open(local_url, settings.timeout).await?;
    let state = queue.state().await?;
    let (tx, rx) = watch::channel(ForwardStats {
        hwm: state.hwm,
        ..ForwardStats::default()
    });
    let f = Forwarder {
        settings: settings.clone(),
        site: site.to_string(),
        queue,
        store,
        central: None,
        stats: tx,
        identity: None,
        conflicting: false,
    };
    tracing::info!(
        central = %settings.redacted_url(),
        hwm = state.hwm,
        commands_hwm = state.commands_hwm,
        "forwarder_starting"
    );
    Ok((f, ForwarderHandle { stats: rx }))
}

/// One round's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// A full batch went: more may wait, the next round starts at once.
    pub more: bool,
}

impl Forwarder {
    /// Claims the site centrally as `me` every round; a conflicting claim raises
    /// `site_id_conflict` on `alerts`.
    pub fn with_identity(mut self, me: Claim, alerts: Option<AlertSender>) -> Self {
        self.identity = Some((me, alerts));
        self
    }

    /// Forwards until `token` is cancelled: rounds back to back while batches are full, then
    /// one every `central.interval`; after a failure, waits with exponential backoff.
    pub async fn run(mut self, token: CancellationToken) {
        let mut backoff = self.settings.retry_initial;
        loop {
            let round = tokio::select! {
                () = token.cancelled() => break,
                r = self.round() => r,
            };
            let pause = match round {
                Ok(Round { more: true }) => {
                    backoff = self.settings.retry_initial;
                    continue;
                }
                Ok(Round { more: false }) => {
                    backoff = self.settings.retry_initial;
                    self.settings.interval
                }
                Err(e) => {
                    let pause = backoff;
                    backoff = (backoff * 2).min(self.settings.retry_max);
                    self.failed(&e, pause).await;
                    pause
                }
            };
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(hwm = self.stats.borrow().hwm, "forwarder_stopped");
    }

    /// Bounds a central operation by `central.timeout`.
    async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.settings.timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "central {what} took longer than central.timeout ({:?})",
                self.settings.timeout
            ))),
        }
    }

    async fn central(&mut self) -> Result<Central, StoreError> {
        if let Some(c) = &self.central {
            return Ok(c.clone());
        }
        let target = self.settings.target();
        let c = self.bounded("connect", Central::connect(&target)).await?;
        tracing::info!(central = %self.settings.redacted_url(), backend = ?c.backend(), "central_connected");
        self.central = Some(c.clone());
        Ok(c)
    }

    /// One round: trim the backlog to its bound, then one batch of telemetry, one of commands,
    /// the devices when caught up, and the site's contact row. A failed round changes nothing
    /// that was not acknowledged; [`Forwarder::run`] calls this (tests call it directly).
    pub async fn round(&mut self) -> Result<Round, StoreError> {
        let trimmed = self.queue.trim(self.settings.max_backlog).await?;
        if trimmed > 0 {
            tracing::warn!(
                rows = trimmed,
                max_backlog = self.settings.max_backlog,
                "forward_backlog_over_bound: oldest queued rows dropped (kept locally)"
            );
            metrics::counter!("marstek_forward_dropped_rows_total", "reason" => "backlog_bound")
                .increment(trimmed);
            self.stats.send_modify(|s| s.dropped += trimmed);
        }
        let central = self.central().await?;
        let batch = self.queue.next_batch(self.settings.batch_size).await?;
        let full = batch.len() == self.settings.batch_size;
        if let Some(last) = batch.last().map(|q| q.seq) {
            let (mut samples, mut seqs) = (Vec::new(), Vec::new());
            for q in &batch {
                if let Some(s) = &q.sample {
                    samples.push(s.clone());
                    seqs.push(q.seq);
                }
            }
            let expired = (batch.len() - samples.len()) as u64;
            let site = self.site.clone();
            let new = self
                .bounded("insert", central.insert_samples(&site, &samples, &seqs))
                .await?;
            self.queue.ack(last, expired).await?;
            let sent = samples.len() as u64;
            metrics::counter!("marstek_forward_rows_total").increment(sent);
            if expired > 0 {
                metrics::counter!("marstek_forward_dropped_rows_total", "reason" => "pruned_locally")
                    .increment(expired);
            }
            self.stats.send_modify(|s| {
                s.forwarded += sent;
                s.duplicates += sent - new.min(sent);
                s.dropped += expired;
                s.hwm = last;
            });
        }
        let commands_full = self.commands(&central).await?;
        if !full {
            let devices = self.store.devices().await?;
            let site = self.site.clone();
            self.bounded("devices", central.upsert_devices(&site, &devices))
                .await?;
        }
        let backlog = self.queue.backlog().await?;
        let dropped = self.queue.state().await?.dropped;
        let site = self.site.clone();
        self.bounded("contact", central.contact(&site, backlog, dropped))
            .await?;
        self.claim(&central).await?;
        let now = Utc::now();
        metrics::gauge!("marstek_forward_backlog_rows").set(backlog as f64);
        metrics::gauge!("marstek_forward_last_success_seconds").set(now.timestamp() as f64);
        self.stats.send_modify(|s| {
            s.backlog = backlog;
            s.last_success = Some(now);
            s.last_error = None;
        });
        Ok(Round {
            more: full || commands_full,
        })
    }

    /// Claims the site as this instance; raises or clears `site_id_conflict` on a change.
    async fn claim(&mut self, central: &Central) -> Result<(), StoreError> {
        let Some((me, alerts)) = self.identity.clone() else {
            return Ok(());
        };
        let site = self.site.clone();
        let within = self.settings.offline_after;
        let others = self
            .bounded("claim", central.claim(&site, &me, within))
            .await?;
        let now_conflicting = !others.is_empty();
        if now_conflicting == self.conflicting {
            return Ok(());
        }
        self.conflicting = now_conflicting;
        let message = conflict_message(&site, &me, &others);
        if now_conflicting {
            tracing::error!(site = %site, others = ?others, "site_id_conflict");
        } else {
            tracing::info!(site = %site, "site_id_conflict_cleared");
        }
        if let Some(tx) = alerts {
            let state = if now_conflicting {
                AlertState::Raised
            } else {
                AlertState::Cleared
            };
            let alert = Alert::raised(
                AlertKind::SiteIdConflict,
                Severity::Critical,
                None,
                message,
                Utc::now(),
            );
            let _ = tx.send(alert.in_state(state));
        }
        Ok(())
    }

    /// One batch of the command audit; true when it was full.
    async fn commands(&mut self, central: &Central) -> Result<bool, StoreError> {
        let commands = self.queue.commands_after(self.settings.batch_size).await?;
        let Some(last) = commands.last().map(|(id, _)| *id) else {
            return Ok(false);
        };
        let site = self.site.clone();
        self.bounded("commands", central.insert_commands(&site, &commands))
            .await?;
        self.queue.ack_commands(last).await?;
        let n = commands.len() as u64;
        metrics::counter!("marstek_forward_commands_total").increment(n);
        self.stats.send_modify(|s| s.commands += n);
        Ok(commands.len() == self.settings.batch_size)
    }

    /// Logs and counts a failed round; the backlog is read locally (the centre may be down).
    async fn failed(&mut self, e: &StoreError, pause: Duration) {
        let backlog = self.queue.backlog().await.ok();
        if !e.is_transient() {
            // A refused statement may mean a half-set-up connection: start afresh next time.
            self.central = None;
        }
        tracing::warn!(
            error = %e,
            backlog,
            retry_in = ?pause,
            "forward_failed"
        );
        metrics::counter!("marstek_forward_failures_total").increment(1);
        if let Some(b) = backlog {
            metrics::gauge!("marstek_forward_backlog_rows").set(b as f64);
        }
        self.stats.send_modify(|s| {
            s.failures += 1;
            s.last_error = Some(e.to_string());
            if let Some(b) = backlog {
                s.backlog = b;
            }
        });
    }
}

/// What a `site_id_conflict` alert says: who else claims the site, from where, with what.
fn conflict_message(site: &str, me: &Claim, others: &[Claim]) -> String {
    if others.is_empty() {
        return format!("site {site}: no other bridge claims it with other batteries any more");
    }
    let list: Vec<String> = others
        .iter()
        .map(|o| {
            format!(
                "{} on {} with [{}]",
                o.instance,
                o.host,
                o.devices.join(", ")
            )
        })
        .collect();
    format!(
        "site {site} is claimed by another bridge with other batteries: {} (this one: {} on {} \
         with [{}]); give each site its own bridge.site_id",
        list.join("; "),
        me.instance,
        me.host,
        me.devices.join(", ")
    )
}
