//! `[tempo]` settings: which colour sources to ask and in what order, their URLs and RTE
//! credentials (inline or `_file`, never logged), HTTP timeout and retries, the retry plan and
//! fail-safe of the 11:30 check, and the precharge parameters. Pure data and validation; reading
//! a credentials file is the only I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Tariff, TempoColour};
use crate::domain::HhMm;

/// A secret string: `Debug`, `Display` and `Serialize` print `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; only for building the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A colour source the chain can ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// api-couleur-tempo.fr (community API, no credentials).
    CouleurTempo,
    /// RTE "Tempo Like Supply Contract" (OAuth2 client credentials).
    Rte,
}

impl SourceKind {
    /// Name used in logs, state and the store (`api-couleur-tempo`, `rte`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::CouleurTempo => "api-couleur-tempo",
            SourceKind::Rte => "rte",
        }
    }
}

/// What to assume when tomorrow's colour is still unknown at the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailSafe {
    /// Precharge anyway (cheap off-peak energy, protects against an unexpected red day).
    AssumeRed,
    /// Do not precharge.
    AssumeNotRed,
}

/// Settings of the `[tempo]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TempoSettings {
    /// Run the 11:30 check and the precharge planner.
    pub enabled: bool,
    /// Sources asked in order; the first definite colour wins.
    pub sources: Vec<SourceKind>,
    /// Base URL of api-couleur-tempo.fr (the client appends `/api/jourTempo/{date}`).
    pub couleur_tempo_url: String,
    /// RTE OAuth2 token endpoint.
    pub rte_token_url: String,
    /// RTE Tempo API base (the client appends `/tempo_like_calendars`).
    pub rte_api_url: String,
    /// RTE application client id.
    pub rte_client_id: Option<Secret>,
    /// File holding the RTE client id (wins over `rte_client_id`).
    pub rte_client_id_file: Option<PathBuf>,
    /// RTE application client secret.
    pub rte_client_secret: Option<Secret>,
    /// File holding the RTE client secret (wins over `rte_client_secret`).
    pub rte_client_secret_file: Option<PathBuf>,
    /// Timeout of one HTTP request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts per source after a transient failure (timeout, 429, 5xx).
    pub retries: u32,
    /// First backoff between attempts; doubles each time (at most 60s), plus up to 50 % jitter.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Local (Europe/Paris) times to ask again while tomorrow is unknown; the last is the deadline.
    pub retry_plan: Vec<HhMm>,
    /// Decision taken when the colour is still unknown at the deadline.
    pub fail_safe: FailSafe,
    /// Colours of tomorrow that trigger a precharge tonight.
    pub precharge_colours: Vec<TempoColour>,
    /// SOC to reach by 06:00, %.
    pub target_soc: u8,
    /// Extra power on top of the exact need (0.1 = +10 %).
    pub margin: f64,
    /// A battery below target − tolerance at 06:00 raises `precharge_short`, SOC points.
    pub tolerance: u8,
    /// Compute and publish the plan, never touch a battery.
    pub dry_run: bool,
    /// Usable capacity, Wh, for batteries that do not report a rated capacity.
    pub capacity_wh: Option<u32>,
    /// Usable capacity per device id, Wh; wins over the reported rated capacity.
    pub device_capacity_wh: BTreeMap<String, u32>,
    /// The six Tempo prices, export price and wear cost (`[tempo.tariff]`).
    pub tariff: Tariff,
    /// Round-trip efficiency of the batteries (AC in → AC out), 0 < η ≤ 1.
    pub efficiency: f64,
    /// J+2…J+9 forecast (open-dpe `tempo_days_lite.json` shape); empty = no forecast.
    pub forecast_url: String,
    /// Apply the planner's night decision at 22:00 (off: the seed's red-day precharge).
    pub planner: bool,
    /// Expected house load per Paris hour (24 values, index 0 = 00:00–01:00), W.
    pub load_profile_w: Vec<f64>,
}

/// Default house profile, W per hour: 250 W base, morning and evening peaks (about 6.0 kWh in
/// HP and 2.1 kWh in HC a day, the simulator's house).
pub const DEFAULT_LOAD_PROFILE_W: [f64; 24] = [
    250.0, 250.0, 250.0, 250.0, 252.0, 277.0, 371.0, 450.0, 371.0, 277.0, 252.0, 250.0, 250.0,
    250.0, 253.0, 271.0, 344.0, 506.0, 673.0, 673.0, 506.0, 344.0, 271.0, 253.0,
];

/// Default round-trip efficiency, AC to AC (Venus E owners measure 85–90 %).
pub const DEFAULT_EFFICIENCY: f64 = 0.88;

