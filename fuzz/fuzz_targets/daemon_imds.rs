//! `aovis_agent::daemon::imds::Imds::respond`: every request a local process can
//! send to the IMDSv2 endpoint (method, path, headers), answered from a loaded
//! cache.
//!
//! Beyond "never panics": a response carrying the credentials is only ever the
//! answer to a GET of the role's path with a valid session token, and the
//! first byte decides whether the request carries the token issued at setup.
#![no_main]

use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use aovis_agent::daemon::imds::{Imds, TOKEN_HEADER};
use aovis_agent::daemon::store::{Delivery, Slot, Store};
use aovis_agent::daemon::tokens::SessionTokens;
use aovis_formats::cache::CacheMeta;
use aovis_formats::{Credentials, ProfileName, SecretString};
use chrono::{DateTime, TimeDelta, Utc};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "FuZzSeCrEt/aovis+0123456789ABCDEFGHIJKL";

struct Fixture {
    profile: ProfileName,
    store: Store,
    sessions: RwLock<SessionTokens>,
    token: String,
    start: Instant,
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_348_800, 0).expect("a fixed time")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let profile = ProfileName::new("default").expect("a name");
        let credentials = Credentials::new(
            "ASIAFUZZ000000000001".into(),
            SecretString::new(SECRET.into()),
            SecretString::new("FuZzToKeN".into()),
            now() + TimeDelta::hours(1),
        );
        let meta = CacheMeta {
            serial: 1,
            role_arn: "arn:aws:iam::111122223333:role/onprem".into(),
            instance_id: "mi-0123456789abcdef0".into(),
            issued_at: now(),
            received_at: now(),
        };
        let store = Store::default();
        let delivery = Delivery::new(&profile, credentials, Some(meta), now());
        store.set(profile.clone(), Slot::Loaded(std::sync::Arc::new(delivery)));
        let start = Instant::now();
        let mut sessions = SessionTokens::new(16);
        let token = sessions
            .issue(Duration::from_secs(21_600), start)
            .expect("a token");
        Fixture {
            profile,
            store,
            sessions: RwLock::new(sessions),
            token,
            start,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    // Lines: method, path, then `name: value` headers.
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("GET");
    let path = lines.next().unwrap_or("/");
    let mut builder = hyper::Request::builder().method(method).uri(path);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let with_token = flags & 1 == 1;
    if with_token {
        builder = builder.header(TOKEN_HEADER, fixture.token.as_str());
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let imds = Imds {
        profile: Some(&fixture.profile),
        store: &fixture.store,
        sessions: &fixture.sessions,
    };
    let response = imds.respond(&parts, now(), fixture.start);
    let body = http_body_util::BodyExt::collect(response.into_body());
    let bytes = futures_lite_block_on(body);
    if String::from_utf8_lossy(&bytes).contains(SECRET) {
        assert!(
            with_token
                || parts
                    .headers
                    .get_all(TOKEN_HEADER)
                    .iter()
                    .any(|v| v == fixture.token.as_str()),
            "credentials served without the session token"
        );
        assert_eq!(
            parts.method,
            hyper::Method::GET,
            "credentials served to {}",
            parts.method
        );
    }
});

/// The body is a `Full`, ready at once: poll it with a no-op waker.
fn futures_lite_block_on(
    future: impl std::future::Future<
        Output = Result<http_body_util::Collected<hyper::body::Bytes>, std::convert::Infallible>,
    >,
) -> Vec<u8> {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(Ok(collected)) => collected.to_bytes().to_vec(),
        _ => Vec::new(),
    }
}
