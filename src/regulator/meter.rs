//! The grid meter as the regulator sees it: a payload from the meter's MQTT topic becomes a grid
//! power (W, + import) through the configured [`Extractor`] (JSON pointer or plain number, sign,
//! unit), or is refused with the reason (not JSON, no value at the pointer, not a number, NaN,
//! beyond the plausible bound). [`Meter`] keeps the latest good reading, counts refusals (the
//! first of a run is logged at warn, the rest at debug, the recovery at info), says when the
//! reading is stale, and falls back on the batteries' own CT readings when configured. Pure
//! apart from logging; the caller gives the time.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::settings::{Extractor, MeterSign, MeterUnit};

/// Why a meter payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadReading {
    /// Not UTF-8 text.
    #[error("the payload is not UTF-8 text")]
    NotText,
    /// Not JSON although a pointer is configured.
    #[error("the payload is not JSON ({0}); regulator.meter.pointer expects a JSON document")]
    NotJson(String),
    /// Nothing at the pointer.
    #[error("no value at {0} (regulator.meter.pointer)")]
    Missing(String),
    /// Something other than a number.
    #[error("'{0}' is not a number of watts")]
    NotNumber(String),
    /// NaN or infinite.
    #[error("the reading is not a finite number")]
    NotFinite,
    /// Beyond the plausible bound.
    #[error("{value:.0} W is beyond the plausible ±{max:.0} W (regulator.meter.max_abs_w)")]
    Implausible {
        /// The reading, W.
        value: f64,
        /// The bound, W.
        max: f64,
    },
}

fn number(v: &Value) -> Result<f64, BadReading> {
    match v {
        Value::Number(n) => n.as_f64().ok_or(BadReading::NotFinite),
        Value::String(s) => plain(s),
        other => Err(BadReading::NotNumber(short(&other.to_string()))),
    }
}

fn plain(s: &str) -> Result<f64, BadReading> {
    let t = s.trim().trim_matches('"').trim();
    t.parse::<f64>()
        .map_err(|_| BadReading::NotNumber(short(t)))
        .and_then(|x| {
            if x.is_finite() {
                Ok(x)
            } else {
                Err(BadReading::NotFinite)
            }
        })
}

fn short(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}

impl Extractor {
    /// The grid power in a payload, W (+ import), or why it was refused.
    pub fn read(&self, payload: &[u8]) -> Result<f64, BadReading> {
        let text = std::str::from_utf8(payload).map_err(|_| BadReading::NotText)?;
        let raw = match &self.pointer {
            None => plain(text)?,
            Some(p) => {
                let doc: Value = serde_json::from_str(text)
                    .map_err(|e| BadReading::NotJson(short(&e.to_string())))?;
                number(
                    doc.pointer(p)
                        .ok_or_else(|| BadReading::Missing(p.clone()))?,
                )?
            }
        };
        let watts = match self.unit {
            MeterUnit::W => raw,
            MeterUnit::Kw => raw * 1000.0,
        };
        let watts = match self.sign {
            MeterSign::ImportPositive => watts,
            MeterSign::ExportPositive => -watts,
        };
        if watts.abs() > self.max_abs_w {
            return Err(BadReading::Implausible {
                value: watts,
                max: self.max_abs_w,
            });
        }
        Ok(watts)
    }
}

/// Where a grid reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The configured meter topic.
    Meter,
    /// A battery's own CT (fallback).
    Ct,
}

impl Source {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Meter => "meter",
            Source::Ct => "ct",
        }
    }
}

/// The grid power usable now, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A fresh reading, W (+ import), and its source.
    Fresh(f64, Source),
    /// No fresh reading: why.
    Stale(String),
}

/// The meter's latest good reading, refusals and staleness.
#[derive(Debug, Clone)]
pub struct Meter {
    extractor: Extractor,
    stale_after: Duration,
    ct_stale_after: Option<Duration>,
    last: Option<(Instant, f64)>,
    ct: Option<(Instant, f64)>,
    refused: u64,
    bad_run: u64,
}

