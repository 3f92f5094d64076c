//! The ignore globs of the hash backend (spec 8.4): `*` is any run of characters except `/`,
//! `?` one character except `/`, `**/` zero or more directories, a trailing `**` anything; a
//! glob without `/` is also tried against the file's base name.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(u8),
    Star,
    Question,
    /// `**/`: zero or more whole directories.
    AnyDirs,
    /// A trailing `**`: anything at all.
    AnyTail,
}

/// One compiled ignore glob.
#[derive(Clone, Debug)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
    basename_too: bool,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Self {
        let bytes = pattern.as_bytes();
        let mut tokens = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'*' if bytes.get(i + 1) == Some(&b'*') => {
                    if bytes.get(i + 2) == Some(&b'/') {
                        tokens.push(Token::AnyDirs);
                        i += 3;
                    } else if i + 2 == bytes.len() {
                        tokens.push(Token::AnyTail);
                        i += 2;
                    } else {
                        // `**` elsewhere means the same as `*`.
                        tokens.push(Token::Star);
                        i += 2;
                    }
                }
                b'*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::Question);
                    i += 1;
                }
                byte => {
                    tokens.push(Token::Literal(byte));
                    i += 1;
                }
            }
        }
        Self { tokens, basename_too: !pattern.contains('/') }
    }

    /// Whether `path` (relative, `/`-separated) matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        if match_tokens(&self.tokens, path.as_bytes()) {
            return true;
        }
        if self.basename_too
            && let Some(slash) = path.rfind('/')
        {
            return match_tokens(&self.tokens, &path.as_bytes()[slash + 1..]);
        }
        false
    }
}

fn match_tokens(tokens: &[Token], text: &[u8]) -> bool {
    let Some((first, rest)) = tokens.split_first() else { return text.is_empty() };
    match first {
        Token::Literal(byte) => text.first() == Some(byte) && match_tokens(rest, &text[1..]),
        Token::Question => text.first().is_some_and(|b| *b != b'/') && match_tokens(rest, &text[1..]),
        Token::Star => {
            let limit = text.iter().position(|b| *b == b'/').unwrap_or(text.len());
            (0..=limit).any(|k| match_tokens(rest, &text[k..]))
        }
        Token::AnyDirs => {
            if match_tokens(rest, text) {
                return true;
            }
            text.iter().enumerate().any(|(i, b)| *b == b'/' && match_tokens(rest, &text[i + 1..]))
        }
        Token::AnyTail => true,
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn the_spec_forms() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.log", "app.log", true),
            ("*.log", "logs/app.log", true), // no `/`: also against the base name
            ("*.log", "app.log.1", false),
            ("logs/*.log", "logs/app.log", true),
            ("logs/*.log", "logs/deep/app.log", false),
            ("**/*.tmp", "a.tmp", true),
            ("**/*.tmp", "a/b/c.tmp", true),
            ("build/**", "build/x/y.o", true),
            ("build/**", "builds/x", false),
            ("src/**/gen.rs", "src/gen.rs", true),
            ("src/**/gen.rs", "src/a/b/gen.rs", true),
            ("src/**/gen.rs", "srcx/gen.rs", false),
            ("file?.txt", "file1.txt", true),
            ("file?.txt", "file12.txt", false),
            ("a?b", "a/b", false),
            ("target", "target", true),
            ("target", "sub/target", true),
            ("target", "targets", false),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(Glob::new(pattern).matches(path), *expected, "{pattern} vs {path}");
        }
    }
}
