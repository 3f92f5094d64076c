//! Small builders, readers and checks the CLI provider crates' tests (claude, codex, amp)
//! share: the request they build argv from, a transcript with one tool call, the fake CLI's
//! environment on a builder, the non-raw event kinds a prepared contract run recorded, a
//! normalizer fed a run's lines, and the raw-lines-anywhere property.

use asm_core::{EventKind, Message, Role, Run, RunInput, Session, SessionId, Transcript};
use asm_ports::{ExecuteOutcome, ExecuteRequest, ProviderEvent};
use proptest::prop_assert_eq;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use std::sync::Arc;

use asm_ports::ProviderAdapter;

use crate::adapter_contract::{AdapterContract, FakeCliInvocation, Normalized, Prepared, conversation, prepare};
use crate::fake_cli::FakeScript;

/// A request for a fresh session (named "agent") whose run's user input is `prompt`.
///
/// # Panics
/// Never for the fixed session name.
#[must_use]
#[allow(clippy::unwrap_used)]
pub fn request(prompt: &str) -> ExecuteRequest {
    let session = Session::new("agent").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user(prompt));
    ExecuteRequest::new(session, run)
}

/// [`request`] with the per-run `options` (a JSON object).
///
/// # Panics
/// If `options` is not a JSON object.
#[must_use]
pub fn request_with_options(prompt: &str, options: serde_json::Value) -> ExecuteRequest {
    let serde_json::Value::Object(options) = options else { panic!("an object") };
    request(prompt).options(options)
}

/// A transcript of a user question ("first question"), the assistant's answer ("first
/// answer"), one tool call `call_id` of `tool` (with `input`, if any) and its result `output`.
#[must_use]
pub fn transcript_with_one_tool_call(
    call_id: &str,
    tool: &str,
    input: Option<serde_json::Map<String, serde_json::Value>>,
    output: &str,
) -> Transcript {
    let mut t = Transcript::new(SessionId::new());
    t.messages.push(Message::new(Role::User, "first question"));
    t.messages.push(Message::new(Role::Assistant, "first answer"));
    let mut call = Message::new(Role::Assistant, "");
    call.content = None;
    call.tool_call_id = Some(call_id.into());
    call.tool_name = Some(tool.into());
    call.tool_input = input;
    t.messages.push(call);
    let mut result = Message::new(Role::Tool, "");
    result.tool_call_id = Some(call_id.into());
    result.tool_name = Some(tool.into());
    result.tool_output = Some(output.into());
    t.messages.push(result);
    t
}

/// The kinds of the events `p`'s sink recorded, in order, leaving out the raw ones
/// (metadata `"raw": true`).
#[must_use]
pub fn non_raw_kinds(p: &Prepared) -> Vec<EventKind> {
    p.recorded
        .events()
        .into_iter()
        .filter(|e| e.metadata.get("raw") != Some(&serde_json::Value::Bool(true)))
        .map(|e| e.kind)
        .collect()
}

/// `builder` with every variable of the fake CLI invocation's environment added, in order, by
/// `set` (an adapter builder's `env_var`; a `CliEnv` takes them at once with `set_all`).
pub fn with_invocation_env<T>(builder: T, inv: &FakeCliInvocation, set: impl Fn(T, &str, &str) -> T) -> T {
    inv.env.iter().fold(builder, |acc, (k, v)| set(acc, k, v))
}

/// What a fresh normalizer makes of `lines`: each non-blank line (the adapter skips blank
/// ones) goes to `push_line`, which may refuse it (the feed stops there with that error as the
/// verdict); then `finish` gives the verdict.
///
/// # Errors
/// None of its own: the verdict is in the returned pair.
pub fn normalize_non_blank_lines<N>(
    mut normalizer: N,
    lines: &[String],
    mut push_line: impl FnMut(&mut N, &str, &mut Vec<ProviderEvent>) -> asm_core::Result<()>,
    finish: impl FnOnce(&N) -> asm_core::Result<ExecuteOutcome>,
) -> Normalized {
    let mut out = Vec::new();
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        if let Err(e) = push_line(&mut normalizer, line, &mut out) {
            return (out, Err(e));
        }
    }
    let verdict = finish(&normalizer);
    (out, verdict)
}

/// The property behind "several raw lines anywhere are transparent": `lines` with lines of
/// `unknown` inserted (each `(at, which)` of `inserts` in turn: `which` picks the line, `at`
/// the position) give the same conversation and the same verdict (output text, or error
/// code) through `normalize` as `lines` alone. `name` labels failures.
///
/// # Errors
/// A [`TestCaseError`] when the inserted lines change the conversation or the verdict.
pub fn check_inserted_raw_lines_are_transparent(
    name: &str,
    lines: &[String],
    inserts: Vec<(Index, Index)>,
    unknown: &[&str],
    normalize: impl Fn(&[String]) -> Normalized,
) -> Result<(), TestCaseError> {
    let mut mixed = lines.to_vec();
    for (at, which) in inserts {
        mixed.insert(at.index(mixed.len() + 1), which.get(unknown).to_string());
    }
    let ((plain_events, plain), (mixed_events, mixed)) = (normalize(lines), normalize(&mixed));
    prop_assert_eq!(conversation(&plain_events), conversation(&mixed_events), "{}", name);
    prop_assert_eq!(
        plain.map(|o| o.output.content).map_err(|e| e.code()),
        mixed.map(|o| o.output.content).map_err(|e| e.code())
    );
    Ok(())
}

/// A run of `script` through the fake CLI, prepared ([`prepare`]) for the adapter `make`
/// builds.
pub fn prepare_fake_cli_run(
    make: impl Fn(&FakeCliInvocation) -> Arc<dyn ProviderAdapter> + Send + Sync + 'static,
    script: &FakeScript,
) -> Prepared {
    prepare(&AdapterContract::new(make, script.clone(), ""), script)
}

/// The stdout lines of fixture `fixture`, with every `from` replaced by `to`.
///
/// # Panics
/// When the fixture cannot be read.
#[must_use]
pub fn fixture_lines_replacing(fixture: &str, from: &str, to: &str) -> Vec<String> {
    FakeScript::fixture(fixture).stdout_lines().expect("fixture").into_iter().map(|l| l.replace(from, to)).collect()
}
