//! The `qcvr` commands: argument types (clap) and what each command does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_config::BehaviorVersion;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use qcvr::bootstrap::Production;
use qcvr::clock::{Clock, SystemClock};
use qcvr::config::{Integration, IntegrationConfig, ListingMode, RunType};
use qcvr::run::{RunRecord, Trigger};
use qcvr::schedule::{
    CalendarEdge, CalendarEntry, CalendarScheduler, CalendarStore, CalendarTarget, DayOfWeek,
    Interval, MonthDay, OnceAt, ScheduleSpec, TimeOfDay, plan_calendar_schedules,
};
use qcvr::store::Store;
use qcvr::store::dynamo::{DynamoStore, create_tables, table_prefix_from_env};
use qcvr::sync::{load_or_seed_config, run_chain};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::local_lambda::{self, LocalFunctions};
use crate::report::runs_table;
use crate::stepfunctions;

/// Writes a line to stdout; a closed pipe (`qcvr runs | head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// As [`say!`], without the newline.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// qcvr's operator CLI. AWS settings come from the usual AWS environment
/// (`AWS_ENDPOINT_URL` for a local server); tables from `QCVR_TABLE_PREFIX`.
#[derive(Debug, Parser)]
#[command(name = "qcvr", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the tables, the Qualys secret and the default configs (safe to repeat).
    Setup(SetupArgs),
    /// Show or change integration configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the chain in this process, without Step Functions.
    Run(RunArgs),
    /// Run the chain through the real state machine file on a local Step Functions (moto),
    /// with this process answering the Lambda tasks.
    Execute(ExecuteArgs),
    /// Serve the local Lambda endpoint only (for moto's Step Functions interpreter).
    LambdaEndpoint(EndpointArgs),
    /// List run records, newest first.
    Runs(RunsArgs),
    /// Print the EventBridge Scheduler expression of a run type.
    ScheduleExpression(ScheduleArgs),
    /// Business-calendar entries and their one-time schedules.
    #[command(subcommand)]
    Calendar(CalendarCommand),
}

#[derive(Debug, Args)]
struct SetupArgs {
    /// Secret to create or update (also `QCVR_QUALYS_SECRET_ID`).
    #[arg(long, env = "QCVR_QUALYS_SECRET_ID")]
    secret_id: String,
    /// Qualys username to store in the secret.
    #[arg(long, env = "QCVR_QUALYS_USERNAME")]
    username: String,
    /// Qualys password to store in the secret.
    #[arg(long, env = "QCVR_QUALYS_PASSWORD", hide_env_values = true)]
    password: String,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the configs as JSON.
    Show,
    /// Change fields of one integration's config; the result is validated before it is saved.
    Set(ConfigSetArgs),
}

#[derive(Debug, Args)]
struct ConfigSetArgs {
    /// Which integration.
    #[arg(long, value_parser = parse_integration)]
    integration: Integration,
    /// Run it (true) or skip it (false).
    #[arg(long)]
    active: Option<bool>,
    /// QQL filter (containers).
    #[arg(long)]
    filter: Option<String>,
    /// Page size, 1 to 1000.
    #[arg(long)]
    page_size: Option<u32>,
    /// Import data since (RFC 3339), or `none` for the last 7 days.
    #[arg(long)]
    import_since: Option<String>,
    /// Container listing: paged or bulk.
    #[arg(long, value_parser = parse_name::<ListingMode>)]
    listing_mode: Option<ListingMode>,
    /// Run type of the chain (daily, weekly, monthly, periodically, once, on-demand,
    /// calendar-start, calendar-end).
    #[arg(long, value_parser = parse_name::<RunType>)]
    run_type: Option<RunType>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Run id (default: `manual-<time>`).
    #[arg(long)]
    run_id: Option<String>,
    /// Stop each invocation after this many pages (exercises resuming).
    #[arg(long)]
    page_budget: Option<u32>,
    /// Also write the run records as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EndpointArgs {
    /// Port of the endpoint: the `MOTO_PORT` moto was started with.
    #[arg(long)]
    lambda_port: u16,
    /// moto's URL, for every request that is not a Lambda invocation.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    moto_url: String,
}

