//! What to run: [`CliCommand`], its environment [`CliEnv`] and its limits.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use asm_core::{Error, ErrorCode, ProviderError, ProviderErrorKind, ProviderName};

/// Variables [`CliEnv::minimal`] inherits from the parent process when they are set.
pub const DEFAULT_INHERITED_ENV: &[&str] =
    &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TMPDIR", "TZ", "SHELL"];

/// The environment of a provider process. It is always passed explicitly: the child starts
/// from an empty environment, gets the inherited variables that are set in this process, then
/// the explicit ones (which win).
///
/// **Credentials.** A CLI adapter names the variables its provider reads credentials from
/// (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, `AMP_API_KEY`, ...; each provider crate documents
/// its list). When [`pass_auth`](Self::pass_auth) is on, which [`minimal`](Self::minimal) sets,
/// those variables are inherited too ([`with_auth_vars`](Self::with_auth_vars)), so a key set in
/// this process reaches the CLI. [`empty`](Self::empty) inherits nothing, credentials included;
/// `.pass_auth(false)` turns the pass-through off. `Debug` never prints the value of a variable
/// whose name looks like a secret ([`is_secret_name`]).
///
/// ```
/// use asm_provider_cli::CliEnv;
/// let env = CliEnv::empty().set("ANTHROPIC_API_KEY", "sk-test").set_all([("DISABLE_TELEMETRY", "1")]);
/// let vars = env.resolve();
/// assert!(vars.iter().any(|(k, v)| k == "ANTHROPIC_API_KEY" && v == "sk-test"));
/// assert!(vars.iter().all(|(k, _)| k != "PATH")); // nothing inherited
/// assert!(!format!("{env:?}").contains("sk-test")); // secrets are not printed
///
/// // minimal(): PATH, HOME, locale, ... and the provider's credential variables.
/// let env = CliEnv::minimal().with_auth_vars(&["ANTHROPIC_API_KEY"]);
/// assert!(env.inherit.iter().any(|n| n == "ANTHROPIC_API_KEY"));
/// let env = CliEnv::minimal().pass_auth(false).with_auth_vars(&["ANTHROPIC_API_KEY"]);
/// assert!(!env.inherit.iter().any(|n| n == "ANTHROPIC_API_KEY"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CliEnv {
    /// Names inherited from this process when set.
    pub inherit: Vec<String>,
    /// Explicit variables (win over inherited ones).
    pub vars: BTreeMap<String, String>,
    /// Whether the provider's credential variables are inherited as well (see the type docs).
    pub pass_auth: bool,
}

impl CliEnv {
    /// Nothing inherited (credentials neither), nothing set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Inherits [`DEFAULT_INHERITED_ENV`] (PATH, HOME, locale, ...) and the provider's
    /// credential variables ([`pass_auth`](Self::pass_auth) on).
    pub fn minimal() -> Self {
        Self {
            inherit: DEFAULT_INHERITED_ENV.iter().map(|s| (*s).to_owned()).collect(),
            vars: BTreeMap::new(),
            pass_auth: true,
        }
    }

    /// Also inherits `name`.
    #[must_use]
    pub fn inherit(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !self.inherit.contains(&name) {
            self.inherit.push(name);
        }
        self
    }

    /// Sets `name` to `value`.
    #[must_use]
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Sets every `(name, value)` of `vars`.
    #[must_use]
    pub fn set_all<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.vars.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    asm_core::builder_setters! {
        /// Whether the provider's credential variables are inherited (see the type docs).
        fn pass_auth(on: bool) { pass_auth = on }
    }

    /// This environment with the credential variables `names` inherited when
    /// [`pass_auth`](Self::pass_auth) is on (an explicit value still wins), as is otherwise.
    #[must_use]
    pub fn with_auth_vars(&self, names: &[&str]) -> Self {
        let mut env = self.clone();
        if env.pass_auth {
            for name in names {
                env = env.inherit(*name);
            }
        }
        env
    }

    /// The variables the child gets, inherited first, explicit ones overriding.
    pub fn resolve(&self) -> Vec<(OsString, OsString)> {
        let mut out: BTreeMap<OsString, OsString> = BTreeMap::new();
        for name in &self.inherit {
            if let Some(value) = std::env::var_os(name) {
                out.insert(OsString::from(name), value);
            }
        }
        for (k, v) in &self.vars {
            out.insert(OsString::from(k), OsString::from(v));
        }
        out.into_iter().collect()
    }

