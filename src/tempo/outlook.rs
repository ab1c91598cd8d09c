//! Colour knowledge beyond tomorrow, each behind a small trait: the season's remaining days
//! (api-couleur-tempo.fr `/api/stats`) and a J+2…J+9 forecast with probabilities (open-dpe.fr
//! `tempo_days_lite.json`), treated as a hint and never as a fact. Payloads are checked (counts
//! within the quotas, probabilities within 0–1, dates in order) and refused whole with a reason
//! when they are not; [`Outlook`] caches the last good answer of each in the store (documents
//! `tempo_stats` and `tempo_forecast`), so a failure or a restart falls back to what was known.
//! HTTP to the configured URLs and the store's documents only.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::source::Http;
use super::{
    ColourInfo, ColourOdds, RED_QUOTA, SeasonStock, TempoColour, TempoError, TempoSettings,
    WHITE_QUOTA,
};
use crate::store::Store;

/// Store document holding the last good season stats.
pub const STATS_DOC: &str = "tempo_stats";
/// Store document holding the last good forecast.
pub const FORECAST_DOC: &str = "tempo_forecast";

/// Days used and left of each colour this season.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeasonStats {
    /// Red days used (today included from 00:00).
    pub red_used: u32,
    /// Red days left (tomorrow counts as left even when published).
    pub red_left: u32,
    /// White days used.
    pub white_used: u32,
    /// White days left.
    pub white_left: u32,
}

impl SeasonStats {
    /// The stock the planner needs.
    pub fn stock(&self) -> SeasonStock {
        SeasonStock {
            red_left: self.red_left,
            white_left: self.white_left,
        }
    }

    /// Refuses counts over the season's quotas.
    pub fn check(&self) -> Result<(), String> {
        let reds = self.red_used + self.red_left;
        if reds > RED_QUOTA {
            return Err(format!(
                "{reds} red days in the season, more than the quota of {RED_QUOTA}"
            ));
        }
        // 2019–20 turned 4 unused reds into whites: allow that much over the white quota.
        let whites = self.white_used + self.white_left;
        if whites > WHITE_QUOTA + 4 {
            return Err(format!(
                "{whites} white days in the season, more than the quota of {WHITE_QUOTA}"
            ));
        }
        Ok(())
    }
}

/// One forecast day.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DayForecast {
    /// The Tempo date.
    pub date: NaiveDate,
    /// The predicted colour.
    pub colour: TempoColour,
    /// Its probability, 0–1.
    pub probability: f64,
    /// The odds the planner uses (the rest split evenly between the other two colours).
    pub odds: ColourOdds,
}

impl DayForecast {
    /// The planner's view of this day.
    pub fn info(&self, source: &str) -> ColourInfo {
        ColourInfo::Forecast {
            odds: self.odds,
            source: source.to_string(),
        }
    }
}

/// Something that knows the season's remaining days.
#[async_trait::async_trait]
pub trait StatsSource: Send + Sync {
    /// Name used in logs and the store.
    fn name(&self) -> &str;
    /// The current stats, or why not.
    async fn stats(&self) -> Result<SeasonStats, String>;
}

/// Something that forecasts colours beyond tomorrow.
#[async_trait::async_trait]
pub trait ForecastSource: Send + Sync {
    /// Name used in logs, reasons and the store.
    fn name(&self) -> &str;
    /// The forecast days, in date order, or why not.
    async fn forecast(&self) -> Result<Vec<DayForecast>, String>;
}

/// api-couleur-tempo.fr `GET {base}/api/stats`.
pub struct CouleurTempoStats {
    url: String,
    http: Http,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsPayload {
    jours_rouges_consommes: u32,
    jours_rouges_restants: u32,
    jours_blancs_consommes: u32,
    jours_blancs_restants: u32,
}

impl CouleurTempoStats {
    /// From `couleur_tempo_url`, timeout and retries.
    pub fn new(settings: &TempoSettings) -> Result<Self, TempoError> {
        Ok(Self {
            url: format!(
                "{}/api/stats",
                settings.couleur_tempo_url.trim_end_matches('/')
            ),
            http: Http::new(settings)?,
        })
    }
}

#[async_trait::async_trait]
impl StatsSource for CouleurTempoStats {
    fn name(&self) -> &str {
        "api-couleur-tempo"
    }

