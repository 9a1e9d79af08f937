//! # sockmsg-transport-mio
//!
//! The non-blocking transport of sockmsg: many connections per thread on [mio], one event
//! loop per core. The protocol is the sans-IO [`sockmsg_protocol::Connection`] and every
//! server decision (service calls, output cap, deadlines, `close_after_answer`, shutdown)
//! is the [`sockmsg_server::Session`] of the shared server layer, configured by the one
//! [`ServerConfig`]; this crate only moves bytes between sockets and sessions. Any
//! [`sockmsg_server::Service`] runs here unchanged.
//!
//! ## The server
//!
//! [`Server::bind`] then [`Server::serve`]; stop it with a [`ShutdownHandle`] (it wakes
//! every loop through a `mio::Waker`).
//!
//! * **Event loops**: [`ServerConfig::workers`] threads (default: one per core), each with
//!   its own `Poll`, sharing the listening socket ([`ListenerMode::Shared`], the default)
//!   or each with its own `SO_REUSEPORT` socket ([`ListenerMode::ReusePort`]); options
//!   only this transport reads are [`MioOptions`] ([`Server::bind_with`]). Connections live
//!   in a [`slab`](https://docs.rs/slab); their key is their token.
//! * **Edge-triggered and correct**: accept, read and write until `WouldBlock` (a short
//!   read counts as one, as in tokio, unless the event also reported end of stream, so
//!   that a request and its FIN arriving together are both seen). The interest registered
//!   is derived from the session after every event: `READABLE` while it
//!   [`wants_read`](sockmsg_server::Session::wants_read), `WRITABLE` while it
//!   [`wants_write`](sockmsg_server::Session::wants_write); spurious events only cost a
//!   `WouldBlock`. A connection that keeps sending is read at most 16 times per turn so it
//!   cannot starve the others.
//! * **Timers**: one heap per loop, fed by each session's
//!   [`poll_timeout`](sockmsg_server::Session::poll_timeout); the loop sleeps until the
//!   nearest and hands it to the session's `handle_timeout`. The header, idle and write
//!   deadlines themselves are decided by the protocol core.
//! * **Policy**: half-close, the header deadline against slowloris, idle timeout, write
//!   deadline, output cap, connection cap, `close_after_answer`, errors closing only their
//!   connection, graceful shutdown: all the server layer's ([`ServerConfig`] documents each
//!   with its default), the same on every transport, and checked for each by the
//!   conformance suite (`tests/tests/conformance.rs`).
//! * **Memory**: an idle connection holds no buffer (the session releases them when nothing
//!   is in progress); a large content is received in place.
//! * **TLS** (feature `tls`): `Server::serve_tls` runs the same loops with each
//!   connection a socket, rustls and its session (`sockmsg_tls::TlsSession`); the loop is
//!   generic over the server layer's [`Driven`](sockmsg_server::Driven) machine, so the
//!   interest is derived from both machines after every event, with no second copy of
//!   the loop.
//! * **Observability**: [`Server::stats`] counts connections, requests, pauses and closes
//!   by reason; one log line per close with its reason ([`sockmsg_server::CloseReason`]).
//!
//! ## The client
//!
//! [`MultiClient`] (or [`multi_request`]) opens N connections at once from one thread,
//! connects without blocking (to an address or a host name, trying its addresses in turn),
//! pipelines up to a depth on each, and returns each connection's responses in the order
//! of its requests. A server that does not speak this protocol is named for what it sent
//! ([`ClientError::Foreign`]).
//!
//! ## Example
//!
//! A server on a free port, and one request from a plain blocking socket driven by the
//! protocol crate's [`Connection`](sockmsg_protocol::Connection):
//!
//! ```
//! use std::net::TcpStream;
//! use std::sync::Arc;
//! use std::time::Instant;
//! use sockmsg_protocol::{Connection, Event, Message};
//! use sockmsg_server::{Service, ServiceError};
//! use sockmsg_transport_mio::{Server, ServerConfig};
//!
//! let server = Server::bind("127.0.0.1:0", ServerConfig::default().with_workers(1))?;
//! let addr = server.local_addr();
//! let shutdown = server.shutdown_handle();
//! let service: Arc<dyn Service> = Arc::new(|request: Message| -> Result<Message, ServiceError> {
//!     let mut answer = b"echo: ".to_vec();
//!     answer.extend_from_slice(request.content());
//!     Ok(Message::binary("binary/custom-server-binary-type", answer))
//! });
//! let serving = std::thread::spawn(move || server.serve(service));
//!
//! let mut stream = TcpStream::connect(addr)?;
//! let mut conn = Connection::client();
//! conn.send(Message::binary("binary/custom-client-binary-type", b"hello".to_vec()), Instant::now())?;
//! while conn.wants_write() {
//!     conn.write_to(&mut stream, Instant::now())?;
//! }
//! let response = loop {
//!     match conn.next_event()? {
//!         Event::Message(m) => break m,
//!         Event::NeedData => {
//!             conn.read_from(&mut stream, Instant::now())?;
//!         }
//!         Event::End => panic!("the server closed without answering"),
//!     }
//! };
//! assert_eq!(response.content(), b"echo: hello");
//!
//! shutdown.shutdown();
//! serving.join().expect("the server thread")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod config;
mod server;
mod stats;
mod timer;
mod worker;

pub use client::{
    multi_request, ClientConfig, ClientError, ConnectionOutcome, MultiClient, ServerAddr,
};
pub use config::{ListenerMode, MioOptions};
pub use server::Server;
pub use sockmsg_server::{ServerConfig, ShutdownHandle};
pub use stats::{Stats, StatsSnapshot};
