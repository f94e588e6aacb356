//! A second, unprivileged local user against the caches, `aovis-cred`,
//! `aovis-agent receive` and the daemon's endpoints.
//!
//! The hostile user is Debian's `nobody` (uid 65534, no supplementary groups); a
//! legitimate user of the profile is uid 65532 in the profile's group (`adm`). They
//! are switched to with `setpriv`, so every refusal is the kernel's or the
//! product's, never a simulation. Whatever the hostile user does, they do
//! themselves (`sh -c` as `nobody`), in the places a misconfigured host would let
//! them write: a sticky world-writable directory like `/tmp`, or a state directory
//! they own.
//!
//! The tests need root to switch users (CI runs as root) and skip otherwise.
//!
//! What `aovis-cred` trusts (see `credential-process/src/read.rs`): the profiles
//! directory and the cache must be real (no symlink), owned by root or the caller,
//! and not writable by group or others. So a file planted by someone else is
//! refused in every place they could plant it; the cases below are each place.

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::daemon::{imds_token, request, Daemon};
use crate::support::delivery::{check_outputs, Receiver};
use crate::support::sealing::ROLE_ARN;
use crate::support::users::{can_switch_users, profile_gid, User, NOBODY, PROFILE_GROUP};
use crate::support::{
    assert_no_secret, bin, cache_json, expiration_in, py_script, python, text, TempHost, KEY_ID,
    SECRET, TOKEN,
};

/// A cache for `profile`, group-readable by [`PROFILE_GROUP`], delivered by the real
/// agent.
fn group_profile(profile: &str) -> Receiver {
    let config = format!("[profiles.{profile}]\ngroup = \"{PROFILE_GROUP}\"\n");
    let receiver = Receiver::new(Some(&config));
    receiver.deliver(profile, 1);
    receiver
}

/// `aovis-cred --profile PROFILE` on `host` as `user` (None: root).
fn cred(host: &TempHost, user: Option<&User>, profile: &str) -> Output {
    let mut command = Command::new(bin("aovis-cred"));
    command
        .args(["--profile", profile])
        .env_clear()
        .env("AOVIS_STATE_DIR", host.state_dir())
        .stdin(Stdio::null());
    match user {
        Some(user) => user.wrap(&command).output().unwrap(),
        None => command.output().unwrap(),
    }
}

/// The run succeeded and printed the fixture credentials.
fn assert_served(what: &str, out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["SecretAccessKey"], SECRET, "{what}");
}

/// The run was refused with `code`, one stderr line holding every word of
/// `expected`, nothing on stdout and no secret anywhere.
fn assert_refused(what: &str, out: &Output, code: i32, expected: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
    assert!(out.stdout.is_empty(), "{what}: printed to stdout");
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    for words in expected {
        assert!(
            stderr.contains(words),
            "{what}: wanted {words:?} in {stderr}"
        );
    }
    assert_no_secret(what, &stderr);
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn only_the_profiles_group_reads_a_delivered_cache_and_nobody_can_touch_it() {
    if !can_switch_users() {
        return;
    }
    let receiver = group_profile("team");
    let host = &receiver.host;
    let path = receiver.cache_path("team");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, profile_gid(), 0o640)
    );

    // The control: a member of the group gets the credentials.
    assert_served("member", &cred(host, Some(&User::member()), "team"));

    let hostile = User::hostile();
    assert_refused(
        "nobody, not in the group",
        &cred(host, Some(&hostile), "team"),
        5,
        &["profile 'team'", "permission denied", "group"],
    );

    // Nor by hand: the file is not readable, and the directory is not writable, so
    // nothing can be planted, renamed or removed next to the cache.
    let before = fs::read(&path).unwrap();
    let profiles = host.profiles_dir().display().to_string();
    let file = path.display().to_string();
    let attempts = [
        ("read the cache", format!("cat {file}")),
        ("plant a file", format!("echo x > {profiles}/other.json")),
        (
            "plant a symlink",
            format!("ln -s /etc/passwd {profiles}/evil.json"),
        ),
        (
            "plant a temp file",
            format!("echo x > {profiles}/.team.json.AAAAAAAA.tmp"),
        ),
        (
            "replace the cache",
            format!("t=$(mktemp) && mv -f \"$t\" {file}; r=$?; rm -f \"$t\"; exit $r"),
        ),
        ("remove the cache", format!("rm -f {file}")),
        (
            "take the writer's lock",
            format!("flock -n {profiles}/.team.lock true"),
        ),
        ("change the mode", format!("chmod 0644 {file}")),
    ];
    for (what, script) in attempts {
        let out = hostile.sh(&script);
        assert!(!out.status.success(), "nobody could {what}");
        assert_no_secret(what, &text(&out.stdout));
    }
    assert_eq!(fs::read(&path).unwrap(), before);
    let mut names: Vec<String> = fs::read_dir(host.profiles_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".team.lock", "team.json"]);
}