    /// The PATH the child will see (explicit, else inherited, else none).
    pub fn path_var(&self) -> Option<OsString> {
        if let Some(p) = self.vars.get("PATH") {
            return Some(OsString::from(p));
        }
        if self.inherit.iter().any(|n| n == "PATH") { std::env::var_os("PATH") } else { None }
    }
}

/// Whether a variable name looks like it holds a secret (contains `KEY`, `TOKEN`, `SECRET`,
/// `PASSWORD` or `AUTH`, in any case): [`CliEnv`]'s `Debug` prints `<redacted>` for its value.
///
/// ```
/// assert!(asm_provider_cli::is_secret_name("AMP_API_KEY"));
/// assert!(asm_provider_cli::is_secret_name("anthropic_auth_token"));
/// assert!(!asm_provider_cli::is_secret_name("HOME"));
/// ```
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH"].iter().any(|n| upper.contains(n))
}

impl fmt::Debug for CliEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vars: BTreeMap<&str, &str> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_name(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("CliEnv")
            .field("inherit", &self.inherit)
            .field("vars", &vars)
            .field("pass_auth", &self.pass_auth)
            .finish()
    }
}

/// Bounds and timings of one provider process.
///
/// ```
/// use asm_provider_cli::CliLimits;
/// let limits = CliLimits::default();
/// assert_eq!(limits.max_line_bytes, 16 * 1024 * 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CliLimits {
    /// Longest stdout line accepted; a longer one is a parse error and stops the process.
    pub max_line_bytes: usize,
    /// Size of the stderr ring buffer (the newest bytes are kept).
    pub stderr_ring_bytes: usize,
    /// How long to wait after SIGINT before SIGTERM.
    pub interrupt_grace: Duration,
    /// How long to wait after SIGTERM before SIGKILL.
    pub terminate_grace: Duration,
    /// How long to wait for the process to be reaped after SIGKILL.
    pub kill_wait: Duration,
}

impl CliLimits {
    asm_core::builder_setters! {
        /// Sets [`max_line_bytes`](Self::max_line_bytes).
        fn max_line_bytes(bytes: usize) { max_line_bytes = bytes }
    }
    /// Sets the two grace periods of the SIGINT → SIGTERM → SIGKILL escalation.
    #[must_use]
    pub fn graces(mut self, interrupt: Duration, terminate: Duration) -> Self {
        self.interrupt_grace = interrupt;
        self.terminate_grace = terminate;
        self
    }
    asm_core::builder_setters! {
        /// Sets [`stderr_ring_bytes`](Self::stderr_ring_bytes).
        fn stderr_ring_bytes(bytes: usize) { stderr_ring_bytes = bytes }
    }
}

impl Default for CliLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 16 * 1024 * 1024,
            stderr_ring_bytes: 64 * 1024,
            interrupt_grace: Duration::from_secs(2),
            terminate_grace: Duration::from_secs(2),
            kill_wait: Duration::from_secs(2),
        }
    }
}

/// One provider CLI invocation: program, argv (without the program), environment, working
/// directory and optional stdin bytes. Spawned by [`CliProcess::spawn`](crate::CliProcess::spawn)
/// without a shell.
///
/// ```
/// use asm_core::ProviderName;
/// use asm_provider_cli::{CliCommand, CliEnv};
/// let cmd = CliCommand::new(ProviderName::Claude, "claude")
///     .args(["-p", "hello", "--output-format", "stream-json", "--verbose"])
///     .env(CliEnv::minimal().set("DISABLE_TELEMETRY", "1"));
/// assert_eq!(cmd.args.len(), 5);
/// assert!(cmd.stdin_input.is_none()); // stdin is /dev/null
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CliCommand {
    /// Which provider this is (for error attribution).
    pub provider: ProviderName,
    /// A path (contains `/`) or a name looked up in the child's PATH.
    pub program: PathBuf,
    /// The arguments.
    pub args: Vec<OsString>,
    /// The environment.
    pub env: CliEnv,
    /// Working directory; `None` inherits this process's.
    pub cwd: Option<PathBuf>,
    /// Bytes written to stdin, which is then closed; `None` means stdin is `/dev/null` (unless
    /// [`stdin_pipe`](Self::stdin_pipe)).
    pub stdin_input: Option<Vec<u8>>,
    /// Keep stdin open as a pipe the caller writes to
    /// ([`CliProcess::take_stdin`](crate::CliProcess::take_stdin)): for protocols that talk both
    /// ways over stdio (JSON-RPC agents). Ignored when [`stdin_input`](Self::stdin_input) is set.
    pub stdin_pipe: bool,
    /// Bounds and timings.
    pub limits: CliLimits,
}

