//! The rotator's configuration: TOML, from a file (cron), an environment variable
//! or an SSM parameter (Lambda). `rotator.toml.example` documents every field.
//!
//! ```toml
//! region = "eu-west-1"                       # optional; else the SDK's chain
//! document = "Aovis-DeliverCredentials"      # default
//! parameter_prefix = "/aovis/hosts/"         # default; host recipient at <prefix><instance id>
//! concurrency = 32                           # hosts in flight at once
//! max_attempts = 10                          # SDK attempts per call (adaptive retry)
//! confirm_timeout_seconds = 300              # how long to wait for commands to finish
//! schedule_period_minutes = 20               # optional; only used to warn
//!
//! [[binding]]
//! profile = "default"
//! role_arn = "arn:aws:iam::111122223333:role/onprem"
//! session_duration_seconds = 3600            # default 3600
//! external_id = "..."                        # optional
//! session_policy = '{"Version":"2012-10-17","Statement":[...]}'   # optional
//! targets = { tags = { Environment = ["prod"] } }   # or { instance_ids = ["mi-..."] }
//! ```
//!
//! Parsing happens in two steps. `toml` with `deny_unknown_fields` turns the text
//! into [`RawConfig`], its errors naming line and field; then [`Config::validate`]
//! checks meaning, and each error names the binding (by number and profile) and the
//! field, so a reviewer can find the line at once.

use std::collections::BTreeMap;
use std::fmt;

use aovis_formats::ProfileName;
use serde::Deserialize;

/// The default SSM document.
pub const DEFAULT_DOCUMENT: &str = "Aovis-DeliverCredentials";
/// The default Parameter Store prefix of host recipients.
pub const DEFAULT_PREFIX: &str = "/aovis/hosts/";
/// Role chaining caps a session at one hour, and so does STS's default.
pub const ONE_HOUR: u32 = 3600;
/// botocore starts refreshing 15 minutes before expiry (advisory window).
pub const BOTOCORE_REFRESH_WINDOW_SECONDS: u32 = 15 * 60;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The AWS region; `None` leaves it to the SDK's chain (`AWS_REGION`...).
    pub region: Option<String>,
    /// The SSM document every command runs.
    pub document: String,
    /// The Parameter Store prefix of host recipients.
    pub parameter_prefix: String,
    /// Hosts in flight at once.
    pub concurrency: usize,
    /// SDK attempts per call.
    pub max_attempts: u32,
    /// How long the round waits for its commands to finish.
    pub confirm_timeout_seconds: u32,
    /// How often the round is scheduled, when the operator says so.
    pub schedule_period_minutes: Option<u32>,
    /// What to deliver where.
    pub bindings: Vec<Binding>,
}

/// One profile delivered to a set of hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// 1-based position in the file, for messages.
    pub number: usize,
    /// The profile the hosts receive.
    pub profile: ProfileName,
    /// The role assumed for each host.
    pub role_arn: String,
    /// Session length in seconds.
    pub session_duration_seconds: u32,
    /// `sts:ExternalId`, when the role's trust policy asks for one.
    pub external_id: Option<String>,
    /// An inline session policy that narrows the role.
    pub session_policy: Option<String>,
    /// Which managed nodes receive it.
    pub targets: Targets,
}

impl Binding {
    /// `binding #2 (profile "deploy")`: how messages name a binding.
    pub fn label(&self) -> String {
        format!("binding #{} (profile \"{}\")", self.number, self.profile)
    }
}

/// The managed nodes of a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Nodes carrying any of the values of every listed tag key.
    Tags(BTreeMap<String, Vec<String>>),
    /// These nodes.
    InstanceIds(Vec<String>),
}

