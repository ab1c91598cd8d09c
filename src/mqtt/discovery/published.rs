//! The record of the config topics this bridge has published (the retained
//! `<base>/bridge/discovery` document), so that a restart can clear the ones no longer wanted.
//! Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::mqtt::topics::DiscoveryConfig;

/// The config topics this bridge has published, per HA node (device id), as kept in the retained
/// `<base>/bridge/discovery` document. Serialised compactly — nodes with the same entity set share
/// one group — so a fleet of thousands stays a few kilobytes (a flat topic list of 1,000 batteries
/// would exceed the 1 MiB packet limit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishedConfigs {
    /// Node → its config topics.
    pub nodes: BTreeMap<String, BTreeSet<String>>,
}

/// Splits a config topic under `prefix` into its node and entity part (`sensor/soc`, or
/// `device` for device style); None when it does not have our shape.
fn split_config_topic(prefix: &str, topic: &str) -> Option<(String, String)> {
    match DiscoveryConfig::parse(prefix, topic)? {
        DiscoveryConfig::Device { node } => Some((node.to_string(), "device".into())),
        DiscoveryConfig::Entity {
            component,
            node,
            object,
        } => Some((node.to_string(), format!("{component}/{object}"))),
    }
}

/// The entity part of a config topic of `node`.
fn entry_of(prefix: &str, node: &str, topic: &str) -> Option<String> {
    split_config_topic(prefix, topic)
        .filter(|(n, _)| n == node)
        .map(|(_, entry)| entry)
}

/// The config topic of `node`'s entry (`device`, or `component/object`) under `prefix`.
fn topic_of(prefix: &str, node: &str, entry: &str) -> Option<String> {
    let config = match entry.split_once('/') {
        None if entry == "device" => DiscoveryConfig::Device { node },
        Some((component, object)) if !component.is_empty() && !object.is_empty() => {
            DiscoveryConfig::Entity {
                component,
                node,
                object,
            }
        }
        _ => return None,
    };
    Some(config.topic(prefix))
}

impl PublishedConfigs {
    /// Every topic of every node.
    pub fn topics(&self) -> impl Iterator<Item = &String> {
        self.nodes.values().flatten()
    }

    /// The retained document: `{"prefix":…,"groups":[{"entities":[…],"nodes":[…]}]}`.
    pub fn to_payload(&self, prefix: &str) -> Vec<u8> {
        let mut groups: BTreeMap<Vec<String>, Vec<&str>> = BTreeMap::new();
        for (node, topics) in &self.nodes {
            let entries: Vec<String> = topics
                .iter()
                .filter_map(|t| entry_of(prefix, node, t))
                .collect();
            if !entries.is_empty() {
                groups.entry(entries).or_default().push(node);
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(entities, nodes)| serde_json::json!({ "entities": entities, "nodes": nodes }))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "prefix": prefix, "groups": groups }))
            .unwrap_or_default()
    }

    /// Reads the retained document; also the first format (`{"topics":[…]}`, nodes taken from
    /// the topics under `prefix`). Junk gives an empty list.
    pub fn parse(payload: &[u8], prefix: &str) -> Self {
        let mut out = Self::default();
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return out;
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(groups) = v.get("groups").and_then(Value::as_array) {
            let prefix = v.get("prefix").and_then(Value::as_str).unwrap_or(prefix);
            for g in groups {
                let entries = strings(&g["entities"]);
                for node in strings(&g["nodes"]) {
                    let set = out.nodes.entry(node.clone()).or_default();
                    set.extend(entries.iter().filter_map(|e| topic_of(prefix, &node, e)));
                }
            }
        } else {
            for t in strings(&v["topics"]) {
                if let Some((node, _)) = split_config_topic(prefix, &t) {
                    out.nodes.entry(node).or_default().insert(t);
                }
            }
        }
        out
    }
}

/// The config topics listed in a retained `<base>/bridge/discovery` document (either format).
pub fn parse_topic_list(payload: &[u8], prefix: &str) -> Vec<String> {
    PublishedConfigs::parse(payload, prefix)
        .topics()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceId, DeviceLimits};
    use crate::mqtt::discovery::{battery_device, config_messages};
    use crate::mqtt::settings::DiscoveryStyle;
    use crate::mqtt::topics::Topics;

    #[test]
    fn published_list_is_compact_and_round_trips() {
        let t = Topics::new("mb", "ha");
        let mut list = PublishedConfigs::default();
        for i in 0..1000 {
            let dev = DeviceId::parse(&format!("bat{i}")).unwrap();
            let d = battery_device(&t, &dev, None, &DeviceLimits::default(), 150, 1);
            let topics = config_messages(&t, DiscoveryStyle::Entity, std::slice::from_ref(&d))
                .into_iter()
                .map(|(topic, _)| topic);
            list.nodes.insert(d.node.clone(), topics.collect());
        }
        let payload = list.to_payload("ha");
        assert!(payload.len() < 32 * 1024, "{} bytes", payload.len());
        assert_eq!(PublishedConfigs::parse(&payload, "other"), list);
        assert_eq!(
            parse_topic_list(&payload, "ha").len(),
            list.topics().count()
        );
        // The first format still reads: nodes from the topics under the prefix.
        let old = br#"{"topics":["ha/sensor/mb_a/soc/config","ha/device/mb_b/config","x/y"]}"#;
        let parsed = PublishedConfigs::parse(old, "ha");
        assert_eq!(parsed.nodes.len(), 2);
        assert!(parsed.nodes["mb_b"].contains("ha/device/mb_b/config"));
    }
}
