//! Verification by effect: after a mode write, the battery is watched for a bounded window
//! until it shows what the command was for, the mode read back AND, for a Passive set-point or
//! a Manual slot due at every minute, the measured battery power in the asked direction and of
//! roughly the asked size (within the battery's limits and SOC; `domain::expected_power`).
//! Where reading the mode would undo the write (fw 148), the driver infers it from that power,
//! so the power is the only evidence there. Firmware acknowledges writes it then ignores or undoes
//! (`firmware-quirks-2026.md` §3: jaapp #72, #111, #145), so an echo is not proof. The first
//! write ([`first_write`]) is what the command answers on (re-sent while the battery is busy);
//! a write whose effect is still to be seen is then followed up ([`follow_up`], run in the
//! background by the control layer): re-sent with a growing pause a bounded number of times,
//! it ends in a [`Verdict`], [`NotHolding`] carrying what was observed when it never took.
//! Settings are the `[marstek.verify]` section. Touches only the battery handle it is given
//! (polls, re-sends).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::{
    BatteryRef, Command, CommandReport, DeviceLimits, DriverError, Mode, ModeConfig,
    PowerTolerance, Sample, expected_power,
};

/// `[marstek.verify]`: how a mode write is checked by its effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySettings {
    /// Check writes by their effect (default true); false = trust the mode read-back.
    pub enabled: bool,
    /// How long after a write its effect may take to show, per attempt (default 15 s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Pause between two status reads within the window (default 3 s).
    #[serde(with = "humantime_serde")]
    pub check_every: Duration,
    /// Re-sends of a write that did not take (default 2).
    pub resends: u32,
    /// Pause before the first re-send, doubled for each further one (default 5 s; the vendor
    /// asks for 5–10 s between commands).
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Measured power may differ from the asked power by this much, W (default 150)…
    pub power_tolerance_w: u32,
    /// …or by this share of the asked power, % (default 25), whichever is larger.
    pub power_tolerance_pct: u8,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(15),
            check_every: Duration::from_secs(3),
            resends: 2,
            backoff: Duration::from_secs(5),
            power_tolerance_w: 150,
            power_tolerance_pct: 25,
        }
    }
}

impl VerifySettings {
    /// Problems found, as (key path relative to `[marstek.verify]`, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut bad = |k: &str, why: &str| v.push((k.to_string(), why.to_string()));
        if self.window > Duration::from_secs(600) {
            bad("window", "must be at most 10m (default 15s)");
        }
        if self.check_every.is_zero() || self.check_every > Duration::from_secs(60) {
            bad("check_every", "must be between 1ms and 60s (default 3s)");
        }
        if self.resends > 10 {
            bad("resends", "must be 0 to 10 (default 2)");
        }
        if self.backoff > Duration::from_secs(600) {
            bad("backoff", "must be at most 10m (default 5s)");
        }
        if self.power_tolerance_pct > 100 {
            bad("power_tolerance_pct", "must be 0 to 100 (default 25)");
        }
        v
    }
}

/// What a battery showed when it was last looked at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Mode it reported (None when not read).
    pub mode: Option<Mode>,
    /// Measured battery power, W (+ discharge, − charge), when read.
    pub bat_power_w: Option<i32>,
    /// SOC, %, when read.
    pub soc: Option<u8>,
}

impl Observed {
    fn from_sample(s: &Sample) -> Self {
        Self {
            mode: s.mode,
            bat_power_w: s.bat_power.map(|w| w.0),
            soc: s.soc.map(|p| p.0),
        }
    }
}

/// A write the battery acknowledged and did not carry out (or undid) within every window.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not_holding")]
pub struct NotHolding {
    /// What the command was for: the mode, and the power when it can be measured, W.
    pub expected_mode: Mode,
    /// Expected battery power, W (+ discharge, − charge), when checked.
    pub expected_power_w: Option<i32>,
    /// What the battery showed last.
    pub observed: Observed,
    /// Writes sent (the first one and the re-sends).
    pub attempts: u32,
}

