//! The Marstek transport (one UDP socket, requests matched to replies) against the in-process
//! simulator on loopback: every read method, unsupported methods remembered, retries and
//! resends, duplicate, late, garbage and hostile datagrams, the listen-port quirk, one socket for
//! a fleet, and the one request never retried.

mod marstek_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use marstek_bridge::domain::{Battery, Command, DriverError, Mode, Percent};
use marstek_bridge::marstek::Transport;
use marstek_bridge::marstek::protocol::{self, EsMode, decode_result, method};
use marstek_bridge::simulator::{Addressing, SimConfig, SimFaults, SimProfile, Simulator};
use marstek_common::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[tokio::test]
async fn every_read_method_decodes_from_a_venus_a() {
    let s = sim(SimProfile::VenusA, Some(150), 1).await;
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let a = s.addrs()[0];
    let o = opts(1000, 1, None);
    let dev = t
        .request(a, method::GET_DEVICE, protocol::get_device_params(), o)
        .await
        .unwrap();
    assert_eq!(dev.result["device"], json!("VenusA"));
    assert_eq!(dev.result["ver"], json!(150));
    assert_eq!(dev.result["ip"], json!("127.0.0.1"));
    let mac = s.ble_mac(0).unwrap();
    assert_eq!(dev.src.as_deref(), Some(format!("VenusA-{mac}").as_str()));
    for m in [
        method::WIFI_STATUS,
        method::BLE_STATUS,
        method::BAT_STATUS,
        method::PV_STATUS,
        method::ES_STATUS,
        method::ES_GET_MODE,
        method::EM_STATUS,
    ] {
        let r = t.request(a, m, protocol::instance_params(0), o).await;
        let r = r.unwrap_or_else(|e| panic!("{m}: {e}"));
        assert_eq!(r.result["id"], json!(0), "{m} echoes params.id");
    }
    // ES.GetMode echoes instance id 1 too
    let r = t
        .request(a, method::ES_GET_MODE, protocol::instance_params(1), o)
        .await
        .unwrap();
    assert_eq!(r.result["id"], json!(1));
    let m: EsMode = decode_result(&r.result).unwrap();
    assert_eq!(m.mode, Some(Mode::Auto));
    let st = t.stats();
    assert_eq!((st.duplicates, st.late, st.garbage), (0, 0, 0));
}

#[tokio::test]
async fn ups_on_old_firmware_is_unsupported_and_remembered() {
    // Venus E 3.0 fw 150: PV.GetStatus answers -32601 with data 424
    let s = sim(SimProfile::VenusE3, None, 1).await;
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let a = s.addrs()[0];
    let pv_status = || {
        t.request(
            a,
            method::PV_STATUS,
            protocol::instance_params(0),
            opts(500, 0, None),
        )
    };
    let e = pv_status().await.unwrap_err();
    assert!(matches!(e, DriverError::Device { code: -32601, .. }), "{e}");
    let received = s.stats(0).unwrap().received;
    let e = pv_status().await.unwrap_err();
    assert!(matches!(e, DriverError::Unsupported { .. }), "{e}");
    assert_eq!(s.stats(0).unwrap().received, received, "not sent again");
    assert!(t.is_unsupported(a, method::PV_STATUS));
    assert!(!t.is_unsupported(a, method::ES_STATUS));

    // HMG-50 fw 153 has no DOD.SET: the actor reports a device error
    let s2 = sim(SimProfile::VenusE2, Some(153), 1).await;
    let tracker = TaskTracker::new();
    let (b, _rx) = spawn_actor(t.clone(), s2.addrs()[0], fast(), &cancel, &tracker);
    let e = b
        .execute(&Command::SetDod { value: Percent(50) })
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Device { code: -32601, .. }), "{e}");
}

#[tokio::test]
async fn a_retry_succeeds_after_a_dropped_first_packet() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    s.set_faults(
        0,
        SimFaults {
            drop_first_after_idle: Some(Duration::from_secs(60)),
            ..SimFaults::default()
        },
    );
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let a = s.addrs()[0];
    let r = get_mode(&t, a, opts(200, 2, None)).await.unwrap();
    assert_eq!(r.attempts, 2, "first attempt dropped, retry answered");
    // a second copy after silence answers within the first attempt
    let s2 = sim(SimProfile::VenusE3, None, 1).await;
    s2.update_faults(0, |f| {
        f.drop_first_after_idle = Some(Duration::from_secs(60))
    });
    let r = get_mode(&t, s2.addrs()[0], opts(2000, 0, Some(100)))
        .await
        .unwrap();
    assert_eq!(r.attempts, 1);
    assert!(t.stats().resent >= 1);
    // without retries the silence is a timeout
    let s3 = sim(SimProfile::VenusE3, None, 1).await;
    s3.update_faults(0, |f| {
        f.drop_first_after_idle = Some(Duration::from_secs(60))
    });
    let e = get_mode(&t, s3.addrs()[0], opts(150, 0, None))
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Timeout { attempts: 1, .. }), "{e}");
}

