//! Typed settings, layered defaults < TOML file < environment (`MARSTEK_BRIDGE__SECTION__KEY`,
//! plus `…_FILE` variants whose value is read from a file, for secrets), and validated as a whole
//! before anything starts. Every problem names its key, the file and line when it comes from
//! the file, and what is allowed. Reads the config file and the environment; nothing else.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::{DeviceId, DeviceLimits};
use crate::redact::redact;
pub use crate::redact::{is_secret_key, redact_url};

/// Prefix of environment overrides: `MARSTEK_BRIDGE__MQTT__HOST=broker`.
pub const ENV_PREFIX: &str = "MARSTEK_BRIDGE__";
/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "config/marstek-bridge.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Bridge-wide behaviour.
    pub bridge: BridgeSettings,
    /// MQTT broker and topics.
    pub mqtt: crate::mqtt::MqttSettings,
    /// Database URL and telemetry buffering.
    pub database: crate::store::DatabaseSettings,
    /// Batteries to talk to.
    pub devices: Vec<DeviceConfig>,
    /// Polling, pacing and retries.
    pub polling: crate::marstek::PollingSettings,
    /// UDP socket and discovery of the Marstek driver.
    pub marstek: crate::marstek::MarstekSettings,
    /// Scheduled jobs.
    pub scheduler: crate::scheduler::SchedulerSettings,
    /// EDF Tempo and precharge.
    pub tempo: crate::tempo::TempoSettings,
    /// Alert thresholds.
    pub alerts: crate::alerts::AlertSettings,
    /// Logging.
    pub logging: LoggingSettings,
    /// Optional HTTP health and metrics endpoints.
    pub http: crate::http::HttpSettings,
    /// Self-consumption regulation on a grid meter.
    pub regulator: crate::regulator::RegulatorSettings,
}

/// Bridge-wide behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeSettings {
    /// Refuse every write to a battery (commands and jobs are answered with an error).
    pub read_only: bool,
    /// Name of this instance (leader election, job runs); default: the host name and a digest of
    /// the configuration, stable across restarts (see [`Settings::instance`]).
    pub instance_id: Option<String>,
    /// Site this bridge serves (letters, digits, `_`, `-`): in every stored row, the `site`
    /// label of every metric and every log line; default the slug of the host name.
    pub site_id: Option<String>,
    /// Longest time an orderly shutdown may take before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        Self {
            read_only: false,
            instance_id: None,
            site_id: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Host name of this machine (`/etc/hostname`), or `marstek-bridge` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "marstek-bridge".into())
}

/// One battery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// IP address or host name of the battery.
    pub host: String,
    /// UDP port of its Open API (set in the Marstek app), default 30000.
    pub port: u16,
    /// Alias used in topics instead of the BLE MAC (letters, digits, `_`, `-`).
    pub id: Option<String>,
    /// Firmware profile to assume before the device identifies itself (`auto` = detect).
    pub profile: Option<String>,
    /// Largest charge power the bridge will ask for, W.
    pub max_charge_w: u32,
    /// Largest discharge power the bridge will ask for, W.
    pub max_discharge_w: u32,
    /// Lowest SOC the bridge will discharge to, %.
    pub min_soc: u8,
    /// Highest SOC the bridge will charge to, %.
    pub max_soc: u8,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let limits = DeviceLimits::default();
        Self {
            host: String::new(),
            port: 30000,
            id: None,
            profile: None,
            max_charge_w: limits.max_charge_w,
            max_discharge_w: limits.max_discharge_w,
            min_soc: limits.min_soc,
            max_soc: limits.max_soc,
        }
    }
}

impl DeviceConfig {
    /// The safety limits of this device.
    pub fn limits(&self) -> DeviceLimits {
        DeviceLimits {
            max_charge_w: self.max_charge_w,
            max_discharge_w: self.max_discharge_w,
            min_soc: self.min_soc,
            max_soc: self.max_soc,
        }
    }
}

/// Known firmware profile names for `devices[].profile`.
pub const PROFILES: [&str; 6] = [
    "auto",
    "venus-e-3",
    "venus-e-2",
    "venus-a",
    "venus-d",
    "venus-e-mini",
];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSettings {
    /// Filter in `tracing` syntax (`info`, `marstek_bridge=debug,info`); `RUST_LOG` wins.
    pub level: String,
    /// `pretty` or `json`.
    pub format: LogFormat,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path, e.g. `devices.1.port` or `scheduler.timezone`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub reason: String,
    /// `file:line` when the key comes from the file.
    pub location: Option<String>,
}

