//! `aovis-cred` as SDKs run it: what it prints, every refusal, and the real
//! consumers (botocore's ProcessProvider, aws-config's CredentialProcessProvider,
//! the AWS CLI against moto with SigV4 checked).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::moto::MotoServer;
use crate::support::{
    assert_no_secret, bin, cache_json, expiration_in, is_root, py_script, python, text, venv_bin,
    TempHost, KEY_ID, SECRET, TOKEN,
};

/// Checks the shape every refusal must have: the exit code, nothing on stdout, one
/// line on stderr beginning `aovis-cred:` that holds `expected`, and no secret.
fn assert_refused(case: &str, out: &Output, code: i32, expected: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{case}: exit code; stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{case}: stdout must be empty, got {:?}",
        text(&out.stdout)
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{case}: one line on stderr: {stderr:?}"
    );
    assert!(stderr.starts_with("aovis-cred: "), "{case}: {stderr}");
    for part in expected {
        assert!(
            stderr.contains(part),
            "{case}: expected {part:?} in {stderr}"
        );
    }
    assert_no_secret(case, &stderr);
}

fn valid_host(profile: &str) -> TempHost {
    let host = TempHost::new();
    host.write_cache(profile, &cache_json(&expiration_in(3600)), 0o640);
    host
}

#[test]
fn prints_exactly_the_documented_fields() {
    let host = TempHost::new();
    host.write_cache("build", &cache_json("2099-01-01T00:00:00.5+02:00"), 0o640);
    let out = host.cred(&["--profile", "build"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let object = value.as_object().unwrap();
    let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "AccessKeyId",
            "Expiration",
            "SecretAccessKey",
            "SessionToken",
            "Version"
        ]
    );
    assert_eq!(object["Version"], serde_json::json!(1));
    assert_eq!(object["AccessKeyId"], KEY_ID);
    assert_eq!(object["SecretAccessKey"], SECRET);
    assert_eq!(object["SessionToken"], TOKEN);
    // Read with an offset and a fraction, printed in the one form every SDK parses.
    assert_eq!(object["Expiration"], "2098-12-31T22:00:00Z");
}

