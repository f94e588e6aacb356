//! Sealing: envelope JSON, age-encrypted to the host's X25519 recipient (binary age,
//! not armored), then standard base64. That base64 text is the only thing that
//! crosses SSM, and the document's `allowedPattern` admits nothing else.
//!
//! Also the input of `aovis-rotator seal`: credentials JSON on stdin, either the
//! `credential_process` shape (`{"Version":1,"AccessKeyId":...}`), the STS
//! `Credentials` object, or the whole `aws sts assume-role` output
//! (`{"Credentials":{...},"AssumedRoleUser":{...}}`).

use std::fmt;
use std::str::FromStr;

use age::x25519::Recipient;
use aovis_formats::envelope::Envelope;
use aovis_formats::time::parse_timestamp;
use aovis_formats::{Credentials, SecretString};
use base64::Engine as _;
use serde_json::{Map, Value};

/// Why sealing or its input failed. Never includes a secret.
#[derive(Debug)]
pub enum SealError {
    /// The recipient is not `age1...` bech32 of an X25519 key.
    BadRecipient,
    /// age refused to encrypt.
    Encrypt(age::EncryptError),
    /// The credentials JSON is unusable; names the field.
    Input(String),
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRecipient => {
                f.write_str("the recipient is not an age X25519 recipient (age1... in bech32)")
            }
            Self::Encrypt(_) => f.write_str("age could not encrypt the envelope"),
            Self::Input(problem) => write!(f, "credentials on stdin: {problem}"),
        }
    }
}

impl std::error::Error for SealError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Encrypt(err) => Some(err),
            _ => None,
        }
    }
}

/// Parses and checks a recipient as stored in Parameter Store or given on the
/// command line: exactly `age1` + bech32 of a 32-byte key, no whitespace.
pub fn parse_recipient(text: &str) -> Result<Recipient, SealError> {
    if !text.starts_with("age1") {
        return Err(SealError::BadRecipient);
    }
    Recipient::from_str(text).map_err(|_| SealError::BadRecipient)
}

/// The recipient in the output of `aovis-agent enroll` as SSM returns it: the
/// first line, trimmed, must be an age X25519 recipient. Returns the text that is
/// stored in Parameter Store and the parsed recipient.
pub fn recipient_from_enroll_output(output: &str) -> Result<(String, Recipient), SealError> {
    let line = output.lines().next().unwrap_or_default().trim();
    let recipient = parse_recipient(line)?;
    Ok((line.to_owned(), recipient))
}

/// Seals an envelope: JSON, age to `recipient`, standard base64.
pub fn seal(envelope: &Envelope, recipient: &Recipient) -> Result<String, SealError> {
    let plaintext = envelope.to_json();
    let ciphertext = age::encrypt(recipient, &plaintext).map_err(SealError::Encrypt)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(ciphertext))
}

/// Reads credentials from the JSON shapes listed in the module docs. Also returns
/// the role ARN derived from `AssumedRoleUser.Arn` when the input carries it.
pub fn parse_credentials_input(bytes: &[u8]) -> Result<(Credentials, Option<String>), SealError> {
    let input = |p: &str| SealError::Input(p.to_owned());
    // Errors never quote serde's message: it may echo part of the secret.
    let mut map: Map<String, Value> = match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(input("not a JSON object")),
        Err(_) => return Err(input("not valid JSON")),
    };
    let role_arn = map
        .get("AssumedRoleUser")
        .and_then(|user| user.get("Arn"))
        .and_then(Value::as_str)
        .and_then(role_arn_of_assumed_role);
    let mut fields = match map.remove("Credentials") {
        Some(Value::Object(inner)) => inner,
        Some(_) => return Err(input("field `Credentials` must be an object")),
        None => map,
    };
    let mut take = |name: &'static str| match fields.remove(name) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(_) => Err(SealError::Input(format!(
            "field `{name}` must be a non-empty string"
        ))),
        None => Err(SealError::Input(format!("field `{name}` is missing"))),
    };
    let key_id = take("AccessKeyId")?;
    let secret = SecretString::new(take("SecretAccessKey")?);
    let token = SecretString::new(take("SessionToken")?);
    let expiration = parse_timestamp(&take("Expiration")?)
        .ok_or_else(|| input("field `Expiration` is not an RFC 3339 timestamp"))?;
    Ok((
        Credentials::new(key_id, secret, token, expiration),
        role_arn,
    ))
}

