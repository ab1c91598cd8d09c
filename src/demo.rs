//! `marstek-bridge demo`: the whole system with nothing installed. Three simulated batteries of
//! different families on loopback UDP, SQLite under `./data/`, the full scheduler and alerts,
//! and MQTT: the broker at 127.0.0.1:1883 when one answers, else an embedded one (rumqttd,
//! loopback only). Always speaks MQTT 3.1.1: the embedded rumqttd broker only has its 3.1.1
//! listener (its MQTT 5 path crashes on forwarded properties), and the demo behaves the same
//! with either broker. Serves the status page (with a fresh token for its controls unless one is
//! configured) and prints its URL and ready-to-paste `mosquitto_sub`/`mosquitto_pub` commands. Touches
//! the simulator's sockets, the data directory and the broker.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::app::{self, Running};
use crate::broker;
use crate::config::{DeviceConfig, Settings};
use crate::mqtt::MqttProtocol;
use crate::simulator::{SimConfig, SimHandle, SimProfile, Simulator};

/// `demo`: run simulated batteries, a broker if needed, and the bridge.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Always start the embedded broker, on this port (loopback only).
    #[arg(long)]
    pub embedded_broker_port: Option<u16>,
    /// Directory of the demo's SQLite database.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Serve the status page, the REST API, /healthz, /readyz and /metrics here (`off` to
    /// disable).
    #[arg(long, default_value = "127.0.0.1:9480")]
    pub http: String,
    /// Seconds between status polls of each simulated battery.
    #[arg(long, default_value_t = 5)]
    pub poll_seconds: u64,
}

/// The demo batteries: alias and family.
const FLEET: [(&str, SimProfile); 3] = [
    ("venus-e", SimProfile::VenusE3),
    ("venus-a", SimProfile::VenusA),
    ("venus-d", SimProfile::VenusD),
];

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    args: DemoArgs,
    base: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (broker_addr, embedded) = start_broker(args.embedded_broker_port)?;
    let mut settings = base;
    let simulators = start_fleet(&mut settings).await?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    demo_settings(&mut settings, &args, broker_addr)?;

    let base_topic = settings.mqtt.base_topic.clone();
    let page_token = settings.http.resolve_token().ok().flatten();
    let result = app::run_with(settings, shutdown, |running: &Running| {
        let banner = Banner {
            broker: broker_addr,
            embedded,
            base_topic: &base_topic,
            page_token: page_token.as_deref(),
            data_dir: &args.data_dir,
        };
        // One write, and no panic when whoever reads stdout has gone (a closed pipe).
        let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.text(running).as_bytes());
    })
    .await;
    for sim in simulators {
        sim.shutdown().await;
    }
    result
}

/// The broker to use and whether it is the embedded one: the embedded broker on `port` when
/// asked, else the one on 127.0.0.1:1883 when it answers, else the embedded one on 1883.
fn start_broker(port: Option<u16>) -> anyhow::Result<(SocketAddr, bool)> {
    let default_broker = SocketAddr::from((Ipv4Addr::LOCALHOST, 1883));
    let embedded = |port| {
        broker::start(port)
            .map(|addr| (addr, true))
            .map_err(|e| app::StartupError(e.to_string()).into())
    };
    match port {
        Some(port) => embedded(port),
        None if broker::answers(default_broker) => Ok((default_broker, false)),
        None => embedded(1883),
    }
}

/// Starts one simulated battery per [`FLEET`] entry and makes them the configured devices.
async fn start_fleet(settings: &mut Settings) -> anyhow::Result<Vec<SimHandle>> {
    let mut simulators = Vec::new();
    settings.devices.clear();
    for (n, (alias, profile)) in FLEET.into_iter().enumerate() {
        let sim = Simulator::start(SimConfig {
            profile,
            devices: 1,
            initial_soc: 35.0 + 20.0 * n as f64,
            mac_seed: Some(0xde30 + n as u32),
            ..SimConfig::default()
        })
        .await
        .context("starting the simulated batteries")?;
        let addr = *sim.addrs().first().context("simulator bound no socket")?;
        settings.devices.push(DeviceConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            id: Some(alias.to_string()),
            ..DeviceConfig::default()
        });
        simulators.push(sim);
    }
    Ok(simulators)
}

