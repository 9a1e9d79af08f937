//! # sockmsg-protocol
//!
//! A **sans-IO** implementation of the message protocol of the Python sockets guide: a
//! 2-byte big-endian length, a UTF-8 JSON header, then `content-length` bytes of content.
//! It never touches a socket, a clock or a thread: bytes go in, messages come out, outgoing
//! messages become bytes that your transport sends when it can, and the deadlines are
//! decided from the instants you pass in. The same machine serves the blocking transport,
//! the event-loop transport, a fuzzer and a test that feeds one byte at a time.
//!
//! * [`Connection`]: one side of a connection. **One way in**: [`Connection::read_buf`] +
//!   [`Connection::commit`] (or [`Connection::read_from`]), then [`Connection::next_event`].
//!   **One way out**: [`Connection::send`], then [`Connection::pending_slices`] +
//!   [`Connection::consume`] (or [`Connection::write_to`]). **Its wishes**:
//!   [`Connection::wants_read`], [`Connection::wants_write`], [`Connection::wants_shutdown`],
//!   and the timers: [`Connection::poll_timeout`] / [`Connection::handle_timeout`].
//! * [`Message`] and [`Header`]: what travels; byte-identical to the guide's Python
//!   (`json.dumps(..., ensure_ascii=False)`), JSON content included.
//! * [`Limits`] (what a peer may make us accept) and [`Deadlines`] (how long it may take),
//!   in [`limits`].
//! * Errors split by who caused them: [`PeerError`] (the remote broke the protocol) and
//!   [`LocalError`] (this program misused the machine), with [`Error`] holding either.
//!
//! ## Example: a client and a server, wired together in memory
//!
//! ```
//! use std::time::Instant;
//! use sockmsg_protocol::{Connection, Event, Message};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Answer<'a> { result: &'a str }
//!
//! let now = Instant::now();
//! let mut client = Connection::client();
//! let mut server = Connection::server();
//!
//! // The client pipelines two requests.
//! for value in ["morpheus", "ring"] {
//!     client.send(Message::json(&serde_json::json!({"action": "search", "value": value}))?, now)?;
//! }
//!
//! // "The network": move bytes across in awkward 5-byte pieces.
//! fn pump(from: &mut Connection, to: &mut Connection, now: Instant) -> Result<(), sockmsg_protocol::Error> {
//!     while from.wants_write() {
//!         let mut out = Vec::new();
//!         from.write_to(&mut out, now).map_err(|_| sockmsg_protocol::LocalError::SendAfterClose)?;
//!         for piece in out.chunks(5) {
//!             let buf = to.read_buf();
//!             buf[..piece.len()].copy_from_slice(piece);
//!             to.commit(piece.len(), now)?;
//!         }
//!     }
//!     Ok(())
//! }
//!
//! pump(&mut client, &mut server, now)?;
//! while let Event::Message(request) = server.next_event()? {
//!     let value = request.json_content::<serde_json::Value>()?["value"].as_str().unwrap_or("").to_owned();
//!     server.send(Message::json(&serde_json::json!({"result": format!("found {value}")}))?, now)?;
//! }
//! assert_eq!(server.in_flight(), 0);
//!
//! pump(&mut server, &mut client, now)?;
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
pub mod limits;
pub mod message;

pub use connection::{Connection, Role};
pub use decoder::{Decoder, Event};
pub use encoder::Encoder;
pub use error::{Error, JsonKind, LocalError, PeerError, Phase};
pub use header::{parse_header, ByteOrder, Header};
pub use limits::{Deadlines, Limits, Timeout, MAX_HEADER_LEN};
pub use message::{encode, encode_into, Message};

#[cfg(test)]
mod tests;
