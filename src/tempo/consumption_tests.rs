//! The consumption model's maths: the load derivation, the weekday/weekend and colour split,
//! the fallback below three days, outliers, gaps and bad readings.

use chrono::TimeZone;

use super::*;
use crate::domain::DeviceId;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 20, 10, 0, 0).unwrap()
}

/// The 24 hours of Tempo day `d` (06:00 → 06:00) for `dev`: `f(paris hour)` = (ct, port, pv).
fn day_rows(
    dev: &str,
    d: NaiveDate,
    f: impl Fn(usize) -> (f64, f64, Option<f64>),
) -> Vec<HouseHour> {
    let start = paris_instant(d, NaiveTime::from_hms_opt(6, 0, 0).unwrap());
    (0..24)
        .map(|k| {
            let t = start + Duration::hours(k);
            let h = t.with_timezone(&TEMPO_TZ).hour() as usize;
            let (ct_w, port_w, pv_w) = f(h);
            HouseHour {
                device: DeviceId(dev.into()),
                start: t,
                samples: 12,
                ct_w,
                port_w,
                pv_w,
            }
        })
        .collect()
}

/// Flat load `w` (half through the meter, half from the battery), no PV.
fn flat(dev: &str, d: NaiveDate, w: f64) -> Vec<HouseHour> {
    day_rows(dev, d, |_| (w / 2.0, w / 2.0, None))
}

fn colours(days: &[(NaiveDate, TempoColour)]) -> BTreeMap<NaiveDate, TempoColour> {
    days.iter().copied().collect()
}

const CONFIGURED: [f64; 24] = [250.0; 24];

#[test]
fn house_load_is_ct_plus_port_with_the_meter_shared_by_batteries() {
    let d = date(2026, 12, 14); // Monday
    // Battery a charges 500 W from the grid while the meter reads 900 W: the house uses 400 W.
    let mut rows = day_rows("a", d, |_| (900.0, -500.0, None));
    // Battery b on the same meter delivers 300 W: the meter (900 W, seen by both) is counted
    // once and the ports add up: 900 − 500 + 300 = 700 W.
    let d2 = date(2026, 12, 15);
    rows.extend(day_rows("a", d2, |_| (900.0, -500.0, None)));
    rows.extend(day_rows("b", d2, |_| (900.0, 300.0, None)));
    let hours = house_hours(&rows);
    let at = |d: NaiveDate| paris_instant(d, NaiveTime::from_hms_opt(12, 0, 0).unwrap());
    assert_eq!(hours[&at(d)].load, 400.0);
    assert_eq!(hours[&at(d2)].load, 700.0);
}

#[test]
fn weekdays_and_weekends_are_learned_apart() {
    // Mon 7 – Sun 13 Dec 2026, all blue: weekdays 400 W, the weekend 800 W.
    let mut rows = Vec::new();
    let mut cs = Vec::new();
    for i in 0..7 {
        let d = date(2026, 12, 7) + Duration::days(i);
        let w = if i < 5 { 400.0 } else { 800.0 };
        rows.extend(flat("a", d, w));
        cs.push((d, TempoColour::Blue));
    }
    // A third weekend day (Sat 19) so the weekend has MIN_DAYS.
    rows.extend(flat("a", date(2026, 12, 19), 800.0));
    cs.push((date(2026, 12, 19), TempoColour::Blue));
    let m = learn(
        &rows,
        &colours(&cs),
        date(2026, 11, 22),
        date(2026, 12, 19),
        now(),
    );
    assert_eq!(m.days_used, 8);
    let wd = m.learned(DayKind::Weekday, TempoColour::Blue).unwrap();
    assert_eq!((wd.days, wd.load_w[19]), (5, Some(400.0)));
    let we = m.learned(DayKind::Weekend, TempoColour::Blue).unwrap();
    assert_eq!((we.days, we.load_w[3]), (3, Some(800.0)));
    let monday = m.day_load(date(2026, 12, 21), TempoColour::Blue, &CONFIGURED);
    assert_eq!(monday.load_w[10], 400.0);
    assert_eq!(monday.source, LoadSource::Learned { days: 5 });
    assert_eq!(monday.source.phrase(), "learned load (5 days)");
    let sunday = m.day_load(date(2026, 12, 20), TempoColour::Blue, &CONFIGURED);
    assert_eq!(sunday.load_w[10], 800.0);
}

