//! The capture inspector behind `app-inspect`: decodes a captured byte stream (for example
//! the raw TCP payload of one direction of a connection, as Wireshark's "Follow TCP
//! Stream", shown as raw and saved, writes it) with the same sans-IO
//! [`Connection`] the servers use, and prints every message: its offset in the stream, its
//! JSON header as sent, and its content (JSON pretty-printed in the sender's key order,
//! anything else as a hex preview).
//!
//! One way to get such a stream from a capture: the server's direction (port 65432) of
//! the first TCP connection in it (`tcp.stream == 0`; connections in a capture are numbered
//! from 0):
//!
//! ```text
//! tshark -r capture.pcap -Y 'tcp.stream == 0 && tcp.srcport == 65432 && tcp.len > 0 \
//!        && !tcp.analysis.retransmission' -T fields -e tcp.payload | xxd -r -p | app-inspect -
//! ```
//!
//! The stream is read in chunks and fed to the connection as it comes (its one way in,
//! [`Connection::read_buf`] and [`Connection::commit`]), so a capture of any size is
//! inspected in memory bounded by its largest message (itself bounded by
//! [`Limits::max_content_len`]). Messages and errors are located with
//! [`Connection::message_start`] and [`Connection::position`]. A malformed stream stops at
//! the first error, with the byte offset where it was detected.
//!
//! ```
//! use sockmsg_app::inspect::{inspect, Options};
//! use sockmsg_protocol::{encode, Message};
//!
//! let mut capture = encode(&Message::json(&serde_json::json!({"action": "search", "value": "ring"}))?)?;
//! capture.extend(encode(&Message::binary("binary/custom-client-binary-type", b"binary!".to_vec()))?);
//! let mut out = Vec::new();
//! let summary = inspect(&capture[..], &mut out, &Options::default())?;
//! assert_eq!(summary.messages, 2);
//! let text = String::from_utf8(out)?;
//! assert!(text.contains("#1 at offset 0: 142 bytes"));
//! assert!(text.contains("\"value\": \"ring\""));
//! assert!(text.contains("62 69 6e 61 72 79 21"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::time::Instant;

use sockmsg_protocol::{Connection, Error, Event, Limits, Message, Role, MAX_HEADER_LEN};

/// How much of the stream is read at a time.
pub const CHUNK: usize = 64 * 1024;

/// What to print and what to accept.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes of binary content shown in the hex preview (0: none).
    pub preview: usize,
    /// Print only the final summary line (and the error, if any).
    pub quiet: bool,
    /// What the decoder accepts (default: the protocol defaults, 16 MiB of content).
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            preview: 64,
            quiet: false,
            limits: Limits::default(),
        }
    }
}

/// What a clean stream held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Complete messages.
    pub messages: u64,
    /// Bytes in the stream.
    pub bytes: u64,
}

/// Why inspection stopped early.
#[derive(Debug)]
pub enum InspectError {
    /// Reading the input failed.
    Read(io::Error),
    /// Writing the listing failed.
    Write(io::Error),
    /// The stream is not a valid sequence of messages.
    Malformed {
        /// The decoder's verdict.
        error: Error,
        /// Byte offset in the stream where the error was detected.
        offset: u64,
        /// Byte offset where the offending message starts.
        message_start: u64,
        /// Number (1-based) of the offending message.
        message: u64,
        /// Complete messages before it.
        messages: u64,
    },
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::Read(e) => write!(f, "cannot read the stream: {e}"),
            InspectError::Write(e) => write!(f, "cannot write the listing: {e}"),
            InspectError::Malformed {
                error,
                offset,
                message_start,
                message,
                messages,
            } => write!(
                f,
                "malformed stream at byte offset {offset} (message #{message}, which starts at \
                 byte offset {message_start}; {messages} complete message(s) before it): \
                 {error} [{}]",
                error.kind()
            ),
        }
    }
}

impl std::error::Error for InspectError {}

