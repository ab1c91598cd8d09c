//! Settings of the MQTT adapter (`[mqtt]` section): broker address, credentials, TLS files,
//! topic roots, Home Assistant discovery style, queue bounds. Pure data plus validation; reads
//! secret/TLS files only when asked (`resolve_password`, `load_tls`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How Home Assistant discovery is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryStyle {
    /// One retained config topic per entity (`<prefix>/<component>/<node>/<object>/config`).
    #[default]
    Entity,
    /// One retained config per device (`<prefix>/device/<id>/config`, HA ≥ 2024.11).
    Device,
    /// No discovery; configs published earlier are removed.
    Off,
}

/// MQTT protocol version spoken to the broker (`protocol = "3.1.1"` or `"5"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttProtocol {
    /// MQTT 3.1.1 (protocol level 4); config `"3.1.1"`, alias `"v4"`.
    #[default]
    V311,
    /// MQTT 5; config `"5"` (a TOML or environment integer `5` works too), alias `"v5"`.
    V5,
}

/// Default cap of the reconnect delay (`reconnect_max`).
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Largest `reconnect_max` accepted.
pub const RECONNECT_MAX_LIMIT: Duration = Duration::from_secs(300);

/// Accepted spellings, quoted in every error about `protocol`.
pub const PROTOCOL_VALUES: &str = "\"3.1.1\" (alias \"v4\") or \"5\" (alias \"v5\")";

impl MqttProtocol {
    /// Parses a configured value: `3.1.1`/`v4` or `5`/`v5` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "3.1.1" | "v4" => Ok(MqttProtocol::V311),
            "5" | "v5" | "5.0" => Ok(MqttProtocol::V5),
            _ => Err(format!(
                "'{s}' is not a supported MQTT version: use {PROTOCOL_VALUES}"
            )),
        }
    }

    /// The canonical config value: `3.1.1` or `5`.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttProtocol::V311 => "3.1.1",
            MqttProtocol::V5 => "5",
        }
    }
}

impl fmt::Display for MqttProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MqttProtocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MqttProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `5` arrives as an integer from TOML (`protocol = 5`) and from the environment.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
            Other(serde::de::IgnoredAny),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(n) => n.to_string(),
            Raw::Float(f) => f.to_string(),
            Raw::Other(_) => "(not a string)".to_string(),
        };
        MqttProtocol::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// TLS files for the broker connection (PEM).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// CA certificate(s) that sign the broker's certificate (PEM file).
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM file); needs `key`.
    pub cert: Option<PathBuf>,
    /// Client private key for mutual TLS (PEM file); needs `cert`.
    pub key: Option<PathBuf>,
}

