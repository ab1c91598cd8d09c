//! The planner in the running bridge: builds each battery's input (SOC read now, capacity,
//! envelope, the house profile learned by `consumption`, recomputed at most once a Paris day,
//! or the configured one), the colour knowledge (published colours from the
//! store's `tempo_days` cache, the cached forecast and season stats of [`Outlook`]), runs
//! [`plan`] per battery, each covering its share of the house load by usable capacity among
//! the batteries that could be read (`capacity_shares`), and publishes the result as JSON for the retained
//! `<base>/bridge/plan` topic (a `watch` channel the MQTT side publishes) and the `plan/get`
//! bridge action. For the 22:00 job it turns tonight's HC slots into precharge targets. Reads
//! batteries (SOC) and the store; never commands a battery.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    BatteryPlan, ColourInfo, ConsumptionModel, DayOutlook, Outlook, PlanBattery, PlannerParams,
    SlotAction, TempoColour, TempoSettings, capacity_shares, consumption, plan, tempo_date_at,
};
use crate::control::{DryRun, Fleet};
use crate::domain::{DayPlan, DeviceId, NightPlan, Percent, PrechargeTarget, Watts};
use crate::store::Store;

/// Forecast days the planner looks at, at most (J+9).
pub const MAX_HORIZON_DAYS: i64 = 9;

/// Lowest floor any DOD setting allows (DOD at most 88 %), %.
const DOD_FLOOR: f64 = 12.0;

/// The planner of the running bridge.
pub struct LivePlanner {
    settings: TempoSettings,
    store: Arc<dyn Store>,
    fleet: Fleet,
    outlook: Outlook,
    state: watch::Sender<Value>,
    dry_run: DryRun,
}

/// One battery's plan or why there is none.
type Outcome = (DeviceId, Result<BatteryPlan, String>);

impl LivePlanner {
    /// Builds it; `outlook` supplies the cached (and refreshable) stats and forecast.
    pub fn new(
        settings: TempoSettings,
        store: Arc<dyn Store>,
        fleet: Fleet,
        outlook: Outlook,
    ) -> Self {
        let settings_dry_run = settings.dry_run;
        Self {
            settings,
            store,
            fleet,
            outlook,
            state: watch::Sender::new(json!({ "batteries": {}, "next_action": "none" })),
            dry_run: DryRun::fixed(settings_dry_run),
        }
    }

    /// Reads dry run from this switch (the bridge's, toggled at run time).
    pub fn set_dry_run(&mut self, dry_run: DryRun) {
        self.dry_run = dry_run;
    }

    /// The JSON for the retained `<base>/bridge/plan` topic.
    pub fn subscribe(&self) -> watch::Receiver<Value> {
        self.state.subscribe()
    }

    /// Recomputes the learned house profile from the store now (the 11:30 job, before it
    /// plans); a store failure is logged and the previous model stays.
    pub async fn relearn(&self, now: DateTime<Utc>) {
        if let Err(e) = consumption::relearn(self.store.as_ref(), now).await {
            tracing::warn!(error = %e, "tempo_load_profile_not_learned");
        }
    }

    /// Refreshes the stats and forecast from their sources (cached in the store).
    pub async fn refresh_outlook(&self, now: DateTime<Utc>) {
        let _ = self.outlook.refresh(now).await;
    }

