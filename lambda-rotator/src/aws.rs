//! The AWS clients of a round, the counter of API calls, and how SDK errors read.
//!
//! Endpoints and credentials come from the SDK's standard chain, so tests and the
//! demo point the rotator at moto with `AWS_ENDPOINT_URL` (or the per-service
//! `AWS_ENDPOINT_URL_SSM` / `AWS_ENDPOINT_URL_STS`) and `AWS_ACCESS_KEY_ID`...,
//! exactly as for any other SDK program.
//!
//! # Retries and pacing
//!
//! Every call but one retries in the SDK's adaptive mode: exponential backoff with
//! jitter, plus a client-side rate limiter that slows down when the service answers
//! `ThrottlingException`. The exception is the delivery `ssm:SendCommand`, the one
//! call a round makes once per host and the one SSM throttles at fleet scale. The
//! SDK's limiter cuts its rate to 0.7x on every throttle and climbs back slowly, so
//! after a throttle storm it sends far below what SSM accepts. Delivery sends
//! therefore go through [`Clients::ssm_send`], a client with the SDK's retries
//! turned off, paced by our own [`Pacer`] and retried by the round
//! (`round::DeliverShared::send`): one limiter, which sees every throttle, instead
//! of two fighting.
//!
//! The [`Pacer`] finds the rate SSM accepts (it differs per account and region and
//! is published nowhere) the way TCP finds a path's capacity: slots evenly spaced
//! at the current rate (never a burst), a slow start that doubles the rate every
//! second until the first throttle (then a cut to 0.7x), then additive increase
//! (5% of the rate found per second back up to just under it, 1% above) and a cut
//! to 0.9x on a throttle, at most once per window of sends made at the old rate,
//! skipping one slot so the service's bucket refills. Slots are not handed out
//! ahead: a waiting send asks again when its turn comes, so a new rate applies to
//! every waiting send at once. The rate grows only while sends wait for their
//! slot, so a round held back by something else does not build up a rate it
//! never tried. It is ours rather than a crate's (`governor` was the candidate):
//! `governor` enforces a fixed quota, and replacing it on every throttle and
//! success would be more code than this state machine, which is unit-tested on a
//! made-up clock against a simulated SSM bucket.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ssm::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};

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
    /// Systems Manager without SDK retries, for the paced delivery `SendCommand`
    /// (see the module docs).
    pub ssm_send: aws_sdk_ssm::Client,
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
        let ssm_send = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(sdk)
                .retry_config(RetryConfig::disabled())
                .interceptor(counter.clone())
                .build(),
        );
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(sdk)
                .interceptor(counter.clone())
                .build(),
        );
        Self {
            ssm,
            ssm_send,
            sts,
            counter,
        }
    }

    /// Clients made elsewhere (tests use mocked clients).
    #[cfg(test)]
    pub fn from_parts(ssm: aws_sdk_ssm::Client, sts: aws_sdk_sts::Client) -> Self {
        // Like `new`: the delivery sends are retried by the round, not the SDK.
        let ssm_send = aws_sdk_ssm::Client::from_conf(
            ssm.config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Self {
            ssm_send,
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

/// What the round does after a failed delivery `SendCommand` (whose client does
/// not retry by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRetry {
    /// SSM throttled it: tell the [`Pacer`], then send again in a new slot.
    Throttled,
    /// A 5xx, a timeout or a dropped connection: back off, then send again. SSM may
    /// have created the command before the answer was lost; a second command is
    /// then refused by the agent as a replay, which the round recognizes.
    Transient,
    /// Anything else: the host fails with the error.
    No,
}

/// Error codes SSM and STS use for throttling (the SDK's own list).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Error codes that mean "try again" whatever the HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
];

/// Classifies a failed call for the round's own retry.
pub fn send_retry<E>(err: &SdkError<E, HttpResponse>) -> SendRetry
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            if THROTTLING_CODES.contains(&code) {
                SendRetry::Throttled
            } else if TRANSIENT_CODES.contains(&code) || service.raw().status().is_server_error() {
                SendRetry::Transient
            } else {
                SendRetry::No
            }
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => SendRetry::Transient,
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            SendRetry::Transient
        }
        _ => SendRetry::No,
    }
}

/// Paces the delivery `ssm:SendCommand` (module docs: why and how). Pure logic:
/// every method takes the time from the caller, so tests drive it on a made-up
/// clock.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<PacerState>,
}

#[derive(Debug, Clone)]
struct PacerState {
    /// Sends per second allowed now.
    rate: f64,
    /// The earliest start of the next slot.
    next: Instant,
    /// Until the first throttle the rate doubles every second.
    slow_start: bool,
    /// Slots before this were handed out before the last cut: their throttles were
    /// answered by that cut already.
    cut_boundary: Option<Instant>,
    /// The rate at the last throttle: the limit is about there.
    reference: f64,
}