#[test]
fn colours_are_learned_apart_and_below_three_days_the_configured_profile_stands() {
    // Weekdays: three red days at 300 W (load shed), three blue at 600 W, two white at 900 W.
    let plan = [
        (date(2026, 12, 7), TempoColour::Red, 300.0),
        (date(2026, 12, 8), TempoColour::Red, 300.0),
        (date(2026, 12, 9), TempoColour::Red, 300.0),
        (date(2026, 12, 10), TempoColour::Blue, 600.0),
        (date(2026, 12, 11), TempoColour::Blue, 600.0),
        (date(2026, 12, 14), TempoColour::Blue, 600.0),
        (date(2026, 12, 15), TempoColour::White, 900.0),
        (date(2026, 12, 16), TempoColour::White, 900.0),
    ];
    let rows: Vec<HouseHour> = plan
        .iter()
        .flat_map(|(d, _, w)| flat("a", *d, *w))
        .collect();
    let cs: Vec<_> = plan.iter().map(|(d, c, _)| (*d, *c)).collect();
    let m = learn(
        &rows,
        &colours(&cs),
        date(2026, 11, 22),
        date(2026, 12, 19),
        now(),
    );
    let thu = date(2026, 12, 17);
    let red = m.day_load(thu, TempoColour::Red, &CONFIGURED);
    assert_eq!(
        (red.load_w[18], red.source),
        (300.0, LoadSource::Learned { days: 3 })
    );
    let blue = m.day_load(thu, TempoColour::Blue, &CONFIGURED);
    assert_eq!(blue.load_w[18], 600.0);
    // Two white days only: configured, and the summary says so.
    let white = m.day_load(thu, TempoColour::White, &CONFIGURED);
    assert_eq!(
        (white.load_w, white.source),
        (CONFIGURED, LoadSource::Configured)
    );
    assert_eq!(white.source.phrase(), "configured load");
    let s = m.summary();
    assert_eq!(s["kinds"]["weekday_white"]["days"], 2, "{s}");
    assert_eq!(s["kinds"]["weekday_white"]["source"], "configured", "{s}");
    assert_eq!(s["kinds"]["weekday_red"]["source"], "learned", "{s}");
    // Nothing ever seen on weekends: configured.
    let sat = m.day_load(date(2026, 12, 19), TempoColour::Blue, &CONFIGURED);
    assert_eq!(sat.source, LoadSource::Configured);
}

