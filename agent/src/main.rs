//! `aovis-agent`: the host side of aovis (enroll, receive, status, doctor, run).
//!
//! Not built yet: this binary only says so and exits non-zero, so nothing can
//! mistake it for a working agent.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("aovis-agent: not implemented yet in this release; see the project's open issues");
    ExitCode::from(1)
}
