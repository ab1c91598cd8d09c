//! Pure serde types of the Marstek Open API (JSON-RPC over UDP, reference §2): requests,
//! the reply envelope and the result of every method. No sockets and no clock here.
//!
//! Decoding is tolerant on purpose, because firmware differs: numbers may come as numbers,
//! numeric strings or `null`; `mode` as a string or an integer code; `set_result` as `true`,
//! `"true"` or the PDF's `"ture"`; unknown fields are ignored and missing ones become `None`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::domain::{ManualSlot, Mode, ModeConfig};

/// Largest datagram the driver accepts, bytes (all known payloads are below 600 bytes).
pub const MAX_DATAGRAM: usize = 4096;

/// Method names, spelled exactly as the firmware expects (case-sensitive).
pub mod method {
    /// Identity and discovery.
    pub const GET_DEVICE: &str = "Marstek.GetDevice";
    /// Wi-Fi link status.
    pub const WIFI_STATUS: &str = "Wifi.GetStatus";
    /// Bluetooth status.
    pub const BLE_STATUS: &str = "BLE.GetStatus";
    /// Battery pack status.
    pub const BAT_STATUS: &str = "Bat.GetStatus";
    /// Solar input status (Venus A/D only).
    pub const PV_STATUS: &str = "PV.GetStatus";
    /// Energy system status (powers and lifetime counters).
    pub const ES_STATUS: &str = "ES.GetStatus";
    /// Current operating mode.
    pub const ES_GET_MODE: &str = "ES.GetMode";
    /// Mode change (one Manual slot per call).
    pub const ES_SET_MODE: &str = "ES.SetMode";
    /// CT / energy meter status.
    pub const EM_STATUS: &str = "EM.GetStatus";
    /// Depth of discharge (write only).
    pub const DOD_SET: &str = "DOD.SET";
    /// Bluetooth advertising on/off (write only).
    pub const BLE_ADV: &str = "Ble.Adv";
    /// Panel LED on/off (write only).
    pub const LED_CTRL: &str = "Led.Ctrl";
    /// Factory reset: never retried.
    pub const RESET_FACTORY: &str = "Reset.Factory";

    /// Whether a method only reads (safe to resend and retry).
    pub fn is_read(m: &str) -> bool {
        m.contains(".Get")
    }

    /// Whether a failed attempt may be repeated (everything except `Reset.Factory`).
    pub fn is_retryable(m: &str) -> bool {
        m != RESET_FACTORY
    }
}

/// A JSON-RPC request as the device expects it: `{"id":<int>,"method":"…","params":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Request id, 0..=65535 (0 is used by discovery only).
    pub id: u16,
    /// Method name.
    pub method: String,
    /// Parameters object.
    pub params: Value,
}

impl Request {
    /// Builds a request.
    pub fn new(id: u16, method: &str, params: Value) -> Self {
        Self {
            id,
            method: method.to_string(),
            params,
        }
    }

