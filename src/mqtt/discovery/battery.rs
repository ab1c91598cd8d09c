//! The Home Assistant device of one battery: its sensors (from `<dev>/state`), the detail
//! readings of [`super::readings`], the controls (mode select, passive power and duration, DOD,
//! LED and BLE switches, from `<dev>/controls`, writing `<dev>/set/<field>`), the "control
//! holding" binary sensor and the "intent" sensor (from `<dev>/intent`) and one problem binary
//! sensor per alert kind (from `<dev>/alerts`). Pure: builds [`HaDevice`] values.

use super::{
    Component, DeviceBlock, Entity, EntityCategory, EntityConfig, HaDevice, StateClass,
    base_config, bridge_node, device_node, readings,
};
use crate::domain::{DeviceId, DeviceInfo, DeviceLimits, MAX_PASSIVE_SECONDS, Mode};
use crate::mqtt::topics::Topics;

/// Alert kinds that get a problem binary sensor per battery (fed by `<dev>/alerts`).
pub const PROBLEM_KINDS: [(&str, &str); 6] = [
    ("low_soc", "Low state of charge"),
    ("high_temperature", "High temperature"),
    ("unreachable", "Unreachable"),
    ("mode_drift", "Mode drift"),
    ("command_not_holding", "Command not holding"),
    ("firmware_known_bad", "Firmware in a known-bad range"),
];

/// One sensor of `<dev>/state`.
struct Sensor {
    key: &'static str,
    name: &'static str,
    device_class: &'static str,
    unit: &'static str,
    state_class: StateClass,
    category: Option<EntityCategory>,
    precision: Option<u8>,
}

const fn sensor(
    key: &'static str,
    name: &'static str,
    device_class: &'static str,
    unit: &'static str,
    state_class: StateClass,
    category: Option<EntityCategory>,
    precision: Option<u8>,
) -> Sensor {
    Sensor {
        key,
        name,
        device_class,
        unit,
        state_class,
        category,
        precision,
    }
}

const DIAG: Option<EntityCategory> = Some(EntityCategory::Diagnostic);
const M: StateClass = StateClass::Measurement;
const T: StateClass = StateClass::TotalIncreasing;

/// The sensors every battery has: power in W, energy in Wh, temperature in °C.
#[rustfmt::skip]
const SENSORS: [Sensor; 15] = [
    sensor("soc", "State of charge", "battery", "%", M, None, Some(0)),
    sensor("bat_power", "Battery power", "power", "W", M, None, Some(0)),
    sensor("grid_power", "Grid power", "power", "W", M, None, Some(0)),
    sensor("offgrid_power", "Off-grid power", "power", "W", M, None, Some(0)),
    sensor("pv_power", "Solar power", "power", "W", M, None, Some(0)),
    sensor("ct_power", "CT power", "power", "W", M, None, Some(0)),
    sensor("temperature", "Temperature", "temperature", "°C", M, None, Some(1)),
    sensor("remaining_capacity", "Remaining capacity", "energy_storage", "Wh", M, None, Some(0)),
    sensor("rated_capacity", "Rated capacity", "energy_storage", "Wh", M, DIAG, Some(0)),
    sensor("total_pv_energy", "Solar energy", "energy", "Wh", T, None, Some(0)),
    sensor("total_grid_output_energy", "Energy discharged", "energy", "Wh", T, None, Some(0)),
    sensor("total_grid_input_energy", "Energy charged", "energy", "Wh", T, None, Some(0)),
    sensor("total_load_energy", "Load energy", "energy", "Wh", T, None, Some(0)),
    sensor("rssi", "Wi-Fi signal", "signal_strength", "dBm", M, DIAG, Some(0)),
    sensor("last_seen", "Last seen", "timestamp", "", M, DIAG, None),
];

/// The HA device of one battery with all its entities.
pub fn battery_device(
    topics: &Topics,
    dev: &DeviceId,
    info: Option<&DeviceInfo>,
    limits: &DeviceLimits,
    expire_after_s: u64,
    qos: u8,
) -> HaDevice {
    let mut b = Builder {
        topics,
        dev,
        node: device_node(topics, dev),
        state: topics.state(dev),
        controls: topics.controls(dev),
        both: vec![topics.bridge_state(), topics.availability(dev)],
        expire_after_s,
        qos,
        entities: Vec::new(),
    };
    b.sensors();
    let set = info.map(|i| i.readings).unwrap_or_default();
    let detail = readings::reading_entities(&b.node, &b.state, &set, expire_after_s, qos, &b.both);
    b.entities.extend(detail);
    b.ct_connected();
    b.mode();
    b.passive(limits);
    b.dod();
    b.switches();
    b.holding();
    b.problems();
    HaDevice {
        device: device_block(topics, dev, &b.node, info),
        node: b.node,
        entities: b.entities,
    }
}

