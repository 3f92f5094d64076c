//! Captures the real Claude Code CLI's stream-json control protocol exchange against the fake
//! Anthropic server, for the fixtures in `crates/asm-provider-claude/tests/fixtures/control/`.
//!
//! ```text
//! cargo run -p asm-integration --example capture_claude_control -- <path to claude> <out dir>
//! ```
//!
//! Writes one JSONL file per conversation (`allow.jsonl`, `deny.jsonl`, `interrupt.jsonl`):
//! every line is `{"from": "host" | "cli", "message": <the JSON line>}` in the order written
//! or read. The CLI runs with an isolated HOME in a temporary directory, the offline switches,
//! `--permission-prompt-tool stdio`, the default permission mode and an `ask` rule for `Bash`
//! (`--settings`), so the `Bash` call asks.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use asm_integration::{Api, FakeServer, Scenario};
use serde_json::{Value, json};

/// Settings that make every `Bash` call ask (Claude Code runs read-only commands such as
/// `echo hi` without asking otherwise).
const ASK_BASH: &str = r#"{"permissions":{"ask":["Bash"]}}"#;

/// How long one read from the CLI may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the host does with the `can_use_tool` request.
#[derive(Clone, Copy)]
enum Answer {
    Allow,
    Deny,
    Interrupt,
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let cli = PathBuf::from(args.next().ok_or("usage: capture_claude_control <claude> <out dir>")?);
    let out = PathBuf::from(args.next().ok_or("usage: capture_claude_control <claude> <out dir>")?);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let server = runtime.block_on(FakeServer::start(Api::AnthropicMessages)).map_err(|e| e.to_string())?;
    for (name, answer) in [("allow", Answer::Allow), ("deny", Answer::Deny), ("interrupt", Answer::Interrupt)] {
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        let lines = capture(&cli, &server, root.path(), answer)?;
        let path = out.join(format!("{name}.exchange.jsonl"));
        let text: String = lines
            .iter()
            .map(|l| {
                let mut l = l.clone();
                if let Some(o) = l.as_object_mut() {
                    o.remove("raw");
                }
                format!("{l}\n")
            })
            .collect();
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        println!("{}: {} lines", path.display(), lines.len());
        let script: String = fake_script(&lines).iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(out.join(format!("{name}.jsonl")), script).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The exchange as a script for `asm-fake-cli`'s interactive mode: the CLI's lines as they
/// were, each host message replaced by an await for it (see `asm_testkit::fake_cli`).
fn fake_script(exchange: &[Value]) -> Vec<String> {
    let mut script = Vec::new();
    for entry in exchange {
        let message = &entry["message"];
        match entry["from"].as_str() {
            Some("cli") => script.push(entry["raw"].as_str().unwrap_or_default().to_owned()),
            Some("host") if message.is_object() => {
                let kind = message["type"].as_str().unwrap_or_default();
                let want = match kind {
                    "control_request" => json!({"control_request": message["request"]["subtype"]}),
                    "control_response" => json!({"control_response": message["response"]["request_id"]}),
                    other => json!({"type": other}),
                };
                script.push(json!({"asm_fake_await": want}).to_string());
            }
            _ => {}
        }
    }
    script
}

fn capture(cli: &Path, server: &FakeServer, root: &Path, answer: Answer) -> Result<Vec<Value>, String> {
    let (home, work, tmp) = (root.join("home"), root.join("workspace"), root.join("tmp"));
    for dir in [&home, &work, &tmp] {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut child = Command::new(cli)
        .args(["-p", "--output-format", "stream-json", "--verbose", "--input-format", "stream-json"])
        .args(["--permission-prompt-tool", "stdio", "--settings", ASK_BASH])
        .current_dir(&work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
        .env("ANTHROPIC_BASE_URL", server.base_url())
        .env("ANTHROPIC_API_KEY", "sk-ant-fake-key")
        .env("TMPDIR", &tmp)
        .env("CLAUDE_CODE_MAX_RETRIES", "1")
        .envs(asm_provider_claude::OFFLINE_ENV.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", cli.display()))?;
    let mut stdin = Some(child.stdin.take().ok_or("no stdin")?);
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let send =
        |stdin: &mut Option<std::process::ChildStdin>, log: &mut Vec<Value>, message: Value| -> Result<(), String> {
            let pipe = stdin.as_mut().ok_or("stdin already closed")?;
            writeln!(pipe, "{message}").map_err(|e| e.to_string())?;
            pipe.flush().map_err(|e| e.to_string())?;
            log.push(json!({"from": "host", "message": message}));
            Ok(())
        };
    send(
        &mut stdin,
        &mut log,
        json!({"type": "control_request", "request_id": asm_provider_claude::INITIALIZE_REQUEST_ID, "request": {"subtype": "initialize", "hooks": null}}),
    )?;
    let prompt = format!("Run echo hi. {}", Scenario::ToolUse.marker());
    send(
        &mut stdin,
        &mut log,
        json!({"type": "user", "session_id": "", "message": {"role": "user", "content": prompt}, "parent_tool_use_id": null}),
    )?;
    while let Ok(line) = rx.recv_timeout(READ_TIMEOUT) {
        let message: Value = serde_json::from_str(&line).unwrap_or(Value::String(line.clone()));
        log.push(json!({"from": "cli", "message": message.clone(), "raw": line}));
        let kind = message.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind == "control_request" && message["request"]["subtype"] == "can_use_tool" {
            let id = message["request_id"].clone();
            let response = match answer {
                Answer::Allow => json!({"behavior": "allow", "updatedInput": message["request"]["input"].clone()}),
                Answer::Deny => json!({"behavior": "deny", "message": "denied by the capture"}),
                Answer::Interrupt => {
                    send(
                        &mut stdin,
                        &mut log,
                        json!({"type": "control_request", "request_id": format!("{}_1", asm_provider_claude::INTERRUPT_REQUEST_ID), "request": {"subtype": "interrupt"}}),
                    )?;
                    continue;
                }
            };
            send(
                &mut stdin,
                &mut log,
                json!({"type": "control_response", "response": {"subtype": "success", "request_id": id, "response": response}}),
            )?;
        }
        if kind == "result" {
            // The host closes stdin after the result: the CLI then exits.
            if stdin.take().is_some() {
                log.push(json!({"from": "host", "message": "<stdin closed>"}));
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    log.push(json!({"from": "exit", "message": {"code": status.code()}}));
    Ok(log)
}
