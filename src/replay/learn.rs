//! The replay's house learning, as the bridge does it: the simulated battery's telemetry (CT
//! power, AC port power, PV) is kept per UTC hour like the store's `house_history` rows, and at
//! each 06:00 the consumption model is recomputed with the bridge's own `learn` over the last
//! complete Tempo days and their colours from the history file. The planner's house load is the
//! learned profile once a kind and colour has enough days, the configured one before. Pure (no
//! store, no network, no battery).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};

use super::ColourHistory;
use crate::domain::DeviceId;
use crate::simulator::model::ModelState;
use crate::tempo::{
    ConsumptionModel, DayLoads, LoadSource, TempoColour, learn_consumption, learn_window,
};

/// Sums of one UTC hour's one-minute samples.
#[derive(Debug, Clone, Copy, Default)]
struct HourSums {
    samples: u64,
    ct_w: f64,
    port_w: f64,
    pv_w: f64,
}

/// The telemetry kept so far and the model learned from it.
#[derive(Debug)]
pub(super) struct Learner {
    /// Whether the battery reports a PV power (the model has PV inputs).
    pv: bool,
    hours: BTreeMap<DateTime<Utc>, HourSums>,
    model: Option<ConsumptionModel>,
    /// Tempo days whose own load (its kind and colour) was learned when planned at 06:00.
    pub(super) learned_days: u32,
}

impl Learner {
    /// Nothing seen yet; `pv`: the battery has solar inputs.
    pub(super) fn new(pv: bool) -> Self {
        Self {
            pv,
            hours: BTreeMap::new(),
            model: None,
            learned_days: 0,
        }
    }

    /// Records the state of the minute starting at `t` (after the model stepped through it).
    pub(super) fn record(&mut self, t: DateTime<Utc>, s: &ModelState) {
        let Ok(hour) = t.duration_trunc(Duration::hours(1)) else {
            return;
        };
        let h = self.hours.entry(hour).or_default();
        h.samples += 1;
        h.ct_w += s.ct_net();
        h.port_w += s.ongrid();
        h.pv_w += s.pv_power;
    }

    /// Recomputes the model at `now` from the last complete Tempo days, as the bridge does
    /// once a day; drops the hours the window no longer needs.
    pub(super) fn relearn(&mut self, now: DateTime<Utc>, history: &ColourHistory) {
        let (from, to) = learn_window(now);
        let keep_from = now - Duration::days(crate::tempo::LEARN_DAYS + 2);
        self.hours = self.hours.split_off(&keep_from);
        let device = DeviceId("replay".into());
        let rows: Vec<crate::store::HouseHour> = self
            .hours
            .iter()
            .map(|(start, h)| {
                let n = h.samples as f64;
                crate::store::HouseHour {
                    device: device.clone(),
                    start: *start,
                    samples: h.samples,
                    ct_w: h.ct_w / n,
                    port_w: h.port_w / n,
                    pv_w: self.pv.then_some(h.pv_w / n),
                }
            })
            .collect();
        let colours: BTreeMap<NaiveDate, TempoColour> = from
            .iter_days()
            .take_while(|d| *d <= to)
            .filter_map(|d| history.colour(d).map(|c| (d, c)))
            .collect();
        self.model = Some(learn_consumption(&rows, &colours, from, to, now));
    }

    /// The profiles of `date` for each colour: learned where the model has enough days, else
    /// `configured`.
    pub(super) fn day_loads(&self, date: NaiveDate, configured: &[f64; 24]) -> DayLoads {
        match &self.model {
            Some(m) => m.day_loads(date, configured),
            None => DayLoads::configured(*configured),
        }
    }

    /// Counts a day as learned when its own colour's profile is learned.
    pub(super) fn count_day(&mut self, colour: TempoColour, loads: &DayLoads) {
        if matches!(loads.get(colour).source, LoadSource::Learned { .. }) {
            self.learned_days += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, Timelike};

    use super::*;
    use crate::simulator::model::{SimProfile, house_load};
    use crate::tempo::{TEMPO_TZ, paris_instant};

    /// Steps an idle battery's house minute by minute from `from` 06:00 for `days` days,
    /// recording and relearning at each 06:00 like the replay loop.
    fn replay_house(history: &ColourHistory, from: NaiveDate, days: i64) -> Learner {
        let spec = SimProfile::VenusE3.spec();
        let six = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
        let mut t = paris_instant(from, six);
        let end = paris_instant(from + Duration::days(days), six);
        let mut s = ModelState::new(&spec, 50.0, t);
        s.mode = crate::domain::Mode::Manual;
        let mut learner = Learner::new(spec.pv);
        while t < end {
            let local = t.with_timezone(&TEMPO_TZ);
            if local.hour() == 6 && local.minute() == 0 {
                learner.relearn(t, history);
            }
            let next = t + Duration::minutes(1);
            s.advance(&spec, next, TEMPO_TZ);
            learner.record(t, &s);
            t = next;
        }
        learner.relearn(end, history);
        learner
    }

    #[test]
    fn the_simulated_house_is_learned_after_three_days_of_a_kind_and_colour() {
        // Mon 2 Jan 2017 … Fri 13 Jan: weekdays blue, the weekend white.
        let mut text = String::new();
        for d in 2..=13 {
            let colour = if d == 7 || d == 8 { "white" } else { "blue" };
            text.push_str(&format!("2017-01-{d:02},{colour}\n"));
        }
        let history = ColourHistory::parse(&text).unwrap();
        let first = NaiveDate::from_ymd_opt(2017, 1, 2).unwrap();
        let configured = [1000.0; 24];
        // After two weekdays the weekday profile is still the configured one.
        let two = replay_house(&history, first, 2);
        let loads = two.day_loads(first + Duration::days(2), &configured);
        assert_eq!(loads.blue.source, LoadSource::Configured);
        assert_eq!(loads.blue.load_w, configured);
        // After ten days (eight weekdays, two weekend days): weekday blue learned, weekend
        // white not (two days only).
        let ten = replay_house(&history, first, 10);
        let monday = NaiveDate::from_ymd_opt(2017, 1, 16).unwrap();
        let loads = ten.day_loads(monday, &configured);
        assert_eq!(loads.blue.source, LoadSource::Learned { days: 8 });
        assert_eq!(loads.red.source, LoadSource::Configured);
        for h in [3usize, 7, 12, 19] {
            let truth: f64 = (0..60)
                .map(|m| house_load(h as f64 + f64::from(m) / 60.0))
                .sum::<f64>()
                / 60.0;
            let learned = loads.blue.load_w[h];
            assert!(
                (learned - truth).abs() < 15.0,
                "hour {h}: learned {learned} W, house {truth} W"
            );
        }
        let saturday = NaiveDate::from_ymd_opt(2017, 1, 14).unwrap();
        let loads = ten.day_loads(saturday, &configured);
        assert_eq!(loads.white.source, LoadSource::Configured);
        // The window keeps only the hours it needs.
        assert!(ten.hours.len() <= 24 * 11, "{}", ten.hours.len());
    }
}
