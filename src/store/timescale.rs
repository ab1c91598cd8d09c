//! The TimescaleDB step of the PostgreSQL backend, run at every start after the migrations when
//! the server has `timescaledb` preloaded: the extension, `battery_status` as a hypertable with
//! compression (segment by device), the continuous aggregates `battery_hourly` and
//! `battery_daily` (columns from `history.rs`) with their refresh policies, and the compression
//! and retention policies with the configured intervals; for a central database, the same for
//! `fleet_battery_status` (segment by site and device). Idempotent; several bridges starting
//! at once serialise on an advisory lock. Touches only the database it is given.

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Connection};

use super::history::{PG_DAILY_COLUMNS, PG_HOURLY_COLUMNS};
use super::{Backend, DatabaseSettings, StoreError};

/// Advisory lock key of the step (any constant; "marstek" in ASCII).
const LOCK_KEY: i64 = 0x006d_6172_7374_656b;

/// How far back the aggregates' refresh policies re-read raw rows (late samples up to this age
/// still reach the aggregates). Must stay below `retention_days`, which is validated ≥ 4 days.
pub(crate) const REFRESH_LOOKBACK_DAYS: i32 = 3;

/// Whether the server can run TimescaleDB: installed and preloaded. Preloading is seen from a
/// setting the preloaded loader defines (`shared_preload_libraries` itself is hidden from
/// roles without `pg_read_all_settings`, such as the compose file's bridge role).
async fn usable(pool: &PgPool) -> Result<bool, StoreError> {
    let (installed, preloaded): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), \
         current_setting('timescaledb.max_background_workers', true) IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(installed && preloaded)
}

/// Runs the step when TimescaleDB is usable; returns which backend is in effect. A server that
/// has the extension but refuses it here (no privilege) runs as plain PostgreSQL, logged once
/// as `timescaledb_unusable`.
pub(crate) async fn enable(
    pool: &PgPool,
    settings: &DatabaseSettings,
) -> Result<Backend, StoreError> {
    if !usable(pool).await? {
        return Ok(Backend::Postgres);
    }
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let result = steps(&mut conn, settings).await;
    let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    match (result, unlock) {
        (Ok(()), Ok(_)) => Ok(Backend::Timescale),
        (Ok(()), Err(e)) => {
            // The session is gone with its lock; the step itself completed.
            conn.detach().close().await.ok();
            tracing::warn!(error = %e, "timescaledb_unlock_failed");
            Ok(Backend::Timescale)
        }
        (Err(e), _) => {
            let e = StoreError::from(e);
            if e.is_transient() {
                return Err(e);
            }
            tracing::warn!(error = %e, "timescaledb_unusable");
            Ok(Backend::Postgres)
        }
    }
}

async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .map(|_| ())
}

async fn steps(conn: &mut PgConnection, s: &DatabaseSettings) -> Result<(), sqlx::Error> {
    exec(conn, "CREATE EXTENSION IF NOT EXISTS timescaledb").await?;
    exec(
        conn,
        "SELECT create_hypertable('battery_status', 'time', if_not_exists => TRUE, \
         migrate_data => TRUE, create_default_indexes => FALSE)",
    )
    .await?;
    let segmented: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.compression_settings \
         WHERE hypertable_name = 'battery_status' AND attname = 'device_id' \
         AND segmentby_column_index = 1)",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !segmented {
        exec(
            conn,
            "ALTER TABLE battery_status SET (timescaledb.compress, \
             timescaledb.compress_segmentby = 'device_id', \
             timescaledb.compress_orderby = 'time DESC')",
        )
        .await?;
    }
    aggregates(conn).await?;
    policies(conn, s).await
}

/// Creates the continuous aggregates when missing; a new one is filled from every stored row at
/// once, so an upgraded database keeps its whole history in them.
async fn aggregates(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT view_name::text FROM timescaledb_information.continuous_aggregates \
         WHERE view_name IN ('battery_hourly', 'battery_daily')",
    )
    .fetch_all(&mut *conn)
    .await?;
    if !existing.iter().any(|v| v == "battery_hourly") {
        exec(
            conn,
            &format!(
                "CREATE MATERIALIZED VIEW battery_hourly WITH (timescaledb.continuous, \
                 timescaledb.materialized_only = false) AS \
                 SELECT device_id, time_bucket(INTERVAL '1 hour', time) AS bucket, \
                 {PG_HOURLY_COLUMNS} FROM battery_status \
                 GROUP BY device_id, time_bucket(INTERVAL '1 hour', time) WITH NO DATA"
            ),
        )
        .await?;
        exec(
            conn,
            "CALL refresh_continuous_aggregate('battery_hourly', NULL, \
             date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')",
        )
        .await?;
    }
    if !existing.iter().any(|v| v == "battery_daily") {
        exec(
            conn,
            &format!(
                "CREATE MATERIALIZED VIEW battery_daily WITH (timescaledb.continuous, \
                 timescaledb.materialized_only = false) AS \
                 SELECT device_id, time_bucket(INTERVAL '1 day', bucket) AS bucket, \
                 {PG_DAILY_COLUMNS} FROM battery_hourly \
                 GROUP BY device_id, time_bucket(INTERVAL '1 day', bucket) WITH NO DATA"
            ),
        )
        .await?;
        exec(
            conn,
            "CALL refresh_continuous_aggregate('battery_daily', NULL, \
             date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')",
        )
        .await?;
    }
    Ok(())
}

