//! Plausibility and monotonicity of readings, per battery, before any sink sees a sample.
//!
//! - Values outside what the hardware can measure (a temperature of 1.8e308 °C, a power beyond
//!   the model's rating) are dropped (set to `None`) and reported, never passed on as alerts.
//! - Lifetime energy counters (published as Home Assistant `total_increasing`) never go
//!   backwards on a one-off bad reading: a reading below the last accepted value is dropped; an
//!   increase larger than the model could produce since the last accepted reading is a spike
//!   and dropped. A *genuine* reset (new device, counter wrap, factory reset) is recognised when
//!   [`RESET_CONFIRMATIONS`] consecutive readings agree on the new, lower level: that value is
//!   then published, which Home Assistant's statistics read as the start of a new meter cycle
//!   (its documented `total_increasing` behaviour). The same number of agreeing readings above
//!   a spike makes a new level accepted too (the earlier reading was the bad one).
//!   [`ReadingGuard::forget_counters`] starts over at once (the driver calls it when a
//!   different device answers). The history is in memory: after a bridge restart the first
//!   reading of each counter is accepted as is.
//!
//! Pure state; the caller logs and counts what [`ReadingGuard::check`] returns.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Celsius, Sample, WattHours, Watts};

/// Consecutive lower readings that make a counter reset genuine.
pub const RESET_CONFIRMATIONS: u32 = 3;

/// Slack on a counter's increase beyond what the rating allows, Wh (covers coarse counter units
/// such as HMG-50's 100 Wh steps).
const COUNTER_SLACK_WH: f64 = 1000.0;

/// What the hardware can plausibly report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardLimits {
    /// Largest AC/battery power of the model (inverter rating plus solar), W.
    pub max_power_w: f64,
    /// Largest total solar power, W (0 = no PV inputs).
    pub max_pv_w: f64,
    /// Largest power of one solar string, W.
    pub max_pv_string_w: f64,
    /// Largest power a household meter (CT) phase can see, W.
    pub max_meter_w: f64,
    /// Largest battery capacity, Wh.
    pub max_capacity_wh: f64,
}

impl Default for GuardLimits {
    /// Generous limits for an unknown model.
    fn default() -> Self {
        Self {
            max_power_w: 6000.0,
            max_pv_w: 4000.0,
            max_pv_string_w: 1500.0,
            max_meter_w: 50_000.0,
            max_capacity_wh: 100_000.0,
        }
    }
}

/// Why a reading was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Outside what the hardware can measure.
    Implausible,
    /// A lifetime counter below its last accepted value (not, or not yet, a genuine reset).
    Backwards,
    /// A lifetime counter rising faster than the model can produce energy.
    Spike,
}

impl DropReason {
    /// snake_case name, as in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Implausible => "implausible",
            DropReason::Backwards => "backwards",
            DropReason::Spike => "spike",
        }
    }
}

/// One dropped reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    /// State JSON key of the reading (`temperature`, `total_pv_energy`, …).
    pub field: &'static str,
    /// The value as read (after unit scaling).
    pub value: f64,
    /// Why it was dropped.
    pub reason: DropReason,
}

/// What [`ReadingGuard::check`] did to a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardReport {
    /// Readings removed from the sample.
    pub dropped: Vec<Dropped>,
    /// Counters whose reset (or new higher level) was recognised in this sample.
    pub resets: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    value: f64,
    at: DateTime<Utc>,
    /// A level other than `value` seen `n` times in a row: (latest value, its time, n).
    candidate: Option<(f64, DateTime<Utc>, u32)>,
}

/// Per-battery plausibility and counter state.
#[derive(Debug, Clone)]
pub struct ReadingGuard {
    limits: GuardLimits,
    counters: HashMap<&'static str, Counter>,
    dropped_total: u64,
}

enum Verdict {
    Accept,
    Reset,
    Drop(DropReason),
}

impl ReadingGuard {
    /// A guard with these limits and no history.
    pub fn new(limits: GuardLimits) -> Self {
        Self {
            limits,
            counters: HashMap::new(),
            dropped_total: 0,
        }
    }