#[test]
fn a_hostile_user_cannot_deliver_re_enroll_or_read_secrets_through_the_agent() {
    if !can_switch_users() {
        return;
    }
    let receiver = group_profile("team");
    let host = &receiver.host;
    let key_file = host.config_dir().join("host.key");
    let key_before = fs::read(&key_file).unwrap();
    let cache_before = fs::read(receiver.cache_path("team")).unwrap();
    let hostile = User::hostile();

    // (what nobody runs, the agent's arguments) with the host's own directories.
    let payload = receiver.payload("team", 99);
    let cases: [(&str, Vec<&str>); 4] = [
        ("a valid delivery", vec!["receive", "--payload", &payload]),
        ("enroll (to replace the host key)", vec!["enroll"]),
        ("status", vec!["status"]),
        ("status --json", vec!["status", "--json"]),
    ];
    for (name, args) in cases {
        let mut command = crate::support::delivery::agent(host);
        command.args(&args);
        let out = hostile.wrap(&command).output().unwrap();
        check_outputs(name, &out);
        assert!(
            !text(&out.stdout).contains(SECRET) && !text(&out.stderr).contains("panicked"),
            "{name}"
        );
        if args[0] != "status" {
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(9), "nobody ran {name}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{name}");
            assert!(
                stderr.contains("cannot read host key") && stderr.contains("Permission denied"),
                "{name}: {stderr}"
            );
        }
    }
    assert_eq!(
        fs::read(&key_file).unwrap(),
        key_before,
        "the host key changed"
    );
    assert_eq!(
        fs::read(receiver.cache_path("team")).unwrap(),
        cache_before,
        "the cache changed"
    );
}

/// Where a hostile user could plant something, and how each is set up: root makes
/// the place writable as a misconfigured host would, then `nobody` plants.
struct Plant {
    name: &'static str,
    /// Root's part: the misconfiguration.
    misconfigure: fn(&TempHost),
    /// `nobody`'s part: `sh -c` with `$S` the state dir, `$P` the profiles dir,
    /// `$G` a genuine root-owned profiles dir elsewhere, `$BODY` a valid cache.
    script: &'static str,
    /// What `aovis-cred` must answer, for root and for a member of the group.
    expected: &'static str,
}

#[test]
fn aovis_cred_refuses_every_file_a_hostile_user_could_plant() {
    if !can_switch_users() {
        return;
    }
    let cases = [
        Plant {
            name: "a sticky world-writable profiles dir (like /tmp) with nobody's cache",
            misconfigure: |h| set_mode(&h.profiles_dir(), 0o1777),
            script: r#"printf '%s' "$BODY" > "$P/default.json" && chmod 0644 "$P/default.json""#,
            expected: "is writable by group or others (mode 1777)",
        },
        Plant {
            name: "a sticky world-writable profiles dir with a symlink to a genuine cache",
            misconfigure: |h| set_mode(&h.profiles_dir(), 0o1777),
            script: r#"ln -s "$G/default.json" "$P/default.json""#,
            expected: "is writable by group or others (mode 1777)",
        },
        Plant {
            name: "nobody's state dir: profiles swapped for nobody's own directory",
            misconfigure: |h| chown(h.state_dir(), Some(NOBODY), None).unwrap(),
            script: r#"mv "$P" "$S/old" && mkdir -m 0755 "$P" && printf '%s' "$BODY" > "$P/default.json" && chmod 0644 "$P/default.json""#,
            expected: "is owned by uid 65534, which is neither root nor you",
        },
        Plant {
            name: "nobody's state dir: profiles swapped for a symlink to nobody's directory",
            misconfigure: |h| chown(h.state_dir(), Some(NOBODY), None).unwrap(),
            script: r#"mkdir -m 0755 "$S/mine" && printf '%s' "$BODY" > "$S/mine/default.json" && mv "$P" "$S/old" && ln -s "$S/mine" "$P""#,
            expected: "is a symbolic link or not a directory",
        },
        Plant {
            name: "nobody's state dir: profiles swapped for a symlink to a genuine root-owned profiles dir",
            misconfigure: |h| chown(h.state_dir(), Some(NOBODY), None).unwrap(),
            script: r#"mv "$P" "$S/old" && ln -s "$G" "$P""#,
            expected: "is a symbolic link or not a directory",
        },
    ];
    let body = cache_json(&expiration_in(3600));
    let genuine = TempHost::new();
    genuine.write_cache("default", &body, 0o644);
    for case in &cases {
        let host = TempHost::new();
        (case.misconfigure)(&host);
        let out = User::hostile().sh(&format!(
            "S='{}' P='{}' G='{}' BODY='{}'; {}",
            host.state_dir().display(),
            host.profiles_dir().display(),
            genuine.profiles_dir().display(),
            body,
            case.script
        ));
        assert!(
            out.status.success(),
            "{}: nobody could not plant: {}",
            case.name,
            text(&out.stderr)
        );
        for (reader, user) in [("root", None), ("a member", Some(User::member()))] {
            let what = format!("{} (read by {reader})", case.name);
            let out = cred(&host, user.as_ref(), "default");
            assert_refused(
                &what,
                &out,
                8,
                &["profile 'default'", "refusing", case.expected],
            );
        }
    }
}

