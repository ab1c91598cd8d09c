//! Every MQTT topic string of the bridge, built from the configured base topic and Home
//! Assistant prefix, and the parser that classifies incoming topics. No I/O; nothing else in the
//! crate may spell a topic with `format!`.

use crate::domain::DeviceId;

/// Local topic prefix under which a site broker's bridge delivers the commands and requests of
/// the central broker: `central/<base>/<dev>/set` is `sites/<site>/<base>/<dev>/set` centrally.
pub const CENTRAL_PREFIX: &str = "central";

/// Longest MQTT 5 Response Topic the bridge answers on, bytes.
pub const MAX_RESPONSE_TOPIC: usize = 256;

/// The device level that addresses every battery at once (`<base>/fleet/set…`).
pub const FLEET: &str = "fleet";

/// Topic builder for one bridge instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
    prefix: String,
}

/// A Home Assistant discovery config topic, in parts (the one place that spells its shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryConfig<'a> {
    /// `<prefix>/<component>/<node>/<object>/config`: one entity (entity-style discovery).
    Entity {
        /// HA component (`sensor`, `select`, …).
        component: &'a str,
        /// HA node: the device id.
        node: &'a str,
        /// Object id of the entity.
        object: &'a str,
    },
    /// `<prefix>/device/<node>/config`: a whole device (device-style discovery).
    Device {
        /// HA node: the device id.
        node: &'a str,
    },
}

impl<'a> DiscoveryConfig<'a> {
    /// The topic under the discovery prefix `prefix`.
    pub fn topic(&self, prefix: &str) -> String {
        match self {
            DiscoveryConfig::Entity {
                component,
                node,
                object,
            } => format!("{prefix}/{component}/{node}/{object}/config"),
            DiscoveryConfig::Device { node } => format!("{prefix}/device/{node}/config"),
        }
    }

    /// Splits a config topic under `prefix`; None when it has neither shape (or no node).
    pub fn parse(prefix: &str, topic: &'a str) -> Option<Self> {
        let rest = topic
            .strip_prefix(prefix)?
            .strip_prefix('/')?
            .strip_suffix("/config")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["device", node] if !node.is_empty() => Some(DiscoveryConfig::Device { node }),
            [component, node, object] if !node.is_empty() => Some(DiscoveryConfig::Entity {
                component,
                node,
                object,
            }),
            _ => None,
        }
    }
}

/// What an incoming message is, according to its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `<base>/<dev>/set` (JSON command); the device level as written.
    Set(String),
    /// `<base>/<dev>/set/<field>` (plain value).
    SetField(String, String),
    /// `<base>/bridge/request/<action>`.
    Request(String),
    /// `<prefix>/status` (Home Assistant birth / last will).
    HaStatus,
    /// `<base>/bridge/discovery` (our retained list of discovery topics).
    DiscoveryList,
    /// `<base>/bridge/discovery_sync/<client>` (marks the end of retained replay).
    DiscoverySync,
    /// Anything else.
    Other,
}

impl Topics {
    /// Builds the topics for a base topic (e.g. `marstek`) and HA prefix (e.g. `homeassistant`).
    pub fn new(base: &str, prefix: &str) -> Self {
        Self {
            base: base.to_string(),
            prefix: prefix.to_string(),
        }
    }

