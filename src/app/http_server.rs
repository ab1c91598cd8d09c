//! The HTTP subsystem, when `http.listen` is set: binds the listener, feeds the live view and
//! serves health, metrics, the REST API and the status page (a core task).

use std::net::SocketAddr;

use anyhow::Context;

use super::Deps;
use super::health::{BridgeInfo, HealthSource, to_json};
use super::tasks::{StartupError, Tasks};
use crate::http;
use crate::scheduler::SchedulerHandle;

/// What the HTTP side reads besides the core.
pub struct HttpDeps<'a> {
    /// The scheduler's handle.
    pub jobs: &'a SchedulerHandle,
    /// The live feed (alerts come from the fan-out).
    pub live: &'a http::Live,
    /// Health, for `/readyz`.
    pub health: &'a HealthSource,
}

/// Starts the HTTP server; the address it listens on, or None when `http.listen` is unset.
pub async fn spawn(
    deps: &Deps<'_>,
    http_deps: HttpDeps<'_>,
    tasks: &Tasks,
) -> anyhow::Result<Option<SocketAddr>> {
    let (settings, core) = (deps.settings, deps.core);
    let Some(addr) = &settings.http.listen else {
        return Ok(None);
    };
    let bearer = settings
        .http
        .resolve_token()
        .map_err(|e| StartupError(format!("http.token_file: cannot read it ({e})")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartupError(format!("http.listen: cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let token = tasks.token().clone();
    tasks.spawn(http_deps.live.clone().run_feeds(
        core.samples.subscribe(),
        Some(http_deps.jobs.subscribe()),
        deps.tempo.map(|t| t.subscribe()),
        deps.tempo.map(|t| t.live().subscribe()),
        token.clone(),
    ));
    let live = http_deps.live;
    let dry_run = core.commands.dry_run().subscribe();
    tasks.spawn(live.clone().follow("dry_run", dry_run, token.clone()));
    let holds = core.commands.maintenance().subscribe();
    tasks.spawn(live.clone().follow("maintenance", holds, token.clone()));
    let info = BridgeInfo {
        tempo: Some(deps.tempo.is_some()),
        token_configured: Some(bearer.is_some()),
        ..BridgeInfo::new(settings, core)
    };
    let server = http::Server {
        probe: http_deps.health.probe(),
        metrics: http::metrics_handle(),
        api: http::ApiState {
            commands: core.commands.clone(),
            store: core.store.clone(),
            jobs: Some(http_deps.jobs.clone()),
            tempo: deps.tempo.cloned(),
            live: http_deps.live.clone(),
            bridge: to_json(&info).to_string().into(),
            max_body: settings.http.max_body_bytes,
            cancel: token.clone(),
        },
        access: http::Access::new(bearer),
        cors_origins: settings.http.cors_origins.clone(),
    };
    let max_body = settings.http.max_body_bytes;
    tasks.spawn_core("http", async move {
        http::serve(listener, server, max_body, token)
            .await
            .context("HTTP server")
    });
    Ok(Some(local))
}
