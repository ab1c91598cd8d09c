//! Home Assistant MQTT discovery as typed structs: the bridge device, one device per battery
//! (`via_device` = the bridge), its entities, and the retained config messages for the
//! entity-per-topic or device-based style. Pure: builds (topic, payload) pairs; the bridge loop
//! publishes them. Other modules add entities (jobs, Tempo) with [`Entity`] and
//! `MqttHandle::set_extra_entities`. The detail readings' entities (CT phases, solar strings,
//! battery detail, diagnostics) are in [`readings`].

pub mod bridge;
pub mod readings;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::settings::DiscoveryStyle;
use super::topics::Topics;
use crate::domain::{DeviceId, DeviceInfo, DeviceLimits, MAX_PASSIVE_SECONDS, Mode};

/// HA entity platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// Read-only value.
    Sensor,
    /// On/off state.
    BinarySensor,
    /// Choice among options.
    Select,
    /// Settable number.
    Number,
    /// Momentary action.
    Button,
    /// Settable on/off.
    Switch,
}

impl Component {
    /// The platform name in topics and `platform` keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Sensor => "sensor",
            Component::BinarySensor => "binary_sensor",
            Component::Select => "select",
            Component::Number => "number",
            Component::Button => "button",
            Component::Switch => "switch",
        }
    }
}

/// HA `state_class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateClass {
    /// Instantaneous value.
    Measurement,
    /// Monotonic lifetime counter (Energy dashboard).
    TotalIncreasing,
    /// A total that may go down (money saved, `device_class: monetary`).
    Total,
}

/// HA `entity_category`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityCategory {
    /// Settings.
    Config,
    /// Technical information.
    Diagnostic,
}

/// One `availability` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Availability {
    /// Topic carrying `online`/`offline`.
    pub topic: String,
    /// Payload meaning available.
    pub payload_available: &'static str,
    /// Payload meaning unavailable.
    pub payload_not_available: &'static str,
}

impl Availability {
    fn of(topic: String) -> Self {
        Self {
            topic,
            payload_available: "online",
            payload_not_available: "offline",
        }
    }
}

/// The `device` block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceBlock {
    /// Stable identifiers.
    pub identifiers: Vec<String>,
    /// Display name.
    pub name: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Firmware.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
    /// Network connections, e.g. `[["mac","ac:d9:…"]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<(String, String)>,
    /// Parent device identifier (the bridge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_device: Option<String>,
}

/// The `origin` block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Origin {
    /// Software name.
    pub name: &'static str,
    /// Software version.
    pub sw_version: &'static str,
    /// Project page.
    pub support_url: &'static str,
}

/// The origin of every config we publish.
pub const ORIGIN: Origin = Origin {
    name: "marstek-bridge",
    sw_version: env!("CARGO_PKG_VERSION"),
    support_url: "https://github.com/marstek-bridge/marstek-bridge",
};

/// Platform-specific configuration of one entity (keys as HA spells them; None = omitted).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EntityConfig {
    /// Entity name (HA prefixes the device name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Globally unique id.
    pub unique_id: String,
    /// Suggested entity id, `<platform>.<id>` (replaces the removed `object_id`).
    pub default_entity_id: String,
    /// Topic the state is read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_topic: Option<String>,
    /// Template extracting the state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_template: Option<String>,
    /// Topic commands go to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_topic: Option<String>,
    /// HA device class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
    /// HA state class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_class: Option<StateClass>,
    /// Unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_of_measurement: Option<&'static str>,
    /// Config or diagnostic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_category: Option<EntityCategory>,
    /// Seconds after which the value is stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<u64>,
    /// Select options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// Number minimum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Number maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Number step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// Number display mode (`box`, `slider`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// Payload meaning on (binary sensor, switch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_on: Option<&'static str>,
    /// Payload meaning off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_off: Option<&'static str>,
    /// Button payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_press: Option<&'static str>,
    /// State meaning on (switch), when it differs from `payload_on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_on: Option<&'static str>,
    /// State meaning off (switch), when it differs from `payload_off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_off: Option<&'static str>,
    /// Display precision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_display_precision: Option<u8>,
    /// Icon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<&'static str>,
    /// Hidden until enabled by the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_by_default: Option<bool>,
    /// Never use the retained state as optimistic (we publish confirmed state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimistic: Option<bool>,
    /// QoS.
    pub qos: u8,
}

