//! Provider error normalisation (spec 1.10).
//!
//! A [`ProviderError`] is the stable, provider-independent description of a provider failure that
//! is stored in [`Error::provider_error`](crate::Error::provider_error), in a failed run's error
//! and in failure event data. Adapters build one directly
//! ([`ProviderError::new`] and the `with_*` methods) or from a loose JSON object
//! ([`ProviderError::normalize`]). Captured stderr is always bounded by [`StderrLimits`].
//!
//! ```
//! use asm_core::{ProviderError, ProviderErrorKind, ProviderName, StderrLimits};
//!
//! let err = ProviderError::new(ProviderName::Claude, ProviderErrorKind::TransportExit, "CLI exited")
//!     .with_exit_code(2)
//!     .with_stderr("fatal: bad flag\n", StderrLimits::default());
//! let json = serde_json::to_value(&err)?;
//! assert_eq!(json["provider"], "claude");
//! assert_eq!(json["kind"], "transport_exit");
//! assert_eq!(json["exit_code"], 2);
//! assert!(json.get("truncated").is_none()); // never `false`
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::JsonMap;

/// The provider a [`ProviderError`] came from: a built-in name, any other adapter's own name
/// ([`ProviderName::Other`]), or [`ProviderName::Unknown`] when there is none. Serialised as the
/// lowercase name; deserialising maps it back with [`ProviderName::from_name`].
///
/// Provider names are open: a third-party adapter names itself with [`ProviderName::custom`]
/// (a `const`, for [`CliProtocol`-style](https://docs.rs/asm-provider-cli) constants) or gets its
/// name from [`ProviderName::from_name`] at run time, so its errors say who failed instead of
/// `unknown`. The type stays `Copy`: custom names are `&'static str` (names read at run time are
/// interned once per distinct name, at most [`ProviderName::MAX_INTERNED`] of them).
///
/// ```
/// use asm_core::ProviderName;
/// assert_eq!(ProviderName::from_name(" Codex "), ProviderName::Codex);
/// assert_eq!(ProviderName::Amp.as_str(), "amp");
/// const MINE: ProviderName = ProviderName::custom("my-agent");
/// assert_eq!(MINE.as_str(), "my-agent");
/// assert_eq!(ProviderName::from_name("My-Agent"), MINE);
/// assert_eq!(ProviderName::from_name("not a name!"), ProviderName::Unknown);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderName {
    /// Claude Code.
    Claude,
    /// Codex.
    Codex,
    /// Amp.
    Amp,
    /// Gemini.
    Gemini,
    /// The shell adapter (`asm-provider-shell`): commands run through `sh -c` or an argv.
    Shell,
    /// The ACP adapter (`asm-provider-acp`): any agent that speaks the Agent Client Protocol.
    Acp,
    /// Any other adapter, by its own name.
    Other(CustomProviderName),
    /// No usable name (empty, or not of the form [`ProviderName::custom`] accepts).
    Unknown,
}

/// The name of a provider outside the built-in ones (see [`ProviderName::custom`]): 1 to 64
/// bytes of lowercase ASCII letters, digits, `-`, `_` and `.`, starting with a letter, and not a
/// built-in name. Only [`ProviderName`] builds one, so a built-in provider is never an `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CustomProviderName(&'static str);

impl CustomProviderName {
    /// The name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

const BUILT_IN: &[(&str, ProviderName)] = &[
    ("claude", ProviderName::Claude),
    ("codex", ProviderName::Codex),
    ("amp", ProviderName::Amp),
    ("gemini", ProviderName::Gemini),
    ("shell", ProviderName::Shell),
    ("acp", ProviderName::Acp),
    ("unknown", ProviderName::Unknown),
];

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn built_in(name: &str) -> Option<ProviderName> {
    let mut i = 0;
    while i < BUILT_IN.len() {
        if bytes_eq(BUILT_IN[i].0.as_bytes(), name.as_bytes()) {
            return Some(BUILT_IN[i].1);
        }
        i += 1;
    }
    None
}

/// Whether `name` has the form of a custom provider name (lowercase already).
const fn well_formed(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 64 || !b[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_' || c == b'.') {
            return false;
        }
        i += 1;
    }
    true
}

/// Interned custom names read at run time, so [`ProviderName`] stays `Copy`.
fn intern(name: &str) -> Option<&'static str> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return Some(known);
    }
    if names.len() >= ProviderName::MAX_INTERNED {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    Some(leaked)
}

