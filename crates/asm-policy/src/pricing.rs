//! [`PricingTable`]: USD per token by provider and model, with longest-prefix model matching.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};

use asm_core::TokenUsage;

/// USD per token. Cache rates default to the input rate when absent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Per input token.
    pub input: f64,
    /// Per output token.
    pub output: f64,
    /// Per cache-read input token (default: `input`).
    pub cache_read: Option<f64>,
    /// Per cache-creation input token (default: `input`).
    pub cache_creation: Option<f64>,
}

impl Rates {
    /// Input and output rates per token, no cache rates.
    pub const fn new(input: f64, output: f64) -> Self {
        Self { input, output, cache_read: None, cache_creation: None }
    }
    /// Rates per **million** tokens (how price lists are written), with cache rates.
    pub const fn per_million(input: f64, output: f64, cache_read: f64, cache_creation: f64) -> Self {
        Self {
            input: input / 1e6,
            output: output / 1e6,
            cache_read: Some(cache_read / 1e6),
            cache_creation: Some(cache_creation / 1e6),
        }
    }
    /// Sets the cache rates (per token).
    #[must_use]
    pub const fn with_cache(mut self, cache_read: f64, cache_creation: f64) -> Self {
        self.cache_read = Some(cache_read);
        self.cache_creation = Some(cache_creation);
        self
    }

    /// The cost of `usage`: input, output, cache reads and cache creation each at their rate.
    ///
    /// ```
    /// use asm_core::TokenUsage;
    /// use asm_policy::Rates;
    /// let rates = Rates::new(0.000003, 0.000015).with_cache(0.0000003, 0.00000375);
    /// let usage = TokenUsage { input_tokens: 1000, output_tokens: 100, cache_read_tokens: 10_000, cache_creation_tokens: 0 };
    /// assert!((rates.cost(&usage) - (0.003 + 0.0015 + 0.003)).abs() < 1e-12);
    /// ```
    #[allow(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        usage.input_tokens as f64 * self.input
            + usage.output_tokens as f64 * self.output
            + usage.cache_read_tokens as f64 * self.cache_read.unwrap_or(self.input)
            + usage.cache_creation_tokens as f64 * self.cache_creation.unwrap_or(self.input)
    }

    fn from_json(value: &Value) -> Result<Self, PricingError> {
        let rate = |key: &str, required: bool| -> Result<Option<f64>, PricingError> {
            match value.get(key).filter(|v| !v.is_null()) {
                None if required => Err(PricingError(format!("rate {key:?} is required"))),
                None => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(r) if r.is_finite() && r >= 0.0 => Ok(Some(r)),
                    _ => Err(PricingError(format!("rate {key:?} must be a number >= 0, got {v}"))),
                },
            }
        };
        Ok(Self {
            input: rate("input", true)?.unwrap_or_default(),
            output: rate("output", true)?.unwrap_or_default(),
            cache_read: rate("cache_read", false)?,
            cache_creation: rate("cache_creation", false)?,
        })
    }

    fn to_json(self) -> Value {
        let mut v = json!({ "input": self.input, "output": self.output });
        if let (Some(r), Value::Object(o)) = (self.cache_read, &mut v) {
            o.insert("cache_read".into(), r.into());
        }
        if let (Some(r), Value::Object(o)) = (self.cache_creation, &mut v) {
            o.insert("cache_creation".into(), r.into());
        }
        v
    }
}

/// A pricing table that does not parse. Converts into [`asm_core::Error`] with
/// [`asm_core::ErrorCode::ValidationError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricingError(String);

impl fmt::Display for PricingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pricing table: {}", self.0)
    }
}

impl std::error::Error for PricingError {}

