//! # sockmsg-tls
//!
//! TLS for sockmsg, the sans-IO way: rustls is itself a sans-IO machine, so it sits between
//! the socket and sockmsg's [`Connection`](sockmsg_protocol::Connection) without either
//! knowing about the other. The whole composition lives here, once, for every transport:
//!
//! * [`TlsConnection`]: rustls + the sockmsg machine. One way in for ciphertext
//!   ([`TlsConnection::read_tls`]), one way out ([`TlsConnection::write_tls`]), messages
//!   through [`TlsConnection::send`] / [`TlsConnection::next_event`], interest derived from
//!   both machines ([`TlsConnection::wants_read`], [`TlsConnection::wants_write`]), the
//!   handshake deadline among the timers ([`TlsConnection::poll_timeout`] /
//!   [`TlsConnection::handle_timeout`]; default [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s), and
//!   the peer's verified identity ([`PeerIdentity`]).
//! * [`server_config`] / [`client_config`]: rustls configurations from PEM files (the
//!   `rustls-pki-types` PEM API): TLS 1.3 and 1.2, mutual TLS with
//!   `WebPkiClientVerifier` when a client CA is given, the platform's roots
//!   (`rustls-native-certs`) when a client has no CA file, optional ALPN, and session
//!   resumption (server tickets and session cache, client session cache).
//! * [`TlsError`]: why a connection failed, one variant per reason a user can act on
//!   (plaintext peer, unknown CA, expired certificate, name mismatch, no client
//!   certificate, handshake deadline, truncation without `close_notify`...).
//! * [`TlsSession`]: the composition with the server layer's per-connection
//!   [`Session`](sockmsg_server::Session) inside (service, policy, deadlines), for
//!   transports; its [`PeerService`] sees who the client is (mutual TLS).
//! * [`TlsClient`]: a blocking client over the composition, on the client layer every
//!   transport shares (one [`ClientConfig`], the exchange [`Deadline`], the same errors).
//! * [`certs`]: a test CA and certificates (`rcgen`), used by the `app-certs` program and
//!   the tests.
//!
//! ## Crypto provider: `ring`
//!
//! rustls is built with `default-features = false` and the `ring` provider: `ring` builds
//! with the C compiler alone, while `aws-lc-rs` (rustls's default) needs cmake (and nasm on
//! some targets), which a fresh machine with Rust and a C compiler does not have. The
//! provider is passed explicitly ([`provider`]), so no process-wide default is installed.
//!
//! ## Example: a handshake and a request in memory
//!
//! ```
//! use std::time::Instant;
//! use sockmsg_protocol::{Connection, Event, Message};
//! use sockmsg_tls::certs::{Authority, Spec, Usage};
//! use sockmsg_tls::{client_config, server_config, ClientOptions, Pem, ServerOptions, TlsConnection};
//!
//! let ca = Authority::new("test CA", 1)?;
//! let server_cert = ca.issue(&Spec::new(Usage::Server, "localhost", &["localhost"], 1))?;
//! let server_config = server_config(&ServerOptions::new(
//!     Pem::memory("server.pem", server_cert.cert_pem),
//!     Pem::memory("server-key.pem", server_cert.key_pem),
//! ))?;
//! let client_config = client_config(&ClientOptions {
//!     ca: Some(Pem::memory("ca.pem", ca.cert_pem())),
//!     ..ClientOptions::default()
//! })?;
//!
//! let now = Instant::now();
//! let mut client = TlsConnection::client(client_config, "localhost", Connection::client(), now)?;
//! let mut server = TlsConnection::server(server_config, Connection::server(), now)?;
//! client.send(Message::binary("binary/custom-client-binary-type", b"hi".to_vec()), now)?;
//!
//! // "The network": move ciphertext across until neither side has more to say.
//! let mut answered = false;
//! while client.wants_write() || server.wants_write() {
//!     let mut wire = Vec::new();
//!     while client.wants_write() { client.write_tls(&mut wire, now)?; }
//!     while !wire.is_empty() { let mut rest = &wire[..]; server.read_tls(&mut rest, now)?; wire = rest.to_vec(); }
//!     if let Event::Message(request) = server.next_event()? {
//!         server.send(Message::binary("binary/custom-server-binary-type", request.content().to_vec()), now)?;
//!     }
//!     while server.wants_write() { server.write_tls(&mut wire, now)?; }
//!     while !wire.is_empty() { let mut rest = &wire[..]; client.read_tls(&mut rest, now)?; wire = rest.to_vec(); }
//!     if let Event::Message(answer) = client.next_event()? {
//!         assert_eq!(answer.content(), b"hi");
//!         answered = true;
//!     }
//! }
//! assert!(answered);
//! assert_eq!(client.peer_identity().map(|p| p.name()), Some("localhost"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certs;
/// The rustls crate this one is built on (its configuration types appear in this API).
pub use rustls;
pub mod client;
pub mod config;
pub mod conn;
pub mod error;
pub mod identity;
pub mod server;

pub use client::{ClientConfig, ClientError, Deadline, TlsClient};
pub use config::{
    client_config, provider, server_config, ClientOptions, Pem, ServerOptions, TlsVersion,
};
pub use conn::{
    Plaintext, Tls, TlsConnection, TlsTimeout, DEFAULT_HANDSHAKE_TIMEOUT, RELEASE_DELAY,
};
pub use error::{ConfigError, TlsError};
pub use identity::PeerIdentity;
pub use server::{AnyPeer, PeerService, TlsSession};

#[cfg(test)]
mod tests;
