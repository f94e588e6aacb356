//! `aovis_agent::receive::receive`: a delivery as SSM Agent hands it to
//! `aovis-agent receive`, through base64, age (with a fixed host key made once per
//! run in a temp directory), the envelope's JSON and every check, to the write.
//!
//! The first byte picks the mode: odd, the rest is the payload as is (base64 and
//! the age header get fuzzed); even, the rest is sealed to the host's key first
//! (the envelope and the checks after decryption get fuzzed).
//!
//! Beyond "never panics": an error's one-line message never holds the envelope's
//! secret access key.
#![no_main]

use std::sync::OnceLock;

use aovis_agent::config::AgentConfig;
use aovis_agent::identity;
use aovis_agent::instance::{InstanceId, Source};
use aovis_agent::receive::{receive, Host};
use aovis_formats::paths::Paths;
use base64::Engine;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

const HOST_ID: &str = "mi-0123456789abcdef0";

struct Fixture {
    _dir: tempfile::TempDir,
    paths: Paths,
    config: AgentConfig,
    recipient: age::x25519::Recipient,
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_348_800, 0).expect("a fixed time") // 2026-11-22T12:00:00Z
}

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let paths = Paths {
            state_dir: dir.path().join("state"),
            config_dir: dir.path().join("config"),
        };
        let (key, _) =
            identity::load_or_create(&paths.host_key(), uid(), now()).expect("a host key");
        let recipient = key.recipient().parse().expect("a recipient");
        Fixture {
            _dir: dir,
            paths,
            config: AgentConfig::default(),
            recipient,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let payload = if mode % 2 == 1 {
        rest.to_vec()
    } else {
        let Ok(sealed) = age::encrypt(&fixture.recipient, rest) else {
            return;
        };
        base64::engine::general_purpose::STANDARD
            .encode(sealed)
            .into_bytes()
    };
    let key_path = fixture.paths.host_key();
    let load = move || identity::load(&key_path, uid());
    let instance = || {
        Ok(InstanceId {
            id: HOST_ID.into(),
            source: Source::Config,
        })
    };
    let host = Host {
        paths: &fixture.paths,
        config: &fixture.config,
        identity: &load,
        instance_id: &instance,
        as_root: false,
    };
    if let Err(err) = receive(&host, &payload, now()) {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if let Ok(envelope) = aovis_formats::envelope::parse(rest) {
            let secret = envelope.credentials.secret_access_key().expose();
            if secret.len() >= 8 {
                assert!(!message.contains(secret), "an error shows the secret");
            }
        }
    }
});
