#![allow(clippy::unwrap_used)]
//! The control protocol mode (a run with an approval handler), replayed by the fake CLI from the
//! real CLI's captured exchanges in `fixtures/control/` (see `docs/claude-control-protocol.md`):
//! allow, deny, allow always, cancel while a decision is pending, and the round trip an
//! approval adds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Notify;

use asm_core::{ErrorCode, EventKind};
use asm_ports::{ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict, ExecuteRequest, ProviderAdapter};
use asm_provider_claude::{ClaudeAdapter, INTERRUPT_REQUEST_ID};
use asm_provider_cli::{CliEnv, CliLimits};
use asm_testkit::adapter_contract::{AdapterContract, FakeCliInvocation, Prepared, assert_group_gone, prepare};
use asm_testkit::fake_cli::FakeScript;

const BOUND: Duration = Duration::from_secs(20);

fn control_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join("control").join(name)
}

/// The captured exchange `name` as a fake script (interactive mode: host lines are awaited).
fn script(name: &str) -> FakeScript {
    FakeScript::fixture_at(&control_fixture(name)).jsonrpc()
}

fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    let limits = CliLimits::default().graces(Duration::from_secs(2), Duration::from_secs(2));
    Arc::new(ClaudeAdapter::builder().cli_path(&inv.program).env(env).limits(limits).build())
}

/// Answers every request with `decision` at once, keeping what it was asked and when.
#[derive(Debug)]
struct Fixed {
    decision: ApprovalDecision,
    reason: Option<&'static str>,
    asked: Mutex<Vec<(ApprovalRequest, Instant)>>,
}

impl Fixed {
    fn new(decision: ApprovalDecision) -> Arc<Self> {
        Arc::new(Self { decision, reason: None, asked: Mutex::new(Vec::new()) })
    }
    fn asked(&self) -> Vec<ApprovalRequest> {
        self.asked.lock().unwrap().iter().map(|(r, _)| r.clone()).collect()
    }
}

#[async_trait]
impl ApprovalHandler for Fixed {
    async fn decide(&self, request: &ApprovalRequest) -> asm_core::Result<ApprovalVerdict> {
        self.asked.lock().unwrap().push((request.clone(), Instant::now()));
        let verdict = ApprovalVerdict::new(self.decision, "test");
        Ok(match self.reason {
            Some(r) => verdict.reason(r),
            None => verdict,
        })
    }
}

/// Never answers (a person who does not come back); says when it was asked.
#[derive(Debug, Default)]
struct Pending {
    asked: Notify,
}

#[async_trait]
impl ApprovalHandler for Pending {
    async fn decide(&self, _request: &ApprovalRequest) -> asm_core::Result<ApprovalVerdict> {
        self.asked.notify_one();
        std::future::pending().await
    }
}

fn prepared(name: &str, handler: Arc<dyn ApprovalHandler>) -> (Prepared, ExecuteRequest) {
    let script = script(name);
    let contract = AdapterContract::new(make, script.clone(), "");
    let p = prepare(&contract, &script);
    let request = p.request.clone().approvals(handler);
    (p, request)
}

/// The host's lines the fake read, parsed.
fn host_lines(p: &Prepared) -> Vec<Value> {
    let stdin = p.record().stdin.unwrap_or_default();
    stdin.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn permission_answers(p: &Prepared) -> Vec<Value> {
    host_lines(p)
        .into_iter()
        .filter(|l| l["type"] == "control_response")
        .map(|l| l["response"]["response"].clone())
        .collect()
}

/// The `can_use_tool` request of a captured exchange.
fn captured_permission_request(name: &str) -> Value {
    let text = std::fs::read_to_string(control_fixture(&format!("{name}.jsonl"))).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["type"] == "control_request" && l["request"]["subtype"] == "can_use_tool")
        .expect("no can_use_tool in the capture")
}

fn kinds(p: &Prepared) -> Vec<EventKind> {
    p.recorded.events().into_iter().map(|e| e.kind).collect()
}

