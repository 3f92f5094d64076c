//! Renderers and sinks for agent-session-manager event streams (spec 10.13).
//!
//! A [`Renderer`] turns each event into text ([`CompactRenderer`], [`VerboseRenderer`]); a
//! [`Sink`] writes it somewhere: [`TerminalSink`] (ANSI colour only on a TTY and only when
//! `NO_COLOR` is unset, with a [`Spinner`] on a TTY while a tool call or the provider is
//! silent), [`FileSink`] (ANSI stripped) and [`JsonlSink`] (one
//! [`EventJson`](asm_core::EventJson) per line, ignoring the text). [`Rendering`] drives one
//! renderer into many sinks.
//!
//! Renderers always produce colour codes when asked to ([`RenderOptions::colour`]); sinks
//! decide whether to keep them, so one rendering can go to a terminal and a log file at once.
//!
//! ```
//! use asm_core::{Event, EventKind, SessionId};
//! use asm_render::{CompactRenderer, Renderer, RenderOptions};
//! let s = SessionId::new();
//! let mut r = CompactRenderer::new(RenderOptions::plain());
//! let mut out = String::new();
//! out += &r.render(&Event::new(EventKind::RunStarted, s.clone()).with_data("model", "m1"));
//! out += &r.render(&Event::new(EventKind::MessageStreamed, s.clone()).with_data("delta", "Hi"));
//! out += &r.render(&Event::new(EventKind::RunCompleted, s).with_data("stop_reason", "end_turn"));
//! out += &r.finish();
//! assert_eq!(out, "r+m1\n>> Hi\nr-:end\n");
//! ```
#![deny(missing_docs)]

mod ansi;
mod compact;
mod sink;
mod spinner;
mod verbose;

use std::io;

use asm_core::Event;

pub use ansi::strip_ansi;
pub use compact::CompactRenderer;
pub use sink::{ColourChoice, FileSink, JsonlSink, Sink, TerminalSink, colour_enabled};
pub use spinner::Spinner;
pub use verbose::VerboseRenderer;

/// Options shared by the renderers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenderOptions {
    /// Emit ANSI colour codes (sinks strip them where colour is not wanted).
    pub colour: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { colour: true }
    }
}

impl RenderOptions {
    /// Colour on (the default).
    pub fn new() -> Self {
        Self::default()
    }
    /// No colour codes at all.
    pub fn plain() -> Self {
        Self { colour: false }
    }
    /// Sets [`RenderOptions::colour`].
    #[must_use]
    pub fn colour(mut self, colour: bool) -> Self {
        self.colour = colour;
        self
    }
}

/// Turns events into text, one event at a time. Text may span several lines or continue
/// the current line (streamed assistant text).
pub trait Renderer: Send {
    /// The text for one event (may be empty).
    fn render(&mut self, event: &Event) -> String;
    /// The text that closes the rendering (for example a final newline after streamed text).
    fn finish(&mut self) -> String;
}

impl<R: Renderer + ?Sized> Renderer for Box<R> {
    fn render(&mut self, event: &Event) -> String {
        (**self).render(event)
    }
    fn finish(&mut self) -> String {
        (**self).finish()
    }
}

/// The built-in renderers by name (`compact`, `verbose`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RendererKind {
    /// [`CompactRenderer`].
    #[default]
    Compact,
    /// [`VerboseRenderer`].
    Verbose,
}

impl RendererKind {
    /// Parses `compact` or `verbose`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "compact" => Some(Self::Compact),
            "verbose" => Some(Self::Verbose),
            _ => None,
        }
    }

    /// A boxed renderer of this kind.
    pub fn build(self, options: RenderOptions) -> Box<dyn Renderer> {
        match self {
            Self::Compact => Box::new(CompactRenderer::new(options)),
            Self::Verbose => Box::new(VerboseRenderer::new(options)),
        }
    }
}

