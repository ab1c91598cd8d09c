//! The firmware catalogue: one table of model family × firmware range → known quirks (each
//! with the public report it comes from, as in the reference's `firmware-quirks-2026.md`), a
//! severity (`warning` = a known-bad range) and the [`FirmwarePolicy`] the driver and the
//! verifier follow. [`lookup`] answers for a model string and a normalised firmware; a model or
//! firmware the table does not know gets the cautious policy ([`CAUTIOUS`]), which is not an
//! error. [`readme_section`] renders the table for the README's "Firmware notes" (a test keeps
//! the two equal). Pure data and functions; no I/O.

use super::profile::Family;
use crate::domain::{FirmwareNote, FirmwarePolicy, NoteSeverity, Quirk};

/// The spec's behaviour: `params.id` 0, string modes, GetMode every round, no UPS, 60 s polls
/// (faster polling is reported to make batteries unresponsive, jaapp #11), `bat_power` absent
/// (it is only sent by HMG-50 firmware 153).
const SPEC: FirmwarePolicy = FirmwarePolicy {
    get_mode_instance: 0,
    get_mode_integer: false,
    get_mode_sparingly: false,
    bat_power_missing: true,
    ignores_manual_power: false,
    passive_refused: false,
    ups: false,
    min_poll_interval_s: 60,
    api_may_switch_off: false,
    network_reset_period_s: None,
    network_reset_max_silence_s: 0,
};

/// Firmware ≥ 150 of Venus A/D/E 3.0: UPS served; `ES.GetMode` may answer only `params.id` 1
/// with an integer mode (taurgis PR #54), so 1 is asked first.
const GEN150: FirmwarePolicy = FirmwarePolicy {
    get_mode_instance: 1,
    get_mode_integer: true,
    ups: true,
    ..SPEC
};

/// Firmware 150 of Venus D/E 3.0 without cloud access: the network chip restarts every 900 s
/// (Wi-Fi; 1800 s on Ethernet) with 2–5 s of silence measured (sphings79/Marstek-offline-endpoint);
/// a silence of up to 30 s is taken for such a restart, not for a battery gone.
const RESET150: FirmwarePolicy = FirmwarePolicy {
    network_reset_period_s: Some(900),
    network_reset_max_silence_s: 30,
    ..GEN150
};

/// The 146–148 range: the Local API switches itself off under polling; slow polls, GetMode
/// sparingly (jaapp #85, #111).
const RISKY: FirmwarePolicy = FirmwarePolicy {
    get_mode_sparingly: true,
    min_poll_interval_s: 120,
    api_may_switch_off: true,
    ..SPEC
};

/// The policy of a model or firmware the catalogue does not know: `params.id` 1 first (the
/// order of the vendor's own library), integer modes accepted, GetMode read sparingly and
/// writes verified by power; UPS only from firmware 150 (set by [`lookup`]).
pub const CAUTIOUS: FirmwarePolicy = FirmwarePolicy {
    get_mode_instance: 1,
    get_mode_integer: true,
    get_mode_sparingly: true,
    ..SPEC
};

/// One row of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    /// Stable id (`<family>-<range>`).
    pub id: &'static str,
    /// Model family.
    pub family: Family,
    /// Firmware range, inclusive, normalised (`ver` 1476 counts as 147).
    pub firmware: (u32, u32),
    /// `Warning` for a known-bad range.
    pub severity: NoteSeverity,
    /// One line for people: what the firmware does and what the bridge does about it.
    pub note: &'static str,
    /// Known quirks as (what happens, public source).
    pub quirks: &'static [(&'static str, &'static str)],
    /// What the driver and the verifier do.
    pub policy: FirmwarePolicy,
}

const LOCAL_API_OFF: (&str, &str) = (
    "the Local API switches itself off under local polling, settings are wiped, resets every few hours",
    "jaapp #85, taurgis #14/#15, Flodesirat #4",
);
const PV1_DECIWATTS: (&str, &str) = (
    "PV1 power in deci-watts next to PV2–4 in watts (the driver scales it)",
    "taurgis #57",
);
const NET_RESET_150: (&str, &str) = (
    "the network chip restarts every 1800 s (Ethernet) or 900 s (Wi-Fi) when cloud uploads are not acknowledged: 2–5 s of silence",
    "sphings79/Marstek-offline-endpoint, sphings79/marstek_venus_modbus_dev #2",
);
const GETMODE_ID1: (&str, &str) = (
    "ES.GetMode may answer only params.id 1 and report the mode as an integer 0–4",
    "taurgis PR #54",
);

