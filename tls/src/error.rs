//! What can go wrong: [`TlsError`] for a connection (the handshake, the record layer, the
//! sockmsg protocol inside), [`ConfigError`] for loading certificates and keys.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};
use sockmsg_protocol::sniff::{self, Sniff};
use sockmsg_protocol::PeerError;

/// Why a TLS connection failed. Each reason a user can act on has its own variant; its
/// `Display` is one line naming the reason (`the peer's certificate is signed by an unknown
/// CA`), and [`TlsError::kind`] a short stable name for logs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's first bytes are not a TLS record: it speaks plaintext (sockmsg without TLS,
    /// HTTP, ...) to a TLS endpoint.
    NotTls {
        /// The first bytes received (at most 16).
        first: Vec<u8>,
    },
    /// The peer's certificate is not signed by a CA this side trusts.
    UnknownCa,
    /// The peer's certificate has expired.
    CertificateExpired,
    /// The peer's certificate is not valid yet.
    CertificateNotYetValid,
    /// The server's certificate is not valid for the name the client asked for.
    NameMismatch {
        /// The name the client expected.
        expected: String,
    },
    /// The peer's certificate names a trusted CA as its issuer, but that CA's key did not
    /// sign it: another CA with the same name (certificates made again?), or a forgery.
    BadSignature,
    /// The peer's certificate was rejected for another reason.
    BadCertificate {
        /// rustls's description.
        reason: String,
    },
    /// Client authentication is required and the client presented no certificate.
    NoClientCertificate,
    /// The peer refused the handshake (or ended the connection) with a TLS alert, such as
    /// `unknown_ca` when it does not trust this side's certificate, or
    /// `certificate_required` when it wanted one from this side.
    AlertReceived {
        /// The alert.
        alert: String,
    },
    /// The handshake did not complete within the handshake deadline.
    HandshakeTimeout {
        /// The deadline.
        after: Duration,
    },
    /// The peer closed the connection before the handshake completed.
    ClosedDuringHandshake,
    /// The peer's stream ended in the middle of a message without a TLS `close_notify`: the
    /// message was cut off (by the network, or by an attacker), not ended by the peer.
    Truncated,
    /// Another TLS failure (a malformed record, a failed decryption, ...).
    Tls {
        /// rustls's description.
        reason: String,
    },
    /// The TLS layer is fine, but the sockmsg messages inside break the protocol.
    Protocol(PeerError),
}

impl TlsError {
    /// A short stable name for the variant (`"not-tls"`, `"unknown-ca"`, ...), for logs and
    /// metrics; a protocol error gives its own [`PeerError::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            TlsError::NotTls { .. } => "not-tls",
            TlsError::UnknownCa => "unknown-ca",
            TlsError::CertificateExpired => "certificate-expired",
            TlsError::CertificateNotYetValid => "certificate-not-yet-valid",
            TlsError::NameMismatch { .. } => "name-mismatch",
            TlsError::BadSignature => "bad-signature",
            TlsError::BadCertificate { .. } => "bad-certificate",
            TlsError::NoClientCertificate => "no-client-certificate",
            TlsError::AlertReceived { .. } => "alert-received",
            TlsError::HandshakeTimeout { .. } => "tls-handshake-deadline",
            TlsError::ClosedDuringHandshake => "closed-during-handshake",
            TlsError::Truncated => "truncated",
            TlsError::Tls { .. } => "tls",
            TlsError::Protocol(e) => e.kind(),
        }
    }

    /// `true` if the TLS handshake failed (the connection never carried a message).
    pub fn is_handshake_failure(&self) -> bool {
        !matches!(
            self,
            TlsError::Truncated | TlsError::Tls { .. } | TlsError::Protocol(_)
        )
    }

    /// The error for what rustls reported. `first` is what the peer sent first (to recognise
    /// plaintext), `server_name` the name a client expected.
    pub(crate) fn from_rustls(
        e: &rustls::Error,
        handshaking: bool,
        first: &[u8],
        server_name: Option<&str>,
    ) -> TlsError {
        use rustls::Error as E;
        use rustls::InvalidMessage as M;
        match e {
            E::InvalidMessage(M::InvalidContentType | M::UnknownProtocolVersion)
            | E::InvalidMessage(M::MessageTooLarge)
                if handshaking && !first.starts_with(&[0x16]) =>
            {
                TlsError::NotTls {
                    first: first.to_vec(),
                }
            }
            E::NoCertificatesPresented => TlsError::NoClientCertificate,
            E::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => TlsError::UnknownCa,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsError::CertificateExpired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsError::CertificateNotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsError::NameMismatch {
                    expected: server_name.unwrap_or("?").to_owned(),
                },
                CertificateError::BadSignature => TlsError::BadSignature,
                other => TlsError::BadCertificate {
                    reason: E::InvalidCertificate(other.clone()).to_string(),
                },
            },
            E::AlertReceived(alert) => TlsError::AlertReceived {
                alert: alert_name(*alert),
            },
            other => TlsError::Tls {
                reason: other.to_string(),
            },
        }
    }
}

