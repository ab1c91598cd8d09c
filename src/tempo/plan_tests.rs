//! The planner's decisions on named cases, each pinning the slots and the reason text.

use chrono::TimeZone;

use super::*;

/// The simulated house's profile (base 250 W, morning and evening peaks), W per Paris hour.
fn house() -> [f64; 24] {
    let mut w = [0.0; 24];
    for (h, slot) in w.iter_mut().enumerate() {
        let x = h as f64 + 0.5;
        let peak = |c: f64, width: f64, a: f64| a * (-((x - c).powi(2)) / width).exp();
        *slot = 250.0 + peak(7.5, 2.0, 200.0) + peak(19.0, 4.0, 450.0);
    }
    w
}

fn paris(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    TEMPO_TZ
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn known(c: TempoColour) -> ColourInfo {
    ColourInfo::Known {
        colour: c,
        source: "rte".into(),
    }
}

fn forecast(blue: f64, white: f64, red: f64) -> ColourInfo {
    ColourInfo::Forecast {
        odds: ColourOdds::new(blue, white, red).unwrap(),
        source: "open-dpe".into(),
    }
}

fn days(first: NaiveDate, colours: Vec<ColourInfo>) -> Vec<DayOutlook> {
    colours
        .into_iter()
        .enumerate()
        .map(|(i, colour)| DayOutlook {
            date: first + Duration::days(i as i64),
            colour,
            load: DayLoads::configured(house()),
        })
        .collect()
}

fn venus(soc: f64) -> PlanBattery {
    PlanBattery {
        device: "venus1".into(),
        soc,
        capacity_wh: 5120.0,
        min_soc: 12.0,
        max_soc: 100.0,
        max_charge_w: 2500.0,
        max_discharge_w: 2500.0,
        load_share: 1.0,
    }
}

fn params() -> PlannerParams {
    PlannerParams {
        tariff: Tariff::default(),
        efficiency: 0.9,
        margin: 0.1,
        fail_safe_red: false,
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// (period, action kind, soc_end) of every slot, for compact assertions.
fn shape(p: &BatteryPlan) -> Vec<(Period, &'static str, u8)> {
    p.slots
        .iter()
        .map(|s| {
            let a = match s.action {
                SlotAction::Charge { .. } => "charge",
                SlotAction::Discharge { .. } => "discharge",
                SlotAction::Hold => "hold",
            };
            (s.period, a, s.soc_end)
        })
        .collect()
}

#[test]
fn red_after_a_weekend_charges_sunday_night() {
    // Saturday noon: Saturday white (published), Sunday (nobody said: the calendar leaves only
    // blue), Monday forecast red 72 %. The battery is full from Friday night.
    let now = paris(2026, 12, 5, 12, 0);
    let d = days(
        date(2026, 12, 5),
        vec![
            known(TempoColour::White),
            ColourInfo::Unknown,
            forecast(0.18, 0.10, 0.72),
        ],
    );
    let p = plan(now, &d, None, &venus(100.0), &params()).unwrap();
    use Period::*;
    assert_eq!(
        shape(&p),
        [
            (Hp, "discharge", 21),
            (Hc, "hold", 21),
            (Hp, "hold", 21),
            (Hc, "charge", 100),
            (Hp, "discharge", 12),
            (Hc, "hold", 12),
        ]
    );
    assert_eq!(
        p.slots[0].reason,
        "discharge down to 21 % today: white (rte) HP at 0.1921 €/kWh, 4.0 of 4.1 kWh expected; configured load"
    );
    assert_eq!(
        p.slots[3].reason,
        "charge to 100 % Sunday night: Monday red 72 % (open-dpe), 6.0 kWh expected in red HP; configured load"
    );
    assert_eq!(
        p.slots[2].reason,
        "hold at 21 % tomorrow: blue (calendar) HP saves 0.1354 €/kWh after wear, keep it for \
         Monday red 72 % (open-dpe) HP at 0.5742 €/kWh; configured load"
    );
    // 79 % of 5120 Wh over 8 h, +10 %, rounded up to 50 W.
    assert!(matches!(
        p.slots[3].action,
        SlotAction::Charge {
            target_soc: 100,
            power_w: -600
        }
    ));
}

#[test]
fn red_after_a_weekend_with_a_slow_charger_keeps_a_reserve() {
    // 300 W of charge power refills only 2.4 kWh a night: Saturday's white HP must not use what
    // Monday's likely red HP needs.
    let now = paris(2026, 12, 5, 12, 0);
    let d = days(
        date(2026, 12, 5),
        vec![
            known(TempoColour::White),
            ColourInfo::Unknown,
            forecast(0.18, 0.10, 0.72),
        ],
    );
    let mut b = venus(100.0);
    b.max_charge_w = 300.0;
    let p = plan(now, &d, None, &b, &params()).unwrap();
    let SlotAction::Discharge { floor_soc } = p.slots[0].action else {
        panic!("{:?}", p.slots[0]);
    };
    assert_eq!(floor_soc, 54, "{:#?}", p.slots);
    assert!(
        p.slots[0]
            .reason
            .ends_with(", keeping 54 % for Monday red 72 % (open-dpe); configured load"),
        "{}",
        p.slots[0].reason
    );
    assert_eq!(p.slots[3].soc_end, 100);
}

#[test]
fn three_reds_in_a_row_recharge_every_red_night() {
    // Monday noon: Tuesday red (published), Wednesday and Thursday forecast red.
    let now = paris(2027, 1, 11, 12, 0);
    let d = days(
        date(2027, 1, 11),
        vec![
            known(TempoColour::Blue),
            known(TempoColour::Red),
            forecast(0.1, 0.1, 0.8),
            forecast(0.2, 0.1, 0.7),
        ],
    );
    let p = plan(now, &d, None, &venus(20.0), &params()).unwrap();
    use Period::*;
    assert_eq!(
        shape(&p),
        [
            (Hp, "hold", 20),
            (Hc, "charge", 100),
            (Hp, "discharge", 12),
            (Hc, "charge", 100),
            (Hp, "discharge", 12),
            (Hc, "charge", 100),
            (Hp, "discharge", 12),
            (Hc, "hold", 12),
        ]
    );
    assert_eq!(
        p.slots[1].reason,
        "charge to 100 % tonight: tomorrow red (rte), 6.0 kWh expected in red HP, \
         Wednesday red 80 % (open-dpe), Thursday red 70 % (open-dpe); configured load"
    );
    assert_eq!(
        p.slots[3].reason,
        "charge to 100 % Tuesday night: Wednesday red 80 % (open-dpe), 6.0 kWh expected in red \
         HP, Thursday red 70 % (open-dpe); configured load"
    );
    assert_eq!(
        p.slots[0].reason,
        "hold at 20 % today: blue (rte) HP saves 0.1354 €/kWh after wear, keep it for tomorrow \
         red (rte) HP at 0.7295 €/kWh; configured load"
    );
    // Red HC costs 0.1615 €/kWh: 4.5 kWh stored ⇒ 4.5 / 0.9 × 0.1615 ≈ 0.81 €.
    assert!((p.slots[3].eur + 0.8095).abs() < 0.01, "{}", p.slots[3].eur);
    // The red day saves 4.5 kWh × 0.7295 ≈ 3.29 €.
    assert!((p.slots[2].eur - 3.2869).abs() < 0.01, "{}", p.slots[2].eur);
}

#[test]
fn blue_day_with_wear_cost_does_not_cycle() {
    // June: full battery, blue today, nothing known about tomorrow (no red in summer).
    let now = paris(2026, 6, 16, 6, 0);
    let d = days(
        date(2026, 6, 16),
        vec![known(TempoColour::Blue), ColourInfo::Unknown],
    );
    let p = plan(now, &d, None, &venus(100.0), &params()).unwrap();
    use Period::*;
    assert_eq!(
        shape(&p),
        [
            (Hp, "hold", 100),
            (Hc, "hold", 100),
            (Hp, "hold", 100),
            (Hc, "hold", 100)
        ]
    );
    assert_eq!(
        p.slots[0].reason,
        "hold at 100 % today: blue (rte) HP saves 0.1354 €/kWh after wear, less than the \
         0.1507 €/kWh it costs to refill; configured load"
    );
    assert_eq!(p.expected_saving_eur, 0.0);
    // Without wear the same cent of arbitrage is taken: the wear cost is what declines it.
    let mut free = params();
    free.tariff.wear = 0.0;
    let p = plan(now, &d, None, &venus(100.0), &free).unwrap();
    assert_eq!(shape(&p)[0], (Hp, "discharge", 12));
}

#[test]
fn unknown_at_the_deadline_with_a_high_red_probability_precharges() {
    // Thursday 17:00 (the last retry): Friday still unpublished, open-dpe says red 85 %.
    let now = paris(2027, 1, 14, 17, 0);
    let d = days(
        date(2027, 1, 14),
        vec![known(TempoColour::Blue), forecast(0.05, 0.10, 0.85)],
    );
    let p = plan(now, &d, None, &venus(30.0), &params()).unwrap();
    assert_eq!(p.slots[1].period, Period::Hc);
    assert_eq!(p.slots[1].soc_end, 100);
    assert_eq!(
        p.slots[1].reason,
        "charge to 100 % tonight: tomorrow red 85 % (open-dpe), 6.0 kWh expected in red HP; configured load"
    );
    assert_eq!(p.slots[1].colour, TempoColour::Blue);
    assert_eq!(p.slots[2].colour, TempoColour::Red);
    assert!((p.slots[2].probability - 0.85).abs() < 1e-9);
    // No forecast at all: the fail-safe assumes red where the calendar allows it.
    let d = days(
        date(2027, 1, 14),
        vec![known(TempoColour::Blue), ColourInfo::Unknown],
    );
    let mut fs = params();
    fs.fail_safe_red = true;
    let p = plan(now, &d, None, &venus(30.0), &fs).unwrap();
    assert_eq!(
        p.slots[1].reason,
        "charge to 100 % tonight: tomorrow unknown, red assumed (fail-safe), 6.0 kWh expected in \
         red HP; configured load"
    );
    // A low probability does not pay for a precharge from blue HC: red 2 %, white 8 % make
    // 0.1789 €/kWh expected, 0.1489 after wear, under the 0.1507 €/kWh a kWh costs to store.
    let d = days(
        date(2027, 1, 14),
        vec![known(TempoColour::Blue), forecast(0.9, 0.08, 0.02)],
    );
    let p = plan(now, &d, None, &venus(30.0), &params()).unwrap();
    assert_eq!(p.slots[1].action, SlotAction::Hold, "{:?}", p.slots[1]);
}

#[test]
fn battery_already_full_holds_tonight() {
    let now = paris(2026, 12, 6, 22, 30);
    let d = days(
        date(2026, 12, 6),
        vec![known(TempoColour::Blue), known(TempoColour::Red)],
    );
    let p = plan(now, &d, None, &venus(100.0), &params()).unwrap();
    assert_eq!(p.slots[0].start, now, "the slot in progress starts now");
    assert_eq!(p.slots[0].action, SlotAction::Hold);
    assert_eq!(
        p.slots[0].reason,
        "hold tonight at 100 %: already full (max 100 %); configured load"
    );
    assert_eq!(
        p.slots[1].reason,
        "discharge down to 12 % tomorrow: red (rte) HP at 0.7295 €/kWh, 4.5 of 6.0 kWh expected; configured load"
    );
    // A lower max SOC is full earlier and caps the charge.
    let mut b = venus(90.0);
    b.max_soc = 90.0;
    let p = plan(now, &d, None, &b, &params()).unwrap();
    assert_eq!(
        p.slots[0].reason,
        "hold tonight at 90 %: already full (max 90 %); configured load"
    );
}

#[test]
fn battery_at_its_dod_holds_on_a_red_day_and_charges_for_the_next() {
    let now = paris(2027, 1, 12, 9, 0);
    let d = days(
        date(2027, 1, 12),
        vec![known(TempoColour::Red), known(TempoColour::Red)],
    );
    let p = plan(now, &d, None, &venus(12.0), &params()).unwrap();
    use Period::*;
    assert_eq!(
        shape(&p),
        [
            (Hp, "hold", 12),
            (Hc, "charge", 100),
            (Hp, "discharge", 12),
            (Hc, "hold", 12)
        ]
    );
    assert_eq!(
        p.slots[0].reason,
        "hold at 12 %: at the floor (12 %, DOD and envelope), nothing to discharge; configured load"
    );
    // A SOC reported below the floor is treated as the floor, never discharged further.
    let p = plan(now, &d, None, &venus(3.0), &params()).unwrap();
    assert_eq!(shape(&p)[0], (Hp, "hold", 12));
}

#[test]
fn calendar_and_stock_shape_the_prior() {
    // A Saturday can never be red; an exhausted red stock forbids red on a weekday too.
    let sat = prior_odds(date(2027, 1, 16), None);
    assert_eq!(sat.red, 0.0);
    let wed = prior_odds(date(2027, 1, 13), None);
    assert!(wed.red > 0.1);
    let none_left = SeasonStock {
        red_left: 0,
        white_left: 5,
    };
    assert_eq!(prior_odds(date(2027, 1, 13), Some(none_left)).red, 0.0);
    // A forecast of red on a Sunday is refused by the calendar, renormalised to the rest.
    let odds = ColourOdds::new(0.2, 0.0, 0.8)
        .unwrap()
        .constrained(date(2027, 1, 17), None);
    assert_eq!(odds, ColourOdds::certain(TempoColour::Blue));
    // Many reds left for few possible days: the prior rises.
    let many = SeasonStock {
        red_left: 10,
        white_left: 10,
    };
    assert!(prior_odds(date(2027, 3, 15), Some(many)).red > 0.4);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let now = paris(2027, 1, 12, 9, 0);
    let d = days(
        date(2027, 1, 12),
        vec![known(TempoColour::Red), known(TempoColour::Red)],
    );
    let mut neg = params();
    neg.tariff.red_hp = -0.5;
    let e = plan(now, &d, None, &venus(50.0), &neg).unwrap_err();
    assert!(e.to_string().contains("tariff.red_hp"), "{e}");
    assert!(ColourOdds::new(1.2, 0.0, -0.2).is_err());
    assert!(ColourOdds::new(0.5, 0.5, 0.5).is_err());
    let mut odd = d.clone();
    odd[1].colour = ColourInfo::Forecast {
        odds: ColourOdds {
            blue: 0.5,
            white: 0.0,
            red: 1.5,
        },
        source: "x".into(),
    };
    let e = plan(now, &odd, None, &venus(50.0), &params()).unwrap_err();
    assert!(e.to_string().contains("outside 0–1"), "{e}");
    let late = days(date(2027, 1, 13), vec![known(TempoColour::Red)]);
    assert!(plan(now, &late, None, &venus(50.0), &params()).is_err());
    let mut b = venus(50.0);
    b.capacity_wh = f64::NAN;
    assert!(plan(now, &d, None, &b, &params()).is_err());
    let mut eff = params();
    eff.efficiency = 1.5;
    assert!(plan(now, &d, None, &venus(50.0), &eff).is_err());
}

#[test]
fn same_input_same_plan() {
    let now = paris(2027, 1, 11, 12, 0);
    let d = days(
        date(2027, 1, 11),
        vec![known(TempoColour::Blue), known(TempoColour::White)],
    );
    let a = plan(now, &d, None, &venus(40.0), &params()).unwrap();
    let b = plan(now, &d, None, &venus(40.0), &params()).unwrap();
    assert_eq!(a, b);
    // Blue HC → white HP pays 0.1921 − 0.03 − 0.1356 / 0.9 ≈ 0.011 €/kWh: charged and used.
    assert_eq!(shape(&a)[1], (Period::Hc, "charge", 100));
    assert_eq!(shape(&a)[2], (Period::Hp, "discharge", 12));
}

#[test]
fn a_learned_red_day_load_charges_for_what_the_house_really_uses() {
    // Monday noon, tomorrow red: with the configured profile the plan fills the battery for
    // 6.0 kWh of red HP; a household that sheds load on red days (150 W learned over 5 red
    // weekdays) gets only what 2.4 kWh need, and the reason says where the load came from.
    let now = paris(2027, 1, 11, 12, 0);
    let colours = vec![known(TempoColour::Blue), known(TempoColour::Red)];
    let configured = plan(
        now,
        &days(date(2027, 1, 11), colours.clone()),
        None,
        &venus(20.0),
        &params(),
    )
    .unwrap();
    let mut d = days(date(2027, 1, 11), colours);
    d[1].load.red = DayLoad {
        load_w: [150.0; 24],
        pv_w: [0.0; 24],
        source: LoadSource::Learned { days: 5 },
    };
    let learned = plan(now, &d, None, &venus(20.0), &params()).unwrap();
    let target = |p: &BatteryPlan| match p.slots[1].action {
        SlotAction::Charge { target_soc, .. } => target_soc,
        other => panic!("tonight should charge: {other:?}"),
    };
    assert_eq!(target(&configured), 100);
    // 2.4 kWh of 5.12 kWh is 47 points above the 12 % floor: charged to 59 %.
    assert_eq!(target(&learned), 59, "{:#?}", learned.slots[1]);
    assert_eq!(
        learned.slots[1].reason,
        "charge to 59 % tonight: tomorrow red (rte), 2.4 kWh expected in red HP; learned load \
         (5 days)"
    );
    assert!(configured.slots[1].reason.ends_with("; configured load"));
    // Today's own (blue) slot keeps the configured profile.
    assert!(learned.slots[0].reason.ends_with("; configured load"));
}

#[test]
fn two_batteries_share_the_red_day_by_capacity() {
    // Tuesday 22:00, both batteries at the floor, Wednesday red (published): 6.0 kWh of red HP
    // load, two thirds for the 5.12 kWh battery, one third for the 2.56 kWh one; neither plans
    // to cover the whole house.
    let now = paris(2026, 12, 1, 22, 0);
    let d = days(
        date(2026, 12, 1),
        vec![
            known(TempoColour::White),
            known(TempoColour::Red),
            ColourInfo::Unknown,
        ],
    );
    let mut small = venus(12.0);
    small.device = "venus2".into();
    small.capacity_wh = 2560.0;
    let mut fleet = [venus(12.0), small];
    share_by_capacity(&mut fleet);
    let big = plan(now, &d, None, &fleet[0], &params()).unwrap();
    let small = plan(now, &d, None, &fleet[1], &params()).unwrap();
    use Period::*;
    // Each covers its share of the red HP (two thirds of 6.0 kWh is 4.0 kWh = 79 % of 5.12 kWh,
    // a third is 79 % of 2.56 kWh): both stop at 21 % instead of the floor.
    let expected = [
        (Hc, "charge", 100),
        (Hp, "discharge", 21),
        (Hc, "charge", 90),
        (Hp, "discharge", 12),
        (Hc, "hold", 12),
    ];
    assert_eq!(shape(&big), expected);
    assert_eq!(shape(&small), expected);
    assert_eq!(
        big.slots[0].reason,
        "charge to 100 % tonight: tomorrow red (rte), 4.0 kWh expected in red HP; configured load, \
         67 % of it for this battery (by capacity)"
    );
    assert_eq!(
        small.slots[0].reason,
        "charge to 100 % tonight: tomorrow red (rte), 2.0 kWh expected in red HP; configured load, \
         33 % of it for this battery (by capacity)"
    );
    assert_eq!(
        small.slots[1].reason,
        "discharge down to 21 % tomorrow: red (rte) HP at 0.7295 €/kWh, 2.0 of 2.0 kWh expected; \
         configured load, 33 % of it for this battery (by capacity)"
    );
    // Together they discharge what the house needs, not twice it.
    let out = |p: &BatteryPlan, wh: f64| f64::from(100 - p.slots[1].soc_end) * wh / 100_000.0;
    assert!((out(&big, 5120.0) + out(&small, 2560.0) - 6.0).abs() < 0.1);
    // Alone, the same battery plans to cover the whole house, and the reason names no share.
    let alone = plan(now, &d, None, &venus(12.0), &params()).unwrap();
    assert_eq!(shape(&alone)[1], (Hp, "discharge", 12));
    assert_eq!(
        alone.slots[0].reason,
        "charge to 100 % tonight: tomorrow red (rte), 6.0 kWh expected in red HP; configured load"
    );
}

#[test]
fn a_load_share_outside_zero_to_one_is_refused() {
    let now = paris(2026, 12, 1, 22, 0);
    let d = days(date(2026, 12, 1), vec![known(TempoColour::White)]);
    for share in [0.0, -0.5, 1.5, f64::NAN] {
        let mut b = venus(50.0);
        b.load_share = share;
        let e = plan(now, &d, None, &b, &params()).unwrap_err();
        assert!(e.to_string().contains("load share"), "{share}: {e}");
    }
}
