//! The `[central]` configuration section: the central PostgreSQL/TimescaleDB an edge bridge
//! forwards its telemetry and command audit to (store-and-forward) and that `fleet status`
//! reads, with the forwarder's batch size, backlog bound, pauses, backoff and timeout. Pure data
//! and validation (the URL is checked with the parser the forwarder connects with); touches
//! nothing.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{UrlKind, redact_url, url_kind};

/// Settings of the `[central]` section (empty `url`: no forwarding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CentralSettings {
    /// `postgres://user:pass@host/db` of the central database; empty turns forwarding off.
    /// `MARSTEK_BRIDGE__CENTRAL__URL_FILE` reads it from a file; shown redacted.
    pub url: String,
    /// Telemetry rows sent per batch (one statement, one transaction), 1 to 50 000.
    pub batch_size: usize,
    /// Largest backlog kept for the centre, rows; past it the oldest queued rows are dropped
    /// (counted and logged; they stay in the local store). At least `batch_size`.
    pub max_backlog: u64,
    /// Pause between rounds once the backlog is empty (also how often the site's last contact
    /// is refreshed centrally).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// First wait after a failed round; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between failed rounds.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Longest time one central operation (connect, batch, contact) may take before the round
    /// counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections the forwarder keeps to the central database (its own pool), 1 to 16.
    pub max_connections: u32,
    /// TimescaleDB centre: raw telemetry kept this many days (retention policy), at least 1.
    pub retention_days: u32,
    /// TimescaleDB centre: chunks older than this many days are compressed, at least 1.
    pub compress_after_days: u32,
    /// `fleet status`: a site not heard from for this long is shown offline.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
}

impl Default for CentralSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            batch_size: 2000,
            max_backlog: 2_000_000,
            interval: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            max_connections: 2,
            retention_days: 365,
            compress_after_days: 7,
            offline_after: Duration::from_secs(300),
        }
    }
}

impl CentralSettings {
    /// Whether a central database is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// `url` with the password hidden.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Every problem as (key relative to `[central]`, reason); `database_url` is the local
    /// store's, which must be SQLite for forwarding.
    pub fn validate(&self, database_url: &str) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut bad = |k: &str, why: String| errs.push((k.to_string(), why));
        if self.enabled() {
            match url_kind(&self.url) {
                Ok(UrlKind::Postgres) => {
                    if let Err(e) = sqlx::postgres::PgConnectOptions::from_str(&self.url) {
                        bad("url", format!("{} is not usable: {e}", self.redacted_url()));
                    }
                }
                Ok(UrlKind::Sqlite) => bad(
                    "url",
                    "must be a PostgreSQL URL (postgres:// or postgresql://)".into(),
                ),
                Err(e) => bad("url", e),
            }
            if !matches!(url_kind(database_url), Ok(UrlKind::Sqlite)) {
                bad(
                    "url",
                    "store-and-forward needs a sqlite:// database.url; a bridge on PostgreSQL \
                     can use the central database as its database.url directly"
                        .into(),
                );
            }
        }
        if !(1..=50_000).contains(&self.batch_size) {
            bad("batch_size", "must be between 1 and 50000".into());
        }
        if self.max_backlog < self.batch_size as u64 {
            bad("max_backlog", "must be at least batch_size".into());
        }
        for (k, d) in [
            ("interval", self.interval),
            ("retry_initial", self.retry_initial),
            ("timeout", self.timeout),
            ("offline_after", self.offline_after),
        ] {
            if d.is_zero() {
                bad(k, "must be more than 0".into());
            }
        }
        if self.retry_max < self.retry_initial {
            bad("retry_max", "must be at least retry_initial".into());
        }
        if !(1..=16).contains(&self.max_connections) {
            bad("max_connections", "must be between 1 and 16".into());
        }
        if self.retention_days == 0 {
            bad("retention_days", "must be at least 1".into());
        }
        if self.compress_after_days == 0 {
            bad("compress_after_days", "must be at least 1".into());
        }
        errs
    }

    /// The central database as the store's connector wants it.
    pub fn target(&self) -> crate::store::central::CentralTarget {
        crate::store::central::CentralTarget {
            url: self.url.clone(),
            max_connections: self.max_connections,
            timeout: self.timeout,
            retention_days: self.retention_days,
            compress_after_days: self.compress_after_days,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let s = CentralSettings::default();
        assert!(!s.enabled());
        assert!(s.validate("postgres://127.0.0.1/x").is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        let s = CentralSettings {
            url: "mysql://u:secret@127.0.0.1/db".into(),
            batch_size: 0,
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(1),
            ..CentralSettings::default()
        };
        let errs = s.validate("sqlite://x.db");
        let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["url", "batch_size", "retry_max"], "{errs:?}");
        assert!(!errs[0].1.contains("secret"), "{errs:?}");
        let pg_edge = CentralSettings {
            url: "postgres://127.0.0.1/central".into(),
            ..CentralSettings::default()
        };
        let errs = pg_edge.validate("postgres://127.0.0.1/local");
        assert!(errs[0].1.contains("sqlite://"), "{errs:?}");
        assert!(pg_edge.validate("sqlite://data/x.db").is_empty());
    }
}
