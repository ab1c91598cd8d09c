//! Command-line entry points of the driver (`probe`, `discover`) as library functions returning
//! the text to print (`probe` includes the firmware catalogue entry the battery matched and why), plus their clap argument structs; `main.rs` only dispatches to them.
//! Touches one ephemeral UDP socket per call.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::catalogue;
use super::client::{RequestOptions, Transport};
use super::discovery::{DiscoverOptions, discover_devices};
use super::profile::{Profile, RoundData, build_sample};
use super::protocol::{self, DeviceResult, decode_result, method};
use crate::domain::{DeviceId, DriverError, FirmwareNote, Sample};

/// `probe HOST[:PORT]`: query one battery.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Battery address, `HOST` or `HOST:PORT` (default port 30000).
    pub target: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `discover`: find batteries.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoverArgs {
    /// How long to listen for answers.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Probe this address by unicast instead of broadcasting.
    #[arg(long)]
    pub target: Option<IpAddr>,
    /// Port or port range to probe, e.g. `30000` or `30000-30004`.
    #[arg(long, default_value = "30000", value_parser = parse_port_range)]
    pub ports: RangeInclusive<u16>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `P` or `A-B` into a port range.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let p = |x: &str| {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{x}' is not a UDP port (1 to 65535)"))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (p(a)?, p(b)?);
            if a > b {
                return Err(format!("port range {a}-{b} is empty (first > last)"));
            }
            Ok(a..=b)
        }
        None => p(s).map(|x| x..=x),
    }
}

fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    let with_port = if target.parse::<IpAddr>().is_ok() || !target.contains(':') {
        format!("{target}:30000")
    } else {
        target.to_string()
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve '{target}' (expected HOST or HOST:PORT)"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("'{target}' has no IPv4 address"))
}

/// Queries identity, firmware, status and mode of one battery; a table, or JSON with `json`.
pub async fn probe(target: &str, json_out: bool) -> anyhow::Result<String> {
    let addr = resolve(target)?;
    let cancel = CancellationToken::new();
    let t = Transport::bind(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        &cancel,
    )
    .await
    .context("cannot open a UDP socket")?;
    let opts = RequestOptions {
        timeout: Duration::from_secs(2),
        retries: 2,
        resend_after: Some(Duration::from_millis(500)),
    };
    let probed = identify(&t, addr, opts).await?;
    let (data, raw) = read_status(&t, addr, opts, &probed).await;
    let id = probed
        .device
        .ble_mac
        .clone()
        .and_then(|m| DeviceId::parse(&m).ok())
        .unwrap_or_else(|| DeviceId("unknown".into()));
    let sample = build_sample(&probed.profile, id, chrono::Utc::now(), &data);
    if json_out {
        return json_report(addr, &probed, &sample, raw);
    }
    Ok(print_report(addr, &probed, &sample))
}

/// What `Marstek.GetDevice` told the probe: identity, profile, raw answer and its latency.
struct Probed {
    device: DeviceResult,
    profile: Profile,
    /// What the firmware catalogue says about it.
    note: FirmwareNote,
    result: Value,
    latency: Duration,
}

/// Asks `addr` for `Marstek.GetDevice` and derives its profile.
async fn identify(t: &Transport, addr: SocketAddr, opts: RequestOptions) -> anyhow::Result<Probed> {
    let dev = t
        .request(
            addr,
            method::GET_DEVICE,
            protocol::get_device_params(),
            opts,
        )
        .await
        .with_context(|| format!("{addr} did not answer Marstek.GetDevice"))?;
    let device: DeviceResult = decode_result(&dev.result).map_err(|e| anyhow::anyhow!(e))?;
    let profile = Profile::from_device(&device);
    let note = catalogue::lookup(device.device.as_deref().unwrap_or(""), profile.firmware);
    Ok(Probed {
        device,
        profile,
        note,
        result: dev.result,
        latency: dev.latency,
    })
}

/// Reads the status methods the profile supports; the decoded round and every raw answer (or
/// its error), keyed by method.
async fn read_status(
    t: &Transport,
    addr: SocketAddr,
    opts: RequestOptions,
    probed: &Probed,
) -> (RoundData, serde_json::Map<String, Value>) {
    let profile = &probed.profile;
    let mut raw = serde_json::Map::new();
    raw.insert(method::GET_DEVICE.into(), probed.result.clone());
    let mut data = RoundData::default();
    let mut methods = vec![method::ES_STATUS, method::ES_GET_MODE, method::BAT_STATUS];
    if profile.has_pv() {
        methods.push(method::PV_STATUS);
    }
    for m in methods {
        if m == method::ES_STATUS && !profile.has_es_status() {
            continue;
        }
        // ES.GetMode on the instance the catalogue names (some firmware ignores id 0)
        let instance = if m == method::ES_GET_MODE {
            probed.note.policy.get_mode_instance
        } else {
            0
        };
        match t
            .request(addr, m, protocol::instance_params(instance), opts)
            .await
        {
            Ok(r) => {
                match m {
                    method::ES_STATUS => data.es = decode_result(&r.result).ok(),
                    method::ES_GET_MODE => data.mode = decode_result(&r.result).ok(),
                    method::BAT_STATUS => data.bat = decode_result(&r.result).ok(),
                    method::PV_STATUS => data.pv = decode_result(&r.result).ok(),
                    _ => {}
                }
                raw.insert(m.into(), r.result);
            }
            Err(e) => {
                raw.insert(m.into(), json!({ "error": e.to_string() }));
            }
        }
    }
    (data, raw)
}

