//! The MQTT subsystem: the bridge request router (built-ins, jobs, Tempo, discovery), the MQTT
//! bridge itself (a core task), the bridge device's Home Assistant entities and `bridge/info`.

use anyhow::Context;

use super::Deps;
use super::health::{BridgeInfo, to_json};
use super::requests::{
    discover_handler, maintenance_handler, register_job_actions, register_tempo_actions,
};
use super::tasks::{StartupError, Tasks};
use crate::mqtt::discovery::bridge::BridgeEntities;
use crate::mqtt::{MqttBridge, MqttHandle, RequestRouter, Tap};
use crate::scheduler::SchedulerHandle;

/// Starts the MQTT bridge with every request action and the `taps` (the grid meter), and
/// announces the bridge device.
pub async fn spawn(
    deps: &Deps<'_>,
    jobs: &SchedulerHandle,
    taps: Vec<Tap>,
    tasks: &Tasks,
) -> anyhow::Result<MqttHandle> {
    let (settings, core) = (deps.settings, deps.core);
    let mut router = RequestRouter::with_builtins(
        core.fleet.clone(),
        settings.to_redacted_json(),
        Some(discover_handler(settings)),
    );
    register_job_actions(&mut router, jobs);
    router.register("maintenance", maintenance_handler(core.commands.clone()));
    if let Some(t) = deps.tempo {
        register_tempo_actions(&mut router, t);
    }
    let (mqtt, mqtt_task) = MqttBridge::start_with_taps(
        deps.derived.mqtt.clone(),
        core.commands.clone(),
        &core.presence,
        router,
        taps,
        tasks.token().clone(),
    )
    .map_err(|e| StartupError(format!("mqtt: {e}")))?;
    tasks.spawn_core("mqtt", async move {
        mqtt_task.await.context("MQTT bridge panicked")
    });
    let entities = BridgeEntities {
        jobs: jobs.list().await.into_iter().map(|j| j.id).collect(),
        tempo: deps.tempo.is_some(),
        qos: settings.mqtt.qos,
        regulated: settings
            .regulator
            .enabled
            .then(|| core.fleet.ids().iter().map(|d| d.to_string()).collect()),
    };
    mqtt.set_extra_entities(entities.build(mqtt.topics()));
    mqtt.publish_info(to_json(&BridgeInfo::new(settings, core)));
    Ok(mqtt)
}