/// The catalogue (model family × firmware range), in README order.
pub const ENTRIES: &[Entry] = &[
    Entry {
        id: "venus-e3-139",
        family: Family::VenusE3,
        firmware: (0, 139),
        severity: NoteSeverity::Warning,
        note: "ES.GetStatus is missing: status comes from ES.GetMode and Bat.GetStatus; update the firmware",
        quirks: &[
            (
                "ES.GetStatus is not implemented (a support build labelled V242 adds it)",
                "jaapp #9",
            ),
            ("only integer JSON-RPC ids are answered", "jaapp #5"),
            (
                "fw 139: bat_temp in 0.1 °C and bat_capacity in 10 Wh (the driver scales them)",
                "jaapp PR #32",
            ),
        ],
        policy: SPEC,
    },
    Entry {
        id: "venus-e3-140-145",
        family: Family::VenusE3,
        firmware: (140, 145),
        severity: NoteSeverity::Info,
        note: "no known firmware bug; battery power is derived from grid, off-grid and PV power",
        quirks: &[(
            "ES.GetStatus carries no bat_power (clients showing it from the reply read idle)",
            "jaapp #76, #91",
        )],
        policy: SPEC,
    },
    Entry {
        id: "venus-e3-146-147",
        family: Family::VenusE3,
        firmware: (146, 147),
        severity: NoteSeverity::Warning,
        note: "known-bad range: the Local API may switch itself off; polled slowly, Bat.GetStatus only now and then; 150 fixes it",
        quirks: &[
            LOCAL_API_OFF,
            (
                "Bat.GetStatus is suspected of triggering resets (read on extras rounds only)",
                "taurgis #14",
            ),
        ],
        policy: RISKY,
    },
    Entry {
        id: "venus-e3-148",
        family: Family::VenusE3,
        firmware: (148, 148),
        severity: NoteSeverity::Warning,
        note: "known-bad range: polling ES.GetMode can put the battery back in Auto and the Local API may switch itself off; 150 fixes it",
        quirks: &[
            (
                "background ES.GetMode polling corrupts the mode: Manual or Passive revert to Auto",
                "jaapp #111",
            ),
            LOCAL_API_OFF,
        ],
        policy: RISKY,
    },
    Entry {
        id: "venus-e3-150",
        family: Family::VenusE3,
        firmware: (150, 150),
        severity: NoteSeverity::Info,
        note: "recommended firmware; short periodic silences when the cloud is unreachable; UPS available",
        quirks: &[
            NET_RESET_150,
            (
                "Ethernet send bug fixed; timeouts still 23–33 % on some units",
                "taurgis #15, jaapp #132",
            ),
            GETMODE_ID1,
        ],
        policy: RESET150,
    },
    Entry {
        id: "venus-a-146-147",
        family: Family::VenusA,
        firmware: (146, 147),
        severity: NoteSeverity::Warning,
        note: "known-bad range: the Local API may switch itself off; polled slowly",
        quirks: &[LOCAL_API_OFF, PV1_DECIWATTS],
        policy: RISKY,
    },
    Entry {
        id: "venus-a-148",
        family: Family::VenusA,
        firmware: (148, 148),
        severity: NoteSeverity::Warning,
        note: "known-bad range: the Open API may disable itself; no battery power in the replies (inferred); busy writes re-sent",
        quirks: &[
            (
                "the Open API self-disables and AI switches to Manual without any local write",
                "MarstekEnergy/ha_marstek #19",
            ),
            (
                "no bat_power, pv_power and load totals 0, PV strings in mixed units, no battery voltage/current",
                "jaapp PR #129",
            ),
            (
                "ES.SetMode sometimes answers set_result false while busy and succeeds on retry",
                "jaapp PR #129",
            ),
            LOCAL_API_OFF,
        ],
        policy: RISKY,
    },
    Entry {
        id: "venus-a-149",
        family: Family::VenusA,
        firmware: (149, 149),
        severity: NoteSeverity::Info,
        note: "unit differences only (PV1 deci-watts, PV energy in 0.01 kWh), corrected by the driver",
        quirks: &[
            PV1_DECIWATTS,
            ("total_pv_energy in 0.01 kWh", "taurgis #35"),
        ],
        policy: SPEC,
    },
    Entry {
        id: "venus-a-150",
        family: Family::VenusA,
        firmware: (150, 150),
        severity: NoteSeverity::Info,
        note: "Open API fine; Modbus TCP may stop answering (not used by the bridge); UPS available",
        quirks: &[
            (
                "Modbus TCP accepted but unanswered until a reboot or a downgrade",
                "Omnibattery #445",
            ),
            PV1_DECIWATTS,
            GETMODE_ID1,
        ],
        policy: GEN150,
    },
    Entry {
        id: "venus-d-147-149",
        family: Family::VenusD,
        firmware: (147, 149),
        severity: NoteSeverity::Info,
        note: "unit differences only (PV1 deci-watts), corrected by the driver",
        quirks: &[PV1_DECIWATTS],
        policy: SPEC,
    },
    Entry {
        id: "venus-d-150",
        family: Family::VenusD,
        firmware: (150, 150),
        severity: NoteSeverity::Info,
        note: "short periodic silences when the cloud is unreachable; UPS available",
        quirks: &[NET_RESET_150, PV1_DECIWATTS, GETMODE_ID1],
        policy: RESET150,
    },
    Entry {
        id: "venus-e2-153",
        family: Family::VenusE2,
        firmware: (153, 153),
        severity: NoteSeverity::Warning,
        note: "known-bad: unicast requests may be ignored (ES.* answered to broadcast only); no CT reads",
        quirks: &[
            (
                "unicast ignored; ES.* answered only to broadcast",
                "jaapp #136",
            ),
            (
                "bat_power sent (0.1 W units); no EM.GetStatus before 155",
                "jaapp/ha-marstek-local-api scaling table",
            ),
        ],
        policy: FirmwarePolicy {
            bat_power_missing: false,
            ..SPEC
        },
    },
    Entry {
        id: "venus-e2-154",
        family: Family::VenusE2,
        firmware: (154, 154),
        severity: NoteSeverity::Info,
        note: "cloud-side timeouts reported after the update; grid totals in 100 Wh units (scaled)",
        quirks: &[(
            "154.215: only timeouts after the update (cloud path)",
            "hm2mqtt #152",
        )],
        policy: SPEC,
    },
    Entry {
        id: "venus-e2-155-157",
        family: Family::VenusE2,
        firmware: (155, 157),
        severity: NoteSeverity::Info,
        note: "no known firmware bug; CT reads from 155; grid totals in 100 Wh units (scaled)",
        quirks: &[(
            "grid and load totals in 100 Wh units from 154",
            "jaapp/ha-marstek-local-api scaling table",
        )],
        policy: SPEC,
    },
    Entry {
        id: "venus-e2-158",
        family: Family::VenusE2,
        firmware: (158, 158),
        severity: NoteSeverity::Warning,
        note: "known-bad: power reported unknown and state idle after the update",
        quirks: &[("V158.1: power \"unknown\", state idle", "jaapp #106")],
        policy: SPEC,
    },
    Entry {
        id: "venus-e-mini-150-299",
        family: Family::VenusEMini,
        firmware: (150, 299),
        severity: NoteSeverity::Info,
        note: "six Manual slots (0–5); UPS available",
        quirks: &[(
            "UPS mode from firmware 150, Venus E mini included",
            "taurgis PR #50",
        )],
        policy: FirmwarePolicy { ups: true, ..SPEC },
    },
    Entry {
        id: "venus-e-mini-300",
        family: Family::VenusEMini,
        firmware: (300, 300),
        severity: NoteSeverity::Warning,
        note: "known-bad: a Manual slot's power is silently dropped and Passive is refused; Manual writes are not reported verified",
        quirks: &[(
            "manual slot power silently dropped, Passive rejected",
            "jaapp #140",
        )],
        policy: FirmwarePolicy {
            ignores_manual_power: true,
            passive_refused: true,
            ups: true,
            ..SPEC
        },
    },
];

