//! The IMDSv2-compatible endpoint: what SDKs ask EC2's instance metadata service
//! for role credentials, answered from one profile's cache.
//!
//! | request | answer |
//! |---|---|
//! | `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..=21600` | 200, a session token (and the TTL header back, which aws-config reads) |
//! | the same with the TTL header missing or out of range | 400 |
//! | the same carrying `X-Forwarded-For` | 403: EC2 refuses token requests that went through a proxy |
//! | any `GET` without a valid `X-aws-ec2-metadata-token` | 401 (IMDSv2 only; there is no v1) |
//! | `GET /latest/meta-data/iam/security-credentials/` | 200, the role name (last segment of the cached role ARN) |
//! | `GET /latest/meta-data/iam/security-credentials/<role>` | 200, `Code`, `LastUpdated`, `Type`, `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration` |
//! | the same when the credentials expired (or expire within 60 s) | 503: expired credentials are never handed out |
//! | anything else | 404, or 405 for another method |
//!
//! botocore treats a 403/404/405 to the token request as "no IMDSv2" and a 400 as a
//! bad request; both then fail when IMDSv1 is disabled, which is the point.

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use aovis_formats::ProfileName;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use super::http::{json, plain, refuse};
use super::store::Store;
use super::tokens::SessionTokens;

/// Where SDKs ask for a session token.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// The role listing; a role name appended gives its credentials.
pub const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
/// Request (and response) header with the token's TTL in seconds.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Request header carrying the session token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Longest TTL EC2 grants: 6 hours.
pub const MAX_TTL_SECS: u64 = 21_600;

/// Everything an IMDS request is answered from. `now` (wall clock, for credential
/// expiry) and `mono` (monotonic, for token TTLs) are read by the caller.
pub struct Imds<'a> {
    /// The profile served as the instance's role, when configured.
    pub profile: Option<&'a ProfileName>,
    /// The loaded caches.
    pub store: &'a Store,
    /// Issued session tokens.
    pub sessions: &'a RwLock<SessionTokens>,
}

