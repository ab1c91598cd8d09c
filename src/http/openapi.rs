//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' `#[utoipa::path]`
//! attributes and the response types (no hand-written spec), served at `/api/v1/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::history::HistoryPoint;
use super::{api, dry_run_api, maintenance_api, next_actions, tempo_api};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "marstek-bridge",
        description = "REST API of marstek-bridge: batteries, commands (the JSON of <dev>/set), jobs, \
            Tempo, the plan, the € ledger, the dry-run switch, alerts, the command audit and live events. Reads from loopback need no token; \
            writes and any access from beyond loopback need Authorization: Bearer <http.token>. \
            Errors: {\"error\": {\"code\", \"message\"}}."
    ),
    paths(
        api::list_batteries, api::get_battery, api::latest_sample, api::history,
        api::post_command, api::audit,
        api::list_jobs, api::run_job, api::pause_job, api::resume_job, api::update_trigger,
        api::preview, next_actions::next_actions,
        tempo_api::get_tempo, tempo_api::refresh_tempo, tempo_api::get_plan, tempo_api::ledger,
        dry_run_api::get_dry_run, dry_run_api::put_dry_run,
        maintenance_api::get_maintenance, maintenance_api::put_maintenance,
        api::alerts, api::bridge,
        super::events, super::openapi_json,
    ),
    components(schemas(ErrorBody, ErrorDetail, HistoryPoint, api::BatteryView, api::HistoryView,
        api::CommandResult, api::TriggerBody, tempo_api::RefreshBody, tempo_api::LedgerView,
        api::AlertsView, dry_run_api::DryRunView, dry_run_api::DryRunBody,
        maintenance_api::MaintenanceBody, crate::control::MaintenanceState, crate::control::Hold,
        next_actions::NextAction, next_actions::NextActionsView)),
    modifiers(&Bearer),
    tags((name = "batteries"), (name = "commands"), (name = "jobs"), (name = "tempo"),
        (name = "alerts"), (name = "bridge"))
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
