//! `aovis-agent run` against its real consumers: botocore resolving credentials
//! through the IMDSv2 endpoint and through the container endpoint, the Rust
//! aws-config IMDS provider, a test acting as systemd (notify socket, watchdog,
//! reload, stop), log lines at the right moments, hostile clients, and slow clients
//! holding every connection slot.
//!
//! Every test captures the daemon's log and searches it for the fixture secrets.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::provider::ProvideCredentials;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use nix::sys::signal::Signal;

use crate::support::daemon::{imds_token, read_reply, request, send_raw, Daemon};
use crate::support::{
    assert_no_secret, cache_json, is_root, py_script, python, text, TempHost, KEY_ID, SECRET, TOKEN,
};

const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
/// The role of `cache_json`'s `role_arn`.
const ROLE: &str = "onprem";

/// IMDS serving `default`, the container endpoint serving `build` (group `adm`),
/// both on free ports, with a 1 s client timeout so slow clients are cut quickly.
const CONFIG: &str = r#"
[profiles.build]
group = "adm"

[daemon]
client_timeout_secs = 1

[daemon.imds]
profile = "default"
listen = ["127.0.0.1:0"]

[daemon.container]
profiles = ["build"]
listen = ["127.0.0.1:0"]
"#;

/// [`CONFIG`] with the default 10 s client timeout, for tests that drive real SDKs.
/// botocore's container provider retries a refused request after sleeping 1 s, on
/// the same keep-alive connection; with a 1 s idle timeout the daemon closes that
/// connection just as the retry goes out, and botocore reports "Connection was
/// closed" instead of the 401 (the race CI hit).
fn sdk_config() -> String {
    CONFIG.replace("client_timeout_secs = 1", "client_timeout_secs = 10")
}

/// A host with fresh caches (issued now, one hour of life) for `default` and `build`.
fn fresh_host() -> TempHost {
    let host = TempHost::new();
    let now = wall_now().trunc_subsecs(0);
    let fresh = cache_with(now, now + TimeDelta::hours(1), 1, KEY_ID);
    for profile in ["default", "build"] {
        host.write_cache(profile, &fresh, 0o640);
    }
    host
}

/// A cache document with chosen times, serial and key id.
fn cache_with(
    issued_at: DateTime<Utc>,
    expiration: DateTime<Utc>,
    serial: u64,
    key_id: &str,
) -> String {
    let fmt = aovis_formats::time::format_expiration;
    format!(
        r#"{{"Version":1,"AccessKeyId":"{key_id}","SecretAccessKey":"{SECRET}","SessionToken":"{TOKEN}","Expiration":"{}","Aovis":{{"serial":{serial},"role_arn":"arn:aws:iam::111122223333:role/onprem","instance_id":"mi-0123456789abcdef0","issued_at":"{}","received_at":"{}"}}}}"#,
        fmt(expiration),
        fmt(issued_at),
        fmt(issued_at),
    )
}

/// Replaces a cache the way `aovis-agent receive` does: temp file, then rename.
fn deliver(host: &TempHost, profile: &str, contents: &str) {
    let spec = aovis_formats::atomic::FileSpec {
        mode: 0o640,
        uid: None,
        gid: None,
    };
    aovis_formats::atomic::write_atomic(&host.cache_path(profile), contents.as_bytes(), &spec)
        .unwrap();
}

