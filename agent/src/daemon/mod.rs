//! `aovis-agent run`: the daemon that watches the caches and serves them to
//! workloads that cannot run `credential_process` (containers, old SDKs, tools that
//! only know the instance metadata service).
//!
//! | module | holds |
//! |---|---|
//! | [`settings`] | the `[daemon]` table of `agent.toml` |
//! | [`store`] | the loaded caches, with their response bodies prebuilt |
//! | [`health`] | ok / stale / expired, the log lines each change deserves, the `STATUS=` line |
//! | [`watch`] | inotify on `$STATE/profiles` |
//! | [`tokens`] | IMDSv2 session tokens (memory) and container tokens (files) |
//! | [`imds`], [`container`] | the two APIs, as functions of a request and `now` |
//! | [`http`] | listeners, connection limits, dispatch |
//! | [`connections`] | the connection cap, and which connection gives way at it |
//! | [`notify`] | the systemd notify protocol |
//! | [`logging`] | journald or stderr |
//!
//! Lifecycle under systemd (`Type=notify`):
//!
//! 1. Read the config, make the container token files, load every cache, bind every
//!    listener (any failure: one error line, exit non-zero, nothing served).
//! 2. `READY=1` with a `STATUS=` line such as `default: ok, 41m left; build: EXPIRED 3m ago`.
//! 3. Loop: a delivery (inotify) reloads that profile; a timer wakes at the next
//!    stale or expiry moment (and every 30 s regardless, rereading every cache);
//!    `WATCHDOG=1` at half `WATCHDOG_USEC`; `SIGHUP` reloads the config
//!    (`RELOADING=1` ... `READY=1`; a bad config is logged and the old one kept).
//! 4. `SIGTERM` (or `SIGINT`): `STOPPING=1`, stop accepting, let requests in flight
//!    finish, exit 0 within 5 s.
//!
//! Watched profiles: those named in the config (`[profiles.*]`, `[daemon.imds]`,
//! `[daemon.container]`) plus any `<profile>.json` present in `$STATE/profiles`.
//!
//! What the unit must allow (the daemon needs no root and no capability):
//!
//! | need | why |
//! |---|---|
//! | a user of its own, with every served profile's group as a supplementary group | caches are `root:<group>` mode 0640; the kernel decides what the daemon may read |
//! | read `$CONFIG/agent.toml`, `$STATE/profiles/`, `/etc/group` | config, caches, group names |
//! | write `$STATE/tokens/` (e.g. `StateDirectory=aovis/tokens`, owned by the daemon's user) | container token files, owned by the daemon, group = the profile's group |
//! | `fchown` to its own supplementary groups (`@chown`; not `PrivateUsers=`, whose namespace maps no supplementary group) | the token file's group |
//! | `AF_INET`, `AF_INET6`, `AF_UNIX` | listeners; `NOTIFY_SOCKET` and journald |
//! | `inotify_*`, `getrandom` (in `@system-service`) | delivery watch; tokens |
//! | `Type=notify`, `WatchdogSec=`, `ExecReload=kill -HUP $MAINPID` | readiness, watchdog, reload |

pub mod connections;
pub mod container;
pub mod health;
pub mod http;
pub mod imds;
pub mod logging;
pub mod notify;
pub mod settings;
pub mod store;
pub mod tokens;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aovis_formats::paths::Paths;
use aovis_formats::time::human_duration;
use aovis_formats::ProfileName;
use chrono::{DateTime, Utc};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch as flag;
use tokio::task::JoinSet;

use crate::config::{self, AgentConfig, ConfigError};
use connections::Connections;
use health::{Event, Tracker};
use http::{Routes, Shared};
use store::Slot;
use tokens::TokenFileError;
use watch::{Changes, DirWatch};

/// Longest the timer sleeps: every cache is reread at least this often, and the
/// status line stays current to the minute.
const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// How often to rescan when inotify is not available.
const POLL_WITHOUT_INOTIFY: Duration = Duration::from_secs(2);
/// Time given to requests in flight at `SIGTERM`; systemd's default stop timeout is
/// far longer, the contract is 5 s.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(4_500);

