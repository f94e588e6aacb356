//! Progress for people: hosts done of total and failures so far, drawn on stderr
//! with indicatif, only when stderr is a terminal and the rotator is not a Lambda.
//! Otherwise every call is a no-op, so logs and the report stay clean. The round
//! delivers while discovery still lists hosts, so the total grows page by page
//! ([`Progress::add_targets`]).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::Outcome;

/// A progress bar, or nothing.
#[derive(Debug, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
    failed: AtomicU64,
}

impl Progress {
    /// No progress display.
    pub fn hidden() -> Self {
        Self::default()
    }

    /// A bar on stderr when it is a terminal and `lambda` is false.
    pub fn for_stderr(lambda: bool) -> Self {
        if lambda || !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} hosts, {msg} [{elapsed}]")
        {
            bar.set_style(style);
        }
        bar.set_message("0 failed");
        Self {
            bar: Some(bar),
            failed: AtomicU64::new(0),
        }
    }

    /// Discovery found `count` more hosts: the round delivers while it still
    /// discovers, so the total grows as pages arrive.
    pub fn add_targets(&self, count: u64) {
        if let Some(bar) = &self.bar {
            bar.inc_length(count);
        }
    }

    /// One host reached its outcome.
    pub fn host_done(&self, outcome: Option<Outcome>) {
        let Some(bar) = &self.bar else { return };
        if outcome == Some(Outcome::Failed) {
            let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
            bar.set_message(format!("{failed} failed"));
        }
        bar.inc(1);
    }

    /// Leaves the final state on screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
