//! Tokens: IMDSv2 session tokens (in memory) and container tokens (in files).
//!
//! Both are 32 bytes from the OS random source (`getrandom`), written as URL-safe
//! base64 without padding (43 characters), so they fit in a header and in a URL.
//!
//! **IMDSv2 session tokens** live only in memory, in a [`SessionTokens`] store
//! bounded in size ([`MAX_SESSION_TOKENS`]) and in time (each token's TTL, 1 to
//! 21600 s, as the client asked). When full, expired tokens are dropped first, then
//! the oldest: an SDK whose token was dropped gets a 401 and asks for a new one.
//!
//! **Container tokens** live in `$STATE/tokens/<profile>.token`, created by the
//! daemon at start (or reload) when missing: mode 0640 with the profile's group
//! from `[profiles.<name>] group`, so whoever may read the profile's cache may read
//! its token, and nobody else; without a group, mode 0600. Under systemd the daemon
//! runs as its own unprivileged user and cannot give files to root, so it owns the
//! token files itself; it sets their group, which it may do for groups it belongs
//! to (the unit gives it the profile groups as supplementary groups). The file holds
//! the token and no newline (botocore refuses a token with a line break).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{DirBuilder, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{fchown, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aovis_formats::atomic::{write_atomic, AtomicWriteError, FileSpec};
use aovis_formats::{ProfileName, SecretString};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::open::{open_regular, OpenError};

/// Random bytes per token.
const TOKEN_BYTES: usize = 32;
/// Length of a token's text.
pub const TOKEN_LEN: usize = 43;
/// Most IMDSv2 session tokens kept at once.
pub const MAX_SESSION_TOKENS: usize = 4096;

/// The OS random source failed (it does not on any supported Linux).
#[derive(Debug)]
pub struct RandomError(getrandom::Error);

impl fmt::Display for RandomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the OS random source failed: {}", self.0)
    }
}

impl std::error::Error for RandomError {}

/// A fresh random token.
fn random_raw() -> Result<[u8; TOKEN_BYTES], RandomError> {
    let mut raw = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut raw).map_err(RandomError)?;
    Ok(raw)
}

fn encode(raw: &[u8; TOKEN_BYTES]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode(text: &str) -> Option<[u8; TOKEN_BYTES]> {
    if text.len() != TOKEN_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    bytes.try_into().ok()
}

/// IMDSv2 session tokens: bounded in number and in time. Callers pass `now`.
#[derive(Debug)]
pub struct SessionTokens {
    capacity: usize,
    expiry: HashMap<[u8; TOKEN_BYTES], Instant>,
    /// Issue order, for dropping the oldest when full.
    order: VecDeque<[u8; TOKEN_BYTES]>,
}

impl SessionTokens {
    /// An empty store holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            expiry: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Issues a token valid for `ttl` from `now`.
    pub fn issue(&mut self, ttl: Duration, now: Instant) -> Result<String, RandomError> {
        let raw = random_raw()?;
        if self.expiry.len() >= self.capacity {
            self.expiry.retain(|_, expires| *expires > now);
            let live = &self.expiry;
            self.order.retain(|token| live.contains_key(token));
        }
        while self.expiry.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.expiry.remove(&oldest);
                }
                None => break,
            }
        }
        self.expiry.insert(raw, now + ttl);
        self.order.push_back(raw);
        Ok(encode(&raw))
    }

    /// True when `token` was issued here and has not expired at `now`.
    pub fn is_valid(&self, token: &str, now: Instant) -> bool {
        decode(token)
            .and_then(|raw| self.expiry.get(&raw))
            .is_some_and(|expires| *expires > now)
    }

    /// Tokens held (expired ones included until they are swept).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    /// True when no token is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }
}

/// A container token, compared in constant time.
#[derive(Debug)]
pub struct ContainerToken(SecretString);

impl ContainerToken {
    /// True when `presented` is this token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.expose().as_bytes().ct_eq(presented).into()
    }
}