#[test]
fn default_profile_is_default() {
    let host = valid_host("default");
    let out = host.cred(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn help_lists_every_exit_code_and_version_prints() {
    let host = TempHost::new();
    let help = host.cred(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    for code in 0..=8 {
        assert!(
            help.contains(&format!("\n    {code}   ")),
            "exit code {code} missing:\n{help}"
        );
    }
    let version = host.cred(&["--version"]);
    assert_eq!(
        text(&version.stdout).trim(),
        format!("aovis-cred {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn never_reads_stdin() {
    // stdin is a pipe nobody writes to or closes: a read would block forever.
    let host = valid_host("default");
    let mut child = host
        .command("aovis-cred")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _keep_open = child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "aovis-cred waited on stdin");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn refuses_a_profile_with_no_cache() {
    let host = valid_host("default");
    let out = host.cred(&["--profile", "missing"]);
    assert_refused(
        "no cache",
        &out,
        4,
        &[
            "profile 'missing'",
            "no cached credentials",
            "aovis-agent status",
        ],
    );
}

#[test]
fn refuses_when_the_profiles_directory_is_missing() {
    let host = TempHost::new();
    fs::remove_dir(host.profiles_dir()).unwrap();
    let out = host.cred(&[]);
    assert_refused(
        "no profiles directory",
        &out,
        4,
        &["profile 'default'", "no cached credentials"],
    );
}

#[test]
fn refuses_invalid_profile_names() {
    let host = valid_host("default");
    for (case, name) in [
        ("empty name", ""),
        ("a slash", "a/b"),
        ("dot dot", ".."),
        ("path traversal", "../../etc/passwd"),
        ("a space", "my profile"),
        ("a leading dot", ".hidden"),
        ("a newline", "a\nb"),
        ("65 characters", &"x".repeat(65)),
    ] {
        let out = host.cred(&["--profile", name]);
        assert_refused(
            case,
            &out,
            3,
            &["invalid profile name", "A-Z a-z 0-9 _ . -"],
        );
    }
}

#[test]
fn refuses_a_bad_command_line() {
    let host = valid_host("default");
    for (case, args) in [
        ("unknown flag", &["--bogus"][..]),
        ("profile without a value", &["--profile"]),
        ("stray argument", &["default"]),
    ] {
        let out = host.cred(args);
        assert_refused(case, &out, 2, &["aovis-cred --help"]);
    }
}

#[test]
fn refuses_malformed_caches() {
    let good = cache_json("2099-01-01T00:00:00Z");
    let cases = [
        ("not JSON", "{\"Version\":1,".to_owned(), "not valid JSON"),
        ("an empty file", String::new(), "not valid JSON"),
        ("a JSON array", "[1]".to_owned(), "not a JSON object"),
        (
            "a bare secret string",
            format!("\"{SECRET}\""),
            "not a JSON object",
        ),
        (
            "Version 2",
            good.replace("\"Version\":1", "\"Version\":2"),
            "`Version` must be the number 1",
        ),
        (
            "Version missing",
            good.replace("\"Version\":1,", ""),
            "`Version` is missing",
        ),
        (
            "SessionToken missing",
            good.replace(&format!("\"SessionToken\":\"{TOKEN}\","), ""),
            "`SessionToken` is missing",
        ),
        (
            "secret not a string",
            good.replace(&format!("\"{SECRET}\""), "42"),
            "`SecretAccessKey` must be a string",
        ),
        (
            "Expiration not a timestamp",
            good.replace("2099-01-01T00:00:00Z", "next tuesday"),
            "`Expiration` is not an RFC 3339",
        ),
        (
            "secret in place of the Expiration",
            good.replace("2099-01-01T00:00:00Z", SECRET),
            "`Expiration` is not an RFC 3339",
        ),
    ];
    for (case, contents, expected) in cases {
        let host = TempHost::new();
        host.write_cache("default", &contents, 0o640);
        let out = host.cred(&[]);
        assert_refused(
            case,
            &out,
            6,
            &["profile 'default'", "is malformed", expected],
        );
    }
}

#[test]
fn refuses_an_oversized_cache() {
    let host = TempHost::new();
    host.write_cache("default", &" ".repeat(70_000), 0o640);
    assert_refused("a 70 kB file", &host.cred(&[]), 6, &["larger than 64 KiB"]);
}

#[test]
fn refuses_expired_credentials_saying_when_and_how_long_ago() {
    let host = TempHost::new();
    host.write_cache("default", &cache_json(&expiration_in(-192)), 0o640);
    let out = host.cred(&[]);
    assert_refused(
        "expired 3 minutes ago",
        &out,
        7,
        &[
            "profile 'default'",
            "expired at",
            "m ",
            "ago",
            "aovis-agent status",
        ],
    );
}

#[test]
fn refuses_credentials_expiring_within_60_seconds() {
    let host = TempHost::new();
    host.write_cache("default", &cache_json(&expiration_in(30)), 0o640);
    let out = host.cred(&[]);
    assert_refused(
        "expiring in 30 s",
        &out,
        7,
        &["expire at", "60 s safety margin"],
    );
}

#[test]
fn refuses_unsafe_files_and_directories() {
    let body = cache_json(&expiration_in(3600));
    type Setup = fn(&TempHost, &str);
    let cases: [(&str, Setup, &str); 5] = [
        (
            "group-writable file",
            |h, b| {
                h.write_cache("default", b, 0o660);
            },
            "writable by group or others (mode 0660)",
        ),
        (
            "world-writable file",
            |h, b| {
                h.write_cache("default", b, 0o646);
            },
            "writable by group or others (mode 0646)",
        ),
        (
            "symlink to a planted file",
            |h, b| {
                let planted = h.root().join("planted.json");
                fs::write(&planted, b).unwrap();
                symlink(&planted, h.cache_path("default")).unwrap();
            },
            "is a symbolic link",
        ),
        (
            "group-writable directory",
            |h, b| {
                h.write_cache("default", b, 0o640);
                fs::set_permissions(h.profiles_dir(), fs::Permissions::from_mode(0o775)).unwrap();
            },
            "is writable by group or others (mode 0775)",
        ),
        (
            "symlinked profiles directory",
            |h, b| {
                let real = h.root().join("real-profiles");
                fs::create_dir(&real).unwrap();
                fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
                fs::write(real.join("default.json"), b).unwrap();
                fs::remove_dir(h.profiles_dir()).unwrap();
                symlink(&real, h.profiles_dir()).unwrap();
            },
            "is a symbolic link or not a directory",
        ),
    ];
    for (case, setup, expected) in cases {
        let host = TempHost::new();
        setup(&host, &body);
        let out = host.cred(&[]);
        assert_refused(case, &out, 8, &["profile 'default'", "refusing", expected]);
    }
}

#[test]
fn refuses_a_fifo_in_place_of_the_cache_without_hanging() {
    let host = TempHost::new();
    let status = Command::new("mkfifo")
        .arg(host.cache_path("default"))
        .status()
        .unwrap();
    assert!(status.success());
    let out = host.cred(&[]);
    assert_refused("a FIFO", &out, 8, &["not a regular file"]);
}

/// Runs `aovis-cred` as the unprivileged user `nobody` (uid 65534).
fn cred_as_nobody(host: &TempHost, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("aovis-cred"))
        .args(args)
        .env("AOVIS_STATE_DIR", host.state_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn refuses_files_owned_by_another_user_and_unreadable_files() {
    if !is_root() {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return;
    }
    let body = cache_json(&expiration_in(3600));

    let host = TempHost::new();
    let path = host.write_cache("default", &body, 0o640);
    std::os::unix::fs::chown(&path, Some(12345), Some(12345)).unwrap();
    assert_refused(
        "file owned by uid 12345",
        &host.cred(&[]),
        8,
        &["owned by uid 12345"],
    );

    let host = TempHost::new();
    host.write_cache("default", &body, 0o640);
    std::os::unix::fs::chown(host.profiles_dir(), Some(12345), None).unwrap();
    assert_refused(
        "directory owned by uid 12345",
        &host.cred(&[]),
        8,
        &["owned by uid 12345"],
    );

    // Root-owned, mode 0640, group root: nobody may not read it.
    let host = TempHost::new();
    host.write_cache("default", &body, 0o640);
    let out = cred_as_nobody(&host, &[]);
    assert_refused(
        "root:root 0640 read by nobody",
        &out,
        5,
        &["permission denied", "group"],
    );

    // A file nobody planted in a directory they own is theirs, so it is trusted;
    // the same file read by root is owned by neither root nor the caller.
    let host = TempHost::new();
    std::os::unix::fs::chown(host.profiles_dir(), Some(65534), Some(65534)).unwrap();
    let path = host.write_cache("default", &body, 0o600);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let out = cred_as_nobody(&host, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_refused(
        "root reading nobody's file",
        &host.cred(&[]),
        8,
        &["owned by uid 65534"],
    );
}

/// Writes an AWS config whose profile runs the built `aovis-cred` (no shell, as
/// botocore splits the line with shlex) and returns its path.
fn aws_config(host: &TempHost, profile: &str) -> std::path::PathBuf {
    let path = host.root().join("aws-config");
    let line = format!("{} --profile {profile}", bin("aovis-cred").display());
    fs::write(
        &path,
        format!("[profile {profile}]\ncredential_process = {line}\n"),
    )
    .unwrap();
    path
}

fn botocore_resolve(host: &TempHost, profile: &str) -> (Output, serde_json::Value) {
    let out = Command::new(python())
        .arg(py_script("botocore_resolve.py"))
        .arg(profile)
        .env("AWS_CONFIG_FILE", aws_config(host, profile))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            host.root().join("no-credentials"),
        )
        .env("AOVIS_STATE_DIR", host.state_dir())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "botocore script: {} {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out, value)
}

#[test]
fn botocore_process_provider_gets_the_same_credentials() {
    let host = TempHost::new();
    let expiration = expiration_in(3600);
    host.write_cache("build", &cache_json(&expiration), 0o640);
    let (out, value) = botocore_resolve(&host, "build");
    assert_eq!(out.status.code(), Some(0), "{value}");
    assert_eq!(value["method"], "custom-process");
    assert_eq!(value["AccessKeyId"], KEY_ID);
    assert_eq!(value["SecretAccessKey"], SECRET);
    assert_eq!(value["SessionToken"], TOKEN);
    let parsed =
        chrono::DateTime::parse_from_rfc3339(value["Expiration"].as_str().unwrap()).unwrap();
    assert_eq!(
        aovis_formats::time::format_expiration(parsed.to_utc()),
        expiration
    );
}

#[test]
fn botocore_raises_an_error_carrying_the_expired_message() {
    let host = TempHost::new();
    host.write_cache("build", &cache_json(&expiration_in(-600)), 0o640);
    let (out, value) = botocore_resolve(&host, "build");
    assert_eq!(out.status.code(), Some(3), "{value}");
    assert_eq!(value["error"], "CredentialRetrievalError");
    let message = value["message"].as_str().unwrap();
    assert!(
        message.contains("aovis-cred: profile 'build': credentials expired at"),
        "{message}"
    );
    assert_no_secret("botocore error", message);
}

#[tokio::test]
async fn aws_config_credential_process_provider_accepts_the_output() {
    use aws_credential_types::provider::ProvideCredentials;

    let host = TempHost::new();
    let expiration = expiration_in(3600);
    host.write_cache("build", &cache_json(&expiration), 0o640);
    // aws-config runs the line with `sh -c`, so the state dir travels in the line.
    let command = format!(
        "AOVIS_STATE_DIR='{}' '{}' --profile build",
        host.state_dir().display(),
        bin("aovis-cred").display()
    );
    let provider = aws_config::credential_process::CredentialProcessProvider::new(command);
    let creds = provider.provide_credentials().await.unwrap();
    assert_eq!(creds.access_key_id(), KEY_ID);
    assert_eq!(creds.secret_access_key(), SECRET);
    assert_eq!(creds.session_token(), Some(TOKEN));
    let expiry = chrono::DateTime::<chrono::Utc>::from(creds.expiry().unwrap());
    assert_eq!(aovis_formats::time::format_expiration(expiry), expiration);
}

/// The AWS CLI, with its config pointing at `aovis-cred` and nothing else to find.
fn aws_cli(host: &TempHost, profile: &str, args: &[&str]) -> Output {
    Command::new(venv_bin().join("aws"))
        .args(args)
        .args([
            "--profile",
            profile,
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .env("AWS_CONFIG_FILE", aws_config(host, profile))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            host.root().join("no-credentials"),
        )
        .env("AOVIS_STATE_DIR", host.state_dir())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn aws_cli_calls_moto_with_the_cached_role_session() {
    let moto = MotoServer::start(4);
    let session = "aovis-mi-0123456789abcdef0";
    let assumed = Command::new(python())
        .arg(py_script("moto_assume_role.py"))
        .args([moto.url().as_str(), "onprem-e2e", session])
        .output()
        .unwrap();
    assert!(assumed.status.success(), "{}", text(&assumed.stderr));
    let creds: serde_json::Value = serde_json::from_slice(&assumed.stdout).unwrap();
    let field = |name: &str| creds[name].as_str().unwrap().to_owned();

    let cache = |secret: &str| {
        format!(
            r#"{{"Version":1,"AccessKeyId":"{}","SecretAccessKey":"{secret}","SessionToken":"{}","Expiration":"{}"}}"#,
            field("AccessKeyId"),
            field("SessionToken"),
            field("Expiration"),
        )
    };
    let host = TempHost::new();
    host.write_cache("e2e", &cache(&field("SecretAccessKey")), 0o640);
    let args = ["sts", "get-caller-identity", "--endpoint-url", &moto.url()];
    let out = aws_cli(&host, "e2e", &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let identity: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        identity["Arn"],
        format!("arn:aws:sts::123456789012:assumed-role/onprem-e2e/{session}")
    );

    // One character of the secret changed: moto recomputes the signature and refuses.
    let mut tampered = field("SecretAccessKey");
    let last = if tampered.ends_with('A') { "B" } else { "A" };
    tampered.replace_range(tampered.len() - 1.., last);
    host.write_cache("e2e", &cache(&tampered), 0o640);
    let out = aws_cli(&host, "e2e", &args);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("SignatureDoesNotMatch"),
        "{}",
        text(&out.stderr)
    );
}
