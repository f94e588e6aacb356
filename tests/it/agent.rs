//! `aovis-agent enroll`, `receive`, `status` and `doctor` as operators, SSM Agent
//! and monitoring run them: the built binary, a throwaway host layout, envelopes
//! sealed by the reference `age` CLI and by the `age` crate, `aovis-cred` reading
//! while deliveries land, and `doctor --verify` against moto with SigV4 checked.
//!
//! Every output of every run is searched for the fixture secrets and for the host's
//! age secret key.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::delivery::agent;
use crate::support::moto::MotoServer;
use crate::support::sealing::{
    b64, envelope, open_with_cli, seal_with_cli, seal_with_crate, HOST_ID, ROLE_ARN,
};
use crate::support::{
    assert_no_secret, expiration_in, is_root, py_script, python, text, TempHost, KEY_ID, SECRET,
};

/// The host's age secret key line, to search outputs for.
fn host_secret_key(host: &TempHost) -> Option<String> {
    let text = fs::read_to_string(host.config_dir().join("host.key")).ok()?;
    text.lines()
        .find(|line| line.starts_with("AGE-SECRET-KEY-1"))
        .map(str::to_owned)
}

/// Both streams, checked for every secret of the fixture and the host.
fn outputs(host: &TempHost, what: &str, out: &Output) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for stream in [&stdout, &stderr] {
        assert_no_secret(what, stream);
        assert!(
            !stream.contains("AGE-SECRET-KEY"),
            "{what} leaked a key: {stream}"
        );
        if let Some(key) = host_secret_key(host) {
            assert!(!stream.contains(&key), "{what} leaked the host key");
        }
    }
    (stdout, stderr)
}

fn enroll(host: &TempHost) -> String {
    let out = agent(host).arg("enroll").output().unwrap();
    let (stdout, stderr) = outputs(host, "enroll", &out);
    assert!(out.status.success(), "enroll: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let recipient = stdout.trim_end().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    recipient
}

fn receive(host: &TempHost, payload: &str) -> Output {
    agent(host)
        .args(["receive", "--payload", payload])
        .output()
        .unwrap()
}

fn receive_stdin(host: &TempHost, payload: &[u8]) -> Output {
    use std::io::Write;
    let mut child = agent(host)
        .arg("receive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent may stop reading once it has seen too much; a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(payload);
    child.wait_with_output().unwrap()
}

fn now_utc() -> String {
    expiration_in(0)
}

/// A crate-sealed envelope for this host's default profile, valid for an hour.
fn delivery(recipient: &str, serial: u64) -> String {
    let plain = envelope(HOST_ID, "default", serial, &now_utc(), &expiration_in(3600));
    seal_with_crate(recipient, plain.as_bytes())
}

fn cached_serial(host: &TempHost, profile: &str) -> u64 {
    let bytes = fs::read(host.cache_path(profile)).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    value["Aovis"]["serial"].as_u64().unwrap()
}

/// Names in the profiles directory other than caches and lock files.
fn leftovers(host: &TempHost) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(host.profiles_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.ends_with(".json") && !name.ends_with(".lock"))
        .collect();
    names.sort();
    names
}

fn assert_stored(host: &TempHost, what: &str, out: &Output, serial: u64) {
    let (stdout, stderr) = outputs(host, what, out);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    assert!(stderr.is_empty(), "{what}: {stderr}");
    let expected = "aovis-agent: stored profile 'default' (key ...WXYZ, expires ";
    assert!(stdout.starts_with(expected), "{what}: {stdout}");
    assert!(
        stdout.ends_with(&format!(", serial {serial})\n")),
        "{what}: {stdout}"
    );
    assert_eq!(stdout.lines().count(), 1);
}

#[test]
fn enroll_creates_an_age_keygen_compatible_key_once() {
    let host = TempHost::new();
    // A config dir that does not exist yet is created.
    let config_dir = host.root().join("etc/aovis");
    let run = || {
        let out = agent(&host)
            .env("AOVIS_CONFIG_DIR", &config_dir)
            .arg("enroll")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let first = run();
    let second = run();
    assert_eq!(first, second, "enroll is idempotent");
    let key = config_dir.join("host.key");
    let meta = fs::symlink_metadata(&key).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(fs::metadata(&config_dir).unwrap().mode() & 0o7777, 0o755);

    // The reference tool reads our key file and derives the same recipient.
    let keygen = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    assert_eq!(text(&keygen.stdout), first);
    let secret = fs::read_to_string(&key).unwrap();
    let secret = secret.lines().last().unwrap();
    assert!(secret.starts_with("AGE-SECRET-KEY-1"));
    assert!(!first.contains(secret));
    let names: Vec<_> = fs::read_dir(&config_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["host.key"], "no temp file left");
}

#[test]
fn concurrent_enrolls_all_print_the_one_key_that_won() {
    let host = TempHost::new();
    let children: Vec<_> = (0..8)
        .map(|_| {
            agent(&host)
                .arg("enroll")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let printed: Vec<String> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        })
        .collect();
    let keygen = Command::new("age-keygen")
        .arg("-y")
        .arg(host.config_dir().join("host.key"))
        .output()
        .unwrap();
    for recipient in &printed {
        assert_eq!(recipient, &text(&keygen.stdout));
    }
    let names: Vec<_> = fs::read_dir(host.config_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["host.key"], "no temp file left");
}

#[test]
fn receive_before_enroll_says_to_enroll_and_help_lists_exit_codes() {
    let host = TempHost::new();
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let out = receive(&host, &delivery(&recipient, 1));
    let (stdout, stderr) = outputs(&host, "not enrolled", &out);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("run `aovis-agent enroll` first"),
        "{stderr}"
    );
    assert!(!host.profiles_dir().join("default.json").exists());

    let help = agent(&host).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = text(&help.stdout);
    for code in 0..=10 {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(&format!("{code}  "))),
            "exit code {code} missing from --help: {help}"
        );
    }
    let bad = agent(&host).arg("bogus").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn enroll_adopts_a_key_made_by_age_keygen() {
    let host = TempHost::new();
    let key = host.config_dir().join("host.key");
    let made = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let recipient = enroll(&host);
    let keygen = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(text(&keygen.stdout).trim_end(), recipient);
}

