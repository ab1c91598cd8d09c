//! The pure controller of the regulator: from a grid reading (W, + import) to the fleet's
//! set-point (W, + discharge), with smoothing of the readings, a deadband around the target, a
//! PI law whose integral is recomputed from the output actually given (anti-windup, so that a
//! clamp or a bounded step never winds it up), a bounded step per cycle, and the range the
//! fleet can deliver now. [`SignWatch`] recognises a meter whose sign is inverted (the grid
//! moves the same way as the batteries' output); [`Controller::back_off`] lets the caller probe
//! the sign when the output is pinned at a limit. No I/O, no clock: the caller counts cycles.

use super::settings::RegulatorSettings;

/// The controller's tuning, from the settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// Grid power to hold, W (+ import).
    pub target_w: f64,
    /// No correction while |error| is within this, W.
    pub deadband_w: f64,
    /// Weight of the previous smoothed reading, 0..1.
    pub smoothing: f64,
    /// Proportional gain.
    pub kp: f64,
    /// Integral gain per cycle.
    pub ki: f64,
    /// Largest change of the output per cycle, W.
    pub max_step_w: f64,
}

impl From<&RegulatorSettings> for Tuning {
    fn from(s: &RegulatorSettings) -> Self {
        Self {
            target_w: f64::from(s.target_w),
            deadband_w: f64::from(s.deadband_w),
            smoothing: s.smoothing,
            kp: s.kp,
            ki: s.ki,
            max_step_w: f64::from(s.max_step_w),
        }
    }
}

/// What bounded the output of a cycle, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The bounded step per cycle.
    Step,
    /// What the fleet can deliver (envelope, SOC limits, batteries left out).
    Range,
}

/// One cycle's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cycle {
    /// The smoothed grid reading, W (+ import).
    pub grid_w: f64,
    /// Smoothed grid minus target, W.
    pub error_w: f64,
    /// Whether the error was within the deadband (no correction).
    pub in_deadband: bool,
    /// The fleet's set-point, W (+ discharge, − charge), within the range given.
    pub output_w: i32,
    /// What bounded it.
    pub bound: Option<Bound>,
}

/// A PI controller with smoothing, deadband, anti-windup and a bounded step.
#[derive(Debug, Clone)]
pub struct Controller {
    tuning: Tuning,
    smoothed: Option<f64>,
    integral: f64,
    output: f64,
}

impl Controller {
    /// A controller starting from a 0 W output.
    pub fn new(tuning: Tuning) -> Self {
        Self {
            tuning,
            smoothed: None,
            integral: 0.0,
            output: 0.0,
        }
    }

    /// The tuning in use.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// The last output, W (+ discharge).
    pub fn output(&self) -> f64 {
        self.output
    }

    /// Restarts from `output_w` (what the batteries deliver now, W + discharge), forgetting
    /// the smoothed reading: the first cycle after it does not jump.
    pub fn reset(&mut self, output_w: f64) {
        self.smoothed = None;
        self.integral = output_w;
        self.output = output_w;
    }

    /// Takes `grid_w` (W, + import) into the smoothed reading and returns it.
    fn smooth(&mut self, grid_w: f64) -> f64 {
        let t = self.tuning;
        let smoothed = match self.smoothed {
            Some(prev) => t.smoothing * prev + (1.0 - t.smoothing) * grid_w,
            None => grid_w,
        };
        self.smoothed = Some(smoothed);
        smoothed
    }

    /// A cycle without correction, while the last one is still taking effect: the reading goes
    /// into the smoothing, the output stays (only clamped into `range`, W), nothing winds up.
    pub fn hold(&mut self, grid_w: f64, range: (f64, f64)) -> Cycle {
        let smoothed = self.smooth(grid_w);
        let error = smoothed - self.tuning.target_w;
        let (lo, hi) = (range.0.min(0.0), range.1.max(0.0));
        let u = self.output.clamp(lo, hi).round();
        let bound = (u != self.output).then_some(Bound::Range);
        self.integral += u - self.output;
        self.output = u;
        Cycle {
            grid_w: smoothed,
            error_w: error,
            in_deadband: error.abs() <= self.tuning.deadband_w,
            output_w: u as i32,
            bound,
        }
    }

    /// Moves the output toward 0 W by up to `by_w` W (a probe of the meter's sign); returns the
    /// new output, W.
    pub fn back_off(&mut self, by_w: f64) -> i32 {
        let u = self.output - self.output.signum() * by_w.min(self.output.abs());
        self.integral += u - self.output;
        self.output = u.round();
        self.output as i32
    }

