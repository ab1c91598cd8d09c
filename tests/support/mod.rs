//! Shared helpers for integration tests: a cuttable TCP proxy (to stage broker and database
//! outages on loopback), a fresh PostgreSQL database per test and a private mosquitto on a free
//! loopback port; [`core_rig`] runs the bridge's core in-process on simulated batteries,
//! [`bridge_rig`] the whole bridge (the app's own builder) with MQTT, and [`mqtt_probe`] is the
//! MQTT client that watches it; [`story`] the settings and the task of the whole-bridge stories. Include with `mod support;` (`#[macro_use]` for
//! `for_both_protocols!`). Touches only loopback sockets, the databases it creates and the
//! brokers it starts.
#![allow(dead_code)]

pub mod bridge_rig;
pub mod core_rig;
pub mod mqtt_probe;
pub mod story;

/// Runs each named `async fn(MqttProtocol)` of the including file once per protocol:
/// `mqtt311::<name>` and `mqtt5::<name>` (include with `#[macro_use] mod support;`).
#[allow(unused_macros)]
macro_rules! for_both_protocols {
    ($($name:ident),+ $(,)?) => {
        mod mqtt311 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(marstek_bridge::mqtt::MqttProtocol::V311).await
            })+
        }
        mod mqtt5 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(marstek_bridge::mqtt::MqttProtocol::V5).await
            })+
        }
    };
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A TCP forwarder on 127.0.0.1 that can be cut (every connection closed, new ones refused by
/// an immediate close) and restored, to simulate a broker or database outage.
#[derive(Debug)]
pub struct TcpProxy {
    local: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Starts forwarding a fresh loopback port to `upstream`; returns the local address and the
    /// handle (dropping the handle stops the proxy and closes its connections).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<(SocketAddr, TcpProxy)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, gen_rx) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (cut2, accepted2, stop2) = (cut.clone(), accepted.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stop2.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                // Generation first, then the flag: a cut between the two is still seen below.
                let generation = *gen_rx.borrow();
                if cut2.load(Ordering::SeqCst) {
                    drop(client); // refused while cut
                    continue;
                }
                accepted2.fetch_add(1, Ordering::SeqCst);
                let mut gen_rx = gen_rx.clone();
                let stop3 = stop2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = gen_rx.wait_for(|g| *g != generation) => {}
                        _ = stop3.cancelled() => {}
                    }
                    // Dropping both ends closes the connection on both sides.
                });
            }
        });
        Ok((
            local,
            TcpProxy {
                local,
                cut,
                generation,
                accepted,
                stop,
            },
        ))
    }

    /// The address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Closes every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the proxy is cut now.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Connections forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Base PostgreSQL URL for tests: `TEST_DATABASE_URL`, else the local server as `postgres`.
pub fn pg_base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A PostgreSQL database created for one test and dropped (with FORCE) when this is dropped.
#[derive(Debug)]
pub struct TestPgDb {
    /// URL of the new database.
    pub url: String,
    /// Its name.
    pub name: String,
    admin_url: String,
    dropped: bool,
}

fn with_user_and_db(base: &str, user: Option<&str>, db: &str) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            if let Some(user) = user {
                let _ = u.set_username(user);
            }
            u.set_path(&format!("/{db}"));
            u.to_string()
        }
        Err(_) => base.to_string(),
    }
}

async fn admin_connect(base: &str) -> Result<(sqlx::PgConnection, String), String> {
    use sqlx::Connection;
    let mut last = String::new();
    // The default role is `postgres`; some machines only have `root`.
    for user in [None, Some("root")] {
        let url = with_user_and_db(base, user, "postgres");
        match sqlx::PgConnection::connect(&url).await {
            Ok(c) => return Ok((c, url)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "cannot reach PostgreSQL at {base} (set TEST_DATABASE_URL): {last}"
    ))
}

/// Base URL of the test TimescaleDB server (`TEST_TIMESCALE_URL`; `.ci/run` starts a private
/// cluster and always sets it), or None for local runs without one.
pub fn timescale_base_url() -> Option<String> {
    std::env::var("TEST_TIMESCALE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

impl TestPgDb {
    /// Creates `<prefix>_<pid>_<nanos>_<n>` on the test server.
    pub async fn create(prefix: &str) -> TestPgDb {
        Self::create_on(&pg_base_url(), prefix).await
    }

    /// Creates a database on the TimescaleDB test server; None (after saying why on stderr)
    /// only when `TEST_TIMESCALE_URL` is unset.
    pub async fn create_timescale(prefix: &str) -> Option<TestPgDb> {
        let Some(base) = timescale_base_url() else {
            eprintln!("skipped: TEST_TIMESCALE_URL is unset (.ci/run starts a TimescaleDB for it)");
            return None;
        };
        Some(Self::create_on(&base, prefix).await)
    }

    /// Creates `<prefix>_<pid>_<nanos>_<n>` on the server at `base`.
    pub async fn create_on(base: &str, prefix: &str) -> TestPgDb {
        static N: AtomicU64 = AtomicU64::new(0);
        let (mut conn, admin_url) = admin_connect(base).await.expect("test PostgreSQL");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{}_{}_{}_{}",
            prefix.to_ascii_lowercase(),
            std::process::id(),
            nanos,
            N.fetch_add(1, Ordering::SeqCst)
        );
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = with_user_and_db(&admin_url, None, &name);
        TestPgDb {
            url,
            name,
            admin_url,
            dropped: false,
        }
    }

    /// The database URL with its host:port replaced by `addr` (e.g. a `TcpProxy`).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) => {
                let _ = u.set_ip_host(addr.ip());
                let _ = u.set_port(Some(addr.port()));
                u.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }

    /// The server's address, parsed from the URL.
    pub fn server_addr(&self) -> SocketAddr {
        let u = url::Url::parse(&self.url).expect("test url");
        let host = u.host_str().unwrap_or("127.0.0.1");
        let host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host
        };
        format!("{}:{}", host, u.port().unwrap_or(5432))
            .parse()
            .expect("loopback address")
    }

    /// The bridge's store on this database, opened with default settings (migrations and, on the
    /// TimescaleDB server, its step applied).
    pub async fn open_store(&self) -> Arc<dyn marstek_bridge::store::Store> {
        marstek_bridge::store::open(&marstek_bridge::store::DatabaseSettings {
            url: self.url.clone(),
            ..Default::default()
        })
        .await
        .expect("store opens on the test database")
    }

    /// Drops the database now (also done on drop).
    pub async fn drop_now(mut self) {
        self.dropped = true;
        drop_db(&self.admin_url, &self.name).await;
    }
}

