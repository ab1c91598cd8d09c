//! The one path every command takes, whatever its source (MQTT, scheduler, reconciler, CLI):
//! look the battery up in the fleet, apply the safety envelope, execute through the driver,
//! record the audit row and the desired state, and raise `command_failed` when it fails.
//! Touches the fleet (`domain::Battery`), the `Store` and the alert channel; nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use crate::domain::{
    Alert, AlertKind, AlertSender, AlertState, BatteryRef, Command, CommandReport, CommandSource,
    DesiredState, DeviceId, DriverError, Rejection, Severity, check_command,
};
use crate::store::{CommandRecord, Store};

/// Every configured battery, looked up by id.
#[derive(Clone, Default)]
pub struct Fleet {
    devices: BTreeMap<DeviceId, BatteryRef>,
}

impl Fleet {
    /// Builds a fleet from batteries (later duplicates replace earlier ones).
    pub fn new(batteries: impl IntoIterator<Item = BatteryRef>) -> Self {
        Self {
            devices: batteries.into_iter().map(|b| (b.id().clone(), b)).collect(),
        }
    }

    /// The battery with this id.
    pub fn get(&self, id: &DeviceId) -> Option<&BatteryRef> {
        self.devices.get(id)
    }

    /// Every battery, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &BatteryRef> {
        self.devices.values()
    }

    /// Every id, ordered.
    pub fn ids(&self) -> Vec<DeviceId> {
        self.devices.keys().cloned().collect()
    }

    /// Number of batteries.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when no battery is configured.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// Why a submitted command did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// No battery with that id.
    #[error("unknown device '{0}'")]
    UnknownDevice(String),
    /// Refused by the safety envelope before reaching the device.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The driver failed (timeout, device error, refusal).
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// What an applied command leaves to persist: the new desired state (when it succeeded and
/// carries one) and the audit row. Dropping it without [`persist`](Self::persist) loses both.
#[must_use = "persist() records the command; dropping it loses the audit row"]
pub struct Bookkeeping {
    store: Option<Arc<dyn Store>>,
    intent: Option<DesiredState>,
    record: CommandRecord,
}

impl Bookkeeping {
    /// Writes the desired state and the audit row (concurrently); failures are logged, never
    /// returned: the command itself already took effect.
    pub async fn persist(self) {
        let Some(store) = &self.store else { return };
        let device = self.record.device.as_str();
        let desired = async {
            if let Some(intent) = &self.intent
                && let Err(e) = store.set_desired(intent).await
            {
                tracing::warn!(device, error = %e, "desired_state_not_saved");
            }
        };
        let audit = async {
            if let Err(e) = store.record_command(&self.record).await {
                tracing::warn!(device, error = %e, "command_audit_not_saved");
            }
        };
        tokio::join!(desired, audit);
    }
}

/// Applies commands from every source through one envelope.
#[derive(Clone)]
pub struct CommandService {
    fleet: Fleet,
    store: Option<Arc<dyn Store>>,
    alerts: Option<AlertSender>,
    read_only: bool,
}

impl CommandService {
    /// Builds the service; `store` and `alerts` are optional so tools and tests can go without.
    pub fn new(
        fleet: Fleet,
        store: Option<Arc<dyn Store>>,
        alerts: Option<AlertSender>,
        read_only: bool,
    ) -> Self {
        Self {
            fleet,
            store,
            alerts,
            read_only,
        }
    }

    /// The fleet commands go to.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The store commands are recorded in, when there is one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Whether writes are refused (config `read_only`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Executes `command` on `device` through the envelope and persists it (desired state and
    /// audit row) before returning: [`apply`](Self::apply) then [`Bookkeeping::persist`].
    pub async fn submit(
        &self,
        device: &str,
        command: &Command,
        source: CommandSource,
        payload: serde_json::Value,
        intent: Option<DesiredState>,
    ) -> Result<CommandReport, CommandError> {
        let (result, bookkeeping) = self.apply(device, command, source, payload, intent).await;
        bookkeeping.persist().await;
        result
    }

    /// Executes `command` on `device` through the envelope, logs it and raises
    /// `command_failed` on a driver error; the returned [`Bookkeeping`] persists it (`payload`:
    /// what the source sent, for the audit; `intent`: the desired state kept on success, with
    /// `set_by` naming the source). A caller that
    /// answers someone (an MQTT response) answers first and persists after, so the answer does
    /// not wait on database commits.
    pub async fn apply(
        &self,
        device: &str,
        command: &Command,
        source: CommandSource,
        payload: serde_json::Value,
        intent: Option<DesiredState>,
    ) -> (Result<CommandReport, CommandError>, Bookkeeping) {
        let started = Instant::now();
        let result = self.run(device, command).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(report) => {
                tracing::info!(
                    device,
                    source = source.as_str(),
                    command = command.name(),
                    verified = report.verified,
                    latency_ms,
                    "command_applied"
                );
            }
            Err(e) => {
                tracing::warn!(device, source = source.as_str(), command = command.name(), error = %e, "command_failed");
                if let (Some(tx), CommandError::Driver(_)) = (&self.alerts, e) {
                    let _ = tx.send(Alert {
                        kind: AlertKind::CommandFailed,
                        severity: Severity::Warning,
                        device: DeviceId::parse(device).ok(),
                        message: format!("{} from {} failed: {e}", command.name(), source.as_str()),
                        value: None,
                        threshold: None,
                        state: AlertState::Raised,
                        at: Utc::now(),
                    });
                }
            }
        }
        let record = CommandRecord {
            at: Utc::now(),
            source: source.as_str().to_string(),
            device: device.to_string(),
            payload: json!({ "received": payload, "command": command }),
            status: if result.is_ok() { "ok" } else { "error" }.to_string(),
            error: result.as_ref().err().map(|e| e.to_string()),
            latency_ms: Some(latency_ms),
        };
        let bookkeeping = Bookkeeping {
            store: self.store.clone(),
            intent: intent.filter(|_| result.is_ok()),
            record,
        };
        (result, bookkeeping)
    }

    async fn run(&self, device: &str, command: &Command) -> Result<CommandReport, CommandError> {
        let battery = DeviceId::parse(device)
            .ok()
            .and_then(|id| self.fleet.get(&id).cloned())
            .ok_or_else(|| CommandError::UnknownDevice(device.to_string()))?;
        check_command(command, &battery.limits(), self.read_only)?;
        Ok(battery.execute(command).await?)
    }
}
