//! Field extraction shared by the cache and envelope parsers.
//!
//! Both documents are parsed into a JSON map and their fields taken out one by one,
//! rather than through a derived `Deserialize`, for two reasons: serde's own error
//! messages quote the offending value (which may be a secret), and taking a string
//! out of the map moves it into a [`SecretString`] without leaving a copy.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::credentials::{Credentials, SecretString};
use crate::time::parse_timestamp;

/// Why a document was refused. Display never includes a value from the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The bytes are not JSON at all.
    NotJson {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
    },
    /// The JSON is not an object.
    NotObject,
    /// A field is missing or has the wrong form.
    Field {
        /// The field's path, for example `credentials.Expiration`.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson { line, column } => {
                write!(f, "not valid JSON (line {line}, column {column})")
            }
            Self::NotObject => f.write_str("not a JSON object"),
            Self::Field { field, problem } => write!(f, "field `{field}` {problem}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// Parses bytes into a JSON object, with an error that quotes nothing.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, FormatError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FormatError::NotObject),
        Err(err) => Err(FormatError::NotJson {
            line: err.line(),
            column: err.column(),
        }),
    }
}

fn missing(field: &'static str) -> FormatError {
    FormatError::Field {
        field,
        problem: "is missing",
    }
}

/// Takes a string field out of the map (moving it, not copying it).
pub(crate) fn take_string(
    map: &mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<String, FormatError> {
    match map.remove(key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(FormatError::Field {
            field,
            problem: "must be a string",
        }),
        None => Err(missing(field)),
    }
}

/// Takes a non-empty string field.
pub(crate) fn take_nonempty(
    map: &mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<String, FormatError> {
    let text = take_string(map, key, field)?;
    if text.is_empty() {
        return Err(FormatError::Field {
            field,
            problem: "is empty",
        });
    }
    Ok(text)
}

/// Takes an RFC 3339 timestamp field.
pub(crate) fn take_time(
    map: &mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<DateTime<Utc>, FormatError> {
    let text = take_string(map, key, field)?;
    parse_timestamp(&text).ok_or(FormatError::Field {
        field,
        problem: "is not an RFC 3339 timestamp such as 2026-11-22T13:00:00Z",
    })
}

/// Takes a non-negative integer field.
pub(crate) fn take_u64(
    map: &mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<u64, FormatError> {
    match map.remove(key) {
        Some(Value::Number(number)) => number.as_u64().ok_or(FormatError::Field {
            field,
            problem: "must be a non-negative whole number",
        }),
        Some(_) => Err(FormatError::Field {
            field,
            problem: "must be a number",
        }),
        None => Err(missing(field)),
    }
}

/// Takes a version field that must be exactly `1`.
pub(crate) fn take_version_1(
    map: &mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<(), FormatError> {
    match map.remove(key) {
        Some(Value::Number(number)) if number.as_u64() == Some(1) => Ok(()),
        Some(_) => Err(FormatError::Field {
            field,
            problem: "must be the number 1 (the only version this release knows)",
        }),
        None => Err(missing(field)),
    }
}

/// Field paths for the four credential fields, so messages say where they sit.
pub(crate) struct CredentialFieldNames {
    pub(crate) key_id: &'static str,
    pub(crate) secret: &'static str,
    pub(crate) token: &'static str,
    pub(crate) expiration: &'static str,
}

/// Takes `AccessKeyId`, `SecretAccessKey`, `SessionToken` and `Expiration`.
pub(crate) fn take_credentials(
    map: &mut Map<String, Value>,
    names: &CredentialFieldNames,
) -> Result<Credentials, FormatError> {
    let access_key_id = take_nonempty(map, "AccessKeyId", names.key_id)?;
    let secret = SecretString::new(take_nonempty(map, "SecretAccessKey", names.secret)?);
    let token = SecretString::new(take_nonempty(map, "SessionToken", names.token)?);
    let expiration = take_time(map, "Expiration", names.expiration)?;
    Ok(Credentials::new(access_key_id, secret, token, expiration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_json_reports_position_without_content() {
        let err = parse_object(b"{\"SecretAccessKey\": sekrit}").unwrap_err();
        assert!(matches!(err, FormatError::NotJson { line: 1, .. }));
        assert!(!err.to_string().contains("sekrit"));
    }

    #[test]
    fn a_top_level_string_is_not_an_object_and_is_not_quoted() {
        let err = parse_object(b"\"sekrit\"").unwrap_err();
        assert_eq!(err, FormatError::NotObject);
        assert!(!err.to_string().contains("sekrit"));
    }

    #[test]
    fn wrong_types_are_named_without_their_value() {
        let mut map = parse_object(br#"{"Version":"sekrit","n":-1}"#).unwrap();
        let err = take_version_1(&mut map, "Version", "Version").unwrap_err();
        assert!(err.to_string().contains("`Version`"));
        assert!(!err.to_string().contains("sekrit"));
        assert!(take_u64(&mut map, "n", "n").is_err());
    }
}
