//! Home Assistant discovery against the whole bridge (the app's own builder,
//! `tests/support/bridge_rig.rs`) on the test broker: retained and complete configs in both
//! discovery styles, republished at Home Assistant's birth, and removed for a battery that left
//! the configuration. Each test runs once with the bridge on MQTT 3.1.1 and once on MQTT 5.

#[macro_use]
mod support;

use std::time::Duration;

use marstek_bridge::mqtt::{DiscoveryStyle, MqttProtocol, discovery::parse_topic_list};
use serde_json::Value;
use support::bridge_rig::TestBridge;
use support::mqtt_probe::{Probe, WAIT};

for_both_protocols!(
    discovery_configs_are_retained_and_complete,
    ha_birth_republishes_and_removed_devices_are_cleared,
);

async fn discovery_configs_are_retained_and_complete(protocol: MqttProtocol) {
    for style in [DiscoveryStyle::Entity, DiscoveryStyle::Device] {
        let bb = TestBridge::builder("disc")
            .protocol(protocol)
            .devices(&["acd929a744d4"])
            .with(move |s| s.mqtt.discovery = style);
        let (base, prefix) = (bb.base_topic().to_string(), bb.prefix());
        let mut live = Probe::connect(&[format!("{base}/bridge/discovery")]).await;
        let b = bb.start().await;
        let list = live
            .wait("discovery list", WAIT, |m| {
                m.topic.ends_with("/bridge/discovery")
            })
            .await;
        let topics = parse_topic_list(&list.payload, &prefix);
        match style {
            DiscoveryStyle::Entity => assert!(topics.len() > 25, "{topics:?}"),
            _ => assert_eq!(topics.len(), 2),
        }
        // A late subscriber gets every config retained.
        let mut p = Probe::connect(&[format!("{prefix}/#")]).await;
        let mut got = std::collections::BTreeMap::new();
        while got.len() < topics.len() {
            let m = p
                .wait("retained config", WAIT, |m| m.topic.ends_with("/config"))
                .await;
            assert!(m.retain, "{} not retained", m.topic);
            got.insert(m.topic.clone(), m.json());
        }
        let check_entity = |topic: &str, platform: &str, v: &Value, dev: &Value| {
            assert!(
                v["unique_id"].as_str().is_some_and(|u| !u.is_empty()),
                "{topic}"
            );
            assert!(v.get("object_id").is_none(), "{topic}");
            assert!(
                v["default_entity_id"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{platform}.")),
                "{topic}"
            );
            match platform {
                "sensor" | "binary_sensor" => assert!(v["state_topic"].is_string(), "{topic}"),
                _ => assert!(v["command_topic"].is_string(), "{topic}"),
            }
            assert!(dev["identifiers"][0].is_string());
            let unit = v["unit_of_measurement"].as_str();
            match v["device_class"].as_str() {
                Some("battery") => assert_eq!(unit, Some("%")),
                Some("power") => assert_eq!(unit, Some("W")),
                Some("energy") => {
                    assert_eq!(unit, Some("Wh"));
                    assert_eq!(v["state_class"], "total_increasing");
                }
                Some("energy_storage") => assert_eq!(unit, Some("Wh")),
                Some("temperature") => assert_eq!(unit, Some("°C")),
                _ => {}
            }
            if v["state_class"] == "measurement" {
                assert!(v["expire_after"].as_u64().unwrap() >= 1, "{topic}");
            }
        };
        for (topic, v) in &got {
            assert!(topics.contains(topic));
            match style {
                DiscoveryStyle::Entity => {
                    let platform = topic.split('/').nth(1).unwrap();
                    assert_eq!(v["origin"]["name"], "marstek-bridge");
                    check_entity(topic, platform, v, &v["device"]);
                    if topic.contains("acd929a744d4") && !topic.contains("unreachable") {
                        assert_eq!(v["availability_mode"], "all", "{topic}");
                        let av = v["availability"].as_array().unwrap();
                        assert_eq!(av.len(), 2);
                        assert_eq!(av[0]["topic"], format!("{base}/bridge/state"));
                        assert_eq!(av[0]["value_template"], "{{ value_json.state }}");
                        assert_eq!(av[1]["topic"], format!("{base}/acd929a744d4/availability"));
                        assert!(v["device"]["via_device"].is_string());
                    }
                }
                _ => {
                    assert_eq!(v["origin"]["name"], "marstek-bridge");
                    for (key, c) in v["components"].as_object().unwrap() {
                        let platform = c["platform"].as_str().unwrap().to_string();
                        check_entity(&format!("{topic}#{key}"), &platform, c, &v["device"]);
                    }
                }
            }
        }
        let soc_topic = match style {
            DiscoveryStyle::Entity => {
                format!("{prefix}/sensor/{base}_acd929a744d4/soc/config")
            }
            _ => format!("{prefix}/device/{base}_acd929a744d4/config"),
        };
        assert!(got.contains_key(&soc_topic), "{soc_topic} missing");
        b.stop_and_clear().await;
    }
}

async fn ha_birth_republishes_and_removed_devices_are_cleared(protocol: MqttProtocol) {
    let bb = TestBridge::builder("birth")
        .protocol(protocol)
        .devices(&["deva", "devc"]);
    let (base, prefix) = (bb.base_topic().to_string(), bb.prefix());
    let mut p = Probe::connect(&[format!("{prefix}/#"), format!("{base}/bridge/discovery")]).await;
    let b = bb.start().await;
    let list = p
        .wait("list", WAIT, |m| m.topic.ends_with("/bridge/discovery"))
        .await;
    let c_topics: Vec<String> = parse_topic_list(&list.payload, &prefix)
        .into_iter()
        .filter(|t| t.contains("_devc/"))
        .collect();
    assert!(!c_topics.is_empty());
    let _ = p.collect_until_quiet(Duration::from_millis(200)).await;

    // HA comes back: discovery is sent again.
    p.publish(&format!("{prefix}/status"), b"online", false)
        .await;
    p.wait("republish after birth", WAIT, |m| {
        m.topic == format!("{prefix}/sensor/{base}_deva/soc/config") && !m.payload.is_empty()
    })
    .await;
    b.stop().await;

    // Restart without devc: its configs are removed.
    let b = TestBridge::builder("birth")
        .protocol(protocol)
        .devices(&["deva"])
        .base(&base)
        .start()
        .await;
    let mut cleared = std::collections::BTreeSet::new();
    while cleared.len() < c_topics.len() {
        let m = p
            .wait("removed config", WAIT, |m| {
                m.payload.is_empty() && m.topic.contains("_devc/")
            })
            .await;
        cleared.insert(m.topic);
    }
    let list = p
        .wait("new list", WAIT, |m| m.topic.ends_with("/bridge/discovery"))
        .await;
    let topics = parse_topic_list(&list.payload, &prefix);
    assert!(!topics.is_empty() && topics.iter().all(|t| !t.contains("_devc/")));
    b.stop_and_clear().await;
}
