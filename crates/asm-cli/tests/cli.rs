#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `asm` binary end to end, on a temporary `ASM_HOME` with the fake Claude CLI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use asm_testkit::fake_cli::{self, FakeRecord, FakeScript, SignalAction};
use serde_json::Value;

mod common;
use common::processes_with;

/// A temporary ASM_HOME with a config.toml pointing `claude` at the fake CLI.
struct Home {
    dir: tempfile::TempDir,
    /// The script the fake CLI plays (named in config.toml).
    script: Option<PathBuf>,
}

impl Home {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!("[providers.claude]\ncli = {:?}\n", fake_cli::path().display().to_string());
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Self { dir, script: None }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes the fake CLI play `script` (recording pid and argv in a sub directory).
    fn script(&mut self, script: &FakeScript) -> PathBuf {
        let fake_dir = self.path().join("fake");
        std::fs::create_dir_all(&fake_dir).unwrap();
        let path = script.write_to(&fake_dir).unwrap();
        let config = format!(
            "[providers.claude]\ncli = {:?}\nenv = {{ {} = {:?} }}\n",
            fake_cli::path().display().to_string(),
            fake_cli::SCRIPT_ENV,
            path.display().to_string()
        );
        std::fs::write(self.path().join("config.toml"), config).unwrap();
        self.script = Some(path);
        fake_dir
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_asm"));
        cmd.args(args)
            .env("ASM_HOME", self.path())
            .env_remove("ASM_STORE")
            .env_remove("ASM_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// Exactly one `error: [code] ...` line (and maybe a `hint:` line) on stderr.
fn assert_error(out: &Output, code: &str) {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 2, "one error line (and a hint) expected: {err:?}");
    assert!(lines[0].starts_with(&format!("error: [{code}] ")), "{err:?}");
    if let Some(hint) = lines.get(1) {
        assert!(hint.starts_with("hint: "), "{err:?}");
    }
    assert!(!err.contains("panicked"), "{err:?}");
}

fn run_json(home: &Home, prompt: &str) -> (Output, Vec<Value>) {
    let out = home.run(&["run", "--provider", "claude", "--json", prompt]);
    let lines = json_lines(&stdout(&out));
    (out, lines)
}

#[test]
fn run_json_prints_every_stored_event_and_the_inspection_commands_agree() {
    let mut home = Home::new();
    home.script(&FakeScript::fixture("claude_tool_use"));
    let (out, lines) = run_json(&home, "list the files");
    assert!(out.status.success(), "{out:?}");
    assert!(!lines.is_empty());
    let session = lines[0]["session_id"].as_str().unwrap().to_owned();
    for (i, line) in lines.iter().enumerate() {
        for key in ["session_id", "run_id", "sequence", "kind", "data", "timestamp"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(line["sequence"], i as u64 + 1, "gap-free sequences from 1: {lines:#?}");
        assert_eq!(line["session_id"], session.as_str());
    }
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "session_created");
    assert!(kinds.contains(&"run_started") && kinds.contains(&"tool_call_started"), "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "run_completed");
    let run = lines.last().unwrap()["run_id"].as_str().unwrap().to_owned();

    // sessions / show / events / transcript read the same store after the run.
    let sessions = json_lines(&stdout(&home.run(&["sessions", "--json"])));
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["id"], session.as_str());
    let show = home.run(&["show", &session, "--json"]);
    assert!(show.status.success(), "{show:?}");
    let show: Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(show["runs"][0]["id"], run.as_str());
    assert_eq!(show["runs"][0]["status"], "completed");
    let events = json_lines(&stdout(&home.run(&["events", &session, "--json"])));
    assert_eq!(events, lines, "`asm events --json` prints the lines `asm run --json` printed");
    let tools = json_lines(&stdout(&home.run(&["events", &session, "--json", "--kind", "tool_call_started"])));
    assert_eq!(tools.len(), kinds.iter().filter(|k| **k == "tool_call_started").count());
    let after = json_lines(&stdout(&home.run(&["events", &session, "--json", "--after", "2", "--limit", "3"])));
    assert_eq!(after.iter().map(|e| e["sequence"].as_u64().unwrap()).collect::<Vec<_>>(), vec![3, 4, 5]);
    let transcript = home.run(&["transcript", &session]);
    assert!(stdout(&transcript).contains("user: list the files"), "{transcript:?}");

    // export -> import into another store: the same events, sequences and ids.
    let file = home.path().join("export.jsonl");
    let export = home.run(&["export", &session, "-o", file.to_str().unwrap()]);
    assert!(export.status.success(), "{export:?}");
    let other = format!("redb:{}", home.path().join("other.redb").display());
    let import = home.run(&["--store", &other, "import", file.to_str().unwrap()]);
    assert!(import.status.success(), "{import:?}");
    let imported = json_lines(&stdout(&home.run(&["--store", &other, "events", &session, "--json"])));
    assert_eq!(imported, lines);
    let imported_show: Value =
        serde_json::from_str(&stdout(&home.run(&["--store", &other, "show", &session, "--json"]))).unwrap();
    assert_eq!(imported_show["runs"], show["runs"]);
    assert_eq!(imported_show["session"], show["session"]);
    assert_error(&home.run(&["--store", &other, "import", file.to_str().unwrap()]), "already_exists");
}

#[test]
fn readable_output_and_resume() {
    let mut home = Home::new();
    home.script(&FakeScript::fixture("claude_tool_use"));
    let out = home.run(&["run", "--provider", "claude", "hello"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    // The compact renderer: text as streamed, one line per tool call, usage and cost, the end.
    assert!(text.starts_with("r+claude\n>> "), "{text}");
    assert!(text.contains("\nt+Bash ") && text.contains("\nt-Bash tr:"), "{text}");
    assert!(text.contains("\ntk:200/24 $0.0016\nr-:end\n"), "{text}");
    let table = stdout(&home.run(&["sessions"]));
    assert!(table.lines().nth(1).is_some_and(|l| l.split_whitespace().nth(1) == Some("active")), "{table}");
    assert!(!text.contains('\x1b'), "no colour off a TTY: {text:?}");
    let session = text.lines().last().unwrap().split_whitespace().nth(1).unwrap().to_owned();
    assert!(session.starts_with("ses_"), "{text}");
    let resumed = home.run(&["resume", &session, "--json", "again"]);
    assert!(resumed.status.success(), "{resumed:?}");
    let lines = json_lines(&stdout(&resumed));
    let first = lines[0]["sequence"].as_u64().unwrap();
    assert!(first > 1, "resume prints only the new events");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["sequence"].as_u64().unwrap(), first + i as u64);
    }
    let show: Value = serde_json::from_str(&stdout(&home.run(&["show", &session, "--json"]))).unwrap();
    assert_eq!(show["runs"].as_array().unwrap().len(), 2);
}

#[test]
fn failures_print_one_error_line() {
    let home = Home::new();
    assert_error(&home.run(&["show", "ses_00000000000000000000000000000000"]), "session_not_found");
    assert_error(&home.run(&["events", "nonsense"]), "session_not_found");
    assert_error(&home.run(&["--store", "bogus:x", "sessions"]), "validation_error");
    assert_error(&home.run(&["--store", "redb:", "sessions"]), "validation_error");
    assert_error(&home.run(&["cancel", "run_00000000000000000000000000000000"]), "run_not_found");
    assert_error(&home.run(&["run", "--provider", "nope", "hi"]), "validation_error");
    assert_error(&home.run(&["run", "hi"]), "validation_error");
    let missing = home.path().join("missing.jsonl");
    assert_error(&home.run(&["import", missing.to_str().unwrap()]), "io_error");
    std::fs::write(home.path().join("bad.jsonl"), "not json\n").unwrap();
    assert_error(&home.run(&["import", home.path().join("bad.jsonl").to_str().unwrap()]), "invalid_format");
    // clap's own errors exit 2.
    assert_eq!(home.run(&["run"]).status.code(), Some(2));
    assert_eq!(home.run(&["--bogus-flag"]).status.code(), Some(2));
}

#[test]
fn failed_run_exits_1() {
    let mut home = Home::new();
    home.script(&FakeScript::new().stderr("boom").exit_code(3));
    let out = home.run(&["run", "--provider", "claude", "hi"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.starts_with("error: ["), "{err}");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process {} did not exit within {within:?}", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

#[test]
fn ctrl_c_cancels_the_run_and_stops_the_provider() {
    let mut home = Home::new();
    let fake_dir = home.script(&FakeScript::fixture("claude_text").hang_after(1).on_sigint(SignalAction::Ignore));
    let mut child =
        home.cmd(&["run", "--provider", "claude", "--json", "wait"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    // Wait until the run is under way (the provider has started and printed its first line).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "asm ended early: {lines:?}");
        let value: Value = serde_json::from_str(&line).unwrap();
        let kind = value["kind"].as_str().unwrap().to_owned();
        lines.push(value);
        if kind == "run_started" {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not start: {lines:?}");
    }
    // The provider writes its pid before it prints (and then hangs).
    let provider_pid = loop {
        if let Some(pid) = FakeRecord::read(&fake_dir).pid {
            break pid;
        }
        assert!(Instant::now() < deadline, "the provider did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    send(child.id(), rustix::process::Signal::INT);
    for line in reader.lines() {
        lines.push(serde_json::from_str(&line.unwrap()).unwrap());
    }
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    let last = lines.last().unwrap();
    assert_eq!(last["kind"], "run_cancelled", "{lines:#?}");
    let session = last["session_id"].as_str().unwrap();
    let stored = json_lines(&stdout(&home.run(&["events", session, "--json", "--kind", "run_cancelled"])));
    assert_eq!(stored.len(), 1);
    // The provider's process group is gone.
    let pid = rustix::process::Pid::from_raw(provider_pid).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rustix::process::test_kill_process(pid).is_ok() {
        assert!(Instant::now() < deadline, "provider process {provider_pid} is still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_store_held_by_asm_serve_is_named_in_the_error() {
    let home = Home::new();
    let mut serve = home.cmd(&["serve", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(serve.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap().to_owned();
    assert!(home.path().join("serve.json").exists(), "serve.json written");
    let out = home.run(&["sessions"]);
    assert_error(&out, "store_locked");
    let expected = format!("held by asm serve (pid {} at http://{addr})", serve.id());
    assert!(stderr(&out).contains(&expected), "{} lacks {expected}", stderr(&out));
    send(serve.id(), rustix::process::Signal::TERM);
    let status = wait_exit(&mut serve, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert!(!home.path().join("serve.json").exists(), "serve.json removed on exit");
    assert!(home.run(&["sessions"]).status.success(), "the store is free again");
}

#[test]
fn memory_store_and_completions() {
    let home = Home::new();
    let out = home.run(&["--store", "memory:", "sessions", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "");
    let bash = home.run(&["completions", "bash"]);
    assert!(bash.status.success());
    assert!(stdout(&bash).contains("asm"), "a completion script");
}

#[test]
fn shell_provider_runs_and_fails_by_exit_code() {
    let home = Home::new();
    let out = home.run(&["run", "--provider", "shell", "--json", "echo", "hello", "from", "shell"]);
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&stdout(&out));
    let streamed: String = lines
        .iter()
        .filter(|l| l["kind"] == "message_streamed")
        .filter_map(|l| l["data"]["delta"].as_str().or_else(|| l["data"]["content"].as_str()))
        .collect();
    assert!(streamed.contains("hello from shell"), "{lines:#?}");
    assert_eq!(lines.last().unwrap()["kind"], "run_completed");
    let failed = home.run(&["run", "--provider", "shell", "exit 3"]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(stderr(&failed).starts_with("error: ["), "{}", stderr(&failed));
}

#[test]
fn ctrl_c_cancels_a_shell_sleep_and_leaves_no_child() {
    let home = Home::new();
    // A unique duration marks the child so the test can look for it.
    let duration = format!("30.{}", std::process::id());
    let prompt = format!("sleep {duration}");
    let mut child =
        home.cmd(&["run", "--provider", "shell", "--json", &prompt]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "asm ended early");
        if line.contains("\"run_started\"") {
            break;
        }
    }
    while processes_with(&duration).is_empty() {
        assert!(Instant::now() < deadline, "the sleep did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    send(child.id(), rustix::process::Signal::INT);
    let rest: Vec<Value> = reader.lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    assert_eq!(rest.last().unwrap()["kind"], "run_cancelled", "{rest:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&duration).is_empty() {
        assert!(Instant::now() < deadline, "sleep {duration} is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The session id of a finished `asm run --json`.
fn session_of(lines: &[Value]) -> String {
    lines[0]["session_id"].as_str().unwrap().to_owned()
}

#[test]
fn fork_follow_and_cancel() {
    let home = Home::new();
    let out = home.run(&["run", "--provider", "shell", "--json", "echo one"]);
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&stdout(&out));
    let session = session_of(&lines);
    let run = lines.last().unwrap()["run_id"].as_str().unwrap().to_owned();

    // fork prints the new session id first; the fork can run again.
    let fork = home.run(&["fork", &session, "--run", &run]);
    assert!(fork.status.success(), "{fork:?}");
    let forked = stdout(&fork).lines().next().unwrap().to_owned();
    assert!(forked.starts_with("ses_") && forked != session, "{forked}");
    let show: Value = serde_json::from_str(&stdout(&home.run(&["show", &forked, "--json"]))).unwrap();
    assert_eq!(show["session"]["parent_session_id"], session.as_str());
    let again = home.run(&["resume", &forked, "--provider", "shell", "echo two"]);
    assert!(again.status.success(), "{again:?}");
    assert_error(&home.run(&["fork", &session, "--run", "run_00000000000000000000000000000000"]), "run_not_found");

    // --follow with --limit ends after that many events.
    let follow = home.run(&["events", &session, "--follow", "--json", "--limit", "3"]);
    assert!(follow.status.success(), "{follow:?}");
    assert_eq!(json_lines(&stdout(&follow)).len(), 3);

    // --follow streams until Ctrl-C, which ends it with status 0.
    let mut child = home.cmd(&["events", &session, "--follow", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines.len() {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "follow printed the stored events");
    }
    send(child.id(), rustix::process::Signal::INT);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());

    // A finished run cannot be cancelled.
    assert_error(&home.run(&["cancel", &run]), "invalid_transition");
    assert_error(&home.run(&["cancel", "nonsense"]), "run_not_found");
}

#[test]
fn config_defaults_and_flags_win() {
    let home = Home::new();
    let config_store = home.path().join("from-config.redb");
    std::fs::write(
        home.path().join("config.toml"),
        format!("provider = \"shell\"\nstore = \"redb:{}\"\n", config_store.display()),
    )
    .unwrap();
    // The config's provider and store are the defaults.
    let out = home.run(&["run", "--json", "echo configured"]);
    assert!(out.status.success(), "{out:?}");
    assert!(config_store.exists(), "the config's store was used");
    assert!(!home.path().join("sessions.redb").exists());
    let session = session_of(&json_lines(&stdout(&out)));
    // ASM_STORE and --store win over the config.
    let env_store = format!("redb:{}", home.path().join("from-env.redb").display());
    let listed = home.cmd(&["sessions", "--json"]).env("ASM_STORE", &env_store).output().unwrap();
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(stdout(&listed), "", "another store, empty");
    let flag = home.cmd(&["--store", "memory:", "show", &session]).env("ASM_STORE", &env_store).output().unwrap();
    assert_error(&flag, "session_not_found");
    assert!(home.run(&["show", &session]).status.success());
    // A broken config is one error line.
    std::fs::write(home.path().join("config.toml"), "provider = 3\n").unwrap();
    assert_error(&home.run(&["sessions"]), "config_error");
    std::fs::write(home.path().join("config.toml"), "unknown_key = true\n").unwrap();
    assert_error(&home.run(&["sessions"]), "config_error");
}

/// One HTTP/1.1 request on loopback; returns (status, JSON body).
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (_, payload) = response.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(payload).unwrap_or(Value::Null))
}

#[test]
fn serve_runs_the_shell_provider_and_the_store_keeps_it() {
    let home = Home::new();
    let mut serve = home.cmd(&["serve", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap().to_owned();
    let (status, session) = http(&addr, "POST", "/v1/sessions", Some(r#"{"agent_id":"web","provider":"shell"}"#));
    assert_eq!(status, 201, "{session}");
    let session = session["id"].as_str().unwrap().to_owned();
    let (status, accepted) =
        http(&addr, "POST", &format!("/v1/sessions/{session}/runs"), Some(r#"{"input":"echo via-http"}"#));
    assert_eq!(status, 202, "{accepted}");
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, run) = http(&addr, "GET", &format!("/v1/runs/{run}"), None);
        if run["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not complete: {run}");
        std::thread::sleep(Duration::from_millis(50));
    }
    send(serve.id(), rustix::process::Signal::TERM);
    assert!(wait_exit(&mut serve, Duration::from_secs(30)).success());
    let events = json_lines(&stdout(&home.run(&["events", &session, "--json", "--kind", "message_streamed"])));
    let text: String = events.iter().filter_map(|e| e["data"]["delta"].as_str()).collect();
    assert!(text.contains("via-http"), "{events:#?}");
}
