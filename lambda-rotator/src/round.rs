//! One rotation round, in five steps:
//!
//! 1. **Preflight**: `ssm:DescribeDocument` on the configured document. A missing
//!    document, a missing permission, bad credentials or an unreachable endpoint
//!    (wrong region) stop the round here with one message.
//! 2. **Discover**: `ssm:DescribeInstanceInformation` per binding (tag filters or
//!    instance ids, 50 per page, every page). Online nodes go on; others are
//!    reported `skipped_offline`; named ids SSM does not know are `failed`. With
//!    `--shard I/N` only the shard's hosts stay.
//! 3. **Recipients**: `ssm:GetParameters`, 10 names per call, for
//!    `<prefix><instance id>`. A host without one is **enrolled**: one
//!    `ssm:SendCommand` (`action=enroll`) per 50 hosts, its output's first line
//!    checked as an age X25519 recipient and stored with `ssm:PutParameter`
//!    (`String`, never overwriting: trust on first use, through SSM, which only that
//!    node can answer).
//! 4. **Deliver**, at most `concurrency` hosts at once: `sts:AssumeRole` with
//!    `RoleSessionName` `aovis-<instance id>` (so CloudTrail names the host), seal
//!    the envelope, one `ssm:SendCommand` per host (`action=receive`; payloads
//!    differ per host, so commands cannot be shared). In Lambda no host starts after
//!    the start cut-off; those are reported `not_reached`.
//! 5. **Confirm**: `ssm:ListCommandInvocations` filtered by `DocumentName` and
//!    `InvokedAfter` (the oldest unfinished command's own `RequestedDateTime`, so
//!    the rotator's clock does not matter), 50 per page, with `Details` for the
//!    output. Sweeps run while sending and afterwards with growing, jittered
//!    intervals, until every command is final (`Success`, `Failed`, `TimedOut`,
//!    `Cancelled`) or the confirm timeout passes.
//!
//! The round's serial is the Unix time of its start in milliseconds: it grows with
//! every round as long as rounds start at least a millisecond apart and the clock
//! does not step back, and every envelope of one round carries the same serial.
//!
//! A failure is confined to what it concerns: one host (a refused receive, an
//! `InvalidInstanceId`), one binding (`AccessDenied` on `AssumeRole` fails that
//! binding's hosts without calling STS again), or the round (the errors of step 1,
//! or any error code that means the credentials or the document are wrong). Every
//! (host, binding) pair ends in the report with one outcome.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use age::x25519::Recipient;
use aovis_formats::envelope::Envelope;
use aovis_formats::time::{format_expiration, parse_timestamp};
use aovis_formats::{Credentials, SecretString};
use aws_sdk_ssm::types::{
    CommandFilter, CommandFilterKey, InstanceInformationStringFilter, ParameterType,
};
use aws_smithy_types::date_time::Format;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::aws::{classify, describe, is_access_denied, one_line, Clients, ErrorKind};
use crate::config::{Binding, Config, Targets};
use crate::progress::Progress;
use crate::report::{HostReport, Outcome, Report, ReportParts};
use crate::seal::{parse_recipient, recipient_from_enroll_output, seal};
use crate::shard::Shard;

/// The time source, injected so deadline logic can be tested. Only `main` and the
/// Lambda handler pass the real clock.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(std::time::SystemTime::now())
    }
}

/// How often confirmation sweeps run.
#[derive(Debug, Clone, Copy)]
pub struct PollTiming {
    /// First sweep after the last command was sent.
    pub first: Duration,
    /// Longest interval; also the interval while commands are still being sent.
    pub max: Duration,
}

impl Default for PollTiming {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }
}

/// What the caller decides about a round.
pub struct RoundSettings {
    /// The metrics dimension: the Lambda function name, else `cron`.
    pub rotator: String,
    /// Only this shard's hosts.
    pub shard: Option<Shard>,
    /// No host starts at or after this time (Lambda: the deadline minus a margin).
    pub stop_starting_at: Option<DateTime<Utc>>,
    /// Nothing waits past this time (Lambda: just before the deadline).
    pub hard_deadline: Option<DateTime<Utc>>,
    /// Sweep timing.
    pub poll: PollTiming,
    /// Progress on stderr.
    pub progress: Progress,
}

/// Runs one round and returns its report. Never fails as a whole: an early stop is
/// the report's `error`, and every host is in it.
pub async fn run(
    config: Arc<Config>,
    clients: Clients,
    clock: Arc<dyn Clock>,
    settings: RoundSettings,
) -> Report {
    let started_at = clock.now();
    let serial = u64::try_from(started_at.timestamp_millis()).unwrap_or(0);
    let mut round = Round {
        config,
        clients,
        clock,
        settings,
        serial,
        entries: Vec::new(),
    };
    info!(serial, shard = ?round.settings.shard.map(|s| s.to_string()), "round starting");
    let error = round.run_steps().await.err();
    if let Some(message) = &error {
        warn!(error = %message, "round stopped early");
    }
    round.settings.progress.finish();
    let finished_at = round.clock.now();
    let (api_calls, api_attempts) = round.clients.counter.snapshot();
    let stop_reason = error.clone();
    let hosts = round
        .entries
        .into_iter()
        .map(|entry| entry.into_report(stop_reason.as_deref()))
        .collect();
    Report::new(
        ReportParts {
            serial,
            started_at,
            finished_at,
            rotator: round.settings.rotator,
            shard: round.settings.shard.map(|s| s.to_string()),
            api_calls,
            api_attempts,
            error,
        },
        hosts,
    )
}

/// One (host, binding) pair on its way through the round.
#[derive(Debug)]
struct Entry {
    instance_id: String,
    binding: usize,
    profile: String,
    enrolled: bool,
    outcome: Option<(Outcome, Option<String>)>,
    command_id: Option<String>,
}

impl Entry {
    fn finish(&mut self, outcome: Outcome, reason: Option<String>) {
        if self.outcome.is_none() {
            self.outcome = Some((outcome, reason));
        }
    }

