//! The simulator seen from the wire (raw UDP, as a third-party client sees it): identities, key
//! names, error replies, per-profile methods and encodings, time-driven state, both addressing
//! shapes, and a full poll round of 1,000 devices (ignored by default: it is the benchmark).

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use marstek_bridge::domain::Mode;
use marstek_bridge::marstek::protocol::{self, method};
use marstek_bridge::marstek::{RequestOptions, Transport};
use marstek_bridge::simulator::{Addressing, SimConfig, SimProfile, Simulator};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use support::start_on_ports;

async fn raw(to: SocketAddr, payload: &[u8]) -> Option<Value> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, to, "reply comes from the targeted address");
            Some(serde_json::from_slice(&buf[..n]).expect("valid JSON"))
        }
        _ => None,
    }
}

async fn start(profile: SimProfile, firmware: Option<i64>) -> marstek_bridge::simulator::SimHandle {
    Simulator::start(SimConfig {
        profile,
        firmware,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn wire_format_matches_real_devices() {
    let s = start(SimProfile::VenusE3, None).await;
    let a = s.addrs()[0];
    let mac = s.ble_mac(0).unwrap();
    assert_eq!(mac.len(), 12);
    assert!(
        mac.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );

    let r = raw(
        a,
        br#"{"id":4242,"method":"Marstek.GetDevice","params":{"ble_mac":"0"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r["id"], json!(4242));
    assert_eq!(r["src"], json!(format!("VenusE 3.0-{mac}")));
    assert_eq!(r["result"]["device"], json!("VenusE 3.0"));
    assert_eq!(r["result"]["ver"], json!(150));
    assert_eq!(r["result"]["ip"], json!("127.0.0.1"));

    let r = raw(a, br#"{"id":5,"method":"ES.GetStatus","params":{"id":0}}"#)
        .await
        .unwrap();
    let res = &r["result"];
    assert!(res["bat_soc"].is_number() && res["ongrid_power"].is_number());
    assert!(res.get("soc").is_none() && res.get("bat_power").is_none());
    let r = raw(a, br#"{"id":6,"method":"Bat.GetStatus","params":{"id":0}}"#)
        .await
        .unwrap();
    let res = &r["result"];
    assert!(
        res["soc"].is_number()
            && res["charg_flag"].is_boolean()
            && res["dischrg_flag"].is_boolean()
    );
    let r = raw(a, br#"{"id":7,"method":"ES.GetMode","params":{"id":1}}"#)
        .await
        .unwrap();
    assert_eq!(r["result"]["id"], json!(1));
    assert_eq!(r["result"]["mode"], json!("Auto"));

    let r = raw(a, b"{not json").await.unwrap();
    assert_eq!(r["id"], json!(0));
    assert_eq!(r["error"]["code"], json!(-32700));
    let r = raw(a, br#"{"id":8,"method":"PV.GetStatus","params":{"id":0}}"#)
        .await
        .unwrap();
    assert_eq!(
        r["error"],
        json!({"code":-32601,"message":"Method not found","data":424})
    );
    let r = raw(
        a,
        br#"{"id":9,"method":"wifi.GetStatus","params":{"id":0}}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        r["error"]["code"],
        json!(-32601),
        "method names are case-sensitive"
    );

    // Manual without manual_cfg is refused; state unchanged
    let r = raw(
        a,
        br#"{"id":10,"method":"ES.SetMode","params":{"id":0,"config":{"mode":"Manual"}}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r["result"]["set_result"], json!(false));
    assert_eq!(s.state(0).unwrap().mode, Mode::Auto);
    let r = raw(a, br#"{"id":11,"method":"ES.SetMode","params":{"id":0,"config":{"mode":"Passive","passive_cfg":{"power":-500,"cd_time":60}}}}"#).await.unwrap();
    assert_eq!(r["result"], json!({"id":0,"set_result":true}));
    assert_eq!(s.state(0).unwrap().mode, Mode::Passive);

    // 16-bit id wrap fault
    s.update_faults(0, |f| f.id_wrap_16 = true);
    let r = raw(
        a,
        br#"{"id":70000,"method":"ES.GetMode","params":{"id":0}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r["id"], json!(70000 - 65536));
    // silence toggled at run time; an empty datagram with freeze-on-empty freezes it
    s.set_silent(0, true);
    assert!(
        raw(a, br#"{"id":1,"method":"ES.GetMode","params":{"id":0}}"#)
            .await
            .is_none()
    );
    s.set_silent(0, false);
    assert!(
        raw(a, br#"{"id":1,"method":"ES.GetMode","params":{"id":0}}"#)
            .await
            .is_some()
    );
    s.update_faults(0, |f| f.freeze_on_empty = true);
    assert!(raw(a, b"").await.is_none());
    assert!(
        raw(a, br#"{"id":1,"method":"ES.GetMode","params":{"id":0}}"#)
            .await
            .is_none()
    );
    assert!(s.stats(0).unwrap().dropped >= 3);
}

#[tokio::test]
async fn old_firmware_method_sets() {
    // Venus E 3.0 fw 139: ES.GetStatus silently missing, string ids ignored, ×10 temperature
    let s = start(SimProfile::VenusE3, Some(139)).await;
    let a = s.addrs()[0];
    assert!(
        raw(a, br#"{"id":1,"method":"ES.GetStatus","params":{"id":0}}"#)
            .await
            .is_none()
    );
    assert!(
        raw(a, br#"{"id":"x","method":"ES.GetMode","params":{"id":0}}"#)
            .await
            .is_none()
    );
    let r = raw(a, br#"{"id":2,"method":"Bat.GetStatus","params":{"id":0}}"#)
        .await
        .unwrap();
    assert!(r["result"]["bat_temp"].as_i64().unwrap() >= 250, "{r}");
    let r = raw(a, br#"{"id":3,"method":"ES.SetMode","params":{"id":0,"config":{"mode":"UPS","ups_cfg":{"enable":1}}}}"#).await.unwrap();
    assert_eq!(r["error"]["code"], json!(-32601), "UPS needs fw 150");
    assert_eq!(r["error"].get("data"), None);
    // HMG-50 fw 153: bat_power present, no EM, no DOD
    let s = start(SimProfile::VenusE2, Some(153)).await;
    let a = s.addrs()[0];
    let r = raw(a, br#"{"id":1,"method":"ES.GetStatus","params":{"id":0}}"#)
        .await
        .unwrap();
    assert!(r["result"]["bat_power"].is_number());
    for m in ["EM.GetStatus", "DOD.SET", "Led.Ctrl", "PV.GetStatus"] {
        let req = format!(r#"{{"id":1,"method":"{m}","params":{{"id":0}}}}"#);
        let r = raw(a, req.as_bytes()).await.unwrap();
        assert_eq!(r["error"]["code"], json!(-32601), "{m}");
    }
    // Venus E mini: 6 slots
    let s = start(SimProfile::VenusEMini, None).await;
    let r = raw(s.addrs()[0], br#"{"id":1,"method":"ES.SetMode","params":{"id":0,"config":{"mode":"Manual","manual_cfg":{"time_num":6,"start_time":"00:00","end_time":"23:59","week_set":127,"power":100,"enable":1}}}}"#).await.unwrap();
    assert_eq!(r["result"]["set_result"], json!(false));
}

#[tokio::test]
async fn state_evolves_with_injected_time() {
    let s = start(SimProfile::VenusA, Some(148)).await;
    let a = s.addrs()[0];
    // go to 12:00 UTC tomorrow: PV produces, PV1 is sent in deciwatts on fw 148
    let noon = (Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap();
    s.clock().set(Utc.from_utc_datetime(&noon));
    s.set_soc(0, 20.0);
    let r = raw(a, br#"{"id":1,"method":"PV.GetStatus","params":{"id":0}}"#)
        .await
        .unwrap();
    let res = &r["result"];
    let (p1, p2) = (
        res["pv1_power"].as_f64().unwrap(),
        res["pv2_power"].as_f64().unwrap(),
    );
    assert!(p2 > 100.0, "{res}");
    assert!((p1 / p2 - 10.0).abs() < 0.2, "PV1 deciwatts: {p1} vs {p2}");

    // Passive charge 1040 W for 30 min on 2080 Wh = +25 %
    let before = s.state(0).unwrap();
    let r = raw(a, br#"{"id":2,"method":"ES.SetMode","params":{"id":0,"config":{"mode":"Passive","passive_cfg":{"power":-1040,"cd_time":1800}}}}"#).await.unwrap();
    assert_eq!(r["result"]["set_result"], json!(true));
    s.clock().advance(Duration::from_secs(1800));
    let after = s.state(0).unwrap();
    assert!(
        (after.soc - before.soc - 25.0).abs() < 1.0,
        "{} → {}",
        before.soc,
        after.soc
    );
    assert!(after.in_wh > before.in_wh, "grid input counter grows");
    let r = raw(a, br#"{"id":3,"method":"ES.GetStatus","params":{"id":0}}"#)
        .await
        .unwrap();
    assert!(r["result"]["total_pv_energy"].as_i64().unwrap() > 0);
    // countdown over → Auto
    s.clock().advance(Duration::from_secs(120));
    assert_eq!(s.state(0).unwrap().mode, Mode::Auto);
    assert!(r["result"]["bat_soc"].as_i64().unwrap() >= 44);
}

#[tokio::test]
async fn both_addressing_shapes() {
    let s = Simulator::start(SimConfig {
        devices: 4,
        addressing: Addressing::Addresses {
            first: Ipv4Addr::new(127, 0, 2, 1),
            port: 0,
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ips: Vec<IpAddr> = s.addrs().iter().map(|a| a.ip()).collect();
    assert_eq!(ips.last(), Some(&IpAddr::V4(Ipv4Addr::new(127, 0, 2, 4))));
    for a in s.addrs() {
        let r = raw(
            a,
            br#"{"id":1,"method":"Marstek.GetDevice","params":{"ble_mac":"0"}}"#,
        )
        .await
        .unwrap();
        assert_eq!(r["result"]["ip"], json!(a.ip().to_string()));
    }
    let (base, s) = start_on_ports(3, None, None).await.expect("free ports");
    let ports: Vec<u16> = s.addrs().iter().map(|a| a.port()).collect();
    assert_eq!(ports, vec![base, base + 1, base + 2]);
}

/// User + system CPU time of this process, seconds (from /proc, 100 Hz ticks).
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Benchmark: one simulator with 1,000 devices answers a full poll round (4 reads each) from
/// one client socket. Run with `cargo test --release --test simulator_fleet -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints time and RSS"]
async fn thousand_devices_full_poll_round() {
    let rss0 = rss_kb();
    let s = Simulator::start(SimConfig {
        devices: 1000,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let rss_sim = rss_kb();
    let cancel = CancellationToken::new();
    let t = Transport::bind("127.0.0.1:0".parse().unwrap(), &cancel)
        .await
        .unwrap();
    let o = RequestOptions {
        timeout: Duration::from_secs(2),
        retries: 2,
        resend_after: None,
    };
    for round in 0..3 {
        let started = Instant::now();
        let cpu0 = cpu_seconds();
        let results = futures::future::join_all(s.addrs().into_iter().map(|a| {
            let t = t.clone();
            async move {
                for m in [
                    method::ES_STATUS,
                    method::ES_GET_MODE,
                    method::BAT_STATUS,
                    method::WIFI_STATUS,
                ] {
                    t.request(a, m, protocol::instance_params(0), o).await?;
                }
                Ok::<(), marstek_bridge::domain::DriverError>(())
            }
        }))
        .await;
        let elapsed = started.elapsed();
        let cpu = cpu_seconds().zip(cpu0).map(|(a, b)| a - b);
        let failed = results.iter().filter(|r| r.is_err()).count();
        println!(
            "round {round}: 1000 devices x 4 reads in {:.1} ms (CPU {cpu:?} s, client + simulator), {failed} failed, stats {:?}",
            elapsed.as_secs_f64() * 1000.0,
            t.stats()
        );
        assert_eq!(failed, 0);
    }
    println!(
        "RSS: before {:?} kB, with 1000 simulated devices {:?} kB, after polling {:?} kB",
        rss0,
        rss_sim,
        rss_kb()
    );
}

#[tokio::test]
async fn hundred_devices_answer_a_poll_round() {
    let s = Simulator::start(SimConfig {
        devices: 100,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let t = Transport::bind("127.0.0.1:0".parse().unwrap(), &cancel)
        .await
        .unwrap();
    let o = RequestOptions {
        timeout: Duration::from_secs(2),
        retries: 2,
        resend_after: None,
    };
    let results = futures::future::join_all(
        s.addrs()
            .into_iter()
            .map(|a| t.request(a, method::ES_GET_MODE, protocol::instance_params(0), o)),
    )
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(t.stats().matched, 100);
}

#[tokio::test]
async fn random_datagrams_never_break_a_device() {
    let s = start(SimProfile::VenusA, None).await;
    let a = s.addrs()[0];
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..300u32 {
        let len = rand::random_range(0..1500usize);
        let mut bytes: Vec<u8> = (0..len).map(|_| rand::random()).collect();
        if i % 3 == 0 {
            // random JSON-ish requests with wrong types
            let m = [
                "ES.SetMode",
                "DOD.SET",
                "Marstek.GetDevice",
                "ES.GetMode",
                "x",
            ][i as usize % 5];
            bytes = serde_json::to_vec(&json!({
                "id": if i % 2 == 0 { json!(i) } else { json!("s") },
                "method": m,
                "params": {"id": [1], "config": {"mode": i, "manual_cfg": {"time_num": -1}, "passive_cfg": "x"}, "value": "9"},
            }))
            .unwrap();
        }
        sock.send_to(&bytes, a).await.unwrap();
    }
    let r = raw(a, br#"{"id":1,"method":"ES.GetMode","params":{"id":0}}"#)
        .await
        .unwrap();
    assert_eq!(
        r["result"]["mode"],
        json!("Auto"),
        "state unchanged by garbage"
    );
    assert_eq!(s.state(0).unwrap().dod, 88);
}

#[tokio::test]
async fn simulate_command_runs_until_cancelled() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: marstek_bridge::simulator::SimulateArgs,
    }
    let base: u16 = rand::random_range(20_000..30_000);
    let cli = Cli::try_parse_from([
        "x",
        "--devices",
        "2",
        "--base-port",
        &base.to_string(),
        "--profile",
        "venus-e-mini",
        "--faults",
        "duplicate,integer-mode",
    ])
    .unwrap();
    let cfg = cli.sim.to_config().unwrap();
    assert!(cfg.faults.duplicate_replies && cfg.faults.integer_mode);
    assert!(Cli::try_parse_from(["x", "--profile", "venus-z"]).is_err());
    let bad = Cli::try_parse_from(["x", "--faults", "ignore-writes,nonsense"])
        .err()
        .expect("a bad fault list is refused");
    assert!(bad.to_string().contains("'nonsense'"), "{bad}");

    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let c = cancel.clone();
        async move { marstek_bridge::simulator::simulate(&cli.sim, c).await }
    });
    // wait until it answers, then stop it
    let to: SocketAddr = format!("127.0.0.1:{}", base + 1).parse().unwrap();
    let mut answered = None;
    for _ in 0..50 {
        answered = raw(to, br#"{"id":1,"method":"ES.GetMode","params":{"id":0}}"#).await;
        if answered.is_some() {
            break;
        }
    }
    let r = answered.expect("simulate serves");
    assert_eq!(r["result"]["mode"], json!(0), "integer-mode fault");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