    /// One cycle: `grid_w` is the latest reading (W, + import), `range` what the fleet can
    /// deliver now, (lowest, highest) W with lowest ≤ 0 ≤ highest.
    pub fn step(&mut self, grid_w: f64, range: (f64, f64)) -> Cycle {
        let t = self.tuning;
        let smoothed = self.smooth(grid_w);
        let error = smoothed - t.target_w;
        let in_deadband = error.abs() <= t.deadband_w;
        let e = if in_deadband { 0.0 } else { error };
        let p = t.kp * e;
        let wanted = p + self.integral + t.ki * e;
        let mut bound = None;
        let (lo_step, hi_step) = (self.output - t.max_step_w, self.output + t.max_step_w);
        let mut u = wanted;
        if u < lo_step || u > hi_step {
            u = u.clamp(lo_step, hi_step);
            bound = Some(Bound::Step);
        }
        let (lo, hi) = (range.0.min(0.0), range.1.max(0.0));
        if u < lo || u > hi {
            // The range wins over the step bound: a battery that left must not be asked for more.
            u = u.clamp(lo, hi);
            bound = Some(Bound::Range);
        }
        let u = u.round();
        // Anti-windup by back-calculation: the integral is what the output given implies.
        self.integral = u - p;
        self.output = u;
        Cycle {
            grid_w: smoothed,
            error_w: error,
            in_deadband,
            output_w: u as i32,
            bound,
        }
    }
}

/// Smallest change of the fleet's output that [`SignWatch`] judges, W.
pub const SIGN_JUDGED_STEP_W: f64 = 150.0;
/// Consecutive judged cycles with the grid moving the wrong way before the meter is called
/// inverted.
pub const SIGN_STRIKES: u8 = 3;

/// Recognises a meter whose sign is inverted: when the batteries deliver more, a right meter
/// shows less import; an inverted one shows more. Each cycle compares the change of the
/// fleet's applied output over the previous cycle with the change of the grid reading since.
#[derive(Debug, Clone, Default)]
pub struct SignWatch {
    last: Option<(f64, f64)>,
    previous_output: Option<f64>,
    strikes: u8,
}

impl SignWatch {
    /// Forgets what was seen (regulation restarted).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Whether a move of the output was last followed by the grid moving the same way, with no
    /// move since that cleared it: the meter is suspected, not yet judged inverted.
    pub fn suspects(&self) -> bool {
        self.strikes > 0
    }

