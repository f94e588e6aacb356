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
//!    node can answer); its entries are then delivered like the others.
//! 4. **Deliver**, at most `concurrency` hosts at once: `sts:AssumeRole` with
//!    `RoleSessionName` `aovis-<instance id>` (so CloudTrail names the host), seal
//!    the envelope, one `ssm:SendCommand` per host (`action=receive`; payloads
//!    differ per host, so commands cannot be shared). In Lambda no host starts after
//!    the start cut-off; those are reported `not_reached`.
//! 5. **Confirm**: `ssm:ListCommandInvocations` filtered by `DocumentName` and
//!    `InvokedAfter` (the oldest unfinished command's own `RequestedDateTime`, so
//!    the rotator's clock does not matter), 50 per page, with `Details` for the
//!    output. Sweeps run every `PollTiming::sending` while sending, then with
//!    growing, jittered intervals from `PollTiming::first` up to `PollTiming::max`,
//!    until every command is final
//!    (`Success`, `Failed`, `TimedOut`, `Cancelled`) or the confirm timeout passes.
//!
//! # A pipeline, not five passes
//!
//! At fleet scale a round's wall time is the delivery `SendCommand`s at the rate
//! SSM accepts; everything else must overlap with them. Steps 2 and 3 run as one
//! task (`Discovery`) that lists a page, looks its 50 recipients up (5
//! `GetParameters` at once) and hands each (host, binding) pair to the delivery
//! loop through a bounded channel (at most `DISCOVERY_AHEAD` pairs ahead), so the
//! first host is delivered about three API latencies after the preflight, not
//! after the whole fleet is listed. The delivery loop (`Round::drive`) is one
//! `select!` over three things: the next pair from discovery (taken only while
//! fewer than `concurrency` deliveries wait to start, and at any pace after the
//! Lambda start cut-off, when what it hands over ends `not_reached` at once), the
//! running tasks (a delivery, or storing an enrolled host's recipient), and the
//! next sweep. Hosts
//! without a recipient are enrolled in batches of 50 as discovery finds them (the
//! last batch when discovery ends); when an enroll command finishes, the recipient
//! is stored and the host's entries join the delivery queue. If discovery fails
//! (say `AccessDenied` on a later binding), the round stops: nothing new starts,
//! running deliveries finish and their commands are still confirmed, and every
//! entry not started ends `failed` with the round's error.
//!
//! # Pacing
//!
//! The delivery `SendCommand` is the call SSM throttles. It goes through a client
//! without SDK retries and waits for a slot from the round's [`Pacer`], which
//! finds the rate SSM accepts (slow start, then additive increase and a 0.9x cut
//! per throttle; `aws` module docs) instead of a configured or hard-coded rate.
//! A throttled send is sent again in a new slot (up to 3 x `max_attempts` times);
//! a 5xx, timeout or dropped connection is sent again after a jittered backoff
//! (up to `max_attempts` times). Sweeps and the other calls are not paced: they
//! are a few per hundred hosts, and keep the SDK's adaptive retry.
//!
//! # A command created twice
//!
//! SSM can create a command and lose its answer (HTTP 5xx); the rotator then sends
//! the same sealed payload again and SSM creates a second command. The host runs
//! the first, stores serial S, and refuses the second with `aovis-agent receive`'s
//! exit code 7 and `refused: replayed delivery for profile 'P': serial S is not
//! greater than the cached S`. When S is this round's serial (only this round
//! seals S for that host and profile), the host holds this round's credentials:
//! the entry is delivered, with the note [`NOTE_EARLIER_ATTEMPT`]. A refusal
//! naming any other serial (a stale delivery: the host has a newer one) stays
//! `failed` with the agent's reason.
//!
//! The round's serial is the Unix time of its start in milliseconds: it grows with
//! every round as long as rounds start at least a millisecond apart and the clock
//! does not step back, and every envelope of one round carries the same serial.
//!
//! A failure is confined to what it concerns: one host (a refused receive, an
//! `InvalidInstanceId`), one binding (`AccessDenied` on `AssumeRole` fails that
//! binding's hosts without calling STS again), or the round (the errors of step 1,
//! or any error code that means the credentials or the document are wrong). Every
//! (host, binding) pair discovery lists ends in the report with one outcome; if
//! the Lambda deadline comes before discovery has listed every target, the round's
//! error says so.

use std::collections::hash_map::RandomState;
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
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::aws::{
    classify, describe, is_access_denied, one_line, send_retry, Clients, ErrorKind, Pacer,
    SendRetry,
};
use crate::config::{Binding, Config, Targets};
use crate::progress::Progress;
use crate::report::{HostReport, Outcome, Report, ReportParts, NOTE_EARLIER_ATTEMPT};
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
    /// Longest interval after the last command was sent.
    pub max: Duration,
    /// The interval while commands are still being sent. A sweep lists every
    /// invocation since the oldest unfinished command, so sweeping often while
    /// sending costs few extra pages, and leaves few pages (seconds, at fleet
    /// scale) for the sweep after the last command.
    pub sending: Duration,
}

impl Default for PollTiming {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(10),
            sending: Duration::from_secs(2),
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
    /// Said about a delivered entry (the report's `note`).
    note: Option<String>,
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
            note: self.note,
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

/// What a Run Command command was sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `action=enroll`, up to 50 hosts.
    Enroll,
    /// `action=receive`, one host.
    Deliver,
}

/// A command that has not reached a final state on some of its nodes.
struct PendingCommand {
    kind: Kind,
    requested_at: DateTime<Utc>,
    /// Node -> (entries waiting on it, last status seen). Enroll commands wait
    /// with no entries: the host's entries wait in [`Enrollment::Waiting`].
    waiting: HashMap<String, (Vec<usize>, String)>,
}

/// A command invocation that reached a final state.
struct Finished {
    kind: Kind,
    entries: Vec<usize>,
    command_id: String,
    instance_id: String,
    status: String,
    output: String,
    /// The step's exit code, when SSM reports one.
    response_code: Option<i32>,
}

/// A host's enrollment in this round.
enum Enrollment {
    /// Entries waiting for the host's recipient; the enroll command is batched or
    /// sent.
    Waiting(Vec<usize>),
    /// Enrolled this round: later entries of the host are delivered at once.
    Done(Recipient),
    /// Not enrolled: later entries of the host end the same way.
    Ended(Outcome, String),
}

/// The delivery loop's state (step 4 and 5, fed by discovery).
struct Flow {
    /// Discovery's channel; `None` once discovery ended or the round stopped.
    found: Option<mpsc::Receiver<Found>>,
    /// Deliveries ready to start, at most about `concurrency` of them.
    queue: VecDeque<Next>,
    /// Running deliveries and recipient stores, at most `concurrency`.
    tasks: JoinSet<Done>,
    /// Commands sent and not final yet, by command id.
    pending: HashMap<String, PendingCommand>,
    /// Hosts without a recipient, by instance id.
    enrollments: HashMap<String, Enrollment>,
    /// Hosts for the next enroll command (up to 50).
    to_enroll: Vec<String>,
    /// No sweep waits past this: the confirm timeout after the last command sent.
    give_up: tokio::time::Instant,
    /// Why the round stopped early.
    error: Option<String>,
}