impl From<PricingError> for asm_core::Error {
    fn from(error: PricingError) -> Self {
        asm_core::Error::new(asm_core::ErrorCode::ValidationError, error.to_string()).with_detail("field", "pricing")
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ProviderPricing {
    default: Option<Rates>,
    models: BTreeMap<String, Rates>,
}

/// USD per token by provider (`claude`, `codex`, `amp`, ...) and model. Data, not code: start
/// from [`builtin`](Self::builtin) or [`empty`](Self::empty), override entries with
/// [`set_model`](Self::set_model) / [`set_default`](Self::set_default), or load the JSON form
/// with [`from_json`](Self::from_json).
///
/// Model resolution ([`resolve`](Self::resolve)): the exact model key; else the **longest**
/// model key that is a prefix of the model name (so the dated `claude-haiku-4-5-20251001`
/// resolves to `claude-haiku-4-5`, `gpt-5-mini-2025-08-07` to `gpt-5-mini`, not `gpt-5`); else
/// the provider's default. A provider without an entry (a router, a custom adapter) is looked
/// up by model across every provider before giving up.
///
/// ```
/// use asm_policy::{PricingTable, Rates};
/// let table = PricingTable::builtin();
/// let haiku = table.resolve("claude", Some("claude-haiku-4-5-20251001")).unwrap();
/// assert_eq!(haiku, table.resolve("claude", Some("claude-haiku-4-5")).unwrap());
/// let custom = table.clone().set_model("claude", "claude-haiku-4-5", Rates::new(0.0, 0.0));
/// assert_eq!(custom.resolve("claude", Some("claude-haiku-4-5-20251001")).unwrap().input, 0.0);
/// assert!(PricingTable::empty().resolve("claude", None).is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PricingTable {
    providers: BTreeMap<String, ProviderPricing>,
}

/// The port's pricing shape: a usage report ([`asm_ports::UsageReport::priced`]) is priced by
/// this table with the same resolution as everywhere else ([`PricingTable::cost`]).
impl asm_ports::UsagePricer for PricingTable {
    fn price(&self, provider: &str, model: Option<&str>, usage: &TokenUsage) -> Option<f64> {
        self.cost(provider, model, usage)
    }
}

impl PricingTable {
    /// No rates at all (every cost is unknown).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in table, list prices in USD (per million tokens: input / output / cache
    /// read / cache write):
    ///
    /// | provider | model key | in | out | cache read | cache write |
    /// |---|---|---|---|---|---|
    /// | claude | default | 3 | 15 | 0.30 | 3.75 |
    /// | claude | `claude-opus-4` (4, 4.1) | 15 | 75 | 1.50 | 18.75 |
    /// | claude | `claude-opus-4-5`, `claude-opus-4-6`, `claude-opus-4-7`, `claude-opus-4-8` | 5 | 25 | 0.50 | 6.25 |
    /// | claude | `claude-sonnet-4`, `claude-sonnet-4-5`, `claude-sonnet-4-6` | 3 | 15 | 0.30 | 3.75 |
    /// | claude | `claude-haiku-4-5` | 1 | 5 | 0.10 | 1.25 |
    /// | claude | `claude-3-5-haiku` | 0.80 | 4 | 0.08 | 1 |
    /// | codex | default, `gpt-5`, `gpt-5.5`, `gpt-5-codex` | 1.25 | 10 | 0.125 | 1.25 |
    /// | codex | `gpt-5-mini` | 0.25 | 2 | 0.025 | 0.25 |
    /// | codex | `gpt-5-nano` | 0.05 | 0.40 | 0.005 | 0.05 |
    /// | codex | `gpt-4.1` | 2 | 8 | 0.50 | 2 |
    /// | codex | `gpt-4.1-mini` | 0.40 | 1.60 | 0.10 | 0.40 |
    /// | codex | `gpt-4o` | 2.50 | 10 | 1.25 | 2.50 |
    /// | codex | `gpt-4o-mini` | 0.15 | 0.60 | 0.075 | 0.15 |
    /// | codex | `o3` | 2 | 8 | 0.50 | 2 |
    /// | codex | `o3-mini`, `o4-mini` | 1.10 | 4.40 | 0.275 | 1.10 |
    /// | amp | default | 3 | 15 | 0.30 | 3.75 |
    ///
    /// Prices change: treat this as a starting point and override it from your own price list
    /// (the table is data; nothing else reads prices).
    pub fn builtin() -> Self {
        let claude_default = Rates::per_million(3.0, 15.0, 0.30, 3.75);
        let opus_4 = Rates::per_million(15.0, 75.0, 1.50, 18.75);
        let opus_45 = Rates::per_million(5.0, 25.0, 0.50, 6.25);
        let gpt5 = Rates::per_million(1.25, 10.0, 0.125, 1.25);
        let o_mini = Rates::per_million(1.10, 4.40, 0.275, 1.10);
        let mut table = Self::empty()
            .set_default("claude", claude_default)
            .set_model("claude", "claude-opus-4", opus_4)
            .set_model("claude", "claude-sonnet-4", claude_default)
            .set_model("claude", "claude-sonnet-4-5", claude_default)
            .set_model("claude", "claude-sonnet-4-6", claude_default)
            .set_model("claude", "claude-haiku-4-5", Rates::per_million(1.0, 5.0, 0.10, 1.25))
            .set_model("claude", "claude-3-5-haiku", Rates::per_million(0.80, 4.0, 0.08, 1.0))
            .set_default("codex", gpt5)
            .set_model("codex", "gpt-5", gpt5)
            .set_model("codex", "gpt-5.5", gpt5)
            .set_model("codex", "gpt-5-codex", gpt5)
            .set_model("codex", "gpt-5-mini", Rates::per_million(0.25, 2.0, 0.025, 0.25))
            .set_model("codex", "gpt-5-nano", Rates::per_million(0.05, 0.40, 0.005, 0.05))
            .set_model("codex", "gpt-4.1", Rates::per_million(2.0, 8.0, 0.50, 2.0))
            .set_model("codex", "gpt-4.1-mini", Rates::per_million(0.40, 1.60, 0.10, 0.40))
            .set_model("codex", "gpt-4o", Rates::per_million(2.50, 10.0, 1.25, 2.50))
            .set_model("codex", "gpt-4o-mini", Rates::per_million(0.15, 0.60, 0.075, 0.15))
            .set_model("codex", "o3", Rates::per_million(2.0, 8.0, 0.50, 2.0))
            .set_model("codex", "o3-mini", o_mini)
            .set_model("codex", "o4-mini", o_mini)
            .set_default("amp", claude_default);
        for model in ["claude-opus-4-5", "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8"] {
            table = table.set_model("claude", model, opus_45);
        }
        table
    }