/// The TOML as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    region: Option<String>,
    document: Option<String>,
    parameter_prefix: Option<String>,
    concurrency: Option<usize>,
    max_attempts: Option<u32>,
    confirm_timeout_seconds: Option<u32>,
    schedule_period_minutes: Option<u32>,
    #[serde(default, rename = "binding")]
    bindings: Vec<RawBinding>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    profile: Option<String>,
    role_arn: Option<String>,
    session_duration_seconds: Option<u32>,
    external_id: Option<String>,
    session_policy: Option<String>,
    targets: Option<RawTargets>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    tags: Option<BTreeMap<String, Vec<String>>>,
    instance_ids: Option<Vec<String>>,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The text is not valid TOML or has an unknown or mistyped field.
    Syntax(toml::de::Error),
    /// A top-level field is wrong.
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A field of one binding is wrong.
    Binding {
        /// 1-based position of the binding.
        number: usize,
        /// Its profile, when it has a readable one.
        profile: Option<String>,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // toml's message spans lines (it quotes the line); keep the first.
            Self::Syntax(err) => {
                let message = err.message();
                match err.span() {
                    Some(span) => write!(f, "invalid TOML at byte {}: {message}", span.start),
                    None => write!(f, "invalid TOML: {message}"),
                }
            }
            Self::Field { field, problem } => write!(f, "field `{field}` {problem}"),
            Self::Binding {
                number,
                profile: Some(profile),
                field,
                problem,
            } => write!(
                f,
                "binding #{number} (profile \"{profile}\"): field `{field}` {problem}"
            ),
            Self::Binding {
                number,
                profile: None,
                field,
                problem,
            } => write!(f, "binding #{number}: field `{field}` {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A warning about a configuration that works but is risky.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning(pub String);

impl Config {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(ConfigError::Syntax)?;
        Self::validate(raw)
    }

    /// Checks the meaning of a parsed file.
    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let region = match raw.region {
            Some(region) if !is_region(&region) => {
                return Err(field(
                    "region",
                    "is not a region name (like eu-west-1)".into(),
                ))
            }
            other => other,
        };
        let document = raw.document.unwrap_or_else(|| DEFAULT_DOCUMENT.to_owned());
        if !is_document_name(&document) {
            return Err(field(
                "document",
                "must be 3 to 128 of A-Z a-z 0-9 _ - . (an SSM document name)".into(),
            ));
        }
        if document == "AWS-RunShellScript" || document == "AWS-RunPowerShellScript" {
            return Err(field(
                "document",
                "must not be a shell document: the rotator runs only the aovis document".into(),
            ));
        }
        let parameter_prefix = raw
            .parameter_prefix
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        if !parameter_prefix.starts_with('/')
            || !parameter_prefix.ends_with('/')
            || !parameter_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-'))
        {
            return Err(field(
                "parameter_prefix",
                "must start and end with '/' and hold only A-Z a-z 0-9 _ . - /".into(),
            ));
        }
        let concurrency = raw.concurrency.unwrap_or(32);
        if !(1..=256).contains(&concurrency) {
            return Err(field("concurrency", "must be from 1 to 256".into()));
        }
        let max_attempts = raw.max_attempts.unwrap_or(10);
        if !(1..=20).contains(&max_attempts) {
            return Err(field("max_attempts", "must be from 1 to 20".into()));
        }
        let confirm_timeout_seconds = raw.confirm_timeout_seconds.unwrap_or(300);
        if !(5..=3600).contains(&confirm_timeout_seconds) {
            return Err(field(
                "confirm_timeout_seconds",
                "must be from 5 to 3600".into(),
            ));
        }
        if raw.schedule_period_minutes == Some(0) {
            return Err(field(
                "schedule_period_minutes",
                "must be at least 1".into(),
            ));
        }
        if raw.bindings.is_empty() {
            return Err(field(
                "binding",
                "is missing: add at least one [[binding]] table".into(),
            ));
        }
        let bindings = raw
            .bindings
            .into_iter()
            .enumerate()
            .map(|(index, raw)| validate_binding(index + 1, raw))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            region,
            document,
            parameter_prefix,
            concurrency,
            max_attempts,
            confirm_timeout_seconds,
            schedule_period_minutes: raw.schedule_period_minutes,
            bindings,
        })
    }

    /// Checks that every session can be issued by a rotator that itself runs on
    /// role credentials (role chaining caps sessions at one hour).
    pub fn check_role_chaining(&self) -> Result<(), ConfigError> {
        for binding in &self.bindings {
            if binding.session_duration_seconds > ONE_HOUR {
                return Err(ConfigError::Binding {
                    number: binding.number,
                    profile: Some(binding.profile.to_string()),
                    field: "session_duration_seconds",
                    problem: format!(
                        "is {} s, but the rotator runs with role credentials and role \
                         chaining caps sessions at {ONE_HOUR} s",
                        binding.session_duration_seconds
                    ),
                });
            }
        }
        Ok(())
    }

    /// Risky but valid settings. A round should run at least twice within a
    /// session's life before botocore's refresh window opens, so one failed round
    /// does not leave hosts with credentials that SDKs already consider stale.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let Some(period) = self.schedule_period_minutes else {
            return Vec::new();
        };
        let period_seconds = u64::from(period) * 60;
        self.bindings
            .iter()
            .filter_map(|binding| {
                let usable = binding
                    .session_duration_seconds
                    .saturating_sub(BOTOCORE_REFRESH_WINDOW_SECONDS);
                (period_seconds * 2 > u64::from(usable)).then(|| {
                    ConfigWarning(format!(
                        "{}: the schedule period ({period} min) is not comfortably shorter than \
                         the session duration minus botocore's 15 min refresh window ({} min); \
                         one missed round lets credentials age into the refresh window",
                        binding.label(),
                        usable / 60
                    ))
                })
            })
            .collect()
    }
}

