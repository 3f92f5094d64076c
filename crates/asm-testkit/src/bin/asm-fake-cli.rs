//! `asm-fake-cli`: replays a provider CLI run described by the JSON script named in
//! `ASM_FAKE_CLI_SCRIPT`. See `asm_testkit::fake_cli`.
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::time::Duration;

use std::collections::HashSet;

use asm_testkit::fake_cli::{
    AWAIT_KEY, FakeScript, JSONRPC_ENV, PROTOCOL, SCRIPT_ENV, SignalAction, UNREADABLE_FIXTURE_EXIT, VERSION_FLAG,
};
use serde_json::Value;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(VERSION_FLAG) {
        println!("{PROTOCOL}");
        return;
    }
    let mut script: FakeScript = match std::env::var_os(SCRIPT_ENV)
        .ok_or_else(|| format!("{SCRIPT_ENV} is not set"))
        .and_then(|p| std::fs::read(&p).map_err(|e| format!("reading script: {e}")))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("parsing script: {e}")))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("asm-fake-cli: {e}");
            std::process::exit(97);
        }
    };
    if std::env::var_os(JSONRPC_ENV).is_some() {
        script.jsonrpc = true;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("asm-fake-cli: runtime: {e}");
            std::process::exit(98);
        }
    };
    let code = runtime.block_on(run(script, args));
    std::process::exit(code);
}

fn write_records(script: &FakeScript, args: &[String]) {
    if let Some(p) = &script.argv_file {
        let _ = std::fs::write(p, serde_json::to_vec(args).unwrap_or_default());
    }
    if let Some(p) = &script.env_file {
        let env: serde_json::Map<String, serde_json::Value> =
            std::env::vars().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        let _ = std::fs::write(p, serde_json::to_vec(&env).unwrap_or_default());
    }
    if let Some(p) = script.stdin_file.as_ref().filter(|_| !script.jsonrpc) {
        let mut input = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut input);
        let _ = std::fs::write(p, input);
    }
    // The pid last: tests wait for it, then everything else is there. Written to a temporary
    // name and renamed, so a reader never sees the file created but still empty.
    if let Some(p) = &script.pid_file {
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, std::process::id().to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
}

fn listener(action: &SignalAction, kind: SignalKind) -> Option<Signal> {
    match action {
        SignalAction::Default => None,
        _ => signal(kind).ok(),
    }
}

async fn recv(sig: &mut Option<Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Handles a received signal: `Some(code)` means exit now.
fn on_signal(action: &SignalAction) -> Option<i32> {
    match action {
        SignalAction::Exit { code, lines } => {
            let mut out = std::io::stdout().lock();
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
            Some(*code)
        }
        _ => None,
    }
}

fn print_chunk(chunk: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(chunk);
    let _ = out.flush();
}

/// Reads the script's files up front: an unreadable fixture must fail the run loudly (exit
/// [`UNREADABLE_FIXTURE_EXIT`], reason on stderr) instead of replaying nothing.
fn load(script: &FakeScript) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let stderr = match &script.stderr_file {
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read stderr fixture {}: {e}", p.display()))?,
        None => Vec::new(),
    };
    let chunks = script.stdout_chunks().map_err(|e| {
        let path = script.stdout_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        format!("cannot read stdout fixture {path}: {e}")
    })?;
    Ok((stderr, chunks))
}

/// JSON-RPC mode: what arrived on stdin so far (ids and methods), fed by a reader thread.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Value>,
    ids: HashSet<String>,
    /// Ids of every message seen (requests and responses).
    any_ids: HashSet<String>,
    methods: Vec<String>,
    /// Claude control protocol: `type`s, `control_request` subtypes and `control_response`
    /// request ids seen.
    control: Vec<(&'static str, String)>,
    closed: bool,
}

