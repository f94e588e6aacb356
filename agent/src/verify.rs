//! `doctor --verify`: ask STS who the cached credentials are.
//!
//! `sts:GetCallerIdentity` needs no permission, so it works with any role. The
//! answer must be `arn:<partition>:sts::<account>:assumed-role/<role name>/<session>`
//! for the cached `role_arn` (`arn:<partition>:iam::<account>:role[/path]/<role name>`).
//!
//! The endpoint is `--endpoint-url` if given, else what aws-config resolves
//! (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, the config file, else the regional
//! endpoint). The region is `AWS_REGION`, else `AWS_DEFAULT_REGION`, else
//! `us-east-1`; it is set explicitly so aws-config never asks IMDS, which an
//! on-prem host does not have.

use std::fmt;
use std::time::{Duration, SystemTime};

use aovis_formats::Credentials;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

/// How long the whole call may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Why the call did not answer.
#[derive(Debug)]
pub struct VerifyError(String);

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyError {}

/// Calls `sts:GetCallerIdentity` with `credentials` and returns the caller's ARN.
pub fn caller_arn(
    credentials: &Credentials,
    region: &str,
    endpoint_url: Option<&str>,
) -> Result<String, VerifyError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| VerifyError(format!("cannot start the async runtime: {err}")))?;
    let provider = aws_credential_types::Credentials::new(
        credentials.access_key_id(),
        credentials.secret_access_key().expose(),
        Some(credentials.session_token().expose().to_owned()),
        Some(SystemTime::from(credentials.expiration())),
        "aovis-cache",
    );
    runtime.block_on(async {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(provider)
            .timeout_config(TimeoutConfig::builder().operation_timeout(TIMEOUT).build());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let answer = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|err| {
                VerifyError(format!(
                    "sts:GetCallerIdentity failed: {}",
                    aws_sdk_sts::error::DisplayErrorContext(&err)
                ))
            })?;
        answer
            .arn
            .ok_or_else(|| VerifyError("sts:GetCallerIdentity answered without an ARN".into()))
    })
}

/// The assumed-role ARN prefix (`...:assumed-role/<name>/`) of a role ARN, or `None`
/// when `role_arn` is not an IAM role ARN.
pub fn assumed_role_prefix(role_arn: &str) -> Option<String> {
    let mut parts = role_arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    if partition.is_empty() || account.is_empty() || name.is_empty() {
        return None;
    }
    Some(format!(
        "arn:{partition}:sts::{account}:assumed-role/{name}/"
    ))
}

/// Whether `caller` is a session of `role_arn`.
pub fn is_session_of(caller: &str, role_arn: &str) -> bool {
    assumed_role_prefix(role_arn).is_some_and(|prefix| {
        caller
            .strip_prefix(&prefix)
            .is_some_and(|session| !session.is_empty() && !session.contains('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_sessions_of_the_cached_role() {
        let role = "arn:aws:iam::111122223333:role/onprem";
        let cases = [
            (
                "session",
                "arn:aws:sts::111122223333:assumed-role/onprem/aovis-mi-1",
                true,
            ),
            (
                "other role",
                "arn:aws:sts::111122223333:assumed-role/admin/aovis-mi-1",
                false,
            ),
            (
                "prefix of name",
                "arn:aws:sts::111122223333:assumed-role/onprem2/x",
                false,
            ),
            (
                "other account",
                "arn:aws:sts::999999999999:assumed-role/onprem/x",
                false,
            ),
            ("iam user", "arn:aws:iam::111122223333:user/alice", false),
            (
                "no session",
                "arn:aws:sts::111122223333:assumed-role/onprem/",
                false,
            ),
            (
                "other partition",
                "arn:aws-cn:sts::111122223333:assumed-role/onprem/x",
                false,
            ),
        ];
        for (name, caller, expected) in cases {
            assert_eq!(is_session_of(caller, role), expected, "{name}");
        }
        let with_path = "arn:aws-us-gov:iam::111122223333:role/team/ops/onprem";
        assert!(is_session_of(
            "arn:aws-us-gov:sts::111122223333:assumed-role/onprem/s",
            with_path
        ));
        for bad in [
            "",
            "onprem",
            "arn:aws:iam::1:user/x",
            "arn:aws:sts::1:role/x",
            "arn:aws:iam::1:role/",
        ] {
            assert_eq!(assumed_role_prefix(bad), None, "{bad}");
        }
    }
}
