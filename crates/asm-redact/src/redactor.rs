use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind, packed};
use regex::Regex;
use serde_json::Value;

use asm_core::{Error, ErrorCode, Event, EventKind, JsonMap, Result, keys};

use crate::patterns::DEFAULTS;

/// Event metadata key: how many secrets were replaced in the event.
pub const REDACTION_COUNT: &str = "redaction_count";
/// Event metadata key: the top-level `data` (or `metadata`) keys whose values changed.
pub const REDACTED_FIELDS: &str = "redacted_fields";
/// Event metadata key: the categories of the replaced secrets, sorted, without repeats.
pub const REDACTED_CATEGORIES: &str = "redacted_categories";

/// Strings nested deeper than this inside `data` are not scanned (spec 10.3).
const MAX_DEPTH: usize = 10;

/// The kinds that are never scanned (spec 10.3): lifecycle records and measurements, which carry
/// no free text.
pub const NEVER_SCANNED: &[EventKind] = &[
    EventKind::SessionCreated,
    EventKind::SessionStarted,
    EventKind::SessionPaused,
    EventKind::SessionResumed,
    EventKind::SessionCompleted,
    EventKind::SessionCancelled,
    EventKind::RunStarted,
    EventKind::RunCancelled,
    EventKind::RunTimeout,
    EventKind::TokenUsageUpdated,
    EventKind::TurnCompleted,
    EventKind::WorkspaceSnapshotTaken,
    EventKind::WorkspaceDiffComputed,
    EventKind::ErrorRecovered,
];

/// What replaces a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replacement {
    /// The same text for every secret (default `[REDACTED]`).
    Fixed(String),
    /// `[REDACTED:<category>]`.
    Categorized,
}

impl Default for Replacement {
    fn default() -> Self {
        Self::Fixed("[REDACTED]".into())
    }
}

/// What one redaction pass replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedactionReport {
    /// Number of individual matches replaced.
    pub count: usize,
    /// Top-level keys whose values changed, sorted.
    pub fields: BTreeSet<String>,
    /// Categories of the replaced secrets, sorted.
    pub categories: BTreeSet<String>,
}

impl RedactionReport {
    /// Whether nothing was replaced.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

struct CompiledPattern {
    category: String,
    regex: Regex,
    /// Index of the `secret` group: only that part of a match is replaced (a key such as
    /// `password=` stays readable).
    secret_group: Option<usize>,
    /// Patterns added without literals run on every string.
    always: bool,
}

struct Compiled {
    patterns: Vec<CompiledPattern>,
    /// Literals of the patterns that have some; `literal_owner[i]` is the pattern of literal `i`.
    prefilter: Option<AhoCorasick>,
    literal_owner: Vec<usize>,
    /// The same literals, lower-cased, in a SIMD (Teddy) searcher run on the lower-cased text:
    /// the fast "does any literal occur at all" gate (most strings have none). `None` where
    /// the packed searcher is unavailable (CPU, too many literals): the Aho-Corasick automaton
    /// answers instead.
    gate: Option<packed::Searcher>,
    replacement: Replacement,
    deep_scan: bool,
    scan_metadata: bool,
    never_scanned: Vec<EventKind>,
}

/// Replaces secrets (cloud keys, API keys, tokens, passwords, connection strings, private key
/// headers, ...) in event payloads before they are persisted.
///
/// A cheap, cloneable, `Send + Sync` handle over compiled patterns. Strings are first checked by
/// one case-insensitive multi-literal scan (every default pattern has literals that must occur
/// for it to match); only the patterns whose literals occur run their regex, so a string without
/// secrets costs one linear scan.
///
/// ```
/// use asm_redact::Redactor;
/// let redactor = Redactor::new();
/// let (text, report) = redactor.redact_str("key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123 ok");
/// assert_eq!(text, "key [REDACTED] ok");
/// assert_eq!(report.count, 1);
/// assert!(report.categories.contains("anthropic_key"));
/// ```
#[derive(Clone)]
pub struct Redactor {
    compiled: Arc<Compiled>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.compiled.patterns.iter().map(|p| p.category.as_str()).collect::<Vec<_>>())
            .field("replacement", &self.compiled.replacement)
            .field("deep_scan", &self.compiled.deep_scan)
            .field("scan_metadata", &self.compiled.scan_metadata)
            .finish()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

impl Redactor {
    /// The default patterns, `[REDACTED]`, deep scan of `data`, metadata not scanned.
    pub fn new() -> Self {
        #[allow(clippy::expect_used)] // the defaults are constants covered by tests
        RedactorBuilder::new().build().expect("the default patterns compile")
    }

