//! `aovis-rotator`: whole rounds against moto's real server (SigV4 checked, IAM
//! policies and trust policies evaluated) through `tests/fakes/ssm_nodes.py`, which
//! plays the managed nodes and runs the real `aovis-agent` on them; then
//! `aovis-cred` and the AWS CLI use what was delivered.
//!
//! Failures are injected by the stand-in (its docstring lists them: throttling,
//! 5xx, `InvalidInstanceId`, commands that never finish, `AccessDenied` on a role,
//! latency, a SendCommand created but answered 500), and each test names the
//! faults it switches on. Lambda runs serve the binary as `bootstrap` under
//! `tests/fakes/lambda_runtime_api.py`, a fake of the Lambda Runtime API.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::moto::MotoServer;
use crate::support::ssm_nodes::{NodeSpec, SsmNodes};
use crate::support::{assert_no_secret, bin, python, repo_root, text, venv_bin, TempHost};

const ENROLLED: &str = "mi-0000000000000000a";
const NEW: &str = "mi-0000000000000000b";
const OFFLINE: &str = "mi-0000000000000000c";
const REFUSES: &str = "mi-0000000000000000d";
const TAGS: &[(&str, &str)] = &[("Fleet", "e2e")];

/// moto with the test user, the roles, the document and `params` stored.
struct Aws {
    moto: MotoServer,
    key_id: String,
    secret: String,
    role_arn: String,
    denied_role_arn: String,
}

fn fake(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/fakes").join(name)
}

fn setup_aws(params: &[(String, String)]) -> Aws {
    let moto = MotoServer::start(4);
    let mut command = Command::new(python());
    command
        .arg(fake("rotator_moto_setup.py"))
        .arg(moto.url())
        .arg(repo_root().join("lambda-rotator/ssm/Aovis-DeliverCredentials.json"));
    for (name, value) in params {
        command.arg(format!("{name}={value}"));
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "setup: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    Aws {
        key_id: s("AccessKeyId"),
        secret: s("SecretAccessKey"),
        role_arn: s("role_arn"),
        denied_role_arn: s("denied_role_arn"),
        moto,
    }
}

impl Aws {
    fn read(&self, args: &[&str]) -> String {
        let out = Command::new(python())
            .arg(fake("moto_ssm.py"))
            .args([self.moto.url().as_str(), &self.key_id, &self.secret])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }
}

fn param(id: &str) -> String {
    format!("/aovis/hosts/{id}")
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("rotator.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// The config most tests use: region us-east-1, the extra top-level `settings`
/// (TOML lines joined by `\n`, may be empty), and one `default` binding of the test
/// role to the nodes tagged `Fleet=e2e`.
fn write_fleet_config(dir: &Path, aws: &Aws, settings: &str) -> std::path::PathBuf {
    let settings = if settings.is_empty() {
        String::new()
    } else {
        format!("{settings}\n")
    };
    write_config(
        dir,
        &format!(
            "region = \"us-east-1\"\n{settings}{}",
            binding("default", &aws.role_arn, FLEET_TARGETS)
        ),
    )
}

/// The targets of [`write_fleet_config`]'s binding.
const FLEET_TARGETS: &str = "{ tags = { Fleet = [\"e2e\"] } }";

fn binding(profile: &str, role_arn: &str, targets: &str) -> String {
    format!(
        "[[binding]]\nprofile = \"{profile}\"\nrole_arn = \"{role_arn}\"\ntargets = {targets}\n"
    )
}

/// `aovis-rotator ARGS` with only the test user's key and the stand-in's endpoint.
fn rotator(aws: &Aws, endpoint: &str, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(bin("aovis-rotator"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", &aws.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &aws.secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `aovis-rotator rotate --config CONFIG` against `endpoint`.
fn rotate(aws: &Aws, endpoint: &str, config: &Path) -> Output {
    rotator(
        aws,
        endpoint,
        &["rotate", "--config", config.to_str().unwrap()],
    )
}

/// The two stdout lines: EMF, then the report.
fn report_of(out: &Output) -> (serde_json::Value, serde_json::Value) {
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    (
        serde_json::from_str(lines[0]).unwrap(),
        serde_json::from_str(lines[1]).unwrap(),
    )
}

fn host_entry<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["instance_id"] == id)
        .unwrap_or_else(|| panic!("{id} missing from {report}"))
}

fn cached_secrets(host: &TempHost) -> (String, String) {
    let cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(host.cache_path("default")).unwrap()).unwrap();
    (
        cache["SecretAccessKey"].as_str().unwrap().to_owned(),
        cache["SessionToken"].as_str().unwrap().to_owned(),
    )
}

fn assert_not_in(what: &str, haystack: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !haystack.contains(secret),
            "{what} holds a delivered secret"
        );
    }
}

