//! The edge side of store-and-forward, on the local SQLite store (migration 0009): the queue of
//! telemetry rows not yet acknowledged by the central database (filled by a trigger, in
//! insertion order), the persisted high-water marks of telemetry and of the command audit, the
//! backlog bound (oldest entries dropped first, counted) and switching the queue on or off. Has
//! its own small pool so that forwarding never waits on the store's connections. Touches only
//! `forward_queue`, `forward_state` and reads `battery_status` and `commands` of its file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::rows::sqlite::{json_from_text, sample_from_row};
use super::{CommandRecord, StoreError, from_micros, parse_enum};
use crate::domain::Sample;

/// One queued telemetry row: its place in the edge's insertion order and the row itself (None
/// when local retention removed it before it could be forwarded).
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// Insertion order on the edge (`forward_queue.seq`).
    pub seq: i64,
    /// The stored sample.
    pub sample: Option<Sample>,
}

/// The persisted state of the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardState {
    /// Whether the trigger queues new telemetry rows.
    pub enabled: bool,
    /// Last telemetry `seq` acknowledged by the central database (or dropped).
    pub hwm: i64,
    /// Last command audit `id` acknowledged by the central database.
    pub commands_hwm: i64,
    /// Queue entries given up so far (backlog bound or local retention), rows.
    pub dropped: i64,
}

/// Switches the queue on or off (called by the store at every start). Turning it off empties
/// the queue, so an edge that stops forwarding does not grow it; logs `forward_queue_cleared`.
pub(super) async fn set_enabled(pool: &SqlitePool, on: bool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE forward_state SET enabled = ?1 WHERE id = 1")
        .bind(on)
        .execute(&mut *tx)
        .await?;
    if !on {
        let rows = sqlx::query("DELETE FROM forward_queue")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if rows > 0 {
            tracing::info!(rows, "forward_queue_cleared: [central] url is not set");
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The forwarding queue of one local SQLite store.
#[derive(Debug, Clone)]
pub struct EdgeQueue {
    pool: SqlitePool,
}

impl EdgeQueue {
    /// Opens a pool of two connections on the SQLite file at `url` (already migrated by the
    /// store); `busy` is how long a statement waits for the writer's lock.
    pub async fn open(url: &str, busy: Duration) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", super::redact_url(url))))?
            .busy_timeout(busy);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(busy)
            .connect_with(opts)
            .await?;
        let q = Self { pool };
        q.state().await?;
        Ok(q)
    }

    /// The persisted state.
    pub async fn state(&self) -> Result<ForwardState, StoreError> {
        let r = sqlx::query(
            "SELECT enabled, hwm, commands_hwm, dropped FROM forward_state WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ForwardState {
            enabled: r.try_get("enabled")?,
            hwm: r.try_get("hwm")?,
            commands_hwm: r.try_get("commands_hwm")?,
            dropped: r.try_get("dropped")?,
        })
    }

    /// Telemetry rows waiting to be forwarded.
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM forward_queue")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Keeps at most `max` queued rows by dropping the oldest; returns how many were dropped.
    pub async fn trim(&self, max: u64) -> Result<u64, StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM forward_queue")
            .fetch_one(&mut *tx)
            .await?;
        if n <= max {
            return Ok(0);
        }
        let excess = n - max;
        let last: i64 =
            sqlx::query_scalar("SELECT seq FROM forward_queue ORDER BY seq LIMIT 1 OFFSET ?1")
                .bind(excess - 1)
                .fetch_one(&mut *tx)
                .await?;
        let dropped = sqlx::query("DELETE FROM forward_queue WHERE seq <= ?1")
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE forward_state SET hwm = MAX(hwm, ?1), dropped = dropped + ?2 WHERE id = 1",
        )
        .bind(last)
        .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(dropped)
    }

    /// The oldest `limit` queued rows after the high-water mark, in insertion order.
    pub async fn next_batch(&self, limit: usize) -> Result<Vec<Queued>, StoreError> {
        let rows = sqlx::query(
            "SELECT q.seq AS seq, b.* FROM forward_queue q \
             LEFT JOIN battery_status b ON b.device_id = q.device_id AND b.time = q.time \
             WHERE q.seq > (SELECT hwm FROM forward_state WHERE id = 1) \
             ORDER BY q.seq LIMIT ?1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let present = r.try_get::<Option<String>, _>("device_id")?.is_some();
                Ok(Queued {
                    seq: r.try_get("seq")?,
                    sample: if present {
                        Some(sample_from_row(r)?)
                    } else {
                        None
                    },
                })
            })
            .collect()
    }

    /// Records that every queued row up to `last_seq` reached the central database (`expired`
    /// of them were gone locally and are counted as dropped): one transaction.
    pub async fn ack(&self, last_seq: i64, expired: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM forward_queue WHERE seq <= ?1")
            .bind(last_seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE forward_state SET hwm = MAX(hwm, ?1), dropped = dropped + ?2 WHERE id = 1",
        )
        .bind(last_seq)
        .bind(i64::try_from(expired).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The oldest `limit` command audit rows after the commands high-water mark, with their ids.
    pub async fn commands_after(
        &self,
        limit: usize,
    ) -> Result<Vec<(i64, CommandRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, source, device, payload, status, error, latency_ms FROM commands \
             WHERE id > (SELECT commands_hwm FROM forward_state WHERE id = 1) \
             ORDER BY id LIMIT ?1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    CommandRecord {
                        at: from_micros(r.try_get("at")?)?,
                        source: parse_enum("command source", r.try_get("source")?)?,
                        device: r.try_get("device")?,
                        payload: json_from_text("command payload", r.try_get("payload")?)?
                            .unwrap_or_default(),
                        status: parse_enum("command status", r.try_get("status")?)?,
                        error: r.try_get("error")?,
                        latency_ms: r.try_get("latency_ms")?,
                    },
                ))
            })
            .collect()
    }

    /// Records that the command audit up to `last_id` reached the central database.
    pub async fn ack_commands(&self, last_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE forward_state SET commands_hwm = MAX(commands_hwm, ?1) WHERE id = 1")
            .bind(last_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
