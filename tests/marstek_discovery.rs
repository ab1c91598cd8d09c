//! Finding Marstek devices against the in-process simulator on loopback: `probe` of one address,
//! `discover` over a port range, and de-duplication by BLE MAC.

mod marstek_common;
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use marstek_bridge::marstek::{discover, probe};
use marstek_bridge::simulator::SimProfile;
use marstek_common::*;
use serde_json::json;
use support::start_on_ports;

#[tokio::test]
async fn probe_prints_the_device() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    let a = s.addrs()[0];
    let out = probe(&a.to_string(), false).await.unwrap();
    assert!(out.contains("VenusE 3.0"), "{out}");
    assert!(out.contains(&s.ble_mac(0).unwrap()), "{out}");
    assert!(out.contains("Auto"), "{out}");
    let js: serde_json::Value =
        serde_json::from_str(&probe(&a.to_string(), true).await.unwrap()).unwrap();
    assert_eq!(js["firmware"], json!(150));
    assert_eq!(js["sample"]["soc"], json!(50));
    assert!(probe("not a host", false).await.is_err());
}

#[tokio::test]
async fn discover_finds_every_device_on_a_port_range() {
    let (base, s) = start_on_ports(12, None, None).await.expect("free ports");
    s.update_faults(3, |f| f.omit_macs = true);
    let scan = |last: u16, json: bool| {
        discover(
            Duration::from_secs(5),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            base..=last,
            json,
        )
    };
    let out = scan(base + 15, true).await.unwrap();
    let found: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(found.len(), 12, "{out}");
    for i in 0..12 {
        let mac = s.ble_mac(i).unwrap();
        assert!(
            found.iter().any(|d| d["ble_mac"] == json!(mac)),
            "device {i} ({mac}) found, incl. MAC from src"
        );
    }
    let table = scan(base + 11, false).await.unwrap();
    assert!(table.contains("12 device(s) found"), "{table}");
}

#[tokio::test]
async fn discovery_deduplicates_by_ble_mac() {
    // two simulators with the same MAC seed look like the same batteries on two ports
    let mut pair = None;
    for _ in 0..20 {
        let Some((base, a)) = start_on_ports(2, None, Some(7)).await else {
            continue;
        };
        if let Some((_, b)) = start_on_ports(2, Some(base + 2), Some(7)).await {
            pair = Some((base, a, b));
            break;
        }
    }
    let (base, _a, _b) = pair.expect("free ports");
    let found =
        marstek_bridge::marstek::discover_devices(&marstek_bridge::marstek::DiscoverOptions {
            window: Duration::from_secs(3),
            rebroadcast: Duration::from_millis(200),
            target: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ports: (base..=base + 3).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
}
