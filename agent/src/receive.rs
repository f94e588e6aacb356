//! `aovis-agent receive`: open one delivery and store it as the profile's cache.
//!
//! The payload (from `--payload` or stdin) is standard base64 of an age file sealed
//! to this host's X25519 recipient (ASCII whitespace such as line wrapping is
//! ignored); inside is the envelope of
//! `aovis_formats::envelope`. The checks run cheapest first, and every refusal
//! leaves the cache untouched:
//!
//! | check | refusal (exit code) |
//! |---|---|
//! | at most 64 KiB | [`ReceiveError::TooLarge`] (3) |
//! | standard base64 with padding | [`ReceiveError::Base64`] (3) |
//! | age decryption with the host key | [`ReceiveError::WrongKey`], [`ReceiveError::Undecryptable`] (4) |
//! | envelope JSON with `v` 1 | [`ReceiveError::Envelope`] (5) |
//! | a valid profile name | [`ReceiveError::ProfileName`] (5) |
//! | this host's instance id | [`ReceiveError::OtherHost`] (6) |
//! | serial greater than the cached one | [`ReceiveError::NotNewer`] (7) |
//! | more than 60 s left | [`ReceiveError::Expired`] (8) |
//!
//! The serial check and the write happen under the profile's lock (see
//! [`crate::store`]). A cache that exists but is not a valid cache counts as
//! serial 0, so a delivery repairs it. The new cache is written with
//! `write_atomic`: owner root when running as root, the profile's group from
//! `agent.toml`, mode 0640.
//!
//! The decrypted plaintext lives in a `Zeroizing` buffer sized up front, and no
//! message of this module quotes the payload or the envelope's values.

use std::fmt;
use std::io::{self, Read};
use std::iter;
use std::path::PathBuf;

use aovis_formats::atomic::{remove_stale_temps, write_atomic, AtomicWriteError, FileSpec, Stage};
use aovis_formats::cache::{CacheFile, CacheMeta};
use aovis_formats::envelope::{self, Envelope};
use aovis_formats::paths::Paths;
use aovis_formats::time::format_expiration;
use aovis_formats::{FormatError, ProfileName};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use zeroize::Zeroizing;

use crate::config::AgentConfig;
use crate::identity::{HostIdentity, IdentityError};
use crate::instance::{InstanceError, InstanceId};
use crate::store::{self, StoreError};

/// The largest payload accepted, in bytes of base64 text. A real one is a few KiB,
/// and SSM caps a whole command's parameters at 64 KB.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Credentials with less time than this left are refused, as `aovis-cred` would
/// refuse to serve them.
pub const MINIMUM_REMAINING: TimeDelta = TimeDelta::seconds(60);

/// Mode of a cache file: owner read/write, group read.
pub const CACHE_MODE: u32 = 0o640;

/// What was stored, for the one-line report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The profile written.
    pub profile: ProfileName,
    /// Last four characters of the key id.
    pub key_suffix: String,
    /// When the credentials expire.
    pub expiration: DateTime<Utc>,
    /// The delivery's serial.
    pub serial: u64,
}

impl fmt::Display for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stored profile '{}' (key ...{}, expires {}, serial {})",
            self.profile,
            self.key_suffix,
            format_expiration(self.expiration),
            self.serial
        )
    }
}

/// Why age could not open a payload, in our own words: age's messages are looked
/// up in its localization files at run time, and some of them span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeFailure {
    /// Not an age v1 file at all.
    NotAge,
    /// The header does not parse.
    Header,
    /// The header's MAC does not match: the header was altered.
    HeaderMac,
    /// The file key for this host's stanza does not decrypt.
    FileKey,
    /// A payload chunk does not authenticate: altered or truncated.
    Payload,
    /// Anything else age refuses.
    Other,
}

