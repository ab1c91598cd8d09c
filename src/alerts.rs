//! Alert rules with raise/clear hysteresis, fed by samples, driver health and battery
//! identities: low SOC, high temperature, device unreachable/back (with `local_api_disabled`
//! and its hint on firmware known to switch its Local API off), firmware in a known-bad range
//! (both from the catalogue note the driver attached); one-shot events (command failed, mode drift from the
//! reconciler) pass through. Pure state machine: returns `domain::Alert` events and touches
//! nothing; the app routes them to MQTT (`MqttHandle::publish_alert`) and the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Alert, AlertKind, AlertState, DeviceHealth, DeviceId, DeviceInfo, Sample, Severity,
};

/// Thresholds of the alert rules (`[alerts]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// Raise `low_soc` when SOC drops below this, %.
    pub low_soc: u8,
    /// Clear `low_soc` only once SOC is above `low_soc + soc_hysteresis`, %.
    pub soc_hysteresis: u8,
    /// Raise `high_temperature` above this, °C.
    pub high_temperature: f64,
    /// Clear `high_temperature` only below `high_temperature - temperature_hysteresis`, °C.
    pub temperature_hysteresis: f64,
    /// Raise `unreachable` after this many consecutive failed polls: set from
    /// `[polling] failures_before_unreachable` by the app (not a key of its own).
    #[serde(skip)]
    pub unreachable_after: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            low_soc: 15,
            soc_hysteresis: 5,
            high_temperature: 50.0,
            temperature_hysteresis: 5.0,
            unreachable_after: 3,
        }
    }
}

impl AlertSettings {
    /// Problems as (key relative to `[alerts]`, reason); empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.low_soc > 100 {
            out.push(("low_soc".into(), "must be 0 to 100 %".into()));
        }
        if self.soc_hysteresis == 0
            || u16::from(self.low_soc) + u16::from(self.soc_hysteresis) > 100
        {
            out.push((
                "soc_hysteresis".into(),
                "must be at least 1 % and keep low_soc + soc_hysteresis ≤ 100".into(),
            ));
        }
        if !self.high_temperature.is_finite() || !(0.0..=100.0).contains(&self.high_temperature) {
            out.push(("high_temperature".into(), "must be 0 to 100 °C".into()));
        }
        if !self.temperature_hysteresis.is_finite()
            || !(0.1..=50.0).contains(&self.temperature_hysteresis)
        {
            out.push((
                "temperature_hysteresis".into(),
                "must be 0.1 to 50 °C".into(),
            ));
        }
        if self.unreachable_after == 0 {
            out.push(("unreachable_after".into(), "must be at least 1 poll".into()));
        }
        out
    }
}

/// The alert state machine for every device.
#[derive(Debug, Default)]
pub struct AlertEngine {
    settings: AlertSettings,
    active: BTreeMap<(DeviceId, AlertKind), bool>,
    /// Model and firmware last seen per device (the firmware rule acts on a change only).
    identities: BTreeMap<DeviceId, (String, u32)>,
    /// Catalogue entry (with its sources) of each device whose firmware is known to switch
    /// its Local API off.
    api_may_switch_off: BTreeMap<DeviceId, (String, String)>,
}

#[allow(clippy::too_many_arguments)] // a plain constructor: one argument per Alert field
fn alert(
    kind: AlertKind,
    severity: Severity,
    device: &DeviceId,
    message: String,
    value: Option<f64>,
    threshold: Option<f64>,
    state: AlertState,
    at: DateTime<Utc>,
) -> Alert {
    Alert::raised(kind, severity, Some(device.clone()), message, at)
        .with_values(value, threshold)
        .in_state(state)
}

impl AlertEngine {
    /// An engine with these thresholds and no active alert.
    pub fn new(settings: AlertSettings) -> Self {
        Self {
            settings,
            active: BTreeMap::new(),
            identities: BTreeMap::new(),
            api_may_switch_off: BTreeMap::new(),
        }
    }

    /// Whether `kind` is currently raised for `device`.
    pub fn is_active(&self, device: &DeviceId, kind: AlertKind) -> bool {
        self.active
            .get(&(device.clone(), kind))
            .copied()
            .unwrap_or(false)
    }

    /// Kinds currently raised for `device`.
    pub fn active_kinds(&self, device: &DeviceId) -> Vec<AlertKind> {
        self.active
            .iter()
            .filter(|((d, _), on)| d == device && **on)
            .map(|((_, k), _)| *k)
            .collect()
    }

    fn flip(&mut self, device: &DeviceId, kind: AlertKind, on: bool) -> bool {
        let slot = self.active.entry((device.clone(), kind)).or_insert(false);
        let changed = *slot != on;
        *slot = on;
        changed
    }

