#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `asm acp` end to end: the real binary on real stdio, driven by the `agent-client-protocol`
//! crate's client side, with the shell provider (offline) on a redb store.

mod common;
#[path = "../../asm-acp-agent/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    CancelNotification, ContentBlock, InitializeRequest, LoadSessionRequest, NewSessionRequest, PromptRequest,
    StopReason, TextContent,
};
use agent_client_protocol::{Agent, ErrorCode as RpcCode};
use serde_json::Value;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use common::processes_with;
use support::{Updates, drive, updates_only};

type Cx = agent_client_protocol::v1::ConnectionTo<Agent>;

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn store(&self) -> String {
        format!("redb:{}", self.path().join("sessions.redb").display())
    }

    /// A project directory for `session/new`.
    fn project(&self) -> PathBuf {
        let dir = self.path().join("project");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::canonicalize(dir).unwrap()
    }

    /// Runs one `asm acp --provider shell` process with `body` as its client; checks that the
    /// process exits 0 once the client closed its stdin.
    async fn session<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce(Cx, Updates) -> Fut,
        Fut: Future<Output = Result<T, agent_client_protocol::Error>>,
    {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_asm"))
            .args(["--store", &self.store(), "acp", "--provider", "shell"])
            .env("ASM_HOME", self.path())
            .env_remove("ASM_STORE")
            .env_remove("ASM_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = drive(stdin.compat_write(), stdout.compat(), body).await.expect("the ACP client ran");
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("asm acp exits once its stdin is closed")
            .unwrap();
        assert!(output.status.success(), "asm acp failed: {output:?}");
        out
    }
}

fn text(t: &str) -> ContentBlock {
    ContentBlock::Text(TextContent::new(t))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_stream_from_the_log_and_load_replays_exactly_after_a_restart() {
    let home = Home::new();
    let project = home.project();
    let (session, live) = home
        .session({
            let project = project.clone();
            async move |cx: Cx, mut updates: Updates| {
                let init = cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
                assert_eq!(init.protocol_version, ProtocolVersion::V1);
                assert!(init.agent_capabilities.load_session);
                let id = cx.send_request(NewSessionRequest::new(&project)).block_task().await?.session_id;
                let first = cx.send_request(PromptRequest::new(id.clone(), vec![text("echo hi")])).block_task().await?;
                assert_eq!(first.stop_reason, StopReason::EndTurn);
                let second = cx.send_request(PromptRequest::new(id.clone(), vec![text("pwd")])).block_task().await?;
                assert_eq!(second.stop_reason, StopReason::EndTurn);
                Ok((id.to_string(), updates.drain()))
            }
        })
        .await;
    let updates = updates_only(&live);
    let kinds: Vec<&str> = updates.iter().map(|u| u["sessionUpdate"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "tool_call",
            "agent_message_chunk",
            "tool_call_update",
            "tool_call",
            "agent_message_chunk",
            "tool_call_update"
        ],
        "{updates:#?}"
    );
    assert_eq!(updates[0]["kind"], "execute");
    assert_eq!(updates[0]["rawInput"]["command"], "echo hi");
    assert_eq!(updates[1]["content"]["text"], "hi\n");
    assert_eq!(updates[2]["status"], "completed");
    assert_eq!(
        updates[4]["content"]["text"].as_str().map(str::trim_end),
        project.to_str(),
        "the run's cwd is the session's"
    );

    let load = || {
        let session = session.clone();
        let project = project.clone();
        home.session(async move |cx: Cx, mut updates: Updates| {
            cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
            cx.send_request(LoadSessionRequest::new(session, &project)).block_task().await?;
            Ok(updates.drain())
        })
    };
    let loaded = load().await;
    let users: Vec<&Value> = loaded.iter().filter(|n| n["update"]["sessionUpdate"] == "user_message_chunk").collect();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["update"]["content"]["text"], "echo hi");
    let replayed: Vec<Value> =
        loaded.iter().filter(|n| n["update"]["sessionUpdate"] != "user_message_chunk").cloned().collect();
    assert_eq!(replayed, live, "a load in a new process replays exactly what the prompts streamed");
    assert_eq!(load().await, loaded, "and the same again after another restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_long_shell_run_and_leaves_no_child() {
    let home = Home::new();
    let project = home.project();
    let marker = format!("30.{}", std::process::id());
    home.session(async move |cx: Cx, mut updates: Updates| {
        cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
        let id = cx.send_request(NewSessionRequest::new(&project)).block_task().await?.session_id;
        let prompt = cx.send_request(PromptRequest::new(id.clone(), vec![text(&format!("sleep {marker}"))]));
        let started = updates.next("the tool call of the sleep").await;
        assert_eq!(started["update"]["sessionUpdate"], "tool_call");
        wait_for("the sleep to start", || !processes_with(&marker).is_empty()).await;
        cx.send_notification(CancelNotification::new(id.clone()))?;
        let answer = tokio::time::timeout(Duration::from_secs(20), prompt.block_task())
            .await
            .expect("the prompt answers after session/cancel")?;
        assert_eq!(answer.stop_reason, StopReason::Cancelled);
        wait_for("the sleep to be gone", || processes_with(&marker).is_empty()).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stdin_mid_run_stops_the_child() {
    let home = Home::new();
    let project = home.project();
    let marker = format!("31.{}", std::process::id());
    home.session({
        let marker = marker.clone();
        async move |cx: Cx, mut updates: Updates| {
            let id = cx.send_request(NewSessionRequest::new(&project)).block_task().await?.session_id;
            let _prompt = cx.send_request(PromptRequest::new(id, vec![text(&format!("sleep {marker}"))]));
            updates.next("the tool call of the sleep").await;
            wait_for("the sleep to start", || !processes_with(&marker).is_empty()).await;
            Ok(())
        }
    })
    .await;
    // `session` waited for asm to exit 0: it cancelled the run before exiting.
    wait_for("the sleep to be gone", || processes_with(&marker).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_over_stdio() {
    let home = Home::new();
    let project = home.project();
    home.session(async move |cx: Cx, _updates: Updates| {
        let missing = "ses_0123456789abcdef0123456789abcdef";
        let error = cx.send_request(LoadSessionRequest::new(missing, &project)).block_task().await.unwrap_err();
        assert_eq!(error.code, RpcCode::from(-32002));
        assert!(error.message.contains(missing), "{}", error.message);
        let unknown = agent_client_protocol::UntypedMessage::new("session/teleport", serde_json::json!({}))?;
        assert_eq!(cx.send_request(unknown).block_task().await.unwrap_err().code, RpcCode::METHOD_NOT_FOUND);
        let id = cx.send_request(NewSessionRequest::new(&project)).block_task().await?.session_id;
        let error = cx.send_request(PromptRequest::new(id, vec![text("exit 3")])).block_task().await.unwrap_err();
        assert_eq!(error.code, RpcCode::INTERNAL_ERROR);
        assert_eq!(error.data.unwrap()["code"], "provider_error");
        Ok(())
    })
    .await;

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_asm"))
        .args(["--store", &home.store(), "acp", "--provider", "nope"])
        .env("ASM_HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: [validation_error]"), "{bad:?}");
    assert!(bad.stdout.is_empty(), "nothing but ACP on stdout");
}
