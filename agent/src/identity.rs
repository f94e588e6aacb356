//! The host identity: an age X25519 key pair at `$AOVIS_CONFIG_DIR/host.key`.
//!
//! The file has the text format `age-keygen` writes, so `age-keygen -y host.key`
//! prints the same recipient and `age -d -i host.key` opens a delivery by hand:
//!
//! ```text
//! # created: 2026-11-22T12:00:00Z
//! # public key: age1...
//! AGE-SECRET-KEY-1...
//! ```
//!
//! It is created mode 0600, owned by the user that ran `enroll` (root on a real
//! host). The config directory is created 0755 when missing: it holds no secret
//! but this file, and `agent.toml` must stay readable by the daemon's user.
//!
//! Creating the key is atomic and never replaces an existing one: the new key is
//! written to a temp file (mode 0600 from the start), fsynced, then hard-linked to
//! `host.key` (`link(2)` fails if the name exists) and the directory fsynced. A crash
//! leaves either no key or a whole key, and two `enroll` runs racing each other
//! both end up printing the one key that won.
//!
//! Loading refuses a key file that is a symlink, not a regular file, owned by
//! another user, or readable or writable by group or others: whoever can read the
//! key can open every delivery, and whoever can write it can make this host accept
//! envelopes sealed by anyone.

use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use crate::open::{open_regular, OpenError};

/// A key file is about 200 bytes; anything much larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The host's age identity and its recipient string.
pub struct HostIdentity {
    identity: age::x25519::Identity,
    recipient: String,
}

impl HostIdentity {
    /// The identity, to open deliveries.
    pub fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }

    /// The recipient (`age1...`) the rotator seals to.
    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    fn new(identity: age::x25519::Identity) -> Self {
        let recipient = identity.to_public().to_string();
        Self {
            identity,
            recipient,
        }
    }
}

/// Debug never shows the secret key.
impl fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostIdentity")
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}

/// Why the host key could not be loaded or created. No variant holds key material.
#[derive(Debug)]
pub enum IdentityError {
    /// There is no key file.
    NotEnrolled {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is a symbolic link.
    Symlink {
        /// The key file.
        path: PathBuf,
    },
    /// The key path is not a regular file.
    NotRegular {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is readable or writable by group or others.
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file belongs to another user.
    Owner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// The key file does not hold exactly one age X25519 secret key.
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without quoting the file.
        problem: &'static str,
    },
    /// Reading the key file failed.
    Read {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating the config directory failed.
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing a new key failed; no key file was left behind.
    Create {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotEnrolled { path } => write!(
                f,
                "this host has no key at {}; run `aovis-agent enroll` first",
                path.display()
            ),
            Self::Symlink { path } => write!(
                f,
                "host key {} is a symbolic link; replace it with the key file itself",
                path.display()
            ),
            Self::NotRegular { path } => {
                write!(f, "host key {} is not a regular file", path.display())
            }
            Self::Permissions { path, mode } => write!(
                f,
                "host key {} is accessible by group or others (mode {mode:04o}); \
                 run `chmod 600 {}`, and consider re-enrolling since others could read it",
                path.display(),
                path.display()
            ),
            Self::Owner { path, uid } => write!(
                f,
                "host key {} is owned by uid {uid}, not by this user; \
                 run `chown root: {}` or re-enroll",
                path.display(),
                path.display()
            ),
            Self::Malformed { path, problem } => {
                write!(f, "host key {} {problem}", path.display())
            }
            Self::Read { path, .. } => write!(f, "cannot read host key {}", path.display()),
            Self::CreateDirectory { path, .. } => {
                write!(f, "cannot create config directory {}", path.display())
            }
            Self::Create { path, .. } => {
                write!(f, "cannot create host key {}", path.display())
            }
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. }
            | Self::CreateDirectory { source, .. }
            | Self::Create { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Loads the host key at `path`, refusing an unsafe file. `owner_uid` is the user
/// the file must belong to (the caller's effective uid).
pub fn load(path: &Path, owner_uid: u32) -> Result<HostIdentity, IdentityError> {
    let read_error = |source: io::Error| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (file, metadata) = match open_regular(path) {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            return Err(IdentityError::NotEnrolled {
                path: path.to_path_buf(),
            })
        }
        Err(OpenError::Symlink) => {
            return Err(IdentityError::Symlink {
                path: path.to_path_buf(),
            })
        }
        Err(OpenError::NotRegular) => {
            return Err(IdentityError::NotRegular {
                path: path.to_path_buf(),
            })
        }
        Err(OpenError::Open(err) | OpenError::Stat(err)) => return Err(read_error(err)),
    };
    if metadata.uid() != owner_uid {
        return Err(IdentityError::Owner {
            path: path.to_path_buf(),
            uid: metadata.uid(),
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_BYTES as usize + 1));
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(read_error)?;
    let malformed = |problem| IdentityError::Malformed {
        path: path.to_path_buf(),
        problem,
    };
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(malformed("is too large to be an age key file"));
    }
    parse_key_file(&text)
        .map(HostIdentity::new)
        .map_err(malformed)
}

/// Finds the one `AGE-SECRET-KEY-1...` line among comments and blank lines.
fn parse_key_file(text: &[u8]) -> Result<age::x25519::Identity, &'static str> {
    let text = std::str::from_utf8(text).map_err(|_| "is not UTF-8 text")?;
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    let (Some(line), None) = (keys.next(), keys.next()) else {
        return Err("must hold exactly one age secret key line");
    };
    age::x25519::Identity::from_str(line).map_err(|_| "does not hold a valid age X25519 secret key")
}

/// The key file's text, as `age-keygen` writes it.
fn key_file_text(identity: &age::x25519::Identity, now: DateTime<Utc>) -> Zeroizing<String> {
    let secret = identity.to_string();
    Zeroizing::new(format!(
        "# created: {}\n# public key: {}\n{}\n",
        aovis_formats::time::format_expiration(now),
        identity.to_public(),
        secret.expose_secret()
    ))
}

/// Loads the host key, creating it first when there is none. Returns the identity
/// and whether this call created it.
pub fn load_or_create(
    path: &Path,
    owner_uid: u32,
    now: DateTime<Utc>,
) -> Result<(HostIdentity, bool), IdentityError> {
    match load(path, owner_uid) {
        Err(IdentityError::NotEnrolled { .. }) => {}
        other => return other.map(|identity| (identity, false)),
    }
    let create_error = |source: io::Error| IdentityError::Create {
        path: path.to_path_buf(),
        source,
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    create_directory(directory)?;
    let identity = age::x25519::Identity::generate();
    let text = key_file_text(&identity, now);
    // tempfile creates the file 0600, so the key is never readable by others.
    let mut temp = tempfile::Builder::new()
        .prefix(".host.key.")
        .suffix(".tmp")
        .tempfile_in(directory)
        .map_err(create_error)?;
    temp.write_all(text.as_bytes()).map_err(create_error)?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(create_error)?;
    temp.as_file().sync_all().map_err(create_error)?;
    match temp.persist_noclobber(path) {
        Ok(_) => {}
        // Another enroll won the race: use its key, so both print the same recipient.
        Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => {
            return load(path, owner_uid).map(|identity| (identity, false));
        }
        Err(err) => return Err(create_error(err.error)),
    }
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(create_error)?;
    Ok((HostIdentity::new(identity), true))
}

fn create_directory(directory: &Path) -> Result<(), IdentityError> {
    if directory.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(directory)
        .map_err(|source| IdentityError::CreateDirectory {
            path: directory.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_348_800, 0).unwrap()
    }

    #[test]
    fn creates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/aovis/host.key");
        let (first, created) = load_or_create(&path, uid(), now()).unwrap();
        assert!(created);
        let (second, created) = load_or_create(&path, uid(), now()).unwrap();
        assert!(!created);
        assert_eq!(first.recipient(), second.recipient());
        assert!(first.recipient().starts_with("age1"));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "# created: 2026-11-22T12:00:00Z");
        assert_eq!(lines[1], format!("# public key: {}", first.recipient()));
        assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
        assert_eq!(lines.len(), 3);
        // No temp file is left next to the key.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["host.key"]);
    }

    #[test]
    fn debug_shows_only_the_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.key");
        let (identity, _) = load_or_create(&path, uid(), now()).unwrap();
        let debug = format!("{identity:?}");
        assert!(debug.contains(identity.recipient()));
        assert!(!debug.contains("AGE-SECRET-KEY"), "{debug}");
    }

