//! `aovis-agent status [--json]`: one row per profile, for people and monitoring.
//!
//! The profiles are every `$STATE/profiles/<P>.json` plus every profile named in
//! `agent.toml` (a configured profile without a cache is `missing`). States:
//!
//! | state | meaning |
//! |---|---|
//! | `ok` | at least half of the credentials' life left |
//! | `stale` | less than half its life left (life = expiration - issued_at): deliveries are not arriving |
//! | `expired` | past its expiration |
//! | `missing` | named in `agent.toml`, no cache yet |
//! | `invalid` | a cache that cannot be read or parsed (`problem` says why) |
//!
//! A cache written without the `Aovis` object has no issue time, so it is `ok`
//! until it expires. The exit code is 0 only when there is at least one profile and
//! every profile is `ok`, so monitoring can run `aovis-agent status` as its check.
//!
//! `--json` prints one object (field names are stable; absent values are `null`):
//!
//! ```json
//! {"checked_at":"2026-11-22T12:30:00Z","profiles":[{"profile":"default","state":"ok",
//!  "role_arn":"arn:aws:iam::111122223333:role/onprem","key_id_suffix":"WXYZ",
//!  "serial":1763814000123,"instance_id":"mi-0123456789abcdef0",
//!  "issued_at":"2026-11-22T12:00:00Z","received_at":"2026-11-22T12:00:01Z",
//!  "expires_at":"2026-11-22T13:00:00Z","expires_in_seconds":1800,"problem":null}]}
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use aovis_formats::cache::{self, CacheFile};
use aovis_formats::paths::Paths;
use aovis_formats::time::{format_expiration, human_duration};
use aovis_formats::ProfileName;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::AgentConfig;
use crate::open::{open_regular, OpenError};

/// The state of one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// At least half its life left.
    Ok,
    /// Less than half its life left.
    Stale,
    /// Past its expiration.
    Expired,
    /// Configured, no cache.
    Missing,
    /// A cache that cannot be read or parsed.
    Invalid,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Stale => "stale",
            Self::Expired => "expired",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
        })
    }
}

/// One profile's row. Holds nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileStatus {
    /// The profile name.
    pub profile: String,
    /// Its state.
    pub state: State,
    /// The role the credentials belong to.
    pub role_arn: Option<String>,
    /// Last four characters of the key id.
    pub key_id_suffix: Option<String>,
    /// The delivery's serial.
    pub serial: Option<u64>,
    /// The instance id the delivery was sealed for.
    pub instance_id: Option<String>,
    /// When the rotator issued it.
    #[serde(serialize_with = "time_or_null")]
    pub issued_at: Option<DateTime<Utc>>,
    /// When this host stored it.
    #[serde(serialize_with = "time_or_null")]
    pub received_at: Option<DateTime<Utc>>,
    /// When the credentials expire.
    #[serde(serialize_with = "time_or_null")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Seconds until expiry (negative once expired).
    pub expires_in_seconds: Option<i64>,
    /// Why the cache is `invalid`.
    pub problem: Option<String>,
}

fn time_or_null<S: serde::Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_str(&format_expiration(*time)),
        None => serializer.serialize_none(),
    }
}

/// The state of credentials expiring at `expiration`, issued at `issued_at`.
pub fn state_of(
    expiration: DateTime<Utc>,
    issued_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> State {
    if expiration <= now {
        return State::Expired;
    }
    match issued_at {
        Some(issued) if (expiration - now) * 2 < expiration - issued => State::Stale,
        _ => State::Ok,
    }
}

fn from_cache(profile: &str, cache: &CacheFile, now: DateTime<Utc>) -> ProfileStatus {
    let expiration = cache.credentials.expiration();
    let meta = cache.meta.as_ref();
    ProfileStatus {
        profile: profile.to_owned(),
        state: state_of(expiration, meta.map(|m| m.issued_at), now),
        role_arn: meta.map(|m| m.role_arn.clone()),
        key_id_suffix: Some(cache.credentials.key_id_suffix().to_owned()),
        serial: meta.map(|m| m.serial),
        instance_id: meta.map(|m| m.instance_id.clone()),
        issued_at: meta.map(|m| m.issued_at),
        received_at: meta.map(|m| m.received_at),
        expires_at: Some(expiration),
        expires_in_seconds: Some((expiration - now).num_seconds()),
        problem: None,
    }
}

fn empty(profile: &str, state: State, problem: Option<String>) -> ProfileStatus {
    ProfileStatus {
        profile: profile.to_owned(),
        state,
        role_arn: None,
        key_id_suffix: None,
        serial: None,
        instance_id: None,
        issued_at: None,
        received_at: None,
        expires_at: None,
        expires_in_seconds: None,
        problem,
    }
}

/// Why the profiles directory could not be listed.
#[derive(Debug)]
pub struct StatusError {
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot list {}", self.path.display())
    }
}

