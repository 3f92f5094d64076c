//! The verbose renderer.

use asm_core::{Event, EventKind, UsageTotals, keys};

use crate::compact::TextState;
use crate::style::{self, paint};
use crate::{RenderOptions, Renderer, preview, usage_of, value_text};

/// Tool inputs and other payloads are previewed to this many characters.
const PREVIEW: usize = 120;
/// Tool results and whole messages are shown up to this many characters.
const RESULT: usize = 2_000;

/// One bracketed line per event (spec 10.13 "Verbose"): `[run_started] model=… session_id=…`,
/// streamed assistant text inline as it arrives, tool lines with input previews of 120
/// characters and results of up to 2,000, usage and cost on the terminal line. Reasoning
/// chunks and `message_received` of an already streamed message are not repeated.
#[derive(Debug, Default)]
pub struct VerboseRenderer {
    options: RenderOptions,
    text: TextState,
    usage: UsageTotals,
}

impl VerboseRenderer {
    /// A verbose renderer.
    pub fn new(options: RenderOptions) -> Self {
        Self { options, ..Self::default() }
    }

    fn line(&mut self, kind: EventKind, fields: &[(&str, String)]) -> String {
        let c = self.options.colour;
        let colour = match kind {
            EventKind::RunFailed | EventKind::RunTimeout | EventKind::RunCancelled | EventKind::ErrorOccurred => {
                style::RED
            }
            EventKind::ToolCallFailed | EventKind::PolicyViolation => style::RED,
            EventKind::RunCompleted | EventKind::ToolCallCompleted => style::GREEN,
            EventKind::ToolCallStarted | EventKind::ToolApprovalRequested => style::YELLOW,
            _ => style::CYAN,
        };
        let mut out = format!("{}{}", self.text.close(), paint(c, colour, &format!("[{kind}]")));
        for (key, value) in fields {
            if value.is_empty() {
                continue;
            }
            if key.is_empty() {
                out.push_str(&format!(" {value}"));
            } else {
                out.push_str(&format!(" {}={value}", paint(c, style::DIM, key)));
            }
        }
        out.push('\n');
        out
    }
}

impl Renderer for VerboseRenderer {
    fn render(&mut self, event: &Event) -> String {
        let s = |key: &str| event.data.get(key).map(value_text).unwrap_or_default();
        let kind = event.kind;
        match kind {
            EventKind::MessageStreamed => {
                let delta = event.data_str(keys::DELTA).or_else(|| event.data_str(keys::CONTENT)).unwrap_or_default();
                if !delta.is_empty() {
                    self.text.chunk(delta);
                }
                delta.to_owned()
            }
            EventKind::ReasoningStreamed => String::new(),
            EventKind::MessageReceived if !event.is_provider_raw() && std::mem::take(&mut self.text.streamed) => {
                self.text.close().to_owned()
            }
            EventKind::RunStarted => {
                self.text.streamed = false;
                self.line(
                    kind,
                    &[
                        ("provider", s(keys::PROVIDER)),
                        ("model", s(keys::MODEL)),
                        ("session_id", event.session_id.to_string()),
                        ("run_id", event.run_id.as_ref().map(ToString::to_string).unwrap_or_default()),
                    ],
                )
            }
            EventKind::MessageSent | EventKind::MessageReceived => {
                let max = if kind == EventKind::MessageSent { PREVIEW } else { RESULT };
                self.line(kind, &[("role", s(keys::ROLE)), ("content", preview(&s(keys::CONTENT), max))])
            }
            EventKind::ToolCallStarted => {
                self.text.streamed = false;
                self.line(
                    kind,
                    &[
                        ("", s(keys::TOOL_NAME)),
                        ("id", s(keys::TOOL_CALL_ID)),
                        ("input", preview(&s(keys::TOOL_INPUT), PREVIEW)),
                    ],
                )
            }
            EventKind::ToolCallCompleted | EventKind::ToolCallFailed => self.line(
                kind,
                &[
                    ("", s(keys::TOOL_NAME)),
                    ("id", s(keys::TOOL_CALL_ID)),
                    ("output", preview(&s(keys::TOOL_OUTPUT), RESULT)),
                ],
            ),
            EventKind::TokenUsageUpdated => {
                self.usage.record(event);
                self.line(
                    kind,
                    &[
                        ("input_tokens", s(keys::INPUT_TOKENS)),
                        ("output_tokens", s(keys::OUTPUT_TOKENS)),
                        (
                            "cost",
                            event
                                .data
                                .get(keys::TOTAL_COST_USD)
                                .and_then(|v| v.as_f64())
                                .map(dollars)
                                .unwrap_or_default(),
                        ),
                    ],
                )
            }
            kind if kind.is_run_terminal() => {
                let (input, output, cost) = usage_of(event, &self.usage);
                self.usage = UsageTotals::default();
                self.text.streamed = false;
                let mut fields = vec![
                    ("stop_reason", s(keys::STOP_REASON)),
                    ("reason", s(keys::REASON)),
                    ("error_code", s(keys::ERROR_CODE)),
                    ("error_message", preview(&s(keys::ERROR_MESSAGE), RESULT)),
                ];
                if input > 0 || output > 0 {
                    fields.push(("input_tokens", input.to_string()));
                    fields.push(("output_tokens", output.to_string()));
                }
                fields.push(("cost", cost.map(dollars).unwrap_or_default()));
                self.line(kind, &fields)
            }
            EventKind::ErrorOccurred => self.line(
                kind,
                &[("error_code", s(keys::ERROR_CODE)), ("error_message", preview(&s(keys::ERROR_MESSAGE), RESULT))],
            ),
            EventKind::ReasoningCompleted => self.line(kind, &[("", preview(&s(keys::CONTENT), PREVIEW))]),
            EventKind::ProviderRaw => self.line(kind, &[("", preview(&s(keys::RAW), PREVIEW))]),
            _ => {
                let data = if event.data.is_empty() {
                    String::new()
                } else {
                    serde_json::Value::Object(event.data.clone()).to_string()
                };
                self.line(kind, &[("", preview(&data, PREVIEW))])
            }
        }
    }

    fn finish(&mut self) -> String {
        self.text.close().to_owned()
    }
}

fn dollars(cost: f64) -> String {
    format!("${cost:.4}")
}
