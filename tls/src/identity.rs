//! Who the peer is: the names in its verified certificate.

use std::fmt;
use std::net::IpAddr;

use x509_parser::extensions::GeneralName;

/// The names in the peer's certificate, read after rustls verified it (so they are as
/// trustworthy as the CA that signed it). A server sees this for a client only under mutual
/// TLS; a client always sees the server's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    /// The subject's distinguished name, as text (`CN=alice, O=Example`).
    pub subject: String,
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// DNS names from the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses from the subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// E-mail addresses from the subject alternative names.
    pub emails: Vec<String>,
}

impl PeerIdentity {
    /// The identity in a DER certificate; `None` if it cannot be parsed (rustls verified it,
    /// so that does not happen for a verified peer).
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut identity = PeerIdentity {
            subject: cert.subject().to_string(),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            ..PeerIdentity::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => identity.dns_names.push((*dns).to_owned()),
                    GeneralName::RFC822Name(mail) => identity.emails.push((*mail).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            identity.ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            identity.ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(identity)
    }

    /// One name for the peer, for logs and per-client decisions: the first DNS name, else
    /// the first e-mail address, else the common name, else the subject.
    pub fn name(&self) -> &str {
        self.dns_names
            .first()
            .or(self.emails.first())
            .or(self.common_name.as_ref())
            .map_or(self.subject.as_str(), String::as_str)
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