impl std::error::Error for StatusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Reads a cache file without following a link, refusing anything over 64 KiB.
pub fn read_cache(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let file = match open_regular(path) {
        Ok(Some((file, _))) => file,
        Ok(None) => return Err(io::ErrorKind::NotFound.into()),
        // The errors the open itself gives, so the message stays the OS's.
        Err(OpenError::Symlink) => return Err(io::Error::from_raw_os_error(nix::libc::ELOOP)),
        Err(OpenError::NotRegular) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ))
        }
        Err(OpenError::Open(err) | OpenError::Stat(err)) => return Err(err),
    };
    let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
    file.take(64 * 1024 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > 64 * 1024 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "larger than 64 KiB",
        ));
    }
    Ok(bytes)
}

/// The status of one profile as of `now`.
pub fn profile_status(paths: &Paths, profile: &ProfileName, now: DateTime<Utc>) -> ProfileStatus {
    let name = profile.as_str();
    match read_cache(&paths.cache_file(profile)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => empty(name, State::Missing, None),
        Err(err) => empty(
            name,
            State::Invalid,
            Some(format!("cannot read the cache: {err}")),
        ),
        Ok(bytes) => match cache::parse(&bytes) {
            Ok(cache) => from_cache(name, &cache, now),
            Err(err) => empty(
                name,
                State::Invalid,
                Some(format!("malformed cache: {err}")),
            ),
        },
    }
}

/// Every cached or configured profile, sorted by name.
pub fn collect(
    paths: &Paths,
    config: &AgentConfig,
    now: DateTime<Utc>,
) -> Result<Vec<ProfileStatus>, StatusError> {
    let mut names: BTreeSet<ProfileName> = config.profiles.keys().cloned().collect();
    let dir = paths.profiles_dir();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|source| StatusError {
                    path: dir.clone(),
                    source,
                })?;
                let file_name = entry.file_name();
                let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                // Temp and lock files start with '.', which no profile name does.
                if let Ok(profile) = ProfileName::new(stem) {
                    names.insert(profile);
                }
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(StatusError { path: dir, source }),
    }
    Ok(names
        .iter()
        .map(|profile| profile_status(paths, profile, now))
        .collect())
}

/// True when there is at least one profile and all are `ok`.
pub fn all_ok(rows: &[ProfileStatus]) -> bool {
    !rows.is_empty() && rows.iter().all(|row| row.state == State::Ok)
}

/// The `--json` document.
pub fn to_json(rows: &[ProfileStatus], now: DateTime<Utc>) -> String {
    #[derive(Serialize)]
    struct Document<'a> {
        checked_at: String,
        profiles: &'a [ProfileStatus],
    }
    let document = Document {
        checked_at: format_expiration(now),
        profiles: rows,
    };
    serde_json::to_string(&document).unwrap_or_default()
}

