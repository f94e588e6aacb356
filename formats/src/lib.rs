//! The formats that several aovis binaries share, and nothing else.
//!
//! This crate has no async runtime and no AWS SDK, because `aovis-cred` links it
//! and runs on every AWS CLI call: its cost must stay the cost of starting a
//! process. The contract these types implement is `shared/design.md`.
//!
//! | module | holds |
//! |---|---|
//! | [`credentials`] | [`Credentials`]: key id, secret, token, expiry; the secret parts redact in `Debug` and zeroize on drop |
//! | [`time`] | the one `Expiration` form every SDK parses (`YYYY-MM-DDTHH:MM:SSZ`), and lenient RFC 3339 reading |
//! | [`profile`] | [`ProfileName`]: the validated name that becomes a file name |
//! | [`cache`] | the cache file `$STATE/profiles/<profile>.json`, itself a `credential_process` document |
//! | [`envelope`] | the plaintext the rotator seals to a host |
//! | [`atomic`] | [`atomic::write_atomic`]: temp file, fsync, rename, fsync the directory |
//! | [`paths`] | where the state and config directories are |
//!
//! Parsing never echoes input: an error names the field and what is wrong with it,
//! never the value, because the value may be a secret.

pub mod atomic;
pub mod cache;
pub mod credentials;
pub mod envelope;
mod fields;
pub mod paths;
pub mod profile;
pub mod time;

pub use credentials::{Credentials, SecretString};
pub use fields::FormatError;
pub use profile::ProfileName;
