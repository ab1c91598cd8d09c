//! Optional HTTP endpoints for supervisors and Prometheus: `/healthz` (process alive), `/readyz`
//! (broker connected, database reachable, every battery polled recently; JSON detail, 503 when
//! not ready) and `/metrics` (Prometheus text). Reads state through a probe closure given by the
//! app; touches nothing else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// `[http]` settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to serve on, e.g. `127.0.0.1:9480`; unset = no HTTP server.
    pub listen: Option<String>,
}

impl HttpSettings {
    /// Problems with these settings as (key, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        match &self.listen {
            Some(l) if l.parse::<SocketAddr>().is_err() => vec![(
                "listen".into(),
                format!("'{l}' is not an address:port such as 127.0.0.1:9480"),
            )],
            _ => Vec::new(),
        }
    }
}

/// The readiness verdict with its detail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Readiness {
    /// True when every check passes.
    pub ready: bool,
    /// Broker connection is up.
    pub broker: bool,
    /// Database answered recently.
    pub database: bool,
    /// Per-device detail (id → polled recently, last seen).
    pub devices: serde_json::Value,
}

/// Computes readiness on demand.
pub type ReadyProbe = Arc<dyn Fn() -> BoxFuture<'static, Readiness> + Send + Sync>;

#[derive(Clone)]
struct AppState {
    probe: ReadyProbe,
    metrics: PrometheusHandle,
}

/// Installs the global metrics recorder once and returns its handle (a second call reuses it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .expect("static non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("metrics_recorder_already_installed");
            }
            handle
        })
        .clone()
}

/// Serves the endpoints on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    probe: ReadyProbe,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { probe, metrics });
    tracing::info!(addr = %listener.local_addr()?, "http_listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let r = (state.probe)().await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(r))
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
