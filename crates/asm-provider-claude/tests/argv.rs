#![allow(clippy::unwrap_used)]
//! argv construction, prompt rendering, environment, and the argv the fake CLI really saw.

use std::sync::Arc;

use asm_core::ErrorCode;
use asm_ports::ProviderAdapter;
use asm_provider_claude::{ClaudeAdapter, ClaudeBuilderExt, ClaudeOptions, build_argv, build_env, render_prompt};
use asm_provider_cli::{CliEnv, PermissionMode};
use asm_testkit::adapter_contract::FakeCliInvocation;
use asm_testkit::fake_cli::FakeScript;
use asm_testkit::provider_tests::{
    fixture_lines_replacing, prepare_fake_cli_run, request, request_with_options, transcript_with_one_tool_call,
    with_invocation_env,
};

fn options(
    f: impl FnOnce(asm_provider_claude::ClaudeAdapterBuilder) -> asm_provider_claude::ClaudeAdapterBuilder,
) -> ClaudeOptions {
    f(ClaudeAdapter::builder()).build().options().clone()
}

#[test]
fn minimal_argv_matches_the_captured_runs() {
    // claude_text.cmd: -p hello --output-format stream-json --verbose
    assert_eq!(
        build_argv(&ClaudeOptions::default(), &request("hello")),
        ["-p", "hello", "--output-format", "stream-json", "--verbose"]
    );
}

#[test]
fn every_option_maps_to_its_flag() {
    let o = options(|b| {
        b.model("claude-sonnet-4-5")
            .system_prompt("You are FAKE-SYS.")
            .append_system_prompt("Be brief.")
            .max_turns(2)
            .permission_mode(PermissionMode::Plan)
            .allowed_tools(["Bash(touch:*)", "Read"])
            .disallowed_tools(["WebFetch"])
            .partial_messages(true)
            .extra_args(["--bare"])
    });
    let argv = build_argv(&o, &request("go").resume("sess-1"));
    assert_eq!(
        argv,
        [
            "-p",
            "go",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--model",
            "claude-sonnet-4-5",
            "--system-prompt",
            "You are FAKE-SYS.",
            "--append-system-prompt",
            "Be brief.",
            "--max-turns",
            "2",
            "--permission-mode",
            "plan",
            "--allowedTools",
            "Bash(touch:*),Read",
            "--disallowedTools",
            "WebFetch",
            "--bare",
            "--resume",
            "sess-1",
        ]
    );
}

#[test]
fn permission_modes_follow_spec_9_6() {
    for (mode, flag) in [
        (PermissionMode::Default, None),
        (PermissionMode::AcceptEdits, Some("acceptEdits")),
        (PermissionMode::Plan, Some("plan")),
        (PermissionMode::FullAuto, Some("bypassPermissions")),
        (PermissionMode::DangerouslySkipPermissions, Some("bypassPermissions")),
    ] {
        let argv = build_argv(&options(|b| b.permission_mode(mode)), &request("x"));
        let got = argv.iter().position(|a| a == "--permission-mode").map(|i| argv[i + 1].as_str());
        assert_eq!(got, flag, "{mode}");
    }
}

