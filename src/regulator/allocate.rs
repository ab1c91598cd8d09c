//! Allocation of the fleet's set-point across batteries, pure: every battery that takes part
//! gets the same sign (never one charging while another discharges); the first battery carries
//! the load alone up to the join power, a second joins above it (a third above twice it, …, or
//! sooner when the ones running cannot cover it); the running ones share by SOC headroom
//! (by energy when every capacity is known), each within its envelope (`max_charge_w`,
//! `max_discharge_w`, `min_soc`, `max_soc`, the BMS flags); the first place rotates when another
//! battery leads by the rotation margin. A battery that is unavailable or not holding its
//! commands is left out, and every battery not sharing is given a reason.

use std::collections::BTreeMap;

use crate::domain::{DeviceId, DeviceLimits, Percent, Watts};

/// Whether a battery can be driven at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Reachable and holding its set-points.
    Ready,
    /// Not answering.
    Unavailable,
    /// Reachable but not holding its commands (the reason: mode drift, refused writes, …).
    NotHolding(String),
    /// Under a maintenance hold: the user has it (a firmware update), nothing is sent.
    Maintenance,
}

/// One battery as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The battery.
    pub id: DeviceId,
    /// Its envelope.
    pub limits: DeviceLimits,
    /// Latest SOC, % (None = not read yet: it is left out).
    pub soc: Option<Percent>,
    /// Rated capacity, Wh, when known.
    pub capacity_wh: Option<f64>,
    /// The BMS allows charging (None = not reported).
    pub charge_allowed: Option<bool>,
    /// The BMS allows discharging (None = not reported).
    pub discharge_allowed: Option<bool>,
    /// Whether it can be driven.
    pub standing: Standing,
}

/// Which way the fleet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Discharge,
    Charge,
}

impl Candidate {
    /// Why this battery cannot run in `dir`, or its SOC headroom in that direction (points)
    /// and its power limit (W).
    fn fitness(&self, dir: Direction) -> Result<(u8, u32), String> {
        match &self.standing {
            Standing::Ready => {}
            Standing::Unavailable => return Err("unavailable: not answering".into()),
            Standing::NotHolding(why) => return Err(format!("not holding its commands: {why}")),
            Standing::Maintenance => return Err("under a maintenance hold".into()),
        }
        let Some(Percent(soc)) = self.soc else {
            return Err("SOC not read yet".into());
        };
        let l = &self.limits;
        match dir {
            Direction::Discharge if soc <= l.min_soc => Err(format!(
                "SOC {soc} % at or below min_soc {} %: cannot discharge",
                l.min_soc
            )),
            Direction::Discharge if self.discharge_allowed == Some(false) => {
                Err("the battery's BMS does not allow discharging".into())
            }
            Direction::Discharge if l.max_discharge_w == 0 => {
                Err("max_discharge_w = 0: cannot discharge".into())
            }
            Direction::Discharge => Ok((soc - l.min_soc, l.max_discharge_w)),
            Direction::Charge if soc >= l.max_soc => Err(format!(
                "SOC {soc} % at or above max_soc {} %: cannot charge",
                l.max_soc
            )),
            Direction::Charge if self.charge_allowed == Some(false) => {
                Err("the battery's BMS does not allow charging".into())
            }
            Direction::Charge if l.max_charge_w == 0 => {
                Err("max_charge_w = 0: cannot charge".into())
            }
            Direction::Charge => Ok((l.max_soc - soc, l.max_charge_w)),
        }
    }
}

/// What the fleet can deliver now, (lowest, highest) W (+ discharge): the sum of the limits of
/// the batteries able to charge, and of those able to discharge.
pub fn fleet_range(candidates: &[Candidate]) -> (f64, f64) {
    let sum = |dir| {
        candidates
            .iter()
            .filter_map(|c| c.fitness(dir).ok())
            .map(|(_, w)| f64::from(w))
            .sum::<f64>()
    };
    (-sum(Direction::Charge), sum(Direction::Discharge))
}

/// The set-points of one cycle.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Allocation {
    /// Each battery driven and its set-point, W (+ discharge, − charge; 0 = held idle), in id
    /// order. Batteries left out (unavailable, not holding) are not here.
    pub setpoints: BTreeMap<DeviceId, Watts>,
    /// Why each battery not sharing does not (left out, idle at 0 W, or in standby).
    pub reasons: BTreeMap<DeviceId, String>,
    /// The sum of the set-points, W.
    pub total_w: i32,
}

/// Shares a fleet set-point across batteries; remembers the order of the batteries (for the
/// rotation) and how many were running (for the join hysteresis).
#[derive(Debug, Clone)]
pub struct Allocator {
    join_power_w: u32,
    rotation_margin: u8,
    order: Vec<DeviceId>,
    running: usize,
}

/// Fraction of the join power under which a running battery leaves again (hysteresis).
const LEAVE_FRACTION: f64 = 0.8;

impl Allocator {
    /// An allocator with the join power (W) and rotation margin (SOC points).
    pub fn new(join_power_w: u32, rotation_margin: u8) -> Self {
        Self {
            join_power_w,
            rotation_margin,
            order: Vec::new(),
            running: 0,
        }
    }

    /// The batteries in their current order of precedence.
    pub fn order(&self) -> &[DeviceId] {
        &self.order
    }

