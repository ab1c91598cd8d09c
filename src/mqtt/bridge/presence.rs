//! Device availability as the bridge publishes it: when each device last produced a sample and
//! whether it is currently reported online, as a plain struct, plus the watchdog task that marks
//! a device offline after `offline_after()` without a sample. Writes only the retained
//! `<dev>/availability` documents (through the outbox).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Shared;
use crate::domain::DeviceId;

/// Last sample time and reported availability of every device.
#[derive(Default)]
pub(super) struct Presence {
    last_sample: HashMap<DeviceId, Instant>,
    online: BTreeMap<DeviceId, bool>,
}

impl Presence {
    /// Notes a sample of `dev` at `now`.
    pub fn sampled(&mut self, dev: &DeviceId, now: Instant) {
        self.last_sample.insert(dev.clone(), now);
    }

    /// Records the availability of `dev`; true when it changed.
    pub fn set(&mut self, dev: &DeviceId, online: bool) -> bool {
        self.online.insert(dev.clone(), online) != Some(online)
    }

    /// Devices reported online whose last sample is older than `limit` at `now`.
    pub fn silent(&self, now: Instant, limit: Duration) -> Vec<DeviceId> {
        self.last_sample
            .iter()
            .filter(|(d, at)| {
                now.duration_since(**at) > limit && self.online.get(*d) == Some(&true)
            })
            .map(|(d, _)| d.clone())
            .collect()
    }
}

/// Marks devices offline whose samples stopped (checked five times per `offline_after()`).
pub(super) async fn run_watchdog(shared: Arc<Shared>) {
    let limit = shared.settings.offline_after();
    let mut tick = tokio::time::interval((limit / 5).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let silent = shared.presence().silent(Instant::now(), limit);
        for d in silent {
            tracing::warn!(device = %d, "device_silent");
            shared.set_online(&d, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_online_devices_past_the_limit_are_silent() {
        let mut p = Presence::default();
        let (a, b, c) = (
            DeviceId::parse("a").unwrap(),
            DeviceId::parse("b").unwrap(),
            DeviceId::parse("c").unwrap(),
        );
        let t0 = Instant::now();
        let limit = Duration::from_secs(10);
        p.sampled(&a, t0);
        p.sampled(&b, t0);
        p.sampled(&c, t0 + Duration::from_secs(8));
        assert!(p.set(&a, true));
        assert!(!p.set(&a, true), "unchanged");
        p.set(&b, false);
        p.set(&c, true);
        assert!(
            p.silent(t0 + limit, limit).is_empty(),
            "not past the limit yet"
        );
        let silent = p.silent(t0 + Duration::from_secs(11), limit);
        assert_eq!(
            silent,
            vec![a.clone()],
            "b is already offline, c spoke recently"
        );
        assert!(p.set(&a, false));
        assert!(p.silent(t0 + Duration::from_secs(11), limit).is_empty());
    }
}
