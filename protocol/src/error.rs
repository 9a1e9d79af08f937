//! The one error type of the crate.

use std::fmt;

/// The phase of a message on the wire: where in the stream a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The 2-byte big-endian length of the JSON header.
    Protoheader,
    /// The JSON header (its length is known).
    Header,
    /// The content (the header is known, `content-length` bytes follow).
    Content,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Protoheader => "protoheader",
            Phase::Header => "JSON header",
            Phase::Content => "content",
        })
    }
}

/// The kind of a JSON value, as found where another kind was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonKind {
    /// `null`
    Null,
    /// `true` or `false`
    Bool,
    /// A number with no fraction or exponent that fits in 64 bits.
    Integer,
    /// Any other number (fraction, exponent, or too large for 64 bits).
    Float,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonKind {
    /// The kind of a parsed JSON value.
    pub fn of(value: &serde_json::Value) -> JsonKind {
        use serde_json::Value;
        match value {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(n) if n.is_f64() => JsonKind::Float,
            Value::Number(_) => JsonKind::Integer,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Integer => "an integer",
            JsonKind::Float => "a non-integer number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        })
    }
}

/// Everything that can go wrong, in one type.
///
/// Variants up to [`Error::UnexpectedEof`] are caused by the **peer** (the bytes it sent break
/// the protocol): [`Error::is_peer_error`] is `true` for them, and the decoder that reported
/// one stays failed and reports it again on every later call. The remaining variants are
/// caused by the **local program** (misuse, or a value it asked to encode that the protocol
/// cannot carry) and leave the machine as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The protoheader announced a JSON header longer than the configured maximum.
    HeaderTooLong {
        /// The announced length.
        size: usize,
        /// The configured maximum ([`crate::Limits::max_header_len`]).
        max: usize,
    },
    /// Bytes that must be UTF-8 are not.
    InvalidUtf8 {
        /// The phase whose bytes are not UTF-8.
        phase: Phase,
        /// The offset, within that phase's bytes, of the first invalid byte.
        offset: usize,
    },
    /// Bytes that must be JSON are not (serde_json's message, line and column).
    InvalidJson {
        /// The phase whose bytes are not JSON.
        phase: Phase,
        /// Line (1-based) where the parser stopped.
        line: usize,
        /// Column (1-based) where the parser stopped.
        column: usize,
        /// The parser's description.
        reason: String,
    },
    /// JSON nested deeper than the configured maximum.
    NestingTooDeep {
        /// The phase whose JSON is too deep.
        phase: Phase,
        /// The configured maximum ([`crate::Limits::max_depth`]).
        max: usize,
    },
    /// The JSON header is valid JSON but not an object.
    HeaderNotObject {
        /// What it is instead.
        found: JsonKind,
    },
    /// A required header key is absent.
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// A required header key has a value of the wrong JSON type.
    WrongType {
        /// The key.
        key: &'static str,
        /// What the protocol requires.
        expected: &'static str,
        /// What was found.
        found: JsonKind,
    },
    /// `byteorder` is a string, but neither `"little"` nor `"big"`.
    InvalidByteorder {
        /// The value found.
        value: String,
    },
    /// `content-length` is a negative integer.
    NegativeContentLength {
        /// The value found.
        size: i64,
    },
    /// `content-length` is larger than the configured maximum.
    ContentTooLong {
        /// The announced length (saturated at `u64::MAX`).
        size: u64,
        /// The configured maximum ([`crate::Limits::max_content_len`]).
        max: u64,
    },
    /// `text/json` content declares an encoding this crate does not decode.
    UnsupportedEncoding {
        /// The `content-encoding` value.
        encoding: String,
    },
    /// The stream ended inside a message.
    UnexpectedEof {
        /// The phase that was cut short.
        phase: Phase,
        /// How many bytes of that phase were still missing.
        missing: usize,
    },
    /// JSON content is well-formed but does not have the shape the program asked for.
    ContentShape {
        /// serde's description.
        reason: String,
    },

    // ---- local errors: misuse by this program, not the peer's fault ----
    /// A message was queued after [`crate::Connection::close`].
    SendAfterClose,
    /// Data was fed after the end of the stream was reported.
    ReceiveAfterEof,
    /// The message to encode has a JSON header longer than 65,535 bytes.
    EncodeHeaderTooLong {
        /// The encoded header length.
        size: usize,
    },
    /// A value to encode as JSON could not be serialized.
    Serialize {
        /// serde's description.
        reason: String,
    },
    /// [`crate::Decoder::commit`] was called with more bytes than the last read buffer held.
    CommitTooLarge {
        /// Bytes committed.
        committed: usize,
        /// Bytes available in the buffer.
        available: usize,
    },
}

