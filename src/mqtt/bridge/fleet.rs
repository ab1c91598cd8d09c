//! Commands for the whole fleet: a message on `<base>/fleet/set` or `<base>/fleet/set/<field>`
//! is applied to every battery (concurrently, each through the command service as if sent to
//! its own topic) and answered once on `<base>/fleet/response`: `status` ok when every battery
//! took it, `applied` the answer of each battery by id, `error` the first failure named by its
//! battery. Touches the command service and the recorder queue only.

use serde_json::{Map, Value};

use super::Shared;
use super::dispatch::run_action;
use super::outbox::ReplyTo;
use crate::domain::CommandSource;
use crate::mqtt::commands::{CommandResponse, Parsed};
use crate::mqtt::topics::FLEET;

/// Runs `parsed` (from `source`: MQTT or the central broker) on every battery and answers on
/// the fleet's response topic.
pub(super) async fn handle_fleet(
    s: &Shared,
    (parsed, source): (Parsed, CommandSource),
    reply: Option<&ReplyTo>,
) {
    let id = parsed.id.clone();
    let ids = s.commands.fleet().ids();
    let runs = ids.iter().map(|dev| {
        let parsed = parsed.clone();
        async move { (dev, run_action(s, dev, parsed, source).await) }
    });
    let done = futures::future::join_all(runs).await;
    let mut each = Map::new();
    let mut first_error = None;
    let mut verified = !done.is_empty();
    let mut books = Vec::new();
    for (dev, ran) in done {
        let (resp, b) = (ran.resp, ran.books);
        if let (None, Some(e)) = (&first_error, &resp.error) {
            first_error = Some(format!("{dev}: {e}"));
        }
        verified &= resp.verified;
        each.insert(
            dev.to_string(),
            serde_json::to_value(&resp).unwrap_or(Value::Null),
        );
        books.extend(b);
    }
    let resp = match first_error {
        _ if ids.is_empty() => CommandResponse::error(id, "no battery is configured"),
        Some(e) => CommandResponse {
            applied: Some(Value::Object(each)),
            ..CommandResponse::error(id, e)
        },
        None => CommandResponse::ok(id, Value::Object(each), verified),
    };
    s.respond(FLEET, &resp, reply);
    for b in books {
        if s.records.send(b).await.is_err() {
            tracing::warn!("fleet_command_not_recorded_shutting_down");
            break;
        }
    }
}
