//! `aovis-agent receive` when its write path fails or it is killed, and
//! `aovis-cred` read by eight processes at once while deliveries land.
//!
//! Faults are injected with strace (see `support::strace`): one syscall of one real
//! run fails with `EIO` or `ENOSPC`, or the process gets SIGKILL on entering it. The
//! points come from a trace of a clean delivery, so every syscall the write path
//! makes is tried, not a guessed list. SIGKILL at random moments (no strace) covers
//! timing strace cannot.
//!
//! After every run:
//! - the cache is the old file, byte for byte, or a complete new one: it parses,
//!   re-serializes to the same bytes, carries the new serial, mode 0640, owner
//!   root and the profile's group;
//! - a run that exits 0 stored the new one; a run that fails and yet replaced the
//!   cache does not claim the previous cache is unchanged;
//! - stderr is one line (none when killed) and holds no secret;
//! - a run that was not killed leaves no temp file; a killed run may (a process
//!   cannot clean up after SIGKILL). Such a file is owned by root and mode 0600, or
//!   already 0640 with the profile's group when the kill came after `fchmod`: never
//!   readable by anyone the cache itself is hidden from. The next delivery removes
//!   it (asserted after every kill that left one).
//!
//! `AOVIS_RELIABILITY_SCALE` (default 1) multiplies the run counts and widens the
//! strace sweep from "every syscall after taking the profile lock" to "every syscall
//! from the first one of our own code (reading the config) to the exit", and adds
//! ENOSPC to every point; `scripts/reliability` sets it and reads the `faults:`
//! summary lines these tests print.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aovis_formats::cache;

use crate::support::delivery::{check_outputs, Receiver};
use crate::support::strace::{self, Event, Fault};
use crate::support::{assert_no_secret, is_root, text, SECRET};

const PROFILE: &str = "default";
/// The group the cache is given when the tests run as root (Debian has it).
const GROUP: &str = "nogroup";

/// The multiplier for run counts (`AOVIS_RELIABILITY_SCALE`).
fn scale() -> u32 {
    std::env::var("AOVIS_RELIABILITY_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|scale| *scale >= 1)
        .unwrap_or(1)
}

/// A host whose `default` profile is group-readable when we are root, so the
/// `fchown` step and its faults are part of every run.
fn receiver() -> Receiver {
    let config = format!("[profiles.{PROFILE}]\ngroup = \"{GROUP}\"\n");
    let receiver = Receiver::new(is_root().then_some(config.as_str()));
    receiver.deliver(PROFILE, 1);
    receiver
}

fn group_gid() -> Option<u32> {
    if !is_root() {
        return None;
    }
    let group = nix::unistd::Group::from_name(GROUP).unwrap();
    Some(group.expect("group nogroup").gid.as_raw())
}

/// What a run did to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    /// Exit 0, the new cache in place.
    Stored,
    /// Failed, the old cache untouched.
    Kept,
    /// Failed after the new cache was in place (directory fsync, stdout).
    ReplacedButFailed,
    /// Killed before the rename.
    KilledKept,
    /// Killed after the rename.
    KilledReplaced,
}

/// Tallies of a series of runs, printed as the `faults:` summary.
#[derive(Default)]
struct Tally {
    outcomes: std::collections::BTreeMap<Outcome, usize>,
    temps_left: usize,
    temp_modes: std::collections::BTreeSet<u32>,
    /// Broken properties, one message per run that broke one.
    violations: Vec<String>,
}