/// How users name a family.
pub fn family_label(f: Family) -> &'static str {
    match f {
        Family::VenusE3 => "Venus E 3.0",
        Family::VenusE2 => "Venus E 2.x / Venus C (HMG-50)",
        Family::VenusA => "Venus A",
        Family::VenusD => "Venus D",
        Family::VenusEMini => "Venus E mini",
        Family::Unknown => "unknown model",
    }
}

/// A firmware range as people read it: `148`, `146–147`, `≤ 139`.
pub fn range_label((lo, hi): (u32, u32)) -> String {
    match (lo, hi) {
        (0, hi) => format!("≤ {hi}"),
        (lo, hi) if lo == hi => lo.to_string(),
        (lo, hi) => format!("{lo}–{hi}"),
    }
}

/// The entry of `family` whose range holds `firmware`, if any.
pub fn find(family: Family, firmware: u32) -> Option<&'static Entry> {
    ENTRIES
        .iter()
        .find(|e| e.family == family && (e.firmware.0..=e.firmware.1).contains(&firmware))
}

/// What the catalogue says about a battery reporting `model` (the `device` string, any of the
/// spellings seen: `VenusE 3.0`, `Venus E v3`, `VNSE3-0`, …) and `firmware` (normalised).
/// Never fails: an unknown model or firmware gets the cautious policy.
pub fn lookup(model: &str, firmware: u32) -> FirmwareNote {
    let family = Family::from_device(model);
    let label = family_label(family);
    match find(family, firmware) {
        Some(e) => FirmwareNote {
            entry: e.id.into(),
            family: label.into(),
            firmware_range: range_label(e.firmware),
            matched: format!(
                "model '{model}' is {label}; firmware {firmware} is in {}",
                range_label(e.firmware)
            ),
            known: true,
            severity: e.severity,
            note: e.note.into(),
            quirks: e
                .quirks
                .iter()
                .map(|(summary, source)| Quirk {
                    summary: (*summary).into(),
                    source: (*source).into(),
                })
                .collect(),
            policy: e.policy,
        },
        None => unknown(model, family, firmware),
    }
}

