//! The bridge request actions that the app adds to the MQTT router: jobs (`jobs/*`), Tempo
//! (`tempo/*`, `plan/get`, `ledger/get`) and `devices/discover`. Each payload is a typed struct
//! whose accessors give the same messages for a missing field; the scheduler, the Tempo service
//! and the discovery probe do the work.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::control::CommandService;
use crate::domain::DeviceId;
use crate::marstek::{DiscoverOptions, discover_devices};
use crate::mqtt::{Handler, RequestRouter, handler, typed_handler};
use crate::scheduler::SchedulerHandle;
use crate::tempo::TempoService;

/// Default and bounds of `jobs/preview`'s `count` (occurrences).
const PREVIEW_COUNT: (u64, u64, u64) = (5, 1, 100);

/// A request naming one job: `{"id": "job_switch_to_auto"}`.
#[derive(Debug, Default, Deserialize)]
pub struct JobRequest {
    /// The job id.
    pub id: Option<String>,
}

impl JobRequest {
    /// The job id, or the message naming the missing field.
    pub fn id(&self) -> Result<&str, String> {
        self.id
            .as_deref()
            .ok_or_else(|| "missing \"id\": the job id, e.g. \"job_switch_to_auto\"".to_string())
    }
}

/// `jobs/update`: `{"id": "…", "trigger": "cron:0 7 * * *"}`.
#[derive(Debug, Default, Deserialize)]
pub struct TriggerUpdate {
    /// The job.
    #[serde(flatten)]
    pub job: JobRequest,
    /// The new trigger, `cron:…` or `interval:…`.
    pub trigger: Option<String>,
}

impl TriggerUpdate {
    /// The new trigger, or the message naming the missing field.
    pub fn trigger(&self) -> Result<&str, String> {
        self.trigger
            .as_deref()
            .ok_or_else(|| "missing \"trigger\", e.g. \"cron:0 7 * * *\" or \"interval:5m\"".into())
    }
}

/// `jobs/preview`: the next `count` times of a job (`id`) or of a trigger (`trigger`), from
/// `from` (RFC 3339, default now).
#[derive(Debug, Default, Deserialize)]
pub struct PreviewRequest {
    /// A job id (used when `trigger` is absent).
    pub id: Option<String>,
    /// A trigger text.
    pub trigger: Option<String>,
    /// How many occurrences, 1 to 100 (default 5).
    pub count: Option<u64>,
    /// Start of the preview, RFC 3339.
    pub from: Option<String>,
}

impl PreviewRequest {
    /// The trigger or job to preview.
    pub fn spec(&self) -> Result<&str, String> {
        match (&self.id, &self.trigger) {
            (_, Some(t)) => Ok(t),
            (Some(id), None) => Ok(id),
            (None, None) => {
                Err("give \"id\" (a job) or \"trigger\" (e.g. \"cron:0 6 * * *\")".into())
            }
        }
    }

    /// The number of occurrences, clamped to 1–100.
    pub fn count(&self) -> usize {
        let (default, min, max) = PREVIEW_COUNT;
        self.count.unwrap_or(default).clamp(min, max) as usize
    }

    /// The start, `now` when absent.
    pub fn from(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        match &self.from {
            Some(f) => DateTime::parse_from_rfc3339(f)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("from: '{f}' is not RFC 3339 ({e})")),
            None => Ok(now),
        }
    }
}

/// One previewed occurrence.
#[derive(Debug, Serialize)]
pub struct PreviewTime {
    /// The time in UTC.
    pub utc: DateTime<Utc>,
    /// The same time in the scheduler's time zone, RFC 3339.
    pub local: String,
}

/// `jobs/<id>/enabled`: `{"enabled": true}`.
#[derive(Debug, Default, Deserialize)]
pub struct EnabledRequest {
    /// Resume (true) or pause (false) the job.
    pub enabled: Option<bool>,
}

impl EnabledRequest {
    /// The wanted state, or the message naming the missing field.
    pub fn enabled(&self) -> Result<bool, String> {
        self.enabled
            .ok_or_else(|| "missing \"enabled\": true or false".into())
    }
}

/// `devices/discover`: `{"timeout": 3, "target": "192.168.1.40"}`, both optional.
#[derive(Debug, Default, Deserialize)]
pub struct DiscoverRequest {
    /// Listening window in seconds, 0.1 to 60 (else the configured window).
    pub timeout: Option<f64>,
    /// Probe this address only (plus the broadcast).
    pub target: Option<String>,
}

