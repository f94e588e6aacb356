//! The caches the daemon serves, loaded from `$STATE/profiles/<profile>.json`.
//!
//! Each delivery is read once, when it lands (see `watch`), and turned into the
//! exact response bodies of both endpoints, so a request costs a map lookup and an
//! expiry check. The bodies hold the secret; they live in zeroizing buffers that
//! hyper borrows for each response (`Bytes::from_owner`), so no request copies the
//! secret and the buffer is overwritten when the last response referring to it is
//! gone.
//!
//! A cache is used only if it is a regular file (not a symlink, FIFO or device),
//! owned by root or by the daemon's own user, not writable by group or others, and
//! at most 64 KiB: the same trust rules `aovis-cred` applies.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use aovis_formats::cache::{self, CacheMeta};
use aovis_formats::time::format_expiration;
use aovis_formats::{Credentials, ProfileName};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::open::open_regular;

/// Largest cache file accepted.
pub const MAX_CACHE_BYTES: u64 = 64 * 1024;

/// Credentials closer than this to expiry are not handed out: the same margin
/// `aovis-cred` keeps, so a client never receives credentials that die in transit.
pub const SERVE_MARGIN: TimeDelta = TimeDelta::seconds(60);

/// One delivery, ready to serve.
#[derive(Debug)]
pub struct Delivery {
    /// The credentials.
    pub credentials: Credentials,
    /// Provenance, when the cache has it.
    pub meta: Option<CacheMeta>,
    /// The role name IMDS lists: the last segment of the role ARN, or the profile
    /// name for a cache without provenance.
    pub role_name: String,
    /// The IMDS `security-credentials/<role>` body.
    pub imds_body: SecretBody,
    /// The container-credentials body.
    pub container_body: SecretBody,
}

/// A response body holding a secret: shared without copying, never printed.
pub struct SecretBody(Bytes);

impl SecretBody {
    /// The body for one response (a reference-counted view, not a copy).
    pub fn share(&self) -> Bytes {
        self.0.clone()
    }
}

impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("** redacted **")
    }
}

impl Delivery {
    /// Builds the response bodies; `loaded_at` stands in for `LastUpdated` when the
    /// cache has no provenance.
    pub fn new(
        profile: &ProfileName,
        credentials: Credentials,
        meta: Option<CacheMeta>,
        loaded_at: DateTime<Utc>,
    ) -> Self {
        let role_name = meta
            .as_ref()
            .and_then(|meta| role_name(&meta.role_arn))
            .unwrap_or(profile.as_str())
            .to_owned();
        let last_updated = meta.as_ref().map_or(loaded_at, |meta| meta.received_at);
        let expiration = format_expiration(credentials.expiration());
        let imds = ImdsDocument {
            code: "Success",
            last_updated: format_expiration(last_updated),
            kind: "AWS-HMAC",
            access_key_id: credentials.access_key_id(),
            secret_access_key: credentials.secret_access_key().expose(),
            token: credentials.session_token().expose(),
            expiration: &expiration,
        };
        let container = ContainerDocument {
            access_key_id: credentials.access_key_id(),
            secret_access_key: credentials.secret_access_key().expose(),
            token: credentials.session_token().expose(),
            expiration: &expiration,
            role_arn: meta.as_ref().map(|meta| meta.role_arn.as_str()),
            account_id: meta.as_ref().and_then(|meta| account_id(&meta.role_arn)),
        };
        let imds_body = secret_json(&imds, credentials_len(&credentials));
        let container_body = secret_json(&container, credentials_len(&credentials));
        Self {
            credentials,
            meta,
            role_name,
            imds_body,
            container_body,
        }
    }

    /// True when the credentials may be handed out at `now`.
    pub fn servable_at(&self, now: DateTime<Utc>) -> bool {
        self.credentials.expiration() - now > SERVE_MARGIN
    }
}

/// The IMDS credentials document, as EC2 answers
/// `GET /latest/meta-data/iam/security-credentials/<role>`.
#[derive(Serialize)]
struct ImdsDocument<'a> {
    #[serde(rename = "Code")]
    code: &'a str,
    #[serde(rename = "LastUpdated")]
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'a str,
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "Token")]
    token: &'a str,
    #[serde(rename = "Expiration")]
    expiration: &'a str,
}

/// The container-credentials document, as the ECS agent answers.
#[derive(Serialize)]
struct ContainerDocument<'a> {
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "Token")]
    token: &'a str,
    #[serde(rename = "Expiration")]
    expiration: &'a str,
    #[serde(rename = "RoleArn", skip_serializing_if = "Option::is_none")]
    role_arn: Option<&'a str>,
    #[serde(rename = "AccountId", skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

fn credentials_len(credentials: &Credentials) -> usize {
    credentials.access_key_id().len()
        + credentials.secret_access_key().expose().len()
        + credentials.session_token().expose().len()
}