/// The configuration could not be used; lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in key order.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for i in &self.issues {
            match &i.location {
                Some(loc) => write!(f, "\n  - {loc}: `{}`: {}", i.key, i.reason)?,
                None => write!(f, "\n  - `{}`: {}", i.key, i.reason)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Loads and validates the configuration: defaults, then `path` (which must exist unless it is
/// the default path), then the environment.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    load_from(path, std::env::vars())
}

/// Same as [`load`]; `env` supplies the `…_FILE` secret variables (the process environment in
/// [`load`]), plain overrides always come from the process environment.
pub fn load_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let source = read_source(path)?;
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some((_, text)) = &source {
        figment = figment.merge(Toml::string(text));
    }
    let figment = merge_env(figment, env)?;
    let mut settings = extract(&figment, source.as_ref())?;
    settings.database.site_id = settings.site_id();
    let mut issues = settings.validate();
    if !issues.is_empty() {
        if let Some((f, t)) = &source {
            for i in &mut issues {
                let path: Vec<String> = i.key.split('.').map(str::to_string).collect();
                i.location = locate(f, t, &path);
            }
        }
        return Err(ConfigError { issues });
    }
    Ok(settings)
}

/// The configuration file and its text, checked to be TOML: `path`, which must exist, or the
/// default path when it exists (None when it does not).
fn read_source(path: Option<&Path>) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let (file, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    if !file.exists() {
        if explicit {
            return Err(single(
                "config",
                format!("file {} does not exist", file.display()),
            ));
        }
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| single("config", format!("cannot read {}: {e}", file.display())))?;
    if let Err(e) = toml::de::DeTable::parse(&text) {
        let line = e.span().map(|s| line_of(&text, s.start));
        return Err(ConfigError {
            issues: vec![Issue {
                key: "(syntax)".into(),
                reason: format!("not valid TOML: {}", e.message()),
                location: Some(format!("{}:{}", file.display(), line.unwrap_or(1))),
            }],
        });
    }
    Ok(Some((file, text)))
}

/// Merges the environment overrides: plain values (parsed: `8080` becomes a number), secrets
/// as the text they are (a password is a string whatever it looks like), then the `…_FILE`
/// secret variables of `env`, read from their files.
fn merge_env(
    mut figment: Figment,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Figment, ConfigError> {
    figment = figment.merge(
        Env::prefixed(ENV_PREFIX)
            .filter(|k| env_kind(k.as_str()) == Some(false))
            .split("__"),
    );
    for (key, value) in Env::prefixed(ENV_PREFIX)
        .filter(|k| env_kind(k.as_str()) == Some(true))
        .split("__")
        .iter()
    {
        figment = figment.merge(Serialized::global(key.as_str(), value));
    }
    for (name, file_path) in env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)) {
        let Some(base) = name.strip_suffix("_FILE") else {
            continue;
        };
        let key = base[ENV_PREFIX.len()..]
            .to_ascii_lowercase()
            .replace("__", ".");
        let value = std::fs::read_to_string(&file_path)
            .map_err(|e| single(&key, format!("cannot read {name}={file_path}: {e}")))?;
        figment = figment.merge(Serialized::global(
            &key,
            value.trim_end_matches(['\n', '\r']),
        ));
    }
    Ok(figment)
}

/// The typed settings, or every key that does not fit, located in the file when it has one
/// (a secret's value is never repeated in the reason).
fn extract(figment: &Figment, source: Option<&(PathBuf, String)>) -> Result<Settings, ConfigError> {
    figment.extract().map_err(|errors| ConfigError {
        issues: errors
            .into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let location = source.map(|(f, t)| locate(f, t, &e.path));
                let secret = e.path.last().is_some_and(|k| is_secret_key(k));
                Issue {
                    key: if key.is_empty() { "(root)".into() } else { key },
                    reason: if secret {
                        secret_reason(&e.kind)
                    } else {
                        e.kind.to_string()
                    },
                    location: location.flatten(),
                }
            })
            .collect(),
    })
}

