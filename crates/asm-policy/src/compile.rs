//! Compiling a policy into the per-run adapter options each provider turns into real CLI flags.

use serde_json::{Value, json};

use asm_core::JsonMap;

use crate::policy::{Limit, LimitKind, Policy, RuleKind, ViolationAction};

/// The per-run option keys of the CLI adapters (`asm_provider_cli::run_option`), repeated here
/// so this crate does not depend on the subprocess machinery. A test of this crate checks
/// them against the provider crates' keys.
pub mod option_key {
    /// `max_turns` (Claude `--max-turns`).
    pub const MAX_TURNS: &str = "max_turns";
    /// `permission_mode` (Claude `--permission-mode`, Codex `-s read-only`, Amp
    /// `--dangerously-allow-all`).
    pub const PERMISSION_MODE: &str = "permission_mode";
    /// `allowed_tools` (Claude `--allowedTools`).
    pub const ALLOWED_TOOLS: &str = "allowed_tools";
    /// `disallowed_tools` (Claude `--disallowedTools`).
    pub const DISALLOWED_TOOLS: &str = "disallowed_tools";
}

/// Which CLI's flags a policy is compiled for. [`CliTarget::for_provider`] picks it from the
/// adapter's name; anything else (a router, the shell or ACP adapters, a test double) is
/// [`CliTarget::None`]: nothing is compiled, everything is enforced by cancel. (A router
/// forwards the options to whichever adapter serves the run, and Codex and Amp refuse the
/// Claude keys, so compiling for an unknown target would break runs.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CliTarget {
    /// Claude Code (`asm-provider-claude`).
    Claude,
    /// Codex CLI (`asm-provider-codex`).
    Codex,
    /// Amp CLI (`asm-provider-amp`).
    Amp,
    /// No CLI flags.
    #[default]
    None,
}

impl CliTarget {
    /// The target for an adapter named `provider` (`claude`, `codex`, `amp`).
    pub fn for_provider(provider: &str) -> Self {
        match provider {
            "claude" => Self::Claude,
            "codex" => Self::Codex,
            "amp" => Self::Amp,
            _ => Self::None,
        }
    }
}

asm_core::string_enum! {
    /// The adapter name, or `none`.
    CliTarget {
        Claude => "claude",
        Codex => "codex",
        Amp => "amp",
        None => "none",
    }
}

/// A policy compiled for one CLI: the adapter options to set, and for every rule and limit
/// whether the CLI prevents it up front or the hook enforces it by cancelling.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct CompiledPolicy {
    /// The target.
    pub target: CliTarget,
    /// Per-run adapter options (keys of [`option_key`]), set over the run's own.
    pub options: JsonMap,
    /// What the CLI prevents, one line each (`"deny Bash: --disallowedTools Bash"`).
    pub prevented: Vec<String>,
    /// What is enforced by observing events and cancelling (`"max_total_tokens"`, ...).
    pub by_cancel: Vec<String>,
}

impl CompiledPolicy {
    /// `{target, options, prevented, by_cancel}` (kept in the run's metadata).
    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target.as_str(),
            "options": self.options,
            "prevented": self.prevented,
            "by_cancel": self.by_cancel,
        })
    }
}