/// Replaces the compression and retention policies, so a changed setting takes effect at the
/// next start; keeps the refresh policies when they are already as wanted (see
/// [`refresh_policy`]).
async fn policies(conn: &mut PgConnection, s: &DatabaseSettings) -> Result<(), sqlx::Error> {
    exec(
        conn,
        "SELECT remove_compression_policy('battery_status', if_exists => TRUE)",
    )
    .await?;
    sqlx::query("SELECT add_compression_policy('battery_status', make_interval(days => $1))")
        .bind(days(s.compress_after_days))
        .execute(&mut *conn)
        .await?;
    for (view, every) in [
        ("battery_hourly", "30 minutes"),
        ("battery_daily", "1 hour"),
    ] {
        refresh_policy(conn, view, every).await?;
    }
    for (relation, keep) in [
        ("battery_status", s.retention_days),
        ("battery_hourly", s.aggregate_retention_days),
        ("battery_daily", s.aggregate_retention_days),
    ] {
        exec(
            conn,
            &format!("SELECT remove_retention_policy('{relation}', if_exists => TRUE)"),
        )
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "SELECT add_retention_policy('{relation}', make_interval(days => $1))"
        )))
        .bind(days(keep))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The refresh policy of the continuous aggregate `view`, run `every` (an SQL interval) over
/// the last [`REFRESH_LOOKBACK_DAYS`] up to an hour ago. It depends on no setting, so one
/// already as wanted is kept with its schedule. A policy (re)added here first runs one period
/// later, not at once: the step has just filled a new aggregate, and while a policy refreshes
/// an aggregate any other refresh of it (`CALL run_job`, `refresh_continuous_aggregate`, a
/// second bridge's step) fails with SQLSTATE 55P03 (`lock_not_available`). Re-adding the
/// policies at every start made that collision likely in the seconds after each start.
async fn refresh_policy(
    conn: &mut PgConnection,
    view: &str,
    every: &str,
) -> Result<(), sqlx::Error> {
    let (matching, all): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*) FILTER (WHERE schedule_interval = INTERVAL '{every}' \
           AND (config->>'start_offset')::interval = make_interval(days => $1) \
           AND (config->>'end_offset')::interval = INTERVAL '1 hour'), count(*) \
         FROM timescaledb_information.jobs \
         WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = '{view}'"
    )))
    .bind(REFRESH_LOOKBACK_DAYS)
    .fetch_one(&mut *conn)
    .await?;
    if (matching, all) == (1, 1) {
        return Ok(());
    }
    exec(
        conn,
        &format!("SELECT remove_continuous_aggregate_policy('{view}', if_exists => TRUE)"),
    )
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "SELECT add_continuous_aggregate_policy('{view}', \
         start_offset => make_interval(days => $1), end_offset => INTERVAL '1 hour', \
         schedule_interval => INTERVAL '{every}', initial_start => now() + INTERVAL '{every}')"
    )))
    .bind(REFRESH_LOOKBACK_DAYS)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Days as the `int` `make_interval` takes (settings are validated far below `i32::MAX`).
fn days(d: u32) -> i32 {
    i32::try_from(d).unwrap_or(i32::MAX)
}

/// The central side's step ([`super::central`]): `fleet_battery_status` as a hypertable
/// compressed by (site_id, device_id), with compression after `compress_after_days` and
/// retention of `retention_days`. Idempotent, under its own advisory lock; returns the backend
/// in effect (plain PostgreSQL when TimescaleDB is not usable).
pub(crate) async fn enable_fleet(
    pool: &PgPool,
    retention_days: u32,
    compress_after_days: u32,
) -> Result<Backend, StoreError> {
    if !usable(pool).await? {
        return Ok(Backend::Postgres);
    }
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY + 1)
        .execute(&mut *conn)
        .await?;
    let result = fleet_steps(&mut conn, retention_days, compress_after_days).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY + 1)
        .execute(&mut *conn)
        .await;
    result?;
    Ok(Backend::Timescale)
}

async fn fleet_steps(
    conn: &mut PgConnection,
    retention_days: u32,
    compress_after_days: u32,
) -> Result<(), sqlx::Error> {
    exec(conn, "CREATE EXTENSION IF NOT EXISTS timescaledb").await?;
    exec(
        conn,
        "SELECT create_hypertable('fleet_battery_status', 'time', if_not_exists => TRUE, \
         migrate_data => TRUE, create_default_indexes => FALSE)",
    )
    .await?;
    let segmented: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.compression_settings \
         WHERE hypertable_name = 'fleet_battery_status' AND attname = 'device_id' \
         AND segmentby_column_index = 2)",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !segmented {
        exec(
            conn,
            "ALTER TABLE fleet_battery_status SET (timescaledb.compress, \
             timescaledb.compress_segmentby = 'site_id, device_id', \
             timescaledb.compress_orderby = 'time DESC')",
        )
        .await?;
    }
    exec(
        conn,
        "SELECT remove_compression_policy('fleet_battery_status', if_exists => TRUE)",
    )
    .await?;
    sqlx::query("SELECT add_compression_policy('fleet_battery_status', make_interval(days => $1))")
        .bind(days(compress_after_days))
        .execute(&mut *conn)
        .await?;
    exec(
        conn,
        "SELECT remove_retention_policy('fleet_battery_status', if_exists => TRUE)",
    )
    .await?;
    sqlx::query("SELECT add_retention_policy('fleet_battery_status', make_interval(days => $1))")
        .bind(days(retention_days))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
