//! Talks to a running bridge through its MQTT request API (`<base>/bridge/request/<action>` →
//! `<base>/bridge/response/<action>`), so the CLI's `jobs list|run|pause|resume|update` act on
//! the one process that owns the batteries. Speaks `[mqtt] protocol` (3.1.1 or 5) through the
//! `mqtt::client` adapter, with the same credentials and TLS as the bridge. Touches only the
//! broker named in `[mqtt]`.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::mqtt::{ClientEvent, ClientOptions, MqttClient, MqttSettings, Topics};

/// Why a remote request failed in a way the user must fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Sends `request` to `action` and returns the response's `data`; an error response becomes
/// [`Refused`] with the bridge's reason.
pub async fn request(
    settings: &MqttSettings,
    action: &str,
    mut request: Value,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let topics = Topics::new(&settings.base_topic, &settings.discovery_prefix);
    let transaction = format!("cli-{}-{}", std::process::id(), rand::random::<u32>());
    if let Value::Object(m) = &mut request {
        m.insert("transaction".into(), json!(transaction));
    }
    let mut opts = ClientOptions::from_settings(settings).context("[mqtt]")?;
    opts.client_id = format!("marstek-bridge-cli-{}", std::process::id());
    opts.keep_alive = Duration::from_secs(10);
    let (client, mut events) = MqttClient::new(&opts, 16).context("[mqtt]")?;
    let response_topic = topics.bridge_response(action);
    client.subscribe(response_topic.clone(), 1).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut sent = false;
    loop {
        let event = tokio::time::timeout_at(deadline, events.poll())
            .await
            .map_err(|_| anyhow!("no answer from the bridge on {response_topic} within {timeout:?}: is `marstek-bridge run` running with the same [mqtt] settings?"))?
            .with_context(|| {
                format!(
                    "MQTT {} broker {}:{}",
                    settings.protocol, settings.host, settings.port
                )
            })?;
        match event {
            ClientEvent::Subscribed if !sent => {
                client
                    .publish(topics.bridge_request(action), 1, false, request.to_string())
                    .await?;
                sent = true;
            }
            ClientEvent::Publish(p) if p.topic == response_topic => {
                let v: Value =
                    serde_json::from_slice(&p.payload).context("bridge response is not JSON")?;
                if v.get("transaction") != Some(&json!(transaction)) {
                    continue;
                }
                let _ = client.disconnect().await;
                return match v.get("status").and_then(Value::as_str) {
                    Some("ok") => Ok(v.get("data").cloned().unwrap_or(Value::Null)),
                    _ => bail!(Refused(
                        v.get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("error without a reason")
                            .to_string()
                    )),
                };
            }
            _ => {}
        }
    }
}

/// Renders `jobs/list` data as a table (local times).
pub fn jobs_table(data: &Value) -> String {
    let mut out = format!(
        "{:<28} {:<22} {:<8} {:<27} {}\n",
        "JOB", "TRIGGER", "STATE", "NEXT RUN (local)", "LAST"
    );
    for j in data.as_array().into_iter().flatten() {
        let s = |k: &str| j.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let state = if j.get("paused") == Some(&json!(true)) {
            "paused"
        } else if j.get("running") == Some(&json!(true)) {
            "running"
        } else {
            "active"
        };
        out.push_str(&format!(
            "{:<28} {:<22} {:<8} {:<27} {}\n",
            s("id"),
            s("trigger"),
            state,
            s("next_run_local"),
            s("last_status")
        ));
    }
    out
}
