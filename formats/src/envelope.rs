//! The envelope: what the rotator seals to one host's key.
//!
//! ```json
//! {"v":1,"instance_id":"mi-0123456789abcdef0","profile":"default",
//!  "serial":1763814000123,"issued_at":"2026-11-22T12:00:00Z",
//!  "role_arn":"arn:aws:iam::111122223333:role/onprem",
//!  "credentials":{"AccessKeyId":"ASIA...","SecretAccessKey":"...",
//!                 "SessionToken":"...","Expiration":"2026-11-22T13:00:00Z"}}
//! ```
//!
//! This module holds only the plaintext JSON. Sealing (age to the host's X25519
//! recipient, then standard base64) happens in the rotator and opening in the agent,
//! so this crate, and with it `aovis-cred`, does not link any cryptography.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::credentials::Credentials;
use crate::fields::{
    parse_object, take_credentials, take_nonempty, take_string, take_time, take_u64,
    take_version_1, CredentialFieldNames, FormatError,
};
use crate::profile::ProfileName;
use crate::time::format_expiration;

/// A delivery of one profile's credentials to one host.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The managed node the delivery is for.
    pub instance_id: String,
    /// The profile it fills.
    pub profile: ProfileName,
    /// Grows with every rotation round; the agent refuses anything not greater than
    /// what it holds, which stops replays.
    pub serial: u64,
    /// When the rotator sealed it.
    pub issued_at: DateTime<Utc>,
    /// The role the credentials belong to.
    pub role_arn: String,
    /// The credentials.
    pub credentials: Credentials,
}

const NAMES: CredentialFieldNames = CredentialFieldNames {
    key_id: "credentials.AccessKeyId",
    secret: "credentials.SecretAccessKey",
    token: "credentials.SessionToken",
    expiration: "credentials.Expiration",
};

/// Parses an opened envelope.
pub fn parse(bytes: &[u8]) -> Result<Envelope, FormatError> {
    let mut map = parse_object(bytes)?;
    take_version_1(&mut map, "v", "v")?;
    let instance_id = take_nonempty(&mut map, "instance_id", "instance_id")?;
    let profile =
        ProfileName::new(&take_string(&mut map, "profile", "profile")?).map_err(|_| {
            FormatError::Field {
            field: "profile",
            problem:
                "is not a valid profile name (1 to 64 of A-Z a-z 0-9 _ . -, not starting with '.')",
        }
        })?;
    let serial = take_u64(&mut map, "serial", "serial")?;
    let issued_at = take_time(&mut map, "issued_at", "issued_at")?;
    let role_arn = take_nonempty(&mut map, "role_arn", "role_arn")?;
    let credentials = match map.remove("credentials") {
        Some(Value::Object(mut inner)) => take_credentials(&mut inner, &NAMES)?,
        Some(_) => {
            return Err(FormatError::Field {
                field: "credentials",
                problem: "must be an object",
            })
        }
        None => {
            return Err(FormatError::Field {
                field: "credentials",
                problem: "is missing",
            })
        }
    };
    Ok(Envelope {
        instance_id,
        profile,
        serial,
        issued_at,
        role_arn,
        credentials,
    })
}

#[derive(Serialize)]
struct EnvelopeDocument<'a> {
    v: u8,
    instance_id: &'a str,
    profile: &'a str,
    serial: u64,
    issued_at: String,
    role_arn: &'a str,
    credentials: CredentialsDocument<'a>,
}

#[derive(Serialize)]
struct CredentialsDocument<'a> {
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "SessionToken")]
    session_token: &'a str,
    #[serde(rename = "Expiration")]
    expiration: String,
}

impl Envelope {
    /// The plaintext JSON, in a buffer that zeroizes itself when dropped.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let document = EnvelopeDocument {
            v: 1,
            instance_id: &self.instance_id,
            profile: self.profile.as_str(),
            serial: self.serial,
            issued_at: format_expiration(self.issued_at),
            role_arn: &self.role_arn,
            credentials: CredentialsDocument {
                access_key_id: self.credentials.access_key_id(),
                secret_access_key: self.credentials.secret_access_key().expose(),
                session_token: self.credentials.session_token().expose(),
                expiration: format_expiration(self.credentials.expiration()),
            },
        };
        let estimate = 512
            + self.instance_id.len()
            + self.role_arn.len()
            + document.credentials.access_key_id.len()
            + document.credentials.secret_access_key.len()
            + document.credentials.session_token.len();
        let mut out = Zeroizing::new(Vec::with_capacity(estimate));
        // Writing plain strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &document);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"v":1,"instance_id":"mi-0123456789abcdef0","profile":"default","serial":1763814000123,"issued_at":"2026-11-22T12:00:00Z","role_arn":"arn:aws:iam::111122223333:role/onprem","credentials":{"AccessKeyId":"ASIAX","SecretAccessKey":"sekrit","SessionToken":"tok","Expiration":"2026-11-22T13:00:00Z"}}"#;

    #[test]
    fn round_trips_the_design_example() {
        let envelope = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(envelope.profile.as_str(), "default");
        assert_eq!(envelope.serial, 1_763_814_000_123);
        assert_eq!(envelope.to_json().as_slice(), SAMPLE.as_bytes());
    }

    #[test]
    fn refuses_unknown_version_bad_profile_and_missing_credentials() {
        let v2 = SAMPLE.replace(r#""v":1"#, r#""v":2"#);
        assert!(parse(v2.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("`v`"));
        let bad = SAMPLE.replace(r#""profile":"default""#, r#""profile":"../x""#);
        assert!(parse(bad.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("`profile`"));
        let no_creds = r#"{"v":1,"instance_id":"mi-1","profile":"p","serial":1,"issued_at":"2026-11-22T12:00:00Z","role_arn":"r"}"#;
        assert!(parse(no_creds.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("`credentials` is missing"));
        let no_secret = SAMPLE.replace(r#""SecretAccessKey":"sekrit","#, "");
        let err = parse(no_secret.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("`credentials.SecretAccessKey` is missing"),
            "{err}"
        );
    }
}