/// Decodes the stream read from `input` and writes the listing to `out`, then a summary
/// line. On a malformed stream the listing stops before the offending message and the
/// error says where it was detected; the summary line is the caller's to print then.
pub fn inspect<R: Read, W: Write>(
    mut input: R,
    mut out: W,
    options: &Options,
) -> Result<Summary, InspectError> {
    // The capture is one direction of a connection; the role only decides which side's
    // limits apply to what it sends, and nothing is sent here.
    let mut conn = Connection::new(Role::Server, options.limits.clone());
    let now = Instant::now();
    let mut chunk = vec![0u8; CHUNK];
    // The first bytes of the message in progress (protoheader and JSON header, at most),
    // from stream offset `head_start`, so its header can be shown exactly as it was sent.
    let mut head = Head {
        start: 0,
        bytes: Vec::new(),
        cap: 2 + MAX_HEADER_LEN.min(options.limits.max_header_len),
    };
    let mut messages = 0u64;
    let mut text = String::new();
    loop {
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InspectError::Read(e)),
        };
        let got = chunk.get(..n).unwrap_or_default();
        // Stream offset of `got`: every byte before it has been decoded (NeedData below).
        let got_at = conn.position();
        if n == 0 {
            conn.receive_eof();
        }
        let mut rest = got;
        while !rest.is_empty() {
            let buf = conn.read_buf();
            let k = buf.len().min(rest.len());
            let (now_in, later) = rest.split_at(k);
            buf.get_mut(..k).unwrap_or_default().copy_from_slice(now_in);
            rest = later;
            // Within the slice just lent, before any end of stream: cannot fail.
            conn.commit(k, now)
                .map_err(|e| InspectError::Read(io::Error::other(e)))?;
        }
        loop {
            let start = conn.message_start();
            match conn.next_event() {
                Ok(Event::Message(message)) => {
                    messages += 1;
                    if !options.quiet {
                        let raw = head.of(start, got_at, got);
                        text.clear();
                        let len = conn.position() - start;
                        describe(&mut text, messages, start, len, &raw, &message, options);
                        out.write_all(text.as_bytes())
                            .map_err(InspectError::Write)?;
                    }
                }
                Ok(Event::NeedData) => break,
                Ok(Event::End) => {
                    let summary = Summary {
                        messages,
                        bytes: conn.position(),
                    };
                    writeln!(
                        out,
                        "{} message(s), {} bytes, clean end of stream",
                        summary.messages, summary.bytes
                    )
                    .and_then(|()| out.flush())
                    .map_err(InspectError::Write)?;
                    return Ok(summary);
                }
                Err(e) => {
                    out.flush().map_err(InspectError::Write)?;
                    return Err(InspectError::Malformed {
                        error: e.into(),
                        offset: conn.position(),
                        message_start: start,
                        message: messages + 1,
                        messages,
                    });
                }
            }
        }
        // Keep the head of the message now in progress for the next chunk.
        head.keep(conn.message_start(), got_at, got);
    }
}

/// The first bytes (at most `cap`) of the message in progress, which may have begun in an
/// earlier chunk than the one being decoded.
struct Head {
    /// Stream offset of `bytes[0]`: where the message in progress starts.
    start: u64,
    bytes: Vec<u8>,
    cap: usize,
}

impl Head {
    /// The first bytes (at most `cap`) of the message that starts at stream offset `start`,
    /// from what was kept and from `got` (the chunk at stream offset `got_at`).
    fn of(&self, start: u64, got_at: u64, got: &[u8]) -> Vec<u8> {
        let mut raw = if start == self.start {
            self.bytes.clone()
        } else {
            Vec::new()
        };
        let from = start + raw.len() as u64;
        let skip = usize::try_from(from.saturating_sub(got_at)).unwrap_or(usize::MAX);
        if from >= got_at {
            let more = got.get(skip..).unwrap_or_default();
            let room = self.cap.saturating_sub(raw.len());
            raw.extend_from_slice(more.get(..room.min(more.len())).unwrap_or_default());
        }
        raw
    }

