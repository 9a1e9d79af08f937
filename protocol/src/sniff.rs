//! Recognising foreign bytes: can the first bytes of a stream be the start of a message of
//! this protocol, and if not, what do they look like?
//!
//! A message starts with a 2-byte big-endian length, then a JSON header that must be an
//! object: after optional JSON whitespace, its first byte is `{`. So three bytes (more if
//! the header starts with whitespace) are enough to tell that a peer does not speak this
//! protocol, long before a decoder would give up: an HTTP reply announces an 18,516-byte
//! header (`HT`) and goes on with `T`; a TLS record announces 5,635 bytes (`0x16 0x03`) and
//! goes on with the version's minor number. A client that would otherwise wait for those
//! bytes until its deadline can say at once what it was sent.
//!
//! [`sniff`] gives the verdict while bytes are still arriving; [`describe`] the best
//! description once no more will come (end of stream, deadline, a protocol error). Both are
//! pure functions of the first bytes (at most [`SNIFF_LEN`] of them are looked at), cost
//! linear in those bytes, and never panic. Peer text in a description is escaped and
//! truncated ([`quote`]), so printing it cannot forge lines or move a terminal's cursor.
//!
//! ```
//! use sockmsg_protocol::sniff::{sniff, Foreign, Sniff};
//!
//! let Sniff::Foreign(seen) = sniff(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
//! else { panic!("an HTTP reply is foreign") };
//! assert!(matches!(seen, Foreign::Http { .. }));
//! assert_eq!(seen.to_string(), r#"it answered "HTTP/1.1 400 Bad Request" (an HTTP server?)"#);
//!
//! assert_eq!(sniff(b"\x00\x2a{\"byteorder\""), Sniff::Plausible);
//! assert_eq!(sniff(b"\x00"), Sniff::NeedMore);
//! ```

use std::fmt;

/// How many of the first bytes [`sniff`] and [`describe`] look at: keep this many to
/// describe a foreign peer.
pub const SNIFF_LEN: usize = 64;

/// Longest text, in characters, a description shows before truncating it.
const SHOW_CHARS: usize = 48;

/// How many bytes a description of binary data shows, in hex.
const SHOW_BYTES: usize = 12;

/// The verdict on the first bytes of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// They can be the start of a message of this protocol (the header starts with `{`).
    Plausible,
    /// Too few bytes to tell, or to say well what they are: look again with more.
    NeedMore,
    /// They cannot be the start of a message of this protocol; here is what they look like.
    Foreign(Foreign),
}

/// What a peer that does not speak this protocol sent, as far as its first bytes tell.
/// Its `Display` is a phrase such as `it answered "HTTP/1.1 400 Bad Request" (an HTTP
/// server?)`, meant to follow `ADDRESS does not speak this protocol: `.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Foreign {
    /// An HTTP response: its status line.
    Http {
        /// The status line (`HTTP/1.1 400 Bad Request`), escaped and truncated.
        status_line: Quoted,
    },
    /// A TLS record (content type 20 to 23, then major version 3).
    Tls {
        /// The record's content type (22: handshake, 21: alert).
        content_type: u8,
        /// The record's protocol version, major and minor (3, 1 for TLS 1.0 and later).
        version: [u8; 2],
    },
    /// An SSH server's identification line.
    Ssh {
        /// The line (`SSH-2.0-...`), escaped and truncated.
        banner: Quoted,
    },
    /// Some other line of text (an SMTP, FTP or Redis greeting, an error message, ...).
    Text {
        /// The first line, escaped and truncated.
        line: Quoted,
    },
    /// Binary data whose first two bytes announce a JSON header that is empty or does not
    /// start with `{`.
    Binary {
        /// The header length the first two bytes announce.
        header_len: usize,
        /// The first bytes (at most 12).
        first: Vec<u8>,
    },
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Foreign::Http { status_line } => {
                write!(f, "it answered {status_line} (an HTTP server?)")
            }
            Foreign::Tls {
                content_type,
                version: [major, minor],
            } => {
                let kind = match content_type {
                    20 => "change-cipher-spec ",
                    21 => "alert ",
                    22 => "handshake ",
                    23 => "application-data ",
                    _ => "",
                };
                write!(
                    f,
                    "it answered with a TLS {kind}record (bytes {content_type:#04x} \
                     {major:#04x} {minor:#04x}; a TLS server?)"
                )
            }
            Foreign::Ssh { banner } => write!(f, "it answered {banner} (an SSH server?)"),
            Foreign::Text { line } => write!(
                f,
                "it answered {line} (text, not a length-prefixed message)"
            ),
            Foreign::Binary { header_len, first } => {
                f.write_str("it answered bytes")?;
                for b in first {
                    write!(f, " {b:02x}")?;
                }
                if *header_len == 0 {
                    f.write_str(", announcing an empty JSON header")
                } else {
                    write!(
                        f,
                        ", announcing a {header_len}-byte JSON header that does not start \
                         with '{{'"
                    )
                }
            }
        }
    }
}

