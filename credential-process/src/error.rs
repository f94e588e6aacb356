//! Every way `aovis-cred` can fail, with its one-line message and exit code.
//!
//! Each message names the profile, what is wrong, and what to do next. None of them
//! can carry a secret: they are built from the profile name, the path, times, modes
//! and uids, and [`FormatError`], which never quotes the file's content.

use std::fmt;
use std::path::{Path, PathBuf};

use aovis_formats::profile::InvalidProfileName;
use aovis_formats::time::{format_expiration, human_duration};
use aovis_formats::{FormatError, ProfileName};
use chrono::{DateTime, TimeDelta, Utc};

use crate::read::{ReadFailure, Unsafe, MAX_CACHE_BYTES};

/// A failure of `aovis-cred`.
#[derive(Debug)]
pub enum CredError {
    /// The command line could not be parsed.
    Usage(String),
    /// The profile name cannot name a cache file.
    InvalidProfile {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: InvalidProfileName,
    },
    /// No cache file (or no profiles directory).
    NoCache {
        /// The profile.
        profile: ProfileName,
        /// Where the cache was looked for.
        path: PathBuf,
    },
    /// The OS refused to let the caller read the cache.
    PermissionDenied {
        /// The profile.
        profile: ProfileName,
        /// The cache path.
        path: PathBuf,
    },
    /// The cache is not a valid cache document.
    Malformed {
        /// The profile.
        profile: ProfileName,
        /// The cache path.
        path: PathBuf,
        /// What is wrong with it.
        error: FormatError,
    },
    /// The cache is too large to be a cache document.
    TooLarge {
        /// The profile.
        profile: ProfileName,
        /// The cache path.
        path: PathBuf,
    },
    /// The credentials have expired.
    Expired {
        /// The profile.
        profile: ProfileName,
        /// When they expired.
        expired_at: DateTime<Utc>,
        /// How long ago.
        ago: TimeDelta,
    },
    /// The credentials expire within the safety margin.
    ExpiringSoon {
        /// The profile.
        profile: ProfileName,
        /// When they expire.
        expires_at: DateTime<Utc>,
        /// How long is left.
        left: TimeDelta,
    },
    /// The cache file or its directory must not be trusted.
    Unsafe {
        /// The profile.
        profile: ProfileName,
        /// The cache path.
        path: PathBuf,
        /// What is wrong.
        why: Unsafe,
    },
    /// Another I/O error while reading the cache.
    Io {
        /// The profile.
        profile: ProfileName,
        /// The cache path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing to stdout failed (the SDK went away, for example).
    Stdout(std::io::Error),
}

impl CredError {
    /// Maps a read failure to the user-facing error for `profile`.
    pub fn from_read(profile: &ProfileName, path: &Path, failure: ReadFailure) -> Self {
        let (profile, path) = (profile.clone(), path.to_path_buf());
        match failure {
            ReadFailure::NotFound => Self::NoCache { profile, path },
            ReadFailure::PermissionDenied => Self::PermissionDenied { profile, path },
            ReadFailure::Unsafe(why) => Self::Unsafe { profile, path, why },
            ReadFailure::TooLarge => Self::TooLarge { profile, path },
            ReadFailure::Io(source) => Self::Io {
                profile,
                path,
                source,
            },
        }
    }

    /// The exit code, as listed in `--help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Io { .. } | Self::Stdout(_) => 1,
            Self::Usage(_) => 2,
            Self::InvalidProfile { .. } => 3,
            Self::NoCache { .. } => 4,
            Self::PermissionDenied { .. } => 5,
            Self::Malformed { .. } | Self::TooLarge { .. } => 6,
            Self::Expired { .. } | Self::ExpiringSoon { .. } => 7,
            Self::Unsafe { .. } => 8,
        }
    }
}

const CHECK_ROTATION: &str =
    "run `aovis-agent status` on this host and check the rotator's last round report";

fn directory_of(path: &Path) -> String {
    path.parent()
        .map_or_else(String::new, |dir| dir.display().to_string())
}

