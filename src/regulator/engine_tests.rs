//! Unit tests of the regulation cycle (pure): a house model where grid = load − the batteries'
//! last written set-points, counted in cycles.

use super::*;
use crate::domain::{DeviceLimits, Percent};
use crate::regulator::meter::Source;

fn member(id: &str, soc: u8) -> Member {
    Member {
        candidate: Candidate {
            id: DeviceId::parse(id).unwrap(),
            limits: DeviceLimits {
                max_charge_w: 2500,
                max_discharge_w: 2500,
                min_soc: 10,
                max_soc: 100,
            },
            soc: Some(Percent(soc)),
            capacity_wh: None,
            charge_allowed: None,
            discharge_allowed: None,
            standing: Standing::Ready,
        },
        bat_power: None,
        mode: None,
    }
}

fn power(c: &Command) -> Option<i32> {
    match c {
        Command::SetMode(ModeConfig::Passive { power, cd_time }) => {
            assert_eq!(*cd_time, 30);
            Some(power.0)
        }
        _ => None,
    }
}

/// Runs the engine against a house: each cycle 5 s apart; the batteries deliver what they were
/// last written. Returns the battery outputs and every plan.
struct House {
    engine: Engine,
    now: Instant,
    out: BTreeMap<DeviceId, i32>,
    writes: usize,
}

impl House {
    fn new() -> Self {
        Self {
            engine: Engine::new(&RegulatorSettings::default()),
            now: Instant::now(),
            out: BTreeMap::new(),
            writes: 0,
        }
    }

    fn grid(&self, load: f64) -> f64 {
        load - f64::from(self.out.values().sum::<i32>())
    }

    fn step(&mut self, load: f64, members: &[Member]) -> Plan {
        self.step_reading(load, 1.0, members)
    }

    /// One cycle 5 s on whose meter reads `sign` × the grid (−1: an inverted meter); the
    /// writes are answered at once.
    fn step_reading(&mut self, load: f64, sign: f64, members: &[Member]) -> Plan {
        self.now += Duration::from_secs(5);
        let reading = Reading::Fresh(sign * self.grid(load), Source::Meter);
        let plan = self.engine.cycle(self.now, reading, members);
        self.apply(&plan);
        self.engine.answered(self.now);
        plan
    }

    fn apply(&mut self, plan: &Plan) {
        for (d, c) in &plan.writes {
            self.writes += 1;
            match power(c) {
                Some(p) => self.out.insert(d.clone(), p),
                None => self.out.remove(d),
            };
        }
        let signs: Vec<i32> = self
            .out
            .values()
            .map(|w| w.signum())
            .filter(|s| *s != 0)
            .collect();
        assert!(
            signs.windows(2).all(|w| w[0] == w[1]),
            "opposite directions: {:?}",
            self.out
        );
    }
}

#[test]
fn a_step_load_is_covered_by_two_batteries_within_a_bounded_number_of_cycles() {
    let mut h = House::new();
    let fleet = [member("a", 60), member("b", 80)];
    let mut covered = None;
    for n in 1..=20 {
        let plan = h.step(1500.0, &fleet);
        assert_eq!(plan.status.phase, Phase::Regulating);
        if covered.is_none() && (h.grid(1500.0) - 20.0).abs() <= 25.0 + 30.0 {
            covered = Some(n);
        }
    }
    let n = covered.expect("never covered");
    assert!(n <= 6, "covered after {n} cycles");
    assert!(
        h.out.values().all(|w| *w > 0),
        "both share 1.5 kW: {:?}",
        h.out
    );
    // 20 cycles of 5 s = 100 s: at most 6 writes per battery per minute.
    assert!(h.writes <= 2 * 10, "{} writes", h.writes);
}

