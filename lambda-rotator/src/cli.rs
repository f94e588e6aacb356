//! The command line: `rotate` and `seal` (see the crate docs), or the Lambda
//! handler when `AWS_LAMBDA_RUNTIME_API` is set.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use aovis_formats::envelope::Envelope;
use aovis_formats::ProfileName;
use aws_credential_types::provider::ProvideCredentials;
use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use crate::config::{Config, ConfigError};
use crate::progress::Progress;
use crate::round::{Clock, PollTiming, RoundSettings, SystemClock};
use crate::seal::SealError;
use crate::shard::Shard;
use crate::{aws, config, lambda, report, round, seal};

#[derive(Parser)]
#[command(
    name = "aovis-rotator",
    version,
    about = "Deliver short-lived role credentials to on-prem hosts through SSM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one rotation round (for cron); exits 1 when any host failed.
    Rotate {
        /// The TOML configuration (see rotator.toml.example).
        #[arg(long)]
        config: PathBuf,
        /// Only the hosts of shard I of N (1 <= I <= N).
        #[arg(long, value_name = "I/N")]
        shard: Option<Shard>,
    },
    /// Seal credentials JSON from stdin to one host; prints the base64 payload.
    Seal {
        /// The host's age recipient (age1...).
        #[arg(long)]
        recipient: String,
        /// The managed node (mi-... or i-...).
        #[arg(long)]
        instance_id: String,
        /// The profile the host stores.
        #[arg(long)]
        profile: String,
        /// The serial; default: now in milliseconds since the Unix epoch.
        #[arg(long)]
        serial: Option<u64>,
        /// The role; default: from AssumedRoleUser.Arn in the input.
        #[arg(long)]
        role_arn: Option<String>,
    },
}

/// Why the rotator could not do its job. Display describes this layer only; the
/// cause is `source()`.
#[derive(Debug)]
pub(crate) enum CliError {
    ReadConfig(PathBuf, std::io::Error),
    Config(String, ConfigError),
    RoleChaining(ConfigError),
    Credentials(aws_credential_types::provider::error::CredentialsError),
    Runtime(std::io::Error),
    Stdin(std::io::Error),
    StdinTooLarge,
    Seal(SealError),
    SealArgument(&'static str),
    Stdout(std::io::Error),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadConfig(path, _) => {
                write!(f, "cannot read the configuration {}", path.display())
            }
            Self::Config(origin, _) => write!(f, "invalid configuration in {origin}"),
            Self::RoleChaining(_) => f.write_str("the rotator runs on role credentials"),
            Self::Credentials(_) => f.write_str("no AWS credentials for the rotator"),
            Self::Runtime(_) => f.write_str("cannot start the async runtime"),
            Self::Stdin(_) => f.write_str("cannot read credentials from stdin"),
            Self::StdinTooLarge => f.write_str("credentials on stdin are larger than 64 KiB"),
            Self::Seal(_) => f.write_str("cannot seal"),
            Self::SealArgument(problem) => f.write_str(problem),
            Self::Stdout(_) => f.write_str("cannot write to stdout"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReadConfig(_, err)
            | Self::Runtime(err)
            | Self::Stdin(err)
            | Self::Stdout(err) => Some(err),
            Self::Config(_, err) | Self::RoleChaining(err) => Some(err),
            Self::Credentials(err) => Some(err),
            Self::Seal(err) => Some(err),
            Self::StdinTooLarge | Self::SealArgument(_) => None,
        }
    }
}

/// `this layer: its cause: the cause's cause`.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda::main();
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("aovis-rotator: {}", chain(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Rotate { config, shard } => rotate(&config, shard),
        Command::Seal {
            recipient,
            instance_id,
            profile,
            serial,
            role_arn,
        } => seal_command(&recipient, &instance_id, &profile, serial, role_arn),
    }
}

pub(crate) fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AOVIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aovis_rotator=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests, Lambda re-entry) is harmless; ignore it.
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.compact().try_init();
    }
}

