//! Tempo colour sources behind one trait: api-couleur-tempo.fr (no credentials), RTE's official
//! "Tempo Like Supply Contract" API (OAuth2 client credentials, token cached), and a fallback
//! chain. Every answer is tri-state (colour / unknown / error) and never a panic. HTTP only, to
//! the configured base URLs; transient failures are retried with exponential backoff and jitter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};
use rand::Rng;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::settings::{Secret, SourceKind, TempoSettings};
use super::{TEMPO_TZ, TempoColour, TempoError, paris_instant};

/// What a source says about a date.
#[derive(Debug, Clone, PartialEq)]
pub enum TempoResult {
    /// The colour is published.
    Colour(TempoColour),
    /// The source answered but the colour is not published yet (reason).
    Unknown(String),
    /// The source failed (timeout, HTTP error, undecodable answer; reason).
    Error(String),
}

impl TempoResult {
    /// The colour, when definite.
    pub fn colour(&self) -> Option<TempoColour> {
        match self {
            TempoResult::Colour(c) => Some(*c),
            _ => None,
        }
    }
}

/// Something that knows the Tempo colour of a date (the day from 06:00 on `date`).
#[async_trait::async_trait]
pub trait ColourSource: Send + Sync {
    /// Name used in logs, state and the store.
    fn name(&self) -> &str;
    /// The colour of `date`.
    async fn colour(&self, date: NaiveDate) -> TempoResult;
}

/// HTTP outcome classified for retrying.
pub(super) enum Attempt<T> {
    Done(T),
    Transient(String),
}

/// Client and retry policy shared by the HTTP sources.
#[derive(Clone)]
pub(super) struct Http {
    client: reqwest::Client,
    retries: u32,
    backoff: Duration,
}

impl Http {
    pub(super) fn new(settings: &TempoSettings) -> Result<Self, TempoError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("marstek-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TempoError::Http(e.to_string()))?;
        Ok(Self {
            client,
            retries: settings.retries,
            backoff: settings.backoff,
        })
    }

    /// Runs `f` until it is done or transient failures exhaust the retries.
    async fn with_retries<F, Fut>(&self, source: &str, f: F) -> TempoResult
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<TempoResult>>,
    {
        self.retrying(source, f)
            .await
            .unwrap_or_else(TempoResult::Error)
    }

