//! The detail readings of a battery: a per-model/per-firmware table (which readings it reports,
//! their wire units, which reads are fragile, the hardware limits for the plausibility guard)
//! and the decoder that turns one poll round's raw replies into [`Readings`]. Pure; no I/O.
//!
//! The table is this driver's own until the firmware catalogue lands in `src/marstek/`; its
//! rows are meant to be folded into that catalogue (one entry per model × firmware range).
//! Units are looked up here, never guessed from one reading: Venus A/D firmware 147–150 send
//! PV1 in deci-watts and PV2–4 in watts in the same reply (reference §2.5, quirks §2).
//!
//! Battery detail keys beyond the spec (`bat_voltage`, `bat_current` in 0.01 V/0.01 A per
//! jaapp; `cell_temp_max`, `cell_temp_min`, `board_temp` in °C and `error_code`,
//! `alarm_code`) are decoded when a firmware sends them; no public capture shows their names
//! yet, so the table marks them as reported only where the simulator's profiles send them.

use super::profile::{Family, Profile, RoundData};
use super::protocol::{BleStatus, EmStatus, WifiStatus};
use crate::domain::{
    Amperes, Celsius, DeviceId, DeviceInfo, GuardLimits, PvString, ReadingGuard, ReadingSet,
    Readings, Sample, Volts, WattHours, Watts,
};

/// How one model/firmware reports its detail readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingUnits {
    /// Which detail readings carry values (drives discovery).
    pub set: ReadingSet,
    /// Raw `pvN_power` → W, per string (index 0 = PV1): 0.1 where the firmware sends deci-watts.
    pub pv_power_scale: [f64; 4],
    /// Raw `bat_voltage` → V.
    pub bat_voltage_scale: f64,
    /// Raw `bat_current` → A (wire sign: + charging).
    pub bat_current_scale: f64,
    /// Raw meter `input_energy`/`output_energy` → Wh (0.1 Wh units, Rev 3.1).
    pub meter_energy_scale: f64,
    /// `Bat.GetStatus` suspected of resetting the device (taurgis #14, jaapp #85): read it
    /// only on extras rounds.
    pub battery_read_fragile: bool,
    /// Hardware limits for the plausibility guard.
    pub limits: GuardLimits,
}

/// The table row of a profile.
pub fn reading_units(p: &Profile) -> ReadingUnits {
    let fw = p.firmware;
    let pv1_deci = p.has_pv() && (147..=150).contains(&fw);
    let (rating_w, pv_strings) = match p.family {
        Family::VenusA => (1500.0, 4),
        Family::VenusD => (2200.0, 4),
        Family::VenusE3 | Family::VenusE2 | Family::VenusEMini => (2500.0, 0),
        Family::Unknown => (6000.0, 0),
    };
    let set = match p.family {
        // fw 148 lacks voltage/current/error (jaapp PR #129); meter energy is 0 on 147/148.
        Family::VenusA => ReadingSet {
            pv_strings,
            ct_phases: true,
            meter_energy: fw >= 149,
            battery_electrical: fw >= 149,
            battery_temperatures: false,
            battery_codes: fw >= 149,
        },
        Family::VenusD | Family::VenusEMini => ReadingSet {
            pv_strings,
            ct_phases: true,
            meter_energy: true,
            battery_electrical: true,
            battery_temperatures: true,
            battery_codes: true,
        },
        // Meter energy keys are present but 0 on fw 150 (reference §2.9).
        Family::VenusE3 => ReadingSet {
            pv_strings,
            ct_phases: true,
            meter_energy: fw > 150,
            battery_electrical: fw >= 150,
            battery_temperatures: fw >= 150,
            battery_codes: fw >= 150,
        },
        // HMG-50: EM server from 155; voltage/current from 154 (jaapp).
        Family::VenusE2 => ReadingSet {
            pv_strings,
            ct_phases: fw >= 155,
            meter_energy: fw >= 155,
            battery_electrical: fw >= 154,
            battery_temperatures: false,
            battery_codes: fw >= 154,
        },
        Family::Unknown => ReadingSet {
            ct_phases: true,
            ..ReadingSet::default()
        },
    };
    let pv_w = if pv_strings > 0 { 2400.0 } else { 0.0 };
    ReadingUnits {
        set,
        pv_power_scale: [if pv1_deci { 0.1 } else { 1.0 }, 1.0, 1.0, 1.0],
        bat_voltage_scale: 0.01,
        bat_current_scale: 0.01,
        meter_energy_scale: 0.1,
        battery_read_fragile: matches!(p.family, Family::VenusE3 | Family::VenusA)
            && (146..=148).contains(&fw),
        limits: GuardLimits {
            max_power_w: rating_w,
            max_pv_w: pv_w,
            max_pv_string_w: if pv_strings > 0 { 800.0 } else { 0.0 },
            ..GuardLimits::default()
        },
    }
}

