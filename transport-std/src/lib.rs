//! # sockmsg-transport-std
//!
//! The blocking transport: `std::net` sockets around the sans-IO machine of
//! [`sockmsg_protocol`]. It is a thin loop, not a second implementation of the protocol:
//! [`Framed`] reads into [`sockmsg_protocol::Connection::read_from`] and writes with
//! [`sockmsg_protocol::Connection::write_to`] until a whole message is in or out.
//!
//! * [`Client`]: connect to an address or a host name (each address in turn), send,
//!   receive, [`Client::request`], several requests on one connection, half-close
//!   ([`Client::shutdown_write`]), a proper [`Client::close`] or an immediate
//!   [`Client::close_now`]. One deadline bounds a whole exchange ([`Deadline`],
//!   [`ClientConfig::deadline`]), and a server that does not speak this protocol is named
//!   for what it sent ([`TransportError::Foreign`]).
//! * [`Server`]: binds with `SO_REUSEADDR` (port 0 allowed) and runs one thread per
//!   connection up to [`ServerConfig::max_connections`]. Each thread is a thin blocking loop
//!   over a [`sockmsg_server::Session`], which holds every server decision (service calls,
//!   output cap, deadlines, `close_after_answer`, shutdown): the same policy as every other
//!   transport, from the same [`ServerConfig`]. An idle connection costs no CPU (its
//!   thread sleeps in `read` until the session's next deadline, set as the socket's
//!   timeout) and one file descriptor. A [`ShutdownHandle`] stops it from any thread: idle
//!   threads are woken by `shutdown(2)` of their socket's read side. It runs any
//!   [`sockmsg_server::Service`].
//! * [`UdpEndpoint`]: one message per datagram.
//! * [`TransportError`]: refused, reset, timed out, closed, protocol errors, each naming
//!   the peer's address.
//!
//! ## Example: a server in a thread, a client, a shutdown
//!
//! ```
//! use std::sync::Arc;
//! use sockmsg_protocol::Message;
//! use sockmsg_server::{Service, ServiceError};
//! use sockmsg_transport_std::{Client, ClientConfig, Server, ServerConfig};
//!
//! // The application: answers every request with its content in upper case.
//! struct Shout;
//! impl Service for Shout {
//!     fn call(&self, request: Message) -> Result<Message, ServiceError> {
//!         Ok(Message::binary("text/shout", request.content().to_ascii_uppercase()))
//!     }
//! }
//!
//! let server = Server::bind("127.0.0.1:0".parse()?, ServerConfig::default())?;
//! let addr = server.local_addr();
//! let shutdown = server.shutdown_handle();
//! let running = std::thread::spawn(move || server.serve(Arc::new(Shout)));
//!
//! let mut client = Client::connect(addr, &ClientConfig::default())?;
//! for word in ["hello", "world"] {
//!     let answer = client.request(Message::binary("text/plain", word.as_bytes().to_vec()))?;
//!     assert_eq!(answer.content(), word.to_ascii_uppercase().as_bytes());
//! }
//! client.close()?;
//!
//! shutdown.shutdown();
//! running.join().expect("server thread")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Logging
//!
//! Through [`tracing`]: `listening on`, `accepted connection from`, `closing connection
//! to` (with the reason) and shutdown progress at `info`; refused connections, protocol
//! and service errors at `warn`; per-message details at `debug`. Each connection's lines
//! are inside a `conn` span carrying the peer's address, so a service's own log lines show
//! which client they concern.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod framed;
pub mod server;
pub mod udp;

pub use client::{Client, ClientConfig, Deadline, ServerAddr};
pub use error::{Op, TransportError};
pub use framed::Framed;
pub use server::{Server, MAX_THREADS};
pub use sockmsg_server::{ServerConfig, ShutdownHandle, WhenFull};
pub use udp::{decode_datagram, UdpEndpoint, MAX_DATAGRAM};