/// A buffer that zeroizes itself when the last response using it is dropped.
struct SecretBytes(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Serializes into a buffer sized up front (growing it would leave a copy of the
/// secret in freed memory) and hands it to `Bytes` without copying.
fn secret_json(document: &impl Serialize, secrets_len: usize) -> SecretBody {
    let mut out = Zeroizing::new(Vec::with_capacity(512 + secrets_len * 2));
    // Writing plain strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, document);
    SecretBody(Bytes::from_owner(SecretBytes(out)))
}

/// `arn:aws:iam::111122223333:role/path/name` -> `name`.
fn role_name(arn: &str) -> Option<&str> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// `arn:aws:iam::111122223333:role/x` -> `111122223333`.
fn account_id(arn: &str) -> Option<&str> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

/// What the daemon knows about one profile's cache.
#[derive(Debug, Clone)]
pub enum Slot {
    /// A usable delivery (possibly expired: health decides).
    Loaded(Arc<Delivery>),
    /// No cache file.
    Missing,
    /// A cache that cannot be used, with why (never a value from the file).
    Unreadable(String),
}

/// Reads one profile's cache.
pub fn load(profile: &ProfileName, path: &Path, now: DateTime<Utc>) -> Slot {
    match read_trusted(path) {
        Ok(None) => Slot::Missing,
        Ok(Some(bytes)) => match cache::parse(&bytes) {
            Ok(file) => Slot::Loaded(Arc::new(Delivery::new(
                profile,
                file.credentials,
                file.meta,
                now,
            ))),
            Err(err) => Slot::Unreadable(err.to_string()),
        },
        Err(reason) => Slot::Unreadable(reason),
    }
}

/// The file's bytes, `None` when it does not exist, or why it is not trusted.
fn read_trusted(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let (file, metadata) = match open_regular(path) {
        Ok(Some(opened)) => opened,
        Ok(None) => return Ok(None),
        Err(err) => return Err(crate::one_line(&err)),
    };
    if metadata.mode() & 0o022 != 0 {
        return Err("it is writable by group or others".to_owned());
    }
    let me = nix::unistd::geteuid().as_raw();
    if metadata.uid() != 0 && metadata.uid() != me {
        return Err(format!("it is owned by uid {}, not root", metadata.uid()));
    }
    if metadata.len() > MAX_CACHE_BYTES {
        return Err("it is larger than 64 KiB".to_owned());
    }
    read_capped(file).map(Some)
}

fn read_capped(file: File) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_CACHE_BYTES as usize + 1));
    file.take(MAX_CACHE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read it: {err}"))?;
    if bytes.len() as u64 > MAX_CACHE_BYTES {
        return Err("it is larger than 64 KiB".to_owned());
    }
    Ok(bytes)
}

/// Every watched profile's slot, shared between the watcher (writer) and the
/// request handlers (readers).
#[derive(Debug, Default)]
pub struct Store {
    slots: RwLock<BTreeMap<ProfileName, Slot>>,
}

impl Store {
    /// The loaded delivery of `profile`, if any.
    pub fn delivery(&self, profile: &ProfileName) -> Option<Arc<Delivery>> {
        // A panic cannot leave the map half-updated (inserts are single calls), so a
        // poisoned lock is still consistent.
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        match slots.get(profile) {
            Some(Slot::Loaded(delivery)) => Some(Arc::clone(delivery)),
            _ => None,
        }
    }

