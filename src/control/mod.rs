//! The control layer: the one path every command takes, whatever its source (MQTT, HTTP,
//! scheduler, reconciler, CLI), and the device state every adapter shares. [`CommandService`]
//! looks the battery up once, applies the safety envelope, executes through the driver, keeps
//! the remembered controls, and records the audit row and the desired state; a driver failure
//! raises `command_failed`. [`RememberedControls`] and [`Presence`] (device availability, one
//! owner) live here too, so that every adapter sees the same values. The envelope includes the
//! SOC window, checked against the battery's latest SOC, and kept while a Passive set-point runs
//! (`soc_guard`). Mode writes are checked by their effect (`verify`): answered once acknowledged
//! and read back, then followed in the background (`verdict`): re-sent with backoff when they do
//! not take, ending in a verdict (`not_holding` with what was observed when they never do, and a
//! `command_not_holding` alert, cleared by the next write that holds) that the caller gets
//! through [`Outcome::pending`]. Each intent a successful command leaves is also kept in memory ([`IntentBoard`]) for the API. A battery under a
//! [`Maintenance`] hold gets no write from any source (`CommandError::Maintenance`). While the
//! bridge's [`DryRun`] switch is on, commands from the scheduler, the reconciler and the
//! regulator are refused before the driver (`CommandError::DryRun`, no audit row). The day
//! plan's SOC floors ([`Floors`]) are part of the envelope: a discharge set-point at or below
//! one is refused, and a battery discharging down to one is stopped (`soc_guard`). What a batch
//! leaves to persist, and which devices have one in flight, is `bookkeeping`. A standby bridge
//! of its site ([`Role`]) refuses every write (`CommandError::Standby`, naming the leader). Touches the fleet
//! (`domain::Battery`), the `Store`, the sample stream and the alert channel; nothing else.

mod bookkeeping;
mod controls;
mod dry_run;
mod floors;
mod gates;
pub mod holding;
mod intents;
mod maintenance;
mod presence;
mod regulated;
mod role;
mod soc_guard;
mod verdict;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use self::bookkeeping::Bookkeeping;
use self::bookkeeping::WritingSet;
pub use self::controls::{
    Controls, DEFAULT_PASSIVE_SECONDS, Remember, RememberedControls, controls_key,
};
pub use self::dry_run::{DRY_RUN_DOC, DryRun, DryRunState};
pub use self::floors::{Floor, Floors};
pub use self::intents::IntentBoard;
pub use self::maintenance::{
    Hold, HoldScope, MAINTENANCE_DOC, Maintenance, MaintenanceError, MaintenanceState,
};
pub use self::presence::{Availability, Presence};
pub use self::regulated::{MEMBERS_KEY, Regulated, leaves_regulation};
pub use self::role::{Role, RoleState};
pub use self::verify::{NotHolding, Observed, Pending, Verdict, VerifySettings};
use crate::domain::{
    AlertSender, BatteryRef, Command, CommandReport, CommandSource, CommandStatus, DesiredState,
    DeviceId, DriverError, ModeConfig, Rejection, check_command, check_soc,
};
use crate::store::{CommandRecord, Store};

/// Every configured battery, looked up by id.
#[derive(Clone, Default)]
pub struct Fleet {
    devices: BTreeMap<DeviceId, BatteryRef>,
}

impl Fleet {
    /// Builds a fleet from batteries (later duplicates replace earlier ones).
    pub fn new(batteries: impl IntoIterator<Item = BatteryRef>) -> Self {
        Self {
            devices: batteries.into_iter().map(|b| (b.id().clone(), b)).collect(),
        }
    }

    /// The battery with this id.
    pub fn get(&self, id: &DeviceId) -> Option<&BatteryRef> {
        self.devices.get(id)
    }