#[test]
fn enroll_and_receive_refuse_an_unsafe_key_file() {
    type Spoil = fn(&Path);
    let cases: [(&str, Spoil, &str); 4] = [
        (
            "group readable",
            |key| fs::set_permissions(key, fs::Permissions::from_mode(0o640)).unwrap(),
            "chmod 600",
        ),
        (
            "other readable",
            |key| fs::set_permissions(key, fs::Permissions::from_mode(0o604)).unwrap(),
            "chmod 600",
        ),
        (
            "symlink",
            |key| {
                let real = key.with_file_name("real.key");
                fs::rename(key, &real).unwrap();
                symlink(&real, key).unwrap();
            },
            "is a symbolic link",
        ),
        (
            "garbage",
            |key| fs::write(key, "not a key\n").unwrap(),
            "not hold a valid age X25519 secret key",
        ),
    ];
    for (name, spoil, expected) in cases {
        let host = TempHost::new();
        let recipient = enroll(&host);
        let key = host.config_dir().join("host.key");
        spoil(&key);
        let before = fs::read(&key).unwrap();
        for (command, out) in [
            ("enroll", agent(&host).arg("enroll").output().unwrap()),
            ("receive", receive(&host, &delivery(&recipient, 1))),
        ] {
            let what = format!("{name} ({command})");
            let (stdout, stderr) = outputs(&host, &what, &out);
            assert_eq!(out.status.code(), Some(9), "{what}: {stderr}");
            assert!(stdout.is_empty(), "{what}: {stdout}");
            assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
            assert!(stderr.starts_with("aovis-agent: "), "{what}: {stderr}");
            assert!(stderr.contains(expected), "{what}: {stderr}");
        }
        assert_eq!(fs::read(&key).unwrap(), before, "{name}: key untouched");
        assert!(!host.cache_path("default").exists(), "{name}");
    }
}

