//! Persistence behind one `Store` trait with two backends chosen by the URL scheme:
//! PostgreSQL/TimescaleDB (`postgres://`) and an embedded SQLite file (`sqlite://`). Holds devices,
//! telemetry, alerts, the command audit, scheduled jobs and their runs, desired state, Tempo days
//! and the leader lease. Only this module talks SQL; callers see domain types and records.
//! `open` picks the backend and applies the embedded migrations (then `timescale` sets up the
//! hypertable, continuous aggregates and policies); `history` answers the hourly/daily energy
//! history on every backend; `writer` batches telemetry and survives database outages; `site`
//! gives rows from before migration 0008 the local site; `forward` is the edge side of
//! store-and-forward (the SQLite queue and high-water marks) and `central` the central side (the
//! `fleet_*` tables of a central PostgreSQL/TimescaleDB). Every new row of devices, telemetry,
//! alerts, the command audit and job runs carries `DatabaseSettings::site_id`. Touches only the
//! database named by `DatabaseSettings::url` (and, through `central`, the central one).

pub mod central;
pub mod forward;
mod history;
mod house;
mod pg;
mod pg_samples;
mod rows;
mod settings;
mod site;
mod sqlite;
mod timescale;
pub mod writer;

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Alert, CommandSource, CommandStatus, DesiredState, DeviceId, DeviceInfo, Sample,
};

pub use history::{Bucket, EnergyBucket};
pub use house::{HouseHour, MAX_PV_W};
pub use pg::PgStore;
pub use settings::{DatabaseSettings, UrlKind, redact_url, url_kind};
pub use sqlite::SqliteStore;
pub use writer::{SampleSource, WriterHandle, WriterStats, spawn_writer};

/// Errors at the storage edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached (connection refused, pool timed out, …); worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A migration failed (names the file).
    #[error("migration failed: {0}")]
    Migration(String),
    /// The database URL is not usable (password redacted).
    #[error("database.url: {0}")]
    BadUrl(String),
    /// Anything else.
    #[error("database error: {0}")]
    Other(String),
}

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// PostgreSQL without TimescaleDB.
    Postgres,
    /// PostgreSQL with the TimescaleDB extension (hypertable, compression, retention).
    Timescale,
    /// Embedded SQLite file.
    Sqlite,
}

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Identity reported by the device.
    pub info: DeviceInfo,
    /// First time the bridge saw it.
    pub first_seen_at: DateTime<Utc>,
    /// Last time it answered (updated by the health job).
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// One entry of the command audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// When the command arrived.
    pub at: DateTime<Utc>,
    /// Who issued it (stored as its lowercase name: `mqtt`, `http`, `scheduler`, …).
    pub source: CommandSource,
    /// Battery addressed (as given, even when unknown).
    pub device: String,
    /// The payload as received or built.
    pub payload: serde_json::Value,
    /// How it ended (stored as `ok` or `error`).
    pub status: CommandStatus,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Time from receipt to result, ms.
    pub latency_ms: Option<f64>,
}

/// A scheduled job as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Fixed job id, e.g. `job_switch_to_auto`.
    pub id: String,
    /// Trigger spec as text (`cron:0 6 * * *` or `interval:300s`).
    pub trigger: String,
    /// Whether `trigger` was edited over MQTT/CLI and wins over the config.
    pub trigger_overridden: bool,
    /// Next fire instant (UTC); None when paused.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Paused by a user.
    pub paused: bool,
    /// Scheduled instant of the last run or miss.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Status of the last run or miss.
    pub last_status: Option<RunStatus>,
}

/// Status of one job run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started, not finished.
    Running,
    /// Finished without error.
    Completed,
    /// Finished with an error.
    Failed,
    /// Not run: later than the grace time.
    Missed,
    /// Not run: the previous run of the job was still going.
    Skipped,
}

impl RunStatus {
    /// Lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Missed => "missed",
            RunStatus::Skipped => "skipped",
        }
    }
}

/// One job run, unique on (job_id, scheduled_for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRunRecord {
    /// Job id.
    pub job_id: String,
    /// The scheduled instant this run answers (UTC).
    pub scheduled_for: DateTime<Utc>,
    /// Status.
    pub status: RunStatus,
    /// Instance that ran it.
    pub instance: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Result detail (per-battery outcomes).
    pub result: Option<serde_json::Value>,
    /// Error text with cause chain, when failed.
    pub error: Option<String>,
}