/// `arn:aws:sts::111122223333:assumed-role/onprem/session` -> the role's ARN
/// `arn:aws:iam::111122223333:role/onprem`. A role path is not in the session ARN,
/// so this is right only for roles at path `/`; `--role-arn` overrides it.
fn role_arn_of_assumed_role(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, partition, "sts", _, account, resource] = parts.as_slice() else {
        return None;
    };
    let role = resource.strip_prefix("assumed-role/")?.split('/').next()?;
    Some(format!("arn:{partition}:iam::{account}:role/{role}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use aovis_formats::ProfileName;
    use chrono::{TimeZone, Utc};
    use std::io::Read;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn envelope() -> Envelope {
        Envelope {
            instance_id: "mi-0123456789abcdef0".into(),
            profile: ProfileName::new("default").unwrap(),
            serial: 7,
            issued_at: Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap(),
            role_arn: "arn:aws:iam::111122223333:role/onprem".into(),
            credentials: Credentials::new(
                "ASIAEXAMPLE".into(),
                SecretString::new(SECRET.into()),
                SecretString::new("token".into()),
                Utc.with_ymd_and_hms(2026, 11, 22, 13, 0, 0).unwrap(),
            ),
        }
    }

    #[test]
    fn sealed_payload_is_base64_binary_age_that_the_host_key_opens() {
        let identity = age::x25519::Identity::generate();
        let payload = seal(&envelope(), &identity.to_public()).unwrap();
        assert!(payload
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)));
        assert!(!payload.contains(SECRET));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&payload)
            .unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "binary age header"
        );
        let decryptor = age::Decryptor::new(&bytes[..]).unwrap();
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap();
        let mut plain = Vec::new();
        reader.read_to_end(&mut plain).unwrap();
        let opened = aovis_formats::envelope::parse(&plain).unwrap();
        assert_eq!(opened, envelope());
        // Another host's key cannot open it.
        let other = age::x25519::Identity::generate();
        let decryptor = age::Decryptor::new(&bytes[..]).unwrap();
        assert!(decryptor
            .decrypt(std::iter::once(&other as &dyn age::Identity))
            .is_err());
        let _ = identity.to_string().expose_secret().len();
    }

    #[test]
    fn recipient_forms() {
        let good = age::x25519::Identity::generate().to_public().to_string();
        assert!(parse_recipient(&good).is_ok());
        let cases = [
            ("empty", String::new()),
            ("trailing newline", format!("{good}\n")),
            ("leading space", format!(" {good}")),
            ("upper case", good.to_uppercase()),
            // The last character changed (to one it is not: a 1 in 32 flake otherwise).
            (
                "bad checksum",
                format!(
                    "{}{}",
                    &good[..good.len() - 1],
                    if good.ends_with('q') { 'p' } else { 'q' }
                ),
            ),
            ("ssh key", "ssh-ed25519 AAAAC3Nza".into()),
            ("secret key", "AGE-SECRET-KEY-1QQQQ".into()),
        ];
        for (name, text) in cases {
            assert!(parse_recipient(&text).is_err(), "{name}");
        }
    }

    #[test]
    fn reads_the_three_credential_shapes() {
        let inner = format!(
            r#"{{"AccessKeyId":"ASIAX","SecretAccessKey":"{SECRET}","SessionToken":"t","Expiration":"2026-11-22T13:00:00+00:00"}}"#
        );
        let process = inner.replace('{', r#"{"Version":1,"#);
        let sts = format!(
            r#"{{"Credentials":{inner},"AssumedRoleUser":{{"AssumedRoleId":"AROA:s","Arn":"arn:aws:sts::111122223333:assumed-role/onprem/aovis-mi-1"}}}}"#
        );
        for (name, text, role) in [
            ("sts credentials", inner.as_str(), None),
            ("credential_process", process.as_str(), None),
            (
                "assume-role output",
                sts.as_str(),
                Some("arn:aws:iam::111122223333:role/onprem"),
            ),
        ] {
            let (creds, derived) = parse_credentials_input(text.as_bytes()).unwrap();
            assert_eq!(creds.access_key_id(), "ASIAX", "{name}");
            assert_eq!(creds.secret_access_key().expose(), SECRET, "{name}");
            assert_eq!(derived.as_deref(), role, "{name}");
        }
    }

    #[test]
    fn refuses_bad_credential_input_without_echoing_it() {
        let cases = [
            ("not json", SECRET.to_owned(), "not valid JSON"),
            ("array", "[]".to_owned(), "not a JSON object"),
            ("no secret", r#"{"AccessKeyId":"A","SessionToken":"t","Expiration":"2026-11-22T13:00:00Z"}"#.to_owned(), "`SecretAccessKey` is missing"),
            ("numeric secret", r#"{"AccessKeyId":"A","SecretAccessKey":5,"SessionToken":"t","Expiration":"2026-11-22T13:00:00Z"}"#.to_owned(), "`SecretAccessKey` must be a non-empty string"),
            ("bad expiration", format!(r#"{{"AccessKeyId":"A","SecretAccessKey":"{SECRET}","SessionToken":"t","Expiration":"soon"}}"#), "`Expiration` is not an RFC 3339"),
            ("credentials not object", r#"{"Credentials":"x"}"#.to_owned(), "`Credentials` must be an object"),
        ];
        for (name, text, expected) in cases {
            let err = parse_credentials_input(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{name}: {err}");
            assert!(!err.contains(SECRET), "{name}: {err}");
        }
    }

    /// Every form of `aovis-agent enroll` output the rotator may read back from
    /// `GetCommandInvocation`; the fuzz target `rotator_enroll_output` checks the
    /// same properties on arbitrary input.
    #[test]
    fn enroll_output_forms() {
        let identity = age::x25519::Identity::generate();
        let key = identity.to_public().to_string();
        let secret = identity.to_string();
        let secret = secret.expose_secret();
        let other = age::x25519::Identity::generate().to_public().to_string();
        let last = if key.ends_with('q') { "p" } else { "q" };
        let checksum_error = format!("{}{last}", &key[..key.len() - 1]);
        // (name, output, accepted)
        let cases: Vec<(&str, String, bool)> = vec![
            ("the agent's stdout", format!("{key}\n"), true),
            ("no newline", key.clone(), true),
            ("CRLF", format!("{key}\r\n"), true),
            ("padded", format!("  {key}\t\n"), true),
            (
                "stderr after SSM's separator",
                format!("{key}\n\n----------ERROR-------\nwarning\n"),
                true,
            ),
            ("empty", String::new(), false),
            (
                "the agent refused",
                "aovis-agent: cannot write host.key\n".into(),
                false,
            ),
            ("a blank line first", format!("\n{key}\n"), false),
            ("upper case", key.to_uppercase(), false),
            (
                "two recipients on one line",
                format!("{key} {other}"),
                false,
            ),
            ("cut short", key[..key.len() - 1].to_owned(), false),
            ("a checksum error", checksum_error, false),
            ("the secret key instead", format!("{secret}\n"), false),
            (
                "an ssh key",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI test\n".into(),
                false,
            ),
        ];
        for (name, output, accepted) in cases {
            match recipient_from_enroll_output(&output) {
                Ok((stored, recipient)) => {
                    assert!(accepted, "{name}: accepted {stored}");
                    assert_eq!(stored, key, "{name}");
                    assert_eq!(recipient.to_string(), key, "{name}");
                }
                Err(err) => {
                    assert!(!accepted, "{name}: {err}");
                    assert!(matches!(err, SealError::BadRecipient), "{name}");
                    assert!(!err.to_string().contains(secret), "{name}");
                }
            }
        }
    }
}