async fn drop_db(admin_url: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}

impl Drop for TestPgDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Runs on its own thread and runtime: works inside or outside a tokio runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_db(&admin, &name));
            }
        })
        .join();
    }
}

/// A loopback TCP port free when asked (the listener that found it is closed again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a simulator on `n` consecutive free ports (random bases below the ephemeral range, or
/// exactly `base`); returns the base port and the handle.
pub async fn start_on_ports(
    n: usize,
    base: Option<u16>,
    seed: Option<u32>,
) -> Option<(u16, marstek_bridge::simulator::SimHandle)> {
    use marstek_bridge::simulator::{Addressing, SimConfig, Simulator};
    for _ in 0..50 {
        let b = base.unwrap_or_else(|| rand::random_range(20_000u16..30_000));
        let cfg = SimConfig {
            devices: n,
            mac_seed: seed,
            addressing: Addressing::Ports {
                ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                base_port: b,
            },
            ..SimConfig::default()
        };
        if let Ok(s) = Simulator::start(cfg).await {
            return Some((b, s));
        }
        if base.is_some() {
            return None;
        }
    }
    None
}

/// A mosquitto of the test's own (killed on drop), for broker set-ups the shared one on 1883
/// does not have: TLS listeners, passwords, the shipped ACL.
#[allow(dead_code)]
pub struct PrivateBroker {
    child: std::process::Child,
    /// Its loopback port.
    pub port: u16,
}

#[allow(dead_code)]
impl PrivateBroker {
    /// Starts `mosquitto` with a listener on a free loopback port plus `listener_conf` (lines
    /// that apply to that listener: TLS files, `password_file`, `acl_file`…); its configuration
    /// file goes into `dir`. Returns once the port accepts connections.
    pub fn start(dir: &std::path::Path, listener_conf: &str) -> Self {
        use std::process::{Command, Stdio};
        let port = free_port();
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("user root\npersistence false\nper_listener_settings true\nlistener {port} 127.0.0.1\n{listener_conf}\n"),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed");
        let broker = Self { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private mosquitto did not start on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        broker
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` fully populated telemetry samples spread over `devices` devices (`bench_0`, …), at new
/// times after `offset` seconds (advanced, so every batch has new (device, time) keys): the
/// ingest benchmarks' load.
#[allow(dead_code)]
pub fn synthetic_samples(
    n: usize,
    devices: usize,
    offset: &mut i64,
) -> Vec<marstek_bridge::domain::Sample> {
    use chrono::TimeZone;
    use marstek_bridge::domain::{Celsius, DeviceId, Mode, Percent, Sample, WattHours, Watts};
    let devices = devices.max(1);
    let base = chrono::Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let ids: Vec<DeviceId> = (0..devices)
        .map(|d| DeviceId(format!("bench_{d}")))
        .collect();
    let out = (0..n)
        .map(|i| {
            let k = *offset + (i / devices) as i64;
            Sample {
                device: ids[i % devices].clone(),
                at: base + chrono::Duration::seconds(k),
                soc: Some(Percent((k % 101) as u8)),
                bat_power: Some(Watts(-(k % 2500) as i32)),
                grid_power: Some(Watts((k % 2500) as i32)),
                offgrid_power: Some(Watts(0)),
                pv_power: Some(Watts(300)),
                temperature: Some(Celsius(25.5)),
                remaining_capacity: Some(WattHours(2500.0)),
                rated_capacity: Some(WattHours(5120.0)),
                total_pv_energy: Some(WattHours(k as f64)),
                total_grid_output_energy: Some(WattHours(k as f64 * 2.0)),
                total_grid_input_energy: Some(WattHours(k as f64 * 3.0)),
                total_load_energy: Some(WattHours(k as f64 * 4.0)),
                mode: Some(Mode::Auto),
                ct_connected: Some(true),
                ct_power: Some(Watts(12)),
                charge_allowed: Some(true),
                discharge_allowed: Some(true),
                rssi: Some(-60),
                readings: Default::default(),
            }
        })
        .collect();
    *offset += n.div_ceil(devices) as i64;
    out
}