#[derive(Debug, Args)]
struct ExecuteArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// The state machine file.
    #[arg(long, default_value = "infra/statemachine/qcvr-chain.asl.json")]
    asl: PathBuf,
    /// Execution input.
    #[arg(long, default_value = r#"{"trigger":"manual"}"#)]
    input: String,
    /// Execution name, which becomes the run id (default: `manual-<time>`).
    #[arg(long)]
    run_id: Option<String>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Also write the run records as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunsArgs {
    /// Only this run's records (one per integration).
    #[arg(long)]
    run_id: Option<String>,
    /// Newest N per integration.
    #[arg(long, default_value_t = 5)]
    limit: usize,
    /// Also write them as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ScheduleArgs {
    /// daily, weekly, monthly, periodically, once, on-demand, calendar-start, calendar-end.
    #[arg(value_parser = parse_name::<RunType>)]
    run_type: RunType,
    /// Time of day `HH:MM` (daily, weekly, monthly) or date-time `YYYY-MM-DDTHH:MM` (once).
    #[arg(long)]
    at: Option<String>,
    /// Weekday (weekly) or day of the month (monthly).
    #[arg(long)]
    day: Option<String>,
    /// Interval such as `15m` or `2h` (periodically).
    #[arg(long)]
    every: Option<String>,
}

#[derive(Debug, Subcommand)]
enum CalendarCommand {
    /// Add or replace an entry, then sync the schedules if a target is given.
    Add(CalendarAddArgs),
    /// List a calendar's entries.
    List(CalendarListArgs),
    /// Create the one-time schedules of upcoming entries and delete stale ones.
    Sync(CalendarSyncArgs),
}

#[derive(Debug, Args)]
struct CalendarListArgs {
    /// Calendar name.
    #[arg(long, default_value = "default")]
    calendar: String,
}

#[derive(Debug, Args)]
struct CalendarAddArgs {
    /// Calendar name.
    #[arg(long, default_value = "default")]
    calendar: String,
    /// Entry id, unique within the calendar.
    #[arg(long)]
    entry_id: String,
    /// What the entry is.
    #[arg(long)]
    name: String,
    /// Start (RFC 3339).
    #[arg(long)]
    start: DateTime<Utc>,
    /// End (RFC 3339).
    #[arg(long)]
    end: DateTime<Utc>,
}

#[derive(Debug, Args)]
struct CalendarSyncArgs {
    /// Calendar name.
    #[arg(long, default_value = "default")]
    calendar: String,
    /// Start the chain at the start or the end of each entry.
    #[arg(long, value_enum)]
    edge: EdgeArg,
    /// Schedule group (stack output `CalendarScheduleGroupName`).
    #[arg(long, env = "QCVR_CALENDAR_GROUP")]
    group: String,
    /// State machine ARN (stack output `StateMachineArn`).
    #[arg(long, env = "QCVR_STATE_MACHINE_ARN")]
    state_machine_arn: String,
    /// Role Scheduler assumes (stack output `SchedulerRoleArn`).
    #[arg(long, env = "QCVR_SCHEDULER_ROLE_ARN")]
    role_arn: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EdgeArg {
    Start,
    End,
}

fn parse_integration(s: &str) -> Result<Integration, String> {
    s.parse()
        .map_err(|e: qcvr::config::ConfigError| e.to_string())
}

/// Parses a config enum by its stored name; `on-demand` and `on_demand` both work.
fn parse_name<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
        .map_err(|_| format!("{s:?} is not one of the accepted names"))
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup(args) => setup(args).await,
        Command::Config(ConfigCommand::Show) => config_show().await,
        Command::Config(ConfigCommand::Set(args)) => config_set(args).await,
        Command::Run(args) => run_in_process(args).await,
        Command::Execute(args) => execute(args).await,
        Command::LambdaEndpoint(args) => endpoint(args).await,
        Command::Runs(args) => runs(args).await,
        Command::ScheduleExpression(args) => schedule_expression(args),
        Command::Calendar(command) => calendar(command).await,
    }
}

