//! The fake provider CLI (`asm-fake-cli`): replays a captured CLI run so adapters are tested as
//! real subprocesses.
//!
//! An adapter is pointed at the binary ([`path`]) as if it were `claude` / `codex` / `amp`, with
//! the environment variable [`SCRIPT_ENV`] naming a JSON [`FakeScript`]. The fake then:
//!
//! 1. writes its argv (without the program) as a JSON array to `argv_file`, its pid to
//!    `pid_file`, its environment to `env_file` and its stdin to `stdin_file` when asked;
//! 2. writes `stderr_file` (a fixture `.stderr`, byte for byte), then `stderr`, to stderr;
//! 3. prints the lines (fixture `.jsonl` first, **byte for byte**, then `lines`, then an
//!    oversized line if `big_line_bytes` is set), sleeping `line_delay_ms` before each;
//! 4. either hangs after `hang_after` lines until signalled, or exits with `exit_code` (or dies
//!    by `exit_signal`).
//!
//! A fixture file that cannot be read is a loud failure: the fake prints why to stderr and exits
//! with [`UNREADABLE_FIXTURE_EXIT`] before printing any stdout, and [`FakeScript::fixture`]
//! panics for a fixture that does not exist or has an unparseable `.exitcode`, so a test can
//! never pass by replaying nothing.
//!
//! **JSON-RPC mode** ([`FakeScript::jsonrpc`], or [`JSONRPC_ENV`] set in its environment): the
//! fake plays an agent that talks JSON-RPC over stdio (an ACP agent). stdin is not read to EOF
//! up front; it is read line by line while the script runs, each line appended to `stdin_file`
//! as it arrives. A scripted JSON-RPC **response** (an object with `id` and `result` or `error`
//! and no `method`) is printed only once a request with that `id` has arrived on stdin; a line
//! `{"asm_fake_await": "<method>"}` prints nothing and waits for a message with that method
//! (for example `session/cancel`), and `{"asm_fake_await": {"id": <id>}}` for any message with
//! that id (the client's answer to one of the fake's requests). So a captured exchange is replayed in both directions, in
//! turn. When stdin closes while the fake waits, it exits with `exit_code`.
//!
//! The same mode replays **Claude Code's stream-json control protocol** (captured in
//! `crates/asm-provider-claude/tests/fixtures/control/`): `{"asm_fake_await": {"type": "user"}}`
//! waits for a message of that `type`, `{"asm_fake_await": {"control_request": "interrupt"}}`
//! for a `control_request` with that `request.subtype`, and `{"asm_fake_await":
//! {"control_response": "<request_id>"}}` for the host's answer to the fake's control request
//! with that id.
//!
//! Signals follow `on_sigint` / `on_sigterm` ([`SignalAction`]): the default disposition (die by
//! the signal), ignore it (to test escalation), or print some lines and exit with a code (what
//! Claude Code does on SIGINT: partial message, `result`, exit 0).
//!
//! ```no_run
//! use asm_testkit::fake_cli::{self, FakeScript, SignalAction};
//! let script = FakeScript::fixture("claude_text").hang_after(1).on_sigint(SignalAction::exit(0));
//! let dir = tempfile::tempdir().unwrap();
//! let script_path = script.write_to(dir.path()).unwrap();
//! let program = fake_cli::path(); // run it with ASM_FAKE_CLI_SCRIPT=<script_path>
//! # let _ = (program, script_path);
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Environment variable holding the path of the script JSON.
pub const SCRIPT_ENV: &str = "ASM_FAKE_CLI_SCRIPT";
/// Environment variable overriding [`path`].
pub const PATH_ENV: &str = "ASM_FAKE_CLI";
/// Argument that makes the binary print [`PROTOCOL`] and exit (used by [`path`] to detect a
/// stale binary).
pub const VERSION_FLAG: &str = "--asm-fake-cli-version";
/// Version of the script format; bumped on every incompatible change.
pub const PROTOCOL: &str = "asm-fake-cli/3";
/// Environment variable that turns on JSON-RPC mode (see the [module docs](self)) whatever the
/// script says: what a JSON-RPC adapter's contract tests set, since the suite writes the
/// scripts.
pub const JSONRPC_ENV: &str = "ASM_FAKE_CLI_JSONRPC";
/// The key of a JSON-RPC mode line that waits for a method instead of printing.
pub const AWAIT_KEY: &str = "asm_fake_await";
/// Exit code of the fake when a file of its script (`stdout_file`, `stderr_file`) cannot be
/// read.
pub const UNREADABLE_FIXTURE_EXIT: i32 = 96;

