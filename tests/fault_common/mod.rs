//! Shared helpers of the fault drills and the bridge benchmark: writes a bridge configuration for
//! simulated devices, spawns the bridge binary as a child process (killed on drop, stderr kept in
//! a log file), reads its CPU time and peak RSS from `/proc`, and watches MQTT topics with
//! arrival times, and reads the scheduler's `job_runs` rows. Touches only loopback sockets, its
//! temp directory, the child it spawned and the test's own database.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use marstek_bridge::simulator::{SimConfig, SimHandle, Simulator};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sqlx::Connection;
use tokio::sync::mpsc;

/// What the generated configuration file contains.
#[derive(Debug, Clone)]
pub struct BridgeSetup {
    /// MQTT broker address (the real broker, or a `TcpProxy` in front of it).
    pub broker: SocketAddr,
    /// Root of the bridge's topics (unique per test).
    pub base_topic: String,
    /// Database URL (PostgreSQL test database or `sqlite://…`).
    pub database_url: String,
    /// Simulated devices: (alias, address).
    pub devices: Vec<(String, SocketAddr)>,
    /// `[polling] status_interval`, e.g. `"5s"`.
    pub status_interval: String,
    /// `[mqtt] discovery`: `off`, `entity` or `device`.
    pub discovery: String,
    /// Read reply timeout, e.g. `"500ms"`.
    pub request_timeout: String,
    /// `[http] listen` (for `/metrics`), e.g. `127.0.0.1:9480`; None = no HTTP server.
    pub http_listen: Option<SocketAddr>,
    /// `[logging] level`.
    pub log_level: String,
    /// `[mqtt] qos` of the bridge's publishes and subscriptions (0, 1 or 2).
    pub qos: u8,
    /// Extra TOML appended verbatim (e.g. `[scheduler.jobs.x]` tables).
    pub extra: String,
}

impl BridgeSetup {
    /// Defaults for benchmarks and drills: 5 s polling, no pacing, short timeouts, no Tempo.
    pub fn new(broker: SocketAddr, base_topic: &str, database_url: &str) -> Self {
        Self {
            broker,
            base_topic: base_topic.to_string(),
            database_url: database_url.to_string(),
            devices: Vec::new(),
            status_interval: "5s".into(),
            discovery: "off".into(),
            request_timeout: "500ms".into(),
            http_listen: None,
            log_level: "warn".into(),
            qos: 1,
            extra: String::new(),
        }
    }

    /// The TOML text of the configuration.
    pub fn to_toml(&self) -> String {
        let mut s = format!(
            r#"[bridge]
instance_id = "{base}"
shutdown_timeout = "5s"

[logging]
level = "{level}"

[mqtt]
host = "{host}"
port = {port}
client_id = "{base}"
base_topic = "{base}"
discovery_prefix = "{base}_ha"
discovery = "{disc}"
qos = {qos}
reconnect_min = "100ms"
reconnect_max = "500ms"
queue_capacity = 100000

[database]
url = "{db}"
acquire_timeout = "1s"
batch_interval = "500ms"
retry_initial = "200ms"
retry_max = "1s"
write_timeout = "2s"

[polling]
status_interval = "{interval}"
quiet_gap = "0s"
request_timeout = "{timeout}"
write_timeout = "{timeout}"
resend_after = "0s"

[marstek]
bind_device_port = false

[tempo]
enabled = false
"#,
            base = self.base_topic,
            host = self.broker.ip(),
            port = self.broker.port(),
            disc = self.discovery,
            interval = self.status_interval,
            db = self.database_url,
            timeout = self.request_timeout,
            level = self.log_level,
            qos = self.qos,
        );
        if let Some(h) = self.http_listen {
            s.push_str(&format!("\n[http]\nlisten = \"{h}\"\n"));
        }
        for (id, addr) in &self.devices {
            s.push_str(&format!(
                "\n[[devices]]\nid = \"{id}\"\nhost = \"{}\"\nport = {}\n",
                addr.ip(),
                addr.port()
            ));
        }
        s.push('\n');
        s.push_str(&self.extra);
        s
    }

