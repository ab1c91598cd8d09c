//! Device availability with one owner: a task that alone decides whether each battery is online
//! and publishes the whole picture on one `watch` channel ([`Presence`]). It hears three
//! things — a sample of a device (online), the driver's reachability changes (online or not)
//! and its own silence timer (offline after `offline_after` without a sample, plus the silence
//! of a network reset the firmware catalogue knows for that battery) — and nothing else writes
//! availability. Adapters (MQTT, HTTP) only read the channel. Reads the fleet's identities.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Fleet;
use crate::domain::{DeviceId, Sample};

/// Availability of every battery (true = online), ordered by id.
pub type Availability = BTreeMap<DeviceId, bool>;

/// Read side of device availability; cheap to clone.
#[derive(Clone)]
pub struct Presence {
    rx: watch::Receiver<Availability>,
}

impl Presence {
    /// Spawns the owner task on `tracker` (it ends with `cancel`): every battery of `fleet`
    /// starts offline; `samples` mark a device online; a device reported online is marked
    /// offline after `offline_after` without a sample (plus, with `reset_blackouts`, the
    /// silence of a network reset its firmware is known for).
    pub fn spawn(
        fleet: &Fleet,
        samples: broadcast::Receiver<Sample>,
        offline_after: Duration,
        reset_blackouts: bool,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let book = Book::new(fleet.ids());
        let (tx, rx) = watch::channel(book.online.clone());
        let (reach_tx, reach_rx) = mpsc::unbounded_channel();
        for battery in fleet.iter() {
            if let Some(available) = battery.availability() {
                let relay = relay_reachability(
                    battery.id().clone(),
                    available,
                    reach_tx.clone(),
                    cancel.clone(),
                );
                tracker.spawn(relay);
            }
        }
        let owner = Owner {
            fleet: reset_blackouts.then(|| fleet.clone()),
            book,
            tx,
            samples,
            reachability: reach_rx,
            offline_after,
        };
        tracker.spawn(owner.run(cancel));
        Self { rx }
    }

    /// A presence that never changes: every id offline (tools and tests without a fleet task).
    pub fn fixed(ids: impl IntoIterator<Item = DeviceId>) -> Self {
        let (tx, rx) = watch::channel(ids.into_iter().map(|d| (d, false)).collect());
        drop(tx);
        Self { rx }
    }

    /// Whether `dev` is online now (false when unknown).
    pub fn is_online(&self, dev: &DeviceId) -> bool {
        self.rx.borrow().get(dev).copied().unwrap_or(false)
    }

    /// The availability channel (every change of any device).
    pub fn subscribe(&self) -> watch::Receiver<Availability> {
        self.rx.clone()
    }
}

/// Forwards one driver's reachability changes (its current value first) to the owner.
async fn relay_reachability(
    id: DeviceId,
    mut available: watch::Receiver<bool>,
    to: mpsc::UnboundedSender<(DeviceId, bool)>,
    cancel: CancellationToken,
) {
    loop {
        let online = *available.borrow_and_update();
        if to.send((id.clone(), online)).is_err() {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            r = available.changed() => if r.is_err() { return },
        }
    }
}

/// When each device last produced a sample, and whether it is online: plain state.
struct Book {
    last_sample: HashMap<DeviceId, Instant>,
    online: Availability,
}

impl Book {
    fn new(ids: Vec<DeviceId>) -> Self {
        Self {
            last_sample: HashMap::new(),
            online: ids.into_iter().map(|d| (d, false)).collect(),
        }
    }

    /// Notes a sample of `dev` at `now`; true when that brought it online.
    fn sampled(&mut self, dev: &DeviceId, now: Instant) -> bool {
        self.last_sample.insert(dev.clone(), now);
        self.set(dev, true)
    }

    /// Records the availability of `dev`; true when it changed.
    fn set(&mut self, dev: &DeviceId, online: bool) -> bool {
        let changed = self.online.insert(dev.clone(), online) != Some(online);
        if changed {
            tracing::info!(device = %dev, online, "device_availability");
        }
        changed
    }

