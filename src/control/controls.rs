//! Remembered control values of each battery (passive power and duration, DOD, LED, BLE), one
//! book for every adapter: MQTT publishes it retained on `<dev>/controls`, HTTP and the
//! scheduler read it. Values change by [`CommandService::remember`](super::CommandService::remember)
//! and by commands from a user source that succeeded. Persisted in the store as one document per
//! battery (key [`controls_key`]): [`RememberedControls::restore`] at start-up, then
//! [`RememberedControls::run_writer`] saves changes off the command path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::{Command, DeviceId, ModeConfig, Watts};
use crate::store::Store;

/// Passive countdown used when a command gives none, s.
pub const DEFAULT_PASSIVE_SECONDS: u32 = 3600;

/// Remembered control values of one battery.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Controls {
    /// Passive set-point, W (negative = charge).
    pub passive_power: i32,
    /// Passive countdown, s.
    pub passive_duration: u32,
    /// Depth of discharge, %.
    pub dod: Option<u8>,
    /// Status LED on.
    pub led: Option<bool>,
    /// BLE advertising on.
    pub ble_adv: Option<bool>,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            passive_power: 0,
            passive_duration: DEFAULT_PASSIVE_SECONDS,
            dod: None,
            led: None,
            ble_adv: None,
        }
    }
}

impl Controls {
    /// The Passive command with the remembered power and duration.
    pub fn passive(&self) -> Command {
        Command::SetMode(ModeConfig::Passive {
            power: Watts(self.passive_power),
            cd_time: self.passive_duration,
        })
    }

    /// Takes the values a successful command set.
    fn learn(&mut self, cmd: &Command) {
        match cmd {
            Command::SetMode(ModeConfig::Passive { power, cd_time }) => {
                self.passive_power = power.0;
                self.passive_duration = *cd_time;
            }
            Command::SetDod { value } => self.dod = Some(value.0),
            Command::SetLed { on } => self.led = Some(*on),
            Command::SetBleAdv { on } => self.ble_adv = Some(*on),
            Command::SetMode(_) => {}
        }
    }
}

/// A value remembered without being sent to the battery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Remember {
    /// Passive set-point, W (negative = charge).
    PassivePower(i32),
    /// Passive countdown, s.
    PassiveDuration(u32),
}

/// Store key prefix of the remembered controls, one document per battery. (The name predates
/// the move out of the MQTT adapter; stored documents keep it.)
const CONTROLS_PREFIX: &str = "mqtt_controls/";

/// Longest wait for one store read or write of remembered controls.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause before a failed write is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Store document key of a device's remembered controls.
pub fn controls_key(dev: &DeviceId) -> String {
    format!("{CONTROLS_PREFIX}{dev}")
}

/// Every battery's remembered controls; cheap to clone (shared).
#[derive(Clone)]
pub struct RememberedControls {
    inner: Arc<Inner>,
}

struct Inner {
    values: watch::Sender<BTreeMap<DeviceId, Controls>>,
    /// Devices whose controls changed since they were last saved.
    unsaved: Mutex<BTreeSet<DeviceId>>,
    /// Wakes the writer.
    changed: Notify,
}

impl RememberedControls {
    /// Defaults for every id.
    pub fn new(ids: impl IntoIterator<Item = DeviceId>) -> Self {
        let values = ids.into_iter().map(|d| (d, Controls::default())).collect();
        Self {
            inner: Arc::new(Inner {
                values: watch::channel(values).0,
                unsaved: Mutex::default(),
                changed: Notify::new(),
            }),
        }
    }

    /// The controls of `dev` (defaults when none were remembered).
    pub fn get(&self, dev: &DeviceId) -> Controls {
        self.inner
            .values
            .borrow()
            .get(dev)
            .cloned()
            .unwrap_or_default()
    }

