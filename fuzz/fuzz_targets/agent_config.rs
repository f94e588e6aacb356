//! `aovis_agent::config::parse`: `agent.toml`, which an operator (or a config
//! management tool) writes and every agent command reads.
//!
//! Beyond "never panics": an error is one line (the agent prints it as its one
//! stderr line) and names a line of the input when it names one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err((line, message)) = aovis_agent::config::parse(text) {
        assert!(
            !message.contains('\n'),
            "a message of several lines: {message:?}"
        );
        if let Some(line) = line {
            assert!(line >= 1 && line <= text.lines().count() + 1, "line {line}");
        }
    }
});
