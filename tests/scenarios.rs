//! Cross-crate scenarios through the facade: the same session story on every store the enabled
//! features bring in.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use agent_session_manager::prelude::*;
use asm_testkit::ScriptedAdapter;

/// Three runs in one session (a continued success, a provider failure, a cancelled pending run);
/// the log must stay gap-free with exactly one terminal event per run, and the transcript must
/// hold the conversation.
async fn session_story(store: Arc<dyn SessionStore>) -> SessionId {
    let ok = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::replying("Fixed it.")));
    let session = ok.start_session(NewSession::new("scenario").tag("e2e")).await.unwrap();
    ok.activate_session(&session.id).await.unwrap();

    let first = ok.start_run(&session.id, RunInput::user("Fix the test"), RunOptions::default()).await.unwrap();
    ok.execute_run(&first.id, RunOptions::default()).await.unwrap();
    let second = ok.start_run(&session.id, RunInput::user("And the docs"), RunOptions::default()).await.unwrap();
    ok.execute_run(&second.id, RunOptions::default().continuation(Continuation::Replay)).await.unwrap();

    let failing = SessionManager::from_shared(
        store.clone(),
        Arc::new(ScriptedAdapter::new().failing(Error::new(ErrorCode::ProviderUnavailable, "connection refused"))),
    );
    let third = failing.start_run(&session.id, RunInput::user("Deploy"), RunOptions::default()).await.unwrap();
    let err = failing.execute_run(&third.id, RunOptions::default()).await.unwrap_err();
    assert!(err.is_retryable());

    let pending = ok.start_run(&session.id, RunInput::user("Never mind"), RunOptions::default()).await.unwrap();
    ok.cancel_run(&pending.id).await.unwrap();
    ok.complete_session(&session.id).await.unwrap();
    session.id
}

async fn check_story(store: &dyn SessionStore, id: &SessionId) {
    let events = store.get_events(id, &EventQuery::new()).await.unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.sequence, Some(i as u64 + 1));
    }
    let terminals = events.iter().filter(|e| e.kind.is_run_terminal()).count();
    assert_eq!(terminals, 4, "one terminal event per run");
    let statuses: Vec<_> =
        store.list_runs(id, &Default::default()).await.unwrap().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![RunStatus::Completed, RunStatus::Completed, RunStatus::Failed, RunStatus::Cancelled]);
    assert_eq!(store.get_session(id).await.unwrap().status, SessionStatus::Completed);

    let transcript = TranscriptBuilder::new(TranscriptOptions::default()).from_events(id, &events);
    let texts: Vec<_> = transcript.messages.iter().filter_map(|m| m.content.as_deref()).collect();
    assert_eq!(texts, vec!["Fix the test", "Fixed it.", "And the docs", "Fixed it.", "Deploy"]);
}

/// Forks the (completed) story session at its latest turn and continues the fork by replay:
/// the copies are renumbered from 1, the four runs are copied as the fork's own, the parent's
/// log is unchanged, and the fork's run sees the story's conversation.
async fn fork_story(store: Arc<dyn SessionStore>, parent: &SessionId) {
    let scripted = ScriptedAdapter::replying("Branched.");
    let manager = SessionManager::from_shared(store.clone(), Arc::new(scripted.clone()));
    let before = store.get_events(parent, &EventQuery::new()).await.unwrap();
    let fork = manager.fork_session(parent, ForkPoint::Latest).await.unwrap();
    assert_eq!(store.get_events(parent, &EventQuery::new()).await.unwrap(), before, "the parent is untouched");
    let copied = store.get_events(&fork.session.id, &EventQuery::new()).await.unwrap();
    assert_eq!(copied.len(), before.len() + 1);
    for (i, (copy, original)) in copied.iter().zip(&before).enumerate() {
        assert_eq!((copy.sequence, copy.kind, &copy.data), (Some(i as u64 + 1), original.kind, &original.data));
        assert_eq!(copy.metadata["forked_from"]["event_id"], original.id.as_str());
    }
    assert_eq!(copied.last().unwrap().kind, EventKind::SessionCreated);
    let runs = store.list_runs(&fork.session.id, &Default::default()).await.unwrap();
    let statuses: Vec<_> = runs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![RunStatus::Completed, RunStatus::Completed, RunStatus::Failed, RunStatus::Cancelled]);

    manager.activate_session(&fork.session.id).await.unwrap();
    let run = manager.start_run(&fork.session.id, RunInput::user("Branch"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default().continuation(Continuation::Auto)).await.unwrap();
    let replayed = scripted.requests().pop().unwrap().transcript.unwrap();
    let texts: Vec<_> = replayed.messages.iter().filter_map(|m| m.content.as_deref()).collect();
    assert_eq!(texts, vec!["Fix the test", "Fixed it.", "And the docs", "Fixed it.", "Deploy"]);
}

