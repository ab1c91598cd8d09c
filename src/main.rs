//! Command line of marstek-bridge: parses arguments, loads the configuration, sets up logging and
//! hands over to the library. Exit codes: 0 success, 1 runtime failure, 2 invalid configuration
//! or arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use marstek_bridge::config::{self, ConfigError, LogFormat, Settings};
use marstek_bridge::{app, logging, marstek, remote, simulator, store};

#[derive(Parser)]
#[command(
    name = "marstek-bridge",
    version,
    about = "Marstek Venus batteries to MQTT, with Home Assistant discovery, a persisted schedule and Tempo precharge"
)]
struct Cli {
    /// Configuration file (TOML); default config/marstek-bridge.toml when it exists.
    #[arg(long, short, global = true, env = "MARSTEK_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format (overrides logging.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `debug` (overrides logging.level; RUST_LOG wins over both).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge daemon.
    Run,
    /// Self-contained demo: 3 simulated batteries, SQLite, MQTT (existing or embedded broker).
    Demo(marstek_bridge::demo::DemoArgs),
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Apply the database migrations (also done at every start) and exit.
    Migrate,
    /// Find batteries on the LAN (broadcast) or on an address and port range (unicast).
    Discover(marstek::DiscoverArgs),
    /// Query one battery: identity, firmware, status and mode.
    Probe(marstek::ProbeArgs),
    /// Run simulated batteries on UDP (tests, demos, benchmarks) until Ctrl-C.
    Simulate(simulator::SimulateArgs),
    /// Replay a span of real Tempo colours against the simulated battery and house: € for no
    /// battery, the fixed schedule and the planner.
    Replay(marstek_bridge::replay::ReplayArgs),
    /// The Tempo planner of the running bridge.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Many sites in one view, read from the central database (`[central] url`).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Scheduled jobs: list, run, pause, resume and update talk to the running bridge over MQTT;
    /// preview computes locally.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List every job with its trigger, state, next run and last result.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a job now (recorded like a scheduled run).
    Run {
        /// Job id, e.g. job_switch_to_auto.
        job: String,
    },
    /// Pause a job (persisted).
    Pause {
        /// Job id.
        job: String,
    },
    /// Resume a paused job.
    Resume {
        /// Job id.
        job: String,
    },
    /// Change a job's trigger (validated, persisted; wins over the config until reset).
    Update {
        /// Job id.
        job: String,
        /// New trigger: "cron:0 7 * * *" or "interval:5m".
        trigger: String,
    },
    /// Next fire times of a cron pattern or a configured job, in local time and UTC.
    Preview(marstek_bridge::scheduler::PreviewArgs),
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Every site that forwards to the central database: online, last contact, batteries,
    /// firmware, backlog, commands failed in the last 24 h, € saved.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PlanCommand {
    /// The plan computed now by the running bridge (over MQTT), without touching a battery.
    Preview {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration; exit 2 with every problem listed when it is invalid.
    Check,
    /// Print the effective configuration as TOML, secrets shown as ***.
    Print,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Tools that need no configuration run even when the configuration is broken.
    match &cli.command {
        Command::Discover(args) => return run_tool(&cli, |_| marstek::cli::run_discover(args)),
        Command::Probe(args) => return run_tool(&cli, |_| marstek::cli::run_probe(args)),
        Command::Simulate(args) => {
            return run_tool(&cli, |token| async move {
                simulator::simulate(args, token)
                    .await
                    .map(|()| String::new())
            });
        }
        _ => {}
    }
    let mut settings = match config::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return config_failure(&e),
    };
    if let Some(f) = cli.log_format {
        settings.logging.format = f;
    }
    if let Some(l) = &cli.log_level {
        settings.logging.level = l.clone();
    }
    dispatch(cli.command, settings)
}

