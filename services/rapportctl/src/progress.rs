//! What rapportctl shows while it waits for a service: a bar when the total
//! is known, a spinner otherwise, on stderr when that is a terminal. Where it
//! is not (tests, CI, pipes) indicatif draws nothing, so what happened is said
//! by the lines printed through [`Progress::println`], which always appear.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar or spinner, cleared when dropped (also when a command fails).
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar named `prefix`; its length is set with each [`Progress::show`].
    pub(crate) fn bar(prefix: &str) -> Self {
        // `wide_msg` takes what is left of the line and is cut to fit, so
        // the bar stays on one line of a narrow terminal.
        let style = ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {wide_msg}")
            .expect("a valid template")
            .progress_chars("#>-");
        Self {
            bar: ProgressBar::new(0)
                .with_style(style)
                .with_prefix(prefix.to_owned()),
        }
    }

    /// A spinner named `prefix`, for waits of unknown length.
    pub(crate) fn spinner(prefix: &str) -> Self {
        let style = ProgressStyle::with_template("{spinner} {prefix} {elapsed} {wide_msg}")
            .expect("a valid template");
        let bar = ProgressBar::new_spinner()
            .with_style(style)
            .with_prefix(prefix.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar }
    }

    /// Moves a bar to `position` of `length`, with `message` after it.
    pub(crate) fn show(&self, position: u64, length: u64, message: String) {
        self.bar.set_length(length);
        self.bar.set_position(position.min(length));
        self.bar.set_message(message);
    }

    pub(crate) fn message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Prints `line` on stdout, with the bar out of its way.
    pub(crate) fn println(&self, line: impl std::fmt::Display) {
        self.bar.suspend(|| println!("{line}"));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