/// One entity of one HA device.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// Platform.
    pub component: Component,
    /// Short key unique within the device (`soc`, `mode`, …), used as the topic object id.
    pub key: String,
    /// The config.
    pub config: EntityConfig,
    /// Availability topics; empty = always available.
    pub availability: Vec<String>,
}

/// A HA device with its entities.
#[derive(Debug, Clone, PartialEq)]
pub struct HaDevice {
    /// Node id used in topics and identifiers (`<root>_<dev>` or `<root>_bridge`).
    pub node: String,
    /// The device block.
    pub device: DeviceBlock,
    /// Entities.
    pub entities: Vec<Entity>,
}

#[derive(Serialize)]
struct EntityPayload<'a> {
    #[serde(flatten)]
    config: &'a EntityConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    availability: Vec<Availability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_mode: Option<&'static str>,
    device: &'a DeviceBlock,
    origin: &'a Origin,
}

#[derive(Serialize)]
struct ComponentPayload<'a> {
    platform: Component,
    #[serde(flatten)]
    config: &'a EntityConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    availability: Vec<Availability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_mode: Option<&'static str>,
}

#[derive(Serialize)]
struct DevicePayload<'a> {
    device: &'a DeviceBlock,
    origin: &'a Origin,
    components: BTreeMap<&'a str, ComponentPayload<'a>>,
}

fn avail(topics: &[String]) -> (Vec<Availability>, Option<&'static str>) {
    let list: Vec<Availability> = topics.iter().cloned().map(Availability::of).collect();
    let mode = (list.len() > 1).then_some("all");
    (list, mode)
}

/// Identifier root derived from the base topic (`marstek`, `mb/x` → `mb_x`).
pub fn id_root(topics: &Topics) -> String {
    topics.base().replace('/', "_")
}

/// The bridge's HA device id.
pub fn bridge_node(topics: &Topics) -> String {
    format!("{}_bridge", id_root(topics))
}

/// The HA device id of a battery.
pub fn device_node(topics: &Topics, dev: &DeviceId) -> String {
    format!("{}_{}", id_root(topics), dev)
}

/// Starts an entity config with ids derived from the node and key.
pub fn base_config(
    component: Component,
    node: &str,
    key: &str,
    name: &str,
    qos: u8,
) -> EntityConfig {
    EntityConfig {
        name: Some(name.to_string()),
        unique_id: format!("{node}_{key}"),
        default_entity_id: format!("{}.{node}_{key}", component.as_str()),
        qos,
        ..Default::default()
    }
}

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

fn mac_colons(hex: &str) -> Option<String> {
    (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
        hex.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_lowercase())
            .collect::<Vec<_>>()
            .join(":")
    })
}

