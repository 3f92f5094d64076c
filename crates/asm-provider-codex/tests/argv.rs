#![allow(clippy::unwrap_used)]
//! argv construction, prompt rendering, permission mapping, and the argv the fake CLI really saw.

use std::sync::Arc;

use asm_core::ErrorCode;
use asm_ports::ProviderAdapter;
use asm_provider_cli::{CliEnv, PermissionMode};
use asm_provider_codex::{
    ApprovalPolicy, CodexAdapter, CodexAdapterBuilder, CodexBuilderExt, CodexOptions, SandboxMode, build_argv,
    render_prompt,
};
use asm_testkit::adapter_contract::FakeCliInvocation;
use asm_testkit::fake_cli::{FakeScript, fixtures_dir};
use asm_testkit::provider_tests::{
    fixture_lines_replacing, prepare_fake_cli_run, request, request_with_options, transcript_with_one_tool_call,
    with_invocation_env,
};

fn options(f: impl FnOnce(CodexAdapterBuilder) -> CodexAdapterBuilder) -> CodexOptions {
    f(CodexAdapter::builder()).build().options().clone()
}

fn captured(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(format!("{name}.cmd"))).unwrap().trim().to_owned()
}

/// The captured command lines (space-joined argv) are reproduced exactly.
#[test]
fn argv_matches_the_captured_runs() {
    let plain = |b: CodexAdapterBuilder| b.model("gpt-5.5").offline(false).bounded_retries(false);
    let cases: Vec<(&str, CodexOptions, &str)> = vec![
        ("codex_text", options(|b| b.model("gpt-5.5").bounded_retries(false)), "hello"),
        ("codex_text_known_model", options(plain), "hello"),
        (
            "codex_conn_refused_bounded",
            options(|b| b.model("gpt-5.5").config("model_providers.fake.base_url", "\"http://127.0.0.1:1/v1\"")),
            "hello",
        ),
        (
            "codex_http500_default_retries",
            options(|b| {
                b.model("gpt-5.5").bounded_retries(false).config("model_providers.fake.request_max_retries", "4")
            }),
            "hello",
        ),
        (
            "codex_tool_bypass",
            options(|b| plain(b).permission_mode(PermissionMode::DangerouslySkipPermissions)),
            "create a file",
        ),
        ("codex_tool_readonly_echo", options(|b| plain(b).sandbox(SandboxMode::ReadOnly)), "echo"),
        ("codex_tool_write_readonly", options(|b| plain(b).permission_mode(PermissionMode::Plan)), "create a file"),
        ("codex_tool_call", options(plain), "run echo hi"),
    ];
    for (name, o, prompt) in cases {
        assert_eq!(build_argv(&o, &request(prompt)).join(" "), captured(name), "{name}");
    }
}

#[test]
fn defaults_add_offline_and_bounded_retry_switches() {
    assert_eq!(
        build_argv(&CodexOptions::default(), &request("hello")),
        [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--disable",
            "plugins",
            "-c",
            "analytics.enabled=false",
            "--disable",
            "unbounded_connection_retries",
            "hello"
        ]
    );
}

#[test]
fn every_option_maps_to_its_flag_and_resume_goes_last() {
    let o = options(|b| {
        b.model("gpt-5.5")
            .sandbox(SandboxMode::WorkspaceWrite)
            .approval_policy(ApprovalPolicy::Never)
            .skip_git_repo_check(false)
            .offline(false)
            .bounded_retries(false)
            .config("model_reasoning_effort", "\"low\"")
            .extra_args(["--ephemeral"])
    });
    let argv = build_argv(&o, &request("second message").resume("01a200f9-bf93-7780-98c1-560657492f45"));
    assert_eq!(
        argv,
        [
            "exec",
            "--json",
            "-m",
            "gpt-5.5",
            "-s",
            "workspace-write",
            "-c",
            "approval_policy=\"never\"",
            "-c",
            "model_reasoning_effort=\"low\"",
            "--ephemeral",
            "resume",
            "01a200f9-bf93-7780-98c1-560657492f45",
            "second message",
        ]
    );
}

