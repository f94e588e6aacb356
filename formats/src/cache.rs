//! The cache file `$STATE/profiles/<profile>.json`.
//!
//! It is a valid `credential_process` document (`Version` 1 and the four credential
//! fields) plus an `Aovis` object with where the credentials came from:
//!
//! ```json
//! {"Version":1,"AccessKeyId":"ASIA...","SecretAccessKey":"...","SessionToken":"...",
//!  "Expiration":"2026-11-22T13:00:00Z",
//!  "Aovis":{"serial":1763814000123,"role_arn":"arn:aws:iam::111122223333:role/onprem",
//!           "instance_id":"mi-0123456789abcdef0","issued_at":"2026-11-22T12:00:00Z",
//!           "received_at":"2026-11-22T12:00:01Z"}}
//! ```
//!
//! so even `credential_process = cat <file>` works. [`parse`] accepts a file without
//! the `Aovis` object (one written by hand in an emergency); [`CacheFile::to_json`]
//! always writes it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::credentials::Credentials;
use crate::fields::{
    parse_object, take_credentials, take_nonempty, take_time, take_u64, take_version_1,
    CredentialFieldNames, FormatError,
};
use crate::time::format_expiration;

/// Where a cached delivery came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMeta {
    /// The delivery's serial; a new delivery must carry a greater one.
    pub serial: u64,
    /// The role the credentials belong to.
    pub role_arn: String,
    /// The managed node the delivery was sealed for.
    pub instance_id: String,
    /// When the rotator issued the delivery (its clock).
    pub issued_at: DateTime<Utc>,
    /// When this host stored it (this host's clock).
    pub received_at: DateTime<Utc>,
}

/// A parsed cache file.
#[derive(Debug, PartialEq, Eq)]
pub struct CacheFile {
    /// The credentials served to SDKs.
    pub credentials: Credentials,
    /// Provenance; `None` for a file written without the `Aovis` object.
    pub meta: Option<CacheMeta>,
}

const NAMES: CredentialFieldNames = CredentialFieldNames {
    key_id: "AccessKeyId",
    secret: "SecretAccessKey",
    token: "SessionToken",
    expiration: "Expiration",
};

/// Parses a cache file. Unknown top-level fields are ignored, as SDKs ignore them.
pub fn parse(bytes: &[u8]) -> Result<CacheFile, FormatError> {
    let mut map = parse_object(bytes)?;
    take_version_1(&mut map, "Version", "Version")?;
    let credentials = take_credentials(&mut map, &NAMES)?;
    let meta = match map.remove("Aovis") {
        None => None,
        Some(Value::Object(mut meta)) => Some(CacheMeta {
            serial: take_u64(&mut meta, "serial", "Aovis.serial")?,
            role_arn: take_nonempty(&mut meta, "role_arn", "Aovis.role_arn")?,
            instance_id: take_nonempty(&mut meta, "instance_id", "Aovis.instance_id")?,
            issued_at: take_time(&mut meta, "issued_at", "Aovis.issued_at")?,
            received_at: take_time(&mut meta, "received_at", "Aovis.received_at")?,
        }),
        Some(_) => {
            return Err(FormatError::Field {
                field: "Aovis",
                problem: "must be an object",
            })
        }
    };
    Ok(CacheFile { credentials, meta })
}

#[derive(Serialize)]
struct ProcessDocument<'a> {
    #[serde(rename = "Version")]
    version: u8,
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "SessionToken")]
    session_token: &'a str,
    #[serde(rename = "Expiration")]
    expiration: String,
    #[serde(rename = "Aovis", skip_serializing_if = "Option::is_none")]
    aovis: Option<MetaDocument<'a>>,
}

#[derive(Serialize)]
struct MetaDocument<'a> {
    serial: u64,
    role_arn: &'a str,
    instance_id: &'a str,
    issued_at: String,
    received_at: String,
}

fn document<'a>(credentials: &'a Credentials, meta: Option<&'a CacheMeta>) -> ProcessDocument<'a> {
    ProcessDocument {
        version: 1,
        access_key_id: credentials.access_key_id(),
        secret_access_key: credentials.secret_access_key().expose(),
        session_token: credentials.session_token().expose(),
        expiration: format_expiration(credentials.expiration()),
        aovis: meta.map(|meta| MetaDocument {
            serial: meta.serial,
            role_arn: &meta.role_arn,
            instance_id: &meta.instance_id,
            issued_at: format_expiration(meta.issued_at),
            received_at: format_expiration(meta.received_at),
        }),
    }
}

