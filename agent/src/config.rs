//! The agent config, `$AOVIS_CONFIG_DIR/agent.toml` (or `--config PATH`).
//!
//! ```toml
//! # Optional: the managed-node id this host answers to. Without it the agent uses
//! # AWS_SSM_INSTANCE_ID (set by SSM Agent), then SSM Agent's registration file.
//! instance_id = "mi-0123456789abcdef0"
//!
//! # One table per profile the host receives. `group` is the group that may read the
//! # cache file (mode 0640, owner root); without it only root can.
//! [profiles.default]
//! group = "aovis-default"
//!
//! # The daemon (`aovis-agent run`); see `daemon::settings`.
//! [daemon]
//! ```
//!
//! A missing file is the empty config (every default). An unknown key or a bad value
//! is an error whose one line names the file and the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use aovis_formats::ProfileName;
use serde::Deserialize;

use crate::daemon::settings::DaemonSettings;

/// The whole agent config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Overrides the instance id the agent answers to.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Per-profile settings, keyed by profile name.
    #[serde(default)]
    pub profiles: BTreeMap<ProfileName, ProfileConfig>,
    /// Settings of `aovis-agent run`.
    #[serde(default)]
    pub daemon: DaemonSettings,
}

/// Settings of one profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// The group that may read this profile's cache (and its daemon token).
    #[serde(default)]
    pub group: Option<String>,
}

impl AgentConfig {
    /// The settings of `profile`, or the defaults when the config does not name it.
    pub fn profile(&self, profile: &ProfileName) -> ProfileConfig {
        self.profiles.get(profile).cloned().unwrap_or_default()
    }
}

/// Why the config could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The file exists but could not be read.
    Read {
        /// The config file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid agent config.
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// What is wrong (the parser's message, one line).
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, .. } => write!(f, "cannot read config {}", path.display()),
            Self::Invalid {
                path,
                line: Some(line),
                message,
            } => write!(f, "config {} line {line}: {message}", path.display()),
            Self::Invalid {
                path,
                line: None,
                message,
            } => write!(f, "config {}: {message}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::Invalid { .. } => None,
        }
    }
}

/// Loads the config at `path`; a missing file is the default config.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|(line, message)| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(AgentConfig::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses config text; the error is (1-based line, one-line message).
pub fn parse(text: &str) -> Result<AgentConfig, (Option<usize>, String)> {
    toml::from_str(text).map_err(|err: toml::de::Error| {
        let line = err
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = err
            .message()
            .lines()
            .next()
            .unwrap_or("invalid")
            .to_string();
        (line, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let config = parse(include_str!("../agent.toml.example")).unwrap();
        assert_eq!(config.instance_id, None);
        let default = ProfileName::new("default").unwrap();
        assert_eq!(
            config.profile(&default).group.as_deref(),
            Some("aovis-default")
        );
        assert_eq!(config.profiles.len(), 2);
        assert!(config.daemon.imds.is_some());
        assert!(config.daemon.container.is_some());
    }

    #[test]
    fn empty_and_missing_files_are_the_defaults() {
        assert_eq!(parse("").unwrap(), AgentConfig::default());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load(&dir.path().join("agent.toml")).unwrap(),
            AgentConfig::default()
        );
        let unknown = ProfileName::new("other").unwrap();
        assert_eq!(
            parse("").unwrap().profile(&unknown),
            ProfileConfig::default()
        );
    }

    #[test]
    fn refuses_bad_configs_naming_the_line() {
        let cases = [
            (
                "unknown top-level key",
                "instance_id = \"mi-1\"\nbogus = 1\n",
                2,
                "unknown field `bogus`",
            ),
            (
                "unknown profile key",
                "[profiles.default]\ngroup = \"g\"\nmode = 1\n",
                3,
                "unknown field `mode`",
            ),
            (
                "bad profile name",
                "[profiles.\"../etc\"]\ngroup = \"g\"\n",
                1,
                "invalid profile name",
            ),
            (
                "group not a string",
                "\n[profiles.default]\ngroup = 5\n",
                3,
                "invalid type",
            ),
            (
                "instance id not a string",
                "instance_id = 7\n",
                1,
                "invalid type",
            ),
            ("not toml", "[profiles.default\n", 1, ""),
        ];
        for (name, text, line, expected) in cases {
            let (got_line, message) = parse(text).unwrap_err();
            assert_eq!(got_line, Some(line), "{name}: {message}");
            assert!(message.contains(expected), "{name}: {message}");
            assert!(!message.contains('\n'), "{name}: {message}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("config {} line 1: unknown field `bogus`, expected one of `instance_id`, `profiles`, `daemon`", path.display())
        );
    }
}
