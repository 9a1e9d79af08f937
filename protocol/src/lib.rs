//! # sockmsg-protocol
//!
//! A **sans-IO** implementation of the message protocol of the Python sockets guide: a
//! 2-byte big-endian length, a UTF-8 JSON header, then `content-length` bytes of content.
//! It never touches a socket, a clock or a thread: bytes go in, messages come out, and
//! outgoing messages become bytes that your transport sends when it can. The same machine
//! serves the blocking transport, the event-loop transport, a fuzzer and a test that feeds
//! one byte at a time.
//!
//! * [`Decoder`]: the three phases of a message (protoheader, JSON header, content) are its
//!   states. Any split of the stream, several messages in one read, and any hostile input are
//!   handled, with a typed [`Error`] and never a panic; cost is linear in the bytes.
//! * [`Encoder`]: queues messages and hands out the bytes, byte-identical to the guide's
//!   Python (`json.dumps(..., ensure_ascii=False)`), including for JSON content.
//! * [`Connection`]: one side of a connection, both directions, pipelining included.
//! * [`Limits`]: what a peer may make us accept, checked before anything is allocated.
//!
//! ## Example: a client and a server, wired together in memory
//!
//! ```
//! use sockmsg_protocol::{Connection, Event, Message};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Answer<'a> { result: &'a str }
//!
//! let mut client = Connection::client();
//! let mut server = Connection::server();
//!
//! // The client pipelines two requests.
//! for value in ["morpheus", "ring"] {
//!     client.send(Message::json(&serde_json::json!({"action": "search", "value": value}))?)?;
//! }
//!
//! // "The network": move bytes across in awkward 5-byte pieces.
//! fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), sockmsg_protocol::Error> {
//!     while from.wants_write() {
//!         let chunk = &from.pending()[..from.pending().len().min(5)];
//!         to.receive(chunk)?;
//!         let n = chunk.len();
//!         from.consume(n);
//!     }
//!     Ok(())
//! }
//!
//! pump(&mut client, &mut server)?;
//! while let Event::Message(request) = server.next_event()? {
//!     let value = request.json_content::<serde_json::Value>()?["value"].as_str().unwrap_or("").to_owned();
//!     server.send(Message::json(&serde_json::json!({"result": format!("found {value}")}))?)?;
//! }
//! assert_eq!(server.in_flight(), 0);
//!
//! pump(&mut server, &mut client)?;
//! assert_eq!(client.in_flight(), 2);
//! let mut answers = Vec::new();
//! while let Event::Message(response) = client.next_event()? {
//!     answers.push(response.json_content::<Answer>()?.result.to_owned());
//! }
//! assert_eq!(answers, ["found morpheus", "found ring"]);
//! assert_eq!(client.in_flight(), 0);
//!
//! // A clean close between messages is the normal end of a stream.
//! client.receive_eof();
//! assert_eq!(client.next_event()?, Event::End);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connection;
pub mod decoder;
pub mod encoder;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod json;
pub mod message;

pub use connection::{Connection, Role};
pub use decoder::{Decoder, Event};
pub use encoder::Encoder;
pub use error::{Error, JsonKind, Phase};
pub use header::{parse_header, ByteOrder, Header};
pub use message::{encode, encode_into, Message};

/// The largest JSON header the 2-byte protoheader can announce.
pub const MAX_HEADER_LEN: usize = u16::MAX as usize;

/// What a peer may make us accept. Every limit is checked before anything is allocated for
/// the input it limits, and the verdict never depends on how the input was split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest JSON header accepted, in bytes. Default and format maximum: 65,535.
    pub max_header_len: usize,
    /// Largest `content-length` accepted, in bytes. Default: 16 MiB.
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

#[cfg(test)]
mod tests;