/// The `[mqtt]` section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port (1883 plain, 8883 TLS usually).
    pub port: u16,
    /// MQTT version: `3.1.1` (default) or `5` (adds request/response properties).
    pub protocol: MqttProtocol,
    /// MQTT client id; must be unique per broker.
    pub client_id: String,
    /// User name, if the broker requires one.
    pub username: Option<String>,
    /// Password (prefer `password_file`); never logged.
    pub password: Option<String>,
    /// File holding the password (first line used); wins over `password`.
    pub password_file: Option<PathBuf>,
    /// TLS; absent = plain TCP.
    pub tls: Option<TlsSettings>,
    /// Root of every bridge topic, e.g. `marstek`.
    pub base_topic: String,
    /// Home Assistant discovery prefix, e.g. `homeassistant`.
    pub discovery_prefix: String,
    /// Discovery style: `entity`, `device` or `off`.
    pub discovery: DiscoveryStyle,
    /// MQTT keep-alive interval.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// QoS of retained publishes (state, availability, discovery), alerts and subscriptions.
    pub qos: u8,
    /// QoS of command and request responses (0 by default: no PUBACK round trip, lowest latency).
    pub response_qos: u8,
    /// First reconnect delay; doubled after each failure up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay (2 s by default): however long the outage, the next attempt
    /// comes at most this long after the previous one failed, so the bridge is back within
    /// about this delay (plus the connection itself) of the broker's return.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// How often devices are polled: set from `[polling] status_interval` by the app (not a key
    /// of its own); `expire_after` and the offline timeout are 2.5× this.
    #[serde(skip)]
    pub status_interval: Duration,
    /// Longest random delay before republishing after Home Assistant's birth message.
    #[serde(with = "humantime_serde")]
    pub birth_delay_max: Duration,
    /// Bound of the queue of non-retained messages (alerts, responses); extra ones are dropped.
    pub queue_capacity: usize,
    /// Largest command/request payload accepted, bytes.
    pub max_payload: usize,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            protocol: MqttProtocol::V311,
            client_id: "marstek-bridge".into(),
            username: None,
            password: None,
            password_file: None,
            tls: None,
            base_topic: "marstek".into(),
            discovery_prefix: "homeassistant".into(),
            discovery: DiscoveryStyle::Entity,
            keep_alive: Duration::from_secs(30),
            qos: 1,
            response_qos: 0,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: DEFAULT_RECONNECT_MAX,
            status_interval: Duration::from_secs(60),
            birth_delay_max: Duration::from_secs(5),
            queue_capacity: 1024,
            max_payload: 4096,
        }
    }
}

impl fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("base_topic", &self.base_topic)
            .field("discovery_prefix", &self.discovery_prefix)
            .field("discovery", &self.discovery)
            .field("keep_alive", &self.keep_alive)
            .field("qos", &self.qos)
            .field("response_qos", &self.response_qos)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("status_interval", &self.status_interval)
            .field("birth_delay_max", &self.birth_delay_max)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_payload", &self.max_payload)
            .finish()
    }
}

