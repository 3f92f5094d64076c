//! The web view in a real headless Chromium, driven through chromedriver (WebDriver):
//! open a session page, submit a run through the API and one through the page's form, and
//! see their events (tool calls, assistant text, usage) appear live, without a reload.
//! Screenshots go to `target/web-view-*.png` (the CI artifacts).
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them); the
//! test fails, never skips, without them. `ASM_CHROMEDRIVER` and `ASM_CHROMIUM` override the
//! paths `/usr/bin/chromedriver` and `/usr/bin/chromium`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use asm_core::{Error, ErrorCode, EventKind, TokenUsage};
use asm_http::ApiServer;
use asm_ports::{ExecuteOutcome, ProviderEvent};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::{ScriptEnd, ScriptedAdapter};
use common::{Running, json};

/// How long any one thing the test waits for may take.
const WAIT: Duration = Duration::from_secs(30);
const INSTALL_HINT: &str = "install the Debian packages chromium and chromium-driver \
     (apt-get install -y chromium chromium-driver); .ci/run does this in CI";

/// The reply of the scripted provider, streamed in word chunks.
const REPLY: &str = "The failing test was an off-by-one in the cursor; fixed and verified.";

/// The error of the `failing` provider.
const FAILURE: &str = "the deploy key was rejected";

/// A provider that reads a file, streams a reply with small pauses (so the page really shows
/// a run in progress), reports usage and succeeds.
fn provider() -> ScriptedAdapter {
    let mut adapter = ScriptedAdapter::new()
        .emit(
            ProviderEvent::new(EventKind::ToolCallStarted)
                .data("tool_call_id", "call_1")
                .data("tool_name", "read_file")
                .data("tool_input", json!({"path": "src/cursor.rs"})),
        )
        .delay(Duration::from_millis(100))
        .emit(
            ProviderEvent::new(EventKind::ToolCallCompleted)
                .data("tool_call_id", "call_1")
                .data("tool_name", "read_file")
                .data("tool_output", "fn next(&self) -> u64 { self.at + 2 }"),
        );
    for chunk in REPLY.split_inclusive(' ') {
        adapter = adapter
            .delay(Duration::from_millis(20))
            .emit(ProviderEvent::new(EventKind::MessageStreamed).data("delta", chunk).data("content", chunk));
    }
    let usage = TokenUsage { input_tokens: 1200, output_tokens: 42, ..TokenUsage::default() };
    adapter
        .emit(ProviderEvent::new(EventKind::MessageReceived).data("role", "assistant").data("content", REPLY))
        .emit(
            ProviderEvent::new(EventKind::TokenUsageUpdated)
                .data("input_tokens", usage.input_tokens)
                .data("output_tokens", usage.output_tokens)
                .data("usage_mode", "delta"),
        )
        .end(ScriptEnd::Succeed(ExecuteOutcome::text(REPLY).usage(usage).model("scripted-1").stop_reason("end_turn")))
}

/// `ASM_<name>` or the Debian path; a clear failure when it is not there.
fn executable(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(path.is_file(), "{} not found: {INSTALL_HINT}", path.display());
    path
}

/// A free loopback port (bound and released; chromedriver binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

/// chromedriver as a child process on a loopback port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> Self {
        let binary = executable("ASM_CHROMEDRIVER", "/usr/bin/chromedriver");
        let mut last_error = String::new();
        // The port is free when chosen; retry in the rare case another process takes it first.
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(&binary)
                // Its own process group: dropping the driver stops the browsers it started too.
                .process_group(0)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", binary.display()));
            let mut driver = Self { child, url: format!("http://127.0.0.1:{port}") };
            match driver.ready(port).await {
                Ok(()) => return driver,
                Err(error) => last_error = error,
            }
        }
        panic!("chromedriver did not become ready: {last_error}");
    }

    /// Waits (bounded) until chromedriver accepts connections on `port`.
    async fn ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("chromedriver exited with {status} before listening on port {port}"));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("chromedriver did not listen on 127.0.0.1:{port} within {WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChromeDriver {
    /// Kills chromedriver's process group (the driver and any browser a failed test left
    /// open), then reaps the driver.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        if !killed.is_ok_and(|status| status.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A headless Chromium session (browser console messages kept for [`browser_log`]).
async fn browser(driver: &ChromeDriver, profile: &Path) -> Client {
    let chromium = executable("ASM_CHROMIUM", "/usr/bin/chromium");
    let mut capabilities = Capabilities::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--lang=en-US",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let connect = ClientBuilder::new(HttpConnector::new()).capabilities(capabilities).connect(&driver.url).await;
    match tokio::time::timeout(WAIT, async { connect }).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => panic!("chromedriver could not start chromium: {error}; {INSTALL_HINT}"),
        Err(_) => panic!("no browser session within {WAIT:?}"),
    }
}

