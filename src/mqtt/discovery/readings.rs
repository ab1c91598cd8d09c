//! Home Assistant entities of a battery's detail readings: CT phases and meter energy, solar
//! strings, battery detail and diagnostics. Which ones exist follows the model's
//! [`ReadingSet`]; all read the `<dev>/state` JSON. Pure: builds [`Entity`] values for
//! `battery_device`.
//!
//! HA rules applied (reference: peers-and-home-assistant §5.3): power in W, voltage in V,
//! current in A, temperature in °C with `state_class: measurement`; lifetime energy in Wh with
//! `total_increasing`; counts without a unit; text diagnostics without unit or state class;
//! technical values as `entity_category: diagnostic`; the noisy ones (RSSI, IP, BLE link,
//! last error, cell and board temperatures) `enabled_by_default: false`.

use super::{Component, Entity, EntityCategory, EntityConfig, StateClass, base_config};
use crate::domain::ReadingSet;

/// How a reading is shown in HA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Power, W, measurement.
    Power,
    /// Voltage, V, measurement.
    Voltage,
    /// Current, A, measurement.
    Current,
    /// Temperature, °C, measurement.
    Temperature,
    /// Lifetime energy, Wh, total_increasing.
    Energy,
    /// A running count without unit, total_increasing.
    Count,
    /// A code (number without unit or state class).
    Code,
    /// Text.
    Text,
    /// On/off with a device class (binary sensor).
    Flag(Option<&'static str>),
}

/// One detail entity: (state key, name, kind, diagnostic, enabled by default).
type Row = (&'static str, &'static str, Kind, bool, bool);

/// The detail entities of every battery.
const EVERY_BATTERY: [Row; 10] = {
    use Kind::*;
    [
        (
            "charge_allowed",
            "Charging allowed",
            Flag(None),
            false,
            true,
        ),
        (
            "discharge_allowed",
            "Discharging allowed",
            Flag(None),
            false,
            true,
        ),
        ("model", "Model", Text, true, true),
        ("firmware", "Firmware", Code, true, true),
        ("wifi_ssid", "Wi-Fi network", Text, true, true),
        ("wifi_ip", "IP address", Text, true, false),
        (
            "ble_connected",
            "Bluetooth connected",
            Flag(Some("connectivity")),
            true,
            false,
        ),
        ("poll_failures", "Poll failures", Count, true, true),
        ("last_error", "Last error", Text, true, false),
        ("readings_dropped", "Readings dropped", Count, true, true),
    ]
};

/// The entities of each solar input: (key, name) of power, voltage, current, working.
const PV: [[(&str, &str); 4]; 4] = [
    [
        ("pv1_power", "Solar 1 power"),
        ("pv1_voltage", "Solar 1 voltage"),
        ("pv1_current", "Solar 1 current"),
        ("pv1_working", "Solar 1 working"),
    ],
    [
        ("pv2_power", "Solar 2 power"),
        ("pv2_voltage", "Solar 2 voltage"),
        ("pv2_current", "Solar 2 current"),
        ("pv2_working", "Solar 2 working"),
    ],
    [
        ("pv3_power", "Solar 3 power"),
        ("pv3_voltage", "Solar 3 voltage"),
        ("pv3_current", "Solar 3 current"),
        ("pv3_working", "Solar 3 working"),
    ],
    [
        ("pv4_power", "Solar 4 power"),
        ("pv4_voltage", "Solar 4 voltage"),
        ("pv4_current", "Solar 4 current"),
        ("pv4_working", "Solar 4 working"),
    ],
];

/// The detail entities a battery with this reading set gets.
fn rows(set: &ReadingSet) -> Vec<Row> {
    use Kind::*;
    let mut rows: Vec<Row> = EVERY_BATTERY.to_vec();
    if set.ct_phases {
        rows.extend([
            ("ct_a_power", "CT phase A power", Power, false, true),
            ("ct_b_power", "CT phase B power", Power, false, true),
            ("ct_c_power", "CT phase C power", Power, false, true),
        ]);
    }
    if set.meter_energy {
        rows.extend([
            (
                "ct_input_energy",
                "Meter energy imported",
                Energy,
                false,
                true,
            ),
            (
                "ct_output_energy",
                "Meter energy exported",
                Energy,
                false,
                true,
            ),
        ]);
    }
    for [p, v, c, w] in PV.iter().take(usize::from(set.pv_strings.min(4))) {
        rows.extend([
            (p.0, p.1, Power, false, true),
            (v.0, v.1, Voltage, false, true),
            (c.0, c.1, Current, false, true),
            (w.0, w.1, Flag(Some("running")), false, true),
        ]);
    }
    if set.battery_electrical {
        rows.extend([
            ("bat_voltage", "Battery voltage", Voltage, false, true),
            ("bat_current", "Battery current", Current, false, true),
        ]);
    }
    if set.battery_temperatures {
        rows.extend([
            (
                "cell_temp_max",
                "Cell temperature max",
                Temperature,
                true,
                false,
            ),
            (
                "cell_temp_min",
                "Cell temperature min",
                Temperature,
                true,
                false,
            ),
            ("board_temp", "Board temperature", Temperature, true, false),
        ]);
    }
    if set.battery_codes {
        rows.extend([
            ("error_code", "Error code", Code, true, true),
            ("alarm_code", "Alarm code", Code, true, true),
        ]);
    }
    rows
}