/// The probe as pretty-printed JSON.
fn json_report(
    addr: SocketAddr,
    probed: &Probed,
    sample: &Sample,
    raw: serde_json::Map<String, Value>,
) -> anyhow::Result<String> {
    let d = &probed.device;
    let out = json!({
        "address": addr.to_string(),
        "device": d.device, "firmware": probed.profile.firmware, "ver": d.ver,
        "ble_mac": d.ble_mac, "wifi_mac": d.wifi_mac, "ip": d.ip,
        "latency_ms": probed.latency.as_secs_f64() * 1000.0,
        "catalogue": probed.note,
        "sample": sample, "raw": Value::Object(raw),
    });
    Ok(serde_json::to_string_pretty(&out)?)
}

/// The probe as an aligned two-column table.
fn print_report(addr: SocketAddr, probed: &Probed, sample: &Sample) -> String {
    let d = &probed.device;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows = [
        ("address", addr.to_string()),
        ("model", opt(d.device.clone())),
        (
            "firmware",
            format!(
                "{} (ver {})",
                probed.profile.firmware,
                opt(d.ver.map(|v| v.to_string()))
            ),
        ),
        ("ble_mac", opt(d.ble_mac.clone())),
        ("wifi_mac", opt(d.wifi_mac.clone())),
        ("reported ip", opt(d.ip.clone())),
        (
            "latency",
            format!("{:.1} ms", probed.latency.as_secs_f64() * 1000.0),
        ),
        ("mode", opt(sample.mode.map(|m| m.to_string()))),
        ("soc", opt(sample.soc.map(|p| format!("{} %", p.0)))),
        (
            "battery power",
            opt(sample
                .bat_power
                .map(|w| format!("{} W (+ discharging)", w.0))),
        ),
        (
            "grid power",
            opt(sample
                .grid_power
                .map(|w| format!("{} W (+ delivering)", w.0))),
        ),
        (
            "pv power",
            opt(sample.pv_power.map(|w| format!("{} W", w.0))),
        ),
        (
            "temperature",
            opt(sample.temperature.map(|c| format!("{:.1} °C", c.0))),
        ),
        (
            "rated capacity",
            opt(sample.rated_capacity.map(|c| format!("{:.0} Wh", c.0))),
        ),
    ];
    let mut out = String::new();
    for (k, v) in rows.into_iter().chain(catalogue_rows(&probed.note)) {
        out.push_str(&format!("{k:<15} {v}\n"));
    }
    out
}

/// The probe's rows about the catalogue entry: which one matched and why, its note, policy
/// and quirks with their sources.
fn catalogue_rows(n: &FirmwareNote) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        (
            "catalogue",
            format!("{} ({}, firmware {})", n.entry, n.family, n.firmware_range),
        ),
        ("matched", n.matched.clone()),
        (
            "firmware note",
            format!("{}: {}", n.severity.as_str(), n.note),
        ),
        ("policy", catalogue::policy_summary(&n.policy)),
    ];
    for q in &n.quirks {
        rows.push(("quirk", format!("{} [{}]", q.summary, q.source)));
    }
    rows
}

/// Finds batteries (broadcast, or unicast to `target` over `ports`); a table, or JSON with `json`.
pub async fn discover(
    timeout: Duration,
    target: Option<IpAddr>,
    ports: RangeInclusive<u16>,
    json_out: bool,
) -> anyhow::Result<String> {
    let opts = DiscoverOptions {
        window: timeout,
        rebroadcast: Duration::from_secs(2)
            .min(timeout / 3)
            .max(Duration::from_millis(50)),
        target,
        ports: ports.collect(),
        ..DiscoverOptions::default()
    };
    let found = discover_devices(&opts)
        .await
        .map_err(|e: DriverError| anyhow::anyhow!(e))?;
    if json_out {
        return Ok(serde_json::to_string_pretty(&found)?);
    }
    let mut out = format!(
        "{:<22} {:<14} {:<13} {:>8}\n",
        "ADDRESS", "BLE_MAC", "MODEL", "FIRMWARE"
    );
    for d in &found {
        out.push_str(&format!(
            "{:<22} {:<14} {:<13} {:>8}\n",
            d.addr.to_string(),
            d.ble_mac,
            d.device,
            d.firmware
        ));
    }
    out.push_str(&format!("{} device(s) found\n", found.len()));
    Ok(out)
}

/// Runs `probe` from parsed arguments.
pub async fn run_probe(args: &ProbeArgs) -> anyhow::Result<String> {
    probe(&args.target, args.json).await
}

/// Runs `discover` from parsed arguments.
pub async fn run_discover(args: &DiscoverArgs) -> anyhow::Result<String> {
    discover(args.timeout, args.target, args.ports.clone(), args.json).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("30000"), Ok(30000..=30000));
        assert_eq!(parse_port_range("30000-30004"), Ok(30000..=30004));
        assert!(parse_port_range("0").is_err());
        assert!(parse_port_range("5-1").is_err());
        assert!(parse_port_range("x").is_err());
        assert_eq!(resolve("127.0.0.1").unwrap().port(), 30000);
        assert_eq!(resolve("127.0.0.1:4000").unwrap().port(), 4000);
    }
}
