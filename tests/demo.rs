//! The demo as a new user meets it: `marstek-bridge demo --embedded-broker-port P` on a machine
//! with no broker of its own; an MQTT client sees discovery and state for 3 batteries, the
//! printed `mosquitto_pub` command changes a battery's mode with an `ok` response, and Ctrl-C
//! (SIGINT) ends it with exit code 0, even when the configuration asks for MQTT 5.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::free_port;

/// Kills the demo if the test fails half-way, so no process outlives the test.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Extracts `-t 'topic' -m 'payload'` from the printed mosquitto_pub line.
fn pub_command(line: &str) -> (String, String) {
    let quoted: Vec<&str> = line.split('\'').collect();
    (quoted[1].to_string(), quoted[3].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_embedded_broker_serves_three_batteries_and_takes_commands() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    // protocol = "5" must not reach the embedded 3.1.1-only broker: the demo forces 3.1.1.
    std::fs::write(
        &config,
        "[tempo]\nenabled = false\n\n[mqtt]\nprotocol = \"5\"\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_marstek-bridge"))
        .args([
            "demo",
            "--http",
            "off",
            "--poll-seconds",
            "1",
            "--embedded-broker-port",
        ])
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = KillOnDrop(Some(child));
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("Ctrl-C stops the demo");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .expect("demo printed its instructions")
        .unwrap();
    let sub_line = lines
        .iter()
        .find(|l| l.contains("mosquitto_sub"))
        .expect("a mosquitto_sub command is printed");
    assert!(sub_line.contains(&format!("-p {port}")), "{sub_line}");
    let pub_line = lines
        .iter()
        .find(|l| l.contains("mosquitto_pub") && l.contains("/set"))
        .expect("a mosquitto_pub command is printed");
    let (set_topic, payload) = pub_command(pub_line);
    let response_topic = set_topic.replace("/set", "/response");

    let mut opts = MqttOptions::new(format!("demo-test-{port}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(opts, 100);
    client
        .subscribe("marstek/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("homeassistant/#", QoS::AtLeastOnce)
        .await
        .unwrap();

    let mut states = HashSet::new();
    let mut discovered = HashSet::new();
    let mut published = false;
    let mut answered = None;
    let mut pending = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.is_none() {
        assert!(
            Instant::now() < deadline,
            "timed out: states {states:?}, discovery {discovered:?}, published {published}"
        );
        let ev = tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("broker event")
            .expect("broker connection");
        let Event::Incoming(Packet::Publish(p)) = ev else {
            continue;
        };
        let text = String::from_utf8_lossy(&p.payload).to_string();
        let parts: Vec<&str> = p.topic.split('/').collect();
        match parts.as_slice() {
            ["marstek", dev, "state"] if text.contains("\"soc\"") => {
                states.insert(dev.to_string());
            }
            ["homeassistant", "sensor", node, _, "config"]
                if node.starts_with("marstek_") && !node.ends_with("_bridge") =>
            {
                discovered.insert(node.to_string());
            }
            // the answer comes first (its effect still being verified), then the verdict
            _ if p.topic == response_topic && text.contains(r#""verification":"pending""#) => {
                pending = Some(text)
            }
            _ if p.topic == response_topic => answered = Some(text),
            _ => {}
        }
        if !published && states.len() >= 3 && discovered.len() >= 3 {
            client
                .publish(&set_topic, QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
            published = true;
        }
    }
    let first: serde_json::Value =
        serde_json::from_str(pending.as_deref().expect("an answer before the verdict")).unwrap();
    assert_eq!(
        (&first["status"], &first["verified"]),
        (&serde_json::json!("ok"), &serde_json::json!(false)),
        "{first}"
    );
    let response: serde_json::Value = serde_json::from_str(answered.as_deref().unwrap()).unwrap();
    assert_eq!(response["verification"], "verified", "{response}");
    assert_eq!(response["status"], "ok", "{response}");
    assert_eq!(response["verified"], true, "{response}");
    assert_eq!(response["id"], "demo-1");

    let mut child = guard.0.take().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "demo exit status {status:?}");
}
