//! Test certificates for local use, made with `rcgen`: a CA, server and client certificates
//! signed by it. What `app-certs` writes, and what the tests generate at run time (no key
//! material is committed). Not for production: no revocation, keys in plain PEM files.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
pub use time::OffsetDateTime;

/// A certificate and its private key, as PEM text.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM, `BEGIN CERTIFICATE`).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8).
    pub key_pem: String,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A server certificate (extended key usage `serverAuth`).
    Server,
    /// A client certificate (extended key usage `clientAuth`).
    Client,
}

/// A certificate to issue.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The subject's common name.
    pub common_name: String,
    /// Subject alternative names: DNS names, IP addresses (parsed as such) or e-mail
    /// addresses (containing `@`).
    pub names: Vec<String>,
    /// Server or client.
    pub usage: Usage,
    /// Valid from.
    pub not_before: OffsetDateTime,
    /// Valid until.
    pub not_after: OffsetDateTime,
}

impl Spec {
    /// A certificate for `usage`, named `common_name` with these alternative names, valid
    /// from an hour ago for `days` days.
    pub fn new(usage: Usage, common_name: &str, names: &[&str], days: u32) -> Spec {
        let now = OffsetDateTime::now_utc();
        Spec {
            common_name: common_name.to_owned(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            usage,
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// A certificate authority that can sign certificates.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new self-signed CA named `common_name`, valid from an hour ago for `days` days, with
    /// a fresh ECDSA P-256 key.
    pub fn new(common_name: &str, days: u32) -> Result<Authority, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert, key })
    }

    /// The CA's certificate (PEM): what peers put in their trust store.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key (PEM): keep it to issue more certificates.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate for `spec`, signed by this CA, with a fresh key.
    pub fn issue(&self, spec: &Spec) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(
            spec.names
                .iter()
                .filter(|n| !n.contains('@'))
                .cloned()
                .collect::<Vec<_>>(),
        )?;
        for mail in spec.names.iter().filter(|n| n.contains('@')) {
            params
                .subject_alt_names
                .push(rcgen::SanType::Rfc822Name(mail.clone().try_into()?));
        }
        params.distinguished_name = name(&spec.common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match spec.usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "sockmsg test PKI");
    dn
}
