//! `marstek-bridge jobs preview`: the next fire times of a cron/interval trigger or a configured
//! job, in local time and UTC, as text or JSON. Pure: the caller passes the settings and `now`.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::SchedulerError;
use super::settings::SchedulerSettings;
use super::trigger::{Trigger, parse_zone};

/// Arguments of `jobs preview`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PreviewArgs {
    /// Cron pattern (5 fields, e.g. "0 6 * * *") or a trigger text ("interval:5m").
    #[arg(long, conflicts_with = "job")]
    pub cron: Option<String>,
    /// A configured job id (its configured trigger).
    #[arg(long)]
    pub job: Option<String>,
    /// IANA zone (default: `[scheduler] timezone`).
    #[arg(long)]
    pub tz: Option<String>,
    /// Start instant, RFC 3339 (default: now).
    #[arg(long)]
    pub from: Option<String>,
    /// How many fire times (1 to 1000).
    #[arg(long, default_value_t = 5)]
    pub count: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `jobs preview` and returns what to print.
pub fn preview_command(
    args: &PreviewArgs,
    settings: &SchedulerSettings,
    now: DateTime<Utc>,
) -> Result<String, SchedulerError> {
    let tz = match &args.tz {
        Some(z) => parse_zone(z)?,
        None => parse_zone(&settings.timezone)?,
    };
    if !(1..=1000).contains(&args.count) {
        return Err(SchedulerError::InvalidArgument(format!(
            "--count {} is out of range (1 to 1000)",
            args.count
        )));
    }
    let text = match (&args.cron, &args.job) {
        (Some(c), None) => {
            let c = c.trim();
            if c.starts_with("cron:") || c.starts_with("interval:") {
                c.to_string()
            } else {
                format!("cron:{c}")
            }
        }
        (None, Some(j)) => settings
            .trigger_text(j)
            .ok_or_else(|| SchedulerError::UnknownJob(j.clone()))?,
        _ => {
            return Err(SchedulerError::InvalidArgument(
                "give exactly one of --cron EXPR or --job ID".into(),
            ));
        }
    };
    let trigger = Trigger::parse(&text, tz)?;
    let from = match &args.from {
        Some(f) => DateTime::parse_from_rfc3339(f.trim())
            .map_err(|e| {
                SchedulerError::InvalidArgument(format!(
                    "--from '{f}' is not an RFC 3339 instant ({e}); e.g. 2026-03-28T12:00:00Z"
                ))
            })?
            .with_timezone(&Utc),
        None => now,
    };
    let fires = trigger.preview(from, args.count);
    if args.json {
        let list: Vec<_> = fires
            .iter()
            .map(|t| json!({ "local": t.with_timezone(&tz).to_rfc3339(), "utc": t }))
            .collect();
        let doc = json!({
            "trigger": trigger.to_string(), "timezone": tz.name(), "from": from, "fires": list,
        });
        return Ok(serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    let mut out = format!("{trigger} in {} from {}\n", tz.name(), from.to_rfc3339());
    for t in &fires {
        out.push_str(&format!(
            "{}  ({})\n",
            t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z (%:z)"),
            t.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    if fires.len() < args.count {
        out.push_str("(no further fire times)\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cron: &str) -> PreviewArgs {
        PreviewArgs {
            cron: Some(cron.into()),
            from: Some("2026-03-28T12:00:00Z".into()),
            count: 3,
            ..Default::default()
        }
    }

    #[test]
    fn six_am_paris_from_march_28() {
        let s = SchedulerSettings::default();
        let out = preview_command(&args("0 6 * * *"), &s, Utc::now()).expect("valid");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[1].contains("(2026-03-29T04:00:00Z)"), "{out}");
        assert!(lines[1].starts_with("2026-03-29 06:00:00 CEST"), "{out}");
        assert!(lines[2].contains("(2026-03-30T04:00:00Z)"), "{out}");
        assert!(lines[3].contains("(2026-03-31T04:00:00Z)"), "{out}");
        let json_out = preview_command(
            &PreviewArgs {
                json: true,
                ..args("0 6 * * *")
            },
            &s,
            Utc::now(),
        )
        .expect("valid");
        let v: serde_json::Value = serde_json::from_str(&json_out).expect("json");
        assert_eq!(v["fires"][0]["utc"], "2026-03-29T04:00:00Z");
        assert_eq!(v["fires"][0]["local"], "2026-03-29T06:00:00+02:00");
    }

    #[test]
    fn bad_arguments_are_refused_clearly() {
        let s = SchedulerSettings::default();
        let e = |a: PreviewArgs| preview_command(&a, &s, Utc::now()).expect_err("refused");
        assert!(e(args("0 6 * * * *")).to_string().contains("exactly 5"));
        assert!(matches!(
            e(PreviewArgs {
                tz: Some("Nowhere/Land".into()),
                ..args("0 6 * * *")
            }),
            SchedulerError::Trigger(_)
        ));
        assert!(matches!(
            e(PreviewArgs {
                from: Some("yesterday".into()),
                ..args("0 6 * * *")
            }),
            SchedulerError::InvalidArgument(_)
        ));
        assert!(matches!(
            e(PreviewArgs {
                cron: None,
                job: Some("job_nope".into()),
                ..args("x")
            }),
            SchedulerError::UnknownJob(_)
        ));
        let ok = preview_command(
            &PreviewArgs {
                cron: None,
                job: Some("job_health_check".into()),
                ..args("x")
            },
            &s,
            Utc::now(),
        )
        .expect("job preview");
        assert!(ok.contains("2026-03-28T12:01:00Z"), "{ok}");
    }
}
