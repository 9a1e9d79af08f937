//! # sockmsg-server
//!
//! The one server layer of sockmsg, shared by every transport. The protocol crate
//! ([`sockmsg_protocol`]) knows messages and bytes; a transport knows sockets; everything a
//! *server* decides lives here, once:
//!
//! * [`Service`]: the application, one request in, one answer out; [`call_service`] is the
//!   one place it is called, with panics caught. [`AsyncService`]: the same for services
//!   that await (a database, another server), runtime-agnostic; the session hands their
//!   requests out ([`Session::take_request`]) and takes their answers back in any order
//!   ([`Session::give_answer`]), sending them in request order.
//! * [`ServerConfig`]: limits, header/idle/write deadlines, output cap, connection cap,
//!   shutdown grace, `close_after_answer`, event loops: one name and one documented default
//!   each, read by every transport.
//! * [`Session`]: one connection's policy without its socket. It owns the protocol
//!   [`Connection`](sockmsg_protocol::Connection), calls the service for each request,
//!   queues answers under the output cap, keeps the deadlines, and says what the socket
//!   should wait for ([`Session::wants_read`], [`Session::wants_write`]) and when to wake
//!   ([`Session::poll_timeout`]). A transport is a thin loop: sockets in, the session's
//!   wishes out.
//! * [`MemoryBudget`]: one count, per server, of the bytes all its connections hold for
//!   input and output ([`ServerConfig::memory_budget`], 256 MiB by default). Sessions
//!   reserve before their connection allocates; near the budget they stop reading, and a
//!   message over 64 KiB that does not fit is refused ([`CloseReason::OverBudget`]).
//!   Answers larger than the output cap hold at most a share of it
//!   ([`ServerConfig::large_answer_share`], a quarter; else [`CloseReason::AnswerShareFull`]),
//!   and while more than the output cap is queued the peer must take
//!   [`ServerConfig::min_send_rate`] ([`CloseReason::SlowReader`]).
//! * Fair slots: a new connection must start a request within
//!   [`ServerConfig::first_byte_deadline`] (10 s), and at
//!   [`ServerConfig::max_connections`] the connection idle the longest is closed to admit
//!   the new one ([`WhenFull::EvictIdle`], the default; [`Session::idle_since`] tells the
//!   transport which), so silent connections cannot lock good clients out.
//! * [`Driven`]: what a transport's connection loop drives, a plaintext [`Session`] or a
//!   TLS composition with one inside (`sockmsg_tls::TlsSession`), with the same wishes and
//!   bytes in and out through `io::Read`/`io::Write`: each transport writes its loop once.
//! * [`ShutdownHandle`]: a flag plus the wake-ups each transport registers; [`CloseReason`]
//!   and its one log line ([`CloseReason::log`]); [`accept_error`], the accept-error policy.
//!
//! ## Example: a complete (blocking, one-connection) transport in a few lines
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::sync::Arc;
//! use std::time::Instant;
//! use sockmsg_protocol::{encode, Message};
//! use sockmsg_server::{ServerConfig, Service, ServiceError, Session};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
//!     let mut stream = TcpStream::connect(addr)?;
//!     stream.write_all(&encode(&Message::binary("text/plain", b"ping".to_vec())).expect("encodable"))?;
//!     let mut answer = Vec::new();
//!     stream.read_to_end(&mut answer)?; // the server closes after its answer
//!     Ok(answer)
//! });
//!
//! // The transport: one accepted socket, driven by the session's wishes.
//! let service: Arc<dyn Service> = Arc::new(|m: Message| -> Result<Message, ServiceError> {
//!     Ok(Message::binary("text/plain", [b"pong: ", m.content()].concat()))
//! });
//! let config = Arc::new(ServerConfig::default().with_close_after_answer(true).normalized());
//! let (mut stream, peer) = listener.accept()?;
//! let mut session = Session::new(service, config, Instant::now());
//! while !session.is_closed() {
//!     if session.wants_write() {
//!         session.write_to(&mut stream, Instant::now())?;
//!     } else if session.wants_read() {
//!         session.read_from(&mut stream, Instant::now())?;
//!     }
//! }
//! if let Some(reason) = session.close_reason() {
//!     reason.log(&peer); // "closing connection to 127.0.0.1:PORT (answered; ...)"
//! }
//! drop(stream);
//! assert!(client.join().expect("client thread")?.ends_with(b"pong: ping"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The real transports add what this loop leaves out: sleeping until
//! [`Session::poll_timeout`] and calling [`Session::handle_timeout`], many connections,
//! [`ShutdownHandle`], and the connection cap.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accept;
pub mod addr;
mod async_service;
mod budget;
pub mod client;
mod close;
mod config;
mod driven;
mod idle;
mod service;
mod session;
mod shutdown;

pub use accept::{accept_error, AcceptAction, NoDelay, ACCEPT_BACKOFF};
pub use addr::ServerAddr;
pub use async_service::{call_async_service, AnswerFuture, Answering, AsyncService};
pub use budget::{BudgetCharge, MemoryBudget};
pub use close::CloseReason;
pub use config::{ServerConfig, WhenFull};
pub use driven::{Driven, ReadBufferPool};
pub use idle::IdleMark;
pub use service::{call_service, CallError, Service, ServiceError};
pub use session::{RequestId, Session, SessionState};
pub use shutdown::ShutdownHandle;