/// chromedriver's `POST /session/{id}/se/log` (the browser console).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// The console messages since the last call, as `LEVEL message` lines.
async fn browser_log(client: &Client) -> Vec<String> {
    let entries = client.issue_cmd(BrowserLog).await.expect("the browser console log");
    entries
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `probe` (a script returning a value, `null` while not ready) until it returns
/// something else, within [`WAIT`]; fails with `what`, the page's events and console.
async fn wait_for(client: &Client, what: &str, probe: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = client.execute(probe, Vec::new()).await.unwrap_or_else(|e| panic!("probe for {what} failed: {e}"));
        if !value.is_null() && value != Value::Bool(false) {
            return value;
        }
        if Instant::now() > deadline {
            let page =
                client.execute("return document.getElementById('app').innerText", Vec::new()).await.unwrap_or_default();
            panic!(
                "the page did not show {what} within {WAIT:?}\n--- page ---\n{}\n--- console ---\n{}",
                page.as_str().unwrap_or_default(),
                browser_log(client).await.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The directory screenshots go to: the cargo target directory (`CARGO_TARGET_DIR` honoured).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp has a parent").to_path_buf()
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    let path = target_dir().join(format!("web-view-{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// A probe: the text of the assistant rows of `run`, once the run's message is complete
/// (the streamed row was replaced by the full `message_received`).
fn assistant_text_of(run: &str) -> String {
    format!(
        "const rows = [...document.querySelectorAll('#events .event.assistant[data-run=\"{run}\"]')];
         return rows.length && rows.every((r) => r.dataset.kind === 'message_received')
           ? rows.map((r) => r.textContent) : null;"
    )
}

/// No token: the session page follows runs submitted through the API and the form; the
/// sessions list summarises them.
async fn runs_appear_live(driver: &ChromeDriver) {
    let server = Running::start(
        ApiServer::builder().store(InMemorySessionStore::new()).adapter("scripted", provider()).adapter(
            "failing",
            ScriptedAdapter::new().named("failing").failing(Error::new(ErrorCode::ProviderError, FAILURE)),
        ),
    )
    .await;
    let (status, session) =
        json(server.addr, "POST", "/v1/sessions", Some(json!({"agent_id": "web-test", "tags": ["browser"]}))).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let addr = server.addr;

    let profile = tempfile::tempdir().unwrap();
    let client = browser(driver, profile.path()).await;
    {
        // The session page: empty, connected to the live stream.
        client.goto(&format!("http://{addr}/sessions/{id}")).await.expect("open the session page");
        wait_for(&client, "the live stream", "return document.getElementById('stream-state')?.textContent === 'live'")
            .await;
        assert_eq!(client.title().await.unwrap(), "agent-session-manager");
        let header = client.find(Locator::Css("h1 .mono")).await.expect("the session id heading");
        assert_eq!(header.text().await.unwrap(), id);
        wait_for(
            &client,
            "the session created event",
            "return document.querySelector('#events [data-kind=session_created]')",
        )
        .await;
        // Marks this document: a reload would lose the mark.
        client.execute("window.__same_document = true; return null;", Vec::new()).await.unwrap();

        // 1. A run submitted through the API appears live.
        let (status, accepted) =
            json(addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "Fix the failing test"})))
                .await;
        assert_eq!(status, 202, "{accepted}");
        let first = accepted["run_id"].as_str().unwrap().to_owned();
        let texts = wait_for(&client, "the first run's assistant text", &assistant_text_of(&first)).await;
        assert_eq!(texts.as_array().unwrap().len(), 1, "one assistant message, not one row per chunk: {texts}");
        assert!(texts[0].as_str().unwrap().ends_with(&format!("assistant: {REPLY}")), "{texts}");
        let events = client.find(Locator::Id("events")).await.unwrap().text().await.unwrap();
        for expected in
            ["user: Fix the failing test", "read_file", "src/cursor.rs", "self.at + 2", "usage: 1200 in / 42 out"]
        {
            assert!(events.contains(expected), "{expected:?} missing from the event log:\n{events}");
        }
        wait_for(
            &client,
            "the first run completed in the runs table",
            &format!(
                "return document.querySelector('#runs tr[data-run=\"{first}\"] .badge')?.textContent === 'completed'"
            ),
        )
        .await;
        wait_for(
            &client,
            "the session summary with usage",
            "return /1,242/.test(document.getElementById('summary').textContent)",
        )
        .await;
        let kept = client.execute("return window.__same_document === true", Vec::new()).await.unwrap();
        assert_eq!(kept, Value::Bool(true), "the page was reloaded");
        let shot = screenshot(&client, "session").await;

        // 2. A run submitted through the page's form appears live too.
        let prompt = client.find(Locator::Id("prompt")).await.expect("the prompt field");
        prompt.send_keys("Now add a regression test").await.unwrap();
        client.find(Locator::Css("#run-form button[type=submit]")).await.unwrap().click().await.unwrap();
        let second = wait_for(
            &client,
            "a second run in the runs table",
            &format!("const rows = [...document.querySelectorAll('#runs tr[data-run]')].filter((r) => r.dataset.run !== '{first}');
                      return rows.length === 1 ? rows[0].dataset.run : null;"),
        )
        .await;
        let second = second.as_str().unwrap().to_owned();
        wait_for(&client, "the second run's assistant text", &assistant_text_of(&second)).await;
        wait_for(
            &client,
            "the second run completed",
            &format!(
                "return document.querySelector('#runs tr[data-run=\"{second}\"] .badge')?.textContent === 'completed'"
            ),
        )
        .await;
        let events = client.find(Locator::Id("events")).await.unwrap().text().await.unwrap();
        assert!(events.contains("user: Now add a regression test"), "{events}");
        let prompt_now = client.execute("return document.getElementById('prompt').value", Vec::new()).await.unwrap();
        assert_eq!(prompt_now, json!(""), "the form is cleared after a submission");
        let error =
            client.execute("return document.getElementById('form-error').textContent", Vec::new()).await.unwrap();
        assert_eq!(error, json!(""), "no form error");
        let kept = client.execute("return window.__same_document === true", Vec::new()).await.unwrap();
        assert_eq!(kept, Value::Bool(true), "the page was reloaded");
        // Every event exactly once, in order: the log's sequences are the store's.
        let shown = client
            .execute(
                "return [...document.querySelectorAll('#events .event')].map((e) => Number(e.dataset.sequence))",
                Vec::new(),
            )
            .await
            .unwrap();
        let (_, stored) = json(addr, "GET", &format!("/v1/sessions/{id}/events?limit=1000"), None).await;
        let hidden = ["reasoning_streamed", "turn_completed", "message_streamed"];
        let expected: Vec<u64> = stored
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !hidden.contains(&e["kind"].as_str().unwrap()))
            .map(|e| e["sequence"].as_u64().unwrap())
            .collect();
        let shown: Vec<u64> = shown.as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
        // A streamed message's row carries the sequence of its first chunk; the rest one each.
        assert_eq!(shown.len(), expected.len(), "rows {shown:?} for the events {expected:?}");
        assert!(shown.windows(2).all(|w| w[0] < w[1]), "in order: {shown:?}");
        screenshot(&client, "form").await;

        // 3. A failed run is shown as an error, in the log and in the runs table.
        let (status, failing) =
            json(addr, "POST", "/v1/sessions", Some(json!({"agent_id": "web-test", "provider": "failing"}))).await;
        assert_eq!(status, 201, "{failing}");
        let failing = failing["id"].as_str().unwrap().to_owned();
        client.goto(&format!("http://{addr}/sessions/{failing}")).await.unwrap();
        wait_for(&client, "the live stream", "return document.getElementById('stream-state')?.textContent === 'live'")
            .await;
        let (status, accepted) =
            json(addr, "POST", &format!("/v1/sessions/{failing}/runs"), Some(json!({"input": "Deploy"}))).await;
        assert_eq!(status, 202, "{accepted}");
        let failed = accepted["run_id"].as_str().unwrap().to_owned();
        let line = wait_for(
            &client,
            "the run_failed event",
            &format!("return document.querySelector('#events .event.error[data-run=\"{failed}\"][data-kind=run_failed]')?.textContent ?? null"),
        )
        .await;
        let line = line.as_str().unwrap();
        assert!(line.contains("failed [provider_error]") && line.contains(FAILURE), "{line}");
        wait_for(
            &client,
            "the failed run in the runs table",
            &format!("return document.querySelector('#runs tr[data-run=\"{failed}\"] .badge.failed')?.textContent === 'failed'"),
        )
        .await;
        screenshot(&client, "failed").await;

        // 4. The sessions list shows the session with its status, runs, usage.
        client.goto(&format!("http://{addr}/")).await.unwrap();
        let row = wait_for(
            &client,
            "the session in the sessions list",
            &format!("return document.querySelector('#sessions tr[data-session=\"{id}\"]')?.innerText ?? null"),
        )
        .await;
        let row = row.as_str().unwrap();
        for expected in ["active", "web-test", "scripted", "2", "2,484"] {
            assert!(row.contains(expected), "{expected:?} missing from the sessions row {row:?}");
        }
        screenshot(&client, "sessions").await;

        // No script error, CSP violation or failed request on any page.
        let problems: Vec<String> =
            browser_log(&client).await.into_iter().filter(|line| line.starts_with("SEVERE")).collect();
        assert!(problems.is_empty(), "browser console errors:\n{}", problems.join("\n"));
        client.close().await.expect("close the browser session");
        assert!(shot.is_file(), "{} written", shot.display());
    }
    server.stop().await;
}

/// `json` with `Authorization: Bearer`.
async fn authed_json(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = common::request(method, addr, path, body);
    request.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let response = common::send(addr, request).await;
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON body"))
}

const TOKEN: &str = "browser-s3cret";

/// With a token: the page asks for it, keeps it (the `EventSource` authenticates with the
/// cookie) and then shows runs live as without one.
async fn token_is_asked_for_and_used(driver: &ChromeDriver) {
    let server = Running::start(
        ApiServer::builder().store(InMemorySessionStore::new()).adapter("scripted", provider()).token(TOKEN),
    )
    .await;
    let addr = server.addr;
    let (status, session) = authed_json(addr, "POST", "/v1/sessions", Some(json!({"agent_id": "web-token"}))).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let (status, _) = json(addr, "GET", &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(status, 401, "the API refuses requests without the token");

    let profile = tempfile::tempdir().unwrap();
    let client = browser(driver, profile.path()).await;
    client.goto(&format!("http://{addr}/sessions/{id}")).await.expect("open the session page");
    wait_for(&client, "the token dialog", "return !document.getElementById('auth').hidden").await;
    let shown = wait_for(
        &client,
        "the unauthorized error",
        "return document.querySelector('#app .error-box')?.textContent ?? null",
    )
    .await;
    assert!(shown.as_str().unwrap().starts_with("[unauthorized]"), "{shown}");
    screenshot(&client, "token").await;
    // The refused requests are in the console; only what follows must be clean.
    let refused = browser_log(&client).await;
    assert!(refused.iter().any(|line| line.contains("401")), "the refused request is logged: {refused:?}");

    client.find(Locator::Id("auth-token")).await.unwrap().send_keys(TOKEN).await.unwrap();
    client.find(Locator::Css("#auth-form button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for(
        &client,
        "the live stream after the token",
        "return document.getElementById('stream-state')?.textContent === 'live'",
    )
    .await;
    let hidden = client.execute("return document.getElementById('auth').hidden", Vec::new()).await.unwrap();
    assert_eq!(hidden, Value::Bool(true), "the dialog is gone after the reload");
    let (status, accepted) =
        authed_json(addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "With a token"}))).await;
    assert_eq!(status, 202, "{accepted}");
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    wait_for(&client, "the run's assistant text behind the token", &assistant_text_of(&run)).await;
    // The form's POST sends the bearer header (the cookie is accepted on GET only).
    client.find(Locator::Id("prompt")).await.unwrap().send_keys("Through the form").await.unwrap();
    client.find(Locator::Css("#run-form button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for(
        &client,
        "the form's run behind the token",
        "return [...document.querySelectorAll('#events .event.user')].some((e) => e.textContent.includes('Through the form'))",
    )
    .await;
    let problems: Vec<String> =
        browser_log(&client).await.into_iter().filter(|line| line.starts_with("SEVERE")).collect();
    assert!(problems.is_empty(), "browser console errors with the token:\n{}", problems.join("\n"));
    client.close().await.expect("close the browser session");
    server.stop().await;
}

/// Both scenarios on one chromedriver, one after the other (two browsers at once would
/// only slow a small CI machine down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_view_in_headless_chromium() {
    let driver = ChromeDriver::start().await;
    runs_appear_live(&driver).await;
    token_is_asked_for_and_used(&driver).await;
}
