//! Opening a file the agent reads (a cache, the host key, a container token)
//! without being tricked by whoever could write to its directory.
//!
//! `O_NOFOLLOW`: a symlink in the file's place is refused (`ELOOP`), not followed.
//! `O_NONBLOCK`: a FIFO planted there cannot hang the daemon on open. The checks
//! that follow (regular file, then the caller's owner and mode rules) run on the
//! opened descriptor's metadata, so nothing can swap the file in between.

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;

/// Why a file was not opened.
#[derive(Debug)]
pub enum OpenError {
    /// The path is a symlink.
    Symlink,
    /// The path is a FIFO, a device, a directory or a socket.
    NotRegular,
    /// `open` failed otherwise.
    Open(io::Error),
    /// `fstat` failed.
    Stat(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Symlink => "it is a symlink",
            Self::NotRegular => "it is not a regular file",
            Self::Open(_) => "cannot open it",
            Self::Stat(_) => "cannot stat it",
        })
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Symlink | Self::NotRegular => None,
            Self::Open(source) | Self::Stat(source) => Some(source),
        }
    }
}

/// Opens `path` for reading if it is a regular file (not through a symlink), with
/// its metadata; `Ok(None)` when there is no such file.
pub fn open_regular(path: &Path) -> Result<Option<(File, Metadata)>, OpenError> {
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(nix::libc::ELOOP) => return Err(OpenError::Symlink),
        Err(err) => return Err(OpenError::Open(err)),
    };
    let metadata = file.metadata().map_err(OpenError::Stat)?;
    if !metadata.file_type().is_file() {
        return Err(OpenError::NotRegular);
    }
    Ok(Some((file, metadata)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;

    #[test]
    fn opens_only_regular_files_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("regular");
        fs::write(&regular, "contents").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&regular, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let missing = dir.path().join("missing");

        let (mut file, metadata) = open_regular(&regular).unwrap().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), metadata.len()), ("contents", 8));
        assert!(open_regular(&missing).unwrap().is_none());

        let cases = [
            ("symlink to a regular file", &link, "it is a symlink"),
            ("dangling symlink", &dangling, "it is a symlink"),
            ("FIFO (must not block)", &fifo, "it is not a regular file"),
            (
                "directory",
                &dir.path().to_path_buf(),
                "it is not a regular file",
            ),
        ];
        for (name, path, expected) in cases {
            let err = open_regular(path).unwrap_err();
            assert_eq!(err.to_string(), expected, "{name}");
        }
    }
}