impl ProviderName {
    /// Every built-in provider name ([`Other`](Self::Other) names are open-ended).
    pub const ALL: &'static [ProviderName] = &[
        ProviderName::Claude,
        ProviderName::Codex,
        ProviderName::Amp,
        ProviderName::Gemini,
        ProviderName::Shell,
        ProviderName::Acp,
        ProviderName::Unknown,
    ];

    /// How many distinct custom names [`from_name`](Self::from_name) keeps; later new names map
    /// to [`ProviderName::Unknown`], which bounds the memory a stream of made-up names can take.
    pub const MAX_INTERNED: usize = 4096;

    /// A provider name for a constant: the built-in variant when `name` is a built-in name,
    /// else [`ProviderName::Other`].
    ///
    /// # Panics
    /// When `name` is not 1 to 64 bytes of lowercase ASCII letters, digits, `-`, `_`, `.`
    /// starting with a letter; in a `const` this is a compile error. Use
    /// [`from_name`](Self::from_name) for names read at run time (it never panics).
    pub const fn custom(name: &'static str) -> Self {
        if let Some(known) = built_in(name) {
            return known;
        }
        assert!(
            well_formed(name),
            "a provider name is 1-64 lowercase ASCII letters, digits, '-', '_' or '.', starting with a letter"
        );
        ProviderName::Other(CustomProviderName(name))
    }

    /// Maps a provider name, trimmed and case-insensitively: a built-in name to its variant,
    /// another well-formed name (see [`custom`](Self::custom)) to [`ProviderName::Other`],
    /// anything else to [`ProviderName::Unknown`].
    pub fn from_name(name: &str) -> Self {
        let lower = name.trim().to_ascii_lowercase();
        if let Some(known) = built_in(&lower) {
            return known;
        }
        if !well_formed(&lower) {
            return ProviderName::Unknown;
        }
        intern(&lower).map_or(ProviderName::Unknown, |name| ProviderName::Other(CustomProviderName(name)))
    }

    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderName::Claude => "claude",
            ProviderName::Codex => "codex",
            ProviderName::Amp => "amp",
            ProviderName::Gemini => "gemini",
            ProviderName::Shell => "shell",
            ProviderName::Acp => "acp",
            ProviderName::Other(name) => name.0,
            ProviderName::Unknown => "unknown",
        }
    }
}

impl Serialize for ProviderName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProviderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::from_name(&name))
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with a provider. Unknown names map to [`ProviderErrorKind::Unknown`] (also
/// when deserialising). Serialised as the snake_case name.
///
/// ```
/// use asm_core::ProviderErrorKind;
/// assert_eq!(ProviderErrorKind::from_name(" CLI_NOT_FOUND\n"), ProviderErrorKind::CliNotFound);
/// assert_eq!(ProviderErrorKind::from_name("segfault"), ProviderErrorKind::Unknown);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderErrorKind {
    /// The provider process exited unexpectedly (non-zero exit, early EOF, signal).
    TransportExit,
    /// The provider process could not be run or managed.
    ProcessError,
    /// Provider output could not be parsed.
    ParseError,
    /// Provider output was parseable but broke the expected protocol.
    ProtocolError,
    /// The provider CLI was not found.
    CliNotFound,
    /// The provider did not answer in time.
    Timeout,
    /// Anything else.
    #[serde(other)]
    Unknown,
}

crate::string_enum! {
    /// The snake_case name.
    ProviderErrorKind {
        TransportExit => "transport_exit",
        ProcessError => "process_error",
        ParseError => "parse_error",
        ProtocolError => "protocol_error",
        CliNotFound => "cli_not_found",
        Timeout => "timeout",
        Unknown => "unknown",
    }
    /// Every kind.
    pub const ALL;
}

impl ProviderErrorKind {
    /// Maps a kind name, trimmed and lowercased; anything unrecognised is
    /// [`ProviderErrorKind::Unknown`].
    pub fn from_name(name: &str) -> Self {
        let name = name.trim().to_lowercase();
        Self::ALL.iter().copied().find(|kind| kind.as_str() == name).unwrap_or(ProviderErrorKind::Unknown)
    }
}

