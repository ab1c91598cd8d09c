//! Home Assistant MQTT discovery as typed structs: the bridge device ([`bridge`]), one device per
//! battery ([`battery`], `via_device` = the bridge) with its detail readings ([`readings`]), the
//! retained config messages for the entity-per-topic or device-based style ([`messages`]) and the
//! record of what was published ([`published`]). Pure: builds (topic, payload) pairs; the bridge
//! loop publishes them. Other modules add entities (jobs, Tempo) with [`Entity`] and
//! `MqttHandle::set_extra_entities`.

pub mod battery;
pub mod bridge;
pub mod messages;
pub mod published;
pub mod readings;

use serde::Serialize;

use super::topics::Topics;
use crate::domain::DeviceId;

pub use battery::{PROBLEM_KINDS, battery_device};
pub use bridge::bridge_device;
pub use messages::config_messages;
pub use published::{PublishedConfigs, parse_topic_list};

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
    /// Template extracting `online`/`offline` from a JSON payload (the bridge's JSON state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_template: Option<&'static str>,
}

/// Reads `online`/`offline` out of the bridge's `{"state":…}` (`<base>/bridge/state`).
pub const BRIDGE_STATE_TEMPLATE: &str = "{{ value_json.state }}";

impl Availability {
    /// An entry for `topic`; the bridge's JSON state topic gets [`BRIDGE_STATE_TEMPLATE`].
    fn of(topic: String, bridge_state: &str) -> Self {
        let value_template = (topic == bridge_state).then_some(BRIDGE_STATE_TEMPLATE);
        Self {
            topic,
            payload_available: "online",
            payload_not_available: "offline",
            value_template,
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
    /// Template giving the ISO 8601 instant a `total` sensor's total restarted from
    /// (HA's `last_reset`), read from the state topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reset_value_template: Option<String>,
    /// Topic whose JSON carries the entity's extra attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_attributes_topic: Option<String>,
    /// Template turning that JSON into the attributes (it must render a JSON object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_attributes_template: Option<String>,
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