/// Compiles `policy` into `target`'s per-run options. What each CLI can prevent:
///
/// | rule / limit | Claude Code | Codex | Amp |
/// |---|---|---|---|
/// | deny rules | `disallowed_tools` → `--disallowedTools` (the tools are removed from the model's tool list) | `apply_patch` denied → `permission_mode: plan` → `-s read-only` (file writes by patch *and* by commands fail in the sandbox); other tools by cancel | by cancel |
/// | allow rules | `allowed_tools` → `--allowedTools` (intersection of the allow lists minus the denied tools) and `permission_mode: default` (no bypass), so tools outside the list need a permission `-p` mode never grants; tools Claude runs without permission (Read, Glob, Grep) are still checked by cancel | `apply_patch` outside an allow list → read-only as above; the rest by cancel | by cancel |
/// | `max_tool_calls` N | `max_turns` N + 1 → `--max-turns` (a run with at most N calls needs at most N + 1 turns, so a compliant run is never cut; the exact count by cancel) | by cancel | by cancel |
/// | `max_total_tokens`, `max_duration_ms`, `max_cost_usd` | by cancel (no CLI has a token or cost cap; duration by the hook's timer) | by cancel | by cancel |
///
/// Codex has no per-run tool flags (`max_turns`, `allowed_tools`, `disallowed_tools` are
/// refused by `codex exec`), its approval policy is an adapter setting
/// (`CodexBuilderExt::approval_policy`, not per run), and `codex exec` never asks. Amp takes
/// only `permission_mode` per run; its tool permissions live in its settings file
/// (`AmpOptionsExt::settings_file`: `amp.tools.disable`), which is where to prevent Amp
/// tools up front.
///
/// Only `cancel` policies are compiled: a `warn` or `request_approval` policy lets the run go
/// on after a violation, and a CLI flag would instead change its outcome (a denied tool, a
/// `--max-turns` failure). For them everything is observed, nothing prevented.
///
/// ```
/// use asm_policy::{CliTarget, Limit, Policy, compile};
/// let policy = Policy::builder("p").deny(["Bash"]).limit(Limit::MaxToolCalls(4)).build().unwrap();
/// let claude = compile(&policy, CliTarget::Claude);
/// assert_eq!(claude.options["disallowed_tools"], serde_json::json!(["Bash"]));
/// assert_eq!(claude.options["max_turns"], 5);
/// assert!(compile(&policy, CliTarget::Codex).options.is_empty());
/// ```
pub fn compile(policy: &Policy, target: CliTarget) -> CompiledPolicy {
    let mut compiled = CompiledPolicy { target, ..CompiledPolicy::default() };
    let denied = union_of(policy, RuleKind::Deny);
    let allowed = allowed_tools(policy, &denied);
    let has_allow = policy.rules_of(RuleKind::Allow).next().is_some();
    let enforce = policy.on_violation() == ViolationAction::Cancel;

    let mut tools_prevented = false;
    if enforce {
        match target {
            CliTarget::Claude => {
                if !denied.is_empty() {
                    compiled.options.insert(option_key::DISALLOWED_TOOLS.into(), denied.clone().into());
                    compiled.prevented.push(format!(
                        "deny {}: --disallowedTools {}",
                        denied.join(","),
                        denied.join(",")
                    ));
                }
                if let Some(allowed) = &allowed {
                    compiled.options.insert(option_key::ALLOWED_TOOLS.into(), allowed.clone().into());
                    compiled.options.insert(option_key::PERMISSION_MODE.into(), "default".into());
                    compiled.prevented.push(format!(
                        "allow {}: --allowedTools {} with the default permission mode",
                        allowed.join(","),
                        allowed.join(",")
                    ));
                }
                if let Some(Limit::MaxToolCalls(n)) = policy.limit(LimitKind::MaxToolCalls) {
                    let turns = n.saturating_add(1).min(u64::from(u32::MAX));
                    compiled.options.insert(option_key::MAX_TURNS.into(), turns.into());
                    compiled.prevented.push(format!("max_tool_calls {n}: --max-turns {turns} (a backstop)"));
                }
                tools_prevented = !denied.is_empty() || has_allow;
            }
            CliTarget::Codex => {
                let patch_forbidden = denied.iter().any(|t| t == "apply_patch")
                    || allowed.as_ref().is_some_and(|a| !a.iter().any(|t| t == "apply_patch"));
                if patch_forbidden {
                    compiled.options.insert(option_key::PERMISSION_MODE.into(), "plan".into());
                    compiled.prevented.push("apply_patch: -s read-only (no file writes)".to_owned());
                }
            }
            CliTarget::Amp | CliTarget::None => {}
        }
    }
    if !policy.tool_rules().is_empty() {
        // Even what a CLI prevents is still checked on the events (a flag is a promise the
        // CLI makes; the events are what happened).
        compiled.by_cancel.push(if tools_prevented { "tool_rules (also checked)" } else { "tool_rules" }.to_owned());
    }
    for limit in policy.limits() {
        compiled.by_cancel.push(limit.kind().as_str().to_owned());
    }
    compiled
}

/// The union of the lists of `kind`'s rules, first-seen order.
fn union_of(policy: &Policy, kind: RuleKind) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tool in policy.rules_of(kind).flat_map(|r| r.tools().iter()) {
        if !out.contains(tool) {
            out.push(tool.clone());
        }
    }
    out
}

/// The tools every allow rule lists, minus the denied ones (order of the first allow rule);
/// `None` without allow rules.
fn allowed_tools(policy: &Policy, denied: &[String]) -> Option<Vec<String>> {
    let mut rules = policy.rules_of(RuleKind::Allow);
    let first = rules.next()?;
    let rest: Vec<_> = rules.collect();
    Some(first.tools().iter().filter(|t| rest.iter().all(|r| r.contains(t)) && !denied.contains(t)).cloned().collect())
}