/// Why a container token file could not be made ready.
#[derive(Debug)]
pub enum TokenFileError {
    /// `$STATE/tokens` could not be created.
    Directory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The existing file could not be checked, read or fixed.
    Existing {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The existing file is not ours to use.
    Untrusted {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A new token could not be made.
    Random(RandomError),
    /// A new token could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: AtomicWriteError,
    },
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory { path, .. } => {
                write!(f, "cannot create the token directory {}", path.display())
            }
            Self::Existing { path, .. } => {
                write!(f, "cannot use the token file {}", path.display())
            }
            Self::Untrusted { path, problem } => {
                write!(f, "refusing the token file {}: {problem}", path.display())
            }
            Self::Random(_) => f.write_str("cannot make a token"),
            Self::Write { path, .. } => write!(f, "cannot write the token file {}", path.display()),
        }
    }
}

impl std::error::Error for TokenFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Directory { source, .. } | Self::Existing { source, .. } => Some(source),
            Self::Untrusted { .. } => None,
            Self::Random(source) => Some(source),
            Self::Write { source, .. } => Some(source),
        }
    }
}

/// `$STATE/tokens/<profile>.token`.
pub fn token_path(tokens_dir: &Path, profile: &ProfileName) -> PathBuf {
    tokens_dir.join(format!("{}.token", profile.as_str()))
}

/// The mode a token file gets: readable by the group only when there is one.
fn token_mode(gid: Option<u32>) -> u32 {
    if gid.is_some() {
        0o640
    } else {
        0o600
    }
}

/// Reads the token of `profile`, creating the file when missing (or when it holds
/// no valid token), and makes its group and mode match `gid`.
pub fn ensure_token_file(
    tokens_dir: &Path,
    profile: &ProfileName,
    gid: Option<u32>,
) -> Result<ContainerToken, TokenFileError> {
    // 0755: members of a profile's group must reach their own file; each file's mode
    // decides who reads it.
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(tokens_dir)
        .map_err(|source| TokenFileError::Directory {
            path: tokens_dir.to_path_buf(),
            source,
        })?;
    let path = token_path(tokens_dir, profile);
    if let Some(token) = read_existing(&path, gid)? {
        return Ok(token);
    }
    let raw = random_raw().map_err(TokenFileError::Random)?;
    let token = SecretString::new(encode(&raw));
    let spec = FileSpec {
        mode: token_mode(gid),
        uid: None,
        gid,
    };
    write_atomic(&path, token.expose().as_bytes(), &spec)
        .map_err(|source| TokenFileError::Write { path, source })?;
    Ok(ContainerToken(token))
}

