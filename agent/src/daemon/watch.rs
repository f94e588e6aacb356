//! Noticing deliveries without polling: inotify on `$STATE/profiles`.
//!
//! `aovis-agent receive` replaces a cache by renaming a temp file over it, which
//! shows as `IN_MOVED_TO`; `IN_CLOSE_WRITE` catches a file written in place (by
//! hand, in an emergency), `IN_DELETE`/`IN_MOVED_FROM` a removal. Only names of the
//! form `<profile>.json` matter; the temp files (`.<name>.XXXXXXXX.tmp`) are not
//! valid profile names and are skipped. A queue overflow, or the directory itself
//! moving, asks for a full rescan. Transitions that happen without any file event
//! (stale, expired) are the job of the timer in the main loop.

use std::io;
use std::path::Path;

use aovis_formats::ProfileName;
use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};

/// What changed in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// This profile's cache file changed.
    Profile(ProfileName),
    /// Events were lost or the directory itself changed: reread everything.
    Everything,
}

/// An inotify watch on one directory, read through tokio (the crate's stream).
pub struct DirWatch {
    events: EventStream<Vec<u8>>,
}

impl DirWatch {
    /// Starts watching `dir`.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        inotify.watches().add(
            dir,
            WatchMask::MOVED_TO
                | WatchMask::CLOSE_WRITE
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF
                | WatchMask::ONLYDIR,
        )?;
        Ok(Self {
            events: inotify.into_event_stream(vec![0; 16 * 1024])?,
        })
    }

    /// Waits for the next change that matters. Cancel-safe (a stream's `next`).
    pub async fn changed(&mut self) -> io::Result<Changes> {
        loop {
            let event = match self.events.next().await {
                Some(event) => event?,
                None => return Err(io::Error::other("the inotify stream ended")),
            };
            if event
                .mask
                .intersects(EventMask::Q_OVERFLOW | EventMask::DELETE_SELF | EventMask::MOVE_SELF)
            {
                return Ok(Changes::Everything);
            }
            if let Some(profile) = event
                .name
                .as_deref()
                .and_then(|name| profile_of(name.to_str()?))
            {
                return Ok(Changes::Profile(profile));
            }
        }
    }
}

/// `default.json` -> `default`; anything else (temp files, other files) -> `None`.
pub fn profile_of(file_name: &str) -> Option<ProfileName> {
    ProfileName::new(file_name.strip_suffix(".json")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aovis_formats::atomic::{write_atomic, FileSpec};
    use std::time::Duration;

    #[test]
    fn only_cache_file_names_are_profiles() {
        let cases = [
            ("cache", "default.json", Some("default")),
            ("dotted name", "team.build.json", Some("team.build")),
            ("temp file", ".default.json.a1b2c3d4.tmp", None),
            ("lock file", "default.json.lock", None),
            ("no suffix", "default", None),
            ("only suffix", ".json", None),
        ];
        for (name, file, expected) in cases {
            assert_eq!(
                profile_of(file).as_ref().map(ProfileName::as_str),
                expected,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn notices_an_atomic_replace_and_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = DirWatch::new(dir.path()).unwrap();
        let path = dir.path().join("build.json");
        let spec = FileSpec {
            mode: 0o640,
            uid: None,
            gid: None,
        };
        write_atomic(&path, b"{}", &spec).unwrap();
        let expected = Changes::Profile(ProfileName::new("build").unwrap());
        let changes = tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changes, expected);
        std::fs::remove_file(&path).unwrap();
        let changes = tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changes, expected);
    }
}
