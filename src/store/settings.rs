//! The `[database]` configuration section: where the store lives, pool size, retention and how
//! the telemetry writer batches and buffers. Pure data and validation (URLs are checked with the
//! parsers the store connects with); touches nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the `[database]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:pass@host/db`, `postgresql://…` or `sqlite://path/to/file.db`.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to wait for a pooled connection (or to connect) before the database counts as
    /// unavailable.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Raw telemetry older than this many days is removed (TimescaleDB policy or periodic
    /// delete, after its hours are rolled up into the energy history). At least 4 days.
    pub retention_days: u32,
    /// Hourly and daily energy history (`Store::energy_history`) older than this many days is
    /// removed (TimescaleDB retention policy on the aggregates); at least `retention_days`.
    pub aggregate_retention_days: u32,
    /// TimescaleDB only: chunks older than this many days are compressed.
    pub compress_after_days: u32,
    /// Samples written per batch (upper bound).
    pub batch_size: usize,
    /// Longest time a sample waits in memory before its batch is written.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// Samples kept in memory while the database is unreachable; past it the oldest are dropped.
    pub buffer_capacity: usize,
    /// First wait before retrying a failed write; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between retries of a failed write.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// A write taking longer than this counts as failed (and is retried; duplicates are ignored).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// At shutdown, how long the writer may spend flushing what it still holds.
    #[serde(with = "humantime_serde")]
    pub shutdown_flush_timeout: Duration,
    /// Site written into every new row: `bridge.site_id`, copied here at start-up (not a key
    /// of `[database]`); default the slug of the host name.
    #[serde(skip)]
    pub site_id: String,
    /// Whether new telemetry rows are queued for a central database (`[central] url` set; not a
    /// key of `[database]`); SQLite only.
    #[serde(skip)]
    pub forward: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/marstek-bridge.db".into(),
            max_connections: 5,
            acquire_timeout: Duration::from_secs(5),
            retention_days: 90,
            aggregate_retention_days: 3650,
            compress_after_days: 7,
            batch_size: 500,
            batch_interval: Duration::from_secs(2),
            buffer_capacity: 100_000,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            shutdown_flush_timeout: Duration::from_secs(5),
            site_id: crate::sites::host_site(),
            forward: false,
        }
    }
}

/// Which backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlKind {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite://` or `sqlite:`.
    Sqlite,
}

/// Classifies a database URL by scheme; the error names the scheme and what is allowed.
pub fn url_kind(url: &str) -> Result<UrlKind, String> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => Ok(UrlKind::Postgres),
        "sqlite" => Ok(UrlKind::Sqlite),
        "" => Err(format!(
            "'{}' has no scheme (allowed: postgres://, postgresql://, sqlite://)",
            redact_url(url)
        )),
        other => Err(format!(
            "unsupported scheme '{other}' (allowed: postgres://, postgresql://, sqlite://)"
        )),
    }
}

pub use crate::config::redact_url;