    /// Sets the rates of `model` under `provider`.
    #[must_use]
    pub fn set_model(mut self, provider: &str, model: &str, rates: Rates) -> Self {
        self.providers.entry(provider.to_owned()).or_default().models.insert(model.to_owned(), rates);
        self
    }

    /// Sets `provider`'s default rates (for models without an entry, or no model).
    #[must_use]
    pub fn set_default(mut self, provider: &str, rates: Rates) -> Self {
        self.providers.entry(provider.to_owned()).or_default().default = Some(rates);
        self
    }

    /// The rates for `model` of `provider` (see the type's docs for the resolution order).
    pub fn resolve(&self, provider: &str, model: Option<&str>) -> Option<Rates> {
        match self.providers.get(provider) {
            Some(entry) => model.and_then(|m| longest_prefix(&entry.models, m)).or(entry.default),
            None => {
                let model = model?;
                self.providers
                    .values()
                    .filter_map(|entry| {
                        entry
                            .models
                            .iter()
                            .filter(|(key, _)| model.starts_with(key.as_str()))
                            .max_by_key(|(key, _)| key.len())
                    })
                    .max_by_key(|(key, _)| key.len())
                    .map(|(_, rates)| *rates)
            }
        }
    }

    /// The cost of `usage` for `model` of `provider`, if the table has rates for it.
    pub fn cost(&self, provider: &str, model: Option<&str>, usage: &TokenUsage) -> Option<f64> {
        self.resolve(provider, model).map(|r| r.cost(usage))
    }

