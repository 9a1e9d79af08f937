//! rustls configurations from PEM files: [`ServerOptions`] → [`server_config`],
//! [`ClientOptions`] → [`client_config`]. Both use the `ring` provider, TLS 1.3 and 1.2,
//! and session resumption.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::RootCertStore;

use crate::error::ConfigError;

/// Where PEM text comes from: a file (the usual case) or memory (tests, embedded
/// certificates). Errors name the file, or the label of in-memory PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// A PEM file.
    File(PathBuf),
    /// PEM text in memory, with a label for error messages.
    Memory {
        /// Names this PEM in errors.
        label: String,
        /// The PEM text.
        pem: Vec<u8>,
    },
}

impl Pem {
    /// PEM from the file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Pem {
        Pem::File(path.into())
    }

    /// PEM text in memory, named `label` in errors.
    pub fn memory(label: impl Into<String>, pem: impl Into<Vec<u8>>) -> Pem {
        Pem::Memory {
            label: label.into(),
            pem: pem.into(),
        }
    }

    fn name(&self) -> &Path {
        match self {
            Pem::File(path) => path,
            Pem::Memory { label, .. } => Path::new(label),
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, ConfigError> {
        match self {
            Pem::File(path) => std::fs::read(path).map_err(|e| ConfigError::new(path, e)),
            Pem::Memory { pem, .. } => Ok(pem.clone()),
        }
    }

    /// Every certificate in this PEM, in order; none is an error.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let bytes = self.bytes()?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new(self.name(), format!("bad PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ConfigError::new(
                self.name(),
                "no certificate (no \"BEGIN CERTIFICATE\" section)",
            ));
        }
        Ok(certs)
    }

    /// The first private key in this PEM (PKCS#8, PKCS#1 or SEC1).
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, ConfigError> {
        let bytes = self.bytes()?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                ConfigError::new(self.name(), "no private key (no \"BEGIN ... PRIVATE KEY\")")
            }
            e => ConfigError::new(self.name(), format!("bad PEM: {e}")),
        })
    }

    fn root_store(&self) -> Result<RootCertStore, ConfigError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates()? {
            roots
                .add(cert)
                .map_err(|e| ConfigError::new(self.name(), format!("not a usable CA: {e}")))?;
        }
        Ok(roots)
    }
}

/// The crypto provider: rustls's `ring` backend. `ring` builds with the C compiler alone;
/// aws-lc-rs (rustls's default) also needs cmake (and nasm on some targets), which a fresh
/// machine with only Rust and a C compiler lacks.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The protocol versions offered and accepted: TLS 1.3 and TLS 1.2.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A server's TLS settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The server's certificate chain (its own certificate first).
    pub cert_chain: Pem,
    /// The server's private key.
    pub key: Pem,
    /// If set, clients must present a certificate signed by one of these CAs (mutual TLS);
    /// the connection reports who they are ([`crate::TlsConnection::peer_identity`]).
    pub client_ca: Option<Pem>,
    /// ALPN protocols offered, most preferred first; empty: no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// How many TLS sessions the server remembers for resumption by session ID (TLS 1.2);
    /// TLS 1.3 resumption uses stateless tickets. Default: 1,024.
    pub session_cache: usize,
}

impl ServerOptions {
    /// A server with this certificate chain and key, no client authentication, no ALPN.
    pub fn new(cert_chain: Pem, key: Pem) -> ServerOptions {
        ServerOptions {
            cert_chain,
            key,
            client_ca: None,
            alpn: Vec::new(),
            session_cache: 1024,
        }
    }

    /// The same, requiring client certificates signed by `ca`.
    pub fn with_client_ca(mut self, ca: Pem) -> ServerOptions {
        self.client_ca = Some(ca);
        self
    }
}

/// The server's provider: [`provider`] with the AES-128-GCM suites that hash with SHA-256
/// first: `TLS13_AES_128_GCM_SHA256`, then for TLS 1.2 `TLS_ECDHE_*_WITH_AES_128_GCM_SHA256`.
/// Clients (rustls's and Python's among them) list the AES-256-GCM / SHA-384 suites first,
/// whose key schedule (TLS 1.3) or PRF (TLS 1.2) hashes with SHA-384; on a one-shot
/// connection that hashing was 15% of the server's CPU with TLS 1.3, 13% with a resumed
/// TLS 1.2 session, where SHA-256 (with the CPU's SHA extensions) cut the server's CPU per
/// connection by a fifth (BENCHMARKS.md). AES-128-GCM with SHA-256 is as strong as TLS
/// needs: TLS 1.3's mandatory suite (RFC 8446, 9.1) and the first TLS 1.2 suite RFC 9325
/// recommends.
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: TLS 1.3's suite stays ahead of TLS 1.2's, as in rustls's list.
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

