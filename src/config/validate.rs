//! Validation of the whole configuration: ranges, names, patterns and duplicates that types
//! alone cannot express, each problem an [`Issue`] naming its key. Pure: touches nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{DeviceConfig, Issue, PROFILES, Settings};
use crate::domain::DeviceId;

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
        section(
            &mut issues,
            "central",
            self.central.validate(&self.database.url),
        );
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
