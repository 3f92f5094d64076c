//! The policy's tool rules as an [`ApprovalHandler`]: [`PolicyApprovals`] decides at once what
//! the rules decide, and hands what they leave open to another handler (a person's queue).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use asm_core::Result;
use asm_ports::{ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict, DynApprovalHandler};

use crate::policy::{Policy, RuleKind, ViolationAction};

/// `decided_by` of the decisions [`PolicyApprovals`] makes itself.
pub const DECIDED_BY_POLICY: &str = "policy";

/// What a policy's tool rules say about one tool ([`tool_ruling`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolRuling {
    /// A rule forbids the tool: the first deny rule listing it, else the first allow rule not
    /// listing it.
    Denied {
        /// The rule's kind.
        rule: RuleKind,
        /// The rule's tools.
        tools: Vec<String>,
    },
    /// Allow rules exist and every one lists the tool (and no deny rule does).
    Allowed,
    /// No rule is about the tool (no allow rule, no deny rule listing it).
    NoRule,
}

/// What `policy`'s tool rules say about `tool` (exact, case-sensitive names, as everywhere in
/// the policy).
///
/// ```
/// use asm_policy::{Policy, ToolRuling, tool_ruling};
/// let p = Policy::builder("p").deny(["Bash"]).build().unwrap();
/// assert!(matches!(tool_ruling(&p, "Bash"), ToolRuling::Denied { .. }));
/// assert_eq!(tool_ruling(&p, "Read"), ToolRuling::NoRule);
/// let only_read = Policy::builder("r").allow(["Read"]).build().unwrap();
/// assert_eq!(tool_ruling(&only_read, "Read"), ToolRuling::Allowed);
/// assert!(matches!(tool_ruling(&only_read, "Edit"), ToolRuling::Denied { .. }));
/// ```
pub fn tool_ruling(policy: &Policy, tool: &str) -> ToolRuling {
    let rules = policy.tool_rules();
    if let Some(rule) = rules.iter().find(|r| r.kind() == RuleKind::Deny && r.contains(tool)) {
        return ToolRuling::Denied { rule: RuleKind::Deny, tools: rule.tools().to_vec() };
    }
    if let Some(rule) = rules.iter().find(|r| r.kind() == RuleKind::Allow && !r.contains(tool)) {
        return ToolRuling::Denied { rule: RuleKind::Allow, tools: rule.tools().to_vec() };
    }
    if rules.iter().any(|r| r.kind() == RuleKind::Allow) { ToolRuling::Allowed } else { ToolRuling::NoRule }
}

/// The policy's tool rules as an [`ApprovalHandler`] (give it to
/// `SessionManager::approvals` / `ServerConfig::approvals`). It decides at once,
/// `decided_by: "policy"`:
///
/// | the rules say | `on_violation` | verdict |
/// | --- | --- | --- |
/// | denied (a deny rule lists the tool, or an allow rule does not) | `cancel` | `deny_once`, the rule as the reason |
/// | denied | `warn` | `allow_once`, the rule as the reason (the policy hook records the violation) |
/// | denied | `request_approval` | the [fallback](Self::fallback)'s verdict; without one `deny_once` |
/// | allowed (every allow rule lists it) | any | `allow_once` |
/// | no rule about the tool | any | the fallback's verdict; without one `allow_once` |
///
/// So `PolicyApprovals::new(policy).fallback(queue)` answers what the rules decide without a
/// person and parks the rest in the queue.
///
/// ```
/// use asm_core::{RunId, SessionId};
/// use asm_policy::{Policy, PolicyApprovals};
/// use asm_ports::{ApprovalDecision, ApprovalHandler, ApprovalRequest};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
/// let policy = Policy::builder("ci").deny(["Bash"]).build()?;
/// let approvals = PolicyApprovals::new(policy);
/// let ask = |tool: &str| ApprovalRequest::new(SessionId::new(), RunId::new(), "acp", tool);
/// let verdict = approvals.decide(&ask("Bash")).await?;
/// assert_eq!(verdict.decision, ApprovalDecision::DenyOnce);
/// assert_eq!(verdict.decided_by, "policy");
/// assert_eq!(approvals.decide(&ask("Read")).await?.decision, ApprovalDecision::AllowOnce);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PolicyApprovals {
    policy: Policy,
    fallback: Option<DynApprovalHandler>,
}