    /// Every battery, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &BatteryRef> {
        self.devices.values()
    }

    /// Every id, ordered.
    pub fn ids(&self) -> Vec<DeviceId> {
        self.devices.keys().cloned().collect()
    }

    /// Number of batteries.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when no battery is configured.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// Why a submitted command did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// No battery with that id.
    #[error("unknown device '{0}'")]
    UnknownDevice(String),
    /// Refused by the safety envelope before reaching the device.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The driver failed (timeout, device error, refusal).
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The battery acknowledged the write but did not carry it out within every window.
    #[error(transparent)]
    NotHolding(Box<NotHolding>),
    /// Dry run is on: a command of the bridge's own loops was computed, not sent.
    #[error("dry run: {0} from {1} not sent")]
    DryRun(&'static str, &'static str),
    /// The battery is under a maintenance hold: nothing is written to it.
    #[error(
        "maintenance: {device} is under the {} maintenance hold, {command} not sent (release the hold to control it again)",
        scope.as_str()
    )]
    Maintenance {
        /// The held battery.
        device: DeviceId,
        /// Its own hold or the bridge-wide one.
        scope: HoldScope,
        /// The command refused.
        command: &'static str,
    },
    /// This bridge is its site's standby: another instance leads and writes.
    #[error(
        "standby: this bridge is a standby of its site, {command} not sent (the leader is {leader})"
    )]
    Standby {
        /// The leader's instance id (`unknown` when it could not be read).
        leader: String,
        /// The command refused.
        command: &'static str,
    },
}

/// Who sends a batch of commands and what becomes of it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The real source: the audit row's `source`, and `set_by` of a derived desired state.
    pub source: CommandSource,
    /// What the source sent (its payload, or what it was built from), for the audit row.
    pub received: Value,
    /// The desired state kept when the commands succeed.
    pub intent: Intent,
}

impl Origin {
    /// A source whose successful mode commands become the desired state ([`Intent::FromCommand`]).
    pub fn new(source: CommandSource, received: Value) -> Self {
        Self {
            source,
            received,
            intent: Intent::FromCommand,
        }
    }
}

/// The desired state a batch leaves behind for the reconciler.
#[derive(Debug, Clone)]
pub enum Intent {
    /// Each successful mode command becomes the desired state, set by the source; a Passive
    /// one is valid for its countdown, any other until replaced.
    FromCommand,
    /// This desired state (a job's, or the reconciler's own), kept when every command succeeded.
    Keep(DesiredState),
}

/// The result of a batch: one entry per command, in order.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What each command gave.
    pub results: Vec<Result<CommandReport, CommandError>>,
    /// The verification still running for the batch's last mode write whose effect was not yet
    /// seen when it was answered (its report says `verified: false`); None when nothing is.
    pub pending: Option<Pending>,
}

impl Outcome {
    /// Every command succeeded.
    pub fn is_ok(&self) -> bool {
        self.results.iter().all(Result::is_ok)
    }

    /// Every command succeeded and was confirmed by read-back.
    pub fn verified(&self) -> bool {
        self.results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.verified))
    }
}

/// Applies commands from every source through one envelope; cheap to clone (shared).
#[derive(Clone)]
pub struct CommandService {
    fleet: Fleet,
    store: Option<Arc<dyn Store>>,
    alerts: Option<AlertSender>,
    read_only: bool,
    controls: RememberedControls,
    soc: Arc<Mutex<soc_guard::SocState>>,
    verify: VerifySettings,
    writing: WritingSet,
    /// Devices whose `command_not_holding` alert is raised (a clear is sent only for these).
    not_holding: Arc<Mutex<std::collections::BTreeSet<DeviceId>>>,
    /// Every battery's intent in memory (for readers that must not query the store).
    intents: IntentBoard,
    /// The dry-run switch: while on, the bridge's own loops send nothing.
    dry_run: DryRun,
    /// The maintenance hold: a held battery gets no write at all.
    maintenance: Maintenance,
    /// The day plan's SOC floors in force.
    floors: Floors,
    /// The verification running in the background per device (one at most: a newer mode
    /// command supersedes it), with its number.
    verifying: Arc<Mutex<BTreeMap<DeviceId, (u64, CancellationToken)>>>,
    /// Cancelled at shutdown: background verifications stop.
    shutdown: CancellationToken,
    /// The batteries in `regulate` mode.
    regulated: Regulated,
    /// Leader or standby of the site: a standby sends nothing.
    role: Role,
}

impl CommandService {
    /// Builds the service; `store` and `alerts` are optional so tools and tests can go without.
    /// Mode writes are trusted on their read-back until [`with_verify`](Self::with_verify);
    /// background verifications stop at [`with_shutdown`](Self::with_shutdown)'s token.
    pub fn new(
        fleet: Fleet,
        store: Option<Arc<dyn Store>>,
        alerts: Option<AlertSender>,
        read_only: bool,
    ) -> Self {
        let controls = RememberedControls::new(fleet.ids());
        Self {
            fleet,
            store,
            alerts,
            read_only,
            controls,
            soc: Arc::default(),
            verify: VerifySettings {
                enabled: false,
                ..VerifySettings::default()
            },
            writing: WritingSet::default(),
            not_holding: Arc::default(),
            intents: IntentBoard::default(),
            dry_run: DryRun::default(),
            maintenance: Maintenance::default(),
            floors: Floors::default(),
            verifying: Arc::default(),
            shutdown: CancellationToken::new(),
            regulated: Regulated::default(),
            role: Role::default(),
        }
    }