/// Why the daemon could not start or had to stop.
#[derive(Debug)]
pub enum DaemonError {
    /// The config could not be loaded.
    Config(ConfigError),
    /// A profile's `group` does not exist (or the group database failed).
    Group {
        /// The profile.
        profile: ProfileName,
        /// The group name from the config.
        group: String,
        /// The lookup error, when there was one.
        source: Option<nix::Error>,
    },
    /// A container token file could not be made ready.
    TokenFile {
        /// The profile.
        profile: ProfileName,
        /// The cause.
        source: TokenFileError,
    },
    /// The async runtime could not start.
    Runtime(io::Error),
    /// Signal handlers could not be installed.
    Signals(io::Error),
    /// A listen address could not be bound.
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(_) => f.write_str("cannot load the agent config"),
            Self::Group { profile, group, .. } => write!(
                f,
                "group {group:?} of profile {} does not exist",
                profile.as_str()
            ),
            Self::TokenFile { profile, .. } => write!(
                f,
                "cannot prepare the container token of profile {}",
                profile.as_str()
            ),
            Self::Runtime(_) => f.write_str("cannot start the async runtime"),
            Self::Signals(_) => f.write_str("cannot install signal handlers"),
            Self::Bind { address, .. } => write!(f, "cannot listen on {address}"),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(source) => Some(source),
            Self::Group { source, .. } => source.as_ref().map(|s| s as _),
            Self::TokenFile { source, .. } => Some(source),
            Self::Runtime(source) | Self::Signals(source) | Self::Bind { source, .. } => {
                Some(source)
            }
        }
    }
}

/// The wall clock, read only here and in the request handler (the edges).
fn wall_clock() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// Runs the daemon until SIGTERM.
pub fn run(config_path: &Path, paths: &Paths) -> Result<(), DaemonError> {
    logging::init();
    let config = config::load(config_path).map_err(DaemonError::Config)?;
    // Two workers are plenty for loopback traffic and keep memory small on big hosts.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(serve(config, config_path.to_path_buf(), paths.clone()))
}

/// The group id of `profile`'s configured group, if it has one.
fn group_id(config: &AgentConfig, profile: &ProfileName) -> Result<Option<u32>, DaemonError> {
    let Some(group) = config.profile(profile).group else {
        return Ok(None);
    };
    match nix::unistd::Group::from_name(&group) {
        Ok(Some(found)) => Ok(Some(found.gid.as_raw())),
        Ok(None) => Err(DaemonError::Group {
            profile: profile.clone(),
            group,
            source: None,
        }),
        Err(err) => Err(DaemonError::Group {
            profile: profile.clone(),
            group,
            source: Some(err),
        }),
    }
}

/// The routes a config asks for, with every container token file ready.
fn prepare_routes(config: &AgentConfig, paths: &Paths) -> Result<Routes, DaemonError> {
    let mut routes = Routes {
        imds_profile: config.daemon.imds.as_ref().map(|imds| imds.profile.clone()),
        container_tokens: BTreeMap::new(),
    };
    if let Some(container) = &config.daemon.container {
        let dir = paths.state_dir.join("tokens");
        for profile in &container.profiles {
            let gid = group_id(config, profile)?;
            let token = tokens::ensure_token_file(&dir, profile, gid).map_err(|source| {
                DaemonError::TokenFile {
                    profile: profile.clone(),
                    source,
                }
            })?;
            tracing::info!(
                profile = profile.as_str(),
                path = %tokens::token_path(&dir, profile).display(),
                "container token in place"
            );
            routes.container_tokens.insert(profile.clone(), token);
        }
    }
    Ok(routes)
}

/// Profiles the config names.
fn configured_profiles(config: &AgentConfig) -> BTreeSet<ProfileName> {
    let mut profiles: BTreeSet<ProfileName> = config.profiles.keys().cloned().collect();
    if let Some(imds) = &config.daemon.imds {
        profiles.insert(imds.profile.clone());
    }
    if let Some(container) = &config.daemon.container {
        profiles.extend(container.profiles.iter().cloned());
    }
    profiles
}