impl Default for TempoSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            sources: vec![SourceKind::CouleurTempo],
            couleur_tempo_url: "https://www.api-couleur-tempo.fr".into(),
            rte_token_url: "https://digital.iservices.rte-france.com/token/oauth/".into(),
            rte_api_url:
                "https://digital.iservices.rte-france.com/open_api/tempo_like_supply_contract/v1"
                    .into(),
            rte_client_id: None,
            rte_client_id_file: None,
            rte_client_secret: None,
            rte_client_secret_file: None,
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_secs(1),
            retry_plan: vec![
                HhMm {
                    hour: 12,
                    minute: 0,
                },
                HhMm {
                    hour: 13,
                    minute: 0,
                },
                HhMm {
                    hour: 17,
                    minute: 0,
                },
            ],
            fail_safe: FailSafe::AssumeRed,
            precharge_colours: vec![TempoColour::Red],
            target_soc: 95,
            margin: 0.1,
            tolerance: 5,
            dry_run: false,
            capacity_wh: None,
            device_capacity_wh: BTreeMap::new(),
            tariff: Tariff::default(),
            efficiency: DEFAULT_EFFICIENCY,
            forecast_url: "https://open-dpe.fr/assets/tempo_days_lite.json".into(),
            planner: false,
            load_profile_w: DEFAULT_LOAD_PROFILE_W.to_vec(),
        }
    }
}

/// Reads one credential: the file (trimmed) when set, else the inline value.
fn read_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<Option<Secret>, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{key}_file: cannot read {}: {e}", path.display()))?;
        let t = text.trim();
        if t.is_empty() {
            return Err(format!("{key}_file: {} is empty", path.display()));
        }
        return Ok(Some(Secret::new(t)));
    }
    Ok(inline.clone().filter(|s| !s.expose().trim().is_empty()))
}

impl TempoSettings {
    /// The hourly house profile as the planner takes it (the default when misconfigured).
    pub fn load_profile(&self) -> [f64; 24] {
        <[f64; 24]>::try_from(self.load_profile_w.as_slice()).unwrap_or(DEFAULT_LOAD_PROFILE_W)
    }

    /// RTE credentials (client id, client secret) from the inline values or `_file`s; None when
    /// neither is configured.
    pub fn rte_credentials(&self) -> Result<Option<(Secret, Secret)>, String> {
        let id = read_secret(
            &self.rte_client_id,
            &self.rte_client_id_file,
            "rte_client_id",
        )?;
        let secret = read_secret(
            &self.rte_client_secret,
            &self.rte_client_secret_file,
            "rte_client_secret",
        )?;
        match (id, secret) {
            (Some(i), Some(s)) => Ok(Some((i, s))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("rte_client_secret: missing while rte_client_id is set".into()),
            (None, Some(_)) => Err("rte_client_id: missing while rte_client_secret is set".into()),
        }
    }

    /// Problems as (key relative to `[tempo]`, reason and what is allowed); empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut push = |k: &str, m: String| errs.push((k.to_string(), m));
        self.validate_sources(&mut push);
        self.validate_timing(&mut push);
        self.validate_plan(&mut push);
        errs
    }

    /// Sources, URLs and RTE credentials.
    fn validate_sources(&self, push: &mut impl FnMut(&str, String)) {
        if self.sources.is_empty() {
            push(
                "sources",
                "must list at least one source (couleur_tempo, rte)".into(),
            );
        }
        for (i, a) in self.sources.iter().enumerate() {
            if self.sources[..i].contains(a) {
                push("sources", format!("'{}' is listed twice", a.as_str()));
            }
        }
        let forecast = [("forecast_url", &self.forecast_url)];
        let optional = forecast.iter().filter(|(_, u)| !u.is_empty()).copied();
        for (key, url) in [
            ("couleur_tempo_url", &self.couleur_tempo_url),
            ("rte_token_url", &self.rte_token_url),
            ("rte_api_url", &self.rte_api_url),
        ]
        .into_iter()
        .chain(optional)
        {
            match url::Url::parse(url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                Ok(u) => push(
                    key,
                    format!("scheme '{}' is not allowed (http or https)", u.scheme()),
                ),
                Err(e) => push(key, format!("'{url}' is not a URL: {e}")),
            }
        }
        if self.sources.contains(&SourceKind::Rte) {
            match self.rte_credentials() {
                Ok(Some(_)) => {}
                Ok(None) => push(
                    "rte_client_id",
                    "source 'rte' needs rte_client_id and rte_client_secret (or their _file)"
                        .into(),
                ),
                Err(e) => {
                    let (k, m) = e.split_once(": ").unwrap_or(("rte_client_id", e.as_str()));
                    push(k, m.to_string());
                }
            }
        }
    }

    /// HTTP timing and the retry plan.
    fn validate_timing(&self, push: &mut impl FnMut(&str, String)) {
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(300) {
            push("timeout", "must be between 1ms and 5m".into());
        }
        if self.retries > 10 {
            push("retries", format!("{} is too many (0 to 10)", self.retries));
        }
        if self.backoff > Duration::from_secs(60) {
            push("backoff", "must be at most 60s".into());
        }
        if self.retry_plan.is_empty() {
            push(
                "retry_plan",
                "must hold at least one HH:MM (the last is the deadline)".into(),
            );
        }
        if self.retry_plan.windows(2).any(|w| w[0] >= w[1]) {
            push(
                "retry_plan",
                "times must be strictly increasing (e.g. [\"12:00\", \"13:00\", \"17:00\"])".into(),
            );
        }
        if let Some(last) = self.retry_plan.last()
            && last.hour >= 22
        {
            push(
                "retry_plan",
                format!("deadline {last} must be before the 22:00 night job"),
            );
        }
    }