fn field(field: &'static str, problem: String) -> ConfigError {
    ConfigError::Field { field, problem }
}

fn validate_binding(number: usize, raw: RawBinding) -> Result<Binding, ConfigError> {
    let readable_profile = raw
        .profile
        .as_deref()
        .filter(|p| ProfileName::new(p).is_ok())
        .map(str::to_owned);
    let error = |field: &'static str, problem: String| ConfigError::Binding {
        number,
        profile: readable_profile.clone(),
        field,
        problem,
    };
    let profile = match raw.profile.as_deref() {
        None => return Err(error("profile", "is missing".into())),
        Some(name) => ProfileName::new(name)
            .map_err(|err| error("profile", format!("is not a valid profile name: {err}")))?,
    };
    let role_arn = raw
        .role_arn
        .ok_or_else(|| error("role_arn", "is missing".into()))?;
    if !is_role_arn(&role_arn) {
        return Err(error(
            "role_arn",
            "is not an IAM role ARN (arn:<partition>:iam::<12-digit account>:role/<name>)".into(),
        ));
    }
    let session_duration_seconds = raw.session_duration_seconds.unwrap_or(ONE_HOUR);
    if !(900..=43_200).contains(&session_duration_seconds) {
        return Err(error(
            "session_duration_seconds",
            "must be from 900 to 43200 (STS limits)".into(),
        ));
    }
    if let Some(id) = &raw.external_id {
        let ok = (2..=1224).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
        if !ok {
            return Err(error(
                "external_id",
                "must be 2 to 1224 of A-Z a-z 0-9 _ + = , . @ : / -".into(),
            ));
        }
    }
    if let Some(policy) = &raw.session_policy {
        if policy.len() > 2048 {
            return Err(error(
                "session_policy",
                "is longer than STS's 2048 characters".into(),
            ));
        }
        match serde_json::from_str::<serde_json::Value>(policy) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => {
                return Err(error(
                    "session_policy",
                    "is not a JSON policy document (an object)".into(),
                ))
            }
        }
    }
    let targets = match raw.targets {
        None => return Err(error("targets", "is missing".into())),
        Some(RawTargets {
            tags: Some(_),
            instance_ids: Some(_),
        }) => {
            return Err(error(
                "targets",
                "has both tags and instance_ids; use one per binding".into(),
            ))
        }
        Some(RawTargets {
            tags: None,
            instance_ids: None,
        }) => {
            return Err(error(
                "targets",
                "is empty: give tags or instance_ids".into(),
            ))
        }
        Some(RawTargets {
            tags: Some(tags), ..
        }) => {
            if tags.is_empty() || tags.len() > 5 {
                return Err(error("targets.tags", "must hold 1 to 5 tag keys".into()));
            }
            for (key, values) in &tags {
                if key.is_empty() || key.len() > 128 {
                    return Err(error(
                        "targets.tags",
                        "has a tag key that is empty or longer than 128 characters".into(),
                    ));
                }
                if values.is_empty() || values.iter().any(|v| v.is_empty() || v.len() > 256) {
                    return Err(error(
                        "targets.tags",
                        format!("tag `{key}` needs 1 or more values of 1 to 256 characters"),
                    ));
                }
            }
            Targets::Tags(tags)
        }
        Some(RawTargets {
            instance_ids: Some(ids),
            ..
        }) => {
            if ids.is_empty() {
                return Err(error("targets.instance_ids", "is empty".into()));
            }
            if let Some(bad) = ids.iter().position(|id| !is_instance_id(id)) {
                return Err(error(
                    "targets.instance_ids",
                    format!(
                        "item {} is not a managed node id (mi-<17 hex> or i-<8 or 17 hex>)",
                        bad + 1
                    ),
                ));
            }
            Targets::InstanceIds(ids)
        }
    };
    Ok(Binding {
        number,
        profile,
        role_arn,
        session_duration_seconds,
        external_id: raw.external_id,
        session_policy: raw.session_policy,
        targets,
    })
}

