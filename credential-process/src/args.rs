//! Command-line parsing with `lexopt` (the parser ripgrep uses): three options do
//! not justify a framework in a binary whose start-up is its cost.

use std::ffi::OsString;

use crate::error::CredError;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the credentials of a profile.
    Print {
        /// The profile name as given (validated later, so its error names it).
        profile: String,
    },
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// The `--help` text; the exit codes are part of the interface.
pub const HELP: &str = "\
aovis-cred: print a cached aovis profile for an AWS SDK's credential_process

USAGE:
    aovis-cred [--profile NAME]

In ~/.aws/config:
    [profile NAME]
    credential_process = aovis-cred --profile NAME

OPTIONS:
    -p, --profile NAME   the profile to print (default: default)
    -h, --help           print this help
    -V, --version        print the version

Reads $AOVIS_STATE_DIR/profiles/NAME.json (state dir default: /var/lib/aovis).
Never reads stdin, never uses the network.

EXIT CODES:
    0   printed the credentials
    1   an unexpected I/O error (the message names it)
    2   bad command line
    3   invalid profile name
    4   no cached credentials for the profile
    5   permission denied reading the cache
    6   the cache file is malformed
    7   the credentials expired or expire within 60 seconds
    8   the cache file or its directory is unsafe to trust
";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, CredError> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let mut profile = None;
    let usage = |err: lexopt::Error| CredError::Usage(err.to_string());
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('p') | Long("profile") => {
                let value = parser.value().map_err(usage)?;
                let value = value
                    .into_string()
                    .map_err(|_| CredError::Usage("the profile name is not valid UTF-8".into()))?;
                profile = Some(value);
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            other => return Err(usage(other.unexpected())),
        }
    }
    Ok(Command::Print {
        profile: profile.unwrap_or_else(|| "default".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, CredError> {
        parse(args.iter().map(OsString::from))
    }

    fn print(profile: &str) -> Command {
        Command::Print {
            profile: profile.to_owned(),
        }
    }

    #[test]
    fn profile_forms() {
        assert_eq!(parse_strs(&[]).unwrap(), print("default"));
        assert_eq!(parse_strs(&["--profile", "build"]).unwrap(), print("build"));
        assert_eq!(parse_strs(&["--profile=build"]).unwrap(), print("build"));
        assert_eq!(parse_strs(&["-p", "build"]).unwrap(), print("build"));
        assert_eq!(parse_strs(&["--profile", ""]).unwrap(), print(""));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_strs(&["--help"]).unwrap(), Command::Help);
        assert_eq!(parse_strs(&["-V"]).unwrap(), Command::Version);
    }

    #[test]
    fn usage_errors() {
        for args in [&["--profile"][..], &["--bogus"], &["extra"]] {
            let err = parse_strs(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
