#![allow(clippy::unwrap_used)]
//! Subprocess behaviour, driven through `/bin/sh` scripts (the library itself never uses a shell).

use std::time::{Duration, Instant};

use asm_core::{ErrorCode, ProviderErrorKind, ProviderName};
use asm_ports::{CancellationToken, EventSink, ProviderEvent};
use asm_provider_cli::{
    CliCommand, CliEnv, CliLimits, CliProcess, ExitKind, RunControl, process_group_alive, run_jsonl,
};
use futures_like::collecting_sink;

mod futures_like {
    use std::sync::{Arc, Mutex};

    use asm_core::{Event, SessionId};
    use asm_ports::{EventSink, ProviderEvent};

    pub(crate) fn collecting_sink() -> (EventSink, Arc<Mutex<Vec<ProviderEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&seen);
        let session = SessionId::new();
        let sink = EventSink::new(move |e: ProviderEvent| {
            store.lock().unwrap().push(e.clone());
            let event = asm_core::StoredEvent::new(Event::new(e.kind, session.clone()), 1);
            Box::pin(async move { Ok(event) })
        });
        (sink, seen)
    }
}

fn sh(script: &str) -> CliCommand {
    CliCommand::new(ProviderName::Claude, "/bin/sh")
        .args(["-c", script])
        .env(CliEnv::minimal())
        .limits(CliLimits::default().graces(Duration::from_millis(300), Duration::from_millis(300)))
}

async fn wait_gone(pgid: i32) {
    let start = Instant::now();
    while process_group_alive(pgid) {
        assert!(start.elapsed() < Duration::from_secs(5), "process group {pgid} still alive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn lines_exit_code_and_stderr() {
    let mut p = CliProcess::spawn(&sh("printf 'a\\nb\\r\\n\\nlast'; echo oops >&2; exit 3")).unwrap();
    let mut lines = Vec::new();
    while let Some(l) = p.next_line().await.unwrap() {
        lines.push(l);
    }
    assert_eq!(lines, ["a", "b", "", "last"]);
    let exit = p.finish().await;
    assert_eq!(exit.status, ExitKind::Code(3));
    assert_eq!(exit.stderr, "oops\n");
    assert!(!exit.stderr_truncated);
    wait_gone(p.pid()).await;
}

#[tokio::test]
async fn environment_is_explicit_and_stdin_is_closed() {
    let cmd = CliCommand::new(ProviderName::Codex, "/usr/bin/env").env(CliEnv::empty().set("ONLY", "me"));
    let mut p = CliProcess::spawn(&cmd).unwrap();
    assert_eq!(p.next_line().await.unwrap().as_deref(), Some("ONLY=me"));
    assert_eq!(p.next_line().await.unwrap(), None);
    assert!(p.finish().await.success());

    let mut p = CliProcess::spawn(&sh("cat; echo done")).unwrap();
    assert_eq!(p.next_line().await.unwrap().as_deref(), Some("done"));
    p.finish().await;

    let mut p = CliProcess::spawn(&sh("cat").stdin_input(b"in1\nin2\n".to_vec())).unwrap();
    assert_eq!(p.next_line().await.unwrap().as_deref(), Some("in1"));
    assert_eq!(p.next_line().await.unwrap().as_deref(), Some("in2"));
    assert_eq!(p.next_line().await.unwrap(), None);
    assert!(p.finish().await.success());
}

#[tokio::test]
async fn stderr_ring_keeps_the_tail() {
    let cmd = sh("i=0; while [ $i -lt 200 ]; do echo line$i >&2; i=$((i+1)); done")
        .limits(CliLimits::default().stderr_ring_bytes(32));
    let mut p = CliProcess::spawn(&cmd).unwrap();
    assert_eq!(p.next_line().await.unwrap(), None);
    let exit = p.finish().await;
    assert!(exit.stderr_truncated);
    assert!(exit.stderr.ends_with("line199\n"), "{:?}", exit.stderr);
    assert!(exit.stderr.len() <= 32);
    let pe = exit.provider_error(ProviderName::Claude, ProviderErrorKind::TransportExit, "x", Default::default());
    assert_eq!(pe.truncated, Some(true));
    assert_eq!(pe.exit_code, Some(0));
}

#[tokio::test]
async fn oversized_line_is_a_parse_error_and_stops_the_process() {
    let cmd = sh("echo ok; head -c 5000 /dev/zero | tr '\\0' x; echo; sleep 30").limits(
        CliLimits::default().max_line_bytes(1000).graces(Duration::from_millis(300), Duration::from_millis(300)),
    );
    let mut p = CliProcess::spawn(&cmd).unwrap();
    assert_eq!(p.next_line().await.unwrap().as_deref(), Some("ok"));
    let started = Instant::now();
    let err = p.next_line().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::ParseError);
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_gone(p.pid()).await;
}

#[tokio::test]
async fn signals_are_classified() {
    let mut p = CliProcess::spawn(&sh("kill -TERM $$")).unwrap();
    assert_eq!(p.next_line().await.unwrap(), None);
    let exit = p.finish().await;
    assert_eq!(exit.status, ExitKind::Signal(15));
    assert_eq!(exit.exit_code(), Some(143));
}

#[tokio::test]
async fn stop_escalates_to_sigkill_for_the_whole_group() {
    // Ignores SIGINT and SIGTERM, and has a grandchild in the same group.
    let mut p = CliProcess::spawn(&sh("trap '' INT TERM; sleep 60 & echo started; wait")).unwrap();
    assert_eq!(p.next_line().await.unwrap().as_deref(), Some("started"));
    let started = Instant::now();
    let exit = p.stop().await;
    assert_eq!(exit.status, ExitKind::Signal(9));
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_gone(p.pid()).await;
}

#[tokio::test]
async fn dropping_a_running_process_leaves_nothing_behind() {
    let mut p = CliProcess::spawn(&sh("sleep 60 & echo started; wait")).unwrap();
    assert_eq!(p.next_line().await.unwrap().as_deref(), Some("started"));
    let pgid = p.pid();
    drop(p);
    wait_gone(pgid).await;
}

#[tokio::test]
async fn leftovers_of_an_exited_leader_are_killed() {
    // The leader exits while a background child keeps stdout open.
    let mut p = CliProcess::spawn(&sh("sleep 60 & echo bye")).unwrap();
    assert_eq!(p.next_line().await.unwrap().as_deref(), Some("bye"));
    let started = Instant::now();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), p.next_line()).await.unwrap().unwrap(), None);
    assert!(p.finish().await.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_gone(p.pid()).await;
}

