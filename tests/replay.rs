//! The season replay over real winters of Tempo colours (a committed extract of the RTE history:
//! 2016–17 and 2021–22, Sep 1 → Apr 1), with the simulator's battery and house: the planner
//! beats the seed's fixed schedule, which beats no battery, planning on the house load it
//! learned from the replayed telemetry; the command's `--json` shape; bad
//! colour files refused with the line and reason, exit code 2.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::NaiveDate;
use marstek_bridge::replay::{ColourHistory, ReplayConfig, replay};
use marstek_bridge::tempo::TempoSettings;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tempo-winters-2016-2021.csv")
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn winter(from: &str, to: &str) -> marstek_bridge::replay::ReplayReport {
    let history = ColourHistory::read(&fixture()).unwrap();
    history.check_span(date(from), date(to)).unwrap();
    replay(
        &history,
        date(from),
        date(to),
        &ReplayConfig::venus_e(&TempoSettings::default()),
    )
}

fn assert_ordering(r: &marstek_bridge::replay::ReplayReport) {
    let cost = |n| r.strategy(n).unwrap().cost_eur;
    let none = cost("no_battery");
    let fixed = cost("fixed_schedule");
    let planner = cost("planner");
    assert!(fixed < none, "{r:?}");
    assert!(
        planner < fixed,
        "the planner must beat the fixed schedule: {r:?}"
    );
    assert_eq!(r.strategy("no_battery").unwrap().saved_eur, 0.0);
    assert_eq!(r.strategy("no_battery").unwrap().kwh_shifted, 0.0);
    let saved = r.strategy("planner").unwrap().saved_eur;
    assert!((saved - (none - planner)).abs() < 0.011, "{r:?}");
}

#[test]
fn winter_2016_17_planner_beats_fixed_schedule() {
    let r = winter("2016-11-01", "2017-03-31");
    assert_eq!(r.days, 151);
    assert_ordering(&r);
    // The planner plans on the learned house once a kind and colour has three days.
    assert!(r.learned_days > 100 && r.learned_days < 151, "{r:?}");
    // 22 red days × ~4.5 kWh each at least go through the battery under both strategies.
    assert!(
        r.strategy("fixed_schedule").unwrap().kwh_shifted > 22.0 * 4.0,
        "{r:?}"
    );
}

#[test]
fn winter_2021_22_planner_beats_fixed_schedule() {
    let r = winter("2021-11-01", "2022-03-31");
    assert_eq!(r.days, 151);
    assert_ordering(&r);
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_marstek-bridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MARSTEK_BRIDGE") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn replay_command_prints_the_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[tempo.tariff]\nwear = 0.03\n").unwrap();
    let out = bin()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--colours")
        .arg(fixture())
        .args(["--from", "2017-01-02", "--to", "2017-01-31", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["days"], 30);
    // 30 days of January: weekday blue/white days are learned after the first three of a kind.
    let learned = v["learned_days"].as_u64().unwrap();
    assert!(learned > 0 && learned < 30, "learned_days {learned}");
    let names: Vec<&str> = v["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["no_battery", "fixed_schedule", "planner"]);
    for s in v["strategies"].as_array().unwrap() {
        for k in ["cost_eur", "saved_eur", "kwh_shifted"] {
            assert!(s[k].is_number(), "{k} in {s}");
        }
        assert_eq!(s.as_object().unwrap().len(), 4, "{s}");
    }
    // The table names every strategy too.
    let out = bin()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--colours")
        .arg(fixture())
        .args(["--from", "2017-01-02", "--to", "2017-01-08"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fixed_schedule") && text.contains("planner"),
        "{text}"
    );
    assert!(text.contains("7 days"), "{text}");
    // 7 days: no kind and colour has 3 learned days before the last ones.
    assert!(
        text.contains("planner house load: learned from the replayed telemetry on "),
        "the replay says where the planner's load comes from: {text}"
    );
}

#[test]
fn bad_colour_files_are_refused_with_line_and_reason() {
    let bad = |text: &str| ColourHistory::parse(text).unwrap_err().to_string();
    assert_eq!(
        bad("date,colour\n2017-01-02,purple\n"),
        "line 2: unknown Tempo colour 'purple' (allowed: blue, white, red)"
    );
    assert!(bad("2017-01-02;red\n").starts_with("line 1: '2017-01-02;red' is not date,colour"));
    assert!(bad("2017-13-02,red\n").contains("is not a YYYY-MM-DD date"));
    assert!(bad("2017-01-07,red\n").contains("red days fall only on working days"));
    assert!(bad("2017-01-02,red\n2017-01-02,blue\n").contains("appears twice"));
    // 23 red working days in one season: more than the quota.
    let mut text = String::new();
    let mut d = date("2016-12-01");
    let mut reds = 0;
    while reds < 23 {
        if marstek_bridge::tempo::red_possible(d) {
            text.push_str(&format!("{d},red\n"));
            reds += 1;
        }
        d = d.succ_opt().unwrap();
    }
    assert_eq!(
        bad(&text),
        "season 2016-2017 has 23 red days, more than the quota of 22"
    );
    let h = ColourHistory::read(&fixture()).unwrap();
    let e = h
        .check_span(date("2017-03-01"), date("2017-06-01"))
        .unwrap_err();
    assert_eq!(e.to_string(), "no colour for 2017-04-02 in the file");
    let e = h
        .check_span(date("2017-03-01"), date("2017-02-01"))
        .unwrap_err();
    assert!(e.to_string().contains("is before"), "{e}");
    // Through the command: exit code 2, the reason on stderr, nothing on stdout.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, "date,colour\n2017-01-02,rouge\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "").unwrap();
    let out = bin()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--colours")
        .arg(&file)
        .args(["--from", "2017-01-02", "--to", "2017-01-02"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2: unknown Tempo colour 'rouge'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_full_history_file_passes_the_checks_when_present() {
    // CI clones shared/ beside the repository; skip quietly where it is not.
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/tempo-history.csv");
    if !full.exists() {
        return;
    }
    let h = ColourHistory::read(&full).unwrap();
    assert_eq!(h.counts(date("2016-11-01"), date("2017-03-31")).2, 22);
}