    async fn stats(&self) -> Result<SeasonStats, String> {
        let p: StatsPayload = self.http.get_json(self.name(), &self.url).await?;
        let s = SeasonStats {
            red_used: p.jours_rouges_consommes,
            red_left: p.jours_rouges_restants,
            white_used: p.jours_blancs_consommes,
            white_left: p.jours_blancs_restants,
        };
        s.check()?;
        Ok(s)
    }
}

/// open-dpe.fr `tempo_days_lite.json`: `[{"date": "YYYY-MM-DD", "couleur": "rouge",
/// "probability": 0.72}, …]` (also `dateJour` / `couleurJour` / `probabilite`).
pub struct OpenDpeForecast {
    url: String,
    http: Http,
}

#[derive(Deserialize)]
struct ForecastEntry {
    #[serde(alias = "dateJour")]
    date: String,
    #[serde(alias = "couleurJour", alias = "color")]
    couleur: String,
    #[serde(alias = "probabilite")]
    probability: Option<f64>,
}

impl OpenDpeForecast {
    /// From `forecast_url`, timeout and retries.
    pub fn new(settings: &TempoSettings) -> Result<Self, TempoError> {
        Ok(Self {
            url: settings.forecast_url.clone(),
            http: Http::new(settings)?,
        })
    }
}

/// A colour name in French or English.
fn forecast_colour(s: &str) -> Result<TempoColour, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "bleu" => Ok(TempoColour::Blue),
        "blanc" => Ok(TempoColour::White),
        "rouge" => Ok(TempoColour::Red),
        other => TempoColour::parse(other),
    }
}

/// Checks a forecast payload: dates parse and increase, colours known, probabilities in 0–1.
/// One bad entry refuses the whole payload (a source that sends one is not trusted for the
/// others).
fn parse_forecast(entries: Vec<ForecastEntry>) -> Result<Vec<DayForecast>, String> {
    let mut out: Vec<DayForecast> = Vec::with_capacity(entries.len());
    for e in entries {
        let date = NaiveDate::parse_from_str(e.date.trim(), "%Y-%m-%d")
            .map_err(|err| format!("date '{}': {err}", e.date))?;
        if out.last().is_some_and(|l| l.date >= date) {
            return Err(format!("{date} is out of order or repeated"));
        }
        let colour = forecast_colour(&e.couleur).map_err(|err| format!("{date}: {err}"))?;
        let Some(p) = e.probability else {
            return Err(format!("{date}: no probability"));
        };
        if !p.is_finite() || !(0.0..=1.0).contains(&p) {
            return Err(format!("{date}: probability {p} is outside 0–1"));
        }
        let rest = (1.0 - p) / 2.0;
        let mut odds = ColourOdds {
            blue: rest,
            white: rest,
            red: rest,
        };
        match colour {
            TempoColour::Blue => odds.blue = p,
            TempoColour::White => odds.white = p,
            TempoColour::Red => odds.red = p,
        }
        out.push(DayForecast {
            date,
            colour,
            probability: p,
            odds,
        });
    }
    Ok(out)
}

#[async_trait::async_trait]
impl ForecastSource for OpenDpeForecast {
    fn name(&self) -> &str {
        "open-dpe"
    }

    async fn forecast(&self) -> Result<Vec<DayForecast>, String> {
        let entries: Vec<ForecastEntry> = self.http.get_json(self.name(), &self.url).await?;
        parse_forecast(entries)
    }
}

/// A cached answer with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cached<T> {
    /// The answer.
    pub value: T,
    /// Who gave it.
    pub source: String,
    /// When (UTC).
    pub fetched_at: DateTime<Utc>,
}

/// The stats and forecast, refreshed from their sources and cached in the store.
pub struct Outlook {
    stats: Option<Arc<dyn StatsSource>>,
    forecast: Option<Arc<dyn ForecastSource>>,
    store: Arc<dyn Store>,
}

