//! The learned consumption model of the Tempo planner: house load and solar power per Paris
//! hour of day, split by kind of day (weekday, weekend) and Tempo colour, learned from the
//! bridge's own telemetry, with the configured `load_profile_w` for every kind that has fewer
//! than [`MIN_DAYS`] days of history. `learn` is pure; `relearn`/`current` read the store's
//! hourly house telemetry (`Store::house_history`) and Tempo colour cache and keep the model as
//! the `tempo_load_profile` document, so it survives restarts. Never commands a battery.
//!
//! Derivation. The CT (grid meter) reads the house's exchange with the grid, + import; a
//! battery's `grid_power` is the AC power at its grid port, + delivering. Whatever the battery
//! delivers is consumed in the house, and what it draws comes through the meter, so
//! `house load = CT power + Σ battery port power` (the simulator's model: `ct = load − ongrid`).
//! A battery's own solar input is DC and leaves through the same port, so it is inside the port
//! power; `pv_power` says how much of the load the sun covers, and the planner plans the battery
//! for `load − PV` only. A house with solar the bridge does not see (another inverter) shows a
//! lower, even negative load at noon: negative hours count as 0 W (nothing to cover).
//!
//! Each hour is the mean over the samples of that hour (per battery; the CT, shared by the
//! batteries of one house, is averaged over them, the ports are added). Readings out of range
//! are dropped by the store query; an hour with fewer than [`MIN_SAMPLES_PER_HOUR`] samples or
//! an implausible load is a gap; a Tempo day (06:00→06:00, hours 00–05 are the night after it,
//! as the planner reads profiles) counts only with at least [`MIN_HOURS_PER_DAY`] hours and a
//! known colour. Per hour of day, a kind's value is the mean of its days after dropping the
//! outliers (further than max(3 × 1.4826 × MAD, 25 % of the median, 50 W) from the median).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Timelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

use super::{DAY_START_HOUR, TEMPO_TZ, TempoColour, paris_instant, tempo_date_at};
use crate::store::{HouseHour, Store, StoreError};

/// Store document key of the model.
pub const LOAD_PROFILE_DOC: &str = "tempo_load_profile";
/// Tempo days of history the model learns from (the last complete ones).
pub const LEARN_DAYS: i64 = 28;
/// Fewer days than this of a kind: the configured profile is used for it.
pub const MIN_DAYS: u32 = 3;
/// Samples an hour needs (per battery) to count.
pub const MIN_SAMPLES_PER_HOUR: u64 = 2;
/// Hours (of 24) a Tempo day needs to count.
pub const MIN_HOURS_PER_DAY: usize = 20;
/// Largest hourly house load taken as real, W.
const MAX_HOUSE_W: f64 = 36_000.0;
/// Most negative hourly house load taken as real (unseen solar), W.
const MIN_HOUSE_W: f64 = -20_000.0;

/// Weekday or weekend, of a Tempo day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DayKind {
    /// Monday to Friday.
    Weekday,
    /// Saturday and Sunday.
    Weekend,
}

impl DayKind {
    /// The kind of Tempo day `date`.
    pub fn of(date: NaiveDate) -> Self {
        match date.weekday() {
            Weekday::Sat | Weekday::Sun => DayKind::Weekend,
            _ => DayKind::Weekday,
        }
    }

    /// `weekday` or `weekend`.
    pub fn as_str(self) -> &'static str {
        match self {
            DayKind::Weekday => "weekday",
            DayKind::Weekend => "weekend",
        }
    }
}

/// Document key of a kind and colour, e.g. `weekday_red`.
pub fn profile_key(kind: DayKind, colour: TempoColour) -> String {
    format!("{}_{}", kind.as_str(), colour.as_str())
}

/// What was learned for one kind and colour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedProfile {
    /// Tempo days it was learned from.
    pub days: u32,
    /// House load per Paris hour (index 0 = 00:00–01:00), W; None: no day had that hour.
    pub load_w: [Option<f64>; 24],
    /// Solar power per Paris hour, W; None when the samples carried no PV power.
    pub pv_w: Option<[Option<f64>; 24]>,
}

/// The learned model, as stored in the `tempo_load_profile` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumptionModel {
    /// When it was computed.
    pub computed_at: DateTime<Utc>,
    /// First Tempo day looked at.
    pub from: NaiveDate,
    /// Last Tempo day looked at.
    pub to: NaiveDate,
    /// Tempo days that counted.
    pub days_used: u32,
    /// Tempo days left out (too many gaps, or colour unknown).
    pub days_skipped: u32,
    /// Per kind and colour (`weekday_red`, …); kinds without any counted day are absent.
    pub profiles: BTreeMap<String, LearnedProfile>,
}