    /// The default patterns as `(category, regex)`, in the order they are applied.
    pub fn default_patterns() -> impl Iterator<Item = (&'static str, &'static str)> {
        DEFAULTS.iter().map(|p| (p.category, p.regex))
    }

    /// A builder starting from the defaults.
    pub fn builder() -> RedactorBuilder {
        RedactorBuilder::new()
    }

    /// Redacts one string; returns the new text and what was replaced.
    pub fn redact_str(&self, text: &str) -> (String, RedactionReport) {
        let mut report = RedactionReport::default();
        let out = self.redact_string(text, &mut report).unwrap_or_else(|| text.to_owned());
        (out, report)
    }

    /// Deep-scans every string of a JSON object (maps and lists, up to depth 10) in place; for
    /// user callbacks and other maps (the spec's `redact_map`).
    pub fn redact_map(&self, map: &mut JsonMap) -> RedactionReport {
        let mut report = RedactionReport::default();
        for (key, value) in map.iter_mut() {
            self.redact_field(key, value, &mut report);
        }
        report
    }

    /// Redacts an event in place, unless its kind is never scanned, and records on its metadata
    /// what was replaced ([`REDACTION_COUNT`], [`REDACTED_FIELDS`], [`REDACTED_CATEGORIES`]).
    /// An event without secrets is not touched (not even copied).
    pub fn redact_event(&self, event: &mut Event) -> RedactionReport {
        let c = &self.compiled;
        let mut report = RedactionReport::default();
        if c.never_scanned.contains(&event.kind) {
            return report;
        }
        let scan_data = self.needs_data_scan(event);
        let scan_metadata = c.scan_metadata && self.any_hit_map(&event.metadata, 0);
        if !scan_data && !scan_metadata {
            return report;
        }
        let kind = event.kind;
        let record = &mut **event;
        if scan_data {
            for (key, value) in record.data.iter_mut() {
                if c.deep_scan || shallow_fields(kind).contains(&key.as_str()) {
                    self.redact_field(key, value, &mut report);
                }
            }
        }
        if scan_metadata {
            for (key, value) in record.metadata.iter_mut() {
                self.redact_field(key, value, &mut report);
            }
        }
        if !report.is_empty() {
            record.metadata.insert(REDACTION_COUNT.into(), report.count.into());
            record.metadata.insert(REDACTED_FIELDS.into(), report.fields.iter().cloned().collect::<Vec<_>>().into());
            record
                .metadata
                .insert(REDACTED_CATEGORIES.into(), report.categories.iter().cloned().collect::<Vec<_>>().into());
            tracing::debug!(
                kind = kind.as_str(),
                redaction_count = report.count,
                fields = ?report.fields,
                "event redacted"
            );
        }
        report
    }

    fn needs_data_scan(&self, event: &Event) -> bool {
        let c = &self.compiled;
        event
            .data
            .iter()
            .filter(|(key, _)| c.deep_scan || shallow_fields(event.kind).contains(&key.as_str()))
            .any(|(_, value)| self.any_hit(value, 1))
    }

    fn any_hit_map(&self, map: &JsonMap, depth: usize) -> bool {
        map.values().any(|value| self.any_hit(value, depth + 1))
    }

    fn any_hit(&self, value: &Value, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match value {
            Value::String(text) => self.may_match(text),
            Value::Array(items) => items.iter().any(|v| self.any_hit(v, depth + 1)),
            Value::Object(map) => self.any_hit_map(map, depth),
            _ => false,
        }
    }

    fn redact_field(&self, key: &str, value: &mut Value, report: &mut RedactionReport) {
        let before = report.count;
        self.redact_value(value, 1, report);
        if report.count > before {
            report.fields.insert(key.to_owned());
        }
    }

    fn redact_value(&self, value: &mut Value, depth: usize, report: &mut RedactionReport) {
        if depth > MAX_DEPTH {
            return;
        }
        match value {
            Value::String(text) => {
                if let Some(new) = self.redact_string(text, report) {
                    *text = new;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v, depth + 1, report)),
            Value::Object(map) => map.values_mut().for_each(|v| self.redact_value(v, depth + 1, report)),
            _ => {}
        }
    }

