//! Home Assistant entities of the bridge device: its connectivity sensor ([`bridge_device`]), a
//! switch (enabled) and a button (run now) per scheduled job, the next scheduled action, with
//! Tempo the Tempo, plan and ledger sensors (tomorrow's colour with the forecast probability as
//! attributes, the € totals with their `last_reset`), and with the regulator its state, target and
//! measured grid sensors, a fleet `regulate` switch and one per battery. All read the retained
//! bridge documents (`bridge/schedule`, `bridge/tempo`, `bridge/plan`, `bridge/ledger`,
//! `bridge/regulator`) and write bridge requests or `set/mode`. Pure: builds [`Entity`] values.

use super::{
    BRIDGE_STATE_TEMPLATE, Component, DeviceBlock, Entity, EntityCategory, EntityConfig, HaDevice,
    ORIGIN, StateClass, base_config, bridge_node,
};
use crate::mqtt::Topics;

/// Attributes of the "Tempo tomorrow" sensor from the plan document's `tomorrow`: the
/// likeliest colour's probability (0–1), whether tomorrow is published, the source, the odds.
const TOMORROW_ATTRIBUTES: &str = "{% set t = value_json.tomorrow %}\
{{ {'probability': t.probability, 'forecast_colour': t.colour, 'known': t.known, \
'source': t.source, 'date': t.date, 'odds_pct': t.odds_pct} | tojson if t else '{}' }}";

/// The bridge device: connectivity binary sensor (bridge/state).
pub fn bridge_device(topics: &Topics, qos: u8) -> HaDevice {
    let node = bridge_node(topics);
    let mut c = base_config(
        Component::BinarySensor,
        &node,
        "connectivity",
        "Connectivity",
        qos,
    );
    c.state_topic = Some(topics.bridge_state());
    c.value_template = Some(BRIDGE_STATE_TEMPLATE.into());
    c.device_class = Some("connectivity");
    c.payload_on = Some("online");
    c.payload_off = Some("offline");
    c.entity_category = Some(EntityCategory::Diagnostic);
    HaDevice {
        device: DeviceBlock {
            identifiers: vec![node.clone()],
            name: format!("Marstek bridge ({})", topics.base()),
            manufacturer: "marstek-bridge".into(),
            model: Some("marstek-bridge".into()),
            sw_version: Some(ORIGIN.sw_version.into()),
            connections: vec![],
            via_device: None,
        },
        node,
        entities: vec![Entity {
            component: Component::BinarySensor,
            key: "connectivity".into(),
            config: c,
            availability: vec![],
        }],
    }
}

/// What the bridge device shows besides its connectivity.
#[derive(Debug, Clone, Default)]
pub struct BridgeEntities {
    /// Ids of the scheduled jobs, in display order.
    pub jobs: Vec<String>,
    /// Tempo is enabled (Tempo, plan and ledger sensors).
    pub tempo: bool,
    /// QoS of the entities' subscriptions.
    pub qos: u8,
    /// With the regulator enabled: the batteries that get a `regulate` switch.
    pub regulated: Option<Vec<String>>,
}

impl BridgeEntities {
    /// Every entity of the bridge device.
    pub fn build(&self, topics: &Topics) -> Vec<Entity> {
        let base = Base {
            topics,
            root: bridge_node(topics),
            qos: self.qos,
        };
        let mut out: Vec<Entity> = self.jobs.iter().flat_map(|id| base.job(id)).collect();
        out.push(base.next_scheduled_action());
        out.push(base.maintenance());
        if self.tempo {
            out.extend(base.tempo());
        }
        if let Some(devs) = &self.regulated {
            out.extend(base.regulator(devs));
        }
        out
    }
}

/// Builds entities of the bridge device.
struct Base<'a> {
    topics: &'a Topics,
    root: String,
    qos: u8,
}