impl NotHolding {
    /// The `observed` document of an error response.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "expected": { "mode": self.expected_mode, "bat_power": self.expected_power_w },
            "mode": self.observed.mode,
            "bat_power": self.observed.bat_power_w,
            "soc": self.observed.soc,
            "attempts": self.attempts,
        })
    }
}

/// What a mode command should make the battery show.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Expectation {
    mode: Mode,
    /// Battery power, W, when the effect is measurable (Passive within limits and SOC).
    power_w: Option<i32>,
}

/// The effect of `config` on a battery with these limits and this SOC: the mode, and the
/// power when it is measurable ([`expected_power`]: a Passive set-point or an always-due Manual
/// slot, within the limits, unless the battery is at the SOC bound it would push against).
fn expectation(config: &ModeConfig, limits: &DeviceLimits, soc: Option<u8>) -> Expectation {
    Expectation {
        mode: config.mode(),
        power_w: expected_power(config, limits, soc),
    }
}

impl VerifySettings {
    fn power_matches(&self, expected: i32, measured: i32) -> bool {
        PowerTolerance {
            watts: self.power_tolerance_w,
            pct: self.power_tolerance_pct,
        }
        .matches(expected, measured)
    }

    /// Whether `seen` shows `want`: the mode (when read) and the power (when expected and read).
    /// A sample without a mode relies on the power; one with neither proves nothing.
    fn holds(&self, want: &Expectation, seen: &Observed) -> bool {
        let mode_ok = seen.mode.map(|m| m == want.mode);
        let power_ok = match (want.power_w, seen.bat_power_w) {
            (Some(e), Some(m)) => Some(self.power_matches(e, m)),
            (Some(_), None) => None,
            (None, _) => Some(true),
        };
        match (mode_ok, power_ok) {
            (Some(m), Some(p)) => m && p,
            (None, Some(p)) => p && want.power_w.is_some(),
            (Some(m), None) => m,
            (None, None) => false,
        }
    }
}

/// Watches `battery` for up to one window; Ok(observed) as soon as it holds, Err(last seen).
async fn watch_window(
    battery: &BatteryRef,
    want: &Expectation,
    settings: &VerifySettings,
) -> Result<Observed, Observed> {
    let deadline = tokio::time::Instant::now() + settings.window;
    let mut last = Observed::default();
    loop {
        match battery.poll().await {
            Ok(sample) => {
                last = Observed::from_sample(&sample);
                if settings.holds(want, &last) {
                    return Ok(last);
                }
            }
            // the device actor has stopped (bridge shutting down): nothing more to watch
            Err(DriverError::Closed) => return Err(last),
            Err(_) => {}
        }
        if tokio::time::Instant::now() + settings.check_every > deadline {
            return Err(last);
        }
        tokio::time::sleep(settings.check_every).await;
    }
}

/// The pause before write number `attempts + 1`: the backoff, doubled for each earlier re-send.
fn pause(settings: &VerifySettings, attempts: u32) -> Duration {
    settings.backoff * 2u32.saturating_pow(attempts.saturating_sub(1))
}

/// A mode write the battery acknowledged whose effect is still to be seen: what to look for
/// and how many writes were sent so far.
#[derive(Debug, Clone)]
pub(super) struct FollowUp {
    want: Expectation,
    attempts: u32,
}

