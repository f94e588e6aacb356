//! Running programs as other local users, with `setpriv` (util-linux): the real
//! kernel permission checks, no user database entries needed. The tests run as
//! root (CI does); elsewhere [`can_switch_users`] makes them skip.

use std::process::{Command, Output, Stdio};

/// Debian's unprivileged `nobody` and its group `nogroup`.
pub const NOBODY: u32 = 65534;
/// A second unprivileged uid with no passwd entry: a legitimate user of a profile.
pub const MEMBER: u32 = 65532;
/// The group the tests give a profile (Debian's `adm`, which neither uid above is
/// in unless the test adds it).
pub const PROFILE_GROUP: &str = "adm";

/// Whether this process may switch users (it runs as root). Otherwise the caller
/// skips, except under CI (`CI` set), where a skipped hostile-user test would hide
/// a missing check, so this fails instead.
pub fn can_switch_users() -> bool {
    if super::is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the hostile-user tests as root"
    );
    eprintln!("skipped: switching users needs root (CI runs as root)");
    false
}

/// The gid of [`PROFILE_GROUP`].
pub fn profile_gid() -> u32 {
    nix::unistd::Group::from_name(PROFILE_GROUP)
        .unwrap()
        .expect("group adm")
        .gid
        .as_raw()
}

/// Who runs a command.
#[derive(Debug, Clone)]
pub struct User {
    /// uid (and, as primary group, gid `nogroup`).
    pub uid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl User {
    /// `nobody` with no supplementary groups: the hostile user.
    pub fn hostile() -> Self {
        Self {
            uid: NOBODY,
            groups: Vec::new(),
        }
    }

    /// [`MEMBER`], in the profile's group.
    pub fn member() -> Self {
        Self {
            uid: MEMBER,
            groups: vec![profile_gid()],
        }
    }

    /// `command` wrapped to run as this user, keeping its environment.
    pub fn wrap(&self, command: &Command) -> Command {
        let mut wrapped = Command::new("setpriv");
        wrapped.args([format!("--reuid={}", self.uid), format!("--regid={NOBODY}")]);
        if self.groups.is_empty() {
            wrapped.arg("--clear-groups");
        } else {
            let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            wrapped.arg(format!("--groups={}", groups.join(",")));
        }
        wrapped
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::null());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(name, value),
                None => wrapped.env_remove(name),
            };
        }
        wrapped
    }

    /// Runs `sh -c script` as this user.
    pub fn sh(&self, script: &str) -> Output {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        self.wrap(&command).output().unwrap()
    }
}
