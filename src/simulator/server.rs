//! The UDP side of the simulator: one socket and one task per virtual device, answering the
//! Open API like the firmware does (reply to the request's source from the targeted address,
//! id echoed, -32601 for unsupported methods, -32700 with id 0 for invalid JSON), with
//! switchable transport faults. [`SimHandle`] lets tests read and change device state and
//! faults at run time. Touches only the sockets it binds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::faults::SimFaults;
use super::model::{Encoder, ModelState, SimClock, SimProfile, SimSlot};
use super::writes;
use crate::domain::Mode;

/// How the virtual devices are addressed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Addressing {
    /// N devices on one address with consecutive ports (`base_port` 0 = each one ephemeral).
    Ports {
        /// Address to bind.
        ip: IpAddr,
        /// First port.
        base_port: u16,
    },
    /// N devices on consecutive IPv4 addresses (e.g. 127.0.1.1, 127.0.1.2…) on one port.
    Addresses {
        /// First address.
        first: Ipv4Addr,
        /// Port of every device.
        port: u16,
    },
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Model/firmware family.
    pub profile: SimProfile,
    /// `ver` override (e.g. 139, 1476); None = profile default.
    pub firmware: Option<i64>,
    /// Number of devices.
    pub devices: usize,
    /// Addressing shape.
    pub addressing: Addressing,
    /// Faults applied to every device at start.
    pub faults: SimFaults,
    /// Faults of particular devices (by index), replacing `faults` for them.
    pub device_faults: std::collections::BTreeMap<usize, SimFaults>,
    /// Initial SOC, %.
    pub initial_soc: f64,
    /// Time zone of the devices' clocks (Manual slots).
    pub timezone: Tz,
    /// Seed of the BLE MACs (None = random), so several simulators do not collide.
    pub mac_seed: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            profile: SimProfile::VenusE3,
            firmware: None,
            devices: 1,
            addressing: Addressing::Ports {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                base_port: 0,
            },
            faults: SimFaults::default(),
            device_faults: Default::default(),
            initial_soc: 50.0,
            timezone: Tz::UTC,
            mac_seed: None,
        }
    }
}

/// Read-only view of a device's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SimSnapshot {
    /// Current mode.
    pub mode: Mode,
    /// SOC, %.
    pub soc: f64,
    /// Battery power, W, + discharging.
    pub bat_power: f64,
    /// Passive set-point, W.
    pub passive_power: i32,
    /// Passive countdown end.
    pub passive_until: Option<DateTime<Utc>>,
    /// Manual slots (None = never written).
    pub slots: Vec<Option<SimSlot>>,
    /// Depth of discharge, %.
    pub dod: u8,
    /// LED on.
    pub led: bool,
    /// BLE advertising on.
    pub ble_adv: bool,
    /// Lifetime AC delivered, Wh.
    pub out_wh: f64,
    /// Lifetime AC drawn, Wh.
    pub in_wh: f64,
}

/// Datagram counters of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    /// Datagrams received.
    pub received: u64,
    /// Replies sent (duplicates included).
    pub replied: u64,
    /// Requests dropped by a fault or silence.
    pub dropped: u64,
    /// `ES.SetMode` requests answered (accepted, refused or ignored alike).
    pub mode_writes: u64,
}

#[derive(Default)]
struct NetState {
    last_request: Option<Instant>,
    last_reply: Option<Instant>,
    frozen: bool,
}