/// Bounds for captured stderr: at most `max_lines` lines, then at most `max_bytes` bytes.
///
/// ```
/// use asm_core::StderrLimits;
/// let limits = StderrLimits::default();
/// assert_eq!((limits.max_lines, limits.max_bytes), (200, 16_384));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StderrLimits {
    /// Maximum number of lines kept (default 200).
    pub max_lines: usize,
    /// Maximum number of bytes kept, cut back to a UTF-8 character boundary (default 16384).
    pub max_bytes: usize,
}

impl StderrLimits {
    /// Default maximum number of lines.
    pub const DEFAULT_MAX_LINES: usize = 200;
    /// Default maximum number of bytes.
    pub const DEFAULT_MAX_BYTES: usize = 16_384;

    /// Limits with these bounds.
    pub const fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self { max_lines, max_bytes }
    }
}

impl Default for StderrLimits {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LINES, Self::DEFAULT_MAX_BYTES)
    }
}

/// Bounds `stderr` by `limits`: keeps the first `max_lines` lines (a line ends at `\n`; when
/// lines are dropped the newline ending the last kept line is dropped too), then at most
/// `max_bytes` bytes, cutting back to a UTF-8 character boundary. Returns the kept text and
/// whether anything was removed.
///
/// ```
/// use asm_core::StderrLimits;
/// use asm_core::provider_error::truncate_stderr;
///
/// assert_eq!(truncate_stderr("a\nb\nc\n", StderrLimits::new(2, 100)), ("a\nb".to_string(), true));
/// assert_eq!(truncate_stderr("a\nb\n", StderrLimits::new(2, 100)), ("a\nb\n".to_string(), false));
/// // 'é' is two bytes: three bytes keep only one of them.
/// assert_eq!(truncate_stderr("éé", StderrLimits::new(10, 3)), ("é".to_string(), true));
/// ```
pub fn truncate_stderr(stderr: &str, limits: StderrLimits) -> (String, bool) {
    let mut kept = stderr;
    let mut truncated = false;

    if limits.max_lines == 0 {
        truncated = !kept.is_empty();
        kept = "";
    } else if let Some((index, _)) = kept.match_indices('\n').nth(limits.max_lines - 1) {
        // `index` ends line number `max_lines`; anything after it is dropped.
        if index + 1 < kept.len() {
            truncated = true;
            kept = &kept[..index];
        }
    }

    if kept.len() > limits.max_bytes {
        let mut end = limits.max_bytes;
        while !kept.is_char_boundary(end) {
            end -= 1;
        }
        kept = &kept[..end];
        truncated = true;
    }
    (kept.to_owned(), truncated)
}

/// Deserialises `truncated`, mapping `false` to `None` so the field is never `Some(false)`.
fn deserialize_truncated<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.filter(|&t| t))
}

/// The normalised payload of a provider failure.
///
/// `None` fields are left out of the JSON form. `truncated` is `Some(true)` when the stored
/// stderr (or the provider's own report) is incomplete and `None` otherwise, never `Some(false)`.
///
/// ```
/// use asm_core::{ProviderError, ProviderErrorKind, ProviderName, StderrLimits};
///
/// let attrs = serde_json::json!({
///     "kind": " Timeout ",
///     "details": {"exit_status": "124", "stderr": "\n  deadline exceeded  \nmore", "attempt": 2}
/// });
/// let (err, details) =
///     ProviderError::normalize("CODEX", attrs.as_object().unwrap(), StderrLimits::default());
/// assert_eq!(err.provider, ProviderName::Codex);
/// assert_eq!(err.kind, ProviderErrorKind::Timeout);
/// assert_eq!(err.message, "deadline exceeded");
/// assert_eq!(err.exit_code, Some(124));
/// assert_eq!(err.truncated, None);
/// assert_eq!(serde_json::Value::Object(details), serde_json::json!({"attempt": 2}));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderError {
    /// The provider.
    pub provider: ProviderName,
    /// What went wrong.
    pub kind: ProviderErrorKind,
    /// A human-readable message; never empty when built by [`ProviderError::normalize`].
    pub message: String,
    /// The provider process's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Captured stderr, bounded by [`StderrLimits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// `Some(true)` when stderr was truncated; never `Some(false)`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "deserialize_truncated")]
    pub truncated: Option<bool>,
}

/// The message used when neither a message nor stderr is available.
pub const DEFAULT_MESSAGE: &str = "Provider execution failed";

