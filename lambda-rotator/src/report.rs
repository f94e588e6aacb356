//! The round report and its CloudWatch metrics, both printed on stdout.
//!
//! A round prints two lines: first the Embedded Metric Format record, then the
//! report. One entry per (host, binding): a host that two bindings target appears
//! twice, once per profile. No entry is ever dropped; each ends in one outcome.
//!
//! Report (one JSON object, one line):
//!
//! ```json
//! {"round":{"serial":1763814000123,"started_at":"2026-11-22T12:00:00Z",
//!           "finished_at":"2026-11-22T12:00:09Z","duration_ms":9312,
//!           "rotator":"cron","shard":"1/1"},
//!  "counts":{"targeted":4,"delivered":1,"enrolled_and_delivered":1,"failed":1,
//!            "not_reached":0,"skipped_offline":1},
//!  "api_calls":{"ssm:SendCommand":3,"sts:AssumeRole":2, ...},
//!  "api_attempts":{"ssm:SendCommand":4, ...},
//!  "error":null,
//!  "hosts":[{"instance_id":"mi-...","profile":"default","binding":1,
//!            "outcome":"failed","reason":"aovis-agent refused: ...",
//!            "command_id":"..."}]}
//! ```
//!
//! `api_calls` counts operations the rotator made; `api_attempts` counts HTTP
//! attempts, retries included. The delivery `ssm:SendCommand` is retried by the
//! round itself rather than the SDK (see the `aws` module), so each of its attempts,
//! throttled ones included, is both an operation and an attempt. `error` is the message of a round that stopped early
//! (missing document, missing permission, wrong region), else `null`.
//!
//! Outcomes: `delivered`; `enrolled_and_delivered` (the host had no recipient, was
//! enrolled this round, then delivered); `failed` (with the reason); `not_reached`
//! (the Lambda deadline came first); `skipped_offline` (SSM reports the node not
//! online). `reason` is `null` only for the two delivered outcomes.
//!
//! A delivered entry may carry a `note`, absent otherwise. Today there is one:
//! [`NOTE_EARLIER_ATTEMPT`]. SSM sometimes creates a command and
//! then loses its answer (HTTP 5xx); the rotator sends again, the host stores the
//! first command's envelope and refuses the second as a replay of the same serial
//! (`aovis-agent receive` exit code 7). The host holds this round's credentials,
//! so the entry is delivered; `command_id` is the refused retry's, the one the
//! rotator knows. A refusal naming a serial other than this round's stays
//! `failed`.
//!
//! Metrics (namespace `Aovis`, dimension set `[["Rotator"]]`, `Rotator` = the
//! Lambda function name, else `cron`; unit Count): `HostsTargeted` (entries),
//! `HostsDelivered` (both delivered outcomes), `HostsEnrolled`, `HostsFailed`,
//! `HostsNotReached` (`not_reached` plus `skipped_offline`: hosts left without
//! fresh credentials that no failure explains).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use aovis_formats::time::format_expiration;

/// The note on an entry whose delivery command was refused as a replay of this
/// round's own serial (module docs).
pub const NOTE_EARLIER_ATTEMPT: &str =
    "delivered by an earlier attempt of this round's command: SSM answered that \
     attempt with an error after creating it, the host stored it, and refused the \
     retry as a replay of the same serial";

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The host stored the credentials.
    Delivered,
    /// The host was enrolled this round, then stored the credentials.
    EnrolledAndDelivered,
    /// Something went wrong; see the reason.
    Failed,
    /// The round ran out of time before starting this host.
    NotReached,
    /// SSM reports the node offline.
    SkippedOffline,
}

/// One (host, binding) entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    /// The managed node.
    pub instance_id: String,
    /// The profile delivered.
    pub profile: String,
    /// 1-based number of the binding in the config.
    pub binding: usize,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, unless delivered.
    pub reason: Option<String>,
    /// The Run Command id of the delivery, when one was sent.
    pub command_id: Option<String>,
    /// Something a reader should know about a delivered entry; left out of the
    /// JSON when there is nothing to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Counts per outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Entries in the report.
    pub targeted: u64,
    /// Delivered to an enrolled host.
    pub delivered: u64,
    /// Enrolled, then delivered.
    pub enrolled_and_delivered: u64,
    /// Failed.
    pub failed: u64,
    /// Not started before the deadline.
    pub not_reached: u64,
    /// Offline.
    pub skipped_offline: u64,
}