/// Peer text made safe to print: escaped (no raw control characters, quotes or
/// backslashes; invalid UTF-8 as `\xNN`) and truncated. Its `Display` is the text in double
/// quotes, followed by `... (N bytes)` when it was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    shown: String,
    len: usize,
    truncated: bool,
}

impl Quoted {
    /// The escaped text shown (without the quotes).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The length in bytes of the whole original text.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if the original text was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `true` if only the start of the text is shown.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.truncated {
            write!(f, "\"{}\"... ({} bytes)", self.shown, self.len)
        } else {
            write!(f, "\"{}\"", self.shown)
        }
    }
}

/// Escapes `bytes` for printing, showing at most `max_chars` characters of it (each escape
/// counts as one): control characters as `\n`, `\r`, `\t` or `\u{..}` (Unicode line
/// separators and bidirectional controls too), `"` and `\` with a backslash, bytes that are
/// not UTF-8 as `\xNN`. Cost is linear in what is shown.
///
/// ```
/// use sockmsg_protocol::sniff::quote;
/// assert_eq!(quote(b"a\nb\x1b[2J\xff", 80).to_string(), r#""a\nb\u{1b}[2J\xff""#);
/// assert_eq!(quote(&[b'x'; 1000], 3).to_string(), r#""xxx"... (1000 bytes)"#);
/// ```
pub fn quote(bytes: &[u8], max_chars: usize) -> Quoted {
    let mut shown = String::new();
    let mut count = 0usize;
    let mut truncated = false;
    'outer: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if count == max_chars {
                truncated = true;
                break 'outer;
            }
            count += 1;
            match c {
                '\n' => shown.push_str("\\n"),
                '\r' => shown.push_str("\\r"),
                '\t' => shown.push_str("\\t"),
                '"' => shown.push_str("\\\""),
                '\\' => shown.push_str("\\\\"),
                c if needs_escape(c) => shown.push_str(&c.escape_unicode().to_string()),
                c => shown.push(c),
            }
        }
        for b in chunk.invalid() {
            if count == max_chars {
                truncated = true;
                break 'outer;
            }
            count += 1;
            shown.push_str(&format!("\\x{b:02x}"));
        }
    }
    Quoted {
        shown,
        len: bytes.len(),
        truncated,
    }
}

/// Characters that could forge a line or reorder text on a terminal.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'              // line and paragraph separators
            | '\u{200e}' | '\u{200f}'            // left-to-right / right-to-left marks
            | '\u{202a}'..='\u{202e}'            // bidirectional embeddings and overrides
            | '\u{2066}'..='\u{2069}'            // bidirectional isolates
            | '\u{feff}') // byte order mark / zero-width no-break space
}

/// JSON's whitespace, which may precede the header's `{`.
fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Known greetings whose start alone does not say enough.
const SIGNATURES: [&[u8]; 2] = [b"HTTP/", b"SSH-"];

/// The verdict on the first bytes of a stream (only the first [`SNIFF_LEN`] are looked at).
///
/// [`Sniff::Foreign`] as soon as the bytes cannot start a message, with the best
/// description they allow; [`Sniff::NeedMore`] while they might, or while a few more bytes
/// would describe them much better (the rest of `HTTP/`, of a status line); given
/// [`SNIFF_LEN`] bytes or more it is never `NeedMore`.
///
/// ```
/// use sockmsg_protocol::sniff::{sniff, Foreign, Sniff};
/// // A TLS server's handshake record: 0x16, then version 3.3.
/// assert!(matches!(sniff(&[0x16, 0x03, 0x03, 0x00, 0x7a]), Sniff::Foreign(Foreign::Tls { .. })));
/// // Bytes announcing a 65,278-byte header that does not start with '{'.
/// let verdict = sniff(&[0xfe, 0xfe, 0x00]);
/// assert!(matches!(verdict, Sniff::Foreign(Foreign::Binary { header_len: 65278, .. })));
/// ```
pub fn sniff(first: &[u8]) -> Sniff {
    let first = first.get(..SNIFF_LEN).unwrap_or(first);
    let full = first.len() >= SNIFF_LEN;
    match plausible(first) {
        Some(true) => Sniff::Plausible,
        None if full => Sniff::Plausible, // a header of 62 blanks and counting: valid JSON
        None => Sniff::NeedMore,
        Some(false) => {
            if !full && wants_more_text(first) {
                return Sniff::NeedMore;
            }
            Sniff::Foreign(classify(first))
        }
    }
}