fn no_raw_events(p: &Prepared) {
    let raw: Vec<_> =
        p.recorded.events().into_iter().filter(|e| e.metadata.get("raw") == Some(&Value::Bool(true))).collect();
    assert!(raw.is_empty(), "control lines leaked as raw events: {raw:?}");
}

async fn run(p: &Prepared, request: ExecuteRequest) -> asm_core::Result<asm_ports::ExecuteOutcome> {
    tokio::time::timeout(BOUND, p.adapter.execute(request, p.sink.clone())).await.expect("run did not finish")
}

#[tokio::test]
async fn allow_runs_the_tool_and_answers_with_the_input() {
    let handler = Fixed::new(ApprovalDecision::AllowOnce);
    let (p, request) = prepared("allow", handler.clone());
    let outcome = run(&p, request).await.unwrap();
    assert_eq!(outcome.output.content, "The command printed: hi");
    let captured = captured_permission_request("allow");
    let asked = handler.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].tool_name, "Bash");
    assert_eq!(asked[0].provider, "claude");
    assert_eq!(asked[0].tool_call_id.as_deref(), captured["request"]["tool_use_id"].as_str());
    assert_eq!(asked[0].tool_input["command"], "echo hi");
    assert_eq!(asked[0].session_id, p.request.session.id);
    assert_eq!(permission_answers(&p), [json!({"behavior": "allow", "updatedInput": captured["request"]["input"]})]);
    let k = kinds(&p);
    assert!(k.contains(&EventKind::ToolCallStarted) && k.contains(&EventKind::ToolCallCompleted), "{k:?}");
    no_raw_events(&p);
    // Control mode: no prompt argument, the control flags; the prompt is a stream-json user message.
    let record = p.record();
    assert!(record.argv.windows(2).any(|w| w == ["--permission-prompt-tool", "stdio"]), "{:?}", record.argv);
    assert!(!record.argv.iter().any(|a| a == "hello"), "{:?}", record.argv);
    let host = host_lines(&p);
    assert_eq!(host[0]["request"]["subtype"], "initialize");
    assert_eq!(host[1]["type"], "user");
    assert_eq!(host[1]["message"]["content"][0]["text"], "hello");
}

#[tokio::test]
async fn allow_always_is_an_allow_for_the_cli() {
    let handler = Fixed::new(ApprovalDecision::AllowAlways);
    let (p, request) = prepared("allow", handler.clone());
    run(&p, request).await.unwrap();
    assert_eq!(permission_answers(&p)[0]["behavior"], "allow");
    assert_eq!(handler.asked().len(), 1);
}

#[tokio::test]
async fn deny_sends_the_reason_and_the_tool_fails() {
    let handler = Arc::new(Fixed {
        decision: ApprovalDecision::DenyOnce,
        reason: Some("denied by the capture"),
        asked: Mutex::new(Vec::new()),
    });
    let (p, request) = prepared("deny", handler.clone());
    let outcome = run(&p, request).await.unwrap();
    assert_eq!(permission_answers(&p), [json!({"behavior": "deny", "message": "denied by the capture"})]);
    let k = kinds(&p);
    assert!(k.contains(&EventKind::ToolCallFailed), "{k:?}");
    assert!(!k.contains(&EventKind::ToolCallCompleted), "{k:?}");
    no_raw_events(&p);
    assert!(!outcome.output.content.is_empty());
}

#[tokio::test]
async fn the_events_match_the_one_shot_mode() {
    // The same conversation without a handler: the allow capture's CLI lines minus the
    // control lines, replayed one-shot.
    let handler = Fixed::new(ApprovalDecision::AllowOnce);
    let (p, request) = prepared("allow", handler);
    run(&p, request).await.unwrap();
    let text = std::fs::read_to_string(control_fixture("allow.jsonl")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("\"control_") && !l.contains("asm_fake_await"))
        .map(str::to_owned)
        .collect();
    let one_shot = FakeScript::new().lines(lines);
    let contract = AdapterContract::new(make, one_shot.clone(), "");
    let q = prepare(&contract, &one_shot);
    run(&q, q.request.clone()).await.unwrap();
    assert_eq!(kinds(&p), kinds(&q));
}