/// Runs a command that needs the configuration.
fn dispatch(command: Command, settings: Settings) -> ExitCode {
    match command {
        Command::Config(ConfigCommand::Check) => {
            println!("configuration OK ({} device(s))", settings.devices.len());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Print) => {
            print!("{}", settings.to_redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Run => run_async(settings, true, |s| app::run(s, shutdown_signal())),
        Command::Replay(args) => print_outcome(marstek_bridge::replay::run(&args, &settings.tempo)),
        Command::Jobs(JobsCommand::Preview(args)) => {
            print_outcome(marstek_bridge::scheduler::preview_command(
                &args,
                &settings.scheduler,
                chrono::Utc::now(),
            ))
        }
        Command::Plan(PlanCommand::Preview { json }) => {
            run_async(settings, false, |s| plan_preview(s, json))
        }
        Command::Jobs(cmd) => run_async(settings, false, |s| jobs_request(s, cmd)),
        Command::Fleet(FleetCommand::Status { json }) => {
            run_async(settings, false, |s| fleet_status(s, json))
        }
        Command::Demo(args) => run_async(settings, true, |s| {
            marstek_bridge::demo::run(args, s, shutdown_signal())
        }),
        Command::Discover(_) | Command::Probe(_) | Command::Simulate(_) => {
            unreachable!("handled above")
        }
        Command::Migrate => run_async(settings, false, migrate),
    }
}

/// Prints a local tool's text, or its error with exit code 2.
fn print_outcome(outcome: Result<String, impl std::fmt::Display>) -> ExitCode {
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `plan preview`: asks the running bridge for tonight's plan as a dry run.
async fn plan_preview(s: Settings, json: bool) -> anyhow::Result<()> {
    let body = serde_json::json!({ "dry_run": true });
    let data = remote::request(&s.mqtt, "plan/get", body, Duration::from_secs(20)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        print!("{}", marstek_bridge::tempo::plan_table(&data));
    }
    Ok(())
}

/// `fleet status`: reads the central database.
async fn fleet_status(s: Settings, json: bool) -> anyhow::Result<()> {
    let sites = marstek_bridge::sites::fleet::status(&s.central).await?;
    if json {
        let v = marstek_bridge::sites::fleet::json(&sites);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!(
            "{}",
            marstek_bridge::sites::fleet::table(&sites, chrono::Utc::now())
        );
    }
    Ok(())
}

/// `jobs list|run|pause|resume|update`: one request to the running bridge.
async fn jobs_request(s: Settings, cmd: JobsCommand) -> anyhow::Result<()> {
    let (action, body, table) = match cmd {
        JobsCommand::List { json } => ("jobs/list", serde_json::json!({}), !json),
        JobsCommand::Run { job } => ("jobs/run", serde_json::json!({ "id": job }), false),
        JobsCommand::Pause { job } => ("jobs/pause", serde_json::json!({ "id": job }), false),
        JobsCommand::Resume { job } => ("jobs/resume", serde_json::json!({ "id": job }), false),
        JobsCommand::Update { job, trigger } => (
            "jobs/update",
            serde_json::json!({ "id": job, "trigger": trigger }),
            false,
        ),
        JobsCommand::Preview(_) => unreachable!("handled locally"),
    };
    let data = remote::request(&s.mqtt, action, body, Duration::from_secs(10)).await?;
    if table {
        print!("{}", remote::jobs_table(&data));
    } else {
        println!("{}", serde_json::to_string_pretty(&data)?);
    }
    Ok(())
}

/// `migrate`: applies the migrations of the configured database.
async fn migrate(s: Settings) -> anyhow::Result<()> {
    let backend = store::migrate(&s.database)
        .await
        .map_err(|e| anyhow::Error::new(app::StartupError(format!("{e}"))))?;
    println!(
        "migrations applied ({backend:?}) on {}",
        s.database.redacted_url()
    );
    Ok(())
}

/// Runs a configuration-free tool, printing what it returns; SIGINT/SIGTERM cancel the token.
fn run_tool<'a, F, Fut>(cli: &Cli, f: F) -> ExitCode
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>> + 'a,
{
    let logging = config::LoggingSettings {
        level: cli.log_level.clone().unwrap_or_else(|| "warn".into()),
        format: cli.log_format.unwrap_or_default(),
    };
    let settings = Settings {
        logging,
        ..Settings::default()
    };
    run_async(settings, false, |_| async move {
        let token = tokio_util::sync::CancellationToken::new();
        let on_signal = token.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            on_signal.cancel();
        });
        let out = f(token).await?;
        print!("{out}");
        Ok(())
    })
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn run_async<F, Fut>(settings: Settings, daemon: bool, f: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    marstek_bridge::sites::set_process_site(&settings.site_id());
    logging::init(&settings.logging);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `f` runs inside the runtime so that signal handlers can be installed eagerly.
    match runtime.block_on(async move { f(settings).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: as a log event for the daemon, as a plain line for one-shot commands.
            if daemon {
                tracing::error!(error = format!("{e:#}"), "fatal");
            } else {
                eprintln!("error: {e:#}");
            }
            // 2 only for what the user must change (configuration, a refused request); a
            // failure at run time (database or broker unreachable, port taken) is 1, like any
            // other runtime failure, so a supervisor restarts us.
            if e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<remote::Refused>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called (not
/// when first polled), so a signal that arrives during start-up is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn next(s: Option<Signal>) -> Option<Signal> {
        match s {
            Some(mut s) => {
                s.recv().await;
                Some(s)
            }
            None => std::future::pending().await,
        }
    }
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            _ = next(int) => tracing::info!(signal = "SIGINT", "shutdown_requested"),
            _ = next(term) => tracing::info!(signal = "SIGTERM", "shutdown_requested"),
        }
    }
}