    /// GET `url` as JSON with the retry policy: timeouts, 429 and 5xx are retried; another
    /// status or an undecodable body is an error at once (the reason names it).
    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        source: &str,
        url: &str,
    ) -> Result<T, String> {
        let once = || async {
            let resp = match self
                .client
                .get(url)
                .header("Accept", "application/json")
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return Attempt::Transient(send_error(&e)),
            };
            let status = resp.status();
            let body = match resp.text().await {
                Ok(b) => b,
                Err(e) => return Attempt::Transient(send_error(&e)),
            };
            if transient_status(status) {
                return Attempt::Transient(format!("HTTP {status}"));
            }
            if !status.is_success() {
                return Attempt::Done(Err(format!("HTTP {status}: {}", snippet(&body))));
            }
            Attempt::Done(
                serde_json::from_str(&body)
                    .map_err(|e| format!("undecodable answer ({e}): {}", snippet(&body))),
            )
        };
        self.retrying(source, once).await?
    }

    /// Runs `f` until it is done; Err(reason) once transient failures exhaust the retries.
    async fn retrying<T, F, Fut>(&self, source: &str, mut f: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut attempt = 0u32;
        loop {
            match f().await {
                Attempt::Done(r) => return Ok(r),
                Attempt::Transient(reason) if attempt >= self.retries => {
                    return Err(format!("{reason} (after {} attempt(s))", attempt + 1));
                }
                Attempt::Transient(reason) => {
                    let delay = backoff_delay(self.backoff, attempt);
                    tracing::debug!(source, attempt, reason = %reason, delay_ms = delay.as_millis() as u64, "tempo_fetch_retry");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// Longest wait between two attempts, before jitter.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// `base × 2^attempt` (at most 60 s) plus up to 50 % jitter.
fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    let jitter_max = exp.as_millis().min(u64::MAX as u128) as u64 / 2;
    let jitter = if jitter_max > 0 {
        rand::rng().random_range(0..=jitter_max)
    } else {
        0
    };
    exp + Duration::from_millis(jitter)
}

/// Classifies a reqwest send error.
fn send_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "request timed out".to_string()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        format!("request failed: {e}")
    }
}

/// Whether a status is worth retrying.
fn transient_status(s: reqwest::StatusCode) -> bool {
    s == reqwest::StatusCode::TOO_MANY_REQUESTS
        || s == reqwest::StatusCode::REQUEST_TIMEOUT
        || s.is_server_error()
}

/// Shortens a response body for an error message.
fn snippet(body: &str) -> String {
    let t: String = body.chars().take(120).collect();
    t.replace(['\n', '\r'], " ")
}

/// api-couleur-tempo.fr: `GET {base}/api/jourTempo/{YYYY-MM-DD}` → `{"codeJour": 0..3, …}`.
pub struct CouleurTempoSource {
    base: String,
    http: Http,
}

#[derive(Deserialize)]
struct JourTempo {
    #[serde(rename = "dateJour")]
    date_jour: Option<String>,
    #[serde(rename = "codeJour")]
    code_jour: i64,
}

impl CouleurTempoSource {
    /// Builds the source from the settings (`couleur_tempo_url`, timeout, retries).
    pub fn new(settings: &TempoSettings) -> Result<Self, TempoError> {
        Ok(Self {
            base: settings.couleur_tempo_url.trim_end_matches('/').to_string(),
            http: Http::new(settings)?,
        })
    }

    async fn once(&self, date: NaiveDate) -> Attempt<TempoResult> {
        let url = format!("{}/api/jourTempo/{}", self.base, date.format("%Y-%m-%d"));
        let resp = match self
            .http
            .client
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Attempt::Transient(send_error(&e)),
        };
        let status = resp.status();
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => return Attempt::Transient(send_error(&e)),
        };
        if transient_status(status) {
            return Attempt::Transient(format!("HTTP {status}"));
        }
        if !status.is_success() {
            return Attempt::Done(TempoResult::Error(format!(
                "HTTP {status}: {}",
                snippet(&body)
            )));
        }
        let jour: JourTempo = match serde_json::from_str(&body) {
            Ok(j) => j,
            Err(e) => {
                return Attempt::Done(TempoResult::Error(format!(
                    "undecodable answer ({e}): {}",
                    snippet(&body)
                )));
            }
        };
        if let Some(d) = &jour.date_jour
            && d != &date.format("%Y-%m-%d").to_string()
        {
            return Attempt::Done(TempoResult::Error(format!(
                "answer is for {d}, asked for {date}"
            )));
        }
        Attempt::Done(match jour.code_jour {
            0 => TempoResult::Unknown("codeJour 0: not published yet".into()),
            1 => TempoResult::Colour(TempoColour::Blue),
            2 => TempoResult::Colour(TempoColour::White),
            3 => TempoResult::Colour(TempoColour::Red),
            other => TempoResult::Error(format!("unknown codeJour {other} (0 to 3)")),
        })
    }
}

#[async_trait::async_trait]
impl ColourSource for CouleurTempoSource {
    fn name(&self) -> &str {
        SourceKind::CouleurTempo.as_str()
    }

    async fn colour(&self, date: NaiveDate) -> TempoResult {
        self.http
            .with_retries(self.name(), || self.once(date))
            .await
    }
}

/// RTE "Tempo Like Supply Contract": OAuth2 client credentials (HTTP Basic) at the token URL,
/// then `GET {api}/tempo_like_calendars?start_date=…&end_date=…` with the bearer token.
pub struct RteSource {
    token_url: String,
    api: String,
    client_id: Secret,
    client_secret: Secret,
    http: Http,
    token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for RteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RteSource")
            .field("token_url", &self.token_url)
            .field("api", &self.api)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Calendars {
    tempo_like_calendars: CalendarBody,
}

#[derive(Deserialize)]
struct CalendarBody {
    #[serde(default)]
    values: Vec<CalendarValue>,
}

#[derive(Deserialize)]
struct CalendarValue {
    start_date: String,
    value: String,
}

#[derive(Deserialize)]
struct RteError {
    error: Option<String>,
    error_description: Option<String>,
}

/// RTE's timestamp format, with the `+` percent-encoded as the API requires.
fn rte_instant(date: NaiveDate) -> String {
    let t = paris_instant(date, NaiveTime::MIN).with_timezone(&TEMPO_TZ);
    t.format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
        .replace('+', "%2B")
}

impl RteSource {
    /// Builds the source; fails when the credentials are missing or unreadable.
    pub fn new(settings: &TempoSettings) -> Result<Self, TempoError> {
        let (client_id, client_secret) = settings
            .rte_credentials()
            .map_err(TempoError::Config)?
            .ok_or_else(|| {
                TempoError::Config(
                    "rte_client_id: source 'rte' needs rte_client_id and rte_client_secret".into(),
                )
            })?;
        Ok(Self {
            token_url: settings.rte_token_url.clone(),
            api: settings.rte_api_url.trim_end_matches('/').to_string(),
            client_id,
            client_secret,
            http: Http::new(settings)?,
            token: Mutex::new(None),
        })
    }

