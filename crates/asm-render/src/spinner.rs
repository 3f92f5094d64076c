//! The spinner shown while nothing is printed.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner with the elapsed time on stderr (`⠋ Bash 3s`), shown while a tool call runs or
/// the provider is silent. Only ever created for a terminal: [`Spinner::for_terminal`] gives
/// `None` otherwise, so pipes and files never see it.
#[derive(Debug)]
pub struct Spinner {
    bar: Option<ProgressBar>,
}

impl Spinner {
    /// A spinner on stderr when `is_tty`, else `None`.
    ///
    /// ```
    /// assert!(asm_render::Spinner::for_terminal(false).is_none());
    /// ```
    pub fn for_terminal(is_tty: bool) -> Option<Self> {
        is_tty.then_some(Self { bar: None })
    }

    /// A spinner on stderr when stderr is a terminal.
    pub fn stderr() -> Option<Self> {
        Self::for_terminal(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    }

    /// Shows the spinner with `message`, its clock starting now (replacing a shown one).
    pub fn show(&mut self, message: &str) {
        self.hide();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        self.bar = Some(bar);
    }

    /// Removes the spinner from the screen, if shown.
    pub fn hide(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Whether the spinner is shown.
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.hide();
    }
}