impl Base<'_> {
    fn entity(&self, key: &str, name: String, component: Component) -> Entity {
        let platform = component.as_str();
        let root = &self.root;
        Entity {
            component,
            key: key.to_string(),
            config: EntityConfig {
                name: Some(name),
                unique_id: format!("{root}_{key}"),
                default_entity_id: format!("{platform}.{root}_{key}"),
                qos: self.qos,
                ..EntityConfig::default()
            },
            availability: vec![self.topics.bridge_state()],
        }
    }

    /// The `enabled` switch and the `run now` button of job `id`.
    fn job(&self, id: &str) -> [Entity; 2] {
        let mut sw = self.entity(
            &format!("{id}_enabled"),
            format!("Job {id}"),
            Component::Switch,
        );
        sw.config.state_topic = Some(self.topics.bridge_schedule());
        sw.config.value_template = Some(format!(
            "{{% set j = value_json.jobs | selectattr('id', 'eq', '{id}') | first %}}{{{{ 'on' if j and not j.paused else 'off' }}}}"
        ));
        sw.config.command_topic = Some(self.topics.bridge_request(&format!("jobs/{id}/enabled")));
        sw.config.payload_on = Some(r#"{"enabled":true}"#);
        sw.config.payload_off = Some(r#"{"enabled":false}"#);
        sw.config.state_on = Some("on");
        sw.config.state_off = Some("off");
        sw.config.entity_category = Some(EntityCategory::Config);
        sw.config.icon = Some("mdi:calendar-clock");
        let mut button = self.entity(
            &format!("{id}_run"),
            format!("Run {id} now"),
            Component::Button,
        );
        button.config.command_topic = Some(self.topics.bridge_request(&format!("jobs/{id}/run")));
        button.config.payload_press = Some("{}");
        button.config.entity_category = Some(EntityCategory::Config);
        [sw, button]
    }

    /// The regulator's sensors and its `regulate` switches (fleet and each battery): on
    /// writes `regulate` to `set/mode`, off writes `Auto`.
    fn regulator(&self, devs: &[String]) -> Vec<Entity> {
        let doc = self.topics.bridge_regulator();
        let mut out = Vec::new();
        for (key, name, template, unit) in [
            (
                "regulator_state",
                "Regulator",
                "{{ value_json.state }}",
                None,
            ),
            (
                "regulator_target",
                "Regulator target",
                "{{ value_json.target_w }}",
                Some("W"),
            ),
            (
                "regulator_grid",
                "Measured grid power",
                "{{ value_json.grid_w }}",
                Some("W"),
            ),
        ] {
            let mut e = self.entity(key, name.into(), Component::Sensor);
            e.config.state_topic = Some(doc.clone());
            e.config.value_template = Some(template.into());
            if let Some(u) = unit {
                e.config.unit_of_measurement = Some(u);
                e.config.device_class = Some("power");
                e.config.state_class = Some(StateClass::Measurement);
            }
            out.push(e);
        }
        let fleet = std::iter::once((
            crate::mqtt::topics::FLEET.to_string(),
            "Regulate fleet".to_string(),
            "{{ 'on' if value_json.members | length > 0 else 'off' }}".to_string(),
        ));
        let each = devs.iter().map(|d| {
            (
                d.clone(),
                format!("Regulate {d}"),
                format!("{{{{ 'on' if '{d}' in value_json.members else 'off' }}}}"),
            )
        });
        for (dev, name, template) in fleet.chain(each) {
            let mut sw = self.entity(&format!("regulate_{dev}"), name, Component::Switch);
            sw.config.state_topic = Some(doc.clone());
            sw.config.value_template = Some(template);
            sw.config.command_topic = Some(self.topics.set_field(&dev, "mode"));
            sw.config.payload_on = Some("regulate");
            sw.config.payload_off = Some("Auto");
            sw.config.state_on = Some("on");
            sw.config.state_off = Some("off");
            sw.config.icon = Some("mdi:transmission-tower-import");
            out.push(sw);
        }
        out
    }

    /// The bridge-wide maintenance hold (every battery), from `bridge/maintenance`.
    fn maintenance(&self) -> Entity {
        let mut sw = self.entity(
            "maintenance",
            "Maintenance hold (all batteries)".into(),
            Component::Switch,
        );
        sw.config.state_topic = Some(self.topics.bridge_maintenance());
        sw.config.value_template = Some("{{ 'on' if value_json.bridge else 'off' }}".into());
        sw.config.command_topic = Some(self.topics.bridge_request("maintenance"));
        sw.config.payload_on = Some(r#"{"maintenance":true}"#);
        sw.config.payload_off = Some(r#"{"maintenance":false}"#);
        sw.config.state_on = Some("on");
        sw.config.state_off = Some("off");
        sw.config.entity_category = Some(EntityCategory::Config);
        sw.config.icon = Some("mdi:wrench-clock");
        sw
    }

    fn next_scheduled_action(&self) -> Entity {
        let mut next = self.entity(
            "next_scheduled_action",
            "Next scheduled action".into(),
            Component::Sensor,
        );
        next.config.state_topic = Some(self.topics.bridge_schedule());
        next.config.value_template = Some(
            "{% set j = value_json.jobs | selectattr('id', 'in', ['job_switch_to_auto', 'job_switch_to_manual_night']) \
             | selectattr('next_run_utc') | sort(attribute='next_run_utc') | first %}\
             {{ (j.id | replace('job_switch_to_', '') ~ ' at ' ~ j.next_run_local) if j else 'none' }}"
                .into(),
        );
        next.config.icon = Some("mdi:calendar-arrow-right");
        next
    }

    /// Tempo colours, tonight's precharge, the plan's next action and the ledger's savings.
    fn tempo(&self) -> Vec<Entity> {
        let mut out = Vec::new();
        for (key, name, path) in [
            ("tempo_today", "Tempo today", "today"),
            ("tempo_tomorrow", "Tempo tomorrow", "tomorrow"),
        ] {
            let mut e = self.entity(key, name.into(), Component::Sensor);
            e.config.state_topic = Some(self.topics.bridge_tempo());
            e.config.value_template =
                Some(format!("{{{{ value_json.{path}.colour or 'unknown' }}}}"));
            e.config.icon = Some("mdi:palette");
            if key == "tempo_tomorrow" {
                // The planner's view of tomorrow: the forecast probability of its likeliest
                // colour, whether it is published, who said so, the odds of each colour.
                e.config.json_attributes_topic = Some(self.topics.bridge_plan());
                e.config.json_attributes_template = Some(TOMORROW_ATTRIBUTES.into());
            }
            out.push(e);
        }
        let mut pre = self.entity(
            "precharge_tonight",
            "Precharge tonight".into(),
            Component::BinarySensor,
        );
        pre.config.state_topic = Some(self.topics.bridge_tempo());
        pre.config.value_template = Some("{{ 'ON' if value_json.precharge else 'OFF' }}".into());
        pre.config.icon = Some("mdi:battery-charging-high");
        out.push(pre);
        let mut next = self.entity(
            "plan_next_action",
            "Plan next action".into(),
            Component::Sensor,
        );
        next.config.state_topic = Some(self.topics.bridge_plan());
        next.config.value_template = Some("{{ value_json.next_action | truncate(250) }}".into());
        next.config.icon = Some("mdi:battery-clock");
        out.push(next);
        let mut fc = self.entity(
            "tempo_tomorrow_forecast",
            "Tempo tomorrow forecast".into(),
            Component::Sensor,
        );
        fc.config.state_topic = Some(self.topics.bridge_plan());
        fc.config.value_template =
            Some("{{ value_json.tomorrow.colour if value_json.tomorrow else 'unknown' }}".into());
        fc.config.icon = Some("mdi:palette-outline");
        out.push(fc);
        let mut prob = self.entity(
            "tempo_tomorrow_probability",
            "Tempo tomorrow probability".into(),
            Component::Sensor,
        );
        prob.config.state_topic = Some(self.topics.bridge_plan());
        prob.config.value_template = Some(
            "{{ (value_json.tomorrow.probability * 100) | round(0) if value_json.tomorrow else none }}"
                .into(),
        );
        prob.config.unit_of_measurement = Some("%");
        prob.config.state_class = Some(StateClass::Measurement);
        prob.config.icon = Some("mdi:percent");
        out.push(prob);
        out.extend(self.ledger());
        out
    }

    /// The € ledger's two savings sensors (today, this season), monetary totals that HA resets
    /// at the instants the ledger document gives.
    fn ledger(&self) -> Vec<Entity> {
        let mut out = Vec::new();
        for (key, name, field, reset) in [
            (
                "ledger_today",
                "Tempo saved today",
                "today_saved_eur",
                "today_start",
            ),
            (
                "ledger_season",
                "Tempo saved this season",
                "season_saved_eur",
                "season_start",
            ),
        ] {
            let mut e = self.entity(key, name.into(), Component::Sensor);
            e.config.state_topic = Some(self.topics.bridge_ledger());
            e.config.value_template = Some(format!("{{{{ value_json.{field} }}}}"));
            e.config.device_class = Some("monetary");
            e.config.unit_of_measurement = Some("EUR");
            e.config.state_class = Some(StateClass::Total);
            // A `total` restarts at each Tempo day / season: HA reads when from the document.
            e.config.last_reset_value_template = Some(format!("{{{{ value_json.{reset} }}}}"));
            e.config.suggested_display_precision = Some(2);
            e.config.icon = Some("mdi:piggy-bank-outline");
            out.push(e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_gets_a_switch_and_a_button_and_tempo_adds_its_sensors() {
        let topics = Topics::new("marstek", "homeassistant");
        let plain = BridgeEntities {
            jobs: vec!["job_a".into(), "job_b".into()],
            tempo: false,
            regulated: None,
            qos: 1,
        };
        let keys: Vec<String> = plain.build(&topics).into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "job_a_enabled",
                "job_a_run",
                "job_b_enabled",
                "job_b_run",
                "next_scheduled_action",
                "maintenance"
            ]
        );
        let with_tempo = BridgeEntities {
            tempo: true,
            ..plain
        };
        let entities = with_tempo.build(&topics);
        assert_eq!(entities.len(), 6 + 8);
        let run = &entities[1];
        assert_eq!(
            run.config.command_topic.as_deref(),
            Some(topics.bridge_request("jobs/job_a/run").as_str())
        );
        assert!(entities.iter().all(|e| e.config.qos == 1));
        let hold = entities.iter().find(|e| e.key == "maintenance").unwrap();
        assert_eq!(
            hold.config.command_topic.as_deref(),
            Some(topics.bridge_request("maintenance").as_str())
        );
        assert_eq!(hold.config.payload_on, Some(r#"{"maintenance":true}"#));
    }

    fn tempo_configs() -> Vec<(String, serde_json::Value)> {
        let topics = Topics::new("marstek", "homeassistant");
        BridgeEntities {
            tempo: true,
            qos: 1,
            ..BridgeEntities::default()
        }
        .build(&topics)
        .into_iter()
        .map(|e| (e.key, serde_json::to_value(&e.config).unwrap()))
        .collect()
    }

    #[test]
    fn ledger_sensors_follow_the_monetary_total_rules_with_a_last_reset() {
        let configs = tempo_configs();
        let get = |k: &str| &configs.iter().find(|(key, _)| key == k).unwrap().1;
        for (key, field, reset) in [
            ("ledger_today", "today_saved_eur", "today_start"),
            ("ledger_season", "season_saved_eur", "season_start"),
        ] {
            let v = get(key);
            assert_eq!(v["state_topic"], "marstek/bridge/ledger", "{key}");
            assert_eq!(v["device_class"], "monetary", "{key}");
            assert_eq!(v["unit_of_measurement"], "EUR", "{key}");
            assert_eq!(v["state_class"], "total", "{key}");
            assert_eq!(v["value_template"], format!("{{{{ value_json.{field} }}}}"));
            assert_eq!(
                v["last_reset_value_template"],
                format!("{{{{ value_json.{reset} }}}}"),
                "{key}"
            );
        }
        // HA's rules over every bridge entity: monetary only with state_class total (or none),
        // last_reset only on a total, attributes only with their topic.
        for (key, v) in &configs {
            if v["device_class"] == "monetary" {
                assert!(
                    matches!(v["state_class"].as_str(), None | Some("total")),
                    "{key}"
                );
            }
            if v.get("last_reset_value_template").is_some() {
                assert_eq!(v["state_class"], "total", "{key}: last_reset needs total");
                assert!(v["state_topic"].is_string(), "{key}");
            }
            if v.get("json_attributes_template").is_some() {
                assert!(v["json_attributes_topic"].is_string(), "{key}");
            }
            if v["state_class"] == "total_increasing" {
                assert_ne!(v["device_class"], "monetary", "{key}");
            }
        }
    }

    #[test]
    fn tomorrow_carries_the_forecast_probability_as_an_attribute() {
        let configs = tempo_configs();
        let v = &configs
            .iter()
            .find(|(key, _)| key == "tempo_tomorrow")
            .unwrap()
            .1;
        assert_eq!(v["state_topic"], "marstek/bridge/tempo");
        assert_eq!(v["json_attributes_topic"], "marstek/bridge/plan");
        let tpl = v["json_attributes_template"].as_str().unwrap();
        // Reads the plan document's `tomorrow` fields (see `tempo::live`), renders a JSON object
        // (an empty one when the plan has no tomorrow).
        assert!(
            tpl.starts_with("{% set t = value_json.tomorrow %}"),
            "{tpl}"
        );
        for field in [
            "probability",
            "colour",
            "known",
            "source",
            "date",
            "odds_pct",
        ] {
            assert!(tpl.contains(&format!("t.{field}")), "{field}: {tpl}");
        }
        assert!(tpl.contains("'probability': t.probability"), "{tpl}");
        assert!(tpl.contains("| tojson if t else '{}'"), "{tpl}");
        // Today's colour has no forecast to show.
        let today = &configs.iter().find(|(k, _)| k == "tempo_today").unwrap().1;
        assert!(today.get("json_attributes_topic").is_none());
    }

    #[test]
    fn the_regulator_adds_its_sensors_a_fleet_switch_and_one_per_battery() {
        let topics = Topics::new("marstek", "homeassistant");
        let e = BridgeEntities {
            regulated: Some(vec!["bat1".into()]),
            ..BridgeEntities::default()
        }
        .build(&topics);
        let sw = e.iter().find(|e| e.key == "regulate_bat1").expect("switch");
        assert_eq!(
            sw.config.command_topic.as_deref(),
            Some("marstek/bat1/set/mode")
        );
        assert_eq!(sw.config.payload_on, Some("regulate"));
        assert_eq!(
            sw.config.state_topic.as_deref(),
            Some("marstek/bridge/regulator")
        );
        let fleet = e
            .iter()
            .find(|e| e.key == "regulate_fleet")
            .expect("fleet switch");
        assert_eq!(
            fleet.config.command_topic.as_deref(),
            Some("marstek/fleet/set/mode")
        );
        assert!(e.iter().any(|e| e.key == "regulator_grid"));
        assert!(
            !BridgeEntities::default()
                .build(&topics)
                .iter()
                .any(|e| e.key.starts_with("regulat"))
        );
    }
}