    /// Shares `total_w` (+ discharge) across `candidates`; never more than the fleet can do.
    pub fn allocate(&mut self, total_w: i32, candidates: &[Candidate]) -> Allocation {
        let mut out = Allocation::default();
        let dir = if total_w < 0 {
            Direction::Charge
        } else {
            Direction::Discharge
        };
        let mut fit = Vec::new();
        for c in candidates {
            match (&c.standing, c.fitness(dir)) {
                (_, Ok((headroom, cap))) => fit.push((c, headroom, cap)),
                (Standing::Ready, Err(why)) if c.soc.is_some() => {
                    out.setpoints.insert(c.id.clone(), Watts(0));
                    out.reasons
                        .insert(c.id.clone(), format!("idle at 0 W: {why}"));
                }
                (_, Err(why)) => {
                    out.reasons.insert(c.id.clone(), format!("left out: {why}"));
                }
            }
        }
        self.rank(&mut fit);
        let want = total_w.unsigned_abs();
        let n = self.how_many(want, &fit);
        for (c, _, _) in &fit[n..] {
            out.setpoints.insert(c.id.clone(), Watts(0));
            let why = if want == 0 {
                "idle: nothing to do".to_string()
            } else {
                format!(
                    "standby: {want} W is covered by {n} battery(ies) (join_power_w = {} W)",
                    self.join_power_w
                )
            };
            out.reasons.insert(c.id.clone(), why);
        }
        let shares = share(want, &fit[..n], candidates);
        let sign = if dir == Direction::Charge { -1 } else { 1 };
        for ((c, _, _), w) in fit[..n].iter().zip(shares) {
            let w = sign * i32::try_from(w).unwrap_or(0);
            out.setpoints.insert(c.id.clone(), Watts(w));
            out.total_w += w;
        }
        out
    }

    /// Orders the fit batteries: the previous order, where one overtakes another only when its
    /// headroom is larger by the rotation margin; newcomers by headroom.
    fn rank(&mut self, fit: &mut [(&Candidate, u8, u32)]) {
        let pos = |id: &DeviceId| self.order.iter().position(|o| o == id);
        fit.sort_by_key(|(c, h, _)| (pos(&c.id).unwrap_or(usize::MAX), u8::MAX - h));
        let margin = self.rotation_margin;
        // Bubble passes: adjacent swaps only across the margin (a few batteries at most).
        loop {
            let mut swapped = false;
            for i in 1..fit.len() {
                if fit[i].1 > fit[i - 1].1.saturating_add(margin) {
                    fit.swap(i - 1, i);
                    swapped = true;
                }
            }
            if !swapped {
                break;
            }
        }
        let mut order: Vec<DeviceId> = fit.iter().map(|(c, _, _)| c.id.clone()).collect();
        let gone: Vec<DeviceId> = self
            .order
            .iter()
            .filter(|o| !order.contains(o))
            .cloned()
            .collect();
        order.extend(gone);
        self.order = order;
    }

    /// How many of the ranked batteries run for `want` W: one per join power started, with
    /// hysteresis on leaving, and enough to cover it.
    fn how_many(&mut self, want: u32, fit: &[(&Candidate, u8, u32)]) -> usize {
        if fit.is_empty() || want == 0 {
            self.running = 0;
            return 0;
        }
        let j = self.join_power_w;
        let mut n = if j == 0 {
            fit.len()
        } else {
            want.div_ceil(j).max(1) as usize
        };
        if j > 0 && n < self.running {
            // Leave only once clearly below the join point of the running count.
            let stay = f64::from(j) * (self.running - 1) as f64 * LEAVE_FRACTION;
            if f64::from(want) > stay {
                n = self.running;
            }
        }
        n = n.min(fit.len());
        while n < fit.len() && fit[..n].iter().map(|f| f.2).sum::<u32>() < want {
            n += 1;
        }
        self.running = n;
        n
    }
}

/// Splits `want` W over `running` by headroom (energy when every capacity is known), each at
/// most its limit (the surplus goes to the others); whole watts, never above `want`.
fn share(want: u32, running: &[(&Candidate, u8, u32)], all: &[Candidate]) -> Vec<u32> {
    let by_energy = all.iter().all(|c| c.capacity_wh.is_some_and(|w| w > 0.0));
    let weight = |(c, h, _): &(&Candidate, u8, u32)| {
        let points = f64::from(*h).max(0.5);
        if by_energy {
            points * c.capacity_wh.unwrap_or(1.0)
        } else {
            points
        }
    };
    let mut out = vec![0u32; running.len()];
    let mut open: Vec<usize> = (0..running.len()).collect();
    let mut left = f64::from(want);
    while !open.is_empty() && left >= 1.0 {
        let total: f64 = open.iter().map(|&i| weight(&running[i])).sum();
        let mut capped = Vec::new();
        for &i in &open {
            let cap = f64::from(running[i].2 - out[i]);
            if left * weight(&running[i]) / total >= cap {
                capped.push(i);
            }
        }
        if capped.is_empty() {
            for &i in &open {
                out[i] += (left * weight(&running[i]) / total).floor() as u32;
            }
            break;
        }
        for i in capped {
            left -= f64::from(running[i].2 - out[i]);
            out[i] = running[i].2;
            open.retain(|&o| o != i);
        }
    }
    // Whole watts lost to rounding go to the first battery with room.
    let mut rest = want.saturating_sub(out.iter().sum());
    for (i, r) in running.iter().enumerate() {
        let add = rest.min(r.2 - out[i]);
        out[i] += add;
        rest -= add;
    }
    out
}

#[cfg(test)]
#[path = "allocate_tests.rs"]
mod tests;
