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

#[path = "common/daemon.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aovis_agent::daemon::container::respond;
use aovis_agent::daemon::store::Store;
use aovis_agent::daemon::tokens::{ensure_token_file, token_path, ContainerToken};
use aovis_formats::ProfileName;
use hyper::header::AUTHORIZATION;
use hyper::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;

use common::{body, load, now, request};

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
            load(
                &store,
                &profile,
                name,
                format!("ASIAFUZZ00000000000{i}"),
                secret,
            );
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
    let tokens: Vec<(&str, &str)> = fixture
        .token_texts
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, token)| (AUTHORIZATION.as_str(), token.as_str()))
        .collect();
    let Some(parts) = request(rest, &tokens, &[]) else {
        return;
    };
    let response = respond(&parts, &fixture.tokens, &fixture.store, now());
    let status = response.status();
    let body = body(response);
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
