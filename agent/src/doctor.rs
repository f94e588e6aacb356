//! `aovis-agent doctor [--profile P] [--verify]`: the checks the move from IAM user
//! keys to aovis needs, each printed as
//!
//! ```text
//! pass  <check>: <what>
//! warn  <check>: <what>; <fix>
//! fail  <check>: <what>; <fix>
//! ```
//!
//! | check | fails when |
//! |---|---|
//! | `environment` | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` or `AWS_SESSION_TOKEN` is set: SDKs use them before `credential_process` (warns when `AWS_PROFILE` names another profile) |
//! | `credentials file` | the credentials file has keys for P (they win over `credential_process`); warns for long-term `AKIA` keys of other profiles |
//! | `config keys` | P's config section holds `aws_access_key_id` |
//! | `credential_process` | P's config section does not run `aovis-cred --profile P` |
//! | `host key` | no host key, or one that is not 0600 and owned by this user |
//! | `cache permissions` | the cache is a link, not owned by root (or this user), or writable by group or others (warns when anyone may read it) |
//! | `clock` | the host clock was more than 60 s behind the rotator's when the last delivery arrived (received_at < issued_at - 60 s); more than 60 s ahead only warns, since a slow delivery looks the same |
//! | `freshness` | the cache is missing, invalid or expired (warns when stale) |
//! | `verify` (`--verify`) | `sts:GetCallerIdentity` with the cached credentials fails or names anything but a session of the cached role |
//!
//! The exit code is 1 when any check fails. Values of keys are never printed; a
//! long-term key id is shown as its first four and last four characters.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use aovis_formats::cache;
use aovis_formats::paths::Paths;
use aovis_formats::time::{format_expiration, human_duration};
use aovis_formats::ProfileName;
use chrono::{DateTime, TimeDelta, Utc};

use crate::awsfiles;
use crate::config::AgentConfig;
use crate::identity::{self, IdentityError};
use crate::status::{self, State};
use crate::verify;

/// How far behind the rotator the host clock may be.
const CLOCK_TOLERANCE: TimeDelta = TimeDelta::seconds(60);

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Pass,
    /// Works, but should be fixed.
    Warn,
    /// Broken or unsafe.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        })
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The verdict.
    pub level: Level,
    /// The check's name.
    pub name: &'static str,
    /// What was found.
    pub what: String,
    /// What to do about it (empty on pass).
    pub fix: String,
}

fn pass(name: &'static str, what: impl Into<String>) -> Check {
    Check {
        level: Level::Pass,
        name,
        what: what.into(),
        fix: String::new(),
    }
}

fn warn(name: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Warn,
        name,
        what: what.into(),
        fix: fix.into(),
    }
}

fn fail(name: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Fail,
        name,
        what: what.into(),
        fix: fix.into(),
    }
}

/// The environment variables doctor looks at, captured once at the edge.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Names of the credential variables that are set (values are not kept).
    pub credential_vars: Vec<&'static str>,
    /// `AWS_PROFILE`.
    pub aws_profile: Option<String>,
    /// `AWS_CONFIG_FILE`.
    pub config_file: Option<String>,
    /// `AWS_SHARED_CREDENTIALS_FILE`.
    pub credentials_file: Option<String>,
    /// `HOME`.
    pub home: Option<String>,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
}

impl Environment {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            credential_vars: [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
            ]
            .into_iter()
            .filter(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
            .collect(),
            aws_profile: get("AWS_PROFILE"),
            config_file: get("AWS_CONFIG_FILE"),
            credentials_file: get("AWS_SHARED_CREDENTIALS_FILE"),
            home: get("HOME"),
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The profile to check.
    pub profile: String,
    /// Whether to call STS.
    pub verify: bool,
    /// STS endpoint override.
    pub endpoint_url: Option<String>,
}

/// Runs every check, in the order printed.
pub fn run(
    paths: &Paths,
    config: &AgentConfig,
    env: &Environment,
    options: &Options,
    euid: u32,
    now: DateTime<Utc>,
) -> Vec<Check> {
    let profile = match ProfileName::new(&options.profile) {
        Ok(profile) => profile,
        Err(reason) => {
            return vec![fail(
                "profile",
                format!(
                    "{:?} is not a valid profile name: {reason}",
                    options.profile
                ),
                "use 1 to 64 of A-Z a-z 0-9 _ . - (not starting with '.')",
            )]
        }
    };
    let row = status::profile_status(paths, &profile, now);
    let mut checks = vec![
        check_environment(env, &profile),
        check_credentials_file(env, &profile),
    ];
    checks.extend(check_config_file(env, &profile));
    checks.push(check_host_key(paths, euid));
    checks.push(check_cache_permissions(paths, config, &profile, euid));
    checks.push(check_clock(&row));
    checks.push(check_freshness(&row, now));
    if options.verify {
        checks.push(check_verify(
            paths,
            &profile,
            env,
            options.endpoint_url.as_deref(),
        ));
    }
    checks
}

/// The report, one line per check.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        out.push_str(&format!("{}  {}: {}", check.level, check.name, check.what));
        if !check.fix.is_empty() {
            out.push_str("; ");
            out.push_str(&check.fix);
        }
        out.push('\n');
    }
    out
}

