#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_pass_by_value)]
//! Focused tests of the ACP adapter against scripted exchanges: the fake CLI in JSON-RPC mode
//! plays the agent (each scripted response waits for its request; `asm_fake_await` lines wait
//! for a method), and records what the adapter sent on stdin.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use asm_core::{ErrorCode, EventKind, Message, ProviderErrorKind, Role, Run, RunInput, Session, Transcript};
use asm_ports::{ExecuteOutcome, ExecuteRequest, ProviderAdapter};
use asm_provider_acp::{AcpAdapter, AcpAdapterBuilder, ToolKindPermissions};
use asm_provider_cli::{CliEnv, CliLimits};
use asm_testkit::adapter_contract::{Recorded, recording_sink};
use asm_testkit::fake_cli::{self, FakeRecord, FakeScript};

fn init(load: bool) -> String {
    json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":load},"agentInfo":{"name":"fake","version":"0"}}}).to_string()
}
fn result(id: u64, result: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"result":result}).to_string()
}
fn update(update: Value) -> String {
    json!({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":update}}).to_string()
}
fn chunk(text: &str) -> String {
    update(json!({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":text}}))
}
fn end(id: u64, reason: &str) -> String {
    result(id, json!({"stopReason": reason}))
}

struct Case {
    dir: tempfile::TempDir,
    cwd: tempfile::TempDir,
    builder: AcpAdapterBuilder,
}

impl Case {
    fn new(lines: Vec<String>) -> Self {
        Self::script(FakeScript::new().lines(lines))
    }
    fn script(script: FakeScript) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cwd = tempfile::tempdir().unwrap();
        let path = script.jsonrpc().write_to(dir.path()).unwrap();
        let env = CliEnv::minimal().set(fake_cli::SCRIPT_ENV, path.display().to_string());
        let builder = AcpAdapter::builder()
            .agent(fake_cli::path())
            .env(env)
            .cwd(cwd.path())
            .limits(CliLimits::default().graces(Duration::from_millis(300), Duration::from_millis(300)));
        Self { dir, cwd, builder }
    }
    /// What the adapter sent, one JSON value per line.
    fn sent(&self) -> Vec<Value> {
        let stdin = FakeRecord::read(self.dir.path()).stdin.unwrap_or_default();
        stdin.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
    fn sent_method(&self, method: &str) -> Value {
        self.sent().into_iter().find(|m| m["method"] == method).unwrap_or_else(|| panic!("{method} not sent"))
    }
    fn response_to(&self, id: &str) -> Value {
        self.sent().into_iter().find(|m| m["id"] == id && m.get("method").is_none()).expect("no response sent")
    }
}

fn request() -> ExecuteRequest {
    let session = Session::new("acp-test").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user("hello"));
    ExecuteRequest::new(session, run)
}

/// A run started by [`start_until_first_event`].
struct InFlight {
    /// The execution.
    task: tokio::task::JoinHandle<asm_core::Result<ExecuteOutcome>>,
    /// What its sink saw.
    recorded: Recorded,
    /// The run's cancellation token.
    cancel: asm_ports::CancellationToken,
    /// When the execution was spawned.
    start: Instant,
}

/// Executes [`request`] with `adapter` on a spawned task and returns once its sink saw a first
/// event (within 20 s).
async fn start_until_first_event(adapter: &Arc<AcpAdapter>) -> InFlight {
    let req = request();
    let (sink, recorded) = recording_sink(&req.session);
    let cancel = req.cancel.clone();
    let task = tokio::spawn({
        let adapter = Arc::clone(adapter);
        async move { adapter.execute(req, sink).await }
    });
    let start = Instant::now();
    while recorded.events().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "no first event");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    InFlight { task, recorded, cancel, start }
}

async fn run(adapter: AcpAdapter, request: ExecuteRequest) -> (asm_core::Result<ExecuteOutcome>, Recorded) {
    let (sink, recorded) = recording_sink(&request.session);
    let result = tokio::time::timeout(Duration::from_secs(20), adapter.execute(request, sink)).await.expect("bounded");
    (result, recorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_run_records_the_handshake_and_the_session() {
    let case = Case::new(vec![
        init(true),
        result(1, json!({"sessionId":"s1"})),
        chunk("Hi "),
        chunk("there"),
        update(json!({"sessionUpdate":"usage_update","used":10,"size":1000,"cost":{"amount":0.25,"currency":"USD"}})),
        end(2, "end_turn"),
    ]);
    let (outcome, recorded) = run(case.builder.clone().build(), request()).await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.output.content, "Hi there");
    assert_eq!(outcome.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(outcome.provider_session_id.as_deref(), Some("s1"), "loadSession agents give a native handle");
    assert_eq!(outcome.metadata["acp"]["protocol_version"], 1);
    assert_eq!(outcome.metadata["acp"]["agent_info"]["name"], "fake");
    assert_eq!(outcome.output.extra["acp"]["agent_capabilities"]["loadSession"], true);
    let kinds = recorded.kinds();
    assert_eq!(
        kinds,
        [EventKind::MessageStreamed, EventKind::MessageStreamed, EventKind::ProviderRaw, EventKind::MessageReceived]
    );
    assert_eq!(outcome.cost_usd, Some(0.25), "the usage_update cost of a new session");

    let init = case.sent_method("initialize");
    assert_eq!(init["params"]["protocolVersion"], 1);
    assert_eq!(init["params"]["clientCapabilities"]["fs"]["readTextFile"], true);
    assert_eq!(init["params"]["clientCapabilities"]["fs"]["writeTextFile"], false);
    assert_eq!(init["params"]["clientCapabilities"]["terminal"], false);
    let new = case.sent_method("session/new");
    assert_eq!(new["params"]["cwd"], case.cwd.path().display().to_string());
    assert_eq!(new["params"]["mcpServers"], json!([]));
    let prompt = case.sent_method("session/prompt");
    assert_eq!(prompt["params"]["sessionId"], "s1");
    assert_eq!(prompt["params"]["prompt"], json!([{"type":"text","text":"hello"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_with_permission_request_and_fs_reads() {
    let outside_dir = tempfile::tempdir().unwrap();
    let outside = outside_dir.path().join("secret.txt");
    std::fs::write(&outside, "secret").unwrap();
    for (permissions, expected) in
        [(ToolKindPermissions::reject_all(), "no"), (ToolKindPermissions::allow(["read"]), "yes")]
    {
        let cwd = tempfile::tempdir().unwrap();
        let inside = cwd.path().join("notes.txt");
        std::fs::write(&inside, "line one\nline two\n").unwrap();
        let permission = json!({"jsonrpc":"2.0","id":"perm-1","method":"session/request_permission","params":{
            "sessionId":"s1",
            "toolCall":{"toolCallId":"t1","title":"Read notes","kind":"read","rawInput":{"path":inside}},
            "options":[{"optionId":"yes","name":"Allow","kind":"allow_once"},{"optionId":"no","name":"Reject","kind":"reject_once"}]}});
        let read = |id: &str, path: &std::path::Path| {
            json!({"jsonrpc":"2.0","id":id,"method":"fs/read_text_file","params":{"sessionId":"s1","path":path,"line":2,"limit":1}})
                .to_string()
        };
        let write = json!({"jsonrpc":"2.0","id":"w1","method":"fs/write_text_file","params":{"sessionId":"s1","path":cwd.path().join("out.txt"),"content":"x"}});
        let lines = vec![
            init(false),
            result(1, json!({"sessionId":"s1"})),
            update(
                json!({"sessionUpdate":"tool_call","toolCallId":"t1","title":"Read notes","kind":"read","status":"pending","rawInput":{"path":inside}}),
            ),
            permission.to_string(),
            read("r-in", &inside),
            read("r-out", &outside),
            write.to_string(),
            update(
                json!({"sessionUpdate":"tool_call_update","toolCallId":"t1","status":"completed","content":[{"type":"content","content":{"type":"text","text":"line two\n"}}]}),
            ),
            chunk("Read it."),
            // The turn ends once the adapter has answered the last request.
            json!({"asm_fake_await": {"id": "w1"}}).to_string(),
            end(2, "end_turn"),
        ];
        let case = Case::new(lines);
        let (outcome, recorded) =
            run(case.builder.clone().cwd(cwd.path()).permissions(permissions).build(), request()).await;
        let outcome = outcome.unwrap();
        assert_eq!(outcome.output.content, "Read it.");
        assert!(outcome.provider_session_id.is_none(), "no loadSession: no native handle");
        let events = recorded.events();
        let started = events.iter().find(|e| e.kind == EventKind::ToolCallStarted).unwrap();
        assert_eq!(started.data["tool_name"], "read");
        assert_eq!(started.data["tool_input"]["path"], inside.display().to_string());
        let done = events.iter().find(|e| e.kind == EventKind::ToolCallCompleted).unwrap();
        assert_eq!(done.data["tool_output"], "line two\n");
        let asked =
            events.iter().find(|e| e.data.get("raw_type") == Some(&json!("session/request_permission"))).unwrap();
        assert_eq!(asked.data["tool_kind"], "read");

        assert_eq!(case.response_to("perm-1")["result"]["outcome"], json!({"outcome":"selected","optionId":expected}));
        assert_eq!(case.response_to("r-in")["result"]["content"], "line two\n");
        let refused = case.response_to("r-out");
        assert_eq!(refused["error"]["code"], asm_provider_acp::INVALID_PARAMS, "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("outside"), "{refused}");
        assert!(refused.get("result").is_none(), "no content leaked");
        assert_eq!(
            case.response_to("w1")["error"]["code"],
            asm_provider_acp::METHOD_NOT_FOUND,
            "writes are off by default"
        );
        assert!(!cwd.path().join("out.txt").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_sends_session_cancel_and_takes_the_agents_answer() {
    let script = FakeScript::new().lines([
        init(false),
        result(1, json!({"sessionId":"s1"})),
        chunk("working"),
        json!({"asm_fake_await":"session/cancel"}).to_string(),
        end(2, "cancelled"),
    ]);
    let case = Case::script(script);
    // A long grace: the run ends as soon as the agent answers, not when the grace is over.
    let adapter = Arc::new(case.builder.clone().cancel_grace(Duration::from_secs(10)).build());
    let InFlight { task, recorded, cancel, start: _ } = start_until_first_event(&adapter).await;
    let before = recorded.events().len();
    let cancelled_at = Instant::now();
    cancel.cancel();
    let err = tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled, "{err:?}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(5), "took {:?}", cancelled_at.elapsed());
    assert_eq!(recorded.events().len(), before, "nothing emitted after cancel");
    assert_eq!(case.sent_method("session/cancel")["params"]["sessionId"], "s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_resumes_the_acp_session_without_re_emitting_history() {
    let case = Case::new(vec![
        init(true),
        update(json!({"sessionUpdate":"user_message_chunk","content":{"type":"text","text":"old question"}})),
        chunk("old answer"),
        result(1, Value::Null),
        chunk("new answer"),
        update(json!({"sessionUpdate":"usage_update","used":10,"size":1000,"cost":{"amount":0.75,"currency":"USD"}})),
        end(2, "end_turn"),
    ]);
    let mut t = Transcript::new(asm_core::SessionId::new());
    t.messages.push(Message::new(Role::User, "old question"));
    let req = request().resume("s-old").transcript(t);
    let (outcome, recorded) = run(case.builder.clone().build(), req).await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.output.content, "new answer");
    assert_eq!(outcome.provider_session_id.as_deref(), Some("s-old"));
    assert_eq!(outcome.metadata["acp"]["session_loaded"], true);
    assert_eq!(outcome.cost_usd, None, "a loaded session's cost is not this run's");
    assert_eq!(outcome.metadata["acp"]["session_cost_usd"], 0.75);
    let load = case.sent_method("session/load");
    assert_eq!(load["params"]["sessionId"], "s-old");
    assert_eq!(load["params"]["cwd"], case.cwd.path().display().to_string());
    assert!(case.sent().iter().all(|m| m["method"] != "session/new"));
    assert_eq!(case.sent_method("session/prompt")["params"]["prompt"][0]["text"], "hello", "no replay after a load");
    assert!(
        !format!("{:?}", recorded.events()).contains("old answer"),
        "history replayed by the agent is not re-emitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_load_session_the_transcript_is_replayed() {
    let case = Case::new(vec![init(false), result(1, json!({"sessionId":"s2"})), chunk("ok"), end(2, "end_turn")]);
    let mut t = Transcript::new(asm_core::SessionId::new());
    t.messages.push(Message::new(Role::User, "hi"));
    t.messages.push(Message::new(Role::Assistant, "hello"));
    let (outcome, _) = run(case.builder.clone().build(), request().resume("s-old").transcript(t)).await;
    outcome.unwrap();
    assert!(case.sent().iter().all(|m| m["method"] != "session/load"));
    let text = case.sent_method("session/prompt")["params"]["prompt"][0]["text"].as_str().unwrap().to_owned();
    assert_eq!(text, "user: hi\nassistant: hello\nuser: hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_reasons_map_to_typed_errors() {
    for reason in ["max_tokens", "max_turn_requests", "refusal"] {
        let case = Case::new(vec![init(false), result(1, json!({"sessionId":"s1"})), chunk("partial"), end(2, reason)]);
        let (outcome, recorded) = run(case.builder.clone().build(), request()).await;
        let err = outcome.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ProviderError, "{reason}: {err:?}");
        assert_eq!(err.details()["reason"], reason);
        assert!(recorded.kinds().contains(&EventKind::ErrorOccurred));
    }
    let case = Case::new(vec![init(false), result(1, json!({"sessionId":"s1"})), end(2, "cancelled")]);
    assert_eq!(run(case.builder.clone().build(), request()).await.0.unwrap_err().code(), ErrorCode::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_mismatch_malformed_messages_and_rpc_errors_are_typed() {
    let case = Case::new(vec![result(0, json!({"protocolVersion": 2, "agentCapabilities": {}}))]);
    let err = run(case.builder.clone().build(), request()).await.0.unwrap_err();
    assert_eq!(err.details()["reason"], "protocol_version_mismatch", "{err:?}");
    assert_eq!(err.details()["agent_protocol_version"], 2);
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::ProtocolError);

    let case = Case::new(vec![json!({"jsonrpc":"2.0","id":0}).to_string()]);
    let err = run(case.builder.clone().build(), request()).await.0.unwrap_err();
    assert_eq!(err.details()["reason"], "malformed_jsonrpc", "{err:?}");

    let auth = json!({"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Authentication required"}}).to_string();
    let case = Case::new(vec![init(false), auth]);
    let err = run(case.builder.clone().build(), request()).await.0.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderAuthenticationFailed, "{err:?}");
    assert_eq!(err.details()["method"], "session/new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_is_a_provider_error_with_its_stderr() {
    let script = FakeScript::new().lines([init(false)]).stderr("agent crashed: boom\n").exit_code(3);
    let case = Case::script(script);
    let err = run(case.builder.clone().build(), request()).await.0.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.details()["reason"], "agent_exited");
    let pe = err.provider_error().unwrap();
    assert_eq!(pe.exit_code, Some(3));
    assert!(pe.stderr.as_deref().unwrap().contains("boom"));
}

/// A permission handler that never decides (a person who does not answer).
#[derive(Debug)]
struct NeverDecides;

#[async_trait::async_trait]
impl asm_provider_acp::PermissionHandler for NeverDecides {
    async fn decide(&self, _request: &asm_provider_acp::PermissionRequest) -> asm_provider_acp::PermissionDecision {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_a_permission_is_pending_answers_it_cancelled() {
    let permission = json!({"jsonrpc":"2.0","id":"p1","method":"session/request_permission","params":{
        "sessionId":"s1","toolCall":{"toolCallId":"t1","kind":"execute"},
        "options":[{"optionId":"yes","name":"Allow","kind":"allow_once"}]}});
    let script = FakeScript::new().lines([
        init(false),
        result(1, json!({"sessionId":"s1"})),
        chunk("asking"),
        permission.to_string(),
        json!({"asm_fake_await": {"id": "p1"}}).to_string(),
        json!({"asm_fake_await": "session/cancel"}).to_string(),
        end(2, "cancelled"),
    ]);
    let case = Case::script(script);
    let adapter =
        Arc::new(case.builder.clone().permissions(NeverDecides).cancel_grace(Duration::from_secs(10)).build());
    let InFlight { task, recorded: _, cancel, start } = start_until_first_event(&adapter).await;
    cancel.cancel();
    let err = tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled, "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "the agent's answer ended the run, not the grace");
    assert_eq!(case.response_to("p1")["result"]["outcome"], json!({"outcome":"cancelled"}));
    assert_eq!(case.sent_method("session/cancel")["params"]["sessionId"], "s1");
}
