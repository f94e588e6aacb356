//! The Debian package (`scripts/package-deb`): its contents as `dpkg-deb` reads
//! them, `lintian`, and what installing it does to a real Debian root, once with
//! systemd not running (a chroot, as in an image build) and once on a booted
//! system.
//!
//! Building the `.deb` takes a release build (fat LTO), so these tests never build
//! it: they test the file named by `AOVIS_DEB`, which `scripts/package-deb` prints
//! and CI exports. Without it they skip, except under CI (`CI` set), where a
//! missing package is a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::endpoints::{free_port, imds_key_id};
use crate::support::nspawn::{self, Root};
use crate::support::{cache_json, expiration_in, repo_root, text, KEY_ID};

/// The package under test, if there is one to test.
fn deb() -> Option<PathBuf> {
    match std::env::var_os("AOVIS_DEB") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "AOVIS_DEB={} is not a file", path.display());
            Some(path)
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must test the package: run scripts/package-deb and export AOVIS_DEB"
            );
            eprintln!("skipped: AOVIS_DEB is not set (scripts/package-deb builds the .deb)");
            None
        }
    }
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// One entry of `dpkg-deb --contents`.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
    path: String,
}

fn contents(deb: &Path) -> Vec<Entry> {
    let out = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    text(&out.stdout)
        .lines()
        .map(|line| {
            // drwxr-xr-x root/root         0 2026-11-23 20:00 ./usr/bin/
            let fields: Vec<&str> = line.split_whitespace().collect();
            Entry {
                mode: fields[0].to_string(),
                owner: fields[1].to_string(),
                path: fields[5..].join(" "),
            }
        })
        .collect()
}

#[test]
fn package_holds_the_binaries_the_unit_and_the_docs() {
    let Some(deb) = deb() else { return };
    let entries = contents(&deb);
    let expected = [
        ("the agent", "./usr/bin/aovis-agent", "-rwxr-xr-x"),
        (
            "the credential_process helper",
            "./usr/bin/aovis-cred",
            "-rwxr-xr-x",
        ),
        (
            "the unit",
            "./usr/lib/systemd/system/aovis-agent.service",
            "-rw-r--r--",
        ),
        (
            "the example config",
            "./usr/share/doc/aovis/agent.toml.example",
            "-rw-r--r--",
        ),
        (
            "the copyright",
            "./usr/share/doc/aovis/copyright",
            "-rw-r--r--",
        ),
        (
            "the changelog",
            "./usr/share/doc/aovis/changelog.Debian.gz",
            "-rw-r--r--",
        ),
    ];
    for (what, path, mode) in expected {
        let entry = entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{what}: {path} missing from {entries:#?}"));
        assert_eq!(entry.mode, mode, "{what}: mode of {path}");
    }
    for entry in &entries {
        // cargo-deb writes numeric ids; either spelling means root.
        assert!(
            entry.owner == "root/root" || entry.owner == "0/0",
            "owner of {}: {}",
            entry.path,
            entry.owner
        );
        assert!(
            !entry.mode.contains('s') && !entry.mode.ends_with('w'),
            "setuid/setgid or world-writable: {entry:?}"
        );
        // /etc/aovis and /var/lib/aovis belong to the host (postinst makes the
        // directories, the tools the files), never to the package: an upgrade
        // must not replace a host key, a config or a cache.
        for forbidden in ["./etc/", "./var/"] {
            assert!(
                !entry.path.starts_with(forbidden),
                "the package ships {}",
                entry.path
            );
        }
    }
}

#[test]
fn package_ships_the_unit_as_written() {
    let Some(deb) = deb() else { return };
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.path()));
    let shipped = fs::read(
        dir.path()
            .join("usr/lib/systemd/system/aovis-agent.service"),
    )
    .unwrap();
    let source = fs::read(repo_root().join("systemd/aovis-agent.service")).unwrap();
    assert!(shipped == source, "the packaged unit differs from systemd/");
}