#[test]
fn stream_input_and_dash_prompts() {
    let argv = build_argv(&options(|b| b.stream_input(true)), &request("hi"));
    assert_eq!(argv, ["-p", "--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]);
    let argv = build_argv(&ClaudeOptions::default(), &request("--help me"));
    assert_eq!(argv[1], " --help me");
}

#[test]
fn transcript_is_replayed_unless_resuming() {
    let t = transcript_with_one_tool_call("t1", "Bash", None, "hi");
    let req = request("second").transcript(t);
    assert_eq!(
        render_prompt(&req),
        "user: first question\nassistant: first answer\ntool_call(t1): Bash {}\ntool_result(t1): Bash hi\nuser: second"
    );
    assert_eq!(render_prompt(&req.resume("s")), "second");
}

#[test]
fn environment_is_explicit_with_offline_switches() {
    let env = build_env(&options(|b| b.env(CliEnv::empty()).max_retries(1))).resolve();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_str().unwrap().to_owned());
    assert_eq!(get("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC").as_deref(), Some("1"));
    assert_eq!(get("DISABLE_TELEMETRY").as_deref(), Some("1"));
    assert_eq!(get("CLAUDE_CODE_MAX_RETRIES").as_deref(), Some("1"));
    assert_eq!(get("PATH"), None);
    let env = build_env(&options(|b| b.env(CliEnv::empty()).offline(false))).resolve();
    assert!(env.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_cli_sees_the_built_argv_env_and_stdin() {
    fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
        let builder =
            ClaudeAdapter::builder().cli_path(&inv.program).env(CliEnv::empty()).model("m1").stream_input(true);
        Arc::new(with_invocation_env(builder, inv, |b, k, v| b.env_var(k, v)).build())
    }
    let script = FakeScript::fixture("claude_stream_input");
    let p = prepare_fake_cli_run(make, &script);
    let req = p.request.clone().resume("sess-9");
    p.adapter.execute(req.clone(), p.sink.clone()).await.unwrap();
    let record = p.record();
    let expected = build_argv(contract_options(&p.adapter).as_ref().unwrap(), &req);
    assert_eq!(record.argv, expected);
    assert!(record.argv.ends_with(&["--resume".to_owned(), "sess-9".to_owned()]));
    assert_eq!(record.env.get("DISABLE_TELEMETRY").and_then(|v| v.as_str()), Some("1"));
    assert!(!record.env.contains_key("HOME"), "environment must be explicit");
    let stdin: serde_json::Value = serde_json::from_str(record.stdin.unwrap().trim()).unwrap();
    assert_eq!(stdin["message"]["content"][0]["text"], "hello");
    assert!(p.adapter.supports_native_resume());
    assert!(p.adapter.capabilities().iter().any(|c| c.name == "tool_use"));
}

fn contract_options(_adapter: &Arc<dyn ProviderAdapter>) -> Option<ClaudeOptions> {
    // The factory above: same options, rebuilt (the trait object hides the concrete type).
    Some(ClaudeAdapter::builder().env(CliEnv::empty()).model("m1").stream_input(true).build().options().clone())
}

#[test]
fn a_fork_request_resumes_with_fork_session() {
    let o = options(|b| b.model("m1").extra_args(["--bare"]));
    let argv = build_argv(&o, &request("go on").fork_from("parent-sess"));
    assert_eq!(
        argv,
        [
            "-p",
            "go on",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "m1",
            "--bare",
            "--resume",
            "parent-sess",
            "--fork-session"
        ]
    );
    // A plain resume never forks, and a fork flag without a handle adds nothing.
    assert!(!build_argv(&o, &request("x").resume("s")).contains(&"--fork-session".to_owned()));
    let mut no_handle = request("x");
    no_handle.fork = true;
    assert!(!build_argv(&o, &no_handle).iter().any(|a| a == "--fork-session" || a == "--resume"));
    // Forked runs send only the new input: the history comes from the parent's session.
    assert_eq!(render_prompt(&request("go on").fork_from("parent-sess")), "go on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_fork_reports_the_new_session_id_from_the_first_line() {
    fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
        let builder = ClaudeAdapter::builder().cli_path(&inv.program).env(CliEnv::empty());
        Arc::new(with_invocation_env(builder, inv, |b, k, v| b.env_var(k, v)).build())
    }
    // claude_resume.jsonl with the session id the CLI prints for `--fork-session`: a new one.
    const PARENT: &str = "cdf645fc-3fb0-4b65-bb9b-fbd6142729fd";
    const FORK: &str = "0f0f0f0f-1111-4222-8333-444444444444";
    let lines = fixture_lines_replacing("claude_resume", PARENT, FORK);
    assert!(lines.len() >= 3 && lines.iter().all(|l| !l.contains(PARENT)));
    let script = FakeScript::new().lines(lines);
    let p = prepare_fake_cli_run(make, &script);
    let req = p.request.clone().fork_from(PARENT);
    let outcome = p.adapter.execute(req, p.sink.clone()).await.unwrap();
    let argv = p.record().argv;
    assert!(argv.ends_with(&["--resume".to_owned(), PARENT.to_owned(), "--fork-session".to_owned()]), "{argv:?}");
    assert_eq!(outcome.provider_session_id.as_deref(), Some(FORK));
    assert!(p.adapter.supports_native_fork());
}

/// Every per-run option (`RunOptions::adapter_option`) reaches its flag, over the builder's.
#[test]
fn per_run_options_map_to_their_flags() {
    use asm_provider_claude::run_option;
    let adapter = ClaudeAdapter::builder().model("claude-haiku").max_turns(9).build();
    let req = request_with_options(
        "go",
        serde_json::json!({
            run_option::MODEL: "claude-sonnet-4-5",
            run_option::MAX_TURNS: 3,
            run_option::PERMISSION_MODE: "accept_edits",
            run_option::ALLOWED_TOOLS: ["Read", "Bash(git:*)"],
            run_option::DISALLOWED_TOOLS: ["WebFetch"],
            run_option::SYSTEM_PROMPT: "You are FAKE-SYS.",
        }),
    );
    let argv: Vec<String> = adapter.command(&req).unwrap().args.iter().map(|a| a.to_string_lossy().into()).collect();
    assert_eq!(
        argv[5..],
        [
            "--model",
            "claude-sonnet-4-5",
            "--system-prompt",
            "You are FAKE-SYS.",
            "--max-turns",
            "3",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Read,Bash(git:*)",
            "--disallowedTools",
            "WebFetch"
        ]
    );
    for bad in [serde_json::json!({"max_turns": 0}), serde_json::json!({"model_name": "x"})] {
        let err = adapter.command(&request_with_options("go", bad.clone())).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError, "{bad}");
    }
}

/// The per-run model through the fake CLI: the argv it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_run_model_reaches_the_cli() {
    fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
        let builder = ClaudeAdapter::builder().cli_path(&inv.program).env(CliEnv::empty()).model("m1");
        Arc::new(with_invocation_env(builder, inv, |b, k, v| b.env_var(k, v)).build())
    }
    let script = FakeScript::fixture("claude_model_system");
    let p = prepare_fake_cli_run(make, &script);
    let mut req = p.request.clone();
    req.options.insert("model".into(), "claude-sonnet-4-5".into());
    p.adapter.execute(req, p.sink.clone()).await.unwrap();
    let argv = p.record().argv;
    let at = argv.iter().position(|a| a == "--model").unwrap();
    assert_eq!(argv[at + 1], "claude-sonnet-4-5");
}
