//! Cross-crate tests: the built binaries against the real consumers of their output.
//!
//! The judges are real: botocore and the AWS CLI (from the venv that `scripts/test`
//! makes from `tests/requirements.txt`), the Rust `aws-config` crate, and moto's
//! server, which checks SigV4 signatures. Binaries come from the same target
//! directory as this test binary, so `cargo build --workspace` must run first;
//! `scripts/test` does both.
//!
//! | module | covers |
//! |---|---|
//! | `agent` | `aovis-agent enroll`, `receive`, `status`, `doctor` |
//! | `cred` | `aovis-cred`: output, every refusal, botocore, aws-config, the AWS CLI against moto |
//! | `faults` | `aovis-agent receive` under injected write faults and SIGKILL |
//! | `hostile` | a second unprivileged user against the caches and the daemon |
//! | `deploy` | the CloudFormation template's policies |
//! | `package` | the Debian package's contents |
//! | `systemd` | the unit under `systemd-analyze` and under a real systemd booted with `systemd-nspawn` |
//! | `daemon` | `aovis-agent run`: systemd notify, IMDSv2 and container endpoints |
//! | `rotator` | `aovis-rotator`: rounds against moto and simulated managed nodes |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod agent;
mod cred;
mod daemon;
mod deploy;
mod faults;
mod hostile;
mod package;
mod rotator;
mod support;
mod systemd;