    /// Devices online whose last sample is older than `limit` (plus the device's `grace`) at
    /// `now`.
    fn silent(
        &self,
        now: Instant,
        limit: Duration,
        grace: impl Fn(&DeviceId) -> Duration,
    ) -> Vec<DeviceId> {
        self.last_sample
            .iter()
            .filter(|(d, at)| {
                now.duration_since(**at) > limit + grace(d) && self.online.get(*d) == Some(&true)
            })
            .map(|(d, _)| d.clone())
            .collect()
    }
}

/// The silence a known network reset of `dev`'s firmware may add (catalogue), else zero.
fn reset_grace(fleet: &Fleet, dev: &DeviceId) -> Duration {
    fleet
        .get(dev)
        .and_then(|b| b.info())
        .and_then(|i| i.firmware_note)
        .and_then(|n| n.policy.reset_blackout())
        .unwrap_or_default()
}

/// The owner task's state.
struct Owner {
    /// The fleet whose identities give each device's network-reset grace (None: no grace).
    fleet: Option<Fleet>,
    book: Book,
    tx: watch::Sender<Availability>,
    samples: broadcast::Receiver<Sample>,
    reachability: mpsc::UnboundedReceiver<(DeviceId, bool)>,
    offline_after: Duration,
}

impl Owner {
    async fn run(mut self, cancel: CancellationToken) {
        let limit = self.offline_after;
        let mut tick = tokio::time::interval((limit / 5).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.samples.recv() => match r {
                    Ok(sample) => self.book.sampled(&sample.device, Instant::now()),
                    Err(broadcast::error::RecvError::Lagged(_)) => false,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some((dev, online)) = self.reachability.recv() => {
                    tracing::info!(device = %dev, online, "availability_changed");
                    self.book.set(&dev, online)
                }
                _ = tick.tick() => {
                    let fleet = &self.fleet;
                    let grace = |d: &DeviceId| fleet.as_ref().map(|f| reset_grace(f, d)).unwrap_or_default();
                    let silent = self.book.silent(Instant::now(), limit, grace);
                    for d in &silent {
                        tracing::warn!(device = %d, "device_silent");
                        self.book.set(d, false);
                    }
                    !silent.is_empty()
                }
            };
            if changed {
                self.tx.send_replace(self.book.online.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    #[test]
    fn only_online_devices_past_the_limit_are_silent() {
        let (a, b, c) = (id("a"), id("b"), id("c"));
        let mut p = Book::new(vec![a.clone(), b.clone(), c.clone()]);
        assert!(p.online.values().all(|o| !o), "everyone starts offline");
        let t0 = Instant::now();
        let limit = Duration::from_secs(10);
        assert!(p.sampled(&a, t0));
        assert!(!p.sampled(&a, t0), "already online");
        p.sampled(&b, t0);
        p.sampled(&c, t0 + Duration::from_secs(8));
        assert!(p.set(&b, false));
        assert!(
            p.silent(t0 + limit, limit, |_| Duration::ZERO).is_empty(),
            "not past the limit yet"
        );
        let silent = p.silent(t0 + Duration::from_secs(11), limit, |_| Duration::ZERO);
        assert_eq!(
            silent,
            vec![a.clone()],
            "b is already offline, c spoke recently"
        );
        assert!(p.set(&a, false));
        assert!(
            p.silent(t0 + Duration::from_secs(11), limit, |_| Duration::ZERO)
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_sample_brings_a_device_online_and_silence_takes_it_offline() {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let fleet = Fleet::default();
        let (samples, rx) = broadcast::channel(8);
        let presence = Presence::spawn(
            &fleet,
            rx,
            Duration::from_millis(200),
            true,
            cancel.clone(),
            &tracker,
        );
        let mut watch = presence.subscribe();
        let dev = id("d1");
        samples
            .send(Sample::empty(dev.clone(), chrono::Utc::now()))
            .unwrap();
        watch
            .wait_for(|m| m.get(&dev) == Some(&true))
            .await
            .unwrap();
        assert!(presence.is_online(&dev));
        // No further sample: the silence timer takes it offline after 200 ms.
        watch
            .wait_for(|m| m.get(&dev) == Some(&false))
            .await
            .unwrap();
        assert!(!presence.is_online(&dev));
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