fn wall_now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// Runs `tests/py/botocore_resolve.py` in a clean environment: no credentials of the
/// caller's, empty AWS config files, only `env` on top.
fn botocore_chain(host: &TempHost, env: &[(&str, String)]) -> (Output, serde_json::Value) {
    let empty = host.root().join("empty-aws-file");
    fs::write(&empty, "").unwrap();
    let mut command = Command::new(python());
    command
        .arg(py_script("botocore_resolve.py"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", host.root())
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "botocore_resolve.py printed no JSON: {} {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out, value)
}

fn assert_fixture_credentials(what: &str, value: &serde_json::Value) {
    assert_eq!(value["AccessKeyId"], KEY_ID, "{what}: {value}");
    assert_eq!(value["SecretAccessKey"], SECRET, "{what}");
    assert_eq!(value["SessionToken"], TOKEN, "{what}");
}

#[test]
fn botocore_resolves_credentials_through_imds_v2_only() {
    let host = fresh_host();
    let daemon = Daemon::start(&host, &sdk_config(), &[]);
    let (out, value) = botocore_chain(
        &host,
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", daemon.imds_url()),
            ("AWS_EC2_METADATA_V1_DISABLED", "true".to_owned()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{value}");
    assert_eq!(value["method"], "iam-role");
    assert_fixture_credentials("botocore via IMDS", &value);
    assert_no_secret("daemon log", &daemon.log());
}

#[test]
fn botocore_resolves_credentials_through_the_container_endpoint() {
    let host = fresh_host();
    let daemon = Daemon::start(&host, &sdk_config(), &[]);
    let token_file = host.state_dir().join("tokens/build.token");
    let metadata = fs::metadata(&token_file).unwrap();
    assert_eq!(metadata.mode() & 0o7777, 0o640, "token file mode");
    let adm = nix::unistd::Group::from_name("adm").unwrap().unwrap();
    assert_eq!(
        metadata.gid(),
        adm.gid.as_raw(),
        "token file group = the profile's group"
    );

    let uri = format!("http://{}/v1/credentials/build", daemon.container.unwrap());
    let base = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    let with_file = [
        base.as_slice(),
        &[(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        )],
    ]
    .concat();
    let (out, value) = botocore_chain(&host, &with_file);
    assert_eq!(out.status.code(), Some(0), "{value}");
    assert_eq!(value["method"], "container-role");
    assert_fixture_credentials("botocore via the container endpoint", &value);

    let token = fs::read_to_string(&token_file).unwrap();
    let with_env = [
        base.as_slice(),
        &[("AWS_CONTAINER_AUTHORIZATION_TOKEN", token)],
    ]
    .concat();
    let (out, value) = botocore_chain(&host, &with_env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "token from the environment: {value}"
    );

    let wrong = [
        base.as_slice(),
        &[("AWS_CONTAINER_AUTHORIZATION_TOKEN", "A".repeat(43))],
    ]
    .concat();
    let (out, value) = botocore_chain(&host, &wrong);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a wrong token must be refused: {value}"
    );
    assert!(
        value["message"].as_str().unwrap().contains("401"),
        "{value}"
    );
    let (out, value) = botocore_chain(&host, &base);
    assert_eq!(
        out.status.code(),
        Some(3),
        "no token must be refused: {value}"
    );
    assert_no_secret("daemon log", &daemon.log());
}

#[tokio::test]
async fn aws_config_imds_provider_resolves_credentials() {
    let host = fresh_host();
    let daemon = Daemon::start(&host, &sdk_config(), &[]);
    let client = aws_config::imds::client::Client::builder()
        .endpoint(daemon.imds_url())
        .unwrap()
        .build();
    let provider = aws_config::imds::credentials::ImdsCredentialsProvider::builder()
        .imds_client(client)
        .build();
    let credentials = provider.provide_credentials().await.unwrap();
    assert_eq!(credentials.access_key_id(), KEY_ID);
    assert_eq!(credentials.secret_access_key(), SECRET);
    assert_eq!(credentials.session_token(), Some(TOKEN));
    let expiry = credentials.expiry().unwrap();
    let left = expiry.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(3500), "{left:?}");
    assert_no_secret("daemon log", &daemon.log());
}

#[test]
fn refuses_missing_and_wrong_tokens() {
    let host = fresh_host();
    let daemon = Daemon::start(&host, CONFIG, &[]);
    let imds = daemon.imds.unwrap();
    let container = daemon.container.unwrap();
    let token = imds_token(imds);
    let container_token = fs::read_to_string(host.state_dir().join("tokens/build.token")).unwrap();
    let credentials = format!("{CREDENTIALS_PATH}{ROLE}");
    let wrong = "A".repeat(43);
    let ttl = ("X-aws-ec2-metadata-token-ttl-seconds", "60");
    type Case<'a> = (
        &'a str,
        std::net::SocketAddr,
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        u16,
    );
    let cases: Vec<Case> = vec![
        ("imds: no token", imds, "GET", &credentials, vec![], 401),
        (
            "imds: wrong token",
            imds,
            "GET",
            &credentials,
            vec![("X-aws-ec2-metadata-token", &wrong)],
            401,
        ),
        (
            "imds: role listing without token",
            imds,
            "GET",
            CREDENTIALS_PATH,
            vec![],
            401,
        ),
        (
            "imds: token request without TTL",
            imds,
            "PUT",
            "/latest/api/token",
            vec![],
            400,
        ),
        (
            "imds: TTL over 21600",
            imds,
            "PUT",
            "/latest/api/token",
            vec![("X-aws-ec2-metadata-token-ttl-seconds", "21601")],
            400,
        ),
        (
            "imds: token request through a proxy",
            imds,
            "PUT",
            "/latest/api/token",
            vec![ttl, ("X-Forwarded-For", "10.1.2.3")],
            403,
        ),
        (
            "imds: the container token is no IMDS token",
            imds,
            "GET",
            &credentials,
            vec![("X-aws-ec2-metadata-token", &container_token)],
            401,
        ),
        (
            "container: no token",
            container,
            "GET",
            "/v1/credentials/build",
            vec![],
            401,
        ),
        (
            "container: wrong token",
            container,
            "GET",
            "/v1/credentials/build",
            vec![("Authorization", &wrong)],
            401,
        ),
        (
            "container: an IMDS token",
            container,
            "GET",
            "/v1/credentials/build",
            vec![("Authorization", &token)],
            401,
        ),
        (
            "container: a profile not served",
            container,
            "GET",
            "/v1/credentials/default",
            vec![("Authorization", &container_token)],
            404,
        ),
        (
            "imds: the right token",
            imds,
            "GET",
            &credentials,
            vec![("X-aws-ec2-metadata-token", &token)],
            200,
        ),
        (
            "container: the right token",
            container,
            "GET",
            "/v1/credentials/build",
            vec![("Authorization", &container_token)],
            200,
        ),
    ];
    for (name, address, method, path, headers, expected) in cases {
        let reply = request(address, method, path, &headers);
        assert_eq!(reply.status, expected, "{name}: {}", reply.raw);
        if expected != 200 {
            assert_no_secret(name, &reply.raw);
        }
    }
    assert_no_secret("daemon log", &daemon.log());
}

#[test]
fn imds_answers_in_the_format_sdks_parse_on_ipv4_and_ipv6() {
    let host = fresh_host();
    let config = CONFIG.replace(
        "listen = [\"127.0.0.1:0\"]\n\n[daemon.container]",
        "listen = [\"127.0.0.1:0\", \"[::1]:0\"]\n\n[daemon.container]",
    );
    let daemon = Daemon::start(&host, &config, &[]);
    let imds: Vec<_> = daemon
        .listening
        .iter()
        .filter(|(endpoint, _)| endpoint == "imds")
        .map(|(_, address)| *address)
        .collect();
    assert_eq!(imds.len(), 2, "{}", daemon.log());
    assert!(imds[0].is_ipv4() && imds[1].is_ipv6(), "{imds:?}");
    for imds in imds {
        check_imds_format(imds);
    }
}

fn check_imds_format(imds: std::net::SocketAddr) {
    let token_reply = request(
        imds,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
    );
    assert_eq!(token_reply.status, 200);
    // aws-config reads the TTL back from this header.
    assert!(
        token_reply
            .raw
            .to_ascii_lowercase()
            .contains("x-aws-ec2-metadata-token-ttl-seconds: 21600"),
        "{}",
        token_reply.raw
    );
    let token = token_reply.body().to_owned();
    let header = [("X-aws-ec2-metadata-token", token.as_str())];
    let listing = request(imds, "GET", CREDENTIALS_PATH, &header);
    assert_eq!((listing.status, listing.body()), (200, ROLE));
    let reply = request(imds, "GET", &format!("{CREDENTIALS_PATH}{ROLE}"), &header);
    assert_eq!(reply.status, 200);
    let value: serde_json::Value = serde_json::from_str(reply.body()).unwrap();
    let keys: BTreeSet<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "Code",
            "LastUpdated",
            "Type",
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration"
        ])
    );
    assert_eq!(value["Code"], "Success");
    assert_eq!(value["Type"], "AWS-HMAC");
    let expiration = value["Expiration"].as_str().unwrap();
    assert_eq!(
        expiration.len(),
        "2026-11-22T13:00:00Z".len(),
        "{expiration}"
    );
    assert!(expiration.ends_with('Z'));
}

