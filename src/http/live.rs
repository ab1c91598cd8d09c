//! What the status page sees change: the newest sample of every battery, the most recent
//! alerts, and one broadcast of events (`sample`, `alert`, `schedule`, `tempo`, `plan`,
//! `command`, `dry_run`, `maintenance`) that `/api/v1/events` streams as server-sent events. Fed
//! by the app from the sample broadcast, the alert fan-out, the scheduler/Tempo/plan watch
//! channels, the dry-run switch and the maintenance holds; holds no I/O of its own.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::{Alert, DeviceId, Sample};

/// How many recent alerts are kept for `/api/v1/alerts`.
const RECENT_ALERTS: usize = 50;
/// Events buffered per listener before a slow one skips ahead (30 s of samples at 10 batteries
/// polled every 5 s).
const EVENT_BUFFER: usize = 64;

/// One change, as sent to the page: serialised once, shared by every listener.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// `sample`, `alert`, `schedule`, `tempo`, `plan`, `command`, `dry_run` or `maintenance`.
    pub kind: &'static str,
    /// The payload as JSON text (a sample, an alert, the schedule document …).
    pub data: Arc<str>,
}

struct Inner {
    latest: RwLock<BTreeMap<DeviceId, Sample>>,
    alerts: Mutex<VecDeque<Alert>>,
    events: broadcast::Sender<LiveEvent>,
}

/// The live view shared by the HTTP handlers (cheap to clone).
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    /// An empty view.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                latest: RwLock::new(BTreeMap::new()),
                alerts: Mutex::new(VecDeque::with_capacity(RECENT_ALERTS)),
                events: broadcast::channel(EVENT_BUFFER).0,
            }),
        }
    }

    /// Keeps `sample` as its battery's newest and tells the listeners.
    pub fn on_sample(&self, sample: &Sample) {
        self.publish_json("sample", sample);
        self.inner
            .latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sample.device.clone(), sample.clone());
    }

    /// Keeps `alert` among the recent ones and tells the listeners.
    pub fn on_alert(&self, alert: &Alert) {
        {
            let mut q = self.inner.alerts.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() == RECENT_ALERTS {
                q.pop_front();
            }
            q.push_back(alert.clone());
        }
        self.publish_json("alert", alert);
    }

    /// Tells the listeners about a change of `kind` (serialised only when someone listens).
    pub fn publish_json(&self, kind: &'static str, data: &impl Serialize) {
        if self.inner.events.receiver_count() == 0 {
            return;
        }
        if let Ok(text) = serde_json::to_string(data) {
            let _ = self.inner.events.send(LiveEvent {
                kind,
                data: Arc::from(text),
            });
        }
    }

    /// The newest sample of `device`, once one arrived.
    pub fn latest(&self, device: &DeviceId) -> Option<Sample> {
        self.inner
            .latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)
            .cloned()
    }

    /// The most recent alerts, newest first.
    pub fn recent_alerts(&self) -> Vec<Alert> {
        let q = self.inner.alerts.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().rev().cloned().collect()
    }

    /// A listener of every following event.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.inner.events.subscribe()
    }

    /// Feeds the view from the sample broadcast and the schedule, Tempo and plan documents
    /// until `cancel` fires.
    pub async fn run_feeds(
        self,
        mut samples: broadcast::Receiver<Sample>,
        mut schedule: Option<watch::Receiver<Value>>,
        mut tempo: Option<watch::Receiver<Value>>,
        mut plan: Option<watch::Receiver<Value>>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                r = samples.recv() => match r {
                    Ok(s) => self.on_sample(&s),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(v) = changed(&mut schedule) => self.publish_json("schedule", &v),
                Some(v) = changed(&mut tempo) => self.publish_json("tempo", &v),
                Some(v) = changed(&mut plan) => self.publish_json("plan", &v),
            }
        }
    }
}

impl Live {
    /// Tells the listeners about every change of a watched state as `kind` events (`dry_run`:
    /// the dry-run switch, `maintenance`: every maintenance hold in force) until `cancel` fires.
    pub async fn follow<T: Serialize + Clone>(
        self,
        kind: &'static str,
        mut rx: watch::Receiver<T>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let state = rx.borrow_and_update().clone();
                    self.publish_json(kind, &state);
                }
            }
        }
    }
}

/// The next value of an optional watch channel (pending forever when absent or closed).
async fn changed(rx: &mut Option<watch::Receiver<Value>>) -> Option<Value> {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                return None;
            }
            Some(r.borrow_and_update().clone())
        }
        None => std::future::pending().await,
    }
}
