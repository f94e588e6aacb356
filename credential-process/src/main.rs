//! `aovis-cred`: the `credential_process` helper.
//!
//! An AWS SDK configured with
//!
//! ```ini
//! [profile build]
//! credential_process = aovis-cred --profile build
//! ```
//!
//! runs this binary whenever it needs credentials. It reads
//! `$AOVIS_STATE_DIR/profiles/<profile>.json` (default state dir `/var/lib/aovis`),
//! checks that the file is safe to trust and that its credentials have more than
//! 60 seconds left, and prints exactly the documented `credential_process` JSON:
//! `Version`, `AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`.
//!
//! On failure stdout stays empty and stderr gets one line beginning `aovis-cred:`
//! that names the profile, what is wrong and what to do; the exit code tells which
//! failure it was (see `--help`). It never reads stdin, never opens a socket and
//! never writes a secret anywhere but stdout.
//!
//! Layout: [`args`] parses the command line, [`read`] opens the cache without
//! following links and checks ownership and modes, [`error`] holds every failure with
//! its message and exit code, and [`run`] ties them together with the time passed in.

mod args;
mod error;
mod read;

use std::io::Write;
use std::process::ExitCode;

use aovis_formats::paths::Paths;
use aovis_formats::{cache, ProfileName};
use chrono::{DateTime, TimeDelta, Utc};
use zeroize::Zeroizing;

use crate::args::Command;
use crate::error::CredError;

/// Credentials with this little time left are refused: an SDK would use them for a
/// request that may outlive them.
const MINIMUM_REMAINING: TimeDelta = TimeDelta::seconds(60);

fn main() -> ExitCode {
    let paths = Paths::from_env();
    let caller = nix::unistd::geteuid().as_raw();
    let outcome = match args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => Ok(Zeroizing::new(args::HELP.as_bytes().to_vec())),
        Ok(Command::Version) => Ok(Zeroizing::new(
            format!("aovis-cred {}\n", env!("CARGO_PKG_VERSION")).into_bytes(),
        )),
        Ok(Command::Print { profile }) => run(
            &paths,
            &profile,
            caller,
            DateTime::<Utc>::from(std::time::SystemTime::now()),
        ),
        Err(err) => Err(err),
    };
    match outcome.and_then(|output| write_stdout(&output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aovis-cred: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Reads, validates and renders one profile's credentials as of `now`.
fn run(
    paths: &Paths,
    profile: &str,
    caller_uid: u32,
    now: DateTime<Utc>,
) -> Result<Zeroizing<Vec<u8>>, CredError> {
    let profile = ProfileName::new(profile).map_err(|reason| CredError::InvalidProfile {
        name: profile.to_owned(),
        reason,
    })?;
    let path = paths.cache_file(&profile);
    let bytes = read::read_cache(&paths.profiles_dir(), &profile, caller_uid)
        .map_err(|failure| CredError::from_read(&profile, &path, failure))?;
    let cache = cache::parse(&bytes).map_err(|error| CredError::Malformed {
        profile: profile.clone(),
        path: path.clone(),
        error,
    })?;
    let expiration = cache.credentials.expiration();
    if expiration <= now {
        return Err(CredError::Expired {
            profile,
            expired_at: expiration,
            ago: now - expiration,
        });
    }
    if expiration - now < MINIMUM_REMAINING {
        return Err(CredError::ExpiringSoon {
            profile,
            expires_at: expiration,
            left: expiration - now,
        });
    }
    Ok(cache::process_output(&cache.credentials))
}

fn write_stdout(bytes: &[u8]) -> Result<(), CredError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(CredError::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const CACHE: &str = r#"{"Version":1,"AccessKeyId":"ASIAUNIT","SecretAccessKey":"sekrit","SessionToken":"tok","Expiration":"2026-11-22T13:00:00Z"}"#;

    fn host(contents: &str) -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles");
        fs::create_dir(&profiles).unwrap();
        fs::set_permissions(&profiles, fs::Permissions::from_mode(0o755)).unwrap();
        let file = profiles.join("default.json");
        fs::write(&file, contents).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let paths = Paths {
            state_dir: dir.path().to_path_buf(),
            config_dir: dir.path().join("etc"),
        };
        (dir, paths)
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, m, s).unwrap()
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn prints_credentials_with_time_to_spare() {
        let (_dir, paths) = host(CACHE);
        let out = run(&paths, "default", me(), at(12, 0, 0)).unwrap();
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains("\"SessionToken\":\"tok\""));
    }

    #[test]
    fn the_60_second_margin_is_exclusive_of_the_boundary() {
        let (_dir, paths) = host(CACHE);
        assert!(run(&paths, "default", me(), at(12, 59, 0)).is_ok());
        let err = run(&paths, "default", me(), at(12, 59, 1)).unwrap_err();
        assert!(matches!(err, CredError::ExpiringSoon { .. }), "{err}");
        assert!(err.to_string().contains("in 59s"), "{err}");
        let err = run(&paths, "default", me(), at(13, 0, 0)).unwrap_err();
        assert!(matches!(err, CredError::Expired { .. }), "{err}");
        let err = run(&paths, "default", me(), at(13, 3, 12)).unwrap_err();
        assert!(err.to_string().contains("3m 12s ago"), "{err}");
    }
}
