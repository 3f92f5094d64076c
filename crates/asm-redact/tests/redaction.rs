//! Redaction rules (spec 10.3) and the store wrapper, which must keep the whole store contract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use asm_core::{Event, EventKind, JsonMap, RunInput, SessionId};
use asm_ports::{DynSessionStore, EventQuery, SessionStore, SessionStoreExt};
use asm_redact::{REDACTED_CATEGORIES, REDACTED_FIELDS, REDACTION_COUNT, RedactExt, Redactor, Replacement};
use asm_store_memory::InMemorySessionStore;
use proptest::prelude::*;
use serde_json::json;

fn map(value: serde_json::Value) -> JsonMap {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn event(kind: EventKind, data: serde_json::Value) -> Event {
    Event::new(kind, SessionId::new()).with_payload(map(data))
}

/// One sample per default category, with the text that must remain.
const SAMPLES: &[(&str, &str, &str)] = &[
    ("aws_access_key", "id AKIAIOSFODNN7EXAMPLE end", "id [REDACTED] end"),
    (
        "aws_secret_key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = [REDACTED]",
    ),
    ("gcp_api_key", "k=AIzaSyA1234567890abcdefghijklmnopqrstuv", "k=[REDACTED]"),
    ("anthropic_key", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "[REDACTED]"),
    ("openai_key", "key: sk-proj-abcdefghijklmnopqrstuvwxyz12", "key: [REDACTED]"),
    ("openai_legacy_key", "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", "[REDACTED]"),
    ("github_pat", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED]"),
    ("github_oauth", "gho_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED]"),
    ("github_app", "ghs_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED]"),
    ("github_refresh", "ghr_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED]"),
    ("github_fine_pat", "github_pat_11ABCDEFG0123456789_abcdefghij", "[REDACTED]"),
    ("gitlab_token", "glpat-abcdefghij0123456789", "[REDACTED]"),
    (
        "jwt_token",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "[REDACTED]",
    ),
    ("bearer_token", "Authorization: Bearer abcdefghijklmnopqrstuvwxyz", "Authorization: Bearer [REDACTED]"),
    ("password", "login with password=hunter2 now", "login with password=[REDACTED] now"),
    ("api_key_generic", r#"{"api_key": "abc123"}"#, r#"{"api_key": [REDACTED]}"#),
    ("secret_key", "SECRET-KEY: s3cr3t", "SECRET-KEY: [REDACTED]"),
    ("access_token", "access_token=tok123", "access_token=[REDACTED]"),
    ("auth_token", "authToken: 'xyz'", "authToken: [REDACTED]"),
    ("connection_string", "db at postgres://user:pw@db.internal:5432/app ok", "db at [REDACTED] ok"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIE", "[REDACTED]\nMIIE"),
    ("env_secret", "export SECRET_KEY_BASE=abcdef", "export SECRET_KEY_BASE=[REDACTED]"),
];

#[test]
fn every_default_category_is_found_and_only_the_secret_is_replaced() {
    let redactor = Redactor::new();
    for (category, input, expected) in SAMPLES {
        let (out, report) = redactor.redact_str(input);
        assert_eq!(&out, expected, "category {category}: input {input:?}");
        assert!(report.categories.contains(*category), "category {category}: got {:?}", report.categories);
    }
}

#[test]
fn text_without_secrets_is_untouched() {
    let redactor = Redactor::new();
    for text in ["", "hello world", "the password is in the vault", "sk-short", "git push", "Bearer short"] {
        let (out, report) = redactor.redact_str(text);
        assert_eq!(out, text);
        assert!(report.is_empty(), "{text:?}: {report:?}");
    }
}

#[test]
fn categorized_replacement_names_the_category() {
    let redactor = Redactor::builder().replacement(Replacement::Categorized).build().unwrap();
    assert_eq!(redactor.redact_str("AKIAIOSFODNN7EXAMPLE").0, "[REDACTED:aws_access_key]");
}

#[test]
fn custom_patterns_add_to_or_replace_the_defaults() {
    let added = Redactor::builder().pattern("ticket", r"TICKET-\d{4}", &["ticket-"]).unwrap().build().unwrap();
    assert_eq!(added.redact_str("TICKET-1234 AKIAIOSFODNN7EXAMPLE").0, "[REDACTED] [REDACTED]");
    let replaced =
        Redactor::builder().clear_patterns().pattern("ticket", r"TICKET-\d{4}", &[]).unwrap().build().unwrap();
    assert_eq!(replaced.redact_str("TICKET-1234 AKIAIOSFODNN7EXAMPLE").0, "[REDACTED] AKIAIOSFODNN7EXAMPLE");
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let err = Redactor::builder().pattern("broken", "(unclosed", &[]).unwrap_err();
    assert_eq!(err.code(), asm_core::ErrorCode::ValidationError);
    let err = Redactor::builder().pattern(" ", "x", &[]).unwrap_err();
    assert_eq!(err.code(), asm_core::ErrorCode::ValidationError);
    let err = Redactor::builder().replacement(Replacement::Fixed(String::new())).build().unwrap_err();
    assert_eq!(err.code(), asm_core::ErrorCode::ValidationError);
}

#[test]
fn deep_scan_reaches_nested_strings_and_records_what_changed() {
    let mut e = event(
        EventKind::ToolCallCompleted,
        json!({
            "tool_name": "bash",
            "tool_input": {"command": "curl -H 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz'"},
            "tool_output": ["ok", {"env": "DATABASE_URL=postgres://u:p@h/db"}],
            "exit_code": 0,
        }),
    );
    let report = Redactor::new().redact_event(&mut e);
    assert_eq!(e.data["tool_input"]["command"], "curl -H 'Authorization: Bearer [REDACTED]'");
    assert_eq!(e.data["tool_output"][1]["env"], "DATABASE_URL=[REDACTED]");
    assert_eq!(e.data["exit_code"], 0);
    assert_eq!(report.count, 2, "{report:?}");
    assert_eq!(e.metadata[REDACTION_COUNT], 2);
    assert_eq!(e.metadata[REDACTED_FIELDS], json!(["tool_input", "tool_output"]));
    assert_eq!(e.metadata[REDACTED_CATEGORIES], json!(["bearer_token", "connection_string"]));
}

#[test]
fn shallow_scan_only_reads_the_kinds_text_fields() {
    let redactor = Redactor::builder().deep_scan(false).build().unwrap();
    let mut e = event(EventKind::MessageReceived, json!({"content": "password=a", "other": "password=b"}));
    redactor.redact_event(&mut e);
    assert_eq!(e.data["content"], "password=[REDACTED]");
    assert_eq!(e.data["other"], "password=b");
}

#[test]
fn never_scanned_kinds_and_metadata_are_left_alone_unless_asked() {
    let redactor = Redactor::new();
    let mut started = event(EventKind::RunStarted, json!({"input": "password=a"}));
    assert!(redactor.redact_event(&mut started).is_empty());
    assert_eq!(started.data["input"], "password=a");

    let mut e = event(EventKind::MessageReceived, json!({"content": "fine"}));
    e.metadata.insert("note".into(), "password=a".into());
    assert!(redactor.redact_event(&mut e).is_empty());
    let with_metadata = Redactor::builder().scan_metadata(true).build().unwrap();
    with_metadata.redact_event(&mut e);
    assert_eq!(e.metadata["note"], "password=[REDACTED]");
}

#[test]
fn depth_beyond_ten_is_not_scanned() {
    let mut nested = json!("password=deep");
    for _ in 0..12 {
        nested = json!({ "n": nested });
    }
    let mut e = event(EventKind::MessageReceived, json!({ "content": nested }));
    assert!(Redactor::new().redact_event(&mut e).is_empty());
}

#[test]
fn an_event_without_secrets_is_not_copied() {
    let e = event(EventKind::MessageReceived, json!({"content": "nothing to see"}));
    let mut same = e.clone();
    Redactor::new().redact_event(&mut same);
    assert!(same.ptr_eq(&e));
}

#[tokio::test]
async fn readers_and_long_poll_followers_only_see_redacted_data() {
    let store = Arc::new(InMemorySessionStore::new().redacted(Redactor::new()));
    let session = asm_core::Session::new("agent").unwrap();
    store.save_session(&session).await.unwrap();
    let follower = {
        let store = store.clone();
        let id = session.id.clone();
        tokio::spawn(async move {
            store.get_events(&id, &EventQuery::new().wait(std::time::Duration::from_secs(10))).await.unwrap()
        })
    };
    let secret = Event::new(EventKind::MessageReceived, session.id.clone())
        .with_payload(map(json!({"content": "token ghp_abcdefghijklmnopqrstuvwxyz0123456789"})));
    let stored = store.append_event(secret).await.unwrap();
    assert_eq!(stored.data["content"], "token [REDACTED]");
    let followed = tokio::time::timeout(std::time::Duration::from_secs(10), follower)
        .await
        .expect("the long-poll reader was not woken within 10 s")
        .unwrap();
    assert_eq!(followed[0].data["content"], "token [REDACTED]");
    let read = store.inner().get_events(&session.id, &EventQuery::new()).await.unwrap();
    assert_eq!(read[0].data["content"], "token [REDACTED]");
    assert_eq!(read[0].metadata[REDACTION_COUNT], 1);
}

#[tokio::test]
async fn run_output_is_redacted_before_it_is_stored() {
    let store = InMemorySessionStore::new().redacted(Redactor::new());
    let session = asm_core::Session::new("agent").unwrap();
    store.save_session(&session).await.unwrap();
    let mut run = asm_core::Run::new(session.id.clone(), RunInput::user("hi"));
    store.save_run(&run).await.unwrap();
    run.transition(asm_core::RunStatus::Running).unwrap();
    store.save_run(&run).await.unwrap();
    run.complete(asm_core::RunOutput::text("the key is AKIAIOSFODNN7EXAMPLE")).unwrap();
    store.flush(asm_ports::ExecutionRecord::new(run.clone())).await.unwrap();
    let stored = store.get_run(&run.id).await.unwrap();
    assert_eq!(stored.output.unwrap().content, "the key is [REDACTED]");
}

proptest! {
    /// Redaction is idempotent: a redacted text has nothing left to redact.
    #[test]
    fn redaction_is_idempotent(prefix in "[ -~]{0,40}", pick in 0..SAMPLES.len(), suffix in "[ -~]{0,40}") {
        let redactor = Redactor::new();
        let text = format!("{prefix} {} {suffix}", SAMPLES[pick].1);
        let (once, _) = redactor.redact_str(&text);
        let (twice, report) = redactor.redact_str(&once);
        prop_assert_eq!(&twice, &once);
        prop_assert!(report.is_empty(), "second pass replaced {:?} in {:?}", report, once);
    }
}

/// The wrapper must keep every rule of the store contract.
mod conformance_of_the_wrapper {
    use super::*;

    fn wrapped() -> (DynSessionStore, ()) {
        (Arc::new(InMemorySessionStore::new().redacted(Redactor::new())), ())
    }

    asm_testkit::store_conformance_tests!(wrapped);
}

/// The documented split: callbacks and stored data are redacted, the in-process result is the
/// adapter's own.
#[tokio::test]
async fn through_the_runtime_callbacks_see_redacted_events_and_the_result_keeps_the_original() {
    use asm_runtime::{RunOptions, SessionManager};
    let secret = "the key is AKIAIOSFODNN7EXAMPLE";
    let store = Arc::new(InMemorySessionStore::new().redacted(Redactor::new()));
    let manager = SessionManager::from_shared(store.clone(), Arc::new(asm_testkit::ScriptedAdapter::replying(secret)));
    let session = manager.start_session(asm_runtime::NewSession::new("agent")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    let run = manager.start_run(&session.id, RunInput::user("hi"), RunOptions::default()).await.unwrap();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let result = manager
        .execute_run(&run.id, RunOptions::default().on_event(move |e| sink.lock().push(e.clone())))
        .await
        .unwrap();
    assert_eq!(result.output().content, secret);
    let seen = seen.lock().clone();
    assert!(seen.iter().all(|e| !serde_json::to_string(&e.data).unwrap().contains("AKIA")), "{seen:?}");
    let stored = store.inner().get_events(&session.id, &EventQuery::new()).await.unwrap();
    assert!(stored.iter().all(|e| !serde_json::to_string(&e.data).unwrap().contains("AKIA")));
    assert!(stored.iter().any(|e| e.metadata.contains_key(REDACTION_COUNT)));
    assert_eq!(store.inner().get_run(&run.id).await.unwrap().output.unwrap().content, "the key is [REDACTED]");
}
