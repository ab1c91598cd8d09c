//! What stops a command before it reaches the battery, and what a failed one leaves behind:
//! a standby bridge refuses every write (naming the leader), a battery held for maintenance
//! refuses them, dry-run holds back the sources it covers; a driver failure raises a
//! `command_failed` alert. Each is logged once. Part of [`CommandService`]; reads its role,
//! maintenance holds and dry-run switch, writes only to the alert channel.

use chrono::Utc;

use super::{CommandError, CommandService};
use crate::domain::{Alert, AlertKind, Command, CommandSource, DeviceId, Severity};

impl CommandService {
    /// Err when `command` from `source` may not be sent to `device` now (standby, maintenance,
    /// dry-run); nothing is sent or recorded then.
    pub(super) fn held_back(
        &self,
        device: &DeviceId,
        command: &Command,
        source: CommandSource,
    ) -> Result<(), CommandError> {
        let name = source.as_str();
        if let Some(leader) = self.role.standby_of() {
            tracing::info!(device = %device, source = name, command = command.name(), leader = %leader, "command_refused_standby");
            return Err(CommandError::Standby {
                leader,
                command: command.name(),
            });
        }
        if let Some(scope) = self.maintenance.held(device) {
            tracing::info!(device = %device, source = name, command = command.name(), "command_held_for_maintenance");
            return Err(CommandError::Maintenance {
                device: device.clone(),
                scope,
                command: command.name(),
            });
        }
        if self.dry_run.holds_back(source) {
            tracing::info!(device = %device, source = name, command = command.name(), "command_dry_run");
            return Err(CommandError::DryRun(command.name(), name));
        }
        Ok(())
    }

    /// Logs a failed command once; a driver failure also raises `command_failed`.
    pub(super) fn note_failed(
        &self,
        device: &DeviceId,
        command: &Command,
        source: &str,
        e: &CommandError,
    ) {
        tracing::warn!(device = %device, source, command = command.name(), error = %e, "command_failed");
        if let (Some(tx), CommandError::Driver(_)) = (&self.alerts, e) {
            let message = format!("{} from {source} failed: {e}", command.name());
            let _ = tx.send(Alert::raised(
                AlertKind::CommandFailed,
                Severity::Warning,
                Some(device.clone()),
                message,
                Utc::now(),
            ));
        }
    }
}