    /// The Tempo days from today to the last day anything is known about (at least 48 h), each
    /// with the house profiles of `model` (configured where it has too few days).
    async fn days(
        &self,
        now: DateTime<Utc>,
        model: &ConsumptionModel,
    ) -> (Vec<DayOutlook>, Option<super::SeasonStock>) {
        let today = tempo_date_at(now);
        let forecast = self.outlook.forecast().await;
        let stats = self.outlook.stats().await;
        let last_forecast = forecast
            .as_ref()
            .and_then(|f| f.value.last().map(|d| d.date))
            .unwrap_or(today);
        let end = last_forecast
            .max(today + Duration::days(2))
            .min(today + Duration::days(MAX_HORIZON_DAYS));
        let mut days = Vec::new();
        let mut known_reds_ahead = 0u32;
        let mut date = today;
        while date <= end {
            let colour = match self.known(date).await {
                Some((c, source)) => {
                    if c == TempoColour::Red && date > today {
                        known_reds_ahead += 1;
                    }
                    ColourInfo::Known { colour: c, source }
                }
                None => forecast
                    .as_ref()
                    .and_then(|f| f.value.iter().find(|d| d.date == date))
                    .map(|d| {
                        d.info(
                            &forecast
                                .as_ref()
                                .map(|f| f.source.clone())
                                .unwrap_or_default(),
                        )
                    })
                    .unwrap_or(ColourInfo::Unknown),
            };
            days.push(DayOutlook {
                date,
                colour,
                load: model.day_loads(date, &self.settings.load_profile()),
            });
            date += Duration::days(1);
        }
        // The stats count tomorrow as left even when it is published: take it off here.
        let stock = stats.map(|s| {
            let mut st = s.value.stock();
            st.red_left = st.red_left.saturating_sub(known_reds_ahead);
            st
        });
        (days, stock)
    }

    async fn known(&self, date: NaiveDate) -> Option<(TempoColour, String)> {
        let rec = self.store.tempo_day(date).await.ok()??;
        let colour = TempoColour::parse(&rec.colour).ok()?;
        Some((colour, rec.source))
    }

    /// Plans every battery at `now` (a battery that cannot be read gets the reason instead),
    /// publishes the JSON and returns it with the per-battery outcomes.
    pub async fn compute(&self, now: DateTime<Utc>, dry_run: bool) -> (Value, Vec<Outcome>) {
        let model = consumption::current(self.store.as_ref(), now).await;
        let (days, stock) = self.days(now, &model).await;
        let params = PlannerParams {
            tariff: self.settings.tariff.clone(),
            efficiency: self.settings.efficiency,
            margin: self.settings.margin,
            fail_safe_red: self.settings.fail_safe == super::FailSafe::AssumeRed,
        };
        let mut inputs = Vec::new();
        for battery in self.fleet.iter() {
            inputs.push((battery.id().clone(), self.battery_input(battery).await));
        }
        // The house load is shared by usable capacity among the batteries that can be planned.
        let readable: Vec<PlanBattery> = inputs
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().cloned())
            .collect();
        let mut shares = capacity_shares(&readable).into_iter();
        let mut outcomes = Vec::new();
        for (id, input) in inputs {
            let result = input.and_then(|mut b| {
                b.load_share = shares.next().unwrap_or(1.0);
                plan(now, &days, stock, &b, &params).map_err(|e| e.to_string())
            });
            if let Err(e) = &result {
                tracing::warn!(device = %id, reason = %e, "plan_not_computed");
            }
            outcomes.push((id, result));
        }
        let mut v = self.render(now, dry_run, stock, &outcomes);
        v["tomorrow"] = days.get(1).map_or(Value::Null, |d| tomorrow_json(d, stock));
        v["load_profile"] = model.summary();
        self.state.send_replace(v.clone());
        (v, outcomes)
    }

    async fn battery_input(
        &self,
        battery: &crate::domain::BatteryRef,
    ) -> Result<PlanBattery, String> {
        let id = battery.id();
        let limits = battery.limits();
        let sample = battery
            .poll()
            .await
            .map_err(|e| format!("no reading ({e})"))?;
        let soc = sample.soc.ok_or("SOC unknown")?;
        let capacity = self
            .settings
            .device_capacity_wh
            .get(id.as_str())
            .map(|c| f64::from(*c))
            .or(sample.rated_capacity.map(|c| c.0))
            .or(self.settings.capacity_wh.map(f64::from))
            .ok_or("capacity unknown (set tempo.capacity_wh)")?;
        Ok(PlanBattery {
            device: id.to_string(),
            soc: f64::from(soc.0),
            capacity_wh: capacity,
            min_soc: f64::from(limits.min_soc).max(DOD_FLOOR),
            max_soc: f64::from(limits.max_soc),
            max_charge_w: f64::from(limits.max_charge_w),
            max_discharge_w: f64::from(limits.max_discharge_w),
            load_share: 1.0,
        })
    }

    fn render(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        stock: Option<super::SeasonStock>,
        outcomes: &[Outcome],
    ) -> Value {
        let mut batteries = serde_json::Map::new();
        let mut next = Vec::new();
        for (id, r) in outcomes {
            match r {
                Ok(p) => {
                    if let Some(s) = p.slots.first() {
                        next.push(format!("{id}: {}", s.reason));
                    }
                    batteries.insert(id.to_string(), json!(p));
                }
                Err(e) => {
                    batteries.insert(id.to_string(), json!({ "error": e }));
                }
            }
        }
        let today: f64 = outcomes
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|p| p.slots.iter())
            .filter(|s| s.date == tempo_date_at(now))
            .map(|s| s.eur)
            .sum();
        json!({
            "computed_at": now,
            "dry_run": dry_run || self.dry_run.get(),
            "applied": self.settings.planner,
            "stock": stock,
            "batteries": batteries,
            "next_action": if next.is_empty() { "none".to_string() } else { next.join("; ") },
            "expected_today_eur": (today * 100.0).round() / 100.0,
        })
    }

    /// Tonight's precharge from the plan: a battery whose first HC slot charges gets a target
    /// at the plan's power; None when no battery could be planned (the caller falls back to
    /// the seed's schedule).
    pub async fn night_plan(&self, now: DateTime<Utc>, dry_run: bool) -> Option<NightPlan> {
        let (_, outcomes) = self.compute(now, dry_run).await;
        if outcomes.iter().all(|(_, r)| r.is_err()) {
            return None;
        }
        let mut targets = Vec::new();
        let mut reasons = Vec::new();
        for (id, r) in &outcomes {
            let slot = r.as_ref().ok().and_then(|p| {
                p.slots
                    .iter()
                    .find(|s| s.period == super::Period::Hc && s.end > now)
            });
            match (r, slot) {
                (Err(e), _) => reasons.push(format!("{id}: {e}")),
                (Ok(_), None) => reasons.push(format!("{id}: no night in the plan")),
                (Ok(_), Some(s)) => {
                    reasons.push(format!("{id}: {}", s.reason));
                    if let SlotAction::Charge {
                        target_soc,
                        power_w,
                    } = s.action
                        && power_w < 0
                    {
                        targets.push(PrechargeTarget {
                            device: id.clone(),
                            power: Watts(power_w),
                            target_soc: Percent(target_soc),
                        });
                    }
                }
            }
        }
        Some(NightPlan {
            targets,
            reason: format!("planner: {}", reasons.join("; ")),
            dry_run: dry_run || self.dry_run.get(),
        })
    }
}