#[tokio::test]
async fn missing_binary_is_cli_not_found() {
    let err = CliProcess::spawn(&CliCommand::new(ProviderName::Amp, "/nonexistent/amp")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::CliNotFound);
    let err =
        CliProcess::spawn(&CliCommand::new(ProviderName::Amp, "amp-xyz").env(CliEnv::empty().set("PATH", "/bin")))
            .unwrap_err();
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::CliNotFound);
}

#[tokio::test]
async fn run_jsonl_emits_cancels_and_times_out() {
    let (sink, seen) = collecting_sink();
    let control = RunControl::default();
    let exit = run_jsonl(&sh("echo one; echo; echo two"), &control, &sink, |line, out| {
        out.push(ProviderEvent::new(asm_core::EventKind::MessageStreamed).data("content", line));
        Ok(())
    })
    .await
    .unwrap();
    assert!(exit.success());
    assert_eq!(seen.lock().unwrap().len(), 2);

    // Cancel mid-stream.
    let cancel = CancellationToken::new();
    let control = RunControl::new(cancel.clone(), None);
    let (sink, seen) = collecting_sink();
    let trigger = cancel.clone();
    let started = Instant::now();
    let err = run_jsonl(&sh("echo $$; sleep 60"), &control, &sink, move |line, _| {
        let _ = line;
        trigger.cancel();
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(seen.lock().unwrap().is_empty());

    // Deadline.
    let control = RunControl::new(CancellationToken::new(), Some(Instant::now() + Duration::from_millis(200)));
    let err = run_jsonl(&sh("sleep 60"), &control, &sink, |_, _| Ok(())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::Timeout);
    let _ = EventSink::clone(&sink);
}

#[tokio::test]
async fn run_jsonl_skips_an_oversized_line_and_reads_the_rest() {
    // The overlong line is far longer than one read buffer and has no newline until its end:
    // its tail must be skipped, never read as a line of its own.
    let cmd = sh("echo first; head -c 300000 /dev/zero | tr '\\0' x; echo; echo after; echo oops >&2; exit 1")
        .limits(CliLimits::default().max_line_bytes(1000));
    let (sink, seen) = collecting_sink();
    let mut lines = Vec::new();
    let exit = run_jsonl(&cmd, &RunControl::default(), &sink, |line, _| {
        lines.push(line.to_owned());
        Ok(())
    })
    .await
    .expect("an oversized line is not fatal while reading");
    assert_eq!(lines, ["first", "after"]);
    assert_eq!(exit.status, ExitKind::Code(1));
    assert_eq!(exit.oversized_lines, 1);
    assert_eq!(exit.max_line_bytes, 1000);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one error event for the skipped line: {seen:?}");
    assert_eq!(seen[0].kind, asm_core::EventKind::ErrorOccurred);
    assert_eq!(seen[0].data["details"]["reason"], "line_too_long");
}

#[test]
fn settle_lets_the_providers_own_error_win_over_the_framing_error() {
    use asm_core::{Error, StderrLimits};
    use asm_provider_cli::ExitInfo;
    let limits = StderrLimits::default();
    let clean = ExitInfo::new(ExitKind::Code(1), "boom\n", false);
    let framed = clean.clone().with_oversized_lines(2, 4096);

    // No oversized line: the verdict stands, success or not.
    assert!(clean.settle(ProviderName::Claude, limits, Ok(())).is_ok());
    let generic = || -> asm_core::Result<()> { Err(Error::new(ErrorCode::ProviderError, "no result line")) };
    assert_eq!(clean.settle(ProviderName::Claude, limits, generic()).unwrap_err().message(), "no result line");

    // 401 / 429 / 529 reported by the rest of the output win.
    for code in
        [ErrorCode::ProviderAuthenticationFailed, ErrorCode::ProviderRateLimited, ErrorCode::ProviderUnavailable]
    {
        let err =
            framed.settle(ProviderName::Codex, limits, Err::<(), _>(Error::new(code, "provider said"))).unwrap_err();
        assert_eq!(err.code(), code);
        assert_eq!(err.details()["oversized_lines"], 2);
    }

    // A success or a generic error becomes the framing error (the provider's verdict kept).
    let err = framed.settle(ProviderName::Amp, limits, Ok(())).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    let pe = err.provider_error().unwrap();
    assert_eq!((pe.kind, pe.exit_code), (ProviderErrorKind::ParseError, Some(1)));
    assert_eq!(pe.stderr.as_deref(), Some("boom\n"));
    let err = framed.settle(ProviderName::Amp, limits, generic()).unwrap_err();
    assert_eq!(err.details()["reason"], "line_too_long");
    assert_eq!(err.details()["provider_verdict"]["error_message"], "no result line");
}

#[tokio::test]
async fn next_frame_reports_an_oversized_line_and_keeps_the_process() {
    let cmd =
        sh("head -c 5000 /dev/zero | tr '\\0' x; echo; echo next").limits(CliLimits::default().max_line_bytes(100));
    let mut p = CliProcess::spawn(&cmd).unwrap();
    assert_eq!(p.next_frame().await.unwrap(), Some(asm_provider_cli::StdoutFrame::Oversized { max_line_bytes: 100 }));
    assert_eq!(p.next_frame().await.unwrap(), Some(asm_provider_cli::StdoutFrame::Line("next".into())));
    assert_eq!(p.next_frame().await.unwrap(), None);
    assert!(p.finish().await.success());
}

#[tokio::test]
async fn chunks_are_the_exact_bytes_and_a_leftover_child_cannot_hold_stdout() {
    let mut p = CliProcess::spawn(&sh("printf 'a\\r\\nb'; printf '\\377c'")).unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = p.next_chunk(2).await.unwrap() {
        assert!(!chunk.is_empty() && chunk.len() <= 2, "{chunk:?}");
        out.extend_from_slice(&chunk);
    }
    assert_eq!(out, b"a\r\nb\xffc");
    assert!(p.finish().await.success());

    // The leader exits while a background child keeps stdout open: the group is killed, EOF.
    let started = Instant::now();
    let mut p = CliProcess::spawn(&sh("sleep 100 & echo done")).unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = p.next_chunk(1024).await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    assert_eq!(out, b"done\n");
    assert!(started.elapsed() < Duration::from_secs(10));
    p.finish().await;
    wait_gone(p.pid()).await;
}
