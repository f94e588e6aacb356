//! `aovis_agent::daemon::container::respond`: every request a local process can send
//! to the container-credentials endpoint (method, path, headers), answered from
//! loaded caches.
//!
//! The fixture is what a real daemon has: two served profiles, `build` and `other`,
//! each with its token made by `ensure_token_file` (in a temporary directory,
//! removed once the tokens are read) and a fresh cache with its own secret.
//!
//! Beyond "never panics": a profile's secret is only ever in a 200 answer to a GET
//! of `/v1/credentials/<that profile>` whose (first) `Authorization` header is that
//! profile's exact token; and such a request always gets it. The first input byte
//! chooses whether the request carries `build`'s token (bit 0) or `other`'s (bit
//! 1), since the fuzzer cannot guess a 43-character random token.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use aovis_agent::daemon::container::respond;
use aovis_agent::daemon::store::{Delivery, Slot, Store};
use aovis_agent::daemon::tokens::{ensure_token_file, token_path, ContainerToken};
use aovis_formats::cache::CacheMeta;
use aovis_formats::{Credentials, ProfileName, SecretString};
use chrono::{DateTime, TimeDelta, Utc};
use hyper::header::AUTHORIZATION;
use hyper::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;

/// The served profiles and their secrets.
const PROFILES: [(&str, &str); 2] = [
    ("build", "FuZzSeCrEt/build+0123456789ABCDEFGHIJK"),
    ("other", "FuZzSeCrEt/other+0123456789ABCDEFGHIJK"),
];

struct Fixture {
    tokens: BTreeMap<ProfileName, ContainerToken>,
    /// Each profile's token text, in `PROFILES` order.
    token_texts: Vec<String>,
    store: Store,
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_348_800, 0).expect("a fixed time")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::default();
        let mut tokens = BTreeMap::new();
        let mut token_texts = Vec::new();
        for (i, (name, secret)) in PROFILES.iter().enumerate() {
            let profile = ProfileName::new(name).expect("a name");
            let token = ensure_token_file(dir.path(), &profile, None).expect("a token file");
            let text =
                std::fs::read_to_string(token_path(dir.path(), &profile)).expect("the token file");
            let credentials = Credentials::new(
                format!("ASIAFUZZ00000000000{i}"),
                SecretString::new((*secret).into()),
                SecretString::new(format!("FuZzToKeN{i}")),
                now() + TimeDelta::hours(1),
            );
            let meta = CacheMeta {
                serial: 1,
                role_arn: format!("arn:aws:iam::111122223333:role/{name}"),
                instance_id: "mi-0123456789abcdef0".into(),
                issued_at: now(),
                received_at: now(),
            };
            let delivery = Delivery::new(&profile, credentials, Some(meta), now());
            store.set(profile.clone(), Slot::Loaded(Arc::new(delivery)));
            tokens.insert(profile, token);
            token_texts.push(text);
        }
        Fixture {
            tokens,
            token_texts,
            store,
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
    for (bit, token) in fixture.token_texts.iter().enumerate() {
        if flags & (1 << bit) != 0 {
            builder = builder.header(AUTHORIZATION, token.as_str());
        }
    }
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let response = respond(&parts, &fixture.tokens, &fixture.store, now());
    let status = response.status();
    let body = block_on_body(http_body_util::BodyExt::collect(response.into_body()));
    let body = String::from_utf8_lossy(&body);
    let authorization = parts.headers.get(AUTHORIZATION);
    for ((name, secret), token) in PROFILES.iter().zip(&fixture.token_texts) {
        let entitled = parts.method == Method::GET
            && parts.uri.path() == format!("/v1/credentials/{name}")
            && authorization.is_some_and(|value| value.as_bytes() == token.as_bytes());
        if body.contains(secret) {
            assert!(
                entitled,
                "{name}'s credentials served to {} {} (status {status})",
                parts.method, parts.uri
            );
            assert_eq!(status, StatusCode::OK);
        } else {
            assert!(!entitled, "{name}'s holder refused with {status}");
        }
    }
    if status == StatusCode::OK {
        assert!(
            PROFILES.iter().any(|(_, secret)| body.contains(secret)),
            "200 without credentials"
        );
    }
});

/// The body is a `Full`, ready at once: poll it with a no-op waker.
fn block_on_body(
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