#[test]
fn a_silent_meter_hands_the_batteries_back_to_auto_and_regulation_resumes_after() {
    let mut h = House::new();
    let fleet = [member("a", 60)];
    for _ in 0..5 {
        h.step(800.0, &fleet);
    }
    h.now += Duration::from_secs(5);
    let plan = h
        .engine
        .cycle(h.now, Reading::Stale("silent".into()), &fleet);
    assert_eq!(plan.writes, vec![(DeviceId::parse("a").unwrap(), auto())]);
    assert!(matches!(plan.status.phase, Phase::Fallback(_)));
    h.apply(&plan);
    let again = h
        .engine
        .cycle(h.now, Reading::Stale("silent".into()), &fleet);
    assert!(again.writes.is_empty(), "Auto is sent once");
    let back = h.step(800.0, &fleet);
    assert_eq!(back.status.phase, Phase::Regulating);
    assert_eq!(back.writes.len(), 1);
}

#[test]
fn an_inverted_meter_stops_the_regulator_until_it_is_selected_again() {
    let mut h = House::new();
    let fleet = [member("a", 60)];
    let mut stopped = None;
    for n in 1..=12 {
        let plan = h.step_reading(600.0, -1.0, &fleet);
        if let Phase::Stopped(why) = &plan.status.phase {
            assert!(why.contains("inverted"));
            assert!(plan.writes.iter().all(|(_, c)| *c == auto()));
            stopped = Some(n);
            break;
        }
    }
    assert!(stopped.is_some_and(|n| n <= 6), "{stopped:?}");
    let plan = h.step(600.0, &fleet);
    assert!(matches!(plan.status.phase, Phase::Stopped(_)));
    assert!(plan.writes.is_empty());
    h.engine.resume();
    assert_eq!(h.step(600.0, &fleet).status.phase, Phase::Regulating);
}

#[test]
fn keepalive_renews_every_half_countdown_while_nothing_changes() {
    let mut h = House::new();
    let fleet = [member("a", 60)];
    for _ in 0..10 {
        h.step(500.0, &fleet);
    }
    let before = h.writes;
    for _ in 0..12 {
        h.step(500.0, &fleet); // 60 s in the deadband
    }
    assert_eq!(h.writes - before, 4, "one renewal per 15 s");
}

#[test]
fn a_battery_that_does_not_hold_passive_is_left_out_with_the_reason() {
    let mut h = House::new();
    let mut fleet = [member("a", 60), member("b", 60)];
    h.step(2000.0, &fleet);
    // b reports Auto 20 s after the write.
    fleet[1].mode = Some((Mode::Auto, h.now + Duration::from_secs(20)));
    h.now += Duration::from_secs(20);
    let plan = h.step(2000.0, &fleet);
    let b = &plan.status.batteries[&DeviceId::parse("b").unwrap()];
    assert_eq!(b.setpoint_w, None);
    assert!(
        b.reason.as_deref().unwrap().contains("reports Auto"),
        "{b:?}"
    );
    assert!(plan.writes.iter().all(|(d, _)| d.as_str() == "a"));
}

#[test]
fn handing_back_sends_auto_to_every_battery_driven() {
    let mut h = House::new();
    let fleet = [member("a", 60), member("b", 60)];
    h.step(2000.0, &fleet);
    let back = h.engine.hand_back();
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|(_, c)| *c == auto()));
    assert!(h.engine.hand_back().is_empty());
}

#[test]
fn surplus_turns_both_batteries_to_charging_in_one_cycle_never_one_each_way() {
    let mut h = House::new();
    let fleet = [member("a", 50), member("b", 50)];
    for _ in 0..8 {
        h.step(1800.0, &fleet);
    }
    // A cloud passes: 2.5 kW of PV appears; the House asserts the directions every cycle.
    for _ in 0..12 {
        h.step(-700.0, &fleet);
    }
    assert!(h.out.values().all(|w| *w <= 0), "{:?}", h.out);
    assert!((h.grid(-700.0) - 20.0).abs() <= 60.0, "{}", h.grid(-700.0));
}

