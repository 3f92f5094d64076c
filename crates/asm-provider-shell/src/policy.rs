//! The command policy: which commands a shell string runs ([`command_names`]) and whether the
//! allow and deny lists let them ([`check_command_line`], [`check_command`]).
//!
//! The original checked only the first token of a string (`ls; rm -rf x` passed an allow list
//! of `ls`). Here every simple command of the line is found, after quote removal, across `;`,
//! `&`, `&&`, `|`, `||` and newlines, behind assignments (`A=1 cmd`), redirections
//! (`>out cmd`, `2>&1`) and the reserved words that prefix a command (`if`, `then`, `else`,
//! `elif`, `while`, `until`, `do`, `!`, `{`). What cannot be checked without running a shell
//! is refused with a [`ErrorCode::ValidationError`] (`details.reason = "unparseable_command"`,
//! `details.construct` naming it): command substitution (`$(..)`, backticks), subshells and
//! function definitions (`(`, `)`), here-documents (`<<`), `for` / `case` / `select` /
//! `function`, unterminated quotes, and a command name that comes from an expansion (`$cmd`,
//! globs, braces).
//!
//! Note: a command that runs its arguments as commands (`env`, `xargs`, `sh`, `eval`, `exec`,
//! `sudo`, `find -exec` ...) allows whatever it is given; keep such names off an allow list.

use asm_core::{Error, ErrorCode, Result};

use crate::config::{ShellConfig, command_basename};

fn unparseable(construct: &str, line: &str) -> Error {
    Error::new(
        ErrorCode::ValidationError,
        format!("shell input uses {construct}, which the command allow/deny lists cannot check; refused"),
    )
    .with_detail("reason", "unparseable_command")
    .with_detail("construct", construct)
    .with_detail("command_line", line.chars().take(512).collect::<String>())
}

/// Reserved words after which a command name is still expected.
const PREFIX_WORDS: &[&str] = &["if", "then", "else", "elif", "while", "until", "do", "!", "{"];
/// Reserved words that end a construct (no command name).
const END_WORDS: &[&str] = &["fi", "done", "}", "esac"];
/// Reserved words of constructs the parser does not follow.
const REFUSED_WORDS: &[&str] = &["for", "case", "select", "function", "coproc"];

#[derive(Default)]
struct Word {
    text: String,
    started: bool,
    /// Where in `text` quoting began (a quoted word is never a reserved word, and an
    /// assignment needs its name and `=` unquoted).
    first_quote: Option<usize>,
    expansion: bool,
}

impl Word {
    fn quote(&mut self) {
        self.started = true;
        self.first_quote.get_or_insert(self.text.len());
    }
}

struct Parser<'a> {
    line: &'a str,
    names: Vec<String>,
    expecting_name: bool,
    skip_next_word: bool,
    word: Word,
}

impl Parser<'_> {
    fn finish_word(&mut self) -> Result<()> {
        let word = std::mem::take(&mut self.word);
        if !word.started {
            return Ok(());
        }
        if self.skip_next_word {
            self.skip_next_word = false;
            return Ok(());
        }
        if !self.expecting_name {
            return Ok(());
        }
        let text = word.text.as_str();
        if word.first_quote.is_none() {
            if PREFIX_WORDS.contains(&text) || END_WORDS.contains(&text) {
                return Ok(());
            }
            if REFUSED_WORDS.contains(&text) {
                return Err(unparseable(&format!("the compound command '{text}'"), self.line));
            }
        }
        if is_assignment(text) && text.find('=') < word.first_quote.or(Some(usize::MAX)) {
            return Ok(());
        }
        if word.expansion || word.text.contains(['*', '?', '[', '{', '}']) {
            return Err(unparseable("a command name built by an expansion", self.line));
        }
        self.names.push(word.text);
        self.expecting_name = false;
        Ok(())
    }

    fn end_command(&mut self) -> Result<()> {
        self.finish_word()?;
        self.expecting_name = true;
        self.skip_next_word = false;
        Ok(())
    }
}

