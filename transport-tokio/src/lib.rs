//! # sockmsg-transport-tokio
//!
//! The message protocol of the Python sockets guide on tokio, driven by the sans-IO core
//! ([`sockmsg_protocol`]): the same machine, the same limits and the same verdicts as the
//! other transports.
//!
//! * [`Codec`]: `tokio_util::codec::{Decoder, Encoder}` for [`Message`], so
//!   `Framed::new(stream, Codec::default())` speaks the protocol.
//! * [`Client`]: an async client (connect with a timeout, host names accepted, request,
//!   pipelining with answers in order, half-close), one deadline for each whole exchange
//!   ([`ClientConfig::deadline`]), errors that name the address and a server that does not
//!   speak this protocol named for what it sent. Its configuration, deadline and error
//!   wording are the client layer every transport shares
//!   ([`sockmsg_server::client`]). With the feature `tls`, `Client::connect_tls` speaks
//!   TLS through the same `sockmsg_tls::TlsConnection` composition as the servers.
//! * [`Server`]: the server layer's [`Session`](sockmsg_server::Session) on tokio: the same
//!   [`Service`](sockmsg_server::Service), the same
//!   [`ServerConfig`](sockmsg_server::ServerConfig) (limits, deadlines from the core's
//!   timers, output cap, connection cap, graceful shutdown on a
//!   [`ShutdownHandle`](sockmsg_server::ShutdownHandle)) as every other transport, on a
//!   current-thread or multi-thread runtime. [`Server::run_async`] runs an
//!   [`AsyncService`](sockmsg_server::AsyncService) (a service that awaits) under the same
//!   rules, its answers polled on each connection's task and sent in request order.
//! * TLS (feature `tls`): `Server::serve_tls` / `Server::run_tls` serve every connection
//!   through a `sockmsg_tls::TlsSession` on the same connection task as a plaintext
//!   session (both are a [`Driven`](sockmsg_server::Driven) machine). Not `tokio-rustls`:
//!   rustls is composed with the session sans-IO in `sockmsg-tls`, once for every
//!   transport, so the handshake deadline, the log line of a failed handshake and the
//!   peer's identity are the same here as on the std and mio transports.
//!
//! Examples: `examples/tokio_echo_server.rs` and `examples/tokio_echo_client.rs` (the guide's echo
//! pair), `examples/tokio_framed.rs` (`Framed` with `StreamExt` / `SinkExt` on loopback),
//! `examples/async_service.rs` (an async service that asks another sockmsg server).
//!
//! ## Example: `Framed` over an in-memory pipe
//!
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use sockmsg_transport_tokio::{Codec, Message};
//! use tokio_util::codec::Framed;
//!
//! type BoxError = Box<dyn std::error::Error + Send + Sync>;
//!
//! # fn main() -> Result<(), BoxError> {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let (near, far) = tokio::io::duplex(64); // a tiny pipe: messages arrive in pieces
//!     let mut client = Framed::new(near, Codec::default());
//!     let mut server = Framed::new(far, Codec::default());
//!
//!     let request = Message::json(&serde_json::json!({"action": "search", "value": "ring"}))?;
//!     let answering = tokio::spawn(async move {
//!         let request = server.next().await.ok_or("no request")??;
//!         let value = request.json_content::<serde_json::Value>()?["value"].to_string();
//!         server.send(Message::json(&serde_json::json!({"result": value}))?).await?;
//!         Ok::<_, BoxError>(())
//!     });
//!     client.send(request).await?;
//!     let answer = client.next().await.ok_or("no answer")??;
//!     assert_eq!(answer.content(), br#"{"result": "\"ring\""}"#);
//!     answering.await??;
//!     Ok::<_, BoxError>(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod error;
pub mod server;

pub use client::{Client, ClientConfig, Deadline};
pub use codec::{Codec, CodecError};
pub use error::{ClientError, Op};
pub use server::Server;
pub use sockmsg_protocol::{Limits, Message};
