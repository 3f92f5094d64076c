//! [`OutputCapture`]: the capped, UTF-8-safe stdout of one command, and its truncation marker.

/// The marker that ends an output cut at `max_bytes` after `dropped` more bytes were dropped.
///
/// ```
/// let marker = asm_provider_shell::truncation_marker(1024, 10);
/// assert!(marker.contains("[output truncated"));
/// assert!(marker.contains("10 bytes"));
/// ```
pub fn truncation_marker(max_bytes: usize, dropped: u64) -> String {
    format!("\n[output truncated: {dropped} bytes over the {max_bytes}-byte limit were dropped]\n")
}

/// Collects a command's stdout: the first `max_bytes` bytes are kept (and handed back as text
/// to stream), the rest is counted and dropped; [`finish`](Self::finish) appends the
/// [`truncation_marker`]. A multi-byte character split across chunks is held back until it is
/// complete; invalid UTF-8 becomes U+FFFD.
///
/// ```
/// use asm_provider_shell::OutputCapture;
/// let mut c = OutputCapture::new(4);
/// assert_eq!(c.push("hé".as_bytes()[..2].as_ref()), "h"); // the é is not complete yet
/// assert_eq!(c.push(&"hé".as_bytes()[2..]), "é");
/// assert_eq!(c.push(b"llo"), "l"); // 4 bytes kept
/// assert!(c.finish().contains("2 bytes"));
/// assert!(c.text().starts_with("hél\n[output truncated"));
/// ```
#[derive(Clone, Debug)]
pub struct OutputCapture {
    max_bytes: usize,
    kept: usize,
    dropped: u64,
    carry: Vec<u8>,
    text: String,
}

impl OutputCapture {
    /// A capture keeping at most `max_bytes` bytes.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, kept: 0, dropped: 0, carry: Vec::new(), text: String::new() }
    }

    /// Adds `bytes`; returns the newly decoded text (empty when nothing new is complete).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let take = bytes.len().min(self.max_bytes - self.kept);
        self.kept += take;
        self.dropped += (bytes.len() - take) as u64;
        self.carry.extend_from_slice(&bytes[..take]);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.carry) {
                Ok(s) => {
                    out.push_str(s);
                    self.carry.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.carry[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.carry.drain(..valid + bad);
                        }
                        None => {
                            self.carry.drain(..valid);
                            break;
                        }
                    }
                }
            }
        }
        self.text.push_str(&out);
        out
    }

    /// Ends the output: an incomplete trailing character becomes U+FFFD (or is dropped when the
    /// output was cut), and the marker is appended when bytes were dropped. Returns that tail.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if !self.carry.is_empty() {
            if self.dropped > 0 {
                self.dropped += self.carry.len() as u64;
            } else {
                out.push_str(&String::from_utf8_lossy(&self.carry));
            }
            self.carry.clear();
        }
        if self.dropped > 0 {
            out.push_str(&truncation_marker(self.max_bytes, self.dropped));
        }
        self.text.push_str(&out);
        out
    }

    /// Everything kept so far (with the marker after [`finish`](Self::finish)).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }

    /// How many bytes were dropped.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped
    }
}
