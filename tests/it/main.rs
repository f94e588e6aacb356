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
//! | `cred` | `aovis-cred`: output, every refusal, botocore, aws-config, the AWS CLI against moto |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod cred;
mod support;
