//! `aovis_formats::envelope::parse`: the plaintext inside a delivery, as
//! `aovis-agent receive` reads it after decryption.
//!
//! Beyond "never panics": an envelope that parses re-serializes to one that parses
//! to the same value, and that serialization is a fixed point.
#![no_main]

use aovis_formats::envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = envelope::parse(data) else {
        return;
    };
    let written = parsed.to_json();
    let reread = envelope::parse(&written).expect("what to_json writes must parse");
    assert!(reread == parsed, "the round trip changed the value");
    assert_eq!(reread.to_json().as_slice(), written.as_slice());
});
