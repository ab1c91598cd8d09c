//! Identifies and spawns the configured batteries (one actor each, duplicates served once) and
//! records each battery's identity in the store when it first answers. Resolves host names and
//! asks unnamed batteries for their BLE MAC over the shared UDP transport.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::tasks::Tasks;
use crate::config::{DeviceConfig, Settings};
use crate::control::Fleet;
use crate::domain::{BatteryRef, DeviceId, DeviceInfo, Sample};
use crate::marstek::discovery::mac_from_src;
use crate::marstek::protocol::{DeviceResult, decode_result, get_device_params, method};
use crate::marstek::{DeviceSpec, MarstekBattery, NamedDevice, PollingSettings, Transport};
use crate::store::{DeviceRecord, Store};

/// One actor per configured battery. A host name that does not resolve does not stop the
/// others: that battery's actor keeps resolving it (and the battery is unavailable meanwhile).
/// Two entries that turn out to be the same battery (same address, or same id) are served once,
/// with one warning naming both entries.
pub(super) async fn spawn_batteries(
    settings: &Settings,
    transport: &Arc<Transport>,
    store: &Arc<dyn Store>,
    samples: &broadcast::Sender<Sample>,
    tasks: &Tasks,
) -> Vec<BatteryRef> {
    let known = store.devices().await.unwrap_or_default();
    let entry = |n: usize| {
        let d = &settings.devices[n];
        format!("devices.{n} ({}:{})", d.host, d.port)
    };
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut by_id: HashMap<DeviceId, usize> = HashMap::new();
    let mut batteries: Vec<BatteryRef> = Vec::new();
    for (n, device) in settings.devices.iter().enumerate() {
        let (addr, id) = match resolve_addr(&device.host, device.port).await {
            Ok(addr) => {
                if let Some(first) = by_addr.insert(addr, n) {
                    tracing::warn!(first = entry(first), second = entry(n), addr = %addr, "duplicate_device_ignored");
                    by_addr.insert(addr, first);
                    continue;
                }
                let id = device_id(device, addr, transport, &settings.polling, &known).await;
                (Some(addr), id)
            }
            Err(e) => {
                tracing::warn!(device = entry(n), error = %e, "device_unresolved_retrying");
                (None, named_id(device))
            }
        };
        if let Some(first) = by_id.get(&id) {
            tracing::warn!(first = entry(*first), second = entry(n), id = %id, "duplicate_device_ignored");
            continue;
        }
        by_id.insert(id.clone(), n);
        let (polling, out, token) = (
            settings.polling.clone(),
            samples.clone(),
            tasks.token().clone(),
        );
        let battery = match addr {
            Some(addr) => {
                let spec = DeviceSpec {
                    id,
                    addr,
                    limits: device.limits(),
                };
                MarstekBattery::spawn(transport.clone(), spec, polling, out, token, &tasks.tracker)
            }
            None => {
                let named = NamedDevice {
                    id,
                    host: device.host.clone(),
                    port: device.port,
                    limits: device.limits(),
                };
                MarstekBattery::spawn_named(
                    transport.clone(),
                    named,
                    polling,
                    out,
                    token,
                    &tasks.tracker,
                )
            }
        };
        batteries.push(Arc::new(battery));
    }
    batteries
}

/// The id of a battery whose host name does not resolve: its alias, else one derived from
/// the host name and port.
fn named_id(device: &DeviceConfig) -> DeviceId {
    device
        .id
        .as_deref()
        .and_then(|i| DeviceId::parse(i).ok())
        .unwrap_or_else(|| {
            let name: String = format!("{}_{}", device.host, device.port)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(64)
                .collect();
            DeviceId(name)
        })
}

async fn resolve_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{host} has no IPv4 address"))
}

/// The id of a configured battery: its alias, else its BLE MAC (asked now, or remembered in the
/// store from an earlier run), else a name derived from its address until it answers.
async fn device_id(
    device: &DeviceConfig,
    addr: SocketAddr,
    transport: &Transport,
    polling: &PollingSettings,
    known: &[DeviceRecord],
) -> DeviceId {
    if let Some(id) = device.id.as_deref().and_then(|i| DeviceId::parse(i).ok()) {
        return id;
    }
    let asked = transport
        .request(
            addr,
            method::GET_DEVICE,
            get_device_params(),
            polling.read_options(),
        )
        .await
        .ok()
        .and_then(|reply| {
            let result: Option<DeviceResult> = decode_result(&reply.result).ok();
            result
                .and_then(|r| r.ble_mac)
                .map(|m| m.to_ascii_lowercase())
                .or_else(|| reply.src.as_deref().and_then(mac_from_src))
        });
    let remembered = || {
        known
            .iter()
            .find(|r| r.info.address == addr.to_string())
            .map(|r| r.info.ble_mac.clone())
    };
    if let Some(id) = asked
        .or_else(remembered)
        .and_then(|m| DeviceId::parse(&m).ok())
    {
        return id;
    }
    let fallback = format!("{}_{}", addr.ip(), addr.port()).replace(['.', ':'], "_");
    tracing::warn!(device = %addr, id = %fallback, "device_id_unknown_using_address");
    DeviceId(fallback)
}

/// Records each battery's identity in the store the first time it answers (and when it changes).
pub(super) async fn register_devices(
    store: Arc<dyn Store>,
    fleet: Fleet,
    mut samples: broadcast::Receiver<Sample>,
    cancel: CancellationToken,
) {
    let mut seen: HashMap<DeviceId, DeviceInfo> = HashMap::new();
    loop {
        let sample = tokio::select! {
            () = cancel.cancelled() => return,
            r = samples.recv() => match r {
                Ok(s) => s,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let Some(info) = fleet.get(&sample.device).and_then(|b| b.info()) else {
            continue;
        };
        if seen.get(&sample.device) == Some(&info) {
            continue;
        }
        match store.upsert_device(&info, sample.at).await {
            Ok(()) => {
                tracing::info!(device = %info.id, model = %info.model, firmware = info.firmware, "device_registered");
                seen.insert(sample.device.clone(), info);
            }
            Err(e) => tracing::warn!(device = %sample.device, error = %e, "device_not_registered"),
        }
    }
}
