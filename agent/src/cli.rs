//! The command line: argument parsing, dispatch, exit codes and the one-line error.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use aovis_formats::paths::Paths;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::{config, daemon, doctor, identity, instance, one_line, receive, status};

/// Exit codes, shown by `--help`.
const EXIT_CODES: &str = "\
Exit codes:
   0  success (status: every profile ok; doctor: no check failed)
   1  failure (status: a profile is not ok; doctor: a check failed; or an I/O,
      config or group error)
   2  bad command line
   3  receive: payload too large (over 64 KiB), empty or not standard base64
   4  receive: payload not sealed to this host's key, altered, or not age
   5  receive: not a valid envelope (not JSON, unknown v, bad profile name, ...)
   6  receive: envelope for another instance id
   7  receive: serial not greater than the cached one (stale or replayed)
   8  receive: credentials expired or expiring within 60 s
   9  host key missing or unsafe (enroll, receive)
  10  receive: this host's instance id is unknown";

/// Host agent of aovis: short-lived AWS role credentials for servers outside EC2.
#[derive(Debug, Parser)]
#[command(name = "aovis-agent", version, after_help = EXIT_CODES)]
struct Cli {
    /// The agent config [default: $AOVIS_CONFIG_DIR/agent.toml, else /etc/aovis/agent.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the host key if there is none and print its recipient (age1...).
    Enroll,
    /// Store one delivery (base64 of an age-sealed envelope) as its profile's cache.
    Receive {
        /// The payload; without it, read from stdin (at most 64 KiB).
        #[arg(long, value_name = "B64")]
        payload: Option<String>,
    },
    /// Show every profile's credentials: state, role, key, serial, expiry.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check this host's move from IAM user keys to aovis, printing each fix.
    Doctor {
        /// The profile to check (the aovis profile and the AWS config profile).
        #[arg(long, value_name = "P", default_value = "default")]
        profile: String,
        /// Also call sts:GetCallerIdentity with the cached credentials.
        #[arg(long)]
        verify: bool,
        /// The STS endpoint for --verify [default: AWS_ENDPOINT_URL_STS or
        /// AWS_ENDPOINT_URL, else the regional endpoint].
        #[arg(long, value_name = "URL", requires = "verify")]
        endpoint_url: Option<String>,
    },
    /// Run the daemon (systemd service): IMDSv2 and container credential endpoints.
    Run,
}

/// A command's failure: each variant is one layer's error, with its cause chain.
#[derive(Debug)]
enum AgentError {
    Config(config::ConfigError),
    Identity(identity::IdentityError),
    Receive(receive::ReceiveError),
    Status(status::StatusError),
    Stdout(io::Error),
    Daemon(daemon::DaemonError),
}

impl AgentError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Receive(err) => err.exit_code(),
            Self::Identity(_) => 9,
            _ => 1,
        }
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(err) => err.fmt(f),
            Self::Identity(err) => err.fmt(f),
            Self::Receive(err) => err.fmt(f),
            Self::Status(err) => err.fmt(f),
            Self::Stdout(_) => f.write_str("cannot write to stdout"),
            Self::Daemon(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for AgentError {
    // Each variant displays its inner error itself, so the chain continues from the
    // inner error's own cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(err) => err.source(),
            Self::Identity(err) => err.source(),
            Self::Receive(err) => err.source(),
            Self::Status(err) => err.source(),
            Self::Stdout(err) => Some(err),
            Self::Daemon(err) => err.source(),
        }
    }
}

/// The `aovis-agent` command line: parses the arguments, runs one command, prints
/// one error line with its cause chain on failure.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are not errors; clap prints and exits 0 for them.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("aovis-agent: {}", one_line(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn print(text: &str) -> Result<(), AgentError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(AgentError::Stdout)
}

/// Runs one command; `Ok` carries the exit code of a command that reports rather
/// than fails (status, doctor).
fn run(cli: Cli) -> Result<u8, AgentError> {
    let paths = Paths::from_env();
    let config_path = cli.config.unwrap_or_else(|| paths.agent_config());
    match cli.command {
        Command::Enroll => {
            let (identity, _created) = identity::load_or_create(&paths.host_key(), euid(), now())
                .map_err(AgentError::Identity)?;
            print(&format!("{}\n", identity.recipient()))?;
            Ok(0)
        }
        Command::Receive { payload } => {
            let config = config::load(&config_path).map_err(AgentError::Config)?;
            let payload = match payload {
                Some(text) => text.into_bytes(),
                None => receive::read_payload(io::stdin().lock()).map_err(AgentError::Receive)?,
            };
            let key_path = paths.host_key();
            let load_identity = || identity::load(&key_path, euid());
            let resolve_instance = || {
                instance::resolve(
                    std::env::var(instance::INSTANCE_ID_ENV).ok().as_deref(),
                    config.instance_id.as_deref(),
                    &instance::registration_path_from_env(),
                )
            };
            let host = receive::Host {
                paths: &paths,
                config: &config,
                identity: &load_identity,
                instance_id: &resolve_instance,
                as_root: euid() == 0,
            };
            let stored = receive::receive(&host, &payload, now()).map_err(AgentError::Receive)?;
            print(&format!("aovis-agent: {stored}\n"))?;
            Ok(0)
        }
        Command::Status { json } => {
            let config = config::load(&config_path).map_err(AgentError::Config)?;
            let now = now();
            let rows = status::collect(&paths, &config, now).map_err(AgentError::Status)?;
            let text = if json {
                format!("{}\n", status::to_json(&rows, now))
            } else {
                status::to_table(&rows)
            };
            print(&text)?;
            Ok(if status::all_ok(&rows) { 0 } else { 1 })
        }
        Command::Doctor {
            profile,
            verify,
            endpoint_url,
        } => {
            let config = config::load(&config_path).map_err(AgentError::Config)?;
            let environment = doctor::Environment::from_process();
            let options = doctor::Options {
                profile,
                verify,
                endpoint_url,
            };
            let checks = doctor::run(&paths, &config, &environment, &options, euid(), now());
            print(&doctor::render(&checks))?;
            Ok(if doctor::any_failed(&checks) { 1 } else { 0 })
        }
        Command::Run => daemon::run(&config_path, &paths)
            .map(|()| 0)
            .map_err(AgentError::Daemon),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_contract_command_lines() {
        let cases: [(&[&str], &str); 6] = [
            (&["aovis-agent", "enroll"], "Enroll"),
            (&["aovis-agent", "receive", "--payload", "QUJD"], "Receive"),
            (
                &["aovis-agent", "--config", "/x.toml", "status", "--json"],
                "Status",
            ),
            (
                &["aovis-agent", "doctor", "--profile", "p", "--verify"],
                "Doctor",
            ),
            (&["aovis-agent", "status", "--config", "/x.toml"], "Status"),
            (&["aovis-agent", "run"], "Run"),
        ];
        for (args, expected) in cases {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(
                format!("{:?}", cli.command).starts_with(expected),
                "{args:?}"
            );
        }
        let refused: [&[&str]; 3] = [
            &["aovis-agent"],
            &["aovis-agent", "receive", "--bogus"],
            &["aovis-agent", "doctor", "--endpoint-url", "http://x"],
        ];
        for args in refused {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn one_line_joins_the_cause_chain() {
        let err = AgentError::Stdout(io::Error::other("broken\npipe"));
        assert_eq!(one_line(&err), "cannot write to stdout: broken pipe");
    }
}
