//! Policy enforcement for agent-session-manager runs: budgets (tokens, duration, tool calls,
//! cost), tool rules, and what happens on a violation, plugged into a run as a `RunHook`
//! ([`PolicyHook`]); the runtime knows the hook port, not this crate.
//!
//! * [`Policy`]: name, [`Limit`]s, [`ToolRule`]s, [`ViolationAction`], metadata; a typed
//!   builder and the map form ([`Policy::from_json`]), both validated ([`PolicyError`]);
//!   [`Policy::merge`] and [`Policy::stack`] (strictest action wins, limits by kind, rules
//!   concatenated); [`Policy::preflight`] (empty allow list, zero budget, contradictory
//!   rules).
//! * [`evaluate`]: the pure evaluator; [`PolicyTracker`]: one run's measures (usage by its
//!   delta / cumulative mode, tool calls once per call id, cost, elapsed time).
//! * [`compile`]: the policy as real CLI flags per provider ([`CliTarget`]; the table of what
//!   is prevented up front and what is enforced by cancel is on [`compile`]).
//! * [`PolicyApprovals`]: the tool rules as a live approval handler (decide at once, hand
//!   the rest to a fallback such as a person's queue).
//! * [`PricingTable`]: USD per token by provider and model, longest-prefix model matching,
//!   cache reads and writes priced; data, overridable.
//!
//! What v0.8.0 got wrong and this crate does differently (spec section 7):
//!
//! | v0.8.0 | here |
//! |---|---|
//! | tool rules and token limits compiled into hints no adapter read | real per-run options (`--disallowedTools`, `--allowedTools`, `--max-turns`, `--permission-mode`, Codex `-s read-only`) |
//! | duration checked only when an event arrived | a timer stops a silent provider |
//! | every usage report added (cumulative reports counted again and again) | each report folded by its `usage_mode` |
//! | only `tool_call_started` counted | each tool call id counted once, whichever event comes first |
//! | the same violation reported on every later event | each cause reported once (a limit once, a rule once per tool call) |
//! | cache tokens ignored in the cost | priced (cache rates, else the input rate) |
//! | a failed merge silently returned the base | a typed [`PolicyError`] |
//! | two configuration paths for the pricing table | one table, given to the hook |
//! | cost only where the provider reported one | every run record carries its cost |
//!
//! ```
//! use asm_policy::{Limit, Policy, PolicyHook, ViolationAction};
//! let org = Policy::builder("org").limit(Limit::MaxCostUsd(1.0)).deny(["WebFetch"]).build()?;
//! let task = Policy::builder("task")
//!     .limit(Limit::MaxToolCalls(20))
//!     .limit(Limit::MaxDurationMs(600_000))
//!     .on_violation(ViolationAction::Warn)
//!     .build()?;
//! let hook = PolicyHook::checked(Policy::stack([org, task]))?;
//! assert_eq!(hook.policy().on_violation(), ViolationAction::Cancel);
//! # Ok::<(), asm_core::Error>(())
//! ```
#![deny(missing_docs)]

mod approval;
mod compile;
mod evaluate;
mod hook;
mod policy;
mod pricing;

pub use approval::{DECIDED_BY_POLICY, PolicyApprovals, ToolRuling, tool_ruling};
pub use compile::{CliTarget, CompiledPolicy, compile, option_key};
pub use evaluate::{PolicyTracker, RuntimeState, Violation, ViolationKind, evaluate, tool_name_of, violation_error};
pub use hook::PolicyHook;
pub use policy::{
    Limit, LimitKind, Policy, PolicyBuilder, PolicyError, PreflightFailure, RuleKind, ToolRule, ViolationAction,
};
pub use pricing::{PricingError, PricingTable, Rates};