async fn aws() -> aws_config::SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

async fn store() -> DynamoStore {
    DynamoStore::from_env(aws_sdk_dynamodb::Client::new(&aws().await))
}

async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let aws = aws().await;
    let prefix = table_prefix_from_env();
    create_tables(&aws_sdk_dynamodb::Client::new(&aws), &prefix).await?;

    let mut secret = serde_json::json!({ "username": args.username, "password": args.password });
    for (key, var) in [
        ("api_url", "QCVR_QUALYS_API_URL"),
        ("gateway_url", "QCVR_QUALYS_GATEWAY_URL"),
    ] {
        if let Ok(value) = std::env::var(var).map(|v| v.trim().to_owned())
            && !value.is_empty()
        {
            secret[key] = serde_json::Value::String(value);
        }
    }
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let exists = secrets
        .describe_secret()
        .secret_id(&args.secret_id)
        .send()
        .await
        .is_ok();
    if exists {
        secrets
            .put_secret_value()
            .secret_id(&args.secret_id)
            .secret_string(secret.to_string())
            .send()
            .await
            .context("updating the Qualys secret")?;
    } else {
        secrets
            .create_secret()
            .name(&args.secret_id)
            .secret_string(secret.to_string())
            .send()
            .await
            .context("creating the Qualys secret")?;
    }

    let store = DynamoStore::from_env(aws_sdk_dynamodb::Client::new(&aws));
    for integration in Integration::ALL {
        load_or_seed_config(&store, integration, SystemClock.now()).await?;
    }
    say!(
        "tables {prefix}*, secret {} and configs are ready",
        args.secret_id
    );
    Ok(())
}

async fn config_show() -> anyhow::Result<()> {
    let store = store().await;
    let mut configs = Vec::new();
    for integration in Integration::ALL {
        configs.push(load_or_seed_config(&store, integration, SystemClock.now()).await?);
    }
    say!("{}", serde_json::to_string_pretty(&configs)?);
    Ok(())
}

async fn config_set(args: ConfigSetArgs) -> anyhow::Result<()> {
    let store = store().await;
    let now = SystemClock.now();
    let mut config: IntegrationConfig = load_or_seed_config(&store, args.integration, now).await?;
    if let Some(active) = args.active {
        config.active = active;
    }
    if let Some(filter) = args.filter {
        config.filter = filter;
    }
    if let Some(page_size) = args.page_size {
        config.page_size = page_size;
    }
    if let Some(since) = args.import_since {
        config.import_since = match since.as_str() {
            "none" | "" => None,
            text => Some(
                DateTime::parse_from_rfc3339(text)
                    .with_context(|| format!("--import-since {text:?} is not RFC 3339"))?
                    .with_timezone(&Utc),
            ),
        };
    }
    if let Some(mode) = args.listing_mode {
        config.listing_mode = mode;
    }
    if let Some(run_type) = args.run_type {
        config.run_type = run_type;
    }
    store.save_config(&config, now).await?;
    say!("{}", serde_json::to_string_pretty(&config)?);
    Ok(())
}

fn default_run_id() -> String {
    format!("manual-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ")).replace('.', "-")
}

async fn run_in_process(args: RunArgs) -> anyhow::Result<()> {
    let production = Production::from_env().await?;
    let run_id = args.run_id.unwrap_or_else(default_run_id);
    let result = run_chain(
        production.deps(),
        &run_id,
        Trigger::Manual,
        args.page_budget,
    )
    .await;
    print_run(&production.store, &run_id, args.json.as_ref()).await?;
    result
        .map(|_| ())
        .with_context(|| format!("run {run_id} failed"))
}