#[test]
fn expired_credentials_are_never_served() {
    let host = TempHost::new();
    for profile in ["default", "build"] {
        host.write_cache(profile, &cache_json("2020-01-01T00:00:00Z"), 0o640);
    }
    let daemon = Daemon::start(&host, CONFIG, &[]);
    let imds = daemon.imds.unwrap();
    let token = imds_token(imds);
    let reply = request(
        imds,
        "GET",
        &format!("{CREDENTIALS_PATH}{ROLE}"),
        &[("X-aws-ec2-metadata-token", &token)],
    );
    assert_eq!(reply.status, 503, "{}", reply.raw);
    let container_token = fs::read_to_string(host.state_dir().join("tokens/build.token")).unwrap();
    let reply = request(
        daemon.container.unwrap(),
        "GET",
        "/v1/credentials/build",
        &[("Authorization", &container_token)],
    );
    assert_eq!(reply.status, 503, "{}", reply.raw);
    let (out, value) = botocore_chain(
        &host,
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", daemon.imds_url()),
            ("AWS_EC2_METADATA_V1_DISABLED", "true".to_owned()),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "botocore must get nothing: {value}"
    );
    assert!(daemon.wait_for_log("credentials have expired", Duration::from_secs(2)));
    assert_no_secret("daemon log", &daemon.log());
}

