//! What one run executes ([`ShellInvocation`]): the run's input and per-run options.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use asm_core::{Error, ErrorCode, JsonMap, Result, Role};
use asm_ports::ExecuteRequest;

/// The per-run option keys the shell adapter reads from
/// [`ExecuteRequest::options`](asm_ports::ExecuteRequest::options).
///
/// | key | JSON value | effect |
/// |---|---|---|
/// | `command` | non-empty string | run this program directly (argv form, no shell) instead of the input text |
/// | `args` | array of strings / numbers / booleans | its arguments (only with `command`) |
/// | `cwd` | path of a directory | working directory of this run |
/// | `env` | object of strings | variables added to the adapter's environment |
/// | `timeout_ms` | integer ≥ 1 | time limit of this run, instead of the adapter's |
///
/// Anything else is a [`ErrorCode::ValidationError`] with `details.option` and
/// `details.reason` (`unknown_option` / `invalid_option`), before anything runs.
pub const RUN_OPTIONS: &[&str] = &["command", "args", "cwd", "env", "timeout_ms"];

/// How a command is run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShellForm {
    /// `<shell> -c <line>`.
    Shell(String),
    /// The program (path or PATH name) with its arguments, without a shell.
    Argv {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

/// What one run executes, parsed from an [`ExecuteRequest`] ([`ShellInvocation::from_request`]).
///
/// Input formats (spec 9.5):
/// * text: the run's user messages (all messages when none is from the user) joined by `\n`,
///   trimmed, run by the shell ([`ShellForm::Shell`]);
/// * text that is a JSON object with a non-empty `command` (and optional `args`, `cwd`, `env`,
///   `timeout_ms`, the keys of [`RUN_OPTIONS`]): the argv form ([`ShellForm::Argv`]); a JSON
///   object without `command` is `validation_error` "input.command is required";
/// * the per-run option `command` (with `args`): the argv form, whatever the text.
///
/// The transcript of earlier runs is never replayed (it is not a command).
///
/// ```
/// use asm_core::{Run, RunInput, Session};
/// use asm_ports::ExecuteRequest;
/// use asm_provider_shell::{ShellForm, ShellInvocation};
/// let session = Session::new("agent").unwrap();
/// let run = |text: &str| ExecuteRequest::new(session.clone(), Run::new(session.id.clone(), RunInput::user(text)));
/// let shell = ShellInvocation::from_request(&run("  echo hello \n"))?;
/// assert_eq!(shell.form, ShellForm::Shell("echo hello".into()));
/// let argv = ShellInvocation::from_request(&run(r#"{"command": "ls", "args": ["-l", 2]}"#))?;
/// assert_eq!(argv.form, ShellForm::Argv { command: "ls".into(), args: vec!["-l".into(), "2".into()] });
/// assert!(ShellInvocation::from_request(&run(r#"{"prompt": "ls"}"#)).is_err());
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShellInvocation {
    /// What runs.
    pub form: ShellForm,
    /// Working directory of this run (else the adapter's).
    pub cwd: Option<PathBuf>,
    /// Variables added to the adapter's environment.
    pub env: Vec<(String, String)>,
    /// Time limit of this run (else the adapter's).
    pub timeout: Option<Duration>,
}

fn option_error(option: &str, reason: &str, message: impl Into<String>) -> Error {
    Error::new(ErrorCode::ValidationError, message).with_detail("option", option).with_detail("reason", reason)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl ShellInvocation {
    /// Parses `request` (see the type docs).
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`]: empty input, a JSON object without `command`, unknown or
    /// ill-typed options.
    pub fn from_request(request: &ExecuteRequest) -> Result<Self> {
        let mut invocation = Self { form: ShellForm::Shell(String::new()), cwd: None, env: Vec::new(), timeout: None };
        invocation.apply(&request.options, "option")?;
        if matches!(invocation.form, ShellForm::Argv { .. }) {
            return Ok(invocation);
        }
        let text = input_text(request);
        let text = text.trim();
        if text.starts_with('{')
            && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text)
        {
            if map.get("command").and_then(Value::as_str).is_none_or(|c| c.trim().is_empty()) {
                return Err(Error::new(ErrorCode::ValidationError, "input.command is required")
                    .with_detail("reason", "missing_command"));
            }
            invocation.apply(&map, "input")?;
            return Ok(invocation);
        }
        if text.is_empty() {
            return Err(
                Error::new(ErrorCode::ValidationError, "the shell input is empty").with_detail("reason", "empty_input")
            );
        }
        invocation.form = ShellForm::Shell(text.to_owned());
        Ok(invocation)
    }

    fn apply(&mut self, map: &JsonMap, what: &str) -> Result<()> {
        if let Some(key) = map.keys().find(|k| !RUN_OPTIONS.contains(&k.as_str())) {
            return Err(option_error(key, "unknown_option", format!("unknown {what} key {key:?}"))
                .with_detail("known", RUN_OPTIONS.to_vec()));
        }
        let invalid =
            |key: &str, expected: &str| option_error(key, "invalid_option", format!("{what} {key} must be {expected}"));
        if let Some(value) = map.get("command").filter(|v| !v.is_null()) {
            let command = value
                .as_str()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| invalid("command", "a non-empty string"))?;
            let args = match map.get("args") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| scalar_text(v).ok_or_else(|| invalid("args", "a list of strings")))
                    .collect::<Result<_>>()?,
                Some(_) => return Err(invalid("args", "a list of strings")),
            };
            self.form = ShellForm::Argv { command: command.to_owned(), args };
        } else if map.get("args").is_some_and(|v| !v.is_null()) {
            return Err(invalid("args", "given with a command"));
        }
        if let Some(value) = map.get("cwd").filter(|v| !v.is_null()) {
            let cwd =
                value.as_str().filter(|c| !c.trim().is_empty()).ok_or_else(|| invalid("cwd", "a directory path"))?;
            self.cwd = Some(PathBuf::from(cwd));
        }
        if let Some(value) = map.get("env").filter(|v| !v.is_null()) {
            let vars = value.as_object().ok_or_else(|| invalid("env", "an object of strings"))?;
            for (k, v) in vars {
                let v = scalar_text(v).ok_or_else(|| invalid("env", "an object of strings"))?;
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(invalid("env", "an object whose keys are variable names"));
                }
                self.env.push((k.clone(), v));
            }
        }
        if let Some(value) = map.get("timeout_ms").filter(|v| !v.is_null()) {
            let ms = value.as_u64().filter(|n| *n > 0).ok_or_else(|| invalid("timeout_ms", "a positive integer"))?;
            self.timeout = Some(Duration::from_millis(ms));
        }
        Ok(())
    }

    /// The command as one display string: the shell line, or the program and its arguments.
    pub fn display(&self) -> String {
        match &self.form {
            ShellForm::Shell(line) => line.clone(),
            ShellForm::Argv { command, args } => {
                std::iter::once(command.as_str()).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
            }
        }
    }
}

fn input_text(request: &ExecuteRequest) -> String {
    let messages = &request.run.input.messages;
    let user: Vec<&str> = messages.iter().filter(|m| m.role == Role::User).map(|m| m.content.as_str()).collect();
    if user.is_empty() {
        messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
    } else {
        user.join("\n")
    }
}