impl Meter {
    /// A meter reading with `extractor`, stale after `stale_after`; `ct_stale_after` = Some
    /// when the batteries' CT readings are the fallback (their own, longer, staleness).
    pub fn new(
        extractor: Extractor,
        stale_after: Duration,
        ct_stale_after: Option<Duration>,
    ) -> Self {
        Self {
            extractor,
            stale_after,
            ct_stale_after,
            last: None,
            ct: None,
            refused: 0,
            bad_run: 0,
        }
    }

    /// Readings refused since start.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The latest good meter reading, W (+ import), whatever its age.
    pub fn last(&self) -> Option<f64> {
        self.last.map(|(_, w)| w)
    }

    /// Takes a payload from the meter topic received at `now`; a refusal is counted and logged
    /// (warn for the first of a run, debug after), and leaves the last good reading as it was.
    pub fn accept(&mut self, payload: &[u8], now: Instant) -> Result<f64, BadReading> {
        match self.extractor.read(payload) {
            Ok(w) => {
                if self.bad_run > 0 {
                    tracing::info!(
                        refused = self.bad_run,
                        grid_w = w,
                        "meter_reading_good_again"
                    );
                    self.bad_run = 0;
                }
                self.last = Some((now, w));
                Ok(w)
            }
            Err(e) => {
                self.refused += 1;
                self.bad_run += 1;
                if self.bad_run == 1 {
                    tracing::warn!(reason = %e, refused_total = self.refused, "meter_reading_refused");
                } else {
                    tracing::debug!(reason = %e, refused_total = self.refused, "meter_reading_refused");
                }
                Err(e)
            }
        }
    }

    /// Notes a battery's CT reading (W, + import) taken at `at`.
    pub fn note_ct(&mut self, grid_w: f64, at: Instant) {
        if grid_w.is_finite() && grid_w.abs() <= self.extractor.max_abs_w {
            self.ct = Some((at, grid_w));
        }
    }