impl LivePlanner {
    /// Today's peak hours from the plan: batteries whose HP slot in progress (or next) holds
    /// are listed in `hold`; None when no battery could be planned (the caller falls back to
    /// AUTO for all).
    pub async fn day_plan(&self, now: DateTime<Utc>, dry_run: bool) -> Option<DayPlan> {
        let (_, outcomes) = self.compute(now, dry_run).await;
        if outcomes.iter().all(|(_, r)| r.is_err()) {
            return None;
        }
        let mut hold = Vec::new();
        let mut floors = std::collections::BTreeMap::new();
        let mut reasons = Vec::new();
        for (id, r) in &outcomes {
            let slot = r.as_ref().ok().and_then(|p| {
                p.slots
                    .iter()
                    .find(|s| s.period == super::Period::Hp && s.end > now)
            });
            match (r, slot) {
                (Err(e), _) => reasons.push(format!("{id}: {e}")),
                (Ok(_), None) => reasons.push(format!("{id}: no peak hours in the plan")),
                (Ok(_), Some(s)) => {
                    reasons.push(format!("{id}: {}", s.reason));
                    match s.action {
                        SlotAction::Hold => hold.push(id.clone()),
                        SlotAction::Discharge { floor_soc } => {
                            floors.insert(id.clone(), Percent(floor_soc));
                        }
                        SlotAction::Charge { .. } => {}
                    }
                }
            }
        }
        Some(DayPlan {
            hold,
            reason: format!("planner: {}", reasons.join("; ")),
            dry_run: dry_run || self.dry_run.get(),
            floors,
        })
    }
}