/// Alert kinds that get a problem binary sensor per battery (fed by `<dev>/alerts`).
pub const PROBLEM_KINDS: [(&str, &str); 5] = [
    ("low_soc", "Low state of charge"),
    ("high_temperature", "High temperature"),
    ("unreachable", "Unreachable"),
    ("mode_drift", "Mode drift"),
    ("command_not_holding", "Command not holding"),
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
    let node = device_node(topics, dev);
    let bridge_avail = topics.bridge_state();
    let both = vec![bridge_avail.clone(), topics.availability(dev)];
    let state = topics.state(dev);
    let mut entities = Vec::new();
    let mut push = |component, key: &str, config: EntityConfig, availability: Vec<String>| {
        entities.push(Entity {
            component,
            key: key.to_string(),
            config,
            availability,
        })
    };
    // (key, name, device_class, unit, state_class, category, precision)
    type S = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        StateClass,
        Option<EntityCategory>,
        Option<u8>,
    );
    use StateClass::{Measurement as M, TotalIncreasing as T};
    let sensors: [S; 15] = [
        ("soc", "State of charge", "battery", "%", M, None, Some(0)),
        ("bat_power", "Battery power", "power", "W", M, None, Some(0)),
        ("grid_power", "Grid power", "power", "W", M, None, Some(0)),
        (
            "offgrid_power",
            "Off-grid power",
            "power",
            "W",
            M,
            None,
            Some(0),
        ),
        ("pv_power", "Solar power", "power", "W", M, None, Some(0)),
        ("ct_power", "CT power", "power", "W", M, None, Some(0)),
        (
            "temperature",
            "Temperature",
            "temperature",
            "°C",
            M,
            None,
            Some(1),
        ),
        (
            "remaining_capacity",
            "Remaining capacity",
            "energy_storage",
            "Wh",
            M,
            None,
            Some(0),
        ),
        (
            "rated_capacity",
            "Rated capacity",
            "energy_storage",
            "Wh",
            M,
            Some(EntityCategory::Diagnostic),
            Some(0),
        ),
        (
            "total_pv_energy",
            "Solar energy",
            "energy",
            "Wh",
            T,
            None,
            Some(0),
        ),
        (
            "total_grid_output_energy",
            "Energy discharged",
            "energy",
            "Wh",
            T,
            None,
            Some(0),
        ),
        (
            "total_grid_input_energy",
            "Energy charged",
            "energy",
            "Wh",
            T,
            None,
            Some(0),
        ),
        (
            "total_load_energy",
            "Load energy",
            "energy",
            "Wh",
            T,
            None,
            Some(0),
        ),
        (
            "rssi",
            "Wi-Fi signal",
            "signal_strength",
            "dBm",
            M,
            Some(EntityCategory::Diagnostic),
            Some(0),
        ),
        (
            "last_seen",
            "Last seen",
            "timestamp",
            "",
            M,
            Some(EntityCategory::Diagnostic),
            None,
        ),
    ];
    for (key, name, dc, unit, sc, cat, prec) in sensors {
        let mut c = base_config(Component::Sensor, &node, key, name, qos);
        c.state_topic = Some(state.clone());
        c.value_template = Some(format!("{{{{ value_json.{key} }}}}"));
        c.device_class = Some(dc);
        if key == "last_seen" {
            // timestamps have no unit and no state class
        } else {
            c.unit_of_measurement = Some(unit);
            c.state_class = Some(sc);
            c.expire_after = Some(expire_after_s);
        }
        c.entity_category = cat;
        c.suggested_display_precision = prec;
        if key == "rssi" {
            // changes at every read: noisy, hidden until the user enables it
            c.enabled_by_default = Some(false);
        }
        push(Component::Sensor, key, c, both.clone());
    }
    let set = info.map(|i| i.readings).unwrap_or_default();
    for e in readings::reading_entities(&node, &state, &set, expire_after_s, qos, &both) {
        push(e.component, &e.key, e.config, e.availability);
    }
    let mut c = base_config(
        Component::BinarySensor,
        &node,
        "ct_connected",
        "CT connected",
        qos,
    );
    c.state_topic = Some(state.clone());
    c.value_template = Some("{{ 'ON' if value_json.ct_connected else 'OFF' }}".into());
    c.device_class = Some("connectivity");
    c.entity_category = Some(EntityCategory::Diagnostic);
    push(Component::BinarySensor, "ct_connected", c, both.clone());

    let mut c = base_config(Component::Select, &node, "mode", "Operating mode", qos);
    c.state_topic = Some(state.clone());
    c.value_template = Some("{{ value_json.mode }}".into());
    c.command_topic = Some(topics.set_field(dev.as_str(), "mode"));
    c.options = Some(Mode::ALL.iter().map(|m| m.as_str().to_string()).collect());
    c.icon = Some("mdi:battery-sync");
    c.optimistic = Some(false);
    push(Component::Select, "mode", c, both.clone());

    let controls = topics.controls(dev);
    let mut c = base_config(
        Component::Number,
        &node,
        "passive_power",
        "Passive power (negative = charge)",
        qos,
    );
    c.state_topic = Some(controls.clone());
    c.value_template = Some("{{ value_json.passive_power }}".into());
    c.command_topic = Some(topics.set_field(dev.as_str(), "passive_power"));
    c.device_class = Some("power");
    c.unit_of_measurement = Some("W");
    c.min = Some(-(limits.max_charge_w as f64));
    c.max = Some(limits.max_discharge_w as f64);
    c.step = Some(10.0);
    c.mode = Some("box");
    c.entity_category = Some(EntityCategory::Config);
    push(Component::Number, "passive_power", c, both.clone());

    let mut c = base_config(
        Component::Number,
        &node,
        "passive_duration",
        "Passive duration",
        qos,
    );
    c.state_topic = Some(controls.clone());
    c.value_template = Some("{{ value_json.passive_duration }}".into());
    c.command_topic = Some(topics.set_field(dev.as_str(), "passive_duration"));
    c.device_class = Some("duration");
    c.unit_of_measurement = Some("s");
    c.min = Some(1.0);
    c.max = Some(MAX_PASSIVE_SECONDS as f64);
    c.step = Some(1.0);
    c.mode = Some("box");
    c.entity_category = Some(EntityCategory::Config);
    push(Component::Number, "passive_duration", c, both.clone());

    let mut c = base_config(
        Component::Button,
        &node,
        "apply_passive",
        "Apply passive",
        qos,
    );
    c.command_topic = Some(topics.set_field(dev.as_str(), "apply_passive"));
    c.payload_press = Some("PRESS");
    c.icon = Some("mdi:play");
    push(Component::Button, "apply_passive", c, both.clone());

    let mut c = base_config(Component::Number, &node, "dod", "Depth of discharge", qos);
    c.state_topic = Some(controls.clone());
    c.value_template = Some("{{ value_json.dod }}".into());
    c.command_topic = Some(topics.set_field(dev.as_str(), "dod"));
    c.unit_of_measurement = Some("%");
    c.min = Some(30.0);
    c.max = Some(88.0);
    c.step = Some(1.0);
    c.mode = Some("box");
    c.entity_category = Some(EntityCategory::Config);
    push(Component::Number, "dod", c, both.clone());

    for (key, name) in [("led", "LED"), ("ble_adv", "Bluetooth advertising")] {
        let mut c = base_config(Component::Switch, &node, key, name, qos);
        c.state_topic = Some(controls.clone());
        c.value_template = Some(format!("{{{{ 'ON' if value_json.{key} else 'OFF' }}}}"));
        c.command_topic = Some(topics.set_field(dev.as_str(), key));
        c.payload_on = Some("ON");
        c.payload_off = Some("OFF");
        c.entity_category = Some(EntityCategory::Config);
        push(Component::Switch, key, c, both.clone());
    }

    for (kind, name) in PROBLEM_KINDS {
        let key = format!("problem_{kind}");
        let mut c = base_config(Component::BinarySensor, &node, &key, name, qos);
        c.state_topic = Some(topics.alerts_active(dev));
        c.value_template = Some(format!(
            "{{{{ 'ON' if '{kind}' in value_json.active else 'OFF' }}}}"
        ));
        c.device_class = Some("problem");
        c.entity_category = Some(EntityCategory::Diagnostic);
        // "unreachable" must stay available while the device is offline.
        let av = if kind == "unreachable" {
            vec![bridge_avail.clone()]
        } else {
            both.clone()
        };
        push(Component::BinarySensor, &key, c, av);
    }

    let model = info.map(|i| i.model.clone());
    HaDevice {
        device: DeviceBlock {
            identifiers: vec![node.clone()],
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
        },
        node,
        entities,
    }
}