#[test]
fn receive_never_writes_through_links_a_hostile_user_planted() {
    if !can_switch_users() {
        return;
    }
    // The worst case for the writer: the profiles directory itself is nobody's,
    // so they can plant anything in it before root's `receive` runs.
    // (what nobody planted, its name, whether the delivery still lands).
    let cases: [(&str, &str, bool); 3] = [
        ("the cache is a symlink", "team.json", true),
        (
            "a stale temp file is a symlink",
            ".team.json.AAAAAAAA.tmp",
            true,
        ),
        ("the lock file is a symlink", ".team.lock", false),
    ];
    for (name, planted, delivered) in cases {
        let receiver = Receiver::new(None);
        let host = &receiver.host;
        fs::create_dir_all(host.profiles_dir()).unwrap();
        chown(host.profiles_dir(), Some(NOBODY), None).unwrap();
        let victim = host.root().join("victim");
        fs::write(&victim, "precious").unwrap();
        set_mode(&victim, 0o644);
        set_mode(host.root(), 0o755);
        let out = User::hostile().sh(&format!(
            "ln -s '{}' '{}/{planted}'",
            victim.display(),
            host.profiles_dir().display()
        ));
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));

        let out = receiver
            .receive_command(&receiver.payload("team", 5))
            .output()
            .unwrap();
        check_outputs(name, &out);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious", "{name}");
        let cache = receiver.cache_path("team");
        if delivered {
            assert!(out.status.success(), "{name}: {}", text(&out.stderr));
            let meta = fs::symlink_metadata(&cache).unwrap();
            assert!(meta.is_file(), "{name}: the cache is not a regular file");
            assert_eq!(meta.mode() & 0o7777, 0o640, "{name}");
            assert_eq!(receiver.temp_files(), Vec::<String>::new(), "{name}");
        } else {
            // Refusing is the safe answer: the link is not followed.
            assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains("lock"), "{name}");
            assert!(!cache.exists(), "{name}");
        }
    }
}

/// The daemon config of the endpoint tests: `team` behind the container endpoint
/// with its group, `shared` as the IMDS profile.
const DAEMON_CONFIG: &str = r#"
[profiles.team]
group = "adm"

[daemon.imds]
profile = "shared"
listen = ["127.0.0.1:0"]

[daemon.container]
profiles = ["team"]
listen = ["127.0.0.1:0"]
"#;