impl Imds<'_> {
    /// Answers one request.
    pub fn respond(
        &self,
        request: &Parts,
        now: DateTime<Utc>,
        mono: Instant,
    ) -> Response<Full<Bytes>> {
        let path = request.uri.path();
        if path == TOKEN_PATH {
            return self.issue_token(request, mono);
        }
        if request.method != Method::GET {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
        }
        if !self.has_valid_token(request, mono) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "a valid X-aws-ec2-metadata-token is required (IMDSv2 only)",
            );
        }
        let delivery = self
            .profile
            .and_then(|profile| self.store.delivery(profile));
        if path == CREDENTIALS_PATH || path == CREDENTIALS_PATH.trim_end_matches('/') {
            return match delivery {
                Some(delivery) => plain(StatusCode::OK, delivery.role_name.clone()),
                None => refuse(StatusCode::NOT_FOUND, "no role credentials are cached"),
            };
        }
        match (path.strip_prefix(CREDENTIALS_PATH), delivery) {
            (Some(role), Some(delivery)) if role == delivery.role_name => {
                if delivery.servable_at(now) {
                    json(delivery.imds_body.share())
                } else {
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the cached credentials have expired; rotation has not reached this host",
                    )
                }
            }
            _ => refuse(StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn issue_token(&self, request: &Parts, mono: Instant) -> Response<Full<Bytes>> {
        if request.method != Method::PUT {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "use PUT to get a token");
        }
        if request.headers.contains_key("x-forwarded-for") {
            return refuse(
                StatusCode::FORBIDDEN,
                "token requests that went through a proxy are refused",
            );
        }
        let Some(ttl) = request
            .headers
            .get(TTL_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|ttl| (1..=MAX_TTL_SECS).contains(ttl))
        else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "X-aws-ec2-metadata-token-ttl-seconds must be 1 to 21600",
            );
        };
        let issued = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .issue(Duration::from_secs(ttl), mono);
        match issued {
            Ok(token) => {
                let mut response = plain(StatusCode::OK, token);
                response
                    .headers_mut()
                    .insert(TTL_HEADER, HeaderValue::from(ttl));
                response
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot issue an IMDS session token");
                refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot issue a token")
            }
        }
    }

    fn has_valid_token(&self, request: &Parts, mono: Instant) -> bool {
        let Some(token) = request
            .headers
            .get(TOKEN_HEADER)
            .and_then(|value| value.to_str().ok())
        else {
            return false;
        };
        self.sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_valid(token, mono)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::store::tests::{delivery, SECRET};
    use crate::daemon::store::Slot;
    use chrono::{TimeDelta, TimeZone};
    use hyper::Request;
    use std::sync::Arc;

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    fn parts(method: Method, path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    struct Fixture {
        profile: ProfileName,
        store: Store,
        sessions: RwLock<SessionTokens>,
        mono: Instant,
    }

    impl Fixture {
        fn new() -> Self {
            let profile = ProfileName::new("default").unwrap();
            let store = Store::default();
            store.set(
                profile.clone(),
                Slot::Loaded(Arc::new(delivery(1, noon(), noon() + TimeDelta::hours(1)))),
            );
            Self {
                profile,
                store,
                sessions: RwLock::new(SessionTokens::new(16)),
                mono: Instant::now(),
            }
        }

        fn imds(&self) -> Imds<'_> {
            Imds {
                profile: Some(&self.profile),
                store: &self.store,
                sessions: &self.sessions,
            }
        }

        fn token(&self) -> String {
            let response = self.imds().respond(
                &parts(Method::PUT, TOKEN_PATH, &[(TTL_HEADER, "21600")]),
                noon(),
                self.mono,
            );
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[TTL_HEADER], "21600");
            body(response)
        }

        fn get(&self, path: &str, token: &str, now: DateTime<Utc>) -> Response<Full<Bytes>> {
            self.imds().respond(
                &parts(Method::GET, path, &[(TOKEN_HEADER, token)]),
                now,
                self.mono,
            )
        }
    }

    fn body(response: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let collected = block_on(response.into_body().collect()).unwrap();
        String::from_utf8(collected.to_bytes().to_vec()).unwrap()
    }

    /// `Full` is ready at once, so one poll on a current-thread runtime suffices.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn serves_the_role_and_its_credentials() {
        let fixture = Fixture::new();
        let token = fixture.token();
        let listing = fixture.get(CREDENTIALS_PATH, &token, noon());
        assert_eq!(listing.status(), StatusCode::OK);
        assert_eq!(body(listing), "onprem");
        let credentials = fixture.get(&format!("{CREDENTIALS_PATH}onprem"), &token, noon());
        assert_eq!(credentials.status(), StatusCode::OK);
        assert_eq!(credentials.headers()["content-type"], "application/json");
        let value: serde_json::Value = serde_json::from_str(&body(credentials)).unwrap();
        assert_eq!(value["Code"], "Success");
        assert_eq!(value["Type"], "AWS-HMAC");
        assert_eq!(value["SecretAccessKey"], SECRET);
        assert_eq!(value["Expiration"], "2026-11-22T13:00:00Z");
    }

    #[test]
    fn refuses_token_requests_as_ec2_does() {
        let fixture = Fixture::new();
        type Case<'a> = (&'a str, Method, &'a [(&'a str, &'a str)], StatusCode);
        let cases: [Case; 8] = [
            ("no TTL", Method::PUT, &[], StatusCode::BAD_REQUEST),
            (
                "TTL zero",
                Method::PUT,
                &[(TTL_HEADER, "0")],
                StatusCode::BAD_REQUEST,
            ),
            (
                "TTL over 6 h",
                Method::PUT,
                &[(TTL_HEADER, "21601")],
                StatusCode::BAD_REQUEST,
            ),
            (
                "TTL not a number",
                Method::PUT,
                &[(TTL_HEADER, "soon")],
                StatusCode::BAD_REQUEST,
            ),
            (
                "TTL negative",
                Method::PUT,
                &[(TTL_HEADER, "-5")],
                StatusCode::BAD_REQUEST,
            ),
            (
                "through a proxy",
                Method::PUT,
                &[(TTL_HEADER, "60"), ("X-Forwarded-For", "10.0.0.1")],
                StatusCode::FORBIDDEN,
            ),
            (
                "GET for a token",
                Method::GET,
                &[(TTL_HEADER, "60")],
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "POST for a token",
                Method::POST,
                &[(TTL_HEADER, "60")],
                StatusCode::METHOD_NOT_ALLOWED,
            ),
        ];
        for (name, method, headers, expected) in cases {
            let response =
                fixture
                    .imds()
                    .respond(&parts(method, TOKEN_PATH, headers), noon(), fixture.mono);
            assert_eq!(response.status(), expected, "{name}");
        }
        assert_eq!(fixture.sessions.read().unwrap().len(), 0, "no token issued");
    }

    #[test]
    fn refuses_gets_without_a_valid_token() {
        let fixture = Fixture::new();
        let good = fixture.token();
        let path = format!("{CREDENTIALS_PATH}onprem");
        let cases = [
            ("wrong token", "A".repeat(43)),
            ("empty token", String::new()),
            ("garbage token", "not a token".to_owned()),
        ];
        for (name, token) in cases {
            let response = fixture.get(&path, &token, noon());
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
            assert!(!body(response).contains(SECRET), "{name}");
        }
        let no_header =
            fixture
                .imds()
                .respond(&parts(Method::GET, &path, &[]), noon(), fixture.mono);
        assert_eq!(
            no_header.status(),
            StatusCode::UNAUTHORIZED,
            "no token header"
        );
        let later = fixture.mono + Duration::from_secs(21_600);
        let expired = fixture.imds().respond(
            &parts(Method::GET, &path, &[(TOKEN_HEADER, &good)]),
            noon(),
            later,
        );
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED, "expired token");
    }

    #[test]
    fn never_hands_out_expired_credentials() {
        let fixture = Fixture::new();
        let token = fixture.token();
        let path = format!("{CREDENTIALS_PATH}onprem");
        let cases = [
            (
                "expired",
                noon() + TimeDelta::hours(2),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                "within a minute",
                noon() + TimeDelta::seconds(3570),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            ("fresh", noon(), StatusCode::OK),
        ];
        for (name, now, expected) in cases {
            let response = fixture.get(&path, &token, now);
            assert_eq!(response.status(), expected, "{name}");
            if expected != StatusCode::OK {
                assert!(!body(response).contains(SECRET), "{name}");
            }
        }
    }

    #[test]
    fn unknown_paths_and_roles_are_not_found() {
        let fixture = Fixture::new();
        let token = fixture.token();
        for path in [
            "/",
            "/latest/meta-data/",
            "/latest/meta-data/iam/security-credentials/other-role",
            "/latest/meta-data/iam/security-credentials/onprem/extra",
            "/latest/meta-data/iam/security-credentials/Onprem",
        ] {
            assert_eq!(
                fixture.get(path, &token, noon()).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        let post = fixture.imds().respond(
            &parts(Method::POST, CREDENTIALS_PATH, &[(TOKEN_HEADER, &token)]),
            noon(),
            fixture.mono,
        );
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn without_a_cache_there_is_no_role() {
        let fixture = Fixture::new();
        fixture.store.set(fixture.profile.clone(), Slot::Missing);
        let token = fixture.token();
        assert_eq!(
            fixture.get(CREDENTIALS_PATH, &token, noon()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
