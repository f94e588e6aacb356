//! Where aovis keeps its files (see the Paths table of `shared/design.md`).
//!
//! | what | default | override |
//! |---|---|---|
//! | state dir | `/var/lib/aovis` | env `AOVIS_STATE_DIR` |
//! | config dir | `/etc/aovis` | env `AOVIS_CONFIG_DIR` |
//! | cache of profile P | `$STATE/profiles/P.json` | |
//! | host identity | `$CONFIG/host.key` | |
//! | agent config | `$CONFIG/agent.toml` | `--config` |

use std::path::{Path, PathBuf};

use crate::profile::ProfileName;

/// Environment variable that moves the state directory.
pub const STATE_DIR_ENV: &str = "AOVIS_STATE_DIR";
/// Environment variable that moves the config directory.
pub const CONFIG_DIR_ENV: &str = "AOVIS_CONFIG_DIR";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/aovis";
/// Default config directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/aovis";

/// The directories one process works with, resolved once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `$STATE`.
    pub state_dir: PathBuf,
    /// `$CONFIG`.
    pub config_dir: PathBuf,
}

impl Paths {
    /// Resolves the directories from the environment (an empty variable counts as unset).
    pub fn from_env() -> Self {
        let dir = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|value| !value.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        Self {
            state_dir: dir(STATE_DIR_ENV, DEFAULT_STATE_DIR),
            config_dir: dir(CONFIG_DIR_ENV, DEFAULT_CONFIG_DIR),
        }
    }

    /// `$STATE/profiles`.
    pub fn profiles_dir(&self) -> PathBuf {
        self.state_dir.join("profiles")
    }

    /// `$STATE/profiles/<profile>.json`.
    pub fn cache_file(&self, profile: &ProfileName) -> PathBuf {
        self.profiles_dir().join(profile.file_name())
    }

    /// `$CONFIG/host.key`.
    pub fn host_key(&self) -> PathBuf {
        self.config_dir.join("host.key")
    }

    /// `$CONFIG/agent.toml`.
    pub fn agent_config(&self) -> PathBuf {
        self.config_dir.join("agent.toml")
    }
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            state_dir: Path::new(DEFAULT_STATE_DIR).to_path_buf(),
            config_dir: Path::new(DEFAULT_CONFIG_DIR).to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_design() {
        let paths = Paths::default();
        let profile = ProfileName::new("build").unwrap();
        assert_eq!(
            paths.cache_file(&profile),
            Path::new("/var/lib/aovis/profiles/build.json")
        );
        assert_eq!(paths.host_key(), Path::new("/etc/aovis/host.key"));
        assert_eq!(paths.agent_config(), Path::new("/etc/aovis/agent.toml"));
    }
}