/// The cautious answer for a model or firmware the table does not hold.
fn unknown(model: &str, family: Family, firmware: u32) -> FirmwareNote {
    let label = family_label(family);
    let known: Vec<String> = ENTRIES
        .iter()
        .filter(|e| e.family == family)
        .map(|e| range_label(e.firmware))
        .collect();
    let matched = if family == Family::Unknown {
        format!("model '{model}' is not a known Marstek family")
    } else {
        format!(
            "model '{model}' is {label}; firmware {firmware} is in none of its ranges ({})",
            known.join(", ")
        )
    };
    FirmwareNote {
        entry: "unknown".into(),
        family: label.into(),
        firmware_range: "any".into(),
        matched,
        known: false,
        severity: NoteSeverity::Info,
        note: "not in the firmware catalogue: cautious policy (ES.GetMode read sparingly, \
               params.id 1 first, writes verified by power)"
            .into(),
        quirks: Vec::new(),
        policy: FirmwarePolicy {
            ups: firmware >= 150,
            ..CAUTIOUS
        },
    }
}

/// The policy flags of an entry as a short list for people (`GetMode id 1`, `UPS`, …).
pub fn policy_summary(p: &FirmwarePolicy) -> String {
    let mut parts = vec![format!("GetMode id {}", p.get_mode_instance)];
    if p.get_mode_integer {
        parts.push("integer modes".into());
    }
    if p.get_mode_sparingly {
        parts.push("GetMode sparingly, verify by power".into());
    }
    if p.bat_power_missing {
        parts.push("bat_power inferred".into());
    }
    if p.ignores_manual_power {
        parts.push("Manual power ignored".into());
    }
    if p.passive_refused {
        parts.push("Passive refused".into());
    }
    if p.ups {
        parts.push("UPS".into());
    }
    parts.push(format!("poll ≥ {} s", p.min_poll_interval_s));
    if p.api_may_switch_off {
        parts.push("silence = Local API off?".into());
    }
    if let Some(s) = p.network_reset_period_s {
        parts.push(format!(
            "network reset every {s} s (≤ {} s silent: no offline)",
            p.network_reset_max_silence_s
        ));
    }
    parts.join("; ")
}

