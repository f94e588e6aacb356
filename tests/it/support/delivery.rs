//! A host that receives deliveries: `aovis-agent enroll` once, then envelopes sealed
//! to its key with the `age` crate, as the rotator seals them, handed to
//! `aovis-agent receive --payload` as SSM Agent runs it.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use super::sealing::{envelope, seal_with_crate, HOST_ID};
use super::{assert_no_secret, expiration_in, text, TempHost};

/// An enrolled [`TempHost`].
pub struct Receiver {
    /// The host's directories.
    pub host: TempHost,
    /// The host's age recipient (`age1...`).
    pub recipient: String,
}

impl Receiver {
    /// Enrolls a new host; `config` (when given) becomes its `agent.toml`.
    pub fn new(config: Option<&str>) -> Self {
        let host = TempHost::new();
        if let Some(config) = config {
            fs::write(host.config_dir().join("agent.toml"), config).unwrap();
        }
        let out = agent(&host).arg("enroll").output().unwrap();
        assert!(out.status.success(), "enroll: {}", text(&out.stderr));
        let recipient = text(&out.stdout).trim_end().to_owned();
        assert!(recipient.starts_with("age1"), "{recipient}");
        Self { host, recipient }
    }

    /// A sealed delivery of `profile` with `serial`, valid for an hour.
    pub fn payload(&self, profile: &str, serial: u64) -> String {
        let plain = envelope(
            HOST_ID,
            profile,
            serial,
            &expiration_in(0),
            &expiration_in(3600),
        );
        seal_with_crate(&self.recipient, plain.as_bytes())
    }

    /// The `aovis-agent receive --payload` command for `payload`, not yet run.
    pub fn receive_command(&self, payload: &str) -> Command {
        let mut command = agent(&self.host);
        command.args(["receive", "--payload", payload]);
        command
    }

    /// Runs a delivery of `profile` with `serial` and asserts that it was stored.
    pub fn deliver(&self, profile: &str, serial: u64) {
        let out = self
            .receive_command(&self.payload(profile, serial))
            .output()
            .unwrap();
        check_outputs("receive", &out);
        assert!(
            out.status.success(),
            "delivery of serial {serial}: {}",
            text(&out.stderr)
        );
    }

    /// The cache file of `profile`.
    pub fn cache_path(&self, profile: &str) -> PathBuf {
        self.host.cache_path(profile)
    }

    /// Names in the profiles directory that are temp files of an atomic write.
    pub fn temp_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.host.profiles_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with('.') && name.ends_with(".tmp"))
            .collect();
        names.sort();
        names
    }
}

/// Both streams of `out` hold no fixture secret and no age secret key.
pub fn check_outputs(what: &str, out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let stream = text(stream);
        assert_no_secret(what, &stream);
        assert!(!stream.contains("AGE-SECRET-KEY"), "{what} leaked a key");
    }
}

/// An `aovis-agent` command on `host`, answering to [`HOST_ID`] as SSM Agent would
/// tell it, with no real registration file and no AWS credentials in the way.
pub fn agent(host: &TempHost) -> Command {
    let mut command = host.command("aovis-agent");
    command
        .env("AWS_SSM_INSTANCE_ID", HOST_ID)
        .env(
            "AOVIS_SSM_REGISTRATION_FILE",
            host.root().join("no-registration"),
        )
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    command
}