#[test]
fn outliers_gaps_and_bad_readings_are_left_out() {
    let mut rows = Vec::new();
    let mut cs = Vec::new();
    for i in 0..5 {
        let d = date(2026, 12, 7) + Duration::days(i);
        cs.push((d, TempoColour::Blue));
        rows.extend(day_rows("a", d, |h| match (i, h) {
            // One evening with guests: 5 kW at 19:00 is an outlier.
            (2, 19) => (4_800.0, 200.0, None),
            // A meter glitch: 90 kW in the house is not a reading.
            (3, 8) => (90_000.0, 0.0, None),
            _ => (200.0, 200.0, None),
        }));
    }
    // Hours with a single sample do not count.
    for r in rows
        .iter_mut()
        .filter(|r| r.start.with_timezone(&TEMPO_TZ).hour() == 12)
    {
        r.samples = 1;
    }
    // A day with only ten hours (the bridge was down) is skipped, and so is a day whose
    // colour is unknown.
    let gap = date(2026, 12, 14);
    cs.push((gap, TempoColour::Blue));
    rows.extend(flat("a", gap, 5_000.0).into_iter().take(10));
    rows.extend(flat("a", date(2026, 12, 15), 5_000.0));
    let m = learn(
        &rows,
        &colours(&cs),
        date(2026, 11, 22),
        date(2026, 12, 19),
        now(),
    );
    assert_eq!((m.days_used, m.days_skipped), (5, 2));
    let p = m.learned(DayKind::Weekday, TempoColour::Blue).unwrap();
    assert_eq!(p.load_w[19], Some(400.0), "the 5 kW evening is an outlier");
    assert_eq!(p.load_w[8], Some(400.0), "the 90 kW reading is dropped");
    assert_eq!(p.load_w[12], None, "no hour with enough samples");
    assert_eq!(p.pv_w, None);
    // The hour never seen comes from the configured profile.
    let d = m.day_load(date(2026, 12, 17), TempoColour::Blue, &CONFIGURED);
    assert_eq!((d.load_w[12], d.load_w[13]), (250.0, 400.0));
}

#[test]
fn solar_is_learned_and_the_battery_covers_only_load_less_solar() {
    let mut rows = Vec::new();
    let mut cs = Vec::new();
    for i in 0..3 {
        let d = date(2026, 12, 7) + Duration::days(i);
        cs.push((d, TempoColour::White));
        // 600 W house; at noon 500 W of solar leave through the battery's port.
        rows.extend(day_rows("a", d, |h| {
            if h == 12 {
                (100.0, 500.0, Some(500.0))
            } else {
                (300.0, 300.0, Some(0.0))
            }
        }));
    }
    let m = learn(
        &rows,
        &colours(&cs),
        date(2026, 11, 22),
        date(2026, 12, 19),
        now(),
    );
    let d = m.day_load(date(2026, 12, 17), TempoColour::White, &CONFIGURED);
    assert_eq!((d.load_w[12], d.pv_w[12]), (600.0, 500.0));
    assert_eq!(d.net_w(12), 100.0);
    assert_eq!(d.net_w(19), 600.0);
    // Solar the bridge does not see makes the load negative: nothing to cover.
    let neg = house_hours(&day_rows("a", date(2026, 12, 7), |_| (-900.0, 100.0, None)));
    assert!(neg.values().all(|h| h.load == 0.0));
}

#[test]
fn robust_mean_drops_far_values_only() {
    assert_eq!(robust_mean(&[]), None);
    assert_eq!(robust_mean(&[400.0, 410.0, 390.0, 4000.0]), Some(400.0));
    // Ordinary spread is kept.
    assert_eq!(robust_mean(&[300.0, 500.0]), Some(400.0));
    assert_eq!(robust_mean(&[f64::NAN, 100.0]), Some(100.0));
}

#[test]
fn the_stored_form_round_trips() {
    let rows: Vec<HouseHour> = (0..3)
        .flat_map(|i| flat("a", date(2026, 12, 7) + Duration::days(i), 500.0))
        .collect();
    let cs: Vec<_> = (0..3)
        .map(|i| (date(2026, 12, 7) + Duration::days(i), TempoColour::Red))
        .collect();
    let m = learn(
        &rows,
        &colours(&cs),
        date(2026, 11, 22),
        date(2026, 12, 19),
        now(),
    );
    let back: ConsumptionModel = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    assert_eq!(check(&m), None);
    // A tampered document with a negative hour is not used.
    let mut bad = m.clone();
    bad.profiles.get_mut("weekday_red").unwrap().load_w[3] = Some(-5.0);
    assert_eq!(
        check(&bad).as_deref(),
        Some("weekday_red: an hour is out of range")
    );
    assert_eq!(
        learn_window(now()),
        (date(2026, 11, 22), date(2026, 12, 19))
    );
}
