//! Fan-out from the core to the adapters: every sample to the metrics, the alert rules and MQTT;
//! (and, when asked, batcontrol's inverter status topics); every alert (rules, commands, jobs, Tempo) through the hysteresis to MQTT, the HTTP live feed
//! and the store; and every new retained document (schedule, Tempo, plan, ledger) to MQTT.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use super::core::Core;
use super::tasks::Tasks;
use crate::alerts::{AlertEngine, AlertSettings};
use crate::domain::{Alert, DeviceId};
use crate::http;
use crate::mqtt::MqttHandle;
use crate::tempo::TempoService;

/// How often driver health is checked for reachability alerts, seconds.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Where the fan-out delivers.
pub struct Sinks<'a> {
    /// The MQTT side.
    pub mqtt: &'a MqttHandle,
    /// The HTTP live feed.
    pub live: &'a http::Live,
    /// Publish batcontrol's inverter status topics from the samples.
    pub batcontrol: bool,
}

/// Spawns the sample and alert fan-out; `alerts` receives the events of every other part.
pub fn spawn(
    core: &Core,
    sinks: Sinks<'_>,
    settings: &AlertSettings,
    mut alerts: mpsc::UnboundedReceiver<Alert>,
    tasks: &Tasks,
) {
    let mut samples = core.samples.subscribe();
    let mut engine = AlertEngine::new(settings.clone());
    let mqtt = sinks.mqtt.clone();
    let live = sinks.live.clone();
    let store = core.store.clone();
    let fleet = core.fleet.clone();
    let batcontrol = sinks.batcontrol;
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        let mut health_tick = tokio::time::interval(HEALTH_CHECK_EVERY);
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let raised: Vec<Alert> = tokio::select! {
                () = cancel.cancelled() => return,
                r = samples.recv() => match r {
                    Ok(sample) => {
                        metrics::counter!("marstek_samples_total").increment(1);
                        crate::sample_metrics::record(&sample);
                        let mut alerts = engine.on_sample(&sample);
                        if let Some(info) = fleet.get(&sample.device).and_then(|b| b.info()) {
                            alerts.extend(engine.on_identity(&info, sample.at));
                            mqtt.publish_identity(&info);
                        }
                        if batcontrol && let Some(b) = fleet.get(&sample.device) {
                            mqtt.publish_batcontrol_status(&sample, &b.limits());
                        }
                        mqtt.publish_sample(sample);
                        alerts
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "publisher_lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                a = alerts.recv() => match a {
                    Some(a) => engine.on_event(a),
                    None => return,
                },
                _ = health_tick.tick() => {
                    let now = Utc::now();
                    fleet.iter().flat_map(|b| engine.on_health(b.id(), &b.health(), now)).collect()
                }
            };
            for alert in raised {
                tracing::warn!(kind = alert.kind.as_str(), device = ?alert.device.as_ref().map(DeviceId::as_str), state = ?alert.state, message = %alert.message, "alert");
                metrics::counter!("marstek_alerts_total", "kind" => alert.kind.as_str()).increment(1);
                mqtt.publish_alert(&alert);
                live.on_alert(&alert);
                if let Err(e) = store.record_alert(&alert).await {
                    tracing::warn!(error = %e, "alert_not_stored");
                }
            }
        }
    });
}

/// Publishes the retained Tempo, plan and ledger documents whenever they change, filling them
/// from the store at once (not at the next refresh).
pub async fn spawn_tempo_documents(tempo: &TempoService, mqtt: &MqttHandle, tasks: &Tasks) {
    let _ = tempo.get().await;
    spawn_watch_publisher(tasks, tempo.subscribe(), {
        let mqtt = mqtt.clone();
        move |v| mqtt.publish_tempo(v)
    });
    spawn_watch_publisher(tasks, tempo.live().subscribe(), {
        let mqtt = mqtt.clone();
        move |v| mqtt.publish_plan(v)
    });
    spawn_watch_publisher(tasks, tempo.book().subscribe(), {
        let mqtt = mqtt.clone();
        move |v| mqtt.publish_ledger(v)
    });
    // The first plan and ledger from what is known now, without delaying the start.
    let (live, book) = (tempo.live().clone(), tempo.book().clone());
    tasks.spawn(async move {
        live.compute(Utc::now(), false).await;
        book.refresh(Utc::now()).await;
    });
}

/// Publishes every new value of a watch channel as JSON (`null` is "nothing yet").
pub fn spawn_watch_publisher<T: serde::Serialize + Send + Sync + 'static>(
    tasks: &Tasks,
    mut rx: watch::Receiver<T>,
    publish: impl Fn(Value) + Send + 'static,
) {
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        loop {
            let v = serde_json::to_value(&*rx.borrow_and_update()).unwrap_or_default();
            if !v.is_null() {
                publish(v);
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    });
}