/// One renderer feeding many sinks: for each event the renderer's text goes to every sink
/// with the event; [`finish`](Self::finish) writes the renderer's closing text and flushes.
///
/// ```
/// use asm_core::{Event, EventKind, SessionId};
/// use asm_render::{FileSink, Rendering, RendererKind, RenderOptions};
/// let mut rendering = Rendering::new(RendererKind::Compact.build(RenderOptions::new()));
/// rendering.add_sink(FileSink::new(Vec::<u8>::new()));
/// rendering.event(&Event::new(EventKind::MessageStreamed, SessionId::new()).with_data("delta", "Hi"))?;
/// rendering.finish()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Rendering {
    renderer: Box<dyn Renderer>,
    sinks: Vec<Box<dyn Sink>>,
}

impl std::fmt::Debug for Rendering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendering").field("sinks", &self.sinks.len()).finish_non_exhaustive()
    }
}

impl Rendering {
    /// A rendering with no sinks yet.
    pub fn new(renderer: Box<dyn Renderer>) -> Self {
        Self { renderer, sinks: Vec::new() }
    }

    /// Adds a sink.
    pub fn add_sink(&mut self, sink: impl Sink + 'static) -> &mut Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Renders one event into every sink.
    ///
    /// # Errors
    /// The first sink's write error.
    pub fn event(&mut self, event: &Event) -> io::Result<()> {
        let text = self.renderer.render(event);
        for sink in &mut self.sinks {
            sink.write_event(event, &text)?;
        }
        Ok(())
    }

    /// Writes text that belongs to no event (a summary line) to every sink.
    ///
    /// # Errors
    /// The first sink's write error.
    pub fn write(&mut self, text: &str) -> io::Result<()> {
        for sink in &mut self.sinks {
            sink.write(text)?;
        }
        Ok(())
    }

    /// Writes the renderer's closing text and flushes every sink.
    ///
    /// # Errors
    /// The first sink's write or flush error.
    pub fn finish(&mut self) -> io::Result<()> {
        let text = self.renderer.finish();
        for sink in &mut self.sinks {
            if !text.is_empty() {
                sink.write(&text)?;
            }
            sink.flush()?;
        }
        Ok(())
    }
}

/// Text shortened to at most `max` characters, with `…` when cut, on one line.
pub(crate) fn preview(text: &str, max: usize) -> String {
    let one_line: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    let one_line = one_line.trim();
    if one_line.chars().count() <= max {
        return one_line.to_owned();
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A JSON value as short text: strings as they are, anything else as compact JSON.
pub(crate) fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Usage and cost of a terminal event (`token_usage`, `total_cost_usd`), or of the folded
/// `token_usage_updated` events seen before it.
pub(crate) fn usage_of(event: &Event, seen: &asm_core::UsageTotals) -> (u64, u64, Option<f64>) {
    let from_event = event.data.get(asm_core::keys::TOKEN_USAGE).and_then(|u| {
        let input = u.get("input_tokens")?.as_u64()?;
        let output = u.get("output_tokens")?.as_u64()?;
        Some((input, output))
    });
    let cost = event.data.get(asm_core::keys::TOTAL_COST_USD).and_then(serde_json::Value::as_f64).or(seen.cost_usd);
    let (input, output) = from_event.unwrap_or((seen.usage.input_tokens, seen.usage.output_tokens));
    (input, output, cost)
}

/// Colour codes.
pub(crate) mod style {
    pub(crate) const RESET: &str = "\x1b[0m";
    pub(crate) const DIM: &str = "\x1b[2m";
    pub(crate) const BOLD: &str = "\x1b[1m";
    pub(crate) const RED: &str = "\x1b[31m";
    pub(crate) const GREEN: &str = "\x1b[32m";
    pub(crate) const YELLOW: &str = "\x1b[33m";
    pub(crate) const CYAN: &str = "\x1b[36m";

    /// `text` in `code` when `on`.
    pub(crate) fn paint(on: bool, code: &str, text: &str) -> String {
        if on { format!("{code}{text}{RESET}") } else { text.to_owned() }
    }
}