    /// Precharge, capacity, efficiency, tariff and house profile.
    fn validate_plan(&self, push: &mut impl FnMut(&str, String)) {
        if self.precharge_colours.is_empty() && self.enabled {
            push(
                "precharge_colours",
                "must hold at least one of blue, white, red (or set enabled = false)".into(),
            );
        }
        if !(1..=100).contains(&self.target_soc) {
            push(
                "target_soc",
                format!("{} is out of range (1 to 100 %)", self.target_soc),
            );
        }
        if !self.margin.is_finite() || !(0.0..=1.0).contains(&self.margin) {
            push(
                "margin",
                format!("{} is out of range (0.0 to 1.0)", self.margin),
            );
        }
        if self.tolerance > 50 {
            push(
                "tolerance",
                format!("{} is out of range (0 to 50 SOC points)", self.tolerance),
            );
        }
        if let Some(c) = self.capacity_wh
            && !(100..=1_000_000).contains(&c)
        {
            push(
                "capacity_wh",
                format!("{c} is out of range (100 to 1000000 Wh)"),
            );
        }
        for (dev, c) in &self.device_capacity_wh {
            if !(100..=1_000_000).contains(c) {
                push(
                    &format!("device_capacity_wh.{dev}"),
                    format!("{c} is out of range (100 to 1000000 Wh)"),
                );
            }
        }
        if !(self.efficiency > 0.0 && self.efficiency <= 1.0) {
            push(
                "efficiency",
                format!("{} is out of range (above 0, at most 1.0)", self.efficiency),
            );
        }
        for (k, m) in self.tariff.validate() {
            push(&k, m);
        }
        if self.load_profile_w.len() != 24
            || self
                .load_profile_w
                .iter()
                .any(|w| !w.is_finite() || !(0.0..=50_000.0).contains(w))
        {
            push(
                "load_profile_w",
                "must hold 24 hourly loads, each 0 to 50000 W".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = TempoSettings::default();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        assert_eq!(s.target_soc, 95);
        assert_eq!(s.tolerance, 5);
        assert_eq!(s.precharge_colours, vec![TempoColour::Red]);
        assert_eq!(
            s.retry_plan.last().map(|h| h.to_string()),
            Some("17:00".into())
        );
    }

    #[test]
    fn toml_round_trip_with_humantime_and_hhmm() {
        let s: TempoSettings = toml::from_str(
            r#"
            sources = ["rte", "couleur_tempo"]
            rte_client_id = "id"
            rte_client_secret = "sec"
            timeout = "2s"
            backoff = "10ms"
            retry_plan = ["12:30", "16:00"]
            fail_safe = "assume_not_red"
            precharge_colours = ["red", "white"]
            "#,
        )
        .unwrap();
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.fail_safe, FailSafe::AssumeNotRed);
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let printed = toml::to_string(&s).unwrap();
        assert!(!printed.contains("sec\""), "{printed}");
        assert!(printed.contains("***"));
        assert!(!format!("{s:?}").contains("\"sec\""));
    }

    #[test]
    fn unknown_keys_and_bad_times_are_refused() {
        assert!(toml::from_str::<TempoSettings>("colour = 1").is_err());
        assert!(toml::from_str::<TempoSettings>("retry_plan = [\"25:00\"]").is_err());
    }

    #[test]
    fn validate_names_each_bad_key() {
        let s = TempoSettings {
            couleur_tempo_url: "not a url".into(),
            rte_api_url: "ftp://x".into(),
            sources: vec![SourceKind::Rte],
            target_soc: 0,
            margin: -1.0,
            retry_plan: vec![
                HhMm {
                    hour: 13,
                    minute: 0,
                },
                HhMm {
                    hour: 12,
                    minute: 0,
                },
            ],
            ..Default::default()
        };
        let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
        for k in [
            "couleur_tempo_url",
            "rte_api_url",
            "rte_client_id",
            "target_soc",
            "margin",
            "retry_plan",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn credentials_from_files_win_and_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("id");
        let sec = dir.path().join("secret");
        std::fs::write(&id, "file-id\n").unwrap();
        std::fs::write(&sec, "file-secret\n").unwrap();
        let s = TempoSettings {
            sources: vec![SourceKind::Rte],
            rte_client_id: Some(Secret::new("inline")),
            rte_client_id_file: Some(id),
            rte_client_secret_file: Some(sec),
            ..Default::default()
        };
        let (i, k) = s.rte_credentials().unwrap().unwrap();
        assert_eq!((i.expose(), k.expose()), ("file-id", "file-secret"));
        assert!(s.validate().is_empty());
        let missing = TempoSettings {
            sources: vec![SourceKind::Rte],
            rte_client_secret_file: Some(dir.path().join("nope")),
            rte_client_id: Some(Secret::new("x")),
            ..Default::default()
        };
        let errs = missing.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "rte_client_secret_file");
    }
}