/// Retained (topic, payload) config messages for these devices in the given style (empty for
/// `off`).
pub fn config_messages(
    topics: &Topics,
    style: DiscoveryStyle,
    devices: &[HaDevice],
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for d in devices {
        match style {
            DiscoveryStyle::Off => {}
            DiscoveryStyle::Entity => {
                for e in &d.entities {
                    let (availability, availability_mode) = avail(&e.availability);
                    let payload = EntityPayload {
                        config: &e.config,
                        availability,
                        availability_mode,
                        device: &d.device,
                        origin: &ORIGIN,
                    };
                    if let Ok(bytes) = serde_json::to_vec(&payload) {
                        out.push((
                            topics.discovery_entity(e.component.as_str(), &d.node, &e.key),
                            bytes,
                        ));
                    }
                }
            }
            DiscoveryStyle::Device => {
                let components = d
                    .entities
                    .iter()
                    .map(|e| {
                        let (availability, availability_mode) = avail(&e.availability);
                        (
                            e.key.as_str(),
                            ComponentPayload {
                                platform: e.component,
                                config: &e.config,
                                availability,
                                availability_mode,
                            },
                        )
                    })
                    .collect();
                let payload = DevicePayload {
                    device: &d.device,
                    origin: &ORIGIN,
                    components,
                };
                if let Ok(bytes) = serde_json::to_vec(&payload) {
                    out.push((topics.discovery_device(&d.node), bytes));
                }
            }
        }
    }
    out
}

