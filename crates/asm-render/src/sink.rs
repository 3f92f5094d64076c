//! Sinks: where rendered text goes.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;

use asm_core::{Event, EventKind, keys};

use crate::{Spinner, strip_ansi};

/// Where a [`Rendering`](crate::Rendering) writes: every event with its rendered text, text
/// that belongs to no event, and a flush at the end.
pub trait Sink: Send {
    /// Writes the text rendered for `event` (a sink may use the event itself instead).
    ///
    /// # Errors
    /// The writer's error.
    fn write_event(&mut self, event: &Event, text: &str) -> io::Result<()>;

    /// Writes text that belongs to no event (the renderer's closing text, a summary).
    ///
    /// # Errors
    /// The writer's error.
    fn write(&mut self, text: &str) -> io::Result<()>;

    /// Flushes buffered output.
    ///
    /// # Errors
    /// The writer's error.
    fn flush(&mut self) -> io::Result<()>;
}

/// Whether to colour terminal output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColourChoice {
    /// Colour on a terminal when `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Whether output to a terminal (`is_tty`) gets colour under `choice`, reading `NO_COLOR`
/// (<https://no-color.org>: set and not empty disables colour).
pub fn colour_enabled(choice: ColourChoice, is_tty: bool) -> bool {
    colour_with_env(choice, is_tty, std::env::var_os("NO_COLOR").as_deref())
}

pub(crate) fn colour_with_env(choice: ColourChoice, is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    match choice {
        ColourChoice::Always => true,
        ColourChoice::Never => false,
        ColourChoice::Auto => is_tty && no_color.is_none_or(|v| v.is_empty()),
    }
}

/// A terminal (or any writer standing in for one): keeps ANSI colour only when colour is
/// enabled (strips it otherwise), and drives a [`Spinner`] while a tool call runs or the
/// provider is silent at the start of a line (never in the middle of streamed text).
pub struct TerminalSink<W: Write + Send> {
    out: W,
    colour: bool,
    spinner: Option<Spinner>,
    at_line_start: bool,
}

impl<W: Write + Send> std::fmt::Debug for TerminalSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalSink").field("colour", &self.colour).field("spinner", &self.spinner).finish()
    }
}

impl TerminalSink<io::Stdout> {
    /// Standard output: colour per [`colour_enabled`] (`Auto` on whether stdout is a
    /// terminal), a spinner only when both stdout and stderr are terminals.
    pub fn stdout(choice: ColourChoice) -> Self {
        let tty = io::stdout().is_terminal();
        let sink = Self::new(io::stdout(), colour_enabled(choice, tty));
        match Spinner::for_terminal(tty && io::stderr().is_terminal()) {
            Some(spinner) => sink.with_spinner(spinner),
            None => sink,
        }
    }
}

impl<W: Write + Send> TerminalSink<W> {
    /// A terminal sink on `out`, with colour or not, without a spinner.
    pub fn new(out: W, colour: bool) -> Self {
        Self { out, colour, spinner: None, at_line_start: true }
    }

    /// Adds a spinner.
    #[must_use]
    pub fn with_spinner(mut self, spinner: Spinner) -> Self {
        self.spinner = Some(spinner);
        self
    }

    /// Whether a spinner is attached.
    pub fn has_spinner(&self) -> bool {
        self.spinner.is_some()
    }

    /// The writer back.
    pub fn into_inner(mut self) -> W {
        self.spinner = None;
        let Self { out, .. } = self;
        out
    }

    fn put(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        if let Some(spinner) = &mut self.spinner {
            spinner.hide();
        }
        if self.colour {
            self.out.write_all(text.as_bytes())?;
        } else {
            self.out.write_all(strip_ansi(text).as_bytes())?;
        }
        self.at_line_start = text.ends_with('\n');
        self.out.flush()
    }
}

impl<W: Write + Send> Sink for TerminalSink<W> {
    fn write_event(&mut self, event: &Event, text: &str) -> io::Result<()> {
        self.put(text)?;
        let Some(spinner) = &mut self.spinner else { return Ok(()) };
        if event.kind.is_run_terminal() || !self.at_line_start {
            spinner.hide();
        } else if event.kind == EventKind::ToolCallStarted {
            spinner.show(event.data_str(keys::TOOL_NAME).unwrap_or("tool"));
        } else if event.run_id.is_some() && !spinner.is_shown() {
            spinner.show(event.provider.as_deref().filter(|p| *p != "session_manager").unwrap_or("working"));
        }
        Ok(())
    }

    fn write(&mut self, text: &str) -> io::Result<()> {
        self.put(text)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(spinner) = &mut self.spinner {
            spinner.hide();
        }
        self.out.flush()
    }
}

/// A file (or any writer): ANSI colour and cursor sequences stripped.
#[derive(Debug)]
pub struct FileSink<W: Write + Send> {
    out: W,
}

impl FileSink<BufWriter<File>> {
    /// Creates (truncates) the file at `path`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::new(BufWriter::new(File::create(path)?)))
    }
}

impl<W: Write + Send> FileSink<W> {
    /// A file sink on `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for FileSink<W> {
    fn write_event(&mut self, _event: &Event, text: &str) -> io::Result<()> {
        self.write(text)
    }
    fn write(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(strip_ansi(text).as_bytes())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// JSON lines: every event as one [`EventJson`](asm_core::EventJson) object per line
/// (the shape of the HTTP API and `asm --json`); rendered text is ignored. Flushed after
/// every line, so a reader sees each event as soon as it is written.
#[derive(Debug)]
pub struct JsonlSink<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> JsonlSink<W> {
    /// A JSONL sink on `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for JsonlSink<W> {
    fn write_event(&mut self, event: &Event, _text: &str) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &event.to_json()).map_err(io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
    fn write(&mut self, _text: &str) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn colour_only_on_a_tty_without_no_color() {
        assert!(colour_with_env(ColourChoice::Auto, true, None));
        assert!(colour_with_env(ColourChoice::Auto, true, Some(OsStr::new(""))));
        assert!(!colour_with_env(ColourChoice::Auto, true, Some(OsStr::new("1"))));
        assert!(!colour_with_env(ColourChoice::Auto, false, None));
        assert!(colour_with_env(ColourChoice::Always, false, Some(OsStr::new("1"))));
        assert!(!colour_with_env(ColourChoice::Never, true, None));
    }
}