/// botocore's default chain (`tests/py/botocore_resolve.py`) as `user`, with only
/// the given variables set. The JSON it prints, when it printed any (an unreadable
/// token file is a `PermissionError`, which botocore does not wrap).
fn botocore_as(
    user: &User,
    host: &TempHost,
    env: &[(&str, String)],
) -> (Output, Option<serde_json::Value>) {
    let empty = host.root().join("empty-aws-file");
    fs::write(&empty, "").unwrap();
    set_mode(&empty, 0o644);
    let mut command = Command::new(python());
    command
        .arg(py_script("botocore_resolve.py"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", host.root())
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = user.wrap(&command).output().unwrap();
    let value = serde_json::from_slice(&out.stdout).ok();
    (out, value)
}

#[test]
fn the_container_endpoint_serves_only_holders_of_the_groups_token() {
    if !can_switch_users() {
        return;
    }
    let host = TempHost::new();
    let body = cache_json(&expiration_in(3600));
    host.write_cache("team", &body, 0o640);
    host.write_cache("shared", &body, 0o640);
    let daemon = Daemon::start(&host, DAEMON_CONFIG, &[]);
    let token_file = host.state_dir().join("tokens/team.token");
    let meta = fs::metadata(&token_file).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (profile_gid(), 0o640));

    let uri = format!("http://{}/v1/credentials/team", daemon.container.unwrap());
    let endpoint = ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri);
    let with_file = [
        endpoint.clone(),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ];

    // The control: a member of the group, through botocore.
    let (out, value) = botocore_as(&User::member(), &host, &with_file);
    assert_eq!(out.status.code(), Some(0), "member: {}", text(&out.stderr));
    let value = value.unwrap();
    assert_eq!(value["method"], "container-role");
    assert_eq!(value["AccessKeyId"], KEY_ID);
    assert_eq!(value["SecretAccessKey"], SECRET);
    assert_eq!(value["SessionToken"], TOKEN);

    let hostile = User::hostile();
    let out = hostile.sh(&format!("cat '{}'", token_file.display()));
    assert!(!out.status.success(), "nobody read the token file");
    assert!(text(&out.stderr).contains("Permission denied"));

    // (name, environment) botocore gets as nobody: each must fail.
    let guessed = "A".repeat(43);
    type Env<'a> = Vec<(&'a str, String)>;
    let cases: [(&str, Env, &str); 3] = [
        (
            "with the token file it cannot read",
            with_file.to_vec(),
            "Permission denied",
        ),
        ("without a token", vec![endpoint.clone()], "401"),
        (
            "with a guessed token",
            vec![
                endpoint.clone(),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", guessed.clone()),
            ],
            "401",
        ),
    ];
    for (name, env, expected) in cases {
        let (out, value) = botocore_as(&hostile, &host, &env);
        let said = value.map_or_else(|| text(&out.stderr), |v| v["message"].to_string());
        assert!(!out.status.success(), "nobody {name}: {said}");
        assert!(said.contains(expected), "nobody {name}: {said}");
        assert_no_secret(name, &text(&out.stdout));
        assert_no_secret(name, &text(&out.stderr));
    }

    // Raw requests: no token, a wrong one, the token of the header's other forms.
    let address = daemon.container.unwrap();
    for (name, headers) in [
        ("no Authorization", vec![]),
        ("wrong token", vec![("Authorization", guessed.as_str())]),
        ("empty token", vec![("Authorization", "")]),
        (
            "Bearer-prefixed guess",
            vec![("Authorization", "Bearer AAAA")],
        ),
    ] {
        let reply = request(address, "GET", "/v1/credentials/team", &headers);
        assert_eq!(reply.status, 401, "{name}: {}", reply.raw);
        assert_no_secret(name, &reply.raw);
    }
    assert_no_secret("daemon log", &daemon.log());
}

/// The IMDS endpoint, like EC2's, has no notion of local users: any process that
/// can reach its address gets a session token and the IMDS profile's credentials.
/// This test records that, so the IMDS profile must be one meant for every user of
/// the host (the group-restricted ones belong behind the container endpoint). If
/// the daemon ever checks the peer, flip the assertion.
#[test]
fn the_imds_profile_is_served_to_every_local_user_as_on_ec2() {
    if !can_switch_users() {
        return;
    }
    let host = TempHost::new();
    let body = cache_json(&expiration_in(3600));
    host.write_cache("team", &body, 0o640);
    host.write_cache("shared", &body, 0o640);
    let daemon = Daemon::start(&host, DAEMON_CONFIG, &[]);
    let imds = daemon.imds.unwrap();
    let role = ROLE_ARN.rsplit('/').next().unwrap();
    let script = format!(
        "t=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://{imds}/latest/api/token) && \
         curl -sf -H \"X-aws-ec2-metadata-token: $t\" http://{imds}/latest/meta-data/iam/security-credentials/{role}"
    );
    let out = User::hostile().sh(&script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(SECRET));
    // Without the PUT first there is no token, and no IMDSv1.
    let reply = request(
        imds,
        "GET",
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        &[],
    );
    assert_eq!(reply.status, 401);
    let _ = imds_token(imds);
}
