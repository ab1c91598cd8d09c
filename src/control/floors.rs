//! The plan's SOC floors in force: while the day's plan discharges a battery only down to a
//! `floor_soc` above its own minimum (its charge is worth more on a coming dearer day), the
//! command service refuses a discharge at or below that floor, and the running check
//! ([`CommandService::guard_soc`]) stops a battery that reaches it while discharging (Passive
//! 0 W for the rest of the floor's window, source `safety`, a `soc_limit` alert). Set by the
//! 06:00 job from the day plan, each floor ends at its window's end. Holds no I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::domain::{DeviceId, Percent};

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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

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