#[tokio::test]
async fn story_on_the_memory_store() {
    let store: Arc<dyn SessionStore> = Arc::new(InMemorySessionStore::new());
    let id = session_story(store.clone()).await;
    check_story(store.as_ref(), &id).await;
    fork_story(store, &id).await;
}

#[cfg(feature = "store-sled")]
#[tokio::test]
async fn story_on_the_sled_store_survives_a_reopen() {
    use agent_session_manager::store::sled::SledSessionStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.sled");
    let id = session_story(Arc::new(SledSessionStore::open(&path).unwrap())).await;
    let reopened = SledSessionStore::open(&path).unwrap();
    check_story(&reopened, &id).await;
    fork_story(Arc::new(reopened), &id).await;
}

#[cfg(feature = "store-redb")]
#[tokio::test]
async fn story_on_the_redb_store_survives_a_reopen() {
    use agent_session_manager::store::redb::RedbSessionStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let id = session_story(Arc::new(RedbSessionStore::open(&path).unwrap())).await;
    let reopened = RedbSessionStore::open(&path).unwrap();
    check_story(&reopened, &id).await;
    fork_story(Arc::new(reopened), &id).await;
}

/// The per-session runtime over the facade: submit through a server, follow with a subscription.
#[tokio::test]
async fn a_session_server_runs_queued_work_and_streams_it() {
    use futures::StreamExt;
    let config = ServerConfig::new(Arc::new(InMemorySessionStore::new()), Arc::new(ScriptedAdapter::replying("ok")))
        .create(NewSession::new("server"))
        .max_concurrent_runs(2);
    let server = SessionServer::start(config).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(server.submit_run(RunInput::user(format!("task {i}")), RunOptions::default()).await.unwrap());
    }
    for id in &ids {
        server.await_run(id, std::time::Duration::from_secs(10)).await.unwrap();
    }
    let mut sub = Box::pin(server.subscribe(SubscribeOptions::after(0)).await.unwrap());
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.sequence, Some(1));
    server.drain(std::time::Duration::from_secs(10)).await.unwrap();
}

/// The issue's runs end to end: the real Claude adapter driving the fake CLI (replaying captured
/// lines) through a `SessionManager`, checked in the store.
#[cfg(feature = "provider-claude")]
mod claude_cli {
    use agent_session_manager::prelude::*;
    use agent_session_manager::provider::claude::ClaudeAdapter;
    use asm_testkit::fake_cli::{self, FakeScript};

    /// A manager whose Claude adapter runs the fake CLI with `script` (the tempdir must live
    /// as long as the runs).
    fn manager(script: &FakeScript) -> (SessionManager, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = script.write_to(dir.path()).unwrap();
        let adapter = ClaudeAdapter::builder()
            .cli_path(fake_cli::path())
            .env_var(fake_cli::SCRIPT_ENV, path.display().to_string())
            .build();
        (SessionManager::new(InMemorySessionStore::new(), adapter), dir)
    }

    async fn run(manager: &SessionManager) -> (SessionId, RunId, Result<RunResult>) {
        let session = manager.start_session(NewSession::new("claude")).await.unwrap();
        manager.activate_session(&session.id).await.unwrap();
        let run = manager.start_run(&session.id, RunInput::user("hello"), RunOptions::default()).await.unwrap();
        let result = manager.execute_run(&run.id, RunOptions::default()).await;
        (session.id, run.id, result)
    }