/// Binds the local Lambda endpoint's port and serves the production handlers there; returns
/// the store they write to and the serving task.
async fn start_endpoint(
    args: &EndpointArgs,
) -> anyhow::Result<(DynamoStore, JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(("127.0.0.1", args.lambda_port))
        .await
        .with_context(|| format!("port {} is taken", args.lambda_port))?;
    let production = Production::from_env().await?;
    let store = production.store.clone();
    let functions = LocalFunctions {
        qualys: production.qualys,
        store: production.store,
        clock: production.clock,
        settings: production.settings,
    };
    let moto_url = args.moto_url.clone();
    let serving =
        tokio::spawn(async move { local_lambda::serve(listener, functions, &moto_url).await });
    Ok((store, serving))
}

async fn endpoint(args: EndpointArgs) -> anyhow::Result<()> {
    let (_, serving) = start_endpoint(&args).await?;
    serving
        .await
        .context("the local Lambda endpoint stopped")??;
    Ok(())
}

async fn execute(args: ExecuteArgs) -> anyhow::Result<()> {
    stepfunctions::enable_moto_execution(&args.endpoint.moto_url).await?;
    let (store, serving) = start_endpoint(&args.endpoint).await?;

    let asl = std::fs::read_to_string(&args.asl)
        .with_context(|| format!("cannot read {}", args.asl.display()))?;
    let definition = stepfunctions::substitute(&asl, &local_substitutions(store.prefix()))?;
    let sfn = aws_sdk_sfn::Client::new(&aws().await);
    let machine = stepfunctions::create_or_update(
        &sfn,
        &format!("{}chain", store.prefix()),
        &definition,
        LOCAL_ROLE_ARN,
    )
    .await?;
    let run_id = args.run_id.unwrap_or_else(default_run_id);
    say!("execution {run_id} started on {machine}");
    let result = stepfunctions::execute(
        &sfn,
        &machine,
        &run_id,
        &args.input,
        Duration::from_secs(args.timeout_secs),
    )
    .await;
    serving.abort();
    let result = result?;
    say!("execution {run_id}: {}", result.status);
    print_run(&store, &run_id, args.json.as_ref()).await?;
    if result.status != "SUCCEEDED" {
        bail!(
            "execution {run_id} ended {}: {} {}",
            result.status,
            result.error.unwrap_or_default(),
            result.cause.unwrap_or_default()
        );
    }
    Ok(())
}

/// The role ARN given to the local state machine; moto does not check it.
pub const LOCAL_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/qcvr-local-chain";

/// The values of the state machine's placeholders for a local run: function ARNs whose names
/// the local Lambda endpoint resolves, and the runs table.
pub fn local_substitutions(prefix: &str) -> BTreeMap<String, String> {
    let function =
        |name: &str| format!("arn:aws:lambda:us-east-1:123456789012:function:{prefix}{name}");
    BTreeMap::from([
        (
            "SyncContainersFunctionArn".to_owned(),
            function("sync-containers"),
        ),
        ("SyncImagesFunctionArn".to_owned(), function("sync-images")),
        ("SyncKbFunctionArn".to_owned(), function("sync-kb")),
        ("RunsTableName".to_owned(), format!("{prefix}runs")),
    ])
}

async fn runs(args: RunsArgs) -> anyhow::Result<()> {
    let store = store().await;
    match args.run_id {
        Some(run_id) => print_run(&store, &run_id, args.json.as_ref()).await,
        None => {
            let mut records = Vec::new();
            for integration in Integration::ALL {
                records.extend(store.list_runs(integration, args.limit).await?);
            }
            records.sort_by_key(|r| std::cmp::Reverse(r.started_at));
            emit(&records, args.json.as_ref())
        }
    }
}