/// Writes `command` (a mode command) until the battery acknowledges it: a write refused while
/// the battery is busy (`set_result: false`) is re-sent after a growing pause, at most
/// `resends` times; other driver errors end it. The report is `verified` at once when the mode
/// read back is all the command was for; otherwise the [`FollowUp`] says what to watch for
/// ([`follow_up`]), and the report stays unverified.
pub(super) async fn first_write(
    battery: &BatteryRef,
    command: &Command,
    config: &ModeConfig,
    settings: &VerifySettings,
) -> Result<(CommandReport, Option<FollowUp>), DriverError> {
    let want = expectation(config, &battery.limits(), battery.soc().map(|p| p.0));
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match battery.execute(command).await {
            Ok(mut report) => {
                if let Some(why) = unseen_effect(battery, config, &want) {
                    // the firmware never shows this effect: waiting for it would only end in
                    // not_holding; the answer says why it stays unverified
                    report.verified = false;
                    report.note = Some(why);
                    return Ok((report, None));
                }
                let quick = Observed {
                    mode: report.observed_mode,
                    ..Observed::default()
                };
                // a mode-only expectation is met by the read-back the driver already made
                if want.power_w.is_none() && settings.holds(&want, &quick) {
                    report.verified = true;
                    return Ok((report, None));
                }
                report.verified = false;
                return Ok((report, Some(FollowUp { want, attempts })));
            }
            Err(e @ DriverError::Rejected { .. }) if attempts > settings.resends => return Err(e),
            Err(DriverError::Rejected { .. }) => {}
            Err(e) => return Err(e),
        }
        let pause = pause(settings, attempts);
        tracing::info!(device = %battery.id(), command = command.name(), attempt = attempts + 1, pause_ms = pause.as_millis() as u64, "command_resent");
        tokio::time::sleep(pause).await;
    }
}

/// Why the effect of `config` cannot be seen on this battery's firmware, per the catalogue
/// note the driver attached to its identity: a Manual slot with a power on firmware that
/// silently drops it (Venus E mini fw 300, jaapp #140), or a Manual/Passive command with no
/// measurable power (`want`) where `ES.GetMode` is read sparingly: there the mode read back is
/// no evidence (answering it reverts the battery to Auto on fw 148, jaapp #111), so the driver
/// does not ask. None when it can be checked.
fn unseen_effect(battery: &BatteryRef, config: &ModeConfig, want: &Expectation) -> Option<String> {
    let note = battery.info()?.firmware_note?;
    let source = |fallback: &str| {
        note.quirks
            .first()
            .map(|q| q.source.clone())
            .unwrap_or_else(|| fallback.to_string())
    };
    if let ModeConfig::Manual { slot } = config
        && note.policy.ignores_manual_power
        && slot.enable
        && slot.power.0 != 0
    {
        return Some(format!(
            "firmware catalogue entry {}: this firmware ignores a Manual slot's power, so the \
             {} W of slot {} cannot be verified ({})",
            note.entry,
            slot.power.0,
            slot.slot,
            source("catalogue")
        ));
    }
    let undone_by_getmode = matches!(
        config,
        ModeConfig::Manual { .. } | ModeConfig::Passive { .. }
    );
    (note.policy.get_mode_sparingly && undone_by_getmode && want.power_w.is_none()).then(|| {
        format!(
            "firmware catalogue entry {}: ES.GetMode is not read back on this firmware (it can \
             revert the battery to Auto, jaapp #111) and this {} command has no power to \
             measure now, so it cannot be verified",
            note.entry,
            config.mode()
        )
    })
}

/// How a verification that ran after its command was answered ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The battery showed the effect.
    Verified {
        /// What it showed.
        observed: Observed,
        /// Writes sent (the first one and the re-sends).
        attempts: u32,
    },
    /// It did not, in any window, after every re-send.
    NotHolding(NotHolding),
    /// A newer mode command to the same battery replaced it first.
    Superseded,
    /// The bridge (or the device's actor) stopped first.
    Stopped,
}

impl Verdict {
    /// The `verification` word of the verdict message.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Verified { .. } => "verified",
            Verdict::NotHolding(_) => "not_holding",
            Verdict::Superseded => "superseded",
            Verdict::Stopped => "stopped",
        }
    }
}

/// A verification still running after its command was answered; every clone sees its verdict.
#[derive(Debug, Clone)]
pub struct Pending {
    rx: watch::Receiver<Option<Verdict>>,
}

impl Pending {
    /// A pending verification and the sender of its verdict.
    pub(super) fn channel() -> (watch::Sender<Option<Verdict>>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self { rx })
    }

    /// Waits for the verdict ([`Verdict::Stopped`] when its task ended without one).
    pub async fn verdict(mut self) -> Verdict {
        match self.rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Verdict::Stopped),
            Err(_) => Verdict::Stopped,
        }
    }
}