/// `mi-` + 17 hex (hybrid activations) or `i-` + 8 or 17 hex (EC2).
pub fn is_instance_id(id: &str) -> bool {
    let hex = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    if let Some(rest) = id.strip_prefix("mi-") {
        rest.len() == 17 && hex(rest)
    } else if let Some(rest) = id.strip_prefix("i-") {
        (rest.len() == 17 || rest.len() == 8) && hex(rest)
    } else {
        false
    }
}

fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn is_document_name(name: &str) -> bool {
    (3..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `arn:<partition>:iam::<12-digit account>:role/<name>`: an IAM role's ARN.
pub fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    *prefix == "arn"
        && partition.starts_with("aws")
        && *service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && resource
            .strip_prefix("role/")
            .is_some_and(|name| !name.is_empty() && !name.ends_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[binding]]
profile = "default"
role_arn = "arn:aws:iam::111122223333:role/onprem"
targets = { tags = { Environment = ["prod"] } }
"#;

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.region, None);
        assert_eq!(config.document, "Aovis-DeliverCredentials");
        assert_eq!(config.parameter_prefix, "/aovis/hosts/");
        assert_eq!(config.concurrency, 32);
        assert_eq!(config.max_attempts, 10);
        assert_eq!(config.confirm_timeout_seconds, 300);
        let binding = &config.bindings[0];
        assert_eq!(binding.number, 1);
        assert_eq!(binding.session_duration_seconds, 3600);
        assert_eq!(
            binding.targets,
            Targets::Tags(BTreeMap::from([(
                "Environment".into(),
                vec!["prod".into()]
            )]))
        );
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../rotator.toml.example");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.bindings.len(), 2);
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        config.check_role_chaining().unwrap();
    }

    #[test]
    fn refuses_each_bad_config_naming_binding_and_field() {
        let binding = |body: &str| format!("[[binding]]\n{body}\n");
        let good = "profile = \"default\"\nrole_arn = \"arn:aws:iam::111122223333:role/onprem\"\ntargets = { instance_ids = [\"mi-0123456789abcdef0\"] }";
        let cases: Vec<(&str, String, &str)> = vec![
            ("not toml", "[[binding]\n".into(), "invalid TOML"),
            ("unknown top field", format!("regoin = \"x\"\n{}", binding(good)), "unknown field `regoin`"),
            ("unknown binding field", binding(&format!("{good}\nrol_arn = \"x\"")), "unknown field `rol_arn`"),
            ("no bindings", "region = \"eu-west-1\"\n".into(), "field `binding` is missing"),
            ("bad region", format!("region = \"Europe\"\n{}", binding(good)), "field `region`"),
            ("shell document", format!("document = \"AWS-RunShellScript\"\n{}", binding(good)), "field `document` must not be a shell document"),
            ("bad prefix", format!("parameter_prefix = \"aovis\"\n{}", binding(good)), "field `parameter_prefix`"),
            ("zero concurrency", format!("concurrency = 0\n{}", binding(good)), "field `concurrency`"),
            ("too many attempts", format!("max_attempts = 99\n{}", binding(good)), "field `max_attempts`"),
            ("tiny confirm timeout", format!("confirm_timeout_seconds = 1\n{}", binding(good)), "field `confirm_timeout_seconds`"),
            ("zero period", format!("schedule_period_minutes = 0\n{}", binding(good)), "field `schedule_period_minutes`"),
            ("no profile", binding("role_arn = \"arn:aws:iam::111122223333:role/onprem\"\ntargets = { instance_ids = [\"mi-0123456789abcdef0\"] }"), "binding #1: field `profile` is missing"),
            ("bad profile", binding(&good.replace("\"default\"", "\"../etc\"")), "binding #1: field `profile` is not a valid profile name"),
            ("no role", binding("profile = \"default\"\ntargets = { instance_ids = [\"mi-0123456789abcdef0\"] }"), "binding #1 (profile \"default\"): field `role_arn` is missing"),
            ("user arn", binding(&good.replace(":role/onprem", ":user/bob")), "field `role_arn` is not an IAM role ARN"),
            ("short account", binding(&good.replace("111122223333", "1111")), "field `role_arn`"),
            ("duration too long", binding(&format!("{good}\nsession_duration_seconds = 50000")), "field `session_duration_seconds`"),
            ("duration too short", binding(&format!("{good}\nsession_duration_seconds = 60")), "field `session_duration_seconds`"),
            ("bad external id", binding(&format!("{good}\nexternal_id = \"a b\"")), "field `external_id`"),
            ("policy not json", binding(&format!("{good}\nsession_policy = \"allow all\"")), "field `session_policy`"),
            ("no targets", binding("profile = \"p\"\nrole_arn = \"arn:aws:iam::111122223333:role/onprem\""), "binding #1 (profile \"p\"): field `targets` is missing"),
            ("empty targets", binding("profile = \"p\"\nrole_arn = \"arn:aws:iam::111122223333:role/onprem\"\ntargets = {}"), "field `targets` is empty"),
            ("both targets", binding("profile = \"p\"\nrole_arn = \"arn:aws:iam::111122223333:role/onprem\"\ntargets = { tags = { A = [\"b\"] }, instance_ids = [\"mi-0123456789abcdef0\"] }"), "field `targets` has both"),
            ("empty tag values", binding("profile = \"p\"\nrole_arn = \"arn:aws:iam::111122223333:role/onprem\"\ntargets = { tags = { Env = [] } }"), "field `targets.tags` tag `Env` needs"),
            ("bad instance id", binding(&good.replace("mi-0123456789abcdef0", "mi-XYZ")), "field `targets.instance_ids` item 1"),
            ("second binding bad", format!("{}{}", binding(good), binding(&good.replace("\"default\"", "\"deploy\"").replace(":role/onprem", ":role/")) ), "binding #2 (profile \"deploy\"): field `role_arn`"),
        ];
        for (name, text, expected) in cases {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{name}: {err:?} lacks {expected:?}");
            assert!(!err.contains('\n'), "{name}: message spans lines: {err:?}");
        }
    }

    #[test]
    fn role_chaining_refuses_sessions_over_an_hour_naming_the_binding() {
        let text = MINIMAL.replace("targets", "session_duration_seconds = 7200\ntargets");
        let config = Config::parse(&text).unwrap();
        let err = config.check_role_chaining().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "binding #1 (profile \"default\"): field `session_duration_seconds` is 7200 s"
            ),
            "{err}"
        );
        Config::parse(MINIMAL)
            .unwrap()
            .check_role_chaining()
            .unwrap();
    }

    #[test]
    fn warns_when_the_schedule_is_not_comfortably_shorter_than_the_session() {
        let cases = [(20, false), (22, false), (23, true), (45, true)];
        for (period, warns) in cases {
            let text = format!("schedule_period_minutes = {period}\n{MINIMAL}");
            let warnings = Config::parse(&text).unwrap().warnings();
            assert_eq!(!warnings.is_empty(), warns, "period {period}: {warnings:?}");
            if warns {
                assert!(warnings[0].0.contains("binding #1"), "{warnings:?}");
            }
        }
    }

    #[test]
    fn role_arn_forms() {
        for (arn, ok) in [
            ("arn:aws:iam::111122223333:role/onprem", true),
            ("arn:aws:iam::111122223333:role/path/onprem", true),
            ("arn:aws-us-gov:iam::111122223333:role/onprem", true),
            ("arn:aws-cn:iam::111122223333:role/onprem", true),
            ("arn:aws:iam::111122223333:role/", false),
            ("arn:aws:iam::111122223333:role/path/", false),
            ("arn:aws:iam::111122223333:user/onprem", false),
            ("arn:aws:iam:eu-west-1:111122223333:role/onprem", false),
            ("arn:aws:sts::111122223333:role/onprem", false),
            ("arn:aws:iam::11112222333:role/onprem", false),
            ("arn:aws:iam::11112222333x:role/onprem", false),
            ("arn:gcp:iam::111122223333:role/onprem", false),
            ("arn:aws:iam::111122223333", false),
            ("", false),
        ] {
            assert_eq!(is_role_arn(arn), ok, "{arn}");
        }
    }

    #[test]
    fn instance_id_forms() {
        for (id, ok) in [
            ("mi-0123456789abcdef0", true),
            ("i-0123456789abcdef0", true),
            ("i-01234567", true),
            ("mi-0123456789ABCDEF0", false),
            ("mi-0123", false),
            ("x-0123456789abcdef0", false),
            ("", false),
        ] {
            assert_eq!(is_instance_id(id), ok, "{id}");
        }
    }
}
