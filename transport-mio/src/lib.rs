//! # sockmsg-transport-mio
//!
//! The non-blocking transport of sockmsg: many connections per thread on [mio], one event
//! loop per core, and a policy against peers that are slow, silent or malicious. The
//! protocol itself is the sans-IO [`sockmsg_protocol::Connection`]; this crate only moves
//! bytes and decides when to give up on a peer. Any [`sockmsg_server::Service`] runs here
//! unchanged.
//!
//! ## The server
//!
//! [`Server::bind`] then [`Server::serve`]; stop it with a [`ShutdownHandle`] (it wakes
//! every loop through a `mio::Waker`).
//!
//! * **Event loops**: [`ServerConfig::workers`] threads (default: one per core), each with
//!   its own `Poll`, sharing the listening socket ([`ListenerMode::Shared`], the default)
//!   or each with its own `SO_REUSEPORT` socket ([`ListenerMode::ReusePort`]). Connections
//!   live in a slab; their key is their token.
//! * **Edge-triggered and correct**: accept, read and write until `WouldBlock` (a short
//!   read counts as one, as in tokio, unless the event also reported end of stream, so
//!   that a request and its FIN arriving together are both seen); `WRITABLE`
//!   is asked for only while output is pending and `READABLE` only while requests are
//!   taken, derived from the connection's state after every event; spurious events only
//!   cost a `WouldBlock`. A connection that keeps sending is read at most 16 times per turn
//!   so it cannot starve the others.
//! * **Half-close**: a peer that shuts down its write side still gets every response; the
//!   connection closes once they are sent.
//! * **Hostile and slow peers** (all in [`ServerConfig`], defaults in brackets):
//!   - header deadline (30 s): a message must be complete within this time of its first
//!     byte, which stops a peer dribbling one byte at a time (slowloris), something an
//!     inactivity timer alone does not;
//!   - idle timeout between messages (75 s);
//!   - write-progress deadline (60 s): pending output must make progress;
//!   - output cap per connection (1 MiB): when the next response would take the queued
//!     output over it, the server stops reading from that peer (its requests wait in the
//!     kernel's buffers, then in the peer) until the queue drains; if it never does, the
//!     write deadline closes the connection. Queued output never exceeds the cap (except a
//!     single response larger than the cap, sent alone);
//!   - maximum number of connections (10,000);
//!   - a protocol error closes that connection only (after sending the responses already
//!     queued) and is logged with its typed [`sockmsg_protocol::Error`]; a service error
//!     or panic likewise.
//! * **Memory**: an idle connection holds no buffer: reads go through one buffer per loop,
//!   only a partial message is copied into the connection, a large content is received in
//!   place, and buffers are released when the connection goes idle.
//! * **Observability**: [`Server::stats`] counts connections, requests, pauses and closes
//!   by reason; logs go through `tracing`.
//!
//! ## The client
//!
//! [`MultiClient`] (or [`multi_request`]) opens N connections at once from one thread,
//! connects without blocking, pipelines up to a depth on each, and returns each
//! connection's responses in the order of its requests.
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

pub use client::{multi_request, ClientConfig, ClientError, ConnectionOutcome, MultiClient};
pub use config::{ListenerMode, MioOptions};
pub use server::Server;
pub use sockmsg_server::{ServerConfig, ShutdownHandle};
pub use stats::{Stats, StatsSnapshot};
