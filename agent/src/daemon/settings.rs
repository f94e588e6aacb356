//! The `[daemon]` table of `agent.toml`: what `aovis-agent run` serves.
//!
//! ```toml
//! [daemon]
//! max_connections = 256            # open connections over all listeners (1 to 65535);
//!                                  # at the cap a new one replaces the oldest idle one
//! client_timeout_secs = 10         # to send a request's headers or body, and idle time
//!                                  # between requests on one connection (1 to 300);
//!                                  # keep it above 2: botocore retries a refused
//!                                  # request after 1 s on the same connection
//!
//! [daemon.imds]
//! profile = "default"              # the one profile served as the instance's role,
//!                                  # to EVERY local user (see below)
//! listen = ["127.0.0.1:9911"]      # any IPv4/IPv6 socket addresses
//!
//! [daemon.container]
//! listen = ["127.0.0.1:9912"]
//! profiles = ["build"]             # each gets a token file readable by its group
//! ```
//!
//! **The IMDS endpoint serves its profile to every local user**, whatever the
//! profile's `group`: as on EC2, where any process on the instance can read the
//! instance profile's credentials, IMDSv2 asks only for a session token, and any
//! process that can reach the port can get one. Serve through `[daemon.imds]` only
//! a profile every user and service on the host may have. For anything narrower,
//! use the container endpoint (its token file is readable only by the profile's
//! group) or `credential_process = aovis-cred` (the cache file is readable only by
//! the profile's group).
//!
//! Both endpoints are off unless their table is present. Listen addresses are read
//! once at start; a reload (`SIGHUP`) that changes them is logged and needs a
//! restart to take effect, everything else applies on reload.

use std::net::SocketAddr;

use aovis_formats::ProfileName;
use serde::{Deserialize, Deserializer};

/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// Default time a client has to send headers or a body, and to idle between requests.
pub const DEFAULT_CLIENT_TIMEOUT_SECS: u64 = 10;

/// Settings of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// Cap on open connections over all listeners; at the cap a new connection
    /// replaces the oldest one with no request in flight (see `daemon::connections`).
    #[serde(
        default = "default_max_connections",
        deserialize_with = "max_connections"
    )]
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers (or body), and the longest a
    /// kept-alive connection may sit idle.
    #[serde(
        default = "default_client_timeout_secs",
        deserialize_with = "client_timeout_secs"
    )]
    pub client_timeout_secs: u64,
    /// The IMDSv2-compatible endpoint, when enabled.
    #[serde(default)]
    pub imds: Option<ImdsSettings>,
    /// The container-credentials endpoint, when enabled.
    #[serde(default)]
    pub container: Option<ContainerSettings>,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            client_timeout_secs: DEFAULT_CLIENT_TIMEOUT_SECS,
            imds: None,
            container: None,
        }
    }
}

/// The IMDSv2-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImdsSettings {
    /// The profile served as the instance's role, to every local user.
    pub profile: ProfileName,
    /// Addresses to listen on.
    #[serde(default = "default_imds_listen", deserialize_with = "addresses")]
    pub listen: Vec<SocketAddr>,
}

/// The container-credentials endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSettings {
    /// Profiles served, each behind its own token.
    #[serde(deserialize_with = "profiles")]
    pub profiles: Vec<ProfileName>,
    /// Addresses to listen on.
    #[serde(default = "default_container_listen", deserialize_with = "addresses")]
    pub listen: Vec<SocketAddr>,
}

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}

fn default_client_timeout_secs() -> u64 {
    DEFAULT_CLIENT_TIMEOUT_SECS
}

fn default_imds_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 9911))]
}

fn default_container_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 9912))]
}

fn in_range<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    let value = u64::deserialize(deserializer)?;
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format_args!(
            "{field} must be {min} to {max}, not {value}"
        )))
    }
}

fn max_connections<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = in_range(deserializer, "max_connections", 1, 65_535)?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn client_timeout_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    in_range(deserializer, "client_timeout_secs", 1, 300)
}

fn addresses<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error> {
    let list = Vec::<SocketAddr>::deserialize(deserializer)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom(
            "listen must name at least one address",
        ));
    }
    Ok(list)
}

fn profiles<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ProfileName>, D::Error> {
    let list = Vec::<ProfileName>::deserialize(deserializer)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom(
            "profiles must name at least one profile",
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonSettings, String> {
        toml::from_str(text).map_err(|err: toml::de::Error| err.message().to_string())
    }

    #[test]
    fn an_empty_table_serves_nothing_with_default_limits() {
        let settings = parse("").unwrap();
        assert_eq!(settings, DaemonSettings::default());
        assert_eq!(settings.max_connections, 256);
        assert_eq!(settings.client_timeout_secs, 10);
        assert!(settings.imds.is_none() && settings.container.is_none());
    }

    #[test]
    fn endpoints_take_their_default_addresses() {
        let settings =
            parse("[imds]\nprofile = \"default\"\n[container]\nprofiles = [\"build\"]\n").unwrap();
        assert_eq!(
            settings.imds.unwrap().listen,
            [SocketAddr::from(([127, 0, 0, 1], 9911))]
        );
        assert_eq!(
            settings.container.unwrap().listen,
            [SocketAddr::from(([127, 0, 0, 1], 9912))]
        );
    }

    #[test]
    fn accepts_ipv6_and_several_addresses() {
        let settings =
            parse("[imds]\nprofile = \"p\"\nlisten = [\"[::1]:9911\", \"127.0.0.2:80\"]\n")
                .unwrap();
        let imds = settings.imds.unwrap();
        assert_eq!(imds.listen.len(), 2);
        assert!(imds.listen[0].is_ipv6());
    }

    #[test]
    fn refuses_bad_values() {
        let cases = [
            (
                "zero connections",
                "max_connections = 0",
                "max_connections must be 1 to 65535",
            ),
            (
                "too many connections",
                "max_connections = 70000",
                "max_connections must be",
            ),
            (
                "zero timeout",
                "client_timeout_secs = 0",
                "client_timeout_secs must be 1 to 300",
            ),
            (
                "negative timeout",
                "client_timeout_secs = -1",
                "invalid value",
            ),
            ("unknown key", "max_conns = 3", "unknown field"),
            (
                "empty listen",
                "[imds]\nprofile = \"p\"\nlisten = []",
                "at least one address",
            ),
            (
                "host name, not address",
                "[imds]\nprofile = \"p\"\nlisten = [\"localhost:80\"]",
                "invalid socket address",
            ),
            (
                "address without port",
                "[imds]\nprofile = \"p\"\nlisten = [\"127.0.0.1\"]",
                "invalid socket address",
            ),
            (
                "imds without profile",
                "[imds]\nlisten = [\"127.0.0.1:1\"]",
                "missing field `profile`",
            ),
            (
                "bad profile name",
                "[imds]\nprofile = \"../x\"",
                "invalid profile name",
            ),
            (
                "no container profiles",
                "[container]\nprofiles = []",
                "at least one profile",
            ),
            (
                "unknown imds key",
                "[imds]\nprofile = \"p\"\nttl = 5",
                "unknown field",
            ),
        ];
        for (name, text, expected) in cases {
            let err = parse(text).expect_err(name);
            assert!(err.contains(expected), "{name}: {err}");
        }
    }
}