/// What a task of the delivery loop hands back.
enum Done {
    /// A delivery's command (id, requested at, node), or how it ended early.
    Delivery {
        entry: usize,
        result: Result<(String, DateTime<Utc>, String), (Outcome, String)>,
    },
    /// An enrolled host's recipient, stored in Parameter Store, or why not (and
    /// whether that stops the round).
    Stored {
        instance_id: String,
        result: Result<Recipient, (bool, String)>,
    },
}

/// Run Command states after which nothing changes.
const FINAL_STATES: &[&str] = &["Success", "Failed", "TimedOut", "Cancelled"];

/// How far discovery may run ahead of delivery, in (host, binding) pairs: enough
/// that delivery never waits for a page, few enough that a Lambda cut-off leaves
/// little looked up for nothing.
const DISCOVERY_AHEAD: usize = 256;

/// `GetParameters` calls of one page in flight at once: a page of 50 hosts is 5
/// calls, well under Parameter Store's default 40 TPS.
const LOOKUP_CONCURRENCY: usize = 5;

/// `SendCommand` takes at most 50 instance ids.
const ENROLL_BATCH: usize = 50;

/// A host whose delivery SSM throttled this many times per `max_attempts` fails:
/// the pacer keeps throttles rare, so that many means the limit is being spent by
/// someone else (another shard, another tool) and this round cannot finish anyway.
const THROTTLED_SENDS_PER_ATTEMPT: u32 = 3;

/// `aovis-agent receive`'s exit code for a serial not greater than the cached one
/// (`aovis-agent --help`).
const AGENT_EXIT_NOT_NEWER: i32 = 7;

/// The line SSM puts between a step's stdout and its stderr in `Output`.
const SSM_STDERR_MARKER: &str = "----------ERROR-------";

