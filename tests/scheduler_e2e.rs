//! The standard jobs and the reconciler end to end: the real Marstek driver against the
//! in-process simulator on loopback, the command service, and a SQLite store in a temp dir, with
//! the scheduler on an injected clock.

mod support;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use marstek_bridge::domain::{
    Alert, AlertKind, CommandSource, CommandStatus, DeviceId, Mode, ModeConfig, NightPlan,
    NightPlanner, Percent, PrechargeTarget, Watts,
};
use marstek_bridge::scheduler::{
    Clock, JOB_HEALTH_CHECK, JOB_MONITOR_BATTERIES, JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT,
    JobDeps, ManualClock, Reconciler, Scheduler, SchedulerHandle, SchedulerSettings, standard_jobs,
};
use marstek_bridge::simulator::SimConfig;
use marstek_bridge::store::{JobRecord, RunStatus};
use serde_json::Value;
use support::core_rig::{CoreRig, CoreSetup};

const WAIT: Duration = Duration::from_secs(20);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test literal")
        .with_timezone(&Utc)
}

/// The core (batteries `bat0`…, commands, SQLite store) and the scheduler's injected clock.
struct Rig {
    core: CoreRig,
    clock: Arc<ManualClock>,
}

impl Deref for Rig {
    type Target = CoreRig;
    fn deref(&self) -> &CoreRig {
        &self.core
    }
}

async fn rig(n: usize, now: DateTime<Utc>) -> Rig {
    let core = CoreRig::start(CoreSetup::new(SimConfig {
        devices: n,
        timezone: chrono_tz::Europe::Paris,
        ..SimConfig::default()
    }))
    .await;
    Rig {
        core,
        clock: Arc::new(ManualClock::new(now)),
    }
}

impl Rig {
    fn deps(&self, planner: Option<Arc<dyn NightPlanner>>) -> JobDeps {
        JobDeps {
            commands: self.commands(),
            store: self.store(),
            settings: SchedulerSettings::default(),
            planner,
            tempo_check: None,
            samples: self.samples(),
            alerts: Some(self.alerts_tx.clone()),
        }
    }

    async fn scheduler(&self, planner: Option<Arc<dyn NightPlanner>>) -> Scheduler {
        Scheduler::init(
            SchedulerSettings::default(),
            self.store(),
            standard_jobs(self.deps(planner)),
            self.clock.clone(),
            Some(self.alerts_tx.clone()),
            "inst-e2e",
        )
        .await
        .expect("init")
    }

    fn reconciler(&self) -> Reconciler {
        Reconciler::new(
            self.commands(),
            self.store(),
            SchedulerSettings::default(),
            Some(self.alerts_tx.clone()),
            self.clock.clone(),
        )
    }

    fn mode(&self, dev: usize) -> Mode {
        self.sim.state(dev).expect("device").mode
    }

    fn drain_alerts(&mut self) -> Vec<Alert> {
        self.core.drain_alerts()
    }
}

async fn run_now(h: &SchedulerHandle, id: &str) -> (RunStatus, Value, Option<String>) {
    let run = tokio::time::timeout(WAIT, h.run_now(id))
        .await
        .expect("run in time")
        .expect("accepted")
        .expect("a run");
    (run.status, run.result.unwrap_or_default(), run.error)
}