fn is_assignment(word: &str) -> bool {
    let Some((name, _)) = word.split_once('=') else { return false };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The simple commands a POSIX shell string runs, as written (quotes removed), in order.
///
/// Every simple command of the line is found across `;`, `&`, `&&`, `|`, `||` and newlines,
/// behind assignments (`A=1 cmd`), redirections (`>out cmd`, `2>&1`) and the reserved words
/// that prefix a command (`if`, `then`, `else`, `elif`, `while`, `until`, `do`, `!`, `{`).
/// Refused, because they cannot be checked without running a shell: command substitution
/// (`$(..)`, backticks), subshells and function definitions (`(`, `)`), here-documents (`<<`),
/// `for` / `case` / `select` / `function` / `coproc`, unterminated quotes, and a command name
/// built by an expansion (`$cmd`, globs, braces).
///
/// A command that runs its arguments as commands (`env`, `xargs`, `sh`, `eval`, `exec`, `sudo`,
/// `find -exec` ...) allows whatever it is given: keep such names off an allow list.
///
/// ```
/// use asm_provider_shell::command_names;
/// assert_eq!(command_names("ls -la; rm -rf x").unwrap(), ["ls", "rm"]);
/// assert_eq!(command_names("A=1 >out 'ec'ho hi 2>&1 | grep -v x && if true; then ls; fi").unwrap(),
///            ["echo", "grep", "true", "ls"]);
/// assert_eq!(command_names("echo '$(not run)' # ; rm").unwrap(), ["echo"]);
/// assert!(command_names("echo $(rm -rf x)").is_err());
/// assert!(command_names("(cd /tmp; rm x)").is_err());
/// assert!(command_names("$CMD arg").is_err());
/// ```
///
/// # Errors
/// [`ErrorCode::ValidationError`] with `details.reason = "unparseable_command"` for what the
/// parser cannot check (`details.construct` names it).
pub fn command_names(line: &str) -> Result<Vec<String>> {
    let chars: Vec<char> = line.chars().collect();
    let mut p = Parser { line, names: Vec::new(), expecting_name: true, skip_next_word: false, word: Word::default() };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\r' => p.finish_word()?,
            '\n' | ';' | '&' | '|' => p.end_command()?,
            '(' | ')' => return Err(unparseable("a subshell or function definition", line)),
            '`' => return Err(unparseable("command substitution", line)),
            '$' => {
                if chars.get(i + 1) == Some(&'(') {
                    return Err(unparseable("command substitution", line));
                }
                p.word.text.push('$');
                p.word.started = true;
                p.word.expansion = true;
            }
            '\'' => {
                let Some(end) = chars[i + 1..].iter().position(|&x| x == '\'') else {
                    return Err(unparseable("an unterminated quote", line));
                };
                p.word.quote();
                p.word.text.extend(&chars[i + 1..i + 1 + end]);
                i += end + 1;
            }
            '"' => {
                p.word.quote();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(unparseable("an unterminated quote", line)),
                        Some('"') => break,
                        Some('`') => return Err(unparseable("command substitution", line)),
                        Some('$') => {
                            if chars.get(j + 1) == Some(&'(') {
                                return Err(unparseable("command substitution", line));
                            }
                            p.word.expansion = true;
                            p.word.text.push('$');
                        }
                        Some('\\') => match chars.get(j + 1) {
                            Some('\n') => j += 1,
                            Some(&n @ ('$' | '`' | '"' | '\\')) => {
                                p.word.text.push(n);
                                j += 1;
                            }
                            _ => p.word.text.push('\\'),
                        },
                        Some(&other) => p.word.text.push(other),
                    }
                    j += 1;
                }
                i = j;
            }
            '\\' => {
                match chars.get(i + 1) {
                    Some('\n') | None => {}
                    Some(&n) => {
                        p.word.quote();
                        p.word.text.push(n);
                    }
                }
                i += 1;
            }
            '#' if !p.word.started => {
                while i + 1 < chars.len() && chars[i + 1] != '\n' {
                    i += 1;
                }
            }
            '<' | '>' => {
                if chars.get(i + 1) == Some(&'<') && c == '<' {
                    return Err(unparseable("a here-document", line));
                }
                if p.word.started && p.word.first_quote.is_none() && p.word.text.chars().all(|d| d.is_ascii_digit()) {
                    // `2>`: the digits are the descriptor, not a word.
                    p.word = Word::default();
                } else {
                    p.finish_word()?;
                }
                if let Some('>' | '&' | '|') = chars.get(i + 1) {
                    i += 1;
                }
                p.skip_next_word = true;
            }
            other => {
                p.word.text.push(other);
                p.word.started = true;
            }
        }
        i += 1;
    }
    p.finish_word()?;
    Ok(p.names)
}