/// True when any check failed.
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|check| check.level == Level::Fail)
}

fn check_environment(env: &Environment, profile: &ProfileName) -> Check {
    const NAME: &str = "environment";
    if !env.credential_vars.is_empty() {
        return fail(
            NAME,
            format!(
                "{} set; SDKs use them before credential_process",
                env.credential_vars.join(", ")
            ),
            "remove them from the environment of your services, shells and cron jobs",
        );
    }
    match &env.aws_profile {
        Some(other) if other != profile.as_str() => warn(
            NAME,
            format!("AWS_PROFILE is {other:?}, so SDKs use that profile, not '{profile}'"),
            format!("unset AWS_PROFILE or set it to {profile}"),
        ),
        _ => pass(NAME, "no AWS credential variables set"),
    }
}

/// `AKIA...WXYZ`: enough to find the key in IAM, not the whole id.
fn short_key_id(key_id: &str) -> String {
    let chars: Vec<char> = key_id.chars().collect();
    if chars.len() <= 8 {
        return "****".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}...{tail}")
}

fn read_ini(path: &std::path::Path) -> io::Result<awsfiles::Sections> {
    fs::read_to_string(path).map(|text| awsfiles::parse(&text))
}

fn check_credentials_file(env: &Environment, profile: &ProfileName) -> Check {
    const NAME: &str = "credentials file";
    let Some(path) =
        awsfiles::credentials_path(env.credentials_file.as_deref(), env.home.as_deref())
    else {
        return pass(
            NAME,
            "no HOME and no AWS_SHARED_CREDENTIALS_FILE, so no credentials file",
        );
    };
    let sections = match read_ini(&path) {
        Ok(sections) => sections,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return pass(NAME, format!("{} does not exist", path.display()))
        }
        Err(err) => {
            return warn(
                NAME,
                format!("cannot read {}: {err}", path.display()),
                "run doctor as the user whose AWS files these are",
            )
        }
    };
    if let Some(keys) = sections.get(profile.as_str()) {
        if let Some(key_id) = keys.get("aws_access_key_id") {
            let kind = if key_id.starts_with("AKIA") {
                "a long-term key"
            } else {
                "static keys"
            };
            return fail(
                NAME,
                format!(
                    "{} has {kind} ({}) for profile '{profile}', which wins over credential_process",
                    path.display(),
                    short_key_id(key_id)
                ),
                format!(
                    "delete the [{profile}] keys from {}, then deactivate and delete the key in IAM",
                    path.display()
                ),
            );
        }
    }
    let long_term: Vec<String> = sections
        .iter()
        .filter_map(|(section, keys)| {
            let key_id = keys.get("aws_access_key_id")?;
            key_id
                .starts_with("AKIA")
                .then(|| format!("[{section}] {}", short_key_id(key_id)))
        })
        .collect();
    if long_term.is_empty() {
        pass(NAME, format!("{} has no long-term keys", path.display()))
    } else {
        warn(
            NAME,
            format!(
                "{} still has long-term keys: {}",
                path.display(),
                long_term.join(", ")
            ),
            "move those users to roles too, then deactivate and delete the keys in IAM",
        )
    }
}

