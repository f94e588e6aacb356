//! `aovis_formats::time::parse_timestamp`: every timestamp field of the cache and
//! the envelope.
//!
//! Beyond "never panics": a time that parses is written by `format_expiration` in
//! the one form every SDK reads (`YYYY-MM-DDTHH:MM:SSZ`, 20 characters), and that
//! text parses back to the same time, so what the agent writes it can read again.
#![no_main]

use aovis_formats::time::{format_expiration, parse_timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(time) = parse_timestamp(text) else {
        return;
    };
    let written = format_expiration(time);
    assert_eq!(written.len(), 20, "not YYYY-MM-DDTHH:MM:SSZ: {written}");
    assert!(written.ends_with('Z'), "{written}");
    assert_eq!(parse_timestamp(&written), Some(time), "{written}");
});
