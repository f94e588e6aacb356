//! `aovis-agent`: the host side of aovis.
//!
//! | command | job | module |
//! |---|---|---|
//! | `enroll` | create the host's age key once, print its recipient | [`identity`] |
//! | `receive` | open a delivery from the rotator, store the profile's cache | [`receive`], [`store`], [`instance`] |
//! | `status` | one row per profile: ok / stale / expired / missing | [`status`] |
//! | `doctor` | migration and safety checks, each pass / warn / fail with its fix | [`doctor`], [`awsfiles`], [`verify`] |
//! | `run` | the systemd daemon (IMDSv2 and container endpoints) | `daemon` |
//!
//! Every file the agent reads that others could plant or swap (a cache, the host
//! key, a container token) is opened through [`open::open_regular`].
//!
//! Paths follow `aovis_formats::paths` (`AOVIS_STATE_DIR`, `AOVIS_CONFIG_DIR`); the
//! config is `$AOVIS_CONFIG_DIR/agent.toml` unless `--config` says otherwise (see
//! [`config`]). The clock is read here, once per command, and passed in.
//!
//! Output: `enroll` prints only the recipient, `receive` one line, so the tools
//! that read them through SSM stay simple. Every failure is one stderr line,
//! `aovis-agent: <what>: <cause>: <cause>`, and a non-zero exit code from the table
//! listed by `aovis-agent --help`. No output ever holds a secret: the age secret key, the
//! secret access key and the session token never reach a message.
//!
//! The binary's `main` is [`cli::main`]; the modules are public so the fuzz targets
//! under `fuzz/` drive the same parsers the binary runs.

pub mod awsfiles;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod identity;
pub mod instance;
pub mod open;
pub mod receive;
pub mod status;
pub mod store;
pub mod verify;

/// An error and its causes on one line, `error: cause: cause`: the form every
/// command's stderr line and every daemon log line takes.
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line.replace(['\n', '\r'], " ")
}