    /// The reading usable at `now`: the meter's when fresh, else the CT's when that is the
    /// fallback and fresh, else why neither is.
    pub fn reading(&self, now: Instant) -> Reading {
        let age = |at: Instant| now.saturating_duration_since(at);
        if let Some((at, w)) = self.last
            && age(at) <= self.stale_after
        {
            return Reading::Fresh(w, Source::Meter);
        }
        if let (Some(max), Some((at, w))) = (self.ct_stale_after, self.ct)
            && age(at) <= max
        {
            return Reading::Fresh(w, Source::Ct);
        }
        Reading::Stale(match self.last {
            None => "no meter reading yet".to_string(),
            Some((at, _)) => format!(
                "the last meter reading is {} s old (regulator.meter.stale_after = {} s)",
                age(at).as_secs(),
                self.stale_after.as_secs()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regulator::settings::{MeterPreset, MeterSettings};

    fn extractor(preset: MeterPreset) -> Extractor {
        MeterSettings {
            preset,
            ..Default::default()
        }
        .extractor()
    }

    #[test]
    fn each_preset_reads_its_publishers_payload() {
        let shelly3 = br#"{"id":0,"a_act_power":400.1,"b_act_power":300,"c_act_power":-100,"total_act_power":600.1,"total_aprt_power":700}"#;
        assert_eq!(extractor(MeterPreset::Shelly3em).read(shelly3), Ok(600.1));
        let shelly1 = br#"{"id":0,"voltage":231.2,"current":1.1,"act_power":-254.3}"#;
        assert_eq!(extractor(MeterPreset::ShellyEm).read(shelly1), Ok(-254.3));
        assert_eq!(
            extractor(MeterPreset::HaStatestream).read(b"1234.5"),
            Ok(1234.5)
        );
        let sml = br#"{"Time":"2026-12-02T06:00:00","SML":{"Total_in":12345.6,"Power_curr":-87}}"#;
        assert_eq!(extractor(MeterPreset::TasmotaSml).read(sml), Ok(-87.0));
        let tic = br#"{"Time":"2026-12-02T06:00:00","ENERGY":{"Total":1234.5,"Power":2310},"TIC":{"PAPP":2310}}"#;
        assert_eq!(
            extractor(MeterPreset::TasmotaTeleinfo).read(tic),
            Ok(2310.0)
        );
        assert_eq!(extractor(MeterPreset::Plain).read(b" -42 \n"), Ok(-42.0));
        assert_eq!(extractor(MeterPreset::Plain).read(b"\"17.5\""), Ok(17.5));
    }

    #[test]
    fn sign_and_unit_are_applied() {
        let e = MeterSettings {
            preset: MeterPreset::HaStatestream,
            unit: MeterUnit::Kw,
            sign: MeterSign::ExportPositive,
            ..Default::default()
        }
        .extractor();
        assert_eq!(e.read(b"1.25"), Ok(-1250.0));
    }

    #[test]
    fn bad_payloads_are_refused_with_the_reason() {
        let shelly = extractor(MeterPreset::Shelly3em);
        assert!(matches!(
            shelly.read(b"{not json"),
            Err(BadReading::NotJson(_))
        ));
        assert_eq!(
            shelly.read(br#"{"a_act_power":1}"#),
            Err(BadReading::Missing("/total_act_power".into()))
        );
        assert!(matches!(
            shelly.read(br#"{"total_act_power":null}"#),
            Err(BadReading::NotNumber(_))
        ));
        assert_eq!(shelly.read(&[0xff, 0xfe]), Err(BadReading::NotText));
        let plain = extractor(MeterPreset::Plain);
        assert_eq!(plain.read(b"NaN"), Err(BadReading::NotFinite));
        assert_eq!(plain.read(b"inf"), Err(BadReading::NotFinite));
        assert!(matches!(
            plain.read(b"unavailable"),
            Err(BadReading::NotNumber(_))
        ));
        let e = plain.read(b"1000000").unwrap_err();
        assert!(matches!(e, BadReading::Implausible { .. }));
        assert!(e.to_string().contains("max_abs_w"), "{e}");
    }

    #[test]
    fn a_refusal_keeps_the_last_good_reading_and_silence_makes_it_stale() {
        let t0 = Instant::now();
        let mut m = Meter::new(extractor(MeterPreset::Plain), Duration::from_secs(10), None);
        assert!(matches!(m.reading(t0), Reading::Stale(why) if why.contains("no meter reading")));
        assert_eq!(m.accept(b"300", t0), Ok(300.0));
        assert!(m.accept(b"NaN", t0 + Duration::from_secs(1)).is_err());
        assert!(m.accept(b"garbage", t0 + Duration::from_secs(2)).is_err());
        assert_eq!(m.refused(), 2);
        assert_eq!(
            m.reading(t0 + Duration::from_secs(9)),
            Reading::Fresh(300.0, Source::Meter)
        );
        let stale = m.reading(t0 + Duration::from_secs(11));
        assert!(
            matches!(&stale, Reading::Stale(why) if why.contains("11 s old")),
            "{stale:?}"
        );
    }

    #[test]
    fn the_ct_is_the_fallback_only_when_configured() {
        let t0 = Instant::now();
        let ten = Duration::from_secs(10);
        let mut m = Meter::new(
            extractor(MeterPreset::Plain),
            ten,
            Some(Duration::from_secs(90)),
        );
        m.note_ct(450.0, t0);
        assert_eq!(m.reading(t0 + ten * 6), Reading::Fresh(450.0, Source::Ct));
        assert!(matches!(m.reading(t0 + ten * 10), Reading::Stale(_)));
        m.accept(b"100", t0 + ten * 6).unwrap();
        assert_eq!(
            m.reading(t0 + ten * 6),
            Reading::Fresh(100.0, Source::Meter)
        );
        let mut no_ct = Meter::new(extractor(MeterPreset::Plain), ten, None);
        no_ct.note_ct(450.0, t0);
        assert!(matches!(no_ct.reading(t0), Reading::Stale(_)));
    }
}
