//! Unit tests of the allocation (pure).

use super::*;

fn bat(id: &str, soc: u8) -> Candidate {
    Candidate {
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
    }
}

fn id(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn w(a: &Allocation, s: &str) -> Option<i32> {
    a.setpoints.get(&id(s)).map(|w| w.0)
}

/// Every set-point has the sign of the total (or is 0), and none exceeds its battery's limits.
fn assert_sane(a: &Allocation, total: i32, fleet: &[Candidate]) {
    for (dev, p) in &a.setpoints {
        assert!(
            p.0 == 0 || p.0.signum() == total.signum(),
            "{dev} at {} W against a total of {total} W",
            p.0
        );
        let c = fleet.iter().find(|c| &c.id == dev).unwrap();
        assert!(p.0 <= c.limits.max_discharge_w as i32);
        assert!(p.0 >= -(c.limits.max_charge_w as i32));
    }
    assert_eq!(a.total_w, a.setpoints.values().map(|w| w.0).sum::<i32>());
}

#[test]
fn below_the_join_power_one_battery_carries_the_load_and_the_other_stands_by() {
    let fleet = [bat("a", 60), bat("b", 80)];
    let mut al = Allocator::new(800, 5);
    let a = al.allocate(600, &fleet);
    assert_sane(&a, 600, &fleet);
    assert_eq!(w(&a, "b"), Some(600), "the one with more headroom leads");
    assert_eq!(w(&a, "a"), Some(0));
    assert!(
        a.reasons[&id("a")].starts_with("standby"),
        "{:?}",
        a.reasons
    );
}

#[test]
fn above_the_join_power_both_share_by_headroom() {
    let fleet = [bat("a", 30), bat("b", 70)];
    let mut al = Allocator::new(800, 5);
    let a = al.allocate(1200, &fleet);
    assert_sane(&a, 1200, &fleet);
    // Headroom 20 and 60 points: a quarter and three quarters.
    assert_eq!(w(&a, "a"), Some(300));
    assert_eq!(w(&a, "b"), Some(900));
    assert_eq!(a.total_w, 1200);
    assert!(a.reasons.is_empty());
}

#[test]
fn charging_shares_by_room_to_max_soc_and_never_mixes_signs() {
    let fleet = [bat("a", 40), bat("b", 90)];
    let mut al = Allocator::new(0, 5);
    let a = al.allocate(-1300, &fleet);
    assert_sane(&a, -1300, &fleet);
    // Room 60 and 10 points.
    assert_eq!(w(&a, "a"), Some(-1115));
    assert_eq!(w(&a, "b"), Some(-185));
    assert_eq!(a.total_w, -1300);
}

#[test]
fn with_every_capacity_known_the_share_follows_energy_headroom() {
    let mut small = bat("a", 60);
    small.capacity_wh = Some(2560.0);
    let mut big = bat("b", 60);
    big.capacity_wh = Some(5120.0);
    let fleet = [small, big];
    let a = Allocator::new(0, 5).allocate(900, &fleet);
    assert_eq!(w(&a, "a"), Some(300));
    assert_eq!(w(&a, "b"), Some(600));
}

#[test]
fn a_battery_at_its_limit_passes_the_rest_to_the_others() {
    let mut small = bat("a", 90);
    small.limits.max_discharge_w = 800;
    let fleet = [small, bat("b", 40)];
    let a = Allocator::new(0, 5).allocate(2000, &fleet);
    assert_sane(&a, 2000, &fleet);
    assert_eq!(w(&a, "a"), Some(800));
    assert_eq!(w(&a, "b"), Some(1200));
}

#[test]
fn more_than_the_fleet_can_do_saturates_every_battery_and_no_more() {
    let fleet = [bat("a", 50), bat("b", 50)];
    assert_eq!(fleet_range(&fleet), (-5000.0, 5000.0));
    let a = Allocator::new(800, 5).allocate(9000, &fleet);
    assert_sane(&a, 9000, &fleet);
    assert_eq!(a.total_w, 5000);
}

#[test]
fn a_third_battery_joins_above_twice_the_join_power_and_leaves_with_hysteresis() {
    let fleet = [bat("a", 50), bat("b", 50), bat("c", 50)];
    let mut al = Allocator::new(800, 5);
    let running = |a: &Allocation| a.setpoints.values().filter(|w| w.0 != 0).count();
    assert_eq!(running(&al.allocate(700, &fleet)), 1);
    assert_eq!(running(&al.allocate(1500, &fleet)), 2);
    assert_eq!(running(&al.allocate(1700, &fleet)), 3);
    // 1500 W is below 2 × 800 but above 80 % of it: the third stays.
    assert_eq!(running(&al.allocate(1500, &fleet)), 3);
    assert_eq!(running(&al.allocate(1200, &fleet)), 2);
    assert_eq!(running(&al.allocate(300, &fleet)), 1);
}

#[test]
fn the_lead_rotates_only_when_another_battery_leads_by_the_margin() {
    let mut al = Allocator::new(800, 5);
    let a = al.allocate(500, &[bat("a", 70), bat("b", 68)]);
    assert_eq!(w(&a, "a"), Some(500));
    // a drains below b, but by less than the margin: a keeps the lead.
    let a = al.allocate(500, &[bat("a", 66), bat("b", 68)]);
    assert_eq!(w(&a, "a"), Some(500));
    // b now leads by 6 points: it takes over.
    let a = al.allocate(500, &[bat("a", 62), bat("b", 68)]);
    assert_eq!(w(&a, "b"), Some(500));
    assert_eq!(w(&a, "a"), Some(0));
    assert_eq!(al.order()[0], id("b"));
}

#[test]
fn unavailable_and_drifting_batteries_are_left_out_and_the_reason_is_given() {
    let mut gone = bat("a", 80);
    gone.standing = Standing::Unavailable;
    let mut drift = bat("b", 80);
    drift.standing = Standing::NotHolding("reports Auto, not Passive".into());
    let fleet = [gone, drift, bat("c", 50)];
    assert_eq!(fleet_range(&fleet), (-2500.0, 2500.0));
    let a = Allocator::new(800, 5).allocate(1500, &fleet);
    assert_eq!(w(&a, "a"), None, "no command to an unavailable battery");
    assert_eq!(w(&a, "b"), None);
    assert_eq!(w(&a, "c"), Some(1500));
    assert!(a.reasons[&id("a")].contains("unavailable"));
    assert!(a.reasons[&id("b")].contains("reports Auto"));
}

#[test]
fn an_empty_battery_idles_at_0_w_while_discharging_and_charges_again_on_surplus() {
    let mut low = bat("a", 10);
    low.limits.min_soc = 10;
    let fleet = [low, bat("b", 60)];
    let mut al = Allocator::new(0, 5);
    let a = al.allocate(1000, &fleet);
    assert_eq!(w(&a, "a"), Some(0));
    assert_eq!(w(&a, "b"), Some(1000));
    assert!(a.reasons[&id("a")].contains("min_soc"), "{:?}", a.reasons);
    assert_eq!(fleet_range(&fleet), (-5000.0, 2500.0));
    let a = al.allocate(-1000, &fleet);
    assert!(w(&a, "a").unwrap() < 0);
}

#[test]
fn bms_flags_and_unknown_soc_keep_a_battery_from_running() {
    let mut no_dis = bat("a", 80);
    no_dis.discharge_allowed = Some(false);
    let mut unknown = bat("b", 80);
    unknown.soc = None;
    let fleet = [no_dis, unknown, bat("c", 50)];
    let a = Allocator::new(0, 5).allocate(900, &fleet);
    assert_eq!(w(&a, "a"), Some(0));
    assert!(a.reasons[&id("a")].contains("BMS"));
    assert_eq!(w(&a, "b"), None);
    assert!(a.reasons[&id("b")].contains("SOC not read"));
    assert_eq!(w(&a, "c"), Some(900));
}

#[test]
fn nothing_to_do_holds_every_ready_battery_at_0_w() {
    let fleet = [bat("a", 50), bat("b", 50)];
    let a = Allocator::new(800, 5).allocate(0, &fleet);
    assert_eq!(w(&a, "a"), Some(0));
    assert_eq!(w(&a, "b"), Some(0));
    assert_eq!(a.total_w, 0);
}

#[test]
fn any_total_over_any_fleet_keeps_signs_limits_and_the_sum() {
    // A deterministic sweep instead of a random one: totals, SOCs and limits in a grid.
    let mut al = Allocator::new(700, 5);
    for total in (-6000..=6000).step_by(137) {
        for soc_a in [5u8, 10, 11, 50, 99, 100] {
            let mut a = bat("a", soc_a);
            a.limits.max_discharge_w = 800;
            let mut b = bat("b", 55);
            b.limits.max_charge_w = 1200;
            let fleet = [a, b, bat("c", 100 - soc_a / 2)];
            let (lo, hi) = fleet_range(&fleet);
            let clamped = (total as f64).clamp(lo, hi) as i32;
            let out = al.allocate(clamped, &fleet);
            assert_sane(&out, clamped, &fleet);
            assert_eq!(out.total_w, clamped, "total {clamped} soc {soc_a}");
        }
    }
}
