//! An embedded MQTT broker (rumqttd, MQTT 3.1.1 only, loopback only) for the self-contained demo
//! when no broker answers. rumqttd only logs when its port is taken, so the port is checked
//! before and the listener is probed after start. Runs on its own OS thread; it has no stop
//! call and lives until the process exits.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Something already listens on the port.
    #[error("port {0} on 127.0.0.1 is already in use")]
    PortInUse(u16),
    /// The broker did not start listening.
    #[error("embedded broker did not start listening on 127.0.0.1:{0}")]
    NotListening(u16),
}

/// Whether an MQTT broker (or anything) accepts TCP connections on `addr`.
pub fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Starts rumqttd on 127.0.0.1:`port` (MQTT 3.1.1 only: its v5 path crashes on some
/// property forwarding) and returns once it accepts connections.
pub fn start(port: u16) -> Result<SocketAddr, BrokerError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Taking the port ourselves first is the only reliable way to know it is free.
    drop(TcpListener::bind(addr).map_err(|_| BrokerError::PortInUse(port))?);
    let server = ServerSettings {
        name: "v4-loopback".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 256 * 1024,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1_000,
            max_outgoing_packet_count: 2_000,
            max_segment_size: 8 * 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("loopback".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded_broker_stopped");
            }
        })
        .map_err(|_| BrokerError::NotListening(port))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if answers(addr) {
            tracing::info!(%addr, "embedded_broker_started");
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(port))
}