#[test]
fn package_control_and_maintainer_scripts() {
    let Some(deb) = deb() else { return };
    let field = |name: &str| {
        let out = run(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name));
        text(&out.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "aovis");
    let depends = field("Depends");
    for needed in ["adduser", "procps", "libc6"] {
        assert!(
            depends.contains(needed),
            "Depends lacks {needed}: {depends}"
        );
    }

    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    let script = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = control.path().join(name);
        let meta = fs::metadata(&path).unwrap_or_else(|_| panic!("no {name} in the package"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "mode of {name}");
        fs::read_to_string(path).unwrap()
    };
    let postinst = script("postinst");
    let cases = [
        ("creates the system user", "adduser --system --group"),
        (
            "root-owned directories",
            "install -d -o root -g root -m 0755",
        ),
        ("enables the unit", "deb-systemd-helper enable"),
    ];
    for (what, needle) in cases {
        assert!(postinst.contains(needle), "postinst {what}: no {needle:?}");
    }
    assert!(
        !postinst.contains("deb-systemd-invoke start"),
        "postinst must not start the unit on install"
    );
    assert!(!postinst.contains("#DEBHELPER#"), "token left unexpanded");
    assert!(script("prerm").contains("deb-systemd-invoke stop"));
    let postrm = script("postrm");
    assert!(postrm.contains("rm -rf /var/lib/aovis /etc/aovis"));
    assert!(postrm.contains("deb-systemd-helper purge"));
    // Nothing in /etc is shipped, so dpkg tracks no conffile.
    let conffiles = fs::read_to_string(control.path().join("conffiles")).unwrap_or_default();
    assert!(conffiles.trim().is_empty(), "conffiles: {conffiles}");
}

#[test]
fn package_has_no_lintian_errors() {
    let Some(deb) = deb() else { return };
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    println!("lintian:\n{report}");
    assert!(
        out.status.success(),
        "lintian found errors:\n{report}{}",
        text(&out.stderr)
    );
    assert!(!report.lines().any(|l| l.starts_with("E:")), "{report}");
}

/// The lines of a `stat -c "%n %U:%G %a" PATHS...` run.
fn owners(out: &Output) -> Vec<String> {
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// A chroot has no running systemd (no /run/systemd/system): the package must
/// still create the user and the directories and enable the unit, and start
/// nothing.
#[test]
fn package_installs_and_purges_without_systemd_running() {
    let Some(deb) = deb() else { return };
    if let Some(why) = nspawn::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let root = Root::new();
    root.install(&deb, "/root/aovis.deb", 0o644);
    let chroot = |argv: &[&str]| {
        let mut command = Command::new("chroot");
        command
            .arg(root.path())
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut command)
    };
    chroot(&["dpkg", "-i", "/root/aovis.deb"]);

    let passwd = text(&chroot(&["getent", "passwd", "aovis"]).stdout);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[5], "/nonexistent", "home: {passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "shell: {passwd}");
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "not a system user: {passwd}"
    );
    chroot(&["getent", "group", "aovis"]);
    assert_eq!(
        owners(&chroot(&[
            "stat",
            "-c",
            "%n %U:%G %a",
            "/etc/aovis",
            "/var/lib/aovis",
            "/var/lib/aovis/profiles",
            "/usr/bin/aovis-agent",
            "/usr/bin/aovis-cred",
        ])),
        [
            "/etc/aovis root:root 755",
            "/var/lib/aovis root:root 755",
            "/var/lib/aovis/profiles root:root 755",
            "/usr/bin/aovis-agent root:root 755",
            "/usr/bin/aovis-cred root:root 755",
        ]
    );
    let wants = root.join("/etc/systemd/system/multi-user.target.wants/aovis-agent.service");
    let link = fs::read_link(&wants).expect("the unit is not enabled");
    assert!(
        link.ends_with("systemd/system/aovis-agent.service")
            && root.join(&link.to_string_lossy()).is_file(),
        "the enablement link points at {}",
        link.display()
    );

    // The installed helper runs, and refuses cleanly with no cache yet.
    let mut cred = Command::new("chroot");
    cred.arg(root.path())
        .args(["/usr/bin/aovis-cred", "--profile", "default"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let out = cred.output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).starts_with("aovis-cred:"),
        "{}",
        text(&out.stderr)
    );

    // Purge removes the host's state and config and the unit's enablement.
    fs::write(root.join("/var/lib/aovis/profiles/default.json"), "{}").unwrap();
    fs::write(root.join("/etc/aovis/agent.toml"), "").unwrap();
    chroot(&["dpkg", "--purge", "aovis"]);
    for gone in [
        "/var/lib/aovis",
        "/etc/aovis",
        "/usr/bin/aovis-agent",
        "/usr/lib/systemd/system/aovis-agent.service",
        "/etc/systemd/system/multi-user.target.wants/aovis-agent.service",
    ] {
        assert!(
            fs::symlink_metadata(root.join(gone)).is_err(),
            "{gone} survived the purge"
        );
    }
}

