//! `aovis-rotator`: the AWS side of aovis (a rotation round as a Lambda or from cron).
//!
//! Not built yet: this binary only says so and exits non-zero, so nothing can
//! mistake it for a working rotator.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("aovis-rotator: not implemented yet in this release; see the project's open issues");
    ExitCode::from(1)
}
