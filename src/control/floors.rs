//! The plan's SOC floors in force: while the day's plan discharges a battery only down to a
//! `floor_soc` above its own minimum (its charge is worth more on a coming dearer day), the
//! command service refuses a discharge at or below that floor, and the running check
//! ([`CommandService::guard_soc`]) stops a battery that reaches it while discharging (Passive
//! 0 W for the rest of the floor's window, source `safety`, a `soc_limit` alert). Set by the
//! 06:00 job from the day plan, each floor ends at its window's end. The command service's floor
//! check lives here too. Holds no I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::CommandService;
use crate::domain::{Command, CommandSource, DeviceId, Percent, Rejection, requested_power};

/// One floor: SOC, % and the end of its window (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    /// No discharge at or below this SOC, %.
    pub soc: Percent,
    /// When the floor ends (UTC).
    pub until: DateTime<Utc>,
}

/// Every battery's floor in force (cheap to clone, shared).
#[derive(Clone, Default)]
pub struct Floors(Arc<Mutex<HashMap<DeviceId, Floor>>>);

impl Floors {
    /// Sets `device`'s floor until `until` (replacing any other).
    pub fn set(&self, device: &DeviceId, soc: Percent, until: DateTime<Utc>) {
        self.lock().insert(device.clone(), Floor { soc, until });
    }

    /// Removes `device`'s floor.
    pub fn clear(&self, device: &DeviceId) {
        self.lock().remove(device);
    }

    /// `device`'s floor at `now`, when one is in force (an ended one is forgotten).
    pub fn get(&self, device: &DeviceId, now: DateTime<Utc>) -> Option<Floor> {
        let mut m = self.lock();
        match m.get(device) {
            Some(f) if f.until > now => Some(*f),
            Some(_) => {
                m.remove(device);
                None
            }
            None => None,
        }
    }