impl ProviderError {
    /// An error with a message and nothing else.
    pub fn new(provider: ProviderName, kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self { provider, kind, message: message.into(), exit_code: None, stderr: None, truncated: None }
    }

    crate::builder_setters! {
        /// Sets the exit code.
        fn with_exit_code(exit_code: i32) { exit_code = Some(exit_code) }
    }

    /// Sets stderr, bounded by `limits`; marks the error truncated when anything was cut (an
    /// earlier truncation mark is kept).
    #[must_use]
    pub fn with_stderr(mut self, stderr: &str, limits: StderrLimits) -> Self {
        let (kept, truncated) = truncate_stderr(stderr, limits);
        self.stderr = Some(kept);
        if truncated {
            self.truncated = Some(true);
        }
        self
    }

    /// Marks the error truncated (for example because the provider reported that its own output
    /// was cut).
    #[must_use]
    pub fn with_truncated(mut self) -> Self {
        self.truncated = Some(true);
        self
    }

    /// Whether stderr (or the provider's report) is incomplete.
    pub fn is_truncated(&self) -> bool {
        self.truncated == Some(true)
    }

    /// Normalises a loose attribute object (spec 1.10). Returns the error and the remaining
    /// details.
    ///
    /// Keys are read from `attrs` first, then from `attrs["details"]` (when it is an object):
    ///
    /// * `provider`: [`ProviderName::from_name`] of the `provider` argument.
    /// * `kind`: a string mapped by [`ProviderErrorKind::from_name`]; missing or not a string →
    ///   `unknown`.
    /// * `message`: the first non-blank string among `attrs.message`, `details.message`; else the
    ///   first non-blank line of the (truncated) stderr, trimmed; else `"Provider execution
    ///   failed"`.
    /// * `exit_code`: the first of `attrs.exit_code`, `details.exit_code`,
    ///   `details.exit_status`, `attrs.exit_status` that is an integer in `i32` range or a string
    ///   holding one.
    /// * `stderr`: `attrs.stderr` or `details.stderr` (`null` counts as absent), truncated by
    ///   `limits`; a non-string value is stored as its JSON text and counts as truncated.
    /// * `truncated`: `Some(true)` when truncation happened or any of `attrs.truncated`,
    ///   `attrs["truncated?"]`, `attrs.stderr_truncated`, `attrs["stderr_truncated?"]`,
    ///   `details.stderr_truncated`, `details["stderr_truncated?"]` is truthy (`true`, `"true"`
    ///   or `"1"`); otherwise `None`.
    ///
    /// The returned details are `attrs.details` without `stderr`, `stderr_truncated?`,
    /// `stderr_truncated`, `exit_code` and `exit_status`.
    pub fn normalize(provider: &str, attrs: &JsonMap, limits: StderrLimits) -> (Self, JsonMap) {
        use serde_json::Value;

        let empty = JsonMap::new();
        let details = match attrs.get("details") {
            Some(Value::Object(details)) => details,
            _ => &empty,
        };
        let lookup =
            |key: &str| attrs.get(key).filter(|v| !v.is_null()).or_else(|| details.get(key).filter(|v| !v.is_null()));

        let kind = match lookup("kind") {
            Some(Value::String(kind)) => ProviderErrorKind::from_name(kind),
            _ => ProviderErrorKind::Unknown,
        };

        let exit_code =
            [attrs.get("exit_code"), details.get("exit_code"), details.get("exit_status"), attrs.get("exit_status")]
                .into_iter()
                .flatten()
                .find_map(parse_exit_code);

        let mut truncated = ["truncated", "truncated?", "stderr_truncated", "stderr_truncated?"]
            .iter()
            .any(|key| attrs.get(*key).is_some_and(is_truthy))
            || ["stderr_truncated", "stderr_truncated?"].iter().any(|key| details.get(*key).is_some_and(is_truthy));

        let stderr = lookup("stderr").map(|value| {
            let (text, forced) = match value {
                Value::String(text) => (std::borrow::Cow::Borrowed(text.as_str()), false),
                other => (std::borrow::Cow::Owned(other.to_string()), true),
            };
            let (kept, cut) = truncate_stderr(&text, limits);
            truncated |= cut || forced;
            kept
        });

        let message = [attrs.get("message"), details.get("message")]
            .into_iter()
            .flatten()
            .find_map(|v| v.as_str().filter(|s| !s.trim().is_empty()))
            .map(str::to_owned)
            .or_else(|| {
                stderr
                    .as_deref()
                    .and_then(|s| s.lines().map(str::trim).find(|line| !line.is_empty()).map(str::to_owned))
            })
            .unwrap_or_else(|| DEFAULT_MESSAGE.to_owned());

        let mut remaining = details.clone();
        for key in ["stderr", "stderr_truncated?", "stderr_truncated", "exit_code", "exit_status"] {
            remaining.remove(key);
        }

        let error = Self {
            provider: ProviderName::from_name(provider),
            kind,
            message,
            exit_code,
            stderr,
            truncated: truncated.then_some(true),
        };
        (error, remaining)
    }

