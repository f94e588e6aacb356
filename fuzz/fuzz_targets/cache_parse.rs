//! `aovis_formats::cache::parse`: the cache file, which `aovis-cred`, the daemon
//! and `aovis-agent status` read from disk.
//!
//! Beyond "never panics": a document that parses re-serializes to one that parses
//! to the same value, whose serialization is a fixed point (what the agent writes
//! is what every reader reads back), and the parsed value's `Debug` never shows
//! the secret parts.
#![no_main]

use aovis_formats::cache;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = cache::parse(data) else {
        return;
    };
    let written = parsed.to_json();
    let reread = cache::parse(&written).expect("what to_json writes must parse");
    assert!(reread == parsed, "the round trip changed the value");
    assert_eq!(reread.to_json().as_slice(), written.as_slice());

    let debug = format!("{parsed:?}");
    for secret in [
        parsed.credentials.secret_access_key().expose(),
        parsed.credentials.session_token().expose(),
    ] {
        // Only a secret that cannot be some other field's text proves a leak.
        let text = String::from_utf8_lossy(data);
        if secret.len() >= 8 && text.matches(secret).count() == 1 {
            assert!(!debug.contains(secret), "Debug shows a secret");
        }
    }
});