/// The config topics this bridge has published, per HA node (device id), as kept in the retained
/// `<base>/bridge/discovery` document. Serialised compactly — nodes with the same entity set share
/// one group — so a fleet of thousands stays a few kilobytes (a flat topic list of 1,000 batteries
/// would exceed the 1 MiB packet limit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishedConfigs {
    /// Node → its config topics.
    pub nodes: BTreeMap<String, BTreeSet<String>>,
}

/// Splits a config topic under `prefix` into its node and entity part (`sensor/soc`, or
/// `device` for device style); None when it does not have our shape.
fn split_config_topic(prefix: &str, topic: &str) -> Option<(String, String)> {
    let rest = topic
        .strip_prefix(prefix)?
        .strip_prefix('/')?
        .strip_suffix("/config")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["device", n] if !n.is_empty() => Some(((*n).to_string(), "device".into())),
        [component, n, key] if !n.is_empty() => {
            Some(((*n).to_string(), format!("{component}/{key}")))
        }
        _ => None,
    }
}

/// The entity part of a config topic of `node`.
fn entry_of(prefix: &str, node: &str, topic: &str) -> Option<String> {
    split_config_topic(prefix, topic)
        .filter(|(n, _)| n == node)
        .map(|(_, entry)| entry)
}

fn topic_of(prefix: &str, node: &str, entry: &str) -> Option<String> {
    match entry.split_once('/') {
        None if entry == "device" => Some(format!("{prefix}/device/{node}/config")),
        Some((component, key)) if !component.is_empty() && !key.is_empty() => {
            Some(format!("{prefix}/{component}/{node}/{key}/config"))
        }
        _ => None,
    }
}

impl PublishedConfigs {
    /// Every topic of every node.
    pub fn topics(&self) -> impl Iterator<Item = &String> {
        self.nodes.values().flatten()
    }

    /// The retained document: `{"prefix":…,"groups":[{"entities":[…],"nodes":[…]}]}`.
    pub fn to_payload(&self, prefix: &str) -> Vec<u8> {
        let mut groups: BTreeMap<Vec<String>, Vec<&str>> = BTreeMap::new();
        for (node, topics) in &self.nodes {
            let entries: Vec<String> = topics
                .iter()
                .filter_map(|t| entry_of(prefix, node, t))
                .collect();
            if !entries.is_empty() {
                groups.entry(entries).or_default().push(node);
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(entities, nodes)| serde_json::json!({ "entities": entities, "nodes": nodes }))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "prefix": prefix, "groups": groups }))
            .unwrap_or_default()
    }

    /// Reads the retained document; also the first format (`{"topics":[…]}`, nodes taken from
    /// the topics under `prefix`). Junk gives an empty list.
    pub fn parse(payload: &[u8], prefix: &str) -> Self {
        let mut out = Self::default();
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return out;
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(groups) = v.get("groups").and_then(Value::as_array) {
            let prefix = v.get("prefix").and_then(Value::as_str).unwrap_or(prefix);
            for g in groups {
                let entries = strings(&g["entities"]);
                for node in strings(&g["nodes"]) {
                    let set = out.nodes.entry(node.clone()).or_default();
                    set.extend(entries.iter().filter_map(|e| topic_of(prefix, &node, e)));
                }
            }
        } else {
            for t in strings(&v["topics"]) {
                if let Some((node, _)) = split_config_topic(prefix, &t) {
                    out.nodes.entry(node).or_default().insert(t);
                }
            }
        }
        out
    }
}