/// The best description of `first` once no more bytes will come: `Some` if they cannot be
/// the start of a message, `None` if they can, or if there are too few to tell (fewer than
/// three bytes, or a header of blanks so far, unless they end a line of text: `OK\n`).
///
/// ```
/// use sockmsg_protocol::sniff::describe;
/// // An HTTP server that sent only this much before closing: still recognisable.
/// assert!(describe(b"HTTP/1.0 2").is_some());
/// assert!(describe(b"HT").is_none());
/// ```
pub fn describe(first: &[u8]) -> Option<Foreign> {
    let first = first.get(..SNIFF_LEN).unwrap_or(first);
    match plausible(first) {
        Some(false) => Some(classify(first)),
        Some(true) => None,
        // A header of blanks so far: a line of text ending there (`OK\n`) was no message.
        None if ended_text_line(first) => Some(classify(first)),
        None => None,
    }
}

/// A line of text followed by a line end.
fn ended_text_line(first: &[u8]) -> bool {
    let line = first_line(first);
    line.len() < first.len() && looks_like_text(line)
}

/// `Some(true)`: can start a message; `Some(false)`: cannot; `None`: cannot tell yet.
fn plausible(first: &[u8]) -> Option<bool> {
    let [hi, lo, header @ ..] = first else {
        return None;
    };
    let header_len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if header_len == 0 {
        return Some(false);
    }
    let header = header.get(..header_len).unwrap_or(header);
    match header.iter().find(|b| !is_json_ws(**b)) {
        Some(b) => Some(*b == b'{'),
        None if header.len() == header_len => Some(false), // a header of blanks only
        None => None,
    }
}

/// Foreign text that a few more bytes would describe better: the start of a known
/// greeting, or a known greeting whose first line has not ended yet.
fn wants_more_text(first: &[u8]) -> bool {
    SIGNATURES.iter().any(|sig| {
        if first.len() < sig.len() {
            sig.starts_with(first)
        } else {
            first.starts_with(sig) && !first.contains(&b'\n')
        }
    })
}

/// What foreign bytes look like.
fn classify(first: &[u8]) -> Foreign {
    if let [t @ 20..=23, 3, minor, ..] = first {
        if *minor <= 4 {
            return Foreign::Tls {
                content_type: *t,
                version: [3, *minor],
            };
        }
    }
    let line = first_line(first);
    if first.starts_with(b"HTTP/") {
        return Foreign::Http {
            status_line: quote(line, SHOW_CHARS),
        };
    }
    if first.starts_with(b"SSH-") {
        return Foreign::Ssh {
            banner: quote(line, SHOW_CHARS),
        };
    }
    if looks_like_text(line) {
        return Foreign::Text {
            line: quote(line, SHOW_CHARS),
        };
    }
    let [hi, lo, ..] = first else {
        // Unreachable in practice (`plausible` needs two bytes), but never panic.
        return Foreign::Binary {
            header_len: 0,
            first: first.to_vec(),
        };
    };
    Foreign::Binary {
        header_len: usize::from(u16::from_be_bytes([*hi, *lo])),
        first: first.get(..SHOW_BYTES).unwrap_or(first).to_vec(),
    }
}

/// The bytes up to the first line end (`\r` or `\n`), or all of them.
fn first_line(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or(bytes)
}