#[test]
fn a_round_enrolls_delivers_and_reports_offline_and_refusing_hosts() {
    // REFUSES has a key of its own, but Parameter Store holds another host's
    // recipient for it (as after a reinstall): its receive cannot open the payload.
    let stranger = age::x25519::Identity::generate().to_public().to_string();
    let nodes = [
        NodeSpec {
            instance_id: ENROLLED,
            online: true,
            tags: TAGS,
        },
        NodeSpec {
            instance_id: NEW,
            online: true,
            tags: TAGS,
        },
        NodeSpec {
            instance_id: OFFLINE,
            online: false,
            tags: TAGS,
        },
        NodeSpec {
            instance_id: REFUSES,
            online: true,
            tags: TAGS,
        },
        NodeSpec {
            instance_id: "mi-0000000000000000e",
            online: true,
            tags: &[("Fleet", "other")],
        },
    ];
    let aws = setup_aws(&[]);
    let nodes = SsmNodes::start(&aws.moto.url(), &nodes, "{}");
    let enrolled_recipient = nodes.enroll(ENROLLED);
    aws.read(&["put-parameter", &param(ENROLLED), &enrolled_recipient]);
    nodes.enroll(REFUSES);
    aws.read(&["put-parameter", &param(REFUSES), &stranger]);

    let dir = tempfile::tempdir().unwrap();
    let config = write_fleet_config(
        dir.path(),
        &aws,
        "concurrency = 4\nconfirm_timeout_seconds = 60",
    );
    let out = rotate(&aws, &nodes.url(), &config);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused host fails the round: {stderr}"
    );
    let (emf, report) = report_of(&out);

    assert_eq!(report["counts"]["targeted"], 4, "{report}");
    assert_eq!(
        host_entry(&report, ENROLLED)["outcome"],
        "delivered",
        "{report}"
    );
    assert_eq!(
        host_entry(&report, NEW)["outcome"],
        "enrolled_and_delivered",
        "{report}"
    );
    let offline = host_entry(&report, OFFLINE);
    assert_eq!(offline["outcome"], "skipped_offline");
    assert!(
        offline["reason"]
            .as_str()
            .unwrap()
            .contains("ConnectionLost"),
        "{offline}"
    );
    let refused = host_entry(&report, REFUSES);
    assert_eq!(refused["outcome"], "failed");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("command Failed on the host: aovis-agent"),
        "{refused}"
    );
    assert!(
        report["api_calls"]["sts:AssumeRole"].as_u64().unwrap() == 3,
        "{report}"
    );
    assert_eq!(report["api_calls"]["ssm:GetParameters"], 1);
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Aovis");
    assert_eq!(emf["Rotator"], "cron");
    assert_eq!(emf["HostsDelivered"], 2);
    assert_eq!(emf["HostsEnrolled"], 1);
    assert_eq!(emf["HostsFailed"], 1);
    assert_eq!(emf["HostsNotReached"], 1);
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("aovis-rotator: round "),
        "{stderr}"
    );

    // NEW's recipient is now in Parameter Store, and it is the node's own.
    assert_eq!(aws.read(&["parameter", &param(NEW)]), nodes.enroll(NEW));

    // Two caches that aovis-cred serves, and the AWS CLI is the role session
    // named after the host.
    let mut secrets = Vec::new();
    for id in [ENROLLED, NEW] {
        let host = nodes.host(id);
        let served = host.cred(&[]);
        assert!(served.status.success(), "{id}: {}", text(&served.stderr));
        let identity = aws_cli_with_endpoint(host, &aws.moto.url());
        assert!(
            identity.status.success(),
            "{id}: {}",
            text(&identity.stderr)
        );
        let identity: serde_json::Value = serde_json::from_slice(&identity.stdout).unwrap();
        assert_eq!(
            identity["Arn"],
            format!("arn:aws:sts::123456789012:assumed-role/aovis-onprem/aovis-{id}")
        );
        secrets.push(cached_secrets(host));
    }
    assert!(!nodes.host(OFFLINE).cache_path("default").exists());
    assert!(!nodes.host(REFUSES).cache_path("default").exists());

    // Nothing a secret could leak through holds one: moto's ListCommands (the
    // parameters in SSM's command history), the nodes' command output, the
    // rotator's stdout and stderr.
    let flat: Vec<&str> = secrets
        .iter()
        .flat_map(|(s, t)| [s.as_str(), t.as_str()])
        .collect();
    let commands = aws.read(&["commands"]);
    let listed: serde_json::Value = serde_json::from_str(&commands).unwrap();
    let receives: Vec<&serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["Parameters"]["action"][0] == "receive")
        .collect();
    assert_eq!(
        receives.len(),
        3,
        "one receive per online host with a recipient"
    );
    for command in &receives {
        assert_eq!(command["DocumentName"], "Aovis-DeliverCredentials");
        assert!(command["Parameters"]["payload"][0].as_str().unwrap().len() > 200);
    }
    assert_not_in("ListCommands", &commands, &flat);
    assert_not_in("node output", &nodes.invocations().to_string(), &flat);
    assert_not_in("rotator stdout", &text(&out.stdout), &flat);
    assert_not_in("rotator stderr", &stderr, &flat);

    // A second round: a greater serial replaces both caches; NEW is now just
    // delivered.
    let serial_before = serial_of(nodes.host(ENROLLED), "default").unwrap();
    let again = rotate(&aws, &nodes.url(), &config);
    let (_, second) = report_of(&again);
    assert_eq!(host_entry(&second, NEW)["outcome"], "delivered", "{second}");
    assert_eq!(host_entry(&second, ENROLLED)["outcome"], "delivered");
    assert!(
        second["round"]["serial"].as_u64().unwrap() > report["round"]["serial"].as_u64().unwrap()
    );
    assert!(serial_of(nodes.host(ENROLLED), "default").unwrap() > serial_before);
}

