//! One regulation cycle, without I/O: from the grid reading and the batteries in `regulate`
//! mode to the Passive writes to send and the status to publish. It owns the controller, the
//! allocator, the sign watch and what was last written to each battery, and decides when a
//! write is due: a change beyond the deadband (at most once per `min_write_interval`), the
//! keepalive at half the countdown, and at once when a battery's last set-point points the other
//! way than the fleet now runs (so two batteries never run in opposite directions). On a stale
//! reading it hands every battery back to Auto (and resumes when readings return); on an
//! inverted meter it hands them back and stops until regulation is selected again (an output
//! pinned at a limit while the meter is suspected is backed off a little to judge it). A battery
//! that does not hold Passive after a write is left out for one countdown, and the reason said.
//! On a standby bridge ([`Engine::stand_by`]) it writes nothing and forgets what it drove.
//! After a write that changed a set-point the controller only holds (no new correction) until
//! `min_write_interval` has passed since it was sent and one `interval` since it was answered
//! ([`Engine::answered`]), so that it reacts to the batteries' settled answer, not to readings
//! taken before they acted, however long the write took.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::allocate::{Allocation, Allocator, Candidate, Standing, fleet_range};
use super::control::{Bound, Controller, Cycle, SIGN_JUDGED_STEP_W, SignWatch, Tuning};
use super::meter::Reading;
use super::settings::RegulatorSettings;
use crate::domain::{Command, DeviceId, Mode, ModeConfig, Watts};

/// How far a probe of the meter's sign backs the fleet's output off a limit, W.
const PROBE_W: f64 = 2.0 * SIGN_JUDGED_STEP_W;
/// Corrections pinned at a limit with the meter suspected before a probe.
const PROBE_AFTER: u8 = 2;

/// Time a battery is given to report Passive after a write before it counts as not holding.
const HOLD_GRACE: Duration = Duration::from_secs(15);

/// A battery in `regulate` mode, as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Envelope, SOC, BMS flags and standing.
    pub candidate: Candidate,
    /// Its latest battery power, W (+ discharge), for a bumpless start.
    pub bat_power: Option<Watts>,
    /// The mode its latest sample reported and when that sample was taken.
    pub mode: Option<(Mode, Instant)>,
}

/// What the regulator is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Phase {
    /// No battery in `regulate` mode.
    Idle,
    /// Driving the batteries.
    Regulating,
    /// No fresh reading: the batteries are back in Auto until readings return.
    Fallback(String),
    /// Stopped (inverted meter): the batteries are in Auto until `regulate` is selected again.
    Stopped(String),
    /// This bridge is a standby of its site: the leader regulates, nothing is written here.
    Standby(String),
}

/// One battery's line in the status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatteryStatus {
    /// Its set-point this cycle, W (+ discharge); None when left out.
    pub setpoint_w: Option<i32>,
    /// Why it does not share (left out, idle, standby), if it does not.
    pub reason: Option<String>,
}

/// The regulator's status after a cycle (published on `<base>/bridge/regulator`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// What it is doing and why.
    #[serde(flatten)]
    pub phase: Phase,
    /// Grid power aimed at, W (+ import).
    pub target_w: i32,
    /// The grid reading used, W (+ import), when fresh.
    pub grid_w: Option<f64>,
    /// Where it came from (`meter` or `ct`).
    pub source: Option<&'static str>,
    /// The fleet's set-point, W (+ discharge).
    pub setpoint_w: i32,
    /// Per battery in `regulate` mode.
    pub batteries: BTreeMap<DeviceId, BatteryStatus>,
}

/// What a cycle asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Commands to send, one per battery at most.
    pub writes: Vec<(DeviceId, Command)>,
    /// The status after the cycle.
    pub status: Status,
}

/// The regulation state across cycles.
#[derive(Debug, Clone)]
pub struct Engine {
    settings: RegulatorSettings,
    controller: Controller,
    allocator: Allocator,
    sign: SignWatch,
    running: bool,
    phase: Phase,
    written: BTreeMap<DeviceId, (Instant, i32)>,
    benched: BTreeMap<DeviceId, (Instant, String)>,
    /// When a write that changed a set-point was last sent: no new correction before
    /// `min_write_interval` has passed since.
    corrected_at: Option<Instant>,
    /// When it was answered: no new correction before one `interval` has passed since, so that
    /// the reading judged was taken after the batteries acted.
    answered_at: Option<Instant>,
    /// Whether the writes of the last cycle changed a set-point and are not answered yet.
    unanswered: bool,
    /// Corrections in a row pinned at a limit while the meter is suspected.
    pinned: u8,
}

fn auto() -> Command {
    Command::SetMode(ModeConfig::Auto)
}

impl Engine {
    /// An idle engine with these settings.
    pub fn new(settings: &RegulatorSettings) -> Self {
        Self {
            controller: Controller::new(Tuning::from(settings)),
            allocator: Allocator::new(settings.join_power_w, settings.rotation_margin),
            settings: settings.clone(),
            sign: SignWatch::default(),
            running: false,
            phase: Phase::Idle,
            written: BTreeMap::new(),
            benched: BTreeMap::new(),
            corrected_at: None,
            answered_at: None,
            unanswered: false,
            pinned: 0,
        }
    }

