//! The HTTP endpoints of a bridge running in-process against the real mosquitto (through a
//! cuttable proxy) and a SQLite file: `/healthz` answers, `/readyz` turns not-ready while the
//! broker is unreachable and ready again when it returns, `/metrics` parses as Prometheus text.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use marstek_bridge::config::Settings;
use support::TcpProxy;
use tokio::sync::oneshot;

/// Polls `/readyz` until its `ready` flag equals `want` (the readiness is the event awaited).
async fn wait_ready(http: SocketAddr, want: bool) -> serde_json::Value {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("http://{http}/readyz")).send().await {
            let code = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                code == 200,
                body["ready"] == true,
                "status code agrees with the body: {code} {body}"
            );
            if body["ready"] == want {
                return body;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never became ready={want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_broker_and_metrics_parse() {
    let (proxy_addr, proxy) = TcpProxy::start("127.0.0.1:1883".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    let base = format!("mbhttp{}", std::process::id());
    settings.mqtt.host = proxy_addr.ip().to_string();
    settings.mqtt.port = proxy_addr.port();
    settings.mqtt.base_topic = base.clone();
    settings.mqtt.discovery_prefix = format!("{base}ha");
    settings.mqtt.client_id = base.clone();
    settings.mqtt.reconnect_max = Duration::from_millis(500);
    settings.mqtt.keep_alive = Duration::from_secs(5);
    settings.database.url = format!("sqlite://{}/b.db", dir.path().display());
    settings.marstek.bind_device_port = false;
    settings.tempo.enabled = false;
    settings.http.listen = Some("127.0.0.1:0".into());
    assert!(settings.validate().is_empty(), "{:?}", settings.validate());

    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let bridge = tokio::spawn(marstek_bridge::app::run_with(
        settings,
        async move {
            let _ = stop_rx.await;
        },
        move |running| {
            let _ = addr_tx.send(running.http.expect("http enabled"));
        },
    ));
    let http = tokio::time::timeout(Duration::from_secs(20), addr_rx)
        .await
        .unwrap()
        .unwrap();

    let health = reqwest::get(format!("http://{http}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = wait_ready(http, true).await;
    assert_eq!(ready["broker"], true);
    assert_eq!(ready["database"], true);

    proxy.cut();
    let down = wait_ready(http, false).await;
    assert_eq!(down["broker"], false, "{down}");
    proxy.restore();
    wait_ready(http, true).await;

    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text");
    assert!(!scrape.samples.is_empty(), "no samples in:\n{text}");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("marstek_")),
        "no marstek_ metric in:\n{text}"
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), bridge)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
