//! The connection task: the only driver of rumqttc's `EventLoop`. It forwards incoming
//! publishes to the dispatcher's channel (never awaiting slow work), tracks the session
//! (`connected` watch, session counter read by the publisher), reconnects with exponential
//! backoff capped at `reconnect_max` (each failure is logged with the delay before the next
//! attempt, `retry_in_ms`), and at shutdown publishes the retained `offline` and disconnects. Owns its backoff
//! and outage-reporting state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Shared;
use crate::mqtt::client::{ClientError, ClientEvent, IncomingPublish, MqttClient, MqttEventLoop};

/// Drives the connection until cancelled; see the module doc.
pub(super) async fn run_eventloop(
    shared: Arc<Shared>,
    client: MqttClient,
    mut eventloop: MqttEventLoop,
    in_tx: mpsc::Sender<IncomingPublish>,
) {
    let s = &shared.settings;
    let mut backoff = s.reconnect_min;
    // The first failure of an outage (start-up included) is a warning; repeats are debug.
    let mut outage_reported = false;
    loop {
        let ev = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(ClientEvent::Connected) => {
                backoff = s.reconnect_min;
                outage_reported = false;
                shared.session.fetch_add(1, Ordering::SeqCst);
                shared.connected.send_replace(true);
                shared.notify.notify_one();
                tracing::info!(host = %s.host, port = s.port, protocol = %s.protocol, "mqtt_connected");
            }
            Ok(ClientEvent::Publish(p)) => {
                if in_tx.try_send(p).is_err() {
                    let n = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(dropped = n, "mqtt_incoming_dropped");
                }
            }
            Ok(_) => {}
            Err(e) => {
                let was_connected = shared.connected.send_replace(false);
                let retry_in_ms = backoff.as_millis() as u64;
                report_error(
                    &shared,
                    &e,
                    was_connected,
                    retry_in_ms,
                    &mut outage_reported,
                );
                tokio::select! {
                    _ = shared.cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(s.reconnect_max);
            }
        }
    }
    // Shutdown: say goodbye while we still drive the connection.
    if *shared.connected.borrow() {
        say_goodbye(&shared, &client, &mut eventloop).await;
    }
    shared.connected.send_replace(false);
    tracing::info!("mqtt_stopped");
}

/// Logs a connection error once per outage at warning (error for a refusal), repeats at debug;
/// every line carries the delay before the next attempt (`retry_in_ms`).
fn report_error(
    shared: &Shared,
    e: &ClientError,
    was_connected: bool,
    retry_in_ms: u64,
    outage_reported: &mut bool,
) {
    let s = &shared.settings;
    if let ClientError::TooLarge { bytes, limit } = e {
        // A retained one comes back at every connection: say what to change, every time.
        tracing::error!(error = %e, bytes, limit, retry_in_ms, "mqtt_incoming_too_large");
        *outage_reported = true;
    } else if was_connected {
        tracing::warn!(error = %e, retry_in_ms, "mqtt_disconnected");
        *outage_reported = true;
    } else if matches!(e, ClientError::Refused(_)) {
        // Retrying cannot help until the broker's users or ACLs change: say so loudly,
        // and keep retrying with the longest backoff quietly.
        if !*outage_reported {
            tracing::error!(error = %e, host = %s.host, port = s.port, protocol = %s.protocol, retry_in_ms, "mqtt_connection_refused");
        } else {
            tracing::debug!(error = %e, retry_in_ms, "mqtt_connection_refused");
        }
        *outage_reported = true;
    } else if !*outage_reported {
        tracing::warn!(error = %e, host = %s.host, port = s.port, retry_in_ms, "mqtt_connect_failed");
        *outage_reported = true;
    } else {
        tracing::debug!(error = %e, retry_in_ms, "mqtt_connect_failed");
    }
}

/// Publishes the retained `offline` and disconnects, driving the event loop meanwhile (at most
/// 2 s).
async fn say_goodbye(shared: &Shared, client: &MqttClient, eventloop: &mut MqttEventLoop) {
    let c = client.clone();
    let state = shared.topics.bridge_state();
    let qos = shared.qos;
    let goodbye = async move {
        let _ = c
            .publish(state, qos, true, super::bridge_state_payload(false))
            .await;
        let _ = c.disconnect().await;
        std::future::pending::<()>().await
    };
    tokio::pin!(goodbye);
    let deadline = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = &mut goodbye => {}
            ev = eventloop.poll() => match ev {
                Ok(ClientEvent::Disconnecting) | Err(_) => break,
                _ => {}
            },
        }
    }
}