/// Watches the battery after an acknowledged write until it shows the effect, re-sending the
/// write after a growing pause while it does not (at most `resends` re-sends, counting those
/// [`first_write`] made). Ends [`Verdict::Stopped`] as soon as `cancel` fires (the caller tells
/// a superseded verification from a shutdown) or the device actor has stopped. A re-send the
/// battery refuses or does not answer is watched like any other.
pub(super) async fn follow_up(
    battery: &BatteryRef,
    command: &Command,
    follow: FollowUp,
    settings: &VerifySettings,
    resends: u32,
    cancel: &CancellationToken,
) -> Verdict {
    let FollowUp { want, mut attempts } = follow;
    loop {
        let seen = tokio::select! {
            _ = cancel.cancelled() => return Verdict::Stopped,
            seen = watch_window(battery, &want, settings) => seen,
        };
        let last = match seen {
            Ok(observed) => return Verdict::Verified { observed, attempts },
            Err(last) => last,
        };
        if attempts > resends {
            return Verdict::NotHolding(NotHolding {
                expected_mode: want.mode,
                expected_power_w: want.power_w,
                observed: last,
                attempts,
            });
        }
        let pause = pause(settings, attempts);
        tracing::info!(device = %battery.id(), command = command.name(), attempt = attempts + 1, pause_ms = pause.as_millis() as u64, "command_resent");
        tokio::select! {
            _ = cancel.cancelled() => return Verdict::Stopped,
            _ = tokio::time::sleep(pause) => {}
        }
        attempts += 1;
        let sent = tokio::select! {
            _ = cancel.cancelled() => return Verdict::Stopped,
            sent = battery.execute(command) => sent,
        };
        match sent {
            Err(DriverError::Closed) => return Verdict::Stopped,
            Err(e) => {
                tracing::info!(device = %battery.id(), command = command.name(), error = %e, "command_resend_failed")
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Watts;

    fn passive(power: i32) -> ModeConfig {
        ModeConfig::Passive {
            power: Watts(power),
            cd_time: 600,
        }
    }

    fn seen(mode: Mode, power: i32) -> Observed {
        Observed {
            mode: Some(mode),
            bat_power_w: Some(power),
            soc: Some(50),
        }
    }

    #[test]
    fn passive_holds_only_with_the_mode_and_roughly_the_power_in_its_direction() {
        let s = VerifySettings::default();
        let want = expectation(&passive(-1500), &DeviceLimits::default(), Some(50));
        assert_eq!(want.power_w, Some(-1500));
        assert!(s.holds(&want, &seen(Mode::Passive, -1400)));
        assert!(!s.holds(&want, &seen(Mode::Passive, 0)), "idle");
        assert!(!s.holds(&want, &seen(Mode::Passive, 1500)), "discharging");
        assert!(!s.holds(&want, &seen(Mode::Auto, -1500)), "wrong mode");
        let no_mode = Observed {
            mode: None,
            ..seen(Mode::Auto, -1480)
        };
        assert!(
            s.holds(&want, &no_mode),
            "the power alone, when no mode is read"
        );
        assert!(!s.holds(&want, &Observed::default()), "nothing read");
    }

    #[test]
    fn the_expected_power_is_bounded_by_the_limits_and_the_soc() {
        let limits = DeviceLimits {
            max_charge_w: 800,
            ..DeviceLimits::default()
        };
        let want = expectation(&passive(-1500), &limits, Some(50));
        assert_eq!(want.power_w, Some(-800));
        let full = expectation(&passive(-1500), &limits, Some(100));
        assert_eq!(full.power_w, None, "a full battery rightly does not charge");
        let empty = expectation(&passive(500), &limits, Some(11));
        assert_eq!(empty.power_w, None);
        assert_eq!(expectation(&ModeConfig::Auto, &limits, None).power_w, None);
    }

    #[test]
    fn validation_names_keys() {
        let s = VerifySettings {
            resends: 11,
            power_tolerance_pct: 101,
            check_every: Duration::ZERO,
            ..VerifySettings::default()
        };
        let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["check_every", "resends", "power_tolerance_pct"]);
        assert!(VerifySettings::default().validate().is_empty());
    }
}
