use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, JsonMap, RunId, SessionId, Timestamp, TokenUsage};

/// The lifecycle of a [`Run`].
///
/// ```text
/// pending ──> running ──> completed | failed | cancelled | timeout
///    └──────> cancelled | failed          (cancelled while queued, or never started)
/// ```
/// Terminal statuses are final: a terminal run status is never overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Created or queued, not executing.
    Pending,
    /// Executing.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Exceeded its deadline.
    Timeout,
}

crate::string_enum! {
    /// The snake_case name.
    RunStatus {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
        Timeout => "timeout",
    }
    /// Every status.
    pub const ALL;
}

impl RunStatus {
    /// Whether the run has finished.
    pub const fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Timeout)
    }

    /// Whether `self -> to` is allowed.
    pub const fn can_transition_to(self, to: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, to),
            (Pending, Running | Cancelled | Failed) | (Running, Completed | Failed | Cancelled | Timeout)
        )
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// System instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

crate::string_enum! {
    /// The lowercase name.
    Role {
        System => "system",
        User => "user",
        Assistant => "assistant",
        Tool => "tool",
    }
}

impl Role {
    /// Parses a role name case-insensitively.
    pub fn parse(text: &str) -> Option<Role> {
        match text.to_ascii_lowercase().as_str() {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// One message of a run's input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputMessage {
    /// Who says it.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// What a run is asked to do: one or more messages.
///
/// ```
/// use asm_core::RunInput;
/// let input = RunInput::user("Fix the failing test");
/// assert_eq!(input.prompt(), "Fix the failing test");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInput {
    /// The messages, in order.
    pub messages: Vec<InputMessage>,
}

impl RunInput {
    /// One user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self { messages: vec![InputMessage { role: Role::User, content: content.into() }] }
    }

    /// Appends a message.
    #[must_use]
    pub fn message(mut self, role: Role, content: impl Into<String>) -> Self {
        self.messages.push(InputMessage { role, content: content.into() });
        self
    }

    /// The user messages joined by blank lines: the prompt a CLI provider is given.
    pub fn prompt(&self) -> String {
        self.messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// Checks that the input has at least one message with non-empty content.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidInput`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.messages.iter().all(|m| m.content.trim().is_empty()) {
            return Err(Error::new(ErrorCode::InvalidInput, "run input has no message with content"));
        }
        Ok(())
    }
}

/// What a successful run produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOutput {
    /// The final assistant text.
    pub content: String,
    /// Provider-specific extras.
    #[serde(default, skip_serializing_if = "JsonMap::is_empty")]
    pub extra: JsonMap,
}

impl RunOutput {
    /// Output with the given text.
    pub fn text(content: impl Into<String>) -> Self {
        Self { content: content.into(), extra: JsonMap::new() }
    }
}

/// One request to a provider within a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The id.
    pub id: RunId,
    /// The owning session.
    pub session_id: SessionId,
    /// Lifecycle state; change it with the transition methods.
    pub status: RunStatus,
    /// What was asked.
    pub input: RunInput,
    /// What came back, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<RunOutput>,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    /// Free-form metadata; the runtime adds `provider`, `provider_session_id`, `model`.
    #[serde(default)]
    pub metadata: JsonMap,
    /// Provider turns.
    #[serde(default)]
    pub turn_count: u32,
    /// Tokens used.
    #[serde(default)]
    pub token_usage: TokenUsage,
    /// Cost, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// When the run was created (queued).
    pub created_at: Timestamp,
    /// When execution started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// The provider that executed it (the routed provider, never a router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl Run {
    /// A new pending run.
    pub fn new(session_id: SessionId, input: RunInput) -> Self {
        Self {
            id: RunId::new(),
            session_id,
            status: RunStatus::Pending,
            input,
            output: None,
            error: None,
            metadata: JsonMap::new(),
            turn_count: 0,
            token_usage: TokenUsage::default(),
            cost_usd: None,
            created_at: crate::now(),
            started_at: None,
            ended_at: None,
            provider: None,
        }
    }

    /// Moves to `to` if allowed; sets `started_at` on `running` and `ended_at` on a terminal status.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidTransition`]; the run is left unchanged.
    pub fn transition(&mut self, to: RunStatus) -> Result<(), Error> {
        if !self.status.can_transition_to(to) {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!("run {} cannot go from {} to {}", self.id, self.status, to),
            )
            .with_detail("from", self.status.as_str())
            .with_detail("to", to.as_str()));
        }
        let now = crate::now();
        if to == RunStatus::Running {
            self.started_at = Some(now);
        }
        if to.is_terminal() {
            self.ended_at = Some(now);
        }
        self.status = to;
        Ok(())
    }

    /// `running -> completed` with the output.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidTransition`].
    pub fn complete(&mut self, output: RunOutput) -> Result<(), Error> {
        self.transition(RunStatus::Completed)?;
        self.output = Some(output);
        Ok(())
    }

    /// Ends the run with an error: `cancelled` codes go to [`RunStatus::Cancelled`], `timeout`
    /// to [`RunStatus::Timeout`], everything else to [`RunStatus::Failed`].
    ///
    /// # Errors
    /// [`ErrorCode::InvalidTransition`].
    pub fn fail(&mut self, error: Error) -> Result<(), Error> {
        let to = match error.code() {
            ErrorCode::Cancelled => RunStatus::Cancelled,
            ErrorCode::Timeout => RunStatus::Timeout,
            _ => RunStatus::Failed,
        };
        self.transition(to)?;
        self.error = Some(error);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_status_is_never_overwritten() {
        let mut run = Run::new(SessionId::new(), RunInput::user("x"));
        run.transition(RunStatus::Running).unwrap();
        assert!(run.started_at.is_some());
        run.fail(Error::from_code(ErrorCode::Cancelled)).unwrap();
        assert_eq!(run.status, RunStatus::Cancelled);
        for &to in RunStatus::ALL {
            assert_eq!(run.transition(to).unwrap_err().code(), ErrorCode::InvalidTransition);
        }
        assert!(run.complete(RunOutput::text("late")).is_err());
        assert_eq!(run.status, RunStatus::Cancelled);
        assert!(run.output.is_none());
    }

    #[test]
    fn input_validation_and_prompt() {
        assert!(RunInput::default().validate().is_err());
        assert!(RunInput::user("  ").validate().is_err());
        let input = RunInput::user("a").message(Role::Assistant, "b").message(Role::User, "c");
        assert_eq!(input.prompt(), "a\n\nc");
    }

    #[test]
    fn serde_round_trip() {
        let mut run = Run::new(SessionId::new(), RunInput::user("x"));
        run.transition(RunStatus::Running).unwrap();
        run.fail(Error::new(ErrorCode::ProviderError, "boom")).unwrap();
        let back: Run = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        assert_eq!(back, run);
    }
}