/// Tomorrow's colour as the planner sees it: published (probability 1), the forecast's likeliest
/// colour with its probability (calendar and stock applied), or the calendar prior.
fn tomorrow_json(day: &DayOutlook, stock: Option<super::SeasonStock>) -> Value {
    let (odds, known, source) = match &day.colour {
        ColourInfo::Known { colour, source } => {
            (super::ColourOdds::certain(*colour), true, source.clone())
        }
        ColourInfo::Forecast { odds, source } => {
            (odds.constrained(day.date, stock), false, source.clone())
        }
        ColourInfo::Unknown => (super::prior_odds(day.date, stock), false, "calendar".into()),
    };
    let (colour, p) = odds.likeliest();
    let pct = |x: f64| (x * 1000.0).round() / 10.0;
    json!({
        "date": day.date,
        "colour": colour,
        "probability": (p * 1000.0).round() / 1000.0,
        "known": known,
        "source": source,
        "odds_pct": { "blue": pct(odds.blue), "white": pct(odds.white), "red": pct(odds.red) },
    })
}

/// `marstek-bridge plan preview` as text: per battery, one line per slot (local start, HP/HC,
/// colour, action, SOC at the end, expected €, reason).
pub fn plan_table(data: &Value) -> String {
    let mut out = String::new();
    let Some(batteries) = data.get("batteries").and_then(Value::as_object) else {
        return "no plan\n".into();
    };
    for (id, p) in batteries {
        out.push_str(&format!("{id}\n"));
        if let Some(e) = p.get("error").and_then(Value::as_str) {
            out.push_str(&format!("  no plan: {e}\n"));
            continue;
        }
        for s in p
            .get("slots")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
            let start = s
                .get("start")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| {
                    t.with_timezone(&super::TEMPO_TZ)
                        .format("%a %d %H:%M")
                        .to_string()
                })
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "  {start:<12} {:<3} {:<6} {:<10} {:>4} % {:>+7.2} €  {}\n",
                text("period").to_uppercase(),
                text("colour"),
                text("action"),
                s.get("soc_end").and_then(Value::as_u64).unwrap_or(0),
                s.get("eur").and_then(Value::as_f64).unwrap_or(0.0),
                text("reason"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempo::{ColourOdds, DayLoads};

    fn day(y: i32, m: u32, d: u32, colour: ColourInfo) -> DayOutlook {
        DayOutlook {
            date: NaiveDate::from_ymd_opt(y, m, d).unwrap(),
            colour,
            load: DayLoads::configured([300.0; 24]),
        }
    }

    #[test]
    fn tomorrow_shows_the_forecast_probability_as_a_hint() {
        let odds = ColourOdds::new(0.18, 0.10, 0.72).unwrap();
        let fc = ColourInfo::Forecast {
            odds,
            source: "open-dpe".into(),
        };
        // Thursday 2026-12-03: red possible, the forecast's 72 % stands.
        let v = tomorrow_json(&day(2026, 12, 3, fc.clone()), None);
        assert_eq!(v["colour"], json!("red"), "{v}");
        assert_eq!(v["probability"], json!(0.72), "{v}");
        assert_eq!(v["known"], json!(false));
        assert_eq!(v["source"], json!("open-dpe"));
        assert_eq!(v["odds_pct"]["red"], json!(72.0));
        // Saturday 2026-12-05: the calendar forbids red; blue and white share the rest.
        let v = tomorrow_json(&day(2026, 12, 5, fc), None);
        assert_eq!(v["odds_pct"]["red"], json!(0.0), "{v}");
        assert_eq!(v["colour"], json!("blue"), "{v}");
        assert_eq!(v["probability"], json!(0.643), "{v}");
        assert_eq!(v["odds_pct"]["white"], json!(35.7), "{v}");
        // Nothing known on a summer Sunday: the calendar prior, blue.
        let v = tomorrow_json(&day(2027, 7, 4, ColourInfo::Unknown), None);
        assert_eq!(v["colour"], json!("blue"), "{v}");
        assert_eq!(v["source"], json!("calendar"));
        assert_eq!(v["probability"], json!(1.0), "{v}");
    }
}