    /// Compact JSON bytes (never empty).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of a u16, a string and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// `{"id":0}` — the params of most methods.
pub fn instance_params(instance: u8) -> Value {
    json!({ "id": instance })
}

/// Params of `Marstek.GetDevice` (`ble_mac` "0" = any device).
pub fn get_device_params() -> Value {
    json!({ "ble_mac": "0" })
}

/// The broadcast discovery datagram.
pub fn discovery_request() -> Request {
    Request::new(0, method::GET_DEVICE, get_device_params())
}

/// `manual_cfg` object of one slot.
pub fn manual_cfg(slot: &ManualSlot) -> Value {
    json!({
        "time_num": slot.slot,
        "start_time": slot.start.to_string(),
        "end_time": slot.end.to_string(),
        "week_set": slot.days.0,
        "power": slot.power.0,
        "enable": u8::from(slot.enable),
    })
}

/// Params of `ES.SetMode` for a mode config.
pub fn set_mode_params(cfg: &ModeConfig) -> Value {
    let config = match cfg {
        ModeConfig::Auto => json!({"mode": "Auto", "auto_cfg": {"enable": 1}}),
        ModeConfig::Ai => json!({"mode": "AI", "ai_cfg": {"enable": 1}}),
        ModeConfig::Ups => json!({"mode": "UPS", "ups_cfg": {"enable": 1}}),
        ModeConfig::Manual { slot } => json!({"mode": "Manual", "manual_cfg": manual_cfg(slot)}),
        ModeConfig::Passive { power, cd_time } => {
            json!({"mode": "Passive", "passive_cfg": {"power": power.0, "cd_time": cd_time}})
        }
    };
    json!({ "id": 0, "config": config })
}

/// Params of `DOD.SET`, value in % (30..=88).
pub fn dod_params(value: u8) -> Value {
    json!({ "id": 0, "value": value })
}

/// Params of `Led.Ctrl` (1 = LED on).
pub fn led_params(on: bool) -> Value {
    json!({ "id": 0, "state": u8::from(on) })
}

/// Params of `Ble.Adv` (1 = advertising on, as the firmware behaves).
pub fn ble_adv_params(on: bool) -> Value {
    json!({ "id": 0, "enable": u8::from(on) })
}

/// JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    /// Error code (-32601 method not found, -32700 parse error, …).
    #[serde(default, deserialize_with = "lenient_i64")]
    pub code: i64,
    /// Message text.
    #[serde(default, deserialize_with = "lenient_string_or_empty")]
    pub message: String,
    /// Extra data (`424` on Venus E 3.0 fw 150).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Method-not-found error code.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Parse-error code.
pub const PARSE_ERROR: i64 = -32700;

/// A reply datagram: `{"id":…,"src":"…","result":{…}}` or `{…,"error":{…}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Echoed request id (None when absent or not an integer 0..=65535).
    pub id: Option<u16>,
    /// `<device>-<ble_mac>` of the sender.
    pub src: Option<String>,
    /// Outcome.
    pub body: Result<Value, RpcError>,
}

/// Why a datagram is not a usable reply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Empty datagram.
    #[error("empty datagram")]
    Empty,
    /// Larger than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes exceeds {MAX_DATAGRAM}")]
    Oversized(usize),
    /// Not JSON, or not an object.
    #[error("not a JSON object: {0}")]
    Json(String),
    /// Neither `result` nor `error`.
    #[error("reply has neither result nor error")]
    NoBody,
}

impl Response {
    /// Decodes one datagram, never panicking whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        if bytes.len() > MAX_DATAGRAM {
            return Err(DecodeError::Oversized(bytes.len()));
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
        let Value::Object(mut obj) = v else {
            return Err(DecodeError::Json("top level is not an object".into()));
        };
        let id = obj
            .get("id")
            .and_then(value_as_i64)
            .and_then(|i| u16::try_from(i).ok());
        let src = obj.get("src").and_then(|s| s.as_str()).map(str::to_string);
        let body = if let Some(err) = obj.remove("error") {
            let e: RpcError = serde_json::from_value(err).unwrap_or(RpcError {
                code: 0,
                message: "malformed error object".into(),
                data: None,
            });
            Err(e)
        } else if let Some(res) = obj.remove("result") {
            Ok(res)
        } else {
            return Err(DecodeError::NoBody);
        };
        Ok(Self { id, src, body })
    }
}

/// Decodes a typed result from a `result` value; wrong shapes give a readable error.
pub fn decode_result<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    if !v.is_object() {
        return Err(format!("result is not an object: {v}"));
    }
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

fn value_as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn value_as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn value_as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "ture" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Number, numeric string or null → `Option<f64>`; other types → `None`.
fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(value_as_f64(&Value::deserialize(d)?))
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(value_as_i64(&Value::deserialize(d)?).unwrap_or(0))
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(value_as_i64(&Value::deserialize(d)?))
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(value_as_bool(&Value::deserialize(d)?))
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn lenient_string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(lenient_string(d)?.unwrap_or_default())
}

