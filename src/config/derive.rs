//! Settings computed from the configuration rather than read from it: the instance name and
//! the values that follow from several sections. Reads `/etc/hostname`; nothing else.

use std::time::Duration;

use super::Settings;

/// Host name of this machine (`/etc/hostname`), or `marstek-bridge` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "marstek-bridge".into())
}

impl Settings {
    /// This machine's host name (`/etc/hostname`, else `marstek-bridge`).
    pub fn host(&self) -> String {
        host_name()
    }

    /// This bridge's site: `bridge.site_id` when set, else [`crate::sites::host_site`].
    pub fn site_id(&self) -> String {
        self.bridge
            .site_id
            .clone()
            .unwrap_or_else(crate::sites::host_site)
    }

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