impl DiscoverRequest {
    /// The window: `timeout` when within 0.1–60 s, else `default`.
    pub fn window(&self, default: Duration) -> Duration {
        self.timeout
            .filter(|t| (0.1..=60.0).contains(t))
            .map(Duration::from_secs_f64)
            .unwrap_or(default)
    }

    /// The target address, when given.
    pub fn target(&self) -> Result<Option<IpAddr>, String> {
        self.target
            .as_deref()
            .map(|t| {
                t.parse::<IpAddr>()
                    .map_err(|_| format!("target '{t}' is not an IP address"))
            })
            .transpose()
    }
}

/// One battery found by `devices/discover`.
#[derive(Debug, Serialize)]
pub struct FoundDevice {
    /// BLE MAC (the battery's id).
    pub ble_mac: String,
    /// Model, e.g. `VenusE`.
    pub model: String,
    /// Firmware version.
    pub firmware: u32,
    /// Address that answered, `ip:port`.
    pub address: String,
    /// Wi-Fi MAC, when reported.
    pub wifi_mac: Option<String>,
}

/// `devices/discover`: unicast probe of the configured ports on the configured devices' hosts
/// plus a LAN broadcast, for the configured window.
pub fn discover_handler(settings: &Settings) -> Handler {
    let discovery = settings.marstek.discovery.clone();
    typed_handler(move |req: DiscoverRequest| {
        let discovery = discovery.clone();
        async move {
            let opts = DiscoverOptions {
                window: req.window(discovery.window),
                target: req.target()?,
                ports: discovery.ports.clone(),
                ..DiscoverOptions::default()
            };
            let found = discover_devices(&opts).await.map_err(|e| e.to_string())?;
            Ok(found
                .into_iter()
                .map(|d| FoundDevice {
                    ble_mac: d.ble_mac,
                    model: d.device,
                    firmware: d.firmware,
                    address: d.addr.to_string(),
                    wifi_mac: d.wifi_mac,
                })
                .collect::<Vec<_>>())
        }
    })
}

/// `maintenance`: `{"maintenance": true}` holds every battery, with `"device": "<id>"` only that
/// one; `false` releases.
#[derive(Debug, Default, Deserialize)]
pub struct MaintenanceRequest {
    /// Hold (true) or release (false).
    pub maintenance: Option<bool>,
    /// One battery's id; absent = the bridge-wide hold.
    pub device: Option<String>,
}

/// `maintenance`: sets or releases a maintenance hold; answers every hold in force.
pub fn maintenance_handler(commands: CommandService) -> Handler {
    typed_handler(move |req: MaintenanceRequest| {
        let commands = commands.clone();
        async move {
            let on = req
                .maintenance
                .ok_or("missing \"maintenance\": true or false")?;
            let device = req
                .device
                .as_deref()
                .map(DeviceId::parse)
                .transpose()
                .map_err(|e| format!("device: {e}"))?;
            answer(commands.set_maintenance(device.as_ref(), on, "mqtt").await)
        }
    })
}