fn lenient_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mode>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Mode::parse(&s)
            .ok()
            .or_else(|| s.trim().parse::<i64>().ok().and_then(Mode::from_code)),
        Value::Number(n) => n.as_i64().and_then(Mode::from_code),
        _ => None,
    })
}

/// Result of `Marstek.GetDevice`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DeviceResult {
    /// Model string, e.g. `VenusE 3.0`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub device: Option<String>,
    /// Firmware version (may be four digits, 1476 = 147.6).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub ver: Option<i64>,
    /// BLE MAC, 12 hex digits.
    #[serde(default, deserialize_with = "lenient_string")]
    pub ble_mac: Option<String>,
    /// Wi-Fi MAC.
    #[serde(default, deserialize_with = "lenient_string")]
    pub wifi_mac: Option<String>,
    /// SSID.
    #[serde(default, deserialize_with = "lenient_string")]
    pub wifi_name: Option<String>,
    /// IP address the device reports.
    #[serde(default, deserialize_with = "lenient_string")]
    pub ip: Option<String>,
}

/// Result of `Wifi.GetStatus`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct WifiStatus {
    /// SSID.
    #[serde(default, deserialize_with = "lenient_string")]
    pub ssid: Option<String>,
    /// Signal strength, dBm.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub rssi: Option<f64>,
    /// Station IP.
    #[serde(default, deserialize_with = "lenient_string")]
    pub sta_ip: Option<String>,
    /// Gateway.
    #[serde(default, deserialize_with = "lenient_string")]
    pub sta_gate: Option<String>,
    /// Netmask.
    #[serde(default, deserialize_with = "lenient_string")]
    pub sta_mask: Option<String>,
    /// DNS server.
    #[serde(default, deserialize_with = "lenient_string")]
    pub sta_dns: Option<String>,
}

/// Result of `BLE.GetStatus`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct BleStatus {
    /// `connect` or `disconnect`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub state: Option<String>,
    /// BLE MAC.
    #[serde(default, deserialize_with = "lenient_string")]
    pub ble_mac: Option<String>,
}

/// Result of `Bat.GetStatus` (raw units; scaling per profile).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct BatStatus {
    /// SOC, %.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub soc: Option<f64>,
    /// Charging permitted.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub charg_flag: Option<bool>,
    /// Discharging permitted.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub dischrg_flag: Option<bool>,
    /// Temperature, °C (0.1 °C on Venus E 3.0 fw 139).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub bat_temp: Option<f64>,
    /// Remaining energy, Wh (10 Wh units on Venus E 3.0 fw 139).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub bat_capacity: Option<f64>,
    /// Rated energy, Wh.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub rated_capacity: Option<f64>,
    /// Pack voltage, 0.01 V (not in the spec; jaapp).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub bat_voltage: Option<f64>,
    /// Pack current, 0.01 A, + charging (not in the spec; jaapp).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub bat_current: Option<f64>,
    /// Hottest cell, °C (key name assumed; no capture).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub cell_temp_max: Option<f64>,
    /// Coldest cell, °C (key name assumed; no capture).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub cell_temp_min: Option<f64>,
    /// Board temperature, °C (key name assumed; no capture).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub board_temp: Option<f64>,
    /// BMS error code, 0 = none (key name assumed; no capture).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub error_code: Option<i64>,
    /// BMS alarm code, 0 = none (key name assumed; no capture).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub alarm_code: Option<i64>,
}