impl From<age::DecryptError> for AgeFailure {
    fn from(err: age::DecryptError) -> Self {
        match err {
            age::DecryptError::UnknownFormat => Self::NotAge,
            age::DecryptError::InvalidHeader => Self::Header,
            age::DecryptError::InvalidMac => Self::HeaderMac,
            age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
                Self::FileKey
            }
            age::DecryptError::Io(_) => Self::Payload,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for AgeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAge => "not an age v1 file",
            Self::Header => "the age header is malformed",
            Self::HeaderMac => "the age header's MAC does not match",
            Self::FileKey => "the file key does not decrypt",
            Self::Payload => "the encrypted payload does not authenticate (altered or truncated)",
            Self::Other => "age refused the file",
        })
    }
}

impl std::error::Error for AgeFailure {}

/// Why a delivery was refused or could not be stored. Display describes this layer
/// only; the cause, if any, is `source()`.
#[derive(Debug)]
pub enum ReceiveError {
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    TooLarge,
    /// The payload is empty.
    Empty,
    /// Reading stdin failed.
    Stdin(io::Error),
    /// The payload is not standard base64.
    Base64(base64::DecodeError),
    /// The host key is missing or unsafe.
    HostKey(IdentityError),
    /// The payload is sealed to another key.
    WrongKey,
    /// The payload is not an age file or was altered.
    Undecryptable(AgeFailure),
    /// The plaintext is not a valid envelope.
    Envelope(FormatError),
    /// The envelope names an invalid profile.
    ProfileName(FormatError),
    /// This host's instance id is unknown.
    Instance(InstanceError),
    /// The envelope is for another host.
    OtherHost {
        /// The instance id in the envelope.
        envelope: String,
        /// This host's.
        host: InstanceId,
    },
    /// The serial is not greater than the cached one (stale or replayed).
    NotNewer {
        /// The profile.
        profile: ProfileName,
        /// The delivery's serial.
        serial: u64,
        /// The cached serial.
        cached: u64,
    },
    /// The credentials expire within [`MINIMUM_REMAINING`] (or already have).
    Expired {
        /// The profile.
        profile: ProfileName,
        /// Their expiration.
        expiration: DateTime<Utc>,
    },
    /// The profile's group (from `agent.toml`) does not exist or cannot be looked up.
    Group {
        /// The profile.
        profile: ProfileName,
        /// The configured group.
        group: String,
        /// Set when the lookup itself failed.
        source: Option<nix::errno::Errno>,
    },
    /// Creating, locking or reading the profile store failed.
    Store(StoreError),
    /// Writing the new cache failed; the old one is intact.
    Write {
        /// The cache file.
        path: PathBuf,
        /// The cause.
        source: AtomicWriteError,
    },
}