fn check_config_file(env: &Environment, profile: &ProfileName) -> Vec<Check> {
    const KEYS: &str = "config keys";
    const PROCESS: &str = "credential_process";
    let section = awsfiles::config_section(profile.as_str());
    let wanted = if profile.as_str() == "default" {
        "aovis-cred".to_owned()
    } else {
        format!("aovis-cred --profile {profile}")
    };
    let fix = format!("add `credential_process = {wanted}` to [{section}]");
    let Some(path) = awsfiles::config_path(env.config_file.as_deref(), env.home.as_deref()) else {
        return vec![fail(
            PROCESS,
            "no HOME and no AWS_CONFIG_FILE, so no config file",
            fix,
        )];
    };
    let sections = match read_ini(&path) {
        Ok(sections) => sections,
        Err(err) => {
            let what = if err.kind() == io::ErrorKind::NotFound {
                format!("{} does not exist", path.display())
            } else {
                format!("cannot read {}: {err}", path.display())
            };
            return vec![fail(PROCESS, what, format!("{fix} in {}", path.display()))];
        }
    };
    let Some(keys) = sections.get(&section) else {
        return vec![fail(
            PROCESS,
            format!("{} has no [{section}]", path.display()),
            format!("{fix} in {}", path.display()),
        )];
    };
    let keys_check = match keys.get("aws_access_key_id") {
        Some(key_id) => fail(
            KEYS,
            format!(
                "[{section}] in {} holds key {}, which wins over credential_process",
                path.display(),
                short_key_id(key_id)
            ),
            "remove aws_access_key_id and aws_secret_access_key from it, then deactivate and delete the key in IAM",
        ),
        None => pass(KEYS, format!("[{section}] holds no keys")),
    };
    let process_check = match keys.get("credential_process") {
        None => fail(
            PROCESS,
            format!(
                "[{section}] in {} has no credential_process",
                path.display()
            ),
            fix,
        ),
        Some(command) => match awsfiles::aovis_cred_profile(command) {
            None => fail(
                PROCESS,
                format!("[{section}] runs something other than aovis-cred"),
                format!("set `credential_process = {wanted}`"),
            ),
            Some(asked) if asked != profile.as_str() => fail(
                PROCESS,
                format!("[{section}] runs aovis-cred for profile '{asked}', not '{profile}'"),
                format!("set `credential_process = {wanted}`"),
            ),
            Some(_) => pass(
                PROCESS,
                format!("[{section}] runs aovis-cred for '{profile}'"),
            ),
        },
    };
    vec![keys_check, process_check]
}

fn check_host_key(paths: &Paths, euid: u32) -> Check {
    const NAME: &str = "host key";
    let path = paths.host_key();
    match identity::load(&path, euid) {
        Ok(key) => pass(
            NAME,
            format!(
                "{} is mode 0600 (recipient {})",
                path.display(),
                key.recipient()
            ),
        ),
        Err(IdentityError::Read { source, .. })
            if source.kind() == io::ErrorKind::PermissionDenied =>
        {
            warn(
                NAME,
                format!("cannot read {}", path.display()),
                "run doctor as root to check it",
            )
        }
        Err(err @ IdentityError::NotEnrolled { .. }) => fail(
            NAME,
            format!("no key at {}", path.display()),
            err.to_string()
                .rsplit("; ")
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        Err(err) => fail(
            NAME,
            err.to_string(),
            "fix the key file as the message says",
        ),
    }
}

fn check_cache_permissions(
    paths: &Paths,
    config: &AgentConfig,
    profile: &ProfileName,
    euid: u32,
) -> Check {
    const NAME: &str = "cache permissions";
    let dir = paths.profiles_dir();
    let file = paths.cache_file(profile);
    let owner_ok = |uid: u32| uid == 0 || uid == euid;
    match fs::symlink_metadata(&dir) {
        Ok(meta) if !meta.is_dir() => {
            return fail(
                NAME,
                format!("{} is not a directory", dir.display()),
                "replace it with a directory owned by root, mode 0755",
            )
        }
        Ok(meta) if meta.mode() & 0o022 != 0 || !owner_ok(meta.uid()) => {
            return fail(
                NAME,
                format!(
                    "{} is mode {:04o}, owner uid {}: others could swap the caches",
                    dir.display(),
                    meta.mode() & 0o7777,
                    meta.uid()
                ),
                format!("run `chown root: {0} && chmod 755 {0}`", dir.display()),
            )
        }
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return warn(
                NAME,
                format!("{} does not exist yet", dir.display()),
                "it is created by the first delivery (aovis-agent receive)",
            )
        }
        Err(err) => return warn(NAME, format!("cannot inspect {}: {err}", dir.display()), ""),
    }
    let meta = match fs::symlink_metadata(&file) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return warn(
                NAME,
                format!("{} does not exist yet", file.display()),
                "see the freshness check",
            )
        }
        Err(err) => {
            return warn(
                NAME,
                format!("cannot inspect {}: {err}", file.display()),
                "",
            )
        }
    };
    let mode = meta.mode() & 0o7777;
    let redeliver = "the next delivery rewrites it owner root, mode 0640";
    if meta.file_type().is_symlink() || !meta.is_file() {
        return fail(
            NAME,
            format!("{} is not a regular file", file.display()),
            format!("remove it; {redeliver}"),
        );
    }
    if !owner_ok(meta.uid()) || mode & 0o022 != 0 {
        return fail(
            NAME,
            format!(
                "{} is mode {mode:04o}, owner uid {}; aovis-cred refuses it",
                file.display(),
                meta.uid()
            ),
            format!("run `chown root {0} && chmod 640 {0}`", file.display()),
        );
    }
    if mode & 0o004 != 0 {
        return warn(
            NAME,
            format!(
                "{} is mode {mode:04o}: every user on the host can read the credentials",
                file.display()
            ),
            format!("run `chmod 640 {}`", file.display()),
        );
    }
    if let Some(group) = config.profile(profile).group {
        let expected = nix::unistd::Group::from_name(&group).ok().flatten();
        if expected.as_ref().map(|g| g.gid.as_raw()) != Some(meta.gid()) {
            return warn(
                NAME,
                format!(
                    "{} has gid {}, but agent.toml gives profile '{profile}' group '{group}'",
                    file.display(),
                    meta.gid()
                ),
                format!("run `chgrp {group} {}` or fix agent.toml", file.display()),
            );
        }
    }
    pass(
        NAME,
        format!(
            "{} is mode {mode:04o}, owner uid {}",
            file.display(),
            meta.uid()
        ),
    )
}

