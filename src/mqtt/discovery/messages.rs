//! The retained config messages of a set of HA devices: one per entity
//! (`<prefix>/<component>/<node>/<key>/config`) or one per device (`<prefix>/device/<node>/config`),
//! each with the device and origin blocks. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Availability, Component, DeviceBlock, EntityConfig, HaDevice, ORIGIN, Origin};
use crate::mqtt::settings::DiscoveryStyle;
use crate::mqtt::topics::Topics;

#[derive(Serialize)]
struct EntityPayload<'a> {
    #[serde(flatten)]
    config: &'a EntityConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    availability: Vec<Availability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_mode: Option<&'static str>,
    device: &'a DeviceBlock,
    origin: &'a Origin,
}

#[derive(Serialize)]
struct ComponentPayload<'a> {
    platform: Component,
    #[serde(flatten)]
    config: &'a EntityConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    availability: Vec<Availability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_mode: Option<&'static str>,
}

#[derive(Serialize)]
struct DevicePayload<'a> {
    device: &'a DeviceBlock,
    origin: &'a Origin,
    components: BTreeMap<&'a str, ComponentPayload<'a>>,
}

fn avail(list: &[String], topics: &Topics) -> (Vec<Availability>, Option<&'static str>) {
    let bridge_state = topics.bridge_state();
    let list: Vec<Availability> = list
        .iter()
        .map(|t| Availability::of(t.clone(), &bridge_state))
        .collect();
    let mode = (list.len() > 1).then_some("all");
    (list, mode)
}

/// Retained (topic, payload) config messages for these devices in the given style (empty for
/// `off`).
pub fn config_messages(
    topics: &Topics,
    style: DiscoveryStyle,
    devices: &[HaDevice],
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for d in devices {
        match style {
            DiscoveryStyle::Off => {}
            DiscoveryStyle::Entity => {
                for e in &d.entities {
                    let (availability, availability_mode) = avail(&e.availability, topics);
                    let payload = EntityPayload {
                        config: &e.config,
                        availability,
                        availability_mode,
                        device: &d.device,
                        origin: &ORIGIN,
                    };
                    if let Ok(bytes) = serde_json::to_vec(&payload) {
                        out.push((
                            topics.discovery_entity(e.component.as_str(), &d.node, &e.key),
                            bytes,
                        ));
                    }
                }
            }
            DiscoveryStyle::Device => {
                let components = d
                    .entities
                    .iter()
                    .map(|e| {
                        let (availability, availability_mode) = avail(&e.availability, topics);
                        (
                            e.key.as_str(),
                            ComponentPayload {
                                platform: e.component,
                                config: &e.config,
                                availability,
                                availability_mode,
                            },
                        )
                    })
                    .collect();
                let payload = DevicePayload {
                    device: &d.device,
                    origin: &ORIGIN,
                    components,
                };
                if let Ok(bytes) = serde_json::to_vec(&payload) {
                    out.push((topics.discovery_device(&d.node), bytes));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceId, DeviceInfo, DeviceLimits};
    use crate::mqtt::discovery::{battery_device, bridge_device, parse_topic_list};
    use serde_json::Value;

    fn sample_devices(t: &Topics) -> Vec<HaDevice> {
        let dev = DeviceId::parse("acd929a744d4").unwrap();
        let info = DeviceInfo {
            id: dev.clone(),
            model: "VenusE 3.0".into(),
            firmware: 153,
            ble_mac: "acd929a744d4".into(),
            wifi_mac: None,
            address: "127.0.0.1:30000".into(),
            readings: Default::default(),
            firmware_note: None,
        };
        vec![
            bridge_device(t, 1),
            battery_device(t, &dev, Some(&info), &DeviceLimits::default(), 150, 1),
        ]
    }

    #[test]
    fn entity_configs_have_required_fields() {
        let t = Topics::new("marstek", "homeassistant");
        let msgs = config_messages(&t, DiscoveryStyle::Entity, &sample_devices(&t));
        assert!(msgs.len() > 25);
        for (topic, payload) in &msgs {
            let v: Value = serde_json::from_slice(payload).unwrap();
            assert!(topic.starts_with("homeassistant/") && topic.ends_with("/config"));
            assert!(v["unique_id"].is_string(), "{topic}");
            assert!(v["default_entity_id"].is_string());
            assert!(v.get("object_id").is_none());
            assert!(v["device"]["identifiers"].is_array());
            assert_eq!(v["origin"]["name"], "marstek-bridge");
            let platform = topic.split('/').nth(1).unwrap();
            match platform {
                "sensor" | "binary_sensor" => assert!(v["state_topic"].is_string(), "{topic}"),
                _ => assert!(v["command_topic"].is_string(), "{topic}"),
            }
            if v["state_class"] == "total_increasing" {
                assert!(v["device_class"] == "energy" || v["device_class"].is_null());
            }
        }
        let soc: Value = serde_json::from_slice(
            &msgs
                .iter()
                .find(|(t, _)| t == "homeassistant/sensor/marstek_acd929a744d4/soc/config")
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(soc["availability_mode"], "all");
        assert_eq!(soc["availability"].as_array().unwrap().len(), 2);
        // The bridge's state is JSON; the battery's availability is plain text.
        assert_eq!(soc["availability"][0]["topic"], "marstek/bridge/state");
        assert_eq!(
            soc["availability"][0]["value_template"],
            "{{ value_json.state }}"
        );
        assert!(soc["availability"][1].get("value_template").is_none());
        assert_eq!(soc["device"]["via_device"], "marstek_bridge");
        assert_eq!(soc["device"]["connections"][0][1], "ac:d9:29:a7:44:d4");
        assert_eq!(soc["expire_after"], 150);
        assert_eq!(soc["default_entity_id"], "sensor.marstek_acd929a744d4_soc");
    }

    #[test]
    fn device_style_and_off() {
        let t = Topics::new("mb", "ha");
        let devs = sample_devices(&t);
        let msgs = config_messages(&t, DiscoveryStyle::Device, &devs);
        assert_eq!(msgs.len(), 2);
        let v: Value = serde_json::from_slice(&msgs[1].1).unwrap();
        assert_eq!(msgs[1].0, "ha/device/mb_acd929a744d4/config");
        assert_eq!(v["components"]["mode"]["platform"], "select");
        assert!(config_messages(&t, DiscoveryStyle::Off, &devs).is_empty());
        assert!(parse_topic_list(b"junk", "ha").is_empty());
    }
}
