//! Prometheus view of each battery's latest sample: every instantaneous reading as a gauge
//! (`marstek_power_watts`, `marstek_voltage_volts`, `marstek_current_amperes`,
//! `marstek_temperature_celsius`, …, labelled by `device` and `reading`), flags as 0/1
//! (`marstek_state`), and the lifetime energy counters as the gauge `marstek_energy_wh`
//! (labelled `counter`; a gauge because a device counter can genuinely reset, which a
//! Prometheus counter set with `absolute` would not follow). A reading the sample does not
//! carry (not reported, or dropped by the guard) leaves its series at the last value. Writes to the global `metrics`
//! recorder only (served by `http` at `/metrics`); touches nothing else.

use crate::domain::{Celsius, Sample, WattHours, Watts};

/// Records the gauges and counters of one sample.
pub fn record(s: &Sample) {
    let g = Gauges {
        device: s.device.to_string(),
    };
    if let Some(soc) = s.soc {
        metrics::gauge!("marstek_soc_percent", "device" => g.device.clone()).set(f64::from(soc.0));
    }
    if let Some(rssi) = s.rssi {
        metrics::gauge!("marstek_wifi_rssi_dbm", "device" => g.device.clone()).set(f64::from(rssi));
    }
    g.electrical(s);
    g.thermal_and_capacity(s);
    g.flags(s);
    g.energy(s);
}

/// The gauges of one device.
struct Gauges {
    device: String,
}

impl Gauges {
    /// Sets `name{device, reading}` to `v` when there is a finite value.
    fn set(&self, name: &'static str, reading: &'static str, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            metrics::gauge!(name, "device" => self.device.clone(), "reading" => reading).set(v);
        }
    }

    /// Powers, voltages and currents.
    fn electrical(&self, s: &Sample) {
        let w = |v: Option<Watts>| v.map(|w| f64::from(w.0));
        let r = &s.readings;
        for (reading, v) in [
            ("battery", s.bat_power),
            ("grid", s.grid_power),
            ("offgrid", s.offgrid_power),
            ("pv", s.pv_power),
            ("ct", s.ct_power),
            ("ct_a", r.ct_a_power),
            ("ct_b", r.ct_b_power),
            ("ct_c", r.ct_c_power),
            ("pv1", r.pv1_power),
            ("pv2", r.pv2_power),
            ("pv3", r.pv3_power),
            ("pv4", r.pv4_power),
        ] {
            self.set("marstek_power_watts", reading, w(v));
        }
        for (reading, v) in [
            ("battery", r.bat_voltage),
            ("pv1", r.pv1_voltage),
            ("pv2", r.pv2_voltage),
            ("pv3", r.pv3_voltage),
            ("pv4", r.pv4_voltage),
        ] {
            self.set("marstek_voltage_volts", reading, v.map(|v| v.0));
        }
        for (reading, v) in [
            ("battery", r.bat_current),
            ("pv1", r.pv1_current),
            ("pv2", r.pv2_current),
            ("pv3", r.pv3_current),
            ("pv4", r.pv4_current),
        ] {
            self.set("marstek_current_amperes", reading, v.map(|a| a.0));
        }
    }

    /// Temperatures and capacities.
    fn thermal_and_capacity(&self, s: &Sample) {
        let c = |v: Option<Celsius>| v.map(|t| t.0);
        let r = &s.readings;
        for (reading, v) in [
            ("battery", s.temperature),
            ("cell_max", r.cell_temp_max),
            ("cell_min", r.cell_temp_min),
            ("board", r.board_temp),
        ] {
            self.set("marstek_temperature_celsius", reading, c(v));
        }
        for (reading, v) in [
            ("remaining", s.remaining_capacity),
            ("rated", s.rated_capacity),
        ] {
            self.set("marstek_capacity_wh", reading, v.map(|e| e.0));
        }
    }

    /// Flags as 0/1.
    fn flags(&self, s: &Sample) {
        let flag = |v: Option<bool>| v.map(|b| if b { 1.0 } else { 0.0 });
        let r = &s.readings;
        for (reading, v) in [
            ("ct_connected", s.ct_connected),
            ("charge_allowed", s.charge_allowed),
            ("discharge_allowed", s.discharge_allowed),
            ("ble_connected", r.ble_connected),
            ("pv1_working", r.pv1_working),
            ("pv2_working", r.pv2_working),
            ("pv3_working", r.pv3_working),
            ("pv4_working", r.pv4_working),
        ] {
            self.set("marstek_state", reading, flag(v));
        }
    }

    /// The lifetime energy counters, Wh.
    fn energy(&self, s: &Sample) {
        let r = &s.readings;
        let counters: [(&'static str, Option<WattHours>); 6] = [
            ("pv", s.total_pv_energy),
            ("grid_output", s.total_grid_output_energy),
            ("grid_input", s.total_grid_input_energy),
            ("load", s.total_load_energy),
            ("ct_input", r.ct_input_energy),
            ("ct_output", r.ct_output_energy),
        ];
        for (counter, v) in counters {
            if let Some(e) = v.map(|e| e.0).filter(|e| e.is_finite()) {
                metrics::gauge!("marstek_energy_wh", "device" => self.device.clone(), "counter" => counter)
                    .set(e);
            }
        }
    }
}
