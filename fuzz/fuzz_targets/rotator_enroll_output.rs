//! `aovis_rotator::seal::recipient_from_enroll_output`: the stdout of
//! `aovis-agent enroll` as `ssm:GetCommandInvocation` returns it. The rotator
//! stores what this accepts in Parameter Store as the host's recipient (trust on
//! first use), and every later round seals that host's credentials to it, so it is
//! outside input written by the node.
//!
//! Beyond "never panics": an accepted recipient is exactly `age1` + canonical
//! bech32 of a key, with no whitespace; it is the first line of the output,
//! trimmed; it round-trips through `parse_recipient` (what later rounds read back
//! from Parameter Store) to the same key; and the text stored is the key's own
//! canonical form, so one key can never be stored under two spellings.
#![no_main]

use aovis_rotator::seal::{parse_recipient, recipient_from_enroll_output, SealError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(output) = std::str::from_utf8(data) else {
        return;
    };
    match recipient_from_enroll_output(output) {
        Ok((stored, recipient)) => {
            assert!(stored.starts_with("age1"), "{stored:?}");
            assert!(!stored.chars().any(char::is_whitespace), "{stored:?}");
            assert_eq!(Some(stored.as_str()), output.lines().next().map(str::trim));
            assert_eq!(stored, recipient.to_string(), "not the canonical spelling");
            let again = parse_recipient(&stored).expect("a stored recipient reads back");
            assert_eq!(again.to_string(), recipient.to_string());
        }
        // The error never quotes the output: it is one fixed sentence.
        Err(err) => assert!(matches!(err, SealError::BadRecipient), "{err}"),
    }
});
