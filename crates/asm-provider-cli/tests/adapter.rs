#![allow(clippy::unwrap_used)]
//! The adapter core with a small test protocol: per-run options (one key list, validated
//! once), command construction, credential pass-through, the one transcript renderer.

use asm_core::{CapabilityType, ErrorCode, Message, ProviderName, Role, Run, RunInput, Session, Transcript};
use asm_ports::{ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_provider_cli::{
    CliAdapter, CliEnv, CliNormalizer, CliOptions, CliProtocol, ExitInfo, PermissionMode, RunOption, render_prompt,
    render_transcript, run_option,
};
use serde_json::json;

/// A protocol that honours everything but `max_turns` and `plan`, and prints its options as
/// argv so the tests can see what a run was given.
#[derive(Clone, Debug, Default)]
struct Probe {
    flag: bool,
}

#[derive(Debug, Default)]
struct Lines(Vec<String>);

impl CliNormalizer for Lines {
    fn normalize_line(&mut self, line: &str, _out: &mut Vec<ProviderEvent>) -> asm_core::Result<()> {
        self.0.push(line.to_owned());
        Ok(())
    }
    fn outcome(&self, _exit: &ExitInfo) -> asm_core::Result<ExecuteOutcome> {
        Ok(ExecuteOutcome::text(self.0.join("|")))
    }
}

impl CliProtocol for Probe {
    type Normalizer = Lines;
    const PROVIDER: ProviderName = ProviderName::custom("probe");
    const PROGRAM: &'static str = "probe-cli";
    const AUTH_ENV: &'static [&'static str] = &["PROBE_API_KEY"];
    const RUN_OPTIONS: &'static [RunOption] = &[
        RunOption::Model,
        RunOption::PermissionMode,
        RunOption::AllowedTools,
        RunOption::DisallowedTools,
        RunOption::SystemPrompt,
        RunOption::Cwd,
    ];
    const PERMISSION_MODES: &'static [PermissionMode] = &[PermissionMode::Default, PermissionMode::FullAuto];
    const CAPABILITIES: &'static [(&'static str, CapabilityType)] = &[("streaming", CapabilityType::Sampling)];

    fn argv(options: &CliOptions<Self>, request: &ExecuteRequest) -> Vec<String> {
        let mut argv = vec![
            format!("model={}", options.model.clone().unwrap_or_default()),
            format!("mode={}", options.permission_mode),
            format!("allowed={}", options.allowed_tools.join(",")),
            format!("system={}", options.system_prompt.clone().unwrap_or_default()),
            format!("flag={}", options.provider.flag),
        ];
        argv.push(render_prompt(request));
        argv
    }

    fn normalizer(_: &CliOptions<Self>, _: &ExecuteRequest) -> Lines {
        Lines::default()
    }
}

fn request(options: serde_json::Value) -> ExecuteRequest {
    let session = Session::new("agent").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user("hi"));
    let serde_json::Value::Object(options) = options else { panic!("options must be an object") };
    ExecuteRequest::new(session, run).options(options)
}

fn adapter() -> CliAdapter<Probe> {
    CliAdapter::<Probe>::builder().model("base-model").allowed_tools(["Read"]).provider(|p| p.flag = true).build()
}

#[test]
fn per_run_options_override_the_adapters_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = adapter()
        .command(&request(json!({
            run_option::MODEL: "run-model",
            run_option::PERMISSION_MODE: "full_auto",
            run_option::ALLOWED_TOOLS: ["Bash", "Edit"],
            run_option::SYSTEM_PROMPT: "Be terse.",
            run_option::CWD: dir.path().display().to_string(),
        })))
        .unwrap();
    let argv: Vec<String> = cmd.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    assert_eq!(argv, ["model=run-model", "mode=full_auto", "allowed=Bash,Edit", "system=Be terse.", "flag=true", "hi"]);
    assert_eq!(cmd.cwd.as_deref(), Some(dir.path()));

    // No options, or null values: the adapter's own.
    for options in [json!({}), json!({"model": null, "cwd": null})] {
        let cmd = adapter().command(&request(options)).unwrap();
        assert_eq!(cmd.args[0], "model=base-model");
        assert_eq!(cmd.args[2], "allowed=Read");
        assert!(cmd.cwd.is_none());
    }
    // One string is a one-tool list.
    let cmd = adapter().command(&request(json!({"allowed_tools": "Bash"}))).unwrap();
    assert_eq!(cmd.args[2], "allowed=Bash");
}