    /// Notes this cycle's grid reading (W, + import) and the output applied before it was taken
    /// (W, + discharge); returns why the meter looks inverted once it does.
    pub fn observe(&mut self, applied_w: f64, grid_w: f64) -> Option<String> {
        let previous = self.last.replace((applied_w, grid_w));
        let before = self.previous_output.replace(applied_w);
        let (Some((_, grid_before)), Some(output_before)) = (previous, before) else {
            return None;
        };
        let du = applied_w - output_before;
        let dg = grid_w - grid_before;
        if du.abs() < SIGN_JUDGED_STEP_W || dg.abs() < 0.5 * du.abs() {
            return None;
        }
        if du.signum() == dg.signum() {
            self.strikes = self.strikes.saturating_add(1);
        } else {
            self.strikes = 0;
        }
        (self.strikes >= SIGN_STRIKES).then(|| {
            format!(
                "the grid reading rose with the batteries' output {} cycles in a row (last: output {du:+.0} W, grid {dg:+.0} W): the meter's sign looks inverted (regulator.meter.sign)",
                self.strikes
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuning() -> Tuning {
        Tuning::from(&RegulatorSettings::default())
    }

    /// A house: grid = load − battery output, the battery following its set-point within one
    /// cycle. Returns the cycles until |grid − target| is within the deadband and stays there.
    fn settle(c: &mut Controller, load: f64, range: (f64, f64), cycles: usize) -> (usize, f64) {
        let mut applied = c.output();
        let mut settled_at = None;
        for n in 1..=cycles {
            let grid = load - applied;
            let cycle = c.step(grid, range);
            applied = f64::from(cycle.output_w);
            let ok = (load - applied - c.tuning().target_w).abs() <= c.tuning().deadband_w;
            match (ok, settled_at) {
                (true, None) => settled_at = Some(n),
                (false, _) => settled_at = None,
                _ => {}
            }
        }
        (settled_at.unwrap_or(usize::MAX), load - applied)
    }

    #[test]
    fn a_step_load_is_covered_within_a_few_cycles_and_the_grid_ends_near_the_target() {
        let mut c = Controller::new(tuning());
        let (cycles, grid) = settle(&mut c, 1500.0, (-2500.0, 2500.0), 30);
        assert!(cycles <= 8, "settled after {cycles} cycles");
        assert!((grid - 20.0).abs() <= 25.0, "grid {grid}");
        // Then the load drops to 200 W: the output follows down.
        let (cycles, grid) = settle(&mut c, 200.0, (-2500.0, 2500.0), 30);
        assert!(cycles <= 8, "settled after {cycles} cycles");
        assert!((grid - 20.0).abs() <= 25.0);
    }

    #[test]
    fn surplus_solar_is_charged_with_a_negative_set_point() {
        let mut c = Controller::new(tuning());
        let (_, grid) = settle(&mut c, -900.0, (-2500.0, 2500.0), 30);
        assert!(c.output() < -850.0, "{}", c.output());
        assert!((grid - 20.0).abs() <= 25.0);
    }

    #[test]
    fn within_the_deadband_nothing_moves() {
        let mut c = Controller::new(tuning());
        c.reset(500.0);
        for g in [30.0, 10.0, 44.0, -4.0] {
            let cycle = c.step(g, (-2500.0, 2500.0));
            assert!(cycle.in_deadband);
            assert_eq!(cycle.output_w, 500);
        }
    }

    #[test]
    fn the_step_per_cycle_is_bounded() {
        let mut c = Controller::new(tuning());
        let cycle = c.step(5000.0, (-5000.0, 5000.0));
        assert_eq!(cycle.output_w, 1500);
        assert_eq!(cycle.bound, Some(Bound::Step));
        let cycle = c.step(5000.0, (-5000.0, 5000.0));
        assert_eq!(cycle.output_w, 3000);
    }

    #[test]
    fn the_output_never_leaves_the_range_and_the_integral_does_not_wind_up() {
        let mut c = Controller::new(tuning());
        // A 3 kW load with 1 kW available: the output saturates at 1 kW for a long time.
        for _ in 0..50 {
            let cycle = c.step(3000.0 - c.output(), (-1000.0, 1000.0));
            assert!((-1000..=1000).contains(&cycle.output_w));
        }
        assert_eq!(c.output(), 1000.0);
        // The load drops to 300 W: without windup the output comes down at once, not after
        // unwinding fifty cycles of integral.
        let (cycles, _) = settle(&mut c, 300.0, (-1000.0, 1000.0), 20);
        assert!(cycles <= 8, "took {cycles} cycles to unwind");
    }

    #[test]
    fn holding_keeps_the_output_and_only_clamps_it_into_a_shrinking_range() {
        let mut c = Controller::new(tuning());
        c.reset(1200.0);
        let cycle = c.hold(900.0, (-2500.0, 2500.0));
        assert_eq!((cycle.output_w, cycle.bound), (1200, None));
        assert!((cycle.error_w - 880.0).abs() < 1e-6, "{cycle:?}");
        let cycle = c.hold(900.0, (0.0, 700.0));
        assert_eq!((cycle.output_w, cycle.bound), (700, Some(Bound::Range)));
        // The next correction starts from what was held, without a jump from the integral.
        let cycle = c.step(20.0, (0.0, 700.0));
        assert_eq!(cycle.output_w, 700, "{cycle:?}");
    }

    #[test]
    fn a_shrinking_range_wins_over_the_step_bound() {
        let mut c = Controller::new(tuning());
        c.reset(2000.0);
        let cycle = c.step(2000.0, (0.0, 600.0));
        assert_eq!(cycle.output_w, 600);
        assert_eq!(cycle.bound, Some(Bound::Range));
        let cycle = c.step(2000.0, (0.0, 0.0));
        assert_eq!(cycle.output_w, 0, "no battery left: nothing asked");
    }

    #[test]
    fn smoothing_damps_a_single_spike() {
        // Off by default; a user with a noisy meter sets it.
        let mut c = Controller::new(Tuning {
            smoothing: 0.3,
            ..tuning()
        });
        c.reset(0.0);
        c.step(20.0, (-2500.0, 2500.0));
        let cycle = c.step(1020.0, (-2500.0, 2500.0));
        assert!((cycle.grid_w - 720.0).abs() < 1e-6, "{}", cycle.grid_w);
    }

    #[test]
    fn with_a_slow_battery_the_loop_still_converges_without_oscillating_away() {
        // The battery reaches its set-point one cycle late; as in the engine, a correction is
        // followed by a cycle that only holds (the write interval is two cycles).
        let mut c = Controller::new(tuning());
        let (mut applied, mut pending) = (0.0, 0.0);
        let mut worst_late = 0.0f64;
        for n in 0..40 {
            let grid = 1200.0 - applied;
            applied = pending;
            let cycle = if n % 2 == 0 {
                c.step(grid, (-2500.0, 2500.0))
            } else {
                c.hold(grid, (-2500.0, 2500.0))
            };
            pending = f64::from(cycle.output_w);
            if n > 20 {
                worst_late = worst_late.max((1200.0 - applied - 20.0).abs());
            }
        }
        assert!(
            worst_late <= 25.0,
            "still {worst_late} W off after 20 cycles"
        );
    }

    #[test]
    fn an_inverted_meter_is_recognised_and_a_right_one_is_not() {
        let mut w = SignWatch::default();
        let mut verdict = None;
        // Inverted: the reading is −(load − output); the output runs away and the reading follows it.
        let (load, mut out) = (500.0, 0.0);
        for _ in 0..6 {
            verdict = verdict.or(w.observe(out, -(load - out)));
            out -= 400.0;
        }
        assert!(verdict.is_some_and(|v| v.contains("inverted")));

        let mut w = SignWatch::default();
        let mut c = Controller::new(tuning());
        let mut out = 0.0;
        for n in 0..40 {
            let load = if n % 10 < 5 { 1500.0 } else { 300.0 };
            assert_eq!(w.observe(out, load - out), None, "cycle {n}");
            out = f64::from(c.step(load - out, (-2500.0, 2500.0)).output_w);
        }
    }
}
