//! # sockmsg-transport-tokio
//!
//! The message protocol of the Python sockets guide on tokio, driven by the sans-IO core
//! ([`sockmsg_protocol`]): the same machine, the same limits and the same verdicts as the
//! other transports.
//!
//! * [`Codec`]: `tokio_util::codec::{Decoder, Encoder}` for [`Message`], so
//!   `Framed::new(stream, Codec::default())` speaks the protocol.
//! * [`Client`]: an async client (connect with a timeout, host names accepted, request,
//!   pipelining with answers in order, half-close), with errors that name the address.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod error;

pub use client::{Client, ClientConfig};
pub use codec::{Codec, CodecError};
pub use error::{ClientError, Op};
pub use sockmsg_protocol::{Limits, Message};