    /// What the regulator is doing.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Clears a stop (regulation selected again).
    pub fn resume(&mut self) {
        if matches!(self.phase, Phase::Stopped(_)) {
            self.phase = Phase::Idle;
            self.running = false;
            self.sign.reset();
        }
    }

    /// The writes of the last cycle were answered at `now`: the batteries act on them from
    /// then, so the next correction waits one `interval` from now.
    pub fn answered(&mut self, now: Instant) {
        if std::mem::take(&mut self.unanswered) {
            self.answered_at = Some(now);
        }
    }

    /// A write to `device` failed: it is written again next cycle.
    pub fn write_failed(&mut self, device: &DeviceId) {
        self.written.remove(device);
    }

    /// `device` left `regulate` mode (another command replaced it): forgotten, nothing sent.
    pub fn release(&mut self, device: &DeviceId) {
        self.written.remove(device);
        self.benched.remove(device);
    }

    /// Auto for every battery the engine drives (bridge stop, fallback, stop); forgets them.
    pub fn hand_back(&mut self) -> Vec<(DeviceId, Command)> {
        self.running = false;
        self.corrected_at = None;
        self.answered_at = None;
        std::mem::take(&mut self.written)
            .into_keys()
            .map(|d| (d, auto()))
            .collect()
    }

    /// A cycle on a standby bridge (`why`: who leads): forgets the batteries it drove without
    /// writing to them (the leader drives them now) and says so in the status.
    pub fn stand_by(&mut self, why: String) -> Status {
        if !matches!(self.phase, Phase::Standby(_)) {
            tracing::info!(reason = %why, "regulator_standby");
        }
        self.running = false;
        self.written.clear();
        self.benched.clear();
        self.phase = Phase::Standby(why);
        Status {
            phase: self.phase.clone(),
            target_w: self.settings.target_w,
            grid_w: None,
            source: None,
            setpoint_w: 0,
            batteries: BTreeMap::new(),
        }
    }

    /// One cycle at `now` with `reading` over `members`.
    pub fn cycle(&mut self, now: Instant, reading: Reading, members: &[Member]) -> Plan {
        let mut status = Status {
            phase: Phase::Idle,
            target_w: self.settings.target_w,
            grid_w: None,
            source: None,
            setpoint_w: 0,
            batteries: BTreeMap::new(),
        };
        if members.is_empty() {
            self.phase = Phase::Idle;
            self.running = false;
            self.written.clear();
            return Plan {
                writes: Vec::new(),
                status,
            };
        }
        let grid = match self.usable_grid(reading, &mut status) {
            Ok(g) => g,
            Err(()) => return self.handing_back(status),
        };
        if self.phase != Phase::Regulating {
            tracing::info!(
                batteries = members.len(),
                grid_w = grid,
                "regulator_started"
            );
        }
        self.phase = Phase::Regulating;
        status.phase = Phase::Regulating;
        let candidates = self.candidates(now, members);
        let range = fleet_range(&candidates);
        if !self.running {
            let now_w: i32 = members
                .iter()
                .filter_map(|m| m.bat_power)
                .map(|w| w.0)
                .sum();
            self.controller
                .reset(f64::from(now_w).clamp(range.0, range.1));
            self.running = true;
            self.corrected_at = None;
            self.answered_at = None;
        }
        let since = |at: Option<Instant>, d: Duration| {
            at.is_some_and(|at| now.saturating_duration_since(at) < d)
        };
        let settling = self.unanswered
            || since(self.corrected_at, self.settings.min_write_interval)
            || since(self.answered_at, self.settings.interval);
        let cycle = if settling {
            self.controller.hold(grid, range)
        } else {
            let cycle = self.controller.step(grid, range);
            self.probe_when_pinned(cycle)
        };
        let alloc = self.allocator.allocate(cycle.output_w, &candidates);
        tracing::debug!(
            grid_w = grid,
            error_w = cycle.error_w,
            setpoint_w = alloc.total_w,
            "regulator_cycle"
        );
        status.setpoint_w = alloc.total_w;
        let writes = self.writes(now, &candidates, &alloc, !settling, &mut status);
        Plan { writes, status }
    }