    /// A valid cached token, or a fresh one.
    async fn token(&self, force: bool) -> Attempt<Result<String, String>> {
        let mut guard = self.token.lock().await;
        if !force
            && let Some((tok, until)) = guard.as_ref()
            && Instant::now() < *until
        {
            return Attempt::Done(Ok(tok.clone()));
        }
        *guard = None;
        let resp = match self
            .http
            .client
            .post(&self.token_url)
            .basic_auth(self.client_id.expose(), Some(self.client_secret.expose()))
            .header("Accept", "application/json")
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Attempt::Transient(format!("token: {}", send_error(&e))),
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if transient_status(status) {
            return Attempt::Transient(format!("token: HTTP {status}"));
        }
        if !status.is_success() {
            // Never echo the body of a refused token request: it may repeat the credentials.
            return Attempt::Done(Err(format!("token refused: HTTP {status}")));
        }
        match serde_json::from_str::<TokenAnswer>(&body) {
            Ok(t) if !t.access_token.is_empty() => {
                let life = t.expires_in.unwrap_or(3600);
                // Renew a minute early so a token never expires mid-request.
                let until = Instant::now() + Duration::from_secs(life.saturating_sub(60).max(1));
                *guard = Some((t.access_token.clone(), until));
                tracing::debug!(expires_in = life, "tempo_rte_token_fetched");
                Attempt::Done(Ok(t.access_token))
            }
            Ok(_) => Attempt::Done(Err("token answer has an empty access_token".into())),
            Err(e) => Attempt::Done(Err(format!("undecodable token answer: {e}"))),
        }
    }

    async fn once(&self, date: NaiveDate) -> Attempt<TempoResult> {
        let end = date.succ_opt().unwrap_or(date);
        let url = format!(
            "{}/tempo_like_calendars?start_date={}&end_date={}",
            self.api,
            rte_instant(date),
            rte_instant(end)
        );
        let mut refreshed = false;
        loop {
            let token = match self.token(refreshed).await {
                Attempt::Done(Ok(t)) => t,
                Attempt::Done(Err(e)) => return Attempt::Done(TempoResult::Error(e)),
                Attempt::Transient(e) => return Attempt::Transient(e),
            };
            let resp = match self
                .http
                .client
                .get(&url)
                .bearer_auth(&token)
                .header("Accept", "application/json")
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return Attempt::Transient(send_error(&e)),
            };
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && !refreshed {
                tracing::info!("tempo_rte_token_rejected");
                refreshed = true;
                continue;
            }
            let body = match resp.text().await {
                Ok(b) => b,
                Err(e) => return Attempt::Transient(send_error(&e)),
            };
            return self.decode(date, status, &body);
        }
    }

    fn decode(
        &self,
        date: NaiveDate,
        status: reqwest::StatusCode,
        body: &str,
    ) -> Attempt<TempoResult> {
        if status == reqwest::StatusCode::BAD_REQUEST {
            let code = serde_json::from_str::<RteError>(body).ok().and_then(|e| {
                e.error
                    .map(|c| (c, e.error_description.unwrap_or_default()))
            });
            return Attempt::Done(match code {
                Some((c, _)) if c.ends_with("F04") => {
                    TempoResult::Unknown(format!("{c}: not published yet"))
                }
                Some((c, d)) => TempoResult::Error(format!("HTTP 400 {c}: {}", snippet(&d))),
                None => TempoResult::Error(format!("HTTP 400: {}", snippet(body))),
            });
        }
        if transient_status(status) {
            return Attempt::Transient(format!("HTTP {status}"));
        }
        if !status.is_success() {
            return Attempt::Done(TempoResult::Error(format!(
                "HTTP {status}: {}",
                snippet(body)
            )));
        }
        let cal: Calendars = match serde_json::from_str(body) {
            Ok(c) => c,
            Err(e) => {
                return Attempt::Done(TempoResult::Error(format!(
                    "undecodable answer ({e}): {}",
                    snippet(body)
                )));
            }
        };
        for v in &cal.tempo_like_calendars.values {
            let Ok(start) = DateTime::<FixedOffset>::parse_from_rfc3339(&v.start_date) else {
                continue;
            };
            if start.with_timezone(&TEMPO_TZ).date_naive() != date {
                continue;
            }
            return Attempt::Done(match TempoColour::parse(&v.value) {
                Ok(c) => TempoResult::Colour(c),
                Err(e) => TempoResult::Error(e),
            });
        }
        Attempt::Done(TempoResult::Unknown(format!(
            "no value for {date} in the answer"
        )))
    }
}