/// Checks one command (any path; its basename is compared) against the lists of `config`:
/// denied wins, then the allow list, when there is one, must hold it.
///
/// ```
/// use asm_core::ErrorCode;
/// use asm_provider_shell::{ShellAdapter, check_command};
/// let adapter = ShellAdapter::builder().allowed_commands(["ls", "rm"]).denied_commands(["rm"]).build()?;
/// assert!(check_command("/bin/ls", adapter.config()).is_ok());
/// assert_eq!(check_command("rm", adapter.config()).unwrap_err().code(), ErrorCode::PolicyViolation);
/// assert_eq!(check_command("cat", adapter.config()).unwrap_err().details()["reason"], "not_allowed");
/// # Ok::<(), asm_core::Error>(())
/// ```
///
/// # Errors
/// [`ErrorCode::PolicyViolation`] with `details.command` and `details.reason` (`denied` or
/// `not_allowed`).
pub fn check_command(command: &str, config: &ShellConfig) -> Result<()> {
    let name = command_basename(command);
    let refuse = |reason: &str, message: String| {
        Err(Error::new(ErrorCode::PolicyViolation, message).with_detail("command", name).with_detail("reason", reason))
    };
    if config.denied_commands.iter().any(|d| d == name) {
        return refuse("denied", format!("Command '{name}' is denied"));
    }
    if let Some(allowed) = &config.allowed_commands
        && !allowed.iter().any(|a| a == name)
    {
        return refuse("not_allowed", format!("Command '{name}' is not in the allowed list"));
    }
    Ok(())
}

/// Checks every command of the shell string `line` ([`command_names`]) with [`check_command`].
/// Without an allow or deny list nothing is parsed and everything runs.
///
/// ```
/// use asm_core::ErrorCode;
/// use asm_provider_shell::{ShellAdapter, check_command_line};
/// let adapter = ShellAdapter::builder().allowed_commands(["ls"]).build()?;
/// assert!(check_command_line("ls -la | ls", adapter.config()).is_ok());
/// assert_eq!(check_command_line("ls; rm -rf x", adapter.config()).unwrap_err().code(), ErrorCode::PolicyViolation);
/// assert_eq!(check_command_line("ls $(rm -rf x)", adapter.config()).unwrap_err().code(), ErrorCode::ValidationError);
/// assert!(check_command_line("ls $(rm -rf x)", ShellAdapter::new().config()).is_ok());
/// # Ok::<(), asm_core::Error>(())
/// ```
///
/// # Errors
/// As [`command_names`] and [`check_command`].
pub fn check_command_line(line: &str, config: &ShellConfig) -> Result<()> {
    if config.allowed_commands.is_none() && config.denied_commands.is_empty() {
        return Ok(());
    }
    for name in command_names(line)? {
        check_command(&name, config)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(line: &str) -> Vec<String> {
        command_names(line).unwrap()
    }

    #[test]
    fn separators_and_prefixes() {
        assert_eq!(names("ls;rm x"), ["ls", "rm"]);
        assert_eq!(names("ls&&rm x||cat y|wc -l&sleep 1"), ["ls", "rm", "cat", "wc", "sleep"]);
        assert_eq!(names("ls\nrm x"), ["ls", "rm"]);
        assert_eq!(names("while true; do rm x; done"), ["true", "rm"]);
        assert_eq!(names("! grep x f"), ["grep"]);
        assert_eq!(names("{ ls; rm x; }"), ["ls", "rm"]);
        assert_eq!(names("echo a > f; >g rm x"), ["echo", "rm"]);
        assert_eq!(names("ls 2>/dev/null; echo 1 >&2"), ["ls", "echo"]);
        assert_eq!(names("FOO=bar BAZ='q x' /bin/rm -rf x"), ["/bin/rm"]);
        assert_eq!(names("   "), Vec::<String>::new());
    }

    #[test]
    fn quoting_cannot_hide_a_command() {
        assert_eq!(names("r\\m -rf x"), ["rm"]);
        assert_eq!(names("'r'\"m\" -rf x"), ["rm"]);
        assert_eq!(names("echo 'a; rm x' \"b && rm y\""), ["echo"]);
        assert_eq!(names("echo a\\;rm"), ["echo"]);
        assert_eq!(names("'if' x"), ["if"]);
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        for line in [
            "echo $(rm x)",
            "echo \"$(rm x)\"",
            "echo `rm x`",
            "echo \"`rm x`\"",
            "(rm x)",
            "f() { rm x; }; f",
            "cat <<EOF\n$(rm x)\nEOF",
            "for f in *; do rm $f; done",
            "case x in x) rm y;; esac",
            "$CMD x",
            "\"$CMD\" x",
            "r* x",
            "echo 'unterminated",
            "echo \"unterminated",
            "diff <(ls a) <(ls b)",
        ] {
            let err = command_names(line).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ValidationError, "{line}");
            assert_eq!(err.details()["reason"], "unparseable_command", "{line}");
        }
    }

    #[test]
    fn arguments_may_expand() {
        assert_eq!(names("echo $HOME \"${USER}\" *.rs"), ["echo"]);
    }
}
