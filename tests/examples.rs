//! The shipped examples stay importable: the Node-RED flow parses as flow JSON, every `wires`
//! entry and broker reference points at an existing node, and its topics match the bridge's.

use std::collections::HashSet;

#[test]
fn node_red_flow_is_valid_and_fully_wired() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/node-red-flow.json"
    ))
    .unwrap();
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&text).expect("flow is a JSON array");
    let ids: HashSet<&str> = nodes
        .iter()
        .map(|n| n["id"].as_str().expect("every node has an id"))
        .collect();
    assert_eq!(ids.len(), nodes.len(), "node ids are unique");
    let brokers: Vec<&serde_json::Value> = nodes
        .iter()
        .filter(|n| n["type"] == "mqtt-broker")
        .collect();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["broker"], "localhost");
    assert_eq!(brokers[0]["port"], "1883");
    let mut wired = 0;
    for node in &nodes {
        if let Some(outputs) = node.get("wires").and_then(|w| w.as_array()) {
            for output in outputs {
                for target in output.as_array().expect("each output is an array") {
                    let t = target.as_str().unwrap();
                    assert!(ids.contains(t), "{} wires to missing node {t}", node["id"]);
                    wired += 1;
                }
            }
        }
        if let Some(b) = node.get("broker").and_then(|b| b.as_str())
            && node["type"] != "mqtt-broker"
        {
            assert!(ids.contains(b), "{} uses missing broker {b}", node["id"]);
        }
        if let Some(z) = node.get("z").and_then(|z| z.as_str()) {
            assert!(ids.contains(z), "{} is on missing tab {z}", node["id"]);
        }
    }
    assert!(wired >= 8, "the flows are connected ({wired} wires)");
    let topics: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n.get("topic").and_then(|t| t.as_str()))
        .collect();
    for expected in ["marstek/+/state", "marstek/+/response", "marstek/+/alert"] {
        assert!(
            topics.contains(&expected),
            "missing subscription {expected}"
        );
    }
    // `marstek/+/state` also carries the bridge's `{"state":…}`: the SOC function must tell it
    // apart instead of reading a `soc` it does not have.
    let state_in = nodes
        .iter()
        .find(|n| n["topic"] == "marstek/+/state")
        .unwrap();
    assert_eq!(state_in["datatype"], "json");
    let next = state_in["wires"][0][0].as_str().unwrap();
    let func = nodes.iter().find(|n| n["id"] == next).unwrap();
    let code = func["func"].as_str().unwrap();
    assert!(
        code.contains("'bridge'") && code.contains("return null"),
        "the SOC function skips marstek/bridge/state: {code}"
    );
}