/// The `device` block: model and firmware when known, the BLE MAC as a connection.
fn device_block(
    topics: &Topics,
    dev: &DeviceId,
    node: &str,
    info: Option<&DeviceInfo>,
) -> DeviceBlock {
    let model = info.map(|i| i.model.clone());
    DeviceBlock {
        identifiers: vec![node.to_string()],
        name: format!(
            "Marstek {} {}",
            model.clone().unwrap_or_else(|| "Venus".into()),
            dev
        ),
        manufacturer: "Marstek".into(),
        model,
        sw_version: info.map(|i| i.firmware.to_string()),
        connections: info
            .and_then(|i| mac_colons(&i.ble_mac))
            .map(|m| vec![("mac".to_string(), m)])
            .unwrap_or_default(),
        via_device: Some(bridge_node(topics)),
    }
}

fn mac_colons(hex: &str) -> Option<String> {
    (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
        hex.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_lowercase())
            .collect::<Vec<_>>()
            .join(":")
    })
}

/// Collects the entities of one battery.
struct Builder<'a> {
    topics: &'a Topics,
    dev: &'a DeviceId,
    node: String,
    state: String,
    controls: String,
    /// Bridge and device availability (both must be online).
    both: Vec<String>,
    expire_after_s: u64,
    qos: u8,
    entities: Vec<Entity>,
}