/// A `NOTIFY_SOCKET` as systemd binds it: a unix datagram socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    received: Vec<String>,
}

impl NotifySocket {
    fn bind(host: &TempHost) -> Self {
        let path = host.root().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// Reads datagrams until one holds `needle` (true) or `timeout` passes.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        if self.received.iter().any(|message| message.contains(needle)) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.contains(needle);
                self.received.push(message);
                if found {
                    return true;
                }
            }
        }
        false
    }

    /// Forgets what was received so far.
    fn clear(&mut self) {
        self.received.clear();
    }
}

#[test]
fn tells_systemd_ready_status_and_feeds_the_watchdog() {
    let host = fresh_host();
    host.write_cache("ci", &cache_json("2020-01-01T00:00:00Z"), 0o640);
    let mut notify = NotifySocket::bind(&host);
    let socket = notify.path.display().to_string();
    let daemon = Daemon::start(
        &host,
        CONFIG,
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
    );
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(5)),
        "{:?}",
        notify.received
    );
    let ready = notify
        .received
        .iter()
        .find(|message| message.contains("READY=1"))
        .unwrap()
        .clone();
    // READY=1 comes with the status of every profile, so it follows the caches' load.
    let status = ready
        .lines()
        .find_map(|line| line.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= with READY=1: {ready:?}"));
    assert!(
        status.contains("default: ok, 59m left") || status.contains("default: ok, 1h 0m left"),
        "{status}"
    );
    assert!(status.contains("build: ok,"), "{status}");
    assert!(status.contains("ci: EXPIRED"), "{status}");
    // READY=1 only once the listeners are bound: the endpoint answers by now.
    assert_eq!(imds_token(daemon.imds.unwrap()).len(), 43);

    // WATCHDOG_USEC=400 ms: a ping every 200 ms.
    notify.clear();
    let started = Instant::now();
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(2)));
    notify.clear();
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(2)));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_no_secret("notify messages", &notify.received.join("\n"));
    assert_no_secret("daemon log", &daemon.log());
}