/// The token in an existing file (after fixing its group and mode), `None` when
/// there is no file or it holds no valid token (it is then replaced).
fn read_existing(path: &Path, gid: Option<u32>) -> Result<Option<ContainerToken>, TokenFileError> {
    let existing = |source| TokenFileError::Existing {
        path: path.to_path_buf(),
        source,
    };
    let untrusted = |problem| TokenFileError::Untrusted {
        path: path.to_path_buf(),
        problem,
    };
    let (file, metadata) = match open_regular(path) {
        Ok(Some(opened)) => opened,
        Ok(None) => return Ok(None),
        Err(OpenError::Symlink) => return Err(untrusted("it is a symlink")),
        Err(OpenError::NotRegular) => return Err(untrusted("it is not a regular file")),
        Err(OpenError::Open(source) | OpenError::Stat(source)) => return Err(existing(source)),
    };
    if metadata.uid() != nix::unistd::geteuid().as_raw() {
        return Err(untrusted(
            "it is owned by another user (the daemon owns its token files)",
        ));
    }
    if gid.is_some_and(|gid| gid != metadata.gid()) {
        fchown(&file, None, gid).map_err(existing)?;
    }
    let mode = token_mode(gid);
    if metadata.mode() & 0o7777 != mode {
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(existing)?;
    }
    let mut text = zeroize::Zeroizing::new(String::with_capacity(TOKEN_LEN + 1));
    file.take(TOKEN_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(existing)?;
    if decode(&text).is_none() {
        return Ok(None);
    }
    Ok(Some(ContainerToken(SecretString::new(text.to_string()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn session_tokens_expire() {
        let mut store = SessionTokens::new(8);
        let start = Instant::now();
        let token = store.issue(Duration::from_secs(10), start).unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(store.is_valid(&token, start));
        assert!(store.is_valid(&token, start + Duration::from_secs(9)));
        assert!(!store.is_valid(&token, start + Duration::from_secs(10)));
    }

    #[test]
    fn session_tokens_refuse_what_was_not_issued() {
        let mut store = SessionTokens::new(8);
        let now = Instant::now();
        let token = store.issue(Duration::from_secs(10), now).unwrap();
        let mut altered = token.clone().into_bytes();
        altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        let cases = [
            ("empty", String::new()),
            ("never issued", encode(&[7; TOKEN_BYTES])),
            ("one character changed", altered),
            ("truncated", token[..TOKEN_LEN - 1].to_owned()),
            ("extended", format!("{token}A")),
            ("not base64", "!".repeat(TOKEN_LEN)),
        ];
        for (name, presented) in cases {
            assert!(!store.is_valid(&presented, now), "{name}");
        }
    }

    #[test]
    fn session_tokens_stay_bounded() {
        let mut store = SessionTokens::new(4);
        let now = Instant::now();
        let first = store.issue(Duration::from_secs(100), now).unwrap();
        let mut last = String::new();
        for _ in 0..10 {
            last = store.issue(Duration::from_secs(100), now).unwrap();
        }
        assert_eq!(store.len(), 4);
        assert!(!store.is_valid(&first, now), "the oldest goes first");
        assert!(store.is_valid(&last, now));
    }

    #[test]
    fn expired_tokens_are_dropped_before_live_ones() {
        let mut store = SessionTokens::new(2);
        let now = Instant::now();
        let long = store.issue(Duration::from_secs(1000), now).unwrap();
        let _short = store.issue(Duration::from_secs(1), now).unwrap();
        let later = now + Duration::from_secs(5);
        let fresh = store.issue(Duration::from_secs(1000), later).unwrap();
        assert!(store.is_valid(&long, later), "the live older token stays");
        assert!(store.is_valid(&fresh, later));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn container_token_compares_exactly() {
        let token = ContainerToken(SecretString::new("abc".to_owned()));
        assert!(token.matches(b"abc"));
        for wrong in [&b""[..], b"ab", b"abcd", b"abd", b"ABC"] {
            assert!(!token.matches(wrong));
        }
    }

    #[test]
    fn token_file_is_created_once_with_a_safe_mode() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        let profile = ProfileName::new("build").unwrap();
        let first = ensure_token_file(&tokens, &profile, None).unwrap();
        let path = token_path(&tokens, &profile);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), TOKEN_LEN, "no newline: {text:?}");
        assert!(first.matches(text.as_bytes()));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);

        // A second start reuses it, and fixes a loosened mode.
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let second = ensure_token_file(&tokens, &profile, None).unwrap();
        assert!(second.matches(text.as_bytes()));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);

        // With a group: 0640 and that group.
        let gid = nix::unistd::getegid().as_raw();
        ensure_token_file(&tokens, &profile, Some(gid)).unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o640);
        assert_eq!(metadata.gid(), gid);
    }

    #[test]
    fn a_token_file_without_a_valid_token_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let profile = ProfileName::new("build").unwrap();
        let path = token_path(dir.path(), &profile);
        fs::write(&path, "short\n").unwrap();
        let token = ensure_token_file(dir.path(), &profile, None).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(token.matches(text.as_bytes()));
    }

    #[test]
    fn refuses_a_symlinked_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let profile = ProfileName::new("build").unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "x").unwrap();
        std::os::unix::fs::symlink(&target, token_path(dir.path(), &profile)).unwrap();
        let err = ensure_token_file(dir.path(), &profile, None).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