    /// Writes the configuration into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("bridge.toml");
        std::fs::write(&path, self.to_toml()).expect("write bridge config");
        path
    }
}

/// A drill's simulated batteries and scratch space: a temp dir (configuration, log, SQLite
/// file), a topic root unique to the call and a [`BridgeSetup`] for those batteries.
pub struct Drill {
    /// The simulated batteries (aliases `d0000`, `d0001`…).
    pub sim: SimHandle,
    /// Where the configuration, the log and the SQLite file go.
    pub dir: tempfile::TempDir,
    /// The topic root (also the client id and instance id).
    pub base: String,
    /// The configuration, to adjust before [`BridgeSetup::write`].
    pub setup: BridgeSetup,
}

impl Drill {
    /// Starts `sim` and configures a bridge for it on `broker`, storing into `database_url`
    /// (None = a SQLite file in the drill's temp dir); `tag` prefixes the topic root.
    pub async fn start(
        tag: &str,
        sim: SimConfig,
        broker: SocketAddr,
        database_url: Option<&str>,
    ) -> Drill {
        let sim = Simulator::start(sim).await.expect("simulator starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let base = unique_base(tag);
        let sqlite = format!("sqlite://{}", dir.path().join("bridge.db").display());
        let mut setup = BridgeSetup::new(broker, &base, database_url.unwrap_or(&sqlite));
        setup.devices = aliases(&sim.addrs());
        Drill {
            sim,
            dir,
            base,
            setup,
        }
    }

    /// [`Drill::start`] with `n` default simulated batteries.
    pub async fn devices(
        tag: &str,
        n: usize,
        broker: SocketAddr,
        database_url: Option<&str>,
    ) -> Drill {
        let sim = SimConfig {
            devices: n,
            ..SimConfig::default()
        };
        Self::start(tag, sim, broker, database_url).await
    }

    /// Writes the configuration into the drill's temp dir; returns its path.
    pub fn write(&self) -> PathBuf {
        self.setup.write(self.dir.path())
    }
}

/// Device aliases `d0000`, `d0001`… for simulator addresses.
pub fn aliases(addrs: &[SocketAddr]) -> Vec<(String, SocketAddr)> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("d{i:04}"), *a))
        .collect()
}

/// The bridge as a child process; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct BridgeProcess {
    child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// When it was spawned.
    pub started: Instant,
}

