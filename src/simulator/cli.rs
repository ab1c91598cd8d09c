//! The `simulate` command: simulated batteries on UDP until Ctrl-C (or a cancellation), in
//! either addressing shape. Touches only the sockets the simulator binds.

use std::net::{IpAddr, Ipv4Addr};

use tokio_util::sync::CancellationToken;

use super::faults::SimFaults;
use super::model::SimProfile;
use super::server::{Addressing, SimConfig, Simulator};

/// `simulate`: run simulated batteries.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Number of devices.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// First port when all devices share one address (consecutive ports).
    #[arg(long, default_value_t = 30000)]
    pub base_port: u16,
    /// Address of the devices in the consecutive-ports shape.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// First of N consecutive IPv4 addresses (e.g. 127.0.1.1), all on `--port`.
    #[arg(long)]
    pub addresses: Option<Ipv4Addr>,
    /// Port of every device in the consecutive-addresses shape.
    #[arg(long, default_value_t = 30000)]
    pub port: u16,
    /// Model and firmware family.
    #[arg(long, value_enum, default_value = "venus-e-3")]
    pub profile: SimProfile,
    /// Firmware `ver` override (e.g. 139, 1476).
    #[arg(long)]
    pub firmware: Option<i64>,
    /// Comma-separated faults of every device: transport (drop-first, quiet-gap, concurrency,
    /// duplicate, late, silent, malformed, api-disabled, listen-port-only, id-wrap,
    /// freeze-on-empty, omit-macs, integer-mode, loss[=0.3], jitter[=500ms]) and behavioural
    /// (ignore-writes, revert-after=DUR, getmode-resets, getmode-id1-only, busy[=10s],
    /// net-reset[=PERIOD[/SILENCE]], no-bat-power, ignore-manual-power).
    #[arg(long, default_value = "", value_parser = SimFaults::parse_list)]
    pub faults: SimFaults,
    /// Faults of one device, replacing `--faults` for it: `INDEX:LIST` (0-based), repeatable,
    /// e.g. `--device-faults 1:revert-after=5m,busy`.
    #[arg(long = "device-faults", value_parser = parse_device_faults)]
    pub device_faults: Vec<(usize, SimFaults)>,
    /// Initial state of charge, %.
    #[arg(long, default_value_t = 50.0)]
    pub soc: f64,
}

impl SimulateArgs {
    /// The simulator configuration these arguments describe.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        if self.devices == 0 || self.devices > 65_535 {
            anyhow::bail!("--devices must be 1 to 65535");
        }
        if !(0.0..=100.0).contains(&self.soc) {
            anyhow::bail!("--soc must be 0 to 100");
        }
        if let Some((i, _)) = self.device_faults.iter().find(|(i, _)| *i >= self.devices) {
            anyhow::bail!(
                "--device-faults {i}: there are only {} device(s)",
                self.devices
            );
        }
        let addressing = match self.addresses {
            Some(first) => Addressing::Addresses {
                first,
                port: self.port,
            },
            None => Addressing::Ports {
                ip: self.bind,
                base_port: self.base_port,
            },
        };
        Ok(SimConfig {
            profile: self.profile,
            firmware: self.firmware,
            devices: self.devices,
            addressing,
            faults: self.faults.clone(),
            device_faults: self.device_faults.iter().cloned().collect(),
            initial_soc: self.soc,
            ..SimConfig::default()
        })
    }
}

/// Parses `INDEX:LIST` of `--device-faults`.
fn parse_device_faults(s: &str) -> Result<(usize, SimFaults), String> {
    let (i, list) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not INDEX:FAULTS (e.g. 0:ignore-writes)"))?;
    let i = i
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("'{i}' is not a device index (0, 1, …)"))?;
    Ok((i, SimFaults::parse_list(list)?))
}

/// Runs the simulator until Ctrl-C or `shutdown` is cancelled.
pub async fn simulate(args: &SimulateArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = Simulator::start(args.to_config()?).await?;
    let addrs = handle.addrs();
    match (addrs.first(), addrs.last()) {
        (Some(a), Some(b)) => println!(
            "{} simulated {:?} device(s) from {a} to {b}; Ctrl-C to stop",
            addrs.len(),
            args.profile
        ),
        _ => println!("no devices"),
    }
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    handle.shutdown().await;
    Ok(())
}