/// What the fake does on a signal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SignalAction {
    /// The default disposition: die by the signal.
    #[default]
    Default,
    /// Ignore it.
    Ignore,
    /// Print `lines`, then exit with `code`.
    Exit {
        /// Exit code.
        code: i32,
        /// Lines printed first.
        #[serde(default)]
        lines: Vec<String>,
    },
}

impl SignalAction {
    /// Exit with `code` and print nothing.
    pub fn exit(code: i32) -> Self {
        SignalAction::Exit { code, lines: Vec::new() }
    }
}

/// A fake CLI run. See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FakeScript {
    /// File whose lines are printed first, byte for byte (a fixture `.jsonl`).
    pub stdout_file: Option<PathBuf>,
    /// Lines printed after `stdout_file`.
    pub lines: Vec<String>,
    /// Printed last: one line of this many `x` bytes.
    pub big_line_bytes: Option<usize>,
    /// File copied to stderr byte for byte before anything else (a fixture `.stderr`).
    pub stderr_file: Option<PathBuf>,
    /// Written to stderr (after `stderr_file`) before any stdout line.
    pub stderr: String,
    /// Exit code at the end.
    pub exit_code: i32,
    /// Die by this signal at the end instead of exiting (default disposition).
    pub exit_signal: Option<i32>,
    /// Delay before each line.
    pub line_delay_ms: u64,
    /// Hang (until signalled) after this many lines.
    pub hang_after: Option<usize>,
    /// SIGINT behaviour.
    pub on_sigint: SignalAction,
    /// SIGTERM behaviour.
    pub on_sigterm: SignalAction,
    /// Start a `sleep` grandchild in the same process group before the first line.
    pub spawn_grandchild: bool,
    /// Where to write argv (JSON array of strings, program excluded).
    pub argv_file: Option<PathBuf>,
    /// Where to write the pid.
    pub pid_file: Option<PathBuf>,
    /// Where to write the environment (JSON object).
    pub env_file: Option<PathBuf>,
    /// Where to copy stdin (read to EOF before anything else; in JSON-RPC mode appended line
    /// by line as it is read).
    pub stdin_file: Option<PathBuf>,
    /// JSON-RPC mode (see the [module docs](self)).
    pub jsonrpc: bool,
}

impl FakeScript {
    /// An empty script: no output, exit 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replays fixture `name` from [`fixtures_dir`]: `name.jsonl` (stdout), `name.stderr`,
    /// `name.exitcode` (a missing `.jsonl` / `.stderr` means no output there, a missing
    /// `.exitcode` means 0).
    ///
    /// # Panics
    /// When [`try_fixture`](Self::try_fixture) fails: none of the files exists, or the
    /// `.exitcode` cannot be read or parsed (a test-setup failure, never a silent empty run).
    pub fn fixture(name: &str) -> Self {
        Self::fixture_at(&fixtures_dir().join(name))
    }

    /// Replays the fixture files at `base` + `.jsonl` / `.stderr` / `.exitcode`.
    ///
    /// # Panics
    /// As [`fixture`](Self::fixture).
    pub fn fixture_at(base: &Path) -> Self {
        Self::try_fixture_at(base).unwrap_or_else(|e| panic!("fixture {}: {e}", base.display()))
    }

    /// [`fixture`](Self::fixture) without the panic.
    ///
    /// # Errors
    /// As [`try_fixture_at`](Self::try_fixture_at).
    pub fn try_fixture(name: &str) -> std::io::Result<Self> {
        Self::try_fixture_at(&fixtures_dir().join(name))
    }

