//! The regulation subsystem: when `[regulator] enabled`, the grid meter's topic is tapped on the
//! bridge's own MQTT connection ([`meter_tap`], before the MQTT link starts), and [`spawn`]
//! starts the regulator task (`regulator::run`) on the shared set of batteries in `regulate`
//! mode, plus the publisher of its status: the retained `<base>/bridge/regulator`, the
//! `marstek_regulator_*` gauges and the `regulator_meter_stale` / `regulator_stopped` alerts on
//! phase changes. [`Regulation::stop`] is the first step of the bridge's shutdown, so that the
//! batteries are handed back to Auto while the actors still run.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Deps;
use super::tasks::Tasks;
use crate::domain::{Alert, AlertKind, AlertSender, AlertState, Severity};
use crate::mqtt::{MqttHandle, Tap};
use crate::regulator::run::{Inputs, run};
use crate::regulator::{Phase, RegulatorSettings, Status};

/// Meter payloads buffered between the MQTT dispatcher and the regulator.
const METER_QUEUE: usize = 32;
/// Longest wait for the regulator's hand-back at shutdown (its own bound is shorter).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The tap of the meter topic and the receiving end the regulator reads; None when the
/// regulator is disabled or regulates on the CT alone.
pub fn meter_tap(settings: &RegulatorSettings) -> (Vec<Tap>, Option<mpsc::Receiver<Vec<u8>>>) {
    let (tx, rx) = mpsc::channel(METER_QUEUE);
    match (&settings.meter.topic, settings.enabled) {
        (Some(topic), true) => (
            vec![Tap {
                topic: topic.clone(),
                tx,
            }],
            Some(rx),
        ),
        (None, true) => (Vec::new(), Some(rx)),
        _ => (Vec::new(), None),
    }
}

/// The running regulator.
pub struct Regulation {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Its status after each cycle.
    pub status: watch::Receiver<Option<Status>>,
}

impl Regulation {
    /// Stops the regulator and waits for its hand-back to Auto (bounded).
    pub async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            tracing::warn!("regulator_hand_back_cut_at_shutdown");
        }
    }
}

/// Starts the regulator and its status publisher (None when disabled).
pub fn spawn(
    deps: &Deps<'_>,
    mqtt: &MqttHandle,
    meter: Option<mpsc::Receiver<Vec<u8>>>,
    tasks: &Tasks,
) -> Option<Regulation> {
    let settings = deps.settings.regulator.clone();
    let meter = meter?;
    let (status_tx, status) = watch::channel(None);
    let inputs = Inputs {
        meter,
        samples: deps.core.samples.subscribe(),
        members: deps.core.commands.regulated().subscribe(),
    };
    // A child: the whole set's cancellation stops it too (start-up failures), but the orderly
    // shutdown stops it first, on its own.
    let stop = tasks.token().child_token();
    let ct_stale_after = deps.settings.polling.status_interval * 2;
    tracing::info!(
        topic = settings.meter.topic.as_deref().unwrap_or("(battery CT)"),
        target_w = settings.target_w,
        "regulator_enabled"
    );
    let task = tasks.tracker.spawn(run(
        settings,
        deps.core.commands.clone(),
        inputs,
        status_tx,
        ct_stale_after,
        stop.clone(),
    ));
    spawn_status_publisher(status.clone(), mqtt.clone(), deps.alerts.clone(), tasks);
    Some(Regulation { stop, task, status })
}

/// Publishes each status and raises or clears the alerts when the phase changes.
fn spawn_status_publisher(
    mut rx: watch::Receiver<Option<Status>>,
    mqtt: MqttHandle,
    alerts: AlertSender,
    tasks: &Tasks,
) {
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        let mut raised: Option<AlertKind> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
            let Some(status) = rx.borrow_and_update().clone() else {
                continue;
            };
            record_gauges(&status);
            mqtt.publish_regulator(status_json(&status));
            let now = alert_of(&status.phase);
            if now.map(|(k, _)| k) != raised {
                if let Some(kind) = raised.take() {
                    let _ = alerts.send(alert(kind, AlertState::Cleared, "regulation resumed"));
                }
                if let Some((kind, why)) = now {
                    let _ = alerts.send(alert(kind, AlertState::Raised, why));
                    raised = Some(kind);
                }
            }
        }
    });
}

/// The alert a phase stands for, with its reason.
fn alert_of(phase: &Phase) -> Option<(AlertKind, &str)> {
    match phase {
        Phase::Fallback(why) => Some((AlertKind::RegulatorMeterStale, why)),
        Phase::Stopped(why) => Some((AlertKind::RegulatorStopped, why)),
        Phase::Idle | Phase::Regulating | Phase::Standby(_) => None,
    }
}

fn alert(kind: AlertKind, state: AlertState, why: &str) -> Alert {
    let severity = match (kind, state) {
        (_, AlertState::Cleared) => Severity::Info,
        (AlertKind::RegulatorStopped, _) => Severity::Critical,
        _ => Severity::Warning,
    };
    Alert::raised(kind, severity, None, why, Utc::now()).in_state(state)
}

/// The retained `<base>/bridge/regulator` document: the status plus when it was taken.
pub fn status_json(status: &Status) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert(
            "members".into(),
            json!(status.batteries.keys().collect::<Vec<_>>()),
        );
        m.insert("at".into(), json!(Utc::now().to_rfc3339()));
    }
    v
}

fn record_gauges(status: &Status) {
    let running = f64::from(u8::from(status.phase == Phase::Regulating));
    metrics::gauge!("marstek_regulator_running").set(running);
    metrics::gauge!("marstek_regulator_target_watts").set(f64::from(status.target_w));
    metrics::gauge!("marstek_regulator_setpoint_watts").set(f64::from(status.setpoint_w));
    if let Some(g) = status.grid_w {
        metrics::gauge!("marstek_regulator_grid_watts").set(g);
    }
    metrics::gauge!("marstek_regulator_members").set(status.batteries.len() as f64);
    for (dev, b) in &status.batteries {
        let w = b.setpoint_w.map_or(0.0, f64::from);
        metrics::gauge!("marstek_regulator_battery_setpoint_watts", "device" => dev.to_string())
            .set(w);
    }
}
