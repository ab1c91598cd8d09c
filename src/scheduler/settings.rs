//! `[scheduler]` settings: zone, workers, misfire/coalesce, the mode hours, the bridge's night
//! slot, the leader lease and per-job overrides (`[scheduler.jobs.<id>]`). Pure data + validation.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::trigger::{Trigger, TriggerError, parse_zone};
use super::{
    JOB_CHECK_TEMPO_TOMORROW, JOB_HEALTH_CHECK, JOB_IDS, JOB_MONITOR_BATTERIES, JOB_SWITCH_TO_AUTO,
    JOB_SWITCH_TO_MANUAL_NIGHT,
};

/// Per-job configuration (`[scheduler.jobs.<id>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSettings {
    /// Trigger override (`cron:0 6 * * *`, `interval:5m`); None = the default for the job.
    pub trigger: Option<String>,
    /// Whether the job is scheduled at all (default true).
    pub enabled: bool,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            trigger: None,
            enabled: true,
        }
    }
}

/// The `[scheduler]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// IANA zone cron patterns are evaluated in (default `Europe/Paris`).
    pub timezone: String,
    /// Most job runs at once (default 4).
    pub max_workers: usize,
    /// Latest a run may start after its scheduled time, else it is recorded missed (default 5m).
    #[serde(with = "humantime_serde")]
    pub misfire_grace_time: Duration,
    /// Fold several due times of one job into the latest (default true).
    pub coalesce: bool,
    /// Local hour the AUTO job fires (default 6).
    pub auto_mode_start_hour: u8,
    /// Local hour the AUTO intent ends (default 22).
    pub auto_mode_end_hour: u8,
    /// Local hour the MANUAL night job fires (default 22).
    pub manual_mode_start_hour: u8,
    /// Local hour the MANUAL night intent and slot end (default 6).
    pub manual_mode_end_hour: u8,
    /// Manual slot number (`time_num`) the bridge owns for the night (0..=9, default 0).
    pub night_slot: u8,
    /// Longest hand-over time when the leading bridge dies (default 30s, at least 3s).
    #[serde(with = "humantime_serde")]
    pub leader_ttl: Duration,
    /// Per-job overrides, keyed by job id.
    pub jobs: BTreeMap<String, JobSettings>,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            timezone: "Europe/Paris".into(),
            max_workers: 4,
            misfire_grace_time: Duration::from_secs(300),
            coalesce: true,
            auto_mode_start_hour: 6,
            auto_mode_end_hour: 22,
            manual_mode_start_hour: 22,
            manual_mode_end_hour: 6,
            night_slot: 0,
            leader_ttl: Duration::from_secs(30),
            jobs: BTreeMap::new(),
        }
    }
}

impl SchedulerSettings {
    /// The configured zone (UTC when invalid; `validate` reports it).
    pub fn tz(&self) -> Tz {
        parse_zone(&self.timezone).unwrap_or(Tz::UTC)
    }

    /// The default trigger text of a standard job (derived from the mode hours).
    pub fn default_trigger(&self, job_id: &str) -> Option<String> {
        Some(match job_id {
            JOB_SWITCH_TO_AUTO => format!("cron:0 {} * * *", self.auto_mode_start_hour),
            JOB_SWITCH_TO_MANUAL_NIGHT => format!("cron:0 {} * * *", self.manual_mode_start_hour),
            JOB_CHECK_TEMPO_TOMORROW => "cron:30 11 * * *".into(),
            JOB_MONITOR_BATTERIES => "interval:5m".into(),
            JOB_HEALTH_CHECK => "interval:1m".into(),
            _ => return None,
        })
    }

    /// The trigger text the configuration gives a job (override, else default).
    pub fn trigger_text(&self, job_id: &str) -> Option<String> {
        self.jobs
            .get(job_id)
            .and_then(|j| j.trigger.clone())
            .or_else(|| self.default_trigger(job_id))
    }

    /// The configured trigger of a job, parsed in the configured zone.
    pub fn trigger(&self, job_id: &str) -> Option<Result<Trigger, TriggerError>> {
        self.trigger_text(job_id)
            .map(|t| Trigger::parse(&t, self.tz()))
    }

    /// Whether a job is enabled in the configuration.
    pub fn job_enabled(&self, job_id: &str) -> bool {
        self.jobs.get(job_id).is_none_or(|j| j.enabled)
    }

