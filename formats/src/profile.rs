//! Profile names. A profile name becomes a file name under `$STATE/profiles/`, so it
//! is validated once, here, and carried as [`ProfileName`] from then on.

use std::fmt;

/// Longest accepted name; keeps `<name>.json` and its temp files far below NAME_MAX.
pub const MAX_LEN: usize = 64;

/// A profile name: 1 to 64 of `A-Z a-z 0-9 _ . -`, not starting with `.`.
///
/// A leading dot is refused because temp files of atomic writes start with one, and
/// because it rules out `.` and `..` along with hidden files.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileName(String);

/// Why a profile name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidProfileName {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_LEN`].
    TooLong,
    /// The name starts with a dot (this includes `.` and `..`).
    LeadingDot,
    /// The name holds a character outside `A-Z a-z 0-9 _ . -` (a slash, for example).
    BadCharacter,
}

impl fmt::Display for InvalidProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "it is empty",
            Self::TooLong => "it is longer than 64 characters",
            Self::LeadingDot => "it starts with '.'",
            Self::BadCharacter => "it holds a character outside A-Z a-z 0-9 _ . -",
        })
    }
}

impl std::error::Error for InvalidProfileName {}

impl ProfileName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, InvalidProfileName> {
        if name.is_empty() {
            return Err(InvalidProfileName::Empty);
        }
        if name.len() > MAX_LEN {
            return Err(InvalidProfileName::TooLong);
        }
        if name.starts_with('.') {
            return Err(InvalidProfileName::LeadingDot);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if !name.chars().all(allowed) {
            return Err(InvalidProfileName::BadCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cache file's name: `<name>.json`.
    pub fn file_name(&self) -> String {
        format!("{}.json", self.0)
    }
}

/// Config files name profiles as table keys; they are validated like any other name.
impl<'de> serde::Deserialize<'de> for ProfileName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::new(&name).map_err(|err| {
            serde::de::Error::custom(format_args!("invalid profile name {name:?}: {err}"))
        })
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "default",
            "build-agent",
            "backup_2",
            "team.prod",
            "A",
            &"x".repeat(64),
        ] {
            assert_eq!(ProfileName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_each_bad_name_with_its_reason() {
        use InvalidProfileName::*;
        let cases = [
            ("", Empty),
            ("..", LeadingDot),
            (".", LeadingDot),
            (".hidden", LeadingDot),
            ("a/b", BadCharacter),
            ("../etc/passwd", LeadingDot),
            ("x/../../y", BadCharacter),
            ("with space", BadCharacter),
            ("tab\t", BadCharacter),
            ("nul\0", BadCharacter),
            ("ünïcode", BadCharacter),
            ("semi;colon", BadCharacter),
        ];
        for (name, reason) in cases {
            assert_eq!(ProfileName::new(name), Err(reason), "{name:?}");
        }
        assert_eq!(ProfileName::new(&"x".repeat(65)), Err(TooLong));
    }
}