/// At least two characters of UTF-8 text without control characters other than tabs and
/// escapes (terminal colours); the end may be cut inside a character.
fn looks_like_text(line: &[u8]) -> bool {
    let mut chars = 0usize;
    let mut chunks = line.utf8_chunks().peekable();
    while let Some(chunk) = chunks.next() {
        if chunk
            .valid()
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\u{1b}'))
        {
            return false;
        }
        chars += chunk.valid().chars().count();
        // Invalid bytes are allowed only as a character cut by the end of what was read.
        if !chunk.invalid().is_empty() && (chunks.peek().is_some() || chunk.invalid().len() > 3) {
            return false;
        }
    }
    chars >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn foreign(bytes: &[u8]) -> Foreign {
        match sniff(bytes) {
            Sniff::Foreign(f) => f,
            other => panic!("{bytes:?}: expected foreign, got {other:?}"),
        }
    }

    #[test]
    fn messages_of_this_protocol_are_plausible() {
        let wire = crate::encode(&crate::Message::binary("x/y", b"hi".to_vec())).unwrap();
        for n in 3..wire.len() {
            assert_eq!(sniff(&wire[..n]), Sniff::Plausible, "{n} bytes");
            assert_eq!(describe(&wire[..n]), None);
        }
        assert_eq!(sniff(&wire[..2]), Sniff::NeedMore);
        assert_eq!(sniff(b"\x00\x05 \n{}  "), Sniff::Plausible);
        assert_eq!(sniff(b"\x00\x05  "), Sniff::NeedMore);
        assert_eq!(describe(b"\x00\x05  "), None);
        assert_eq!(sniff(b"OK\n"), Sniff::NeedMore);
        assert!(matches!(describe(b"OK\n"), Some(Foreign::Text { .. })));
    }

    #[test]
    fn http_reply_is_named_with_its_status_line() {
        let f = foreign(b"HTTP/1.1 400 Bad Request\r\nServer: x\r\n\r\n");
        assert_eq!(
            f.to_string(),
            r#"it answered "HTTP/1.1 400 Bad Request" (an HTTP server?)"#
        );
        // Dripped: wait for more while it may still be HTTP/.
        assert_eq!(sniff(b"HTT"), Sniff::NeedMore);
        assert_eq!(sniff(b"HTTP/1.1 4"), Sniff::NeedMore);
        assert!(matches!(
            describe(b"HTTP/1.1 4"),
            Some(Foreign::Http { .. })
        ));
        // 'HT' then something else is text at once.
        assert!(matches!(foreign(b"HTML"), Foreign::Text { .. }));
    }

    #[test]
    fn tls_records_are_named() {
        let f = foreign(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        assert_eq!(
            f,
            Foreign::Tls {
                content_type: 22,
                version: [3, 1]
            }
        );
        assert!(f.to_string().contains("TLS handshake record"), "{f}");
        assert!(f.to_string().contains("0x16 0x03 0x01"), "{f}");
        assert!(foreign(&[0x15, 0x03, 0x03, 0, 2, 2, 40])
            .to_string()
            .contains("TLS alert record"));
    }

    #[test]
    fn ssh_and_other_text_are_named() {
        let f = foreign(b"SSH-2.0-OpenSSH_9.6\r\n");
        assert!(matches!(f, Foreign::Ssh { .. }));
        assert!(f.to_string().contains("\"SSH-2.0-OpenSSH_9.6\""), "{f}");
        let f = foreign(b"-ERR unknown command\r\n");
        assert_eq!(
            f.to_string(),
            r#"it answered "-ERR unknown command" (text, not a length-prefixed message)"#
        );
    }

    #[test]
    fn random_bytes_announcing_a_huge_header_are_shown_in_hex() {
        let f = foreign(&[0xff, 0xf0, 0x9c, 0x01, 0x02, 0x03]);
        assert_eq!(
            f,
            Foreign::Binary {
                header_len: 0xfff0,
                first: vec![0xff, 0xf0, 0x9c, 0x01, 0x02, 0x03]
            }
        );
        assert_eq!(
            f.to_string(),
            "it answered bytes ff f0 9c 01 02 03, announcing a 65520-byte JSON header that \
             does not start with '{'"
        );
        let long = foreign(&[0xee; 200]);
        let Foreign::Binary { first, .. } = &long else {
            panic!("{long:?}")
        };
        assert_eq!(first.len(), SHOW_BYTES);
        assert!(foreign(b"\x00\x00{")
            .to_string()
            .contains("empty JSON header"));
        // A header of blanks only.
        assert!(matches!(foreign(b"\x00\x02  "), Foreign::Binary { .. }));
    }

    #[test]
    fn peer_text_is_escaped_and_truncated() {
        let f = foreign(b"OK \x1b[31mred\x1b[0m\n2030-01-01 forged");
        let shown = f.to_string();
        assert!(shown.contains(r#""OK \u{1b}[31mred\u{1b}[0m""#), "{shown}");
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert!(!shown.contains("forged"), "{shown}");
        let f = foreign(b"hello \xe2\x80\xaeevil\"\\ \xff\xfe line");
        let Foreign::Binary { .. } = f else {
            // Invalid UTF-8 in the middle: not text.
            panic!("{f:?}")
        };
        let q = quote("a\u{202e}b\"\\".as_bytes(), 80);
        assert_eq!(q.to_string(), r#""a\u{202e}b\"\\""#);
        let long = vec![b'a'; SNIFF_LEN];
        let f = foreign(&long);
        assert!(
            matches!(&f, Foreign::Text { line } if line.is_truncated() && line.len() == SNIFF_LEN)
        );
        assert!(f.to_string().contains(&format!("... ({SNIFF_LEN} bytes)")));
    }

    #[test]
    fn never_needs_more_than_sniff_len_and_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let verdict = sniff(&bytes);
            if len >= SNIFF_LEN {
                assert_ne!(verdict, Sniff::NeedMore);
            }
            let _ = describe(&bytes).map(|f| f.to_string());
        }
        let blanks: Vec<u8> = [&[0xff, 0xff][..], &[b' '; 100]].concat();
        assert_eq!(sniff(&blanks), Sniff::Plausible);
    }
}