/// The README's "Firmware notes" table, generated from [`ENTRIES`] (plus the cautious row).
pub fn readme_section() -> String {
    let mut out = String::from(
        "| Model | Firmware | Severity | Note | Policy | Sources |\n|---|---|---|---|---|---|\n",
    );
    for e in ENTRIES {
        let mut sources: Vec<&str> = Vec::new();
        for (_, s) in e.quirks {
            if !sources.contains(s) {
                sources.push(s);
            }
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            family_label(e.family),
            range_label(e.firmware),
            e.severity.as_str(),
            e.note,
            policy_summary(&e.policy),
            sources.join("; ")
        ));
    }
    let cautious = unknown("?", Family::Unknown, 0);
    out.push_str(&format!(
        "| any other | any other | info | {} | {} (UPS from 150) | — |\n",
        cautious.note,
        policy_summary(&cautious.policy)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_matches_at_both_ends_and_not_beyond() {
        for e in ENTRIES {
            let (lo, hi) = e.firmware;
            assert_eq!(find(e.family, lo).map(|x| x.id), Some(e.id), "{} lo", e.id);
            assert_eq!(find(e.family, hi).map(|x| x.id), Some(e.id), "{} hi", e.id);
            if lo > 0 {
                assert_ne!(find(e.family, lo - 1).map(|x| x.id), Some(e.id), "{}", e.id);
            }
            assert_ne!(find(e.family, hi + 1).map(|x| x.id), Some(e.id), "{}", e.id);
        }
    }

    #[test]
    fn no_two_entries_overlap_and_ids_are_unique() {
        for (i, a) in ENTRIES.iter().enumerate() {
            for b in &ENTRIES[i + 1..] {
                assert_ne!(a.id, b.id);
                let overlap = a.family == b.family
                    && a.firmware.0 <= b.firmware.1
                    && b.firmware.0 <= a.firmware.1;
                assert!(!overlap, "{} and {} overlap", a.id, b.id);
            }
            assert!(a.firmware.0 <= a.firmware.1, "{}", a.id);
            assert!(!a.quirks.is_empty(), "{} has no quirk", a.id);
            for (q, s) in a.quirks {
                assert!(!q.is_empty() && !s.is_empty(), "{}", a.id);
            }
        }
    }

    #[test]
    fn venus_e3_boundaries() {
        let id = |fw| lookup("VenusE 3.0", fw).entry;
        assert_eq!(id(137), "venus-e3-139");
        assert_eq!(id(139), "venus-e3-139");
        assert_eq!(id(140), "venus-e3-140-145");
        assert_eq!(id(145), "venus-e3-140-145");
        assert_eq!(id(146), "venus-e3-146-147");
        assert_eq!(id(147), "venus-e3-146-147");
        assert_eq!(id(148), "venus-e3-148");
        assert_eq!(id(149), "unknown", "no report for 149 on the E 3.0");
        assert_eq!(id(150), "venus-e3-150");
        assert_eq!(id(151), "unknown");
        let n = lookup("VenusE 3.0", 148);
        assert!(n.known_bad() && n.policy.get_mode_sparingly && n.policy.api_may_switch_off);
        assert!(!lookup("VenusE 3.0", 150).policy.api_may_switch_off);
        assert!(!lookup("VenusE 3.0", 145).policy.api_may_switch_off);
        assert!(n.quirks.iter().any(|q| q.source == "jaapp #111"));
        assert_eq!(n.policy.min_poll_interval_s, 120);
        let n = lookup("VenusE 3.0", 150);
        assert!(!n.known_bad());
        assert_eq!(n.policy.get_mode_instance, 1);
        assert!(n.policy.ups && n.policy.get_mode_integer);
        assert_eq!(n.policy.network_reset_period_s, Some(900));
        assert_eq!(
            n.policy.reset_blackout(),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(lookup("VenusE 3.0", 148).policy.reset_blackout(), None);
        assert!(!lookup("VenusE 3.0", 145).policy.ups, "UPS gate at 150");
    }

    #[test]
    fn venus_a_d_boundaries() {
        let id = |m, fw| lookup(m, fw).entry;
        assert_eq!(id("VenusA", 145), "unknown");
        assert_eq!(id("VenusA", 146), "venus-a-146-147");
        assert_eq!(id("Venus A", 147), "venus-a-146-147");
        assert_eq!(id("VNSA-0", 148), "venus-a-148");
        assert_eq!(id("VenusA 3.0", 149), "venus-a-149");
        assert_eq!(id("VenusA", 150), "venus-a-150");
        assert_eq!(id("VenusA", 151), "unknown");
        let a148 = lookup("VenusA", 148);
        assert!(a148.known_bad() && a148.policy.bat_power_missing);
        assert!(a148.quirks.iter().any(|q| q.source == "jaapp PR #129"));
        assert_eq!(id("VenusD", 146), "unknown");
        assert_eq!(id("Venus D", 147), "venus-d-147-149");
        assert_eq!(id("VNSD-0", 149), "venus-d-147-149");
        assert_eq!(id("VenusD", 150), "venus-d-150");
        assert_eq!(id("VenusD", 151), "unknown");
        assert!(!lookup("VenusD", 149).known_bad());
    }

    #[test]
    fn venus_e2_and_mini_boundaries() {
        let id = |m, fw| lookup(m, fw).entry;
        assert_eq!(id("VenusE", 152), "unknown");
        assert_eq!(id("VenusE", 153), "venus-e2-153");
        assert!(!lookup("VenusE", 153).policy.bat_power_missing);
        assert_eq!(id("VenusC", 154), "venus-e2-154");
        assert_eq!(id("Venus E v2", 155), "venus-e2-155-157");
        assert_eq!(id("VenusE", 157), "venus-e2-155-157");
        assert_eq!(id("VenusE", 158), "venus-e2-158");
        assert!(lookup("VenusE", 158).known_bad());
        assert_eq!(id("VenusE", 159), "unknown");
        assert_eq!(id("Venus E mini", 149), "unknown");
        assert_eq!(id("Venus E mini", 150), "venus-e-mini-150-299");
        assert_eq!(id("VNSEM-0", 299), "venus-e-mini-150-299");
        assert_eq!(id("VNSEM-0", 300), "venus-e-mini-300");
        assert_eq!(id("Venus E mini", 301), "unknown");
        let m = lookup("VNSEM-0", 300);
        assert!(m.known_bad() && m.policy.ignores_manual_power && m.policy.passive_refused);
        assert!(m.quirks.iter().any(|q| q.source == "jaapp #140"));
    }

    #[test]
    fn model_spellings_from_the_captures_are_recognised() {
        for model in [
            "VenusE 3.0",
            "Venus E 3.0",
            "Venus E v3",
            "VNSE3-0",
            "venuse 3.0",
        ] {
            assert_eq!(lookup(model, 148).entry, "venus-e3-148", "{model}");
        }
        let n = lookup("Venus E v3", 148);
        assert_eq!(n.family, "Venus E 3.0");
        assert!(n.matched.contains("'Venus E v3'") && n.matched.contains("148"));
    }

    #[test]
    fn unknown_model_or_firmware_is_cautious_not_an_error() {
        let n = lookup("B2500", 110);
        assert!(!n.known && !n.known_bad());
        assert_eq!(n.entry, "unknown");
        assert!(
            n.matched.contains("not a known Marstek family"),
            "{}",
            n.matched
        );
        assert!(n.policy.get_mode_sparingly);
        assert_eq!(n.policy.get_mode_instance, 1);
        assert!(!n.policy.ups);
        let n = lookup("VenusE 3.0", 151);
        assert!(n.policy.ups, "the UPS gate still applies");
        assert!(n.matched.contains("none of its ranges"), "{}", n.matched);
        assert!(n.matched.contains("146–147"), "{}", n.matched);
        assert!(lookup("", 0).policy.get_mode_sparingly);
    }

    #[test]
    fn readme_section_has_a_row_per_entry_and_the_cautious_row() {
        let s = readme_section();
        assert_eq!(s.lines().count(), 2 + ENTRIES.len() + 1);
        assert!(s.contains("| Venus E 3.0 | 148 | warning |"), "{s}");
        assert!(s.contains("| Venus E 3.0 | ≤ 139 | warning |"), "{s}");
        assert!(s.contains("jaapp #140"));
        assert!(s.contains("| any other | any other | info |"));
    }
}
