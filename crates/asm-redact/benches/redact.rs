//! Redaction overhead per 1 KB event without secrets (target <= 2 us), beside two raw baselines in
//! the same run: one `memmem` scan of the text for a single literal (the floor of any scan), and a
//! `RegexSet` of the same default patterns (what scanning without the literal prefilter costs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use asm_core::{Event, EventKind, SessionId};
use asm_redact::Redactor;
use criterion::{Criterion, black_box, criterion_group, criterion_main};

fn kilobyte_event() -> Event {
    let sentence = "The test in crates/parser/src/lib.rs fails because the tokenizer drops the last line; ";
    let content: String = sentence.repeat(1024 / sentence.len() + 1).chars().take(1024).collect();
    Event::new(EventKind::MessageReceived, SessionId::new())
        .with_payload(serde_json::json!({"content": content, "role": "assistant"}).as_object().cloned().unwrap())
}

fn bench(c: &mut Criterion) {
    let redactor = Redactor::new();
    let event = kilobyte_event();
    let mut group = c.benchmark_group("redact_1kb_event_no_secrets");
    let text = event.data["content"].as_str().unwrap().to_owned();
    let finder = memchr::memmem::Finder::new("password");
    group.bench_function("baseline_memmem_one_literal", |b| {
        b.iter(|| black_box(finder.find(black_box(text.as_bytes()))))
    });
    let set = regex::RegexSet::new(Redactor::default_patterns().map(|(_, re)| re)).unwrap();
    group.bench_function("baseline_regex_set_of_defaults", |b| b.iter(|| black_box(set.is_match(black_box(&text)))));
    group.bench_function("redact_event", |b| {
        b.iter(|| {
            let mut e = event.clone();
            black_box(redactor.redact_event(&mut e))
        })
    });
    group.finish();
    let mut secret = kilobyte_event();
    secret.data.insert("extra".into(), "password=hunter2 and ghp_abcdefghijklmnopqrstuvwxyz0123456789".into());
    c.bench_function("redact_1kb_event_two_secrets", |b| {
        b.iter(|| {
            let mut e = secret.clone();
            black_box(redactor.redact_event(&mut e))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