impl Builder<'_> {
    fn config(&self, component: Component, key: &str, name: &str) -> EntityConfig {
        base_config(component, &self.node, key, name, self.qos)
    }

    fn push(&mut self, component: Component, key: &str, config: EntityConfig) {
        let availability = self.both.clone();
        self.push_with(component, key, config, availability);
    }

    fn push_with(
        &mut self,
        component: Component,
        key: &str,
        config: EntityConfig,
        availability: Vec<String>,
    ) {
        self.entities.push(Entity {
            component,
            key: key.to_string(),
            config,
            availability,
        });
    }

    fn set_topic(&self, field: &str) -> Option<String> {
        Some(self.topics.set_field(self.dev.as_str(), field))
    }

    fn sensors(&mut self) {
        for s in &SENSORS {
            let mut c = self.config(Component::Sensor, s.key, s.name);
            c.state_topic = Some(self.state.clone());
            c.value_template = Some(format!("{{{{ value_json.{} }}}}", s.key));
            c.device_class = Some(s.device_class);
            if s.key != "last_seen" {
                // timestamps have no unit and no state class
                c.unit_of_measurement = Some(s.unit);
                c.state_class = Some(s.state_class);
                c.expire_after = Some(self.expire_after_s);
            }
            c.entity_category = s.category;
            c.suggested_display_precision = s.precision;
            if s.key == "rssi" {
                // changes at every read: noisy, hidden until the user enables it
                c.enabled_by_default = Some(false);
            }
            self.push(Component::Sensor, s.key, c);
        }
    }

    fn ct_connected(&mut self) {
        let mut c = self.config(Component::BinarySensor, "ct_connected", "CT connected");
        c.state_topic = Some(self.state.clone());
        c.value_template = Some("{{ 'ON' if value_json.ct_connected else 'OFF' }}".into());
        c.device_class = Some("connectivity");
        c.entity_category = Some(EntityCategory::Diagnostic);
        self.push(Component::BinarySensor, "ct_connected", c);
    }

    fn mode(&mut self) {
        let mut c = self.config(Component::Select, "mode", "Operating mode");
        c.state_topic = Some(self.state.clone());
        c.value_template = Some("{{ value_json.mode }}".into());
        c.command_topic = self.set_topic("mode");
        c.options = Some(Mode::ALL.iter().map(|m| m.as_str().to_string()).collect());
        c.icon = Some("mdi:battery-sync");
        c.optimistic = Some(false);
        self.push(Component::Select, "mode", c);
    }

    /// A config-category number box over `<dev>/controls`.
    fn control_number(
        &self,
        key: &str,
        name: &str,
        (min, max, step): (f64, f64, f64),
    ) -> EntityConfig {
        let mut c = self.config(Component::Number, key, name);
        c.state_topic = Some(self.controls.clone());
        c.value_template = Some(format!("{{{{ value_json.{key} }}}}"));
        c.command_topic = self.set_topic(key);
        c.min = Some(min);
        c.max = Some(max);
        c.step = Some(step);
        c.mode = Some("box");
        c.entity_category = Some(EntityCategory::Config);
        c
    }

    /// Passive power (W, within the device's limits), duration (s) and the apply button.
    fn passive(&mut self, limits: &DeviceLimits) {
        let range = (
            -(limits.max_charge_w as f64),
            limits.max_discharge_w as f64,
            10.0,
        );
        let mut c =
            self.control_number("passive_power", "Passive power (negative = charge)", range);
        c.device_class = Some("power");
        c.unit_of_measurement = Some("W");
        self.push(Component::Number, "passive_power", c);
        let range = (1.0, MAX_PASSIVE_SECONDS as f64, 1.0);
        let mut c = self.control_number("passive_duration", "Passive duration", range);
        c.device_class = Some("duration");
        c.unit_of_measurement = Some("s");
        self.push(Component::Number, "passive_duration", c);
        let mut c = self.config(Component::Button, "apply_passive", "Apply passive");
        c.command_topic = self.set_topic("apply_passive");
        c.payload_press = Some("PRESS");
        c.icon = Some("mdi:play");
        self.push(Component::Button, "apply_passive", c);
    }

    /// Depth of discharge, 30–88 %.
    fn dod(&mut self) {
        let mut c = self.control_number("dod", "Depth of discharge", (30.0, 88.0, 1.0));
        c.unit_of_measurement = Some("%");
        self.push(Component::Number, "dod", c);
    }

    fn switches(&mut self) {
        for (key, name) in [("led", "LED"), ("ble_adv", "Bluetooth advertising")] {
            let mut c = self.config(Component::Switch, key, name);
            c.state_topic = Some(self.controls.clone());
            c.value_template = Some(format!("{{{{ 'ON' if value_json.{key} else 'OFF' }}}}"));
            c.command_topic = self.set_topic(key);
            c.payload_on = Some("ON");
            c.payload_off = Some("OFF");
            c.entity_category = Some(EntityCategory::Config);
            self.push(Component::Switch, key, c);
        }
        let mut c = self.config(Component::Switch, "maintenance", "Maintenance hold");
        c.state_topic = Some(self.topics.maintenance(self.dev));
        c.command_topic = self.set_topic("maintenance");
        c.payload_on = Some("ON");
        c.payload_off = Some("OFF");
        c.entity_category = Some(EntityCategory::Config);
        c.icon = Some("mdi:wrench-clock");
        self.push(Component::Switch, "maintenance", c);
    }

    /// "Control holding" (the battery shows its intent's mode) and "Intent" (the intended
    /// mode, or `none`), from `<dev>/intent`.
    fn holding(&mut self) {
        let intent = self.topics.intent(self.dev);
        let mut c = self.config(
            Component::BinarySensor,
            "control_holding",
            "Control holding",
        );
        c.state_topic = Some(intent.clone());
        c.value_template = Some("{{ 'ON' if value_json.holding else 'OFF' }}".into());
        c.icon = Some("mdi:shield-check");
        self.push(Component::BinarySensor, "control_holding", c);
        let mut c = self.config(Component::Sensor, "intent", "Intent");
        c.state_topic = Some(intent.clone());
        c.value_template =
            Some("{{ value_json.intended.mode if value_json.intended else 'none' }}".into());
        c.icon = Some("mdi:target");
        self.push(Component::Sensor, "intent", c);
    }

    fn problems(&mut self) {
        for (kind, name) in PROBLEM_KINDS {
            let key = format!("problem_{kind}");
            let mut c = self.config(Component::BinarySensor, &key, name);
            c.state_topic = Some(self.topics.alerts_active(self.dev));
            c.value_template = Some(format!(
                "{{{{ 'ON' if '{kind}' in value_json.active else 'OFF' }}}}"
            ));
            c.device_class = Some("problem");
            c.entity_category = Some(EntityCategory::Diagnostic);
            // "unreachable" must stay available while the device is offline.
            let availability = if kind == "unreachable" {
                vec![self.topics.bridge_state()]
            } else {
                self.both.clone()
            };
            self.push_with(Component::BinarySensor, &key, c, availability);
        }
    }
}
