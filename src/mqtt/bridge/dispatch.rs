//! The dispatcher task: classifies every incoming publish (HA birth, our retained discovery
//! list, commands, bridge requests) and handles commands and requests in tasks of their own
//! (at most 32 at once), answering on the documented response topic and, for MQTT 5, on the
//! requester's Response Topic. Commands go through `control::CommandService`; their records go
//! to the recorder task. A retained command is never executed when it can be recognised (its
//! retain flag: the replay at subscription, and with MQTT 5 every delivery, thanks to Retain As
//! Published): it is cleared and answered with an error. MQTT 3.1.1 hides the flag on a live
//! delivery, so there every command topic is cleared as its command arrives. Owns its
//! concurrency limit and its task tracker.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use super::discovery_pass::DiscoveryEvent;
use super::outbox::ReplyTo;
use super::refusals;
use super::{MAX_CORRELATION_DATA, Shared, Tap};
use crate::control::{
    Bookkeeping, CommandError, CommandService, Origin, Pending, Remember, Verdict,
};
use crate::domain::{Command, CommandSource, DeviceId, DeviceLimits, ModeConfig, Watts};
use crate::mqtt::client::IncomingPublish;
use crate::mqtt::commands::{self, Action, CommandResponse, Parsed, Refusal};
use crate::mqtt::discovery::PublishedConfigs;
use crate::mqtt::planner::{PLANNER_SECONDS, PlannerMode};
use crate::mqtt::requests::RequestRouter;
use crate::mqtt::settings::MqttProtocol;
use crate::mqtt::topics::Incoming;

/// The copy-to address of an MQTT 5 request, when it gave a valid one (a bad one is logged
/// and ignored: the documented response topic still gets the answer).
fn reply_to(shared: &Shared, p: &IncomingPublish) -> Option<ReplyTo> {
    let topic = p.response_topic.as_ref()?;
    if let Err(why) = shared.topics.check_response_topic(topic) {
        tracing::warn!(topic = %p.topic, response_topic = %topic.escape_debug(), reason = %why, "response_topic_ignored");
        return None;
    }
    if let Some(data) = &p.correlation_data
        && data.len() > MAX_CORRELATION_DATA
    {
        tracing::warn!(topic = %p.topic, bytes = data.len(), max = MAX_CORRELATION_DATA, "response_topic_ignored: correlation data too long");
        return None;
    }
    Some(ReplyTo {
        topic: topic.clone(),
        correlation: p.correlation_data.clone(),
    })
}

/// Dispatches incoming publishes until cancelled, then waits (at most 5 s) for the handlers
/// still running.
pub(super) async fn run_dispatcher(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<IncomingPublish>,
    router: Arc<RequestRouter>,
) {
    let d = Dispatcher {
        shared,
        router,
        limit: Arc::new(Semaphore::new(32)),
        tasks: TaskTracker::new(),
    };
    loop {
        let p = tokio::select! {
            _ = d.shared.cancel.cancelled() => break,
            p = rx.recv() => match p { Some(p) => p, None => break },
        };
        if !d.dispatch(p).await {
            break;
        }
    }
    d.tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), d.tasks.wait()).await;
}