/// On a booted system: installed, the unit is enabled and loaded but not started;
/// configured as the docs say, it serves; purged, it is stopped and gone.
#[test]
fn package_under_systemd_is_enabled_not_started_then_serves_and_purges() {
    let Some(deb) = deb() else { return };
    if let Some(why) = nspawn::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let root = Root::new();
    root.install(&deb, "/root/aovis.deb", 0o644);
    let machine = root.boot();
    machine.ok(&["dpkg", "-i", "/root/aovis.deb"]);
    assert_eq!(
        machine
            .ok(&["systemctl", "is-enabled", "aovis-agent.service"])
            .trim(),
        "enabled"
    );
    let unit = "aovis-agent.service";
    assert_eq!(machine.property(unit, "LoadState"), "loaded");
    assert_eq!(machine.property(unit, "ActiveState"), "inactive");
    // /lib is /usr/lib on a merged-/usr system; systemd names the first it finds.
    let fragment = machine.property(unit, "FragmentPath");
    assert!(
        fragment == "/usr/lib/systemd/system/aovis-agent.service"
            || fragment == "/lib/systemd/system/aovis-agent.service",
        "loaded from {fragment}"
    );
    machine.ok(&["id", "aovis"]);

    // The operator's steps from systemd/README.md, then the packaged unit serves
    // a cache with the packaged (release) binary.
    let port = free_port();
    machine.ok(&["addgroup", "--system", "aovis-default"]);
    let root = machine.root();
    root.write(
        "/etc/aovis/agent.toml",
        format!(
            "[profiles.default]\ngroup = \"aovis-default\"\n\n\
             [daemon.imds]\nprofile = \"default\"\nlisten = [\"127.0.0.1:{port}\"]\n"
        )
        .as_bytes(),
        0o644,
    );
    root.write(
        "/var/lib/aovis/profiles/default.json",
        cache_json(&expiration_in(3600)).as_bytes(),
        0o640,
    );
    machine.ok(&[
        "chgrp",
        "aovis-default",
        "/var/lib/aovis/profiles/default.json",
    ]);
    root.write(
        &format!("/etc/systemd/system/{unit}.d/groups.conf"),
        b"[Service]\nSupplementaryGroups=aovis-default\n",
        0o644,
    );
    machine.ok(&["systemctl", "daemon-reload"]);
    let start = machine.run(&["systemctl", "start", unit]);
    assert!(
        start.status.success(),
        "the packaged unit did not start: {}",
        machine.diagnose(unit)
    );
    assert_eq!(
        imds_key_id(port).unwrap_or_else(|err| panic!("{err}\n{}", machine.diagnose(unit))),
        KEY_ID
    );

    // Purge stops it (prerm), disables it and removes the host's state.
    machine.ok(&["dpkg", "--purge", "aovis"]);
    assert_eq!(machine.property(unit, "ActiveState"), "inactive");
    let enabled = machine.run(&["systemctl", "is-enabled", unit]);
    assert!(!enabled.status.success(), "still enabled after purge");
    for gone in ["/var/lib/aovis", "/etc/aovis"] {
        assert!(
            fs::symlink_metadata(root.join(gone)).is_err(),
            "{gone} survived the purge"
        );
    }
}