impl Error {
    /// `true` if the peer caused this error (its bytes broke the protocol); `false` if the
    /// local program did (misuse, or a value that cannot be encoded).
    pub fn is_peer_error(&self) -> bool {
        !matches!(
            self,
            Error::SendAfterClose
                | Error::ReceiveAfterEof
                | Error::EncodeHeaderTooLong { .. }
                | Error::Serialize { .. }
                | Error::CommitTooLarge { .. }
        )
    }

    /// The phase in which a peer error was found, where it has one.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Error::HeaderTooLong { .. } => Some(Phase::Protoheader),
            Error::InvalidUtf8 { phase, .. }
            | Error::InvalidJson { phase, .. }
            | Error::NestingTooDeep { phase, .. }
            | Error::UnexpectedEof { phase, .. } => Some(*phase),
            Error::HeaderNotObject { .. }
            | Error::MissingKey { .. }
            | Error::WrongType { .. }
            | Error::InvalidByteorder { .. }
            | Error::NegativeContentLength { .. }
            | Error::ContentTooLong { .. } => Some(Phase::Header),
            Error::UnsupportedEncoding { .. } | Error::ContentShape { .. } => Some(Phase::Content),
            _ => None,
        }
    }

    /// A short stable name for the variant (`"missing-key"`, `"unexpected-eof"`, …), for logs,
    /// metrics and conformance files.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::HeaderTooLong { .. } => "header-too-long",
            Error::InvalidUtf8 { .. } => "invalid-utf8",
            Error::InvalidJson { .. } => "invalid-json",
            Error::NestingTooDeep { .. } => "nesting-too-deep",
            Error::HeaderNotObject { .. } => "header-not-object",
            Error::MissingKey { .. } => "missing-key",
            Error::WrongType { .. } => "wrong-type",
            Error::InvalidByteorder { .. } => "invalid-byteorder",
            Error::NegativeContentLength { .. } => "negative-content-length",
            Error::ContentTooLong { .. } => "content-too-long",
            Error::UnsupportedEncoding { .. } => "unsupported-encoding",
            Error::UnexpectedEof { .. } => "unexpected-eof",
            Error::ContentShape { .. } => "content-shape",
            Error::SendAfterClose => "send-after-close",
            Error::ReceiveAfterEof => "receive-after-eof",
            Error::EncodeHeaderTooLong { .. } => "encode-header-too-long",
            Error::Serialize { .. } => "serialize",
            Error::CommitTooLarge { .. } => "commit-too-large",
        }
    }

    pub(crate) fn invalid_json(phase: Phase, e: &serde_json::Error) -> Error {
        Error::InvalidJson {
            phase,
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::HeaderTooLong { size, max } => write!(
                f,
                "protoheader: JSON header length {size} exceeds the maximum {max}"
            ),
            Error::InvalidUtf8 { phase, offset } => {
                write!(f, "{phase}: invalid UTF-8 at byte offset {offset}")
            }
            Error::InvalidJson {
                phase,
                line,
                column,
                reason,
            } => write!(
                f,
                "{phase}: invalid JSON at line {line} column {column}: {reason}"
            ),
            Error::NestingTooDeep { phase, max } => {
                write!(f, "{phase}: JSON nested deeper than {max} levels")
            }
            Error::HeaderNotObject { found } => {
                write!(f, "JSON header: expected an object, found {found}")
            }
            Error::MissingKey { key } => write!(f, "JSON header: missing required key {key:?}"),
            Error::WrongType {
                key,
                expected,
                found,
            } => write!(f, "JSON header: {key:?} must be {expected}, found {found}"),
            Error::InvalidByteorder { value } => write!(
                f,
                "JSON header: \"byteorder\" must be \"little\" or \"big\", found {value:?}"
            ),
            Error::NegativeContentLength { size } => {
                write!(f, "JSON header: \"content-length\" is negative ({size})")
            }
            Error::ContentTooLong { size, max } => write!(
                f,
                "JSON header: \"content-length\" {size} exceeds the maximum {max}"
            ),
            Error::UnsupportedEncoding { encoding } => write!(
                f,
                "content: unsupported content-encoding {encoding:?} for text/json"
            ),
            Error::UnexpectedEof { phase, missing } => write!(
                f,
                "unexpected end of stream in the {phase}: {missing} more byte(s) expected"
            ),
            Error::ContentShape { reason } => {
                write!(
                    f,
                    "content: JSON does not have the expected shape: {reason}"
                )
            }
            Error::SendAfterClose => f.write_str("cannot send: the connection was closed"),
            Error::ReceiveAfterEof => {
                f.write_str("cannot receive: end of stream was already reported")
            }
            Error::EncodeHeaderTooLong { size } => write!(
                f,
                "cannot encode: JSON header of {size} bytes exceeds 65535 bytes"
            ),
            Error::Serialize { reason } => write!(f, "cannot encode: {reason}"),
            Error::CommitTooLarge {
                committed,
                available,
            } => write!(
                f,
                "commit of {committed} bytes exceeds the {available}-byte read buffer"
            ),
        }
    }
}

impl std::error::Error for Error {}
