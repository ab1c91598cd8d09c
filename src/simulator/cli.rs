//! The `simulate` command: simulated batteries on UDP until Ctrl-C (or a cancellation), in
//! either addressing shape, optionally with a `--site` (a house and its grid meter on MQTT).
//! Touches only the sockets the simulator binds and, with `--site`, the broker.

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
    /// Also simulate a site: a house evening (300 W, a kettle, an oven) behind one grid meter
    /// publishing like a Shelly Pro 3EM on this topic, fed back by the batteries.
    #[arg(long)]
    pub site: Option<String>,
    /// Broker of the site's meter, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub site_broker: String,
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
    let handle = std::sync::Arc::new(handle);
    let _site = match &args.site {
        Some(topic) => Some(start_site(topic, &args.site_broker, &handle)?),
        None => None,
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    drop(_site);
    if let Ok(handle) = std::sync::Arc::try_unwrap(handle) {
        handle.shutdown().await;
    }
    Ok(())
}

/// Starts the `--site` meter on `topic` at `broker` (HOST:PORT).
fn start_site(
    topic: &str,
    broker: &str,
    sim: &std::sync::Arc<super::server::SimHandle>,
) -> anyhow::Result<super::site::SiteHandle> {
    let (host, port) = broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--site-broker '{broker}' is not HOST:PORT"))?;
    let options = crate::mqtt::ClientOptions {
        protocol: crate::mqtt::MqttProtocol::V311,
        client_id: format!("marstek-site-{}", std::process::id()),
        host,
        port,
        keep_alive: std::time::Duration::from_secs(30),
        clean_session: true,
        credentials: None,
        tls: None,
        last_will: None,
    };
    let cfg = super::site::SiteConfig {
        topic: topic.to_string(),
        ..super::site::SiteConfig::evening()
    };
    println!(
        "site meter on {topic} at {broker}: 300 W, a 2 kW kettle at 2 min, a 1.5 kW oven at 8 min"
    );
    Ok(super::site::start_site(cfg, sim.clone(), &options)?)
}