/// The rustls server configuration for `options`: TLS 1.3 and 1.2 with the ring provider,
/// client certificates required and verified (`WebPkiClientVerifier`) when a client CA is
/// given, session resumption by tickets (TLS 1.3 and 1.2) and by session ID (a memory
/// cache). Build it once and share it: the ticket key and session cache live in it.
pub fn server_config(options: &ServerOptions) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let provider = server_provider();
    let certs = options.cert_chain.certificates()?;
    let key = options.key.private_key()?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| ConfigError::new("TLS settings", e))?;
    let builder = match &options.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(ca.root_store()?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| ConfigError::new(ca.name(), e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::new(options.key.name(), format!("unusable key: {e}")))?;
    // The server's order of cipher suites, not the client's (see `server_provider`).
    config.ignore_client_order = true;
    config.alpn_protocols = options.alpn.clone();
    config.session_storage = ServerSessionMemoryCache::new(options.session_cache.max(1));
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| ConfigError::new("TLS session tickets", e))?;
    // TLS 1.3 tickets per connection: rustls's 2 (`send_tls13_tickets`) are kept. One would
    // do for a one-shot client, but sending 1 measured no cheaper (the server's CPU per
    // resumed connection 1.00x of 2's, over sockets and in memory: BENCHMARKS.md,
    // "i13-oneshot"), and with 2 a client can open two connections at once, each resuming.
    Ok(Arc::new(config))
}

/// One TLS protocol version, for a client that offers only it ([`ClientOptions::version`]).
/// Written `1.2` and `1.3` ([`std::str::FromStr`], [`std::fmt::Display`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    /// TLS 1.2. A resumed TLS 1.2 session (ticket or session ID) makes no new key
    /// exchange: it is the cheapest reconnection, and has no forward secrecy (whoever
    /// learns the server's ticket key, or the session, can read the resumed traffic).
    Tls12,
    /// TLS 1.3. Resumption still makes a fresh key exchange (`psk_dhe_ke`), for forward
    /// secrecy.
    Tls13,
}

impl TlsVersion {
    /// rustls's description of this version.
    pub fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }

    /// The version rustls names `version` (a connection's
    /// [`protocol_version`](rustls::CommonState::protocol_version)); `None` for any other.
    pub fn from_rustls(version: rustls::ProtocolVersion) -> Option<TlsVersion> {
        match version {
            rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion::Tls12),
            rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

impl std::str::FromStr for TlsVersion {
    type Err = String;

    /// `1.2` or `1.3`.
    fn from_str(s: &str) -> Result<TlsVersion, String> {
        match s {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err(format!("{s:?} is not a TLS version (1.2 or 1.3)")),
        }
    }
}

/// A client's TLS settings.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// The CAs that may sign the server's certificate; `None`: the platform's trusted roots
    /// (`rustls-native-certs`).
    pub ca: Option<Pem>,
    /// A certificate chain and key to present when the server asks (mutual TLS).
    pub identity: Option<(Pem, Pem)>,
    /// ALPN protocols offered, most preferred first; empty: no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// How many sessions to remember for resumption (one per server name and more).
    /// Default when 0: 256.
    pub session_cache: usize,
    /// The one TLS version to offer; `None` (the default): TLS 1.3 and 1.2, and the server
    /// chooses (1.3 when it can). `Some(TlsVersion::Tls12)` makes resumed connections
    /// cheapest (no key exchange) at the price of forward secrecy for them; see
    /// [`TlsVersion`].
    pub version: Option<TlsVersion>,
}

/// The rustls client configuration for `options`: TLS 1.3 and 1.2 (or the one
/// [`ClientOptions::version`]) with the ring provider,
/// server certificates verified against the given CA or the platform's roots, an optional
/// client certificate, and an in-memory session cache so reconnecting to the same server
/// resumes instead of paying a full handshake. Build it once and share it.
pub fn client_config(options: &ClientOptions) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let provider = provider();
    let roots = match &options.ca {
        Some(ca) => ca.root_store()?,
        None => native_roots()?,
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ConfigError::new("CA roots", e))?;
    let only;
    let versions = match options.version {
        None => VERSIONS,
        Some(version) => {
            only = [version.rustls()];
            &only[..]
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ConfigError::new("TLS settings", e))?
        .with_webpki_verifier(verifier);
    let mut config = match &options.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(cert.certificates()?, key.private_key()?)
            .map_err(|e| ConfigError::new(key.name(), format!("unusable key: {e}")))?,
    };
    config.alpn_protocols = options.alpn.clone();
    let sessions = if options.session_cache == 0 {
        256
    } else {
        options.session_cache
    };
    config.resumption = rustls::client::Resumption::in_memory_sessions(sessions);
    Ok(Arc::new(config))
}

/// The platform's trusted roots; an error if none could be loaded.
fn native_roots() -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none found".to_owned());
        return Err(ConfigError::new(
            "the platform's trusted roots",
            format!("no usable CA certificate ({why}); give a CA file"),
        ));
    }
    Ok(roots)
}
