//! `systemd/aovis-agent.service`: checked by `systemd-analyze`, then run for real
//! under systemd in a booted Debian container (`support::nspawn`).
//!
//! The boot test is the only place the unit's sandbox meets the daemon: it proves
//! that with every hardening directive on, `aovis-agent run` still reaches
//! `active` through its own `READY=1`, reads a root-owned cache through a
//! supplementary group, binds its port, feeds the watchdog, reloads (even a broken
//! config) without going down, and stops cleanly; and that starting it did not
//! take `/var/lib/aovis` or `profiles/` away from root.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::endpoints::{container_key_id, free_port, imds_key_id};
use crate::support::nspawn::{self, Machine, Root};
use crate::support::{assert_no_secret, bin, cache_json, expiration_in, repo_root, text, KEY_ID};

const UNIT: &str = "aovis-agent.service";
/// The exposure score `systemd-analyze security` must not exceed.
const MAX_EXPOSURE: f64 = 2.0;

fn unit_text() -> String {
    fs::read_to_string(repo_root().join("systemd").join(UNIT)).unwrap()
}

/// The score on the `Overall exposure level for UNIT: 1.1 OK` line.
fn exposure(report: &str) -> f64 {
    let prefix = format!("Overall exposure level for {UNIT}:");
    let line = report
        .lines()
        .find_map(|line| line.split_once(&prefix).map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("no exposure line in:\n{report}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn exposure_line_is_parsed() {
    let cases = [
        (
            "ok",
            "→ Overall exposure level for aovis-agent.service: 1.1 OK 🙂\n",
            1.1,
        ),
        (
            "exposed",
            "x\n→ Overall exposure level for aovis-agent.service: 9.6 UNSAFE 😨\n",
            9.6,
        ),
    ];
    for (name, report, expected) in cases {
        assert!((exposure(report) - expected).abs() < 1e-9, "{name}");
    }
}

/// Every directive sits in a block (lines without a blank one between them) that
/// carries a comment saying why: the unit is read by people deciding whether to
/// trust it.
#[test]
fn every_directive_is_commented() {
    let unit = unit_text();
    for block in unit.split("\n\n") {
        let lines: Vec<&str> = block.lines().map(str::trim).collect();
        let has_comment = lines.iter().any(|l| l.starts_with('#'));
        for line in &lines {
            let directive = !line.starts_with('#') && !line.starts_with('[') && line.contains('=');
            assert!(
                !directive || has_comment,
                "directive without a comment saying why: {line}"
            );
        }
    }
}

/// The directives the design depends on, each with the reason it matters.
#[test]
fn unit_carries_the_directives_the_design_needs() {
    let unit = unit_text();
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    let cases = [
        ("readiness from the daemon itself", "Type=notify"),
        ("only the main PID may notify", "NotifyAccess=main"),
        ("reload is SIGHUP", "ExecReload=/bin/kill -HUP $MAINPID"),
        ("a stable user for supplementary groups", "User=aovis"),
        (
            "only tokens/ is chowned to the daemon",
            "StateDirectory=aovis/tokens",
        ),
        (
            "the host key is out of reach",
            "InaccessiblePaths=-/etc/aovis/host.key",
        ),
        ("read-only file system", "ProtectSystem=strict"),
        ("no capabilities", "CapabilityBoundingSet="),
        ("no ambient capabilities", "AmbientCapabilities="),
        ("no privilege gain", "NoNewPrivileges=yes"),
        ("token chgrp needs real gids", "PrivateUsers=no"),
        ("token chgrp needs fchown back", "SystemCallFilter=@chown"),
        ("loopback only", "IPAddressAllow=localhost"),
        (
            "families",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        ),
    ];
    for (why, directive) in cases {
        assert!(
            directives.contains(&directive),
            "{why}: missing {directive}"
        );
    }
    let forbidden = [
        ("groups would not survive a dynamic user", "DynamicUser="),
        (
            "would chown /var/lib/aovis and profiles/",
            "StateDirectory=aovis\n",
        ),
        ("would make /etc/aovis writable", "ConfigurationDirectory="),
    ];
    for (why, directive) in forbidden {
        assert!(
            !unit.contains(&format!("\n{directive}")),
            "{why}: {directive}"
        );
    }
}

/// `systemd-analyze verify` on the host. It insists that `ExecStart=` exists, and
/// `/usr/bin/aovis-agent` is not installed here, so the copy it checks points at
/// the freshly built binary; nothing else changes. (The boot test verifies the
/// unit exactly as shipped inside the container.)
#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let agent = bin("aovis-agent");
    let unit = unit_text().replace(
        "ExecStart=/usr/bin/aovis-agent run",
        &format!("ExecStart={} run", agent.display()),
    );
    assert!(unit.contains(&agent.display().to_string()));
    let path = dir.path().join(UNIT);
    fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["--no-pager", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    let about_us: Vec<&str> = stderr.lines().filter(|l| l.contains("aovis")).collect();
    assert!(
        about_us.is_empty(),
        "systemd-analyze verify warns: {about_us:?}"
    );
}

#[test]
fn unit_scores_at_most_2_offline() {
    let path = repo_root().join("systemd").join(UNIT);
    let out = Command::new("systemd-analyze")
        .args(["--no-pager", "security", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    let score = exposure(&report);
    println!("systemd-analyze security --offline=true {UNIT}: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{report}"
    );
}

/// Waits (briefly) until the endpoint answers: `systemctl start` returned after
/// READY=1, which the daemon sends once bound, so this is normally immediate.
fn wait_for_endpoint(machine: &Machine, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return imds_key_id(port).unwrap_or_else(|err| {
                panic!(
                    "IMDS endpoint answered wrong: {err}\n{}",
                    machine.diagnose(UNIT)
                )
            });
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after READY=1\n{}",
            machine.diagnose(UNIT)
        );
        sleep(Duration::from_millis(100));
    }
}

/// Both endpoints serving `default`, whose cache and token group is
/// `aovis-default`; `extra` goes first, at the top level.
fn agent_toml(ports: Ports, extra: &str) -> String {
    let Ports { imds, container } = ports;
    format!(
        "{extra}[profiles.default]\ngroup = \"aovis-default\"\n\n\
         [daemon.imds]\nprofile = \"default\"\nlisten = [\"127.0.0.1:{imds}\"]\n\n\
         [daemon.container]\nprofiles = [\"default\"]\nlisten = [\"127.0.0.1:{container}\"]\n"
    )
}

/// The daemon's two listeners.
#[derive(Clone, Copy)]
struct Ports {
    imds: u16,
    container: u16,
}

/// A host as the package and an operator leave it: binaries in /usr/bin, the unit
/// in /usr/lib/systemd/system, agent.toml, a delivered cache root:aovis-default
/// 0640 in a root-owned profiles/ (as `receive` writes it), and the documented
/// drop-in granting the daemon the profile's group. The drop-in also shortens the
/// watchdog to 2 s, so a daemon that stopped feeding it would be killed during the
/// test.
fn prepare(root: &Root, ports: Ports) {
    root.install(&bin("aovis-agent"), "/usr/bin/aovis-agent", 0o755);
    root.install(&bin("aovis-cred"), "/usr/bin/aovis-cred", 0o755);
    root.install(
        &repo_root().join("systemd").join(UNIT),
        &format!("/usr/lib/systemd/system/{UNIT}"),
        0o644,
    );
    root.write(
        &format!("/etc/systemd/system/{UNIT}.d/test.conf"),
        b"[Service]\nSupplementaryGroups=aovis-default\nWatchdogSec=2s\n",
        0o644,
    );
    root.write(
        "/etc/aovis/agent.toml",
        agent_toml(ports, "").as_bytes(),
        0o644,
    );
    // Not a real key (the daemon must never see it anyway), in the place and mode
    // `enroll` uses.
    root.write(
        "/etc/aovis/host.key",
        b"# not a key: aovis unit test\n",
        0o600,
    );
    root.write(
        "/var/lib/aovis/profiles/default.json",
        cache_json(&expiration_in(3600)).as_bytes(),
        0o640,
    );
    for dir in ["/etc/aovis", "/var/lib/aovis", "/var/lib/aovis/profiles"] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `stat -c '%U:%G %a'` of each path inside the container.
fn owners(machine: &Machine, paths: &[&str]) -> Vec<String> {
    let mut argv = vec!["stat", "-c", "%n %U:%G %a"];
    argv.extend_from_slice(paths);
    machine
        .ok(&argv)
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>()
}

#[test]
fn daemon_runs_under_real_systemd_with_the_hardened_unit() {
    if let Some(why) = nspawn::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let ports = Ports {
        imds: free_port(),
        container: free_port(),
    };
    let port = ports.imds;
    let root = Root::new();
    prepare(&root, ports);
    let machine = root.boot();
    println!("container up in {:.1?}", started.elapsed());

    // The user and groups, as the package's postinst and the operator make them.
    machine.ok(&[
        "adduser",
        "--system",
        "--group",
        "--home",
        "/nonexistent",
        "--no-create-home",
        "aovis",
    ]);
    machine.ok(&["addgroup", "--system", "aovis-default"]);
    machine.ok(&[
        "chgrp",
        "aovis-default",
        "/var/lib/aovis/profiles/default.json",
    ]);

    // The unit as shipped passes verify on a real Debian system.
    let verify = machine.run(&["systemd-analyze", "verify", UNIT]);
    assert!(
        verify.status.success() && !text(&verify.stderr).contains("aovis"),
        "systemd-analyze verify inside: {}",
        text(&verify.stderr)
    );

    // Start: returns only after READY=1 from the main PID (Type=notify).
    let start = machine.run(&["systemctl", "start", UNIT]);
    assert!(
        start.status.success(),
        "systemctl start {UNIT} failed: {}\n{}",
        text(&start.stderr),
        machine.diagnose(UNIT)
    );
    assert_eq!(machine.property(UNIT, "ActiveState"), "active");
    assert_eq!(machine.property(UNIT, "SubState"), "running");
    let main_pid = machine.property(UNIT, "MainPID");
    // STATUS= from the main PID reaches systemd too: it names the profile.
    let status = machine.property(UNIT, "StatusText");
    assert!(status.contains("default"), "StatusText: {status:?}");
    println!("active in {:.1?}", started.elapsed());

    // Hardening still lets it read the cache and bind its port.
    assert_eq!(wait_for_endpoint(&machine, port), KEY_ID);

    // Starting the unit left the state layout as `receive` and aovis-cred need it.
    assert_eq!(
        owners(
            &machine,
            &[
                "/var/lib/aovis",
                "/var/lib/aovis/profiles",
                "/var/lib/aovis/tokens"
            ]
        ),
        [
            "/var/lib/aovis root:root 755",
            "/var/lib/aovis/profiles root:root 755",
            "/var/lib/aovis/tokens aovis:aovis 711",
        ]
    );
    // The container token: the daemon's file, chgrp'ed to the profile's group
    // (which needs the real gid: the reason for PrivateUsers=no), and it works.
    assert_eq!(
        owners(&machine, &["/var/lib/aovis/tokens/default.token"]),
        ["/var/lib/aovis/tokens/default.token aovis:aovis-default 640"]
    );
    let token =
        fs::read_to_string(machine.root().join("/var/lib/aovis/tokens/default.token")).unwrap();
    assert_eq!(
        container_key_id(ports.container, &token)
            .unwrap_or_else(|err| panic!("container endpoint: {err}\n{}", machine.diagnose(UNIT))),
        KEY_ID
    );

    // The sandbox as the daemon sees it (its mount namespace, entered from inside
    // the container): the host key is replaced by an inaccessible node, the
    // caches and the config are read-only, only tokens/ is writable.
    let sandbox = [
        (
            "host key hidden",
            "stat -c %a /etc/aovis/host.key",
            Some("0"),
        ),
        ("caches read-only", "touch /var/lib/aovis/profiles/x", None),
        ("config read-only", "touch /etc/aovis/x", None),
        ("binaries read-only", "touch /usr/bin/x", None),
        (
            "tokens writable",
            "touch /var/lib/aovis/tokens/x && rm /var/lib/aovis/tokens/x && echo ok",
            Some("ok"),
        ),
    ];
    for (name, script, expected) in sandbox {
        let out = machine.run(&[
            "nsenter", "--target", &main_pid, "--mount", "sh", "-c", script,
        ]);
        match expected {
            Some(stdout) => assert!(
                out.status.success() && text(&out.stdout).trim() == stdout,
                "{name}: {script}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            ),
            None => assert!(
                text(&out.stderr).contains("Read-only file system"),
                "{name}: {script} was not refused as read-only: {}",
                text(&out.stderr)
            ),
        }
    }

    let cred = machine.run(&["aovis-cred", "--profile", "default"]);
    assert!(
        cred.status.success(),
        "aovis-cred refused the cache after the daemon started: {}",
        text(&cred.stderr)
    );

    // The watchdog (2 s in the drop-in) is fed: pings keep arriving and the
    // service outlives several periods without a restart.
    let first_ping = machine.property(UNIT, "WatchdogTimestampMonotonic");
    sleep(Duration::from_secs(5));
    let later_ping = machine.property(UNIT, "WatchdogTimestampMonotonic");
    assert_eq!(machine.property(UNIT, "WatchdogUSec"), "2s");
    assert!(
        later_ping.parse::<u64>().unwrap() > first_ping.parse::<u64>().unwrap(),
        "no watchdog ping in 5 s ({first_ping} -> {later_ping})\n{}",
        machine.diagnose(UNIT)
    );
    assert_eq!(machine.property(UNIT, "ActiveState"), "active");
    assert_eq!(machine.property(UNIT, "NRestarts"), "0");
    assert_eq!(machine.property(UNIT, "MainPID"), main_pid);

    // Reload: SIGHUP to the same process, which keeps serving; then a broken
    // config, which the daemon must reject while keeping the old one.
    machine.ok(&["systemctl", "reload", UNIT]);
    assert_eq!(machine.property(UNIT, "ActiveState"), "active");
    assert_eq!(machine.property(UNIT, "MainPID"), main_pid);
    assert_eq!(imds_key_id(port).unwrap(), KEY_ID, "after reload");
    machine.root().write(
        "/etc/aovis/agent.toml",
        agent_toml(ports, "no_such_setting = true\n").as_bytes(),
        0o644,
    );
    machine.ok(&["systemctl", "reload", UNIT]);
    sleep(Duration::from_millis(500));
    assert_eq!(machine.property(UNIT, "ActiveState"), "active");
    assert_eq!(machine.property(UNIT, "MainPID"), main_pid);
    assert_eq!(imds_key_id(port).unwrap(), KEY_ID, "after a broken reload");

    // The real (online) security review inside.
    let security = machine.ok(&["systemd-analyze", "--no-pager", "security", UNIT]);
    let score = exposure(&security);
    println!("systemd-analyze security {UNIT} (inside the container): exposure {score}");
    assert!(score <= MAX_EXPOSURE, "exposure {score}:\n{security}");

    // Stop: SIGTERM, a clean exit 0, no SIGKILL after TimeoutStopSec.
    machine.ok(&["systemctl", "stop", UNIT]);
    assert_eq!(machine.property(UNIT, "ActiveState"), "inactive");
    assert_eq!(machine.property(UNIT, "Result"), "success");
    assert_eq!(machine.property(UNIT, "ExecMainStatus"), "0");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still listening after stop"
    );

    // Whatever the daemon logged never holds a secret.
    let journal = machine.ok(&[
        "journalctl",
        "--no-pager",
        "-b",
        "-o",
        "verbose",
        "-u",
        UNIT,
    ]);
    assert_no_secret("the daemon's journal", &journal);
    assert!(
        !journal.contains(&token),
        "the journal holds the container token"
    );
    assert_no_secret("the console", &machine.console());
    println!("boot test done in {:.1?}", started.elapsed());
}
