//! The ledger book of the running bridge: closes each finished Tempo day per battery with
//! [`day_ledger`] from the store's hourly energy history and the day's cached colour, keeps it as a store
//! document (`ledger/<device>/<date>`), keeps a running ledger of the day in progress, and
//! publishes today's and the season's € saved, with the instant each total started from
//! (`today_start`, `season_start`), as JSON for the retained `<base>/bridge/ledger` topic and as
//! Prometheus gauges. Reads the store (energy history, latest samples, colours,
//! documents) and writes its
//! documents; never touches a battery.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    DayLedger, TEMPO_TZ, TempoColour, TempoSettings, day_ledger, tempo_date_at, tempo_day_span,
};
use crate::control::Fleet;
use crate::domain::DeviceId;
use crate::store::{Bucket, Store};

/// Prefix of the ledger documents (`ledger/<device>/<YYYY-MM-DD>`).
pub const LEDGER_PREFIX: &str = "ledger/";

/// The ledger book.
pub struct LedgerBook {
    settings: TempoSettings,
    store: Arc<dyn Store>,
    fleet: Fleet,
    state: watch::Sender<Value>,
}

/// First day of the Tempo season (Sep 1) `date` belongs to.
fn season_start(date: NaiveDate) -> NaiveDate {
    let year = if date.month() >= 9 {
        date.year()
    } else {
        date.year() - 1
    };
    NaiveDate::from_ymd_opt(year, 9, 1).unwrap_or(date)
}

impl LedgerBook {
    /// Builds it.
    pub fn new(settings: TempoSettings, store: Arc<dyn Store>, fleet: Fleet) -> Self {
        Self {
            settings,
            store,
            fleet,
            state: watch::Sender::new(Value::Null),
        }
    }

    /// The JSON for the retained `<base>/bridge/ledger` topic.
    pub fn subscribe(&self) -> watch::Receiver<Value> {
        self.state.subscribe()
    }

    async fn colour(&self, date: NaiveDate) -> Option<TempoColour> {
        let rec = self.store.tempo_day(date).await.ok()??;
        TempoColour::parse(&rec.colour).ok()
    }

    /// The ledger of `device` for Tempo day `date` from its hourly energy history (the hours
    /// so far while the day is in progress).
    async fn ledger(&self, device: &DeviceId, date: NaiveDate) -> Option<DayLedger> {
        let colour = self.colour(date).await?;
        let (from, to) = tempo_day_span(date);
        let hours = match self
            .store
            .energy_history(device, from, to, Bucket::Hour)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%device, error = %e, "ledger_history_unavailable");
                return None;
            }
        };
        let capacity = self.capacity_wh(device).await;
        Some(day_ledger(
            device.as_str(),
            date,
            colour,
            &hours,
            &self.settings.tariff,
            capacity,
        ))
    }

    /// Usable capacity of `device`, Wh: configured per device, else the rated capacity of its
    /// latest stored sample, else the configured default (0 when nothing is known).
    async fn capacity_wh(&self, device: &DeviceId) -> f64 {
        if let Some(c) = self.settings.device_capacity_wh.get(device.as_str()) {
            return f64::from(*c);
        }
        let rated = match self.store.latest_samples().await {
            Ok(latest) => latest
                .into_iter()
                .find(|s| &s.device == device)
                .and_then(|s| s.rated_capacity.map(|c| c.0)),
            Err(e) => {
                tracing::warn!(%device, error = %e, "ledger_capacity_unavailable");
                None
            }
        };
        rated
            .or(self.settings.capacity_wh.map(f64::from))
            .unwrap_or(0.0)
    }

    /// Closes the day before the one in force at `now` (stored), recomputes today's running
    /// ledger, publishes and returns the JSON.
    pub async fn refresh(&self, now: DateTime<Utc>) -> Value {
        let today = tempo_date_at(now);
        let yesterday = today - Duration::days(1);
        let mut batteries = serde_json::Map::new();
        let (mut today_total, mut season_total) = (0.0, 0.0);
        for battery in self.fleet.iter() {
            let id = battery.id();
            if let Some(l) = self.ledger(id, yesterday).await {
                let key = format!("{LEDGER_PREFIX}{id}/{yesterday}");
                if let Err(e) = self.store.put_document(&key, &json!(l)).await {
                    tracing::warn!(device = %id, error = %e, "ledger_not_stored");
                }
            }
            let running = self.ledger(id, today).await;
            let season =
                self.season_saved(id, today).await + running.as_ref().map_or(0.0, |l| l.saved_eur);
            let today_saved = running.as_ref().map_or(0.0, |l| l.saved_eur);
            today_total += today_saved;
            season_total += season;
            metrics::gauge!("marstek_ledger_saved_eur", "device" => id.to_string(), "span" => "today")
                .set(today_saved);
            metrics::gauge!("marstek_ledger_saved_eur", "device" => id.to_string(), "span" => "season")
                .set(season);
            batteries.insert(
                id.to_string(),
                json!({ "today": running, "season_saved_eur": (season * 100.0).round() / 100.0 }),
            );
        }
        // Where each total restarted (Home Assistant's `last_reset`): 06:00 Paris of today's
        // Tempo day and of the season's first day (Sep 1).
        let start = |d: NaiveDate| tempo_day_span(d).0.with_timezone(&TEMPO_TZ).to_rfc3339();
        let v = json!({
            "date": today,
            "today_start": start(today),
            "season_start": start(season_start(today)),
            "today_saved_eur": (today_total * 100.0).round() / 100.0,
            "season_saved_eur": (season_total * 100.0).round() / 100.0,
            "batteries": batteries,
            "updated_at": now,
        });
        self.state.send_replace(v.clone());
        v
    }

    /// € saved by `device` on the closed days of `today`'s season before `today`.
    async fn season_saved(&self, device: &DeviceId, today: NaiveDate) -> f64 {
        let start = season_start(today);
        let docs = match self
            .store
            .documents_under(&format!("{LEDGER_PREFIX}{device}/"))
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(%device, error = %e, "ledger_documents_unavailable");
                return 0.0;
            }
        };
        docs.into_iter()
            .filter_map(|(_, v)| serde_json::from_value::<DayLedger>(v).ok())
            .filter(|l| l.date >= start && l.date < today)
            .map(|l| l.saved_eur)
            .sum()
    }
}