    /// Whether any pattern could match `text` (the prefilter alone).
    fn may_match(&self, text: &str) -> bool {
        let c = &self.compiled;
        if c.patterns.iter().any(|p| p.always) {
            return true;
        }
        match (&c.gate, &c.prefilter) {
            (Some(gate), _) => {
                let lowered = if text.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(text.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(text)
                };
                // Leftmost search: it finds a match exactly when some literal occurs anywhere.
                gate.find(lowered.as_bytes()).is_some()
            }
            (None, Some(ac)) => ac.is_match(text),
            (None, None) => false,
        }
    }

    /// The redacted text, or `None` when nothing matched.
    fn redact_string(&self, text: &str, report: &mut RedactionReport) -> Option<String> {
        let c = &self.compiled;
        if !self.may_match(text) {
            return None;
        }
        let mut candidates = vec![false; c.patterns.len()];
        let mut any = false;
        for (i, pattern) in c.patterns.iter().enumerate() {
            if pattern.always {
                candidates[i] = true;
                any = true;
            }
        }
        if let Some(ac) = &c.prefilter {
            for hit in ac.find_overlapping_iter(text) {
                candidates[c.literal_owner[hit.pattern().as_usize()]] = true;
                any = true;
            }
        }
        if !any {
            return None;
        }
        let mut current: Option<String> = None;
        for (pattern, _) in c.patterns.iter().zip(&candidates).filter(|(_, hit)| **hit) {
            let haystack = current.as_deref().unwrap_or(text);
            let mut count = 0usize;
            let replacement = match &c.replacement {
                Replacement::Fixed(text) => text.clone(),
                Replacement::Categorized => format!("[REDACTED:{}]", pattern.category),
            };
            let replaced = pattern.regex.replace_all(haystack, |caps: &regex::Captures<'_>| {
                let whole = caps.get(0).map_or("", |m| m.as_str());
                let secret = pattern.secret_group.and_then(|g| caps.get(g));
                // A value an earlier pattern (or an earlier pass) already replaced stays as it
                // is and is not counted twice: redaction is idempotent.
                if secret.is_some_and(|s| is_replacement(s.as_str(), &replacement)) {
                    return whole.to_owned();
                }
                count += 1;
                match secret {
                    Some(secret) => {
                        let start = secret.start() - caps.get(0).map_or(0, |m| m.start());
                        let end = start + secret.len();
                        format!("{}{}{}", &whole[..start], replacement, &whole[end..])
                    }
                    None => replacement.clone(),
                }
            });
            if count > 0 {
                report.count += count;
                report.categories.insert(pattern.category.clone());
                current = Some(replaced.into_owned());
            }
        }
        current
    }
}

/// Whether `text` is a replacement this redactor wrote.
fn is_replacement(text: &str, replacement: &str) -> bool {
    let text = text.trim_matches(|c| c == '"' || c == '\'');
    text == replacement || text.starts_with("[REDACTED")
}

/// The fields scanned without deep scan (spec 10.3), with everything nested under them.
fn shallow_fields(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::MessageSent | EventKind::MessageReceived => &[keys::CONTENT],
        EventKind::MessageStreamed => &[keys::CONTENT, keys::DELTA],
        EventKind::ToolCallStarted => &[keys::TOOL_INPUT],
        EventKind::ToolCallCompleted | EventKind::ToolCallFailed => &[keys::TOOL_INPUT, keys::TOOL_OUTPUT],
        EventKind::ErrorOccurred | EventKind::RunFailed | EventKind::SessionFailed => {
            &[keys::ERROR_MESSAGE, keys::PROVIDER_ERROR]
        }
        EventKind::PolicyViolation => &[keys::DETAILS],
        _ => &[],
    }
}

/// Builds a [`Redactor`]; starts from the default patterns.
///
/// ```
/// use asm_redact::{Redactor, Replacement};
/// # fn main() -> asm_core::Result<()> {
/// let redactor = Redactor::builder()
///     .pattern("ticket", r"TICKET-\d{6}", &["ticket-"])?
///     .replacement(Replacement::Categorized)
///     .build()?;
/// assert_eq!(redactor.redact_str("see TICKET-123456").0, "see [REDACTED:ticket]");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedactorBuilder {
    patterns: Vec<(String, String, Vec<String>)>,
    replacement: Replacement,
    deep_scan: bool,
    scan_metadata: bool,
    never_scanned: Vec<EventKind>,
}

