#![allow(clippy::unwrap_used)]
//! argv construction, prompt rendering, environment, and the argv the fake CLI really saw.

use std::sync::Arc;

use asm_core::{ErrorCode, Session};
use asm_ports::ProviderAdapter;
use asm_provider_amp::{
    AmpAdapter, AmpAdapterBuilder, AmpBuilderExt, AmpOptions, AmpOptionsExt, build_argv, build_env, render_prompt,
};
use asm_provider_cli::{CliEnv, PermissionMode};
use asm_testkit::adapter_contract::FakeCliInvocation;
use asm_testkit::fake_cli::FakeScript;
use asm_testkit::provider_tests::{
    prepare_fake_cli_run, request, request_with_options, transcript_with_one_tool_call, with_invocation_env,
};

fn options(f: impl FnOnce(AmpAdapterBuilder) -> AmpAdapterBuilder) -> AmpOptions {
    f(AmpAdapter::builder()).build().options().clone()
}

#[test]
fn minimal_argv_matches_the_captured_runs() {
    // amp_*.cmd: -x "hello" --stream-json
    assert_eq!(build_argv(&AmpOptions::default(), &request("hello")), ["-x", "hello", "--stream-json"]);
}

#[test]
fn every_option_maps_to_its_flag() {
    let o = options(|b| {
        b.mode("rush")
            .model("label-only")
            .permission_mode(PermissionMode::DangerouslySkipPermissions)
            .settings_file("/etc/amp/settings.json")
            .thinking(true)
            .extra_args(["--visibility", "private"])
    });
    let argv = build_argv(&o, &request("go").resume("T-abc"));
    assert_eq!(
        argv,
        [
            "threads",
            "continue",
            "T-abc",
            "--dangerously-allow-all",
            "--mode",
            "rush",
            "--settings-file",
            "/etc/amp/settings.json",
            "--visibility",
            "private",
            "-x",
            "go",
            "--stream-json",
            "--stream-json-thinking",
        ]
    );
    assert!(!argv.iter().any(|a| a.contains("label-only")), "the model label is not a CLI flag");
}

#[test]
fn permission_modes_follow_spec_9_6() {
    for (mode, allow_all) in [
        (PermissionMode::Default, false),
        (PermissionMode::AcceptEdits, false),
        (PermissionMode::Plan, false),
        (PermissionMode::FullAuto, true),
        (PermissionMode::DangerouslySkipPermissions, true),
    ] {
        let argv = build_argv(&options(|b| b.permission_mode(mode)), &request("x"));
        assert_eq!(argv.iter().any(|a| a == "--dangerously-allow-all"), allow_all, "{mode}");
    }
}

#[test]
fn stream_input_dash_prompts_and_bad_handles() {
    let argv = build_argv(&options(|b| b.stream_input(true)), &request("hi"));
    assert_eq!(argv, ["-x", "--stream-json", "--stream-json-input"]);
    let argv = build_argv(&AmpOptions::default(), &request("--help me"));
    assert_eq!(argv[1], " --help me");
    // A handle that would be taken for a flag, or an empty one, is not resumed.
    for handle in ["--dangerously-allow-all", "  "] {
        let argv = build_argv(&AmpOptions::default(), &request("hi").resume(handle));
        assert_eq!(argv, ["-x", "hi", "--stream-json"], "{handle:?}");
    }
}

#[test]
fn transcript_is_replayed_unless_resuming() {
    let t = transcript_with_one_tool_call("t1", "Bash", None, "hi");
    let req = request("second").transcript(t);
    let replay =
        "user: first question\nassistant: first answer\ntool_call(t1): Bash {}\ntool_result(t1): Bash hi\nuser: second";
    assert_eq!(render_prompt(&req), replay);
    assert_eq!(build_argv(&AmpOptions::default(), &req)[1], replay);
    let resumed = req.resume("T-1");
    assert_eq!(render_prompt(&resumed), "second");
    assert_eq!(
        build_argv(&AmpOptions::default(), &resumed),
        ["threads", "continue", "T-1", "-x", "second", "--stream-json"]
    );
}

#[test]
fn environment_is_explicit_and_the_key_is_redacted() {
    let o = options(|b| b.env(CliEnv::empty()).api_key("sgamp_secret").server_url("http://127.0.0.1:1/"));
    let env = build_env(&o).resolve();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_str().unwrap().to_owned());
    assert_eq!(get("AMP_API_KEY").as_deref(), Some("sgamp_secret"));
    assert_eq!(get("AMP_URL").as_deref(), Some("http://127.0.0.1:1/"));
    assert_eq!(get("PATH"), None);
    assert!(o.has_api_key());
    assert!(!format!("{o:?}").contains("sgamp_secret"));
    let o = options(|b| b.env(CliEnv::empty().set("AMP_API_KEY", "sgamp_env_secret")));
    assert!(o.has_api_key());
    assert!(!format!("{o:?}").contains("sgamp_env_secret"));
    assert!(!options(|b| b.env(CliEnv::empty())).has_api_key());
}