impl JobRunRecord {
    /// A run of `job_id` for the instant `scheduled_for`, started by `instance` at `at`.
    pub fn started(
        job_id: &str,
        scheduled_for: DateTime<Utc>,
        instance: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            job_id: job_id.to_string(),
            scheduled_for,
            status: RunStatus::Running,
            instance: instance.to_string(),
            started_at: Some(at),
            finished_at: None,
            result: None,
            error: None,
        }
    }

    /// An instant that was not run (`Missed`, `Skipped`), recorded at `at` with the reason.
    pub fn not_run(
        job_id: &str,
        scheduled_for: DateTime<Utc>,
        instance: &str,
        status: RunStatus,
        at: DateTime<Utc>,
        why: String,
    ) -> Self {
        Self {
            started_at: None,
            finished_at: Some(at),
            status,
            error: Some(why),
            ..Self::started(job_id, scheduled_for, instance, at)
        }
    }

    /// This run, failed at `at` with `error`.
    pub fn failed(self, at: DateTime<Utc>, error: String) -> Self {
        Self {
            status: RunStatus::Failed,
            finished_at: Some(at),
            error: Some(error),
            ..self
        }
    }
}

/// A Tempo colour as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TempoDayRecord {
    /// Calendar date the colour applies to (06:00 that day to 06:00 the next).
    pub date: NaiveDate,
    /// `blue`, `white` or `red`.
    pub colour: String,
    /// Source that answered (`api-couleur-tempo`, `rte`, …).
    pub source: String,
    /// When it was fetched.
    pub fetched_at: DateTime<Utc>,
}

/// A key/value document the bridge keeps (precharge plan, Tempo decision, …).
pub type Document = serde_json::Value;

