//! Reading the AWS shared config and credentials files, as far as `doctor` needs.
//!
//! Paths are the SDKs': `AWS_CONFIG_FILE` else `$HOME/.aws/config`, and
//! `AWS_SHARED_CREDENTIALS_FILE` else `$HOME/.aws/credentials`. In the config file a
//! profile is the section `[profile P]` (or `[default]`); in the credentials file it
//! is `[P]`. The parser follows botocore's (Python `configparser`): `key = value`,
//! keys case-insensitive, whole-line `#` and `;` comments, indented lines continue a
//! nested value (ignored here). Values are kept only while checking them and never
//! printed.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Section name -> (lowercase key -> value).
pub type Sections = BTreeMap<String, BTreeMap<String, String>>;

/// Parses an INI file the way botocore does, keeping only top-level keys.
pub fn parse(text: &str) -> Sections {
    let mut sections = Sections::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            continue; // continuation of a nested value (`s3 =` + indented keys)
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_owned();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
            continue;
        };
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    sections
}

/// The config file's section name of `profile`.
pub fn config_section(profile: &str) -> String {
    if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    }
}

/// Where the config file is, from `AWS_CONFIG_FILE` and `HOME`.
pub fn config_path(aws_config_file: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    file_path(aws_config_file, home, "config")
}

/// Where the credentials file is, from `AWS_SHARED_CREDENTIALS_FILE` and `HOME`.
pub fn credentials_path(
    shared_credentials_file: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    file_path(shared_credentials_file, home, "credentials")
}

fn file_path(explicit: Option<&str>, home: Option<&str>, name: &str) -> Option<PathBuf> {
    let nonempty = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(str::to_owned);
    if let Some(path) = nonempty(explicit) {
        let expanded = match (path.strip_prefix("~/"), nonempty(home)) {
            (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => PathBuf::from(path),
        };
        return Some(expanded);
    }
    nonempty(home).map(|home| PathBuf::from(home).join(".aws").join(name))
}

/// What a `credential_process` command line runs, split the way botocore does
/// (`shlex.split`: whitespace, single and double quotes, backslash escapes).
pub fn split_command(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        other => word.push(other),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// If `command` runs `aovis-cred`, the profile it asks for.
pub fn aovis_cred_profile(command: &str) -> Option<String> {
    let words = split_command(command);
    let program = words.first()?;
    if program.rsplit('/').next() != Some("aovis-cred") {
        return None;
    }
    let mut profile = "default".to_owned();
    let mut args = words[1..].iter();
    while let Some(arg) = args.next() {
        if arg == "--profile" {
            profile = args.next().cloned().unwrap_or_default();
        } else if let Some(value) = arg.strip_prefix("--profile=") {
            profile = value.to_owned();
        }
    }
    Some(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_keys_and_comments() {
        let text = "# top comment\n[default]\nregion = eu-west-1\nAWS_Access_Key_Id=AKIAX\n\
                    ; comment\n[profile build]\ncredential_process = aovis-cred --profile build\n\
                    s3 =\n  max_concurrent_requests = 2\n[empty]\n";
        let sections = parse(text);
        assert_eq!(sections["default"]["aws_access_key_id"], "AKIAX");
        assert_eq!(sections["default"]["region"], "eu-west-1");
        assert_eq!(
            sections["profile build"]["credential_process"],
            "aovis-cred --profile build"
        );
        assert!(!sections["profile build"].contains_key("max_concurrent_requests"));
        assert!(sections["empty"].is_empty());
        assert_eq!(config_section("default"), "default");
        assert_eq!(config_section("build"), "profile build");
    }

    #[test]
    fn splits_like_shlex_and_finds_the_profile() {
        let cases = [
            ("aovis-cred", Some("default")),
            ("/usr/bin/aovis-cred --profile build", Some("build")),
            ("aovis-cred --profile=build", Some("build")),
            (
                "'/opt/my tools/aovis-cred' --profile \"team a\"",
                Some("team a"),
            ),
            ("aovis-cred --profile", Some("")),
            ("cat /var/lib/aovis/profiles/default.json", None),
            ("aws-vault exec x --json", None),
            ("/usr/bin/aovis-cred-old", None),
            ("", None),
        ];
        for (command, expected) in cases {
            assert_eq!(
                aovis_cred_profile(command).as_deref(),
                expected,
                "{command}"
            );
        }
    }

    #[test]
    fn resolves_paths_from_env_and_home() {
        let cases = [
            (Some("/etc/aws.cfg"), Some("/root"), Some("/etc/aws.cfg")),
            (Some("~/cfg"), Some("/home/u"), Some("/home/u/cfg")),
            (None, Some("/home/u"), Some("/home/u/.aws/config")),
            (Some(""), Some("/home/u"), Some("/home/u/.aws/config")),
            (None, None, None),
        ];
        for (explicit, home, expected) in cases {
            assert_eq!(
                config_path(explicit, home),
                expected.map(PathBuf::from),
                "{explicit:?} {home:?}"
            );
        }
        assert_eq!(
            credentials_path(None, Some("/h")),
            Some(PathBuf::from("/h/.aws/credentials"))
        );
    }
}