/// Round identity and timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundInfo {
    /// The serial every envelope of the round carries.
    pub serial: u64,
    /// Round start, UTC.
    pub started_at: String,
    /// Round end, UTC.
    pub finished_at: String,
    /// Wall time.
    pub duration_ms: u64,
    /// The metrics dimension value: Lambda function name or `cron`.
    pub rotator: String,
    /// The shard, when the round ran one.
    pub shard: Option<String>,
}

/// A round's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Identity and timing.
    pub round: RoundInfo,
    /// Counts per outcome.
    pub counts: Counts,
    /// Operations per API (`ssm:SendCommand`).
    pub api_calls: BTreeMap<String, u64>,
    /// HTTP attempts per API, retries included.
    pub api_attempts: BTreeMap<String, u64>,
    /// Why the round stopped early, if it did.
    pub error: Option<String>,
    /// One entry per (host, binding).
    pub hosts: Vec<HostReport>,
}

/// Everything but the hosts' list, gathered by the round.
pub struct ReportParts {
    /// Serial of the round.
    pub serial: u64,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Metrics dimension.
    pub rotator: String,
    /// The shard.
    pub shard: Option<String>,
    /// Operations per API.
    pub api_calls: BTreeMap<String, u64>,
    /// Attempts per API.
    pub api_attempts: BTreeMap<String, u64>,
    /// Early stop.
    pub error: Option<String>,
}

impl Report {
    /// Builds the report, counting outcomes; hosts are sorted for stable output.
    pub fn new(parts: ReportParts, mut hosts: Vec<HostReport>) -> Self {
        hosts.sort_by(|a, b| (a.binding, &a.instance_id).cmp(&(b.binding, &b.instance_id)));
        let mut counts = Counts {
            targeted: hosts.len() as u64,
            ..Counts::default()
        };
        for host in &hosts {
            match host.outcome {
                Outcome::Delivered => counts.delivered += 1,
                Outcome::EnrolledAndDelivered => counts.enrolled_and_delivered += 1,
                Outcome::Failed => counts.failed += 1,
                Outcome::NotReached => counts.not_reached += 1,
                Outcome::SkippedOffline => counts.skipped_offline += 1,
            }
        }
        let duration_ms = (parts.finished_at - parts.started_at)
            .num_milliseconds()
            .max(0) as u64;
        Self {
            round: RoundInfo {
                serial: parts.serial,
                started_at: format_expiration(parts.started_at),
                finished_at: format_expiration(parts.finished_at),
                duration_ms,
                rotator: parts.rotator,
                shard: parts.shard,
            },
            counts,
            api_calls: parts.api_calls,
            api_attempts: parts.api_attempts,
            error: parts.error,
            hosts,
        }
    }

    /// True when the round must exit non-zero (cron) or return an error (Lambda):
    /// it stopped early, a host failed, or the deadline left hosts not reached.
    /// Offline hosts alone do not fail a round: nothing could be done for them.
    pub fn is_failure(&self) -> bool {
        self.error.is_some() || self.counts.failed > 0 || self.counts.not_reached > 0
    }

    /// Why a failed round failed, for its one error line: the error that stopped it,
    /// else the counts.
    pub fn failure_summary(&self) -> String {
        let c = &self.counts;
        self.error.clone().unwrap_or_else(|| {
            format!(
                "{} of {} hosts failed, {} not reached",
                c.failed, c.targeted, c.not_reached
            )
        })
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// The CloudWatch Embedded Metric Format record, one line.
    pub fn emf_line(&self, timestamp: DateTime<Utc>) -> String {
        let c = &self.counts;
        let metrics = [
            ("HostsTargeted", c.targeted),
            ("HostsDelivered", c.delivered + c.enrolled_and_delivered),
            ("HostsEnrolled", c.enrolled_and_delivered),
            ("HostsFailed", c.failed),
            ("HostsNotReached", c.not_reached + c.skipped_offline),
        ];
        let mut record = json!({
            "_aws": {
                "Timestamp": timestamp.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": "Aovis",
                    "Dimensions": [["Rotator"]],
                    "Metrics": metrics
                        .iter()
                        .map(|(name, _)| json!({"Name": name, "Unit": "Count"}))
                        .collect::<Vec<_>>(),
                }],
            },
            "Rotator": self.round.rotator,
        });
        if let Some(object) = record.as_object_mut() {
            for (name, value) in metrics {
                object.insert(name.to_owned(), json!(value));
            }
        }
        record.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn host(id: &str, outcome: Outcome) -> HostReport {
        HostReport {
            instance_id: id.into(),
            profile: "default".into(),
            binding: 1,
            outcome,
            reason: (!matches!(outcome, Outcome::Delivered | Outcome::EnrolledAndDelivered))
                .then(|| "why".into()),
            command_id: None,
            note: None,
        }
    }

