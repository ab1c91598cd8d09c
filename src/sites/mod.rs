//! Site identity for many sites in one view: the `bridge.site_id` rules (letters, digits, `_`,
//! `-`, 1 to 64), the default derived from the host name (a slug, stable across restarts), and
//! the one site of this process, which the metrics recorder puts on every series as the `site`
//! label. This file is pure apart from reading the host name. Submodules: `central`
//! (the `[central]` settings), `forward` (the store-and-forward task) and `fleet` (the
//! `fleet status` view of the central database).

pub mod central;
pub mod fleet;
pub mod forward;

use std::sync::OnceLock;

/// Longest site id, characters.
pub const MAX_LEN: usize = 64;

/// Site used when the host name yields nothing usable.
pub const FALLBACK_SITE: &str = "marstek-bridge";

/// Checks a configured site id: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn validate(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_LEN {
        return Err(format!("must be 1 to {MAX_LEN} characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("may only contain letters, digits, '_' and '-'".into());
    }
    Ok(())
}

/// A valid site id made from any text (a host name): lowercase, every run of other characters
/// turned into one `-`, trimmed of `-`, at most 64 characters; [`FALLBACK_SITE`] when empty.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in text.trim().chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            dash = true;
        }
        if out.len() >= MAX_LEN {
            break;
        }
    }
    out.truncate(MAX_LEN);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        FALLBACK_SITE.into()
    } else {
        out
    }
}

/// The default site of this machine: the slug of its host name (`/etc/hostname`).
pub fn host_site() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        slug(host.lines().next().unwrap_or_default())
    })
    .clone()
}

static PROCESS_SITE: OnceLock<String> = OnceLock::new();

/// Records the site of this process for log lines and the metrics label (the first call, or
/// the first read, wins: one process serves one site; several bridges in one test process
/// share the first one's).
pub fn set_process_site(site: &str) {
    let _ = PROCESS_SITE.set(site.to_string());
}

/// The site of this process: the one recorded by [`set_process_site`] before the first call,
/// else [`host_site`].
pub fn process_site() -> &'static str {
    PROCESS_SITE.get_or_init(host_site)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_becomes_a_valid_stable_slug() {
        assert_eq!(slug("NAS.local"), "nas-local");
        assert_eq!(slug("  my  home/box__2 "), "my-home-box__2");
        assert_eq!(slug("--x--"), "x");
        assert_eq!(slug(""), FALLBACK_SITE);
        assert_eq!(slug("éé"), FALLBACK_SITE);
        let long = "a".repeat(200);
        assert_eq!(slug(&long).len(), MAX_LEN);
        for s in ["NAS.local", "", "--x--", &long, "é-a-é"] {
            assert!(validate(&slug(s)).is_ok(), "{s}");
        }
        assert_eq!(host_site(), host_site());
        assert!(validate(&host_site()).is_ok());
    }

    #[test]
    fn the_configuration_refuses_a_bad_site_id_and_defaults_to_the_host() {
        let mut s = crate::config::Settings::default();
        assert_eq!(s.site_id(), host_site());
        assert!(!s.validate().iter().any(|i| i.key == "bridge.site_id"));
        s.bridge.site_id = Some("site a/1".into());
        let issues = s.validate();
        let issue = issues.iter().find(|i| i.key == "bridge.site_id");
        assert!(
            issue.is_some_and(|i| i.reason.contains("letters")),
            "{issues:?}"
        );
        s.bridge.site_id = Some("site-b".into());
        assert_eq!(s.site_id(), "site-b");
        assert!(!s.validate().iter().any(|i| i.key == "bridge.site_id"));
    }

    #[test]
    fn every_metric_carries_the_site_label() {
        let handle = crate::http::metrics_handle();
        metrics::counter!("marstek_site_label_check_total", "k" => "v").increment(1);
        let text = handle.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("marstek_site_label_check_total{"))
            .unwrap_or_else(|| panic!("no series: {text}"));
        assert!(
            line.contains(&format!("site=\"{}\"", process_site())),
            "{line}"
        );
    }

    #[test]
    fn bad_site_ids_are_refused() {
        assert!(validate("site-a_1").is_ok());
        for bad in ["", "a b", "a/b", "a+b", "#", "é", &"x".repeat(65)] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }
}
