//! Syscall tracing and fault injection with `strace` (Debian package `strace`).
//!
//! [`trace`] runs a command once under `strace -f` and returns every syscall it made,
//! each with its occurrence number among calls of the same name, and which file its
//! descriptor argument named. [`Fault`]s are then injected at exactly one of those
//! points with `-e inject=NAME:error=ERRNO:when=N` (the call fails with that errno and
//! never reaches the kernel) or `-e inject=NAME:signal=SIGKILL:when=N` (the process
//! dies on entering the call). strace numbers invocations per syscall name (and per
//! traced thread), so `(name, occurrence)` names one point of a single-threaded run
//! whose syscalls are deterministic, as `aovis-agent receive` is.
//!
//! Nothing is faked: the kernel, the filesystem and the binary are real; strace only
//! decides that one call fails.

use std::collections::HashMap;
use std::fs;
use std::process::{Command, Output};

/// One syscall of a traced run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The process or thread that made the call.
    pub pid: u32,
    /// The syscall's name, as strace prints it (`write`, `renameat`, ...).
    pub name: String,
    /// 1-based: this is the `occurrence`-th call of `name` in the run.
    pub occurrence: u32,
    /// The file this call acted on: the path of its descriptor (first argument) or
    /// the path it opened or renamed, when there is one.
    pub path: Option<String>,
    /// strace's line, for messages.
    pub line: String,
}

/// A fault to inject at one [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this errno name (`EIO`, `ENOSPC`).
    Error(&'static str),
    /// The process receives SIGKILL on entering the call.
    Kill,
}

impl Fault {
    /// The `-e inject=` expression for `event`.
    pub fn expression(self, event: &Event) -> String {
        let what = match self {
            Self::Error(errno) => format!("error={errno}"),
            Self::Kill => "signal=SIGKILL".to_owned(),
        };
        format!("inject={}:{what}:when={}", event.name, event.occurrence)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Error(errno) => f.write_str(errno),
            Self::Kill => f.write_str("SIGKILL"),
        }
    }
}

/// Fails with a clear message when strace is missing or cannot trace here.
pub fn require_strace() {
    let works = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    assert!(
        works,
        "strace is missing or cannot trace (apt-get install strace; a container needs ptrace)"
    );
}

/// Runs `command` under `strace -f` and returns its output and its syscalls.
pub fn trace(command: &Command) -> (Output, Vec<Event>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace");
    let mut traced = strace_command(command, &["-o".into(), log.display().to_string()]);
    let output = traced.output().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    (output, parse(&text))
}

/// Runs `command` with `fault` injected at `event`.
pub fn inject(command: &Command, event: &Event, fault: Fault) -> Output {
    strace_command(
        command,
        &[
            "-o".into(),
            "/dev/null".into(),
            "-e".into(),
            fault.expression(event),
        ],
    )
    .output()
    .unwrap()
}

/// `strace -f -qq <options> <program> <args>` with `command`'s environment.
fn strace_command(command: &Command, options: &[String]) -> Command {
    let mut traced = Command::new("strace");
    traced.args(["-f", "-qq", "-s", "256"]).args(options);
    traced.arg(command.get_program()).args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => traced.env(name, value),
            None => traced.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        traced.current_dir(dir);
    }
    traced
}

/// Parses `strace -f -o` output: `PID name(args) = result`.
pub fn parse(text: &str) -> Vec<Event> {
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut open_files: HashMap<String, String> = HashMap::new();
    let mut events = Vec::new();
    for line in text.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse() else {
            continue;
        };
        let call = call.trim_start();
        if call.starts_with("---") || call.starts_with("+++") || call.starts_with('<') {
            continue;
        }
        let Some((name, rest)) = call.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let count = counts.entry(name.to_owned()).or_insert(0);
        *count += 1;
        let result = rest.rsplit_once(" = ").map(|(_, result)| result.trim());
        let first_path = quoted_paths(rest).into_iter().next();
        let path = match name {
            "open" | "openat" | "openat2" | "creat" => {
                if let (Some(path), Some(fd)) = (&first_path, result.and_then(leading_number)) {
                    open_files.insert(fd, path.clone());
                }
                first_path
            }
            "rename" | "renameat" | "renameat2" | "unlink" | "unlinkat" => first_path,
            _ => {
                let fd = rest.split([',', ')']).next().unwrap_or("").trim();
                open_files.get(fd).cloned()
            }
        };
        if name == "close" {
            let fd = rest.split(')').next().unwrap_or("").trim();
            open_files.remove(fd);
        }
        events.push(Event {
            pid,
            name: name.to_owned(),
            occurrence: *count,
            path,
            line: line.to_owned(),
        });
    }
    events
}

/// The number a result like `4` or `4</path>` starts with; negative results are
/// errors and name no descriptor.
fn leading_number(result: &str) -> Option<String> {
    let digits: String = result.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

/// The double-quoted strings of a strace argument list (paths, in the calls we ask
/// about; strace escapes quotes inside them).
fn quoted_paths(args: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut current: Option<String> = None;
    let mut escaped = false;
    for c in args.chars() {
        match (&mut current, c) {
            (Some(text), _) if escaped => {
                text.push(c);
                escaped = false;
            }
            (Some(_), '\\') => escaped = true,
            (Some(_), '"') => paths.extend(current.take()),
            (Some(text), _) => text.push(c),
            (None, '"') => current = Some(String::new()),
            (None, _) => {}
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_calls_per_name_and_follows_descriptors() {
        let text = r#"12 openat(AT_FDCWD, "/s/p/.d.json.Ab.tmp", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 4
12 write(4, "{\"Version\":1"..., 298) = 298
12 fsync(4)                          = 0
12 renameat(AT_FDCWD, "/s/p/.d.json.Ab.tmp", AT_FDCWD, "/s/p/d.json") = 0
12 close(4)                          = 0
12 openat(AT_FDCWD, "/s/p", O_RDONLY|O_CLOEXEC) = 4
12 fsync(4)                          = -1 EIO (Input/output error) (INJECTED)
12 write(1, "stored", 6) = 6
12 +++ exited with 0 +++"#;
        let events = parse(text);
        let summary: Vec<(&str, u32, Option<&str>)> = events
            .iter()
            .map(|e| (e.name.as_str(), e.occurrence, e.path.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("openat", 1, Some("/s/p/.d.json.Ab.tmp")),
                ("write", 1, Some("/s/p/.d.json.Ab.tmp")),
                ("fsync", 1, Some("/s/p/.d.json.Ab.tmp")),
                ("renameat", 1, Some("/s/p/.d.json.Ab.tmp")),
                ("close", 1, Some("/s/p/.d.json.Ab.tmp")),
                ("openat", 2, Some("/s/p")),
                ("fsync", 2, Some("/s/p")),
                ("write", 2, None),
            ]
        );
        assert_eq!(
            Fault::Error("EIO").expression(&events[6]),
            "inject=fsync:error=EIO:when=2"
        );
        assert_eq!(
            Fault::Kill.expression(&events[3]),
            "inject=renameat:signal=SIGKILL:when=1"
        );
    }
}
