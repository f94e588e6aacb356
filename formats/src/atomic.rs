//! Atomic file replacement.
//!
//! Readers (`aovis-cred`, the daemon, `cat`) open the cache at any moment, and a host
//! can lose power at any moment. So a cache file is never written in place: the new
//! bytes go to a temp file in the same directory (same filesystem, so `rename` is
//! atomic), the temp file gets its final owner, group and mode and is fsynced, then
//! `rename` swaps it in, and the directory is fsynced so the rename itself survives a
//! crash. A reader sees the old file or the new one, never a mix.
//!
//! The temp file is created mode 0600 by `tempfile`, so the secret is never readable
//! by anyone else while it is being written. On any failure before the rename the
//! temp file is removed (by `tempfile`'s drop); a process killed mid-write can leave
//! one behind, which [`remove_stale_temps`] clears on the next write.

use std::fmt;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{fchown, PermissionsExt};
use std::path::Path;

/// Owner, group and mode for the replaced file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    /// Permission bits, for example `0o640`.
    pub mode: u32,
    /// Owner uid; `None` keeps the writer's.
    pub uid: Option<u32>,
    /// Group gid; `None` keeps the writer's.
    pub gid: Option<u32>,
}

/// The step of an atomic write that failed. The target is untouched for every step
/// but [`Stage::SyncDirectory`], where the new file is in place but may not survive a
/// crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Creating the temp file next to the target.
    CreateTemp,
    /// Writing the bytes.
    Write,
    /// Setting owner and group.
    SetOwner,
    /// Setting the mode.
    SetMode,
    /// fsync of the temp file.
    SyncFile,
    /// Renaming the temp file over the target.
    Rename,
    /// fsync of the directory after the rename.
    SyncDirectory,
}

/// An atomic write failed at `stage`.
#[derive(Debug)]
pub struct AtomicWriteError {
    /// Where it failed.
    pub stage: Stage,
    source: io::Error,
}

impl AtomicWriteError {
    /// The underlying OS error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl fmt::Display for AtomicWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.stage {
            Stage::CreateTemp => "cannot create a temp file in the target's directory",
            Stage::Write => "cannot write the temp file",
            Stage::SetOwner => "cannot set the temp file's owner and group",
            Stage::SetMode => "cannot set the temp file's mode",
            Stage::SyncFile => "cannot fsync the temp file",
            Stage::Rename => "cannot rename the temp file over the target",
            Stage::SyncDirectory => "replaced the file but cannot fsync its directory",
        })
    }
}

impl std::error::Error for AtomicWriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn at(stage: Stage) -> impl FnOnce(io::Error) -> AtomicWriteError {
    move |source| AtomicWriteError { stage, source }
}

/// The prefix and suffix of temp files for `file_name`: `.<file_name>.XXXXXXXX.tmp`.
fn temp_affixes(file_name: &str) -> (String, &'static str) {
    (format!(".{file_name}."), ".tmp")
}

/// Replaces `path` with `contents` atomically, with the owner, group and mode of
/// `spec` set before the rename.
pub fn write_atomic(path: &Path, contents: &[u8], spec: &FileSpec) -> Result<(), AtomicWriteError> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "path has no file name");
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(invalid)
        .map_err(at(Stage::CreateTemp))?;
    let (prefix, suffix) = temp_affixes(file_name);

    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(suffix)
        .rand_bytes(8)
        .tempfile_in(directory)
        .map_err(at(Stage::CreateTemp))?;
    temp.write_all(contents).map_err(at(Stage::Write))?;
    let file = temp.as_file();
    // chown before chmod: chown may clear mode bits, and a group change must be in
    // place before the group may read.
    if spec.uid.is_some() || spec.gid.is_some() {
        fchown(file, spec.uid, spec.gid).map_err(at(Stage::SetOwner))?;
    }
    file.set_permissions(Permissions::from_mode(spec.mode))
        .map_err(at(Stage::SetMode))?;
    file.sync_all().map_err(at(Stage::SyncFile))?;
    // On failure `persist` hands the temp file back, and dropping it deletes it.
    temp.persist(path).map_err(|err| AtomicWriteError {
        stage: Stage::Rename,
        source: err.error,
    })?;
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(at(Stage::SyncDirectory))
}

/// Removes temp files that a killed writer of `file_name` left in `directory`.
/// Call it only while holding the lock that serializes writers of that file.
/// Returns how many were removed.
pub fn remove_stale_temps(directory: &Path, file_name: &str) -> io::Result<usize> {
    let (prefix, suffix) = temp_affixes(file_name);
    let mut removed = 0;
    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && name.ends_with(suffix) && name.len() > prefix.len() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn spec(mode: u32) -> FileSpec {
        FileSpec {
            mode,
            uid: None,
            gid: None,
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        write_atomic(&path, b"old", &spec(0o600)).unwrap();
        write_atomic(&path, b"new", &spec(0o640)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(entries(dir.path()), ["p.json"]);
    }

    #[test]
    fn sets_group_before_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let gid = fs::metadata(dir.path()).unwrap().gid();
        let spec = FileSpec {
            mode: 0o640,
            uid: None,
            gid: Some(gid),
        };
        write_atomic(&path, b"x", &spec).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().gid(), gid);
    }

    #[test]
    fn failed_rename_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: rename(2) over it fails.
        let path = dir.path().join("p.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"k").unwrap();
        let err = write_atomic(&path, b"new", &spec(0o640)).unwrap_err();
        assert_eq!(err.stage, Stage::Rename);
        assert_eq!(entries(dir.path()), ["p.json"]);
        assert_eq!(fs::read(path.join("keep")).unwrap(), b"k");
    }

    #[test]
    fn missing_directory_fails_at_create() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(&dir.path().join("nope/p.json"), b"x", &spec(0o640)).unwrap_err();
        assert_eq!(err.stage, Stage::CreateTemp);
        assert!(err.to_string().contains("temp file"));
    }

    #[test]
    fn removes_only_its_own_stale_temps() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".p.json.abcdefgh.tmp",
            ".q.json.abcdefgh.tmp",
            "p.json",
            ".p.json.",
        ] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path(), "p.json").unwrap(), 1);
        assert_eq!(
            entries(dir.path()),
            [".p.json.", ".q.json.abcdefgh.tmp", "p.json"]
        );
    }
}