    /// An entry the round never finished is failed, with the round's stop reason
    /// when it has one: no host leaves the report silently.
    fn into_report(self, stop: Option<&str>) -> HostReport {
        let (outcome, reason) = self.outcome.unwrap_or_else(|| {
            let reason = match stop {
                Some(stop) => format!("round stopped before this host was done: {stop}"),
                None => "round ended before this host was done".to_owned(),
            };
            (Outcome::Failed, Some(reason))
        });
        HostReport {
            instance_id: self.instance_id,
            profile: self.profile,
            binding: self.binding + 1,
            outcome,
            reason,
            command_id: self.command_id,
        }
    }
}

struct Round {
    config: Arc<Config>,
    clients: Clients,
    clock: Arc<dyn Clock>,
    settings: RoundSettings,
    serial: u64,
    entries: Vec<Entry>,
}

/// A managed node as `DescribeInstanceInformation` lists it.
struct Node {
    instance_id: String,
    ping_status: String,
}

/// A command that has not reached a final state on some of its nodes.
struct PendingCommand {
    requested_at: DateTime<Utc>,
    /// Node -> (entries waiting on it, last status seen).
    waiting: HashMap<String, (Vec<usize>, String)>,
}

/// A command invocation that reached a final state.
struct Finished {
    entries: Vec<usize>,
    command_id: String,
    instance_id: String,
    status: String,
    output: String,
}

/// Run Command states after which nothing changes.
const FINAL_STATES: &[&str] = &["Success", "Failed", "TimedOut", "Cancelled"];

impl Round {
    async fn run_steps(&mut self) -> Result<(), String> {
        self.preflight().await?;
        self.discover().await?;
        self.settings.progress.start(self.entries.len() as u64);
        for entry in &self.entries {
            if entry.outcome.is_some() {
                self.settings
                    .progress
                    .host_done(entry.outcome.as_ref().map(|o| o.0));
            }
        }
        let recipients = self.recipients().await?;
        let recipients = self.enroll(recipients).await?;
        self.deliver(recipients).await
    }

    fn past(&self, limit: Option<DateTime<Utc>>) -> bool {
        limit.is_some_and(|limit| self.clock.now() >= limit)
    }