impl ReceiveError {
    /// The process exit code of this refusal class (documented in `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::TooLarge | Self::Empty | Self::Base64(_) => 3,
            Self::WrongKey | Self::Undecryptable(_) => 4,
            Self::Envelope(_) | Self::ProfileName(_) => 5,
            Self::OtherHost { .. } => 6,
            Self::NotNewer { .. } => 7,
            Self::Expired { .. } => 8,
            Self::HostKey(_) => 9,
            Self::Instance(_) => 10,
            Self::Stdin(_) | Self::Group { .. } | Self::Store(_) | Self::Write { .. } => 1,
        }
    }
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(
                f,
                "refused: payload is larger than {MAX_PAYLOAD_BYTES} bytes"
            ),
            Self::Empty => f.write_str("refused: payload is empty"),
            Self::Stdin(_) => f.write_str("cannot read the payload from stdin"),
            Self::Base64(_) => f.write_str("refused: payload is not standard base64"),
            Self::HostKey(_) => f.write_str("cannot open deliveries"),
            Self::WrongKey => f.write_str(
                "refused: payload is not sealed to this host's key \
                 (re-enroll the host or check the rotator's recipient for it)",
            ),
            Self::Undecryptable(_) => {
                f.write_str("refused: payload is not a valid age file or was altered")
            }
            Self::Envelope(_) => f.write_str("refused: not a valid envelope"),
            Self::ProfileName(_) => f.write_str("refused: envelope has a bad profile name"),
            Self::Instance(_) => f.write_str("cannot check who the envelope is for"),
            Self::OtherHost { envelope, host } => write!(
                f,
                "refused: envelope is for instance {envelope}, this host is {} (from {})",
                host.id, host.source
            ),
            Self::NotNewer {
                profile,
                serial,
                cached,
            } => {
                let kind = if serial == cached {
                    "replayed"
                } else {
                    "stale"
                };
                write!(
                    f,
                    "refused: {kind} delivery for profile '{profile}': serial {serial} \
                     is not greater than the cached {cached}"
                )
            }
            Self::Expired {
                profile,
                expiration,
            } => write!(
                f,
                "refused: credentials for profile '{profile}' expire at {} \
                 (less than {} s from now)",
                format_expiration(*expiration),
                MINIMUM_REMAINING.num_seconds()
            ),
            Self::Group {
                profile,
                group,
                source: None,
            } => write!(
                f,
                "profile '{profile}': group '{group}' from agent.toml does not exist; \
                 create it or fix the config"
            ),
            Self::Group { profile, group, .. } => {
                write!(f, "profile '{profile}': cannot look up group '{group}'")
            }
            Self::Store(_) => f.write_str("cannot store the delivery"),
            // Every stage but the directory fsync fails before the rename, so the
            // old cache still stands; after the rename the new one is in place.
            Self::Write { path, source } if source.stage == Stage::SyncDirectory => write!(
                f,
                "stored {} but its rename may not survive a crash",
                path.display()
            ),
            Self::Write { path, .. } => write!(
                f,
                "cannot write {}; the previous cache is unchanged",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ReceiveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Stdin(source) => Some(source),
            Self::Base64(source) => Some(source),
            Self::HostKey(source) => Some(source),
            Self::Undecryptable(source) => Some(source),
            Self::Envelope(source) | Self::ProfileName(source) => Some(source),
            Self::Instance(source) => Some(source),
            Self::Group {
                source: Some(source),
                ..
            } => Some(source),
            Self::Store(source) => Some(source),
            Self::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<StoreError> for ReceiveError {
    fn from(source: StoreError) -> Self {
        Self::Store(source)
    }
}

/// Reads a payload from `input`, refusing more than [`MAX_PAYLOAD_BYTES`].
pub fn read_payload(input: impl Read) -> Result<Vec<u8>, ReceiveError> {
    let mut payload = Vec::with_capacity(8 * 1024);
    input
        .take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(ReceiveError::Stdin)?;
    Ok(payload)
}

/// Everything `receive` needs besides the payload. `instance_id` is resolved only
/// once an envelope has been opened, so it is passed as a function.
pub struct Host<'a> {
    /// The state and config directories.
    pub paths: &'a Paths,
    /// The agent config.
    pub config: &'a AgentConfig,
    /// Loads the host key.
    pub identity: &'a dyn Fn() -> Result<HostIdentity, IdentityError>,
    /// Resolves this host's instance id.
    pub instance_id: &'a dyn Fn() -> Result<InstanceId, InstanceError>,
    /// Whether cache files are to be owned by root (true when running as root).
    pub as_root: bool,
}

/// Opens, checks and stores one delivery as of `now`.
pub fn receive(
    host: &Host<'_>,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<Stored, ReceiveError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ReceiveError::TooLarge);
    }
    // Line breaks are allowed, so the output of `base64` (wrapped at 76 columns) can
    // be pasted or piped in a break-glass delivery.
    let text: Vec<u8> = payload
        .iter()
        .copied()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    if text.is_empty() {
        return Err(ReceiveError::Empty);
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(ReceiveError::Base64)?;
    let identity = (host.identity)().map_err(ReceiveError::HostKey)?;
    let plaintext = open(&identity, &sealed)?;
    let envelope = envelope::parse(&plaintext).map_err(|err| match err {
        FormatError::Field {
            field: "profile", ..
        } => ReceiveError::ProfileName(err),
        other => ReceiveError::Envelope(other),
    })?;
    drop(plaintext);

    let instance = (host.instance_id)().map_err(ReceiveError::Instance)?;
    if envelope.instance_id != instance.id {
        return Err(ReceiveError::OtherHost {
            envelope: envelope.instance_id,
            host: instance,
        });
    }
    store(host, envelope, now)
}

