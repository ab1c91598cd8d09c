//! Finding batteries: broadcast `Marstek.GetDevice` to 255.255.255.255 and every interface's
//! directed broadcast on the configured ports, or unicast probes of one address over a port
//! range (loopback has no broadcast). Answers are collected for a window and de-duplicated by
//! `ble_mac` (taken from the `src` suffix when the device omits it). Touches one UDP socket.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;

use super::profile::normalize_firmware;
use super::protocol::{DeviceResult, Response, decode_result, discovery_request};
use crate::domain::DriverError;

/// A battery that answered discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredDevice {
    /// BLE MAC, 12 lowercase hex digits (stable identity).
    pub ble_mac: String,
    /// Model string (`VenusE 3.0`, …).
    pub device: String,
    /// Normalised firmware (1476 → 147).
    pub firmware: u32,
    /// Address and port the answer came from (preferred over `ip`).
    pub addr: SocketAddr,
    /// IP the device reports.
    pub reported_ip: Option<String>,
    /// Wi-Fi MAC, when reported.
    pub wifi_mac: Option<String>,
}

/// What to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoverOptions {
    /// How long to collect answers.
    pub window: Duration,
    /// Re-send probes this often (only to addresses that have not answered yet when unicast).
    pub rebroadcast: Duration,
    /// Unicast target; None = broadcast on every interface.
    pub target: Option<IpAddr>,
    /// Ports probed (e.g. `DiscoverySettings::ports`, or a range collected into a list).
    pub ports: Vec<u16>,
    /// Local address to bind (port 0 = ephemeral).
    pub bind: SocketAddr,
}

impl DiscoverOptions {
    /// Options from the `[marstek.discovery]` settings (broadcast on the configured ports).
    pub fn from_settings(s: &super::settings::DiscoverySettings) -> Self {
        Self {
            window: s.window,
            rebroadcast: s.rebroadcast,
            ports: s.ports.clone(),
            ..Self::default()
        }
    }
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            rebroadcast: Duration::from_secs(2),
            target: None,
            ports: vec![30000],
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        }
    }
}

fn broadcast_addresses() -> Vec<IpAddr> {
    let mut out = vec![IpAddr::V4(Ipv4Addr::BROADCAST)];
    if let Ok(ifs) = if_addrs::get_if_addrs() {
        for i in ifs {
            if let if_addrs::IfAddr::V4(v4) = i.addr
                && let Some(b) = v4.broadcast
                && !v4.ip.is_loopback()
            {
                out.push(IpAddr::V4(b));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The BLE MAC at the end of a reply's `src` (`VenusE 3.0-681268abcdef`), lowercase.
pub fn mac_from_src(src: &str) -> Option<String> {
    let tail = src.rsplit('-').next()?;
    (tail.len() == 12 && tail.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| tail.to_ascii_lowercase())
}

/// Answers found so far, keyed by BLE MAC (first answer wins).
type Found = Arc<Mutex<BTreeMap<String, DiscoveredDevice>>>;
/// Addresses that have answered.
type Answered = Arc<Mutex<HashSet<SocketAddr>>>;

/// Probes and collects answers for the window; result sorted by address.
pub async fn discover_devices(
    opts: &DiscoverOptions,
) -> Result<Vec<DiscoveredDevice>, DriverError> {
    let socket = UdpSocket::bind(opts.bind)
        .await
        .map_err(|e| DriverError::Io(format!("bind {}: {e}", opts.bind)))?;
    socket
        .set_broadcast(true)
        .map_err(|e| DriverError::Io(e.to_string()))?;
    let socket = Arc::new(socket);
    let found: Found = Arc::default();
    let answered: Answered = Arc::default();
    let receiver = tokio::spawn(receive(socket.clone(), found.clone(), answered.clone()));

    let request = discovery_request().to_bytes();
    let hosts = match opts.target {
        Some(ip) => vec![ip],
        None => broadcast_addresses(),
    };
    let deadline = tokio::time::Instant::now() + opts.window;
    loop {
        let sent = send_probes(&socket, &request, &hosts, opts, &answered).await;
        if opts.target.is_some() && sent == 0 {
            break; // every probed port answered
        }
        let next = tokio::time::Instant::now() + opts.rebroadcast;
        if next >= deadline {
            tokio::time::sleep_until(deadline).await;
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    receiver.abort();
    let mut v: Vec<DiscoveredDevice> = found
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    v.sort_by_key(|d| d.addr);
    Ok(v)
}

/// Collects answers until the socket fails (or the task is aborted).
async fn receive(socket: Arc<UdpSocket>, found: Found, answered: Answered) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let Some(dev) = device_from_reply(buf.get(..n).unwrap_or_default(), from) else {
            continue;
        };
        answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(from);
        found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(dev.ble_mac.clone())
            .or_insert(dev);
    }
}

/// The device a `Marstek.GetDevice` reply from `from` describes; None for garbage or errors.
fn device_from_reply(bytes: &[u8], from: SocketAddr) -> Option<DiscoveredDevice> {
    let Ok(resp) = Response::decode(bytes) else {
        tracing::debug!(%from, "discovery_garbage");
        return None;
    };
    let result = resp.body.ok()?;
    let d = decode_result::<DeviceResult>(&result).ok()?;
    let mac = d
        .ble_mac
        .clone()
        .filter(|m| !m.is_empty())
        .map(|m| m.to_ascii_lowercase())
        .or_else(|| resp.src.as_deref().and_then(mac_from_src))
        .unwrap_or_else(|| from.to_string());
    Some(DiscoveredDevice {
        ble_mac: mac,
        device: d.device.clone().unwrap_or_default(),
        firmware: normalize_firmware(d.ver.unwrap_or(0)),
        addr: from,
        reported_ip: d.ip.clone(),
        wifi_mac: d.wifi_mac.clone(),
    })
}

/// Sends one probe round (unicast: only to ports that have not answered); how many were sent.
async fn send_probes(
    socket: &UdpSocket,
    request: &[u8],
    hosts: &[IpAddr],
    opts: &DiscoverOptions,
    answered: &Answered,
) -> usize {
    let mut sent = 0usize;
    for host in hosts {
        for port in &opts.ports {
            let to = SocketAddr::new(*host, *port);
            if opts.target.is_some()
                && answered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&to)
            {
                continue;
            }
            if let Err(e) = socket.send_to(request, to).await {
                tracing::debug!(%to, error = %e, "discovery_send_failed");
            }
            sent += 1;
            if sent.is_multiple_of(64) {
                // pace bursts so receive buffers keep up
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_from_src_suffix() {
        assert_eq!(
            mac_from_src("VenusE 3.0-681268AABBCC").as_deref(),
            Some("681268aabbcc")
        );
        assert_eq!(mac_from_src("VenusC-mac"), None);
        assert!(broadcast_addresses().contains(&IpAddr::V4(Ipv4Addr::BROADCAST)));
    }
}