/// For an override name without the prefix (`MQTT__PASSWORD`): `None` for a `…_FILE` variable,
/// else whether it holds a secret.
fn env_kind(name: &str) -> Option<bool> {
    let k = name.to_ascii_lowercase();
    if k.ends_with("_file") {
        return None;
    }
    Some(is_secret_key(k.rsplit("__").next().unwrap_or_default()))
}

/// What is wrong with a secret's value, without the value itself.
fn secret_reason(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(_, expected) => {
            format!("invalid type (value not shown: it is a secret), expected {expected}")
        }
        Kind::InvalidValue(_, expected) => {
            format!("invalid value (not shown: it is a secret), expected {expected}")
        }
        _ => "invalid value (not shown: it is a secret)".into(),
    }
}

fn single(key: &str, reason: String) -> ConfigError {
    ConfigError {
        issues: vec![Issue {
            key: key.into(),
            reason,
            location: None,
        }],
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// `file:line` of the deepest key of `path` present in the TOML text.
fn locate(file: &Path, text: &str, path: &[String]) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut line = None;
    let mut table = Some(doc.get_ref());
    let mut array: Option<&toml::de::DeArray> = None;
    for seg in path {
        let value = if let Some(t) = table.take() {
            let (k, v) = t
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == seg.as_str())?;
            line = Some(line_of(text, k.span().start));
            v
        } else if let Some(a) = array.take() {
            let v = a.get(seg.parse::<usize>().ok()?)?;
            line = Some(line_of(text, v.span().start));
            v
        } else {
            break;
        };
        match value.get_ref() {
            toml::de::DeValue::Table(t) => table = Some(t),
            toml::de::DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    line.map(|l| format!("{}:{l}", file.display()))
}

/// Adds a module's (key, reason) problems under its section name.
fn section(issues: &mut Vec<Issue>, name: &str, found: Vec<(String, String)>) {
    issues.extend(
        found
            .into_iter()
            .map(|(k, r)| issue(format!("{name}.{k}"), r)),
    );
}

fn issue(key: impl Into<String>, reason: impl Into<String>) -> Issue {
    Issue {
        key: key.into(),
        reason: reason.into(),
        location: None,
    }
}

impl Settings {
    /// This instance's name in leader election and job runs: `bridge.instance_id` when set, else
    /// `<host>-<digest>`, where the digest (8 hex digits of SHA-256) covers the host name, the
    /// broker address, the MQTT client id and base topic and the database URL. It does not change
    /// when the process restarts, so a bridge restarted after a crash reclaims its own lease at
    /// once; two bridges on one host differ as long as their client ids (which the broker requires
    /// to be unique) or databases differ.
    pub fn instance(&self) -> String {
        if let Some(id) = &self.bridge.instance_id {
            return id.clone();
        }
        self.derived_instance(&host_name())
    }

    /// This bridge's site: `bridge.site_id` when set, else [`crate::sites::host_site`].
    pub fn site_id(&self) -> String {
        self.bridge
            .site_id
            .clone()
            .unwrap_or_else(crate::sites::host_site)
    }

    fn derived_instance(&self, host: &str) -> String {
        use sha2::Digest;
        let identity = format!(
            "{host}\n{}:{}\n{}\n{}\n{}",
            self.mqtt.host,
            self.mqtt.port,
            self.mqtt.client_id,
            self.mqtt.base_topic,
            self.database.url
        );
        let digest = sha2::Sha256::digest(identity.as_bytes());
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let host: String = host.chars().take(48).collect();
        format!("{host}-{hex}")
    }

    /// Checks everything that types alone cannot: ranges, duplicates, names, patterns.
    pub fn validate(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        if self.bridge.shutdown_timeout.is_zero()
            || self.bridge.shutdown_timeout > Duration::from_secs(300)
        {
            issues.push(issue(
                "bridge.shutdown_timeout",
                "must be between 1s and 5m",
            ));
        }
        if let Some(id) = &self.bridge.instance_id
            && DeviceId::parse(id).is_err()
        {
            issues.push(issue(
                "bridge.instance_id",
                "may only contain letters, digits, '_' and '-' (1 to 64)",
            ));
        }
        if let Some(Err(e)) = self.bridge.site_id.as_deref().map(crate::sites::validate) {
            issues.push(issue("bridge.site_id", e));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            issues.push(issue(
                "logging.level",
                format!("not a valid filter ({e}); e.g. \"info\" or \"marstek_bridge=debug,info\""),
            ));
        }
        section(&mut issues, "http", self.http.validate());
        section(&mut issues, "database", self.database.validate());
        section(&mut issues, "polling", self.polling.validate());
        section(&mut issues, "marstek", self.marstek.validate());
        section(&mut issues, "mqtt", self.mqtt.validate());
        section(&mut issues, "scheduler", self.scheduler.validate());
        section(&mut issues, "tempo", self.tempo.validate());
        section(&mut issues, "alerts", self.alerts.validate());
        section(&mut issues, "regulator", self.regulator.validate());
        issues.extend(validate_devices(&self.devices));
        issues
    }

    /// The settings that follow from several sections, computed once at start-up.
    pub fn derive(&self) -> Derived {
        let mut mqtt = self.mqtt.clone();
        mqtt.status_interval = self.polling.status_interval;
        let mut alerts = self.alerts.clone();
        alerts.unreachable_after = self.polling.failures_before_unreachable;
        let poll = self.polling.status_interval;
        Derived {
            mqtt,
            alerts,
            stale_after: poll * 3,
            health_every: poll.max(Duration::from_secs(5)),
            reconcile_every: poll.max(Duration::from_secs(30)),
        }
    }

    /// The effective configuration as TOML with every secret replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut value =
            toml::Value::try_from(self).unwrap_or_else(|_| toml::Value::Table(Default::default()));
        redact(&mut value);
        toml::to_string_pretty(&value).unwrap_or_default()
    }

    /// The effective configuration as JSON with every secret replaced by `***`.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let mut value =
            toml::Value::try_from(self).unwrap_or_else(|_| toml::Value::Table(Default::default()));
        redact(&mut value);
        serde_json::to_value(value).unwrap_or_default()
    }
}

