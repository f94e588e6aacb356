//! Where the daemon's log lines go: journald (with its priority per level) when
//! systemd connected stderr to the journal (`JOURNAL_STREAM` is set), plain text on
//! stderr otherwise. The level filter comes from `RUST_LOG`, default `info`.
//!
//! Log lines name profiles, the last four characters of key ids, expiries, serials,
//! paths and addresses; never a secret key, session token or container token.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. Does nothing if one is installed already.
pub fn init() {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journald) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(journald.with_syslog_identifier("aovis-agent".to_owned()))
                    .try_init();
                return;
            }
            Err(err) => eprintln!("aovis-agent: journald unreachable ({err}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