impl Tally {
    fn runs(&self) -> usize {
        self.outcomes.values().sum()
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    fn summary(&self, name: &str) -> String {
        let modes: Vec<String> = self.temp_modes.iter().map(|m| format!("{m:04o}")).collect();
        format!(
            "faults: {name}: runs={} stored={} kept={} replaced_but_failed={} killed_kept={} \
             killed_replaced={} temps_left={} temp_modes={} temps_removed_by_next_delivery={} \
             violations={}",
            self.runs(),
            self.count(Outcome::Stored),
            self.count(Outcome::Kept),
            self.count(Outcome::ReplacedButFailed),
            self.count(Outcome::KilledKept),
            self.count(Outcome::KilledReplaced),
            self.temps_left,
            if modes.is_empty() {
                "-".to_owned()
            } else {
                modes.join(",")
            },
            self.temps_left,
            self.violations.len(),
        )
    }

    /// Prints the summary line, then fails if any run broke a property.
    fn finish(&self, name: &str) {
        println!("{}", self.summary(name));
        let shown: Vec<&String> = self.violations.iter().take(5).collect();
        assert!(
            self.violations.is_empty(),
            "{} of {} runs broke a property; the first ones: {shown:#?}",
            self.violations.len(),
            self.runs() + self.violations.len(),
        );
    }
}

/// Runs `check` (which asserts) and records a failure instead of stopping, so one
/// broken property does not hide what the rest of a sweep would show. After a
/// failure a clean delivery of `serial + 2` puts the host back in a known state
/// (`check_run` may have used `serial + 1`; callers step serials by 3).
fn recorded(
    receiver: &Receiver,
    tally: &mut Tally,
    serial: u64,
    check: impl FnOnce(&mut Tally) -> Vec<u8>,
) -> Vec<u8> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(tally))) {
        Ok(cache) => cache,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a check panicked".to_owned());
            tally.violations.push(message);
            receiver.deliver(PROFILE, serial + 2);
            fs::read(receiver.cache_path(PROFILE)).unwrap()
        }
    }
}

/// Checks every invariant of the module doc after one run that delivered `serial`
/// over the cache bytes `before`; clears temp files a kill left with a clean
/// delivery of `serial + 1`. Returns the outcome and the cache now in place.
fn check_run(
    receiver: &Receiver,
    what: &str,
    before: &[u8],
    serial: u64,
    out: &Output,
    tally: &mut Tally,
) -> (Outcome, Vec<u8>) {
    check_outputs(what, out);
    let killed = out.status.code().is_none();
    let stderr = text(&out.stderr);
    if killed {
        assert!(stderr.is_empty(), "{what}: a killed run printed: {stderr}");
    } else if !out.status.success() {
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.starts_with("aovis-agent: "), "{what}: {stderr}");
    }

    let path = receiver.cache_path(PROFILE);
    let after = fs::read(&path).unwrap();
    let replaced = after != before;
    if replaced {
        let parsed = cache::parse(&after)
            .unwrap_or_else(|err| panic!("{what}: the cache is neither old nor valid: {err}"));
        assert_eq!(
            parsed.to_json().as_slice(),
            after.as_slice(),
            "{what}: torn"
        );
        assert_eq!(parsed.meta.map(|m| m.serial), Some(serial), "{what}");
        assert_eq!(parsed.credentials.secret_access_key().expose(), SECRET);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640, "{what}");
        if let Some(gid) = group_gid() {
            assert_eq!((meta.uid(), meta.gid()), (0, gid), "{what}");
        }
    }
    let outcome = match (killed, out.status.success(), replaced) {
        (true, _, false) => Outcome::KilledKept,
        (true, _, true) => Outcome::KilledReplaced,
        (false, true, true) => Outcome::Stored,
        (false, true, false) => panic!("{what}: exit 0 but the cache is the old one"),
        (false, false, false) => Outcome::Kept,
        (false, false, true) => {
            assert!(
                !stderr.contains("unchanged"),
                "{what}: the cache was replaced but the error says otherwise: {stderr}"
            );
            Outcome::ReplacedButFailed
        }
    };

    let temps = receiver.temp_files();
    if !killed {
        assert!(temps.is_empty(), "{what}: left {temps:?}");
    } else if !temps.is_empty() {
        tally.temps_left += temps.len();
        for name in &temps {
            let meta = fs::metadata(receiver.host.profiles_dir().join(name)).unwrap();
            let mode = meta.mode() & 0o7777;
            tally.temp_modes.insert(mode);
            match mode {
                0o600 => {}
                0o640 => {
                    if let Some(gid) = group_gid() {
                        assert_eq!(meta.gid(), gid, "{what}: {name} has another group");
                    }
                }
                other => panic!("{what}: {name} is mode {other:o}"),
            }
            if is_root() {
                assert_eq!(meta.uid(), 0, "{what}: {name}");
            }
        }
        // The next delivery, under the lock, removes what the killed one left.
        receiver.deliver(PROFILE, serial + 1);
        assert_eq!(receiver.temp_files(), Vec::<String>::new(), "{what}");
        *tally.outcomes.entry(outcome).or_insert(0) += 1;
        return (outcome, fs::read(&path).unwrap());
    }
    *tally.outcomes.entry(outcome).or_insert(0) += 1;
    (outcome, after)
}

