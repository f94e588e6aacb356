//! Helpers shared by the scenario modules: where the binaries and the Python venv
//! are, a throwaway host layout, and secret-leak checks.

pub mod daemon;
pub mod delivery;
pub mod endpoints;
pub mod moto;
pub mod nspawn;
pub mod sealing;
pub mod ssm_nodes;
pub mod strace;
pub mod users;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The secret and token every fixture uses, so leak checks know what to look for.
pub const SECRET: &str = "SeCrEt/aovis+test+value0123456789ABCDEFGH";
/// The session token of the fixtures.
pub const TOKEN: &str = "ToKeN//aovis-test-session-token==";
/// The access key id of the fixtures.
pub const KEY_ID: &str = "ASIAAOVISTEST0000WXYZ";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A workspace binary built next to this test binary (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> -> target/<profile>/<name>
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

/// The venv's bin directory (Python with botocore, boto3, awscli, moto).
pub fn venv_bin() -> PathBuf {
    let dir = std::env::var_os("AOVIS_TEST_VENV")
        .map_or_else(|| repo_root().join(".venv"), PathBuf::from)
        .join("bin");
    assert!(
        dir.join("python").exists(),
        "no test venv at {}: run scripts/test (or scripts/setup-test-env)",
        dir.display()
    );
    dir
}

/// The venv's Python.
pub fn python() -> PathBuf {
    venv_bin().join("python")
}

/// A script under `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    repo_root().join("tests/py").join(name)
}

/// Output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails if any secret of the fixtures shows up in `output`.
pub fn assert_no_secret(what: &str, output: &str) {
    for secret in [SECRET, TOKEN] {
        assert!(!output.contains(secret), "{what} leaked a secret: {output}");
    }
}

/// A cache document in the design's format with the fixture secrets.
pub fn cache_json(expiration: &str) -> String {
    format!(
        r#"{{"Version":1,"AccessKeyId":"{KEY_ID}","SecretAccessKey":"{SECRET}","SessionToken":"{TOKEN}","Expiration":"{expiration}","Aovis":{{"serial":1763814000123,"role_arn":"arn:aws:iam::111122223333:role/onprem","instance_id":"mi-0123456789abcdef0","issued_at":"2026-11-22T12:00:00Z","received_at":"2026-11-22T12:00:01Z"}}}}"#
    )
}

/// An expiration `seconds` from now, in the canonical form.
pub fn expiration_in(seconds: i64) -> String {
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    let time = now + chrono::TimeDelta::seconds(seconds);
    aovis_formats::time::format_expiration(time)
}

/// A throwaway host: `$STATE` and `$CONFIG` under one temp directory, every level
/// mode 0755 so an unprivileged user can reach what its modes allow.
pub struct TempHost {
    dir: tempfile::TempDir,
}

impl TempHost {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = Self { dir };
        for sub in ["", "state", "state/profiles", "config"] {
            let path = host.dir.path().join(sub);
            fs::create_dir_all(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        host
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.state_dir().join("profiles")
    }

    pub fn cache_path(&self, profile: &str) -> PathBuf {
        self.profiles_dir().join(format!("{profile}.json"))
    }

    /// Writes a cache file with the given mode.
    pub fn write_cache(&self, profile: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.cache_path(profile);
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A command for a workspace binary with this host's directories in its
    /// environment and stdin closed.
    pub fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(bin(binary));
        command
            .env("AOVIS_STATE_DIR", self.state_dir())
            .env("AOVIS_CONFIG_DIR", self.config_dir())
            .stdin(Stdio::null());
        command
    }

    /// Runs `aovis-cred` with `args`.
    pub fn cred(&self, args: &[&str]) -> Output {
        self.command("aovis-cred").args(args).output().unwrap()
    }
}

/// True when the tests run as root, which the tests that switch users need.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
