//! Temporary AWS credentials as they travel through aovis.
//!
//! The secret access key and the session token live in [`SecretString`], which
//! prints as `** redacted **` and overwrites its bytes when dropped. The access key
//! id is not a secret (it appears in CloudTrail and in error messages of every AWS
//! API), so it stays a plain `String`; even so, logs show only its last four
//! characters, through [`Credentials::key_id_suffix`].

use std::fmt;

use chrono::{DateTime, Utc};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::time::format_expiration;

/// A string that never prints and is zeroized when dropped.
///
/// There is deliberately no `Display`, `Clone` or `Serialize`: the only way to the
/// text is [`SecretString::expose`], so every place that handles the secret is easy
/// to find in review.
#[derive(Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a string, taking ownership so no unzeroized copy stays behind.
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret text. Call only to hand it to its one legitimate consumer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

/// Temporary credentials of an assumed role.
#[derive(PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: SecretString,
    expiration: DateTime<Utc>,
}

impl Credentials {
    /// Builds credentials from their four parts.
    pub fn new(
        access_key_id: String,
        secret_access_key: SecretString,
        session_token: SecretString,
        expiration: DateTime<Utc>,
    ) -> Self {
        Self {
            access_key_id,
            secret_access_key,
            session_token,
            expiration,
        }
    }

    /// The access key id (`ASIA...`). Not secret, but log only [`Self::key_id_suffix`].
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key.
    pub fn secret_access_key(&self) -> &SecretString {
        &self.secret_access_key
    }

    /// The session token.
    pub fn session_token(&self) -> &SecretString {
        &self.session_token
    }

    /// When the credentials stop working, in UTC, to the second.
    pub fn expiration(&self) -> DateTime<Utc> {
        self.expiration
    }

    /// The last four characters of the key id: enough to match a delivery with
    /// CloudTrail, too little to be of use to anyone else.
    pub fn key_id_suffix(&self) -> &str {
        let id = self.access_key_id.as_str();
        let start = id
            .char_indices()
            .rev()
            .nth(3)
            .map(|(index, _)| index)
            .unwrap_or(0);
        &id[start..]
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "access_key_id",
                &format_args!("...{}", self.key_id_suffix()),
            )
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("expiration", &format_expiration(self.expiration))
            .finish()
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key ...{} expiring {}",
            self.key_id_suffix(),
            format_expiration(self.expiration)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Credentials {
        Credentials::new(
            "ASIAEXAMPLEKEY1234".to_owned(),
            SecretString::new("s3cr3t-Secret-Value".to_owned()),
            SecretString::new("t0k3n-Session-Token".to_owned()),
            Utc.with_ymd_and_hms(2026, 11, 22, 13, 0, 0).unwrap(),
        )
    }

    #[test]
    fn debug_and_display_redact_secret_and_token() {
        let creds = sample();
        for text in [
            format!("{creds:?}"),
            format!("{creds:#?}"),
            creds.to_string(),
        ] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(!text.contains("t0k3n"), "{text}");
            assert!(!text.contains("ASIAEXAMPLEKEY"), "{text}");
            assert!(text.contains("1234"), "{text}");
        }
        assert_eq!(format!("{:?}", creds.secret_access_key()), "** redacted **");
    }

    #[test]
    fn key_id_suffix_is_last_four_characters() {
        assert_eq!(sample().key_id_suffix(), "1234");
        let short = Credentials::new(
            "AB".to_owned(),
            SecretString::new(String::new()),
            SecretString::new(String::new()),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        );
        assert_eq!(short.key_id_suffix(), "AB");
    }

    #[test]
    fn secret_zeroizes_in_place() {
        let mut secret = SecretString::new("wipe-me".to_owned());
        secret.zeroize();
        assert_eq!(secret.expose(), "");
    }
}