#[test]
fn sighup_reloads_and_a_broken_config_keeps_the_old_one_serving() {
    let host = fresh_host();
    let other = cache_with(
        wall_now().trunc_subsecs(0),
        wall_now().trunc_subsecs(0) + TimeDelta::hours(1),
        9,
        "ASIAOTHERPROFILE1234",
    );
    host.write_cache("other", &other, 0o640);
    let mut notify = NotifySocket::bind(&host);
    let socket = notify.path.display().to_string();
    let daemon = Daemon::start(&host, CONFIG, &[("NOTIFY_SOCKET", &socket)]);
    let imds = daemon.imds.unwrap();
    assert!(notify.wait_for("READY=1", Duration::from_secs(5)));
    let token = imds_token(imds);
    let credentials_of = |token: &str| {
        let reply = request(
            imds,
            "GET",
            &format!("{CREDENTIALS_PATH}{ROLE}"),
            &[("X-aws-ec2-metadata-token", token)],
        );
        assert_eq!(reply.status, 200, "{}", reply.raw);
        let value: serde_json::Value = serde_json::from_str(reply.body()).unwrap();
        value["AccessKeyId"].as_str().unwrap().to_owned()
    };
    assert_eq!(credentials_of(&token), KEY_ID);

    let cases = [
        ("not TOML", "[daemon\nimds = ", "reload failed"),
        ("unknown key", "[daemon]\nlisten_everywhere = true\n", "unknown field"),
        ("bad value", "[daemon]\nmax_connections = 0\n", "max_connections must be"),
        ("unknown group", "[profiles.build]\ngroup = \"no-such-group-aovis\"\n[daemon.container]\nprofiles = [\"build\"]\nlisten = [\"127.0.0.1:0\"]\n", "no-such-group-aovis"),
    ];
    for (name, config, expected) in cases {
        notify.clear();
        fs::write(&daemon.config_path, config).unwrap();
        daemon.signal(Signal::SIGHUP);
        assert!(
            notify.wait_for("RELOADING=1", Duration::from_secs(5)),
            "{name}"
        );
        assert!(notify.wait_for("READY=1", Duration::from_secs(5)), "{name}");
        assert!(
            daemon.wait_for_log(expected, Duration::from_secs(2)),
            "{name}: {}",
            daemon.log()
        );
        // Still serving the old config, with the tokens issued before.
        assert_eq!(credentials_of(&token), KEY_ID, "{name}");
    }
    assert_eq!(daemon.count("reload failed"), cases.len());

    // A good config takes effect: IMDS now serves `other`.
    fs::write(
        &daemon.config_path,
        CONFIG.replace("profile = \"default\"", "profile = \"other\""),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(
        daemon.wait_for_log("config reloaded", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    assert_eq!(credentials_of(&token), "ASIAOTHERPROFILE1234");
    assert_no_secret("daemon log", &daemon.log());
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_exits_0_within_5_s() {
    let host = fresh_host();
    let mut notify = NotifySocket::bind(&host);
    let socket = notify.path.display().to_string();
    // A longer client timeout than the other tests: the slow client below is not
    // an attacker, it is a request in flight.
    let config = CONFIG.replace("client_timeout_secs = 1", "client_timeout_secs = 3");
    let mut daemon = Daemon::start(&host, &config, &[("NOTIFY_SOCKET", &socket)]);
    let imds = daemon.imds.unwrap();

    // A client mid-request: headers sent, 2 of the 5 body bytes sent.
    let mut slow = TcpStream::connect(imds).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(
        b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 5\r\n\r\nab",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stop_sent = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect(imds).is_err(),
        "a stopping daemon must not accept new connections"
    );
    assert!(
        daemon.wait_exit(Duration::from_millis(10)).is_none(),
        "it waits for the request"
    );

    slow.write_all(b"cde").unwrap();
    let reply = read_reply(&mut slow);
    assert_eq!(
        reply.status, 200,
        "the request in flight is answered: {}",
        reply.raw
    );
    assert_eq!(reply.body().len(), 43);

    let status = daemon.wait_exit(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        stop_sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        stop_sent.elapsed()
    );
    assert_no_secret("daemon log", &daemon.log());
}

#[test]
fn sigterm_with_a_stuck_client_still_exits_0_within_5_s() {
    let host = fresh_host();
    let config = CONFIG.replace("client_timeout_secs = 1", "client_timeout_secs = 60");
    let mut daemon = Daemon::start(&host, &config, &[]);
    // Never sends the rest of its body.
    let mut stuck = TcpStream::connect(daemon.imds.unwrap()).unwrap();
    stuck
        .write_all(b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 5\r\n\r\na")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stop_sent = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(6)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(
        stop_sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        stop_sent.elapsed()
    );
}

#[test]
fn logs_delivery_stale_and_expired_at_the_right_times() {
    let host = TempHost::new();
    // Issued 1 s ago, 8 s of life: stale at +3 s, expired at +7 s (whole seconds).
    let start = wall_now().trunc_subsecs(0);
    let issued = start - TimeDelta::seconds(1);
    let stale_at = issued + TimeDelta::seconds(4);
    let expires = issued + TimeDelta::seconds(8);
    host.write_cache("default", &cache_with(issued, expires, 1, KEY_ID), 0o640);
    let daemon = Daemon::start(&host, CONFIG, &[]);
    assert_eq!(daemon.count("credentials delivered"), 1);
    let delivered = daemon.log();
    assert!(
        delivered.contains("profile=\"default\"") || delivered.contains("profile=default"),
        "{delivered}"
    );
    assert!(delivered.contains("key_id=...WXYZ"), "{delivered}");
    assert!(
        !delivered.contains(KEY_ID),
        "only the last 4 of the key id: {delivered}"
    );

    // The test's clock and the daemon's are the same wall clock; `Instant` marks
    // when each line reached the test.
    let at = |moment: DateTime<Utc>| {
        let wait = (moment - wall_now()).to_std().unwrap_or_default();
        Instant::now() + wait
    };
    let (stale_instant, expired_instant) = (at(stale_at), at(expires));
    assert!(
        daemon.wait_for_log("credentials are stale", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.wait_for_log("credentials have expired", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let warned = daemon.first_seen("credentials are stale").unwrap();
    let errored = daemon.first_seen("credentials have expired").unwrap();
    let slack = Duration::from_millis(1500);
    assert!(
        warned + Duration::from_millis(100) >= stale_instant,
        "warned too early"
    );
    assert!(warned <= stale_instant + slack, "warned too late");
    assert!(
        errored + Duration::from_millis(100) >= expired_instant,
        "error too early"
    );
    assert!(errored <= expired_instant + slack, "error too late");
    // Each once, even though the timer keeps running.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(daemon.count("credentials are stale"), 1, "{}", daemon.log());
    assert_eq!(
        daemon.count("credentials have expired"),
        1,
        "{}",
        daemon.log()
    );

    // A new delivery is noticed at once (inotify), logged, and served.
    let renewed = cache_with(
        wall_now(),
        wall_now() + TimeDelta::hours(1),
        2,
        "ASIANEWDELIVERY0ABCD",
    );
    let delivered_at = Instant::now();
    deliver(&host, "default", &renewed);
    assert!(
        daemon.wait_for_log("key_id=...ABCD", Duration::from_secs(2)),
        "{}",
        daemon.log()
    );
    assert!(daemon.first_seen("key_id=...ABCD").unwrap() - delivered_at < Duration::from_secs(1));
    let imds = daemon.imds.unwrap();
    let token = imds_token(imds);
    let reply = request(
        imds,
        "GET",
        &format!("{CREDENTIALS_PATH}{ROLE}"),
        &[("X-aws-ec2-metadata-token", &token)],
    );
    assert_eq!(reply.status, 200);
    assert!(reply.body().contains("ASIANEWDELIVERY0ABCD"));
    assert_no_secret("daemon log", &daemon.log());
}

#[test]
fn hostile_requests_get_an_error_or_a_closed_connection_and_serving_goes_on() {
    let host = fresh_host();
    let daemon = Daemon::start(&host, CONFIG, &[]);
    let imds = daemon.imds.unwrap();
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let huge_body = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 1000000000\r\n\r\n{}",
        "b".repeat(64 * 1024)
    );
    let body_over_cap = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n{}\r\n0\r\n\r\n",
        "c".repeat(4096)
    );
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 131 % 251) as u8).collect();
    // (name, bytes, acceptable statuses; 0 = closed without an answer)
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("oversized headers", big_header.into_bytes(), &[431, 0]),
        ("huge body", huge_body.into_bytes(), &[413, 0]),
        ("chunked body over the cap", body_over_cap.into_bytes(), &[413]),
        ("no Host", b"GET /latest/api/token HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("garbage bytes", garbage, &[400, 0]),
        ("TLS handshake on a plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(), &[400, 0]),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), &[400, 505, 0]),
        ("bare newlines", b"\n\n\n\n".to_vec(), &[400, 0]),
        ("absurd method", b"BREW /latest/api/token HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[405]),
        ("NUL in header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n".to_vec(), &[400]),
        ("slow-loris headers", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ".to_vec(), &[0, 408]),
        ("slow-loris body", b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 10\r\n\r\nab".to_vec(), &[408]),
    ];
    for (name, bytes, expected) in &cases {
        let started = Instant::now();
        let reply = send_raw(imds, bytes);
        assert!(
            expected.contains(&reply.status),
            "{name}: got {} {:?}",
            reply.status,
            reply.raw
        );
        // Nobody holds a connection past the 1 s client timeout.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{name}: {:?}",
            started.elapsed()
        );
    }
    // Idle keep-alive connection: closed after the client timeout.
    let mut idle = TcpStream::connect(imds).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let reply = read_reply(&mut idle);
    assert_eq!(reply.status, 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Still serving, and still alive.
    let token = imds_token(imds);
    let reply = request(
        imds,
        "GET",
        &format!("{CREDENTIALS_PATH}{ROLE}"),
        &[("X-aws-ec2-metadata-token", &token)],
    );
    assert_eq!(reply.status, 200);
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    assert_no_secret("daemon log", &daemon.log());
}

#[test]
fn a_bad_config_at_start_is_one_error_line_and_a_non_zero_exit() {
    let host = fresh_host();
    let config_path = host.config_dir().join("agent.toml");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!(
        "[daemon.imds]\nprofile = \"default\"\nlisten = [\"{}\"]\n",
        busy.local_addr().unwrap()
    );
    let cases = [
        ("unknown key", "[daemon]\nport = 1\n".to_owned(), "line 2"),
        ("bad address", "[daemon.imds]\nprofile = \"default\"\nlisten = [\"nowhere\"]\n".to_owned(), "invalid socket address"),
        ("address in use", taken, "cannot listen on"),
        ("unknown group", "[profiles.build]\ngroup = \"no-such-group-aovis\"\n[daemon.container]\nprofiles = [\"build\"]\n".to_owned(), "group \"no-such-group-aovis\" of profile build does not exist"),
    ];
    for (name, config, expected) in cases {
        fs::write(&config_path, config).unwrap();
        let out = host
            .command("aovis-agent")
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env_remove("NOTIFY_SOCKET")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("aovis-agent: "), "{name}: {stderr}");
        assert!(last.contains(expected), "{name}: {stderr}");
        assert_no_secret(name, &stderr);
    }
}

#[test]
fn runs_unprivileged_with_only_the_profile_groups() {
    // As the unit runs it: its own user (here nobody), the profile groups as
    // supplementary groups (here adm), no capabilities.
    if !is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let host = fresh_host();
    let adm = nix::unistd::Group::from_name("adm").unwrap().unwrap().gid;
    let root = nix::unistd::Gid::from_raw(0);
    for profile in ["default", "build"] {
        nix::unistd::chown(&host.cache_path(profile), None, Some(adm)).unwrap();
    }
    // A profile whose group the daemon is not in: it must not be able to read it.
    let hidden = host.write_cache(
        "hidden",
        &fs::read_to_string(host.cache_path("default")).unwrap(),
        0o640,
    );
    nix::unistd::chown(&hidden, None, Some(root)).unwrap();
    // systemd's StateDirectory=aovis/tokens: a directory the daemon's user owns.
    let tokens = host.state_dir().join("tokens");
    fs::create_dir(&tokens).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    nix::unistd::chown(&tokens, Some(nobody.uid), Some(nobody.gid)).unwrap();

    let wrapper = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--groups=adm",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ];
    let daemon = Daemon::start_as(&host, CONFIG, &[], &wrapper);
    let token_file = tokens.join("build.token");
    let metadata = fs::metadata(&token_file).unwrap();
    assert_eq!(
        metadata.uid(),
        nobody.uid.as_raw(),
        "the daemon owns its token file"
    );
    assert_eq!(
        metadata.gid(),
        adm.as_raw(),
        "the profile's group may read it"
    );
    assert_eq!(metadata.mode() & 0o7777, 0o640);

    let (out, value) = botocore_chain(
        &host,
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", daemon.imds_url()),
            ("AWS_EC2_METADATA_V1_DISABLED", "true".to_owned()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{value}");
    assert_fixture_credentials("botocore via IMDS from an unprivileged daemon", &value);
    let container_token = fs::read_to_string(&token_file).unwrap();
    let reply = request(
        daemon.container.unwrap(),
        "GET",
        "/v1/credentials/build",
        &[("Authorization", &container_token)],
    );
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let log = daemon.log();
    assert!(
        log.contains("profile=\"hidden\"") && log.contains("Permission denied"),
        "a cache outside its groups is refused by the kernel: {log}"
    );
    assert_no_secret("daemon log", &log);
}

/// How a slow client holds its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slowness {
    /// Connects and sends nothing.
    Silent,
    /// Sends one byte of a request head every 200 ms, never finishing it.
    TrickleHead,
    /// Is served one request, then keeps the connection open and idle.
    IdleKeepAlive,
    /// Sends a whole head announcing a body, then one body byte every 200 ms.
    TrickleBody,
}

/// A connection held by a slow client; its trickling thread stops on drop.
struct SlowClient {
    kind: Slowness,
    stream: TcpStream,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    trickler: Option<std::thread::JoinHandle<()>>,
}

impl SlowClient {
    fn open(address: std::net::SocketAddr, kind: Slowness) -> Self {
        use std::io::Read;
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut stream = TcpStream::connect(address).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut trickler = None;
        match kind {
            Slowness::Silent => {}
            Slowness::TrickleHead | Slowness::TrickleBody => {
                if matches!(kind, Slowness::TrickleBody) {
                    stream
                        .write_all(b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 1000\r\n\r\n")
                        .unwrap();
                }
                let mut writer = stream.try_clone().unwrap();
                let stop = std::sync::Arc::clone(&stop);
                trickler = Some(std::thread::spawn(move || {
                    let head = b"GET /latest/api/token HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                    let bytes: &[u8] = match kind {
                        Slowness::TrickleBody => b"",
                        _ => head,
                    };
                    for byte in bytes.iter().chain(std::iter::repeat(&b'a')) {
                        if stop.load(Ordering::Relaxed) || writer.write_all(&[*byte]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }));
            }
            Slowness::IdleKeepAlive => {
                stream
                    .write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap();
                assert!(
                    buf[..n].starts_with(b"HTTP/1.1 401"),
                    "{}",
                    String::from_utf8_lossy(&buf[..n])
                );
            }
        }
        Self {
            kind,
            stream,
            stop,
            trickler,
        }
    }

    /// True when the daemon closed the connection (end of file or reset); false
    /// when it is still open (nothing to read for 300 ms).
    fn closed_by_daemon(&mut self) -> bool {
        use std::io::{ErrorKind, Read};
        self.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 256];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => panic!(
                "{:?}: unexpected bytes {:?}",
                self.kind,
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true,
        }
    }
}

/// Sends `request_line` with `headers` on a new connection, reads one answer (head
/// and `Content-Length` body) and keeps the connection open.
fn keep_alive_request(
    address: std::net::SocketAddr,
    request_line: &str,
    headers: &[(&str, &str)],
) -> (TcpStream, u16, String) {
    use std::io::Read;
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut text = format!("{request_line} HTTP/1.1\r\nHost: {address}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if body.len() >= length {
            let status = head
                .get(9..12)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            return (stream, status, body.to_owned());
        }
    }
}

impl Drop for SlowClient {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(trickler) = self.trickler.take() {
            let _ = trickler.join();
        }
    }
}

#[test]
fn slow_clients_at_the_connection_cap_give_way_oldest_first() {
    let host = fresh_host();
    // A cap of 8 and a client timeout far longer than the test: only eviction can
    // close a slow client here.
    let config = CONFIG.replace(
        "client_timeout_secs = 1",
        "client_timeout_secs = 60\nmax_connections = 8",
    );
    let daemon = Daemon::start(&host, &config, &[]);
    let imds = daemon.imds.unwrap();
    let container = daemon.container.unwrap();
    let container_token = fs::read_to_string(host.state_dir().join("tokens/build.token")).unwrap();

    // Every slot held, oldest first: silent, trickling its head, idle keep-alive,
    // trickling a body, and again.
    let kinds = [
        Slowness::Silent,
        Slowness::TrickleHead,
        Slowness::IdleKeepAlive,
        Slowness::TrickleBody,
    ];
    let mut slow: Vec<SlowClient> = (0..8)
        .map(|i| {
            let client = SlowClient::open(imds, kinds[i % kinds.len()]);
            // Accept order is connect order; a pause makes it certain.
            std::thread::sleep(Duration::from_millis(50));
            client
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // A new client: a session token, the role's name, its credentials, and the
    // container endpoint's credentials, each on a new connection that it keeps
    // open, so each needs a slot of its own.
    let started = Instant::now();
    let (_token_conn, status, token) = keep_alive_request(
        imds,
        "PUT /latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    );
    assert_eq!(status, 200, "{token}");
    let (_role_conn, status, role) = keep_alive_request(
        imds,
        &format!("GET {CREDENTIALS_PATH}"),
        &[("X-aws-ec2-metadata-token", &token)],
    );
    assert_eq!((status, role.as_str()), (200, ROLE));
    let (_imds_conn, status, body) = keep_alive_request(
        imds,
        &format!("GET {CREDENTIALS_PATH}{ROLE}"),
        &[("X-aws-ec2-metadata-token", &token)],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(KEY_ID));
    let (_container_conn, status, body) = keep_alive_request(
        container,
        "GET /v1/credentials/build",
        &[("Authorization", &container_token)],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(KEY_ID));
    // Promptly: not after a slow client's 60 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Four new connections, four evictions: the four oldest, one of each kind.
    let closed: Vec<(Slowness, bool)> = slow
        .iter_mut()
        .map(|client| (client.kind, client.closed_by_daemon()))
        .collect();
    let expected: Vec<(Slowness, bool)> = (0..8).map(|i| (kinds[i % kinds.len()], i < 4)).collect();
    assert_eq!(closed, expected, "(kind, evicted) from oldest to newest");

    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    assert_no_secret("daemon log", &daemon.log());
}
