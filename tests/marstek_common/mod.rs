//! Shared helpers of the Marstek driver suites (`marstek_transport`, `marstek_actor`,
//! `marstek_discovery`): an in-process simulator on loopback, a transport on an ephemeral
//! loopback port, fast polling settings, request options and a device actor. Include with
//! `mod marstek_common;`. Touches only loopback sockets and the tasks it spawns.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use marstek_bridge::domain::{DeviceId, DeviceLimits, DriverError, Sample};
use marstek_bridge::marstek::protocol::{self, method};
use marstek_bridge::marstek::{
    DeviceSpec, MarstekBattery, PollingSettings, RequestOptions, Transport,
};
use marstek_bridge::simulator::{SimConfig, SimHandle, SimProfile, Simulator};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn sim(profile: SimProfile, firmware: Option<i64>, n: usize) -> SimHandle {
    Simulator::start(SimConfig {
        profile,
        firmware,
        devices: n,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

pub async fn transport(cancel: &CancellationToken) -> Arc<Transport> {
    Transport::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), cancel)
        .await
        .expect("bind")
}

pub fn fast() -> PollingSettings {
    PollingSettings {
        status_interval: Duration::from_secs(3600),
        request_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        quiet_gap: Duration::ZERO,
        retries: 1,
        resend_after: Duration::ZERO,
        failures_before_unreachable: 2,
        queue_capacity: 8,
        extras_every: 1,
        read_battery: true,
        // silence tests expect a silent battery to go unreachable at once, even on fw 150
        network_reset_blackout: false,
    }
}

pub fn opts(timeout_ms: u64, retries: u32, resend_ms: Option<u64>) -> RequestOptions {
    RequestOptions {
        timeout: Duration::from_millis(timeout_ms),
        retries,
        resend_after: resend_ms.map(Duration::from_millis),
    }
}

/// One `ES.GetMode` call through `t` (the read most exchange tests use).
pub async fn get_mode(
    t: &Transport,
    a: SocketAddr,
    o: RequestOptions,
) -> Result<marstek_bridge::marstek::client::Reply, DriverError> {
    t.request(a, method::ES_GET_MODE, protocol::instance_params(0), o)
        .await
}

pub fn spawn_actor(
    t: Arc<Transport>,
    addr: SocketAddr,
    settings: PollingSettings,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> (MarstekBattery, broadcast::Receiver<Sample>) {
    let (tx, rx) = broadcast::channel(64);
    let spec = DeviceSpec {
        id: DeviceId::parse("bat1").unwrap(),
        addr,
        limits: DeviceLimits::default(),
    };
    (
        MarstekBattery::spawn(t, spec, settings, tx, cancel.clone(), tracker),
        rx,
    )
}

pub async fn wait_available(b: &MarstekBattery, want: bool) {
    let mut rx = b.availability();
    tokio::time::timeout(WAIT, rx.wait_for(|v| *v == want))
        .await
        .expect("availability change in time")
        .expect("actor alive");
}