fn check_clock(row: &status::ProfileStatus) -> Check {
    const NAME: &str = "clock";
    let (Some(issued), Some(received)) = (row.issued_at, row.received_at) else {
        return warn(
            NAME,
            "no delivery with an issue time to compare with",
            "run doctor again after the first delivery",
        );
    };
    let skew = received - issued;
    if skew < -CLOCK_TOLERANCE {
        fail(
            NAME,
            format!(
                "the host clock was {} behind the rotator's at the last delivery",
                human_duration(-skew)
            ),
            "enable time sync (chrony or systemd-timesyncd); a slow clock serves expired credentials as valid",
        )
    } else if skew > CLOCK_TOLERANCE {
        warn(
            NAME,
            format!(
                "the last delivery arrived {} after it was issued: the host clock is ahead or delivery is slow",
                human_duration(skew)
            ),
            "check time sync (chrony or systemd-timesyncd) and SSM Agent's connectivity",
        )
    } else {
        pass(
            NAME,
            format!(
                "the last delivery arrived {} after it was issued",
                human_duration(skew)
            ),
        )
    }
}

fn check_freshness(row: &status::ProfileStatus, now: DateTime<Utc>) -> Check {
    const NAME: &str = "freshness";
    let profile = &row.profile;
    let rotator = "check the rotator's schedule and logs and that SSM Agent is online";
    let expires = || row.expires_at.map(format_expiration).unwrap_or_default();
    match row.state {
        State::Ok => pass(
            NAME,
            format!("profile '{profile}' is ok until {}", expires()),
        ),
        State::Stale => warn(
            NAME,
            format!(
                "profile '{profile}' has less than half its life left (expires {})",
                expires()
            ),
            rotator,
        ),
        State::Expired => fail(
            NAME,
            format!(
                "profile '{profile}' expired at {} ({} ago)",
                expires(),
                row.expires_at
                    .map(|at| human_duration(now - at))
                    .unwrap_or_default()
            ),
            rotator,
        ),
        State::Missing => fail(
            NAME,
            format!("profile '{profile}' has no cache: nothing was delivered yet"),
            format!("run a rotation round for this host; {rotator}"),
        ),
        State::Invalid => fail(
            NAME,
            format!(
                "profile '{profile}': {}",
                row.problem.clone().unwrap_or_default()
            ),
            "run a rotation round for this host; the next delivery replaces the file",
        ),
    }
}

