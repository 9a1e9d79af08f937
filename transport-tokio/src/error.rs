//! The client's error type: what went wrong, and with which peer.

pub use sockmsg_server::client::Op;

/// Everything an async [`crate::Client`] operation can fail with: the client layer's
/// [`sockmsg_server::client::ClientError`], the one the blocking TLS client
/// (`sockmsg_tls::TlsClient`) fails with too. Every variant names the peer's address as
/// the caller gave it (`localhost:65432`, `127.0.0.1:65432`), so the message needs no
/// context. With the `tls` feature its TLS failures are `sockmsg_tls::TlsError`s
/// (`ClientError::Tls`), and it is the same type as `sockmsg_tls::ClientError`.
#[cfg(feature = "tls")]
pub type ClientError = sockmsg_server::client::ClientError<sockmsg_tls::TlsError>;

/// Everything an async [`crate::Client`] operation can fail with: the client layer's
/// [`sockmsg_server::client::ClientError`], the one the blocking TLS client
/// (`sockmsg_tls::TlsClient`) fails with too. Every variant names the peer's address as
/// the caller gave it (`localhost:65432`, `127.0.0.1:65432`), so the message needs no
/// context. Without the `tls` feature, `ClientError::Tls` cannot happen.
#[cfg(not(feature = "tls"))]
pub type ClientError = sockmsg_server::client::ClientError;