impl BridgeProcess {
    /// Spawns `bin run --config config`, logging to `<dir>/bridge-<n>.log`.
    pub fn spawn(bin: &str, config: &Path, dir: &Path) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = dir.join(format!("bridge-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("MARSTEK_BRIDGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn bridge");
        Self {
            child: Some(child),
            log,
            started,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// utime + stime of the process so far, in seconds (from `/proc/<pid>/stat`).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); utime is field 14, stime field 15.
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((utime + stime) / clock_ticks())
    }

    /// Peak resident set size, kB (`VmHWM` in `/proc/<pid>/status`).
    pub fn peak_rss_kb(&self) -> Option<u64> {
        proc_status_kb(self.pid(), "VmHWM:")
    }

    /// Resident anonymous memory (heap, stacks), kB (`RssAnon`).
    pub fn rss_anon_kb(&self) -> Option<u64> {
        proc_status_kb(self.pid(), "RssAnon:")
    }

    /// Resident file-backed pages (the binary's code and data, shared libraries), kB (`RssFile`).
    pub fn rss_file_kb(&self) -> Option<u64> {
        proc_status_kb(self.pid(), "RssFile:")
    }

    /// Current resident set size, kB (`VmRSS`).
    pub fn rss_kb(&self) -> Option<u64> {
        proc_status_kb(self.pid(), "VmRSS:")
    }

    /// Whether the process has exited (and its status).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL now and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to `limit` for an orderly exit (SIGKILL after); returns the status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// The log written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture the bridge targets.
    100.0
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One message seen by a [`Watcher`].
#[derive(Debug, Clone)]
pub struct Seen {
    /// Topic.
    pub topic: String,
    /// Payload as text.
    pub text: String,
    /// Arrival time.
    pub at: Instant,
    /// Retained flag.
    pub retain: bool,
}

/// An MQTT client subscribed to some filters, forwarding every publish with its arrival time.
pub struct Watcher {
    /// Client, for publishing commands.
    pub client: AsyncClient,
    /// Publishes as they arrive.
    pub rx: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Connects to the broker and subscribes; returns once every subscription is acknowledged.
    pub async fn start(broker: SocketAddr, client_id: &str, filters: &[String]) -> Watcher {
        let mut opts = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(opts, 10_000);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        for f in filters {
            client
                .subscribe(f.clone(), QoS::AtMostOnce)
                .await
                .expect("subscribe");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let seen = Seen {
                            topic: p.topic.clone(),
                            text: String::from_utf8_lossy(&p.payload).into_owned(),
                            at: Instant::now(),
                            retain: p.retain,
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = acked_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for _ in filters {
            tokio::time::timeout(Duration::from_secs(10), acked_rx.recv())
                .await
                .expect("suback in time")
                .expect("watcher running");
        }
        Watcher { client, rx, task }
    }

    /// Next message whose topic satisfies `pred`, or None after `limit`.
    pub async fn next_matching(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Seen) -> bool,
    ) -> Option<Seen> {
        let end = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(end, self.rx.recv()).await {
                Ok(Some(s)) if pred(&s) => return Some(s),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }
}

/// The real broker on loopback (`TEST_MQTT_PORT`, default 1883).
pub fn broker_addr() -> SocketAddr {
    let port = std::env::var("TEST_MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A topic root unique to this process and call.
pub fn unique_base(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 100_000,
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// Percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A free TCP port on loopback (bound and released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Value of a metric from the bridge's `/metrics` that has no label but the constant `site`, or
/// None when unreachable/absent.
pub async fn metric(http: SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        let labels = k.strip_prefix(name)?;
        let only_site = labels.is_empty()
            || (labels.starts_with("{site=\"") && labels.ends_with("\"}") && !labels.contains(','));
        only_site.then(|| v.trim().parse().ok()).flatten()
    })
}

/// One `job_runs` row: job id, scheduled instant, status, start, instance that claimed it.
pub type Run = (String, DateTime<Utc>, String, Option<DateTime<Utc>>, String);

/// Every `job_runs` row of the PostgreSQL database at `url`, by scheduled instant (empty when the
/// database cannot be read yet).
pub async fn runs(url: &str) -> Vec<Run> {
    let Ok(mut c) = sqlx::PgConnection::connect(url).await else {
        return Vec::new();
    };
    let rows: Vec<Run> = sqlx::query_as(
        "SELECT job_id, scheduled_for, status, started_at, instance FROM job_runs \
         ORDER BY scheduled_for",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    let _ = c.close().await;
    rows
}

/// Polls `job_runs` (every 200 ms, the database offers no event) until `pred` holds or `limit`
/// passes; returns the last rows read.
pub async fn wait_runs(url: &str, limit: Duration, pred: impl Fn(&[Run]) -> bool) -> Vec<Run> {
    let end = Instant::now() + limit;
    loop {
        let r = runs(url).await;
        if pred(&r) || Instant::now() >= end {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints the rows of `job` and asserts that no scheduled instant ran twice, not even shifted:
/// consecutive instants lie at least `min_gap` apart.
pub fn assert_instants_apart(job: &[&Run], min_gap: chrono::Duration) {
    for r in job {
        eprintln!("  {} {:<9} {:<24} started {:?}", r.1, r.2, r.4, r.3);
    }
    for pair in job.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= min_gap,
            "two runs {gap} apart: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}
