//! Opening the cache file without trusting the path.
//!
//! The directory is opened first (`O_NOFOLLOW | O_DIRECTORY`) and the file is opened
//! relative to that descriptor (`openat` with `O_NOFOLLOW`), so nothing can swap a
//! link in between the checks and the read. Ownership and modes are checked with
//! `fstat` on the open descriptors, never on the path. `O_NONBLOCK` keeps a FIFO
//! planted in place of the cache from hanging the SDK; it is refused as not a
//! regular file.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use aovis_formats::ProfileName;
use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use zeroize::Zeroizing;

/// A cache file is a few KiB; anything larger is not one of ours.
pub const MAX_CACHE_BYTES: u64 = 64 * 1024;

/// Why reading failed. The caller turns this into the user's message.
#[derive(Debug)]
pub enum ReadFailure {
    /// The directory or the file does not exist.
    NotFound,
    /// The OS refused access.
    PermissionDenied,
    /// The file or directory must not be trusted.
    Unsafe(Unsafe),
    /// The file is larger than [`MAX_CACHE_BYTES`].
    TooLarge,
    /// Any other OS error.
    Io(std::io::Error),
}

/// What makes a file or its directory unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// The cache file is a symbolic link.
    FileIsSymlink,
    /// The cache path is not a regular file.
    NotRegularFile,
    /// The cache file is writable by group or others.
    FileWritable {
        /// Its permission bits.
        mode: u32,
    },
    /// The cache file is owned by someone other than root or the caller.
    FileOwner {
        /// Its owner.
        uid: u32,
    },
    /// The profiles directory is a symbolic link or not a directory.
    DirectoryIsSymlink,
    /// The profiles directory is writable by group or others.
    DirectoryWritable {
        /// Its permission bits.
        mode: u32,
    },
    /// The profiles directory is owned by someone other than root or the caller.
    DirectoryOwner {
        /// Its owner.
        uid: u32,
    },
}

fn classify(errno: Errno, symlink: Unsafe) -> ReadFailure {
    match errno {
        Errno::ENOENT => ReadFailure::NotFound,
        Errno::EACCES | Errno::EPERM => ReadFailure::PermissionDenied,
        // O_NOFOLLOW on a link answers ELOOP; O_DIRECTORY on a non-directory ENOTDIR.
        Errno::ELOOP | Errno::ENOTDIR => ReadFailure::Unsafe(symlink),
        other => ReadFailure::Io(std::io::Error::from(other)),
    }
}

/// Checks owner and the group/other write bits of an open descriptor.
fn check_owner_and_mode(
    fd: impl AsFd,
    caller_uid: u32,
    writable: fn(u32) -> Unsafe,
    owner: fn(u32) -> Unsafe,
) -> Result<SFlag, ReadFailure> {
    let stat = fstat(fd).map_err(|errno| ReadFailure::Io(errno.into()))?;
    let mode = stat.st_mode & 0o7777;
    if stat.st_uid != 0 && stat.st_uid != caller_uid {
        return Err(ReadFailure::Unsafe(owner(stat.st_uid)));
    }
    if mode & 0o022 != 0 {
        return Err(ReadFailure::Unsafe(writable(mode)));
    }
    Ok(SFlag::from_bits_truncate(
        stat.st_mode & SFlag::S_IFMT.bits(),
    ))
}

/// Reads `<profiles_dir>/<profile>.json` after checking it and its directory.
pub fn read_cache(
    profiles_dir: &Path,
    profile: &ProfileName,
    caller_uid: u32,
) -> Result<Zeroizing<Vec<u8>>, ReadFailure> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir: OwnedFd = open(profiles_dir, flags | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|errno| classify(errno, Unsafe::DirectoryIsSymlink))?;
    check_owner_and_mode(
        &dir,
        caller_uid,
        |mode| Unsafe::DirectoryWritable { mode },
        |uid| Unsafe::DirectoryOwner { uid },
    )?;

    let file: OwnedFd = openat(
        &dir,
        profile.file_name().as_str(),
        flags | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|errno| classify(errno, Unsafe::FileIsSymlink))?;
    let kind = check_owner_and_mode(
        &file,
        caller_uid,
        |mode| Unsafe::FileWritable { mode },
        |uid| Unsafe::FileOwner { uid },
    )?;
    if kind != SFlag::S_IFREG {
        return Err(ReadFailure::Unsafe(Unsafe::NotRegularFile));
    }

    let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
    File::from(file)
        .take(MAX_CACHE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Io)?;
    if bytes.len() as u64 > MAX_CACHE_BYTES {
        return Err(ReadFailure::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn setup() -> (tempfile::TempDir, std::path::PathBuf, ProfileName) {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles");
        fs::create_dir(&profiles).unwrap();
        fs::set_permissions(&profiles, fs::Permissions::from_mode(0o755)).unwrap();
        (dir, profiles, ProfileName::new("p").unwrap())
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn reads_a_safe_file() {
        let (_dir, profiles, profile) = setup();
        fs::write(profiles.join("p.json"), b"{}").unwrap();
        fs::set_permissions(profiles.join("p.json"), fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read_cache(&profiles, &profile, me()).unwrap().as_slice(),
            b"{}"
        );
    }

    #[test]
    fn refuses_links_fifos_and_writable_modes() {
        let (dir, profiles, profile) = setup();
        let target = dir.path().join("elsewhere.json");
        fs::write(&target, b"{}").unwrap();
        symlink(&target, profiles.join("p.json")).unwrap();
        assert!(matches!(
            read_cache(&profiles, &profile, me()),
            Err(ReadFailure::Unsafe(Unsafe::FileIsSymlink))
        ));

        fs::remove_file(profiles.join("p.json")).unwrap();
        nix::unistd::mkfifo(&profiles.join("p.json"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            read_cache(&profiles, &profile, me()),
            Err(ReadFailure::Unsafe(Unsafe::NotRegularFile))
        ));

        fs::remove_file(profiles.join("p.json")).unwrap();
        fs::write(profiles.join("p.json"), b"{}").unwrap();
        fs::set_permissions(profiles.join("p.json"), fs::Permissions::from_mode(0o660)).unwrap();
        assert!(matches!(
            read_cache(&profiles, &profile, me()),
            Err(ReadFailure::Unsafe(Unsafe::FileWritable { mode: 0o660 }))
        ));

        fs::set_permissions(profiles.join("p.json"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&profiles, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            read_cache(&profiles, &profile, me()),
            Err(ReadFailure::Unsafe(Unsafe::DirectoryWritable {
                mode: 0o777
            }))
        ));
    }

    #[test]
    fn missing_directory_or_file_is_not_found() {
        let (dir, profiles, profile) = setup();
        assert!(matches!(
            read_cache(&profiles, &profile, me()),
            Err(ReadFailure::NotFound)
        ));
        assert!(matches!(
            read_cache(&dir.path().join("none"), &profile, me()),
            Err(ReadFailure::NotFound)
        ));
    }

    #[test]
    fn refuses_oversized_files() {
        let (_dir, profiles, profile) = setup();
        fs::write(profiles.join("p.json"), vec![b' '; 64 * 1024 + 1]).unwrap();
        fs::set_permissions(profiles.join("p.json"), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_cache(&profiles, &profile, me()),
            Err(ReadFailure::TooLarge)
        ));
    }
}