/// Where a day's load profile comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum LoadSource {
    /// Learned from this many days of telemetry.
    Learned {
        /// Days of history.
        days: u32,
    },
    /// The configured `load_profile_w`.
    Configured,
}

impl LoadSource {
    /// The words that end every plan reason: "learned load (9 days)" or "configured load".
    pub fn phrase(&self) -> String {
        match self {
            LoadSource::Learned { days } => format!("learned load ({days} days)"),
            LoadSource::Configured => "configured load".into(),
        }
    }
}

/// The expected profile of one Tempo day of one colour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayLoad {
    /// House load per Paris hour, W.
    pub load_w: [f64; 24],
    /// Solar power per Paris hour, W (0 without PV).
    pub pv_w: [f64; 24],
    /// Where it comes from.
    #[serde(flatten)]
    pub source: LoadSource,
}

impl DayLoad {
    /// The configured profile, no solar.
    pub fn configured(load_w: [f64; 24]) -> Self {
        Self {
            load_w,
            pv_w: [0.0; 24],
            source: LoadSource::Configured,
        }
    }

    /// What the battery has to cover in Paris hour `hour`: load less solar, at least 0, W.
    pub fn net_w(&self, hour: usize) -> f64 {
        (self.load_w[hour % 24] - self.pv_w[hour % 24]).max(0.0)
    }
}

/// A Tempo day's profile for each colour it may turn out to be.
#[derive(Debug, Clone, PartialEq)]
pub struct DayLoads {
    /// If blue.
    pub blue: DayLoad,
    /// If white.
    pub white: DayLoad,
    /// If red.
    pub red: DayLoad,
}

impl DayLoads {
    /// The configured profile whatever the colour.
    pub fn configured(load_w: [f64; 24]) -> Self {
        let d = DayLoad::configured(load_w);
        Self {
            blue: d.clone(),
            white: d.clone(),
            red: d,
        }
    }

    /// The profile if the day is `colour`.
    pub fn get(&self, colour: TempoColour) -> &DayLoad {
        match colour {
            TempoColour::Blue => &self.blue,
            TempoColour::White => &self.white,
            TempoColour::Red => &self.red,
        }
    }

    /// Every profile.
    pub fn all(&self) -> [&DayLoad; 3] {
        [&self.blue, &self.white, &self.red]
    }
}

impl ConsumptionModel {
    /// A model that knows nothing (every kind falls back to the configured profile).
    pub fn empty(computed_at: DateTime<Utc>, from: NaiveDate, to: NaiveDate) -> Self {
        Self {
            computed_at,
            from,
            to,
            days_used: 0,
            days_skipped: 0,
            profiles: BTreeMap::new(),
        }
    }

    /// The learned profile of a kind and colour when it has at least [`MIN_DAYS`] days.
    pub fn learned(&self, kind: DayKind, colour: TempoColour) -> Option<&LearnedProfile> {
        self.profiles
            .get(&profile_key(kind, colour))
            .filter(|p| p.days >= MIN_DAYS)
    }

    /// The profile of `date` if it is `colour`: learned (hours never seen taken from
    /// `configured`) or, below [`MIN_DAYS`] days, `configured`.
    pub fn day_load(
        &self,
        date: NaiveDate,
        colour: TempoColour,
        configured: &[f64; 24],
    ) -> DayLoad {
        let Some(p) = self.learned(DayKind::of(date), colour) else {
            return DayLoad::configured(*configured);
        };
        let load_w = std::array::from_fn(|h| p.load_w[h].unwrap_or(configured[h]));
        let pv_w = std::array::from_fn(|h| p.pv_w.and_then(|pv| pv[h]).unwrap_or(0.0));
        DayLoad {
            load_w,
            pv_w,
            source: LoadSource::Learned { days: p.days },
        }
    }

    /// The profiles of `date` for each colour.
    pub fn day_loads(&self, date: NaiveDate, configured: &[f64; 24]) -> DayLoads {
        DayLoads {
            blue: self.day_load(date, TempoColour::Blue, configured),
            white: self.day_load(date, TempoColour::White, configured),
            red: self.day_load(date, TempoColour::Red, configured),
        }
    }

