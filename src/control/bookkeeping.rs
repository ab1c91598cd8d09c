//! What a command batch leaves behind: the desired states and audit rows to persist
//! ([`Bookkeeping`], written after the answer so that it never waits on the database), and the
//! set of devices with a batch in flight ([`WritingSet`]), which the reconciler consults so as
//! not to fight a write that is being applied. Touches the `Store` only, in `persist`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::domain::{DesiredState, DeviceId};
use crate::store::{CommandRecord, Store};

/// What an applied batch leaves to persist: the desired states and the audit rows, in order.
/// Dropping it without [`persist`](Self::persist) loses them.
#[must_use = "persist() records the commands; dropping it loses the audit rows"]
pub struct Bookkeeping {
    pub(super) store: Option<Arc<dyn Store>>,
    pub(super) intents: Vec<DesiredState>,
    pub(super) records: Vec<CommandRecord>,
    /// Marks the device as being written until the intent is persisted (dropped with this).
    pub(super) _writing: Option<Writing>,
}

/// Devices with a command in flight (write, verification, bookkeeping), counted.
#[derive(Clone, Default)]
pub(super) struct WritingSet(Arc<Mutex<BTreeMap<DeviceId, usize>>>);

/// One command batch in flight on one device; dropping it ends it.
pub(super) struct Writing {
    set: WritingSet,
    device: DeviceId,
}

impl WritingSet {
    pub(super) fn start(&self, device: &DeviceId) -> Writing {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(device.clone()).or_default() += 1;
        Writing {
            set: self.clone(),
            device: device.clone(),
        }
    }

    pub(super) fn contains(&self, device: &DeviceId) -> bool {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(device).is_some_and(|n| *n > 0)
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut m = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.device);
            }
        }
    }
}

impl Bookkeeping {
    /// Audit rows alone, no desired state: commands refused before the envelope (a payload
    /// that does not parse, an unknown device), persisted like the others.
    pub fn records_only(store: Option<Arc<dyn Store>>, records: Vec<CommandRecord>) -> Self {
        Self {
            store,
            intents: Vec::new(),
            records,
            _writing: None,
        }
    }

    /// Writes the desired states and the audit rows (the two concurrently); failures are
    /// logged, never returned: the commands themselves already took effect.
    pub async fn persist(self) {
        let Some(store) = &self.store else { return };
        let desired = async {
            for intent in &self.intents {
                if let Err(e) = store.set_desired(intent).await {
                    tracing::warn!(device = %intent.device, error = %e, "desired_state_not_saved");
                }
            }
        };
        let audit = async {
            for record in &self.records {
                if let Err(e) = store.record_command(record).await {
                    tracing::warn!(device = record.device.as_str(), error = %e, "command_audit_not_saved");
                }
            }
        };
        tokio::join!(desired, audit);
    }
}