impl DatabaseSettings {
    /// `url` with the password hidden, for logs and error messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Every problem with these settings as (key relative to `[database]`, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Err(why) = self.check_url() {
            errs.push(("url".to_string(), why));
        }
        errs.extend(self.check_pool_and_retention());
        errs.extend(self.check_writer());
        errs
    }

    /// The URL, through the same parsers the store opens it with, so `config check` catches
    /// what `run` would refuse (a port like `notaport`, an unknown `sslmode`, …).
    fn check_url(&self) -> Result<(), String> {
        use std::str::FromStr;
        let parsed = match url_kind(&self.url)? {
            UrlKind::Postgres => sqlx::postgres::PgConnectOptions::from_str(&self.url).map(drop),
            UrlKind::Sqlite => sqlx::sqlite::SqliteConnectOptions::from_str(&self.url).map(drop),
        };
        parsed.map_err(|e| format!("'{}' is not a usable URL: {e}", redact_url(&self.url)))
    }

    /// The connection pool and the retention keys.
    fn check_pool_and_retention(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut bad = |k: &str, why: String| errs.push((k.to_string(), why));
        if !(1..=100).contains(&self.max_connections) {
            bad(
                "max_connections",
                format!("{} is out of range (1 to 100)", self.max_connections),
            );
        }
        if self.acquire_timeout < Duration::from_millis(100)
            || self.acquire_timeout > Duration::from_secs(300)
        {
            bad(
                "acquire_timeout",
                "must be between 100ms and 5m".to_string(),
            );
        }
        if !(4..=36_500).contains(&self.retention_days) {
            bad(
                "retention_days",
                format!(
                    "{} is out of range (4 to 36500 days; TimescaleDB's aggregates re-read the \
                     last 3 days)",
                    self.retention_days
                ),
            );
        }
        if self.aggregate_retention_days < self.retention_days
            || self.aggregate_retention_days > 36_500
        {
            bad(
                "aggregate_retention_days",
                format!(
                    "{} is out of range (at least retention_days = {}, at most 36500 days)",
                    self.aggregate_retention_days, self.retention_days
                ),
            );
        }
        if self.compress_after_days == 0 {
            bad("compress_after_days", "must be at least 1 day".to_string());
        }
        errs
    }

    /// The telemetry writer's batching, buffering, retry and timeout keys.
    fn check_writer(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut bad = |k: &str, why: String| errs.push((k.to_string(), why));
        if !(1..=50_000).contains(&self.batch_size) {
            bad(
                "batch_size",
                format!("{} is out of range (1 to 50000 samples)", self.batch_size),
            );
        }
        if self.batch_interval < Duration::from_millis(10)
            || self.batch_interval > Duration::from_secs(3600)
        {
            bad("batch_interval", "must be between 10ms and 1h".to_string());
        }
        if self.buffer_capacity < self.batch_size || self.buffer_capacity > 10_000_000 {
            bad(
                "buffer_capacity",
                format!(
                    "{} is out of range (at least batch_size = {}, at most 10000000 samples)",
                    self.buffer_capacity, self.batch_size
                ),
            );
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max {
            bad(
                "retry_initial",
                "must be above 0 and at most retry_max".to_string(),
            );
        }
        if self.retry_max > Duration::from_secs(3600) {
            bad("retry_max", "must be at most 1h".to_string());
        }
        if self.write_timeout < Duration::from_millis(100) {
            bad("write_timeout", "must be at least 100ms".to_string());
        }
        if self.shutdown_flush_timeout > Duration::from_secs(600) {
            bad("shutdown_flush_timeout", "must be at most 10m".to_string());
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(DatabaseSettings::default().validate().is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let s = DatabaseSettings {
            url: "mysql://u:secret@h/db".into(),
            batch_size: 0,
            buffer_capacity: 0,
            ..Default::default()
        };
        let errs = s.validate();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["url", "batch_size"]);
        assert!(errs[0].1.contains("mysql"), "{}", errs[0].1);
        assert!(!errs[0].1.contains("secret"));
    }

    #[test]
    fn retention_bounds_are_named() {
        let s = DatabaseSettings {
            retention_days: 3,
            aggregate_retention_days: 2,
            ..Default::default()
        };
        let errs = s.validate();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["retention_days", "aggregate_retention_days"]);
        assert!(errs[0].1.contains("4 to 36500"), "{}", errs[0].1);
        assert!(errs[1].1.contains("retention_days = 3"), "{}", errs[1].1);
    }

    #[test]
    fn url_kinds() {
        assert_eq!(url_kind("postgres://h/db"), Ok(UrlKind::Postgres));
        assert_eq!(url_kind("postgresql://h/db"), Ok(UrlKind::Postgres));
        assert_eq!(url_kind("sqlite://data/x.db"), Ok(UrlKind::Sqlite));
        assert!(url_kind("data/x.db").is_err());
        assert!(url_kind("").is_err());
    }

    #[test]
    fn toml_round_trip_with_humantime() {
        let s: DatabaseSettings =
            toml::from_str("url = \"postgres://h/db\"\nbatch_interval = \"500ms\"\n").unwrap();
        assert_eq!(s.batch_interval, Duration::from_millis(500));
        assert_eq!(s.retention_days, 90);
        assert!(toml::from_str::<DatabaseSettings>("nope = 1").is_err());
    }
}