fn check_verify(
    paths: &Paths,
    profile: &ProfileName,
    env: &Environment,
    endpoint_url: Option<&str>,
) -> Check {
    const NAME: &str = "verify";
    let bytes = match status::read_cache(&paths.cache_file(profile)) {
        Ok(bytes) => bytes,
        Err(err) => {
            return fail(
                NAME,
                format!("cannot read the cache of '{profile}': {err}"),
                "see the freshness check",
            )
        }
    };
    let cache = match cache::parse(&bytes) {
        Ok(cache) => cache,
        Err(err) => {
            return fail(
                NAME,
                format!("malformed cache: {err}"),
                "see the freshness check",
            )
        }
    };
    let Some(role_arn) = cache.meta.as_ref().map(|meta| meta.role_arn.clone()) else {
        return fail(
            NAME,
            "the cache has no role_arn to compare with (written by hand?)",
            "wait for a delivery from the rotator",
        );
    };
    let region = env.region.as_deref().unwrap_or("us-east-1");
    match verify::caller_arn(&cache.credentials, region, endpoint_url) {
        Ok(arn) if verify::is_session_of(&arn, &role_arn) => {
            pass(NAME, format!("STS says {arn}, a session of {role_arn}"))
        }
        Ok(arn) => fail(
            NAME,
            format!("STS says {arn}, which is not a session of the cached role {role_arn}"),
            "check which role the rotator assumes for this host",
        ),
        Err(err) => fail(
            NAME,
            err.to_string(),
            "check network access to STS and that the credentials are not revoked",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_350_600, 0).unwrap() // 2026-11-22T12:30:00Z
    }

    fn row(issued: &str, received: &str, state: State) -> status::ProfileStatus {
        let time = |t: &str| aovis_formats::time::parse_timestamp(t);
        status::ProfileStatus {
            profile: "default".into(),
            state,
            role_arn: None,
            key_id_suffix: None,
            serial: None,
            instance_id: None,
            issued_at: time(issued),
            received_at: time(received),
            expires_at: time("2026-11-22T13:00:00Z"),
            expires_in_seconds: None,
            problem: Some("malformed cache: not valid JSON (line 1, column 1)".into()),
        }
    }

    #[test]
    fn clock_check_levels() {
        let cases = [
            (
                "on time",
                "2026-11-22T12:00:00Z",
                "2026-11-22T12:00:01Z",
                Level::Pass,
            ),
            (
                "60 s behind",
                "2026-11-22T12:00:00Z",
                "2026-11-22T11:59:00Z",
                Level::Pass,
            ),
            (
                "61 s behind",
                "2026-11-22T12:00:00Z",
                "2026-11-22T11:58:59Z",
                Level::Fail,
            ),
            (
                "5 min late",
                "2026-11-22T12:00:00Z",
                "2026-11-22T12:05:00Z",
                Level::Warn,
            ),
            ("no times", "", "", Level::Warn),
        ];
        for (name, issued, received, level) in cases {
            assert_eq!(
                check_clock(&row(issued, received, State::Ok)).level,
                level,
                "{name}"
            );
        }
    }

    #[test]
    fn freshness_check_levels() {
        let cases = [
            (State::Ok, Level::Pass, "ok until 2026-11-22T13:00:00Z"),
            (State::Stale, Level::Warn, "less than half"),
            (State::Expired, Level::Fail, "expired at"),
            (State::Missing, Level::Fail, "no cache"),
            (State::Invalid, Level::Fail, "malformed cache"),
        ];
        for (state, level, text) in cases {
            let check = check_freshness(&row("", "", state), now());
            assert_eq!(check.level, level, "{state}");
            assert!(check.what.contains(text), "{state}: {}", check.what);
        }
    }

    #[test]
    fn environment_check_names_variables_never_values() {
        let profile = ProfileName::new("default").unwrap();
        let env = Environment {
            credential_vars: vec!["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
            ..Environment::default()
        };
        let check = check_environment(&env, &profile);
        assert_eq!(check.level, Level::Fail);
        assert!(check
            .what
            .starts_with("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY set"));
        let other = Environment {
            aws_profile: Some("legacy".into()),
            ..Environment::default()
        };
        assert_eq!(check_environment(&other, &profile).level, Level::Warn);
        assert_eq!(
            check_environment(&Environment::default(), &profile).level,
            Level::Pass
        );
    }

    fn env_with(dir: &std::path::Path, config: &str, credentials: &str) -> Environment {
        let config_path = dir.join("config");
        let credentials_path = dir.join("credentials");
        fs::write(&config_path, config).unwrap();
        fs::write(&credentials_path, credentials).unwrap();
        Environment {
            config_file: Some(config_path.to_string_lossy().into_owned()),
            credentials_file: Some(credentials_path.to_string_lossy().into_owned()),
            ..Environment::default()
        }
    }

    #[test]
    fn aws_files_checks() {
        let profile = ProfileName::new("build").unwrap();
        let good = "[profile build]\ncredential_process = /usr/bin/aovis-cred --profile build\n";
        let cases: [(&str, &str, &str, [Level; 3]); 7] = [
            ("clean", good, "", [Level::Pass, Level::Pass, Level::Pass]),
            (
                "AKIA key for the profile",
                good,
                "[build]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI\n",
                [Level::Fail, Level::Pass, Level::Pass],
            ),
            (
                "AKIA key for another profile",
                good,
                "[legacy]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n",
                [Level::Warn, Level::Pass, Level::Pass],
            ),
            (
                "keys in the config profile",
                "[profile build]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\ncredential_process = aovis-cred --profile build\n",
                "",
                [Level::Pass, Level::Fail, Level::Pass],
            ),
            (
                "no credential_process",
                "[profile build]\nregion = eu-west-1\n",
                "",
                [Level::Pass, Level::Pass, Level::Fail],
            ),
            (
                "another helper",
                "[profile build]\ncredential_process = aws-vault exec build --json\n",
                "",
                [Level::Pass, Level::Pass, Level::Fail],
            ),
            (
                "wrong aovis profile",
                "[profile build]\ncredential_process = aovis-cred\n",
                "",
                [Level::Pass, Level::Pass, Level::Fail],
            ),
        ];
        for (name, config, credentials, levels) in cases {
            let dir = tempfile::tempdir().unwrap();
            let env = env_with(dir.path(), config, credentials);
            let mut checks = vec![check_credentials_file(&env, &profile)];
            checks.extend(check_config_file(&env, &profile));
            let got: Vec<Level> = checks.iter().map(|c| c.level).collect();
            assert_eq!(got, levels, "{name}: {checks:?}");
            let text = render(&checks);
            assert!(!text.contains("wJalrXUtnFEMI"), "{name}: {text}");
            assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"), "{name}: {text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(dir.path(), "[default]\n", "");
        let checks = check_config_file(&env, &profile);
        assert_eq!(checks[0].level, Level::Fail);
        assert!(
            checks[0].what.contains("has no [profile build]"),
            "{checks:?}"
        );
    }

    #[test]
    fn cache_permission_levels() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            state_dir: dir.path().join("state"),
            config_dir: dir.path().join("config"),
        };
        let profile = ProfileName::new("default").unwrap();
        let config = AgentConfig::default();
        let euid = nix::unistd::geteuid().as_raw();
        assert_eq!(
            check_cache_permissions(&paths, &config, &profile, euid).level,
            Level::Warn
        );
        fs::create_dir_all(paths.profiles_dir()).unwrap();
        fs::set_permissions(paths.profiles_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        let file = paths.cache_file(&profile);
        fs::write(&file, "{}").unwrap();
        let cases = [
            (0o640, Level::Pass),
            (0o600, Level::Pass),
            (0o644, Level::Warn),
            (0o660, Level::Fail),
            (0o646, Level::Fail),
        ];
        for (mode, level) in cases {
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
            let check = check_cache_permissions(&paths, &config, &profile, euid);
            assert_eq!(check.level, level, "{mode:o}: {check:?}");
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(paths.profiles_dir(), fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            check_cache_permissions(&paths, &config, &profile, euid).level,
            Level::Fail
        );
    }

    #[test]
    fn renders_one_line_per_check() {
        let checks = [
            pass("a", "fine"),
            warn("b", "meh", "do x"),
            fail("c", "bad", "do y"),
        ];
        assert_eq!(
            render(&checks),
            "pass  a: fine\nwarn  b: meh; do x\nfail  c: bad; do y\n"
        );
        assert!(any_failed(&checks));
        assert!(!any_failed(&checks[..2]));
    }

    #[test]
    fn an_invalid_profile_is_one_failed_check() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            state_dir: dir.path().join("s"),
            config_dir: dir.path().join("c"),
        };
        let options = Options {
            profile: "../etc".into(),
            verify: false,
            endpoint_url: None,
        };
        let checks = run(
            &paths,
            &AgentConfig::default(),
            &Environment::default(),
            &options,
            0,
            now(),
        );
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].level, Level::Fail);
    }
}
