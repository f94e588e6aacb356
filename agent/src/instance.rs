//! Which managed node this host is: the instance id an envelope must name.
//!
//! In order:
//!
//! 1. `AWS_SSM_INSTANCE_ID`, which SSM Agent sets for every command it runs, so a
//!    delivery through Run Command always has it;
//! 2. `instance_id` in `agent.toml`, for hosts where the operator pins it;
//! 3. SSM Agent's registration file, `/var/lib/amazon/ssm/registration`, JSON such
//!    as `{"ManagedInstanceID":"mi-0123456789abcdef0","Region":"eu-west-1"}`, written
//!    when a hybrid node registers with an activation.
//!
//! `AOVIS_SSM_REGISTRATION_FILE` replaces the registration file's path; it exists
//! for tests, which cannot write under `/var/lib/amazon`.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The environment variable SSM Agent sets for the commands it runs.
pub const INSTANCE_ID_ENV: &str = "AWS_SSM_INSTANCE_ID";
/// Where SSM Agent (Linux) keeps the registration of a hybrid managed node.
pub const REGISTRATION_FILE: &str = "/var/lib/amazon/ssm/registration";
/// Overrides [`REGISTRATION_FILE`] (tests only).
pub const REGISTRATION_FILE_ENV: &str = "AOVIS_SSM_REGISTRATION_FILE";

/// The registration file is a few hundred bytes.
const MAX_REGISTRATION_BYTES: u64 = 64 * 1024;

/// Where the instance id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `AWS_SSM_INSTANCE_ID`.
    Environment,
    /// `instance_id` in the agent config.
    Config,
    /// SSM Agent's registration file.
    RegistrationFile,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Environment => INSTANCE_ID_ENV,
            Self::Config => "agent.toml instance_id",
            Self::RegistrationFile => "SSM Agent's registration file",
        })
    }
}

/// This host's instance id and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId {
    /// `mi-...` (hybrid) or `i-...` (EC2).
    pub id: String,
    /// Where it came from.
    pub source: Source,
}

/// Why the instance id is unknown.
#[derive(Debug)]
pub enum InstanceError {
    /// No source named one.
    Unknown {
        /// The registration file that was looked for.
        registration: PathBuf,
    },
    /// The registration file exists but could not be read.
    Read {
        /// The registration file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The registration file is not what SSM Agent writes.
    Malformed {
        /// The registration file.
        path: PathBuf,
    },
}

impl fmt::Display for InstanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { registration } => write!(
                f,
                "cannot tell this host's instance id: {INSTANCE_ID_ENV} is not set, agent.toml \
                 has no instance_id and there is no {}; register SSM Agent or set instance_id",
                registration.display()
            ),
            Self::Read { path, .. } => {
                write!(f, "cannot read SSM Agent registration {}", path.display())
            }
            Self::Malformed { path } => write!(
                f,
                "SSM Agent registration {} has no ManagedInstanceID string",
                path.display()
            ),
        }
    }
}

impl std::error::Error for InstanceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Registration {
    #[serde(rename = "ManagedInstanceID")]
    managed_instance_id: String,
}

/// The registration file path: [`REGISTRATION_FILE_ENV`] or [`REGISTRATION_FILE`].
pub fn registration_path_from_env() -> PathBuf {
    std::env::var_os(REGISTRATION_FILE_ENV)
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(REGISTRATION_FILE), PathBuf::from)
}

/// Resolves the instance id from the environment value, the config value and the
/// registration file, in that order. Empty values count as unset.
pub fn resolve(
    environment: Option<&str>,
    config: Option<&str>,
    registration: &Path,
) -> Result<InstanceId, InstanceError> {
    fn given(value: Option<&str>) -> Option<&str> {
        value.map(str::trim).filter(|v| !v.is_empty())
    }
    if let Some(id) = given(environment) {
        return Ok(InstanceId {
            id: id.to_owned(),
            source: Source::Environment,
        });
    }
    if let Some(id) = given(config) {
        return Ok(InstanceId {
            id: id.to_owned(),
            source: Source::Config,
        });
    }
    let mut text = Vec::new();
    match std::fs::File::open(registration) {
        Ok(file) => file.take(MAX_REGISTRATION_BYTES).read_to_end(&mut text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(InstanceError::Unknown {
                registration: registration.to_path_buf(),
            })
        }
        Err(err) => Err(err),
    }
    .map_err(|source| InstanceError::Read {
        path: registration.to_path_buf(),
        source,
    })?;
    let malformed = || InstanceError::Malformed {
        path: registration.to_path_buf(),
    };
    let parsed: Registration = serde_json::from_slice(&text).map_err(|_| malformed())?;
    let id = parsed.managed_instance_id.trim();
    if id.is_empty() {
        return Err(malformed());
    }
    Ok(InstanceId {
        id: id.to_owned(),
        source: Source::RegistrationFile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_then_config_then_registration_file() {
        let dir = tempfile::tempdir().unwrap();
        let registration = dir.path().join("registration");
        std::fs::write(
            &registration,
            r#"{"ManagedInstanceID":"mi-0000000000000000f","Region":"eu-west-1"}"#,
        )
        .unwrap();
        let cases = [
            (
                "env wins",
                Some("mi-env"),
                Some("mi-cfg"),
                "mi-env",
                Source::Environment,
            ),
            (
                "empty env",
                Some(" "),
                Some("mi-cfg"),
                "mi-cfg",
                Source::Config,
            ),
            ("config", None, Some("mi-cfg"), "mi-cfg", Source::Config),
            (
                "file",
                None,
                Some(""),
                "mi-0000000000000000f",
                Source::RegistrationFile,
            ),
        ];
        for (name, env, config, id, source) in cases {
            let got = resolve(env, config, &registration).unwrap();
            assert_eq!(got.id, id, "{name}");
            assert_eq!(got.source, source, "{name}");
        }
    }

    #[test]
    fn refuses_a_missing_or_malformed_registration_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration");
        let err = resolve(None, None, &path).unwrap_err().to_string();
        assert!(err.contains("cannot tell this host's instance id"), "{err}");
        let cases = [
            ("not json", "mi-123"),
            ("no id", r#"{"Region":"eu-west-1"}"#),
            ("id not a string", r#"{"ManagedInstanceID":7}"#),
            ("empty id", r#"{"ManagedInstanceID":""}"#),
        ];
        for (name, text) in cases {
            std::fs::write(&path, text).unwrap();
            let err = resolve(None, None, &path).unwrap_err().to_string();
            assert!(err.contains("has no ManagedInstanceID"), "{name}: {err}");
        }
    }
}