impl CliCommand {
    /// `program` with no arguments, an empty environment and default limits.
    pub fn new(provider: ProviderName, program: impl Into<PathBuf>) -> Self {
        Self {
            provider,
            program: program.into(),
            args: Vec::new(),
            env: CliEnv::empty(),
            cwd: None,
            stdin_input: None,
            stdin_pipe: false,
            limits: CliLimits::default(),
        }
    }
    asm_core::builder_setters! {
        /// Adds one argument.
        fn arg(arg: impl Into<OsString>) { args.push(arg.into()) }
    }
    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    asm_core::builder_setters! {
        /// Sets the environment.
        fn env(env: CliEnv) { env = env }
        /// Sets the working directory.
        fn cwd(cwd: impl Into<PathBuf>) { cwd = Some(cwd.into()) }
        /// Pipes these bytes to stdin (then closes it).
        fn stdin_input(input: impl Into<Vec<u8>>) { stdin_input = Some(input.into()) }
    }
    /// Keeps stdin open as a pipe (see [`stdin_pipe`](Self::stdin_pipe)); take its write end
    /// with [`CliProcess::take_stdin`](crate::CliProcess::take_stdin).
    ///
    /// ```
    /// use asm_core::ProviderName;
    /// use asm_provider_cli::CliCommand;
    /// let cmd = CliCommand::new(ProviderName::Unknown, "agent").stdin_pipe();
    /// assert!(cmd.stdin_pipe);
    /// ```
    #[must_use]
    pub fn stdin_pipe(mut self) -> Self {
        self.stdin_pipe = true;
        self
    }
    asm_core::builder_setters! {
        /// Sets the limits.
        fn limits(limits: CliLimits) { limits = limits }
    }

    /// Resolves [`program`](Self::program) like [`resolve_program`] with this command's PATH.
    ///
    /// # Errors
    /// See [`resolve_program`].
    pub fn resolve_program(&self) -> asm_core::Result<PathBuf> {
        resolve_program(self.provider, &self.program, self.env.path_var().as_deref())
    }
}

/// Finds the executable: a `program` containing `/` must be an executable file; a bare name is
/// searched in `path_var` (a `PATH`-style list; `None` falls back to this process's `PATH`).
/// No shell is involved.
///
/// # Errors
/// [`ErrorCode::ProviderError`] with [`ProviderErrorKind::CliNotFound`]. A missing binary is a
/// configuration problem, so it is deliberately *not* the retryable
/// [`ErrorCode::ProviderUnavailable`].
///
/// ```
/// use asm_core::{ErrorCode, ProviderErrorKind, ProviderName};
/// use asm_provider_cli::resolve_program;
/// assert!(resolve_program(ProviderName::Claude, "sh".as_ref(), Some("/bin:/usr/bin".as_ref())).is_ok());
/// let err = resolve_program(ProviderName::Claude, "no-such-cli-xyz".as_ref(), Some("/bin".as_ref())).unwrap_err();
/// assert_eq!(err.code(), ErrorCode::ProviderError);
/// assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::CliNotFound);
/// ```
pub fn resolve_program(provider: ProviderName, program: &Path, path_var: Option<&OsStr>) -> asm_core::Result<PathBuf> {
    let not_found = |detail: String| {
        let pe = ProviderError::new(provider, ProviderErrorKind::CliNotFound, detail.clone());
        Error::new(ErrorCode::ProviderError, detail).with_provider_error(pe)
    };
    if program.as_os_str().is_empty() {
        return Err(not_found("provider CLI path is empty".to_owned()));
    }
    if program.components().count() > 1 || program.is_absolute() {
        return if is_executable(program) {
            Ok(program.to_path_buf())
        } else {
            Err(not_found(format!("provider CLI not found or not executable: {}", program.display())))
        };
    }
    let fallback = std::env::var_os("PATH");
    let path_var = path_var.or(fallback.as_deref());
    if let Some(paths) = path_var {
        for dir in std::env::split_paths(paths) {
            let candidate = dir.join(program);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(not_found(format!("provider CLI {:?} not found in PATH", program.display().to_string())))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