impl Outlook {
    /// From explicit sources (None = not configured).
    pub fn new(
        stats: Option<Arc<dyn StatsSource>>,
        forecast: Option<Arc<dyn ForecastSource>>,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            stats,
            forecast,
            store,
        }
    }

    /// From the settings: stats from api-couleur-tempo, forecast from `forecast_url` unless
    /// it is empty.
    pub fn from_settings(
        settings: &TempoSettings,
        store: Arc<dyn Store>,
    ) -> Result<Self, TempoError> {
        let stats: Arc<dyn StatsSource> = Arc::new(CouleurTempoStats::new(settings)?);
        let forecast: Option<Arc<dyn ForecastSource>> = if settings.forecast_url.is_empty() {
            None
        } else {
            Some(Arc::new(OpenDpeForecast::new(settings)?))
        };
        Ok(Self::new(Some(stats), forecast, store))
    }

    /// Asks both sources; a good answer replaces the cached one, a refused or failed one is
    /// logged (`tempo_outlook_refused`, with the reason) and the cache stays as it was.
    /// Returns what is known afterwards.
    pub async fn refresh(
        &self,
        now: DateTime<Utc>,
    ) -> (
        Option<Cached<SeasonStats>>,
        Option<Cached<Vec<DayForecast>>>,
    ) {
        if let Some(src) = &self.stats {
            match src.stats().await {
                Ok(v) => self.save(STATS_DOC, src.name(), v, now).await,
                Err(reason) => {
                    tracing::warn!(source = src.name(), reason = %reason, "tempo_outlook_refused")
                }
            }
        }
        if let Some(src) = &self.forecast {
            match src.forecast().await {
                Ok(v) => self.save(FORECAST_DOC, src.name(), v, now).await,
                Err(reason) => {
                    tracing::warn!(source = src.name(), reason = %reason, "tempo_outlook_refused")
                }
            }
        }
        (self.stats().await, self.forecast().await)
    }

    async fn save<T: Serialize>(&self, key: &str, source: &str, value: T, now: DateTime<Utc>) {
        let doc = Cached {
            value,
            source: source.to_string(),
            fetched_at: now,
        };
        match serde_json::to_value(&doc) {
            Ok(v) => {
                if let Err(e) = self.store.put_document(key, &v).await {
                    tracing::warn!(key, error = %e, "tempo_outlook_not_cached");
                }
            }
            Err(e) => tracing::warn!(key, error = %e, "tempo_outlook_not_cached"),
        }
    }

    async fn load<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<Cached<T>> {
        let doc = self.store.document(key).await.ok()??;
        serde_json::from_value(doc).ok()
    }

    /// The cached stats.
    pub async fn stats(&self) -> Option<Cached<SeasonStats>> {
        self.load(STATS_DOC).await
    }

    /// The cached forecast.
    pub async fn forecast(&self) -> Option<Cached<Vec<DayForecast>>> {
        self.load(FORECAST_DOC).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(date: &str, c: &str, p: Option<f64>) -> ForecastEntry {
        ForecastEntry {
            date: date.into(),
            couleur: c.into(),
            probability: p,
        }
    }

    #[test]
    fn forecast_entries_are_checked_whole() {
        let ok = parse_forecast(vec![
            entry("2027-01-14", "rouge", Some(0.72)),
            entry("2027-01-15", "BLANC", Some(0.5)),
        ])
        .unwrap();
        assert_eq!(ok[0].colour, TempoColour::Red);
        assert!((ok[0].odds.red - 0.72).abs() < 1e-12);
        assert!((ok[0].odds.blue - 0.14).abs() < 1e-12);
        assert_eq!(ok[1].colour, TempoColour::White);
        let err = |v| parse_forecast(v).unwrap_err();
        assert_eq!(
            err(vec![entry("2027-01-14", "rouge", Some(72.0))]),
            "2027-01-14: probability 72 is outside 0–1"
        );
        assert!(err(vec![entry("2027-01-14", "violet", Some(0.5))]).contains("unknown"));
        assert!(err(vec![entry("14/01/2027", "rouge", Some(0.5))]).starts_with("date"));
        assert!(err(vec![entry("2027-01-14", "rouge", None)]).contains("no probability"));
        assert!(
            err(vec![
                entry("2027-01-15", "rouge", Some(0.5)),
                entry("2027-01-14", "rouge", Some(0.5)),
            ])
            .contains("out of order")
        );
    }

    #[test]
    fn stats_over_the_quota_are_refused() {
        let s = SeasonStats {
            red_used: 10,
            red_left: 13,
            white_used: 0,
            white_left: 43,
        };
        assert_eq!(
            s.check().unwrap_err(),
            "23 red days in the season, more than the quota of 22"
        );
        let s = SeasonStats { red_left: 12, ..s };
        assert!(s.check().is_ok());
        assert_eq!(s.stock().red_left, 12);
    }
}