/// One send's turn.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// The slot's time (the send starts then, or a little after).
    pub at: Instant,
    /// Whether the caller had to wait for it (the pacer was the limit).
    paced: bool,
}

impl Pacer {
    /// Where the search starts: low enough not to storm a small account, and slow
    /// start reaches 100/s in about 2.3 s.
    pub const START_RATE: f64 = 20.0;
    /// Never slower: one host a second still finishes a small fleet.
    pub const MIN_RATE: f64 = 1.0;
    /// Never faster, whatever SSM accepts.
    pub const MAX_RATE: f64 = 2000.0;
    /// The cut on a throttle after slow start.
    const CUT: f64 = 0.9;
    /// The cut on the first throttle, which ends slow start. Slow start overshoots
    /// while the service's burst allowance drains (about 1.4x with a burst of a
    /// tenth of a second's sends); a deeper cut would cost seconds of climbing
    /// back, a shallower one more throttles.
    const SLOW_START_CUT: f64 = 0.7;
    /// Additive increase per second below the rate of the last throttle, as a
    /// share of that rate: back there about 2 s after a cut, whatever the limit.
    const CLIMB_SHARE: f64 = 0.05;
    /// Where the quick climb after a cut stops, as a share of the throttled rate.
    const REFERENCE_SHARE: f64 = 0.97;
    /// Additive increase per second above it: probing slowly wastes few slots on
    /// throttles.
    const PROBE_SHARE: f64 = 0.01;
    /// The smallest additive increase, sends per second per second.
    const MIN_CLIMB: f64 = 0.1;

