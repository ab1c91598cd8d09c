//! A simulated site: a house (a base load, step loads such as a kettle or an oven, PV) and the
//! simulated batteries behind one grid connection point, whose grid power is published on MQTT
//! like a Shelly Pro 3EM (Gen2 `<prefix>/status/em:0`, `total_act_power` in W, + import) every
//! `period`. The batteries' AC power (read from the simulator) feeds back into the grid power.
//! For tests it can fall silent or publish with the sign inverted. Touches the broker (its own
//! client) and reads the simulator's state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::server::SimHandle;
use crate::mqtt::{ClientEvent, ClientOptions, MqttClient};

/// A load switched on for a while, relative to the site's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLoad {
    /// When it switches on, after the start.
    pub at: Duration,
    /// How long it stays on.
    pub length: Duration,
    /// Its power, W.
    pub power_w: f64,
}

/// What the site is made of.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The meter's topic (e.g. `shellypro3em-site/status/em:0`).
    pub topic: String,
    /// Time between two meter publications.
    pub period: Duration,
    /// House load without the step loads, W.
    pub base_load_w: f64,
    /// PV generation, W (constant).
    pub pv_w: f64,
    /// Step loads on top of the base load.
    pub steps: Vec<StepLoad>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            topic: "shellypro3em-site/status/em:0".into(),
            period: Duration::from_secs(1),
            base_load_w: 300.0,
            pv_w: 0.0,
            steps: Vec::new(),
        }
    }
}

impl SiteConfig {
    /// A house evening: 300 W base, a kettle (2 kW, 3 min) and an oven (1.5 kW, 10 min).
    pub fn evening() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Self {
            steps: vec![
                StepLoad {
                    at: m(2),
                    length: m(3),
                    power_w: 2000.0,
                },
                StepLoad {
                    at: m(8),
                    length: m(10),
                    power_w: 1500.0,
                },
            ],
            ..Self::default()
        }
    }
}

/// One meter publication, as the site computed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridReading {
    /// House load, W.
    pub load_w: f64,
    /// What the batteries delivered, W (+ discharge).
    pub batteries_w: f64,
    /// Grid power, W (+ import), as it really was (before any inversion).
    pub grid_w: f64,
    /// Publications so far.
    pub count: u64,
}

#[derive(Debug, Default)]
struct Knobs {
    extra_w: f64,
    silent: bool,
    inverted: bool,
}

/// Control of a running site.
pub struct SiteHandle {
    knobs: Arc<Mutex<Knobs>>,
    readings: watch::Receiver<Option<GridReading>>,
    cancel: CancellationToken,
}

impl Drop for SiteHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock(m: &Mutex<Knobs>) -> std::sync::MutexGuard<'_, Knobs> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SiteHandle {
    /// Adds `w` W of load on top of the profile (a test's step load; 0 removes it).
    pub fn set_extra_load(&self, w: f64) {
        lock(&self.knobs).extra_w = w;
    }

    /// Stops (true) or resumes (false) the meter's publications.
    pub fn set_silent(&self, silent: bool) {
        lock(&self.knobs).silent = silent;
    }

    /// Publishes the grid power with the wrong sign (a meter clamp mounted backwards).
    pub fn set_inverted(&self, inverted: bool) {
        lock(&self.knobs).inverted = inverted;
    }

    /// Every publication, watched (None before the first).
    pub fn readings(&self) -> watch::Receiver<Option<GridReading>> {
        self.readings.clone()
    }
}

/// The Shelly Pro 3EM `status/em:0` payload for a grid power (split evenly on the phases).
pub fn shelly_3em_payload(grid_w: f64) -> String {
    let phase = grid_w / 3.0;
    json!({
        "id": 0,
        "a_current": (phase / 230.0).abs(), "a_voltage": 230.0, "a_act_power": phase,
        "b_current": (phase / 230.0).abs(), "b_voltage": 230.0, "b_act_power": phase,
        "c_current": (phase / 230.0).abs(), "c_voltage": 230.0, "c_act_power": phase,
        "total_current": (grid_w / 230.0).abs(), "total_act_power": grid_w,
        "total_aprt_power": grid_w.abs(),
    })
    .to_string()
}

/// Starts the site on `sim`'s batteries, publishing through a client built from `mqtt`.
pub fn start_site(
    cfg: SiteConfig,
    sim: Arc<SimHandle>,
    mqtt: &ClientOptions,
) -> Result<SiteHandle, crate::mqtt::ClientError> {
    let (client, mut eventloop) = MqttClient::new(mqtt, 64)?;
    let knobs = Arc::new(Mutex::new(Knobs::default()));
    let (tx, readings) = watch::channel(None);
    let cancel = CancellationToken::new();
    let (k, stop) = (knobs.clone(), cancel.clone());
    tokio::spawn(async move {
        let (conn_tx, mut connected) = watch::channel(false);
        let driver = async move {
            loop {
                match eventloop.poll().await {
                    Ok(ClientEvent::Connected) => {
                        conn_tx.send_replace(true);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        };
        let publisher = async move {
            let _ = connected.wait_for(|c| *c).await;
            let started = Instant::now();
            let mut tick = tokio::time::interval(cfg.period);
            let mut count = 0;
            loop {
                tick.tick().await;
                let load = site_load(&cfg, started.elapsed()) + lock(&k).extra_w;
                let batteries: f64 = (0..sim.len())
                    .filter_map(|i| sim.state(i))
                    .map(|s| s.bat_power)
                    .sum();
                let grid = load - cfg.pv_w - batteries;
                let (silent, inverted) = {
                    let k = lock(&k);
                    (k.silent, k.inverted)
                };
                if silent {
                    continue;
                }
                let shown = if inverted { -grid } else { grid };
                let payload = shelly_3em_payload(shown);
                if client.publish(&cfg.topic, 0, false, payload).await.is_err() {
                    continue;
                }
                count += 1;
                tx.send_replace(Some(GridReading {
                    load_w: load,
                    batteries_w: batteries,
                    grid_w: grid,
                    count,
                }));
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = driver => {}
            () = publisher => {}
        }
    });
    Ok(SiteHandle {
        knobs,
        readings,
        cancel,
    })
}

/// The house load `elapsed` after the start, W: the base plus the step loads that are on.
pub fn site_load(cfg: &SiteConfig, elapsed: Duration) -> f64 {
    cfg.base_load_w
        + cfg
            .steps
            .iter()
            .filter(|s| elapsed >= s.at && elapsed < s.at + s.length)
            .map(|s| s.power_w)
            .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_loads_add_while_they_are_on() {
        let cfg = SiteConfig::evening();
        let s = |n| site_load(&cfg, Duration::from_secs(n));
        assert_eq!(s(0), 300.0);
        assert_eq!(s(150), 2300.0, "kettle");
        assert_eq!(s(400), 300.0);
        assert_eq!(s(600), 1800.0, "oven");
    }

    #[test]
    fn the_payload_reads_like_a_shelly_pro_3em() {
        let v: serde_json::Value = serde_json::from_str(&shelly_3em_payload(-300.0)).unwrap();
        assert_eq!(v["total_act_power"], -300.0);
        assert_eq!(v["a_act_power"], -100.0);
    }
}