/// Result of `PV.GetStatus`: up to four channels (or the Rev 1.0 single channel).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PvStatus {
    /// Rev 1.0 single-channel power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv_power: Option<f64>,
    /// Channel 1 power (deciwatts on Venus A/D 147–150).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv1_power: Option<f64>,
    /// Channel 2 power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv2_power: Option<f64>,
    /// Channel 3 power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv3_power: Option<f64>,
    /// Channel 4 power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv4_power: Option<f64>,
    /// Rev 1.0 single-channel voltage, V.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv_voltage: Option<f64>,
    /// Rev 1.0 single-channel current, A.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv_current: Option<f64>,
    /// Rev 3.1 single-channel state (1 working, 0 standby), spelled `PV_state` or `pv_state`.
    #[serde(default, alias = "PV_state", deserialize_with = "lenient_opt_i64")]
    pub pv_state: Option<i64>,
    /// Channel 1 voltage, V.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv1_voltage: Option<f64>,
    /// Channel 1 current, A (often 0 although power flows).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv1_current: Option<f64>,
    /// Channel 1 state (1 working, 0 standby).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub pv1_state: Option<i64>,
    /// Channel 2 voltage, V.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv2_voltage: Option<f64>,
    /// Channel 2 current, A (often 0 although power flows).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv2_current: Option<f64>,
    /// Channel 2 state (1 working, 0 standby).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub pv2_state: Option<i64>,
    /// Channel 3 voltage, V.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv3_voltage: Option<f64>,
    /// Channel 3 current, A (often 0 although power flows).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv3_current: Option<f64>,
    /// Channel 3 state (1 working, 0 standby).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub pv3_state: Option<i64>,
    /// Channel 4 voltage, V.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv4_voltage: Option<f64>,
    /// Channel 4 current, A (often 0 although power flows).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv4_current: Option<f64>,
    /// Channel 4 state (1 working, 0 standby).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub pv4_state: Option<i64>,
}

/// Result of `ES.GetStatus` (raw units; scaling per profile).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EsStatus {
    /// SOC, %.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub bat_soc: Option<f64>,
    /// Capacity, Wh.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub bat_cap: Option<f64>,
    /// Solar power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub pv_power: Option<f64>,
    /// AC power at the grid port, W (+ delivering, − drawing).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub ongrid_power: Option<f64>,
    /// EPS socket power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub offgrid_power: Option<f64>,
    /// Battery power, W, + charging (absent on most firmware).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub bat_power: Option<f64>,
    /// Lifetime PV energy (Wh or 0.01 kWh per profile).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub total_pv_energy: Option<f64>,
    /// Lifetime energy delivered at the grid port.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub total_grid_output_energy: Option<f64>,
    /// Lifetime energy drawn at the grid port.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub total_grid_input_energy: Option<f64>,
    /// Lifetime load energy.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub total_load_energy: Option<f64>,
}

/// Result of `ES.GetMode`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EsMode {
    /// Echoed instance id.
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub id: Option<i64>,
    /// Mode (string or integer code on the wire).
    #[serde(default, deserialize_with = "lenient_mode")]
    pub mode: Option<Mode>,
    /// AC power at the grid port, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub ongrid_power: Option<f64>,
    /// EPS power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub offgrid_power: Option<f64>,
    /// SOC, %.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub bat_soc: Option<f64>,
    /// CT connected (1) or not (0).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub ct_state: Option<i64>,
    /// CT total power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub total_power: Option<f64>,
    /// CT phase A power, W (zeros on fw 150 while EM shows a CT).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub a_power: Option<f64>,
    /// CT phase B power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub b_power: Option<f64>,
    /// CT phase C power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub c_power: Option<f64>,
}

/// Result of `EM.GetStatus`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EmStatus {
    /// CT connected (1) or not (0).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub ct_state: Option<i64>,
    /// Phase A power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub a_power: Option<f64>,
    /// Phase B power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub b_power: Option<f64>,
    /// Phase C power, W.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub c_power: Option<f64>,
    /// Total power, W (+ import).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub total_power: Option<f64>,
    /// Meter's lifetime imported energy, 0.1 Wh (Rev 3.1; 0 on some firmware).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub input_energy: Option<f64>,
    /// Meter's lifetime exported energy, 0.1 Wh (Rev 3.1; 0 on some firmware).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub output_energy: Option<f64>,
}