/// The serial in a host's cache of `profile`, or `None` when it has none.
fn serial_of(host: &TempHost, profile: &str) -> Option<u64> {
    let bytes = std::fs::read(host.cache_path(profile)).ok()?;
    let cache: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    cache["Aovis"]["serial"].as_u64()
}

fn aws_cli_with_endpoint(host: &TempHost, endpoint: &str) -> Output {
    let config = host.root().join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile default]\ncredential_process = {}\n",
            bin("aovis-cred").display()
        ),
    )
    .unwrap();
    Command::new(venv_bin().join("aws"))
        .args([
            "sts",
            "get-caller-identity",
            "--output",
            "json",
            "--region",
            "us-east-1",
            "--endpoint-url",
            endpoint,
        ])
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", host.root().join("none"))
        .env("AOVIS_STATE_DIR", host.state_dir())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Three enrolled online nodes behind the stand-in, and a config for them.
fn enrolled_fleet(aws: &Aws, ids: &[&'static str], faults: &str) -> SsmNodes {
    let specs: Vec<NodeSpec> = ids
        .iter()
        .map(|id| NodeSpec {
            instance_id: id,
            online: true,
            tags: TAGS,
        })
        .collect();
    let nodes = SsmNodes::start(&aws.moto.url(), &specs, faults);
    for id in ids {
        let recipient = nodes.enroll(id);
        aws.read(&["put-parameter", &param(id), &recipient]);
    }
    nodes
}

const FLEET: &[&str] = &[
    "mi-00000000000000011",
    "mi-00000000000000012",
    "mi-00000000000000013",
];

#[test]
fn throttling_and_5xx_answers_lose_no_host_and_a_stuck_command_times_out() {
    let aws = setup_aws(&[]);
    let mut ids = FLEET.to_vec();
    ids.push("mi-00000000000000014");
    let nodes = enrolled_fleet(&aws, &ids, "{}");
    // Every 2nd SendCommand throttled, every 3rd request a 500, and the 4th node's
    // command never finishes.
    nodes.set_faults(
        r#"{"throttle_every":{"SendCommand":2},"error_5xx_every":3,"hang_instances":["mi-00000000000000014"]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_fleet_config(dir.path(), &aws, "confirm_timeout_seconds = 5");
    let out = rotate(&aws, &nodes.url(), &config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (_, report) = report_of(&out);
    for id in FLEET {
        assert_eq!(
            host_entry(&report, id)["outcome"],
            "delivered",
            "{id}: {report}"
        );
        assert!(nodes.host(id).cache_path("default").exists());
    }
    let stuck = host_entry(&report, "mi-00000000000000014");
    assert_eq!(stuck["outcome"], "failed");
    assert!(
        stuck["reason"]
            .as_str()
            .unwrap()
            .contains("not final within the round's wait (last status InProgress)"),
        "{stuck}"
    );
    // The faults were really hit: more attempts than operations.
    let calls: u64 = report["api_calls"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let attempts: u64 = report["api_attempts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(attempts > calls, "calls {calls}, attempts {attempts}");
    assert!(
        report["api_attempts"]["ssm:SendCommand"].as_u64().unwrap() > 4,
        "{report}"
    );
}

#[test]
fn a_deregistered_node_fails_with_invalid_instance_id_and_every_other_host_is_delivered() {
    let aws = setup_aws(&[]);
    let deregistered = "mi-00000000000000015";
    let mut ids = FLEET.to_vec();
    ids.push(deregistered);
    // Fault: discovery still lists the node (online, tagged), but SSM refuses a
    // SendCommand to it with InvalidInstanceId, as for a node deregistered
    // between DescribeInstanceInformation and SendCommand.
    let nodes = enrolled_fleet(
        &aws,
        &ids,
        &format!(r#"{{"invalid_instances":["{deregistered}"]}}"#),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_fleet_config(dir.path(), &aws, "");
    let out = rotate(&aws, &nodes.url(), &config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (_, report) = report_of(&out);
    let serial = report["round"]["serial"].as_u64().unwrap();
    assert_eq!(report["counts"]["targeted"], 4, "{report}");
    assert_eq!(report["counts"]["delivered"], 3, "{report}");
    assert_eq!(report["counts"]["failed"], 1, "{report}");
    assert!(
        report["error"].is_null(),
        "one host's error is not the round's: {report}"
    );
    for id in FLEET {
        assert_eq!(
            host_entry(&report, id)["outcome"],
            "delivered",
            "{id}: {report}"
        );
        assert_eq!(serial_of(nodes.host(id), "default"), Some(serial), "{id}");
    }
    let failed = host_entry(&report, deregistered);
    assert_eq!(failed["outcome"], "failed");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("ssm:SendCommand failed: InvalidInstanceId"),
        "{reason}"
    );
    assert_eq!(serial_of(nodes.host(deregistered), "default"), None);
}

#[test]
fn the_next_round_delivers_what_the_last_one_missed() {
    let aws = setup_aws(&[]);
    let fine = "mi-00000000000000031";
    let two_profiles = "mi-00000000000000032";
    let hangs = "mi-00000000000000033";
    let deregistered = "mi-00000000000000034";
    let ids = [fine, two_profiles, hangs, deregistered];
    let nodes = enrolled_fleet(&aws, &ids, "{}");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "region = \"us-east-1\"\nconfirm_timeout_seconds = 5\n{}{}",
            binding("default", &aws.role_arn, FLEET_TARGETS),
            binding(
                "other",
                &aws.denied_role_arn,
                &format!("{{ instance_ids = [\"{two_profiles}\"] }}")
            )
        ),
    );
    let round = || rotate(&aws, &nodes.url(), &config);

    // Round 1, three faults: `hangs`'s command never finishes (it stays
    // InProgress past the confirm timeout), SendCommand to `deregistered` answers
    // InvalidInstanceId, and AssumeRole on binding 2's role answers AccessDenied.
    nodes.set_faults(&format!(
        r#"{{"hang_instances":["{hangs}"],"invalid_instances":["{deregistered}"],"deny_roles":["{}"]}}"#,
        aws.denied_role_arn
    ));
    let out = round();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (_, first) = report_of(&out);
    let first_serial = first["round"]["serial"].as_u64().unwrap();
    let entry = |report: &serde_json::Value, id: &str, profile: &str| {
        report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["instance_id"] == id && h["profile"] == profile)
            .unwrap_or_else(|| panic!("{id}/{profile} missing from {report}"))
            .clone()
    };
    assert_eq!(first["counts"]["targeted"], 5, "{first}");
    for (id, profile, reason) in [
        (
            hangs,
            "default",
            "not final within the round's wait (last status InProgress)",
        ),
        (
            deregistered,
            "default",
            "ssm:SendCommand failed: InvalidInstanceId",
        ),
        (
            two_profiles,
            "other",
            "sts:AssumeRole on arn:aws:iam::123456789012:role/aovis-denied failed: AccessDenied",
        ),
    ] {
        let host = entry(&first, id, profile);
        assert_eq!(host["outcome"], "failed", "{host}");
        assert!(host["reason"].as_str().unwrap().contains(reason), "{host}");
    }
    assert_eq!(serial_of(nodes.host(hangs), "default"), None);
    assert_eq!(serial_of(nodes.host(deregistered), "default"), None);
    assert_eq!(serial_of(nodes.host(two_profiles), "other"), None);
    for id in [fine, two_profiles] {
        assert_eq!(entry(&first, id, "default")["outcome"], "delivered");
        assert_eq!(serial_of(nodes.host(id), "default"), Some(first_serial));
    }

    // Round 2, no faults: every (host, profile) gets round 2's serial, the ones
    // round 1 missed and the ones it delivered.
    nodes.set_faults("{}");
    let out = round();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (_, second) = report_of(&out);
    let serial = second["round"]["serial"].as_u64().unwrap();
    assert!(serial > first_serial, "{serial} after {first_serial}");
    assert_eq!(second["counts"]["targeted"], 5, "{second}");
    assert_eq!(second["counts"]["delivered"], 5, "{second}");
    for (id, profile) in [
        (fine, "default"),
        (two_profiles, "default"),
        (hangs, "default"),
        (deregistered, "default"),
        (two_profiles, "other"),
    ] {
        assert_eq!(entry(&second, id, profile)["outcome"], "delivered");
        assert_eq!(
            serial_of(nodes.host(id), profile),
            Some(serial),
            "{id}/{profile}"
        );
    }
}

#[test]
fn a_send_command_created_but_answered_500_still_counts_the_host_delivered() {
    let aws = setup_aws(&[]);
    let lost = FLEET[0];
    // Fault: SSM creates the command (it runs on the node), but the answer to the
    // first SendCommand to `lost` is HTTP 500; the retry makes a second command,
    // which the agent refuses as a replay of the serial it already holds.
    let nodes = enrolled_fleet(&aws, FLEET, &format!(r#"{{"accept_then_500":["{lost}"]}}"#));
    let dir = tempfile::tempdir().unwrap();
    let config = write_fleet_config(dir.path(), &aws, "confirm_timeout_seconds = 30");
    let out = rotate(&aws, &nodes.url(), &config);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (_, report) = report_of(&out);
    let serial = report["round"]["serial"].as_u64().unwrap();
    for id in FLEET {
        assert_eq!(
            host_entry(&report, id)["outcome"],
            "delivered",
            "{id}: {report}"
        );
        assert_eq!(serial_of(nodes.host(id), "default"), Some(serial), "{id}");
    }
    // The fault really hit: two receive commands reached `lost`.
    let receives = nodes
        .invocations()
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["InstanceId"] == lost)
        .count();
    assert_eq!(receives, 2, "{}", nodes.invocations());
    // And the report says why a refused command still counts; the others carry
    // no note.
    let host = host_entry(&report, lost);
    assert!(host["reason"].is_null(), "{host}");
    let note = host["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("delivered by an earlier attempt of this round's command"),
        "{host}"
    );
    for id in &FLEET[1..] {
        assert!(host_entry(&report, id).get("note").is_none(), "{report}");
    }
}

#[test]
fn a_refused_role_fails_its_binding_only_and_a_missing_document_or_wrong_region_stops_the_round() {
    let aws = setup_aws(&[]);
    let nodes = enrolled_fleet(&aws, FLEET, "{}");
    nodes.set_faults(&format!(r#"{{"deny_roles":["{}"]}}"#, aws.denied_role_arn));
    let dir = tempfile::tempdir().unwrap();
    let targets = "{ tags = { Fleet = [\"e2e\"] } }";
    let config = write_config(
        dir.path(),
        &format!(
            "region = \"us-east-1\"\nconcurrency = 1\n{}{}",
            binding("default", &aws.role_arn, targets),
            binding("other", &aws.denied_role_arn, targets)
        ),
    );
    let out = rotate(&aws, &nodes.url(), &config);
    assert_eq!(out.status.code(), Some(1));
    let (_, report) = report_of(&out);
    assert_eq!(report["counts"]["delivered"], 3, "{report}");
    assert_eq!(report["counts"]["failed"], 3, "{report}");
    for host in report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["binding"] == 2)
    {
        let reason = host["reason"].as_str().unwrap();
        assert!(reason.contains("sts:AssumeRole on arn:aws:iam::123456789012:role/aovis-denied failed: AccessDenied"), "{reason}");
    }
    // The denied role was asked once; its other hosts were not tried.
    assert_eq!(report["api_calls"]["sts:AssumeRole"], 4, "{report}");

    let cases = [
        (
            "missing document",
            "region = \"us-east-1\"\ndocument = \"Aovis-Missing\"\n",
            "SSM document `Aovis-Missing` is not usable in region us-east-1",
        ),
        (
            "wrong region",
            "region = \"eu-west-3\"\n",
            "SSM document `Aovis-DeliverCredentials` is not usable in region eu-west-3",
        ),
    ];
    for (name, head, expected) in cases {
        let config = write_config(
            dir.path(),
            &format!("{head}{}", binding("default", &aws.role_arn, targets)),
        );
        let out = rotate(&aws, &nodes.url(), &config);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = text(&out.stderr);
        let last = stderr.lines().last().unwrap();
        assert!(
            last.starts_with("aovis-rotator: round ") && last.contains(expected),
            "{name}: {stderr}"
        );
        let (_, report) = report_of(&out);
        assert!(
            report["error"].as_str().unwrap().contains(expected),
            "{name}"
        );
        assert_eq!(
            report["api_calls"].as_object().unwrap().len(),
            1,
            "{name}: only the preflight call: {report}"
        );
    }
}

#[test]
fn shards_split_the_fleet_without_overlap() {
    let aws = setup_aws(&[]);
    let nodes = enrolled_fleet(&aws, FLEET, "{}");
    let dir = tempfile::tempdir().unwrap();
    let config = write_fleet_config(dir.path(), &aws, "");
    let mut seen = Vec::new();
    for shard in ["1/2", "2/2"] {
        let out = rotator(
            &aws,
            &nodes.url(),
            &[
                "rotate",
                "--config",
                config.to_str().unwrap(),
                "--shard",
                shard,
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let (_, report) = report_of(&out);
        assert_eq!(report["round"]["shard"], shard);
        for host in report["hosts"].as_array().unwrap() {
            seen.push(host["instance_id"].as_str().unwrap().to_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, FLEET);
}

#[test]
fn bad_command_lines_and_configs_get_one_line_and_exit_2() {
    let aws = setup_aws(&[]);
    let dir = tempfile::tempdir().unwrap();
    let role = "arn:aws:iam::123456789012:role/aovis-onprem";
    let long_session = format!(
        "[[binding]]\nprofile = \"default\"\nrole_arn = \"{role}\"\nsession_duration_seconds = 7200\ntargets = {{ instance_ids = [\"mi-00000000000000011\"] }}\n"
    );
    let cases: Vec<(&str, Option<String>, Vec<&str>, &str)> = vec![
        (
            "missing config",
            None,
            vec!["rotate", "--config", "/nonexistent/rotator.toml"],
            "aovis-rotator: cannot read the configuration /nonexistent/rotator.toml",
        ),
        (
            "typo in a field",
            Some(format!(
                "{}rol = 1\n",
                binding(
                    "default",
                    role,
                    "{ instance_ids = [\"mi-00000000000000011\"] }"
                )
            )),
            vec![],
            "unknown field `rol`",
        ),
        (
            "bad role arn",
            Some(binding(
                "default",
                "arn:aws:iam::1:role/x",
                "{ instance_ids = [\"mi-00000000000000011\"] }",
            )),
            vec![],
            "binding #1 (profile \"default\"): field `role_arn`",
        ),
        (
            "bad shard",
            Some(binding(
                "default",
                role,
                "{ instance_ids = [\"mi-00000000000000011\"] }",
            )),
            vec!["--shard", "3/2"],
            "a shard is I/N",
        ),
    ];
    for (name, body, extra, expected) in cases {
        let mut args: Vec<String> = Vec::new();
        if let Some(body) = body {
            let path = write_config(dir.path(), &body);
            args.extend([
                "rotate".into(),
                "--config".into(),
                path.display().to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rotator(&aws, "http://127.0.0.1:9", &refs);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(out.stdout.is_empty(), "{name}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        if name != "bad shard" {
            assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        }
    }

    // With role credentials (a session token), sessions over an hour are refused
    // before any AWS call, naming the binding.
    let path = write_config(dir.path(), &long_session);
    let out = Command::new(bin("aovis-rotator"))
        .args(["rotate", "--config", path.to_str().unwrap()])
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "ASIAROLECREDENTIALS0")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_SESSION_TOKEN", "role-session")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the rotator runs on role credentials: binding #1 (profile \"default\"): field `session_duration_seconds` is 7200 s"),
        "{stderr}"
    );
}

#[test]
fn seal_makes_a_payload_the_host_accepts_and_refuses_bad_input() {
    let host = TempHost::new();
    let id = "mi-00000000000000021";
    let enroll = host
        .command("aovis-agent")
        .arg("enroll")
        .env("AWS_SSM_INSTANCE_ID", id)
        .output()
        .unwrap();
    assert!(enroll.status.success(), "{}", text(&enroll.stderr));
    let recipient = text(&enroll.stdout).trim().to_owned();
    let expiration = crate::support::expiration_in(3600);
    let sts_output = format!(
        r#"{{"Credentials":{{"AccessKeyId":"{}","SecretAccessKey":"{}","SessionToken":"{}","Expiration":"{expiration}"}},"AssumedRoleUser":{{"AssumedRoleId":"AROA:x","Arn":"arn:aws:sts::111122223333:assumed-role/onprem/manual"}}}}"#,
        crate::support::KEY_ID,
        crate::support::SECRET,
        crate::support::TOKEN
    );
    let seal = |args: &[&str], stdin: &str| {
        let mut child = Command::new(bin("aovis-rotator"))
            .arg("seal")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A refused command line exits before reading stdin: a broken pipe is fine.
        let _ = std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes());
        child.wait_with_output().unwrap()
    };
    let good = [
        "--recipient",
        recipient.as_str(),
        "--instance-id",
        id,
        "--profile",
        "default",
    ];
    let out = seal(&good, &sts_output);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let payload = text(&out.stdout).trim().to_owned();
    assert_no_secret("seal stdout", &text(&out.stdout));
    let received = host
        .command("aovis-agent")
        .args(["receive", "--payload", &payload])
        .env("AWS_SSM_INSTANCE_ID", id)
        .output()
        .unwrap();
    assert!(received.status.success(), "{}", text(&received.stderr));
    let cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(host.cache_path("default")).unwrap()).unwrap();
    assert_eq!(
        cache["Aovis"]["role_arn"],
        "arn:aws:iam::111122223333:role/onprem"
    );
    assert!(host.cred(&[]).status.success());

    let other = age::x25519::Identity::generate().to_public().to_string();
    let cases: Vec<(&str, Vec<&str>, String, &str)> = vec![
        (
            "bad recipient",
            vec![
                "--recipient",
                "age1xyz",
                "--instance-id",
                id,
                "--profile",
                "default",
            ],
            sts_output.clone(),
            "not an age X25519 recipient",
        ),
        (
            "bad instance id",
            vec![
                "--recipient",
                other.as_str(),
                "--instance-id",
                "host-1",
                "--profile",
                "default",
            ],
            sts_output.clone(),
            "--instance-id is not a managed node id",
        ),
        (
            "bad profile",
            vec![
                "--recipient",
                other.as_str(),
                "--instance-id",
                id,
                "--profile",
                "../x",
            ],
            sts_output.clone(),
            "--profile is not a valid profile name",
        ),
        (
            "not json",
            good.to_vec(),
            crate::support::SECRET.to_owned(),
            "credentials on stdin: not valid JSON",
        ),
        (
            "no role",
            good.to_vec(),
            sts_output.replace("AssumedRoleUser", "Other"),
            "no role ARN: pass --role-arn",
        ),
        (
            "no secret",
            good.to_vec(),
            sts_output.replace("SecretAccessKey", "Nope"),
            "field `SecretAccessKey` is missing",
        ),
    ];
    for (name, args, stdin, expected) in cases {
        let out = seal(&args, &stdin);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(out.stdout.is_empty(), "{name}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.starts_with("aovis-rotator: ") && stderr.contains(expected),
            "{name}: {stderr}"
        );
        assert_no_secret(name, &stderr);
    }
}

/// A child process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the function finds its configuration.
enum ConfigFrom<'a> {
    /// The TOML text in env `AOVIS_ROTATOR_CONFIG`.
    Env(&'a str),
    /// The name of an SSM parameter in env `AOVIS_ROTATOR_CONFIG_PARAMETER`.
    Parameter(&'a str),
}

/// What one `aovis-rotator` function did under `tests/fakes/lambda_runtime_api.py`.
struct LambdaRun {
    /// One per event, in order: `{"request_id", "kind": "response" | "error", "body"}`.
    results: Vec<serde_json::Value>,
    /// The function's stdout (EMF and report lines, as CloudWatch Logs gets them).
    stdout: String,
    /// Its logs.
    stderr: String,
}

impl LambdaRun {
    /// The report of the `n`th round that printed one (0-based).
    fn report(&self, n: usize) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .filter(|l| l.starts_with("{\"round\""))
            .nth(n)
            .unwrap_or_else(|| panic!("no report #{n} in {}", self.stdout));
        serde_json::from_str(line).unwrap()
    }
}

/// Runs the binary as a Lambda function (as `bootstrap` under the fake Runtime
/// API, with Lambda's environment) through `events`, each handed out with
/// `deadline_ms` to run, then stops it.
fn run_lambda(
    aws: &Aws,
    endpoint: &str,
    config: ConfigFrom,
    deadline_ms: u64,
    events: &[&str],
) -> LambdaRun {
    use std::io::{BufRead, Read};
    let runtime = Command::new(python())
        .arg(fake("lambda_runtime_api.py"))
        .args(["--deadline-ms", &deadline_ms.to_string()])
        .args(events)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut runtime = Killed(runtime);
    let mut lines = std::io::BufReader::new(runtime.0.stdout.take().unwrap()).lines();
    let started: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let port = started["port"].as_u64().unwrap();

    let mut function = Command::new(bin("aovis-rotator"));
    function
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "aovis-rotator-test")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/aovis-rotator-test",
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", &aws.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &aws.secret)
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match config {
        ConfigFrom::Env(text) => function.env("AOVIS_ROTATOR_CONFIG", text),
        ConfigFrom::Parameter(name) => function.env("AOVIS_ROTATOR_CONFIG_PARAMETER", name),
    };
    let mut function = Killed(function.spawn().unwrap());
    // Drain both pipes while the function runs, so a chatty log never blocks it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(function.0.stdout.take().unwrap()));
    let stderr = drain(Box::new(function.0.stderr.take().unwrap()));
    let results = events
        .iter()
        .map(|event| {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the function never answered {event}"))
                .unwrap();
            serde_json::from_str(&line).unwrap()
        })
        .collect();
    drop(function);
    LambdaRun {
        results,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Every log line is JSON (as CloudWatch Logs gets it in Lambda).
fn assert_json_lines(stderr: &str) {
    for line in stderr.lines().filter(|l| !l.is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

/// The `default` binding of the test role to the fleet, as a Lambda's config.
fn lambda_config(aws: &Aws) -> String {
    format!(
        "region = \"us-east-1\"\n{}",
        binding("default", &aws.role_arn, FLEET_TARGETS)
    )
}

#[test]
fn as_a_lambda_it_serves_scheduler_events_and_fails_the_invocation_on_a_bad_one() {
    let aws = setup_aws(&[]);
    let nodes = enrolled_fleet(&aws, FLEET, "{}");
    let config = lambda_config(&aws);
    let run = run_lambda(
        &aws,
        &nodes.url(),
        ConfigFrom::Env(&config),
        120_000,
        &[
            r#"{"shard":"1/1","time":"2026-11-22T12:00:00Z","detail-type":"Scheduled Event"}"#,
            r#"{"shard":"9/2"}"#,
        ],
    );
    let first = &run.results[0];
    assert_eq!(first["kind"], "response", "{first}");
    assert_eq!(first["request_id"], "request-1");
    assert_eq!(first["body"]["counts"]["delivered"], 3, "{first}");
    assert_eq!(first["body"]["round"]["rotator"], "aovis-rotator-test");
    assert_eq!(first["body"]["round"]["shard"], "1/1");
    let second = &run.results[1];
    assert_eq!(second["kind"], "error", "{second}");
    assert!(
        second["body"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("event field `shard`"),
        "{second}"
    );

    let emf: serde_json::Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(emf["Rotator"], "aovis-rotator-test", "{}", run.stdout);
    assert_eq!(emf["HostsDelivered"], 3);
    let secrets: Vec<(String, String)> = FLEET
        .iter()
        .map(|id| cached_secrets(nodes.host(id)))
        .collect();
    let flat: Vec<&str> = secrets
        .iter()
        .flat_map(|(s, t)| [s.as_str(), t.as_str()])
        .collect();
    assert_not_in("lambda stdout", &run.stdout, &flat);
    assert_not_in("lambda logs", &run.stderr, &flat);
    assert_json_lines(&run.stderr);
}

#[test]
fn as_a_lambda_it_reads_its_config_from_an_ssm_parameter_and_names_a_bad_one() {
    let aws = setup_aws(&[]);
    let nodes = enrolled_fleet(&aws, FLEET, "{}");
    let config = lambda_config(&aws);
    // Read with decryption: a SecureString works like a String.
    for (name, kind) in [
        ("/aovis/rotator/config", "String"),
        ("/aovis/rotator/secure-config", "SecureString"),
    ] {
        aws.read(&["put-parameter", name, &config, kind]);
        let run = run_lambda(
            &aws,
            &nodes.url(),
            ConfigFrom::Parameter(name),
            120_000,
            &["{}"],
        );
        let result = &run.results[0];
        assert_eq!(
            result["kind"], "response",
            "{kind}: {result}\n{}",
            run.stderr
        );
        assert_eq!(result["body"]["counts"]["delivered"], 3, "{kind}: {result}");
        for id in FLEET {
            assert_eq!(
                serial_of(nodes.host(id), "default"),
                result["body"]["round"]["serial"].as_u64(),
                "{kind}: {id}"
            );
        }
        assert_json_lines(&run.stderr);
    }

    // A config whose broken line holds something secret-looking (a pasted key):
    // the error names the parameter and the byte, never the line's text.
    let pasted = format!("{config}external_id = {}\n", crate::support::SECRET);
    aws.read(&["put-parameter", "/aovis/rotator/bad-toml", &pasted]);
    let invalid = format!("{config}session_duration_seconds = 60\n");
    aws.read(&["put-parameter", "/aovis/rotator/invalid", &invalid]);
    let cases = [
        (
            "parameter missing",
            "/aovis/rotator/missing",
            "cannot read the configuration parameter /aovis/rotator/missing: ParameterNotFound",
        ),
        (
            "parameter holds bad TOML",
            "/aovis/rotator/bad-toml",
            "invalid configuration in parameter /aovis/rotator/bad-toml: invalid TOML at byte",
        ),
        (
            "parameter holds a config that fails validation",
            "/aovis/rotator/invalid",
            "invalid configuration in parameter /aovis/rotator/invalid: binding #1 (profile \"default\"): field `session_duration_seconds` must be from 900 to 43200",
        ),
    ];
    for (name, parameter, expected) in cases {
        let run = run_lambda(
            &aws,
            &nodes.url(),
            ConfigFrom::Parameter(parameter),
            120_000,
            &["{}"],
        );
        let result = &run.results[0];
        assert_eq!(result["kind"], "error", "{name}: {result}");
        let message = result["body"]["errorMessage"].as_str().unwrap();
        assert!(message.starts_with(expected), "{name}: {message}");
        assert_eq!(message.lines().count(), 1, "{name}: {message}");
        assert!(
            run.stdout.is_empty(),
            "{name}: no round ran: {}",
            run.stdout
        );
        assert_no_secret(name, message);
        assert_no_secret(name, &run.stderr);
        assert_json_lines(&run.stderr);
    }
}

#[test]
fn a_lambda_deadline_mid_round_reports_the_rest_not_reached_and_the_next_invocation_delivers_them()
{
    let aws = setup_aws(&[]);
    let ids = [
        "mi-00000000000000041",
        "mi-00000000000000042",
        "mi-00000000000000043",
        "mi-00000000000000044",
    ];
    // Fault: every request to SSM and STS takes 1.5 s. With one host at a time
    // and a 12 s deadline, the round stops starting hosts at 8 s (the deadline
    // minus a third of the budget): the three set-up calls take 4.5 s and each
    // host two calls (AssumeRole, SendCommand), so at most two hosts start.
    let nodes = enrolled_fleet(&aws, &ids, r#"{"latency_ms":1500}"#);
    let config = format!("concurrency = 1\n{}", lambda_config(&aws));
    let first = run_lambda(
        &aws,
        &nodes.url(),
        ConfigFrom::Env(&config),
        12_000,
        &["{}"],
    );
    let result = &first.results[0];
    assert_eq!(result["kind"], "error", "{result}\n{}", first.stderr);
    let message = result["body"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("not reached"), "{message}");
    let report = first.report(0);
    assert_eq!(report["counts"]["targeted"], 4, "{report}");
    let missed: Vec<&serde_json::Value> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["outcome"] == "not_reached")
        .collect();
    assert!(!missed.is_empty(), "{report}");
    for host in &missed {
        let reason = host["reason"].as_str().unwrap();
        assert!(
            reason.contains("the Lambda deadline was too near"),
            "{host}"
        );
        assert!(host["command_id"].is_null(), "{host}");
        let id = host["instance_id"].as_str().unwrap();
        assert!(!nodes.host(id).cache_path("default").exists(), "{id}");
    }
    for id in ids {
        host_entry(&report, id);
    }

    // The next invocation, without the latency and with Lambda's usual time,
    // delivers every host, the missed ones included.
    nodes.set_faults("{}");
    let second = run_lambda(
        &aws,
        &nodes.url(),
        ConfigFrom::Env(&config),
        120_000,
        &["{}"],
    );
    let result = &second.results[0];
    assert_eq!(result["kind"], "response", "{result}\n{}", second.stderr);
    let serial = result["body"]["round"]["serial"].as_u64().unwrap();
    assert!(serial > report["round"]["serial"].as_u64().unwrap());
    for id in ids {
        assert_eq!(
            host_entry(&result["body"], id)["outcome"],
            "delivered",
            "{id}"
        );
        assert_eq!(serial_of(nodes.host(id), "default"), Some(serial), "{id}");
    }
}

#[test]
fn progress_shows_on_a_terminal_only() {
    let aws = setup_aws(&[]);
    let nodes = enrolled_fleet(&aws, FLEET, "{}");
    let dir = tempfile::tempdir().unwrap();
    let config = write_fleet_config(dir.path(), &aws, "");
    // Not a terminal: no progress on stderr.
    let plain = rotate(&aws, &nodes.url(), &config);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert!(
        !text(&plain.stderr).contains("hosts,"),
        "{}",
        text(&plain.stderr)
    );
    // A terminal (util-linux `script` runs the command on a pseudo-terminal).
    let command = format!(
        "{} rotate --config {}",
        bin("aovis-rotator").display(),
        config.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("AWS_ENDPOINT_URL", nodes.url())
        .env("AWS_ACCESS_KEY_ID", &aws.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &aws.secret)
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("3/3 hosts, 0 failed"), "{screen}");
}
