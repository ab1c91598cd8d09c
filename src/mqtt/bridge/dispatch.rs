//! The dispatcher task: classifies every incoming publish (HA birth, our retained discovery
//! list, commands, bridge requests) and handles commands and requests in tasks of their own
//! (at most 32 at once), answering on the documented response topic and, for MQTT 5, on the
//! requester's Response Topic. Commands go through `control::CommandService`; their records go
//! to the recorder task. Owns its concurrency limit and its task tracker.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use super::discovery_pass::DiscoveryEvent;
use super::outbox::ReplyTo;
use super::{MAX_CORRELATION_DATA, Shared};
use crate::control::Bookkeeping;
use crate::domain::{Command, CommandSource, DeviceId, ModeConfig};
use crate::mqtt::client::IncomingPublish;
use crate::mqtt::commands::{self, Action, CommandResponse, Parsed, Refusal, intent_for};
use crate::mqtt::discovery::PublishedConfigs;
use crate::mqtt::requests::RequestRouter;
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
        let kind = shared.topics.classify(&p.topic);
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
                if p.retain {
                    if !p.payload.is_empty() {
                        tracing::warn!(topic = %p.topic, "retained_command_cleared");
                        shared.push_event(p.topic.clone(), Vec::new(), true);
                    }
                    return true;
                }
                if p.payload.is_empty() {
                    // An empty payload is a retained-message deletion (ours or someone's).
                    return true;
                }
                let reply = reply_to(shared, &p);
                let Ok(permit) = self.limit.clone().acquire_owned().await else {
                    return false;
                };
                let s = shared.clone();
                let r = self.router.clone();
                self.tasks.spawn(async move {
                    handle(&s, &r, kind, &p.payload, reply.as_ref()).await;
                    drop(permit);
                });
            }
            Incoming::Other => {}
        }
        true
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

/// Handles one command or bridge request and answers it.
async fn handle(
    s: &Shared,
    router: &RequestRouter,
    kind: Incoming,
    payload: &[u8],
    reply: Option<&ReplyTo>,
) {
    let max = s.settings.max_payload;
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
            handle_command(s, &dev, parsed, payload, reply).await;
        }
        Incoming::SetField(dev, field) => {
            let parsed = commands::parse_field(&field, payload, max);
            handle_command(s, &dev, parsed, payload, reply).await;
        }
        _ => {}
    }
}

/// Answers a parsed command message: refusal, unknown device, remembered value or the merged
/// result of its commands; then queues their records.
async fn handle_command(
    s: &Shared,
    dev_level: &str,
    parsed: Result<Parsed, Refusal>,
    raw: &[u8],
    reply: Option<&ReplyTo>,
) {
    let parsed = match parsed {
        Ok(p) => p,
        Err(r) => {
            tracing::info!(device = dev_level, error = %r.error, "command_refused");
            s.respond(dev_level, &CommandResponse::error(r.id, r.error), reply);
            return;
        }
    };
    let id = parsed.id.clone();
    let Some(dev) = DeviceId::parse(dev_level)
        .ok()
        .filter(|d| s.commands.fleet().get(d).is_some())
    else {
        s.respond(
            dev_level,
            &CommandResponse::error(id, format!("unknown device '{dev_level}'")),
            reply,
        );
        return;
    };
    let commands = match commands_for(s, &dev, parsed.action) {
        Ok(commands) => commands,
        Err(remembered) => {
            let resp = CommandResponse::ok(id, remembered, false);
            return s.respond(dev_level, &resp, reply);
        }
    };
    let audit: Value = serde_json::from_slice(raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()));
    let (resp, bookkeeping) = apply_all(s, &dev, &commands, audit, id).await;
    s.respond(dev_level, &resp, reply);
    // The answer does not wait on the database; the records follow it, in order.
    for book in bookkeeping {
        if s.records.send(book).await.is_err() {
            tracing::warn!(device = %dev, "command_not_recorded_shutting_down");
        }
    }
}

/// The commands an action submits, or (`Err`) the value it only remembered.
fn commands_for(s: &Shared, dev: &DeviceId, action: Action) -> Result<Vec<Command>, Value> {
    match action {
        Action::Submit(c) => Ok(c),
        Action::ApplyPassive => {
            let c = s.controls().get(dev);
            Ok(vec![Command::SetMode(ModeConfig::Passive {
                power: crate::domain::Watts(c.passive_power),
                cd_time: c.passive_duration,
            })])
        }
        Action::RememberPassivePower(p) => {
            s.publish_controls(dev, |c| c.passive_power = p);
            Err(json!({ "passive_power": p }))
        }
        Action::RememberPassiveDuration(d) => {
            s.publish_controls(dev, |c| c.passive_duration = d);
            Err(json!({ "passive_duration": d }))
        }
    }
}

/// Applies `commands` in order through the command service and merges the results into one
/// answer (one report per command when there are several), with their records.
async fn apply_all(
    s: &Shared,
    dev: &DeviceId,
    commands: &[Command],
    audit: Value,
    id: Option<Value>,
) -> (CommandResponse, Vec<Bookkeeping>) {
    let mut reports = Vec::new();
    let mut first_error: Option<String> = None;
    let mut all_verified = true;
    let many = commands.len() > 1;
    let mut bookkeeping = Vec::with_capacity(commands.len());
    for (i, cmd) in commands.iter().enumerate() {
        let intent = intent_for(dev, cmd, Utc::now());
        let (result, book) = s
            .commands
            .apply(
                dev.as_str(),
                cmd,
                CommandSource::Mqtt,
                audit.clone(),
                intent,
            )
            .await;
        bookkeeping.push(book);
        match result {
            Ok(r) => {
                all_verified &= r.verified;
                remember(s, dev, cmd);
                reports
                    .push(json!({ "status": "ok", "applied": r.applied, "verified": r.verified }));
            }
            Err(e) => {
                all_verified = false;
                let msg = if many {
                    format!("slots[{i}]: {e}")
                } else {
                    e.to_string()
                };
                first_error.get_or_insert(msg.clone());
                reports.push(json!({ "status": "error", "error": msg }));
            }
        }
    }
    let resp = match (first_error, many) {
        (None, false) => {
            let applied = reports
                .pop()
                .and_then(|mut r| r.get_mut("applied").map(Value::take))
                .unwrap_or(Value::Null);
            CommandResponse::ok(id, applied, all_verified)
        }
        (None, true) => CommandResponse::ok(id, Value::Array(reports), all_verified),
        (Some(e), _) => {
            let mut r = CommandResponse::error(id, e);
            if many {
                r.applied = Some(Value::Array(reports));
            }
            r
        }
    };
    (resp, bookkeeping)
}

/// Remembers the control values a successful command set.
fn remember(s: &Shared, dev: &DeviceId, cmd: &Command) {
    match cmd {
        Command::SetMode(ModeConfig::Passive { power, cd_time }) => {
            let (p, d) = (power.0, *cd_time);
            s.publish_controls(dev, |c| {
                c.passive_power = p;
                c.passive_duration = d;
            })
        }
        Command::SetDod { value } => {
            let v = value.0;
            s.publish_controls(dev, |c| c.dod = Some(v))
        }
        Command::SetLed { on } => {
            let v = *on;
            s.publish_controls(dev, |c| c.led = Some(v))
        }
        Command::SetBleAdv { on } => {
            let v = *on;
            s.publish_controls(dev, |c| c.ble_adv = Some(v))
        }
        Command::SetMode(_) => {}
    }
}