    /// The day plan's SOC floors in force (set by the 06:00 job, kept by the running check).
    pub fn floors(&self) -> &Floors {
        &self.floors
    }

    /// Stops background verifications when `token` is cancelled (the bridge's shutdown).
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Holds back the bridge's own commands while `dry_run` is on.
    pub fn with_dry_run(mut self, dry_run: DryRun) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The dry-run switch.
    pub fn dry_run(&self) -> &DryRun {
        &self.dry_run
    }

    /// Refuses every write to a battery while it is under a `maintenance` hold.
    pub fn with_maintenance(mut self, maintenance: Maintenance) -> Self {
        self.maintenance = maintenance;
        self
    }

    /// The maintenance hold.
    pub fn maintenance(&self) -> &Maintenance {
        &self.maintenance
    }

    /// Whether a command batch is being applied to `device` (sent, verified, or its intent not
    /// yet persisted): samples seen meanwhile may show a mode that is about to become the intent.
    pub fn writing(&self, device: &DeviceId) -> bool {
        self.writing.contains(device)
    }

    /// Checks mode writes by their effect with these settings (`[marstek.verify]`).
    pub fn with_verify(mut self, verify: VerifySettings) -> Self {
        self.verify = verify;
        self
    }

    /// The fleet commands go to.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The store commands are recorded in, when there is one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Whether writes are refused (config `read_only`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Every battery's remembered controls.
    pub fn controls(&self) -> &RememberedControls {
        &self.controls
    }

    /// Every battery's intent in memory, kept as commands succeed.
    pub fn intents(&self) -> &IntentBoard {
        &self.intents
    }

    /// Remembers a value for `device` without sending anything; returns its controls.
    pub fn remember(&self, device: &DeviceId, value: Remember) -> Result<Controls, CommandError> {
        self.battery(device)?;
        self.controls.remember(device, value);
        Ok(self.controls.get(device))
    }

    /// Executes `commands` in order on `device` and persists them (desired state and audit
    /// rows) before returning: [`apply`](Self::apply) then [`Bookkeeping::persist`].
    pub async fn submit(&self, device: &DeviceId, commands: &[Command], origin: Origin) -> Outcome {
        let (outcome, bookkeeping) = self.apply(device, commands, origin).await;
        bookkeeping.persist().await;
        outcome
    }