    /// A pacer at [`Self::START_RATE`].
    pub fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(PacerState {
                rate: Self::START_RATE,
                next: now,
                slow_start: true,
                cut_boundary: None,
                reference: Self::MAX_RATE,
            }),
        }
    }

    /// Takes the next slot if its time has come: `Ok(slot)`, and the caller sends
    /// at once. Otherwise `Err(wait)`: the caller sleeps that long and asks again,
    /// so a rate that changed meanwhile applies to every waiting send (slots are
    /// not handed out ahead at an old rate). `waited` says whether the caller has
    /// waited already, that is, whether the pacer is what holds sends back.
    pub fn acquire(&self, now: Instant, waited: bool) -> Result<Slot, Duration> {
        let Ok(mut state) = self.state.lock() else {
            return Ok(Slot {
                at: now,
                paced: false,
            });
        };
        if now < state.next {
            return Err(state.next - now);
        }
        let spacing = Duration::from_secs_f64(1.0 / state.rate);
        // A waiter woken a little late takes the slot it was woken for, so timer
        // lateness does not lower the rate; after an idle spell the slot is at
        // most one spacing back, so sends never burst.
        let at = state.next.max(now.checked_sub(spacing).unwrap_or(now));
        state.next = at + spacing;
        Ok(Slot { at, paced: waited })
    }

    /// The send of `slot` was accepted.
    pub fn accepted(&self, slot: &Slot) {
        if !slot.paced {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            // One more per success doubles the rate in a second; `climb / rate`
            // per success adds `climb` in a second: quickly back to the rate of the
            // last throttle, then a slow probe above it (the limit may have grown).
            let step = if state.slow_start {
                1.0
            } else {
                let share = if state.rate < state.reference {
                    Self::CLIMB_SHARE
                } else {
                    Self::PROBE_SHARE
                };
                (state.reference * share).max(Self::MIN_CLIMB) / state.rate
            };
            state.rate = (state.rate + step).min(Self::MAX_RATE);
        }
    }

    /// The send of `slot` was throttled.
    pub fn throttled(&self, slot: &Slot) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state
            .cut_boundary
            .is_some_and(|boundary| slot.at < boundary)
        {
            return;
        }
        let cut = if state.slow_start {
            Self::SLOW_START_CUT
        } else {
            Self::CUT
        };
        // The limit is a little below the rate that was throttled: climb back
        // quickly to just under it, then probe slowly.
        state.reference = state.rate * Self::REFERENCE_SHARE;
        state.rate = (state.rate * cut).max(Self::MIN_RATE);
        state.slow_start = false;
        // Skip one slot: the service's bucket is empty now, and the next send at
        // the old spacing would be throttled too (and cut the rate again).
        let pause = Duration::from_secs_f64(1.0 / state.rate);
        state.next += pause;
        state.cut_boundary = Some(state.next);
    }

    /// The current rate, sends per second.
    pub fn rate(&self) -> f64 {
        self.state.lock().map_or(Self::MIN_RATE, |state| state.rate)
    }
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

    fn at(base: Instant, seconds: f64) -> Instant {
        base + Duration::from_secs_f64(seconds)
    }

    /// Waits for a slot like the round does: asks, sleeps what it is told, asks
    /// again. Returns the slot and the time it was taken.
    fn wait_for_slot(pacer: &Pacer, mut now: Instant) -> (Slot, Instant) {
        let mut waited = false;
        loop {
            match pacer.acquire(now, waited) {
                Ok(slot) => return (slot, now),
                Err(wait) => {
                    waited = true;
                    now += wait;
                }
            }
        }
    }

    #[test]
    fn slots_are_evenly_spaced_and_an_idle_spell_earns_no_burst() {
        let base = Instant::now();
        let pacer = Pacer::new(base);
        let spacing = Duration::from_secs_f64(1.0 / Pacer::START_RATE);
        let ms = Duration::from_millis;
        assert_eq!(pacer.acquire(base, false).unwrap().at, base);
        assert_eq!(pacer.acquire(base, false).unwrap_err(), spacing);
        let (second, taken) = wait_for_slot(&pacer, base);
        assert_eq!((second.at, taken), (base + spacing, base + spacing));
        // Woken 10 ms late: the schedule holds (the next slot is one spacing after
        // the one it was woken for, not after the late wake-up).
        let late = base + 2 * spacing + ms(10);
        assert_eq!(pacer.acquire(late, true).unwrap().at, base + 2 * spacing);
        assert_eq!(pacer.acquire(late, true).unwrap_err(), spacing - ms(10));
        // Ten seconds idle, then three callers at once: at most one slot of
        // catching up, then one per spacing.
        let later = at(base, 10.0);
        assert_eq!(pacer.acquire(later, false).unwrap().at, later - spacing);
        assert_eq!(pacer.acquire(later, false).unwrap().at, later);
        assert_eq!(pacer.acquire(later, false).unwrap_err(), spacing);
    }

    #[test]
    fn slow_start_doubles_the_rate_per_second_of_paced_sends_only() {
        let base = Instant::now();
        let pacer = Pacer::new(base);
        // Sends that never waited (the pacer was not the limit) teach nothing.
        for i in 0..100 {
            let slot = pacer.acquire(at(base, f64::from(i)), false).unwrap();
            pacer.accepted(&slot);
        }
        assert_eq!(pacer.rate(), Pacer::START_RATE);
        // A second of sends that waited for their slot doubles it (the first of
        // the 21 comes after an idle spell and does not wait).
        let mut now = at(base, 200.0);
        for _ in 0..21 {
            let (slot, taken) = wait_for_slot(&pacer, now);
            pacer.accepted(&slot);
            now = taken;
        }
        assert!(
            (pacer.rate() - 2.0 * Pacer::START_RATE).abs() < 1.01,
            "{}",
            pacer.rate()
        );
    }

    #[test]
    fn a_burst_of_throttles_from_one_window_cuts_the_rate_once() {
        let base = Instant::now();
        let pacer = Pacer::new(base);
        let mut now = base;
        let mut slots = Vec::new();
        for _ in 0..10 {
            let (slot, taken) = wait_for_slot(&pacer, now);
            slots.push(slot);
            now = taken;
        }
        for slot in &slots {
            pacer.throttled(slot);
        }
        let after_first = Pacer::START_RATE * Pacer::SLOW_START_CUT;
        assert_eq!(pacer.rate(), after_first);
        // A send taken after the cut is throttled too: the new rate is still too
        // high, cut again (0.9x now that slow start is over).
        let (late, taken) = wait_for_slot(&pacer, now);
        pacer.throttled(&late);
        assert!((pacer.rate() - after_first * Pacer::CUT).abs() < 1e-9);
        // Never below the floor.
        now = taken;
        for _ in 0..200 {
            let (slot, taken) = wait_for_slot(&pacer, now);
            pacer.throttled(&slot);
            now = taken;
        }
        assert_eq!(pacer.rate(), Pacer::MIN_RATE);
    }

    /// A server that accepts `rate` sends per second with a bucket of `burst`, like
    /// bench/rotator_standin.py and (by its documented behaviour) SSM.
    struct Bucket {
        rate: f64,
        burst: f64,
        tokens: f64,
        stamp: Instant,
    }

    impl Bucket {
        fn take(&mut self, now: Instant) -> bool {
            let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            self.stamp = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    /// Answers in flight: (arrives at, slot, accepted).
    type InFlight = std::collections::VecDeque<(Instant, Slot, bool)>;

    /// Hands the pacer every answer that has arrived by `now`.
    fn settle(pacer: &Pacer, in_flight: &mut InFlight, now: Instant) {
        while in_flight
            .front()
            .is_some_and(|(arrives, _, _)| *arrives <= now)
        {
            if let Some((_, done, ok)) = in_flight.pop_front() {
                if ok {
                    pacer.accepted(&done);
                } else {
                    pacer.throttled(&done);
                }
            }
        }
    }

    /// Sends `hosts` deliveries through a pacer against a server limit it is not
    /// told, with `latency` before each answer arrives and demand always waiting;
    /// returns (wall time / floor, throttles per host).
    fn simulate(limit: f64, hosts: u32, latency: f64) -> (f64, f64) {
        let base = Instant::now();
        let pacer = Pacer::new(base);
        let mut server = Bucket {
            rate: limit,
            burst: (limit / 10.0).max(1.0),
            tokens: (limit / 10.0).max(1.0),
            stamp: base,
        };
        let mut in_flight = InFlight::new();
        let (mut delivered, mut throttles) = (0_u32, 0_u32);
        let mut now = base;
        while delivered < hosts {
            // The next sender waits for its slot; answers that arrive meanwhile are
            // handed to the pacer first.
            let mut waited = false;
            let slot = loop {
                settle(&pacer, &mut in_flight, now);
                match pacer.acquire(now, waited) {
                    Ok(slot) => break slot,
                    Err(wait) => {
                        waited = true;
                        now += wait;
                    }
                }
            };
            settle(&pacer, &mut in_flight, now);
            let ok = server.take(now);
            if ok {
                delivered += 1;
            } else {
                throttles += 1;
            }
            in_flight.push_back((at(now, latency), slot, ok));
        }
        let wall = now.duration_since(base).as_secs_f64();
        (
            wall / (f64::from(hosts) / limit),
            f64::from(throttles) / f64::from(hosts),
        )
    }

    #[test]
    fn the_pacer_finds_an_unknown_limit_and_stays_near_it() {
        // (name, SSM's limit per second, hosts, answer latency in seconds, most
        // wall time allowed as a multiple of hosts/limit, most throttles per host).
        // The slow account is the worst case for any pacer: a bucket of one token
        // and answers that take a whole slot, so every cut costs the send already
        // on its way too.
        let cases = [
            ("bench account", 100.0, 10_000, 0.02, 1.08, 0.02),
            ("generous account", 1000.0, 100_000, 0.05, 1.08, 0.02),
            ("slow account, slow answers", 5.0, 600, 0.2, 1.25, 0.15),
        ];
        for (name, limit, hosts, latency, most_wall, most_throttled) in cases {
            let (ratio, throttled) = simulate(limit, hosts, latency);
            assert!(
                ratio <= most_wall,
                "{name}: wall time {ratio:.3} x the floor"
            );
            assert!(
                throttled <= most_throttled,
                "{name}: {throttled:.3} throttles per host"
            );
        }
    }

    #[test]
    fn failed_sends_are_classified_for_the_rounds_own_retry() {
        use aws_sdk_ssm::operation::send_command::SendCommandError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        fn service(code: &str, status: u16) -> SdkError<SendCommandError, HttpResponse> {
            SdkError::service_error(
                SendCommandError::generic(ErrorMetadata::builder().code(code).build()),
                HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty()),
            )
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let cases: Vec<(&str, SdkError<SendCommandError, HttpResponse>, SendRetry)> = vec![
            (
                "throttled",
                service("ThrottlingException", 400),
                SendRetry::Throttled,
            ),
            (
                "throttled, other code",
                service("TooManyRequestsException", 429),
                SendRetry::Throttled,
            ),
            (
                "500",
                service("InternalServerError", 500),
                SendRetry::Transient,
            ),
            (
                "503 with an unknown code",
                service("Whatever", 503),
                SendRetry::Transient,
            ),
            (
                "timeout code on a 400",
                service("RequestTimeout", 400),
                SendRetry::Transient,
            ),
            (
                "connection reset",
                SdkError::dispatch_failure(ConnectorError::io(io.into())),
                SendRetry::Transient,
            ),
            (
                "timeout",
                SdkError::timeout_error("slow"),
                SendRetry::Transient,
            ),
            (
                "deregistered node",
                service("InvalidInstanceId", 400),
                SendRetry::No,
            ),
            (
                "denied",
                service("AccessDeniedException", 400),
                SendRetry::No,
            ),
            (
                "missing document",
                service("InvalidDocument", 400),
                SendRetry::No,
            ),
            (
                "not a connection problem",
                SdkError::dispatch_failure(ConnectorError::user("bad endpoint".into())),
                SendRetry::No,
            ),
        ];
        for (name, err, expected) in cases {
            assert_eq!(send_retry(&err), expected, "{name}");
        }
    }

    #[test]
    fn one_line_strips_controls_and_cuts() {
        assert_eq!(one_line("a\nb\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc...");
    }
}