/// Serializes into a buffer sized up front, so growing it never leaves a copy of the
/// secret in freed memory; the buffer zeroizes itself when dropped.
fn to_zeroizing_json(document: &ProcessDocument<'_>) -> Zeroizing<Vec<u8>> {
    let estimate = 512
        + document.access_key_id.len()
        + document.secret_access_key.len()
        + document.session_token.len()
        + document
            .aovis
            .as_ref()
            .map_or(0, |m| m.role_arn.len() + m.instance_id.len());
    let mut out = Zeroizing::new(Vec::with_capacity(estimate));
    // Writing plain strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, document);
    out.push(b'\n');
    out
}

/// The exact `credential_process` output: `Version`, `AccessKeyId`,
/// `SecretAccessKey`, `SessionToken`, `Expiration`, and nothing else.
pub fn process_output(credentials: &Credentials) -> Zeroizing<Vec<u8>> {
    to_zeroizing_json(&document(credentials, None))
}

impl CacheFile {
    /// The file's bytes as `aovis-agent receive` writes them.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        to_zeroizing_json(&document(&self.credentials, self.meta.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::SecretString;
    use chrono::TimeZone;

    const SAMPLE: &str = r#"{"Version":1,"AccessKeyId":"ASIAEXAMPLE0001","SecretAccessKey":"sekrit/key+value","SessionToken":"tok3n//==","Expiration":"2026-11-22T13:00:00Z","Aovis":{"serial":1763814000123,"role_arn":"arn:aws:iam::111122223333:role/onprem","instance_id":"mi-0123456789abcdef0","issued_at":"2026-11-22T12:00:00Z","received_at":"2026-11-22T12:00:01Z"}}
"#;

    #[test]
    fn round_trips_the_design_example_byte_for_byte() {
        let cache = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(cache.to_json().as_slice(), SAMPLE.as_bytes());
        let meta = cache.meta.as_ref().unwrap();
        assert_eq!(meta.serial, 1_763_814_000_123);
        assert_eq!(meta.instance_id, "mi-0123456789abcdef0");
    }

    #[test]
    fn process_output_has_exactly_the_documented_fields() {
        let cache = parse(SAMPLE.as_bytes()).unwrap();
        let out = process_output(&cache.credentials);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "AccessKeyId",
                "Expiration",
                "SecretAccessKey",
                "SessionToken",
                "Version"
            ]
        );
        assert_eq!(value["Version"], 1);
        assert_eq!(value["SecretAccessKey"], "sekrit/key+value");
    }

    #[test]
    fn accepts_a_file_without_provenance_and_normalizes_expiration() {
        let text = r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"2026-11-22T14:00:00.123+01:00","Extra":true}"#;
        let cache = parse(text.as_bytes()).unwrap();
        assert!(cache.meta.is_none());
        assert_eq!(
            cache.credentials.expiration(),
            Utc.with_ymd_and_hms(2026, 11, 22, 13, 0, 0).unwrap()
        );
        let out = process_output(&cache.credentials);
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains(r#""Expiration":"2026-11-22T13:00:00Z""#));
    }

    #[test]
    fn refuses_each_malformed_document_naming_the_field() {
        let cases = [
            ("not json", "{", "not valid JSON"),
            ("array", "[]", "not a JSON object"),
            (
                "no Version",
                r#"{"AccessKeyId":"A"}"#,
                "`Version` is missing",
            ),
            (
                "Version 2",
                r#"{"Version":2}"#,
                "`Version` must be the number 1",
            ),
            (
                "Version as string",
                r#"{"Version":"1"}"#,
                "`Version` must be the number 1",
            ),
            ("no key id", r#"{"Version":1}"#, "`AccessKeyId` is missing"),
            (
                "empty secret",
                r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":""}"#,
                "`SecretAccessKey` is empty",
            ),
            (
                "token not a string",
                r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":7}"#,
                "`SessionToken` must be a string",
            ),
            (
                "no expiration",
                r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T"}"#,
                "`Expiration` is missing",
            ),
            (
                "expiration not RFC 3339",
                r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"1763816400"}"#,
                "`Expiration` is not an RFC 3339",
            ),
            (
                "Aovis not an object",
                r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"2026-11-22T13:00:00Z","Aovis":1}"#,
                "`Aovis` must be an object",
            ),
            (
                "negative serial",
                r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"2026-11-22T13:00:00Z","Aovis":{"serial":-1}}"#,
                "`Aovis.serial` must be a non-negative whole number",
            ),
        ];
        for (name, text, expected) in cases {
            let err = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{name}: {err}");
        }
    }

    #[test]
    fn to_json_writes_provenance() {
        let cache = CacheFile {
            credentials: Credentials::new(
                "ASIA1".into(),
                SecretString::new("s".into()),
                SecretString::new("t".into()),
                Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap(),
            ),
            meta: Some(CacheMeta {
                serial: 7,
                role_arn: "arn:aws:iam::1:role/r".into(),
                instance_id: "mi-1".into(),
                issued_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                received_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap(),
            }),
        };
        let again = parse(&cache.to_json()).unwrap();
        assert_eq!(again, cache);
    }
}