    /// [`submit`](Self::submit) for one command, with its one result.
    pub async fn submit_one(
        &self,
        device: &DeviceId,
        command: &Command,
        origin: Origin,
    ) -> Result<CommandReport, CommandError> {
        let outcome = self
            .submit(device, std::slice::from_ref(command), origin)
            .await;
        // One command gives one result (an unknown device gives one too).
        outcome
            .results
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(CommandError::UnknownDevice(device.to_string())))
    }

    /// Executes `commands` in order on `device` through the envelope, logs each, raises
    /// `command_failed` on a driver error and, for a user source, remembers the values that
    /// succeeded. The returned [`Bookkeeping`] persists the batch: a caller that answers
    /// someone (an MQTT response) answers first and persists after, so the answer does not wait
    /// on database commits. An unknown device gives one `UnknownDevice` result and no records.
    pub async fn apply(
        &self,
        device: &DeviceId,
        commands: &[Command],
        origin: Origin,
    ) -> (Outcome, Bookkeeping) {
        let mut books = Bookkeeping {
            store: self.store.clone(),
            intents: Vec::new(),
            records: Vec::with_capacity(commands.len()),
            _writing: None,
        };
        let battery = match self.battery(device) {
            Ok(b) => b,
            Err(e) => {
                let outcome = Outcome {
                    results: vec![Err(e)],
                    pending: None,
                };
                return (outcome, books);
            }
        };
        books._writing = Some(self.writing.start(device));
        if leaves_regulation(origin.source)
            && commands.iter().any(|c| matches!(c, Command::SetMode(_)))
        {
            // Another mode chosen by a person or a job ends `regulate` for this battery.
            self.regulated.leave(device);
        }
        let mut results = Vec::with_capacity(commands.len());
        let mut pending = None;
        for command in commands {
            let result = self
                .run_one(battery, command, &origin, &mut books, &mut pending)
                .await;
            results.push(result);
        }
        let outcome = Outcome { results, pending };
        if let Intent::Keep(intent) = origin.intent
            && outcome.is_ok()
        {
            self.intents.set(&intent);
            books.intents.push(intent);
        }
        (outcome, books)
    }

    fn battery(&self, device: &DeviceId) -> Result<&BatteryRef, CommandError> {
        self.fleet
            .get(device)
            .ok_or_else(|| CommandError::UnknownDevice(device.to_string()))
    }

    /// One command: envelope, driver, log, alert, remembered values, records; a mode write
    /// whose effect is still to be seen leaves its background verification in `pending`.
    async fn run_one(
        &self,
        battery: &BatteryRef,
        command: &Command,
        origin: &Origin,
        books: &mut Bookkeeping,
        pending: &mut Option<Pending>,
    ) -> Result<CommandReport, CommandError> {
        let device = battery.id();
        let source = origin.source.as_str();
        let started = Instant::now();
        let limits = battery.limits();
        self.held_back(device, command, origin.source)?;
        let mut follow = None;
        let result = match check_command(command, &limits, self.read_only)
            .and_then(|()| check_soc(command, &limits, battery.soc()))
            .and_then(|()| self.check_floor(device, command, battery.soc(), origin.source))
        {
            Ok(()) => match command {
                Command::SetMode(config)
                    if self.verify.enabled && origin.source.wants_effect_verification() =>
                {
                    self.verify_mode_write(battery, command, config, &mut follow)
                        .await
                }
                Command::SetMode(_) => {
                    self.supersede(device);
                    battery.execute(command).await.map_err(CommandError::from)
                }
                _ => battery.execute(command).await.map_err(CommandError::from),
            },
            Err(e) => Err(e.into()),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(report) => {
                tracing::info!(device = %device, source, command = command.name(), verified = report.verified, latency_ms, "command_applied");
                if origin.source.is_user() {
                    self.controls.learn(device, command);
                }
                self.note_set_point(device, command);
                if let Intent::FromCommand = origin.intent
                    && let Some(intent) = intent_for(device, command, origin.source, Utc::now())
                {
                    self.intents.set(&intent);
                    books.intents.push(intent);
                }
                // once the intent is in memory, so that the samples its polls bring show it
                if let Some(f) = follow {
                    *pending = Some(self.spawn_follow_up(battery, command, f, origin));
                }
            }
            Err(e) => self.note_failed(device, command, source, e),
        }
        books.records.push(CommandRecord {
            at: Utc::now(),
            source: origin.source,
            device: device.to_string(),
            payload: json!({ "received": origin.received, "command": command }),
            status: CommandStatus::of(&result),
            error: result.as_ref().err().map(|e| e.to_string()),
            latency_ms: Some(latency_ms),
        });
        result
    }
}

