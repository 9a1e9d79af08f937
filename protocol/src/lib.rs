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
//! * For bytes held whole rather than a live stream (a datagram, a capture, a file):
//!   [`decode`] one message (call it again on the rest for several); [`encode`] one.
//! * [`Limits`] (what a peer may make us accept) and [`Deadlines`] (how long it may take),
//!   in [`limits`].
//! * Errors split by who caused them: [`PeerError`] (the remote broke the protocol) and
//!   [`LocalError`] (this program misused the machine), with [`Error`] holding either.
//! * [`sniff`](mod@sniff): whether a peer's first bytes can start a message of this
//!   protocol, and if not, what they look like (an HTTP reply, a TLS record...), for clear
//!   client errors.
//!
//! ## Example: a client and a server, wired together in memory
//!
//! The transport's whole job, shown with an in-memory "network": bytes in through the
//! lent read buffer, bytes out through the pending slices, and the timers asked of the
//! machine. `now` is whatever clock the transport uses; the machine never reads one.
//!
//! ```
//! use std::io::IoSlice;
//! use std::time::{Duration, Instant};
//! use sockmsg_protocol::{Connection, Deadlines, Event, Limits, Message, Role, Timeout};
//!
//! let start = Instant::now();
//! let deadlines = Deadlines {
//!     header: Some(Duration::from_secs(10)),
//!     idle: Some(Duration::from_secs(60)),
//!     write: Some(Duration::from_secs(30)),
//! };
//! let mut client = Connection::new(Role::Client, Limits::default());
//! let mut server = Connection::new(Role::Server, Limits::default()).with_deadlines(deadlines, start);
//!
//! // One way out: send, then hand the pending slices to the socket and consume what it took.
//! // One way in: fill the lent read buffer, commit what arrived. (Here in 5-byte pieces.)
//! fn pump(from: &mut Connection, to: &mut Connection, now: Instant) -> Result<(), sockmsg_protocol::Error> {
//!     while from.wants_write() && to.wants_read() {
//!         let mut slices = [IoSlice::new(&[]); 8];
//!         let n = from.pending_slices(&mut slices);
//!         let piece: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).take(5).collect();
//!         let buf = to.read_buf();
//!         let k = piece.len().min(buf.len());
//!         buf[..k].copy_from_slice(&piece[..k]);
//!         to.commit(k, now)?;
//!         from.consume(k, now);
//!     }
//!     Ok(())
//! }
//!
//! // The client pipelines two requests.
//! for value in ["morpheus", "ring"] {
//!     client.send(Message::json(&serde_json::json!({"action": "search", "value": value}))?, start)?;
//! }
//! let t1 = start + Duration::from_secs(1);
//! pump(&mut client, &mut server, t1)?;
//! while let Event::Message(request) = server.next_event()? {
//!     let value = request.json_content::<serde_json::Value>()?["value"].as_str().unwrap_or("").to_owned();
//!     server.send(Message::json(&serde_json::json!({"result": format!("found {value}")}))?, t1)?;
//! }
//! assert_eq!(server.in_flight(), 0);
//! // Answers are pending: the write deadline runs from when they were queued.
//! assert_eq!(server.poll_timeout(), Some(t1 + Duration::from_secs(30)));
//!
//! pump(&mut server, &mut client, t1)?;
//! let mut answers = Vec::new();
//! while let Event::Message(response) = client.next_event()? {
//!     answers.push(response.json_content::<serde_json::Value>()?["result"].to_string());
//! }
//! assert_eq!(answers, [r#""found morpheus""#, r#""found ring""#]);
//! assert_eq!(client.in_flight(), 0);
//!
//! // Nothing in progress, nothing pending: the idle clock runs from the last bytes moved.
//! // The transport sleeps until poll_timeout, then asks the machine what passed.
//! let wake = server.poll_timeout().expect("the idle deadline");
//! assert_eq!(wake, t1 + Duration::from_secs(60));
//! assert_eq!(server.handle_timeout(wake - Duration::from_millis(1)), None);
//! assert_eq!(server.handle_timeout(wake), Some(Timeout::Idle));
//! assert!(!server.wants_read() && !server.wants_write()); // the transport closes it
//!
//! // A clean close between messages is the normal end of a stream.
//! client.receive_eof();
//! assert_eq!(client.next_event()?, Event::End);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Over a real socket the same loop is shorter: [`Connection::read_from`] and
//! [`Connection::write_to`] do the lending and the consuming with any `io::Read` /
//! `io::Write`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connection;
mod decoder;
mod encoder;
pub mod error;
pub mod header;
pub mod json;
pub mod limits;
pub mod message;
mod protoheader;
pub mod sniff;
mod spare;

pub use connection::{Connection, Role};
pub use decoder::{Event, Receiving};
pub use error::{Error, JsonKind, LocalError, PeerError, Phase};
pub use header::{parse_header, ByteOrder, Header};
pub use limits::{Deadlines, Limits, Timeout, MAX_HEADER_LEN};
pub use message::{decode, encode, Message};
pub use sniff::{Foreign, Sniff};
pub use spare::ReadSpare;

#[cfg(test)]
mod tests;