    /// Evaluates SOC and temperature rules on a sample.
    pub fn on_sample(&mut self, s: &Sample) -> Vec<Alert> {
        let mut out = Vec::new();
        let cfg = self.settings.clone();
        if let Some(soc) = s.soc {
            let soc = soc.0;
            let low = self.is_active(&s.device, AlertKind::LowSoc);
            let clear_at = cfg.low_soc.saturating_add(cfg.soc_hysteresis);
            if !low && soc < cfg.low_soc && self.flip(&s.device, AlertKind::LowSoc, true) {
                out.push(alert(
                    AlertKind::LowSoc,
                    Severity::Warning,
                    &s.device,
                    format!("state of charge {soc} % is below {} %", cfg.low_soc),
                    Some(soc.into()),
                    Some(cfg.low_soc.into()),
                    AlertState::Raised,
                    s.at,
                ));
            } else if low && soc > clear_at && self.flip(&s.device, AlertKind::LowSoc, false) {
                out.push(alert(
                    AlertKind::LowSoc,
                    Severity::Info,
                    &s.device,
                    format!("state of charge {soc} % is back above {clear_at} %"),
                    Some(soc.into()),
                    Some(clear_at.into()),
                    AlertState::Cleared,
                    s.at,
                ));
            }
        }
        if let Some(t) = s.temperature {
            let t = t.0;
            let hot = self.is_active(&s.device, AlertKind::HighTemperature);
            let clear_at = cfg.high_temperature - cfg.temperature_hysteresis;
            if !hot
                && t > cfg.high_temperature
                && self.flip(&s.device, AlertKind::HighTemperature, true)
            {
                out.push(alert(
                    AlertKind::HighTemperature,
                    Severity::Critical,
                    &s.device,
                    format!("temperature {t} °C is above {} °C", cfg.high_temperature),
                    Some(t),
                    Some(cfg.high_temperature),
                    AlertState::Raised,
                    s.at,
                ));
            } else if hot && t < clear_at && self.flip(&s.device, AlertKind::HighTemperature, false)
            {
                out.push(alert(
                    AlertKind::HighTemperature,
                    Severity::Info,
                    &s.device,
                    format!("temperature {t} °C is back below {clear_at} °C"),
                    Some(t),
                    Some(clear_at),
                    AlertState::Cleared,
                    s.at,
                ));
            }
        }
        out
    }

    /// Evaluates reachability from driver health (raise after `unreachable_after` consecutive
    /// failures, clear on the first success).
    pub fn on_health(
        &mut self,
        device: &DeviceId,
        h: &DeviceHealth,
        now: DateTime<Utc>,
    ) -> Vec<Alert> {
        let down = self.is_active(device, AlertKind::Unreachable);
        let limit = self.settings.unreachable_after;
        if !down && h.consecutive_failures >= limit {
            self.flip(device, AlertKind::Unreachable, true);
            let mut out = self.local_api(device, true, now);
            out.insert(
                0,
                alert(
                    AlertKind::Unreachable,
                    Severity::Critical,
                    device,
                    format!("no answer to {} consecutive polls", h.consecutive_failures),
                    Some(h.consecutive_failures.into()),
                    Some(limit.into()),
                    AlertState::Raised,
                    now,
                ),
            );
            out
        } else if down && h.consecutive_failures == 0 {
            self.flip(device, AlertKind::Unreachable, false);
            let cleared = self.local_api(device, false, now);
            let mut out = vec![alert(
                AlertKind::Unreachable,
                Severity::Info,
                device,
                "device answers again".into(),
                Some(0.0),
                Some(limit.into()),
                AlertState::Cleared,
                now,
            )];
            out.extend(cleared);
            out
        } else {
            vec![]
        }
    }

    /// Evaluates the firmware catalogue's note on a battery's identity: `firmware_known_bad` is
    /// raised once while the firmware is in a known-bad range, and cleared when the firmware
    /// changes (raised again at once when the new one is known-bad too). Nothing happens while
    /// model and firmware stay the same.
    pub fn on_identity(&mut self, info: &DeviceInfo, now: DateTime<Utc>) -> Vec<Alert> {
        let seen = (info.model.clone(), info.firmware);
        if self.identities.get(&info.id) == Some(&seen) {
            return vec![];
        }
        self.identities.insert(info.id.clone(), seen);
        match info
            .firmware_note
            .as_ref()
            .filter(|n| n.policy.api_may_switch_off)
        {
            Some(n) => {
                let sources: Vec<&str> = n.quirks.iter().map(|q| q.source.as_str()).collect();
                let why = (n.entry.clone(), sources.join("; "));
                self.api_may_switch_off.insert(info.id.clone(), why);
            }
            None => {
                self.api_may_switch_off.remove(&info.id);
            }
        }
        let kind = AlertKind::FirmwareKnownBad;
        let mut out = Vec::new();
        let firmware = Some(f64::from(info.firmware));
        if self.is_active(&info.id, kind) && self.flip(&info.id, kind, false) {
            out.push(alert(
                kind,
                Severity::Info,
                &info.id,
                format!("firmware is now {}", info.firmware),
                firmware,
                None,
                AlertState::Cleared,
                now,
            ));
        }
        if let Some(note) = info.firmware_note.as_ref().filter(|n| n.known_bad()) {
            self.flip(&info.id, kind, true);
            let sources: Vec<&str> = note.quirks.iter().map(|q| q.source.as_str()).collect();
            out.push(alert(
                kind,
                Severity::Warning,
                &info.id,
                format!(
                    "{} firmware {} is in a known-bad range ({}, firmware {}): {} (reported in {})",
                    note.family,
                    info.firmware,
                    note.entry,
                    note.firmware_range,
                    note.note,
                    sources.join("; ")
                ),
                firmware,
                None,
                AlertState::Raised,
                now,
            ));
        }
        out
    }