/// The desired state a successful mode command leaves (set by `source`; a Passive one valid for
/// its countdown); None for other commands.
pub fn intent_for(
    device: &DeviceId,
    command: &Command,
    source: CommandSource,
    now: DateTime<Utc>,
) -> Option<DesiredState> {
    let Command::SetMode(config) = command else {
        return None;
    };
    let valid_until = match config {
        ModeConfig::Passive { cd_time, .. } => {
            Some(now + ChronoDuration::seconds(i64::from(*cd_time)))
        }
        _ => None,
    };
    Some(DesiredState {
        device: device.clone(),
        config: config.clone(),
        set_by: source.as_str().into(),
        set_at: now,
        valid_until,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::domain::{Percent, Watts};
    use crate::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport};
    use crate::simulator::{SimConfig, SimHandle, Simulator};

    /// One simulated battery behind the real driver, and its command service (no store).
    async fn service(cancel: &CancellationToken) -> (CommandService, DeviceId, SimHandle) {
        let sim = Simulator::start(SimConfig::default()).await.unwrap();
        let t = Transport::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0), cancel)
            .await
            .unwrap();
        let (samples, _) = tokio::sync::broadcast::channel(16);
        let id = DeviceId::parse("bat1").unwrap();
        let polling = PollingSettings {
            status_interval: Duration::from_secs(3600),
            quiet_gap: Duration::ZERO,
            ..Default::default()
        };
        let spec = DeviceSpec {
            id: id.clone(),
            addr: sim.addrs()[0],
            limits: Default::default(),
        };
        let b = MarstekBattery::spawn(
            t,
            spec,
            polling,
            samples,
            cancel.clone(),
            &TaskTracker::new(),
        );
        let fleet = Fleet::new([Arc::new(b) as BatteryRef]);
        (CommandService::new(fleet, None, None, false), id, sim)
    }

    #[tokio::test]
    async fn an_unknown_device_gives_one_error_and_no_records() {
        let s = CommandService::new(Fleet::default(), None, None, false);
        let dev = DeviceId::parse("nope").unwrap();
        let cmds = [Command::SetLed { on: true }, Command::SetLed { on: false }];
        let origin = Origin::new(CommandSource::Http, Value::Null);
        let (outcome, books) = s.apply(&dev, &cmds, origin).await;
        assert_eq!(outcome.results.len(), 1);
        assert!(matches!(&outcome.results[0], Err(CommandError::UnknownDevice(d)) if d == "nope"));
        assert!(books.records.is_empty() && books.intents.is_empty());
        assert!(s.remember(&dev, Remember::PassivePower(100)).is_err());
    }

    #[tokio::test]
    async fn the_audit_names_the_real_source_and_only_user_commands_are_remembered() {
        let cancel = CancellationToken::new();
        let (s, dev, sim) = service(&cancel).await;
        let http = Origin::new(CommandSource::Http, json!({ "dod": 40 }));
        let (outcome, books) = s
            .apply(&dev, &[Command::SetDod { value: Percent(40) }], http)
            .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(books.records[0].source, CommandSource::Http);
        assert_eq!(books.records[0].payload["received"], json!({ "dod": 40 }));
        assert_eq!(
            s.controls().get(&dev).dod,
            Some(40),
            "a user's value is remembered"
        );
        assert_eq!(sim.state(0).unwrap().dod, 40);

        let job = Origin::new(CommandSource::Scheduler, json!({ "job": "j" }));
        let (outcome, books) = s
            .apply(&dev, &[Command::SetDod { value: Percent(50) }], job)
            .await;
        assert!(outcome.is_ok());
        assert_eq!(books.records[0].source, CommandSource::Scheduler);
        assert_eq!(
            s.controls().get(&dev).dod,
            Some(40),
            "a job does not overwrite it"
        );

        let passive = Command::SetMode(ModeConfig::Passive {
            power: Watts(-300),
            cd_time: 60,
        });
        let mqtt = Origin::new(CommandSource::Mqtt, Value::Null);
        let (_, books) = s.apply(&dev, &[passive], mqtt).await;
        let intent = &books.intents[0];
        assert_eq!(intent.set_by, "mqtt");
        assert_eq!(
            intent.valid_until,
            Some(intent.set_at + ChronoDuration::seconds(60))
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_batch_gives_one_result_per_command_and_keeps_a_given_intent_only_on_success() {
        let cancel = CancellationToken::new();
        let (s, dev, _sim) = service(&cancel).await;
        let too_much = Command::SetMode(ModeConfig::Passive {
            power: Watts(1_000_000),
            cd_time: 60,
        });
        let keep = DesiredState {
            device: dev.clone(),
            config: ModeConfig::Auto,
            set_by: "job_x".into(),
            set_at: Utc::now(),
            valid_until: None,
        };
        let origin = Origin {
            source: CommandSource::Scheduler,
            received: Value::Null,
            intent: Intent::Keep(keep.clone()),
        };
        let cmds = [too_much, Command::SetLed { on: false }];
        let (outcome, books) = s.apply(&dev, &cmds, origin.clone()).await;
        assert!(matches!(outcome.results[0], Err(CommandError::Rejected(_))));
        assert!(outcome.results[1].is_ok());
        assert!(!outcome.is_ok() && !outcome.verified());
        assert_eq!(books.records.len(), 2);
        assert_eq!(books.records[0].status, CommandStatus::Error);
        assert!(books.intents.is_empty(), "a failed batch keeps no intent");

        let auto = Command::SetMode(ModeConfig::Auto);
        let (outcome, books) = s.apply(&dev, &[auto], origin).await;
        assert!(outcome.is_ok());
        assert_eq!(
            books.intents,
            vec![keep],
            "the given intent, not one derived"
        );
        cancel.cancel();
    }
}