impl Inbox {
    fn start(stdin_file: Option<std::path::PathBuf>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut record = stdin_file.and_then(|p| std::fs::File::create(p).ok());
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if let Some(f) = record.as_mut() {
                    let _ = writeln!(f, "{line}");
                    let _ = f.flush();
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Self {
            rx,
            ids: HashSet::new(),
            any_ids: HashSet::new(),
            methods: Vec::new(),
            control: Vec::new(),
            closed: false,
        }
    }

    /// What `line` waits for: a response's id, or an awaited method.
    fn wants(line: &[u8]) -> Option<Want> {
        let v: Value = serde_json::from_slice(line).ok()?;
        let obj = v.as_object()?;
        match obj.get(AWAIT_KEY) {
            Some(Value::String(m)) => return Some(Want::Method(m.clone())),
            Some(Value::Object(o)) if o.contains_key("id") => return Some(Want::AnyId(o["id"].to_string())),
            Some(Value::Object(o)) => {
                for &key in CONTROL_AWAITS {
                    if let Some(v) = o.get(key).and_then(Value::as_str) {
                        return Some(Want::Control(key, v.to_owned()));
                    }
                }
            }
            _ => {}
        }
        let is_response = obj.contains_key("id")
            && !obj.contains_key("method")
            && (obj.contains_key("result") || obj.contains_key("error"));
        is_response.then(|| Want::Id(obj["id"].to_string()))
    }

    fn satisfied(&self, want: &Want) -> bool {
        match want {
            Want::Id(id) => self.ids.contains(id),
            Want::Method(m) => self.methods.iter().any(|x| x == m),
            Want::AnyId(id) => self.any_ids.contains(id),
            Want::Control(key, value) => self.control.iter().any(|(k, v)| k == key && v == value),
        }
    }

    /// Waits for the next message; `false` once stdin is closed.
    async fn next(&mut self) -> bool {
        match self.rx.recv().await {
            Some(v) => {
                if let Some(id) = v.get("id") {
                    self.any_ids.insert(id.to_string());
                }
                if v.get("method").is_some()
                    && let Some(id) = v.get("id")
                {
                    self.ids.insert(id.to_string());
                }
                if let Some(m) = v.get("method").and_then(Value::as_str) {
                    self.methods.push(m.to_owned());
                }
                if let Some(t) = v.get("type").and_then(Value::as_str) {
                    self.control.push(("type", t.to_owned()));
                }
                if let Some(sub) = v.pointer("/request/subtype").and_then(Value::as_str) {
                    self.control.push(("control_request", sub.to_owned()));
                }
                if let Some(id) = v.pointer("/response/request_id").and_then(Value::as_str) {
                    self.control.push(("control_response", id.to_owned()));
                }
                true
            }
            None => {
                self.closed = true;
                false
            }
        }
    }
}

enum Want {
    Id(String),
    Method(String),
    AnyId(String),
    /// A Claude control protocol message (see `CONTROL_AWAITS`).
    Control(&'static str, String),
}

/// The keys of `{"asm_fake_await": {<key>: <value>}}` lines for Claude Code's control
/// protocol: a message of that `type`, a `control_request` with that `request.subtype`, a
/// `control_response` with that `response.request_id`.
const CONTROL_AWAITS: &[&str] = &["type", "control_request", "control_response"];

async fn run(script: FakeScript, args: Vec<String>) -> i32 {
    let mut sigint = listener(&script.on_sigint, SignalKind::interrupt());
    let mut sigterm = listener(&script.on_sigterm, SignalKind::terminate());
    write_records(&script, &args);
    let (stderr_bytes, lines) = match load(&script) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("asm-fake-cli: {e}");
            return UNREADABLE_FIXTURE_EXIT;
        }
    };
    let _grandchild = if script.spawn_grandchild {
        std::process::Command::new("sleep")
            .arg("600")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    } else {
        None
    };
    if !stderr_bytes.is_empty() || !script.stderr.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&stderr_bytes);
        let _ = err.write_all(script.stderr.as_bytes());
        let _ = err.flush();
    }
    let delay = Duration::from_millis(script.line_delay_ms);
    let hang_at = script.hang_after.unwrap_or(usize::MAX);
    let mut inbox = script.jsonrpc.then(|| Inbox::start(script.stdin_file.clone()));
    for (i, line) in lines.iter().enumerate() {
        if i >= hang_at {
            break;
        }
        let want = inbox.as_ref().and_then(|_| Inbox::wants(line));
        if let (Some(inbox), Some(want)) = (inbox.as_mut(), want.as_ref()) {
            while !inbox.satisfied(want) {
                if inbox.closed {
                    return script.exit_code;
                }
                tokio::select! {
                    _ = inbox.next() => {}
                    () = recv(&mut sigint) => if let Some(c) = on_signal(&script.on_sigint) { return c },
                    () = recv(&mut sigterm) => if let Some(c) = on_signal(&script.on_sigterm) { return c },
                }
            }
            if matches!(want, Want::Method(_) | Want::AnyId(_) | Want::Control(..)) {
                continue;
            }
        }
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = recv(&mut sigint) => if let Some(c) = on_signal(&script.on_sigint) { return c },
                () = recv(&mut sigterm) => if let Some(c) = on_signal(&script.on_sigterm) { return c },
            }
        }
        print_chunk(line);
    }
    if script.hang_after.is_some() {
        loop {
            tokio::select! {
                () = recv(&mut sigint) => if let Some(c) = on_signal(&script.on_sigint) { return c },
                () = recv(&mut sigterm) => if let Some(c) = on_signal(&script.on_sigterm) { return c },
            }
        }
    }
    if let Some(sig) = script.exit_signal
        && let (Some(pid), Some(sig)) =
            (rustix::process::Pid::from_raw(std::process::id() as i32), signal_from_raw(sig))
    {
        let _ = rustix::process::kill_process(pid, sig);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    script.exit_code
}

fn signal_from_raw(sig: i32) -> Option<rustix::process::Signal> {
    use rustix::process::Signal;
    [Signal::INT, Signal::TERM, Signal::KILL, Signal::HUP, Signal::SEGV, Signal::ABORT]
        .into_iter()
        .find(|s| s.as_raw() == sig)
}