/// The detail entities of one battery (`node`), reading `state_topic`, available while
/// `availability` says so. Numeric sensors expire after `expire_after_s`.
pub fn reading_entities(
    node: &str,
    state_topic: &str,
    set: &ReadingSet,
    expire_after_s: u64,
    qos: u8,
    availability: &[String],
) -> Vec<Entity> {
    rows(set)
        .into_iter()
        .map(|(key, name, kind, diagnostic, enabled)| {
            let component = match kind {
                Kind::Flag(_) => Component::BinarySensor,
                _ => Component::Sensor,
            };
            let mut c = base_config(component, node, key, name, qos);
            c.state_topic = Some(state_topic.to_string());
            c.entity_category = diagnostic.then_some(EntityCategory::Diagnostic);
            c.enabled_by_default = (!enabled).then_some(false);
            apply_kind(&mut c, key, kind, expire_after_s);
            Entity {
                component,
                key: key.to_string(),
                config: c,
                availability: availability.to_vec(),
            }
        })
        .collect()
}

fn apply_kind(c: &mut EntityConfig, key: &str, kind: Kind, expire_after_s: u64) {
    let measured = |c: &mut EntityConfig, class, unit, precision| {
        c.device_class = Some(class);
        c.unit_of_measurement = Some(unit);
        c.state_class = Some(StateClass::Measurement);
        c.suggested_display_precision = Some(precision);
        c.expire_after = Some(expire_after_s);
    };
    match kind {
        Kind::Power => measured(c, "power", "W", 0),
        Kind::Voltage => measured(c, "voltage", "V", 1),
        Kind::Current => measured(c, "current", "A", 2),
        Kind::Temperature => measured(c, "temperature", "°C", 1),
        Kind::Energy => {
            c.device_class = Some("energy");
            c.unit_of_measurement = Some("Wh");
            c.state_class = Some(StateClass::TotalIncreasing);
            c.suggested_display_precision = Some(0);
        }
        Kind::Count => {
            c.state_class = Some(StateClass::TotalIncreasing);
            c.icon = Some("mdi:counter");
        }
        Kind::Code => c.icon = Some("mdi:numeric"),
        Kind::Text => c.icon = Some("mdi:information-outline"),
        Kind::Flag(class) => {
            c.device_class = class;
            c.payload_on = Some("ON");
            c.payload_off = Some("OFF");
            // null (not reported this round) renders "None", which HA shows as unknown
            c.value_template = Some(format!(
                "{{{{ none if value_json.{key} is none else ('ON' if value_json.{key} else 'OFF') }}}}"
            ));
            return;
        }
    }
    c.value_template = Some(format!("{{{{ value_json.{key} }}}}"));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::Utc;
    use serde_json::Value;

    use super::super::{battery_device, config_messages};
    use crate::domain::{DeviceId, DeviceInfo, DeviceLimits, ReadingSet, Sample};
    use crate::mqtt::{DiscoveryStyle, Topics, state_payload};

    /// Every config message of one battery with this reading set, parsed.
    fn configs(set: ReadingSet) -> Vec<(String, Value)> {
        let t = Topics::new("marstek", "homeassistant");
        let dev = DeviceId::parse("acd929a744d4").unwrap();
        let info = DeviceInfo {
            id: dev.clone(),
            model: "VenusA".into(),
            firmware: 150,
            ble_mac: "acd929a744d4".into(),
            wifi_mac: None,
            address: "127.0.0.1:30000".into(),
            readings: set,
            firmware_note: None,
        };
        let d = battery_device(&t, &dev, Some(&info), &DeviceLimits::default(), 150, 1);
        config_messages(&t, DiscoveryStyle::Entity, std::slice::from_ref(&d))
            .into_iter()
            .map(|(topic, p)| (topic, serde_json::from_slice(&p).unwrap()))
            .collect()
    }

    fn full() -> ReadingSet {
        ReadingSet {
            pv_strings: 4,
            ct_phases: true,
            meter_energy: true,
            battery_electrical: true,
            battery_temperatures: true,
            battery_codes: true,
        }
    }

    /// Units Home Assistant accepts per sensor device class (None = no unit allowed).
    fn allowed_units(class: &str) -> Option<&'static [&'static str]> {
        Some(match class {
            "power" => &["W", "kW"],
            "voltage" => &["V", "mV"],
            "current" => &["A", "mA"],
            "temperature" => &["°C", "°F", "K"],
            "energy" => &["Wh", "kWh", "MWh"],
            "energy_storage" => &["Wh", "kWh", "MWh"],
            "battery" => &["%"],
            "signal_strength" => &["dB", "dBm"],
            "duration" => &["s", "min", "h", "d"],
            "timestamp" => return None,
            other => panic!("device class {other} not in HA's sensor list"),
        })
    }

    const DIAGNOSTIC: [&str; 16] = [
        "model",
        "firmware",
        "wifi_ssid",
        "wifi_ip",
        "ble_connected",
        "poll_failures",
        "last_error",
        "readings_dropped",
        "rssi",
        "cell_temp_max",
        "cell_temp_min",
        "board_temp",
        "error_code",
        "alarm_code",
        "last_seen",
        "ct_connected",
    ];
    const HIDDEN: [&str; 7] = [
        "rssi",
        "wifi_ip",
        "ble_connected",
        "last_error",
        "cell_temp_max",
        "cell_temp_min",
        "board_temp",
    ];

    #[test]
    fn every_entity_follows_the_home_assistant_rules() {
        let state: Value = serde_json::from_slice(&state_payload(&Sample::empty(
            DeviceId::parse("acd929a744d4").unwrap(),
            Utc::now(),
        )))
        .unwrap();
        let msgs = configs(full());
        let mut ids = BTreeSet::new();
        for (topic, v) in &msgs {
            let platform = topic.split('/').nth(1).unwrap();
            let key = topic.split('/').nth(3).unwrap();
            let uid = v["unique_id"].as_str().unwrap();
            assert!(ids.insert(uid.to_string()), "unique_id {uid} twice");
            assert_eq!(v["default_entity_id"], format!("{platform}.{uid}"));
            let class = v["device_class"].as_str();
            let unit = v["unit_of_measurement"].as_str();
            let state_class = v["state_class"].as_str();
            let category = v["entity_category"].as_str();
            // A sensor is never a "config" entity; settings are numbers, selects, switches.
            if matches!(platform, "sensor" | "binary_sensor") {
                assert_ne!(category, Some("config"), "{key}");
            }
            if DIAGNOSTIC.contains(&key) {
                assert_eq!(category, Some("diagnostic"), "{key} is diagnostic");
            }
            let hidden = v["enabled_by_default"] == Value::Bool(false);
            assert_eq!(hidden, HIDDEN.contains(&key), "{key} enabled_by_default");
            // Every state template reads a key the state JSON has.
            if v["state_topic"] == "marstek/acd929a744d4/state" {
                let tpl = v["value_template"].as_str().unwrap();
                assert!(tpl.contains(&format!("value_json.{key} ")), "{key}: {tpl}");
                assert!(state.get(key).is_some(), "state JSON lacks {key}");
            }
            match platform {
                "sensor" => match class {
                    Some(c) => {
                        match allowed_units(c) {
                            Some(units) => assert!(
                                unit.is_some_and(|u| units.contains(&u)),
                                "{key}: {c} in {unit:?}"
                            ),
                            None => assert_eq!((unit, state_class), (None, None), "{key}"),
                        }
                        match c {
                            "energy" => assert_eq!(state_class, Some("total_increasing"), "{key}"),
                            "timestamp" => {}
                            _ => assert_eq!(state_class, Some("measurement"), "{key}"),
                        }
                    }
                    None => {
                        assert_eq!(unit, None, "{key}: no unit without a device class");
                        assert!(
                            matches!(state_class, None | Some("total_increasing")),
                            "{key}: counts only"
                        );
                    }
                },
                "binary_sensor" => assert!(
                    matches!(class, None | Some("connectivity" | "running" | "problem")),
                    "{key}: {class:?}"
                ),
                _ => assert!(v["command_topic"].is_string(), "{key}"),
            }
        }
        // What each reading set announces.
        let keys = |set| -> BTreeSet<String> {
            configs(set)
                .iter()
                .map(|(t, _)| t.split('/').nth(3).unwrap().to_string())
                .collect()
        };
        let all = keys(full());
        let core = keys(ReadingSet::default());
        for k in [
            "ct_a_power",
            "ct_input_energy",
            "pv4_current",
            "pv1_working",
            "bat_voltage",
            "cell_temp_max",
            "alarm_code",
        ] {
            assert!(all.contains(k) && !core.contains(k), "{k}");
        }
        for k in [
            "model",
            "firmware",
            "poll_failures",
            "charge_allowed",
            "soc",
        ] {
            assert!(core.contains(k), "{k}");
        }
        let two = keys(ReadingSet {
            pv_strings: 2,
            ..ReadingSet::default()
        });
        assert!(two.contains("pv2_power") && !two.contains("pv3_power"));
        assert_eq!(all.len() - core.len(), 5 + 16 + 7);
    }
}