    /// The script replaying the fixture files at `base`. The `.jsonl` and `.stderr` files are
    /// referenced, not read: the fake replays their bytes exactly when it runs (and fails loudly
    /// if it cannot read them then).
    ///
    /// # Errors
    /// [`std::io::ErrorKind::NotFound`] when none of the three files exists;
    /// [`std::io::ErrorKind::InvalidData`] for an `.exitcode` that is not an integer; any error
    /// reading the `.exitcode`.
    pub fn try_fixture_at(base: &Path) -> std::io::Result<Self> {
        let with = |ext: &str| {
            let mut p = base.as_os_str().to_owned();
            p.push(ext);
            PathBuf::from(p)
        };
        let (stdout, stderr, exit) = (with(".jsonl"), with(".stderr"), with(".exitcode"));
        if !stdout.exists() && !stderr.exists() && !exit.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no .jsonl, .stderr or .exitcode file for this fixture",
            ));
        }
        let exit_code = if exit.exists() {
            let text = std::fs::read_to_string(&exit)?;
            text.trim().parse().map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {text:?}: {e}", exit.display()))
            })?
        } else {
            0
        };
        Ok(Self {
            stdout_file: stdout.exists().then_some(stdout),
            stderr_file: stderr.exists().then_some(stderr),
            exit_code,
            ..Self::default()
        })
    }

    /// Sets the lines printed after the fixture.
    #[must_use]
    pub fn lines<I: IntoIterator<Item = S>, S: Into<String>>(mut self, lines: I) -> Self {
        self.lines = lines.into_iter().map(Into::into).collect();
        self
    }
    asm_core::builder_setters! {
        /// Sets stderr.
        fn stderr(stderr: impl Into<String>) { stderr = stderr.into() }
        /// Sets the exit code.
        fn exit_code(code: i32) { exit_code = code }
        /// Dies by `signal` at the end.
        fn exit_signal(signal: i32) { exit_signal = Some(signal) }
        /// Hangs after `n` lines until signalled.
        fn hang_after(n: usize) { hang_after = Some(n) }
        /// Sets the SIGINT behaviour.
        fn on_sigint(action: SignalAction) { on_sigint = action }
        /// Sets the SIGTERM behaviour.
        fn on_sigterm(action: SignalAction) { on_sigterm = action }
        /// Delay before each line.
        fn line_delay_ms(ms: u64) { line_delay_ms = ms }
        /// Prints an oversized line at the end.
        fn big_line(bytes: usize) { big_line_bytes = Some(bytes) }
    }
    /// Turns on JSON-RPC mode (see the [module docs](self)).
    #[must_use]
    pub fn jsonrpc(mut self) -> Self {
        self.jsonrpc = true;
        self
    }
    /// Starts a grandchild in the process group.
    #[must_use]
    pub fn spawn_grandchild(mut self) -> Self {
        self.spawn_grandchild = true;
        self
    }

    /// The stdout lines this script prints before any hang (fixture, then `lines`), as an
    /// adapter reads them: split at `\n`, a trailing `\r` removed, invalid UTF-8 replaced.
    ///
    /// # Errors
    /// Reading `stdout_file`.
    pub fn stdout_lines(&self) -> std::io::Result<Vec<String>> {
        let mut out: Vec<String> = match &self.stdout_file {
            Some(p) => std::fs::read(p)?
                .split_inclusive(|&b| b == b'\n')
                .map(|line| {
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    String::from_utf8_lossy(line).into_owned()
                })
                .collect(),
            None => Vec::new(),
        };
        out.extend(self.lines.iter().cloned());
        Ok(out)
    }

    /// The stderr this script writes (`stderr_file`, then `stderr`), invalid UTF-8 replaced.
    ///
    /// # Errors
    /// Reading `stderr_file`.
    pub fn stderr_text(&self) -> std::io::Result<String> {
        let mut text = match &self.stderr_file {
            Some(p) => String::from_utf8_lossy(&std::fs::read(p)?).into_owned(),
            None => String::new(),
        };
        text.push_str(&self.stderr);
        Ok(text)
    }

    /// The exact stdout bytes this script prints before any hang, one entry per line (each
    /// with its `\n`, except a fixture's last line when the file does not end with one and
    /// nothing follows it): the fixture's bytes unchanged, then `lines`, then the oversized line.
    ///
    /// # Errors
    /// Reading `stdout_file`.
    pub fn stdout_chunks(&self) -> std::io::Result<Vec<Vec<u8>>> {
        let mut chunks: Vec<Vec<u8>> = match &self.stdout_file {
            Some(p) => std::fs::read(p)?.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect(),
            None => Vec::new(),
        };
        let more = !self.lines.is_empty() || self.big_line_bytes.is_some();
        if more && let Some(last) = chunks.last_mut().filter(|c| !c.ends_with(b"\n")) {
            last.push(b'\n');
        }
        chunks.extend(self.lines.iter().map(|l| format!("{l}\n").into_bytes()));
        if let Some(n) = self.big_line_bytes {
            let mut big = vec![b'x'; n];
            big.push(b'\n');
            chunks.push(big);
        }
        Ok(chunks)
    }

    /// Writes the script into `dir` (setting `argv_file`, `pid_file`, `env_file` and
    /// `stdin_file` there unless already set) and returns the script path.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let mut script = self.clone();
        script.argv_file.get_or_insert_with(|| dir.join("argv.json"));
        script.pid_file.get_or_insert_with(|| dir.join("pid"));
        script.env_file.get_or_insert_with(|| dir.join("env.json"));
        script.stdin_file.get_or_insert_with(|| dir.join("stdin"));
        let path = dir.join("script.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&script)?)?;
        Ok(path)
    }
}