#[test]
fn a_correction_waits_for_the_batteries_answer_and_one_covers_a_step() {
    let mut h = House::new();
    let fleet = [member("a", 60)];
    for _ in 0..6 {
        h.step(300.0, &fleet);
    }
    assert!((h.grid(300.0) - 20.0).abs() <= 25.0, "{}", h.grid(300.0));
    // A 1 kW step: the first cycle corrects by what the (smoothed) reading shows, the next
    // one only holds (the write interval is two cycles), the one after finishes the job.
    let first = h.step(1300.0, &fleet);
    assert_eq!(first.writes.len(), 1, "{first:?}");
    let held = h.step(1300.0, &fleet);
    assert!(
        held.writes.is_empty(),
        "a correction 5 s after the last: {held:?}"
    );
    h.step(1300.0, &fleet);
    let grid = h.grid(1300.0);
    assert!(
        (grid - 20.0).abs() <= 25.0 + 30.0,
        "grid {grid} after three cycles"
    );
    for _ in 0..6 {
        h.step(1300.0, &fleet);
    }
    assert!((h.grid(1300.0) - 20.0).abs() <= 25.0, "{}", h.grid(1300.0));
}

#[test]
fn an_inverted_meter_that_pins_one_battery_at_its_limit_is_probed_and_stopped() {
    let mut h = House::new();
    let fleet = [member("a", 60)];
    for _ in 0..6 {
        h.step(1500.0, &fleet);
    }
    assert!((h.grid(1500.0) - 20.0).abs() <= 25.0, "{}", h.grid(1500.0));
    // The meter's sign flips and the load drops: the output runs to the battery's 2.5 kW limit
    // in one correction, where no further move would show the meter's sign.
    let mut stopped = None;
    for n in 1..=20 {
        let plan = h.step_reading(300.0, -1.0, &fleet);
        if let Phase::Stopped(why) = &plan.status.phase {
            assert!(why.contains("inverted"), "{why}");
            stopped = Some(n);
            break;
        }
    }
    assert!(stopped.is_some_and(|n| n <= 12), "{stopped:?}");
    assert!(h.out.is_empty(), "handed back: {:?}", h.out);
}

#[test]
fn a_right_meter_pinned_by_a_big_load_stays_regulating_after_a_probe() {
    let mut h = House::new();
    let fleet = [member("a", 60)];
    // 4 kW of load, 2.5 kW available: pinned at the limit for two minutes.
    for _ in 0..24 {
        let plan = h.step(4000.0, &fleet);
        assert_eq!(plan.status.phase, Phase::Regulating);
    }
    assert_eq!(h.out.values().sum::<i32>(), 2500);
}

#[test]
fn a_slow_write_is_judged_only_once_it_was_answered() {
    let mut h = House::new();
    let fleet = [member("a", 60)];
    for _ in 0..6 {
        h.step(300.0, &fleet);
    }
    // A 1 kW step; the write that covers it takes 12 s to be answered (pacing, lost packets):
    // meanwhile the battery has not acted and two more cycles see the old reading.
    h.now += Duration::from_secs(5);
    let first = h
        .engine
        .cycle(h.now, Reading::Fresh(h.grid(1300.0), Source::Meter), &fleet);
    assert_eq!(first.writes.len(), 1);
    let stale = h.grid(1300.0);
    h.now += Duration::from_secs(12);
    h.apply(&first);
    h.engine.answered(h.now);
    // The cycle right after the answer still reads the grid from before the battery acted.
    h.now += Duration::from_millis(10);
    let next = h
        .engine
        .cycle(h.now, Reading::Fresh(stale, Source::Meter), &fleet);
    assert!(
        next.writes.is_empty(),
        "corrected twice for one step: {next:?}"
    );
    for _ in 0..4 {
        h.step(1300.0, &fleet);
    }
    let grid = h.grid(1300.0);
    assert!(
        (grid - 20.0).abs() <= 25.0 + 30.0,
        "grid {grid}: overshoot or runaway"
    );
}

#[test]
fn a_standby_writes_nothing_and_forgets_what_it_drove() {
    let mut h = House::new();
    let fleet = [member("a", 60)];
    h.step(1000.0, &fleet);
    let status = h.engine.stand_by("standby".into());
    assert_eq!(status.phase, Phase::Standby("standby".into()));
    assert!(
        h.engine.hand_back().is_empty(),
        "the leader drives them now"
    );
    // Leading again, it starts afresh.
    assert_eq!(h.step(1000.0, &fleet).status.phase, Phase::Regulating);
}
