//! A real systemd for the tests: a minimal Debian root built once with
//! `debootstrap`, copied per test and booted with `systemd-nspawn --boot`.
//! Commands run inside through `nsenter` into every namespace of the container's
//! init, as an operator on that host would run them.
//!
//! - The root is cached OUTSIDE the repository, in `/var/cache/aovis-test/`
//!   (override: `AOVIS_TEST_CACHE`), as `nspawn-root/` plus `nspawn-root.stamp`.
//!   The stamp names what was built (suite, variant, packages); a root with another
//!   stamp is rebuilt, so changing [`PACKAGES`] is enough to refresh every machine.
//!   A lock file serialises builders, so parallel tests build it once.
//! - The mirror is the one this machine's apt already uses (a fresh CI machine can
//!   reach Debian's mirror and nothing else); `AOVIS_DEBIAN_MIRROR` overrides it.
//! - The container shares the host's network namespace (no `--private-network`),
//!   so a service listening on 127.0.0.1 inside is reachable from the test.
//! - Dropping a [`Machine`] SIGKILLs the container's init, which ends every process
//!   of its PID namespace, then reaps `systemd-nspawn` and deletes the copy.
//!
//! Needs root, `debootstrap` and `systemd-container` (Debian packages).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::text;

/// Packages on top of `minbase`: systemd as init, dbus for `systemd-analyze
/// security`, adduser for the package's postinst, procps for `/bin/kill` (the
/// unit's `ExecReload=`; every non-minimal Debian install has it).
pub const PACKAGES: &str = "systemd,systemd-sysv,dbus,adduser,procps";
/// The Debian release the root is built from.
pub const SUITE: &str = "bookworm";

/// What a cached root was built from; bump the leading version to force rebuilds.
fn stamp() -> String {
    format!("aovis-nspawn-root v1 {SUITE} minbase {PACKAGES}\n")
}

/// Where cached roots live.
fn cache_dir() -> PathBuf {
    std::env::var_os("AOVIS_TEST_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/aovis-test"), PathBuf::from)
}

/// The Debian mirror: `AOVIS_DEBIAN_MIRROR`, else the first non-security
/// `debian` URI of this machine's apt sources, else deb.debian.org.
pub fn mirror() -> String {
    if let Ok(mirror) = std::env::var("AOVIS_DEBIAN_MIRROR") {
        return mirror;
    }
    let mut sources = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        sources.extend(more);
    }
    for path in sources {
        let Ok(body) = fs::read_to_string(&path) else {
            continue;
        };
        for line in body.lines() {
            let line = line.trim();
            // deb822: `URIs: http://...`; one-line: `deb [opts] http://... suite ...`
            let candidates: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if line.starts_with("deb ") {
                line.split_whitespace()
                    .filter(|word| word.contains("://"))
                    .collect()
            } else {
                Vec::new()
            };
            for uri in candidates {
                let uri = uri.trim_end_matches('/');
                if uri.ends_with("/debian") {
                    return uri.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// Why the nspawn tests cannot run on this machine, if they cannot. Under CI
/// (`CI` set) they must run, so there a missing prerequisite fails the test
/// instead of skipping it.
pub fn unavailable() -> Option<String> {
    let why = missing_prerequisite()?;
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must boot the container, but {why}"
    );
    Some(why)
}

fn missing_prerequisite() -> Option<String> {
    if !super::is_root() {
        return Some("booting a container needs root (CI runs as root)".into());
    }
    for tool in ["debootstrap", "systemd-nspawn", "nsenter"] {
        let found = Command::new("sh")
            .args(["-c", "command -v \"$0\"", tool])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "{tool} is missing (Debian packages debootstrap, systemd-container, util-linux)"
            ));
        }
    }
    None
}

/// The cached root, built first if missing or built from another stamp.
pub fn cached_root() -> PathBuf {
    let cache = cache_dir();
    fs::create_dir_all(&cache).unwrap();
    let lock = fs::File::create(cache.join("nspawn-root.lock")).unwrap();
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .unwrap();
    let root = cache.join("nspawn-root");
    let stamp_path = cache.join("nspawn-root.stamp");
    if root.is_dir() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp()) {
        return root;
    }

    // Build beside, then rename: an interrupted build never looks finished.
    let partial = cache.join("nspawn-root.partial");
    for stale in [&partial, &root] {
        if stale.exists() {
            fs::remove_dir_all(stale).unwrap();
        }
    }
    let _ = fs::remove_file(&stamp_path);
    let mirror = mirror();
    let started = Instant::now();
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(&partial)
        .arg(&mirror)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debootstrap {SUITE} from {mirror} failed: {}\n{}\nlog: {}",
        out.status,
        text(&out.stderr),
        fs::read_to_string(partial.join("debootstrap/debootstrap.log")).unwrap_or_default()
    );
    // The downloaded .debs would only slow down every per-test copy.
    if let Ok(archives) = fs::read_dir(partial.join("var/cache/apt/archives")) {
        for entry in archives.flatten() {
            if entry.path().extension().is_some_and(|e| e == "deb") {
                fs::remove_file(entry.path()).unwrap();
            }
        }
    }
    fs::rename(&partial, &root).unwrap();
    fs::write(&stamp_path, stamp()).unwrap();
    eprintln!(
        "built {} from {mirror} in {:.0?}",
        root.display(),
        started.elapsed()
    );
    root
}