/// What a fake run recorded in its script directory.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FakeRecord {
    /// argv without the program.
    pub argv: Vec<String>,
    /// The pid (= process group id).
    pub pid: Option<i32>,
    /// The environment.
    pub env: serde_json::Map<String, serde_json::Value>,
    /// stdin contents.
    pub stdin: Option<String>,
}

impl FakeRecord {
    /// Reads the files [`FakeScript::write_to`] configured in `dir` (missing ones stay empty).
    pub fn read(dir: &Path) -> Self {
        let argv =
            std::fs::read(dir.join("argv.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let pid = std::fs::read_to_string(dir.join("pid")).ok().and_then(|s| s.trim().parse().ok());
        let env =
            std::fs::read(dir.join("env.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let stdin = std::fs::read_to_string(dir.join("stdin")).ok();
        Self { argv, pid, env, stdin }
    }
}

/// `crates/asm-testkit/fixtures/provider-cli`: the captured CLI runs (copied from
/// `shared/fixtures/provider-cli`; see `spec/provider-clis.md`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("provider-cli")
}

/// Names (without extension) of every fixture whose name starts with `prefix` (for example
/// `"claude_"`), sorted. A fixture is any base name with a `.jsonl`, `.stderr` or `.exitcode`.
pub fn fixture_names(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .filter_map(|n| {
            [".jsonl", ".stderr", ".exitcode"].iter().find_map(|ext| n.strip_suffix(ext).map(str::to_owned))
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Path of the `asm-fake-cli` binary, for tests of any crate.
///
/// Lookup order:
/// 1. the `ASM_FAKE_CLI` environment variable;
/// 2. `asm-fake-cli` in the profile directory of the running test executable
///    (`target/<profile>/`), which exists whenever `asm-testkit`'s binaries were built in
///    the same target dir (a workspace `cargo test`/`build`, or `-p asm-testkit` alongside),
///    if it answers [`VERSION_FLAG`] with [`PROTOCOL`];
/// 3. otherwise it is built once per process with
///    `cargo build -p asm-testkit --bin asm-fake-cli --target-dir <target>/asm-fake-cli`: a
///    separate target dir, so a running `cargo test` holding the main build lock cannot
///    deadlock it.
///
/// # Panics
/// When no binary can be found or built (a test-setup failure).
pub fn path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(locate).clone()
}

fn is_current(bin: &Path) -> bool {
    std::process::Command::new(bin)
        .arg(VERSION_FLAG)
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == PROTOCOL)
}

fn locate() -> PathBuf {
    if let Some(p) = std::env::var_os(PATH_ENV) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut profile_dir = exe.parent().map(Path::to_path_buf).expect("exe dir");
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    let candidate = profile_dir.join("asm-fake-cli");
    if candidate.exists() && is_current(&candidate) {
        return candidate;
    }
    let target_dir = profile_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| profile_dir.clone());
    let own_target = target_dir.join("asm-fake-cli");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "asm-testkit", "--bin", "asm-fake-cli", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&own_target)
        .status()
        .expect("running cargo to build asm-fake-cli");
    assert!(status.success(), "building asm-fake-cli failed");
    let built = own_target.join("debug").join("asm-fake-cli");
    assert!(built.exists(), "asm-fake-cli not found at {}", built.display());
    built
}