/// The config topics listed in a retained `<base>/bridge/discovery` document (either format).
pub fn parse_topic_list(payload: &[u8], prefix: &str) -> Vec<String> {
    PublishedConfigs::parse(payload, prefix)
        .topics()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_devices(t: &Topics) -> Vec<HaDevice> {
        let dev = DeviceId::parse("acd929a744d4").unwrap();
        let info = DeviceInfo {
            id: dev.clone(),
            model: "VenusE 3.0".into(),
            firmware: 153,
            ble_mac: "acd929a744d4".into(),
            wifi_mac: None,
            address: "127.0.0.1:30000".into(),
            readings: Default::default(),
        };
        vec![
            bridge_device(t, 1),
            battery_device(t, &dev, Some(&info), &DeviceLimits::default(), 150, 1),
        ]
    }

    #[test]
    fn entity_configs_have_required_fields() {
        let t = Topics::new("marstek", "homeassistant");
        let msgs = config_messages(&t, DiscoveryStyle::Entity, &sample_devices(&t));
        assert!(msgs.len() > 25);
        for (topic, payload) in &msgs {
            let v: Value = serde_json::from_slice(payload).unwrap();
            assert!(topic.starts_with("homeassistant/") && topic.ends_with("/config"));
            assert!(v["unique_id"].is_string(), "{topic}");
            assert!(v["default_entity_id"].is_string());
            assert!(v.get("object_id").is_none());
            assert!(v["device"]["identifiers"].is_array());
            assert_eq!(v["origin"]["name"], "marstek-bridge");
            let platform = topic.split('/').nth(1).unwrap();
            match platform {
                "sensor" | "binary_sensor" => assert!(v["state_topic"].is_string(), "{topic}"),
                _ => assert!(v["command_topic"].is_string(), "{topic}"),
            }
            if v["state_class"] == "total_increasing" {
                assert!(v["device_class"] == "energy" || v["device_class"].is_null());
            }
        }
        let soc: Value = serde_json::from_slice(
            &msgs
                .iter()
                .find(|(t, _)| t == "homeassistant/sensor/marstek_acd929a744d4/soc/config")
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(soc["availability_mode"], "all");
        assert_eq!(soc["availability"].as_array().unwrap().len(), 2);
        assert_eq!(soc["device"]["via_device"], "marstek_bridge");
        assert_eq!(soc["device"]["connections"][0][1], "ac:d9:29:a7:44:d4");
        assert_eq!(soc["expire_after"], 150);
        assert_eq!(soc["default_entity_id"], "sensor.marstek_acd929a744d4_soc");
    }

    #[test]
    fn device_style_and_off() {
        let t = Topics::new("mb", "ha");
        let devs = sample_devices(&t);
        let msgs = config_messages(&t, DiscoveryStyle::Device, &devs);
        assert_eq!(msgs.len(), 2);
        let v: Value = serde_json::from_slice(&msgs[1].1).unwrap();
        assert_eq!(msgs[1].0, "ha/device/mb_acd929a744d4/config");
        assert_eq!(v["components"]["mode"]["platform"], "select");
        assert!(config_messages(&t, DiscoveryStyle::Off, &devs).is_empty());
        assert!(parse_topic_list(b"junk", "ha").is_empty());
    }

    #[test]
    fn published_list_is_compact_and_round_trips() {
        let t = Topics::new("mb", "ha");
        let mut list = PublishedConfigs::default();
        for i in 0..1000 {
            let dev = DeviceId::parse(&format!("bat{i}")).unwrap();
            let d = battery_device(&t, &dev, None, &DeviceLimits::default(), 150, 1);
            let topics = config_messages(&t, DiscoveryStyle::Entity, std::slice::from_ref(&d))
                .into_iter()
                .map(|(topic, _)| topic);
            list.nodes.insert(d.node.clone(), topics.collect());
        }
        let payload = list.to_payload("ha");
        assert!(payload.len() < 32 * 1024, "{} bytes", payload.len());
        assert_eq!(PublishedConfigs::parse(&payload, "other"), list);
        assert_eq!(
            parse_topic_list(&payload, "ha").len(),
            list.topics().count()
        );
        // The first format still reads: nodes from the topics under the prefix.
        let old = br#"{"topics":["ha/sensor/mb_a/soc/config","ha/device/mb_b/config","x/y"]}"#;
        let parsed = PublishedConfigs::parse(old, "ha");
        assert_eq!(parsed.nodes.len(), 2);
        assert!(parsed.nodes["mb_b"].contains("ha/device/mb_b/config"));
    }
}