    /// `local_api_disabled` raised (with the hint) or cleared with `unreachable`, for a device
    /// whose firmware is known to switch its Local API off.
    fn local_api(&mut self, device: &DeviceId, on: bool, now: DateTime<Utc>) -> Vec<Alert> {
        let kind = AlertKind::LocalApiDisabled;
        let Some((entry, sources)) = self.api_may_switch_off.get(device).cloned() else {
            // a device that stopped answering before its catalogue entry was known
            return if !on && self.flip(device, kind, false) {
                vec![alert(
                    kind,
                    Severity::Info,
                    device,
                    "device answers again".into(),
                    None,
                    None,
                    AlertState::Cleared,
                    now,
                )]
            } else {
                vec![]
            };
        };
        if !self.flip(device, kind, on) {
            return vec![];
        }
        let (severity, message, state) = if on {
            (
                Severity::Critical,
                format!(
                    "no answer, and this firmware ({entry}) is known to switch its Local API off                      ({sources}): check that the Open API is still on in the Marstek app and                      switch it on again (a firmware update to 150 is reported to fix it)"
                ),
                AlertState::Raised,
            )
        } else {
            (
                Severity::Info,
                "device answers again".to_string(),
                AlertState::Cleared,
            )
        };
        vec![alert(
            kind, severity, device, message, None, None, state, now,
        )]
    }

