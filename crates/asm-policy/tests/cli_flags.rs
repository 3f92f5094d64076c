//! The compiled options are what the real provider crates accept, and become the CLI flags
//! documented on `compile` (argv built by the provider crates themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use asm_core::{Run, RunInput, Session};
use asm_policy::{CliTarget, Limit, Policy, ViolationAction, compile, option_key};
use asm_ports::ExecuteRequest;

fn request() -> ExecuteRequest {
    let session = Session::new("agent").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user("hi"));
    ExecuteRequest::new(session, run)
}

fn policy() -> Policy {
    Policy::builder("p")
        .allow(["Read", "Edit"])
        .deny(["WebFetch"])
        .limit(Limit::MaxToolCalls(4))
        .limit(Limit::MaxTotalTokens(10_000))
        .build()
        .unwrap()
}

#[test]
fn the_option_keys_are_the_cli_adapters_keys() {
    use asm_provider_cli::run_option;
    assert_eq!(option_key::MAX_TURNS, run_option::MAX_TURNS);
    assert_eq!(option_key::PERMISSION_MODE, run_option::PERMISSION_MODE);
    assert_eq!(option_key::ALLOWED_TOOLS, run_option::ALLOWED_TOOLS);
    assert_eq!(option_key::DISALLOWED_TOOLS, run_option::DISALLOWED_TOOLS);
}

#[test]
fn claude_gets_allowed_disallowed_tools_max_turns_and_no_permission_bypass() {
    let compiled = compile(&policy(), CliTarget::Claude);
    let mut configured = asm_provider_claude::ClaudeOptions::default();
    configured.permission_mode = asm_provider_cli::PermissionMode::FullAuto;
    let options = configured.for_run(&compiled.options).expect("claude accepts every compiled option");
    options.validate().unwrap();
    let argv = asm_provider_claude::build_argv(&options, &request());
    let flag = |name: &str| argv.iter().position(|a| a == name).map(|i| argv[i + 1].clone());
    assert_eq!(flag("--allowedTools").as_deref(), Some("Read,Edit"));
    assert_eq!(flag("--disallowedTools").as_deref(), Some("WebFetch"));
    assert_eq!(flag("--max-turns").as_deref(), Some("5"));
    assert_eq!(flag("--permission-mode"), None, "the adapter's bypassPermissions is overridden by the policy");
}

#[test]
fn codex_gets_a_read_only_sandbox_when_patches_are_not_allowed() {
    let compiled = compile(&policy(), CliTarget::Codex);
    let base = asm_provider_codex::CodexOptions::default();
    let options = base.for_run(&compiled.options).expect("codex accepts every compiled option");
    options.validate().unwrap();
    let argv = asm_provider_codex::build_argv(&options, &request());
    let at = argv.iter().position(|a| a == "-s").expect("-s flag");
    assert_eq!(argv[at + 1], "read-only");

    let bash_only = Policy::builder("p").deny(["bash"]).build().unwrap();
    assert!(compile(&bash_only, CliTarget::Codex).options.is_empty());
}

#[test]
fn amp_gets_nothing_and_warn_policies_compile_to_nothing_anywhere() {
    let compiled = compile(&policy(), CliTarget::Amp);
    let base = asm_provider_amp::AmpOptions::default();
    let options = base.for_run(&compiled.options).unwrap();
    options.validate().unwrap();
    assert!(compiled.options.is_empty());
    let warn = Policy::builder("w").deny(["Bash"]).limit(Limit::MaxToolCalls(1)).on_violation(ViolationAction::Warn);
    let warn = warn.build().unwrap();
    for target in [CliTarget::Claude, CliTarget::Codex, CliTarget::Amp, CliTarget::None] {
        assert!(compile(&warn, target).options.is_empty(), "{target}");
    }
}