    async fn preflight(&mut self) -> Result<(), String> {
        let document = &self.config.document;
        match self
            .clients
            .ssm
            .describe_document()
            .name(document)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let region = self
                    .clients
                    .ssm
                    .config()
                    .region()
                    .map_or_else(|| "(none)".to_owned(), ToString::to_string);
                Err(format!(
                    "SSM document `{document}` is not usable in region {region} (deploy \
                     lambda-rotator/ssm/Aovis-DeliverCredentials.json there and allow \
                     ssm:DescribeDocument): {}",
                    describe(&err)
                ))
            }
        }
    }

    async fn discover(&mut self) -> Result<(), String> {
        let config = Arc::clone(&self.config);
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (index, binding) in config.bindings.iter().enumerate() {
            let nodes = self.describe_nodes(binding).await?;
            let mut listed: HashSet<String> = HashSet::new();
            for node in nodes {
                listed.insert(node.instance_id.clone());
                if !self.in_shard(&node.instance_id) {
                    continue;
                }
                let mut entry = Entry {
                    instance_id: node.instance_id.clone(),
                    binding: index,
                    profile: binding.profile.to_string(),
                    enrolled: false,
                    outcome: None,
                    command_id: None,
                };
                let key = (node.instance_id.clone(), binding.profile.to_string());
                if let Some(first) = seen.get(&key) {
                    entry.finish(
                        Outcome::Failed,
                        Some(format!(
                            "binding #{} also delivers profile \"{}\" to this host; one \
                             profile can come from one binding only",
                            first + 1,
                            binding.profile
                        )),
                    );
                } else {
                    seen.insert(key, index);
                    if node.ping_status != "Online" {
                        entry.finish(
                            Outcome::SkippedOffline,
                            Some(format!(
                                "SSM reports the node {} (PingStatus)",
                                node.ping_status
                            )),
                        );
                    }
                }
                self.entries.push(entry);
            }
            if let Targets::InstanceIds(ids) = &binding.targets {
                for id in ids {
                    if !listed.contains(id) && self.in_shard(id) {
                        self.entries.push(Entry {
                            instance_id: id.clone(),
                            binding: index,
                            profile: binding.profile.to_string(),
                            enrolled: false,
                            outcome: Some((
                                Outcome::Failed,
                                Some(
                                    "SSM does not list this managed node in this account \
                                      and region (DescribeInstanceInformation)"
                                        .to_owned(),
                                ),
                            )),
                            command_id: None,
                        });
                    }
                }
            }
        }
        info!(hosts = self.entries.len(), "targets discovered");
        Ok(())
    }

    fn in_shard(&self, instance_id: &str) -> bool {
        self.settings
            .shard
            .is_none_or(|shard| shard.contains(instance_id))
    }

    /// Every node a binding targets, online or not.
    async fn describe_nodes(&self, binding: &Binding) -> Result<Vec<Node>, String> {
        let filter_sets: Vec<Vec<InstanceInformationStringFilter>> = match &binding.targets {
            Targets::Tags(tags) => vec![tags
                .iter()
                .map(|(key, values)| string_filter(&format!("tag:{key}"), values))
                .collect::<Result<_, _>>()?],
            // The InstanceIds filter takes at most 50 values.
            Targets::InstanceIds(ids) => ids
                .chunks(50)
                .map(|chunk| string_filter("InstanceIds", chunk).map(|f| vec![f]))
                .collect::<Result<_, _>>()?,
        };
        let mut nodes = Vec::new();
        for filters in filter_sets {
            let mut token: Option<String> = None;
            loop {
                let result = self
                    .clients
                    .ssm
                    .describe_instance_information()
                    .set_filters(Some(filters.clone()))
                    .max_results(50)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|err| {
                        format!(
                            "{}: ssm:DescribeInstanceInformation failed: {}",
                            binding.label(),
                            describe(&err)
                        )
                    })?;
                for info in result.instance_information_list() {
                    if let Some(id) = info.instance_id() {
                        nodes.push(Node {
                            instance_id: id.to_owned(),
                            ping_status: info
                                .ping_status()
                                .map_or_else(|| "Unknown".to_owned(), |s| s.as_str().to_owned()),
                        });
                    }
                }
                match result.next_token() {
                    Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                    _ => break,
                }
            }
        }
        Ok(nodes)
    }

    /// Instance ids of online entries still to be handled.
    fn open_instance_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.outcome.is_none())
            .map(|e| e.instance_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn fail_host(&mut self, instance_id: &str, reason: &str) {
        for entry in self
            .entries
            .iter_mut()
            .filter(|e| e.instance_id == instance_id)
        {
            if entry.outcome.is_none() {
                entry.finish(Outcome::Failed, Some(reason.to_owned()));
                self.settings.progress.host_done(Some(Outcome::Failed));
            }
        }
    }

    /// Looks every open host's recipient up, 10 names per call, a few calls at once.
    /// `None` means the host has none yet.
    async fn recipients(&mut self) -> Result<HashMap<String, Option<Recipient>>, String> {
        let ids = self.open_instance_ids();
        let prefix = self.config.parameter_prefix.clone();
        let limit = Arc::new(Semaphore::new(self.config.concurrency));
        let mut tasks = JoinSet::new();
        for chunk in ids.chunks(10) {
            let names: Vec<String> = chunk.iter().map(|id| format!("{prefix}{id}")).collect();
            let ssm = self.clients.ssm.clone();
            let limit = Arc::clone(&limit);
            let chunk = chunk.to_vec();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let result = ssm.get_parameters().set_names(Some(names)).send().await;
                (chunk, result)
            });
        }
        let mut found: HashMap<String, Option<Recipient>> = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((chunk, result)) = joined else {
                continue;
            };
            match result {
                Err(err) => {
                    if is_access_denied(&err) || classify(&err) == ErrorKind::Fatal {
                        return Err(format!(
                            "ssm:GetParameters on {prefix}* failed: {}",
                            describe(&err)
                        ));
                    }
                    let reason = format!("could not read the host's recipient: {}", describe(&err));
                    for id in &chunk {
                        self.fail_host(id, &reason);
                    }
                }
                Ok(output) => {
                    let values: HashMap<&str, &str> = output
                        .parameters()
                        .iter()
                        .filter_map(|p| Some((p.name()?, p.value()?)))
                        .collect();
                    for id in chunk {
                        let name = format!("{prefix}{id}");
                        match values.get(name.as_str()) {
                            None => {
                                found.insert(id, None);
                            }
                            Some(value) => match parse_recipient(value) {
                                Ok(recipient) => {
                                    found.insert(id, Some(recipient));
                                }
                                Err(_) => self.fail_host(
                                    &id,
                                    &format!(
                                        "the parameter {name} does not hold an age X25519 \
                                         recipient; delete it to enroll the host again"
                                    ),
                                ),
                            },
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// Enrolls the hosts without a recipient and stores what they answer.
    async fn enroll(
        &mut self,
        found: HashMap<String, Option<Recipient>>,
    ) -> Result<HashMap<String, Recipient>, String> {
        let mut recipients: HashMap<String, Recipient> = HashMap::new();
        let mut needed: Vec<String> = Vec::new();
        for (id, recipient) in found {
            match recipient {
                Some(recipient) => {
                    recipients.insert(id, recipient);
                }
                None => needed.push(id),
            }
        }
        if needed.is_empty() {
            return Ok(recipients);
        }
        needed.sort();
        info!(hosts = needed.len(), "enrolling hosts without a recipient");
        let mut pending: HashMap<String, PendingCommand> = HashMap::new();
        for chunk in needed.chunks(50) {
            if self.past(self.settings.stop_starting_at) {
                break;
            }
            let sent = self
                .clients
                .ssm
                .send_command()
                .document_name(&self.config.document)
                .set_instance_ids(Some(chunk.to_vec()))
                .parameters("action", vec!["enroll".to_owned()])
                .comment("aovis: enroll host key")
                .send()
                .await;
            match sent {
                Err(err) => {
                    if classify(&err) == ErrorKind::Fatal {
                        return Err(format!("ssm:SendCommand failed: {}", describe(&err)));
                    }
                    let reason =
                        format!("enrollment not sent: ssm:SendCommand: {}", describe(&err));
                    for id in chunk {
                        self.fail_host(id, &reason);
                    }
                }
                Ok(output) => {
                    let Some((command_id, requested_at)) = command_of(output.command()) else {
                        for id in chunk {
                            self.fail_host(
                                id,
                                "enrollment: SendCommand answered without a command id",
                            );
                        }
                        continue;
                    };
                    let waiting = chunk
                        .iter()
                        .map(|id| (id.clone(), (Vec::new(), "Pending".to_owned())))
                        .collect();
                    pending.insert(
                        command_id,
                        PendingCommand {
                            requested_at,
                            waiting,
                        },
                    );
                }
            }
        }
        let mut tasks: JoinSet<Sent> = JoinSet::new();
        let finished = self.confirm(&mut pending, &mut tasks, None).await?;
        for done in finished {
            if done.status != "Success" {
                let reason = format!(
                    "enrollment {}",
                    invocation_reason(&done.status, &done.output)
                );
                self.fail_host(&done.instance_id, &reason);
                continue;
            }
            let Ok((line, recipient)) = recipient_from_enroll_output(&done.output) else {
                self.fail_host(
                    &done.instance_id,
                    "enrollment: aovis-agent enroll did not print an age X25519 recipient",
                );
                continue;
            };
            let name = format!("{}{}", self.config.parameter_prefix, done.instance_id);
            let stored = self
                .clients
                .ssm
                .put_parameter()
                .name(&name)
                .value(&line)
                .r#type(ParameterType::String)
                .overwrite(false)
                .description("aovis host recipient (age X25519, public), stored at enrollment")
                .send()
                .await;
            match stored {
                Ok(_) => {
                    info!(instance_id = %done.instance_id, parameter = %name, "host enrolled");
                    for entry in self
                        .entries
                        .iter_mut()
                        .filter(|e| e.instance_id == done.instance_id)
                    {
                        entry.enrolled = true;
                    }
                    recipients.insert(done.instance_id, recipient);
                }
                Err(err) => {
                    if classify(&err) == ErrorKind::Fatal {
                        return Err(format!("ssm:PutParameter failed: {}", describe(&err)));
                    }
                    let reason = format!("enrollment: could not store {name}: {}", describe(&err));
                    self.fail_host(&done.instance_id, &reason);
                }
            }
        }
        Ok(recipients)
    }

    /// Delivers to every open entry and confirms the commands.
    async fn deliver(&mut self, recipients: HashMap<String, Recipient>) -> Result<(), String> {
        let shared = Arc::new(DeliverShared {
            clients: self.clients.clone(),
            config: Arc::clone(&self.config),
            clock: Arc::clone(&self.clock),
            serial: self.serial,
            stop_starting_at: self.settings.stop_starting_at,
            fatal: Mutex::new(None),
            denied_bindings: Mutex::new(HashMap::new()),
        });
        let recipients = Arc::new(recipients);
        // Tasks are spawned as others finish, never more than `concurrency` at a
        // time: a task holds an SDK call's future (kilobytes), and 10,000 of them
        // spawned up front would cost tens of MiB for nothing.
        let mut queue: VecDeque<Next> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.outcome.is_none())
            .filter_map(|(index, entry)| {
                let recipient = recipients.get(&entry.instance_id)?.clone();
                Some((index, entry.instance_id.clone(), entry.binding, recipient))
            })
            .collect();
        let for_tasks = Arc::clone(&shared);
        let spawn = move |tasks: &mut JoinSet<Sent>, next: Next| {
            let shared = Arc::clone(&for_tasks);
            let (index, instance_id, binding, recipient) = next;
            tasks.spawn(async move {
                let result = shared.deliver_one(binding, &instance_id, &recipient).await;
                Sent {
                    entry: index,
                    result,
                }
            });
        };
        let mut tasks: JoinSet<Sent> = JoinSet::new();
        while tasks.len() < self.config.concurrency {
            let Some(next) = queue.pop_front() else { break };
            spawn(&mut tasks, next);
        }
        let mut feeder = Feeder {
            queue,
            spawn: Box::new(spawn),
        };
        for entry in &mut self.entries {
            if entry.outcome.is_none() && !recipients.contains_key(&entry.instance_id) {
                if self
                    .settings
                    .stop_starting_at
                    .is_some_and(|t| self.clock.now() >= t)
                {
                    entry.finish(
                        Outcome::NotReached,
                        Some("the deadline came before enrollment".into()),
                    );
                    self.settings.progress.host_done(Some(Outcome::NotReached));
                } else {
                    entry.finish(Outcome::Failed, Some("enrollment did not complete".into()));
                    self.settings.progress.host_done(Some(Outcome::Failed));
                }
            }
        }
        let mut pending: HashMap<String, PendingCommand> = HashMap::new();
        let finished = self
            .confirm(&mut pending, &mut tasks, Some(&mut feeder))
            .await;
        if let Ok(finished) = &finished {
            for done in finished {
                let outcome = if done.status == "Success" {
                    None
                } else {
                    Some(invocation_reason(&done.status, &done.output))
                };
                for &index in &done.entries {
                    let entry = &mut self.entries[index];
                    match &outcome {
                        None => {
                            let ok = if entry.enrolled {
                                Outcome::EnrolledAndDelivered
                            } else {
                                Outcome::Delivered
                            };
                            entry.finish(ok, None);
                            self.settings.progress.host_done(Some(ok));
                        }
                        Some(reason) => {
                            entry.finish(Outcome::Failed, Some(reason.clone()));
                            self.settings.progress.host_done(Some(Outcome::Failed));
                        }
                    }
                    debug_assert_eq!(entry.command_id.as_deref(), Some(done.command_id.as_str()));
                }
            }
        }
        let fatal = shared.fatal.lock().ok().and_then(|f| f.clone());
        match (finished, fatal) {
            (Err(err), _) | (Ok(_), Some(err)) => Err(err),
            (Ok(_), None) => Ok(()),
        }
    }

    /// Waits for the delivery tasks (if any) and for every pending command, sweeping
    /// `ListCommandInvocations`. Returns the invocations that reached a final state;
    /// what never did is failed here with its last status.
    async fn confirm(
        &mut self,
        pending: &mut HashMap<String, PendingCommand>,
        tasks: &mut JoinSet<Sent>,
        mut feeder: Option<&mut Feeder>,
    ) -> Result<Vec<Finished>, String> {
        let jitter = std::collections::hash_map::RandomState::new();
        let mut finished = Vec::new();
        let mut interval = self.settings.poll.first;
        let mut next_sweep = tokio::time::Instant::now()
            + if tasks.is_empty() {
                interval
            } else {
                self.settings.poll.max
            };
        let timeout = Duration::from_secs(u64::from(self.config.confirm_timeout_seconds));
        let mut give_up = tokio::time::Instant::now() + timeout;
        loop {
            if tasks.is_empty() && pending.is_empty() {
                break;
            }
            let out_of_time =
                tokio::time::Instant::now() >= give_up || self.past(self.settings.hard_deadline);
            if tasks.is_empty() && out_of_time {
                for (command_id, command) in pending.drain() {
                    for (instance_id, (entries, status)) in command.waiting {
                        let reason = format!(
                            "command {command_id} not final within the round's wait \
                             (last status {status})"
                        );
                        if entries.is_empty() {
                            self.fail_host(&instance_id, &format!("enrollment {reason}"));
                        }
                        for index in entries {
                            self.entries[index].finish(Outcome::Failed, Some(reason.clone()));
                            self.settings.progress.host_done(Some(Outcome::Failed));
                        }
                    }
                }
                break;
            }
            tokio::select! {
                joined = tasks.join_next(), if !tasks.is_empty() => {
                    if let Some(feeder) = feeder.as_deref_mut() {
                        if let Some(next) = feeder.queue.pop_front() {
                            (feeder.spawn)(tasks, next);
                        }
                    }
                    let Some(Ok(sent)) = joined else { continue };
                    // The wait starts over from the last command sent.
                    give_up = tokio::time::Instant::now() + timeout;
                    match sent.result {
                        Ok((command_id, requested_at, instance_id)) => {
                            self.entries[sent.entry].command_id = Some(command_id.clone());
                            let command = pending.entry(command_id).or_insert_with(|| PendingCommand {
                                requested_at,
                                waiting: HashMap::new(),
                            });
                            command
                                .waiting
                                .entry(instance_id)
                                .or_insert_with(|| (Vec::new(), "Pending".to_owned()))
                                .0
                                .push(sent.entry);
                        }
                        Err((outcome, reason)) => {
                            self.entries[sent.entry].finish(outcome, Some(reason));
                            self.settings.progress.host_done(Some(outcome));
                        }
                    }
                    if tasks.is_empty() {
                        // Everything is sent: sweep soon rather than at the slow pace.
                        next_sweep = next_sweep.min(tokio::time::Instant::now() + interval);
                    }
                }
                () = tokio::time::sleep_until(next_sweep) => {
                    // Past the deadline only the running tasks are awaited (they
                    // stop at once); sweeping then would only spend API calls.
                    if !pending.is_empty() && !out_of_time {
                        match self.sweep(pending).await {
                            Ok(mut done) => finished.append(&mut done),
                            Err(message) => return Err(message),
                        }
                    }
                    let base = if tasks.is_empty() {
                        let current = interval;
                        interval = (interval.mul_f64(1.5)).min(self.settings.poll.max);
                        current
                    } else {
                        self.settings.poll.max
                    };
                    // +-20% jitter so several rotators (shards) do not poll in step.
                    let mut hasher = jitter.build_hasher();
                    hasher.write_usize(finished.len());
                    let spread = (hasher.finish() % 401) as f64 / 1000.0 + 0.8;
                    let mut wait = base.mul_f64(spread);
                    if let Some(deadline) = self.settings.hard_deadline {
                        let left = (deadline - self.clock.now()).to_std().unwrap_or_default();
                        wait = wait.min(left);
                    }
                    let wait = wait.max(Duration::from_millis(50));
                    next_sweep = tokio::time::Instant::now() + wait;
                }
            }
        }
        Ok(finished)
    }

    /// One pass over `ListCommandInvocations` since the oldest pending command.
    async fn sweep(
        &mut self,
        pending: &mut HashMap<String, PendingCommand>,
    ) -> Result<Vec<Finished>, String> {
        let Some(oldest) = pending.values().map(|c| c.requested_at).min() else {
            return Ok(Vec::new());
        };
        // A second of slack: RequestedDateTime has sub-second precision, filters not.
        let after = format_expiration(oldest - TimeDelta::seconds(1));
        let filters = vec![
            command_filter(CommandFilterKey::InvokedAfter, &after)?,
            command_filter(CommandFilterKey::DocumentName, &self.config.document)?,
        ];
        let mut finished = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .clients
                .ssm
                .list_command_invocations()
                .set_filters(Some(filters.clone()))
                .details(true)
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(err) => {
                    if is_access_denied(&err) || classify(&err) == ErrorKind::Fatal {
                        return Err(format!(
                            "ssm:ListCommandInvocations failed: {}",
                            describe(&err)
                        ));
                    }
                    // Try again at the next sweep; the wait's timeout bounds this.
                    warn!(error = %describe(&err), "confirmation sweep failed; will retry");
                    return Ok(finished);
                }
            };
            for invocation in page.command_invocations() {
                let (Some(command_id), Some(instance_id)) =
                    (invocation.command_id(), invocation.instance_id())
                else {
                    continue;
                };
                let Some(command) = pending.get_mut(command_id) else {
                    continue;
                };
                let status = invocation
                    .status()
                    .map_or("Pending", |s| s.as_str())
                    .to_owned();
                if !FINAL_STATES.contains(&status.as_str()) {
                    if let Some(waiting) = command.waiting.get_mut(instance_id) {
                        waiting.1 = status;
                    }
                    continue;
                }
                let Some((entries, _)) = command.waiting.remove(instance_id) else {
                    continue;
                };
                let output: String = invocation
                    .command_plugins()
                    .iter()
                    .filter_map(|plugin| plugin.output())
                    .collect::<Vec<_>>()
                    .join("\n");
                finished.push(Finished {
                    entries,
                    command_id: command_id.to_owned(),
                    instance_id: instance_id.to_owned(),
                    status,
                    output,
                });
                if command.waiting.is_empty() {
                    pending.remove(command_id);
                }
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(finished)
    }
}

/// A delivery not started yet: entry, instance id, binding, recipient.
type Next = (usize, String, usize, Recipient);

/// Spawns the task of one delivery.
type Spawner = Box<dyn Fn(&mut JoinSet<Sent>, Next) + Send>;

/// Starts queued deliveries as running ones finish.
struct Feeder {
    queue: VecDeque<Next>,
    spawn: Spawner,
}

/// What a delivery task hands back: the command it sent, or how it ended early.
struct Sent {
    entry: usize,
    result: Result<(String, DateTime<Utc>, String), (Outcome, String)>,
}

/// What every delivery task shares.
struct DeliverShared {
    clients: Clients,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    serial: u64,
    stop_starting_at: Option<DateTime<Utc>>,
    /// Set once something shows every further call would fail.
    fatal: Mutex<Option<String>>,
    /// Bindings whose role refused us: their other hosts are not tried.
    denied_bindings: Mutex<HashMap<usize, String>>,
}

impl DeliverShared {
    async fn deliver_one(
        &self,
        binding_index: usize,
        instance_id: &str,
        recipient: &Recipient,
    ) -> Result<(String, DateTime<Utc>, String), (Outcome, String)> {
        if let Some(fatal) = self.fatal.lock().ok().and_then(|f| f.clone()) {
            return Err((
                Outcome::Failed,
                format!("round stopped before this host: {fatal}"),
            ));
        }
        if self.stop_starting_at.is_some_and(|t| self.clock.now() >= t) {
            return Err((
                Outcome::NotReached,
                "not started: the Lambda deadline was too near".to_owned(),
            ));
        }
        let binding = &self.config.bindings[binding_index];
        if let Some(reason) = self
            .denied_bindings
            .lock()
            .ok()
            .and_then(|d| d.get(&binding_index).cloned())
        {
            return Err((Outcome::Failed, reason));
        }
        let session_name = format!("aovis-{instance_id}");
        if !is_role_session_name(&session_name) {
            return Err((
                Outcome::Failed,
                format!("RoleSessionName {session_name} breaks STS's 2-64 [\\w+=,.@-] rule"),
            ));
        }
        let assumed = self
            .clients
            .sts
            .assume_role()
            .role_arn(&binding.role_arn)
            .role_session_name(&session_name)
            .duration_seconds(i32::try_from(binding.session_duration_seconds).unwrap_or(3600))
            .set_external_id(binding.external_id.clone())
            .set_policy(binding.session_policy.clone())
            .send()
            .await;
        let credentials = match assumed {
            Ok(output) => match output.credentials.and_then(to_credentials) {
                Some(credentials) => credentials,
                None => {
                    return Err((
                        Outcome::Failed,
                        "sts:AssumeRole answered without usable credentials".to_owned(),
                    ))
                }
            },
            Err(err) => {
                let reason = format!(
                    "sts:AssumeRole on {} failed: {}",
                    binding.role_arn,
                    describe(&err)
                );
                if classify(&err) == ErrorKind::Fatal {
                    if let Ok(mut fatal) = self.fatal.lock() {
                        fatal.get_or_insert_with(|| reason.clone());
                    }
                } else if is_access_denied(&err) {
                    if let Ok(mut denied) = self.denied_bindings.lock() {
                        denied
                            .entry(binding_index)
                            .or_insert_with(|| reason.clone());
                    }
                }
                return Err((Outcome::Failed, reason));
            }
        };
        let envelope = Envelope {
            instance_id: instance_id.to_owned(),
            profile: binding.profile.clone(),
            serial: self.serial,
            issued_at: self.clock.now(),
            role_arn: binding.role_arn.clone(),
            credentials,
        };
        let payload = seal(&envelope, recipient)
            .map_err(|err| (Outcome::Failed, format!("sealing failed: {err}")))?;
        drop(envelope);
        let sent = self
            .clients
            .ssm
            .send_command()
            .document_name(&self.config.document)
            .instance_ids(instance_id)
            .parameters("action", vec!["receive".to_owned()])
            .parameters("payload", vec![payload])
            .comment(format!("aovis: deliver profile {}", binding.profile))
            .send()
            .await;
        match sent {
            Ok(output) => command_of(output.command())
                .map(|(id, at)| (id, at, instance_id.to_owned()))
                .ok_or_else(|| {
                    (
                        Outcome::Failed,
                        "SendCommand answered without a command id".to_owned(),
                    )
                }),
            Err(err) => {
                let reason = format!("ssm:SendCommand failed: {}", describe(&err));
                if classify(&err) == ErrorKind::Fatal {
                    if let Ok(mut fatal) = self.fatal.lock() {
                        fatal.get_or_insert_with(|| reason.clone());
                    }
                }
                Err((Outcome::Failed, reason))
            }
        }
    }
}

fn to_credentials(sts: aws_sdk_sts::types::Credentials) -> Option<Credentials> {
    let expiration = sts.expiration.fmt(Format::DateTime).ok()?;
    let expiration = parse_timestamp(&expiration)?;
    Some(Credentials::new(
        sts.access_key_id,
        SecretString::new(sts.secret_access_key),
        SecretString::new(sts.session_token),
        expiration,
    ))
}

fn command_of(command: Option<&aws_sdk_ssm::types::Command>) -> Option<(String, DateTime<Utc>)> {
    let command = command?;
    let id = command.command_id()?.to_owned();
    let requested = command
        .requested_date_time()
        .and_then(|t| t.fmt(Format::DateTime).ok())
        .and_then(|t| parse_timestamp(&t))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    Some((id, requested))
}

/// "Failed: aovis-agent: refused: ..." from an invocation's status and output. SSM
/// puts stderr after a `----------ERROR-------` line; the agent's one-line reason
/// is the first line there.
fn invocation_reason(status: &str, output: &str) -> String {
    let stderr = output
        .split_once("----------ERROR-------")
        .map_or(output, |(_, err)| err);
    match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!("command {status} on the host: {}", one_line(line, 300)),
        None => format!("command {status} on the host (no output)"),
    }
}

fn string_filter(key: &str, values: &[String]) -> Result<InstanceInformationStringFilter, String> {
    InstanceInformationStringFilter::builder()
        .key(key)
        .set_values(Some(values.to_vec()))
        .build()
        .map_err(|err| format!("could not build the {key} filter: {err}"))
}

fn command_filter(key: CommandFilterKey, value: &str) -> Result<CommandFilter, String> {
    CommandFilter::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(|err| format!("could not build a command filter: {err}"))
}

/// STS's rule for `RoleSessionName`: 2 to 64 of `[\w+=,.@-]`.
pub fn is_role_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

#[cfg(test)]
mod tests {
    //! Rounds against mocked SDK clients (`aws-smithy-mocks`): the deadline, failures
    //! confined to a binding, and the round-stopping errors. Whole rounds against
    //! moto live in `tests/it/rotator.rs`.

    use super::*;
    use aws_sdk_ssm::operation::describe_document::{
        DescribeDocumentError, DescribeDocumentOutput,
    };
    use aws_sdk_ssm::operation::describe_instance_information::{
        DescribeInstanceInformationError, DescribeInstanceInformationOutput,
    };
    use aws_sdk_ssm::operation::get_parameters::GetParametersOutput;
    use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
    use aws_sdk_ssm::operation::send_command::SendCommandOutput;
    use aws_sdk_ssm::types::{
        Command, CommandInvocation, CommandInvocationStatus, InstanceInformation, Parameter,
        PingStatus,
    };
    use aws_sdk_sts::operation::assume_role::{AssumeRoleError, AssumeRoleOutput};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use chrono::TimeZone;

    const SECRET: &str = "mock/Secret+Access+Key/0123456789";

    /// A clock the test moves.
    struct ManualClock(Mutex<DateTime<Utc>>);

    impl ManualClock {
        fn advance(&self, seconds: i64) {
            if let Ok(mut now) = self.0.lock() {
                *now += TimeDelta::seconds(seconds);
            }
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            self.0.lock().map(|t| *t).unwrap_or_default()
        }
    }

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    fn recipient() -> String {
        age::x25519::Identity::generate().to_public().to_string()
    }

    /// Mocks for a fleet where every node is online and enrolled, every command
    /// succeeds, and each AssumeRole moves `clock` by `assume_seconds`.
    struct Fleet {
        ssm: aws_sdk_ssm::Client,
        sts: aws_sdk_sts::Client,
        assume_denied: aws_smithy_mocks::Rule,
    }

    fn fleet(
        ids: &'static [&'static str],
        clock: Arc<ManualClock>,
        assume_seconds: i64,
        denied_role: &'static str,
        stored: Option<&'static str>,
    ) -> Fleet {
        let sent: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let good = recipient();
        let describe_document = mock!(aws_sdk_ssm::Client::describe_document)
            .then_output(|| DescribeDocumentOutput::builder().build());
        let describe =
            mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(move || {
                DescribeInstanceInformationOutput::builder()
                    .set_instance_information_list(Some(
                        ids.iter()
                            .map(|id| {
                                InstanceInformation::builder()
                                    .instance_id(*id)
                                    .ping_status(PingStatus::Online)
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            });
        let parameters =
            mock!(aws_sdk_ssm::Client::get_parameters).then_compute_output(move |req| {
                GetParametersOutput::builder()
                    .set_parameters(Some(
                        req.names()
                            .iter()
                            .map(|name| {
                                Parameter::builder()
                                    .name(name)
                                    .value(stored.map_or_else(|| good.clone(), str::to_owned))
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            });
        let record = Arc::clone(&sent);
        let send = mock!(aws_sdk_ssm::Client::send_command).then_compute_output(move |req| {
            let instance = req.instance_ids()[0].clone();
            let id = format!(
                "cmd-{}-{}",
                instance,
                record.lock().map(|s| s.len()).unwrap_or(0)
            );
            if let Ok(mut sent) = record.lock() {
                sent.push((id.clone(), instance));
            }
            SendCommandOutput::builder()
                .command(
                    Command::builder()
                        .command_id(id)
                        .requested_date_time(aws_smithy_types::DateTime::from_secs(1_795_000_000))
                        .build(),
                )
                .build()
        });
        let listed = Arc::clone(&sent);
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
            let sent = listed.lock().map(|s| s.clone()).unwrap_or_default();
            ListCommandInvocationsOutput::builder()
                .set_command_invocations(Some(
                    sent.into_iter()
                        .map(|(id, instance)| {
                            CommandInvocation::builder()
                                .command_id(id)
                                .instance_id(instance)
                                .status(CommandInvocationStatus::Success)
                                .build()
                        })
                        .collect(),
                ))
                .build()
        });
        let assume_denied = mock!(aws_sdk_sts::Client::assume_role)
            .match_requests(move |req| req.role_arn() == Some(denied_role))
            .then_error(|| {
                AssumeRoleError::generic(
                    ErrorMetadata::builder()
                        .code("AccessDenied")
                        .message("not authorized to perform sts:AssumeRole")
                        .build(),
                )
            });
        let assume = mock!(aws_sdk_sts::Client::assume_role).then_output(move || {
            clock.advance(assume_seconds);
            AssumeRoleOutput::builder()
                .credentials(
                    aws_sdk_sts::types::Credentials::builder()
                        .access_key_id("ASIAMOCK")
                        .secret_access_key(SECRET)
                        .session_token("mock-token")
                        .expiration(aws_smithy_types::DateTime::from_secs(1_795_003_600))
                        .build()
                        .unwrap(),
                )
                .build()
        });
        let ssm = mock_client!(
            aws_sdk_ssm,
            RuleMode::MatchAny,
            [&describe_document, &describe, &parameters, &send, &list]
        );
        let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&assume_denied, &assume]);
        Fleet {
            ssm,
            sts,
            assume_denied,
        }
    }

    fn settings(stop_starting_at: Option<DateTime<Utc>>) -> RoundSettings {
        RoundSettings {
            rotator: "test".into(),
            shard: None,
            stop_starting_at,
            hard_deadline: None,
            poll: PollTiming {
                first: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
            progress: Progress::hidden(),
        }
    }

    fn config(text: &str) -> Arc<Config> {
        Arc::new(Config::parse(text).unwrap())
    }

    const ONE_BINDING: &str = r#"
concurrency = 1
[[binding]]
profile = "default"
role_arn = "arn:aws:iam::111122223333:role/onprem"
targets = { tags = { Fleet = ["x"] } }
"#;

    const IDS: &[&str] = &[
        "mi-00000000000000001",
        "mi-00000000000000002",
        "mi-00000000000000003",
    ];

    #[tokio::test]
    async fn stops_starting_hosts_at_the_cutoff_and_reports_the_rest_not_reached() {
        let clock = Arc::new(ManualClock(Mutex::new(start())));
        let mocks = fleet(IDS, Arc::clone(&clock), 10, "none", None);
        let report = run(
            config(ONE_BINDING),
            Clients::from_parts(mocks.ssm, mocks.sts),
            clock,
            // Host 1 starts at 0 s, host 2 at 10 s, host 3 would start at 20 s.
            settings(Some(start() + TimeDelta::seconds(15))),
        )
        .await;
        assert_eq!(report.counts.targeted, 3, "{report:?}");
        assert_eq!(report.counts.delivered, 2, "{report:?}");
        assert_eq!(report.counts.not_reached, 1, "{report:?}");
        let late = report
            .hosts
            .iter()
            .find(|h| h.outcome == Outcome::NotReached)
            .unwrap();
        assert!(
            late.reason.as_deref().unwrap().contains("deadline"),
            "{late:?}"
        );
        assert!(late.command_id.is_none());
        assert!(report.is_failure());
        assert!(!format!("{report:?}").contains(SECRET));
    }

    #[tokio::test]
    async fn without_a_cutoff_every_host_is_delivered() {
        let clock = Arc::new(ManualClock(Mutex::new(start())));
        let mocks = fleet(IDS, Arc::clone(&clock), 10, "none", None);
        let report = run(
            config(ONE_BINDING),
            Clients::from_parts(mocks.ssm, mocks.sts),
            clock,
            settings(None),
        )
        .await;
        assert_eq!(report.counts.delivered, 3, "{report:?}");
        assert!(!report.is_failure());
        assert_eq!(report.round.serial, start().timestamp_millis() as u64);
    }

    #[tokio::test]
    async fn access_denied_on_one_binding_fails_only_its_hosts_and_stops_calling_sts() {
        let clock = Arc::new(ManualClock(Mutex::new(start())));
        let mocks = fleet(
            IDS,
            Arc::clone(&clock),
            0,
            "arn:aws:iam::111122223333:role/denied",
            None,
        );
        let two = format!(
            "{ONE_BINDING}\n[[binding]]\nprofile = \"other\"\nrole_arn = \"arn:aws:iam::111122223333:role/denied\"\ntargets = {{ tags = {{ Fleet = [\"x\"] }} }}\n"
        );
        let report = run(
            config(&two),
            Clients::from_parts(mocks.ssm, mocks.sts),
            clock,
            settings(None),
        )
        .await;
        assert_eq!(report.counts.targeted, 6);
        assert_eq!(report.counts.delivered, 3, "{report:?}");
        assert_eq!(report.counts.failed, 3, "{report:?}");
        for host in report.hosts.iter().filter(|h| h.binding == 2) {
            assert_eq!(host.outcome, Outcome::Failed);
            assert!(
                host.reason.as_deref().unwrap().contains("AccessDenied"),
                "{host:?}"
            );
        }
        assert_eq!(
            mocks.assume_denied.num_calls(),
            1,
            "one refusal is enough per binding"
        );
        assert!(report.error.is_none());
    }

    #[tokio::test]
    async fn a_malformed_stored_recipient_fails_the_host_without_enrolling_it() {
        let clock = Arc::new(ManualClock(Mutex::new(start())));
        let mocks = fleet(
            IDS,
            Arc::clone(&clock),
            0,
            "none",
            Some("age1notarecipient"),
        );
        let report = run(
            config(ONE_BINDING),
            Clients::from_parts(mocks.ssm, mocks.sts),
            clock,
            settings(None),
        )
        .await;
        assert_eq!(report.counts.failed, 3, "{report:?}");
        assert!(report.hosts[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("does not hold an age X25519 recipient"));
    }

    #[tokio::test]
    async fn round_stopping_errors_name_what_to_fix() {
        let missing_document = mock!(aws_sdk_ssm::Client::describe_document).then_error(|| {
            DescribeDocumentError::generic(
                ErrorMetadata::builder()
                    .code("InvalidDocument")
                    .message("The specified document does not exist.")
                    .build(),
            )
        });
        let found_document = mock!(aws_sdk_ssm::Client::describe_document)
            .then_output(|| DescribeDocumentOutput::builder().build());
        let denied_describe =
            mock!(aws_sdk_ssm::Client::describe_instance_information).then_error(|| {
                DescribeInstanceInformationError::generic(
                    ErrorMetadata::builder()
                        .code("AccessDeniedException")
                        .message("no ssm:DescribeInstanceInformation")
                        .build(),
                )
            });
        let cases = [
            (
                "missing document",
                mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&missing_document]),
                "SSM document `Aovis-DeliverCredentials` is not usable in region",
                "InvalidDocument: The specified document does not exist.",
            ),
            (
                "missing permission",
                mock_client!(
                    aws_sdk_ssm,
                    RuleMode::MatchAny,
                    [&found_document, &denied_describe]
                ),
                "binding #1 (profile \"default\"): ssm:DescribeInstanceInformation failed",
                "AccessDeniedException",
            ),
        ];
        for (name, ssm, first, second) in cases {
            let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, []);
            let clock = Arc::new(ManualClock(Mutex::new(start())));
            let report = run(
                config(ONE_BINDING),
                Clients::from_parts(ssm, sts),
                clock,
                settings(None),
            )
            .await;
            let error = report.error.clone().unwrap_or_default();
            assert!(
                error.contains(first) && error.contains(second),
                "{name}: {error}"
            );
            assert!(!error.contains('\n'), "{name}");
            assert!(report.is_failure(), "{name}");
        }
    }

    #[test]
    fn role_session_names_follow_sts_rules() {
        for (name, ok) in [
            ("aovis-mi-0123456789abcdef0", true),
            ("aovis-i-01234567", true),
            ("a", false),
            (&"a".repeat(65), false),
            ("aovis mi", false),
            ("aovis/mi", false),
            ("a+=,.@-_", true),
        ] {
            assert_eq!(is_role_session_name(name), ok, "{name}");
        }
    }

    #[test]
    fn invocation_reasons_take_the_agents_stderr_line() {
        let cases = [
            (
                "Failed",
                "\n----------ERROR-------\naovis-agent: refused: stale serial\n",
                "command Failed on the host: aovis-agent: refused: stale serial",
            ),
            (
                "Failed",
                "some stdout\n",
                "command Failed on the host: some stdout",
            ),
            ("TimedOut", "", "command TimedOut on the host (no output)"),
        ];
        for (status, output, expected) in cases {
            assert_eq!(invocation_reason(status, output), expected);
        }
    }
}
