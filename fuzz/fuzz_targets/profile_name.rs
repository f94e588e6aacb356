//! `aovis_formats::ProfileName::new`: a name from the command line, the agent
//! config or an envelope, which becomes a file name under `$STATE/profiles/`.
//!
//! Beyond "never panics": an accepted name is 1 to 64 characters of
//! `A-Z a-z 0-9 _ . -`, not starting with `.`, so `<name>.json` is one path
//! component inside the profiles directory and never a lock or temp file's name.
#![no_main]

use std::path::{Component, Path};

use aovis_formats::ProfileName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = ProfileName::new(text) else {
        return;
    };
    assert_eq!(name.as_str(), text);
    assert!((1..=64).contains(&text.len()));
    assert!(!text.starts_with('.'));
    assert!(text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')));
    let file = name.file_name();
    let components: Vec<Component<'_>> = Path::new(&file).components().collect();
    assert_eq!(components.len(), 1, "{file} is not one path component");
    assert!(matches!(components[0], Component::Normal(_)), "{file}");
    assert!(
        !file.starts_with('.'),
        "{file} would look like a lock or temp file"
    );
});