    /// Replaces the limits (the model became known), keeping the counter history.
    pub fn set_limits(&mut self, limits: GuardLimits) {
        self.limits = limits;
    }

    /// Forgets every counter's history: the next reading of each is accepted as is.
    pub fn forget_counters(&mut self) {
        self.counters.clear();
    }

    /// Readings dropped since this guard was created.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Drops implausible values and backward/spiking counter readings from `s` in place, and
    /// sets `s.readings.readings_dropped` to the running total.
    pub fn check(&mut self, s: &mut Sample) -> GuardReport {
        let mut report = GuardReport::default();
        let ac = self.limits.ac_power_bound();
        powers_within(s, &self.limits, ac, &mut report.dropped);
        measurements_within(s, self.limits.max_capacity_wh, &mut report.dropped);
        self.check_counters(s, ac, &mut report);
        self.dropped_total += report.dropped.len() as u64;
        s.readings.readings_dropped = Some(self.dropped_total);
        report
    }

    /// The lifetime energy counters of `s`: a reading that is not a number or negative is
    /// implausible; the others go through [`Self::counter`] (`ac`: the AC power bound, W).
    fn check_counters(&mut self, s: &mut Sample, ac: f64, report: &mut GuardReport) {
        let l = self.limits;
        let at = s.at;
        let r = &mut s.readings;
        let counters: [(&'static str, &mut Option<WattHours>, f64); 6] = [
            ("total_pv_energy", &mut s.total_pv_energy, l.max_pv_w),
            (
                "total_grid_output_energy",
                &mut s.total_grid_output_energy,
                ac,
            ),
            (
                "total_grid_input_energy",
                &mut s.total_grid_input_energy,
                ac,
            ),
            ("total_load_energy", &mut s.total_load_energy, ac),
            (
                "ct_input_energy",
                &mut r.ct_input_energy,
                3.0 * l.max_meter_w,
            ),
            (
                "ct_output_energy",
                &mut r.ct_output_energy,
                3.0 * l.max_meter_w,
            ),
        ];
        for (field, slot, rate_w) in counters {
            let Some(v) = slot.map(|e| e.0) else { continue };
            let verdict = if !v.is_finite() || v < 0.0 {
                Verdict::Drop(DropReason::Implausible)
            } else {
                self.counter(field, v, at, rate_w)
            };
            match verdict {
                Verdict::Accept => {}
                Verdict::Reset => report.resets.push(field),
                Verdict::Drop(reason) => {
                    *slot = None;
                    report.dropped.push(Dropped {
                        field,
                        value: v,
                        reason,
                    });
                }
            }
        }
    }

    fn counter(&mut self, field: &'static str, v: f64, at: DateTime<Utc>, rate_w: f64) -> Verdict {
        let allowance = |from: DateTime<Utc>| {
            let hours = (at - from).num_milliseconds().max(0) as f64 / 3_600_000.0;
            2.0 * rate_w * hours + COUNTER_SLACK_WH
        };
        let Some(c) = self.counters.get_mut(field) else {
            self.counters.insert(
                field,
                Counter {
                    value: v,
                    at,
                    candidate: None,
                },
            );
            return Verdict::Accept;
        };
        if v >= c.value && v - c.value <= allowance(c.at) {
            *c = Counter {
                value: v,
                at,
                candidate: None,
            };
            return Verdict::Accept;
        }
        // Below the accepted level, or far above it: a glitch, or the first readings of a new
        // level; the new level counts when consecutive readings agree on it.
        let reason = if v < c.value {
            DropReason::Backwards
        } else {
            DropReason::Spike
        };
        let n = match c.candidate {
            Some((last, last_at, n)) if v >= last && v - last <= allowance(last_at) => n + 1,
            _ => 1,
        };
        if n >= RESET_CONFIRMATIONS {
            *c = Counter {
                value: v,
                at,
                candidate: None,
            };
            return Verdict::Reset;
        }
        c.candidate = Some((v, at, n));
        Verdict::Drop(reason)
    }
}

fn wh(e: &WattHours) -> f64 {
    e.0
}

fn within<T>(
    field: &'static str,
    slot: &mut Option<T>,
    value: impl Fn(&T) -> f64,
    min: f64,
    max: f64,
    dropped: &mut Vec<Dropped>,
) {
    let Some(v) = slot.as_ref().map(value) else {
        return;
    };
    if !(v.is_finite() && (min..=max).contains(&v)) {
        *slot = None;
        dropped.push(Dropped {
            field,
            value: v,
            reason: DropReason::Implausible,
        });
    }
}

fn watts_within(field: &'static str, slot: &mut Option<Watts>, max: f64, d: &mut Vec<Dropped>) {
    within(field, slot, |w| f64::from(w.0), -max, max, d);
}

impl GuardLimits {
    /// Largest plausible AC or battery power, W: a quarter above the rating plus solar, +100 W.
    fn ac_power_bound(&self) -> f64 {
        1.25 * (self.max_power_w + self.max_pv_w) + 100.0
    }
}

/// The power readings of `s` within their bounds (`ac`: the AC power bound, W).
fn powers_within(s: &mut Sample, l: &GuardLimits, ac: f64, d: &mut Vec<Dropped>) {
    let pv = 1.25 * l.max_pv_w + 100.0;
    let string = 1.25 * l.max_pv_string_w + 50.0;
    let r = &mut s.readings;
    let mut out = |field, v: &mut Option<Watts>, max: f64| watts_within(field, v, max, d);
    out("bat_power", &mut s.bat_power, ac);
    out("grid_power", &mut s.grid_power, ac);
    out("offgrid_power", &mut s.offgrid_power, ac);
    out("pv_power", &mut s.pv_power, pv);
    out("ct_power", &mut s.ct_power, 3.0 * l.max_meter_w);
    out("ct_a_power", &mut r.ct_a_power, l.max_meter_w);
    out("ct_b_power", &mut r.ct_b_power, l.max_meter_w);
    out("ct_c_power", &mut r.ct_c_power, l.max_meter_w);
    out("pv1_power", &mut r.pv1_power, string);
    out("pv2_power", &mut r.pv2_power, string);
    out("pv3_power", &mut r.pv3_power, string);
    out("pv4_power", &mut r.pv4_power, string);
}

/// Temperatures, capacities (up to `cap` Wh), voltages and currents of `s` within what the
/// hardware can measure.
fn measurements_within(s: &mut Sample, cap: f64, d: &mut Vec<Dropped>) {
    let r = &mut s.readings;
    for (field, t) in [
        ("temperature", &mut s.temperature),
        ("cell_temp_max", &mut r.cell_temp_max),
        ("cell_temp_min", &mut r.cell_temp_min),
        ("board_temp", &mut r.board_temp),
    ] {
        within(field, t, |c: &Celsius| c.0, -40.0, 100.0, d);
    }
    within(
        "remaining_capacity",
        &mut s.remaining_capacity,
        wh,
        0.0,
        cap,
        d,
    );
    within("rated_capacity", &mut s.rated_capacity, wh, 0.0, cap, d);
    within("bat_voltage", &mut r.bat_voltage, |v| v.0, 0.0, 100.0, d);
    within("bat_current", &mut r.bat_current, |a| a.0, -200.0, 200.0, d);
    for (field, v) in [
        ("pv1_voltage", &mut r.pv1_voltage),
        ("pv2_voltage", &mut r.pv2_voltage),
        ("pv3_voltage", &mut r.pv3_voltage),
        ("pv4_voltage", &mut r.pv4_voltage),
    ] {
        within(field, v, |v| v.0, 0.0, 150.0, d);
    }
    for (field, a) in [
        ("pv1_current", &mut r.pv1_current),
        ("pv2_current", &mut r.pv2_current),
        ("pv3_current", &mut r.pv3_current),
        ("pv4_current", &mut r.pv4_current),
    ] {
        within(field, a, |a| a.0, 0.0, 50.0, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceId;
    use chrono::Duration;

    fn sample(at: DateTime<Utc>, pv_wh: f64) -> Sample {
        let mut s = Sample::empty(DeviceId::parse("d").unwrap(), at);
        s.total_pv_energy = Some(WattHours(pv_wh));
        s
    }

    /// What the guard passes on for a series of PV counter readings one minute apart.
    fn run(values: &[f64]) -> Vec<Option<f64>> {
        let mut g = ReadingGuard::new(GuardLimits::default());
        let t0 = Utc::now();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut s = sample(t0 + Duration::minutes(i as i64), *v);
                g.check(&mut s);
                s.total_pv_energy.map(|e| e.0)
            })
            .collect()
    }

    #[test]
    fn a_dip_and_a_spike_are_dropped_and_the_counter_carries_on() {
        let got = run(&[1000.0, 1010.0, 0.0, 1020.0, 9.0e9, 1030.0]);
        assert_eq!(
            got,
            vec![
                Some(1000.0),
                Some(1010.0),
                None,
                Some(1020.0),
                None,
                Some(1030.0)
            ]
        );
    }

    #[test]
    fn three_agreeing_lower_readings_are_a_genuine_reset() {
        let got = run(&[5000.0, 5010.0, 3.0, 4.0, 6.0, 8.0]);
        assert_eq!(
            got,
            vec![Some(5000.0), Some(5010.0), None, None, Some(6.0), Some(8.0)]
        );
        // Lower readings that disagree (falling further) never confirm a reset.
        let got = run(&[5000.0, 30.0, 20.0, 10.0, 5.0]);
        assert_eq!(got, vec![Some(5000.0), None, None, None, None]);
        // A bad first reading: the real, higher level is taken once three readings agree.
        let got = run(&[0.0, 80_000.0, 80_001.0, 80_002.0, 80_003.0]);
        assert_eq!(
            got,
            vec![Some(0.0), None, None, Some(80_002.0), Some(80_003.0)]
        );
    }

    #[test]
    fn implausible_values_are_dropped_and_counted() {
        let mut g = ReadingGuard::new(GuardLimits {
            max_power_w: 2500.0,
            max_pv_w: 0.0,
            ..GuardLimits::default()
        });
        let mut s = sample(Utc::now(), 1.0);
        s.temperature = Some(Celsius(f64::MAX)); // ≈ 1.8e308 °C
        s.bat_power = Some(Watts(90_000));
        s.grid_power = Some(Watts(-2400));
        s.readings.cell_temp_max = Some(Celsius(f64::NAN));
        s.total_grid_input_energy = Some(WattHours(-5.0));
        let r = g.check(&mut s);
        assert_eq!(s.temperature, None);
        assert_eq!(s.bat_power, None);
        assert_eq!(s.grid_power, Some(Watts(-2400)), "within the rating");
        assert_eq!(s.readings.cell_temp_max, None);
        assert_eq!(s.total_grid_input_energy, None);
        assert_eq!(s.total_pv_energy, Some(WattHours(1.0)));
        let fields: Vec<_> = r.dropped.iter().map(|d| d.field).collect();
        assert_eq!(
            fields,
            [
                "bat_power",
                "temperature",
                "cell_temp_max",
                "total_grid_input_energy"
            ]
        );
        assert_eq!(s.readings.readings_dropped, Some(4));
        assert_eq!(g.dropped_total(), 4);
    }

    #[test]
    fn forgetting_accepts_a_new_device_at_once() {
        let mut g = ReadingGuard::new(GuardLimits::default());
        let t0 = Utc::now();
        let mut s = sample(t0, 9000.0);
        g.check(&mut s);
        g.forget_counters();
        let mut s = sample(t0 + Duration::minutes(1), 12.0);
        let r = g.check(&mut s);
        assert_eq!(s.total_pv_energy, Some(WattHours(12.0)));
        assert!(r.dropped.is_empty() && r.resets.is_empty());
    }
}
