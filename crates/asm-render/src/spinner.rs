//! The spinner shown while nothing is printed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner with the elapsed time on stderr (`⠋ Bash 3s`), shown while a tool call runs or
/// the provider is silent. Only ever created for a terminal: [`Spinner::for_terminal`] gives
/// `None` otherwise, so pipes and files never see it. It appears only after
/// [`Spinner::SHOW_AFTER`] of silence, so quick successions of events do not flicker.
#[derive(Debug)]
pub struct Spinner {
    shown: Option<Shown>,
}

#[derive(Debug)]
struct Shown {
    bar: ProgressBar,
    /// `true` once hidden; the delayed drawing checks it under the lock.
    hidden: Arc<Mutex<bool>>,
}

impl Spinner {
    /// How long the spinner waits before it is drawn.
    pub const SHOW_AFTER: Duration = Duration::from_millis(250);

    /// A spinner on stderr when `is_tty`, else `None`.
    ///
    /// ```
    /// assert!(asm_render::Spinner::for_terminal(false).is_none());
    /// ```
    pub fn for_terminal(is_tty: bool) -> Option<Self> {
        is_tty.then_some(Self { shown: None })
    }

    /// A spinner on stderr when stderr is a terminal.
    pub fn stderr() -> Option<Self> {
        Self::for_terminal(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    }

    /// Shows the spinner with `message` (after [`SHOW_AFTER`](Self::SHOW_AFTER)), its clock
    /// starting now (replacing a shown one).
    pub fn show(&mut self, message: &str) {
        self.hide();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        let hidden = Arc::new(Mutex::new(false));
        let (delayed, still) = (bar.clone(), hidden.clone());
        let spawned = std::thread::Builder::new().name("asm-spinner".into()).spawn(move || {
            std::thread::sleep(Self::SHOW_AFTER);
            let hidden = still.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !*hidden {
                delayed.set_draw_target(ProgressDrawTarget::stderr());
                delayed.enable_steady_tick(Duration::from_millis(100));
            }
        });
        if spawned.is_ok() {
            self.shown = Some(Shown { bar, hidden });
        }
    }

    /// Removes the spinner from the screen, if shown.
    pub fn hide(&mut self) {
        if let Some(shown) = self.shown.take() {
            let mut hidden = shown.hidden.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *hidden = true;
            shown.bar.finish_and_clear();
        }
    }

    /// Whether the spinner is shown (or about to be).
    pub fn is_shown(&self) -> bool {
        self.shown.is_some()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.hide();
    }
}