#[tokio::test]
async fn cancel_while_waiting_interrupts_and_ends_cancelled() {
    let handler = Arc::new(Pending::default());
    let (p, request) = prepared("interrupt", handler.clone());
    let cancel = request.cancel.clone();
    let adapter = Arc::clone(&p.adapter);
    let sink = p.sink.clone();
    let run = tokio::spawn(async move { adapter.execute(request, sink).await });
    tokio::time::timeout(BOUND, handler.asked.notified()).await.expect("the handler was never asked");
    let pid = p.record().pid.expect("fake pid");
    let started = Instant::now();
    cancel.cancel();
    let result = tokio::time::timeout(BOUND, run).await.expect("cancel did not finish").unwrap();
    assert_eq!(result.unwrap_err().code(), ErrorCode::Cancelled);
    let host = host_lines(&p);
    let interrupt = host.iter().find(|l| l["request"]["subtype"] == "interrupt").expect("no interrupt sent");
    assert_eq!(interrupt["request_id"], format!("{INTERRUPT_REQUEST_ID}_1"));
    assert!(!host.iter().any(|l| l["type"] == "control_response"), "answered a pending request: {host:?}");
    assert_group_gone(pid).await;
    assert!(started.elapsed() < Duration::from_secs(5), "cancel took {:?}", started.elapsed());
}

#[tokio::test]
async fn without_a_handler_the_run_is_one_shot() {
    let script = FakeScript::fixture("claude_tool_use");
    let contract = AdapterContract::new(make, script.clone(), "");
    let p = prepare(&contract, &script);
    run(&p, p.request.clone()).await.unwrap();
    let argv = p.record().argv;
    assert!(argv.iter().any(|a| a == "hello"), "{argv:?}");
    assert!(!argv.iter().any(|a| a == "--permission-prompt-tool" || a == "--input-format"), "{argv:?}");
}

/// The round trip one approval adds, with a handler that answers at once: `N` permission
/// requests in a row, each printed by the fake only after the previous answer arrived; the
/// time between two consecutive `decide` calls is one full round trip (the adapter writes the
/// answer, the fake reads it and prints the next request, the adapter reads and parses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_round_trip() {
    const N: usize = 200;
    let captured = captured_permission_request("allow");
    let mut lines = Vec::new();
    for i in 0..N {
        let mut req = captured.clone();
        req["request_id"] = json!(format!("perm_{i}"));
        lines.push(req.to_string());
        lines.push(json!({"asm_fake_await": {"control_response": format!("perm_{i}")}}).to_string());
    }
    lines.push(
        json!({"type": "result", "subtype": "success", "is_error": false, "result": "ok", "num_turns": 1, "session_id": "s"})
            .to_string(),
    );
    let script = FakeScript::new().lines(lines).jsonrpc();
    let contract = AdapterContract::new(make, script.clone(), "");
    let p = prepare(&contract, &script);
    let handler = Fixed::new(ApprovalDecision::AllowOnce);
    run(&p, p.request.clone().approvals(handler.clone())).await.unwrap();
    let at: Vec<Instant> = handler.asked.lock().unwrap().iter().map(|(_, t)| *t).collect();
    assert_eq!(at.len(), N);
    let mut gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    let p95 = gaps[gaps.len() * 95 / 100];
    let mean = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len()).unwrap();
    // A figure to read (`--nocapture`), not a timed assertion: speed is judged on the printed
    // numbers, correctness by the 200 answered requests above.
    println!("approval round trip over {} requests: median {median:?}, p95 {p95:?}, mean {mean:?}", gaps.len());
}