#[tokio::test]
async fn missed_six_am_is_recorded_and_reconciliation_still_puts_batteries_in_auto() {
    // 09:00 CET; the 06:00 run is three hours late: missed, but AUTO is what the schedule says.
    let now = utc("2026-11-30T08:00:00Z");
    let mut rig = rig(2, now).await;
    rig.sim.set_mode(0, Mode::Manual);
    rig.sim.set_mode(1, Mode::Passive);
    rig.core
        .core
        .store
        .upsert_job(&JobRecord {
            id: JOB_SWITCH_TO_AUTO.into(),
            trigger: "cron:0 6 * * *".into(),
            trigger_overridden: false,
            next_run_at: Some(utc("2026-11-30T05:00:00Z")),
            paused: false,
            last_run_at: None,
            last_status: None,
        })
        .await
        .expect("seed");
    let s = rig.scheduler(None).await;
    let h = s.handle();
    s.start();
    let mut snap = h.subscribe();
    tokio::time::timeout(
        WAIT,
        snap.wait_for(|v| {
            v["jobs"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|j| j["id"] == JOB_SWITCH_TO_AUTO && j["last_status"] == "missed")
            })
        }),
    )
    .await
    .expect("missed recorded")
    .expect("open");
    let auto = h.trigger_of(JOB_SWITCH_TO_AUTO).await.expect("auto");
    let manual = h
        .trigger_of(JOB_SWITCH_TO_MANUAL_NIGHT)
        .await
        .expect("manual");
    let outcomes = rig.reconciler().startup_from(&h).await;
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o["status"] == "applied"),
        "{outcomes:?}"
    );
    assert_eq!(rig.mode(0), Mode::Auto);
    assert_eq!(rig.mode(1), Mode::Auto);
    let desired = rig.store().desired_states().await.expect("desired");
    assert_eq!(desired.len(), 2);
    for d in &desired {
        assert_eq!(d.config, ModeConfig::Auto);
        assert_eq!(d.valid_until, Some(utc("2026-11-30T21:00:00Z")));
    }
    let runs = rig
        .store()
        .job_runs(Some(JOB_SWITCH_TO_AUTO), 10)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Missed);
    let alerts = rig.drain_alerts();
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.kind == AlertKind::JobMissed)
            .count(),
        1
    );
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.kind == AlertKind::ModeDrift)
            .count(),
        0,
        "applying the schedule's intent at start-up is not drift"
    );
    // The audit says who applied it.
    let audit = rig.store().recent_commands(10).await.expect("audit");
    assert!(
        audit
            .iter()
            .all(|c| c.source == CommandSource::Reconciler && c.status == CommandStatus::Ok)
    );

    // A second start-up finds everything in sync: no command, no alert.
    let outcomes = rig.reconciler().startup(&auto, &manual).await;
    assert!(
        outcomes.iter().all(|o| o["status"] == "in_sync"),
        "{outcomes:?}"
    );
    assert!(rig.drain_alerts().is_empty());

    // The device drifts (someone used the app): a sample showing it triggers re-application.
    let rec = rig.reconciler();
    rec.refresh().await;
    let bat = rig
        .commands()
        .fleet()
        .get(&DeviceId::parse("bat0").expect("id"))
        .expect("bat0")
        .clone();
    // this reconciler sees the battery holding its intent first
    let sample = bat.poll().await.expect("poll");
    assert_eq!(rec.on_sample(&sample).await, None);
    rig.sim.set_mode(0, Mode::Ai);
    let sample = bat.poll().await.expect("poll");
    assert_eq!(sample.mode, Some(Mode::Ai));
    let out = rec.on_sample(&sample).await.expect("re-applied");
    assert_eq!(out["status"], "applied");
    assert_eq!(rig.mode(0), Mode::Auto);
    assert!(
        rig.drain_alerts()
            .iter()
            .any(|a| a.kind == AlertKind::ModeDrift)
    );

    // A newer intent from another source (an MQTT Passive command) is not fought, even though
    // the reconciler's cache still holds the AUTO intent.
    rig.clock.advance(Duration::from_secs(120));
    let bat1 = DeviceId::parse("bat1").expect("id");
    rig.core
        .core
        .store
        .set_desired(&marstek_bridge::domain::DesiredState {
            device: bat1.clone(),
            config: ModeConfig::Passive {
                power: Watts(300),
                cd_time: 600,
            },
            set_by: "mqtt".into(),
            set_at: rig.clock.now(),
            valid_until: Some(rig.clock.now() + chrono::TimeDelta::hours(1)),
        })
        .await
        .expect("mqtt intent");
    rig.sim.set_mode(1, Mode::Passive);
    let sample = rig
        .commands()
        .fleet()
        .get(&bat1)
        .expect("bat1")
        .poll()
        .await
        .expect("poll");
    assert_eq!(rec.on_sample(&sample).await, None);
    assert_eq!(rig.mode(1), Mode::Passive);
    s.shutdown(Duration::from_secs(5)).await;
    rig.tasks.token().cancel();
}

struct Plan(Option<NightPlan>);