#[tokio::test]
async fn duplicates_are_ignored() {
    let s = sim(SimProfile::VenusE2, None, 1).await;
    s.update_faults(0, |f| f.duplicate_replies = true);
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let a = s.addrs()[0];
    let o = opts(1000, 0, None);
    let r1 = t
        .request(a, method::ES_GET_MODE, protocol::instance_params(0), o)
        .await
        .unwrap();
    assert!(r1.result.get("mode").is_some());
    // the duplicate of r1 arrives before r2's reply on the same socket
    let r2 = t
        .request(a, method::BAT_STATUS, protocol::instance_params(0), o)
        .await
        .unwrap();
    assert!(
        r2.result.get("soc").is_some(),
        "r2 got its own reply: {}",
        r2.result
    );
    let st = t.stats();
    // r1's duplicate is counted before r2 completes; r2's own duplicate may follow at once
    assert!((1..=2).contains(&st.duplicates), "{st:?}");
    assert_eq!(st.matched, 2);
}

#[tokio::test]
async fn a_late_reply_does_not_confuse_the_next_request() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    s.update_faults(0, |f| f.late_replies = Some(Duration::from_millis(300)));
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let a = s.addrs()[0];
    let e = t
        .request(
            a,
            method::GET_DEVICE,
            protocol::get_device_params(),
            opts(100, 0, None),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Timeout { .. }));
    // the next request is pending when the late GetDevice reply arrives
    let r = get_mode(&t, a, opts(2000, 0, None)).await.unwrap();
    assert!(r.result.get("mode").is_some(), "{}", r.result);
    assert!(r.result.get("device").is_none());
    assert_eq!(t.stats().late, 1);
}

#[tokio::test]
async fn garbage_replies_are_counted_not_fatal() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    s.update_faults(0, |f| f.malformed_json = true);
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let a = s.addrs()[0];
    let e = get_mode(&t, a, opts(150, 0, None)).await.unwrap_err();
    assert!(matches!(e, DriverError::Timeout { .. }));
    assert_eq!(t.stats().garbage, 1);
    s.update_faults(0, |f| f.malformed_json = false);
    get_mode(&t, a, opts(1000, 0, None)).await.unwrap();
}

#[tokio::test]
async fn listen_port_only_firmware_needs_the_device_port() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    s.update_faults(0, |f| f.reply_only_to_listen_port = true);
    let a = s.addrs()[0];
    let cancel = CancellationToken::new();
    let eph = transport(&cancel).await;
    let e = get_mode(&eph, a, opts(150, 0, None)).await.unwrap_err();
    assert!(matches!(e, DriverError::Timeout { .. }));
    // bound to the device port number (on another loopback address), it answers
    let bound = Transport::bind(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), a.port()),
        &cancel,
    )
    .await
    .unwrap();
    get_mode(&bound, a, opts(1000, 0, None)).await.unwrap();
}

#[tokio::test]
async fn one_socket_serves_a_fleet_on_consecutive_addresses() {
    let s = Simulator::start(SimConfig {
        devices: 5,
        addressing: Addressing::Addresses {
            first: Ipv4Addr::new(127, 0, 3, 1),
            port: 0,
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let o = opts(1000, 1, None);
    let replies = futures::future::join_all(
        s.addrs()
            .into_iter()
            .map(|a| t.request(a, method::GET_DEVICE, protocol::get_device_params(), o)),
    )
    .await;
    for (i, r) in replies.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(
            r.result["ble_mac"],
            json!(s.ble_mac(i).unwrap()),
            "reply {i} demuxed by source"
        );
        assert_eq!(r.result["ip"], json!(format!("127.0.3.{}", i + 1)));
    }
}

#[tokio::test]
async fn hostile_datagrams_are_counted_and_harmless() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let to = t.local_addr();
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        b"{".to_vec(),
        b"[1,2,3]".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        vec![b' '; 5000],
        br#"{"id":"abc","result":{}}"#.to_vec(),
        br#"{"id":12,"src":"x"}"#.to_vec(),
    ];
    for g in &garbage {
        attacker.send_to(g, to).await.unwrap();
    }
    // well-formed but unknown: wrong source and/or id never issued
    attacker
        .send_to(br#"{"id":77,"src":"x","result":{"mode":"Auto"}}"#, to)
        .await
        .unwrap();
    let r = get_mode(&t, s.addrs()[0], opts(1000, 0, None))
        .await
        .unwrap();
    assert!(r.result.get("mode").is_some());
    let st = t.stats();
    assert_eq!(st.garbage, garbage.len() as u64, "{st:?}");
    assert_eq!(st.unknown, 1, "{st:?}");
    assert_eq!(st.matched, 1);
}

#[tokio::test]
async fn reset_factory_is_never_retried() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    s.set_silent(0, true);
    let cancel = CancellationToken::new();
    let t = transport(&cancel).await;
    let e = t
        .request(
            s.addrs()[0],
            method::RESET_FACTORY,
            json!({"id":0,"type":2}),
            opts(100, 3, Some(20)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Timeout { attempts: 1, .. }), "{e}");
    assert_eq!(s.stats(0).unwrap().received, 1, "one datagram, no resend");
}
