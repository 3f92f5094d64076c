//! The default secret patterns (spec 10.3), each with the literals that must occur in a string
//! for it to match: the prefilter runs one case-insensitive multi-literal scan over a string and
//! only then the regexes whose literals were seen.

/// A default pattern: category, regex, prefilter literals.
pub(crate) struct DefaultPattern {
    pub(crate) category: &'static str,
    pub(crate) regex: &'static str,
    pub(crate) literals: &'static [&'static str],
}

/// The value of a `key = value` / `key: value` assignment, captured as `secret`: a quoted
/// string, or a run up to whitespace or a separator.
macro_rules! assignment {
    ($keys:literal) => {
        concat!(r#"(?i)\b(?:"#, $keys, r#")["']?\s*[:=]\s*(?P<secret>"[^"]*"|'[^']*'|[^\s"',;&]+)"#)
    };
}

/// The defaults, in the order they are applied.
pub(crate) const DEFAULTS: &[DefaultPattern] = &[
    DefaultPattern { category: "aws_access_key", regex: r"\bAKIA[0-9A-Z]{16}\b", literals: &["akia"] },
    DefaultPattern {
        category: "aws_secret_key",
        regex: assignment!(r"aws[_-]?secret[_-]?access[_-]?key"),
        literals: &["aws"],
    },
    DefaultPattern { category: "gcp_api_key", regex: r"\bAIza[0-9A-Za-z_-]{35}", literals: &["aiza"] },
    DefaultPattern { category: "anthropic_key", regex: r"sk-ant-api\S{20,}", literals: &["sk-ant-api"] },
    DefaultPattern { category: "openai_key", regex: r"sk-proj-[A-Za-z0-9_-]{20,}", literals: &["sk-proj-"] },
    DefaultPattern { category: "openai_legacy_key", regex: r"\bsk-[A-Za-z0-9]{40,}", literals: &["sk-"] },
    DefaultPattern { category: "github_pat", regex: r"\bghp_[A-Za-z0-9]{36}", literals: &["ghp_"] },
    DefaultPattern { category: "github_oauth", regex: r"\bgho_[A-Za-z0-9]{36}", literals: &["gho_"] },
    DefaultPattern { category: "github_app", regex: r"\bghs_[A-Za-z0-9]{36}", literals: &["ghs_"] },
    DefaultPattern { category: "github_refresh", regex: r"\bghr_[A-Za-z0-9]{36}", literals: &["ghr_"] },
    DefaultPattern {
        category: "github_fine_pat",
        regex: r"\bgithub_pat_[A-Za-z0-9_]{22,}",
        literals: &["github_pat_"],
    },
    DefaultPattern { category: "gitlab_token", regex: r"\bglpat-[A-Za-z0-9_-]{20,}", literals: &["glpat-"] },
    DefaultPattern {
        category: "jwt_token",
        regex: r"\beyJ[A-Za-z0-9_-]{7,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        literals: &["eyj"],
    },
    DefaultPattern {
        category: "bearer_token",
        regex: r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{20,})",
        literals: &["bearer"],
    },
    DefaultPattern {
        category: "password",
        regex: assignment!("password|passwd|pwd"),
        literals: &["password", "passwd", "pwd"],
    },
    DefaultPattern {
        category: "api_key_generic",
        regex: assignment!(r"api[_-]?key"),
        literals: &["api_key", "api-key", "apikey"],
    },
    DefaultPattern {
        category: "secret_key",
        regex: assignment!(r"secret[_-]?key"),
        literals: &["secret_key", "secret-key", "secretkey"],
    },
    DefaultPattern {
        category: "access_token",
        regex: assignment!(r"access[_-]?token"),
        literals: &["access_token", "access-token", "accesstoken"],
    },
    DefaultPattern {
        category: "auth_token",
        regex: assignment!(r"auth[_-]?token"),
        literals: &["auth_token", "auth-token", "authtoken"],
    },
    DefaultPattern {
        category: "connection_string",
        regex: r"(?i)\b(?:postgres|postgresql|mysql|redis|mongodb|amqp|mssql)://\S+",
        literals: &["://"],
    },
    DefaultPattern {
        category: "private_key",
        regex: r"-----BEGIN (?:RSA |EC |DSA |OPENSSH )?PRIVATE KEY-----",
        literals: &["-----begin"],
    },
    DefaultPattern {
        category: "env_secret",
        regex: r"\b(?:DATABASE_URL|REDIS_URL|SECRET_KEY_BASE|ENCRYPTION_KEY|PRIVATE_KEY)\s*=\s*(?P<secret>\S+)",
        literals: &["database_url", "redis_url", "secret_key_base", "encryption_key", "private_key"],
    },
];