#[tokio::test]
async fn require_api_key_fails_before_spawning() {
    let adapter = AmpAdapter::builder().cli_path("/bin/sh").env(CliEnv::empty()).require_api_key(true).build();
    let err = adapter.validate_config().unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderAuthenticationFailed);
    assert_eq!(err.details()["reason"], "missing_api_key");
    let session = Session::new("agent").unwrap();
    let (sink, recorded) = asm_testkit::adapter_contract::recording_sink(&session);
    let err = adapter.execute(request("hi"), sink).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderAuthenticationFailed);
    assert!(recorded.events().is_empty());
    let ok = AmpAdapter::builder().cli_path("/bin/sh").env(CliEnv::empty()).api_key("k").require_api_key(true).build();
    ok.validate_config().unwrap();
    assert_eq!(ok.name(), "amp");
    assert!(ok.supports_native_resume());
}

fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let builder = AmpAdapter::builder()
        .cli_path(&inv.program)
        .env(CliEnv::empty())
        .api_key("sgamp_fake_key")
        .server_url("http://127.0.0.1:18767/")
        .mode("smart")
        .stream_input(true);
    Arc::new(with_invocation_env(builder, inv, |b, k, v| b.env_var(k, v)).build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_cli_sees_the_built_argv_env_and_stdin() {
    let script = FakeScript::fixture("amp_stream_json_SYNTHETIC_from_source");
    let p = prepare_fake_cli_run(make, &script);
    let req = p.request.clone().resume("T-00000000-0000-4000-8000-000000000001");
    let outcome = p.adapter.execute(req.clone(), p.sink.clone()).await.unwrap();
    assert_eq!(outcome.provider_session_id.as_deref(), Some("T-00000000-0000-4000-8000-000000000001"));
    let record = p.record();
    // argv depends on the options only, not on the CLI path or environment.
    let expected = build_argv(&options(|b| b.mode("smart").stream_input(true)), &req);
    assert_eq!(record.argv, expected);
    assert!(record.argv.starts_with(&["threads".to_owned(), "continue".to_owned()]));
    assert_eq!(record.env.get("AMP_API_KEY").and_then(|v| v.as_str()), Some("sgamp_fake_key"));
    assert_eq!(record.env.get("AMP_URL").and_then(|v| v.as_str()), Some("http://127.0.0.1:18767/"));
    assert!(!record.env.contains_key("HOME"), "environment must be explicit");
    let stdin: serde_json::Value = serde_json::from_str(record.stdin.unwrap().trim()).unwrap();
    assert_eq!(stdin["message"]["content"][0]["text"], "hello");
    assert!(p.adapter.capabilities().iter().any(|c| c.name == "tool_use"));
}

/// Amp honours `permission_mode` (its permissive modes) and `cwd`; every other per-run option
/// is refused, as are the modes it has no flag for.
#[test]
fn per_run_options_map_to_flags_or_are_refused() {
    let adapter = AmpAdapter::builder().build();
    let cmd =
        adapter.command(&request_with_options("go", serde_json::json!({"permission_mode": "full_auto"}))).unwrap();
    assert_eq!(cmd.args, ["--dangerously-allow-all", "-x", "go", "--stream-json"]);
    for (options, option) in [
        (serde_json::json!({"model": "claude-sonnet-4-5"}), "model"),
        (serde_json::json!({"max_turns": 2}), "max_turns"),
        (serde_json::json!({"system_prompt": "x"}), "system_prompt"),
        (serde_json::json!({"allowed_tools": ["Bash"]}), "allowed_tools"),
        (serde_json::json!({"permission_mode": "plan"}), "permission_mode"),
        (serde_json::json!({"permission_mode": "accept_edits"}), "permission_mode"),
    ] {
        let err = adapter.command(&request_with_options("go", options.clone())).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError, "{options}");
        assert_eq!(err.details()["option"], option, "{options}");
        assert_eq!(err.details()["reason"], "unsupported_option", "{options}");
    }
    // The model label is Amp's own option, not the model.
    let labelled = AmpAdapter::builder().model_label("smart-model").build();
    assert!(labelled.options().validate().is_ok());
}

/// Amp cannot fork a thread: a fork request is refused before anything runs, instead of
/// continuing (and changing) the parent's thread.
#[tokio::test]
async fn a_fork_request_is_refused() {
    let adapter = AmpAdapter::builder().cli_path("/bin/sh").env(CliEnv::empty()).build();
    assert!(!adapter.supports_native_fork());
    let session = Session::new("agent").unwrap();
    let (sink, recorded) = asm_testkit::adapter_contract::recording_sink(&session);
    let err = adapter.execute(request("hi").fork_from("T-parent"), sink).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    assert!(recorded.events().is_empty());
}