/// The `[[devices]]` checks: each entry's own fields, then ids and addresses across entries
/// (two entries naming the same battery are refused).
fn validate_devices(devices: &[DeviceConfig]) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut ids = HashSet::new();
    let mut addresses: HashMap<(String, u16), usize> = HashMap::new();
    for (n, d) in devices.iter().enumerate() {
        let key = |k: &str| format!("devices.{n}.{k}");
        issues.extend(d.validate(n));
        if let Some(Ok(id)) = d.id.as_deref().map(DeviceId::parse)
            && !ids.insert(id.clone())
        {
            issues.push(issue(
                key("id"),
                format!("duplicate device id '{id}': each device needs its own"),
            ));
        }
        if d.host.trim().is_empty() {
            continue;
        }
        let address = (canonical_host(&d.host), d.port);
        if let Some(first) = addresses.get(&address) {
            let other = &devices[*first];
            issues.push(issue(
                key("host"),
                format!(
                    "{}:{} is the same battery as devices.{first} ({}:{}); configure it once",
                    d.host, d.port, other.host, other.port
                ),
            ));
        } else {
            addresses.insert(address, n);
        }
    }
    issues
}

impl DeviceConfig {
    /// Problems of this entry alone (`devices.<n>.…`): host, port, id, profile, limits.
    fn validate(&self, n: usize) -> Vec<Issue> {
        let key = |k: &str| format!("devices.{n}.{k}");
        let mut issues = Vec::new();
        if self.host.trim().is_empty() {
            issues.push(issue(
                key("host"),
                "is required: the battery's IP address or host name",
            ));
        } else if self.host.parse::<std::net::IpAddr>().is_err()
            && url::Host::parse(&self.host).is_err()
        {
            issues.push(issue(
                key("host"),
                format!("'{}' is neither an IP address nor a host name", self.host),
            ));
        }
        if self.port == 0 {
            issues.push(issue(
                key("port"),
                "must be 1 to 65535 (the Open API port set in the Marstek app, default 30000)",
            ));
        }
        if let Some(Err(e)) = self.id.as_deref().map(DeviceId::parse) {
            let id = self.id.as_deref().unwrap_or_default();
            issues.push(issue(key("id"), format!("'{id}' {e}")));
        }
        if let Some(p) = &self.profile
            && !PROFILES.contains(&p.as_str())
        {
            issues.push(issue(
                key("profile"),
                format!("unknown profile '{p}' (allowed: {})", PROFILES.join(", ")),
            ));
        }
        issues.extend(self.validate_limits(n));
        issues
    }

