//! Text a peer chose (a content-type, a header value), made safe to put in a log line.
//!
//! A peer must not be able to forge log lines or flood the log: [`peer_text`] quotes the
//! text, escapes everything that is not a printable character (`\n`, `\r`, ANSI escape
//! sequences, bidirectional overrides...) and shows at most [`MAX_CHARS`] characters,
//! noting the full length of what it cut. Its cost is bounded by what it shows, whatever
//! the length of the text.
//!
//! ```
//! use sockmsg_demo::peer_text::peer_text;
//! assert_eq!(peer_text("text/json").to_string(), r#""text/json""#);
//! assert_eq!(
//!     peer_text("x\n2030-01-01 ERROR forged\x1b[0m").to_string(),
//!     r#""x\n2030-01-01 ERROR forged\u{1b}[0m""#
//! );
//! let long = format!("binary/{}", "x".repeat(60_000));
//! assert_eq!(peer_text(&long).max_chars(7).to_string(), r#""binary/…" (60007 bytes)"#);
//! ```

use std::fmt::{self, Write as _};

use crate::pyfmt::is_printable;

/// Characters of peer text shown in a log line by default.
pub const MAX_CHARS: usize = 64;

/// Peer text as it may appear in a log line: see the [module](self) documentation.
#[derive(Debug, Clone, Copy)]
pub struct PeerText<'a> {
    text: &'a str,
    max_chars: usize,
}

/// `text` escaped and cut for a log line ([`MAX_CHARS`] characters at most).
pub fn peer_text(text: &str) -> PeerText<'_> {
    PeerText {
        text,
        max_chars: MAX_CHARS,
    }
}

impl PeerText<'_> {
    /// The same, showing at most `max_chars` characters.
    pub fn max_chars(self, max_chars: usize) -> Self {
        PeerText { max_chars, ..self }
    }
}

impl fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for (n, c) in self.text.chars().enumerate() {
            if n == self.max_chars {
                return write!(f, "…\" ({} bytes)", self.text.len());
            }
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c == ' ' || (c != '…' && is_printable(c)) => f.write_char(c)?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_formats_are_escaped() {
        assert_eq!(
            peer_text("a\r\tb\u{202e}c\u{0}\"\\").to_string(),
            r#""a\r\tb\u{202e}c\u{0}\"\\""#
        );
        // The ellipsis marks a cut only: a peer's own is escaped.
        assert_eq!(peer_text("…").to_string(), r#""\u{2026}""#);
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let text = "é".repeat(100);
        let shown = peer_text(&text).to_string();
        assert_eq!(shown, format!("\"{}…\" (200 bytes)", "é".repeat(MAX_CHARS)));
        assert_eq!(peer_text("abc").max_chars(3).to_string(), r#""abc""#);
        assert_eq!(peer_text("").max_chars(0).to_string(), r#""""#);
    }
}