    #[test]
    fn refuses_each_unsafe_or_malformed_key_file() {
        let key = age::x25519::Identity::generate();
        let good = key_file_text(&key, now());
        let cases: [(&str, &str, u32, &str); 7] = [
            ("group readable", good.as_str(), 0o640, "mode 0640"),
            ("other readable", good.as_str(), 0o604, "mode 0604"),
            ("group writable", good.as_str(), 0o620, "mode 0620"),
            ("empty", "", 0o600, "exactly one age secret key line"),
            (
                "comments only",
                "# public key: age1x\n",
                0o600,
                "exactly one",
            ),
            (
                "two keys",
                &format!("{}{}", good.as_str(), good.as_str()),
                0o600,
                "exactly one",
            ),
            (
                "not a key",
                "AGE-SECRET-KEY-1NOTAKEY\n",
                0o600,
                "not hold a valid age X25519 secret key",
            ),
        ];
        for (name, text, mode, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("host.key");
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = load(&path, uid()).unwrap_err().to_string();
            assert!(err.contains(expected), "{name}: {err}");
            assert!(!err.contains("AGE-SECRET-KEY-1Q"), "{name} leaked: {err}");
            // enroll never replaces a file it refuses.
            assert!(load_or_create(&path, uid(), now()).is_err(), "{name}");
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "{name}");
        }
    }

    #[test]
    fn refuses_a_symlink_a_directory_and_another_owner() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        fs::write(
            &real,
            key_file_text(&age::x25519::Identity::generate(), now()),
        )
        .unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("host.key");
        symlink(&real, &link).unwrap();
        let err = load(&link, uid()).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");

        let err = load(dir.path(), uid()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");

        let err = load(&real, uid() + 1).unwrap_err().to_string();
        assert!(err.contains("owned by uid"), "{err}");
    }

    #[test]
    fn reads_keys_written_with_crlf_and_blank_lines() {
        let key = age::x25519::Identity::generate();
        let text = format!(
            "\r\n# created: x\r\n\r\n{}\r\n",
            key.to_string().expose_secret()
        );
        let parsed = parse_key_file(text.as_bytes()).unwrap();
        assert_eq!(parsed.to_public().to_string(), key.to_public().to_string());
    }
}