/// The human table: one aligned row per profile.
pub fn to_table(rows: &[ProfileStatus]) -> String {
    if rows.is_empty() {
        return "no profiles: nothing cached and none named in agent.toml\n".to_owned();
    }
    let dash = || "-".to_owned();
    let mut table = vec![[
        "PROFILE", "STATE", "ROLE", "KEY", "SERIAL", "RECEIVED", "EXPIRES", "IN",
    ]
    .map(str::to_owned)];
    for row in rows {
        let expires_in = row.expires_in_seconds.map_or_else(dash, |secs| {
            let span = human_duration(TimeDelta::seconds(secs));
            if secs < 0 {
                format!("{span} ago")
            } else {
                span
            }
        });
        table.push([
            row.profile.clone(),
            row.state.to_string(),
            row.role_arn.clone().unwrap_or_else(dash),
            row.key_id_suffix
                .as_ref()
                .map_or_else(dash, |suffix| format!("...{suffix}")),
            row.serial.map_or_else(dash, |serial| serial.to_string()),
            row.received_at.map_or_else(dash, format_expiration),
            row.expires_at.map_or_else(dash, format_expiration),
            row.problem.clone().map_or(expires_in, |problem| problem),
        ]);
    }
    let mut widths = [0usize; 8];
    for line in &table {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_348_800 + secs, 0).unwrap()
    }

    #[test]
    fn states_follow_half_life_and_expiry() {
        // Issued at 0, expiring at 3600.
        let cases = [
            ("fresh", 0, State::Ok),
            ("exactly half left", 1800, State::Ok),
            ("less than half left", 1801, State::Stale),
            ("one second left", 3599, State::Stale),
            ("at expiry", 3600, State::Expired),
            ("after expiry", 4000, State::Expired),
        ];
        for (name, now, expected) in cases {
            assert_eq!(state_of(at(3600), Some(at(0)), at(now)), expected, "{name}");
        }
        assert_eq!(state_of(at(3600), None, at(3599)), State::Ok);
    }

    fn paths(dir: &Path) -> Paths {
        Paths {
            state_dir: dir.join("state"),
            config_dir: dir.join("config"),
        }
    }

    #[test]
    fn lists_cached_and_configured_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let profiles = paths.profiles_dir();
        fs::create_dir_all(&profiles).unwrap();
        let cache = r#"{"Version":1,"AccessKeyId":"ASIAXXXXWXYZ","SecretAccessKey":"unit-secret","SessionToken":"T","Expiration":"2026-11-22T13:00:00Z","Aovis":{"serial":7,"role_arn":"arn:aws:iam::1:role/r","instance_id":"mi-1","issued_at":"2026-11-22T12:00:00Z","received_at":"2026-11-22T12:00:01Z"}}"#;
        fs::write(profiles.join("default.json"), cache).unwrap();
        fs::write(profiles.join("broken.json"), "{").unwrap();
        fs::write(profiles.join(".default.lock"), "").unwrap();
        fs::write(profiles.join(".default.json.abcdefgh.tmp"), "").unwrap();
        fs::write(profiles.join("notes.txt"), "").unwrap();
        symlink("/nonexistent", profiles.join("linked.json")).unwrap();
        let config = crate::config::parse("[profiles.build]\n").unwrap();
        let rows = collect(&paths, &config, at(600)).unwrap();
        let summary: Vec<_> = rows.iter().map(|r| (r.profile.as_str(), r.state)).collect();
        assert_eq!(
            summary,
            [
                ("broken", State::Invalid),
                ("build", State::Missing),
                ("default", State::Ok),
                ("linked", State::Invalid),
            ]
        );
        assert!(!all_ok(&rows));
        let ok = &rows[2];
        assert_eq!(ok.expires_in_seconds, Some(3000));
        assert_eq!(ok.key_id_suffix.as_deref(), Some("WXYZ"));
        let table = to_table(&rows);
        assert!(!table.contains("unit-secret"));
        assert!(
            table.contains("default  ok       arn:aws:iam::1:role/r"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&to_json(&rows, at(600))).unwrap();
        assert_eq!(json["profiles"][2]["expires_at"], "2026-11-22T13:00:00Z");
        assert_eq!(json["profiles"][1]["state"], "missing");
        assert!(json["profiles"][1]["serial"].is_null());
        assert!(all_ok(&rows[2..3]));
        assert!(!all_ok(&[]));
    }
}