/// Result of every write: `set_result`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SetResult {
    /// Accepted (`true`, `"true"`, `"ture"`), refused, or missing.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub set_result: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HhMm, Watts, WeekMask};

    #[test]
    fn request_is_compact_with_integer_id() {
        let r = Request::new(7, method::ES_STATUS, instance_params(0));
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            r#"{"id":7,"method":"ES.GetStatus","params":{"id":0}}"#
        );
        assert_eq!(
            String::from_utf8(discovery_request().to_bytes()).unwrap(),
            r#"{"id":0,"method":"Marstek.GetDevice","params":{"ble_mac":"0"}}"#
        );
    }

    #[test]
    fn set_mode_params_match_the_spec() {
        let slot = ManualSlot {
            slot: 1,
            start: HhMm::new(8, 30).unwrap(),
            end: HhMm::new(20, 30).unwrap(),
            days: WeekMask::ALL,
            power: Watts(100),
            enable: true,
        };
        let p = set_mode_params(&ModeConfig::Manual { slot });
        assert_eq!(
            p,
            json!({"id":0,"config":{"mode":"Manual","manual_cfg":{"time_num":1,"start_time":"08:30","end_time":"20:30","week_set":127,"power":100,"enable":1}}})
        );
        let p = set_mode_params(&ModeConfig::Passive {
            power: Watts(-1000),
            cd_time: 300,
        });
        assert_eq!(
            p,
            json!({"id":0,"config":{"mode":"Passive","passive_cfg":{"power":-1000,"cd_time":300}}})
        );
        assert_eq!(
            set_mode_params(&ModeConfig::Ups)["config"]["mode"],
            json!("UPS")
        );
    }

    #[test]
    fn tolerant_decoding() {
        let m: EsMode = decode_result(&json!({"id":1,"mode":3,"ongrid_power":"12"})).unwrap();
        assert_eq!(m.mode, Some(Mode::Passive));
        assert_eq!(m.ongrid_power, Some(12.0));
        assert_eq!(m.bat_soc, None);
        let m: EsMode = decode_result(&json!({"mode":"Auto","extra":{"x":1}})).unwrap();
        assert_eq!(m.mode, Some(Mode::Auto));
        let m: EsMode = decode_result(&json!({"mode":null,"bat_soc":[1]})).unwrap();
        assert_eq!(m.mode, None);
        assert_eq!(m.bat_soc, None);
        for (v, want) in [
            (json!(true), Some(true)),
            (json!("true"), Some(true)),
            (json!("ture"), Some(true)),
            (json!(false), Some(false)),
            (json!(null), None),
        ] {
            let s: SetResult = decode_result(&json!({ "set_result": v })).unwrap();
            assert_eq!(s.set_result, want);
        }
        assert!(decode_result::<EsMode>(&json!(5)).is_err());
    }

    #[test]
    fn envelope_decoding() {
        let r = Response::decode(
            br#"{"id":0,"src":"device","error":{"code":-32700,"message":"Parse error"}}"#,
        )
        .unwrap();
        assert_eq!(r.id, Some(0));
        assert_eq!(r.body.unwrap_err().code, PARSE_ERROR);
        let r = Response::decode(
            br#"{"id":9,"src":"VenusE 3.0-681268aabbcc","error":{"code":-32601,"message":"Method not found","data":424}}"#,
        )
        .unwrap();
        let e = r.body.unwrap_err();
        assert_eq!((e.code, e.data), (METHOD_NOT_FOUND, Some(json!(424))));
        assert_eq!(Response::decode(b""), Err(DecodeError::Empty));
        assert!(Response::decode(b"[1,2]").is_err());
        assert!(Response::decode(br#"{"id":1,"src":"x"}"#).is_err());
        assert!(Response::decode(br#"{"id":1,"src":"x","result":{"#).is_err());
        // out-of-range ids are not matched
        let r = Response::decode(br#"{"id":70000,"result":{}}"#).unwrap();
        assert_eq!(r.id, None);
        assert!(Response::decode(&vec![b' '; MAX_DATAGRAM + 1]).is_err());
    }
}
