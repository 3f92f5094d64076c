//! The REST endpoints against a real server on 127.0.0.1 (memory store, scripted adapters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::json;

use asm_http::ApiServer;
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;
use common::{Running, await_terminal, json, request, send};

fn builder() -> asm_http::ApiServerBuilder {
    ApiServer::builder()
        .store(InMemorySessionStore::new())
        .adapter("scripted", ScriptedAdapter::replying("Hello from the API"))
        .adapter("slow", ScriptedAdapter::new().named("slow").hanging())
}

async fn create(server: &Running, provider: &str) -> String {
    let (status, session) =
        json(server.addr, "POST", "/v1/sessions", Some(json!({"agent_id": "agent-1", "provider": provider}))).await;
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn session_run_and_events_round_trip() {
    let server = Running::start(builder()).await;
    let (status, health) = json(server.addr, "GET", "/v1/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["providers"], json!(["scripted", "slow"]));

    let (status, session) = json(
        server.addr,
        "POST",
        "/v1/sessions",
        Some(json!({"agent_id": "agent-1", "system_prompt": "Be brief.", "tags": ["ci"]})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["status"], "pending");
    assert_eq!(session["provider"], "scripted");
    assert_eq!(session["context"]["system_prompt"], "Be brief.");
    let id = session["id"].as_str().unwrap().to_owned();

    let (status, accepted) =
        json(server.addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "Hi"}))).await;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    let run = await_terminal(server.addr, &id, &run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"]["content"], "Hello from the API");
    assert_eq!(run["provider"], "scripted");

    let (status, view) = json(server.addr, "GET", &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "active");
    assert_eq!(view["run_count"], 1);
    assert_eq!(view["token_usage"]["input_tokens"], 12);
    assert_eq!(view["last_run_status"], "completed");

    let (status, runs) = json(server.addr, "GET", &format!("/v1/sessions/{id}/runs"), None).await;
    assert_eq!(status, 200);
    assert_eq!(runs.as_array().unwrap().len(), 1);

    let (status, events) = json(server.addr, "GET", &format!("/v1/sessions/{id}/events"), None).await;
    assert_eq!(status, 200);
    let events = events.as_array().unwrap();
    for (i, event) in events.iter().enumerate() {
        for key in ["session_id", "run_id", "sequence", "kind", "data", "timestamp"] {
            assert!(event.get(key).is_some(), "{key} missing in {event}");
        }
        assert_eq!(event["sequence"], i as u64 + 1);
        assert_eq!(event["session_id"], id.as_str());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"session_created"));
    assert!(kinds.contains(&"run_started") && kinds.contains(&"message_received"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_completed"));

    let (_, page) = json(server.addr, "GET", &format!("/v1/sessions/{id}/events?after=2&limit=2"), None).await;
    assert_eq!(page.as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 4]);
    let (_, filtered) =
        json(server.addr, "GET", &format!("/v1/sessions/{id}/events?kind=run_started&kind=run_completed"), None).await;
    let filtered: Vec<&str> = filtered.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(filtered, ["run_started", "run_completed"]);
    let (_, by_comma) =
        json(server.addr, "GET", &format!("/v1/sessions/{id}/events?kind=run_started,run_completed"), None).await;
    assert_eq!(by_comma.as_array().unwrap().len(), 2);

    let (status, list) = json(server.addr, "GET", "/v1/sessions?status=active&agent=agent-1&limit=10", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    let (_, none) = json(server.addr, "GET", "/v1/sessions?status=completed", None).await;
    assert!(none["sessions"].as_array().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn sessions_are_paged_with_a_cursor() {
    let server = Running::start(builder()).await;
    for _ in 0..5 {
        create(&server, "scripted").await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = json(server.addr, "GET", &format!("/v1/sessions?limit=2&cursor={cursor}"), None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(seen.len(), 5);
    assert_eq!(unique.len(), 5);
    server.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_fitting_statuses() {
    let server = Running::start(builder().max_queued_runs(1)).await;
    let addr = server.addr;
    let missing = "ses_0123456789abcdef0123456789abcdef";
    for path in
        [format!("/v1/sessions/{missing}"), "/v1/sessions/garbage".into(), "/v1/runs/run_x".into(), "/v1/nope".into()]
    {
        let (status, body) = json(addr, "GET", &path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["code"].as_str().unwrap().ends_with("not_found"), "{body}");
        assert!(body["message"].is_string());
    }
    let (status, body) = json(addr, "POST", "/v1/sessions", Some(json!({"agent_id": ""}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("validation_error")), "{body}");
    let (status, body) = json(addr, "POST", "/v1/sessions", Some(json!({"agent": "x"}))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = json(addr, "POST", "/v1/sessions", Some(json!({"agent_id": "a", "provider": "nope"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("validation_error")), "{body}");
    let (status, body) = json(addr, "GET", "/v1/sessions?status=sleeping", None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("validation_error")), "{body}");
    let (status, body) = json(addr, "GET", "/v1/sessions?limit=many", None).await;
    assert_eq!(status, 400, "{body}");

    let id = create(&server, "scripted").await;
    let (status, body) = json(addr, "GET", &format!("/v1/sessions/{id}/events?kind=bogus"), None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_event_type")), "{body}");
    let (status, body) = json(addr, "GET", &format!("/v1/sessions/{id}/events?limit=0"), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = json(addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "  "}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_input")), "{body}");
    let (status, body) =
        json(addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "x", "provider": "slow"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("validation_error")), "{body}");
    let raw = send(addr, request("POST", addr, &format!("/v1/sessions/{id}/runs"), None)).await;
    assert_eq!(raw.status().as_u16(), 400);
    let bytes = raw.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["code"].is_string());

    // 429: one slot busy (hanging provider), one queued, the next is refused.
    let slow = create(&server, "slow").await;
    let runs = format!("/v1/sessions/{slow}/runs");
    let (first, a) = json(addr, "POST", &runs, Some(json!({"input": "1"}))).await;
    assert_eq!(first, 202, "{a}");
    let first_run = a["run_id"].as_str().unwrap().to_owned();
    // The first run must be in its slot before the queue counts: wait for its run_started.
    let mut started =
        common::SseClient::connect(addr, &format!("/v1/sessions/{slow}/events/stream?kind=run_started"), None).await;
    started.next_event(Duration::from_secs(10)).await;
    let (second, b) = json(addr, "POST", &runs, Some(json!({"input": "2"}))).await;
    assert_eq!(second, 202, "{b}");
    let (third, c) = json(addr, "POST", &runs, Some(json!({"input": "3"}))).await;
    assert_eq!((third, c["code"].as_str()), (429, Some("max_runs_exceeded")), "{c}");

    // Cancel: the queued run at once, the in-flight one through its provider.
    let queued = b["run_id"].as_str().unwrap().to_owned();
    let (status, run) = json(addr, "POST", &format!("/v1/runs/{queued}/cancel"), None).await;
    assert_eq!((status, run["status"].as_str()), (202, Some("cancelled")), "{run}");
    let (status, _) = json(addr, "POST", &format!("/v1/runs/{first_run}/cancel"), None).await;
    assert_eq!(status, 202);
    let run = await_terminal(addr, &slow, &first_run).await;
    assert_eq!(run["status"], "cancelled", "{run}");

    // 409: a finished run cannot be cancelled; a finished session takes no runs.
    let (_, done) = json(addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "go"}))).await;
    let done = done["run_id"].as_str().unwrap().to_owned();
    assert_eq!(await_terminal(addr, &id, &done).await["status"], "completed");
    let (status, body) = json(addr, "POST", &format!("/v1/runs/{done}/cancel"), None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("invalid_transition")), "{body}");
    server.api.supervisor().stop(&asm_core::SessionId::parse(&id).unwrap()).await.unwrap();
    let store_session = server.api.supervisor().whereis(&asm_core::SessionId::parse(&id).unwrap());
    assert!(store_session.is_none());
    server.stop().await;
}

#[tokio::test]
async fn finished_sessions_refuse_runs_with_409() {
    let store = InMemorySessionStore::new();
    let manager = asm_runtime::SessionManager::new(store.clone(), ScriptedAdapter::new());
    let session = manager.start_session(asm_runtime::NewSession::new("a")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    manager.complete_session(&session.id).await.unwrap();
    let server = Running::start(ApiServer::builder().store(store).adapter("scripted", ScriptedAdapter::new())).await;
    let (status, body) =
        json(server.addr, "POST", &format!("/v1/sessions/{}/runs", session.id), Some(json!({"input": "x"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("invalid_transition")), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_token_is_required_and_compared() {
    let server = Running::start(builder().token("s3cret")).await;
    let addr = server.addr;
    let (status, body) = json(addr, "GET", "/v1/health", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let with = |token: &str, method: &str, path: &str, cookie: bool| {
        let mut req = request(method, addr, path, (method == "POST").then(|| json!({"agent_id": "a"})));
        let name = if cookie { "cookie" } else { "authorization" };
        let value = if cookie { format!("other=1; asm_token={token}") } else { format!("Bearer {token}") };
        req.headers_mut().insert(name, value.parse().unwrap());
        req
    };
    assert_eq!(send(addr, with("s3cret", "GET", "/v1/health", false)).await.status(), 200);
    assert_eq!(send(addr, with("s3cre", "GET", "/v1/health", false)).await.status(), 401);
    assert_eq!(send(addr, with("s3cret!", "GET", "/v1/health", false)).await.status(), 401);
    assert_eq!(send(addr, with("s3cret", "POST", "/v1/sessions", false)).await.status(), 201);
    // The cookie (the web view's EventSource) is accepted for reads only.
    assert_eq!(send(addr, with("s3cret", "GET", "/v1/sessions", true)).await.status(), 200);
    assert_eq!(send(addr, with("s3cret", "POST", "/v1/sessions", true)).await.status(), 401);
    // The page itself carries no data and is public.
    assert_eq!(send(addr, request("GET", addr, "/", None)).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_a_token() {
    let api = builder().build().unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = api.serve(listener, async {}).await.unwrap_err();
    assert_eq!(refused.code(), asm_core::ErrorCode::ValidationError);
    let Err(empty) = builder().token("  ").build() else { panic!("an empty token must be refused") };
    assert_eq!(empty.code(), asm_core::ErrorCode::ValidationError);
}

#[tokio::test]
async fn web_view_assets_are_embedded() {
    let server = Running::start(builder()).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/sessions/ses_x", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let response = send(server.addr, request("GET", server.addr, path, None)).await;
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        // The SVG namespace is a name, not something loaded.
        let text = String::from_utf8(body.to_vec()).unwrap().replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
        assert!(!text.contains("http://") && !text.contains("https://"), "{path} loads nothing from elsewhere");
    }
    server.stop().await;
}

#[tokio::test]
async fn openapi_document_is_served_and_checked_in() {
    let server = Running::start(builder()).await;
    let (status, served) = json(server.addr, "GET", "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let generated = serde_json::to_value(asm_http::openapi()).unwrap();
    assert_eq!(served, generated);
    for path in [
        "/v1/health",
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/cancel",
        "/v1/sessions/{id}/events",
        "/v1/sessions/{id}/events/stream",
    ] {
        assert!(generated["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    // Keys sorted: serde_json keeps insertion order when another crate of the build turns its
    // `preserve_order` feature on, and the checked-in file must not depend on that.
    let pretty = serde_json::to_string_pretty(&sorted_keys(generated)).unwrap() + "\n";
    if std::env::var_os("ASM_UPDATE_OPENAPI").is_some() {
        std::fs::write(&file, &pretty).unwrap();
    }
    let checked_in = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        checked_in == pretty,
        "docs/openapi.json is not the generated document; run `ASM_UPDATE_OPENAPI=1 cargo test -p asm-http --test api openapi` and commit it"
    );
    server.stop().await;
}

/// `value` with every object's keys in sorted order, whatever serde_json's map keeps.
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}
