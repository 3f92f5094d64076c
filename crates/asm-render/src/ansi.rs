//! Removing ANSI escape sequences.

/// `text` without ANSI escape sequences: CSI (`ESC [ ... final`, colours and cursor
/// movement), OSC (`ESC ] ... BEL` or `ESC ] ... ESC \`) and the other two-byte `ESC x`
/// sequences. Everything else is kept.
///
/// ```
/// assert_eq!(asm_render::strip_ansi("\x1b[1;31merror\x1b[0m: x\x1b[2K"), "error: x");
/// assert_eq!(asm_render::strip_ansi("\x1b]0;title\x07plain"), "plain");
/// ```
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in 0x40..=0x7e.
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // Two-byte sequences (ESC 7, ESC M, ...) and a lone trailing ESC.
            Some(_) | None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn strips_colour_cursor_and_osc() {
        assert_eq!(strip_ansi("a\x1b[32mb\x1b[0mc"), "abc");
        assert_eq!(strip_ansi("\x1b[2K\x1b[1A\x1b[?25lline"), "line");
        assert_eq!(strip_ansi("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
        assert_eq!(strip_ansi("\x1b7saved\x1b8"), "saved");
        assert_eq!(strip_ansi("trailing\x1b"), "trailing");
        assert_eq!(strip_ansi("ünïcode ✓"), "ünïcode ✓");
    }
}