fn rotate(path: &PathBuf, shard: Option<Shard>) -> Result<ExitCode, CliError> {
    init_logging(false);
    let text =
        std::fs::read_to_string(path).map_err(|err| CliError::ReadConfig(path.clone(), err))?;
    let config =
        Config::parse(&text).map_err(|err| CliError::Config(path.display().to_string(), err))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let report = runtime.block_on(async {
        let (config, clients) = prepare(config, false).await?;
        let settings = RoundSettings {
            rotator: "cron".to_owned(),
            shard,
            stop_starting_at: None,
            hard_deadline: None,
            poll: PollTiming::default(),
            progress: Progress::for_stderr(false),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Ok::<_, CliError>(round::run(config, clients, clock, settings).await)
    })?;
    print_report(&report, SystemClock.now()).map_err(CliError::Stdout)?;
    if report.is_failure() {
        let why = report.failure_summary();
        eprintln!("aovis-rotator: round {} failed: {why}", report.round.serial);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the SDK config, refuses sessions that role chaining cannot issue, logs
/// the configuration's warnings, and builds the clients.
pub(crate) async fn prepare(
    config: Config,
    lambda: bool,
) -> Result<(Arc<Config>, aws::Clients), CliError> {
    let sdk = aws::load_sdk_config(&config).await;
    let on_role_credentials = lambda || {
        let provider = sdk.credentials_provider().ok_or_else(|| {
            CliError::Credentials(
                aws_credential_types::provider::error::CredentialsError::not_loaded(
                    "no credentials provider in the SDK's chain",
                ),
            )
        })?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(CliError::Credentials)?;
        credentials.session_token().is_some()
    };
    if on_role_credentials {
        config
            .check_role_chaining()
            .map_err(CliError::RoleChaining)?;
    }
    for warning in config.warnings() {
        tracing::warn!("{}", warning.0);
    }
    Ok((Arc::new(config), aws::Clients::new(&sdk)))
}

/// The EMF record, then the report; each one line on stdout.
pub(crate) fn print_report(
    report: &report::Report,
    now: chrono::DateTime<chrono::Utc>,
) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", report.emf_line(now))?;
    writeln!(stdout, "{}", report.to_json_line())?;
    stdout.flush()
}

fn seal_command(
    recipient: &str,
    instance_id: &str,
    profile: &str,
    serial: Option<u64>,
    role_arn: Option<String>,
) -> Result<ExitCode, CliError> {
    let recipient = seal::parse_recipient(recipient).map_err(CliError::Seal)?;
    if !config::is_instance_id(instance_id) {
        return Err(CliError::SealArgument(
            "--instance-id is not a managed node id (mi-<17 hex> or i-<8 or 17 hex>)",
        ));
    }
    let profile = ProfileName::new(profile).map_err(|_| {
        CliError::SealArgument(
            "--profile is not a valid profile name (1 to 64 of A-Z a-z 0-9 _ . -)",
        )
    })?;
    let mut input = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(64 * 1024 + 1)
        .read_to_end(&mut input)
        .map_err(CliError::Stdin)?;
    if input.len() > 64 * 1024 {
        return Err(CliError::StdinTooLarge);
    }
    let (credentials, derived_role) =
        seal::parse_credentials_input(&input).map_err(CliError::Seal)?;
    let role_arn = role_arn.or(derived_role).ok_or(CliError::SealArgument(
        "no role ARN: pass --role-arn (the input has no AssumedRoleUser.Arn)",
    ))?;
    let now = SystemClock.now();
    let serial = serial.unwrap_or_else(|| u64::try_from(now.timestamp_millis()).unwrap_or(0));
    let envelope = Envelope {
        instance_id: instance_id.to_owned(),
        profile,
        serial,
        issued_at: now,
        role_arn,
        credentials,
    };
    let payload = seal::seal(&envelope, &recipient).map_err(CliError::Seal)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{payload}")
        .and_then(|()| stdout.flush())
        .map_err(CliError::Stdout)?;
    Ok(ExitCode::SUCCESS)
}