    /// B1: `error_max_turns` after two tool turns: the failed run keeps 200 in / 24 out and the
    /// cost of 0.0016 the provider reported, in the run record and in `run_failed`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_max_turns_failure_keeps_its_usage_and_cost() {
        let mut lines = FakeScript::fixture("claude_tool_use").stdout_lines().unwrap();
        lines.pop();
        lines.push(
            r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":3,"session_id":"dfd0e033-3a02-4609-b5fb-4f22d59e10ef","total_cost_usd":0.0016,"usage":{"input_tokens":200,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":24},"terminal_reason":"max_turns","errors":["Reached maximum number of turns (2)"]}"#
                .to_owned(),
        );
        let (manager, _dir) = manager(&FakeScript::new().lines(lines).exit_code(1));
        let (session, run_id, result) = run(&manager).await;
        assert_eq!(result.unwrap_err().code(), ErrorCode::ProviderError);
        let stored = manager.get_run(&run_id).await.unwrap();
        assert_eq!(stored.status, RunStatus::Failed);
        assert_eq!((stored.token_usage.input_tokens, stored.token_usage.output_tokens), (200, 24));
        assert_eq!(stored.cost_usd, Some(0.0016));
        let events = manager.session_events(&session, EventQuery::new()).await.unwrap();
        let failed = events.last().unwrap();
        assert_eq!(failed.kind, EventKind::RunFailed);
        assert_eq!(failed.data["token_usage"]["input_tokens"], 200);
        assert_eq!(failed.data["total_cost_usd"], 0.0016);
    }

    /// B2: a raw `rate_limit_event` just before the result leaves the stored conversation as it
    /// was: the final answer appears once (and so once in a replay prompt).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raw_line_before_the_result_does_not_duplicate_the_answer() {
        let mut lines = FakeScript::fixture("claude_text").stdout_lines().unwrap();
        let at = lines.len() - 1;
        lines.insert(at, r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#.to_owned());
        let (manager, _dir) = manager(&FakeScript::new().lines(lines));
        let (session, _, result) = run(&manager).await;
        assert_eq!(result.unwrap().output().content, "Hello from the fake model!");
        let events = manager.session_events(&session, EventQuery::new()).await.unwrap();
        assert!(events.iter().any(|e| e.kind == EventKind::ProviderRaw));
        let transcript = TranscriptBuilder::new(TranscriptOptions::default()).from_events(&session, &events);
        let texts: Vec<_> = transcript.messages.iter().filter_map(|m| m.content.as_deref()).collect();
        assert_eq!(texts, ["hello", "Hello from the fake model!"]);
    }

    /// B1: a run cancelled mid-stream keeps the usage its messages reported so far.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_stream_keeps_the_usage_reported_so_far() {
        use asm_testkit::fake_cli::SignalAction;
        let lines = FakeScript::fixture("claude_sigint_midstream").stdout_lines().unwrap();
        // Up to the third text delta (message_start reported 100 in / 1 out), then hang.
        let script = FakeScript::new().lines(lines[..7].to_vec()).hang_after(7).on_sigint(SignalAction::exit(0));
        let (manager, _dir) = manager(&script);
        let session = manager.start_session(NewSession::new("claude")).await.unwrap();
        manager.activate_session(&session.id).await.unwrap();
        let run = manager.start_run(&session.id, RunInput::user("hello"), RunOptions::default()).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = {
            let manager = manager.clone();
            let run_id = run.id.clone();
            tokio::spawn(async move {
                let options = RunOptions::default().on_event(move |e| {
                    if e.kind == EventKind::MessageStreamed && e.data["delta"] == "chunk2 " {
                        let _ = tx.send(());
                    }
                });
                manager.execute_run(&run_id, options).await
            })
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
        manager.cancel_run(&run.id).await.unwrap();
        let err = tokio::time::timeout(std::time::Duration::from_secs(20), task).await.unwrap().unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Cancelled);
        let stored = manager.get_run(&run.id).await.unwrap();
        assert_eq!(stored.status, RunStatus::Cancelled);
        assert_eq!((stored.token_usage.input_tokens, stored.token_usage.output_tokens), (100, 1));
        let events = manager.session_events(&session.id, EventQuery::new()).await.unwrap();
        assert_eq!(events.last().unwrap().data["token_usage"]["input_tokens"], 100);
    }

    /// D: everything the Claude builder takes is named through the facade's prelude, and a
    /// per-run `adapter_option` reaches the CLI (and a bad one fails the run with
    /// `validation_error` before the CLI starts).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_facade_configures_the_adapter_and_per_run_options_reach_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let path = FakeScript::fixture("claude_text").write_to(dir.path()).unwrap();
        let adapter = ClaudeAdapter::builder()
            .cli_path(fake_cli::path())
            .env(CliEnv::minimal().set(fake_cli::SCRIPT_ENV, path.display().to_string()))
            .limits(CliLimits::default().max_line_bytes(1 << 20))
            .permission_mode(PermissionMode::Plan)
            .max_retries(1)
            .build();
        let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
        let session = manager.start_session(NewSession::new("claude")).await.unwrap();
        manager.activate_session(&session.id).await.unwrap();
        let start = || manager.start_run(&session.id, RunInput::user("hello"), RunOptions::default());
        let run = start().await.unwrap();
        let options = RunOptions::default().adapter_option(run_option::MODEL, "claude-sonnet-4-5");
        manager.execute_run(&run.id, options).await.unwrap();
        let argv = asm_testkit::fake_cli::FakeRecord::read(dir.path()).argv;
        assert!(argv.windows(2).any(|w| w == ["--model", "claude-sonnet-4-5"]), "{argv:?}");
        assert!(argv.windows(2).any(|w| w == ["--permission-mode", "plan"]), "{argv:?}");

        let run = start().await.unwrap();
        let err = manager.execute_run(&run.id, RunOptions::default().adapter_option("temperature", 0.2)).await;
        assert_eq!(err.unwrap_err().code(), ErrorCode::ValidationError);
    }
}
