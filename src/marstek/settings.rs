//! Settings of the Marstek driver (`[marstek]` section): socket, pacing, polling, discovery and
//! the verification of writes by their effect, with documented defaults and `validate()`.
//! Pure data.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::RequestOptions;

/// `[marstek]`: how the bridge talks to batteries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarstekSettings {
    /// UDP port the batteries listen on (default 30000).
    pub device_port: u16,
    /// Send from the device port (some firmware only answers requests sent from it); false =
    /// an ephemeral local port (default true).
    pub bind_device_port: bool,
    /// Local address to bind (default 0.0.0.0).
    pub bind_address: IpAddr,
    /// Discovery.
    pub discovery: DiscoverySettings,
    /// How mode writes are checked by their effect (`[marstek.verify]`).
    pub verify: crate::control::VerifySettings,
}

impl Default for MarstekSettings {
    fn default() -> Self {
        Self {
            device_port: 30000,
            bind_device_port: true,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            discovery: DiscoverySettings::default(),
            verify: crate::control::VerifySettings::default(),
        }
    }
}

impl MarstekSettings {
    /// Socket address the shared transport binds.
    pub fn bind_socket(&self) -> std::net::SocketAddr {
        let port = if self.bind_device_port {
            self.device_port
        } else {
            0
        };
        std::net::SocketAddr::new(self.bind_address, port)
    }

    /// Problems found, as (key path relative to `[marstek]`, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if self.device_port == 0 {
            v.push((
                "device_port".into(),
                "must be a UDP port 1 to 65535 (default 30000)".into(),
            ));
        }
        for (k, why) in self.discovery.validate() {
            v.push((format!("discovery.{k}"), why));
        }
        for (k, why) in self.verify.validate() {
            v.push((format!("verify.{k}"), why));
        }
        v
    }
}

/// `[polling]`: per-device pacing and polling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollingSettings {
    /// Period of the routine status rounds, start to start (default 60 s; faster polling upsets
    /// some firmware); a round that overruns it delays the next one, rounds never pile up.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// Reply timeout of a read attempt (default 2.5 s).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Reply timeout of a write attempt (default 5 s).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Quiet time after each reply before the next request to the same device (default 2 s).
    #[serde(with = "humantime_serde")]
    pub quiet_gap: Duration,
    /// Extra attempts after silence, for reads and idempotent writes (default 1).
    pub retries: u32,
    /// Send a second copy of a read after this much silence; "0s" = off (default 500 ms).
    #[serde(with = "humantime_serde")]
    pub resend_after: Duration,
    /// Consecutive failed polls before a device is reported unreachable (default 3).
    pub failures_before_unreachable: u32,
    /// Commands and immediate polls waiting per device before `QueueFull` (default 16).
    pub queue_capacity: usize,
    /// Read EM (CT), Wi-Fi and BLE status (and `Bat.GetStatus` on firmware suspected of resetting
    /// under it) every Nth round, after the status reads (default 5).
    pub extras_every: u32,
    /// Read `Bat.GetStatus` each round (default true; some firmware resets under it).
    pub read_battery: bool,
    /// Take a silence no longer than the firmware catalogue's network-reset bound for a known
    /// periodic reset (default true): not counted as failed polls, not offline, no alert.
    pub network_reset_blackout: bool,
}

impl Default for PollingSettings {
    fn default() -> Self {
        Self {
            status_interval: Duration::from_secs(60),
            request_timeout: Duration::from_millis(2500),
            write_timeout: Duration::from_secs(5),
            quiet_gap: Duration::from_secs(2),
            retries: 1,
            resend_after: Duration::from_millis(500),
            failures_before_unreachable: 3,
            queue_capacity: 16,
            extras_every: 5,
            read_battery: true,
            network_reset_blackout: true,
        }
    }
}

impl PollingSettings {
    /// Request options for reads.
    pub fn read_options(&self) -> RequestOptions {
        RequestOptions {
            timeout: self.request_timeout,
            retries: self.retries,
            resend_after: (!self.resend_after.is_zero()).then_some(self.resend_after),
        }
    }