    /// Summary for the plan JSON: per kind and colour, days and whether it is in use.
    pub fn summary(&self) -> serde_json::Value {
        let mut kinds = serde_json::Map::new();
        for kind in [DayKind::Weekday, DayKind::Weekend] {
            for c in [TempoColour::Blue, TempoColour::White, TempoColour::Red] {
                let key = profile_key(kind, c);
                let days = self.profiles.get(&key).map_or(0, |p| p.days);
                let source = if days >= MIN_DAYS {
                    "learned"
                } else {
                    "configured"
                };
                kinds.insert(key, serde_json::json!({ "days": days, "source": source }));
            }
        }
        serde_json::json!({
            "computed_at": self.computed_at,
            "from": self.from,
            "to": self.to,
            "days_used": self.days_used,
            "days_skipped": self.days_skipped,
            "min_days": MIN_DAYS,
            "kinds": kinds,
        })
    }
}

/// One house hour after combining the batteries: load and solar, W.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hour {
    load: f64,
    pv: Option<f64>,
}

/// Combines the batteries' rows of each UTC hour: the CT averaged, the ports and PV added.
/// Hours whose load is not a plausible number are dropped.
fn house_hours(rows: &[HouseHour]) -> BTreeMap<DateTime<Utc>, Hour> {
    let mut by_hour: BTreeMap<DateTime<Utc>, Vec<&HouseHour>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.samples >= MIN_SAMPLES_PER_HOUR) {
        by_hour.entry(r.start).or_default().push(r);
    }
    by_hour
        .into_iter()
        .filter_map(|(start, rs)| {
            let ct = rs.iter().map(|r| r.ct_w).sum::<f64>() / rs.len() as f64;
            let port: f64 = rs.iter().map(|r| r.port_w).sum();
            let pvs: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.pv_w.filter(|p| p.is_finite() && *p >= 0.0))
                .collect();
            let load = ct + port;
            if !load.is_finite() || !(MIN_HOUSE_W..=MAX_HOUSE_W).contains(&load) {
                return None;
            }
            let pv = (!pvs.is_empty()).then(|| pvs.iter().sum());
            Some((
                start,
                Hour {
                    load: load.max(0.0),
                    pv,
                },
            ))
        })
        .collect()
}

/// The mean of `values` without their outliers (see the module doc); None when empty.
pub fn robust_mean(values: &[f64]) -> Option<f64> {
    let med = median(values)?;
    let dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&dev).unwrap_or(0.0);
    let tol = (3.0 * 1.4826 * mad).max(0.25 * med.abs()).max(50.0);
    let kept: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| (v - med).abs() <= tol)
        .collect();
    (!kept.is_empty()).then(|| kept.iter().sum::<f64>() / kept.len() as f64)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One Tempo day's hours: per Paris hour of day, the hours seen (two on the autumn DST day).
type DayHours = BTreeMap<usize, Vec<Hour>>;

/// The Tempo days in [from, to] with their hours.
fn tempo_days(rows: &[HouseHour], from: NaiveDate, to: NaiveDate) -> BTreeMap<NaiveDate, DayHours> {
    let mut days: BTreeMap<NaiveDate, DayHours> = BTreeMap::new();
    for (start, h) in house_hours(rows) {
        let date = tempo_date_at(start);
        if date < from || date > to {
            continue;
        }
        let hour = start.with_timezone(&TEMPO_TZ).hour() as usize;
        days.entry(date)
            .or_default()
            .entry(hour)
            .or_default()
            .push(h);
    }
    days
}

/// Learns the model from the house hours of the Tempo days [from, to] and their colours. Pure.
pub fn learn(
    rows: &[HouseHour],
    colours: &BTreeMap<NaiveDate, TempoColour>,
    from: NaiveDate,
    to: NaiveDate,
    now: DateTime<Utc>,
) -> ConsumptionModel {
    let mut model = ConsumptionModel::empty(now, from, to);
    // Per kind+colour key: the counted days' per-hour (load, pv).
    let mut cells: BTreeMap<String, Vec<DayHours>> = BTreeMap::new();
    for (date, hours) in tempo_days(rows, from, to) {
        match colours.get(&date) {
            Some(c) if hours.len() >= MIN_HOURS_PER_DAY => {
                model.days_used += 1;
                cells
                    .entry(profile_key(DayKind::of(date), *c))
                    .or_default()
                    .push(hours);
            }
            _ => model.days_skipped += 1,
        }
    }
    for (key, days) in cells {
        let per_hour = |h: usize, pick: fn(&Hour) -> Option<f64>| -> Option<f64> {
            let values: Vec<f64> = days
                .iter()
                .filter_map(|d| {
                    let seen: Vec<f64> = d.get(&h)?.iter().filter_map(pick).collect();
                    (!seen.is_empty()).then(|| seen.iter().sum::<f64>() / seen.len() as f64)
                })
                .collect();
            robust_mean(&values)
        };
        let load_w = std::array::from_fn(|h| per_hour(h, |x| Some(x.load)));
        let pv: [Option<f64>; 24] = std::array::from_fn(|h| per_hour(h, |x| x.pv));
        let profile = LearnedProfile {
            days: days.len() as u32,
            load_w,
            pv_w: pv.iter().any(Option::is_some).then_some(pv),
        };
        model.profiles.insert(key, profile);
    }
    model
}

