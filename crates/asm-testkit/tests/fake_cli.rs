#![allow(clippy::unwrap_used)]
//! The fake provider CLI replays fixtures, records argv and reacts to signals as scripted.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use asm_testkit::fake_cli::{self, FakeRecord, FakeScript, SignalAction};

const BIN: &str = env!("CARGO_BIN_EXE_asm-fake-cli");

fn wait_bounded(child: &mut std::process::Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "fake CLI did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn path_finds_the_current_binary() {
    let found = fake_cli::path();
    let out = Command::new(&found).arg(fake_cli::VERSION_FLAG).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fake_cli::PROTOCOL);
}

#[test]
fn replays_a_fixture_and_records_argv() {
    let dir = tempfile::tempdir().unwrap();
    let script = FakeScript::fixture("claude_resume_bad");
    let path = script.write_to(dir.path()).unwrap();
    let out = Command::new(BIN)
        .args(["-p", "hi there", "--resume", "x"])
        .env(fake_cli::SCRIPT_ENV, &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let expected = std::fs::read_to_string(fake_cli::fixtures_dir().join("claude_resume_bad.jsonl")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        std::fs::read_to_string(fake_cli::fixtures_dir().join("claude_resume_bad.stderr")).unwrap()
    );
    assert_eq!(out.status.code(), Some(1));
    let record = FakeRecord::read(dir.path());
    assert_eq!(record.argv, ["-p", "hi there", "--resume", "x"]);
    assert!(record.pid.is_some());
    assert_eq!(record.env.get(fake_cli::SCRIPT_ENV).and_then(|v| v.as_str()), Some(path.to_str().unwrap()));
}

#[test]
fn every_fixture_is_listed() {
    let claude = fake_cli::fixture_names("claude_");
    assert!(claude.len() >= 26, "{claude:?}");
    assert!(claude.contains(&"claude_bypass_as_root".to_owned())); // stderr-only fixture
    assert!(!fake_cli::fixture_names("codex_").is_empty());
    assert!(!fake_cli::fixture_names("amp_").is_empty());
}

fn hang(script: &FakeScript, signal: rustix::process::Signal) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = script.write_to(dir.path()).unwrap();
    let mut child =
        Command::new(BIN).env(fake_cli::SCRIPT_ENV, &path).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while FakeRecord::read(dir.path()).pid.is_none() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    // The handlers are installed before the pid file is written.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
    let status = wait_bounded(&mut child);
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    (status, out)
}

#[test]
fn hangs_until_signalled_then_exits_as_scripted() {
    let script = FakeScript::new()
        .lines(["one", "two", "never"])
        .hang_after(2)
        .on_sigint(SignalAction::Exit { code: 0, lines: vec!["bye".into()] });
    let (status, out) = hang(&script, rustix::process::Signal::INT);
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "one\ntwo\nbye\n");

    let (status, _) = hang(&FakeScript::new().hang_after(0), rustix::process::Signal::TERM);
    assert_eq!(status.signal(), Some(15));
}

#[test]
fn exit_signal_and_big_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = FakeScript::new().big_line(100_000).exit_signal(9).write_to(dir.path()).unwrap();
    let out = Command::new(BIN).env(fake_cli::SCRIPT_ENV, &path).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.stdout.len(), 100_001);
    assert_eq!(out.status.signal(), Some(9));
}

/// Writes fixture files `name.*` into `dir` and returns the base path.
fn write_fixture(
    dir: &std::path::Path,
    name: &str,
    stdout: &[u8],
    stderr: Option<&[u8]>,
    exit: Option<&str>,
) -> PathBuf {
    let base = dir.join(name);
    std::fs::write(base.with_extension("jsonl"), stdout).unwrap();
    if let Some(stderr) = stderr {
        std::fs::write(base.with_extension("stderr"), stderr).unwrap();
    }
    if let Some(exit) = exit {
        std::fs::write(base.with_extension("exitcode"), exit).unwrap();
    }
    base
}

fn replay(script: &FakeScript) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = script.write_to(dir.path()).unwrap();
    Command::new(BIN).env(fake_cli::SCRIPT_ENV, &path).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn a_fixture_is_replayed_byte_for_byte_even_with_invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let stdout: &[u8] = b"{\"type\":\"system\"}\n\xff{\"type\":\"assistant\"}\r\n\n  \nlast line without newline";
    let stderr: &[u8] = b"warning: \xfe odd byte\n";
    let base = write_fixture(dir.path(), "bytes", stdout, Some(stderr), Some("3\n"));
    let out = replay(&FakeScript::fixture_at(&base));
    assert_eq!(out.stdout, stdout, "stdout must be the fixture's bytes");
    assert_eq!(out.stderr, stderr, "stderr must be the fixture's bytes");
    assert_eq!(out.status.code(), Some(3));

    // Lines appended after a fixture without a final newline start on a line of their own.
    let out = replay(&FakeScript::fixture_at(&base).lines(["extra"]));
    let mut expected = stdout.to_vec();
    expected.extend_from_slice(b"\nextra\n");
    assert_eq!(out.stdout, expected);

    // Line delays and hangs count the fixture's lines (not bytes), as before.
    let out = replay(&FakeScript::fixture_at(&base).line_delay_ms(1));
    assert_eq!(out.stdout, stdout);
}

#[test]
fn an_unreadable_fixture_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = FakeScript::new();
    script.stdout_file = Some(dir.path().join("missing.jsonl"));
    let out = replay(&script);
    assert_ne!(out.status.code(), Some(0), "replaying nothing must not look like a clean run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl"), "{out:?}");
    assert!(out.stdout.is_empty());

    // A directory is not a fixture either.
    let mut script = FakeScript::new();
    script.stdout_file = Some(dir.path().to_path_buf());
    assert_ne!(replay(&script).status.code(), Some(0));
}

#[test]
fn a_fixture_that_does_not_exist_or_is_malformed_is_a_setup_failure() {
    assert!(std::panic::catch_unwind(|| FakeScript::fixture("no_such_fixture_anywhere")).is_err());
    let dir = tempfile::tempdir().unwrap();
    let base = write_fixture(dir.path(), "bad_exit", b"{}\n", None, Some("one\n"));
    assert!(std::panic::catch_unwind(|| FakeScript::fixture_at(&base)).is_err(), "an unparseable .exitcode");
}