    /// `report` with its runs that have no stored cost priced by this table
    /// ([`UsageReport::priced`](asm_ports::UsageReport::priced)): the cost summary of spec
    /// §3.5 / §10.5, computed after the fact from the store's usage aggregates.
    ///
    /// ```
    /// use asm_core::{Run, RunInput, Session, TokenUsage};
    /// use asm_ports::UsageReport;
    /// use asm_policy::PricingTable;
    /// let session = Session::new("a").unwrap();
    /// let mut run = Run::new(session.id.clone(), RunInput::user("hi"));
    /// run.provider = Some("claude".into());
    /// run.metadata.insert("model".into(), "claude-haiku-4-5-20251001".into());
    /// run.token_usage = TokenUsage { input_tokens: 1_000_000, ..TokenUsage::default() };
    /// let report = UsageReport::from_runs([(&run, "a")]);
    /// assert_eq!(report.total.unpriced_runs, 1);
    /// let priced = PricingTable::builtin().price_report(&report);
    /// assert!((priced.total.cost_usd - 1.0).abs() < 1e-9); // haiku 4.5: 1 USD per million input
    /// assert_eq!(priced.total.unpriced_runs, 0);
    /// ```
    pub fn price_report(&self, report: &asm_ports::UsageReport) -> asm_ports::UsageReport {
        report.priced(self)
    }

    /// Parses `{provider: {"default": rates?, "models": {model: rates}}}` where rates are
    /// `{"input", "output", "cache_read"?, "cache_creation"?}` per token. A flat
    /// `{provider: rates}` entry is that provider's default (the legacy form).
    ///
    /// ```
    /// let table = asm_policy::PricingTable::from_json(&serde_json::json!({
    ///     "claude": {"default": {"input": 0.000003, "output": 0.000015},
    ///                "models": {"claude-opus-4": {"input": 0.000015, "output": 0.000075}}},
    ///     "local": {"input": 0, "output": 0}
    /// })).unwrap();
    /// assert_eq!(table.resolve("claude", Some("claude-opus-4-1")).unwrap().input, 0.000015);
    /// assert_eq!(table.resolve("local", None).unwrap().output, 0.0);
    /// ```
    ///
    /// # Errors
    /// [`PricingError`] for a wrong shape or a negative / non-numeric rate.
    pub fn from_json(value: &Value) -> Result<Self, PricingError> {
        let Value::Object(providers) = value else { return Err(PricingError("must be an object".into())) };
        let mut table = Self::empty();
        for (provider, entry) in providers {
            let Value::Object(fields) = entry else {
                return Err(PricingError(format!("the entry of {provider:?} must be an object")));
            };
            let mut pricing = ProviderPricing::default();
            if fields.contains_key("input") || fields.contains_key("output") {
                pricing.default = Some(Rates::from_json(entry)?);
            } else {
                for (key, value) in fields {
                    match key.as_str() {
                        "default" => pricing.default = Some(Rates::from_json(value)?),
                        "models" => {
                            let Value::Object(models) = value else {
                                return Err(PricingError(format!("{provider}.models must be an object")));
                            };
                            for (model, rates) in models {
                                pricing.models.insert(model.clone(), Rates::from_json(rates)?);
                            }
                        }
                        other => return Err(PricingError(format!("unknown key {other:?} under {provider:?}"))),
                    }
                }
            }
            table.providers.insert(provider.clone(), pricing);
        }
        Ok(table)
    }

    /// The JSON form [`from_json`](Self::from_json) reads.
    pub fn to_json(&self) -> Value {
        let providers: serde_json::Map<String, Value> = self
            .providers
            .iter()
            .map(|(name, p)| {
                let models: serde_json::Map<String, Value> =
                    p.models.iter().map(|(m, r)| (m.clone(), r.to_json())).collect();
                let mut entry = json!({ "models": models });
                if let (Some(d), Value::Object(o)) = (p.default, &mut entry) {
                    o.insert("default".into(), d.to_json());
                }
                (name.clone(), entry)
            })
            .collect();
        Value::Object(providers)
    }
}

fn longest_prefix(models: &BTreeMap<String, Rates>, model: &str) -> Option<Rates> {
    if let Some(rates) = models.get(model) {
        return Some(*rates);
    }
    models.iter().filter(|(key, _)| model.starts_with(key.as_str())).max_by_key(|(key, _)| key.len()).map(|(_, r)| *r)
}
