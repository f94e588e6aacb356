//! The profile caches under `$STATE/profiles/`, from the writer's side.
//!
//! - The directory (and `$STATE` above it) is created mode 0755 when missing, owned
//!   by root when `receive` runs as root, as it does under SSM Agent: everyone may
//!   look up a cache, and each cache's own mode decides who may read it.
//! - Writers of one profile take an exclusive `flock` on `$STATE/profiles/.<P>.lock`
//!   before reading the cached serial and hold it until the new file is renamed in,
//!   so of two concurrent deliveries the higher serial always stays. A profile
//!   name never starts with `.`, so the lock file cannot collide with a cache.
//! - Readers take no lock: the cache is replaced by rename, so they see the old
//!   file or the new one.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aovis_formats::{cache, ProfileName};
use nix::fcntl::{Flock, FlockArg, OFlag};
use zeroize::Zeroizing;

use crate::open::{open_regular, OpenError};

/// A cache file is a few KiB; a larger file is not one of ours.
const MAX_CACHE_BYTES: u64 = 64 * 1024;

/// What the cache of a profile holds, as far as a writer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// No cache file.
    Missing,
    /// A cache file that is not a cache (malformed, not a regular file, a link).
    /// A new delivery replaces it: refusing would leave the host without
    /// credentials until someone repairs it by hand.
    Unusable,
    /// A valid cache with this serial (0 for a file without the `Aovis` object).
    Serial(u64),
}

impl Cached {
    /// The serial a new delivery must exceed.
    pub fn serial(self) -> u64 {
        match self {
            Self::Serial(serial) => serial,
            Self::Missing | Self::Unusable => 0,
        }
    }
}

/// Why a cache operation failed.
#[derive(Debug)]
pub struct StoreError {
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} {}", self.what, self.path.display())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn failed<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its parent) mode 0755 when missing. The mode is set
/// explicitly because the umask of whoever runs `receive` must not decide it.
pub fn ensure_directory(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_directory(parent)?;
    }
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(failed("set the mode of", dir)),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(failed("create directory", dir)(err)),
    }
}

/// An exclusive lock on one profile's writers; released on drop.
#[derive(Debug)]
pub struct ProfileLock {
    _lock: Flock<File>,
}

/// The lock file of `profile`.
pub fn lock_path(profiles_dir: &Path, profile: &ProfileName) -> PathBuf {
    profiles_dir.join(format!(".{profile}.lock"))
}

/// Blocks until this process holds the write lock of `profile`.
pub fn lock_profile(profiles_dir: &Path, profile: &ProfileName) -> Result<ProfileLock, StoreError> {
    let path = lock_path(profiles_dir, profile);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(&path)
        .map_err(failed("open lock file", &path))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| failed("lock", &path)(errno.into()))?;
    Ok(ProfileLock { _lock: lock })
}

/// Reads what the cache at `path` holds. Only I/O errors other than "missing" fail.
pub fn read_cached(path: &Path) -> Result<Cached, StoreError> {
    let file = match open_regular(path) {
        Ok(Some((file, _))) => file,
        Ok(None) => return Ok(Cached::Missing),
        // A symlink in place of the cache (rename replaces the link itself), or
        // something that is not a file: nothing to compare serials with.
        Err(OpenError::Symlink | OpenError::NotRegular) => return Ok(Cached::Unusable),
        Err(OpenError::Open(err) | OpenError::Stat(err)) => {
            return Err(failed("read cache", path)(err))
        }
    };
    let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
    file.take(MAX_CACHE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed("read cache", path))?;
    Ok(match cache::parse(&bytes) {
        Ok(cached) => Cached::Serial(cached.meta.map_or(0, |meta| meta.serial)),
        Err(_) => Cached::Unusable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const VALID: &str = r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"2026-11-22T13:00:00Z","Aovis":{"serial":42,"role_arn":"r","instance_id":"mi-1","issued_at":"2026-11-22T12:00:00Z","received_at":"2026-11-22T12:00:01Z"}}"#;

    #[test]
    fn reads_each_kind_of_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        assert_eq!(read_cached(&path).unwrap(), Cached::Missing);
        let without_meta = r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"2026-11-22T13:00:00Z"}"#;
        let cases = [
            ("valid", VALID, Cached::Serial(42)),
            ("no Aovis object", without_meta, Cached::Serial(0)),
            ("malformed", "{", Cached::Unusable),
            ("empty", "", Cached::Unusable),
        ];
        for (name, text, expected) in cases {
            fs::write(&path, text).unwrap();
            assert_eq!(read_cached(&path).unwrap(), expected, "{name}");
        }
        fs::remove_file(&path).unwrap();
        symlink(dir.path().join("elsewhere"), &path).unwrap();
        assert_eq!(read_cached(&path).unwrap(), Cached::Unusable);
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert_eq!(read_cached(&path).unwrap(), Cached::Unusable);
        assert_eq!(Cached::Unusable.serial(), 0);
    }

    #[test]
    fn creates_nested_directories_0755() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("state/profiles");
        ensure_directory(&profiles).unwrap();
        for path in [dir.path().join("state"), profiles.clone()] {
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
                0o755
            );
        }
        ensure_directory(&profiles).unwrap();
    }

    #[test]
    fn the_lock_excludes_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let profile = ProfileName::new("default").unwrap();
        let held = lock_profile(dir.path(), &profile).unwrap();
        // flock locks belong to the open file description: a second open of the same
        // file in this process conflicts just as another process would.
        let path = lock_path(dir.path(), &profile);
        let second = File::open(&path).unwrap();
        let second = match Flock::lock(second, FlockArg::LockExclusiveNonblock) {
            Ok(_) => panic!("a second exclusive lock was granted"),
            Err((file, errno)) => {
                assert_eq!(errno, nix::errno::Errno::EWOULDBLOCK);
                file
            }
        };
        drop(held);
        assert!(Flock::lock(second, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
