//! `aovis_agent::daemon::imds::Imds::respond`: every request a local process can
//! send to the IMDSv2 endpoint (method, path, headers), answered from a loaded
//! cache.
//!
//! Beyond "never panics": a response carrying the credentials is only ever the
//! answer to a GET of the role's path with a valid session token, and the
//! first byte decides whether the request carries the token issued at setup.
#![no_main]

#[path = "common/daemon.rs"]
mod common;

use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use aovis_agent::daemon::imds::{Imds, TOKEN_HEADER};
use aovis_agent::daemon::store::Store;
use aovis_agent::daemon::tokens::SessionTokens;
use aovis_formats::ProfileName;
use libfuzzer_sys::fuzz_target;

use common::{body, load, now, request};

const SECRET: &str = "FuZzSeCrEt/aovis+0123456789ABCDEFGHIJKL";

struct Fixture {
    profile: ProfileName,
    store: Store,
    sessions: RwLock<SessionTokens>,
    token: String,
    start: Instant,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let profile = ProfileName::new("default").expect("a name");
        let store = Store::default();
        load(
            &store,
            &profile,
            "onprem",
            "ASIAFUZZ000000000001".into(),
            SECRET,
        );
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
    let with_token = flags & 1 == 1;
    let token = [(TOKEN_HEADER, fixture.token.as_str())];
    let Some(parts) = request(rest, &[], if with_token { &token } else { &[] }) else {
        return;
    };
    let imds = Imds {
        profile: Some(&fixture.profile),
        store: &fixture.store,
        sessions: &fixture.sessions,
    };
    let response = imds.respond(&parts, now(), fixture.start);
    if body(response).contains(SECRET) {
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