    fn sample(hosts: Vec<HostReport>) -> Report {
        let start = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        Report::new(
            ReportParts {
                serial: 1_763_812_800_000,
                started_at: start,
                finished_at: start + chrono::TimeDelta::milliseconds(1500),
                rotator: "cron".into(),
                shard: None,
                api_calls: BTreeMap::from([("ssm:SendCommand".into(), 3)]),
                api_attempts: BTreeMap::from([("ssm:SendCommand".into(), 4)]),
                error: None,
            },
            hosts,
        )
    }

    #[test]
    fn counts_every_outcome_and_fails_on_failed_or_not_reached() {
        let report = sample(vec![
            host("mi-3", Outcome::Failed),
            host("mi-1", Outcome::Delivered),
            host("mi-2", Outcome::EnrolledAndDelivered),
            host("mi-4", Outcome::SkippedOffline),
        ]);
        assert_eq!(
            report.counts,
            Counts {
                targeted: 4,
                delivered: 1,
                enrolled_and_delivered: 1,
                failed: 1,
                not_reached: 0,
                skipped_offline: 1
            }
        );
        assert_eq!(report.hosts[0].instance_id, "mi-1");
        assert_eq!(report.round.duration_ms, 1500);
        assert!(report.is_failure());
        let only_offline = sample(vec![
            host("mi-1", Outcome::Delivered),
            host("mi-4", Outcome::SkippedOffline),
        ]);
        assert!(!only_offline.is_failure());
        assert!(sample(vec![host("mi-5", Outcome::NotReached)]).is_failure());
    }

    #[test]
    fn report_json_has_the_documented_schema() {
        let report = sample(vec![host("mi-3", Outcome::Failed)]);
        let value: serde_json::Value = serde_json::from_str(&report.to_json_line()).unwrap();
        assert_eq!(value["round"]["serial"], 1_763_812_800_000u64);
        assert_eq!(value["round"]["started_at"], "2026-11-22T12:00:00Z");
        assert_eq!(value["round"]["rotator"], "cron");
        assert_eq!(value["counts"]["failed"], 1);
        assert_eq!(value["api_calls"]["ssm:SendCommand"], 3);
        assert_eq!(value["api_attempts"]["ssm:SendCommand"], 4);
        assert_eq!(value["hosts"][0]["outcome"], "failed");
        assert_eq!(value["hosts"][0]["reason"], "why");
        assert!(value["error"].is_null());
    }

    #[test]
    fn emf_record_names_namespace_dimension_and_all_five_metrics() {
        let report = sample(vec![
            host("mi-1", Outcome::Delivered),
            host("mi-2", Outcome::EnrolledAndDelivered),
            host("mi-3", Outcome::Failed),
            host("mi-4", Outcome::SkippedOffline),
            host("mi-5", Outcome::NotReached),
        ]);
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 2).unwrap();
        let value: serde_json::Value = serde_json::from_str(&report.emf_line(at)).unwrap();
        let directive = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(value["_aws"]["Timestamp"], at.timestamp_millis());
        assert_eq!(directive["Namespace"], "Aovis");
        assert_eq!(directive["Dimensions"], json!([["Rotator"]]));
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["Unit"], "Count");
                m["Name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [
                "HostsTargeted",
                "HostsDelivered",
                "HostsEnrolled",
                "HostsFailed",
                "HostsNotReached"
            ]
        );
        assert_eq!(value["Rotator"], "cron");
        assert_eq!(value["HostsTargeted"], 5);
        assert_eq!(value["HostsDelivered"], 2);
        assert_eq!(value["HostsEnrolled"], 1);
        assert_eq!(value["HostsFailed"], 1);
        assert_eq!(value["HostsNotReached"], 2);
    }
}