    /// Why a discharge at `power` W (+ = discharge) with `soc` breaches `device`'s floor at
    /// `now`, if it does.
    pub fn breach(
        &self,
        device: &DeviceId,
        power: i32,
        soc: Percent,
        now: DateTime<Utc>,
    ) -> Option<(Floor, String)> {
        let floor = self.get(device, now)?;
        (power > 0 && soc.0 <= floor.soc.0).then(|| {
            let why = format!(
                "discharging at {power} W with SOC {} %, at or below the plan's floor {} % until {}",
                soc.0,
                floor.soc.0,
                floor.until.format("%Y-%m-%d %H:%M UTC")
            );
            (floor, why)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Floor>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CommandService {
    /// Refuses a discharge set-point at or below `device`'s floor in force (the SOC envelope's
    /// own stops pass: they never discharge).
    pub(super) fn check_floor(
        &self,
        device: &DeviceId,
        command: &Command,
        soc: Option<Percent>,
        source: CommandSource,
    ) -> Result<(), Rejection> {
        let (Some(power), Some(soc)) = (requested_power(command), soc) else {
            return Ok(());
        };
        if source == CommandSource::Safety {
            return Ok(());
        }
        match self.floors.breach(device, power.0, soc, Utc::now()) {
            Some((_, why)) => Err(Rejection::SocLimit(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration as StdDuration;

    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use crate::control::{CommandError, Fleet, Origin};
    use crate::domain::{AlertKind, BatteryRef, ModeConfig, Watts};
    use crate::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport};
    use crate::simulator::{SimConfig, Simulator};

    #[tokio::test]
    async fn the_plans_floor_refuses_a_discharge_and_stops_a_battery_that_reaches_it() {
        let cancel = CancellationToken::new();
        let sim = Simulator::start(SimConfig::default()).await.unwrap();
        let t = Transport::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0), &cancel)
            .await
            .unwrap();
        let (samples, _) = tokio::sync::broadcast::channel(16);
        let id = DeviceId::parse("bat1").unwrap();
        let polling = PollingSettings {
            status_interval: StdDuration::from_secs(3600),
            quiet_gap: StdDuration::ZERO,
            ..Default::default()
        };
        let spec = DeviceSpec {
            id: id.clone(),
            addr: sim.addrs()[0],
            limits: Default::default(),
        };
        let b = MarstekBattery::spawn(
            t,
            spec,
            polling,
            samples.clone(),
            cancel.clone(),
            &TaskTracker::new(),
        );
        let battery = Arc::new(b) as BatteryRef;
        let (alerts, mut alerts_rx) = tokio::sync::mpsc::unbounded_channel();
        let s = CommandService::new(Fleet::new([battery.clone()]), None, Some(alerts), false);
        tokio::spawn(s.clone().guard_soc(samples.subscribe(), cancel.clone()));
        sim.set_soc(0, 60.0);
        battery.poll().await.unwrap();
        s.floors()
            .set(&id, Percent(50), Utc::now() + Duration::hours(2));
        let discharge = |power| {
            Command::SetMode(ModeConfig::Passive {
                power: Watts(power),
                cd_time: 3600,
            })
        };
        let job = || Origin::new(CommandSource::Scheduler, json!({ "job": "j" }));
        s.submit_one(&id, &discharge(800), job())
            .await
            .expect("above the floor: accepted");
        assert_eq!(sim.state(0).unwrap().passive_power, 800);

        // The battery reaches the floor while discharging: the running check stops it.
        sim.set_soc(0, 50.0);
        battery.poll().await.unwrap();
        let alert = tokio::time::timeout(StdDuration::from_secs(10), alerts_rx.recv())
            .await
            .expect("a soc_limit alert in time")
            .expect("alert channel open");
        assert_eq!(alert.kind, AlertKind::SocLimit);
        assert!(
            alert.message.contains("the plan's floor 50 %"),
            "{}",
            alert.message
        );
        let st = sim.state(0).unwrap();
        assert_eq!(
            (st.mode, st.passive_power),
            (crate::domain::Mode::Passive, 0)
        );

        // Below it: a discharge is refused whatever its source and changes nothing; a charge passes.
        battery.poll().await.unwrap();
        let http = Origin::new(CommandSource::Http, Value::Null);
        let refused = s.submit_one(&id, &discharge(500), http.clone()).await;
        assert!(
            matches!(&refused, Err(CommandError::Rejected(Rejection::SocLimit(why))) if why.contains("floor 50 %")),
            "{refused:?}"
        );
        assert_eq!(sim.state(0).unwrap().passive_power, 0, "nothing sent");
        s.submit_one(&id, &discharge(-500), http)
            .await
            .expect("charging is fine below the floor");
        assert_eq!(sim.state(0).unwrap().passive_power, -500);
        // Once the floor is cleared the discharge goes through again.
        s.floors().clear(&id);
        s.submit_one(&id, &discharge(300), job())
            .await
            .expect("no floor");
        cancel.cancel();
    }

    #[test]
    fn a_floor_refuses_discharge_at_or_below_it_only_while_in_force() {
        let f = Floors::default();
        let d = DeviceId::parse("bat1").unwrap();
        let now = Utc::now();
        assert!(f.breach(&d, 800, Percent(10), now).is_none(), "no floor");
        f.set(&d, Percent(40), now + Duration::hours(1));
        assert!(f.breach(&d, 800, Percent(41), now).is_none(), "above it");
        let (floor, why) = f.breach(&d, 800, Percent(40), now).expect("at it");
        assert_eq!(floor.soc, Percent(40));
        assert!(why.contains("floor 40 %"), "{why}");
        assert!(
            f.breach(&d, -800, Percent(30), now).is_none(),
            "charging is fine"
        );
        assert!(f.breach(&d, 0, Percent(30), now).is_none(), "idle is fine");
        let later = now + Duration::hours(2);
        assert!(f.breach(&d, 800, Percent(30), later).is_none(), "ended");
        assert!(f.get(&d, now).is_none(), "an ended floor is forgotten");
    }
}