/// Decrypts `sealed` with the host identity into a zeroizing buffer.
fn open(identity: &HostIdentity, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ReceiveError> {
    let refused = |err| match err {
        age::DecryptError::NoMatchingKeys => ReceiveError::WrongKey,
        other => ReceiveError::Undecryptable(AgeFailure::from(other)),
    };
    let decryptor = age::Decryptor::new_buffered(sealed).map_err(refused)?;
    let mut reader = decryptor
        .decrypt(iter::once(identity.identity() as &dyn age::Identity))
        .map_err(refused)?;
    // The plaintext is shorter than the ciphertext, so the buffer never grows (and
    // never leaves a copy of the secret behind in freed memory).
    let mut plaintext = Zeroizing::new(Vec::with_capacity(sealed.len()));
    reader
        .read_to_end(&mut plaintext)
        .map_err(|_| ReceiveError::Undecryptable(AgeFailure::Payload))?;
    Ok(plaintext)
}

/// The serial and expiry checks and the write, under the profile's lock.
fn store(host: &Host<'_>, envelope: Envelope, now: DateTime<Utc>) -> Result<Stored, ReceiveError> {
    let profile = envelope.profile.clone();
    let gid = match host.config.profile(&profile).group {
        None => None,
        Some(group) => match nix::unistd::Group::from_name(&group) {
            Ok(Some(found)) => Some(found.gid.as_raw()),
            Ok(None) => {
                return Err(ReceiveError::Group {
                    profile,
                    group,
                    source: None,
                })
            }
            Err(errno) => {
                return Err(ReceiveError::Group {
                    profile,
                    group,
                    source: Some(errno),
                })
            }
        },
    };

    let profiles_dir = host.paths.profiles_dir();
    store::ensure_directory(&profiles_dir)?;
    let _lock = store::lock_profile(&profiles_dir, &profile)?;
    let path = host.paths.cache_file(&profile);
    let cached = store::read_cached(&path)?.serial();
    if envelope.serial <= cached {
        return Err(ReceiveError::NotNewer {
            profile,
            serial: envelope.serial,
            cached,
        });
    }
    let expiration = envelope.credentials.expiration();
    if expiration - now < MINIMUM_REMAINING {
        return Err(ReceiveError::Expired {
            profile,
            expiration,
        });
    }

    // A writer killed mid-write may have left a temp file; we hold the lock, so no
    // live writer owns one.
    let _ = remove_stale_temps(&profiles_dir, &profile.file_name());
    let stored = Stored {
        profile: profile.clone(),
        key_suffix: envelope.credentials.key_id_suffix().to_owned(),
        expiration,
        serial: envelope.serial,
    };
    let cache = CacheFile {
        credentials: envelope.credentials,
        meta: Some(CacheMeta {
            serial: envelope.serial,
            role_arn: envelope.role_arn,
            instance_id: envelope.instance_id,
            issued_at: envelope.issued_at,
            received_at: now,
        }),
    };
    let spec = FileSpec {
        mode: CACHE_MODE,
        uid: host.as_root.then_some(0),
        gid,
    };
    write_atomic(&path, &cache.to_json(), &spec)
        .map_err(|source| ReceiveError::Write { path, source })?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Source;
    use aovis_formats::{Credentials, SecretString};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &str = "unit-SECRET-value-0123456789";
    const HOST_ID: &str = "mi-0123456789abcdef0";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_348_800, 0).unwrap() // 2026-11-22T12:00:00Z
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        paths: Paths,
        config: AgentConfig,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let paths = Paths {
                state_dir: dir.path().join("state"),
                config_dir: dir.path().join("config"),
            };
            let uid = nix::unistd::geteuid().as_raw();
            crate::identity::load_or_create(&paths.host_key(), uid, now()).unwrap();
            Self {
                _dir: dir,
                paths,
                config: AgentConfig::default(),
            }
        }

        fn recipient(&self) -> age::x25519::Recipient {
            let uid = nix::unistd::geteuid().as_raw();
            let key = crate::identity::load(&self.paths.host_key(), uid).unwrap();
            key.recipient().parse().unwrap()
        }

        fn receive(&self, payload: &[u8]) -> Result<Stored, ReceiveError> {
            let key_path = self.paths.host_key();
            let identity =
                move || crate::identity::load(&key_path, nix::unistd::geteuid().as_raw());
            let instance = || {
                Ok(InstanceId {
                    id: HOST_ID.into(),
                    source: Source::Config,
                })
            };
            let host = Host {
                paths: &self.paths,
                config: &self.config,
                identity: &identity,
                instance_id: &instance,
                as_root: false,
            };
            receive(&host, payload, now())
        }

        fn cache(&self) -> Option<Vec<u8>> {
            fs::read(self.paths.profiles_dir().join("default.json")).ok()
        }
    }

    fn envelope(serial: u64, expires_in: i64) -> Envelope {
        Envelope {
            instance_id: HOST_ID.into(),
            profile: ProfileName::new("default").unwrap(),
            serial,
            issued_at: now(),
            role_arn: "arn:aws:iam::111122223333:role/onprem".into(),
            credentials: Credentials::new(
                "ASIAUNITTEST0000WXYZ".into(),
                SecretString::new(SECRET.into()),
                SecretString::new("unit-token".into()),
                now() + TimeDelta::seconds(expires_in),
            ),
        }
    }

    fn seal(recipient: &age::x25519::Recipient, plaintext: &[u8]) -> Vec<u8> {
        let sealed = age::encrypt(recipient, plaintext).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(sealed)
            .into_bytes()
    }

    #[test]
    fn stores_a_delivery_and_reports_it() {
        let fixture = Fixture::new();
        let payload = seal(&fixture.recipient(), &envelope(5, 3600).to_json());
        let stored = fixture.receive(&payload).unwrap();
        assert_eq!(
            stored.to_string(),
            "stored profile 'default' (key ...WXYZ, expires 2026-11-22T13:00:00Z, serial 5)"
        );
        let cache = aovis_formats::cache::parse(&fixture.cache().unwrap()).unwrap();
        let meta = cache.meta.unwrap();
        assert_eq!((meta.serial, meta.received_at), (5, now()));
        assert_eq!(cache.credentials.secret_access_key().expose(), SECRET);
        let path = fixture.paths.profiles_dir().join("default.json");
        assert_eq!(
            fs::metadata(path).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }

    #[test]
    fn refuses_each_bad_delivery_and_keeps_the_cache() {
        let fixture = Fixture::new();
        let recipient = fixture.recipient();
        fixture
            .receive(&seal(&recipient, &envelope(10, 3600).to_json()))
            .unwrap();
        let before = fixture.cache().unwrap();

        let other_key = age::x25519::Identity::generate().to_public();
        let mut tampered = age::encrypt(&recipient, &envelope(11, 3600).to_json()).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);
        let mut other_host = envelope(11, 3600);
        other_host.instance_id = "mi-00000000000000001".into();
        let bad_profile = String::from_utf8(envelope(11, 3600).to_json().to_vec())
            .unwrap()
            .replace(r#""profile":"default""#, r#""profile":"../etc""#);

        let cases: Vec<(&str, Vec<u8>, u8, &str)> = vec![
            ("empty", b"\n".to_vec(), 3, "payload is empty"),
            (
                "too large",
                vec![b'A'; MAX_PAYLOAD_BYTES + 1],
                3,
                "larger than 65536",
            ),
            (
                "bad base64",
                b"not*base64".to_vec(),
                3,
                "not standard base64",
            ),
            ("no padding", b"YWJj ZA".to_vec(), 3, "not standard base64"),
            (
                "wrong key",
                seal(&other_key, &envelope(11, 3600).to_json()),
                4,
                "not sealed to this host's key",
            ),
            ("tampered", tampered.into_bytes(), 4, "altered"),
            (
                "not age",
                seal_raw(b"plain text"),
                4,
                "not a valid age file",
            ),
            (
                "not json",
                seal(&recipient, b"{not json"),
                5,
                "not a valid envelope",
            ),
            (
                "unknown v",
                seal(&recipient, br#"{"v":2}"#),
                5,
                "not a valid envelope",
            ),
            (
                "bad profile",
                seal(&recipient, bad_profile.as_bytes()),
                5,
                "bad profile name",
            ),
            (
                "other host",
                seal(&recipient, &other_host.to_json()),
                6,
                "is for instance mi-00000000000000001",
            ),
            (
                "stale",
                seal(&recipient, &envelope(9, 3600).to_json()),
                7,
                "stale delivery",
            ),
            (
                "replayed",
                seal(&recipient, &envelope(10, 3600).to_json()),
                7,
                "replayed delivery",
            ),
            (
                "expired",
                seal(&recipient, &envelope(11, -1).to_json()),
                8,
                "expire at",
            ),
            (
                "expiring in 59 s",
                seal(&recipient, &envelope(11, 59).to_json()),
                8,
                "less than 60 s",
            ),
        ];
        for (name, payload, code, expected) in cases {
            let err = fixture.receive(&payload).unwrap_err();
            let message = crate::one_line(&err);
            assert_eq!(err.exit_code(), code, "{name}: {message}");
            assert!(message.contains(expected), "{name}: {message}");
            assert!(!message.contains(SECRET), "{name} leaked: {message}");
            assert_eq!(fixture.cache().unwrap(), before, "{name} touched the cache");
        }
        // Exactly 60 s left is enough.
        fixture
            .receive(&seal(&recipient, &envelope(11, 60).to_json()))
            .unwrap();
    }

    fn seal_raw(bytes: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes()
    }

    #[test]
    fn accepts_a_payload_wrapped_like_the_base64_tool_does() {
        let fixture = Fixture::new();
        let payload = seal(&fixture.recipient(), &envelope(3, 3600).to_json());
        let wrapped: Vec<u8> = payload
            .chunks(76)
            .flat_map(|line| line.iter().copied().chain(*b"\n"))
            .collect();
        assert!(wrapped.iter().filter(|b| **b == b'\n').count() > 1);
        assert_eq!(fixture.receive(&wrapped).unwrap().serial, 3);
    }

    #[test]
    fn age_failures_are_described_in_our_words_on_one_line() {
        let cases = [
            (age::DecryptError::UnknownFormat, AgeFailure::NotAge),
            (age::DecryptError::InvalidHeader, AgeFailure::Header),
            (age::DecryptError::InvalidMac, AgeFailure::HeaderMac),
            (age::DecryptError::DecryptionFailed, AgeFailure::FileKey),
            (age::DecryptError::KeyDecryptionFailed, AgeFailure::FileKey),
            (
                age::DecryptError::Io(io::Error::other("x")),
                AgeFailure::Payload,
            ),
            (
                age::DecryptError::ExcessiveWork {
                    required: 30,
                    target: 20,
                },
                AgeFailure::Other,
            ),
        ];
        for (err, expected) in cases {
            let failure = AgeFailure::from(err);
            assert_eq!(failure, expected);
            assert!(!failure.to_string().contains('\n'));
        }
    }

    #[test]
    fn a_malformed_cache_is_repaired_by_a_delivery() {
        let fixture = Fixture::new();
        let profiles = fixture.paths.profiles_dir();
        store::ensure_directory(&profiles).unwrap();
        fs::write(profiles.join("default.json"), "{broken").unwrap();
        fs::write(profiles.join(".default.json.0123abcd.tmp"), "left over").unwrap();
        let stored = fixture
            .receive(&seal(&fixture.recipient(), &envelope(1, 3600).to_json()))
            .unwrap();
        assert_eq!(stored.serial, 1);
        assert!(!profiles.join(".default.json.0123abcd.tmp").exists());
    }

    #[test]
    fn an_unknown_group_names_profile_and_group() {
        let mut fixture = Fixture::new();
        fixture.config =
            crate::config::parse("[profiles.default]\ngroup = \"aovis-no-such-group-here\"\n")
                .unwrap();
        let err = fixture
            .receive(&seal(&fixture.recipient(), &envelope(1, 3600).to_json()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("profile 'default': group 'aovis-no-such-group-here'"),
            "{err}"
        );
        assert!(fixture.cache().is_none());
    }
}