/// Everything the bridge persists. Implementations must be safe to share between tasks.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Cheap round-trip to check the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts or updates a device's identity; keeps `first_seen_at`.
    async fn upsert_device(
        &self,
        info: &DeviceInfo,
        seen_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Sets `last_seen_at` of a device.
    async fn touch_device(&self, id: &DeviceId, seen_at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Every known device.
    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Writes samples in one batch; a sample already stored (same device and time) is ignored.
    /// Returns how many rows were new.
    async fn insert_samples(&self, samples: &[Sample]) -> Result<u64, StoreError>;
    /// The newest sample of every device.
    async fn latest_samples(&self) -> Result<Vec<Sample>, StoreError>;
    /// Samples of one device in [from, to), oldest first.
    async fn sample_history(
        &self,
        device: &DeviceId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Sample>, StoreError>;
    /// Deletes samples older than `before` (retention without TimescaleDB); returns rows deleted.
    /// Without TimescaleDB, every hour starting before `before` is first rolled up (from all of
    /// its rows) into the hourly energy history, so `energy_history` outlives the raw rows.
    async fn prune_samples(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Energy history of one battery: one `EnergyBucket` per `bucket` (hour or UTC day) whose
    /// start lies in [from, to) and that has samples, oldest first; nothing when from ≥ to.
    ///
    /// What the REST history, charts and the € ledger read instead of raw samples: SOC
    /// min/mean/max and energy charged, discharged, drawn from and delivered to the grid, in Wh
    /// (see `EnergyBucket` for how energy is estimated). TimescaleDB answers from the continuous
    /// aggregates `battery_hourly`/`battery_daily` (real-time: the current hour is included;
    /// kept `aggregate_retention_days`); plain PostgreSQL and SQLite compute the same numbers
    /// from `battery_status` and the hours rolled up before pruning. All three agree to
    /// floating-point rounding. Cost: one indexed query; a year of days is ~365 rows.
    async fn energy_history(
        &self,
        device: &DeviceId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Bucket,
    ) -> Result<Vec<EnergyBucket>, StoreError>;

    /// House telemetry of every battery: one `HouseHour` per device and UTC hour starting in
    /// [from, to) that has plausible CT and port readings, ordered by hour then device. The
    /// input of the Tempo consumption model; one grouped query (see `house.rs`).
    async fn house_history(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HouseHour>, StoreError>;

    /// Stores an alert event; a `cleared` event closes the open alert of the same kind and device.
    async fn record_alert(&self, alert: &Alert) -> Result<(), StoreError>;
    /// Alerts raised and not yet cleared.
    async fn open_alerts(&self) -> Result<Vec<Alert>, StoreError>;

    /// Appends to the command audit.
    async fn record_command(&self, record: &CommandRecord) -> Result<(), StoreError>;
    /// The newest commands, newest first.
    async fn recent_commands(&self, limit: u32) -> Result<Vec<CommandRecord>, StoreError>;

    /// Every persisted job.
    async fn jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Inserts or replaces a job row.
    async fn upsert_job(&self, job: &JobRecord) -> Result<(), StoreError>;
    /// Records a run; returns false (and writes nothing) when (job_id, scheduled_for) exists.
    async fn claim_run(&self, run: &JobRunRecord) -> Result<bool, StoreError>;
    /// Updates a claimed run's status, end time, result and error.
    async fn finish_run(&self, run: &JobRunRecord) -> Result<(), StoreError>;
    /// Runs, newest first, optionally for one job.
    async fn job_runs(
        &self,
        job_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRunRecord>, StoreError>;

    /// Replaces the desired state of a device.
    async fn set_desired(&self, desired: &DesiredState) -> Result<(), StoreError>;
    /// Removes the desired state of a device.
    async fn clear_desired(&self, device: &DeviceId) -> Result<(), StoreError>;
    /// Every desired state.
    async fn desired_states(&self) -> Result<Vec<DesiredState>, StoreError>;

    /// Inserts or updates a Tempo colour.
    async fn upsert_tempo_day(&self, day: &TempoDayRecord) -> Result<(), StoreError>;
    /// The cached colour of a date.
    async fn tempo_day(&self, date: NaiveDate) -> Result<Option<TempoDayRecord>, StoreError>;

    /// Stores a named document (e.g. `precharge_plan`, `tempo_decision`).
    async fn put_document(&self, key: &str, doc: &Document) -> Result<(), StoreError>;
    /// Reads a named document.
    async fn document(&self, key: &str) -> Result<Option<Document>, StoreError>;
    /// Every document whose key starts with `prefix` (e.g. `mqtt_controls/`), ordered by key.
    async fn documents_under(&self, prefix: &str) -> Result<Vec<(String, Document)>, StoreError>;

    /// Takes or renews the leader lease named `lease` (one per site: `site:<site_id>`) for
    /// `instance` for `ttl`; true when this instance leads. Uses the database clock, so
    /// instances with skewed clocks agree; leases of different names never block each other.
    async fn try_lead(
        &self,
        lease: &str,
        instance: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;
    /// Gives the lease `lease` up (clean shutdown), so another instance takes over at once.
    async fn resign(&self, lease: &str, instance: &str) -> Result<(), StoreError>;
    /// The instance holding the lease `lease` now (not expired), if any.
    async fn lease_holder(&self, lease: &str) -> Result<Option<String>, StoreError>;
}

impl StoreError {
    /// Whether trying again later may succeed (the database was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// SQLSTATE classes/codes meaning "the server is not reachable or not accepting work now".
fn pg_code_is_unavailable(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code == "57P01" // admin_shutdown
        || code == "57P02" // crash_shutdown
        || code == "57P03" // cannot_connect_now
        || code == "53300" // too_many_connections
        || code == "40P01" // deadlock_detected: retrying is right
        || code == "40001" // serialization_failure
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(ref db) => {
                if db.is_unique_violation() {
                    return StoreError::Conflict(db.message().to_string());
                }
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // SQLite: 5 = SQLITE_BUSY, 6 = SQLITE_LOCKED (primary codes, possibly extended).
                let sqlite_busy = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                    && code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
                if pg_code_is_unavailable(&code) || sqlite_busy {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Other(e.to_string())
                }
            }
            sqlx::Error::Migrate(m) => StoreError::Migration(m.to_string()),
            other => StoreError::Other(other.to_string()),
        }
    }
}

/// Opens the store named by `settings.url` (backend by scheme), applies migrations and, on
/// PostgreSQL, the TimescaleDB step when the extension is available. Logs `store_opened`.
pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn Store>, StoreError> {
    let kind = url_kind(&settings.url).map_err(StoreError::BadUrl)?;
    let store: Arc<dyn Store> = match kind {
        UrlKind::Postgres => Arc::new(PgStore::connect(settings).await?),
        UrlKind::Sqlite => Arc::new(SqliteStore::connect(settings).await?),
    };
    tracing::info!(
        backend = ?store.backend(),
        url = %settings.redacted_url(),
        "store_opened"
    );
    Ok(store)
}

/// Applies the embedded migrations of the backend named by `settings.url` and returns it.
pub async fn migrate(settings: &DatabaseSettings) -> Result<Backend, StoreError> {
    // Opening runs the migrations (and the TimescaleDB step) already.
    let store = open(settings).await?;
    Ok(store.backend())
}

/// Retention without TimescaleDB: deletes samples older than `retention_days` before `now`
/// (TimescaleDB's own policy does it otherwise, so this returns 0 there). Returns rows deleted.
pub async fn prune_expired(
    store: &dyn Store,
    retention_days: u32,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    if store.backend() == Backend::Timescale {
        return Ok(0);
    }
    let before = now - chrono::Duration::days(i64::from(retention_days));
    let rows = store.prune_samples(before).await?;
    if rows > 0 {
        tracing::info!(rows, before = %before, "samples_pruned");
    }
    Ok(rows)
}

/// Maps a migration error to `StoreError::Migration`, naming the failing file.
fn migration_error(
    migrator: &sqlx::migrate::Migrator,
    dir: &str,
    e: sqlx::migrate::MigrateError,
) -> StoreError {
    use sqlx::migrate::MigrateError as M;
    let version = match &e {
        M::ExecuteMigration(_, v)
        | M::VersionMissing(v)
        | M::VersionMismatch(v)
        | M::VersionNotPresent(v)
        | M::VersionTooOld(v, _)
        | M::VersionTooNew(v, _)
        | M::Dirty(v) => Some(*v),
        _ => None,
    };
    let file = version.map(|v| {
        migrator
            .iter()
            .find(|m| m.version == v)
            .map(|m| format!("{dir}/{v:04}_{}.sql", m.description.replace(' ', "_")))
            .unwrap_or_else(|| format!("{dir}/{v:04}_*.sql (not embedded in this binary)"))
    });
    match file {
        Some(f) => StoreError::Migration(format!("{f}: {e}")),
        None => StoreError::Migration(format!("{dir}: {e}")),
    }
}

/// Maps an error seen while connecting: names `database.url` (password hidden) and says why.
fn connect_error(settings: &DatabaseSettings, e: sqlx::Error) -> StoreError {
    let url = settings.redacted_url();
    match StoreError::from(e) {
        StoreError::Unavailable(why) => {
            StoreError::Unavailable(format!("database.url = {url} cannot be reached: {why}"))
        }
        StoreError::Other(why) | StoreError::Conflict(why) => {
            StoreError::BadUrl(format!("{url} was refused: {why}"))
        }
        StoreError::NotFound => StoreError::BadUrl(format!("{url}: not found")),
        other => other,
    }
}

/// Microseconds since the Unix epoch (SQLite timestamps).
pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Back from microseconds since the Unix epoch; out-of-range values are a decode error.
pub(crate) fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Other(format!("timestamp {us} µs is out of range")))
}

/// Parses a stored enum/text value, turning a bad one into `StoreError::Other`.
pub(crate) fn decode_err(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("cannot decode {what}: {detail}"))
}

/// Parses a stored run status.
pub(crate) fn parse_run_status(s: &str) -> Result<RunStatus, StoreError> {
    Ok(match s {
        "running" => RunStatus::Running,
        "completed" => RunStatus::Completed,
        "failed" => RunStatus::Failed,
        "missed" => RunStatus::Missed,
        "skipped" => RunStatus::Skipped,
        other => return Err(decode_err("job run status", other)),
    })
}

/// Serialises a unit-like serde enum (AlertKind, Severity) to its snake/lowercase name.
pub(crate) fn enum_name<T: Serialize>(v: &T) -> Result<String, StoreError> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Err(decode_err("enum", other)),
        Err(e) => Err(decode_err("enum", e)),
    }
}