struct SimDevice {
    addr: SocketAddr,
    ble_mac: String,
    wifi_mac: String,
    enc: Encoder,
    src: String,
    tz: Tz,
    clock: Arc<SimClock>,
    /// Start of the device's `net-reset` cycle (simulated clock).
    epoch: DateTime<Utc>,
    state: Mutex<ModelState>,
    faults: Mutex<SimFaults>,
    net: Mutex<NetState>,
    received: AtomicU64,
    replied: AtomicU64,
    dropped: AtomicU64,
    mode_writes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Outcome {
    Result(Value),
    Error(i64, &'static str, Option<i64>),
    Silent,
}

impl SimDevice {
    fn state_now(&self) -> std::sync::MutexGuard<'_, ModelState> {
        let mut s = lock(&self.state);
        let spec = self.enc.spec();
        s.advance(&spec, self.clock.now(), self.tz);
        s
    }

    /// Decides what to send back for one datagram: (bytes, delay) pairs.
    fn handle(&self, bytes: &[u8], from: SocketAddr) -> Vec<(Vec<u8>, Option<Duration>)> {
        self.received.fetch_add(1, Ordering::Relaxed);
        let faults = lock(&self.faults).clone();
        let now = Instant::now();
        if self.drops(bytes, from, &faults, now) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        let (id, outcome) = self.answer(bytes, &faults);
        let reply = match outcome {
            Outcome::Silent => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            }
            Outcome::Result(r) => json!({"id": id, "src": self.src, "result": r}),
            Outcome::Error(code, message, data) => {
                let mut e = json!({"code": code, "message": message});
                if let Some(d) = data {
                    e["data"] = json!(d);
                }
                json!({"id": id, "src": self.src, "error": e})
            }
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{}".to_vec());
        if faults.malformed_json {
            out.truncate(out.len() / 2);
        }
        lock(&self.net).last_reply = Some(now);
        faults.delayed_copies(&out)
    }

    /// Whether the network faults swallow this datagram (records it as the last request).
    fn drops(&self, bytes: &[u8], from: SocketAddr, faults: &SimFaults, now: Instant) -> bool {
        let mut net = lock(&self.net);
        if bytes.is_empty() && faults.freeze_on_empty {
            net.frozen = true;
        }
        let idle_drop = faults.drop_first_after_idle.is_some_and(|idle| {
            net.last_request
                .is_none_or(|t| now.duration_since(t) >= idle)
        });
        let conc_drop = faults
            .drop_concurrent
            .is_some_and(|w| net.last_request.is_some_and(|t| now.duration_since(t) < w));
        let gap_drop = faults
            .drop_within_quiet_gap
            .is_some_and(|g| net.last_reply.is_some_and(|t| now.duration_since(t) < g));
        let lost = faults
            .loss
            .is_some_and(|p| rand::random::<f64>() < p.clamp(0.0, 1.0));
        net.last_request = Some(now);
        bytes.is_empty()
            || net.frozen
            || faults.silent
            || faults.api_disabled
            || (faults.reply_only_to_listen_port && from.port() != self.addr.port())
            || self.in_blackout(faults, self.clock.now())
            || idle_drop
            || conc_drop
            || gap_drop
            || lost
    }

    /// The reply id and outcome for one request datagram.
    fn answer(&self, bytes: &[u8], faults: &SimFaults) -> (Value, Outcome) {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(req)) => {
                let id = req.get("id").cloned().unwrap_or(Value::Null);
                let id = match (&id, faults.id_wrap_16) {
                    (Value::Number(n), true) => n.as_u64().map(|v| json!(v & 0xFFFF)).unwrap_or(id),
                    _ => id,
                };
                let outcome = match req.get("method").and_then(Value::as_str) {
                    Some(m) => {
                        if !id.is_i64() && !id.is_u64() && self.enc.ver <= 139 {
                            Outcome::Silent // fw 139 only answers integer ids
                        } else {
                            let params = req.get("params").cloned().unwrap_or(json!({}));
                            self.dispatch(m, &params, faults)
                        }
                    }
                    None => Outcome::Error(-32600, "Invalid Request", None),
                };
                (id, outcome)
            }
            _ => (json!(0), Outcome::Error(-32700, "Parse error", None)),
        }
    }

    fn dispatch(&self, method: &str, params: &Value, faults: &SimFaults) -> Outcome {
        match self.enc.supports(method) {
            None => return Outcome::Silent,
            Some(false) => {
                return Outcome::Error(-32601, "Method not found", self.enc.not_found_data());
            }
            Some(true) => {}
        }
        let instance = params.get("id").cloned().unwrap_or(json!(0));
        let enc = Encoder {
            fw148_shape: faults.no_bat_power,
            ..self.enc
        };
        let set = |ok: bool| Outcome::Result(json!({"id": instance, "set_result": ok}));
        match method {
            "Marstek.GetDevice" => {
                let want = params.get("ble_mac").and_then(Value::as_str).unwrap_or("0");
                if want != "0" && !want.eq_ignore_ascii_case(&self.ble_mac) {
                    return Outcome::Silent;
                }
                let mut v = json!({
                    "device": self.enc.spec().device,
                    "ver": self.enc.ver,
                    "ble_mac": self.ble_mac,
                    "wifi_mac": self.wifi_mac,
                    "wifi_name": "SimNet",
                    "ip": self.addr.ip().to_string(),
                });
                if faults.omit_macs
                    && let Some(o) = v.as_object_mut()
                {
                    o.remove("ble_mac");
                    o.remove("wifi_mac");
                }
                Outcome::Result(v)
            }
            "Wifi.GetStatus" => Outcome::Result(json!({
                "id": instance, "ssid": "SimNet", "rssi": -55,
                "sta_ip": self.addr.ip().to_string(), "sta_gate": "192.168.1.1",
                "sta_mask": "255.255.255.0", "sta_dns": "192.168.1.1",
            })),
            "BLE.GetStatus" => Outcome::Result(
                json!({"id": instance, "state": "disconnect", "ble_mac": self.ble_mac}),
            ),
            "Bat.GetStatus" => Outcome::Result(self.enc.bat_status(&self.state_now(), &instance)),
            "ES.GetStatus" => Outcome::Result(enc.es_status(&self.state_now(), &instance)),
            "ES.GetMode" => self.get_mode(&instance, faults),
            "PV.GetStatus" => Outcome::Result(enc.pv_status(&self.state_now(), &instance)),
            "EM.GetStatus" => Outcome::Result(self.enc.em_status(&self.state_now(), &instance)),
            "DOD.SET" => {
                let value = params.get("value").and_then(Value::as_i64);
                set(writes::set_dod(
                    &mut self.state_now(),
                    value,
                    faults,
                    self.clock.now(),
                ))
            }
            "Led.Ctrl" => match params.get("state").and_then(Value::as_i64) {
                Some(v @ 0..=1) => {
                    self.state_now().led = v == 1;
                    set(true)
                }
                _ => set(false),
            },
            "Ble.Adv" => match params.get("enable").and_then(Value::as_i64) {
                Some(v @ 0..=1) => {
                    self.state_now().ble_adv = v == 1;
                    set(true)
                }
                _ => set(false),
            },
            "ES.SetMode" => {
                self.mode_writes.fetch_add(1, Ordering::Relaxed);
                self.set_mode(params, &instance, faults)
            }
            _ => Outcome::Error(-32601, "Method not found", self.enc.not_found_data()),
        }
    }

    /// `ES.GetMode`, with the `getmode-id1-only` and `getmode-resets` faults.
    fn get_mode(&self, instance: &Value, faults: &SimFaults) -> Outcome {
        if faults.getmode_id1_only && instance.as_i64() != Some(1) {
            return Outcome::Silent;
        }
        let mut s = self.state_now();
        let integer = faults.integer_mode || faults.getmode_id1_only;
        let reply = self.enc.es_mode(&s, instance, integer);
        if faults.getmode_resets && matches!(s.mode, Mode::Manual | Mode::Passive) {
            // fw 148: the answer is right, and the battery falls back to Auto behind it
            s.fall_back_to_auto();
        }
        Outcome::Result(reply)
    }

    /// Whether a `net-reset` fault has the network stack down at simulated `now`.
    fn in_blackout(&self, faults: &SimFaults, now: DateTime<Utc>) -> bool {
        faults.net_reset.is_some_and(|r| {
            let period = r.period.as_millis().max(1) as i64;
            let into = (now - self.epoch).num_milliseconds().rem_euclid(period);
            into >= period - r.silence.as_millis() as i64
        })
    }

    fn set_mode(&self, params: &Value, instance: &Value, faults: &SimFaults) -> Outcome {
        let now = self.clock.now();
        let mut s = self.state_now();
        match writes::set_mode(&mut s, params.get("config"), faults, &self.enc, now) {
            Some(ok) => Outcome::Result(json!({"id": instance, "set_result": ok})),
            None => Outcome::Error(-32601, "Method not found", self.enc.not_found_data()),
        }
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds every device's socket and starts serving; returns the handle with the bound addresses.
    pub async fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
        let clock = Arc::new(SimClock::default());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let seed = cfg.mac_seed.unwrap_or_else(rand::random);
        let ver = cfg.firmware.unwrap_or(cfg.profile.spec().ver);
        let enc = Encoder {
            profile: cfg.profile,
            ver,
            fw148_shape: false,
        };
        let mut devices = Vec::with_capacity(cfg.devices);
        for i in 0..cfg.devices {
            let bind: SocketAddr = match cfg.addressing {
                Addressing::Ports { ip, base_port } => {
                    let port = if base_port == 0 {
                        0
                    } else {
                        u16::try_from(usize::from(base_port) + i).map_err(|_| {
                            std::io::Error::other(format!("port {base_port}+{i} exceeds 65535"))
                        })?
                    };
                    SocketAddr::new(ip, port)
                }
                Addressing::Addresses { first, port } => {
                    let n = u32::from(first)
                        .checked_add(u32::try_from(i).unwrap_or(u32::MAX))
                        .ok_or_else(|| std::io::Error::other("address range overflows"))?;
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(n)), port)
                }
            };
            let socket = UdpSocket::bind(bind).await?;
            let addr = socket.local_addr()?;
            let mac_n =
                u64::from(seed).wrapping_mul(65_537).wrapping_add(i as u64) & 0xFF_FFFF_FFFF;
            let ble_mac = format!("d0{mac_n:010x}");
            let wifi_mac = format!("d2{mac_n:010x}");
            let dev = Arc::new(SimDevice {
                addr,
                src: format!("{}-{}", enc.spec().device, ble_mac),
                ble_mac,
                wifi_mac,
                enc,
                tz: cfg.timezone,
                clock: clock.clone(),
                epoch: clock.now(),
                state: Mutex::new(ModelState::new(&enc.spec(), cfg.initial_soc, clock.now())),
                faults: Mutex::new(cfg.device_faults.get(&i).unwrap_or(&cfg.faults).clone()),
                net: Mutex::new(NetState::default()),
                received: AtomicU64::new(0),
                replied: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                mode_writes: AtomicU64::new(0),
            });
            tracker.spawn(serve(Arc::new(socket), dev.clone(), cancel.clone()));
            devices.push(dev);
        }
        tracker.close();
        tracing::info!(devices = devices.len(), profile = ?cfg.profile, "simulator_started");
        Ok(SimHandle {
            devices,
            clock,
            cancel,
            tracker,
        })
    }
}