    /// The base topic.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HA discovery prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn bridge(&self, leaf: &str) -> String {
        format!("{}/bridge/{leaf}", self.base)
    }

    fn dev(&self, dev: &str, leaf: &str) -> String {
        format!("{}/{dev}/{leaf}", self.base)
    }

    /// `<base>/bridge/state`: retained JSON `{"state":"online"}` / `{"state":"offline"}` (last
    /// will), so that every `<base>/+/state` carries JSON.
    pub fn bridge_state(&self) -> String {
        self.bridge("state")
    }
    /// `<base>/bridge/info`: retained JSON.
    pub fn bridge_info(&self) -> String {
        self.bridge("info")
    }
    /// `<base>/bridge/health`: retained JSON.
    pub fn bridge_health(&self) -> String {
        self.bridge("health")
    }
    /// `<base>/bridge/schedule`: retained JSON.
    pub fn bridge_schedule(&self) -> String {
        self.bridge("schedule")
    }
    /// `<base>/bridge/tempo`: retained JSON.
    pub fn bridge_tempo(&self) -> String {
        self.bridge("tempo")
    }
    /// `<base>/bridge/plan`: retained JSON, the planner's slots per battery.
    pub fn bridge_plan(&self) -> String {
        self.bridge("plan")
    }
    /// `<base>/bridge/ledger`: retained JSON, € saved today and this season per battery.
    pub fn bridge_ledger(&self) -> String {
        self.bridge("ledger")
    }
    /// `<base>/bridge/dry_run`: retained JSON, the bridge's dry-run switch.
    pub fn bridge_dry_run(&self) -> String {
        self.bridge("dry_run")
    }
    /// `<base>/bridge/maintenance`: retained JSON, every maintenance hold in force.
    pub fn bridge_maintenance(&self) -> String {
        self.bridge("maintenance")
    }
    /// `<base>/bridge/regulator`: retained JSON, the regulator's status.
    pub fn bridge_regulator(&self) -> String {
        self.bridge("regulator")
    }
    /// `<base>/bridge/alert`: bridge-level alert events.
    pub fn bridge_alert(&self) -> String {
        self.bridge("alert")
    }
    /// `<base>/bridge/discovery`: retained list of the discovery config topics we published.
    pub fn bridge_discovery_list(&self) -> String {
        self.bridge("discovery")
    }
    /// `<base>/bridge/discovery_sync/<client>`: private marker used once per session.
    pub fn bridge_discovery_sync(&self, client_id: &str) -> String {
        format!("{}/bridge/discovery_sync/{client_id}", self.base)
    }
    /// `<base>/bridge/request/<action>`.
    pub fn bridge_request(&self, action: &str) -> String {
        format!("{}/bridge/request/{action}", self.base)
    }
    /// `<base>/bridge/response/<action>`.
    pub fn bridge_response(&self, action: &str) -> String {
        format!("{}/bridge/response/{action}", self.base)
    }
    /// `<base>/<dev>/state`: retained JSON sample.
    pub fn state(&self, dev: &DeviceId) -> String {
        self.dev(dev.as_str(), "state")
    }
    /// `<base>/<dev>/availability`: retained `online`/`offline`.
    pub fn availability(&self, dev: &DeviceId) -> String {
        self.dev(dev.as_str(), "availability")
    }
    /// `<base>/<dev>/alert`: alert events of the device.
    pub fn alert(&self, dev: &DeviceId) -> String {
        self.dev(dev.as_str(), "alert")
    }
    /// `<base>/<dev>/alerts`: retained `{"active":[kinds…]}` feeding the HA problem sensors.
    pub fn alerts_active(&self, dev: &DeviceId) -> String {
        self.dev(dev.as_str(), "alerts")
    }
    /// `<base>/<dev>/controls`: retained remembered control values (passive power/duration, …).
    pub fn controls(&self, dev: &DeviceId) -> String {
        self.dev(dev.as_str(), "controls")
    }
    /// `<base>/<dev>/intent`: retained intent document (intended and observed mode and power,
    /// holding, reverts, last re-apply).
    pub fn intent(&self, dev: &DeviceId) -> String {
        self.dev(dev.as_str(), "intent")
    }
    /// `<base>/<dev>/maintenance`: retained `ON`/`OFF`, whether the battery is held (by its own
    /// hold or the bridge-wide one).
    pub fn maintenance(&self, dev: &DeviceId) -> String {
        self.dev(dev.as_str(), "maintenance")
    }
    /// `<base>/<dev>/set` (device level as written in the incoming topic).
    pub fn set(&self, dev: &str) -> String {
        self.dev(dev, "set")
    }
    /// `<base>/<dev>/set/<field>`.
    pub fn set_field(&self, dev: &str, field: &str) -> String {
        format!("{}/{dev}/set/{field}", self.base)
    }
    /// `<base>/<dev>/response` (device level as written in the incoming topic).
    pub fn response(&self, dev: &str) -> String {
        self.dev(dev, "response")
    }
    /// `<base>/<dev>/batcontrol/status/<leaf>`: what batcontrol's MQTT inverter reads
    /// (retained `capacity`, `min_soc`, `max_soc`, `max_charge_rate`; `soc`).
    pub fn batcontrol_status(&self, dev: &DeviceId, leaf: &str) -> String {
        format!("{}/{dev}/batcontrol/status/{leaf}", self.base)
    }
    /// `<prefix>/status`: HA birth and last will.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    /// `<prefix>/<component>/<node>/<object>/config` (entity-style discovery).
    pub fn discovery_entity(&self, component: &str, node: &str, object: &str) -> String {
        DiscoveryConfig::Entity {
            component,
            node,
            object,
        }
        .topic(&self.prefix)
    }
    /// `<prefix>/device/<id>/config` (device-style discovery).
    pub fn discovery_device(&self, id: &str) -> String {
        DiscoveryConfig::Device { node: id }.topic(&self.prefix)
    }

    /// Subscriptions the bridge holds (commands, requests, HA status; commands and requests
    /// from the central broker under [`CENTRAL_PREFIX`]).
    pub fn subscriptions(&self) -> Vec<String> {
        let b = &self.base;
        vec![
            format!("{b}/+/set"),
            format!("{b}/+/set/+"),
            format!("{b}/bridge/request/#"),
            format!("{b}/+/batcontrol/command/+"),
            self.ha_status(),
            format!("{CENTRAL_PREFIX}/{b}/+/set"),
            format!("{CENTRAL_PREFIX}/{b}/+/set/+"),
            format!("{CENTRAL_PREFIX}/{b}/bridge/request/#"),
        ]
    }

    /// The topic without its [`CENTRAL_PREFIX`] when it is a command or request of the central
    /// broker (`central/<base>/…`), else None.
    pub fn central_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic
            .strip_prefix(CENTRAL_PREFIX)
            .and_then(|r| r.strip_prefix('/'))?;
        let after = rest.strip_prefix(self.base.as_str())?;
        after.starts_with('/').then_some(rest)
    }

    /// Classifies an incoming topic and says whether it came from the central broker (only a
    /// command or request can: anything else under `central/` is [`Incoming::Other`]).
    pub fn classify_origin(&self, topic: &str) -> (Incoming, bool) {
        match self.central_topic(topic) {
            None => (self.classify(topic), false),
            Some(local) => match self.classify(local) {
                k @ (Incoming::Set(_) | Incoming::SetField(..) | Incoming::Request(_)) => (k, true),
                _ => (Incoming::Other, false),
            },
        }
    }

    /// Checks an MQTT 5 Response Topic a requester asked the answer to be copied to: 1 to
    /// [`MAX_RESPONSE_TOPIC`] bytes, no wildcard, no NUL, not `$…`, and outside this bridge's
    /// own topics (`<base>/…`, `<prefix>/…`) so an answer can never be taken for a command,
    /// a state or a discovery config.
    pub fn check_response_topic(&self, topic: &str) -> Result<(), String> {
        let inside = |root: &str| {
            topic
                .strip_prefix(root)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        };
        if topic.is_empty() {
            Err("is empty".into())
        } else if topic.len() > MAX_RESPONSE_TOPIC {
            Err(format!("is longer than {MAX_RESPONSE_TOPIC} bytes"))
        } else if topic.contains(['+', '#']) {
            Err("contains a wildcard ('+' or '#')".into())
        } else if topic.contains('\0') {
            Err("contains a NUL character".into())
        } else if topic.starts_with('$') {
            Err("is a broker-reserved '$' topic".into())
        } else if inside(&self.base) || inside(&self.prefix) {
            Err(format!(
                "is inside the bridge's own topics ('{}/…' or '{}/…'); the answer is on the documented response topic anyway",
                self.base, self.prefix
            ))
        } else {
            Ok(())
        }
    }

    /// Classifies an incoming topic.
    pub fn classify(&self, topic: &str) -> Incoming {
        if topic == self.ha_status() {
            return Incoming::HaStatus;
        }
        if topic == self.bridge_discovery_list() {
            return Incoming::DiscoveryList;
        }
        let Some(rest) = topic
            .strip_prefix(self.base.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Incoming::Other;
        };
        if let Some(action) = rest.strip_prefix("bridge/request/") {
            return Incoming::Request(action.to_string());
        }
        if rest.starts_with("bridge/discovery_sync/") {
            return Incoming::DiscoverySync;
        }
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [dev, "set"] => Incoming::Set(dev.to_string()),
            [dev, "set", field] => Incoming::SetField(dev.to_string(), field.to_string()),
            [dev, "batcontrol", "command", field] => {
                Incoming::SetField(dev.to_string(), format!("batcontrol_{field}"))
            }
            _ => Incoming::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_config_topics_split_back_into_their_parts() {
        let t = Topics::new("mb", "ha/x");
        let entity = t.discovery_entity("sensor", "mb_d1", "soc");
        assert_eq!(entity, "ha/x/sensor/mb_d1/soc/config");
        assert_eq!(
            DiscoveryConfig::parse("ha/x", &entity),
            Some(DiscoveryConfig::Entity {
                component: "sensor",
                node: "mb_d1",
                object: "soc"
            })
        );
        let device = t.discovery_device("mb_d1");
        assert_eq!(
            DiscoveryConfig::parse("ha/x", &device),
            Some(DiscoveryConfig::Device { node: "mb_d1" })
        );
        for junk in [
            "ha/x/device//config",
            "ha/x/sensor/mb_d1/soc",
            "other/sensor/mb_d1/soc/config",
            "ha/x/a/b/c/d/config",
        ] {
            assert_eq!(DiscoveryConfig::parse("ha/x", junk), None, "{junk}");
        }
    }

    #[test]
    fn response_topics_are_checked() {
        let t = Topics::new("mb/x", "ha");
        assert!(t.check_response_topic("nodered/replies/1").is_ok());
        assert!(t.check_response_topic("mb/xy/reply").is_ok());
        for bad in [
            "",
            "a/+/b",
            "a/#",
            "$SYS/x",
            "a\0b",
            "mb/x",
            "mb/x/dev1/set",
            "ha/sensor/x/config",
            &"r".repeat(MAX_RESPONSE_TOPIC + 1),
        ] {
            assert!(t.check_response_topic(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn builds_and_classifies() {
        let t = Topics::new("mb/x", "ha");
        let d = DeviceId::parse("acd929a744d4").unwrap();
        assert_eq!(t.state(&d), "mb/x/acd929a744d4/state");
        assert_eq!(t.bridge_state(), "mb/x/bridge/state");
        assert_eq!(
            t.discovery_entity("sensor", "n", "o"),
            "ha/sensor/n/o/config"
        );
        assert_eq!(t.classify("mb/x/dev1/set"), Incoming::Set("dev1".into()));
        assert_eq!(
            t.classify("mb/x/dev1/set/mode"),
            Incoming::SetField("dev1".into(), "mode".into())
        );
        assert_eq!(
            t.classify("mb/x/bridge/request/jobs/list"),
            Incoming::Request("jobs/list".into())
        );
        assert_eq!(t.classify("ha/status"), Incoming::HaStatus);
        assert_eq!(
            t.classify("mb/x/dev1/batcontrol/command/mode"),
            Incoming::SetField("dev1".into(), "batcontrol_mode".into())
        );
        assert_eq!(t.classify("mb/x/dev1/state"), Incoming::Other);
        assert_eq!(t.classify("mb/xy/dev1/set"), Incoming::Other);
        assert_eq!(t.classify("mb/x/bridge/discovery"), Incoming::DiscoveryList);
    }

    #[test]
    fn central_commands_are_told_apart() {
        let t = Topics::new("mb/x", "ha");
        assert_eq!(
            t.classify_origin("central/mb/x/dev1/set"),
            (Incoming::Set("dev1".into()), true)
        );
        assert_eq!(
            t.classify_origin("central/mb/x/dev1/set/mode"),
            (Incoming::SetField("dev1".into(), "mode".into()), true)
        );
        assert_eq!(
            t.classify_origin("central/mb/x/bridge/request/jobs/list"),
            (Incoming::Request("jobs/list".into()), true)
        );
        assert_eq!(
            t.classify_origin("mb/x/dev1/set"),
            (Incoming::Set("dev1".into()), false)
        );
        for other in [
            "central/mb/x/dev1/state",
            "central/mb/x/bridge/discovery",
            "central/mb/xy/dev1/set",
            "central/ha/status",
            "centralmb/x/dev1/set",
        ] {
            assert_eq!(
                t.classify_origin(other),
                (Incoming::Other, false),
                "{other}"
            );
        }
        assert!(
            t.subscriptions()
                .contains(&"central/mb/x/+/set".to_string())
        );
    }
}
