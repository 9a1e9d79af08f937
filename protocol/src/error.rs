//! Errors, split by who caused them: [`PeerError`] (the remote) and [`LocalError`]
//! (this program), as h11 does; [`Error`] holds either.

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

/// What the **peer** did wrong: its bytes break the protocol (or its JSON content does not
/// have the shape the program asked for). Every decoder error is one of these; the machine
/// that reported one stays failed and reports it again on every later call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerError {
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
}

impl PeerError {
    /// The phase of the message in which the error was found.
    pub fn phase(&self) -> Phase {
        match self {
            PeerError::HeaderTooLong { .. } => Phase::Protoheader,
            PeerError::InvalidUtf8 { phase, .. }
            | PeerError::InvalidJson { phase, .. }
            | PeerError::NestingTooDeep { phase, .. }
            | PeerError::UnexpectedEof { phase, .. } => *phase,
            PeerError::HeaderNotObject { .. }
            | PeerError::MissingKey { .. }
            | PeerError::WrongType { .. }
            | PeerError::InvalidByteorder { .. }
            | PeerError::NegativeContentLength { .. }
            | PeerError::ContentTooLong { .. } => Phase::Header,
            PeerError::UnsupportedEncoding { .. } | PeerError::ContentShape { .. } => {
                Phase::Content
            }
        }
    }

    /// A short stable name for the variant (`"missing-key"`, `"unexpected-eof"`, …), for logs,
    /// metrics and conformance files.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerError::HeaderTooLong { .. } => "header-too-long",
            PeerError::InvalidUtf8 { .. } => "invalid-utf8",
            PeerError::InvalidJson { .. } => "invalid-json",
            PeerError::NestingTooDeep { .. } => "nesting-too-deep",
            PeerError::HeaderNotObject { .. } => "header-not-object",
            PeerError::MissingKey { .. } => "missing-key",
            PeerError::WrongType { .. } => "wrong-type",
            PeerError::InvalidByteorder { .. } => "invalid-byteorder",
            PeerError::NegativeContentLength { .. } => "negative-content-length",
            PeerError::ContentTooLong { .. } => "content-too-long",
            PeerError::UnsupportedEncoding { .. } => "unsupported-encoding",
            PeerError::UnexpectedEof { .. } => "unexpected-eof",
            PeerError::ContentShape { .. } => "content-shape",
        }
    }

    pub(crate) fn invalid_json(phase: Phase, e: &serde_json::Error) -> PeerError {
        PeerError::InvalidJson {
            phase,
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::HeaderTooLong { size, max } => write!(
                f,
                "protoheader: JSON header length {size} exceeds the maximum {max}"
            ),
            PeerError::InvalidUtf8 { phase, offset } => {
                write!(f, "{phase}: invalid UTF-8 at byte offset {offset}")
            }
            PeerError::InvalidJson {
                phase,
                line,
                column,
                reason,
            } => write!(
                f,
                "{phase}: invalid JSON at line {line} column {column}: {reason}"
            ),
            PeerError::NestingTooDeep { phase, max } => {
                write!(f, "{phase}: JSON nested deeper than {max} levels")
            }
            PeerError::HeaderNotObject { found } => {
                write!(f, "JSON header: expected an object, found {found}")
            }
            PeerError::MissingKey { key } => {
                write!(f, "JSON header: missing required key {key:?}")
            }
            PeerError::WrongType {
                key,
                expected,
                found,
            } => write!(f, "JSON header: {key:?} must be {expected}, found {found}"),
            PeerError::InvalidByteorder { value } => write!(
                f,
                "JSON header: \"byteorder\" must be \"little\" or \"big\", found {value:?}"
            ),
            PeerError::NegativeContentLength { size } => {
                write!(f, "JSON header: \"content-length\" is negative ({size})")
            }
            PeerError::ContentTooLong { size, max } => write!(
                f,
                "JSON header: \"content-length\" {size} exceeds the maximum {max}"
            ),
            PeerError::UnsupportedEncoding { encoding } => write!(
                f,
                "content: unsupported content-encoding {encoding:?} for text/json"
            ),
            PeerError::UnexpectedEof { phase, missing } => write!(
                f,
                "unexpected end of stream in the {phase}: {missing} more byte(s) expected"
            ),
            PeerError::ContentShape { reason } => {
                write!(
                    f,
                    "content: JSON does not have the expected shape: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for PeerError {}

/// What the **local** program did wrong: misuse of the machine, or a message it asked to
/// send that the protocol (or its limits) cannot carry. The machine is left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalError {
    /// A message was queued after [`crate::Connection::close`] (or after a deadline passed).
    SendAfterClose,
    /// Data was fed after the end of the stream was reported.
    ReceiveAfterEof,
    /// The message to encode has a JSON header longer than 65,535 bytes.
    EncodeHeaderTooLong {
        /// The encoded header length.
        size: usize,
    },
    /// The message to send has more content than [`crate::Limits::max_content_len`]: a peer
    /// with the same limits would refuse it, so it is never built.
    ContentOverLimit {
        /// The content length of the message.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A value to encode as JSON could not be serialized.
    Serialize {
        /// serde's description.
        reason: String,
    },
    /// [`crate::Connection::commit`] was called with more bytes than the last read buffer
    /// held.
    CommitTooLarge {
        /// Bytes committed.
        committed: usize,
        /// Bytes available in the buffer.
        available: usize,
    },
}

impl LocalError {
    /// A short stable name for the variant (`"send-after-close"`, …), for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LocalError::SendAfterClose => "send-after-close",
            LocalError::ReceiveAfterEof => "receive-after-eof",
            LocalError::EncodeHeaderTooLong { .. } => "encode-header-too-long",
            LocalError::ContentOverLimit { .. } => "content-over-limit",
            LocalError::Serialize { .. } => "serialize",
            LocalError::CommitTooLarge { .. } => "commit-too-large",
        }
    }
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalError::SendAfterClose => f.write_str("cannot send: the connection was closed"),
            LocalError::ReceiveAfterEof => {
                f.write_str("cannot receive: end of stream was already reported")
            }
            LocalError::EncodeHeaderTooLong { size } => write!(
                f,
                "cannot encode: JSON header of {size} bytes exceeds 65535 bytes"
            ),
            LocalError::ContentOverLimit { size, max } => write!(
                f,
                "cannot send: content of {size} bytes exceeds the maximum {max}"
            ),
            LocalError::Serialize { reason } => write!(f, "cannot encode: {reason}"),
            LocalError::CommitTooLarge {
                committed,
                available,
            } => write!(
                f,
                "commit of {committed} bytes exceeds the {available}-byte read buffer"
            ),
        }
    }
}

