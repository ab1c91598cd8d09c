//! Commands served by a battery actor: validating a command against the profile, sending it,
//! checking `set_result` and reading the mode back (not where that read would undo the write:
//! a Manual or Passive write on firmware the catalogue reads `ES.GetMode` sparingly on); also
//! the `ES.GetMode` instance fallback shared with the status round. Touches the actor's state
//! only.

use super::{Actor, lock};
use crate::domain::{Command, CommandReport, DriverError, Mode, ModeConfig};
use crate::marstek::client::Reply;
use crate::marstek::protocol::{self, EsMode, SetResult, decode_result, method};

impl Actor {
    /// Sends one command, checks the device accepted it and reads the mode back when it can.
    pub(super) async fn execute(&mut self, cmd: &Command) -> Result<CommandReport, DriverError> {
        let profile = self.profile().await?;
        let (m, params) = match cmd {
            Command::SetMode(cfg) => {
                if let ModeConfig::Manual { slot } = cfg
                    && slot.slot >= profile.manual_slots()
                {
                    return Err(DriverError::Device {
                        code: -32602,
                        message: format!(
                            "Manual slot {} does not exist (0 to {} on this model)",
                            slot.slot,
                            profile.manual_slots() - 1
                        ),
                    });
                }
                (method::ES_SET_MODE, protocol::set_mode_params(cfg))
            }
            Command::SetDod { value } => (method::DOD_SET, protocol::dod_params(value.0)),
            Command::SetLed { on } => (method::LED_CTRL, protocol::led_params(*on)),
            Command::SetBleAdv { on } => (method::BLE_ADV, protocol::ble_adv_params(*on)),
        };
        let reply = self.call(m, params.clone(), true).await?;
        let set: SetResult = decode_result(&reply.result).map_err(DriverError::Decode)?;
        if set.set_result != Some(true) {
            lock(&self.shared.health).errors += 1;
            return Err(DriverError::Rejected { method: m.into() });
        }
        tracing::info!(device = %self.spec.id, command = cmd.name(), "command_applied");
        let (verified, observed_mode) = match cmd {
            Command::SetMode(cfg) => {
                self.written = Some((cfg.clone(), std::time::Instant::now()));
                let observed = if self.unsafe_write().is_some() {
                    // answering ES.GetMode would put the battery back in Auto (fw 148)
                    tracing::debug!(device = %self.spec.id, "mode_read_back_skipped");
                    None
                } else {
                    self.read_mode().await
                };
                (observed == Some(cfg.mode()), observed)
            }
            // DOD, LED and BLE advertising have no getter
            _ => (false, None),
        };
        Ok(CommandReport {
            applied: params,
            verified,
            observed_mode,
            latency_ms: reply.latency.as_secs_f64() * 1000.0,
            note: None,
        })
    }

    /// The mode the device reports now, or None (kept as the mode last read).
    async fn read_mode(&mut self) -> Option<Mode> {
        let reply = self.get_mode().await.ok()?;
        let mode = decode_result::<EsMode>(&reply.result).ok()?.mode;
        if mode.is_some() {
            self.last_mode = mode;
        }
        mode
    }

    /// `ES.GetMode` for the instance id that answers: 0 first, then 1 when 0 stays silent
    /// (some firmware answers only `params.id` 1, taurgis PR #54); the winner is kept until the
    /// device is identified again.
    pub(super) async fn get_mode(&mut self) -> Result<Reply, DriverError> {
        let first = self.mode_instance;
        let r = self
            .call(method::ES_GET_MODE, protocol::instance_params(first), false)
            .await;
        if !matches!(r, Err(DriverError::Timeout { .. })) {
            return r;
        }
        let other = 1 - first;
        let r2 = self
            .call(method::ES_GET_MODE, protocol::instance_params(other), false)
            .await;
        if r2.is_ok() {
            tracing::info!(device = %self.spec.id, instance = other, "getmode_instance_switched");
            self.mode_instance = other;
            return r2;
        }
        r
    }
}