/// The trace of one clean delivery on `receiver` (it stores `serial`).
fn clean_trace(receiver: &Receiver, serial: u64) -> Vec<Event> {
    let (out, events) =
        strace::trace(&receiver.receive_command(&receiver.payload(PROFILE, serial)));
    assert!(out.status.success(), "traced run: {}", text(&out.stderr));
    // strace counts calls per thread: occurrence numbers name one point only in a
    // single-threaded run.
    assert!(
        events.iter().all(|event| event.pid == events[0].pid),
        "receive ran more than one thread; the sweep's points would be ambiguous"
    );
    events
}

fn is_temp(event: &Event) -> bool {
    event
        .path
        .as_deref()
        .is_some_and(|path| path.contains(&format!("/.{PROFILE}.json.")) && path.ends_with(".tmp"))
}

fn is_rename(event: &Event) -> bool {
    matches!(event.name.as_str(), "rename" | "renameat" | "renameat2")
}

/// The first event matching `pick`, after event `from`.
fn find(events: &[Event], from: usize, pick: impl Fn(&Event) -> bool) -> Option<usize> {
    events
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, event)| pick(event))
        .map(|(index, _)| index)
}

#[test]
fn each_step_of_the_atomic_write_failing_keeps_the_old_cache_or_says_it_was_replaced() {
    strace::require_strace();
    let receiver = receiver();
    let events = clean_trace(&receiver, 2);
    let profiles = receiver.host.profiles_dir().display().to_string();
    let rename = find(&events, 0, is_rename).expect("no rename in the trace");

    // (step, how to find its syscall in the trace, what the run must do).
    type Pick<'a> = Box<dyn Fn(&Event) -> bool + 'a>;
    let cases: Vec<(&str, usize, Pick, Expect)> = vec![
        (
            "create the temp file",
            0,
            Box::new(|e: &Event| e.name.starts_with("open") && is_temp(e)),
            Expect::Kept("cannot create a temp file"),
        ),
        (
            "write the temp file",
            0,
            Box::new(|e: &Event| e.name == "write" && is_temp(e)),
            Expect::Kept("cannot write the temp file"),
        ),
        (
            "set the temp file's owner and group",
            0,
            Box::new(|e: &Event| e.name == "fchown" && is_temp(e)),
            Expect::Kept("cannot set the temp file's owner"),
        ),
        (
            "set the temp file's mode",
            0,
            Box::new(|e: &Event| e.name == "fchmod" && is_temp(e)),
            Expect::Kept("cannot set the temp file's mode"),
        ),
        (
            "fsync the temp file",
            0,
            Box::new(|e: &Event| e.name == "fsync" && is_temp(e)),
            Expect::Kept("cannot fsync the temp file"),
        ),
        (
            "rename the temp file over the cache",
            0,
            Box::new(is_rename),
            Expect::Kept("cannot rename the temp file"),
        ),
        (
            "open the directory to fsync it",
            rename,
            Box::new(|e: &Event| {
                e.name.starts_with("open") && e.path.as_deref() == Some(&profiles)
            }),
            Expect::Replaced("cannot fsync its directory"),
        ),
        (
            "fsync the directory",
            rename,
            Box::new(|e: &Event| e.name == "fsync" && e.path.as_deref() == Some(&profiles)),
            Expect::Replaced("cannot fsync its directory"),
        ),
        (
            "print the result",
            rename,
            Box::new(|e: &Event| e.name == "write" && e.path.is_none()),
            Expect::Replaced("cannot write to stdout"),
        ),
    ];

    let mut tally = Tally::default();
    let mut before = fs::read(receiver.cache_path(PROFILE)).unwrap();
    let mut serial = 2;
    for (step, from, pick, expect) in &cases {
        let Some(index) = find(&events, *from, pick) else {
            // Only root can give the file a group, so only root's runs fchown.
            assert!(
                !is_root() && step.contains("owner"),
                "no syscall for '{step}' in the trace"
            );
            continue;
        };
        let event = &events[index];
        for (errno, message) in [("EIO", "Input/output error"), ("ENOSPC", "No space left")] {
            serial += 3;
            let what = format!("{errno} at '{step}' ({})", event.line);
            let payload = receiver.payload(PROFILE, serial);
            let out = strace::inject(
                &receiver.receive_command(&payload),
                event,
                Fault::Error(errno),
            );
            before = recorded(&receiver, &mut tally, serial, |tally| {
                let (outcome, now) = check_run(&receiver, &what, &before, serial, &out, tally);
                let stderr = text(&out.stderr);
                let (wanted, words) = match expect {
                    Expect::Kept(words) => (Outcome::Kept, *words),
                    Expect::Replaced(words) => (Outcome::ReplacedButFailed, *words),
                };
                assert_eq!(outcome, wanted, "{what}: {stderr}");
                assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
                assert!(stderr.contains(words), "{what}: {stderr}");
                assert!(stderr.contains(message), "{what}: {stderr}");
                now
            });
        }
    }
    tally.finish("named steps x {EIO, ENOSPC}");
}