/// A scheduler call's error as a request error.
fn answer<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// Registers `action`, whose handler gets its own scheduler handle with each typed request.
fn on_jobs<Req, Resp, F, Fut>(
    router: &mut RequestRouter,
    action: &str,
    jobs: &SchedulerHandle,
    f: F,
) where
    Req: serde::de::DeserializeOwned,
    Resp: Serialize,
    F: Fn(SchedulerHandle, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, String>> + Send + 'static,
{
    let j = jobs.clone();
    router.register(action, typed_handler(move |req| f(j.clone(), req)));
}

/// `jobs/list`, `jobs/run`, `jobs/pause`, `jobs/resume`, `jobs/update`, `jobs/reset`,
/// `jobs/preview`, and per-job `jobs/<id>/enabled` / `jobs/<id>/run` for Home Assistant.
pub fn register_job_actions(router: &mut RequestRouter, jobs: &SchedulerHandle) {
    on_jobs(router, "jobs/list", jobs, |j, _: IgnoredAny| async move {
        Ok(j.list().await)
    });
    on_jobs(router, "jobs/run", jobs, |j, r: JobRequest| async move {
        answer(j.run_now(r.id()?).await)
    });
    on_jobs(router, "jobs/pause", jobs, |j, r: JobRequest| async move {
        answer(j.pause(r.id()?).await)
    });
    on_jobs(router, "jobs/resume", jobs, |j, r: JobRequest| async move {
        answer(j.resume(r.id()?).await)
    });
    on_jobs(
        router,
        "jobs/update",
        jobs,
        |j, r: TriggerUpdate| async move {
            let trigger = r.trigger()?;
            answer(j.update_trigger(r.job.id()?, trigger).await)
        },
    );
    on_jobs(router, "jobs/reset", jobs, |j, r: JobRequest| async move {
        answer(j.reset_trigger(r.id()?).await)
    });
    on_jobs(
        router,
        "jobs/preview",
        jobs,
        |j, r: PreviewRequest| async move {
            let (spec, count, from) = (r.spec()?, r.count(), r.from(Utc::now())?);
            let tz = j.timezone();
            let times = answer(j.preview(spec, from, count).await)?;
            Ok(times
                .into_iter()
                .map(|t| PreviewTime {
                    utc: t,
                    local: t.with_timezone(&tz).to_rfc3339(),
                })
                .collect::<Vec<_>>())
        },
    );
    for id in SchedulerHandle::known_ids() {
        on_jobs(
            router,
            &format!("jobs/{id}/enabled"),
            jobs,
            move |j, r: EnabledRequest| async move {
                answer(if r.enabled()? {
                    j.resume(id).await
                } else {
                    j.pause(id).await
                })
            },
        );
        on_jobs(
            router,
            &format!("jobs/{id}/run"),
            jobs,
            move |j, _: IgnoredAny| async move { answer(j.run_now(id).await) },
        );
    }
}

/// `tempo/get`, `tempo/refresh` (`{"dry_run": true}` computes without storing a plan),
/// `plan/get` (the planner's slots, computed now) and `ledger/get`; the Tempo service validates
/// its own payloads.
pub fn register_tempo_actions(router: &mut RequestRouter, tempo: &Arc<TempoService>) {
    for action in ["tempo/get", "tempo/refresh", "plan/get", "ledger/get"] {
        let t = tempo.clone();
        router.register(
            action,
            handler(move |req| {
                let t = t.clone();
                async move { t.request(action, &req).await }
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_missing_field_is_named_with_an_example() {
        let e = parse::<JobRequest>("{}").id().unwrap_err();
        assert!(
            e.contains("missing \"id\"") && e.contains("job_switch_to_auto"),
            "{e}"
        );
        let u = parse::<TriggerUpdate>(r#"{"id":"job_a"}"#);
        assert_eq!(u.job.id(), Ok("job_a"));
        assert!(u.trigger().unwrap_err().contains("interval:5m"));
        let e = parse::<EnabledRequest>(r#"{"enabled":null}"#).enabled();
        assert_eq!(e, Err("missing \"enabled\": true or false".to_string()));
    }

    #[test]
    fn a_preview_prefers_the_trigger_and_bounds_the_count() {
        let p = parse::<PreviewRequest>(r#"{"id":"job_a","trigger":"interval:5m","count":1000}"#);
        assert_eq!((p.spec(), p.count()), (Ok("interval:5m"), 100));
        let p = parse::<PreviewRequest>(r#"{"id":"job_a","count":0}"#);
        assert_eq!((p.spec(), p.count()), (Ok("job_a"), 1));
        let p = parse::<PreviewRequest>(r#"{"from":"2026-01-02T03:04:05+01:00"}"#);
        assert!(p.spec().unwrap_err().contains("give \"id\""));
        assert_eq!(p.count(), 5);
        let from = p.from(Utc::now()).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-01-02T02:04:05+00:00");
        let p = parse::<PreviewRequest>(r#"{"from":"yesterday"}"#);
        assert!(
            p.from(Utc::now())
                .unwrap_err()
                .starts_with("from: 'yesterday' is not RFC 3339")
        );
    }

    #[test]
    fn discovery_keeps_the_configured_window_unless_the_timeout_is_sensible() {
        let default = Duration::from_secs(3);
        let r = parse::<DiscoverRequest>(r#"{"timeout":0.5,"target":"192.168.1.40"}"#);
        assert_eq!(r.window(default), Duration::from_millis(500));
        assert_eq!(r.target(), Ok(Some("192.168.1.40".parse().unwrap())));
        let r = parse::<DiscoverRequest>(r#"{"timeout":600,"target":"battery"}"#);
        assert_eq!(r.window(default), default);
        assert_eq!(
            r.target(),
            Err("target 'battery' is not an IP address".into())
        );
    }
}