#[async_trait::async_trait]
impl ColourSource for RteSource {
    fn name(&self) -> &str {
        SourceKind::Rte.as_str()
    }

    async fn colour(&self, date: NaiveDate) -> TempoResult {
        self.http
            .with_retries(self.name(), || self.once(date))
            .await
    }
}

/// What the chain found: the result, which source gave it, and what every source said.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainAnswer {
    /// First definite colour, else Unknown when any source said unknown, else Error.
    pub result: TempoResult,
    /// Source of the definite colour.
    pub source: Option<String>,
    /// Every source asked, in order, with its answer.
    pub tried: Vec<(String, TempoResult)>,
}

impl ChainAnswer {
    /// One line naming each source's answer, for reasons and logs.
    pub fn summary(&self) -> String {
        self.tried
            .iter()
            .map(|(n, r)| match r {
                TempoResult::Colour(c) => format!("{n}: {c}"),
                TempoResult::Unknown(w) => format!("{n}: unknown ({w})"),
                TempoResult::Error(w) => format!("{n}: error ({w})"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Asks sources in order; the first definite colour wins.
#[derive(Clone)]
pub struct SourceChain {
    sources: Vec<Arc<dyn ColourSource>>,
}

impl SourceChain {
    /// A chain over explicit sources (tests, custom setups).
    pub fn new(sources: Vec<Arc<dyn ColourSource>>) -> Self {
        Self { sources }
    }

    /// The chain described by `settings.sources`.
    pub fn from_settings(settings: &TempoSettings) -> Result<Self, TempoError> {
        let mut sources: Vec<Arc<dyn ColourSource>> = Vec::new();
        for kind in &settings.sources {
            match kind {
                SourceKind::CouleurTempo => {
                    sources.push(Arc::new(CouleurTempoSource::new(settings)?))
                }
                SourceKind::Rte => sources.push(Arc::new(RteSource::new(settings)?)),
            }
        }
        Ok(Self { sources })
    }

    /// Asks each source in turn until one gives a colour.
    pub async fn colour(&self, date: NaiveDate) -> ChainAnswer {
        let mut tried = Vec::new();
        for s in &self.sources {
            let r = s.colour(date).await;
            match &r {
                TempoResult::Colour(c) => {
                    tracing::info!(source = s.name(), %date, colour = %c, "tempo_colour_fetched");
                }
                TempoResult::Unknown(w) => {
                    tracing::info!(source = s.name(), %date, reason = %w, "tempo_colour_unknown");
                }
                TempoResult::Error(w) => {
                    tracing::warn!(source = s.name(), %date, error = %w, "tempo_fetch_failed");
                }
            }
            let done = r.colour().is_some();
            tried.push((s.name().to_string(), r.clone()));
            if done {
                return ChainAnswer {
                    result: r,
                    source: Some(s.name().to_string()),
                    tried,
                };
            }
        }
        let mut answer = ChainAnswer {
            result: TempoResult::Error("no source configured".into()),
            source: None,
            tried,
        };
        let summary = answer.summary();
        if answer
            .tried
            .iter()
            .any(|(_, r)| matches!(r, TempoResult::Unknown(_)))
        {
            answer.result = TempoResult::Unknown(summary);
        } else if !answer.tried.is_empty() {
            answer.result = TempoResult::Error(summary);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rte_dates_are_paris_midnight_with_encoded_plus() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
        assert_eq!(rte_instant(d), "2026-01-15T00:00:00%2B01:00");
        let d = NaiveDate::from_ymd_opt(2026, 7, 15).unwrap();
        assert_eq!(rte_instant(d), "2026-07-15T00:00:00%2B02:00");
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let b = Duration::from_millis(100);
        for attempt in 0..4 {
            let d = backoff_delay(b, attempt);
            let exp = 100u64 << attempt;
            assert!(d.as_millis() as u64 >= exp && d.as_millis() as u64 <= exp * 3 / 2);
        }
        assert_eq!(backoff_delay(Duration::ZERO, 3), Duration::ZERO);
        let capped = backoff_delay(Duration::from_secs(10), 10);
        assert!(
            capped >= MAX_BACKOFF && capped <= MAX_BACKOFF * 3 / 2,
            "{capped:?}"
        );
    }
}