/// The dispatcher's own state.
struct Dispatcher {
    shared: Arc<Shared>,
    router: Arc<RequestRouter>,
    /// Handlers running at once.
    limit: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl Dispatcher {
    /// Handles one incoming publish; false when shutting down.
    async fn dispatch(&self, p: IncomingPublish) -> bool {
        let shared = &self.shared;
        if let Some(tap) = shared.taps.iter().find(|t| t.topic == p.topic) {
            forward(shared, tap, &p);
            return true;
        }
        let (kind, central) = shared.topics.classify_origin(&p.topic);
        match kind {
            Incoming::HaStatus => {
                if p.payload.as_ref() == b"online" {
                    self.tasks.spawn(republish_after_birth(shared.clone()));
                }
            }
            Incoming::DiscoveryList => {
                let list = PublishedConfigs::parse(&p.payload, shared.topics.prefix());
                shared.discovery(DiscoveryEvent::KnownList(list));
            }
            Incoming::DiscoverySync => shared.discovery(DiscoveryEvent::Synced),
            Incoming::Set(_) | Incoming::SetField(..) | Incoming::Request(_) => {
                if p.payload.is_empty() {
                    // An empty payload is a retained-message deletion (ours or someone's).
                    return true;
                }
                if p.retain {
                    tracing::warn!(topic = %p.topic, "retained_command_cleared");
                    shared.push_event(p.topic.clone(), Vec::new(), true);
                    refuse_retained(shared, &kind, &p);
                    return true;
                }
                if shared.settings.protocol == MqttProtocol::V311 {
                    // MQTT 3.1.1 delivers a retained publish to a connected subscriber with the
                    // retain flag cleared: it cannot be told from a plain one, so it runs once,
                    // and any retained copy of it is cleared now so it never runs again.
                    shared.push_event(p.topic.clone(), Vec::new(), true);
                }
                let reply = reply_to(shared, &p);
                let Ok(permit) = self.limit.clone().acquire_owned().await else {
                    return false;
                };
                let s = shared.clone();
                let r = self.router.clone();
                self.tasks.spawn(async move {
                    handle(&s, &r, (kind, central), &p.payload, reply.as_ref()).await;
                    drop(permit);
                });
            }
            Incoming::Other => {}
        }
        true
    }
}

/// Forwards a tapped payload; a retained one (a replay of an old value) is skipped, and one the
/// reader cannot take now is dropped and counted.
fn forward(shared: &Shared, tap: &Tap, p: &IncomingPublish) {
    if p.retain {
        tracing::debug!(topic = %p.topic, "tapped_retained_payload_skipped");
        return;
    }
    if tap.tx.try_send(p.payload.to_vec()).is_err() {
        shared.count_drop(true);
    }
}

/// Why a retained command or request is not executed (answered like any refusal).
pub(super) const RETAINED_REFUSED: &str = "retained command not executed: publish commands without the retain flag (the retained copy was cleared)";

/// Answers a retained command or request with an error: it was not executed. The `id` (or a
/// request's `transaction`) is echoed when the payload is a JSON object that has one.
fn refuse_retained(shared: &Shared, kind: &Incoming, p: &IncomingPublish) {
    let field = |name: &str| {
        (p.payload.len() <= shared.settings.max_payload)
            .then(|| serde_json::from_slice::<Value>(&p.payload).ok())
            .flatten()
            .and_then(|v| v.get(name).cloned())
    };
    let reply = reply_to(shared, p);
    match kind {
        Incoming::Set(dev) | Incoming::SetField(dev, _) => {
            refusals::record_refusal(shared, dev, &p.payload, RETAINED_REFUSED);
            let resp = CommandResponse::error(field("id"), RETAINED_REFUSED);
            shared.respond(dev, &resp, reply.as_ref());
        }
        Incoming::Request(action) => {
            let resp = crate::mqtt::requests::response(
                Err(RETAINED_REFUSED.to_string()),
                field("transaction"),
            );
            let payload = serde_json::to_vec(&resp).unwrap_or_default();
            shared.answer(
                shared.topics.bridge_response(action),
                payload,
                reply.as_ref(),
            );
        }
        _ => {}
    }
}

/// After Home Assistant's birth message, waits a random delay (up to `birth_delay_max`, so a
/// fleet of bridges does not answer at once) and republishes everything.
async fn republish_after_birth(s: Arc<Shared>) {
    let max = s.settings.birth_delay_max.as_millis() as u64;
    let delay = rand::rng().random_range(0..=max);
    tokio::select! {
        _ = s.cancel.cancelled() => return,
        _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
    }
    tracing::info!("ha_birth_republish");
    s.republish_all();
}

/// Handles one command or bridge request (`central`: from the central broker) and answers it.
async fn handle(
    s: &Arc<Shared>,
    router: &RequestRouter,
    (kind, central): (Incoming, bool),
    payload: &[u8],
    reply: Option<&ReplyTo>,
) {
    let max = s.settings.max_payload;
    let source = if central {
        CommandSource::Central
    } else {
        CommandSource::Mqtt
    };
    match kind {
        Incoming::Request(action) => {
            let text = commands::decode_text(payload, max);
            let resp = router.handle(&action, text).await;
            s.answer(
                s.topics.bridge_response(&action),
                serde_json::to_vec(&resp).unwrap_or_default(),
                reply,
            );
        }
        Incoming::Set(dev) => {
            let parsed = commands::parse_set(payload, max);
            handle_command(s, (&dev, source), parsed, payload, reply).await;
        }
        Incoming::SetField(dev, field) => {
            let parsed = commands::parse_field(&field, payload, max);
            handle_command(s, (&dev, source), parsed, payload, reply).await;
        }
        _ => {}
    }
}

/// Answers a parsed command message: parse, apply through the command service, format; the
/// records follow the answer (refusals before the envelope are recorded too, within limits).
/// When the effect of a mode write is still being verified, the answer says `"verification":
/// "pending"` and the verdict follows on the same topics with the same id.
/// The device level `fleet` applies the message to every battery (see `fleet`).
async fn handle_command(
    s: &Arc<Shared>,
    (dev_level, source): (&str, CommandSource),
    parsed: Result<Parsed, Refusal>,
    payload: &[u8],
    reply: Option<&ReplyTo>,
) {
    let parsed = match parsed {
        Ok(p) => p,
        Err(r) => {
            tracing::info!(device = %dev_level.escape_debug(), error = %r.error.escape_debug(), "command_refused");
            refusals::record_refusal(s, dev_level, payload, &r.error);
            return s.respond(dev_level, &CommandResponse::error(r.id, r.error), reply);
        }
    };
    let battery_named =
        |d: &str| DeviceId::parse(d).is_ok_and(|d| s.commands.fleet().get(&d).is_some());
    if dev_level == crate::mqtt::topics::FLEET && !battery_named(dev_level) {
        return super::fleet::handle_fleet(s, parsed, source, reply).await;
    }
    let id = parsed.id.clone();
    let Ok(dev) = DeviceId::parse(dev_level) else {
        let error = CommandError::UnknownDevice(dev_level.to_string()).to_string();
        refusals::record_refusal(s, dev_level, payload, &error);
        return s.respond(dev_level, &CommandResponse::error(id, error), reply);
    };
    let Ran {
        resp,
        books,
        unknown,
        pending,
    } = run_action(s, &dev, parsed, source).await;
    if unknown {
        // The service records nothing for a device it does not know.
        let error = resp.error.clone().unwrap_or_default();
        refusals::record_refusal(s, dev_level, payload, &error);
    }
    s.respond(dev_level, &resp, reply);
    if let Some(pending) = pending {
        tokio::spawn(publish_verdict(
            s.clone(),
            dev.clone(),
            resp.id.clone(),
            pending,
            reply.cloned(),
        ));
    }
    // The answer does not wait on the database; the records follow it, in order.
    if let Some(books) = books
        && s.records.send(books).await.is_err()
    {
        tracing::warn!(device = %dev, "command_not_recorded_shutting_down");
    }
}

/// Publishes the verdict of a background verification as a second answer (nothing when the
/// bridge stops first).
async fn publish_verdict(
    s: Arc<Shared>,
    dev: DeviceId,
    id: Option<Value>,
    pending: Pending,
    reply: Option<ReplyTo>,
) {
    let verdict = tokio::select! {
        _ = s.cancel.cancelled() => return,
        v = pending.verdict() => v,
    };
    if verdict == Verdict::Stopped {
        return;
    }
    let resp = CommandResponse::from_verdict(id, &verdict);
    s.respond(dev.as_str(), &resp, reply.as_ref());
}

/// What one parsed action on a battery gave: its answer, its records (none for a remembered
/// value), whether the device is unknown, and the verification still running, if any.
pub(super) struct Ran {
    pub resp: CommandResponse,
    pub books: Option<Bookkeeping>,
    pub unknown: bool,
    pub pending: Option<Pending>,
}

impl Ran {
    fn answer(resp: CommandResponse, books: Option<Bookkeeping>, unknown: bool) -> Self {
        Self {
            resp,
            books,
            unknown,
            pending: None,
        }
    }
}

/// Runs one parsed action on `dev`, sent by `source` (MQTT, or the central broker).
pub(super) async fn run_action(
    s: &Shared,
    dev: &DeviceId,
    parsed: Parsed,
    source: CommandSource,
) -> Ran {
    let (id, service) = (parsed.id, &s.commands);
    let origin = Origin::new(source, parsed.received);
    let commands = match parsed.action {
        Action::Submit(commands) => commands,
        Action::ApplyPassive => vec![service.controls().get(dev).passive()],
        Action::RememberPassivePower(p) => {
            let resp = remember(service, dev, id, Remember::PassivePower(p));
            return Ran::answer(resp, None, false);
        }
        Action::RememberPassiveDuration(d) => {
            let resp = remember(service, dev, id, Remember::PassiveDuration(d));
            return Ran::answer(resp, None, false);
        }
        Action::Planner(mode) => match planner_commands(service, dev, mode) {
            Some(commands) => commands,
            None => return regulate(service, dev, id, &origin),
        },
        Action::Regulate => return regulate(service, dev, id, &origin),
        Action::Maintenance(on) => {
            let resp = match service
                .set_maintenance(Some(dev), on, source.as_str())
                .await
            {
                Ok(_) => CommandResponse::ok(id, json!({ "maintenance": on }), false),
                Err(e) => CommandResponse::error(id, e.to_string()),
            };
            let unknown = !service.fleet().ids().contains(dev);
            return Ran::answer(resp, None, unknown);
        }
    };
    let (outcome, books) = service.apply(dev, &commands, origin).await;
    let unknown = matches!(
        outcome.results.as_slice(),
        [Err(CommandError::UnknownDevice(_))]
    );
    let pending = outcome.pending.clone().filter(|_| outcome.is_ok());
    Ran {
        resp: CommandResponse::from_outcome(id, outcome),
        books: Some(books),
        unknown,
        pending,
    }
}

/// The commands a planner's mode stands for on `dev`; None = `regulate` (normal, with the
/// regulator running). Powers default to the battery's limits (an unknown device gets 0 W and
/// is refused by the service).
fn planner_commands(
    service: &CommandService,
    dev: &DeviceId,
    mode: PlannerMode,
) -> Option<Vec<Command>> {
    let limits = service.fleet().get(dev).map(|b| b.limits());
    let max = |f: fn(&DeviceLimits) -> u32| limits.as_ref().map_or(0, f);
    let passive = |w: i64| {
        Command::SetMode(ModeConfig::Passive {
            power: Watts(w.clamp(-100_000, 100_000) as i32),
            cd_time: PLANNER_SECONDS,
        })
    };
    Some(vec![match mode {
        PlannerMode::Normal if service.regulated().enabled() => return None,
        PlannerMode::Normal => Command::SetMode(ModeConfig::Auto),
        PlannerMode::Hold => passive(0),
        PlannerMode::Charge(Some(w)) => passive(-i64::from(w)),
        PlannerMode::Charge(None) => {
            let remembered = service.controls().get(dev).passive_power;
            if remembered < 0 {
                passive(i64::from(remembered))
            } else {
                passive(-i64::from(max(|l| l.max_charge_w)))
            }
        }
        PlannerMode::Discharge(w) => {
            passive(i64::from(w.unwrap_or_else(|| max(|l| l.max_discharge_w))))
        }
    }])
}

/// Puts `dev` in `regulate` mode and answers.
fn regulate(service: &CommandService, dev: &DeviceId, id: Option<Value>, origin: &Origin) -> Ran {
    let (result, books) = service.regulate(dev, origin);
    let unknown = matches!(result, Err(CommandError::UnknownDevice(_)));
    let resp = match result {
        Ok(applied) => CommandResponse::ok(id, applied, true),
        Err(e) => CommandResponse::error(id, e.to_string()),
    };
    Ran::answer(resp, Some(books), unknown)
}

/// Remembers a value without sending it; the answer names what was remembered.
fn remember(
    service: &CommandService,
    dev: &DeviceId,
    id: Option<Value>,
    value: Remember,
) -> CommandResponse {
    let remembered = match value {
        Remember::PassivePower(p) => json!({ "passive_power": p }),
        Remember::PassiveDuration(d) => json!({ "passive_duration": d }),
    };
    match service.remember(dev, value) {
        Ok(_) => CommandResponse::ok(id, remembered, false),
        Err(e) => CommandResponse::error(id, e.to_string()),
    }
}
