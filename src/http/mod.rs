//! The HTTP server: `/healthz` (process alive), `/readyz` (broker, database, batteries; 503 when
//! not ready), `/metrics` (Prometheus text), the REST API under `/api/v1` with its OpenAPI
//! document and server-sent events, and the status page at `/` (every asset embedded). Access
//! rules in `auth`, the one error shape in `error`. Reads and acts only through the services the
//! app hands over (`ApiState`: command service, store, scheduler, Tempo, live view).

mod api;
mod auth;
mod commands;
mod dry_run_api;
mod error;
mod history;
mod live;
mod maintenance_api;
mod next_actions;
mod openapi;
mod page;
mod settings;
mod tempo_api;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json};
use axum::routing::{MethodRouter, get, post, put};
use futures::Stream;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use api::ApiState;
pub use auth::Access;
pub use error::{ApiError, ErrorBody};
pub use live::{Live, LiveEvent};
pub use openapi::{ApiDoc, document as openapi_document};
pub use page::PAGE_BYTES;
pub use settings::{DEFAULT_MAX_BODY_BYTES, HttpSettings};

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

/// Everything the server needs.
pub struct Server {
    /// Readiness for `/readyz`.
    pub probe: ReadyProbe,
    /// Metrics for `/metrics`.
    pub metrics: PrometheusHandle,
    /// The API's services.
    pub api: ApiState,
    /// The configured token.
    pub access: Access,
    /// Origins allowed by CORS (empty = off).
    pub cors_origins: Vec<String>,
}

#[derive(Clone)]
struct Probes {
    probe: ReadyProbe,
    metrics: PrometheusHandle,
}

/// Installs the global metrics recorder once and returns its handle (a second call reuses it);
/// every series carries the constant label `site` ([`crate::sites::process_site`]).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .expect("static non-empty buckets")
                .add_global_label("site", crate::sites::process_site())
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("metrics_recorder_already_installed");
            }
            handle
        })
        .clone()
}

/// Every route of `/api/v1` with its method; each one has an operation in the OpenAPI document
/// (a test compares both).
fn api_routes() -> Vec<(Method, &'static str, MethodRouter<ApiState>)> {
    vec![
        (Method::GET, "/api/v1/batteries", get(api::list_batteries)),
        (Method::GET, "/api/v1/batteries/{id}", get(api::get_battery)),
        (
            Method::GET,
            "/api/v1/batteries/{id}/latest",
            get(api::latest_sample),
        ),
        (
            Method::GET,
            "/api/v1/batteries/{id}/history",
            get(api::history),
        ),
        (
            Method::POST,
            "/api/v1/batteries/{id}/commands",
            post(api::post_command),
        ),
        (Method::GET, "/api/v1/commands", get(api::audit)),
        (Method::GET, "/api/v1/jobs", get(api::list_jobs)),
        (Method::GET, "/api/v1/jobs/preview", get(api::preview)),
        (
            Method::GET,
            "/api/v1/next-actions",
            get(next_actions::next_actions),
        ),
        (Method::POST, "/api/v1/jobs/{id}/run", post(api::run_job)),
        (
            Method::POST,
            "/api/v1/jobs/{id}/pause",
            post(api::pause_job),
        ),
        (
            Method::POST,
            "/api/v1/jobs/{id}/resume",
            post(api::resume_job),
        ),
        (
            Method::PUT,
            "/api/v1/jobs/{id}/trigger",
            put(api::update_trigger),
        ),
        (Method::GET, "/api/v1/tempo", get(tempo_api::get_tempo)),
        (
            Method::POST,
            "/api/v1/tempo/refresh",
            post(tempo_api::refresh_tempo),
        ),
        (Method::GET, "/api/v1/plan", get(tempo_api::get_plan)),
        (Method::GET, "/api/v1/ledger", get(tempo_api::ledger)),
        (
            Method::GET,
            "/api/v1/dry-run",
            get(dry_run_api::get_dry_run),
        ),
        (
            Method::PUT,
            "/api/v1/dry-run",
            put(dry_run_api::put_dry_run),
        ),
        (
            Method::GET,
            "/api/v1/maintenance",
            get(maintenance_api::get_maintenance),
        ),
        (
            Method::PUT,
            "/api/v1/maintenance",
            put(maintenance_api::put_maintenance),
        ),
        (Method::GET, "/api/v1/alerts", get(api::alerts)),
        (Method::GET, "/api/v1/bridge", get(api::bridge)),
        (Method::GET, "/api/v1/events", get(events)),
        (Method::GET, "/api/v1/openapi.json", get(openapi_json)),
    ]
}

/// (method, path) of every `/api/v1` route the server answers.
pub fn route_table() -> Vec<(String, String)> {
    api_routes()
        .into_iter()
        .map(|(m, p, _)| (m.as_str().to_ascii_lowercase(), p.to_string()))
        .collect()
}

/// The whole application router.
pub fn router(server: Server, max_body: usize) -> Router {
    let mut api = Router::new();
    for (_, path, route) in api_routes() {
        api = api.route(path, route);
    }
    let api = api
        .fallback(|| async {
            ApiError::not_found("unknown_route", "no such route; see /api/v1/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see /api/v1/openapi.json",
            )
        })
        .with_state(server.api);
    let probes = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(Probes {
            probe: server.probe,
            metrics: server.metrics,
        });
    let guarded =
        Router::new()
            .merge(probes)
            .merge(api)
            .layer(axum::middleware::from_fn_with_state(
                server.access,
                auth::require,
            ));
    let mut app = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .merge(page::routes())
        .merge(guarded)
        .layer(DefaultBodyLimit::max(max_body));
    if !server.cors_origins.is_empty() {
        let origins: Vec<header::HeaderValue> = server
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::PUT])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    app
}

/// Serves everything on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Server,
    max_body: usize,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = router(server, max_body);
    tracing::info!(addr = %listener.local_addr()?, "http_listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { cancel.cancelled().await })
    .await
}

async fn readyz(State(state): State<Probes>) -> impl IntoResponse {
    let r = (state.probe)().await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}

async fn render_metrics(State(state): State<Probes>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "bridge",
    responses((status = 200, body = Object, description = "OpenAPI 3.1 document")))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi_document())
}

/// Live changes as server-sent events: `sample`, `alert`, `schedule`, `tempo`, `plan`,
/// `command`, `dry_run`, `maintenance` (JSON data); `lagged` when this listener fell behind and
/// skipped events.
#[utoipa::path(get, path = "/api/v1/events", tag = "bridge",
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "Server-sent events")))]
pub async fn events(
    State(s): State<ApiState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.live.subscribe();
    let stream = futures::stream::unfold((rx, s.cancel.clone()), |(mut rx, cancel)| async move {
        let event = tokio::select! {
            () = cancel.cancelled() => return None,
            r = rx.recv() => match r {
                Ok(ev) => Event::default().event(ev.kind).data(&*ev.data),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Event::default().event("lagged").data(n.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), (rx, cancel)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_has_an_operation_in_the_document_and_back() {
        let doc = openapi_document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = route_table().into_iter().collect();
        assert_eq!(served, documented, "routes and the OpenAPI document differ");
    }
}