/// Profiles with a cache file in `dir`.
fn present_profiles(dir: &Path) -> BTreeSet<ProfileName> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| watch::profile_of(entry.file_name().to_str()?))
        .collect()
}

/// The watcher side of the daemon: config, caches, log lines, status.
struct Daemon {
    config_path: PathBuf,
    paths: Paths,
    config: AgentConfig,
    shared: Arc<Shared>,
    tracker: Tracker,
    status: String,
}

impl Daemon {
    /// Rereads every watched profile's cache.
    fn rescan(&mut self, now: DateTime<Utc>) {
        let mut watched = configured_profiles(&self.config);
        watched.extend(present_profiles(&self.paths.profiles_dir()));
        self.shared
            .store
            .retain(|profile| watched.contains(profile));
        self.tracker.retain(|profile| watched.contains(profile));
        for profile in &watched {
            self.reload_profile(profile, now);
        }
    }

    /// Rereads one profile's cache and logs what changed.
    fn reload_profile(&mut self, profile: &ProfileName, now: DateTime<Utc>) {
        let slot = store::load(profile, &self.paths.cache_file(profile), now);
        if matches!(slot, Slot::Missing) && !configured_profiles(&self.config).contains(profile) {
            // A cache of a profile the config does not name went away: forget it.
            self.shared.store.retain(|p| p != profile);
            self.tracker.retain(|p| p != profile);
            return;
        }
        self.log_events(profile, &slot, now);
        self.shared.store.set(profile.clone(), slot);
    }

    /// Re-evaluates health without reading files (the timer's stale/expired check).
    fn evaluate(&mut self, now: DateTime<Utc>) {
        for (profile, slot) in self.shared.store.snapshot() {
            self.log_events(&profile, &slot, now);
        }
    }

    fn log_events(&mut self, profile: &ProfileName, slot: &Slot, now: DateTime<Utc>) {
        for event in self.tracker.observe(profile, slot, now) {
            let profile = profile.as_str();
            match event {
                Event::Delivered {
                    key_suffix,
                    expires,
                    serial,
                } => tracing::info!(
                    profile,
                    key_id = %format_args!("...{key_suffix}"),
                    expires = %expires,
                    serial = %serial.map_or_else(|| "none".to_owned(), |serial| serial.to_string()),
                    "credentials delivered"
                ),
                Event::Stale { left } => tracing::warn!(
                    profile,
                    left = %human_duration(left),
                    "credentials are stale: under half their life is left, a rotation was missed"
                ),
                Event::Expired { ago } => tracing::error!(
                    profile,
                    ago = %human_duration(ago),
                    "credentials have expired: rotation has stopped reaching this host"
                ),
                Event::Missing => tracing::warn!(profile, "no cache for this profile"),
                Event::Unreadable { reason } => {
                    tracing::error!(profile, reason = %reason, "cache cannot be used")
                }
            }
        }
    }

    /// Sends `STATUS=` when it changed.
    fn update_status(&mut self, now: DateTime<Utc>) {
        let status = health::status_line(&self.shared.store.snapshot(), now);
        if status != self.status {
            notify::status(&status);
            self.status = status;
        }
    }

    /// When the timer should next wake.
    fn next_wake(&self, now: DateTime<Utc>, cap: Duration) -> Duration {
        self.shared
            .store
            .snapshot()
            .values()
            .filter_map(|slot| health::next_transition(slot, now))
            .min()
            .and_then(|at| (at - now).to_std().ok())
            // Timestamps are whole seconds: wake just after the moment, not before.
            .map(|wait| wait + Duration::from_millis(5))
            .map_or(cap, |wait| wait.min(cap))
    }

