//! # sockmsg-transport-tokio
//!
//! The message protocol of the Python sockets guide on tokio, driven by the sans-IO core
//! ([`sockmsg_protocol`]): the same machine, the same limits and the same verdicts as the
//! other transports.
//!
//! * [`Codec`]: `tokio_util::codec::{Decoder, Encoder}` for [`Message`], so
//!   `Framed::new(stream, Codec::default())` speaks the protocol.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;

pub use codec::{Codec, CodecError};
pub use sockmsg_protocol::{Limits, Message};