#[test]
fn bad_per_run_options_are_validation_errors() {
    let cases = [
        (json!({"temperature": 0.2}), "temperature", "unknown_option"),
        (json!({"model": 7}), "model", "invalid_option"),
        (json!({"model": " "}), "model", "invalid_option"),
        (json!({"allowed_tools": ["Bash", 3]}), "allowed_tools", "invalid_option"),
        (json!({"permission_mode": "yolo"}), "permission_mode", "invalid_option"),
        (json!({"permission_mode": "plan"}), "permission_mode", "unsupported_option"),
        (json!({"max_turns": 3}), "max_turns", "unsupported_option"),
        (json!({"cwd": "/nonexistent/asm-probe"}), "cwd", "invalid_option"),
    ];
    for (options, option, reason) in cases {
        let err = adapter().command(&request(options.clone())).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError, "{options}");
        assert_eq!(err.details()["option"], option, "{options}");
        assert_eq!(err.details()["reason"], reason, "{options}");
    }
}

#[tokio::test]
async fn execute_refuses_bad_options_before_spawning() {
    // `probe-cli` does not exist: reaching the spawn would be cli_not_found instead.
    let session = Session::new("agent").unwrap();
    let (sink, recorded) = asm_testkit_sink(&session);
    let err = adapter().execute(request(json!({"bogus": true})), sink).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert!(recorded.lock().unwrap().is_empty());
    let err = adapter().validate_config().unwrap_err();
    assert_eq!(err.provider_error().map(|pe| pe.kind), Some(asm_core::ProviderErrorKind::CliNotFound));
}

type Seen = std::sync::Arc<std::sync::Mutex<Vec<ProviderEvent>>>;

fn asm_testkit_sink(session: &Session) -> (asm_ports::EventSink, Seen) {
    let seen: Seen = Seen::default();
    let keep = seen.clone();
    let id = session.id.clone();
    let sink = asm_ports::EventSink::new(move |e: ProviderEvent| {
        keep.lock().unwrap().push(e.clone());
        let stored = asm_core::StoredEvent::new(asm_core::Event::new(e.kind, id.clone()), 1);
        Box::pin(async move { Ok(stored) })
    });
    (sink, seen)
}

#[test]
fn builder_options_a_provider_cannot_honour_fail_validation() {
    let err = CliAdapter::<Probe>::builder().max_turns(2).build().options().validate().unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(err.details()["reason"], "unsupported_option");
    assert_eq!(err.details()["supported"][0], "model");
}

#[test]
fn credentials_pass_through_by_default_and_are_never_printed() {
    let options = CliAdapter::<Probe>::builder().env_var("PROBE_API_KEY", "sk-secret").build().options().clone();
    let env = options.child_env();
    assert!(env.inherit.iter().any(|n| n == "PROBE_API_KEY"), "minimal() passes the provider's key through");
    assert!(!format!("{options:?}").contains("sk-secret"));
    assert_eq!(env.vars["PROBE_API_KEY"], "sk-secret", "an explicit value wins");

    let off = CliAdapter::<Probe>::builder().env(CliEnv::minimal().pass_auth(false)).build().options().child_env();
    assert!(!off.inherit.iter().any(|n| n == "PROBE_API_KEY"));
    let empty = CliAdapter::<Probe>::builder().env(CliEnv::empty()).build().options().child_env();
    assert!(empty.inherit.is_empty(), "empty() inherits nothing, credentials neither");
}

fn tool_call(content: Option<&str>) -> Message {
    let mut call = Message::new(Role::Assistant, "");
    call.content = content.map(str::to_owned);
    call.tool_call_id = Some("t1".into());
    call.tool_name = Some("bash".into());
    call
}

/// The drift: a tool call whose content is `Some("")` rendered for one adapter and not
/// for another. There is one renderer now, and it renders the call whatever the content.
#[test]
fn one_transcript_renderer_renders_every_tool_call() {
    for content in [None, Some("")] {
        let mut t = Transcript::new(asm_core::SessionId::new());
        t.messages.push(tool_call(content));
        assert_eq!(render_transcript(&t), ["tool_call(t1): bash {}"], "{content:?}");
    }
    // Text and a call in one message: both.
    let mut t = Transcript::new(asm_core::SessionId::new());
    t.messages.push(tool_call(Some("Let me look.")));
    let mut result = Message::new(Role::Tool, "");
    result.tool_call_id = Some("t1".into());
    result.tool_output = Some(json!({"exit_code": 0}));
    t.messages.push(result);
    assert_eq!(
        render_transcript(&t),
        ["assistant: Let me look.", "tool_call(t1): bash {}", "tool_result(t1): unknown {\"exit_code\":0}"]
    );
}