/// The Tempo days the model learns from at `now`: the last [`LEARN_DAYS`] complete ones.
pub fn learn_window(now: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let today = tempo_date_at(now);
    (
        today - Duration::days(LEARN_DAYS),
        today - Duration::days(1),
    )
}

/// Recomputes the model from the store at `now` and stores it as [`LOAD_PROFILE_DOC`].
pub async fn relearn(
    store: &dyn Store,
    now: DateTime<Utc>,
) -> Result<ConsumptionModel, StoreError> {
    let (from, to) = learn_window(now);
    let six = NaiveTime::from_hms_opt(DAY_START_HOUR, 0, 0).unwrap_or_default();
    let rows = store
        .house_history(
            paris_instant(from, six),
            paris_instant(to + Duration::days(1), six),
        )
        .await?;
    let mut colours = BTreeMap::new();
    for date in from.iter_days().take_while(|d| *d <= to) {
        if let Some(rec) = store.tempo_day(date).await?
            && let Ok(c) = TempoColour::parse(&rec.colour)
        {
            colours.insert(date, c);
        }
    }
    let model = learn(&rows, &colours, from, to, now);
    let doc = serde_json::to_value(&model).map_err(|e| StoreError::Other(e.to_string()))?;
    store.put_document(LOAD_PROFILE_DOC, &doc).await?;
    tracing::info!(
        days_used = model.days_used,
        days_skipped = model.days_skipped,
        kinds = model.profiles.len(),
        "tempo_load_profile_learned"
    );
    Ok(model)
}

/// Why a (stored) model is unusable: a load outside 0–36 kW or a solar power outside
/// 0–20 kW, or a non-number; None when usable.
pub fn check(model: &ConsumptionModel) -> Option<String> {
    let ok =
        |v: &Option<f64>, max: f64| v.is_none_or(|w| w.is_finite() && (0.0..=max).contains(&w));
    model.profiles.iter().find_map(|(key, p)| {
        let load_ok = p.load_w.iter().all(|v| ok(v, MAX_HOUSE_W));
        let pv_ok = p
            .pv_w
            .is_none_or(|pv| pv.iter().all(|v| ok(v, crate::store::MAX_PV_W as f64)));
        (!load_ok || !pv_ok).then(|| format!("{key}: an hour is out of range"))
    })
}

/// The stored model, if any, readable and usable (else None, logged).
pub async fn stored(store: &dyn Store) -> Option<ConsumptionModel> {
    let doc = store.document(LOAD_PROFILE_DOC).await.ok()??;
    let model: ConsumptionModel = match serde_json::from_value(doc) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "tempo_load_profile_unreadable");
            return None;
        }
    };
    if let Some(why) = check(&model) {
        tracing::warn!(reason = %why, "tempo_load_profile_unreadable");
        return None;
    }
    Some(model)
}

/// The model to plan with at `now`: the stored one when computed on the same Paris calendar
/// day, else recomputed (once a day: the first plan after midnight, and the 11:30 job); when
/// the store fails, the stored one or an empty model (configured profile), logged.
pub async fn current(store: &dyn Store, now: DateTime<Utc>) -> ConsumptionModel {
    let local_day = |t: DateTime<Utc>| t.with_timezone(&TEMPO_TZ).date_naive();
    let old = stored(store).await;
    if let Some(m) = &old
        && local_day(m.computed_at) == local_day(now)
        && m.computed_at <= now
    {
        return m.clone();
    }
    match relearn(store, now).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "tempo_load_profile_not_learned");
            let (from, to) = learn_window(now);
            old.unwrap_or_else(|| ConsumptionModel::empty(now, from, to))
        }
    }
}

#[cfg(test)]
#[path = "consumption_tests.rs"]
mod tests;