#[test]
fn permission_modes_follow_spec_9_6_and_note_30() {
    let with = |mode| {
        build_argv(
            &options(|b| {
                b.offline(false)
                    .bounded_retries(false)
                    .permission_mode(mode)
                    .sandbox(SandboxMode::WorkspaceWrite)
                    .approval_policy(ApprovalPolicy::OnRequest)
            }),
            &request("x"),
        )
    };
    // default: the configured sandbox and approval policy.
    assert_eq!(with(PermissionMode::Default)[3..7], ["-s", "workspace-write", "-c", "approval_policy=\"on-request\""]);
    // plan: read-only sandbox wins over the configured one.
    let plan = with(PermissionMode::Plan);
    assert_eq!(plan[3..5], ["-s", "read-only"]);
    assert!(!plan.contains(&"workspace-write".to_owned()));
    // bypass: no sandbox, no approval policy.
    let bypass = with(PermissionMode::DangerouslySkipPermissions);
    assert_eq!(bypass[3], "--dangerously-bypass-approvals-and-sandbox");
    assert!(!bypass.iter().any(|a| a == "-s" || a.starts_with("approval_policy")));
    // accept_edits / full_auto: not supported by Codex.
    for mode in [PermissionMode::AcceptEdits, PermissionMode::FullAuto] {
        let err = options(|b| b.permission_mode(mode)).validate().unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError, "{mode}");
    }
    assert!(options(|b| b.permission_mode(PermissionMode::Plan)).validate().is_ok());
    assert!(options(|b| b.config("a=b", "1")).validate().is_err());
}

#[test]
fn prompts_that_look_like_flags_or_subcommands_stay_prompts() {
    let o = options(|b| b.offline(false).bounded_retries(false));
    assert_eq!(build_argv(&o, &request("--help me")).last().unwrap(), " --help me");
    assert_eq!(build_argv(&o, &request("resume")).last().unwrap(), " resume");
    assert_eq!(build_argv(&o, &request("resume the work")).last().unwrap(), "resume the work");
    assert_eq!(build_argv(&o, &request("fork")).last().unwrap(), " fork", "codex exec fork is a subcommand too");
}

#[test]
fn a_fork_request_uses_exec_fork_with_every_option_in_front() {
    let o = options(|b| b.model("gpt-5.5").sandbox(SandboxMode::WorkspaceWrite).offline(false).bounded_retries(false));
    let thread = "01a200f9-bf93-7780-98c1-560657492f45";
    let argv = build_argv(&o, &request("fork branch").fork_from(thread));
    assert_eq!(
        argv,
        [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "-m",
            "gpt-5.5",
            "-s",
            "workspace-write",
            "fork",
            thread,
            "fork branch"
        ]
    );
    // Only the new input: the history is the forked thread's.
    assert_eq!(render_prompt(&request("fork branch").fork_from(thread)), "fork branch");
    let mut no_handle = request("x");
    no_handle.fork = true;
    assert!(!build_argv(&o, &no_handle).iter().any(|a| a == "fork" || a == "resume"));
}

