//! The running half of the SOC window: [`CommandService::guard_soc`] watches every sample and
//! stops a Passive set-point that has reached `min_soc` (discharging) or `max_soc` (charging),
//! and a battery discharging in any mode at or below the day plan's floor in force (until the
//! floor's end), by setting Passive 0 W for the rest of its countdown (source `safety`, audited, the desired
//! state for that countdown) and raising a `soc_limit` alert. It remembers the Passive
//! set-point the bridge last applied per battery. Touches the command service and the alert
//! channel.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{CommandService, Origin};
use crate::domain::{
    Alert, AlertKind, Command, CommandSource, DeviceId, Mode, ModeConfig, Sample, Severity, Watts,
    soc_breach,
};

/// Countdown of the Passive 0 W set-point that stops a breach when the running set-point's own
/// countdown is unknown (set by another app), s.
const STOP_SECONDS: u32 = 300;

/// What the running check knows of each battery.
#[derive(Default)]
pub(super) struct SocState {
    /// The Passive set-point the bridge last applied: power and the end of its countdown.
    passive: HashMap<DeviceId, (Watts, Instant)>,
}

impl CommandService {
    fn soc_state(&self) -> std::sync::MutexGuard<'_, SocState> {
        self.soc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the set-point a successful command left on `device` (a Passive one with the
    /// end of its countdown; any other mode clears it).
    pub(super) fn note_set_point(&self, device: &DeviceId, command: &Command) {
        let Command::SetMode(cfg) = command else {
            return;
        };
        let mut state = self.soc_state();
        match cfg {
            ModeConfig::Passive { power, cd_time } => {
                let until = Instant::now() + Duration::from_secs(u64::from(*cd_time));
                state.passive.insert(device.clone(), (*power, until));
            }
            _ => {
                state.passive.remove(device);
            }
        }
    }

    /// Keeps the SOC window while set-points run, until `cancel`: when a sample shows a battery
    /// in Passive discharging at or below `min_soc` (or charging at or above `max_soc`), sets it
    /// to Passive 0 W for the rest of the countdown and raises a `soc_limit` alert. The power
    /// judged is the set-point the bridge applied, or the measured `bat_power` when the
    /// set-point came from elsewhere.
    pub async fn guard_soc(
        self,
        mut samples: broadcast::Receiver<Sample>,
        cancel: CancellationToken,
    ) {
        loop {
            let sample = tokio::select! {
                () = cancel.cancelled() => return,
                r = samples.recv() => match r {
                    Ok(s) => s,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if let Some((seconds, why)) =
                self.breach(&sample).or_else(|| self.floor_breach(&sample))
            {
                self.stop_set_point(&sample.device, seconds, why).await;
            }
        }
    }

    /// The countdown left and the reason when the sample breaches the SOC window.
    fn breach(&self, sample: &Sample) -> Option<(u32, String)> {
        let soc = sample.soc?;
        if sample.mode != Some(Mode::Passive) {
            return None;
        }
        let limits = self.fleet.get(&sample.device)?.limits();
        let now = Instant::now();
        let state = self.soc_state();
        let (power, seconds) = match state.passive.get(&sample.device) {
            Some((power, until)) if *until > now => {
                let left = until.duration_since(now).as_secs().max(1);
                (*power, u32::try_from(left).unwrap_or(STOP_SECONDS))
            }
            // bat_power is positive when discharging, like a command's power.
            _ => (sample.bat_power?, STOP_SECONDS),
        };
        soc_breach(&limits, power, soc).map(|why| (seconds, why))
    }

    /// The floor's window left and the reason when the sample shows a battery discharging (in
    /// any mode) at or below the day plan's floor: the Passive set-point the bridge applied
    /// when one runs (so a 0 W stop is not stopped again), else the measured `bat_power`.
    fn floor_breach(&self, sample: &Sample) -> Option<(u32, String)> {
        let soc = sample.soc?;
        let now = Instant::now();
        let power = match self.soc_state().passive.get(&sample.device) {
            Some((power, until)) if *until > now && sample.mode == Some(Mode::Passive) => *power,
            _ => sample.bat_power?,
        };
        let utc = Utc::now();
        let (floor, why) = self.floors.breach(&sample.device, power.0, soc, utc)?;
        let left = (floor.until - utc).num_seconds().clamp(1, 86_400);
        Some((u32::try_from(left).unwrap_or(STOP_SECONDS), why))
    }

    async fn stop_set_point(&self, device: &DeviceId, seconds: u32, why: String) {
        let stop = Command::SetMode(ModeConfig::Passive {
            power: Watts(0),
            cd_time: seconds,
        });
        let origin = Origin::new(CommandSource::Safety, json!({ "reason": why }));
        let outcome = match self.submit_one(device, &stop, origin).await {
            Ok(_) => format!("set to Passive 0 W for {seconds} s"),
            Err(e) => format!("stopping it failed: {e}"),
        };
        tracing::warn!(device = %device, reason = %why, outcome = %outcome, "soc_limit_reached");
        if let Some(tx) = &self.alerts {
            let _ = tx.send(Alert::raised(
                AlertKind::SocLimit,
                Severity::Warning,
                Some(device.clone()),
                format!("{why}; {outcome}"),
                Utc::now(),
            ));
        }
    }
}