fn watts(v: f64) -> Watts {
    Watts(v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
}

/// The solar strings of a `PV.GetStatus` reply in W/V/A with the table's units (None for a
/// string the reply does not carry).
pub fn pv_strings(u: &ReadingUnits, pv: &super::protocol::PvStatus) -> [Option<PvString>; 4] {
    let raw = [
        (pv.pv1_power, pv.pv1_voltage, pv.pv1_current, pv.pv1_state),
        (pv.pv2_power, pv.pv2_voltage, pv.pv2_current, pv.pv2_state),
        (pv.pv3_power, pv.pv3_voltage, pv.pv3_current, pv.pv3_state),
        (pv.pv4_power, pv.pv4_voltage, pv.pv4_current, pv.pv4_state),
    ];
    let mut out = [None; 4];
    if raw
        .iter()
        .all(|(p, v, c, s)| [p, v, c].iter().all(|x| x.is_none()) && s.is_none())
    {
        // Rev 1.0/3.1 single channel: one string.
        if pv.pv_power.is_some() || pv.pv_voltage.is_some() {
            out[0] = Some(PvString {
                power: pv.pv_power.map(watts),
                voltage: pv.pv_voltage.map(Volts),
                current: pv.pv_current.map(Amperes),
                working: pv.pv_state.map(|s| s == 1),
            });
        }
        return out;
    }
    for (i, (p, v, c, s)) in raw.into_iter().enumerate() {
        if p.is_none() && v.is_none() && c.is_none() && s.is_none() {
            continue;
        }
        out[i] = Some(PvString {
            power: p.map(|p| watts(p * u.pv_power_scale[i])),
            voltage: v.map(Volts),
            current: c.map(Amperes),
            working: s.map(|s| s == 1),
        });
    }
    out
}

/// Total solar power of a `PV.GetStatus` reply, W (unrounded; Rev 1.0 single channel as is).
pub fn pv_total_w(u: &ReadingUnits, pv: &super::protocol::PvStatus) -> Option<f64> {
    let raw = [pv.pv1_power, pv.pv2_power, pv.pv3_power, pv.pv4_power];
    if raw.iter().all(Option::is_none) {
        return pv.pv_power;
    }
    Some(
        raw.iter()
            .zip(u.pv_power_scale)
            .filter_map(|(p, k)| p.map(|p| p * k))
            .sum(),
    )
}

/// Decodes the detail readings of one poll round (meter, strings, battery, diagnostics).
/// The model string and the driver's diagnostics are the caller's to add.
pub fn decode_readings(p: &Profile, r: &RoundData) -> Readings {
    let u = reading_units(p);
    let mut out = Readings {
        firmware: Some(p.firmware),
        ..Readings::default()
    };
    if let Some(em) = r.em.as_ref() {
        out.ct_a_power = em.a_power.map(watts);
        out.ct_b_power = em.b_power.map(watts);
        out.ct_c_power = em.c_power.map(watts);
        if u.set.meter_energy {
            let k = u.meter_energy_scale;
            out.ct_input_energy = em.input_energy.map(|e| WattHours(e * k));
            out.ct_output_energy = em.output_energy.map(|e| WattHours(e * k));
        }
    } else if let Some(m) = r.mode.as_ref().filter(|m| m.ct_state == Some(1)) {
        // ES.GetMode's CT keys are only trusted when it says a CT is connected (fw 150 zeros).
        out.ct_a_power = m.a_power.map(watts);
        out.ct_b_power = m.b_power.map(watts);
        out.ct_c_power = m.c_power.map(watts);
    }
    if let Some(pv) = r.pv.as_ref() {
        for (i, s) in pv_strings(&u, pv).into_iter().enumerate() {
            if let Some(s) = s {
                out.set_pv_string(i + 1, s);
            }
        }
    }
    if let Some(b) = r.bat.as_ref() {
        out.bat_voltage = b.bat_voltage.map(|v| Volts(v * u.bat_voltage_scale));
        // wire current is charge-positive like wire bat_power; the domain is discharge-positive
        out.bat_current = b.bat_current.map(|a| Amperes(-a * u.bat_current_scale));
        out.cell_temp_max = b.cell_temp_max.map(Celsius);
        out.cell_temp_min = b.cell_temp_min.map(Celsius);
        out.board_temp = b.board_temp.map(Celsius);
        out.error_code = b.error_code;
        out.alarm_code = b.alarm_code;
    }
    if let Some(w) = r.wifi.as_ref() {
        out.wifi_ssid = w.ssid.clone().filter(|s| !s.is_empty());
        out.wifi_ip = w.sta_ip.clone().filter(|s| !s.is_empty());
    }
    if let Some(b) = r.ble.as_ref() {
        out.ble_connected = b.state.as_deref().and_then(|s| match s.trim() {
            "connect" | "connected" => Some(true),
            "disconnect" | "disconnected" => Some(false),
            _ => None,
        });
    }
    out
}

/// Per-device state of the readings between rounds, owned by the device actor: the last
/// extras replies (EM, Wi-Fi, BLE are read every `extras_every` rounds and repeated in the
/// samples between), the plausibility/counter guard, and the poll diagnostics.
#[derive(Debug)]
pub struct ReadingsTracker {
    guard: ReadingGuard,
    identity: Option<String>,
    em: Option<EmStatus>,
    wifi: Option<WifiStatus>,
    ble: Option<BleStatus>,
    poll_failures: u64,
    last_error: Option<String>,
}

impl Default for ReadingsTracker {
    fn default() -> Self {
        Self {
            guard: ReadingGuard::new(GuardLimits::default()),
            identity: None,
            em: None,
            wifi: None,
            ble: None,
            poll_failures: 0,
            last_error: None,
        }
    }
}

impl ReadingsTracker {
    /// The device identified itself: take the model's limits; a different device (BLE MAC)
    /// behind the same address starts every counter over.
    pub fn identified(&mut self, profile: &Profile, ble_mac: &str) {
        self.guard.set_limits(reading_units(profile).limits);
        if self.identity.as_deref().is_some_and(|m| m != ble_mac) {
            self.guard.forget_counters();
            self.em = None;
            self.wifi = None;
            self.ble = None;
        }
        self.identity = Some(ble_mac.to_string());
    }

    /// Keeps this round's extras replies, or fills the round with the last ones.
    pub fn carry_extras(&mut self, data: &mut RoundData) {
        fn carry<T: Clone>(now: &mut Option<T>, last: &mut Option<T>) {
            match now {
                Some(v) => *last = Some(v.clone()),
                None => now.clone_from(last),
            }
        }
        carry(&mut data.em, &mut self.em);
        carry(&mut data.wifi, &mut self.wifi);
        carry(&mut data.ble, &mut self.ble);
    }

    /// A poll round or one read failed with this error.
    pub fn failed(&mut self, round: bool, error: &str) {
        if round {
            self.poll_failures += 1;
        }
        self.last_error = Some(error.to_string());
    }

    /// Adds the diagnostics to a fresh sample and guards it; logs and counts every dropped
    /// reading once (`reading_dropped`, `marstek_readings_dropped_total`).
    pub fn finish(&mut self, info: Option<&DeviceInfo>, s: &mut Sample) {
        let r = &mut s.readings;
        r.model = info.map(|i| i.model.clone()).filter(|m| !m.is_empty());
        r.poll_failures = Some(self.poll_failures);
        r.last_error.clone_from(&self.last_error);
        let report = self.guard.check(s);
        log_report(&s.device, &report);
    }
}

fn log_report(device: &DeviceId, report: &crate::domain::GuardReport) {
    for d in &report.dropped {
        tracing::warn!(device = %device, field = d.field, value = d.value, reason = d.reason.as_str(), "reading_dropped");
        metrics::counter!("marstek_readings_dropped_total", "device" => device.to_string(), "field" => d.field, "reason" => d.reason.as_str())
            .increment(1);
    }
    for field in &report.resets {
        tracing::info!(device = %device, field, "counter_reset_recognised");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marstek::protocol::{BatStatus, EmStatus, PvStatus, decode_result};
    use serde_json::json;

    #[test]
    fn venus_a_fw148_pv1_is_deciwatts_and_the_rest_watts() {
        // Capture §6.3 shape: pv1 268 = 26.8 W, pv2..4 in W.
        let pv: PvStatus = decode_result(&json!({"id":0,"pv1_power":268,"pv1_voltage":33,"pv1_current":0,"pv1_state":1,"pv2_power":29,"pv2_voltage":46,"pv2_current":0.6,"pv2_state":1,"pv3_power":29,"pv3_voltage":33,"pv3_current":0,"pv3_state":0,"pv4_power":25,"pv4_voltage":46,"pv4_current":0,"pv4_state":1})).unwrap();
        let u = reading_units(&Profile::new(Family::VenusA, 148));
        let s = pv_strings(&u, &pv);
        assert_eq!(s[0].unwrap().power, Some(Watts(27)));
        assert_eq!(s[1].unwrap().power, Some(Watts(29)));
        assert_eq!(s[1].unwrap().current, Some(Amperes(0.6)));
        assert_eq!(s[2].unwrap().working, Some(false));
        assert_eq!(s[3].unwrap().voltage, Some(Volts(46.0)));
        assert!((pv_total_w(&u, &pv).unwrap() - 109.8).abs() < 1e-9);
        // Fixed firmware: every string in watts.
        let u = reading_units(&Profile::new(Family::VenusA, 151));
        assert_eq!(pv_strings(&u, &pv)[0].unwrap().power, Some(Watts(268)));
        // The table never depends on the reading: PV1 alone is still deci-watts on 148.
        let alone: PvStatus = decode_result(&json!({"pv1_power": 500})).unwrap();
        let u = reading_units(&Profile::new(Family::VenusA, 148));
        assert_eq!(pv_strings(&u, &alone)[0].unwrap().power, Some(Watts(50)));
        assert!(pv_strings(&u, &alone)[1].is_none());
    }

    #[test]
    fn meter_energy_only_where_the_firmware_fills_it() {
        let em: EmStatus = decode_result(&json!({"ct_state":1,"a_power":120,"b_power":-30,"c_power":5,"total_power":95,"input_energy":123456,"output_energy":789})).unwrap();
        let round = RoundData {
            em: Some(em),
            ..Default::default()
        };
        let r = decode_readings(&Profile::new(Family::VenusD, 150), &round);
        assert_eq!(
            (r.ct_a_power, r.ct_b_power, r.ct_c_power),
            (Some(Watts(120)), Some(Watts(-30)), Some(Watts(5)))
        );
        assert_eq!(r.ct_input_energy, Some(WattHours(12345.6)));
        assert_eq!(r.ct_output_energy, Some(WattHours(78.9)));
        assert_eq!(r.firmware, Some(150));
        // Venus E 3.0 fw 150 sends the keys as zeros: not reported.
        let r = decode_readings(&Profile::new(Family::VenusE3, 150), &round);
        assert_eq!(r.ct_input_energy, None);
        assert_eq!(r.ct_a_power, Some(Watts(120)));
    }

    #[test]
    fn battery_detail_units_and_sign() {
        let b: BatStatus = decode_result(&json!({"soc":50,"bat_voltage":"5210","bat_current":-1250,"cell_temp_max":31.5,"cell_temp_min":27,"board_temp":40,"error_code":0,"alarm_code":2})).unwrap();
        let round = RoundData {
            bat: Some(b),
            ..Default::default()
        };
        let r = decode_readings(&Profile::new(Family::VenusE3, 150), &round);
        assert!((r.bat_voltage.unwrap().0 - 52.1).abs() < 1e-9);
        assert!(
            (r.bat_current.unwrap().0 - 12.5).abs() < 1e-9,
            "wire −12.5 A (discharging) → +12.5 A"
        );
        assert_eq!(r.cell_temp_max, Some(Celsius(31.5)));
        assert_eq!(r.board_temp, Some(Celsius(40.0)));
        assert_eq!((r.error_code, r.alarm_code), (Some(0), Some(2)));
    }

    #[test]
    fn table_rows() {
        let a148 = reading_units(&Profile::new(Family::VenusA, 148));
        assert!(a148.battery_read_fragile && !a148.set.battery_electrical);
        assert_eq!(a148.set.pv_strings, 4);
        let e2 = reading_units(&Profile::new(Family::VenusE2, 153));
        assert!(!e2.set.ct_phases && e2.set.pv_strings == 0);
        let mini = reading_units(&Profile::new(Family::VenusEMini, 150));
        assert!(mini.set.meter_energy && !mini.battery_read_fragile);
        assert_eq!(mini.limits.max_power_w, 2500.0);
    }
}