impl Default for RedactorBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RedactorBuilder {
    /// The defaults: every default pattern, `[REDACTED]`, deep scan, metadata not scanned, the
    /// spec's never-scanned kinds.
    pub fn new() -> Self {
        Self {
            patterns: DEFAULTS
                .iter()
                .map(|p| {
                    (p.category.to_owned(), p.regex.to_owned(), p.literals.iter().map(|l| (*l).to_owned()).collect())
                })
                .collect(),
            replacement: Replacement::default(),
            deep_scan: true,
            scan_metadata: false,
            never_scanned: NEVER_SCANNED.to_vec(),
        }
    }

    /// Adds a pattern after the current ones. `literals` (matched case-insensitively) must each
    /// be a substring that any match contains at least one of; they let strings without them
    /// skip the regex. With no literals the regex runs on every string. A named group
    /// `secret` limits the replacement to that part of the match.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for an empty category or an invalid regex.
    pub fn pattern(mut self, category: impl Into<String>, regex: &str, literals: &[&str]) -> Result<Self> {
        let category = category.into();
        if category.trim().is_empty() {
            return Err(Error::new(ErrorCode::ValidationError, "a redaction pattern needs a category"));
        }
        Regex::new(regex).map_err(|e| invalid_regex(&category, &e))?;
        self.patterns.push((category, regex.to_owned(), literals.iter().map(|l| (*l).to_owned()).collect()));
        Ok(self)
    }

    /// Removes every pattern (the defaults included); add your own with
    /// [`pattern`](Self::pattern) (the spec's `{replace, list}`).
    pub fn clear_patterns(mut self) -> Self {
        self.patterns.clear();
        self
    }

    /// What replaces a secret.
    pub fn replacement(mut self, replacement: Replacement) -> Self {
        self.replacement = replacement;
        self
    }

    /// Scan every string of `data` (default) or only the kind's text fields.
    pub fn deep_scan(mut self, deep: bool) -> Self {
        self.deep_scan = deep;
        self
    }

    /// Also scan `metadata` (default off).
    pub fn scan_metadata(mut self, scan: bool) -> Self {
        self.scan_metadata = scan;
        self
    }

    /// Replaces the set of kinds that are never scanned.
    pub fn never_scan(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Self {
        self.never_scanned = kinds.into_iter().collect();
        self
    }

    /// Compiles the patterns.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for an invalid regex or an empty replacement.
    pub fn build(self) -> Result<Redactor> {
        if matches!(&self.replacement, Replacement::Fixed(text) if text.is_empty()) {
            return Err(Error::new(ErrorCode::ValidationError, "the redaction replacement must not be empty"));
        }
        let mut patterns = Vec::with_capacity(self.patterns.len());
        let mut literals = Vec::new();
        let mut literal_owner = Vec::new();
        for (index, (category, source, pattern_literals)) in self.patterns.into_iter().enumerate() {
            let regex = Regex::new(&source).map_err(|e| invalid_regex(&category, &e))?;
            let secret_group = regex.capture_names().position(|name| name == Some("secret"));
            let always = pattern_literals.iter().all(String::is_empty);
            for literal in pattern_literals.into_iter().filter(|l| !l.is_empty()) {
                literals.push(literal);
                literal_owner.push(index);
            }
            patterns.push(CompiledPattern { category, regex, secret_group, always });
        }
        let gate = if literals.is_empty() {
            None
        } else {
            let mut builder = packed::Config::new().builder();
            for literal in &literals {
                builder.add(literal.to_ascii_lowercase());
            }
            builder.build()
        };
        let prefilter = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&literals)
                    .map_err(|e| Error::new(ErrorCode::ValidationError, format!("redaction literals: {e}")))?,
            )
        };
        Ok(Redactor {
            compiled: Arc::new(Compiled {
                patterns,
                prefilter,
                literal_owner,
                gate,
                replacement: self.replacement,
                deep_scan: self.deep_scan,
                scan_metadata: self.scan_metadata,
                never_scanned: self.never_scanned,
            }),
        })
    }
}

fn invalid_regex(category: &str, error: &regex::Error) -> Error {
    Error::new(ErrorCode::ValidationError, format!("redaction pattern {category:?} is not a valid regex: {error}"))
        .with_detail("category", category)
}