    /// The grid reading to regulate on, or Err when the batteries must be handed back (stopped,
    /// stale reading, inverted meter); the phase and `status` say why.
    fn usable_grid(&mut self, reading: Reading, status: &mut Status) -> Result<f64, ()> {
        if let Phase::Stopped(_) = self.phase {
            status.phase = self.phase.clone();
            return Err(());
        }
        let (grid, source) = match reading {
            Reading::Stale(why) => {
                if !matches!(&self.phase, Phase::Fallback(w) if *w == why) {
                    tracing::warn!(reason = %why, "regulator_fallback_to_auto");
                }
                self.phase = Phase::Fallback(why);
                self.sign.reset();
                status.phase = self.phase.clone();
                return Err(());
            }
            Reading::Fresh(w, s) => (w, s),
        };
        status.grid_w = Some(grid);
        status.source = Some(source.as_str());
        let applied: i32 = self.written.values().map(|(_, w)| *w).sum();
        if let Some(why) = self.sign.observe(f64::from(applied), grid) {
            tracing::error!(reason = %why, "regulator_stopped_inverted_meter");
            self.phase = Phase::Stopped(why);
            status.phase = self.phase.clone();
            return Err(());
        }
        Ok(grid)
    }

    /// Each candidate's line in `status`, and the writes due this cycle.
    fn writes(
        &mut self,
        now: Instant,
        candidates: &[Candidate],
        alloc: &Allocation,
        correcting: bool,
        status: &mut Status,
    ) -> Vec<(DeviceId, Command)> {
        let mut writes = Vec::new();
        for c in candidates {
            let set = alloc.setpoints.get(&c.id).map(|w| w.0);
            let reason = alloc.reasons.get(&c.id).cloned();
            status.batteries.insert(
                c.id.clone(),
                BatteryStatus {
                    setpoint_w: set,
                    reason,
                },
            );
            let Some(w) = set else {
                self.written.remove(&c.id);
                continue;
            };
            if self.write_due(&c.id, w, alloc.total_w, now, correcting) {
                if self.written.get(&c.id).is_none_or(|(_, last)| *last != w) {
                    self.corrected_at = Some(now);
                    self.unanswered = true;
                }
                self.written.insert(c.id.clone(), (now, w));
                writes.push((c.id.clone(), self.passive(w)));
            }
        }
        writes
    }

    /// A correction pinned at the fleet's limit moves nothing, so the sign watch cannot judge
    /// the meter: when it already suspects it, every [`PROBE_AFTER`] such corrections the output
    /// backs off by [`PROBE_W`] (an inverted meter then shows the grid falling with it).
    fn probe_when_pinned(&mut self, cycle: Cycle) -> Cycle {
        let out = f64::from(cycle.output_w);
        let pinned = cycle.bound == Some(Bound::Range)
            && cycle.output_w != 0
            && cycle.error_w.signum() == out.signum()
            && self.sign.suspects();
        if !pinned {
            self.pinned = 0;
            return cycle;
        }
        self.pinned += 1;
        if self.pinned < PROBE_AFTER {
            return cycle;
        }
        self.pinned = 0;
        let output_w = self.controller.back_off(PROBE_W);
        tracing::info!(from_w = cycle.output_w, output_w, "regulator_sign_probe");
        Cycle {
            output_w,
            bound: None,
            ..cycle
        }
    }

    fn handing_back(&mut self, status: Status) -> Plan {
        Plan {
            writes: self.hand_back(),
            status,
        }
    }

    fn passive(&self, power: i32) -> Command {
        Command::SetMode(ModeConfig::Passive {
            power: Watts(power),
            cd_time: self.settings.countdown_secs(),
        })
    }

    /// The members as candidates, with a battery that did not hold its last write benched for
    /// one countdown.
    fn candidates(&mut self, now: Instant, members: &[Member]) -> Vec<Candidate> {
        self.benched.retain(|_, (until, _)| *until > now);
        members
            .iter()
            .map(|m| {
                let mut c = m.candidate.clone();
                if c.standing == Standing::Ready {
                    if let (Some((at, _)), Some((mode, seen))) = (self.written.get(&c.id), m.mode)
                        && mode != Mode::Passive
                        && seen > *at + HOLD_GRACE
                    {
                        let why = format!("reports {mode} after a Passive write");
                        tracing::warn!(device = %c.id, reason = %why, "regulator_battery_not_holding");
                        self.benched.insert(c.id.clone(), (now + self.settings.countdown, why));
                        self.written.remove(&c.id);
                    }
                    if let Some((_, why)) = self.benched.get(&c.id) {
                        c.standing = Standing::NotHolding(why.clone());
                    }
                }
                c
            })
            .collect()
    }

    /// Whether `device` must be written `w` W now (the fleet's total being `total` W);
    /// `correcting`: the controller corrected this cycle (at most once per
    /// `min_write_interval`, and once the last correction was answered), so a change is sent
    /// even if a keepalive went out since.
    fn write_due(
        &self,
        device: &DeviceId,
        w: i32,
        total: i32,
        now: Instant,
        correcting: bool,
    ) -> bool {
        let Some((at, last)) = self.written.get(device) else {
            return true;
        };
        let since = now.saturating_duration_since(*at);
        if since >= self.settings.countdown / 2 {
            return true; // keepalive
        }
        if *last != 0 && (last.signum() != w.signum() || last.signum() != total.signum()) {
            return true; // never left pointing the other way
        }
        let threshold = self.settings.deadband_w.max(10) as i32;
        (w - last).abs() >= threshold && (correcting || since >= self.settings.min_write_interval)
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