async fn print_run<S: Store>(
    store: &S,
    run_id: &str,
    json: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for integration in Integration::ALL {
        if let Some(run) = store.load_run(integration, run_id).await? {
            records.push(run);
        }
    }
    emit(&records, json)
}

fn emit(records: &[RunRecord], json: Option<&PathBuf>) -> anyhow::Result<()> {
    say_raw!("{}", runs_table(records));
    if let Some(path) = json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(records)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        say!("run records written to {}", path.display());
    }
    Ok(())
}

fn schedule_expression(args: ScheduleArgs) -> anyhow::Result<()> {
    let need = |value: Option<String>, flag: &str| {
        value.with_context(|| format!("this run type needs --{flag}"))
    };
    let spec = match args.run_type {
        RunType::Daily => ScheduleSpec::Daily {
            at: need(args.at.clone(), "at")?.parse::<TimeOfDay>()?,
        },
        RunType::Weekly => ScheduleSpec::Weekly {
            day: need(args.day.clone(), "day")?.parse::<DayOfWeek>()?,
            at: need(args.at.clone(), "at")?.parse::<TimeOfDay>()?,
        },
        RunType::Monthly => ScheduleSpec::Monthly {
            day: need(args.day.clone(), "day")?.parse::<MonthDay>()?,
            at: need(args.at.clone(), "at")?.parse::<TimeOfDay>()?,
        },
        RunType::Periodically => ScheduleSpec::Periodically {
            every: need(args.every.clone(), "every")?.parse::<Interval>()?,
        },
        RunType::Once => ScheduleSpec::Once {
            at: need(args.at.clone(), "at")?.parse::<OnceAt>()?,
        },
        RunType::OnDemand => ScheduleSpec::OnDemand,
        RunType::CalendarStart => ScheduleSpec::CalendarStart,
        RunType::CalendarEnd => ScheduleSpec::CalendarEnd,
    };
    match spec.expression() {
        Some(expression) => say!("{expression}"),
        None => {
            say!("(no recurring schedule: this run type is started by hand or by calendar entries)")
        }
    }
    Ok(())
}

async fn calendar(command: CalendarCommand) -> anyhow::Result<()> {
    let aws = aws().await;
    let calendars = CalendarStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        &table_prefix_from_env(),
    );
    match command {
        CalendarCommand::Add(args) => {
            let entry = CalendarEntry {
                calendar: args.calendar,
                entry_id: args.entry_id,
                name: args.name,
                start: args.start,
                end: args.end,
            };
            entry.validate()?;
            calendars.put(&entry).await?;
            say!(
                "entry {} added to calendar {}; run `qcvr calendar sync` to schedule it",
                entry.entry_id,
                entry.calendar
            );
            Ok(())
        }
        CalendarCommand::List(args) => {
            for entry in calendars.list(&args.calendar).await? {
                say!(
                    "{}\t{}\t{}\t{}",
                    entry.entry_id,
                    entry.start.to_rfc3339(),
                    entry.end.to_rfc3339(),
                    entry.name
                );
            }
            Ok(())
        }
        CalendarCommand::Sync(args) => {
            let edge = match args.edge {
                EdgeArg::Start => CalendarEdge::Start,
                EdgeArg::End => CalendarEdge::End,
            };
            let entries = calendars.list(&args.calendar).await?;
            let planned = plan_calendar_schedules(&entries, edge, SystemClock.now())?;
            let target = CalendarTarget {
                group: args.group,
                state_machine_arn: args.state_machine_arn,
                role_arn: args.role_arn,
            };
            let scheduler = CalendarScheduler::new(aws_sdk_scheduler::Client::new(&aws), target);
            let report = scheduler.sync(&planned).await?;
            say!(
                "calendar {}: {} created, {} updated, {} deleted",
                args.calendar,
                report.created.len(),
                report.updated.len(),
                report.deleted.len()
            );
            Ok(())
        }
    }
}