    /// Passes an event from elsewhere (command failed, mode drift, job failures) through, tracking
    /// raise/clear so a repeated raise of a stateful kind (mode drift) is not re-sent.
    pub fn on_event(&mut self, a: Alert) -> Vec<Alert> {
        let one_shot = matches!(
            a.kind,
            AlertKind::CommandFailed | AlertKind::JobFailed | AlertKind::SocLimit
        );
        match (&a.device, one_shot) {
            (Some(dev), false) => {
                let dev = dev.clone();
                if self.flip(&dev, a.kind, a.state == AlertState::Raised) {
                    vec![a]
                } else {
                    vec![]
                }
            }
            _ => vec![a],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Celsius, Percent};

    fn sample(soc: u8, temp: f64) -> Sample {
        let mut s = Sample::empty(DeviceId::parse("d1").unwrap(), Utc::now());
        s.soc = Some(Percent(soc));
        s.temperature = Some(Celsius(temp));
        s
    }

    #[test]
    fn low_soc_hysteresis_does_not_flap() {
        let mut e = AlertEngine::new(AlertSettings::default()); // 15 %, +5
        assert!(e.on_sample(&sample(16, 20.0)).is_empty());
        let a = e.on_sample(&sample(14, 20.0));
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].kind, a[0].state),
            (AlertKind::LowSoc, AlertState::Raised)
        );
        // flapping around the threshold: nothing
        for soc in [15, 14, 16, 13, 20, 18] {
            assert!(e.on_sample(&sample(soc, 20.0)).is_empty(), "soc {soc}");
        }
        let a = e.on_sample(&sample(21, 20.0));
        assert_eq!(a[0].state, AlertState::Cleared);
        assert!(e.on_sample(&sample(25, 20.0)).is_empty());
        assert!(e.active_kinds(&DeviceId::parse("d1").unwrap()).is_empty());
    }

    #[test]
    fn temperature_hysteresis() {
        let mut e = AlertEngine::new(AlertSettings::default()); // 50 °C, -5
        assert_eq!(e.on_sample(&sample(50, 51.0))[0].state, AlertState::Raised);
        assert!(e.on_sample(&sample(50, 49.0)).is_empty());
        assert!(e.on_sample(&sample(50, 52.0)).is_empty());
        assert_eq!(e.on_sample(&sample(50, 44.9))[0].state, AlertState::Cleared);
    }

    #[test]
    fn unreachable_and_events() {
        let mut e = AlertEngine::new(AlertSettings::default());
        let d = DeviceId::parse("d1").unwrap();
        let h = |n| DeviceHealth {
            consecutive_failures: n,
            ..Default::default()
        };
        assert!(e.on_health(&d, &h(2), Utc::now()).is_empty());
        assert_eq!(e.on_health(&d, &h(3), Utc::now()).len(), 1);
        assert!(e.on_health(&d, &h(9), Utc::now()).is_empty());
        assert_eq!(
            e.on_health(&d, &h(0), Utc::now())[0].state,
            AlertState::Cleared
        );
        let drift = Alert::raised(
            AlertKind::ModeDrift,
            Severity::Warning,
            Some(d.clone()),
            "x",
            Utc::now(),
        );
        assert_eq!(e.on_event(drift.clone()).len(), 1);
        assert!(e.on_event(drift.clone()).is_empty());
        let failed = Alert {
            kind: AlertKind::CommandFailed,
            ..drift
        };
        assert_eq!(e.on_event(failed.clone()).len(), 1);
        assert_eq!(e.on_event(failed).len(), 1);
        let v = serde_json::to_value(&e.on_sample(&sample(5, 20.0))[0]).unwrap();
        for k in [
            "kind",
            "severity",
            "device",
            "message",
            "value",
            "threshold",
            "state",
            "at",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["state"], "raised");
    }

    fn identity(firmware: u32) -> DeviceInfo {
        let model = "VenusE 3.0".to_string();
        DeviceInfo {
            id: DeviceId::parse("d1").unwrap(),
            firmware_note: Some(crate::marstek::catalogue::lookup(&model, firmware)),
            model,
            firmware,
            ble_mac: "aabbccddeeff".into(),
            wifi_mac: None,
            address: "127.0.0.1:30000".into(),
            readings: Default::default(),
        }
    }

    #[test]
    fn known_bad_firmware_is_raised_once_and_cleared_when_the_firmware_changes() {
        let mut e = AlertEngine::new(AlertSettings::default());
        let a = e.on_identity(&identity(148), Utc::now());
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].kind, a[0].state, a[0].severity),
            (
                AlertKind::FirmwareKnownBad,
                AlertState::Raised,
                Severity::Warning
            )
        );
        assert!(a[0].message.contains("jaapp #111"), "{}", a[0].message);
        assert_eq!(a[0].value, Some(148.0));
        for _ in 0..3 {
            assert!(e.on_identity(&identity(148), Utc::now()).is_empty());
        }
        // another known-bad firmware: the old one cleared, the new one raised
        let a = e.on_identity(&identity(147), Utc::now());
        let states: Vec<AlertState> = a.iter().map(|x| x.state).collect();
        assert_eq!(states, [AlertState::Cleared, AlertState::Raised]);
        let a = e.on_identity(&identity(150), Utc::now());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].state, AlertState::Cleared);
        assert!(e.on_identity(&identity(150), Utc::now()).is_empty());
        let d = DeviceId::parse("d1").unwrap();
        assert!(!e.is_active(&d, AlertKind::FirmwareKnownBad));
        // a good or unknown firmware raises nothing
        let mut e = AlertEngine::new(AlertSettings::default());
        assert!(e.on_identity(&identity(150), Utc::now()).is_empty());
        assert!(e.on_identity(&identity(151), Utc::now()).is_empty());
    }

    #[test]
    fn silence_on_firmware_that_switches_its_api_off_says_so_with_a_hint() {
        let mut e = AlertEngine::new(AlertSettings::default());
        let h = |n| DeviceHealth {
            consecutive_failures: n,
            ..Default::default()
        };
        let d = DeviceId::parse("d1").unwrap();
        e.on_identity(&identity(148), Utc::now());
        let a = e.on_health(&d, &h(3), Utc::now());
        let kinds: Vec<AlertKind> = a.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, [AlertKind::Unreachable, AlertKind::LocalApiDisabled]);
        assert!(a[1].message.contains("Open API") && a[1].message.contains("jaapp #85"));
        assert!(e.on_health(&d, &h(4), Utc::now()).is_empty());
        let a = e.on_health(&d, &h(0), Utc::now());
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|x| x.state == AlertState::Cleared));
        // on firmware 150 silence is only "unreachable"
        let mut e = AlertEngine::new(AlertSettings::default());
        e.on_identity(&identity(150), Utc::now());
        let a = e.on_health(&d, &h(3), Utc::now());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::Unreachable);
    }

    #[test]
    fn settings_validate() {
        assert!(AlertSettings::default().validate().is_empty());
        let bad = AlertSettings {
            low_soc: 99,
            unreachable_after: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().len(), 2);
    }
}