    /// Like [`normalize`](Self::normalize) for any JSON value: a value that is not an object is
    /// treated as `{"message": <its text>}` (a string as itself, anything else as its JSON text).
    pub fn normalize_value(provider: &str, attrs: &serde_json::Value, limits: StderrLimits) -> (Self, JsonMap) {
        match attrs {
            serde_json::Value::Object(map) => Self::normalize(provider, map, limits),
            other => {
                let text = match other {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut map = JsonMap::new();
                map.insert("message".into(), text.into());
                Self::normalize(provider, &map, limits)
            }
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.provider, self.kind, self.message)?;
        if let Some(code) = self.exit_code {
            write!(f, " (exit code {code})")?;
        }
        Ok(())
    }
}

fn parse_exit_code(value: &serde_json::Value) -> Option<i32> {
    match value {
        serde_json::Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse::<i32>().ok(),
        _ => None,
    }
}

fn is_truthy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => matches!(s.trim(), "true" | "1"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn obj(v: Value) -> JsonMap {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn norm(v: Value) -> (ProviderError, JsonMap) {
        ProviderError::normalize("claude", &obj(v), StderrLimits::default())
    }

    #[test]
    fn names_and_kinds() {
        assert_eq!(ProviderName::from_name("CLAUDE"), ProviderName::Claude);
        assert_eq!(ProviderName::from_name("gemini"), ProviderName::Gemini);
        assert_eq!(ProviderName::from_name("openai"), ProviderName::custom("openai"));
        assert_eq!(ProviderName::from_name("openai").as_str(), "openai");
        for bad in ["", "  ", "9lives", "has space", "ünï", &"x".repeat(65)] {
            assert_eq!(ProviderName::from_name(bad), ProviderName::Unknown, "{bad:?}");
        }
        assert_eq!(ProviderName::custom("claude"), ProviderName::Claude);
        for &p in ProviderName::ALL {
            assert_eq!(ProviderName::from_name(p.as_str()), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for &k in ProviderErrorKind::ALL {
            assert_eq!(ProviderErrorKind::from_name(k.as_str()), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(ProviderErrorKind::from_name(" Parse_Error "), ProviderErrorKind::ParseError);
        // Forward compatible deserialisation.
        let mistral = serde_json::from_value::<ProviderName>(json!("mistral")).unwrap();
        assert_eq!(mistral, ProviderName::custom("mistral"));
        assert_eq!(serde_json::to_value(mistral).unwrap(), "mistral");
        assert_eq!(serde_json::from_value::<ProviderName>(json!("??")).unwrap(), ProviderName::Unknown);
        assert_eq!(serde_json::from_value::<ProviderErrorKind>(json!("oom")).unwrap(), ProviderErrorKind::Unknown);
    }

    #[test]
    fn truncation_by_lines_then_bytes_on_char_boundary() {
        let line = "é".repeat(10); // 20 bytes per line
        let text = format!("{line}\n{line}\n{line}\n");
        // Lines first: two lines = 41 bytes, then bytes: 26 is inside an 'é', cut back to 25.
        let (kept, truncated) = truncate_stderr(&text, StderrLimits::new(2, 26));
        assert!(truncated);
        assert_eq!(kept, format!("{line}\néé"));
        assert_eq!(kept.len(), 25);
        assert!(kept.is_char_boundary(kept.len()));

        // Byte cut landing in the middle of 'é'.
        let (kept, truncated) = truncate_stderr(&"é".repeat(100), StderrLimits::new(200, 7));
        assert_eq!(kept, "ééé");
        assert!(truncated);

        // Nothing to cut.
        assert_eq!(truncate_stderr("x\ny", StderrLimits::default()), ("x\ny".to_owned(), false));
        assert_eq!(truncate_stderr("a\nb\n", StderrLimits::new(2, 4)), ("a\nb\n".to_owned(), false));
        assert_eq!(truncate_stderr("a\nb\nc", StderrLimits::new(2, 100)), ("a\nb".to_owned(), true));
        assert_eq!(truncate_stderr("", StderrLimits::new(0, 0)), (String::new(), false));
        assert_eq!(truncate_stderr("a", StderrLimits::new(0, 10)), (String::new(), true));
        assert_eq!(truncate_stderr("a", StderrLimits::new(1, 0)), (String::new(), true));
    }

    #[test]
    fn with_stderr_marks_truncation_only_when_cut() {
        let limits = StderrLimits::new(1, 100);
        let e =
            ProviderError::new(ProviderName::Amp, ProviderErrorKind::ProcessError, "x").with_stderr("one line", limits);
        assert_eq!(e.truncated, None);
        assert!(!e.is_truncated());
        let e = e.with_stderr("one\ntwo", limits);
        assert_eq!(e.stderr.as_deref(), Some("one"));
        assert_eq!(e.truncated, Some(true));
        // An earlier mark survives a later short stderr.
        let e = e.with_stderr("short", limits);
        assert_eq!(e.truncated, Some(true));
        assert!(e.to_string().starts_with("amp process_error: x"));
    }

    #[test]
    fn serde_skips_none_and_never_writes_false() {
        let e = ProviderError::new(ProviderName::Codex, ProviderErrorKind::ParseError, "bad json");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json, json!({"provider": "codex", "kind": "parse_error", "message": "bad json"}));
        let back: ProviderError = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);

        let full = e.with_exit_code(-1).with_stderr("abc", StderrLimits::new(1, 1));
        let back: ProviderError = serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(back, full);

        let explicit_false: ProviderError = serde_json::from_value(json!({
            "provider": "codex", "kind": "parse_error", "message": "m", "truncated": false
        }))
        .unwrap();
        assert_eq!(explicit_false.truncated, None);
    }

    #[test]
    fn normalize_message_fallbacks() {
        let (e, _) = norm(json!({"message": "boom", "stderr": "ignored"}));
        assert_eq!(e.message, "boom");
        let (e, _) = norm(json!({"message": "", "details": {"message": "from details"}}));
        assert_eq!(e.message, "from details");
        let (e, _) = norm(json!({"message": "   ", "stderr": "\n\n   first real line  \nsecond"}));
        assert_eq!(e.message, "first real line");
        let (e, _) = norm(json!({"message": 42}));
        assert_eq!(e.message, DEFAULT_MESSAGE);
        let (e, _) = norm(json!({}));
        assert_eq!(e.message, DEFAULT_MESSAGE);
        assert_eq!(e.kind, ProviderErrorKind::Unknown);
        assert_eq!(e.provider, ProviderName::Claude);
        assert_eq!(e.exit_code, None);
        assert_eq!(e.stderr, None);
        assert_eq!(e.truncated, None);
    }

    #[test]
    fn normalize_exit_code_parsing() {
        let code = |v: Value| norm(v).0.exit_code;
        assert_eq!(code(json!({"exit_code": 3})), Some(3));
        assert_eq!(code(json!({"exit_code": " 17 "})), Some(17));
        assert_eq!(code(json!({"exit_code": "-9"})), Some(-9));
        assert_eq!(code(json!({"exit_code": "abc"})), None);
        assert_eq!(code(json!({"exit_code": 1.5})), None);
        assert_eq!(code(json!({"exit_code": 99_999_999_999_i64})), None);
        assert_eq!(code(json!({"details": {"exit_code": 4}})), Some(4));
        assert_eq!(code(json!({"details": {"exit_status": "5"}})), Some(5));
        assert_eq!(code(json!({"exit_code": 1, "details": {"exit_code": 2}})), Some(1));
        assert_eq!(code(json!({"exit_status": 6})), Some(6));
    }

    #[test]
    fn normalize_kind_and_provider() {
        let (e, _) =
            ProviderError::normalize("Gemini", &obj(json!({"kind": "CLI_NOT_FOUND"})), StderrLimits::default());
        assert_eq!(e.provider, ProviderName::Gemini);
        assert_eq!(e.kind, ProviderErrorKind::CliNotFound);
        let (e, _) =
            ProviderError::normalize("router", &obj(json!({"details": {"kind": "timeout"}})), StderrLimits::default());
        assert_eq!(e.provider, ProviderName::custom("router"));
        assert_eq!(e.kind, ProviderErrorKind::Timeout);
        assert_eq!(norm(json!({"kind": "weird"})).0.kind, ProviderErrorKind::Unknown);
        assert_eq!(norm(json!({"kind": 3})).0.kind, ProviderErrorKind::Unknown);
    }

    #[test]
    fn normalize_truncation_flags_and_details() {
        let limits = StderrLimits::new(1, 100);
        let attrs = obj(json!({"stderr": "a\nb"}));
        let (e, _) = ProviderError::normalize("amp", &attrs, limits);
        assert_eq!(e.stderr.as_deref(), Some("a"));
        assert_eq!(e.truncated, Some(true));

        for flag in [json!(true), json!("true"), json!("1")] {
            for key in ["truncated", "truncated?", "stderr_truncated?"] {
                let mut attrs = JsonMap::new();
                attrs.insert(key.into(), flag.clone());
                assert_eq!(norm(Value::Object(attrs)).0.truncated, Some(true), "{key}");
            }
            let (e, _) = norm(json!({"details": {"stderr_truncated?": flag}}));
            assert_eq!(e.truncated, Some(true));
        }
        for flag in [json!(false), json!("false"), json!(0), json!("yes")] {
            let (e, _) = norm(json!({"truncated?": flag}));
            assert_eq!(e.truncated, None, "never Some(false)");
        }

        // Non-string stderr: JSON text, counts as truncated.
        let (e, _) = norm(json!({"stderr": {"lines": ["x"]}}));
        assert_eq!(e.stderr.as_deref(), Some(r#"{"lines":["x"]}"#));
        assert_eq!(e.truncated, Some(true));

        let (e, details) = norm(json!({
            "details": {
                "stderr": "from details", "stderr_truncated?": false, "exit_code": "2",
                "exit_status": 3, "keep": "me"
            }
        }));
        assert_eq!(e.stderr.as_deref(), Some("from details"));
        assert_eq!(e.message, "from details");
        assert_eq!(e.exit_code, Some(2));
        assert_eq!(e.truncated, None);
        assert_eq!(Value::Object(details), json!({"keep": "me"}));
    }

    #[test]
    fn normalize_non_object_value() {
        let (e, details) = ProviderError::normalize_value("codex", &json!("plain failure"), StderrLimits::default());
        assert_eq!(e.message, "plain failure");
        assert!(details.is_empty());
        let (e, _) = ProviderError::normalize_value("codex", &json!([1]), StderrLimits::default());
        assert_eq!(e.message, "[1]");
    }

    proptest! {
        #[test]
        fn truncation_respects_limits(
            text in "(é|a|\n|ü|日){0,200}",
            max_lines in 0usize..10,
            max_bytes in 0usize..64,
        ) {
            let limits = StderrLimits::new(max_lines, max_bytes);
            let (kept, truncated) = truncate_stderr(&text, limits);
            prop_assert!(kept.len() <= max_bytes);
            prop_assert!(text.starts_with(&kept));
            prop_assert!(kept.split_inclusive('\n').count() <= max_lines);
            prop_assert_eq!(truncated, kept != text);
        }

        #[test]
        fn normalize_never_yields_false_or_empty_message(
            message in proptest::option::of("[ a-z\n]{0,8}"),
            stderr in proptest::option::of("[ a-z\n]{0,40}"),
            flag in proptest::option::of(prop_oneof![Just(json!(true)), Just(json!(false)), Just(json!("1")), Just(json!("0"))]),
        ) {
            let mut attrs = JsonMap::new();
            if let Some(m) = message { attrs.insert("message".into(), m.into()); }
            if let Some(s) = stderr { attrs.insert("stderr".into(), s.into()); }
            if let Some(f) = flag { attrs.insert("truncated?".into(), f); }
            let (e, _) = ProviderError::normalize("claude", &attrs, StderrLimits::new(2, 16));
            prop_assert_ne!(e.truncated, Some(false));
            prop_assert!(!e.message.trim().is_empty());
            let json = serde_json::to_value(&e).unwrap();
            prop_assert_ne!(json.get("truncated"), Some(&json!(false)));
            let back: ProviderError = serde_json::from_value(json).unwrap();
            prop_assert_eq!(back, e);
        }
    }
}