async fn serve(socket: Arc<UdpSocket>, dev: Arc<SimDevice>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(device = %dev.addr, error = %e, "sim_recv_error");
                    continue;
                }
            },
        };
        let replies = dev.handle(buf.get(..n).unwrap_or_default(), from);
        for (bytes, delay) in replies {
            dev.replied.fetch_add(1, Ordering::Relaxed);
            match delay {
                None => {
                    let _ = socket.send_to(&bytes, from).await;
                }
                Some(d) => {
                    let socket = socket.clone();
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = tokio::time::sleep(d) => { let _ = socket.send_to(&bytes, from).await; }
                        }
                    });
                }
            }
        }
    }
}

/// Control of a running simulator (device index = position in [`SimHandle::addrs`]).
pub struct SimHandle {
    devices: Vec<Arc<SimDevice>>,
    clock: Arc<SimClock>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("devices", &self.devices.len())
            .finish()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl SimHandle {
    /// Bound address of every device.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.devices.iter().map(|d| d.addr).collect()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// BLE MAC of a device.
    pub fn ble_mac(&self, dev: usize) -> Option<String> {
        self.devices.get(dev).map(|d| d.ble_mac.clone())
    }

    /// The simulated clock (advance it to run hours in milliseconds).
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Makes a device silent (or answering again). Returns false for an unknown index.
    pub fn set_silent(&self, dev: usize, silent: bool) -> bool {
        self.update_faults(dev, |f| f.silent = silent)
    }

    /// Replaces a device's faults.
    pub fn set_faults(&self, dev: usize, faults: SimFaults) -> bool {
        self.update_faults(dev, |f| *f = faults)
    }

    /// Changes a device's faults in place.
    pub fn update_faults(&self, dev: usize, change: impl FnOnce(&mut SimFaults)) -> bool {
        match self.devices.get(dev) {
            Some(d) => {
                change(&mut lock(&d.faults));
                true
            }
            None => false,
        }
    }

    /// Current state of a device (integrated up to the simulated now).
    pub fn state(&self, dev: usize) -> Option<SimSnapshot> {
        let d = self.devices.get(dev)?;
        let s = d.state_now();
        Some(SimSnapshot {
            mode: s.mode,
            soc: s.soc,
            bat_power: s.bat_power,
            passive_power: s.passive_power,
            passive_until: s.passive_until,
            slots: s.slots.clone(),
            dod: s.dod,
            led: s.led,
            ble_adv: s.ble_adv,
            out_wh: s.out_wh,
            in_wh: s.in_wh,
        })
    }

    /// Sets a device's SOC, % (clamped to 0..=100).
    pub fn set_soc(&self, dev: usize, soc: f64) -> bool {
        match self.devices.get(dev) {
            Some(d) => {
                d.state_now().soc = soc.clamp(0.0, 100.0);
                true
            }
            None => false,
        }
    }

    /// Sets a device's lifetime energy counters, Wh (None = unchanged): a counter reset or a
    /// glitch, as a test wants it.
    pub fn set_energy(
        &self,
        dev: usize,
        pv_wh: Option<f64>,
        out_wh: Option<f64>,
        in_wh: Option<f64>,
    ) -> bool {
        match self.devices.get(dev) {
            Some(d) => {
                let mut guard = d.state_now();
                let s = &mut *guard;
                for (slot, v) in [
                    (&mut s.pv_wh, pv_wh),
                    (&mut s.out_wh, out_wh),
                    (&mut s.in_wh, in_wh),
                ] {
                    if let Some(v) = v {
                        *slot = v;
                    }
                }
                true
            }
            None => false,
        }
    }

    /// Sets a device's mode directly (as if changed in the app).
    pub fn set_mode(&self, dev: usize, mode: Mode) -> bool {
        match self.devices.get(dev) {
            Some(d) => {
                d.state_now().mode = mode;
                true
            }
            None => false,
        }
    }

    /// Start of the next `net-reset` blackout of a device at or after the simulated now
    /// (None without that fault); a blackout lasts the fault's `silence`.
    pub fn next_blackout(&self, dev: usize) -> Option<DateTime<Utc>> {
        let d = self.devices.get(dev)?;
        let r = lock(&d.faults).net_reset?;
        let period = chrono::Duration::from_std(r.period).ok()?;
        let silence = chrono::Duration::from_std(r.silence).ok()?;
        let now = self.clock.now();
        let mut start = d.epoch + period - silence;
        while start + silence <= now {
            start += period;
        }
        Some(start)
    }

    /// Datagram counters of a device.
    pub fn stats(&self, dev: usize) -> Option<SimStats> {
        let d = self.devices.get(dev)?;
        Some(SimStats {
            received: d.received.load(Ordering::Relaxed),
            replied: d.replied.load(Ordering::Relaxed),
            dropped: d.dropped.load(Ordering::Relaxed),
            mode_writes: d.mode_writes.load(Ordering::Relaxed),
        })
    }

    /// Stops every device task and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod fault_option_tests {
    use super::*;

    #[tokio::test]
    async fn full_loss_drops_everything_and_jitter_still_answers() {
        let sim = Simulator::start(SimConfig {
            devices: 2,
            addressing: Addressing::Ports {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                base_port: 0,
            },
            ..SimConfig::default()
        })
        .await
        .unwrap();
        sim.update_faults(0, |f| f.loss = Some(1.0));
        sim.update_faults(1, |f| f.jitter = Some(Duration::from_millis(50)));
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let req = br#"{"id":1,"method":"Marstek.GetDevice","params":{"ble_mac":"0"}}"#;
        let addrs = sim.addrs();
        sock.send_to(req, addrs[0]).await.unwrap();
        sock.send_to(req, addrs[1]).await.unwrap();
        let mut buf = [0u8; 2048];
        let (_, from) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("jittered device answers")
            .unwrap();
        assert_eq!(from, addrs[1]);
        assert_eq!(sim.stats(0).unwrap().dropped, 1);
        assert_eq!(sim.stats(0).unwrap().replied, 0);
    }
}