#[async_trait::async_trait]
impl NightPlanner for Plan {
    async fn tonight(&self, _now: DateTime<Utc>) -> anyhow::Result<Option<NightPlan>> {
        Ok(self.0.clone())
    }
    async fn morning_check(&self, _now: DateTime<Utc>) -> anyhow::Result<Vec<Alert>> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn night_job_idles_with_a_disabled_slot_or_applies_the_plan() {
    let now = utc("2026-11-30T21:00:00Z"); // 22:00 CET
    let rig = rig(2, now).await;
    let night = SchedulerSettings::default().night_slot as usize;

    // No plan: MANUAL with the bridge's slot written disabled at 0 W on every battery.
    let s = rig.scheduler(None).await;
    let h = s.handle();
    let (status, result, err) = run_now(&h, JOB_SWITCH_TO_MANUAL_NIGHT).await;
    assert_eq!(status, RunStatus::Completed, "{err:?} {result}");
    assert_eq!(result["ok"], 2, "{result}");
    for dev in 0..2 {
        let st = rig.sim.state(dev).expect("state");
        assert_eq!(st.mode, Mode::Manual);
        let slot = st.slots[night].expect("slot written");
        assert!(!slot.enable);
        assert_eq!(slot.power, 0);
        assert_eq!((slot.start_min, slot.end_min), (22 * 60, 6 * 60));
    }
    let desired = rig.store().desired_states().await.expect("desired");
    assert!(
        desired
            .iter()
            .all(|d| d.set_by == JOB_SWITCH_TO_MANUAL_NIGHT
                && d.valid_until == Some(utc("2026-12-01T05:00:00Z")))
    );
    s.shutdown(Duration::from_secs(5)).await;

    // A plan for bat0: its slot enabled at the plan's power; bat1 idle.
    let plan = NightPlan {
        targets: vec![PrechargeTarget {
            device: DeviceId::parse("bat0").expect("id"),
            power: Watts(-1200),
            target_soc: Percent(90),
        }],
        reason: "tomorrow is red".into(),
        dry_run: false,
    };
    let s = rig
        .scheduler(Some(Arc::new(Plan(Some(plan.clone())))))
        .await;
    let (status, result, _) = run_now(&s.handle(), JOB_SWITCH_TO_MANUAL_NIGHT).await;
    assert_eq!(status, RunStatus::Completed, "{result}");
    let s0 = rig.sim.state(0).expect("state").slots[night].expect("slot");
    assert!(s0.enable);
    assert_eq!(s0.power, -1200);
    let s1 = rig.sim.state(1).expect("state").slots[night].expect("slot");
    assert!(!s1.enable);
    s.shutdown(Duration::from_secs(5)).await;

    // A dry-run plan touches nothing.
    rig.sim.set_mode(0, Mode::Auto);
    let dry = NightPlan {
        dry_run: true,
        ..plan
    };
    let s = rig.scheduler(Some(Arc::new(Plan(Some(dry))))).await;
    let (status, result, _) = run_now(&s.handle(), JOB_SWITCH_TO_MANUAL_NIGHT).await;
    assert_eq!(status, RunStatus::Completed);
    assert_eq!(result["dry_run"], true);
    assert_eq!(rig.mode(0), Mode::Auto);
    s.shutdown(Duration::from_secs(5)).await;
    rig.tasks.token().cancel();
}

#[tokio::test]
async fn fleet_jobs_report_each_battery_and_fail_only_when_all_fail() {
    let now = utc("2026-11-30T09:00:00Z");
    let rig = rig(2, now).await;
    let mut samples = rig.samples().subscribe();
    let s = rig.scheduler(None).await;
    let h = s.handle();

    // Monitoring: both polled, samples broadcast.
    let (status, result, _) = run_now(&h, JOB_MONITOR_BATTERIES).await;
    assert_eq!(status, RunStatus::Completed, "{result}");
    assert_eq!(result["ok"], 2);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let s = tokio::time::timeout(WAIT, samples.recv())
            .await
            .expect("sample")
            .expect("open");
        if !seen.contains(&s.device) {
            seen.push(s.device);
        }
    }