/// A fresh copy of the cached root, to change before booting it.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// Copies the cached root (building it first if needed).
    pub fn new() -> Self {
        let cached = cached_root();
        let dir = tempfile::Builder::new()
            .prefix("aovis-nspawn-")
            .tempdir_in(cached.parent().unwrap())
            .unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg("--reflink=auto")
            .arg(format!("{}/.", cached.display()))
            .arg(dir.path().join("root"))
            .status()
            .unwrap();
        assert!(status.success(), "copying {} failed", cached.display());
        Self { dir }
    }

    /// The root directory of the copy.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `path` inside the root (`path` is absolute, as seen from inside).
    pub fn join(&self, path: &str) -> PathBuf {
        self.path().join(path.trim_start_matches('/'))
    }

    /// Writes `contents` at `path` inside the root with `mode`, creating parents.
    pub fn write(&self, path: &str, contents: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let target = self.join(path);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, contents).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Copies a host file to `path` inside the root with `mode`.
    pub fn install(&self, from: &Path, path: &str, mode: u32) {
        self.write(path, &fs::read(from).unwrap(), mode);
    }

    /// Boots the root with systemd as PID 1 and waits until it has started up.
    pub fn boot(self) -> Machine {
        let log_path = self.dir.path().join("console.log");
        let log = fs::File::create(&log_path).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--quiet",
                "--console=read-only",
            ])
            .arg("--directory")
            .arg(self.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut machine = Machine {
            nspawn,
            leader: None,
            log_path,
            root: self,
        };
        machine.leader = Some(machine.find_leader());
        machine.wait_until_up();
        machine
    }
}

/// A booted container.
pub struct Machine {
    nspawn: Child,
    /// The PID (in the host's namespace) of the container's systemd.
    leader: Option<u32>,
    log_path: PathBuf,
    // Dropped after `Drop::drop` has stopped the container.
    root: Root,
}

impl Machine {
    /// The container's root directory, seen from the host.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// nspawn forks the container's init as its direct child; it is ready to be
    /// entered once it has exec'ed systemd.
    fn find_leader(&mut self) -> u32 {
        let pid = self.nspawn.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let children =
                fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            for child in children.split_whitespace() {
                let comm = fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return child.parse().unwrap();
                }
            }
            if let Some(status) = self.nspawn.try_wait().unwrap() {
                panic!(
                    "systemd-nspawn exited ({status}) before the container's systemd started:\n{}",
                    self.console()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd did not start within 20 s:\n{}",
                self.console()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn wait_until_up(&self) {
        // systemd answers on its private socket only a moment after it started
        // (until then systemctl prints no state), and `--wait` gives up early if
        // the manager is re-executing; so ask again until the boot is over.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.run(&["systemctl", "is-system-running", "--wait"]);
            let state = text(&out.stdout).trim().to_string();
            // `degraded`: booted, but some unit failed (a container lacks some devices).
            if state == "running" || state == "degraded" {
                return;
            }
            if Instant::now() >= deadline {
                let jobs = self.run(&["systemctl", "list-jobs", "--no-pager"]);
                panic!(
                    "the container did not finish booting in 90 s: {state:?} {}\n{}{}\n{}",
                    text(&out.stderr),
                    text(&jobs.stdout),
                    text(&jobs.stderr),
                    self.console()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// What the container printed on its console so far.
    pub fn console(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs `argv` inside the container (every namespace of its init), with a
    /// clean environment and a 60 s limit.
    pub fn run(&self, argv: &[&str]) -> Output {
        let leader = self.leader.unwrap().to_string();
        Command::new("timeout")
            .args([
                "--kill-after=5",
                "60",
                "nsenter",
                "--target",
                &leader,
                "--all",
            ])
            .arg("--")
            .args(argv)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `argv` inside and returns its stdout; fails the test on a non-zero exit.
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "{argv:?} failed in the container ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// One property of a unit (`systemctl show --value -p NAME UNIT`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.ok(&["systemctl", "show", "--value", "-p", name, unit])
            .trim()
            .to_string()
    }

    /// `systemctl status` and the unit's journal, for failure messages.
    pub fn diagnose(&self, unit: &str) -> String {
        let status = self.run(&["systemctl", "status", "--no-pager", "--full", unit]);
        let journal = self.run(&["journalctl", "--no-pager", "-b", "-u", unit]);
        format!(
            "--- systemctl status {unit}\n{}{}\n--- journalctl -u {unit}\n{}{}",
            text(&status.stdout),
            text(&status.stderr),
            text(&journal.stdout),
            text(&journal.stderr)
        )
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGKILL to a PID namespace's init kills the whole namespace at once; a
        // signal to nspawn alone could leave the container running, orphaned.
        if let Some(leader) = self.leader {
            let _ = Command::new("sh")
                .args(["-c", "kill -KILL \"$0\"", &leader.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