/// The demo's own settings over the configured ones (database, broker, MQTT 3.1.1, polling,
/// status page and its token, instance name), validated.
fn demo_settings(
    settings: &mut Settings,
    args: &DemoArgs,
    broker_addr: SocketAddr,
) -> anyhow::Result<()> {
    settings.database.url = format!("sqlite://{}/demo.db", args.data_dir.display());
    settings.mqtt.host = broker_addr.ip().to_string();
    settings.mqtt.port = broker_addr.port();
    if settings.mqtt.protocol != MqttProtocol::V311 {
        tracing::warn!(
            configured = %settings.mqtt.protocol,
            "demo_uses_mqtt_3.1.1: mqtt.protocol is ignored by the demo (its embedded broker speaks 3.1.1 only)"
        );
        settings.mqtt.protocol = MqttProtocol::V311;
    }
    settings.mqtt.client_id = format!("marstek-bridge-demo-{}", std::process::id());
    settings.marstek.bind_device_port = false;
    settings.polling.status_interval = Duration::from_secs(args.poll_seconds.max(1));
    settings.polling.quiet_gap = Duration::from_millis(200);
    settings.http.listen = (args.http != "off").then(|| args.http.clone());
    if settings.http.listen.is_some() && settings.http.resolve_token().ok().flatten().is_none() {
        // The page's controls need a token; the demo makes one and hands it over in the URL.
        settings.http.token = Some(format!("{:032x}", rand::random::<u128>()));
    }
    if settings.bridge.instance_id.is_none() {
        settings.bridge.instance_id = Some("demo".into());
    }
    let problems = settings.validate();
    if let Some(p) = problems.first() {
        anyhow::bail!(app::StartupError(format!(
            "demo settings: {}: {}",
            p.key, p.reason
        )));
    }
    Ok(())
}

/// What the demo prints once it runs: where everything is and commands to paste.
struct Banner<'a> {
    broker: SocketAddr,
    embedded: bool,
    base_topic: &'a str,
    page_token: Option<&'a str>,
    data_dir: &'a std::path::Path,
}

impl Banner<'_> {
    /// The text, ending in an empty line.
    fn text(&self, running: &Running) -> String {
        let host = self.broker.ip();
        let port = self.broker.port();
        let base_topic = self.base_topic;
        let http = running
            .http
            .map(|a| {
                let token = self.page_token.unwrap_or("");
                format!(
                    "\n  status page:       http://{a}/#token={token}\
                     \n  REST API:          curl -s http://{a}/api/v1/batteries ; curl -s http://{a}/api/v1/openapi.json\
                     \n  health & metrics:  curl -s http://{a}/readyz ; curl -s http://{a}/metrics\n"
                )
            })
            .unwrap_or_default();
        format!(
            "\nmarstek-bridge demo is running: {n} simulated batteries ({ids}), SQLite in {dir}, \
             {kind} MQTT broker on {host}:{port}.\n\
             \n  watch everything:  mosquitto_sub -h {host} -p {port} -t '{base_topic}/#' -t 'homeassistant/#' -v\
             \n  change a mode:     mosquitto_pub -h {host} -p {port} -t '{base_topic}/venus-e/set' -m '{{\"mode\":\"passive\",\"power\":-800,\"duration\":600,\"id\":\"demo-1\"}}'\
             \n  see the answer:    mosquitto_sub -h {host} -p {port} -t '{base_topic}/venus-e/response' -v\
             \n  list the jobs:     mosquitto_pub -h {host} -p {port} -t '{base_topic}/bridge/request/jobs/list' -m '{{}}'\
             \n{http}\nCtrl-C stops the demo.\n\n",
            n = running.core.fleet.len(),
            ids = running
                .core
                .fleet
                .ids()
                .iter()
                .map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            dir = self.data_dir.display(),
            kind = if self.embedded {
                "embedded"
            } else {
                "existing"
            },
        )
    }
}
