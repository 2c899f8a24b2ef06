//! Progress of the long commands (`publish`, `generate`, `dlq replay`), drawn on stderr only when
//! stderr is a terminal that can redraw a line (`TERM` set, and not `dumb`). Otherwise nothing at all
//! is written for it: a command whose stderr goes to a file, a pipe or a log collector writes there
//! only its errors.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress line on stderr, or nothing.
pub struct Progress(ProgressBar);

impl Progress {
    /// Whether progress is drawn: stderr is a terminal, and `TERM` names one that is not `dumb`.
    pub fn wanted() -> bool {
        let term = std::env::var("TERM").unwrap_or_default();
        std::io::stderr().is_terminal() && !term.is_empty() && term != "dumb"
    }

    /// A count without a known end: `⠋ 1200 published (850/s)`.
    pub fn counter(what: &'static str) -> Progress {
        Self::shown(None, what)
    }

    /// A count towards `len`: `[=====>    ] 40/100 replayed (12/s, 5s left)`.
    pub fn bar(len: u64, what: &'static str) -> Progress {
        Self::shown(Some(len), what)
    }

    /// Nothing drawn, whatever stderr is.
    pub fn hidden() -> Progress {
        Progress(ProgressBar::hidden())
    }

    fn shown(len: Option<u64>, what: &'static str) -> Progress {
        if !Self::wanted() {
            return Self::hidden();
        }
        let template = match len {
            Some(_) => "{bar:30} {pos}/{len} {msg} ({rate}, {eta} left)",
            None => "{spinner} {pos} {msg} ({rate})",
        };
        let style = ProgressStyle::with_template(template)
            .expect("a valid progress template")
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", state.per_sec());
                },
            )
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(what);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress(bar)
    }

    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub fn set_length(&self, len: u64) {
        self.0.set_length(len);
    }

    /// Runs `f` (which prints to stdout) with the progress line out of the way, so that the two never
    /// mix on one terminal.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.0.suspend(f)
    }

    /// Leaves the last state on the terminal (the total reached).
    pub fn finish(&self) {
        self.0.abandon();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.abandon();
        }
    }
}
