//! The AWS clients of a round, the counter of API calls, and how SDK errors read.
//!
//! Endpoints and credentials come from the SDK's standard chain, so tests and the
//! demo point the rotator at moto with `AWS_ENDPOINT_URL` (or the per-service
//! `AWS_ENDPOINT_URL_SSM` / `AWS_ENDPOINT_URL_STS`) and `AWS_ACCESS_KEY_ID`...,
//! exactly as for any other SDK program. Retries use the SDK's adaptive mode:
//! exponential backoff with jitter, plus a client-side rate limiter that slows down
//! when the service answers `ThrottlingException`.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ssm::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;

use crate::config::Config;

/// Operations and HTTP attempts per API, shared by the SSM and STS clients.
#[derive(Debug, Clone, Default)]
pub struct ApiCounter {
    counts: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
}

impl ApiCounter {
    fn bump(&self, cfg: &ConfigBag, operation: bool) {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return;
        };
        let key = format!(
            "{}:{}",
            metadata.service().to_ascii_lowercase(),
            metadata.name()
        );
        if let Ok(mut counts) = self.counts.lock() {
            let entry = counts.entry(key).or_default();
            if operation {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }

    /// Operations per API (`ssm:SendCommand`), then HTTP attempts per API.
    pub fn snapshot(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let counts = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        let calls = counts.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        let attempts = counts.iter().map(|(k, v)| (k.clone(), v.1)).collect();
        (calls, attempts)
    }
}

impl Intercept for ApiCounter {
    fn name(&self) -> &'static str {
        "aovis-api-counter"
    }

    // Once per operation, after the operation's metadata is in the config bag
    // (it is not yet in `read_before_execution`).
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, true);
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, false);
        Ok(())
    }
}

/// The clients a round uses.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Systems Manager.
    pub ssm: aws_sdk_ssm::Client,
    /// Security Token Service.
    pub sts: aws_sdk_sts::Client,
    /// What they called.
    pub counter: ApiCounter,
}

/// Loads the SDK's shared configuration (region, credentials, endpoints from the
/// environment) with adaptive retry.
pub async fn load_sdk_config(config: &Config) -> SdkConfig {
    // 100 ms, not the SDK's 1 s, as first backoff: a 5xx then costs a host a
    // fraction of a second instead of a second (Retry Behavior 2.1 uses 50 ms for
    // non-throttling errors). Throttled retries are paced by the adaptive rate
    // limiter, which delays them to the rate the service accepts.
    let retry = RetryConfig::adaptive()
        .with_max_attempts(config.max_attempts)
        .with_initial_backoff(Duration::from_millis(100));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry);
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    loader.load().await
}

impl Clients {
    /// Clients from a loaded SDK config, counting every call.
    pub fn new(sdk: &SdkConfig) -> Self {
        let counter = ApiCounter::default();
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(sdk)
                .interceptor(counter.clone())
                .build(),
        );
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(sdk)
                .interceptor(counter.clone())
                .build(),
        );
        Self { ssm, sts, counter }
    }

    /// Clients made elsewhere (tests use mocked clients).
    #[cfg(test)]
    pub fn from_parts(ssm: aws_sdk_ssm::Client, sts: aws_sdk_sts::Client) -> Self {
        Self {
            ssm,
            sts,
            counter: ApiCounter::default(),
        }
    }
}

/// What an AWS error means for the round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Only this host or binding is affected.
    Host,
    /// Every call would fail the same way: stop the round.
    Fatal,
}

/// Error codes that mean the whole round is misconfigured (or the region is wrong).
const FATAL_CODES: &[&str] = &[
    "InvalidDocument",
    "InvalidDocumentVersion",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];

/// One line describing an SDK error: `Code: message` for a service error, else the
/// error's cause chain (connection refused, DNS failure...). No newline.
pub fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug,
{
    let text = match err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => DisplayErrorContext(err).to_string(),
            }
        }
        _ => DisplayErrorContext(err).to_string(),
    };
    one_line(&text, 400)
}

/// Whether an SDK error stops the round. A connection problem is not: under load
/// one connection may reset while the others work. An unreachable endpoint (wrong
/// region, no network) is caught by the round's first call instead.
pub fn classify<E, R>(err: &SdkError<E, R>) -> ErrorKind
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            if FATAL_CODES.contains(&code) {
                ErrorKind::Fatal
            } else {
                ErrorKind::Host
            }
        }
        _ => ErrorKind::Host,
    }
}

/// Whether the service refused for lack of permission.
pub fn is_access_denied<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug,
{
    err.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "AccessDenied" || code == "AccessDeniedException")
}

/// Text safe for a one-line report field: control characters become spaces, and
/// it is cut to `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push_str("...");
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_strips_controls_and_cuts() {
        assert_eq!(one_line("a\nb\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc...");
    }
}