    /// Problems of this entry's safety limits.
    fn validate_limits(&self, n: usize) -> Vec<Issue> {
        let key = |k: &str| format!("devices.{n}.{k}");
        let mut issues = Vec::new();
        if self.max_soc > 100 {
            issues.push(issue(key("max_soc"), "must be 0 to 100 %"));
        }
        if self.min_soc > self.max_soc {
            issues.push(issue(
                key("min_soc"),
                format!("{} % is above max_soc {} %", self.min_soc, self.max_soc),
            ));
        }
        for (k, v) in [
            ("max_charge_w", self.max_charge_w),
            ("max_discharge_w", self.max_discharge_w),
        ] {
            if v > 10_000 {
                issues.push(issue(
                    key(k),
                    format!("{v} W is above 10000 W; Venus batteries handle at most 2500 W"),
                ));
            }
        }
        issues
    }
}

/// Settings that follow from several sections (see [`Settings::derive`]); none is a key of its
/// own, all follow `[polling]`.
#[derive(Debug, Clone)]
pub struct Derived {
    /// `[mqtt]` with the poll interval, which the state expiry and the offline delay follow.
    pub mqtt: crate::mqtt::MqttSettings,
    /// `[alerts]` with `unreachable_after` = `[polling] failures_before_unreachable` (polls).
    pub alerts: crate::alerts::AlertSettings,
    /// A battery not heard from for this long makes `/readyz` fail: three poll intervals.
    pub stale_after: Duration,
    /// Period of the retained `bridge/health` document: the poll interval, at least 5 s.
    pub health_every: Duration,
    /// Period of the reconciler's drift check: the poll interval, at least 30 s.
    pub reconcile_every: Duration,
}

/// The form of a device host under which two entries name the same battery: IP addresses in
/// their canonical text, `localhost` (and `*.localhost`, loopback by RFC 6761) as `127.0.0.1`,
/// other names lowercase without a trailing dot.
fn canonical_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = h.parse::<std::net::IpAddr>() {
        return ip.to_string();
    }
    match url::Host::parse(&h) {
        // `127.1`, `0x7f.0.0.1` … are IPv4 addresses too (and resolve as such).
        Ok(url::Host::Ipv4(ip)) => ip.to_string(),
        Ok(url::Host::Ipv6(ip)) => ip.to_string(),
        _ if h == "localhost" || h.ends_with(".localhost") => "127.0.0.1".into(),
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_settings_follow_the_poll_interval() {
        let mut s = Settings::default();
        s.polling.status_interval = Duration::from_secs(2);
        s.polling.failures_before_unreachable = 7;
        let d = s.derive();
        assert_eq!(d.mqtt.status_interval, Duration::from_secs(2));
        assert_eq!(d.mqtt.offline_after(), Duration::from_secs(5));
        assert_eq!(d.alerts.unreachable_after, 7);
        assert_eq!(d.stale_after, Duration::from_secs(6));
        assert_eq!(d.health_every, Duration::from_secs(5));
        assert_eq!(d.reconcile_every, Duration::from_secs(30));
        s.polling.status_interval = Duration::from_secs(120);
        let d = s.derive();
        assert_eq!(d.health_every, Duration::from_secs(120));
        assert_eq!(d.reconcile_every, Duration::from_secs(120));
    }

    #[test]
    fn the_default_instance_is_stable_and_follows_the_configuration() {
        let s = Settings::default();
        let id = s.derived_instance("nas");
        assert_eq!(id, s.derived_instance("nas"), "not stable");
        assert!(
            id.starts_with("nas-") && id.len() == "nas-".len() + 8,
            "{id}"
        );
        assert!(!id.contains(&std::process::id().to_string()), "{id}");
        assert_ne!(id, s.derived_instance("other-host"));
        let mut second = s.clone();
        second.mqtt.client_id = "marstek-bridge-2".into();
        assert_ne!(id, second.derived_instance("nas"));
        let mut pinned = s.clone();
        pinned.bridge.instance_id = Some("bridge-1".into());
        assert_eq!(pinned.instance(), "bridge-1");
    }
}
