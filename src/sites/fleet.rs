//! `marstek-bridge fleet status`: reads the central database named by `[central] url` (read
//! only: no migration, no write) and shows every site that forwarded to it — online or not,
//! last contact, batteries, firmware versions, backlog, commands failed in the last 24 h and €
//! saved ("n/a": no ledger is kept centrally) — as a table or JSON. A site two bridges claim
//! with different batteries shows `conflict` (and a `site_id_conflict` line naming them).
//! Touches only that database.

use chrono::{DateTime, Utc};

use super::central::CentralSettings;
use crate::store::central::{Central, SiteStatus};

/// Reads the fleet view; the error names `central.url` when it is unset.
pub async fn status(settings: &CentralSettings) -> anyhow::Result<Vec<SiteStatus>> {
    if !settings.enabled() {
        return Err(anyhow::Error::new(crate::config::ConfigError {
            issues: vec![crate::config::Issue {
                key: "central.url".into(),
                reason: "is not set: fleet status reads the central database".into(),
                location: None,
            }],
        }));
    }
    let target = settings.target();
    let read = async {
        let central = Central::connect_read_only(&target).await?;
        central.fleet_status(settings.offline_after).await
    };
    match tokio::time::timeout(settings.timeout * 2, read).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!(
            "central database {} did not answer within {:?}",
            settings.redacted_url(),
            settings.timeout * 2
        ),
    }
}

/// The fleet view as JSON: `{"sites": [...]}`.
pub fn json(sites: &[SiteStatus]) -> serde_json::Value {
    serde_json::json!({ "sites": sites })
}

/// The fleet view as a table, one line a site, ages relative to `now`.
pub fn table(sites: &[SiteStatus], now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:<20} {:>9} {:<14} {:>8} {:>12} {:>9}\n",
        "SITE",
        "STATE",
        "LAST CONTACT",
        "BATTERIES",
        "FIRMWARE",
        "BACKLOG",
        "FAILED 24H",
        "SAVED €"
    );
    for s in sites {
        let firmware = if s.firmware.is_empty() {
            "-".to_string()
        } else {
            s.firmware
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let saved = s
            .saved_eur
            .map(|e| format!("{e:.2}"))
            .unwrap_or_else(|| "n/a".into());
        out.push_str(&format!(
            "{:<20} {:<8} {:<20} {:>9} {:<14} {:>8} {:>12} {:>9}\n",
            s.site_id,
            state(s),
            age(s.last_contact, now),
            s.batteries,
            firmware,
            s.backlog,
            s.commands_failed_24h,
            saved
        ));
    }
    if sites.is_empty() {
        out.push_str("(no site has forwarded to this database yet)\n");
    }
    for s in sites.iter().filter(|s| !s.conflict.is_empty()) {
        out.push_str(&format!(
            "site_id_conflict: {} is claimed with different batteries by {}\n",
            s.site_id,
            s.conflict.join(", ")
        ));
    }
    out
}

/// `conflict` (two bridges claim the site with different batteries), `online` or `offline`.
fn state(s: &SiteStatus) -> &'static str {
    match (s.conflict.is_empty(), s.online) {
        (false, _) => "conflict",
        (true, true) => "online",
        (true, false) => "offline",
    }
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_site_and_na_without_a_ledger() {
        let now = Utc::now();
        let site = |id: &str, secs: i64, online: bool| SiteStatus {
            site_id: id.into(),
            last_contact: now - chrono::Duration::seconds(secs),
            online,
            backlog: 4,
            dropped: 0,
            batteries: 3,
            firmware: vec![139, 152],
            samples: 10,
            commands_failed_24h: 1,
            conflict: Vec::new(),
            saved_eur: None,
        };
        let t = table(&[site("site-a", 5, true), site("site-b", 7200, false)], now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].starts_with("site-a") && lines[1].contains("online"),
            "{t}"
        );
        assert!(
            lines[1].contains("5s ago") && lines[1].contains("139,152"),
            "{t}"
        );
        assert!(
            lines[2].contains("offline") && lines[2].contains("2h ago"),
            "{t}"
        );
        assert!(lines[2].trim_end().ends_with("n/a"), "{t}");
        assert!(table(&[], now).contains("no site"));
        assert!(!t.contains("site_id_conflict"), "{t}");
        let mut claimed = site("site-c", 5, true);
        claimed.conflict = vec!["edge-1".into(), "edge-2".into()];
        let t = table(&[claimed], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains("conflict"), "{t}");
        assert_eq!(
            lines[2],
            "site_id_conflict: site-c is claimed with different batteries by edge-1, edge-2"
        );
    }
}
