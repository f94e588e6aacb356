//! The container-credentials endpoint: what SDKs read from
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI`, as the ECS agent serves it.
//!
//! A workload sets
//!
//! ```sh
//! AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9912/v1/credentials/<profile>
//! AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/var/lib/aovis/tokens/<profile>.token
//! ```
//!
//! and its SDK sends `GET` with the token in the `Authorization` header. botocore
//! and aws-config accept an `http` URI only on a loopback address (or the ECS/EKS
//! link-local ones), which is where this endpoint listens by default.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/credentials/<profile>` with the profile's token | 200, `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`, `RoleArn`, `AccountId` |
//! | the same without the token, or with another | 401 |
//! | the same when the credentials expired (or expire within 60 s) or are not cached | 503 |
//! | a profile not served, or any other path | 404; another method 405 |

use std::collections::BTreeMap;

use aovis_formats::ProfileName;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use super::http::{json, refuse};
use super::store::Store;
use super::tokens::ContainerToken;

/// Path prefix; the profile name follows.
pub const PATH_PREFIX: &str = "/v1/credentials/";

/// Answers one request. `now` is read by the caller.
pub fn respond(
    request: &Parts,
    tokens: &BTreeMap<ProfileName, ContainerToken>,
    store: &Store,
    now: DateTime<Utc>,
) -> Response<Full<Bytes>> {
    let served = request
        .uri
        .path()
        .strip_prefix(PATH_PREFIX)
        .and_then(|name| ProfileName::new(name).ok())
        .and_then(|profile| tokens.get(&profile).map(|token| (profile, token)));
    let Some((profile, token)) = served else {
        return refuse(StatusCode::NOT_FOUND, "no such profile is served here");
    };
    if request.method != Method::GET {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
    }
    let presented = request
        .headers
        .get(AUTHORIZATION)
        .map(|value| value.as_bytes());
    if !presented.is_some_and(|presented| token.matches(presented)) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the Authorization header must hold this profile's token",
        );
    }
    match store.delivery(&profile) {
        Some(delivery) if delivery.servable_at(now) => json(delivery.container_body.share()),
        Some(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cached credentials have expired; rotation has not reached this host",
        ),
        None => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no usable credentials are cached for this profile",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::store::tests::delivery;
    use crate::daemon::store::Slot;
    use crate::daemon::tokens::ensure_token_file;
    use chrono::{TimeDelta, TimeZone};
    use hyper::Request;
    use std::sync::Arc;

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    fn parts(method: Method, path: &str, authorization: Option<&str>) -> Parts {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn serves_only_with_the_profiles_token() {
        let dir = tempfile::tempdir().unwrap();
        let build = ProfileName::new("build").unwrap();
        let other = ProfileName::new("other").unwrap();
        let mut tokens = BTreeMap::new();
        tokens.insert(
            build.clone(),
            ensure_token_file(dir.path(), &build, None).unwrap(),
        );
        tokens.insert(
            other.clone(),
            ensure_token_file(dir.path(), &other, None).unwrap(),
        );
        let build_token = std::fs::read_to_string(dir.path().join("build.token")).unwrap();
        let other_token = std::fs::read_to_string(dir.path().join("other.token")).unwrap();
        let store = Store::default();
        store.set(
            build.clone(),
            Slot::Loaded(Arc::new(delivery(1, noon(), noon() + TimeDelta::hours(1)))),
        );

        let ok = respond(
            &parts(Method::GET, "/v1/credentials/build", Some(&build_token)),
            &tokens,
            &store,
            noon(),
        );
        assert_eq!(ok.status(), StatusCode::OK);

        let cases = [
            (
                "no token",
                Method::GET,
                "/v1/credentials/build",
                None,
                StatusCode::UNAUTHORIZED,
            ),
            (
                "another profile's token",
                Method::GET,
                "/v1/credentials/build",
                Some(other_token.as_str()),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "wrong token",
                Method::GET,
                "/v1/credentials/build",
                Some("x"),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "bearer prefix",
                Method::GET,
                "/v1/credentials/build",
                Some(&*format!("Bearer {build_token}")),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "profile not served",
                Method::GET,
                "/v1/credentials/default",
                Some(build_token.as_str()),
                StatusCode::NOT_FOUND,
            ),
            (
                "bad profile name",
                Method::GET,
                "/v1/credentials/..",
                Some(build_token.as_str()),
                StatusCode::NOT_FOUND,
            ),
            (
                "other path",
                Method::GET,
                "/latest/meta-data/",
                Some(build_token.as_str()),
                StatusCode::NOT_FOUND,
            ),
            (
                "POST",
                Method::POST,
                "/v1/credentials/build",
                Some(build_token.as_str()),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "served but not cached",
                Method::GET,
                "/v1/credentials/other",
                Some(other_token.as_str()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (name, method, path, token, expected) in cases {
            let response = respond(&parts(method, path, token), &tokens, &store, noon());
            assert_eq!(response.status(), expected, "{name}");
        }

        let expired = respond(
            &parts(Method::GET, "/v1/credentials/build", Some(&build_token)),
            &tokens,
            &store,
            noon() + TimeDelta::hours(2),
        );
        assert_eq!(expired.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
