//! One leader per site, with real bridge processes sharing one PostgreSQL database. Two bridges
//! of one site elect one leader (the lease row is `site:<site_id>`): the standby keeps
//! publishing state, says `standby` and names the leader in `bridge/info`, reports
//! `marstek_leader 0`, and refuses commands (MQTT answer `status: error`, `standby: …`; HTTP 409
//! `standby`); after the leader is killed (SIGKILL) it takes over and its commands go through.
//! Bridges of two different sites on the same database both lead at once.

mod fault_common;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fault_common::{BridgeProcess, BridgeSetup, Watcher, aliases, broker_addr, unique_base};
use marstek_bridge::simulator::{SimConfig, SimHandle, Simulator};
use rumqttc::QoS;
use serde_json::Value;
use support::TestPgDb;

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");
const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "site-leader-test-token";

async fn sim() -> SimHandle {
    Simulator::start(SimConfig {
        devices: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// A free loopback port for the bridge's HTTP server.
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A bridge of `site` on `db` with the batteries of `sim`, HTTP on `http`; (base, config, dir).
fn setup(
    root: &Path,
    name: &str,
    site: &str,
    db: &str,
    sim: &SimHandle,
    http: SocketAddr,
) -> (String, PathBuf, PathBuf) {
    let base = unique_base(name);
    let mut s = BridgeSetup::new(broker_addr(), &base, db);
    s.devices = aliases(&sim.addrs());
    s.status_interval = "1s".into();
    s.http_listen = Some(http);
    s.extra = "[scheduler]\nleader_ttl = \"3s\"\n".into();
    let toml = s
        .to_toml()
        .replacen(
            "[bridge]\n",
            &format!("[bridge]\nsite_id = \"{site}\"\n"),
            1,
        )
        .replacen("[http]\n", &format!("[http]\ntoken = \"{TOKEN}\"\n"), 1);
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bridge.toml");
    std::fs::write(&cfg, toml).unwrap();
    (base, cfg, dir)
}

/// Waits for `<base>/bridge/info` to say `role` (and `leader`, when given).
async fn wait_role(w: &mut Watcher, base: &str, role: &str, leader: Option<&str>) -> Value {
    let topic = format!("{base}/bridge/info");
    let seen = w
        .next_matching(WAIT, |s| {
            let Ok(v) = serde_json::from_str::<Value>(&s.text) else {
                return false;
            };
            s.topic == topic
                && v["role"] == role
                && leader.is_none_or(|l| v["leader"].as_str() == Some(l))
        })
        .await;
    let Some(seen) = seen else {
        panic!("{base} never said role {role} (leader {leader:?})");
    };
    serde_json::from_str(&seen.text).unwrap()
}

/// Sends `{"mode":"auto","id":id}` to device d0000 of `base` over MQTT; returns its answer.
async fn command(w: &mut Watcher, base: &str, id: &str) -> Value {
    let body = format!(r#"{{"mode":"auto","id":"{id}"}}"#);
    w.client
        .publish(format!("{base}/d0000/set"), QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    let topic = format!("{base}/d0000/response");
    let seen = w
        .next_matching(WAIT, |s| s.topic == topic && s.text.contains(id))
        .await
        .unwrap_or_else(|| panic!("no answer to {id} on {topic}"));
    serde_json::from_str(&seen.text).unwrap()
}

/// The lease rows of the database: (name, instance), by name.
async fn leases(url: &str) -> Vec<(String, String)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let rows = sqlx::query_as("SELECT name, instance FROM leader ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// `/metrics` of the bridge at `http`, once it answers.
async fn metrics(http: SocketAddr) -> String {
    let url = format!("http://{http}/metrics");
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && let Ok(text) = r.text().await
            && text.contains("marstek_leader")
        {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no marstek_leader at {url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `marstek_leader` gauge's value in a Prometheus text.
fn leader_gauge(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("marstek_leader"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_of_one_site_elect_one_leader_and_the_standby_takes_over_a_killed_one() {
    let sim = sim().await;
    let db = TestPgDb::create("site_leader_same").await;
    let root = tempfile::tempdir().unwrap();
    let (http_a, http_b) = (free_addr(), free_addr());
    let (a, a_cfg, a_dir) = setup(root.path(), "lead_a", "home", &db.url, &sim, http_a);
    let (b, b_cfg, b_dir) = setup(root.path(), "lead_b", "home", &db.url, &sim, http_b);
    let filters = [format!("{a}/#"), format!("{b}/#")];
    let mut w = Watcher::start(broker_addr(), &unique_base("leadw"), &filters).await;

    let mut pa = BridgeProcess::spawn(BIN, &a_cfg, &a_dir);
    wait_role(&mut w, &a, "leader", Some(&a)).await;
    let pb = BridgeProcess::spawn(BIN, &b_cfg, &b_dir);
    let info = wait_role(&mut w, &b, "standby", Some(&a)).await;
    assert_eq!(info["devices"], serde_json::json!(["d0000"]), "{info}");
    assert_eq!(
        leases(&db.url).await,
        vec![("site:home".to_string(), a.clone())],
        "one lease, named after the site, held by the first bridge"
    );

    // The standby keeps publishing state...
    let state = format!("{b}/d0000/state");
    assert!(
        w.next_matching(WAIT, |s| s.topic == state).await.is_some(),
        "the standby publishes no state; log:\n{}",
        pb.log_text()
    );
    // ...but refuses writes, over MQTT and HTTP, naming the leader.
    let refused = command(&mut w, &b, "on-standby").await;
    assert_eq!(refused["status"], "error", "{refused}");
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("standby") && error.contains(&a),
        "{refused}"
    );
    let resp = reqwest::Client::new()
        .post(format!("http://{http_b}/api/v1/batteries/d0000/commands"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"mode":"auto"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "standby", "{body}");
    assert_eq!(leader_gauge(&metrics(http_b).await), Some(0.0));
    assert_eq!(leader_gauge(&metrics(http_a).await), Some(1.0));
    let ok = command(&mut w, &a, "on-leader").await;
    assert_eq!(ok["status"], "ok", "{ok}");

    pa.kill();
    wait_role(&mut w, &b, "leader", Some(&b)).await;
    assert_eq!(
        leases(&db.url).await,
        vec![("site:home".to_string(), b.clone())]
    );
    let ok = command(&mut w, &b, "after-takeover").await;
    assert_eq!(ok["status"], "ok", "{ok}; log:\n{}", pb.log_text());
    assert_eq!(leader_gauge(&metrics(http_b).await), Some(1.0));
    drop(pb);
    sim.shutdown().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_of_two_sites_on_one_database_both_lead() {
    let (sim_n, sim_s) = (sim().await, sim().await);
    let db = TestPgDb::create("site_leader_two").await;
    let root = tempfile::tempdir().unwrap();
    let (http_n, http_s) = (free_addr(), free_addr());
    let (n, n_cfg, n_dir) = setup(root.path(), "north", "north", &db.url, &sim_n, http_n);
    let (s, s_cfg, s_dir) = setup(root.path(), "south", "south", &db.url, &sim_s, http_s);
    let filters = [format!("{n}/#"), format!("{s}/#")];
    let mut w = Watcher::start(broker_addr(), &unique_base("sitesw"), &filters).await;

    let pn = BridgeProcess::spawn(BIN, &n_cfg, &n_dir);
    wait_role(&mut w, &n, "leader", Some(&n)).await;
    let ps = BridgeProcess::spawn(BIN, &s_cfg, &s_dir);
    wait_role(&mut w, &s, "leader", Some(&s)).await;
    for (base, id) in [(&n, "north-cmd"), (&s, "south-cmd")] {
        let answer = command(&mut w, base, id).await;
        assert_eq!(
            answer["status"],
            "ok",
            "{answer}; logs:\n{}\n{}",
            pn.log_text(),
            ps.log_text()
        );
    }
    assert_eq!(
        leases(&db.url).await,
        vec![
            ("site:north".to_string(), n.clone()),
            ("site:south".to_string(), s.clone())
        ]
    );
    assert_eq!(leader_gauge(&metrics(http_n).await), Some(1.0));
    assert_eq!(leader_gauge(&metrics(http_s).await), Some(1.0));
    drop((pn, ps));
    sim_n.shutdown().await;
    sim_s.shutdown().await;
    db.drop_now().await;
}