#[test]
fn receive_accepts_envelopes_sealed_by_the_age_cli_and_the_age_crate() {
    let host = TempHost::new();
    let recipient = enroll(&host);
    type Seal = fn(&str, &[u8]) -> String;
    let sealers: [(&str, Seal); 2] = [("age CLI", seal_with_cli), ("age crate", seal_with_crate)];
    for (serial, (name, seal)) in (1..).zip(sealers) {
        let plain = envelope(HOST_ID, "default", serial, &now_utc(), &expiration_in(3600));
        let payload = seal(&recipient, plain.as_bytes());
        let out = receive(&host, &payload);
        assert_stored(&host, name, &out, serial);
        assert_eq!(cached_serial(&host, "default"), serial, "{name}");
        // The reference tool opens what the crate sealed, with our key file.
        let opened = open_with_cli(&host.config_dir().join("host.key"), &payload);
        assert_eq!(opened, plain.as_bytes(), "{name}");
    }
    // Through stdin, with the trailing newline a shell adds.
    let payload = format!("{}\n", delivery(&recipient, 3));
    assert_stored(&host, "stdin", &receive_stdin(&host, payload.as_bytes()), 3);

    let path = host.cache_path("default");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    if is_root() {
        assert_eq!(meta.uid(), 0);
    }
    let cache: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(cache["Aovis"]["instance_id"], HOST_ID);
    assert_eq!(cache["Aovis"]["role_arn"], ROLE_ARN);
    assert_eq!(cache["SecretAccessKey"], SECRET);

    // aovis-cred serves what was stored.
    let out = host.cred(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let served: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(served["AccessKeyId"], KEY_ID);
    assert_eq!(leftovers(&host), Vec::<String>::new());
}

#[test]
fn receive_finds_the_instance_id_in_config_or_registration_file() {
    let host = TempHost::new();
    let recipient = enroll(&host);
    let registration = host.root().join("registration");
    fs::write(
        &registration,
        format!(r#"{{"ManagedInstanceID":"{HOST_ID}","Region":"eu-west-1"}}"#),
    )
    .unwrap();
    let out = agent(&host)
        .env_remove("AWS_SSM_INSTANCE_ID")
        .env("AOVIS_SSM_REGISTRATION_FILE", &registration)
        .args(["receive", "--payload", &delivery(&recipient, 1)])
        .output()
        .unwrap();
    assert_stored(&host, "registration file", &out, 1);

    fs::write(
        host.config_dir().join("agent.toml"),
        format!("instance_id = \"{HOST_ID}\"\n"),
    )
    .unwrap();
    let out = agent(&host)
        .env_remove("AWS_SSM_INSTANCE_ID")
        .args(["receive", "--payload", &delivery(&recipient, 2)])
        .output()
        .unwrap();
    assert_stored(&host, "agent.toml", &out, 2);

    fs::remove_file(host.config_dir().join("agent.toml")).unwrap();
    let out = agent(&host)
        .env_remove("AWS_SSM_INSTANCE_ID")
        .args(["receive", "--payload", &delivery(&recipient, 3)])
        .output()
        .unwrap();
    let (_, stderr) = outputs(&host, "no instance id", &out);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert!(
        stderr.contains("cannot tell this host's instance id"),
        "{stderr}"
    );
    assert_eq!(cached_serial(&host, "default"), 2);
}

#[test]
fn receive_refuses_each_bad_delivery_and_leaves_the_cache_untouched() {
    let host = TempHost::new();
    let recipient = enroll(&host);
    assert_stored(
        &host,
        "first",
        &receive(&host, &delivery(&recipient, 1000)),
        1000,
    );
    let cache = host.cache_path("default");
    let before = fs::read(&cache).unwrap();

    let seal = |plain: &str| seal_with_crate(&recipient, plain.as_bytes());
    let with = |serial: u64, expiration: &str| {
        seal(&envelope(
            HOST_ID,
            "default",
            serial,
            &now_utc(),
            expiration,
        ))
    };
    let other_recipient = {
        let other = TempHost::new();
        enroll(&other)
    };
    let tampered = {
        let mut bytes = age::encrypt(
            &recipient.parse::<age::x25519::Recipient>().unwrap(),
            envelope(HOST_ID, "default", 1001, &now_utc(), &expiration_in(3600)).as_bytes(),
        )
        .unwrap();
        let at = bytes.len() - 20;
        bytes[at] ^= 0x01;
        b64(&bytes)
    };
    let v2 = envelope(HOST_ID, "default", 1001, &now_utc(), &expiration_in(3600))
        .replace(r#""v":1"#, r#""v":2"#);
    let oversized = "A".repeat(64 * 1024 + 4);

    enum Via {
        Arg(String),
        Stdin(Vec<u8>),
    }
    let cases: Vec<(&str, Via, i32, &str)> = vec![
        (
            "bad base64",
            Via::Arg("bm90*YmFzZTY0".into()),
            3,
            "not standard base64",
        ),
        (
            "base64 without padding",
            Via::Arg("YWJjZA".into()),
            3,
            "not standard base64",
        ),
        ("empty stdin", Via::Stdin(Vec::new()), 3, "payload is empty"),
        (
            "wrong key",
            Via::Arg(seal_with_crate(&other_recipient, b"{}")),
            4,
            "not sealed to this host's key",
        ),
        (
            "tampered ciphertext",
            Via::Arg(tampered),
            4,
            "not a valid age file or was altered",
        ),
        (
            "not age at all",
            Via::Arg(b64(b"plain bytes, not age")),
            4,
            "not a valid age file",
        ),
        ("not JSON", Via::Arg(seal("hello")), 5, "not valid JSON"),
        (
            "unknown v",
            Via::Arg(seal(&v2)),
            5,
            "field `v` must be the number 1",
        ),
        (
            "bad profile name",
            Via::Arg(seal(&envelope(
                HOST_ID,
                "../etc",
                1001,
                &now_utc(),
                &expiration_in(3600),
            ))),
            5,
            "bad profile name",
        ),
        (
            "another host's envelope",
            Via::Arg(seal(&envelope(
                "mi-0fedcba9876543210",
                "default",
                1001,
                &now_utc(),
                &expiration_in(3600),
            ))),
            6,
            "envelope is for instance mi-0fedcba9876543210, this host is mi-0123456789abcdef0",
        ),
        (
            "stale serial",
            Via::Arg(with(999, &expiration_in(3600))),
            7,
            "stale delivery",
        ),
        (
            "replayed serial",
            Via::Arg(with(1000, &expiration_in(3600))),
            7,
            "replayed delivery",
        ),
        (
            "expired",
            Via::Arg(with(1001, &expiration_in(-10))),
            8,
            "less than 60 s from now",
        ),
        (
            "expiring within 60 s",
            Via::Arg(with(1001, &expiration_in(30))),
            8,
            "less than 60 s from now",
        ),
        (
            "over 64 KiB via --payload",
            Via::Arg(oversized.clone()),
            3,
            "larger than 65536 bytes",
        ),
        (
            "over 64 KiB via stdin",
            Via::Stdin(oversized.into_bytes()),
            3,
            "larger than 65536 bytes",
        ),
    ];
    for (name, via, code, expected) in cases {
        let out = match via {
            Via::Arg(payload) => receive(&host, &payload),
            Via::Stdin(payload) => receive_stdin(&host, &payload),
        };
        let (stdout, stderr) = outputs(&host, name, &out);
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        assert!(stdout.is_empty(), "{name}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr:?}");
        assert!(stderr.starts_with("aovis-agent: "), "{name}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{name}: expected {expected:?} in {stderr}"
        );
        assert_eq!(
            fs::read(&cache).unwrap(),
            before,
            "{name} changed the cache"
        );
        assert_eq!(leftovers(&host), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn receive_sets_the_configured_group_and_refuses_an_unknown_one() {
    let host = TempHost::new();
    let recipient = enroll(&host);
    let config = host.config_dir().join("agent.toml");
    fs::write(
        &config,
        "[profiles.default]\ngroup = \"aovis-no-such-group\"\n",
    )
    .unwrap();
    let out = receive(&host, &delivery(&recipient, 1));
    let (_, stderr) = outputs(&host, "unknown group", &out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "profile 'default': group 'aovis-no-such-group' from agent.toml does not exist"
        ),
        "{stderr}"
    );
    assert!(!host.cache_path("default").exists());

    fs::write(&config, "[profiles.default]\ncolour = 1\n").unwrap();
    let out = receive(&host, &delivery(&recipient, 2));
    let (_, stderr) = outputs(&host, "bad config", &out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2: unknown field `colour`"),
        "{stderr}"
    );
    assert!(!host.cache_path("default").exists());

    if !is_root() {
        eprintln!("skipped the group part: only root may give a file to a group it is not in");
        return;
    }
    fs::write(&config, "[profiles.default]\ngroup = \"nogroup\"\n").unwrap();
    assert_stored(
        &host,
        "nogroup",
        &receive(&host, &delivery(&recipient, 3)),
        3,
    );
    let gid = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .unwrap()
        .gid;
    let meta = fs::metadata(host.cache_path("default")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, gid.as_raw(), 0o640)
    );
}

#[test]
fn readers_never_see_a_torn_cache_while_deliveries_land() {
    let host = Arc::new(TempHost::new());
    let recipient = enroll(&host);
    assert_stored(&host, "first", &receive(&host, &delivery(&recipient, 1)), 1);
    let payloads: Vec<String> = (2..=41)
        .map(|serial| delivery(&recipient, serial))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (host, stop, reads) = (Arc::clone(&host), Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let out = host.cred(&[]);
                    let parsed = serde_json::from_slice::<serde_json::Value>(&out.stdout);
                    match parsed {
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
    // Deliveries from two writers at once, in rising serial order per writer.
    let writers: Vec<_> = [0, 1]
        .into_iter()
        .map(|parity| {
            let host = Arc::clone(&host);
            let mine: Vec<String> = payloads.iter().skip(parity).step_by(2).cloned().collect();
            std::thread::spawn(move || {
                mine.iter()
                    .map(|payload| receive(&host, payload).status.code())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let codes: Vec<Option<i32>> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed reads: {failures:?}",
        failures.len()
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    // Each delivery either landed or lost to a higher serial already stored.
    assert!(
        codes.iter().all(|code| matches!(code, Some(0) | Some(7))),
        "{codes:?}"
    );
    assert_eq!(cached_serial(&host, "default"), 41);
    assert_eq!(leftovers(&host), Vec::<String>::new());
}

#[test]
fn of_two_concurrent_deliveries_the_higher_serial_stays() {
    let host = TempHost::new();
    let recipient = enroll(&host);
    for pair in 0..25u64 {
        let low = 10 + pair * 2;
        let high = low + 1;
        let (low_payload, high_payload) = (delivery(&recipient, low), delivery(&recipient, high));
        let spawn = |payload: &str| {
            agent(&host)
                .args(["receive", "--payload", payload])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        // Alternate who starts first.
        let (low_child, high_child) = if pair % 2 == 0 {
            let l = spawn(&low_payload);
            (l, spawn(&high_payload))
        } else {
            let h = spawn(&high_payload);
            (spawn(&low_payload), h)
        };
        let low_out = low_child.wait_with_output().unwrap();
        let high_out = high_child.wait_with_output().unwrap();
        assert_eq!(
            high_out.status.code(),
            Some(0),
            "pair {pair}: {}",
            text(&high_out.stderr)
        );
        assert!(
            matches!(low_out.status.code(), Some(0) | Some(7)),
            "pair {pair}: {}",
            text(&low_out.stderr)
        );
        assert_eq!(cached_serial(&host, "default"), high, "pair {pair}");
    }
}

/// A mount made by a test; unmounted on drop (lazily, so a failed assertion with a
/// file still open cannot leave it behind).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, options: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Self(at.to_path_buf())
    }

    fn read_only_bind(at: &Path) -> Self {
        let bind = Command::new("mount")
            .arg("--bind")
            .arg(at)
            .arg(at)
            .status()
            .unwrap();
        assert!(bind.success());
        let mount = Self(at.to_path_buf());
        let ro = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ro.success());
        mount
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_write_that_fails_half_way_keeps_the_old_cache_and_leaves_no_temp_file() {
    if !is_root() {
        eprintln!("skipped: mounting a full tmpfs and a read-only bind needs root");
        return;
    }
    // A full filesystem: the temp file is created, writing it fails.
    let host = TempHost::new();
    let recipient = enroll(&host);
    let _mount = Mount::tmpfs(&host.profiles_dir(), "size=64k,mode=0755");
    assert_stored(&host, "first", &receive(&host, &delivery(&recipient, 1)), 1);
    let cache = host.cache_path("default");
    let before = fs::read(&cache).unwrap();
    let filler = host.profiles_dir().join("filler");
    {
        use std::io::Write;
        let mut file = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
    }
    let out = receive(&host, &delivery(&recipient, 2));
    let (stdout, stderr) = outputs(&host, "full", &out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the previous cache is unchanged"),
        "{stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(fs::read(&cache).unwrap(), before);
    assert_eq!(leftovers(&host), ["filler"]);
    assert!(host.cred(&[]).status.success());
    // Space again: the next delivery lands.
    fs::remove_file(&filler).unwrap();
    assert_stored(&host, "after", &receive(&host, &delivery(&recipient, 2)), 2);

    // A read-only state directory.
    let host = TempHost::new();
    let recipient = enroll(&host);
    assert_stored(&host, "first", &receive(&host, &delivery(&recipient, 1)), 1);
    let before = fs::read(host.cache_path("default")).unwrap();
    let _ro = Mount::read_only_bind(&host.profiles_dir());
    let out = receive(&host, &delivery(&recipient, 2));
    let (_, stderr) = outputs(&host, "read-only", &out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert_eq!(fs::read(host.cache_path("default")).unwrap(), before);
    assert_eq!(leftovers(&host), Vec::<String>::new());
}

/// A cache document issued `issued` seconds from now, expiring `expires` from now.
fn cache_at(issued: i64, expires: i64, serial: u64) -> String {
    cache_with(issued, issued + 1, expires, serial)
}

/// A cache document with every time given in seconds from now.
fn cache_with(issued: i64, received: i64, expires: i64, serial: u64) -> String {
    format!(
        r#"{{"Version":1,"AccessKeyId":"{KEY_ID}","SecretAccessKey":"{SECRET}","SessionToken":"{}","Expiration":"{}","Aovis":{{"serial":{serial},"role_arn":"{ROLE_ARN}","instance_id":"{HOST_ID}","issued_at":"{}","received_at":"{}"}}}}"#,
        crate::support::TOKEN,
        expiration_in(expires),
        expiration_in(issued),
        expiration_in(received),
    )
}

fn status(host: &TempHost, json: bool) -> (Option<i32>, String) {
    let mut command = agent(host);
    command.arg("status");
    if json {
        command.arg("--json");
    }
    let out = command.output().unwrap();
    let (stdout, stderr) = outputs(host, "status", &out);
    assert!(stderr.is_empty(), "{stderr}");
    (out.status.code(), stdout)
}

#[test]
fn status_reports_each_state_and_exits_zero_only_when_all_are_ok() {
    let host = TempHost::new();
    host.write_cache("fresh", &cache_at(-60, 3540, 7), 0o640);
    host.write_cache("late", &cache_at(-3000, 600, 8), 0o640);
    host.write_cache("gone", &cache_at(-7200, -3600, 9), 0o640);
    host.write_cache("broken", "{not json", 0o640);
    fs::write(host.config_dir().join("agent.toml"), "[profiles.planned]\n").unwrap();

    let (code, table) = status(&host, false);
    assert_eq!(code, Some(1), "{table}");
    let state_of = |profile: &str| {
        table
            .lines()
            .find(|line| line.starts_with(&format!("{profile} ")))
            .and_then(|line| line.split_whitespace().nth(1))
            .map(str::to_owned)
    };
    let expected = [
        ("fresh", "ok"),
        ("late", "stale"),
        ("gone", "expired"),
        ("broken", "invalid"),
        ("planned", "missing"),
    ];
    for (profile, state) in expected {
        assert_eq!(
            state_of(profile).as_deref(),
            Some(state),
            "{profile}: {table}"
        );
    }
    assert!(table.starts_with("PROFILE"), "{table}");
    assert!(table.contains("...WXYZ"), "{table}");

    let (code, json) = status(&host, true);
    assert_eq!(code, Some(1));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let profiles = value["profiles"].as_array().unwrap();
    let by_name = |name: &str| {
        profiles
            .iter()
            .find(|p| p["profile"] == name)
            .unwrap()
            .clone()
    };
    for (profile, state) in expected {
        assert_eq!(by_name(profile)["state"], state, "{json}");
    }
    let fresh = by_name("fresh");
    assert_eq!(fresh["serial"], 7);
    assert_eq!(fresh["role_arn"], ROLE_ARN);
    assert_eq!(fresh["key_id_suffix"], "WXYZ");
    let left = fresh["expires_in_seconds"].as_i64().unwrap();
    assert!((3530..=3540).contains(&left), "{left}");
    assert!(by_name("planned")["expires_at"].is_null());
    assert!(by_name("broken")["problem"]
        .as_str()
        .unwrap()
        .contains("malformed cache"));

    // Only ok profiles: exit 0.
    let healthy = TempHost::new();
    healthy.write_cache("default", &cache_at(-60, 3540, 1), 0o640);
    assert_eq!(status(&healthy, false).0, Some(0));
    assert_eq!(status(&healthy, true).0, Some(0));
    // Nothing at all is not healthy.
    let empty = TempHost::new();
    let (code, table) = status(&empty, false);
    assert_eq!(code, Some(1));
    assert!(table.contains("no profiles"), "{table}");
}

/// A host that passes every doctor check: enrolled, a fresh delivery, and
/// `~/.aws/config` pointing at aovis-cred.
fn doctor_host() -> TempHost {
    let host = TempHost::new();
    let recipient = enroll(&host);
    assert_stored(&host, "setup", &receive(&host, &delivery(&recipient, 1)), 1);
    let aws = host.root().join("home/.aws");
    fs::create_dir_all(&aws).unwrap();
    fs::write(
        aws.join("config"),
        "[default]\nregion = us-east-1\ncredential_process = /usr/bin/aovis-cred\n",
    )
    .unwrap();
    host
}

fn doctor(host: &TempHost, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = agent(host);
    command
        .arg("doctor")
        .args(args)
        .env("HOME", host.root().join("home"))
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_STS");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    let (stdout, stderr) = outputs(host, "doctor", &out);
    assert!(stderr.is_empty(), "{stderr}");
    for line in stdout.lines() {
        assert!(
            line.starts_with("pass  ") || line.starts_with("warn  ") || line.starts_with("fail  "),
            "{line}"
        );
    }
    (out.status.code(), stdout)
}

fn line_of<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|line| line[6..].starts_with(&format!("{check}: ")))
        .unwrap_or_else(|| panic!("no {check} line in {report}"))
}

#[test]
fn doctor_passes_a_migrated_host() {
    let host = doctor_host();
    let (code, report) = doctor(&host, &[], &[]);
    assert_eq!(code, Some(0), "{report}");
    for check in [
        "environment",
        "credentials file",
        "config keys",
        "credential_process",
        "host key",
        "cache permissions",
        "clock",
        "freshness",
    ] {
        assert!(
            line_of(&report, check).starts_with("pass"),
            "{check}: {report}"
        );
    }
}

#[test]
fn doctor_flags_each_migration_problem_with_its_fix() {
    type Spoil = fn(&TempHost);
    type Env = Vec<(&'static str, &'static str)>;
    /// (name, spoil, environment, check, level, expected text)
    type Case = (
        &'static str,
        Spoil,
        Env,
        &'static str,
        &'static str,
        &'static str,
    );
    let home = |host: &TempHost| host.root().join("home/.aws");
    let cases: Vec<Case> = vec![
        (
            "access key in the environment",
            |_| {},
            vec![
                ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
            ],
            "environment",
            "fail",
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY set",
        ),
        (
            "another AWS_PROFILE",
            |_| {},
            vec![("AWS_PROFILE", "legacy")],
            "environment",
            "warn",
            "unset AWS_PROFILE",
        ),
        (
            "long-term key in ~/.aws/credentials",
            |host| {
                let text = format!("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {SECRET}\n");
                fs::write(host.root().join("home/.aws/credentials"), text).unwrap();
            },
            vec![],
            "credentials file",
            "fail",
            "a long-term key (AKIA...MPLE) for profile 'default'",
        ),
        (
            "keys in the config profile",
            |host| {
                let text = "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\ncredential_process = aovis-cred\n";
                fs::write(host.root().join("home/.aws/config"), text).unwrap();
            },
            vec![],
            "config keys",
            "fail",
            "holds key AKIA...MPLE",
        ),
        (
            "no ~/.aws/config",
            |host| fs::remove_file(host.root().join("home/.aws/config")).unwrap(),
            vec![],
            "credential_process",
            "fail",
            "config does not exist",
        ),
        (
            "profile not pointing at aovis-cred",
            |host| {
                fs::write(
                    host.root().join("home/.aws/config"),
                    "[default]\nregion = us-east-1\n",
                )
                .unwrap()
            },
            vec![],
            "credential_process",
            "fail",
            "add `credential_process = aovis-cred` to [default]",
        ),
        (
            "group-readable host key",
            |host| {
                let key = host.config_dir().join("host.key");
                fs::set_permissions(key, fs::Permissions::from_mode(0o640)).unwrap();
            },
            vec![],
            "host key",
            "fail",
            "chmod 600",
        ),
        (
            "no host key",
            |host| fs::remove_file(host.config_dir().join("host.key")).unwrap(),
            vec![],
            "host key",
            "fail",
            "run `aovis-agent enroll` first",
        ),
        (
            "world-writable cache",
            |host| {
                fs::set_permissions(
                    host.cache_path("default"),
                    fs::Permissions::from_mode(0o666),
                )
                .unwrap()
            },
            vec![],
            "cache permissions",
            "fail",
            "aovis-cred refuses it",
        ),
        (
            "world-readable cache",
            |host| {
                fs::set_permissions(
                    host.cache_path("default"),
                    fs::Permissions::from_mode(0o644),
                )
                .unwrap()
            },
            vec![],
            "cache permissions",
            "warn",
            "every user on the host can read",
        ),
        (
            "host clock behind",
            |host| {
                host.write_cache("default", &cache_with(-60, -700, 3540, 5), 0o640);
            },
            vec![],
            "clock",
            "fail",
            "behind the rotator's",
        ),
        (
            "stale cache",
            |host| {
                host.write_cache("default", &cache_at(-3000, 600, 5), 0o640);
            },
            vec![],
            "freshness",
            "warn",
            "less than half its life left",
        ),
        (
            "expired cache",
            |host| {
                host.write_cache("default", &cache_at(-7200, -3600, 5), 0o640);
            },
            vec![],
            "freshness",
            "fail",
            "expired at",
        ),
        (
            "no cache",
            |host| fs::remove_file(host.cache_path("default")).unwrap(),
            vec![],
            "freshness",
            "fail",
            "nothing was delivered yet",
        ),
    ];
    for (name, spoil, env, check, level, expected) in cases {
        let host = doctor_host();
        assert!(home(&host).is_dir());
        spoil(&host);
        let (code, report) = doctor(&host, &[], &env);
        let line = line_of(&report, check);
        assert!(line.starts_with(level), "{name}: {line}");
        assert!(
            line.contains(expected),
            "{name}: expected {expected:?} in {line}"
        );
        assert!(!report.contains("AKIAIOSFODNN7EXAMPLE"), "{name}: {report}");
        let want = if level == "fail" { Some(1) } else { Some(0) };
        assert_eq!(code, want, "{name}: {report}");
    }
}

#[test]
fn doctor_checks_a_named_profile_in_aws_config_files_from_the_environment() {
    let host = doctor_host();
    let config = host.root().join("custom-config");
    fs::write(
        &config,
        "[profile build]\ncredential_process = aovis-cred --profile build\n",
    )
    .unwrap();
    let env = [("AWS_CONFIG_FILE", config.to_str().unwrap())];
    let (code, report) = doctor(&host, &["--profile", "build"], &env);
    assert!(
        line_of(&report, "credential_process").starts_with("pass"),
        "{report}"
    );
    // No delivery for `build` yet.
    assert!(
        line_of(&report, "freshness").contains("'build' has no cache"),
        "{report}"
    );
    assert_eq!(code, Some(1));
}

#[test]
fn doctor_verify_asks_moto_sts_who_the_cached_credentials_are() {
    let moto = MotoServer::start(4);
    let session = "aovis-mi-0123456789abcdef0";
    let assumed = Command::new(python())
        .arg(py_script("moto_assume_role.py"))
        .args([moto.url().as_str(), "onprem-doctor", session])
        .output()
        .unwrap();
    assert!(assumed.status.success(), "{}", text(&assumed.stderr));
    let creds: serde_json::Value = serde_json::from_slice(&assumed.stdout).unwrap();
    let field = |name: &str| creds[name].as_str().unwrap().to_owned();
    let expiration = aovis_formats::time::parse_timestamp(&field("Expiration")).unwrap();
    let cache = |role_arn: &str| {
        format!(
            r#"{{"Version":1,"AccessKeyId":"{}","SecretAccessKey":"{}","SessionToken":"{}","Expiration":"{}","Aovis":{{"serial":1,"role_arn":"{role_arn}","instance_id":"{HOST_ID}","issued_at":"{}","received_at":"{}"}}}}"#,
            field("AccessKeyId"),
            field("SecretAccessKey"),
            field("SessionToken"),
            aovis_formats::time::format_expiration(expiration),
            expiration_in(-10),
            expiration_in(-9),
        )
    };
    let host = doctor_host();
    let secret = field("SecretAccessKey");
    let token = field("SessionToken");
    let no_moto_secret = |report: &str| {
        assert!(
            !report.contains(&secret) && !report.contains(&token),
            "{report}"
        );
    };

    // The right role, endpoint from the standard environment variable.
    host.write_cache("default", &cache(&field("role_arn")), 0o640);
    let env = [
        ("AWS_ENDPOINT_URL_STS", moto.url()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, report) = doctor(&host, &["--verify"], &env);
    let line = line_of(&report, "verify");
    assert!(line.starts_with("pass"), "{report}");
    assert!(
        line.contains(&format!(
            "arn:aws:sts::123456789012:assumed-role/onprem-doctor/{session}"
        )),
        "{line}"
    );
    assert_eq!(code, Some(0), "{report}");
    no_moto_secret(&report);

    // A cache that claims another role: STS's answer does not match it.
    let other = "arn:aws:iam::123456789012:role/some-other-role";
    host.write_cache("default", &cache(other), 0o640);
    let url = moto.url();
    let (code, report) = doctor(
        &host,
        &["--verify", "--endpoint-url", &url],
        &[("AWS_REGION", "us-east-1")],
    );
    let line = line_of(&report, "verify");
    assert!(line.starts_with("fail"), "{report}");
    assert!(line.contains("not a session of the cached role"), "{line}");
    assert_eq!(code, Some(1));
    no_moto_secret(&report);

    // A secret that moto's SigV4 check rejects.
    let last = if secret.ends_with('A') { "B" } else { "A" };
    let tampered = cache(&field("role_arn"))
        .replace(&secret, &format!("{}{last}", &secret[..secret.len() - 1]));
    host.write_cache("default", &tampered, 0o640);
    let (code, report) = doctor(
        &host,
        &["--verify", "--endpoint-url", &url],
        &[("AWS_REGION", "us-east-1")],
    );
    assert!(line_of(&report, "verify").starts_with("fail"), "{report}");
    assert_eq!(code, Some(1));
}