    /// `SIGHUP`: load the config again; keep the old one if the new one is bad.
    fn reload(&mut self, now: DateTime<Utc>) {
        notify::reloading();
        let loaded = config::load(&self.config_path)
            .map_err(DaemonError::Config)
            .and_then(|config| prepare_routes(&config, &self.paths).map(|routes| (config, routes)));
        match loaded {
            Ok((config, routes)) => {
                if http::endpoints(&config.daemon) != http::endpoints(&self.config.daemon) {
                    tracing::warn!(
                        "listen addresses changed; they take effect at the next restart"
                    );
                }
                if config.daemon.max_connections != self.config.daemon.max_connections
                    || config.daemon.client_timeout_secs != self.config.daemon.client_timeout_secs
                {
                    tracing::warn!(
                        "connection limits changed; they take effect at the next restart"
                    );
                }
                self.shared.set_routes(routes);
                self.config = config;
                self.rescan(now);
                tracing::info!(config = %self.config_path.display(), "config reloaded");
            }
            Err(err) => tracing::error!(
                error = %crate::one_line(&err),
                "reload failed; still running with the previous config"
            ),
        }
        self.status = health::status_line(&self.shared.store.snapshot(), now);
        notify::ready(&self.status);
    }
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Self, DaemonError> {
        let install = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Self {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }
}

/// What woke the main loop.
enum Wake {
    Stop,
    Reload,
    Files(io::Result<Changes>),
    Timer,
    Watchdog,
}

async fn serve(config: AgentConfig, config_path: PathBuf, paths: Paths) -> Result<(), DaemonError> {
    // Signals first: a SIGHUP during start-up must not kill the process.
    let mut signals = Signals::install()?;
    let routes = prepare_routes(&config, &paths)?;
    let client_timeout = Duration::from_secs(config.daemon.client_timeout_secs);
    let shared = Arc::new(Shared::new(routes, client_timeout));
    let mut daemon = Daemon {
        config_path,
        paths,
        config,
        shared: Arc::clone(&shared),
        tracker: Tracker::default(),
        status: String::new(),
    };

    // Watch before the first scan, so a delivery landing in between is not missed.
    let profiles_dir = daemon.paths.profiles_dir();
    let mut dir_watch = match DirWatch::new(&profiles_dir) {
        Ok(dir_watch) => Some(dir_watch),
        Err(err) => {
            tracing::warn!(
                dir = %profiles_dir.display(),
                error = %err,
                "cannot watch the profiles directory; checking it every 2 s instead"
            );
            None
        }
    };
    let mut rescan_every = if dir_watch.is_some() {
        RESCAN_EVERY
    } else {
        POLL_WITHOUT_INOTIFY
    };
    daemon.rescan(wall_clock());

    let listeners = http::bind(&http::endpoints(&daemon.config.daemon))
        .await
        .map_err(|(address, source)| DaemonError::Bind { address, source })?;
    let connections = Arc::new(Connections::new(
        daemon.config.daemon.max_connections as usize,
    ));
    let (stop, shutdown) = flag::channel(false);
    let mut accept_loops = JoinSet::new();
    for (listener, endpoint) in listeners {
        accept_loops.spawn(http::accept_loop(
            listener,
            endpoint,
            Arc::clone(&shared),
            Arc::clone(&connections),
            shutdown.clone(),
        ));
    }

    daemon.status = health::status_line(&shared.store.snapshot(), wall_clock());
    notify::ready(&daemon.status);
    tracing::info!(status = %daemon.status, "ready");

    let mut watchdog = notify::watchdog_interval().map(|every| {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });

    loop {
        let wait = daemon.next_wake(wall_clock(), rescan_every);
        let wake = tokio::select! {
            _ = signals.term.recv() => Wake::Stop,
            _ = signals.int.recv() => Wake::Stop,
            _ = signals.hup.recv() => Wake::Reload,
            changes = async {
                match dir_watch.as_mut() {
                    Some(dir_watch) => dir_watch.changed().await,
                    None => std::future::pending().await,
                }
            } => Wake::Files(changes),
            () = tokio::time::sleep(wait) => Wake::Timer,
            _ = async {
                match watchdog.as_mut() {
                    Some(interval) => interval.tick().await,
                    None => std::future::pending().await,
                }
            } => Wake::Watchdog,
        };
        let now = wall_clock();
        match wake {
            Wake::Stop => break,
            Wake::Reload => daemon.reload(now),
            Wake::Files(Ok(Changes::Profile(profile))) => daemon.reload_profile(&profile, now),
            Wake::Files(Ok(Changes::Everything)) => daemon.rescan(now),
            Wake::Files(Err(err)) => {
                tracing::warn!(error = %err, "lost the inotify watch; checking every 2 s instead");
                dir_watch = None;
                rescan_every = POLL_WITHOUT_INOTIFY;
            }
            Wake::Timer if wait >= rescan_every => daemon.rescan(now),
            Wake::Timer => daemon.evaluate(now),
            Wake::Watchdog => notify::watchdog(),
        }
        daemon.update_status(now);
    }
    drain_and_stop(stop, accept_loops, &connections).await
}

/// Stops accepting, waits for connections to finish (at most [`DRAIN_TIMEOUT`]).
async fn drain_and_stop(
    stop: flag::Sender<bool>,
    mut accept_loops: JoinSet<()>,
    connections: &Connections,
) -> Result<(), DaemonError> {
    notify::stopping();
    tracing::info!("stopping: no new connections, finishing requests in flight");
    let _ = stop.send(true);
    while accept_loops.join_next().await.is_some() {}
    if connections.drained(DRAIN_TIMEOUT).await {
        tracing::info!("stopped");
    } else {
        tracing::warn!(
            open = connections.open(),
            "stopped with connections still open after the drain timeout"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    fn daemon(config: AgentConfig, state_dir: &Path) -> Daemon {
        Daemon {
            config_path: PathBuf::from("/nonexistent/agent.toml"),
            paths: Paths {
                state_dir: state_dir.to_path_buf(),
                config_dir: state_dir.to_path_buf(),
            },
            config,
            shared: Arc::new(Shared::new(Routes::default(), Duration::from_secs(1))),
            tracker: Tracker::default(),
            status: String::new(),
        }
    }

    #[test]
    fn the_timer_wakes_just_after_the_next_transition() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = daemon(AgentConfig::default(), dir.path());
        let cap = Duration::from_secs(30);
        assert_eq!(daemon.next_wake(noon(), cap), cap, "nothing loaded");
        let profile = ProfileName::new("default").unwrap();
        // Issued 11:40, expires 12:20: stale at 12:00, expired at 12:20.
        let delivery = store::tests::delivery(
            1,
            noon() - TimeDelta::minutes(20),
            noon() + TimeDelta::minutes(20),
        );
        daemon
            .shared
            .store
            .set(profile, Slot::Loaded(Arc::new(delivery)));
        let before_stale = noon() - TimeDelta::seconds(10);
        assert_eq!(
            daemon.next_wake(before_stale, cap),
            Duration::from_millis(10_005)
        );
        assert_eq!(daemon.next_wake(noon(), cap), cap, "expiry is 20 min away");
        let near_expiry = noon() + TimeDelta::minutes(20) - TimeDelta::seconds(2);
        assert_eq!(
            daemon.next_wake(near_expiry, cap),
            Duration::from_millis(2_005)
        );
    }

    #[test]
    fn watches_configured_profiles_and_caches_present() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles");
        std::fs::create_dir(&profiles).unwrap();
        for name in ["seen.json", ".seen.json.a1b2c3d4.tmp", "notes.txt"] {
            std::fs::write(profiles.join(name), "{}").unwrap();
        }
        let config = config::parse(
            "[profiles.grouped]\n[daemon.imds]\nprofile = \"imds\"\n[daemon.container]\nprofiles = [\"box\"]\n",
        )
        .unwrap();
        let mut daemon = daemon(config, dir.path());
        daemon.rescan(noon());
        let watched: Vec<String> = daemon
            .shared
            .store
            .snapshot()
            .keys()
            .map(|profile| profile.as_str().to_owned())
            .collect();
        assert_eq!(watched, ["box", "grouped", "imds", "seen"]);
        // A cache the config does not name is forgotten once it is gone.
        std::fs::remove_file(profiles.join("seen.json")).unwrap();
        daemon.reload_profile(&ProfileName::new("seen").unwrap(), noon());
        assert_eq!(daemon.shared.store.snapshot().len(), 3);
    }

    #[test]
    fn errors_show_their_cause_chain_on_one_line() {
        let err = DaemonError::Bind {
            address: SocketAddr::from(([127, 0, 0, 1], 9911)),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            crate::one_line(&err),
            "cannot listen on 127.0.0.1:9911: address in use"
        );
    }
}