/// Parses a unit-like serde enum from its stored name.
pub(crate) fn parse_enum<T: serde::de::DeserializeOwned>(
    what: &str,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| decode_err(what, format!("'{s}': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_scheme_is_refused_with_the_allowed_list() {
        let s = DatabaseSettings {
            url: "mysql://u:secret@127.0.0.1/db".into(),
            ..Default::default()
        };
        let err = open(&s).await.err().expect("must fail");
        let msg = err.to_string();
        assert!(matches!(err, StoreError::BadUrl(_)), "{msg}");
        assert!(
            msg.contains("database.url") && msg.contains("mysql"),
            "{msg}"
        );
        assert!(
            msg.contains("sqlite://") && !msg.contains("secret"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn sqlx_errors_map_to_store_errors() {
        assert!(matches!(
            StoreError::from(sqlx::Error::RowNotFound),
            StoreError::NotFound
        ));
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_transient());
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(StoreError::from(sqlx::Error::Io(io)).is_transient());

        // A real unique violation on a real (SQLite) database → Conflict.
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::connect(&DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("e.db").display()),
            ..Default::default()
        })
        .await
        .unwrap();
        let ins = "INSERT INTO documents (key, value, updated_at) VALUES ('k', '{}', 0)";
        sqlx::query(ins).execute(s.pool()).await.unwrap();
        let e = sqlx::query(ins).execute(s.pool()).await.unwrap_err();
        assert!(matches!(StoreError::from(e), StoreError::Conflict(_)));
        let e = sqlx::query("SELECT nope FROM documents")
            .execute(s.pool())
            .await
            .unwrap_err();
        assert!(matches!(StoreError::from(e), StoreError::Other(_)));
    }

    #[test]
    fn micros_round_trip() {
        let t = DateTime::from_timestamp_micros(1_764_400_000_123_456).unwrap();
        assert_eq!(from_micros(to_micros(t)).unwrap(), t);
        assert!(from_micros(i64::MAX).is_err());
    }
}