fn describe_unsafe(why: Unsafe, path: &Path) -> (String, String) {
    let file = path.display();
    let dir = directory_of(path);
    match why {
        Unsafe::FileIsSymlink => (
            "it is a symbolic link".into(),
            "remove it; only aovis-agent should write this file".into(),
        ),
        Unsafe::NotRegularFile => (
            "it is not a regular file".into(),
            "remove it; only aovis-agent should write this file".into(),
        ),
        Unsafe::FileWritable { mode } => (
            format!("it is writable by group or others (mode {mode:04o})"),
            format!("run `chmod 0640 {file}`"),
        ),
        Unsafe::FileOwner { uid } => (
            format!("it is owned by uid {uid}, which is neither root nor you"),
            "remove it; only aovis-agent (root) should write this file".into(),
        ),
        Unsafe::DirectoryIsSymlink => (
            format!("its directory {dir} is a symbolic link or not a directory"),
            format!("make {dir} a real directory owned by root, mode 0755"),
        ),
        Unsafe::DirectoryWritable { mode } => (
            format!("its directory {dir} is writable by group or others (mode {mode:04o})"),
            format!("run `chmod 0755 {dir}`"),
        ),
        Unsafe::DirectoryOwner { uid } => (
            format!("its directory {dir} is owned by uid {uid}, which is neither root nor you"),
            format!("run `chown root {dir}`"),
        ),
    }
}

impl fmt::Display for CredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(message) => write!(f, "{message}; run `aovis-cred --help`"),
            Self::InvalidProfile { name, reason } => write!(
                f,
                "invalid profile name {name:?}: {reason}; use 1 to 64 of A-Z a-z 0-9 _ . - \
                 (not starting with '.'), as named in agent.toml"
            ),
            Self::NoCache { profile, path } => write!(
                f,
                "profile '{profile}': no cached credentials at {}; check the name against \
                 `aovis-agent status` and that the rotator targets this host",
                path.display()
            ),
            Self::PermissionDenied { profile, path } => write!(
                f,
                "profile '{profile}': permission denied reading {}; add this user to the \
                 profile's group in agent.toml, then log in again",
                path.display()
            ),
            Self::Malformed {
                profile,
                path,
                error,
            } => write!(
                f,
                "profile '{profile}': cache file {} is malformed: {error}; the next delivery \
                 replaces it, meanwhile {CHECK_ROTATION}",
                path.display()
            ),
            Self::TooLarge { profile, path } => write!(
                f,
                "profile '{profile}': cache file {} is malformed: it is larger than {} KiB; \
                 the next delivery replaces it, meanwhile {CHECK_ROTATION}",
                path.display(),
                MAX_CACHE_BYTES / 1024
            ),
            Self::Expired {
                profile,
                expired_at,
                ago,
            } => write!(
                f,
                "profile '{profile}': credentials expired at {} ({} ago); rotation has \
                 stopped reaching this host: {CHECK_ROTATION}",
                format_expiration(*expired_at),
                human_duration(*ago)
            ),
            Self::ExpiringSoon {
                profile,
                expires_at,
                left,
            } => write!(
                f,
                "profile '{profile}': credentials expire at {} (in {}), inside the 60 s \
                 safety margin; a delivery is overdue: {CHECK_ROTATION}",
                format_expiration(*expires_at),
                human_duration(*left)
            ),
            Self::Unsafe { profile, path, why } => {
                let (what, fix) = describe_unsafe(*why, path);
                write!(
                    f,
                    "profile '{profile}': refusing {}: {what}; {fix}",
                    path.display()
                )
            }
            Self::Io {
                profile,
                path,
                source,
            } => write!(
                f,
                "profile '{profile}': cannot read {}: {source}",
                path.display()
            ),
            Self::Stdout(source) => write!(f, "cannot write the credentials to stdout: {source}"),
        }
    }
}

impl std::error::Error for CredError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidProfile { reason, .. } => Some(reason),
            Self::Malformed { error, .. } => Some(error),
            Self::Io { source, .. } | Self::Stdout(source) => Some(source),
            _ => None,
        }
    }
}