impl Round {
    async fn run_steps(&mut self) -> Result<(), String> {
        self.preflight().await?;
        let (sender, receiver) = mpsc::channel(DISCOVERY_AHEAD);
        let discovery = Discovery {
            ssm: self.clients.ssm.clone(),
            config: Arc::clone(&self.config),
            shard: self.settings.shard,
            seen: HashMap::new(),
            looked_up: HashMap::new(),
        };
        let discovering = tokio::spawn(discovery.run(sender));
        let shared = Arc::new(DeliverShared {
            clients: self.clients.clone(),
            config: Arc::clone(&self.config),
            clock: Arc::clone(&self.clock),
            serial: self.serial,
            stop_starting_at: self.settings.stop_starting_at,
            pacer: Pacer::new(tokio::time::Instant::now().into_std()),
            fatal: Mutex::new(None),
            denied_bindings: Mutex::new(HashMap::new()),
        });
        let mut flow = Flow {
            found: Some(receiver),
            queue: VecDeque::new(),
            tasks: JoinSet::new(),
            pending: HashMap::new(),
            enrollments: HashMap::new(),
            to_enroll: Vec::new(),
            give_up: tokio::time::Instant::now() + self.confirm_timeout(),
            error: None,
        };
        self.drive(&mut flow, &shared).await;
        discovering.abort();
        info!(
            hosts = self.entries.len(),
            rate = shared.pacer.rate(),
            "round done; SendCommand rate at the end"
        );
        match flow.error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn past(&self, limit: Option<DateTime<Utc>>) -> bool {
        limit.is_some_and(|limit| self.clock.now() >= limit)
    }

    fn confirm_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.confirm_timeout_seconds))
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

    /// The delivery loop: takes what discovery finds, starts deliveries and
    /// enrollments, and sweeps for their commands' states, until every entry has
    /// its outcome or the wait is over.
    async fn drive(&mut self, flow: &mut Flow, shared: &Arc<DeliverShared>) {
        let jitter = RandomState::new();
        let mut interval = self.settings.poll.first;
        let mut next_sweep = tokio::time::Instant::now() + self.settings.poll.sending;
        let mut all_sent = false;
        loop {
            if let Some(fatal) = shared.fatal() {
                self.stop(flow, fatal);
            }
            while flow.tasks.len() < self.config.concurrency {
                let Some(next) = flow.queue.pop_front() else {
                    break;
                };
                spawn_delivery(&mut flow.tasks, shared, next);
            }
            if flow.found.is_none() && !flow.to_enroll.is_empty() {
                self.send_enrollment(flow).await;
                continue;
            }
            let sending = flow.found.is_some() || !flow.tasks.is_empty() || !flow.queue.is_empty();
            if !sending && flow.pending.is_empty() {
                break;
            }
            if sending {
                all_sent = false;
            } else if !all_sent {
                // Everything is sent: sweep soon rather than at the slow pace.
                all_sent = true;
                next_sweep = next_sweep.min(tokio::time::Instant::now() + interval);
            }
            if flow.found.is_some() && self.past(self.settings.hard_deadline) {
                self.stop(
                    flow,
                    "the deadline came before discovery listed every target; targets \
                     not listed by then are not in this report"
                        .to_owned(),
                );
                continue;
            }
            let out_of_time = tokio::time::Instant::now() >= flow.give_up
                || self.past(self.settings.hard_deadline);
            if !sending && out_of_time {
                self.abandon_pending(flow);
                break;
            }
            // After the start cut-off what discovery finds ends at once (not
            // reached), so its channel drains without waiting for room.
            let room = flow.queue.len() < self.config.concurrency
                || self.past(self.settings.stop_starting_at);
            // While discovery waits for room, wake at the cut-off to drain it.
            let until_cutoff = self
                .settings
                .stop_starting_at
                .filter(|_| flow.found.is_some() && !room)
                .and_then(|cutoff| (cutoff - self.clock.now()).to_std().ok());
            tokio::select! {
                () = tokio::time::sleep(until_cutoff.unwrap_or_default()), if until_cutoff.is_some() => {}
                found = next_found(&mut flow.found), if flow.found.is_some() && room => {
                    self.take_found(flow, found).await;
                }
                joined = flow.tasks.join_next(), if !flow.tasks.is_empty() => {
                    if let Some(Ok(done)) = joined {
                        self.task_done(flow, done);
                    }
                }
                () = tokio::time::sleep_until(next_sweep) => {
                    // Past the deadline only the running tasks are awaited (they
                    // stop at once); sweeping then would only spend API calls.
                    if !flow.pending.is_empty() && !out_of_time {
                        match self.sweep(&mut flow.pending).await {
                            Ok(done) => {
                                for finished in done {
                                    self.command_finished(flow, finished);
                                }
                            }
                            Err(message) => {
                                // Nothing can be confirmed: what waits ends with
                                // the round's error.
                                flow.pending.clear();
                                self.stop(flow, message);
                            }
                        }
                    }
                    let still_sending =
                        flow.found.is_some() || !flow.tasks.is_empty() || !flow.queue.is_empty();
                    let base = if still_sending {
                        self.settings.poll.sending
                    } else {
                        let current = interval;
                        interval = (interval.mul_f64(1.5)).min(self.settings.poll.max);
                        current
                    };
                    // +-20% jitter so several rotators (shards) do not poll in step.
                    let mut hasher = jitter.build_hasher();
                    hasher.write_usize(self.entries.len() ^ flow.pending.len());
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
    }

    /// Stops the round: nothing new starts; running deliveries finish and sent
    /// commands are still confirmed. Entries never started end with the error.
    fn stop(&mut self, flow: &mut Flow, error: String) {
        if flow.error.is_none() {
            warn!(error = %error, "stopping the round");
            flow.error = Some(error);
        }
        flow.found = None;
        flow.queue.clear();
        flow.to_enroll.clear();
    }

    /// Adds an entry to the report; returns its index.
    fn push(&mut self, entry: Entry) -> usize {
        self.settings.progress.add_targets(1);
        if let Some((outcome, _)) = &entry.outcome {
            self.settings.progress.host_done(Some(*outcome));
        }
        self.entries.push(entry);
        self.entries.len() - 1
    }

    /// Ends an entry, unless it has ended already.
    fn finish(&mut self, index: usize, outcome: Outcome, reason: Option<String>) {
        let entry = &mut self.entries[index];
        if entry.outcome.is_none() {
            entry.finish(outcome, reason);
            self.settings.progress.host_done(Some(outcome));
        }
    }

    async fn take_found(&mut self, flow: &mut Flow, found: Option<Found>) {
        let Some(found) = found else {
            // Discovery is done (its sender is gone).
            flow.found = None;
            return;
        };
        match found {
            Found::Fatal(message) => self.stop(flow, message),
            Found::Decided(entry) => {
                self.push(entry);
            }
            Found::Ready(entry, _) | Found::Unenrolled(entry)
                if self.past(self.settings.stop_starting_at) =>
            {
                let index = self.push(entry);
                self.finish(
                    index,
                    Outcome::NotReached,
                    Some("not started: the Lambda deadline was too near".to_owned()),
                );
            }
            Found::Ready(entry, recipient) => {
                let (id, binding) = (entry.instance_id.clone(), entry.binding);
                let index = self.push(entry);
                flow.queue.push_back((index, id, binding, recipient));
            }
            Found::Unenrolled(entry) => {
                let (id, binding) = (entry.instance_id.clone(), entry.binding);
                let index = self.push(entry);
                match flow.enrollments.get_mut(&id) {
                    None => {
                        flow.enrollments
                            .insert(id.clone(), Enrollment::Waiting(vec![index]));
                        flow.to_enroll.push(id);
                        if flow.to_enroll.len() >= ENROLL_BATCH {
                            self.send_enrollment(flow).await;
                        }
                    }
                    Some(Enrollment::Waiting(entries)) => entries.push(index),
                    Some(Enrollment::Done(recipient)) => {
                        let recipient = recipient.clone();
                        self.entries[index].enrolled = true;
                        flow.queue.push_back((index, id, binding, recipient));
                    }
                    Some(Enrollment::Ended(outcome, reason)) => {
                        let (outcome, reason) = (*outcome, reason.clone());
                        self.finish(index, outcome, Some(reason));
                    }
                }
            }
        }
    }

    /// Sends one enroll command for the hosts batched so far.
    async fn send_enrollment(&mut self, flow: &mut Flow) {
        let batch: Vec<String> = std::mem::take(&mut flow.to_enroll);
        if self.past(self.settings.stop_starting_at) {
            for id in batch {
                self.enrollment_ended(
                    flow,
                    &id,
                    Err((
                        Outcome::NotReached,
                        "the deadline came before enrollment".to_owned(),
                    )),
                );
            }
            return;
        }
        info!(hosts = batch.len(), "enrolling hosts without a recipient");
        let sent = self
            .clients
            .ssm
            .send_command()
            .document_name(&self.config.document)
            .set_instance_ids(Some(batch.clone()))
            .parameters("action", vec!["enroll".to_owned()])
            .comment("aovis: enroll host key")
            .send()
            .await;
        let ended = match sent {
            Err(err) => {
                if classify(&err) == ErrorKind::Fatal {
                    self.stop(flow, format!("ssm:SendCommand failed: {}", describe(&err)));
                    return;
                }
                format!("enrollment not sent: ssm:SendCommand: {}", describe(&err))
            }
            Ok(output) => match command_of(output.command()) {
                Some((command_id, requested_at)) => {
                    flow.give_up = tokio::time::Instant::now() + self.confirm_timeout();
                    let waiting = batch
                        .into_iter()
                        .map(|id| (id, (Vec::new(), "Pending".to_owned())))
                        .collect();
                    flow.pending.insert(
                        command_id,
                        PendingCommand {
                            kind: Kind::Enroll,
                            requested_at,
                            waiting,
                        },
                    );
                    return;
                }
                None => "enrollment: SendCommand answered without a command id".to_owned(),
            },
        };
        for id in batch {
            self.enrollment_ended(flow, &id, Err((Outcome::Failed, ended.clone())));
        }
    }

    /// A host's enrollment ended: its waiting entries go on to delivery, or end.
    fn enrollment_ended(
        &mut self,
        flow: &mut Flow,
        instance_id: &str,
        result: Result<Recipient, (Outcome, String)>,
    ) {
        let waiting = match flow.enrollments.remove(instance_id) {
            Some(Enrollment::Waiting(entries)) => entries,
            _ => Vec::new(),
        };
        let state = match result {
            // After a stop nothing new starts: the entries end with the round's error.
            Ok(recipient) if flow.error.is_some() => Enrollment::Done(recipient),
            Ok(recipient) => {
                for index in waiting {
                    self.entries[index].enrolled = true;
                    let binding = self.entries[index].binding;
                    flow.queue.push_back((
                        index,
                        instance_id.to_owned(),
                        binding,
                        recipient.clone(),
                    ));
                }
                Enrollment::Done(recipient)
            }
            Err((outcome, reason)) => {
                for index in waiting {
                    self.finish(index, outcome, Some(reason.clone()));
                }
                Enrollment::Ended(outcome, reason)
            }
        };
        flow.enrollments.insert(instance_id.to_owned(), state);
    }

    fn task_done(&mut self, flow: &mut Flow, done: Done) {
        match done {
            Done::Delivery {
                entry,
                result: Ok((command_id, requested_at, instance_id)),
            } => {
                // The wait starts over from the last command sent.
                flow.give_up = tokio::time::Instant::now() + self.confirm_timeout();
                self.entries[entry].command_id = Some(command_id.clone());
                flow.pending
                    .entry(command_id)
                    .or_insert_with(|| PendingCommand {
                        kind: Kind::Deliver,
                        requested_at,
                        waiting: HashMap::new(),
                    })
                    .waiting
                    .entry(instance_id)
                    .or_insert_with(|| (Vec::new(), "Pending".to_owned()))
                    .0
                    .push(entry);
            }
            Done::Delivery {
                entry,
                result: Err((outcome, reason)),
            } => self.finish(entry, outcome, Some(reason)),
            Done::Stored {
                instance_id,
                result: Ok(recipient),
            } => {
                info!(instance_id = %instance_id, "host enrolled");
                self.enrollment_ended(flow, &instance_id, Ok(recipient));
            }
            Done::Stored {
                instance_id,
                result: Err((fatal, reason)),
            } => {
                if fatal {
                    self.stop(flow, reason);
                } else {
                    self.enrollment_ended(flow, &instance_id, Err((Outcome::Failed, reason)));
                }
            }
        }
    }

    /// A command reached a final state on one node.
    fn command_finished(&mut self, flow: &mut Flow, done: Finished) {
        match done.kind {
            Kind::Enroll => self.enroll_finished(flow, done),
            Kind::Deliver => {
                let delivered = done.status == "Success";
                let replay = !delivered
                    && done.entries.iter().any(|&index| {
                        is_replay_of_this_round(
                            &done.output,
                            done.response_code,
                            &self.entries[index].profile,
                            self.serial,
                        )
                    });
                for &index in &done.entries {
                    debug_assert_eq!(
                        self.entries[index].command_id.as_deref(),
                        Some(done.command_id.as_str())
                    );
                    if delivered || replay {
                        let ok = if self.entries[index].enrolled {
                            Outcome::EnrolledAndDelivered
                        } else {
                            Outcome::Delivered
                        };
                        if replay {
                            info!(instance_id = %done.instance_id, "{NOTE_EARLIER_ATTEMPT}");
                            self.entries[index].note = Some(NOTE_EARLIER_ATTEMPT.to_owned());
                        }
                        self.finish(index, ok, None);
                    } else {
                        let reason = invocation_reason(&done.status, &done.output);
                        self.finish(index, Outcome::Failed, Some(reason));
                    }
                }
            }
        }
    }

    /// An enroll command finished on a host: check what it printed and store it.
    fn enroll_finished(&mut self, flow: &mut Flow, done: Finished) {
        let id = done.instance_id;
        if done.status != "Success" {
            let reason = format!(
                "enrollment {}",
                invocation_reason(&done.status, &done.output)
            );
            self.enrollment_ended(flow, &id, Err((Outcome::Failed, reason)));
            return;
        }
        let Ok((line, recipient)) = recipient_from_enroll_output(&done.output) else {
            self.enrollment_ended(
                flow,
                &id,
                Err((
                    Outcome::Failed,
                    "enrollment: aovis-agent enroll did not print an age X25519 recipient"
                        .to_owned(),
                )),
            );
            return;
        };
        let ssm = self.clients.ssm.clone();
        let name = format!("{}{}", self.config.parameter_prefix, id);
        flow.tasks.spawn(async move {
            let stored = ssm
                .put_parameter()
                .name(&name)
                .value(&line)
                .r#type(ParameterType::String)
                .overwrite(false)
                .description("aovis host recipient (age X25519, public), stored at enrollment")
                .send()
                .await;
            let result = match stored {
                Ok(_) => Ok(recipient),
                Err(err) if classify(&err) == ErrorKind::Fatal => {
                    Err((true, format!("ssm:PutParameter failed: {}", describe(&err))))
                }
                Err(err) => Err((
                    false,
                    format!("enrollment: could not store {name}: {}", describe(&err)),
                )),
            };
            Done::Stored {
                instance_id: id,
                result,
            }
        });
    }

    /// The wait is over: whatever is still pending fails with its last status.
    fn abandon_pending(&mut self, flow: &mut Flow) {
        let pending: Vec<(String, PendingCommand)> = flow.pending.drain().collect();
        for (command_id, command) in pending {
            for (instance_id, (entries, status)) in command.waiting {
                let reason = format!(
                    "command {command_id} not final within the round's wait \
                     (last status {status})"
                );
                match command.kind {
                    Kind::Enroll => self.enrollment_ended(
                        flow,
                        &instance_id,
                        Err((Outcome::Failed, format!("enrollment {reason}"))),
                    ),
                    Kind::Deliver => {
                        for index in entries {
                            self.finish(index, Outcome::Failed, Some(reason.clone()));
                        }
                    }
                }
            }
        }
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
                let plugins = invocation.command_plugins();
                let output: String = plugins
                    .iter()
                    .filter_map(|plugin| plugin.output())
                    .collect::<Vec<_>>()
                    .join("\n");
                // The document has one step; its exit code is the agent's. The SDK
                // reads an absent code as 0, which a failed step never has.
                let response_code = plugins
                    .iter()
                    .map(|plugin| plugin.response_code())
                    .find(|&code| code != 0);
                finished.push(Finished {
                    kind: command.kind,
                    entries,
                    command_id: command_id.to_owned(),
                    instance_id: instance_id.to_owned(),
                    status,
                    output,
                    response_code,
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

/// The next thing discovery found; `None` when it is done.
async fn next_found(found: &mut Option<mpsc::Receiver<Found>>) -> Option<Found> {
    match found {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// What discovery hands the delivery loop, page by page.
enum Found {
    /// A pair whose outcome discovery decided: offline, unknown instance id, a
    /// profile two bindings deliver, no readable recipient.
    Decided(Entry),
    /// An online pair and its host's recipient: deliver.
    Ready(Entry, Recipient),
    /// An online pair whose host has no recipient yet: enroll, then deliver.
    Unenrolled(Entry),
    /// Every further call would fail the same way: stop the round.
    Fatal(String),
}

/// A host's recipient as Parameter Store answered.
#[derive(Clone)]
enum Lookup {
    Found(Recipient),
    Missing,
    Failed(String),
}

/// Steps 2 and 3 as a task: lists each binding's nodes a page at a time, looks the
/// page's recipients up, and hands every pair to the delivery loop through a
/// bounded channel, so the first deliveries start after one page, not after the
/// whole fleet.
struct Discovery {
    ssm: aws_sdk_ssm::Client,
    config: Arc<Config>,
    shard: Option<Shard>,
    /// (instance id, profile) -> the first binding that delivers it.
    seen: HashMap<(String, String), usize>,
    /// Recipients already looked up: a host two bindings target is looked up once.
    looked_up: HashMap<String, Lookup>,
}

impl Discovery {
    async fn run(mut self, found: mpsc::Sender<Found>) {
        if let Err(message) = self.walk(&found).await {
            // A closed channel means the round is over; nobody is left to tell.
            let _ = found.send(Found::Fatal(message)).await;
        }
    }

    fn in_shard(&self, instance_id: &str) -> bool {
        self.shard.is_none_or(|shard| shard.contains(instance_id))
    }

    /// Every binding's nodes, in order. Returns early (Ok) when the delivery loop
    /// stopped listening.
    async fn walk(&mut self, found: &mpsc::Sender<Found>) -> Result<(), String> {
        let config = Arc::clone(&self.config);
        let mut total = 0_usize;
        for (index, binding) in config.bindings.iter().enumerate() {
            let mut listed: HashSet<String> = HashSet::new();
            for filters in filter_sets(binding)? {
                let mut token: Option<String> = None;
                loop {
                    let result = self
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
                    let mut page = Vec::new();
                    for info in result.instance_information_list() {
                        let Some(id) = info.instance_id() else {
                            continue;
                        };
                        listed.insert(id.to_owned());
                        if !self.in_shard(id) {
                            continue;
                        }
                        let ping = info
                            .ping_status()
                            .map_or_else(|| "Unknown".to_owned(), |s| s.as_str().to_owned());
                        page.push(self.entry(index, binding, id, &ping));
                    }
                    let open: Vec<String> = page
                        .iter()
                        .filter(|e| e.outcome.is_none())
                        .map(|e| e.instance_id.clone())
                        .collect();
                    self.look_up(&open).await?;
                    total += page.len();
                    for entry in page {
                        if found.send(self.found(entry)).await.is_err() {
                            return Ok(());
                        }
                    }
                    match result.next_token() {
                        Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                        _ => break,
                    }
                }
            }
            if let Targets::InstanceIds(ids) = &binding.targets {
                for id in ids {
                    if !listed.contains(id) && self.in_shard(id) {
                        total += 1;
                        let entry = Entry {
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
                            note: None,
                        };
                        if found.send(Found::Decided(entry)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        info!(hosts = total, "targets discovered");
        Ok(())
    }

    /// The entry of a listed node, ended already when it is offline or its profile
    /// comes from an earlier binding too.
    fn entry(&mut self, index: usize, binding: &Binding, id: &str, ping: &str) -> Entry {
        let mut entry = Entry {
            instance_id: id.to_owned(),
            binding: index,
            profile: binding.profile.to_string(),
            enrolled: false,
            outcome: None,
            command_id: None,
            note: None,
        };
        let key = (id.to_owned(), binding.profile.to_string());
        if let Some(first) = self.seen.get(&key) {
            entry.finish(
                Outcome::Failed,
                Some(format!(
                    "binding #{} also delivers profile \"{}\" to this host; one profile \
                     can come from one binding only",
                    first + 1,
                    binding.profile
                )),
            );
        } else {
            self.seen.insert(key, index);
            if ping != "Online" {
                entry.finish(
                    Outcome::SkippedOffline,
                    Some(format!("SSM reports the node {ping} (PingStatus)")),
                );
            }
        }
        entry
    }

    /// What the delivery loop is told about a listed entry.
    fn found(&self, mut entry: Entry) -> Found {
        if entry.outcome.is_some() {
            return Found::Decided(entry);
        }
        match self.looked_up.get(&entry.instance_id) {
            Some(Lookup::Found(recipient)) => Found::Ready(entry, recipient.clone()),
            Some(Lookup::Missing) => Found::Unenrolled(entry),
            Some(Lookup::Failed(reason)) => {
                entry.finish(Outcome::Failed, Some(reason.clone()));
                Found::Decided(entry)
            }
            None => {
                entry.finish(
                    Outcome::Failed,
                    Some("the host's recipient was not looked up".to_owned()),
                );
                Found::Decided(entry)
            }
        }
    }

    /// Looks the recipients of `ids` up, 10 names per call, a few calls at once.
    async fn look_up(&mut self, ids: &[String]) -> Result<(), String> {
        let mut ids: Vec<String> = ids
            .iter()
            .filter(|id| !self.looked_up.contains_key(id.as_str()))
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        let prefix = self.config.parameter_prefix.clone();
        let limit = Arc::new(Semaphore::new(LOOKUP_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for chunk in ids.chunks(10) {
            let names: Vec<String> = chunk.iter().map(|id| format!("{prefix}{id}")).collect();
            let ssm = self.ssm.clone();
            let limit = Arc::clone(&limit);
            let chunk = chunk.to_vec();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let result = ssm.get_parameters().set_names(Some(names)).send().await;
                (chunk, result)
            });
        }
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
                    for id in chunk {
                        self.looked_up.insert(id, Lookup::Failed(reason.clone()));
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
                        let lookup = match values.get(name.as_str()) {
                            None => Lookup::Missing,
                            Some(value) => match parse_recipient(value) {
                                Ok(recipient) => Lookup::Found(recipient),
                                Err(_) => Lookup::Failed(format!(
                                    "the parameter {name} does not hold an age X25519 \
                                     recipient; delete it to enroll the host again"
                                )),
                            },
                        };
                        self.looked_up.insert(id, lookup);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `DescribeInstanceInformation` filter sets of a binding: its tags, or its
/// instance ids 50 at a time (the `InstanceIds` filter takes at most 50 values).
fn filter_sets(binding: &Binding) -> Result<Vec<Vec<InstanceInformationStringFilter>>, String> {
    match &binding.targets {
        Targets::Tags(tags) => Ok(vec![tags
            .iter()
            .map(|(key, values)| string_filter(&format!("tag:{key}"), values))
            .collect::<Result<_, _>>()?]),
        Targets::InstanceIds(ids) => ids
            .chunks(50)
            .map(|chunk| string_filter("InstanceIds", chunk).map(|f| vec![f]))
            .collect(),
    }
}

/// A delivery not started yet: entry, instance id, binding, recipient.
type Next = (usize, String, usize, Recipient);

fn spawn_delivery(tasks: &mut JoinSet<Done>, shared: &Arc<DeliverShared>, next: Next) {
    let shared = Arc::clone(shared);
    let (entry, instance_id, binding, recipient) = next;
    tasks.spawn(async move {
        let result = shared.deliver_one(binding, &instance_id, &recipient).await;
        Done::Delivery { entry, result }
    });
}

/// What every delivery task shares.
struct DeliverShared {
    clients: Clients,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    serial: u64,
    stop_starting_at: Option<DateTime<Utc>>,
    /// Paces the delivery `SendCommand`s of the round.
    pacer: Pacer,
    /// Set once something shows every further call would fail.
    fatal: Mutex<Option<String>>,
    /// Bindings whose role refused us: their other hosts are not tried.
    denied_bindings: Mutex<HashMap<usize, String>>,
}

impl DeliverShared {
    fn fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    fn set_fatal(&self, reason: &str) {
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert_with(|| reason.to_owned());
        }
    }

    fn past_cutoff(&self) -> bool {
        self.stop_starting_at.is_some_and(|t| self.clock.now() >= t)
    }

    async fn deliver_one(
        &self,
        binding_index: usize,
        instance_id: &str,
        recipient: &Recipient,
    ) -> Result<(String, DateTime<Utc>, String), (Outcome, String)> {
        if let Some(fatal) = self.fatal() {
            return Err((
                Outcome::Failed,
                format!("round stopped before this host: {fatal}"),
            ));
        }
        if self.past_cutoff() {
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
                    self.set_fatal(&reason);
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
        let (command_id, requested_at) = self.send(instance_id, binding, payload).await?;
        Ok((command_id, requested_at, instance_id.to_owned()))
    }

    /// Sends the delivery command in slots the pacer hands out, retrying throttles
    /// (in a new slot) and transient failures (after a jittered backoff) itself:
    /// the client it uses does not retry (`aws` module docs).
    async fn send(
        &self,
        instance_id: &str,
        binding: &Binding,
        payload: String,
    ) -> Result<(String, DateTime<Utc>), (Outcome, String)> {
        let attempts = self.config.max_attempts.max(1);
        let (mut throttled, mut failed) = (0_u32, 0_u32);
        loop {
            let mut waited = false;
            let slot = loop {
                match self
                    .pacer
                    .acquire(tokio::time::Instant::now().into_std(), waited)
                {
                    Ok(slot) => break slot,
                    Err(wait) => {
                        waited = true;
                        tokio::time::sleep(wait).await;
                    }
                }
            };
            // A host that started is sent once; a retry is a new start.
            if (throttled > 0 || failed > 0) && self.past_cutoff() {
                return Err((
                    Outcome::NotReached,
                    "not sent: the Lambda deadline came while this host's delivery \
                     was being retried"
                        .to_owned(),
                ));
            }
            let sent = self
                .clients
                .ssm_send
                .send_command()
                .document_name(&self.config.document)
                .instance_ids(instance_id)
                .parameters("action", vec!["receive".to_owned()])
                .parameters("payload", vec![payload.clone()])
                .comment(format!("aovis: deliver profile {}", binding.profile))
                .send()
                .await;
            let err = match sent {
                Ok(output) => {
                    self.pacer.accepted(&slot);
                    return command_of(output.command()).ok_or_else(|| {
                        (
                            Outcome::Failed,
                            "SendCommand answered without a command id".to_owned(),
                        )
                    });
                }
                Err(err) => err,
            };
            let reason = || format!("ssm:SendCommand failed: {}", describe(&err));
            match send_retry(&err) {
                SendRetry::Throttled => {
                    self.pacer.throttled(&slot);
                    throttled += 1;
                    if throttled >= attempts * THROTTLED_SENDS_PER_ATTEMPT {
                        return Err((Outcome::Failed, format!("{} ({throttled} times)", reason())));
                    }
                }
                SendRetry::Transient => {
                    failed += 1;
                    if failed >= attempts {
                        return Err((Outcome::Failed, format!("{} ({failed} attempts)", reason())));
                    }
                    tokio::time::sleep(backoff(instance_id, failed)).await;
                }
                SendRetry::No => {
                    let reason = reason();
                    if classify(&err) == ErrorKind::Fatal {
                        self.set_fatal(&reason);
                    }
                    return Err((Outcome::Failed, reason));
                }
            }
        }
    }
}

/// The wait before the `failure`-th retry of a transient failure: 100 ms doubling
/// per failure up to 5 s, times a jitter of 0.5 to 1 (from the host's id and the
/// round's random hasher keys), like the SDK's own backoff.
fn backoff(instance_id: &str, failure: u32) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1 << failure.saturating_sub(1).min(6))
        .min(Duration::from_secs(5));
    let mut hasher = RandomState::new().build_hasher();
    hasher.write(instance_id.as_bytes());
    hasher.write_u32(failure);
    let spread = (hasher.finish() % 501) as f64 / 1000.0 + 0.5;
    base.mul_f64(spread)
}

/// Whether a failed delivery is the agent refusing a second copy of this round's
/// own delivery: SSM created the command, lost its answer (5xx), the rotator
/// sent it again, the host stored the first and refused the second with exit code
/// 7 and exactly the line `aovis-agent: refused: replayed delivery for profile
/// 'P': serial S is not greater than the cached S`, where S is this round's
/// serial. Only this round seals serial S for this host and profile (a round's
/// serial is its start in milliseconds, and one binding delivers a profile), so
/// the host holds this round's credentials. Anything else (a stale serial, another
/// profile, another exit code, output that does not read exactly so) is not.
fn is_replay_of_this_round(
    output: &str,
    response_code: Option<i32>,
    profile: &str,
    serial: u64,
) -> bool {
    if response_code.is_some_and(|code| code != AGENT_EXIT_NOT_NEWER) {
        return false;
    }
    let Some(line) = agent_line(output) else {
        return false;
    };
    line == format!(
        "aovis-agent: refused: replayed delivery for profile '{profile}': serial {serial} \
         is not greater than the cached {serial}"
    )
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

/// The agent's one-line message in an invocation's output: SSM puts stderr after
/// [`SSM_STDERR_MARKER`], and the agent's reason is the first non-empty line there
/// (or of the whole output when there is no stderr).
fn agent_line(output: &str) -> Option<&str> {
    let stderr = output
        .split_once(SSM_STDERR_MARKER)
        .map_or(output, |(_, err)| err);
    stderr.lines().map(str::trim).find(|l| !l.is_empty())
}

/// "Failed: aovis-agent: refused: ..." from an invocation's status and output.
fn invocation_reason(status: &str, output: &str) -> String {
    match agent_line(output) {
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
    use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
    use aws_sdk_ssm::types::{
        Command, CommandInvocation, CommandInvocationStatus, CommandPlugin, InstanceInformation,
        Parameter, PingStatus,
    };
    use aws_sdk_sts::operation::assume_role::{AssumeRoleError, AssumeRoleOutput};
    use aws_smithy_mocks::{mock, mock_client, MockResponse, RuleMode};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
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
        send: aws_smithy_mocks::Rule,
        assume: aws_smithy_mocks::Rule,
    }

    fn fleet(
        ids: &'static [&'static str],
        clock: Arc<ManualClock>,
        assume_seconds: i64,
        denied_role: &'static str,
        stored: Option<&'static str>,
    ) -> Fleet {
        fleet_with(
            ids,
            clock,
            assume_seconds,
            denied_role,
            stored,
            Faults::default(),
        )
    }

    /// What goes wrong in a [`fleet_with`].
    #[derive(Clone, Copy, Default)]
    struct Faults {
        /// `SendCommand` calls (0-based, in call order) that create their command,
        /// then answer HTTP 500: the answer is lost, the command is not.
        lost_answers: &'static [usize],
        /// `SendCommand` calls answered `ThrottlingException` (nothing created).
        throttled: &'static [usize],
        /// How the host answers its n-th command (0-based): status, output and
        /// exit code; `None` (or no function) is `Success`.
        answer: Option<Answer>,
    }

    /// A host's answer to its n-th command: status, output, exit code.
    type Answer = fn(&str, usize) -> Option<(CommandInvocationStatus, String, i32)>;

    fn fleet_with(
        ids: &'static [&'static str],
        clock: Arc<ManualClock>,
        assume_seconds: i64,
        denied_role: &'static str,
        stored: Option<&'static str>,
        faults: Faults,
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
        let calls = Arc::new(Mutex::new(0_usize));
        let send = mock!(aws_sdk_ssm::Client::send_command).then_compute_response(move |req| {
            let call = calls
                .lock()
                .map(|mut n| {
                    *n += 1;
                    *n - 1
                })
                .unwrap_or(0);
            if faults.throttled.contains(&call) {
                return MockResponse::Error(SendCommandError::generic(
                    ErrorMetadata::builder()
                        .code("ThrottlingException")
                        .message("Rate exceeded")
                        .build(),
                ));
            }
            let instance = req.instance_ids()[0].clone();
            let id = format!(
                "cmd-{}-{}",
                instance,
                record.lock().map(|s| s.len()).unwrap_or(0)
            );
            if let Ok(mut sent) = record.lock() {
                sent.push((id.clone(), instance));
            }
            if faults.lost_answers.contains(&call) {
                return MockResponse::Http(HttpResponse::new(
                    StatusCode::try_from(500_u16).unwrap(),
                    SdkBody::from(r#"{"__type":"InternalServerError","message":"lost"}"#),
                ));
            }
            MockResponse::Output(
                SendCommandOutput::builder()
                    .command(
                        Command::builder()
                            .command_id(id)
                            .requested_date_time(aws_smithy_types::DateTime::from_secs(
                                1_795_000_000,
                            ))
                            .build(),
                    )
                    .build(),
            )
        });
        let listed = Arc::clone(&sent);
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
            let sent = listed.lock().map(|s| s.clone()).unwrap_or_default();
            let mut nth: HashMap<String, usize> = HashMap::new();
            ListCommandInvocationsOutput::builder()
                .set_command_invocations(Some(
                    sent.into_iter()
                        .map(|(id, instance)| {
                            let n = nth.entry(instance.clone()).or_default();
                            let (status, output, code) = faults
                                .answer
                                .and_then(|answer| answer(&instance, *n))
                                .unwrap_or((CommandInvocationStatus::Success, String::new(), 0));
                            *n += 1;
                            CommandInvocation::builder()
                                .command_id(id)
                                .instance_id(instance)
                                .status(status)
                                .command_plugins(
                                    CommandPlugin::builder()
                                        .name("aovisAgent")
                                        .output(output)
                                        .response_code(code)
                                        .build(),
                                )
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
            assumed_role()
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
            send,
            assume,
        }
    }

    /// STS's answer to every mocked `AssumeRole`: a session holding [`SECRET`].
    fn assumed_role() -> AssumeRoleOutput {
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
                sending: Duration::from_millis(20),
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

    /// The serial of every round these tests run (the clock starts at `start()`).
    fn serial() -> u64 {
        start().timestamp_millis() as u64
    }

    fn refused(kind: &str, serial: u64, cached: u64) -> String {
        format!(
            "\n----------ERROR-------\naovis-agent: refused: {kind} delivery for profile \
             'default': serial {serial} is not greater than the cached {cached}\n"
        )
    }

    #[test]
    fn only_a_replay_of_exactly_this_rounds_serial_counts_as_delivered() {
        let s = serial();
        let ours = refused("replayed", s, s);
        // (name, output, exit code, profile, expected)
        let cases: Vec<(&str, String, Option<i32>, &str, bool)> = vec![
            (
                "replay of this round",
                ours.clone(),
                Some(7),
                "default",
                true,
            ),
            (
                "replay, no exit code reported",
                ours.clone(),
                None,
                "default",
                true,
            ),
            (
                "replay, stderr only (no stdout, no marker)",
                ours.replace("\n----------ERROR-------\n", ""),
                Some(7),
                "default",
                true,
            ),
            ("another exit code", ours.clone(), Some(1), "default", false),
            ("another profile", ours.clone(), Some(7), "other", false),
            (
                "stale: the host holds a newer serial",
                refused("stale", s, s + 1),
                Some(7),
                "default",
                false,
            ),
            (
                "replay of an older round",
                refused("replayed", s - 1, s - 1),
                Some(7),
                "default",
                false,
            ),
            (
                "serials differ",
                refused("replayed", s, s + 1),
                Some(7),
                "default",
                false,
            ),
            (
                "cut short",
                ours[..ours.len() - 6].to_owned(),
                Some(7),
                "default",
                false,
            ),
            (
                "trailing text",
                ours.replace('\n', " ").trim().to_owned() + " (retry)",
                Some(7),
                "default",
                false,
            ),
            (
                "serial with a sign",
                refused("replayed", s, s).replace(&format!("serial {s}"), &format!("serial +{s}")),
                Some(7),
                "default",
                false,
            ),
            ("empty output", String::new(), Some(7), "default", false),
            (
                "another line first",
                format!("\n----------ERROR-------\nsh: warning\n{}", ours.trim()),
                Some(7),
                "default",
                false,
            ),
            (
                "not the agent",
                ours.replace("aovis-agent:", "other-agent:"),
                Some(7),
                "default",
                false,
            ),
        ];
        for (name, output, code, profile, expected) in cases {
            assert_eq!(
                is_replay_of_this_round(&output, code, profile, s),
                expected,
                "{name}: {output:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_retry_refused_as_a_replay_of_this_round_is_delivered_and_a_stale_refusal_fails() {
        // Every host's first SendCommand creates its command, then the answer is
        // lost (HTTP 500); the round sends again. The host stored the first; its
        // answer to the second depends on the host.
        fn answer(instance: &str, nth: usize) -> Option<(CommandInvocationStatus, String, i32)> {
            if nth == 0 {
                return None;
            }
            let s = serial();
            let failed = CommandInvocationStatus::Failed;
            match instance {
                "mi-00000000000000001" => Some((failed, refused("replayed", s, s), 7)),
                "mi-00000000000000002" => Some((failed, refused("stale", s, s + 1), 7)),
                _ => Some((failed, refused("replayed", s, s), 1)),
            }
        }
        let clock = Arc::new(ManualClock(Mutex::new(start())));
        let mocks = fleet_with(
            IDS,
            Arc::clone(&clock),
            0,
            "none",
            None,
            Faults {
                lost_answers: &[0, 2, 4],
                answer: Some(answer),
                ..Faults::default()
            },
        );
        let clients = Clients::from_parts(mocks.ssm, mocks.sts);
        let report = run(config(ONE_BINDING), clients, clock, settings(None)).await;
        assert_eq!(mocks.send.num_calls(), 6);
        let host = |id: &str| report.hosts.iter().find(|h| h.instance_id == id).unwrap();
        let replayed = host("mi-00000000000000001");
        assert_eq!(replayed.outcome, Outcome::Delivered, "{replayed:?}");
        assert_eq!(replayed.reason, None);
        assert_eq!(replayed.note.as_deref(), Some(NOTE_EARLIER_ATTEMPT));
        assert_eq!(
            replayed.command_id.as_deref(),
            Some("cmd-mi-00000000000000001-1")
        );
        let stale = host("mi-00000000000000002");
        assert_eq!(stale.outcome, Outcome::Failed, "{stale:?}");
        assert!(
            stale.reason.as_deref().unwrap().contains("stale delivery"),
            "{stale:?}"
        );
        assert_eq!(stale.note, None);
        let other_code = host("mi-00000000000000003");
        assert_eq!(other_code.outcome, Outcome::Failed, "{other_code:?}");
        assert_eq!(report.counts.delivered, 1);
        assert!(report.is_failure());
    }

    #[tokio::test]
    async fn throttled_sends_are_sent_again_and_lose_no_host() {
        let clock = Arc::new(ManualClock(Mutex::new(start())));
        let mocks = fleet_with(
            IDS,
            Arc::clone(&clock),
            0,
            "none",
            None,
            Faults {
                throttled: &[0, 1, 3, 4, 5],
                ..Faults::default()
            },
        );
        let clients = Clients::from_parts(mocks.ssm, mocks.sts);
        let report = run(config(ONE_BINDING), clients, clock, settings(None)).await;
        assert_eq!(report.counts.delivered, 3, "{report:?}");
        assert_eq!(mocks.send.num_calls(), 8);
        assert_eq!(mocks.assume.num_calls(), 3, "one session per host");
    }

    #[tokio::test]
    async fn a_host_throttled_past_its_attempts_fails_with_the_reason() {
        const ALWAYS: &[usize] = &[
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
        ];
        let clock = Arc::new(ManualClock(Mutex::new(start())));
        let mocks = fleet_with(
            &IDS[..1],
            Arc::clone(&clock),
            0,
            "none",
            None,
            Faults {
                throttled: ALWAYS,
                ..Faults::default()
            },
        );
        let text = format!("max_attempts = 2\n{ONE_BINDING}");
        let report = run(
            config(&text),
            Clients::from_parts(mocks.ssm, mocks.sts),
            clock,
            settings(None),
        )
        .await;
        let host = &report.hosts[0];
        assert_eq!(host.outcome, Outcome::Failed, "{host:?}");
        let reason = host.reason.as_deref().unwrap();
        assert!(
            reason.contains("ThrottlingException") && reason.contains("(6 times)"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn the_first_hosts_are_sent_while_discovery_still_lists_later_pages() {
        // 8 pages of 50 nodes. Discovery may run only a bounded way ahead of
        // delivery, so hosts of the first pages are sent before the last page is
        // even asked for: delivery does not wait for the whole fleet to be listed.
        // After 10 sends the clock jumps past the start cut-off, so the test does
        // not wait for 400 paced sends, and every later pair must still be listed
        // and reported `not_reached`.
        const PAGES: usize = 8;
        let clock = Arc::new(ManualClock(Mutex::new(start())));
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&events);
        let describe = mock!(aws_sdk_ssm::Client::describe_instance_information)
            .then_compute_output(move |req| {
                let page: usize = req.next_token().map_or(0, |t| t.parse().unwrap());
                if let Ok(mut events) = log.lock() {
                    events.push(format!("page {page}"));
                }
                DescribeInstanceInformationOutput::builder()
                    .set_instance_information_list(Some(
                        (page * 50..page * 50 + 50)
                            .map(|n| {
                                InstanceInformation::builder()
                                    .instance_id(format!("mi-{n:017x}"))
                                    .ping_status(PingStatus::Online)
                                    .build()
                            })
                            .collect(),
                    ))
                    .set_next_token((page + 1 < PAGES).then(|| (page + 1).to_string()))
                    .build()
            });
        let good = recipient();
        let parameters =
            mock!(aws_sdk_ssm::Client::get_parameters).then_compute_output(move |req| {
                GetParametersOutput::builder()
                    .set_parameters(Some(
                        req.names()
                            .iter()
                            .map(|name| Parameter::builder().name(name).value(&good).build())
                            .collect(),
                    ))
                    .build()
            });
        let log = Arc::clone(&events);
        let jump = Arc::clone(&clock);
        let send = mock!(aws_sdk_ssm::Client::send_command).then_compute_output(move |req| {
            let instance = req.instance_ids()[0].clone();
            if let Ok(mut events) = log.lock() {
                events.push(format!("send {instance}"));
                if events.iter().filter(|e| e.starts_with("send ")).count() == 10 {
                    jump.advance(3600);
                }
            }
            SendCommandOutput::builder()
                .command(
                    Command::builder()
                        .command_id(format!("cmd-{instance}"))
                        .requested_date_time(aws_smithy_types::DateTime::from_secs(1_795_000_000))
                        .build(),
                )
                .build()
        });
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            ListCommandInvocationsOutput::builder()
                .set_command_invocations(Some(
                    (0..PAGES * 50)
                        .map(|n| {
                            CommandInvocation::builder()
                                .command_id(format!("cmd-mi-{n:017x}"))
                                .instance_id(format!("mi-{n:017x}"))
                                .status(CommandInvocationStatus::Success)
                                .build()
                        })
                        .collect(),
                ))
                .build()
        });
        let describe_document = mock!(aws_sdk_ssm::Client::describe_document)
            .then_output(|| DescribeDocumentOutput::builder().build());
        let ssm = mock_client!(
            aws_sdk_ssm,
            RuleMode::MatchAny,
            [&describe_document, &describe, &parameters, &send, &list]
        );
        let assume = mock!(aws_sdk_sts::Client::assume_role).then_output(assumed_role);
        let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&assume]);
        let text = ONE_BINDING.replace("concurrency = 1", "concurrency = 4");
        let report = run(
            config(&text),
            Clients::from_parts(ssm, sts),
            clock,
            settings(Some(start() + TimeDelta::seconds(60))),
        )
        .await;
        let counts = &report.counts;
        assert_eq!(counts.targeted, (PAGES * 50) as u64, "{counts:?}");
        // The sends under way when the clock jumped still go out.
        assert!((10..=14).contains(&counts.delivered), "{counts:?}");
        assert_eq!(
            counts.delivered + counts.not_reached,
            counts.targeted,
            "{counts:?}"
        );
        let events = events.lock().unwrap().clone();
        let first_send = events.iter().position(|e| e.starts_with("send ")).unwrap();
        let last_page = events
            .iter()
            .position(|e| *e == format!("page {}", PAGES - 1))
            .unwrap();
        assert!(
            first_send < last_page,
            "first send at event {first_send}, last page asked at {last_page}"
        );
    }
}