impl fmt::Debug for PolicyApprovals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyApprovals")
            .field("policy", &self.policy.name())
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl PolicyApprovals {
    /// The rules of `policy`, without a fallback.
    pub fn new(policy: Policy) -> Self {
        Self { policy, fallback: None }
    }

    /// Hands the tools the rules say nothing about, and the violations of a
    /// `request_approval` policy, to `handler`.
    #[must_use]
    pub fn fallback(self, handler: impl ApprovalHandler + 'static) -> Self {
        self.shared_fallback(Arc::new(handler))
    }

    asm_core::builder_setters! {
        /// [`fallback`](Self::fallback) with a shared handler.
        fn shared_fallback(handler: DynApprovalHandler) { fallback = Some(handler) }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy's own verdict for `tool`, or `None` when it hands the call to the fallback.
    ///
    /// ```
    /// use asm_policy::{Policy, PolicyApprovals, ViolationAction};
    /// use asm_ports::ApprovalDecision;
    /// let p = Policy::builder("p").deny(["Bash"]).on_violation(ViolationAction::RequestApproval).build().unwrap();
    /// let queue_like = PolicyApprovals::new(Policy::default());
    /// let approvals = PolicyApprovals::new(p).fallback(queue_like);
    /// assert!(approvals.ruling("Bash").is_none(), "a request_approval violation goes to the fallback");
    /// assert!(approvals.ruling("Read").is_none(), "no rule: the fallback");
    /// ```
    pub fn ruling(&self, tool: &str) -> Option<ApprovalVerdict> {
        let name = self.policy.name();
        match tool_ruling(&self.policy, tool) {
            ToolRuling::Denied { rule, tools } => {
                let why = match rule {
                    RuleKind::Deny => format!("policy {name}: {tool} is denied (deny rule [{}])", tools.join(", ")),
                    RuleKind::Allow => {
                        format!("policy {name}: {tool} is not allowed (allow rule [{}])", tools.join(", "))
                    }
                };
                match self.policy.on_violation() {
                    ViolationAction::Warn => Some(
                        ApprovalVerdict::new(ApprovalDecision::AllowOnce, DECIDED_BY_POLICY)
                            .reason(format!("{why}; allowed with a warning")),
                    ),
                    ViolationAction::RequestApproval if self.fallback.is_some() => None,
                    ViolationAction::RequestApproval => Some(
                        ApprovalVerdict::new(ApprovalDecision::DenyOnce, DECIDED_BY_POLICY)
                            .reason(format!("{why}; it requires approval and no approver is configured")),
                    ),
                    _ => Some(ApprovalVerdict::new(ApprovalDecision::DenyOnce, DECIDED_BY_POLICY).reason(why)),
                }
            }
            ToolRuling::Allowed => Some(
                ApprovalVerdict::new(ApprovalDecision::AllowOnce, DECIDED_BY_POLICY)
                    .reason(format!("policy {name} allows {tool}")),
            ),
            ToolRuling::NoRule if self.fallback.is_some() => None,
            ToolRuling::NoRule => Some(
                ApprovalVerdict::new(ApprovalDecision::AllowOnce, DECIDED_BY_POLICY)
                    .reason(format!("no rule of policy {name} is about {tool}")),
            ),
        }
    }
}

#[async_trait]
impl ApprovalHandler for PolicyApprovals {
    async fn decide(&self, request: &ApprovalRequest) -> Result<ApprovalVerdict> {
        match (self.ruling(&request.tool_name), &self.fallback) {
            (Some(verdict), _) => Ok(verdict),
            (None, Some(fallback)) => fallback.decide(request).await,
            // `ruling` gives `None` only with a fallback.
            (None, None) => Ok(ApprovalVerdict::new(ApprovalDecision::DenyOnce, DECIDED_BY_POLICY)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use asm_core::{RunId, SessionId};

    #[derive(Debug)]
    struct Person;

    #[async_trait]
    impl ApprovalHandler for Person {
        async fn decide(&self, _request: &ApprovalRequest) -> Result<ApprovalVerdict> {
            Ok(ApprovalVerdict::new(ApprovalDecision::AllowAlways, "alice"))
        }
    }

    fn ask(tool: &str) -> ApprovalRequest {
        ApprovalRequest::new(SessionId::new(), RunId::new(), "test", tool)
    }

    #[tokio::test]
    async fn the_table() {
        let deny = |action| Policy::builder("p").deny(["Bash"]).on_violation(action).build().unwrap();
        let cases = [
            (deny(ViolationAction::Cancel), false, "Bash", ApprovalDecision::DenyOnce, "policy"),
            (deny(ViolationAction::Warn), false, "Bash", ApprovalDecision::AllowOnce, "policy"),
            (deny(ViolationAction::RequestApproval), false, "Bash", ApprovalDecision::DenyOnce, "policy"),
            (deny(ViolationAction::RequestApproval), true, "Bash", ApprovalDecision::AllowAlways, "alice"),
            (deny(ViolationAction::Cancel), true, "Bash", ApprovalDecision::DenyOnce, "policy"),
            (deny(ViolationAction::Cancel), false, "Read", ApprovalDecision::AllowOnce, "policy"),
            (deny(ViolationAction::Cancel), true, "Read", ApprovalDecision::AllowAlways, "alice"),
        ];
        for (policy, with_fallback, tool, decision, by) in cases {
            let mut approvals = PolicyApprovals::new(policy.clone());
            if with_fallback {
                approvals = approvals.fallback(Person);
            }
            let verdict = approvals.decide(&ask(tool)).await.unwrap();
            assert_eq!((verdict.decision, verdict.decided_by.as_str()), (decision, by), "{policy:?} {tool}");
        }
        let only = PolicyApprovals::new(Policy::builder("r").allow(["Read", "Grep"]).allow(["Read"]).build().unwrap())
            .fallback(Person);
        assert_eq!(only.decide(&ask("Read")).await.unwrap().decided_by, "policy");
        let grep = only.decide(&ask("Grep")).await.unwrap();
        assert_eq!(grep.decision, ApprovalDecision::DenyOnce, "one allow rule does not list it");
        assert!(grep.reason.unwrap().contains("allow rule [Read]"));
    }
}