/// Checks a topic root: non-empty levels of `[A-Za-z0-9_-]`, separated by `/`.
fn check_topic_root(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if s.split('/').any(|level| {
        level.is_empty()
            || !level
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return Err(format!(
            "'{s}' is not a topic root: levels separated by '/', each 1+ of letters, digits, '_' and '-' (no wildcards, no leading/trailing '/')"
        ));
    }
    Ok(())
}

impl MqttSettings {
    /// Problems with these settings as (key relative to `[mqtt]`, reason); empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, r: String| out.push((k.to_string(), r));
        if self.host.trim().is_empty() {
            bad("host", "must not be empty".into());
        }
        if self.port == 0 {
            bad("port", "must be 1 to 65535".into());
        }
        if self.client_id.is_empty() || self.client_id.len() > 64 {
            bad("client_id", "must be 1 to 64 characters".into());
        }
        if let Err(e) = check_topic_root(&self.base_topic) {
            bad("base_topic", e);
        }
        if let Err(e) = check_topic_root(&self.discovery_prefix) {
            bad("discovery_prefix", e);
        }
        if self.qos > 2 {
            bad("qos", format!("{} is not a QoS (0, 1 or 2)", self.qos));
        }
        if self.response_qos > 2 {
            bad(
                "response_qos",
                format!("{} is not a QoS (0, 1 or 2)", self.response_qos),
            );
        }
        if self.keep_alive < Duration::from_secs(5) || self.keep_alive > Duration::from_secs(3600) {
            bad("keep_alive", "must be 5s to 1h".into());
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            bad(
                "reconnect_min",
                "must be above 0 and at most reconnect_max".into(),
            );
        }
        if self.reconnect_max > RECONNECT_MAX_LIMIT {
            bad(
                "reconnect_max",
                format!(
                    "{} is too long: at most {} (the bridge would stay away that long after the broker is back)",
                    humantime::format_duration(self.reconnect_max),
                    humantime::format_duration(RECONNECT_MAX_LIMIT)
                ),
            );
        }
        if self.status_interval < Duration::from_millis(100) {
            bad("status_interval", "must be at least 100ms".into());
        }
        if self.queue_capacity == 0 || self.queue_capacity > 1_000_000 {
            bad("queue_capacity", "must be 1 to 1000000".into());
        }
        if !(64..=1_048_576).contains(&self.max_payload) {
            bad("max_payload", "must be 64 to 1048576 bytes".into());
        }
        if self.password.is_some() && self.username.is_none() {
            bad("password", "a password needs a username".into());
        }
        if let Some(tls) = &self.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            bad("tls", "cert and key go together (mutual TLS)".into());
        }
        out
    }

    /// `expire_after` for HA sensors and the silence after which a device is marked offline.
    pub fn offline_after(&self) -> Duration {
        self.status_interval * 5 / 2
    }

    /// The password: from `password_file` (first line) when set, else `password`.
    pub fn resolve_password(&self) -> std::io::Result<Option<String>> {
        match &self.password_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)?;
                Ok(Some(text.lines().next().unwrap_or("").to_string()))
            }
            None => Ok(self.password.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = MqttSettings::default();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        assert_eq!(s.base_topic, "marstek");
        assert_eq!(s.offline_after(), Duration::from_secs(150));
        assert_eq!(s.reconnect_max, Duration::from_secs(2));
    }

    #[test]
    fn reconnect_cap_is_bounded_and_named() {
        let s = MqttSettings {
            reconnect_max: Duration::from_secs(301),
            ..Default::default()
        };
        let problems = s.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "reconnect_max");
        assert!(problems[0].1.contains("5m"), "{}", problems[0].1);
        let s = MqttSettings {
            reconnect_min: Duration::from_secs(3),
            ..Default::default()
        };
        assert_eq!(s.validate()[0].0, "reconnect_min");
    }

    #[test]
    fn bad_values_are_named() {
        let s = MqttSettings {
            base_topic: "a/+/b".into(),
            discovery_prefix: "/ha".into(),
            qos: 3,
            port: 0,
            password: Some("x".into()),
            ..Default::default()
        };
        let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
        for k in ["base_topic", "discovery_prefix", "qos", "port", "password"] {
            assert!(keys.contains(&k.to_string()), "{k} missing in {keys:?}");
        }
    }

    #[test]
    fn debug_redacts_password_and_toml_parses() {
        let s: MqttSettings = toml::from_str(
            "host = \"broker\"\nusername = \"u\"\npassword = \"hunter2\"\nkeep_alive = \"20s\"\ndiscovery = \"device\"\n",
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.keep_alive, Duration::from_secs(20));
        assert_eq!(s.discovery, DiscoveryStyle::Device);
        assert!(toml::from_str::<MqttSettings>("hots = \"x\"").is_err());
    }

    #[test]
    fn protocol_spellings() {
        let p = |t: &str| toml::from_str::<MqttSettings>(t).map(|s| s.protocol);
        assert_eq!(p("").unwrap(), MqttProtocol::V311);
        assert_eq!(p("protocol = \"3.1.1\"").unwrap(), MqttProtocol::V311);
        assert_eq!(p("protocol = \"v4\"").unwrap(), MqttProtocol::V311);
        assert_eq!(p("protocol = \"5\"").unwrap(), MqttProtocol::V5);
        assert_eq!(p("protocol = \"V5\"").unwrap(), MqttProtocol::V5);
        assert_eq!(p("protocol = 5").unwrap(), MqttProtocol::V5);
        for bad in [
            "protocol = \"3.1\"",
            "protocol = 4",
            "protocol = \"\"",
            "protocol = true",
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains("\"3.1.1\"") && e.contains("\"5\""), "{bad}: {e}");
        }
        let s = MqttSettings {
            protocol: MqttProtocol::V5,
            ..Default::default()
        };
        let back: MqttSettings = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.protocol, MqttProtocol::V5);
    }
}