    /// Every problem, as (key path relative to `[scheduler]`, reason and what is allowed).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Err(e) = parse_zone(&self.timezone) {
            errs.push(("timezone".into(), e.to_string()));
        }
        if !(1..=64).contains(&self.max_workers) {
            errs.push((
                "max_workers".into(),
                format!("{} is out of range (1 to 64)", self.max_workers),
            ));
        }
        if self.misfire_grace_time > Duration::from_secs(24 * 3600) {
            errs.push((
                "misfire_grace_time".into(),
                "longer than a day (allowed: 0s to 24h)".into(),
            ));
        }
        for (key, v) in [
            ("auto_mode_start_hour", self.auto_mode_start_hour),
            ("auto_mode_end_hour", self.auto_mode_end_hour),
            ("manual_mode_start_hour", self.manual_mode_start_hour),
            ("manual_mode_end_hour", self.manual_mode_end_hour),
        ] {
            if v > 23 {
                errs.push((key.into(), format!("{v} is not an hour (0 to 23)")));
            }
        }
        if self.auto_mode_start_hour == self.manual_mode_start_hour {
            errs.push((
                "manual_mode_start_hour".into(),
                "must differ from auto_mode_start_hour".into(),
            ));
        }
        if self.night_slot > 9 {
            errs.push((
                "night_slot".into(),
                format!("{} is not a slot number (0 to 9)", self.night_slot),
            ));
        }
        if self.leader_ttl < Duration::from_secs(3) || self.leader_ttl > Duration::from_secs(600) {
            errs.push(("leader_ttl".into(), "out of range (3s to 10m)".into()));
        }
        for (id, job) in &self.jobs {
            if !JOB_IDS.contains(&id.as_str()) {
                errs.push((
                    format!("jobs.{id}"),
                    format!("unknown job (known: {})", JOB_IDS.join(", ")),
                ));
                continue;
            }
            if let Some(text) = &job.trigger
                && let Err(e) = Trigger::parse(text, self.tz())
            {
                errs.push((format!("jobs.{id}.trigger"), e.to_string()));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_derive_triggers_from_hours() {
        let s = SchedulerSettings::default();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        assert_eq!(
            s.trigger_text(JOB_SWITCH_TO_AUTO).as_deref(),
            Some("cron:0 6 * * *")
        );
        assert_eq!(
            s.trigger_text(JOB_SWITCH_TO_MANUAL_NIGHT).as_deref(),
            Some("cron:0 22 * * *")
        );
        let s = SchedulerSettings {
            auto_mode_start_hour: 7,
            ..Default::default()
        };
        assert_eq!(
            s.trigger_text(JOB_SWITCH_TO_AUTO).as_deref(),
            Some("cron:0 7 * * *")
        );
    }

    #[test]
    fn toml_with_durations_and_overrides_parses() {
        let s: SchedulerSettings = toml::from_str(
            r#"
            timezone = "UTC"
            misfire_grace_time = "2m"
            leader_ttl = "10s"
            [jobs.job_health_check]
            trigger = "interval:30s"
            [jobs.job_check_tempo_tomorrow]
            enabled = false
            "#,
        )
        .expect("valid toml");
        assert_eq!(s.misfire_grace_time, Duration::from_secs(120));
        assert!(!s.job_enabled(JOB_CHECK_TEMPO_TOMORROW));
        assert_eq!(
            s.trigger_text(JOB_HEALTH_CHECK).as_deref(),
            Some("interval:30s")
        );
        assert!(s.validate().is_empty());
        assert!(toml::from_str::<SchedulerSettings>("bogus = 1").is_err());
    }

    #[test]
    fn validate_names_every_bad_key() {
        let mut s = SchedulerSettings {
            timezone: "Mars/Olympus".into(),
            max_workers: 0,
            auto_mode_start_hour: 24,
            night_slot: 12,
            leader_ttl: Duration::from_secs(1),
            ..Default::default()
        };
        s.jobs.insert(
            JOB_SWITCH_TO_AUTO.into(),
            JobSettings {
                trigger: Some("cron:0 0 31 2 *".into()),
                enabled: true,
            },
        );
        s.jobs.insert("job_bogus".into(), JobSettings::default());
        let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
        for want in [
            "timezone",
            "max_workers",
            "auto_mode_start_hour",
            "night_slot",
            "leader_ttl",
            "jobs.job_switch_to_auto.trigger",
            "jobs.job_bogus",
        ] {
            assert!(keys.iter().any(|k| k == want), "{want} missing in {keys:?}");
        }
    }
}