/// What a failure at one named step must do.
enum Expect {
    /// Exit 1, old cache, stderr names the step.
    Kept(&'static str),
    /// Exit 1, new cache in place, stderr says what failed after the rename.
    Replaced(&'static str),
}

#[test]
fn every_syscall_of_the_write_path_failing_or_killed_leaves_the_old_or_the_new_cache() {
    strace::require_strace();
    let receiver = receiver();
    let events = clean_trace(&receiver, 2);
    // From taking the profile lock (nothing before it touches the cache) to the
    // exit; a scaled run starts at the first syscall of our own code (reading the
    // config), past the dynamic loader and the Rust runtime's start-up.
    let config = receiver.host.config_dir().display().to_string();
    let start = if scale() > 1 {
        find(&events, 0, |e| {
            e.path.as_deref().is_some_and(|p| p.starts_with(&config))
        })
        .expect("the trace never touches the config directory")
    } else {
        find(&events, 0, |e| {
            e.name == "flock" && e.line.contains("LOCK_EX")
        })
        .expect("no flock(LOCK_EX) in the trace")
    };
    let faults: &[Fault] = if scale() > 1 {
        &[Fault::Error("EIO"), Fault::Error("ENOSPC"), Fault::Kill]
    } else {
        &[Fault::Error("EIO"), Fault::Kill]
    };

    let mut tally = Tally::default();
    let mut before = fs::read(receiver.cache_path(PROFILE)).unwrap();
    let mut serial = 2;
    let profiles = receiver.host.profiles_dir().display().to_string();
    let mut skipped = 0;
    for event in &events[start..] {
        for fault in faults {
            if matches!(fault, Fault::Error(_)) && !error_is_possible(event, &profiles) {
                skipped += 1;
                continue;
            }
            serial += 3;
            let what = format!(
                "{fault} at {}#{} ({})",
                event.name, event.occurrence, event.line
            );
            let payload = receiver.payload(PROFILE, serial);
            let out = strace::inject(&receiver.receive_command(&payload), event, *fault);
            before = recorded(&receiver, &mut tally, serial, |tally| {
                check_run(&receiver, &what, &before, serial, &out, tally).1
            });
        }
    }
    tally.finish(&format!(
        "strace sweep of {} syscalls x {} faults ({skipped} impossible errors skipped)",
        events.len() - start,
        faults.len()
    ));
    // The sweep reached both sides of the rename.
    assert!(tally.count(Outcome::Kept) > 0 && tally.count(Outcome::KilledKept) > 0);
    assert!(tally.count(Outcome::KilledReplaced) > 0);
    assert!(
        tally.temps_left > 0,
        "no kill landed while a temp file existed"
    );
}

/// Whether an I/O error (EIO, ENOSPC) at `event` is something a real system can
/// answer. SIGKILL is tried at every syscall; errors only where the kernel can
/// return them:
/// - only I/O syscalls (memory, signal and clock calls do not fail with EIO, and
///   Rust aborts on a failed allocation by design);
/// - not `close` of the profiles directory: close(2) of a directory does no I/O,
///   and std's `ReadDir` panics if closedir(3) fails;
/// - not `flock(LOCK_UN)`: unlocking a local file cannot fail, and `nix`'s `Flock`
///   panics in `drop` if it does (the fd's close releases the lock anyway).
fn error_is_possible(event: &Event, profiles_dir: &str) -> bool {
    const IO: &[&str] = &[
        "open",
        "openat",
        "openat2",
        "read",
        "pread64",
        "write",
        "pwrite64",
        "fsync",
        "fdatasync",
        "rename",
        "renameat",
        "renameat2",
        "fchown",
        "fchmod",
        "flock",
        "getdents64",
        "statx",
        "newfstatat",
        "fstat",
        "unlink",
        "unlinkat",
        "mkdir",
        "mkdirat",
        "close",
        "fchmodat",
        "lseek",
    ];
    if !IO.contains(&event.name.as_str()) {
        return false;
    }
    if event.name == "close" && event.path.as_deref() == Some(profiles_dir) {
        return false;
    }
    !(event.name == "flock" && event.line.contains("LOCK_UN"))
}

/// A small xorshift generator: the tests need spread, not cryptographic quality,
/// and the seed is printed so a failing run can be repeated with
/// `AOVIS_FAULT_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Self {
        let seed = std::env::var("AOVIS_FAULT_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("faults: random kills: seed {seed} (repeat with AOVIS_FAULT_SEED={seed})");
        Self(seed)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

#[test]
fn sigkill_at_random_moments_leaves_the_old_or_the_new_cache() {
    let receiver = receiver();
    // Kill within the span of a whole run (measured here: a debug build's start-up
    // is most of it), so kills land in every phase, not only in start-up.
    let started = Instant::now();
    receiver.deliver(PROFILE, 2);
    let span = started.elapsed().as_micros() as u64 * 5 / 4;
    let mut rng = Rng::from_env_or_clock();

    let mut tally = Tally::default();
    let mut before = fs::read(receiver.cache_path(PROFILE)).unwrap();
    let mut serial = 2;
    let runs = 40 * scale();
    for run in 0..runs {
        serial += 3;
        let delay = Duration::from_micros(rng.below(span));
        let payload = receiver.payload(PROFILE, serial);
        let mut child = receiver
            .receive_command(&payload)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let what = format!("run {run}: SIGKILL after {delay:?}");
        before = recorded(&receiver, &mut tally, serial, |tally| {
            check_run(&receiver, &what, &before, serial, &out, tally).1
        });
    }
    tally.finish(&format!("random SIGKILL within {span} us"));
    assert_eq!(tally.runs(), runs as usize);
}

#[test]
fn eight_parallel_readers_never_fail_while_deliveries_land() {
    let receiver = Arc::new(receiver());
    let deliveries = 30 * u64::from(scale());
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (receiver, stop, reads) =
                (Arc::clone(&receiver), Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let out = receiver.host.cred(&["--profile", PROFILE]);
                    assert_no_secret("aovis-cred stderr", &text(&out.stderr));
                    let value = serde_json::from_slice::<serde_json::Value>(&out.stdout);
                    match value {
                        Ok(value) if out.status.success() && value["SecretAccessKey"] == SECRET => {
                        }
                        _ => failures.push(text(&out.stderr)),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    let started = Instant::now();
    for serial in 2..2 + deliveries {
        receiver.deliver(PROFILE, serial);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let reads = reads.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failed reads: {failures:?}",
        failures.len()
    );
    assert!(reads >= 8, "the readers barely ran: {reads} reads");
    assert_eq!(receiver.temp_files(), Vec::<String>::new());
    println!(
        "faults: 8 readers: deliveries={deliveries} reads={reads} failed_reads=0 in {:.1} s",
        elapsed.as_secs_f64()
    );
}