    /// Keeps the head of the message in progress, which starts at `start`, once `got` (at
    /// stream offset `got_at`) has been decoded.
    fn keep(&mut self, start: u64, got_at: u64, got: &[u8]) {
        let raw = self.of(start, got_at, got);
        self.start = start;
        self.bytes = raw;
    }
}

/// Appends the listing of one message.
fn describe(
    out: &mut String,
    number: u64,
    start: u64,
    len: u64,
    head: &[u8],
    message: &Message,
    options: &Options,
) {
    let content = message.content();
    let header_len = len.saturating_sub(2).saturating_sub(content.len() as u64);
    let _ = writeln!(
        out,
        "#{number} at offset {start}: {len} bytes (2 + {header_len} header + {} content)",
        content.len()
    );
    let raw = usize::try_from(header_len)
        .ok()
        .and_then(|h| head.get(2..2 + h))
        .map(String::from_utf8_lossy);
    let _ = writeln!(
        out,
        "  header:  {}",
        one_line(raw.as_deref().unwrap_or("(not captured)"))
    );
    let h = message.header();
    let _ = writeln!(
        out,
        "  content: {} ({}), {} bytes",
        h.content_type,
        h.content_encoding,
        content.len()
    );
    if message.is_json() {
        match std::str::from_utf8(content) {
            Ok(text) => {
                let _ = writeln!(out, "{}", pretty_json(text, "    "));
            }
            Err(_) => hex_preview(out, content, options.preview),
        }
    } else {
        hex_preview(out, content, options.preview);
    }
}

/// `text` on one line: line breaks and tabs escaped.
fn one_line(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s
}

/// Re-indents well-formed JSON text, two spaces a level, every line starting with
/// `indent`; keys stay in the sender's order and strings and numbers exactly as sent.
///
/// ```
/// use sockmsg_app::inspect::pretty_json;
/// assert_eq!(
///     pretty_json(r#"{"b": [1, {}], "a": "x, y"}"#, ""),
///     "{\n  \"b\": [\n    1,\n    {}\n  ],\n  \"a\": \"x, y\"\n}"
/// );
/// ```
pub fn pretty_json(text: &str, indent: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    out.push_str(indent);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.trim().chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(indent);
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Skip whitespace to see whether the container is empty.
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends a `hexdump -C`-style preview of the first `limit` bytes of `bytes`.
fn hex_preview(out: &mut String, bytes: &[u8], limit: usize) {
    let shown = bytes.get(..limit.min(bytes.len())).unwrap_or(bytes);
    for (row, line) in shown.chunks(16).enumerate() {
        let _ = write!(out, "    {:08x}  ", row * 16);
        for i in 0..16 {
            match line.get(i) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
            if i == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        out.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    if bytes.len() > shown.len() {
        let _ = writeln!(out, "    … {} more byte(s)", bytes.len() - shown.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_keeps_strings_intact() {
        let text = r#"{"a":"{\"x\": [1,2]}","b":[],"c":{ },"d":[ 1 , 2.50e3 ,null]}"#;
        assert_eq!(
            pretty_json(text, "> "),
            "> {\n>   \"a\": \"{\\\"x\\\": [1,2]}\",\n>   \"b\": [],\n>   \"c\": {},\n>   \"d\": [\n>     1,\n>     2.50e3,\n>     null\n>   ]\n> }"
        );
        assert_eq!(pretty_json("\"\\\\\"", ""), "\"\\\\\"");
        assert_eq!(pretty_json(" 42 ", ""), "42");
    }

    #[test]
    fn hex_preview_layout() {
        let mut s = String::new();
        hex_preview(&mut s, b"First 10 bytes of request: binary\xe2\x98\xba", 20);
        assert_eq!(
            s,
            "    00000000  46 69 72 73 74 20 31 30  20 62 79 74 65 73 20 6f  |First 10 bytes o|\n    \
             00000010  66 20 72 65                                       |f re|\n    \
             … 16 more byte(s)\n"
        );
        let mut none = String::new();
        hex_preview(&mut none, b"abc", 0);
        assert_eq!(none, "    … 3 more byte(s)\n");
    }
}
