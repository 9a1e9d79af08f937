//! What a peer may make us accept ([`Limits`]) and how long it may take ([`Deadlines`]).

use std::fmt;
use std::time::Duration;

/// The largest JSON header the 2-byte protoheader can announce.
pub const MAX_HEADER_LEN: usize = u16::MAX as usize;

/// What a peer may make us accept. Every limit is checked before anything is allocated for
/// the input it limits, and the verdict never depends on how the input was split. The same
/// limits bound what we send: [`crate::Connection::send`] refuses content a peer with these
/// limits would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest JSON header accepted, in bytes. Default and format maximum: 65,535.
    pub max_header_len: usize,
    /// Largest `content-length` accepted (and sent), in bytes. Default: 16 MiB.
    pub max_content_len: u64,
    /// Deepest nesting of arrays and objects accepted in the header and in JSON content
    /// (the top-level object counts as 1). Default: 32; values above 127 act as 127, the
    /// JSON parser's own ceiling.
    pub max_depth: usize,
    /// Check every `text/json` content as it completes (supported encoding, UTF-8, nesting,
    /// well-formed JSON), so that a malformed request is a protocol error of the stream, as
    /// it is for the guide's server. Default: `true`.
    pub check_json_content: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_len: MAX_HEADER_LEN,
            max_content_len: 16 * 1024 * 1024,
            max_depth: 32,
            check_json_content: true,
        }
    }
}

/// How long a peer may take, measured by the [`crate::Connection`] from the instants its
/// caller passes in (it never reads a clock). `None` means never; the default is all `None`.
///
/// * `header`: from the first byte of a message until the message is complete. It does
///   not run while this side holds reading back because its output is at the cap
///   ([`crate::Connection::with_output_cap`]), and restarts when that pause ends.
/// * `idle`: while no message is in progress and nothing is waiting to be sent, from the
///   last bytes that moved either way.
/// * `write`: while output is waiting to be sent, from the last progress (or from when
///   output became pending).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    /// Longest time one message may take to arrive once it has started.
    pub header: Option<Duration>,
    /// Longest time a connection may sit with nothing in progress either way.
    pub idle: Option<Duration>,
    /// Longest time pending output may make no progress.
    pub write: Option<Duration>,
}

/// Which deadline passed (see [`Deadlines`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// A message in progress did not complete in time.
    Header,
    /// Nothing happened for too long.
    Idle,
    /// Pending output made no progress for too long.
    Write,
}

impl Timeout {
    /// A short stable name (`"header-deadline"`, `"idle-timeout"`, `"write-deadline"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Timeout::Header => "header-deadline",
            Timeout::Idle => "idle-timeout",
            Timeout::Write => "write-deadline",
        }
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