#[test]
fn transcript_is_replayed_unless_resuming() {
    let mut input = serde_json::Map::new();
    input.insert("command".into(), "ls".into());
    let t = transcript_with_one_tool_call("item_0", "bash", Some(input), "a.txt");
    let req = request("second").transcript(t);
    assert_eq!(
        render_prompt(&req),
        "user: first question\nassistant: first answer\ntool_call(item_0): bash {\"command\":\"ls\"}\ntool_result(item_0): bash a.txt\nuser: second"
    );
    let argv = build_argv(&CodexOptions::default(), &req);
    assert!(argv.last().unwrap().ends_with("\nuser: second"));
    assert!(!argv.contains(&"resume".to_owned()));
    let resumed = req.resume("t-1");
    assert_eq!(render_prompt(&resumed), "second");
    assert_eq!(build_argv(&CodexOptions::default(), &resumed).last().unwrap(), "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_cli_sees_the_built_argv_env_cwd_and_no_stdin() {
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_path_buf();
    let builder = move || {
        CodexAdapter::builder().env(CliEnv::empty()).model("gpt-5.5").sandbox(SandboxMode::ReadOnly).cwd(&cwd_path)
    };
    let b2 = builder.clone();
    let make = move |inv: &FakeCliInvocation| -> Arc<dyn ProviderAdapter> {
        let with_program = b2().cli_path(&inv.program);
        Arc::new(with_invocation_env(with_program, inv, |b, k, v| b.env_var(k, v)).build())
    };
    let script = FakeScript::fixture("codex_resume");
    let p = prepare_fake_cli_run(make, &script);
    let req = p.request.clone().resume("01a200f9-bf93-7780-98c1-560657492f45");
    let outcome = p.adapter.execute(req.clone(), p.sink.clone()).await.unwrap();
    assert_eq!(outcome.provider_session_id.as_deref(), Some("01a200f9-bf93-7780-98c1-560657492f45"));
    let record = p.record();
    assert_eq!(record.argv, build_argv(builder().build().options(), &req));
    assert!(record.argv.ends_with(&["resume".into(), "01a200f9-bf93-7780-98c1-560657492f45".into(), "hello".into()]));
    assert!(!record.env.contains_key("HOME"), "environment must be explicit");
    assert_eq!(record.stdin.as_deref(), Some(""), "stdin must be /dev/null");
    assert!(p.adapter.supports_native_resume());
    assert!(p.adapter.supports_native_fork());
    assert_eq!(p.adapter.name(), "codex");
    assert!(p.adapter.capabilities().iter().any(|c| c.name == "tool_use"));
    p.adapter.validate_config().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_fork_reports_the_new_thread_and_only_its_own_usage() {
    fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
        let builder = CodexAdapter::builder().cli_path(&inv.program).env(CliEnv::empty());
        Arc::new(with_invocation_env(builder, inv, |b, k, v| b.env_var(k, v)).build())
    }
    // codex_resume.jsonl as `exec fork` prints it: a new thread id, usage cumulative over the
    // parent's thread and the forked turn (seen with the real 0.169.0 CLI).
    const PARENT: &str = "01a200f9-bf93-7780-98c1-560657492f45";
    const FORK: &str = "01a200f9-ffff-7780-98c1-000000000001";
    let lines = fixture_lines_replacing("codex_resume", PARENT, FORK);
    let script = FakeScript::new().lines(lines);
    let p = prepare_fake_cli_run(make, &script);
    let mut req = p.request.clone().fork_from(PARENT);
    // What the runtime hands a native fork's first run: the parent's state, without its handle.
    req.session.metadata.insert(
        "provider_sessions".into(),
        serde_json::json!({"codex": {"thread_usage": {"thread_id": PARENT, "usage": {
            "input_tokens": 100, "output_tokens": 10, "cache_read_tokens": 20, "cache_creation_tokens": 0}}}}),
    );
    let outcome = p.adapter.execute(req, p.sink.clone()).await.unwrap();
    assert!(p.record().argv.ends_with(&["fork".into(), PARENT.into(), "hello".into()]));
    assert_eq!(outcome.provider_session_id.as_deref(), Some(FORK));
    // Thread total 200 input (40 cached: 160 uncached), 24 output; minus the parent's 100 / 20 / 10.
    let usage = outcome.token_usage;
    assert_eq!((usage.input_tokens, usage.cache_read_tokens, usage.output_tokens), (60, 20, 14));
    assert_eq!(outcome.metadata["usage_scope"], "run");
    assert_eq!(outcome.provider_state["thread_usage"]["thread_id"], FORK);
}

fn args(cmd: &asm_provider_cli::CliCommand) -> Vec<String> {
    cmd.args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
}

/// The per-run options Codex can honour reach their flags; the others are refused, never
/// dropped.
#[test]
fn per_run_options_map_to_flags_or_are_refused() {
    let adapter = CodexAdapter::builder()
        .model("gpt-5.5")
        .sandbox(SandboxMode::WorkspaceWrite)
        .offline(false)
        .bounded_retries(false)
        .build();
    let req = request_with_options(
        "go",
        serde_json::json!({"model": "gpt-6-sol", "permission_mode": "plan", "system_prompt": "Say \"hi\".\nThen stop."}),
    );
    assert_eq!(
        args(&adapter.command(&req).unwrap()),
        [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "-m",
            "gpt-6-sol",
            "-s",
            "read-only",
            "-c",
            "developer_instructions=\"Say \\\"hi\\\".\\nThen stop.\"",
            "go"
        ]
    );
    for (options, option) in [
        (serde_json::json!({"max_turns": 2}), "max_turns"),
        (serde_json::json!({"allowed_tools": ["shell"]}), "allowed_tools"),
        (serde_json::json!({"disallowed_tools": ["shell"]}), "disallowed_tools"),
        (serde_json::json!({"permission_mode": "full_auto"}), "permission_mode"),
    ] {
        let err = adapter.command(&request_with_options("go", options.clone())).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError, "{options}");
        assert_eq!(
            (err.details()["option"].as_str(), err.details()["reason"].as_str()),
            (Some(option), Some("unsupported_option"))
        );
    }
}

/// Codex does not print its model: the outcome reports the run's own (per-run) model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_reports_the_per_run_model() {
    fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
        let builder = CodexAdapter::builder().cli_path(&inv.program).env(CliEnv::empty()).model("gpt-5.5");
        Arc::new(with_invocation_env(builder, inv, |b, k, v| b.env_var(k, v)).build())
    }
    let script = FakeScript::fixture("codex_text");
    let p = prepare_fake_cli_run(make, &script);
    let mut req = p.request.clone();
    req.options.insert("model".into(), "gpt-6-sol".into());
    let outcome = p.adapter.execute(req, p.sink.clone()).await.unwrap();
    assert_eq!(outcome.model.as_deref(), Some("gpt-6-sol"));
    assert!(p.record().argv.windows(2).any(|w| w == ["-m", "gpt-6-sol"]));
}