    /// Every battery's controls, and every later change.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<DeviceId, Controls>> {
        self.inner.values.subscribe()
    }

    /// Remembers a value (the caller checked that `dev` is configured).
    pub(super) fn remember(&self, dev: &DeviceId, value: Remember) {
        self.update(dev, |c| match value {
            Remember::PassivePower(p) => c.passive_power = p,
            Remember::PassiveDuration(d) => c.passive_duration = d,
        });
    }

    /// Takes the values of a command that succeeded.
    pub(super) fn learn(&self, dev: &DeviceId, cmd: &Command) {
        self.update(dev, |c| c.learn(cmd));
    }

    fn update(&self, dev: &DeviceId, f: impl FnOnce(&mut Controls)) {
        let mut changed = false;
        self.inner.values.send_if_modified(|all| {
            let c = all.entry(dev.clone()).or_default();
            let before = c.clone();
            f(c);
            changed = *c != before;
            changed
        });
        if changed {
            self.unsaved().insert(dev.clone());
            self.inner.changed.notify_one();
        }
    }

    fn unsaved(&self) -> std::sync::MutexGuard<'_, BTreeSet<DeviceId>> {
        self.inner.unsaved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the remembered controls of the known devices from the store in one query (bounded
    /// by [`STORE_TIMEOUT`]; a failure keeps the defaults and is logged).
    pub async fn restore(&self, store: &dyn Store) {
        // One query for the whole fleet: a large fleet must not wait on a round trip per battery.
        let docs = match tokio::time::timeout(STORE_TIMEOUT, store.documents_under(CONTROLS_PREFIX))
            .await
        {
            Ok(Ok(docs)) => docs,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "controls_not_restored");
                return;
            }
            Err(_) => {
                tracing::warn!("controls_not_restored: the store did not answer in time");
                return;
            }
        };
        let saved: HashMap<String, Value> = docs.into_iter().collect();
        self.inner.values.send_modify(|all| {
            for (dev, c) in all.iter_mut() {
                let Some(doc) = saved.get(&controls_key(dev)) else {
                    continue;
                };
                match serde_json::from_value::<Controls>(doc.clone()) {
                    Ok(stored) => {
                        tracing::info!(device = %dev, passive_power = stored.passive_power, passive_duration = stored.passive_duration, "controls_restored");
                        *c = stored;
                    }
                    Err(e) => {
                        tracing::warn!(device = %dev, error = %e, "controls_document_unreadable")
                    }
                }
            }
        });
    }

    /// Saves changed controls to `store` until `cancel`, then flushes what is pending once. A
    /// failed write keeps the device pending (retried after a pause or the next change) and is
    /// logged once per outage; the in-memory value applies meanwhile.
    pub async fn run_writer(self, store: Arc<dyn Store>, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            let stopping = cancel.is_cancelled();
            let retry = !self.save_pending(store.as_ref(), &mut failing).await;
            if stopping {
                break;
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = self.inner.changed.notified() => {}
                () = tokio::time::sleep(RETRY), if retry => {}
            }
        }
    }

    /// Writes every pending device; false when a write failed (it stays pending).
    async fn save_pending(&self, store: &dyn Store, failing: &mut bool) -> bool {
        let batch: Vec<(DeviceId, Controls)> = {
            let devs = std::mem::take(&mut *self.unsaved());
            devs.into_iter()
                .map(|d| {
                    let c = self.get(&d);
                    (d, c)
                })
                .collect()
        };
        let mut ok = true;
        for (dev, c) in batch {
            let doc = serde_json::to_value(&c).unwrap_or(Value::Null);
            let r =
                tokio::time::timeout(STORE_TIMEOUT, store.put_document(&controls_key(&dev), &doc))
                    .await
                    .map_err(|_| "the store did not answer in time".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
            match r {
                Ok(()) => {
                    if *failing {
                        tracing::info!(device = %dev, "controls_saved_again");
                        *failing = false;
                    }
                }
                Err(e) => {
                    if !*failing {
                        tracing::warn!(device = %dev, error = %e, "controls_not_saved");
                        *failing = true;
                    }
                    self.unsaved().insert(dev);
                    ok = false;
                }
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Percent;

    #[test]
    fn successful_commands_and_remembered_values_change_the_book() {
        let dev = DeviceId::parse("d1").unwrap();
        let book = RememberedControls::new([dev.clone()]);
        let mut rx = book.subscribe();
        assert_eq!(rx.borrow_and_update()[&dev], Controls::default());
        book.remember(&dev, Remember::PassivePower(-800));
        book.learn(&dev, &Command::SetDod { value: Percent(20) });
        book.learn(&dev, &Command::SetMode(ModeConfig::Auto));
        let c = book.get(&dev);
        assert_eq!((c.passive_power, c.dod), (-800, Some(20)));
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            c.passive(),
            Command::SetMode(ModeConfig::Passive {
                power: Watts(-800),
                cd_time: DEFAULT_PASSIVE_SECONDS
            })
        );
        assert_eq!(book.unsaved().len(), 1, "one device waits to be saved");
    }

    #[test]
    fn an_unchanged_value_is_not_a_change() {
        let dev = DeviceId::parse("d1").unwrap();
        let book = RememberedControls::new([dev.clone()]);
        let mut rx = book.subscribe();
        rx.borrow_and_update();
        book.remember(&dev, Remember::PassiveDuration(DEFAULT_PASSIVE_SECONDS));
        assert!(!rx.has_changed().unwrap());
        assert!(book.unsaved().is_empty());
    }
}
