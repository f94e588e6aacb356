//! Lambda mode: the binary as `bootstrap` on `provided.al2023`, invoked by an
//! EventBridge Scheduler schedule.
//!
//! - **Configuration**: env `AOVIS_ROTATOR_CONFIG` holds the TOML text, or env
//!   `AOVIS_ROTATOR_CONFIG_PARAMETER` names an SSM parameter that holds it, a
//!   `String` or a `SecureString` (read with decryption, at every invocation, so an
//!   edit takes effect at the next round). The first wins when both are set. A
//!   missing parameter or a bad config fails the invocation with one line naming
//!   the parameter; a TOML syntax error names a byte offset rather than quoting
//!   the line, so a broken line pasted by mistake is not echoed into the logs.
//! - **Event**: a JSON object; an optional `"shard": "I/N"` selects a shard, and
//!   everything else is ignored (Scheduler may add its own fields).
//! - **Deadline**: no host starts later than the deadline minus a reserve for
//!   confirmation (30 s, or a third of the time left when less than 90 s remain);
//!   waiting stops 3 s before the deadline (less for tiny budgets) so the report
//!   still prints. Hosts not started are reported `not_reached`.
//! - **Result**: the EMF record and the report on stdout (CloudWatch Logs), and
//!   the report as the invocation's result; an error naming the counts when any
//!   host failed or was not reached, or the round stopped early, so the
//!   invocation counts as failed and Scheduler's retry policy and alarms see it.
//! - **Metrics dimension**: `Rotator` = `AWS_LAMBDA_FUNCTION_NAME`.
//! - **Logs**: JSON on stderr.

use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

use crate::config::Config;
use crate::progress::Progress;
use crate::round::{self, Clock, PollTiming, RoundSettings, SystemClock};
use crate::shard::Shard;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves Lambda invocations until the runtime stops.
pub fn main() -> ExitCode {
    crate::cli::init_logging(true);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aovis-rotator: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(lambda_runtime::run(service_fn(handle))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aovis-rotator: Lambda runtime stopped: {err}");
            ExitCode::from(2)
        }
    }
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, BoxError> {
    let shard = shard_of(&event.payload)?;
    let config = load_config().await?;
    let (config, clients) = crate::cli::prepare(config, true)
        .await
        .map_err(|err| crate::cli::chain(&err))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let deadline = DateTime::<Utc>::from(event.context.deadline());
    let (stop_starting_at, hard_deadline) = cutoffs(clock.now(), deadline);
    let rotator = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "lambda".to_owned());
    let settings = RoundSettings {
        rotator,
        shard,
        stop_starting_at: Some(stop_starting_at),
        hard_deadline: Some(hard_deadline),
        poll: PollTiming::default(),
        progress: Progress::hidden(),
    };
    let report = round::run(config, clients, Arc::clone(&clock), settings).await;
    crate::cli::print_report(&report, clock.now())?;
    if report.is_failure() {
        let why = report.failure_summary();
        return Err(format!("round {} failed: {why}", report.round.serial).into());
    }
    Ok(serde_json::to_value(&report)?)
}

/// The event's optional `"shard": "I/N"`; everything else is ignored.
fn shard_of(event: &Value) -> Result<Option<Shard>, BoxError> {
    match event.get("shard") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(
            text.parse::<Shard>()
                .map_err(|err| format!("event field `shard`: {err}"))?,
        )),
        Some(_) => Err("event field `shard` must be a string like \"2/4\"".into()),
    }
}

async fn load_config() -> Result<Config, BoxError> {
    if let Ok(text) = std::env::var("AOVIS_ROTATOR_CONFIG") {
        return Config::parse(&text)
            .map_err(|err| format!("invalid configuration in AOVIS_ROTATOR_CONFIG: {err}").into());
    }
    let Ok(name) = std::env::var("AOVIS_ROTATOR_CONFIG_PARAMETER") else {
        return Err("set AOVIS_ROTATOR_CONFIG (TOML) or AOVIS_ROTATOR_CONFIG_PARAMETER (an SSM parameter name)".into());
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let output = ssm
        .get_parameter()
        .name(&name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|err| {
            format!(
                "cannot read the configuration parameter {name}: {}",
                crate::aws::describe(&err)
            )
        })?;
    let text = output
        .parameter()
        .and_then(|p| p.value())
        .ok_or_else(|| format!("the configuration parameter {name} has no value"))?;
    Config::parse(text)
        .map_err(|err| format!("invalid configuration in parameter {name}: {err}").into())
}

/// When to stop starting hosts, and when to stop waiting, for a deadline.
pub fn cutoffs(now: DateTime<Utc>, deadline: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let budget = (deadline - now).max(TimeDelta::zero());
    let reserve = TimeDelta::seconds(30).min(budget / 3);
    let finish = TimeDelta::seconds(3).min(budget / 10);
    (deadline - reserve, deadline - finish)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cutoffs_keep_a_reserve_for_confirmation_and_the_report() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        let cases = [
            ("15 min budget", 900, 870, 897),
            ("60 s budget", 60, 40, 57),
            ("9 s budget", 9, 6, 8),
            ("already past", -5, -5, -5),
        ];
        for (name, budget, stop, hard) in cases {
            let deadline = now + TimeDelta::seconds(budget);
            let (s, h) = cutoffs(now, deadline);
            // For tiny budgets the fractions round down to whole milliseconds.
            assert_eq!((s - now).num_seconds(), stop, "{name}: stop");
            assert_eq!((h - now).num_seconds(), hard, "{name}: hard");
        }
    }

    #[test]
    fn event_shard_is_optional_and_other_fields_are_ignored() {
        type Expected = Result<Option<&'static str>, &'static str>;
        let cases: [(&str, Value, Expected); 6] = [
            ("empty event", serde_json::json!({}), Ok(None)),
            (
                "scheduler fields",
                serde_json::json!({"time": "2026-11-22T12:00:00Z", "id": "x"}),
                Ok(None),
            ),
            ("null shard", serde_json::json!({"shard": null}), Ok(None)),
            (
                "shard",
                serde_json::json!({"shard": "2/4"}),
                Ok(Some("2/4")),
            ),
            (
                "bad shard",
                serde_json::json!({"shard": "5/4"}),
                Err("event field `shard`: a shard is I/N"),
            ),
            (
                "numeric shard",
                serde_json::json!({"shard": 2}),
                Err("must be a string"),
            ),
        ];
        for (name, event, expected) in cases {
            match (shard_of(&event), expected) {
                (Ok(shard), Ok(want)) => {
                    assert_eq!(shard.map(|s| s.to_string()).as_deref(), want, "{name}")
                }
                (Err(err), Err(want)) => assert!(err.to_string().contains(want), "{name}: {err}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
