//! The compact renderer.

use asm_core::{Event, EventKind, UsageTotals, keys};

use crate::style::{self, paint};
use crate::{RenderOptions, Renderer, preview, usage_of, value_text};

/// One short token line per event that matters (spec 10.13 "Compact"):
///
/// | event | line |
/// |---|---|
/// | `run_started` | `r+<model>` |
/// | `message_streamed` | `>> ` then the text as it streams |
/// | `message_received` (not streamed) | `msg <preview>` |
/// | `tool_call_started` | `t+<Name> <input preview>` |
/// | `tool_call_completed` | `t-<Name>`, with ` tr:<output preview>` |
/// | `tool_call_failed` | `t!<Name>`, with ` tr:<output preview>` |
/// | terminal event | `tk:<in>/<out>` (and ` $<cost>`) when known, then `r-` / `r-:<stop reason>` or `! <why>` |
/// | `error_occurred`, `policy_violation` | `! <message>` |
/// | `tool_approval_requested` | `? approval <Name>` |
///
/// Stop reasons are shortened (`end_turn` → `end`, `tool_use` → `tool`). Other events
/// (lifecycle, reasoning, raw provider lines, the prompt) print nothing.
#[derive(Debug, Default)]
pub struct CompactRenderer {
    options: RenderOptions,
    text: TextState,
    usage: UsageTotals,
}

/// Where streamed text stands: inside a text block, whether its last line is still open (did
/// not end with a newline), and whether the current message was streamed.
#[derive(Debug, Default)]
pub(crate) struct TextState {
    pub(crate) in_text: bool,
    pub(crate) line_open: bool,
    pub(crate) streamed: bool,
}

impl TextState {
    /// Ends the text block: `"\n"` when its last line is open, else nothing.
    pub(crate) fn close(&mut self) -> &'static str {
        self.in_text = false;
        if std::mem::take(&mut self.line_open) { "\n" } else { "" }
    }

    /// Records a chunk of streamed text; whether it starts a new block.
    pub(crate) fn chunk(&mut self, delta: &str) -> bool {
        let starts = !self.in_text;
        self.in_text = true;
        self.streamed = true;
        self.line_open = !delta.ends_with('\n');
        starts
    }
}

impl CompactRenderer {
    /// A compact renderer.
    pub fn new(options: RenderOptions) -> Self {
        Self { options, ..Self::default() }
    }

    fn line(&mut self, body: &str) -> String {
        format!("{}{body}\n", self.text.close())
    }
}

/// `end_turn` -> `end`, `tool_use` -> `tool`, others unchanged.
pub(crate) fn short_stop_reason(reason: &str) -> &str {
    match reason {
        "end_turn" => "end",
        "tool_use" => "tool",
        "max_tokens" => "max",
        other => other,
    }
}

pub(crate) fn usage_line(event: &Event, seen: &UsageTotals) -> Option<String> {
    let (input, output, cost) = usage_of(event, seen);
    if input == 0 && output == 0 && cost.is_none() {
        return None;
    }
    let mut line = format!("tk:{input}/{output}");
    if let Some(cost) = cost {
        line.push_str(&format!(" ${cost:.4}"));
    }
    Some(line)
}

impl Renderer for CompactRenderer {
    fn render(&mut self, event: &Event) -> String {
        let c = self.options.colour;
        let str_of = |key: &str| event.data_str(key).unwrap_or_default().to_owned();
        match event.kind {
            EventKind::RunStarted => {
                self.text.streamed = false;
                let model = event
                    .data_str(keys::MODEL)
                    .or_else(|| event.data_str(keys::PROVIDER))
                    .or(event.provider.as_deref())
                    .unwrap_or_default();
                let body = paint(c, style::BOLD, &format!("r+{model}"));
                self.line(&body)
            }
            EventKind::MessageStreamed => {
                let delta = event.data_str(keys::DELTA).or_else(|| event.data_str(keys::CONTENT)).unwrap_or_default();
                if delta.is_empty() {
                    return String::new();
                }
                if self.text.chunk(delta) {
                    format!("{}{delta}", paint(c, style::CYAN, ">> "))
                } else {
                    delta.to_owned()
                }
            }
            EventKind::MessageReceived if !event.is_provider_raw() => {
                if event.data_str(keys::ROLE).is_some_and(|r| r != "assistant") {
                    return String::new();
                }
                if std::mem::take(&mut self.text.streamed) {
                    return self.text.close().to_owned();
                }
                let content = preview(&str_of(keys::CONTENT), 80);
                if content.is_empty() {
                    return String::new();
                }
                self.line(&format!("{} {content}", paint(c, style::CYAN, "msg")))
            }
            EventKind::ToolCallStarted => {
                self.text.streamed = false;
                let input = event.data.get(keys::TOOL_INPUT).map(value_text).unwrap_or_default();
                let input = preview(&input, 60);
                let head = paint(c, style::YELLOW, &format!("t+{}", str_of(keys::TOOL_NAME)));
                if input.is_empty() || input == "{}" {
                    self.line(&head)
                } else {
                    self.line(&format!("{head} {}", paint(c, style::DIM, &input)))
                }
            }
            EventKind::ToolCallCompleted | EventKind::ToolCallFailed => {
                let failed = event.kind == EventKind::ToolCallFailed;
                let mark = if failed { "t!" } else { "t-" };
                let head = paint(
                    c,
                    if failed { style::RED } else { style::GREEN },
                    &format!("{mark}{}", str_of(keys::TOOL_NAME)),
                );
                let output = event.data.get(keys::TOOL_OUTPUT).map(value_text).unwrap_or_default();
                let output = preview(&output, 60);
                if output.is_empty() {
                    self.line(&head)
                } else {
                    self.line(&format!("{head} {}", paint(c, style::DIM, &format!("tr:{output}"))))
                }
            }
            EventKind::TokenUsageUpdated => {
                self.usage.record(event);
                String::new()
            }
            kind if kind.is_run_terminal() => {
                let mut out = self.text.close().to_owned();
                if let Some(usage) = usage_line(event, &self.usage) {
                    out += &paint(c, style::DIM, &usage);
                    out.push('\n');
                }
                self.usage = UsageTotals::default();
                self.text.streamed = false;
                let end = match kind {
                    EventKind::RunCompleted => match event.data_str(keys::STOP_REASON) {
                        Some(reason) if !reason.is_empty() => {
                            paint(c, style::GREEN, &format!("r-:{}", short_stop_reason(reason)))
                        }
                        _ => paint(c, style::GREEN, "r-"),
                    },
                    EventKind::RunCancelled => paint(c, style::RED, "! cancelled"),
                    _ => {
                        let message = event.data_str(keys::ERROR_MESSAGE).unwrap_or(kind.as_str());
                        paint(c, style::RED, &format!("! {}", preview(message, 200)))
                    }
                };
                out += &end;
                out.push('\n');
                out
            }
            EventKind::ErrorOccurred => {
                let message = event.data_str(keys::ERROR_MESSAGE).unwrap_or("error");
                self.line(&paint(c, style::RED, &format!("! {}", preview(message, 200))))
            }
            EventKind::PolicyViolation => {
                let what = format!("! policy {} {}", str_of(keys::POLICY), str_of(keys::KIND));
                self.line(&paint(c, style::RED, what.trim_end()))
            }
            EventKind::ToolApprovalRequested => {
                self.line(&paint(c, style::YELLOW, &format!("? approval {}", str_of(keys::TOOL_NAME))))
            }
            _ => String::new(),
        }
    }

    fn finish(&mut self) -> String {
        self.text.close().to_owned()
    }
}