    /// Replaces the slot of `profile`.
    pub fn set(&self, profile: ProfileName, slot: Slot) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        slots.insert(profile, slot);
    }

    /// Drops profiles that are no longer watched.
    pub fn retain(&self, keep: impl Fn(&ProfileName) -> bool) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|profile, _| keep(profile));
    }

    /// A copy of every slot (cheap: deliveries are shared).
    pub fn snapshot(&self) -> BTreeMap<ProfileName, Slot> {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aovis_formats::SecretString;
    use chrono::TimeZone;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) const SECRET: &str = "SeCrEt/store+test";
    pub(crate) const TOKEN: &str = "ToKeN//store-test==";

    /// A delivery of role `onprem`, key `ASIATEST0000WXYZ`.
    pub(crate) fn delivery(
        serial: u64,
        issued_at: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Delivery {
        let credentials = Credentials::new(
            "ASIATEST0000WXYZ".to_owned(),
            SecretString::new(SECRET.to_owned()),
            SecretString::new(TOKEN.to_owned()),
            expires,
        );
        let meta = CacheMeta {
            serial,
            role_arn: "arn:aws:iam::111122223333:role/team/onprem".to_owned(),
            instance_id: "mi-0123456789abcdef0".to_owned(),
            issued_at,
            received_at: issued_at + TimeDelta::seconds(1),
        };
        Delivery::new(
            &ProfileName::new("default").unwrap(),
            credentials,
            Some(meta),
            issued_at,
        )
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    #[test]
    fn imds_body_has_the_fields_sdks_read() {
        let delivery = delivery(1, noon(), noon() + TimeDelta::hours(1));
        let value: serde_json::Value = serde_json::from_slice(&delivery.imds_body.share()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "Code": "Success", "LastUpdated": "2026-11-22T12:00:01Z", "Type": "AWS-HMAC",
                "AccessKeyId": "ASIATEST0000WXYZ", "SecretAccessKey": SECRET, "Token": TOKEN,
                "Expiration": "2026-11-22T13:00:00Z"
            })
        );
        assert_eq!(delivery.role_name, "onprem");
    }

    #[test]
    fn container_body_has_the_fields_sdks_read() {
        let delivery = delivery(1, noon(), noon() + TimeDelta::hours(1));
        let value: serde_json::Value =
            serde_json::from_slice(&delivery.container_body.share()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "AccessKeyId": "ASIATEST0000WXYZ", "SecretAccessKey": SECRET, "Token": TOKEN,
                "Expiration": "2026-11-22T13:00:00Z",
                "RoleArn": "arn:aws:iam::111122223333:role/team/onprem",
                "AccountId": "111122223333"
            })
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let delivery = delivery(1, noon(), noon() + TimeDelta::hours(1));
        let printed = format!("{delivery:?}");
        assert!(
            !printed.contains(SECRET) && !printed.contains(TOKEN),
            "{printed}"
        );
    }

    #[test]
    fn role_names_and_accounts_from_arns() {
        let cases = [
            (
                "plain",
                "arn:aws:iam::111122223333:role/onprem",
                Some("onprem"),
                Some("111122223333"),
            ),
            (
                "with path",
                "arn:aws:iam::111122223333:role/a/b/build",
                Some("build"),
                Some("111122223333"),
            ),
            (
                "china partition",
                "arn:aws-cn:iam::111122223333:role/x",
                Some("x"),
                Some("111122223333"),
            ),
            (
                "not a role",
                "arn:aws:iam::111122223333:user/bob",
                None,
                Some("111122223333"),
            ),
            ("not an arn", "onprem", None, None),
            (
                "empty name",
                "arn:aws:iam::111122223333:role/",
                None,
                Some("111122223333"),
            ),
            ("short account", "arn:aws:iam::1111:role/x", Some("x"), None),
        ];
        for (name, arn, role, account) in cases {
            assert_eq!(role_name(arn), role, "{name}");
            assert_eq!(account_id(arn), account, "{name}");
        }
    }

    #[test]
    fn serves_until_a_minute_before_expiry() {
        let delivery = delivery(1, noon(), noon() + TimeDelta::hours(1));
        let expiry = noon() + TimeDelta::hours(1);
        assert!(delivery.servable_at(expiry - TimeDelta::seconds(61)));
        assert!(!delivery.servable_at(expiry - TimeDelta::seconds(60)));
        assert!(!delivery.servable_at(expiry + TimeDelta::hours(1)));
    }

    fn cache_text() -> String {
        format!(
            r#"{{"Version":1,"AccessKeyId":"ASIATEST0000WXYZ","SecretAccessKey":"{SECRET}","SessionToken":"{TOKEN}","Expiration":"2026-11-22T13:00:00Z","Aovis":{{"serial":5,"role_arn":"arn:aws:iam::111122223333:role/onprem","instance_id":"mi-0123456789abcdef0","issued_at":"2026-11-22T12:00:00Z","received_at":"2026-11-22T12:00:01Z"}}}}"#
        )
    }

    #[test]
    fn loads_a_cache_and_refuses_untrusted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let profile = ProfileName::new("default").unwrap();
        let path = dir.path().join("default.json");
        let write = |text: &str, mode: u32| {
            let _ = fs::remove_file(&path);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        };

        assert!(matches!(load(&profile, &path, noon()), Slot::Missing));

        write(&cache_text(), 0o640);
        let Slot::Loaded(delivery) = load(&profile, &path, noon()) else {
            panic!("a valid cache must load");
        };
        assert_eq!(delivery.meta.as_ref().unwrap().serial, 5);

        let huge = " ".repeat(MAX_CACHE_BYTES as usize + 1);
        let cases: [(&str, &str, u32, &str); 4] = [
            (
                "group-writable",
                &cache_text(),
                0o660,
                "writable by group or others",
            ),
            (
                "world-writable",
                &cache_text(),
                0o646,
                "writable by group or others",
            ),
            ("not JSON", "garbage", 0o640, "JSON"),
            ("too large", &huge, 0o640, "larger than 64 KiB"),
        ];
        for (name, text, mode, expected) in cases {
            write(text, mode);
            match load(&profile, &path, noon()) {
                Slot::Unreadable(reason) => {
                    assert!(reason.contains(expected), "{name}: {reason}");
                    assert!(!reason.contains(SECRET), "{name}: {reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }

        fs::remove_file(&path).unwrap();
        let target = dir.path().join("real.json");
        fs::write(&target, cache_text()).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(
            matches!(load(&profile, &path, noon()), Slot::Unreadable(reason) if reason.contains("symlink"))
        );

        fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(
            matches!(load(&profile, &path, noon()), Slot::Unreadable(reason) if reason.contains("not a regular file"))
        );
    }
}