impl std::error::Error for LocalError {}

/// Either kind of error, for callers that handle both the same way (`?` converts from
/// [`PeerError`] and [`LocalError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The peer broke the protocol.
    Peer(PeerError),
    /// The local program misused the machine.
    Local(LocalError),
}

impl Error {
    /// `true` if the peer caused this error.
    pub fn is_peer_error(&self) -> bool {
        matches!(self, Error::Peer(_))
    }

    /// The peer error, if it is one.
    pub fn peer(&self) -> Option<&PeerError> {
        match self {
            Error::Peer(e) => Some(e),
            Error::Local(_) => None,
        }
    }

    /// The phase in which a peer error was found (`None` for local errors).
    pub fn phase(&self) -> Option<Phase> {
        self.peer().map(PeerError::phase)
    }

    /// A short stable name for the variant (see [`PeerError::kind`], [`LocalError::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Peer(e) => e.kind(),
            Error::Local(e) => e.kind(),
        }
    }
}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Error {
        Error::Peer(e)
    }
}

impl From<LocalError> for Error {
    fn from(e: LocalError) -> Error {
        Error::Local(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Peer(e) => e.fmt(f),
            Error::Local(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

/// An [`Error`] equals the peer error it holds.
impl PartialEq<PeerError> for Error {
    fn eq(&self, other: &PeerError) -> bool {
        matches!(self, Error::Peer(e) if e == other)
    }
}

/// An [`Error`] equals the local error it holds.
impl PartialEq<LocalError> for Error {
    fn eq(&self, other: &LocalError) -> bool {
        matches!(self, Error::Local(e) if e == other)
    }
}
