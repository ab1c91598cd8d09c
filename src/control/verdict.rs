//! Background verification of mode writes, run by the command service. A mode write the
//! battery acknowledged, but whose effect is still to be seen, is answered at once
//! (`verified: false` and a [`Pending`]); a task then watches the battery and re-sends the
//! write (`verify::follow_up`). Its verdict is recorded as a second audit row with the same
//! source, raises or clears `command_not_holding`, and goes to whoever holds the `Pending`
//! (the MQTT adapter publishes it on the response topic; HTTP `?wait=verified` answers with
//! it). One verification per device: a newer mode command supersedes it. The device counts as
//! being written while it runs. Touches the battery handle, the store (audit rows) and the
//! alert channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::Utc;
use serde_json::{Value, json};

use super::verify::{self, FollowUp};
use super::{CommandError, CommandService, NotHolding, Origin, Pending, Verdict};
use crate::domain::{
    Alert, AlertKind, AlertState, BatteryRef, Command, CommandReport, CommandSource, DeviceId,
    Mode, ModeConfig, Severity,
};
use crate::store::CommandRecord;

/// Numbers the background verifications (to tell a finished one from its successor).
static NEXT: AtomicU64 = AtomicU64::new(1);

impl Verdict {
    /// What the battery showed, as the `observed` document of the verdict message (None when
    /// superseded or stopped).
    pub fn observed_json(&self) -> Option<Value> {
        match self {
            Verdict::Verified { observed, attempts } => Some(json!({
                "mode": observed.mode,
                "bat_power": observed.bat_power_w,
                "soc": observed.soc,
                "attempts": attempts,
            })),
            Verdict::NotHolding(n) => Some(n.to_json()),
            Verdict::Superseded | Verdict::Stopped => None,
        }
    }
}

impl CommandService {
    /// A mode write checked by its effect: the first write (re-sent while the battery is busy)
    /// answers; when its effect is still to be seen, its verification goes on in the background
    /// and is left in `pending`. Any verification still running on the device is superseded.
    pub(super) async fn verify_mode_write(
        &self,
        battery: &BatteryRef,
        command: &Command,
        config: &ModeConfig,
        origin: &Origin,
        pending: &mut Option<Pending>,
    ) -> Result<CommandReport, CommandError> {
        let device = battery.id();
        self.supersede(device);
        let (report, follow) = verify::first_write(battery, command, config, &self.verify).await?;
        match follow {
            None => self.note_holding(device, config.mode(), None),
            Some(follow) => *pending = Some(self.spawn_follow_up(battery, command, follow, origin)),
        }
        Ok(report)
    }

    /// Ends the background verification running on `device`, if any (its verdict: superseded).
    pub(super) fn supersede(&self, device: &DeviceId) {
        let running = {
            let mut m = self.verifying.lock().unwrap_or_else(|p| p.into_inner());
            m.remove(device)
        };
        if let Some((_, token)) = running {
            token.cancel();
        }
    }

    /// Starts the follow-up of an acknowledged write in a task of its own.
    fn spawn_follow_up(
        &self,
        battery: &BatteryRef,
        command: &Command,
        follow: FollowUp,
        origin: &Origin,
    ) -> Pending {
        let device = battery.id().clone();
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let token = self.shutdown.child_token();
        {
            let mut m = self.verifying.lock().unwrap_or_else(|p| p.into_inner());
            m.insert(device.clone(), (number, token.clone()));
        }
        let writing = self.writing.start(&device);
        let (tx, pending) = Pending::channel();
        let service = self.clone();
        let battery = battery.clone();
        let command = command.clone();
        let (source, received) = (origin.source, origin.received.clone());
        let started = Instant::now();
        tokio::spawn(async move {
            let mut verdict =
                verify::follow_up(&battery, &command, follow, &service.verify, &token).await;
            if verdict == Verdict::Stopped
                && token.is_cancelled()
                && !service.shutdown.is_cancelled()
            {
                verdict = Verdict::Superseded;
            }
            {
                let mut m = service.verifying.lock().unwrap_or_else(|p| p.into_inner());
                if m.get(&device).is_some_and(|(n, _)| *n == number) {
                    m.remove(&device);
                }
            }
            drop(writing);
            service
                .conclude(&device, &command, &verdict, source, received, started)
                .await;
            let _ = tx.send(Some(verdict));
        });
        pending
    }

    /// Logs a verdict, raises or clears the alert and records the audit row (not for a
    /// superseded or stopped verification: the newer command has its own rows).
    async fn conclude(
        &self,
        device: &DeviceId,
        command: &Command,
        verdict: &Verdict,
        source: CommandSource,
        received: Value,
        started: Instant,
    ) {
        let Command::SetMode(config) = command else {
            return;
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let source_name = source.as_str();
        match verdict {
            Verdict::Verified { attempts, .. } => {
                tracing::info!(device = %device, source = source_name, command = command.name(), attempts, latency_ms, "command_verified");
                self.note_holding(device, config.mode(), None);
            }
            Verdict::NotHolding(n) => {
                tracing::warn!(device = %device, source = source_name, command = command.name(), attempts = n.attempts, observed = %n.to_json(), "command_not_holding");
                self.note_holding(device, config.mode(), Some(n));
            }
            Verdict::Superseded | Verdict::Stopped => {
                tracing::debug!(device = %device, source = source_name, verdict = verdict.name(), "command_verification_ended");
                return;
            }
        }
        let Some(store) = &self.store else { return };
        let failed = matches!(verdict, Verdict::NotHolding(_));
        let record = CommandRecord {
            at: Utc::now(),
            source: source_name.to_string(),
            device: device.to_string(),
            payload: json!({
                "received": received,
                "command": command,
                "verification": verdict.name(),
                "observed": verdict.observed_json(),
            }),
            status: if failed { "error" } else { "ok" }.to_string(),
            error: failed.then(|| "not_holding".to_string()),
            latency_ms: Some(latency_ms),
        };
        if let Err(e) = store.record_command(&record).await {
            tracing::warn!(device = %device, error = %e, "command_audit_not_saved");
        }
    }

    /// Raises `command_not_holding` for a mode write that did not take (`failure`), clears it
    /// when one holds (`None`); only changes are sent.
    pub(super) fn note_holding(&self, device: &DeviceId, mode: Mode, failure: Option<&NotHolding>) {
        let Some(tx) = &self.alerts else { return };
        let (state, severity, message) = match failure {
            Some(n) => (
                AlertState::Raised,
                Severity::Warning,
                format!(
                    "{mode} was acknowledged but does not hold after {} write(s): {}",
                    n.attempts,
                    n.to_json()
                ),
            ),
            None => (AlertState::Cleared, Severity::Info, format!("{mode} holds")),
        };
        {
            let mut raised = self.not_holding.lock().unwrap_or_else(|p| p.into_inner());
            let changed = match state {
                AlertState::Raised => raised.insert(device.clone()),
                AlertState::Cleared => raised.remove(device),
            };
            if !changed {
                return; // already raised, or nothing to clear
            }
        }
        let _ = tx.send(Alert {
            kind: AlertKind::CommandNotHolding,
            severity,
            device: Some(device.clone()),
            message,
            value: None,
            threshold: None,
            state,
            at: Utc::now(),
        });
    }
}
