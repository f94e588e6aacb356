//! `aovis-rotator`: the AWS side of aovis. It assumes one role session per host,
//! seals it to that host's own age key and delivers the ciphertext through SSM Run
//! Command with the `Aovis-DeliverCredentials` document, then confirms delivery.
//!
//! # Running it
//!
//! ```text
//! aovis-rotator rotate --config FILE [--shard I/N]
//! aovis-rotator seal --recipient age1... --instance-id mi-... --profile P
//!                    [--serial N] [--role-arn ARN]      < credentials.json
//! ```
//!
//! and as a Lambda (`provided.al2023`, this binary as `bootstrap`): when
//! `AWS_LAMBDA_RUNTIME_API` is set the binary serves Lambda events instead of
//! parsing a command line. See [`lambda`] for the event and the configuration.
//!
//! `rotate` prints two lines on stdout, the CloudWatch EMF metrics and the round
//! report ([`report`] documents both), logs on stderr, and a progress bar on stderr
//! when it is a terminal (logs: `AOVIS_LOG`, tracing's filter syntax, default
//! `warn,aovis_rotator=info`; JSON lines in Lambda). Exit status: 0 when every host was delivered or is
//! offline, 1 when a host failed or the round stopped early, 2 for a bad command
//! line, configuration or environment (one line on stderr).
//!
//! `seal` is for break-glass delivery by hand: it reads credentials JSON on stdin
//! (`credential_process` output, STS `Credentials`, or `aws sts assume-role`
//! output), and prints the base64 payload for
//! `aws ssm send-command --document-name Aovis-DeliverCredentials --parameters action=receive,payload=...`.
//! The serial defaults to the current Unix time in milliseconds, like a round's.
//!
//! # AWS
//!
//! Endpoints, region and credentials come from the SDK's standard chain
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL_STS`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`..., the Lambda role). When the rotator itself
//! runs on role credentials (a session token is present, or it is a Lambda), every
//! binding's session must be at most 3600 s: role chaining caps sessions at one
//! hour, and the configuration is refused naming the binding otherwise.
//!
//! # Testing
//!
//! Unit tests sit at the bottom of each module; [`round`]'s run whole rounds
//! against mocked SDK clients (`aws-smithy-mocks`) with an injected clock.
//! `tests/it/rotator.rs` runs the binary against moto's server (SigV4 and IAM
//! policies checked) behind `tests/fakes/ssm_nodes.py`, the stand-in for the SSM
//! Agent side that moto lacks (its docstring says what it fakes), with the real
//! `aovis-agent` on every simulated node, then `aovis-cred` and the AWS CLI on
//! what was delivered. `bench/rotator.sh` measures a 10,000-host round.
//!
//! # Modules
//!
//! | module | holds |
//! |---|---|
//! | [`config`] | the TOML configuration and its validation |
//! | [`round`] | one rotation round: discover, look up, enroll, deliver, confirm |
//! | [`seal`] | envelope -> age -> base64; `seal`'s stdin formats |
//! | [`report`] | the round report and the EMF metrics |
//! | [`aws`] | SDK clients, API call counting, error classification |
//! | [`shard`] | `--shard I/N` |
//! | [`progress`] | the terminal progress bar |
//! | [`lambda`] | the Lambda handler |
//! | [`cli`] | the command line (`main` of the binary) |
//!
//! The binary's `main` is [`cli::main`]; the modules are public so the fuzz targets
//! under `fuzz/` drive the same parsers the binary runs.
//!
//! # Features
//!
//! `runtime` (default) holds every module that needs the AWS SDK, tokio, Lambda,
//! clap or a terminal: `aws`, `round`, `lambda`, `cli`, `progress`, and the
//! binary (`required-features`). Without it the crate is only what parses or seals
//! outside input with no I/O (`config`, `seal`, `shard`, `report`) and depends on
//! nothing heavier than `age`, `serde` and `toml`. The feature exists for `fuzz/`:
//! its targets drive these parsers and are built and run briefly on every CI run
//! (2 cores, a 30 min budget for everything), where compiling the AWS SDK and its
//! HTTP stack first would cost minutes for code the targets never call.

#[cfg(feature = "runtime")]
pub mod aws;
#[cfg(feature = "runtime")]
pub mod cli;
pub mod config;
#[cfg(feature = "runtime")]
pub mod lambda;
#[cfg(feature = "runtime")]
pub mod progress;
pub mod report;
#[cfg(feature = "runtime")]
pub mod round;
pub mod seal;
pub mod shard;