    // One battery silent: AUTO still reaches the other; the run completes with one failure.
    rig.sim.set_silent(1, true);
    let (status, result, _) = run_now(&h, JOB_SWITCH_TO_AUTO).await;
    assert_eq!(status, RunStatus::Completed, "{result}");
    assert_eq!(
        (result["ok"].as_u64(), result["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(rig.mode(0), Mode::Auto);

    // Monitoring again: bat1's poll fails, so the driver marks it unreachable.
    let (status, result, _) = run_now(&h, JOB_MONITOR_BATTERIES).await;
    assert_eq!(status, RunStatus::Completed, "{result}");
    assert_eq!(result["failed"], 1, "{result}");
    // Health: bat1 unreachable, bat0 reachable.
    let (status, result, err) = run_now(&h, JOB_HEALTH_CHECK).await;
    assert_eq!(status, RunStatus::Completed, "{result} {err:?}");
    let per: Vec<(String, bool)> = result["batteries"]
        .as_array()
        .expect("list")
        .iter()
        .map(|b| {
            (
                b["device"].as_str().unwrap_or_default().to_string(),
                b["reachable"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        per,
        vec![("bat0".to_string(), true), ("bat1".to_string(), false)]
    );

    // Every battery silent: the run fails, naming the failures.
    rig.sim.set_silent(0, true);
    let (status, _, err) = run_now(&h, JOB_SWITCH_TO_AUTO).await;
    assert_eq!(status, RunStatus::Failed);
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("every battery failed")),
        "{err:?}"
    );
    s.shutdown(Duration::from_secs(5)).await;
    let _ = rig.clock.now();
    rig.tasks.token().cancel();
}

#[tokio::test]
async fn passive_intent_is_renewed_before_its_countdown_ends_while_valid() {
    let now = utc("2026-11-30T12:00:00Z");
    let rig = rig(1, now).await;
    let dev = DeviceId::parse("bat0").expect("id");
    rig.core
        .core
        .store
        .set_desired(&marstek_bridge::domain::DesiredState {
            device: dev.clone(),
            config: ModeConfig::Passive {
                power: Watts(-500),
                cd_time: 30,
            },
            set_by: "mqtt".into(),
            set_at: now,
            valid_until: Some(now + chrono::TimeDelta::minutes(10)),
        })
        .await
        .expect("intent");
    let rec = rig.reconciler();
    rec.refresh().await;
    // Too early: less than two thirds of the countdown gone, nothing sent.
    rig.clock.advance(Duration::from_secs(10));
    assert_eq!(rec.renew_passive().await, 0);
    // The device fell back (countdown ran out on its side); two thirds gone → renewed.
    rig.sim.set_mode(0, Mode::Auto);
    rig.clock.advance(Duration::from_secs(11));
    assert_eq!(rec.renew_passive().await, 1);
    let st = rig.sim.state(0).expect("state");
    assert_eq!(st.mode, Mode::Passive);
    assert_eq!(st.passive_power, -500);
    // Renewed just now: not again until two thirds of the countdown pass again.
    assert_eq!(rec.renew_passive().await, 0);
    // Past valid_until: no more renewals.
    rig.clock.advance(Duration::from_secs(600));
    assert_eq!(rec.renew_passive().await, 0);
    let audit = rig.store().recent_commands(10).await.expect("audit");
    // the command rows (a verdict of the write's effect verification may follow each)
    let commands: Vec<_> = audit
        .iter()
        .filter(|c| c.payload.get("verification").is_none())
        .collect();
    assert_eq!(commands.len(), 1, "{audit:?}");
    assert_eq!(commands[0].source, CommandSource::Reconciler);
    rig.tasks.token().cancel();
}

/// When the store cannot be read, the reconciler keeps to the intent a command left in memory:
/// it never brings back the older one it had cached.
#[tokio::test]
async fn an_unreadable_store_does_not_bring_back_an_older_intent() {
    let now = utc("2026-11-30T12:00:00Z");
    let rig = rig(1, now).await;
    let dev = DeviceId::parse("bat0").expect("id");
    rig.store()
        .set_desired(&marstek_bridge::domain::DesiredState {
            device: dev.clone(),
            config: ModeConfig::Passive {
                power: Watts(-500),
                cd_time: 600,
            },
            set_by: "job".into(),
            set_at: now - chrono::TimeDelta::hours(1),
            valid_until: Some(now + chrono::TimeDelta::hours(10)),
        })
        .await
        .expect("intent");
    let rec = rig.reconciler();
    rec.refresh().await;
    // a user puts the battery in Auto: a newer intent, in memory and in the store
    let origin = marstek_bridge::control::Origin::new(CommandSource::Mqtt, Value::Null);
    let auto = marstek_bridge::domain::Command::SetMode(ModeConfig::Auto);
    rig.commands()
        .submit_one(&dev, &auto, origin)
        .await
        .expect("auto");
    // then the store's desired states cannot be read any more
    let url = format!("sqlite://{}", rig.db_path().display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
    sqlx::query("ALTER TABLE desired_state RENAME TO desired_state_gone")
        .execute(&db)
        .await
        .expect("rename");
    assert!(rig.store().desired_states().await.is_err());
    let sample = rig.battery(0).poll().await.expect("sample");
    assert_eq!(sample.mode, Some(Mode::Auto));
    assert_eq!(rec.on_sample(&sample).await, None, "nothing re-applied");
    assert_eq!(rig.mode(0), Mode::Auto);
    rig.tasks.token().cancel();
}

#[tokio::test]
async fn paused_mode_job_derives_no_intent_at_startup() {
    let now = utc("2026-11-30T08:00:00Z");
    let rig = rig(1, now).await;
    rig.sim.set_mode(0, Mode::Manual);
    let s = rig.scheduler(None).await;
    let h = s.handle();
    h.pause(JOB_SWITCH_TO_AUTO).await.expect("pause");
    let outcomes = rig.reconciler().startup_from(&h).await;
    assert!(outcomes.is_empty(), "{outcomes:?}");
    assert_eq!(
        rig.mode(0),
        Mode::Manual,
        "a paused schedule changes nothing"
    );
    assert!(
        rig.core
            .core
            .store
            .desired_states()
            .await
            .expect("desired")
            .is_empty()
    );
    s.shutdown(Duration::from_secs(5)).await;
    rig.tasks.token().cancel();
}