    /// Request options for writes (never a second copy).
    pub fn write_options(&self) -> RequestOptions {
        RequestOptions {
            timeout: self.write_timeout,
            retries: self.retries,
            resend_after: None,
        }
    }

    /// Problems found, as (key path relative to `[polling]`, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut bad = |k: &str, why: &str| v.push((k.to_string(), why.to_string()));
        let ms = |d: Duration| d.as_millis();
        if ms(self.status_interval) < 100 || self.status_interval > Duration::from_secs(86_400) {
            bad(
                "status_interval",
                "must be between 100ms and 24h (default 60s)",
            );
        }
        if ms(self.request_timeout) < 10 || self.request_timeout > Duration::from_secs(60) {
            bad(
                "request_timeout",
                "must be between 10ms and 60s (default 2.5s)",
            );
        }
        if ms(self.write_timeout) < 10 || self.write_timeout > Duration::from_secs(60) {
            bad("write_timeout", "must be between 10ms and 60s (default 5s)");
        }
        if self.quiet_gap > Duration::from_secs(60) {
            bad(
                "quiet_gap",
                "must be at most 60s (default 2s; 0s disables pacing)",
            );
        }
        if self.retries > 10 {
            bad("retries", "must be 0 to 10 (default 1)");
        }
        if !self.resend_after.is_zero() && self.resend_after >= self.request_timeout {
            bad(
                "resend_after",
                "must be shorter than request_timeout, or 0s to disable",
            );
        }
        if self.failures_before_unreachable == 0 || self.failures_before_unreachable > 1000 {
            bad(
                "failures_before_unreachable",
                "must be 1 to 1000 (default 3)",
            );
        }
        if self.queue_capacity == 0 || self.queue_capacity > 4096 {
            bad("queue_capacity", "must be 1 to 4096 (default 16)");
        }
        if self.extras_every == 0 {
            bad("extras_every", "must be at least 1 (default 5)");
        }
        v
    }
}

/// `[marstek.discovery]`: how batteries are found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySettings {
    /// How long to collect answers (default 10 s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Re-send the probe this often within the window (default 2 s).
    #[serde(with = "humantime_serde")]
    pub rebroadcast: Duration,
    /// Ports probed (default [30000]).
    pub ports: Vec<u16>,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            rebroadcast: Duration::from_secs(2),
            ports: vec![30000],
        }
    }
}

impl DiscoverySettings {
    /// Problems found, as (key path relative to `[marstek.discovery]`, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if self.window.is_zero() || self.window > Duration::from_secs(600) {
            v.push((
                "window".into(),
                "must be between 1ms and 10m (default 10s)".into(),
            ));
        }
        if self.rebroadcast.is_zero() {
            v.push(("rebroadcast".into(), "must be positive (default 2s)".into()));
        }
        if self.ports.is_empty() || self.ports.contains(&0) {
            v.push((
                "ports".into(),
                "must list at least one UDP port, each 1 to 65535 (default [30000])".into(),
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_round_trips() {
        let s = MarstekSettings::default();
        assert!(s.validate().is_empty());
        let t = toml::to_string(&s).unwrap();
        let back: MarstekSettings = toml::from_str(&t).unwrap();
        assert_eq!(back, s);
        let p: PollingSettings =
            toml::from_str("status_interval = \"5m\"\nquiet_gap = \"0s\"\n").unwrap();
        assert_eq!(p.status_interval, Duration::from_secs(300));
        assert!(toml::from_str::<MarstekSettings>("bogus = 1").is_err());
    }

    #[test]
    fn validation_names_keys() {
        let mut s = MarstekSettings {
            device_port: 0,
            ..Default::default()
        };
        s.discovery.ports.clear();
        let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["device_port", "discovery.ports"]);
        let p = PollingSettings {
            retries: 99,
            resend_after: Duration::from_secs(5),
            ..Default::default()
        };
        let keys: Vec<String> = p.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["retries", "resend_after"]);
    }
}
