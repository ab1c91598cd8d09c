//! The running regulator: a task that takes the meter's payloads, the batteries' samples and
//! the set of batteries in `regulate` mode, runs one [`Engine`] cycle per `interval`, sends its
//! writes through `control::CommandService` (source `regulator`: the same envelope, audit and
//! desired state as every other command), publishes its [`Status`] on a watch channel, and at
//! shutdown hands every battery it drives back to Auto; on a standby bridge of its site it
//! writes nothing (the leader regulates). Touches the command service only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::allocate::{Candidate, Standing};
use super::engine::{Engine, Member, Status};
use super::meter::Meter;
use super::settings::RegulatorSettings;
use crate::control::{CommandService, Origin};
use crate::domain::{Command, CommandSource, DeviceId, Sample};

/// Longest time the hand-back to Auto may take at shutdown.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the regulator task reads.
pub struct Inputs {
    /// Payloads of the meter topic, as received.
    pub meter: mpsc::Receiver<Vec<u8>>,
    /// Every battery sample.
    pub samples: broadcast::Receiver<Sample>,
    /// The batteries in `regulate` mode.
    pub members: watch::Receiver<BTreeSet<DeviceId>>,
}

/// The regulator task's state.
struct Task {
    service: CommandService,
    engine: Engine,
    meter: Meter,
    latest: BTreeMap<DeviceId, (Sample, Instant)>,
    previous: BTreeSet<DeviceId>,
    status: watch::Sender<Option<Status>>,
}

/// Runs the regulator until `cancel`, then hands the batteries back to Auto. `ct_stale_after`
/// is the age up to which a battery's CT reading is the fallback (about one polling period).
pub async fn run(
    settings: RegulatorSettings,
    service: CommandService,
    mut inputs: Inputs,
    status: watch::Sender<Option<Status>>,
    ct_stale_after: Duration,
    cancel: CancellationToken,
) {
    let fallback = settings.meter.fallback_ct.then_some(ct_stale_after);
    let mut task = Task {
        engine: Engine::new(&settings),
        meter: Meter::new(
            settings.meter.extractor(),
            settings.meter.stale_after,
            fallback,
        ),
        service,
        latest: BTreeMap::new(),
        previous: BTreeSet::new(),
        status,
    };
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            p = inputs.meter.recv() => match p {
                Some(p) => { let _ = task.meter.accept(&p, Instant::now()); }
                None => break,
            },
            s = inputs.samples.recv() => match s {
                Ok(s) => task.note_sample(s),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ticker.tick() => {
                // payloads that queued while the last cycle's writes were awaited (a paced
                // write can take seconds): the reading judged is the latest one, not stale
                while let Ok(p) = inputs.meter.try_recv() {
                    let _ = task.meter.accept(&p, Instant::now());
                }
                let members = inputs.members.borrow().clone();
                task.cycle(&members).await;
            }
        }
    }
    let back = task.engine.hand_back();
    if !back.is_empty() {
        tracing::info!(batteries = back.len(), "regulator_hands_back_to_auto");
        let _ = tokio::time::timeout(
            HAND_BACK_TIMEOUT,
            task.send(back, json!({ "reason": "bridge stopping" })),
        )
        .await;
    }
}

impl Task {
    fn note_sample(&mut self, s: Sample) {
        let now = Instant::now();
        if s.ct_connected == Some(true)
            && let Some(ct) = s.ct_power
        {
            self.meter.note_ct(f64::from(ct.0), now);
        }
        self.latest.insert(s.device.clone(), (s, now));
    }

    /// The battery as the engine sees it.
    fn member(&self, id: &DeviceId) -> Option<Member> {
        let battery = self.service.fleet().get(id)?;
        let sample = self.latest.get(id);
        let reachable = battery.health().reachable || sample.is_some();
        let s = sample.map(|(s, _)| s);
        Some(Member {
            candidate: Candidate {
                id: id.clone(),
                limits: battery.limits(),
                soc: battery.soc().or_else(|| s.and_then(|s| s.soc)),
                capacity_wh: s.and_then(|s| s.rated_capacity).map(|w| w.0),
                charge_allowed: s.and_then(|s| s.charge_allowed),
                discharge_allowed: s.and_then(|s| s.discharge_allowed),
                standing: if self.service.maintenance().held(id).is_some() {
                    Standing::Maintenance
                } else if reachable {
                    Standing::Ready
                } else {
                    Standing::Unavailable
                },
            },
            bat_power: s.and_then(|s| s.bat_power),
            mode: sample.and_then(|(s, at)| s.mode.map(|m| (m, *at))),
        })
    }

    async fn cycle(&mut self, ids: &BTreeSet<DeviceId>) {
        for gone in self.previous.difference(ids) {
            self.engine.release(gone);
        }
        if ids.iter().any(|id| !self.previous.contains(id)) {
            self.engine.resume();
        }
        self.previous = ids.clone();
        if let Some(leader) = self.service.role().standby_of() {
            let why = format!("this bridge is a standby of its site: {leader} leads and regulates");
            self.status.send_replace(Some(self.engine.stand_by(why)));
            return;
        }
        let members: Vec<Member> = ids.iter().filter_map(|id| self.member(id)).collect();
        let reading = self.meter.reading(Instant::now());
        let plan = self.engine.cycle(Instant::now(), reading, &members);
        let received = json!({
            "grid_w": plan.status.grid_w,
            "target_w": plan.status.target_w,
            "setpoint_w": plan.status.setpoint_w,
        });
        let failed = self.send(plan.writes, received).await;
        self.engine.answered(Instant::now());
        for dev in failed {
            self.engine.write_failed(&dev);
        }
        self.status.send_replace(Some(plan.status));
    }

    /// Sends the writes (to different batteries at once); returns the batteries whose write
    /// failed.
    async fn send(
        &self,
        writes: Vec<(DeviceId, Command)>,
        received: serde_json::Value,
    ) -> Vec<DeviceId> {
        let sends = writes.into_iter().map(|(dev, cmd)| {
            let origin = Origin::new(CommandSource::Regulator, received.clone());
            async move {
                let r = self.service.submit_one(&dev, &cmd, origin).await;
                r.is_err().then_some(dev)
            }
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