/// The alert's name as the TLS RFCs spell it (`unknown_ca`, `certificate_required`).
fn alert_name(alert: AlertDescription) -> String {
    let name = match alert {
        AlertDescription::UnknownCA => "unknown_ca",
        AlertDescription::BadCertificate => "bad_certificate",
        AlertDescription::CertificateRequired => "certificate_required",
        AlertDescription::CertificateExpired => "certificate_expired",
        AlertDescription::CertificateUnknown => "certificate_unknown",
        AlertDescription::HandshakeFailure => "handshake_failure",
        AlertDescription::ProtocolVersion => "protocol_version",
        AlertDescription::DecryptError => "decrypt_error",
        AlertDescription::UnrecognisedName => "unrecognized_name",
        AlertDescription::NoApplicationProtocol => "no_application_protocol",
        other => return format!("{other:?}"),
    };
    name.to_owned()
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NotTls { first } => {
                f.write_str("the peer sent plaintext, not TLS")?;
                match sniff::sniff(first) {
                    Sniff::Plausible => f.write_str(" (a sockmsg message without TLS)"),
                    _ => write!(f, " (first bytes {})", sniff::quote(first, 24)),
                }
            }
            TlsError::UnknownCa => f.write_str("the peer's certificate is signed by an unknown CA"),
            TlsError::CertificateExpired => f.write_str("the peer's certificate has expired"),
            TlsError::CertificateNotYetValid => {
                f.write_str("the peer's certificate is not valid yet")
            }
            TlsError::NameMismatch { expected } => write!(
                f,
                "the server's certificate is not valid for the name {expected:?} (name mismatch)"
            ),
            TlsError::BadSignature => f.write_str(
                "the peer's certificate is not signed by the trusted CA of that name \
                 (another CA with the same name? certificates made again?)",
            ),
            TlsError::BadCertificate { reason } => {
                write!(f, "the peer's certificate was rejected: {reason}")
            }
            TlsError::NoClientCertificate => {
                f.write_str("no client certificate: this server requires one (mutual TLS)")
            }
            TlsError::AlertReceived { alert } => {
                let hint = match alert.as_str() {
                    "unknown_ca" | "bad_certificate" | "certificate_unknown" => {
                        ": the peer does not trust our certificate"
                    }
                    "certificate_required" => ": the peer requires a client certificate",
                    "certificate_expired" => ": the peer says our certificate has expired",
                    _ => "",
                };
                write!(f, "the peer sent the TLS alert {alert}{hint}")
            }
            TlsError::HandshakeTimeout { after } => write!(
                f,
                "the TLS handshake did not complete within {} ms",
                after.as_millis()
            ),
            TlsError::ClosedDuringHandshake => {
                f.write_str("the peer closed the connection during the TLS handshake")
            }
            TlsError::Truncated => f.write_str(
                "the stream ended in the middle of a message without a TLS close_notify \
                 (truncated)",
            ),
            TlsError::Tls { reason } => write!(f, "TLS error: {reason}"),
            TlsError::Protocol(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TlsError {}

/// The clients' error ([`crate::ClientError`]) names a TLS failure by its kind.
impl sockmsg_server::client::TlsFailure for TlsError {
    fn kind(&self) -> &'static str {
        TlsError::kind(self)
    }
}

impl From<PeerError> for TlsError {
    fn from(e: PeerError) -> TlsError {
        TlsError::Protocol(e)
    }
}

/// A certificate, key or CA file that could not be used; `Display` names the file.
#[derive(Debug)]
pub struct ConfigError {
    /// The file (or, for in-memory PEM, its label).
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<PathBuf>, reason: impl fmt::Display) -> ConfigError {
        ConfigError {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for ConfigError {}
