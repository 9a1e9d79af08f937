//! `ClientOptions::version`: a client that offers only TLS 1.2 or only TLS 1.3 gets that
//! version from the server `server_config` builds, and its next connection resumes;
//! without it the client offers both and the server chooses TLS 1.3. In memory (no
//! sockets): both sides in one thread.

use std::sync::Arc;
use std::time::Instant;

use sockmsg_protocol::{Connection, Event, Message};
use sockmsg_tls::certs::{Authority, Spec, Usage};
use sockmsg_tls::rustls::{HandshakeKind, ProtocolVersion};
use sockmsg_tls::{
    client_config, server_config, ClientOptions, Pem, ServerOptions, TlsConnection, TlsVersion,
};

/// Moves every record `from` has to `to`.
fn transfer(from: &mut TlsConnection, to: &mut TlsConnection, now: Instant) -> bool {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire, now).expect("write_tls");
    }
    let mut input = &wire[..];
    while !input.is_empty() && to.wants_read() {
        if to.read_tls(&mut input, now).expect("read_tls") == 0 {
            break;
        }
    }
    !wire.is_empty()
}

/// One connection: a request, the server's echo. Returns the client and server after it,
/// and whether the client got its answer.
fn one_shot(
    client: &Arc<sockmsg_tls::rustls::ClientConfig>,
    server: &Arc<sockmsg_tls::rustls::ServerConfig>,
) -> (TlsConnection, TlsConnection, bool) {
    let now = Instant::now();
    let mut c =
        TlsConnection::client(client.clone(), "localhost", Connection::client(), now).expect("c");
    let mut s = TlsConnection::server(server.clone(), Connection::server(), now).expect("s");
    c.send(Message::binary("binary/x", b"versions".to_vec()), now)
        .expect("send");
    let mut answered = false;
    for _ in 0..100 {
        let mut moved = transfer(&mut c, &mut s, now);
        while let Event::Message(m) = s.next_event().expect("server event") {
            s.send(m, now).expect("echo");
        }
        moved |= transfer(&mut s, &mut c, now);
        while let Event::Message(m) = c.next_event().expect("client event") {
            answered |= m.content() == b"versions";
        }
        if !moved {
            break;
        }
    }
    (c, s, answered)
}

/// A test CA's certificate (PEM) and a server configuration with a certificate it signed.
fn server() -> (String, Arc<sockmsg_tls::rustls::ServerConfig>) {
    let ca = Authority::new("versions test CA", 1).expect("CA");
    let cert = ca
        .issue(&Spec::new(Usage::Server, "localhost", &["localhost"], 1))
        .expect("certificate");
    let server = server_config(&ServerOptions::new(
        Pem::memory("server.pem", cert.cert_pem),
        Pem::memory("server-key.pem", cert.key_pem),
    ))
    .expect("server config");
    (ca.cert_pem(), server)
}

/// A client configuration trusting `ca`, offering `version` (or both).
fn client(ca: &str, version: Option<TlsVersion>) -> Arc<sockmsg_tls::rustls::ClientConfig> {
    client_config(&ClientOptions {
        ca: Some(Pem::memory("ca.pem", ca)),
        version,
        ..ClientOptions::default()
    })
    .expect("client config")
}

/// The versions and handshake kinds of three connections in a row from one client
/// configuration.
fn three_connections(version: Option<TlsVersion>) -> Vec<(ProtocolVersion, HandshakeKind)> {
    let (ca, server) = server();
    let client = client(&ca, version);
    (0..3)
        .map(|i| {
            let (c, s, answered) = one_shot(&client, &server);
            assert!(answered, "connection {i} ({version:?}) got no answer");
            let v = c.protocol_version().expect("client version");
            assert_eq!(s.protocol_version(), Some(v), "both sides agree");
            let kind = c.handshake_kind().expect("client handshake kind");
            assert_eq!(s.handshake_kind(), Some(kind), "both sides agree");
            (v, kind)
        })
        .collect()
}

#[test]
fn a_tls12_only_client_gets_tls12_and_resumes() {
    use HandshakeKind::{Full, Resumed};
    assert_eq!(
        three_connections(Some(TlsVersion::Tls12)),
        [
            (ProtocolVersion::TLSv1_2, Full),
            (ProtocolVersion::TLSv1_2, Resumed),
            (ProtocolVersion::TLSv1_2, Resumed),
        ]
    );
}

#[test]
fn a_tls13_only_client_and_the_default_get_tls13_and_resume() {
    use HandshakeKind::{Full, Resumed};
    let expected = [
        (ProtocolVersion::TLSv1_3, Full),
        (ProtocolVersion::TLSv1_3, Resumed),
        (ProtocolVersion::TLSv1_3, Resumed),
    ];
    assert_eq!(three_connections(Some(TlsVersion::Tls13)), expected);
    assert_eq!(three_connections(None), expected);
}

#[test]
fn versions_are_written_and_read_as_1_2_and_1_3() {
    for (text, version) in [("1.2", TlsVersion::Tls12), ("1.3", TlsVersion::Tls13)] {
        assert_eq!(text.parse::<TlsVersion>(), Ok(version));
        assert_eq!(version.to_string(), text);
        assert_eq!(
            TlsVersion::from_rustls(version.rustls().version),
            Some(version)
        );
    }
    assert_eq!(TlsVersion::from_rustls(ProtocolVersion::TLSv1_1), None);
    for bad in ["1.1", "1.0", "12", "", "tls1.2", "1.3 "] {
        let err = bad.parse::<TlsVersion>().expect_err(bad);
        assert!(
            err.contains("not a TLS version (1.2 or 1.3)"),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(ClientOptions::default().version, None);
}

/// The server prefers the AES-128-GCM suites that hash with SHA-256, for TLS 1.2 as for
/// TLS 1.3 (clients list the SHA-384 ones first): SHA-384 was 13% of a resumed TLS 1.2
/// connection's server CPU.
#[test]
fn the_server_prefers_sha256_suites_in_both_versions() {
    use sockmsg_tls::rustls::{CipherSuite, SupportedCipherSuite};
    let (ca, server) = server();
    assert!(server.ignore_client_order);
    let first = |suites: &[SupportedCipherSuite], tls12: bool| {
        suites
            .iter()
            .find(|s| matches!(s, SupportedCipherSuite::Tls12(_)) == tls12)
            .map(|s| s.suite())
    };
    let ours = &server.crypto_provider().cipher_suites;
    assert_eq!(
        first(ours, false),
        Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    assert_eq!(
        first(ours, true),
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    // What the server overrides: the client's order, rustls's default.
    let default_client = client(&ca, None);
    let theirs = &default_client.crypto_provider().cipher_suites;
    assert_eq!(
        first(theirs, true),
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    );
    // Nothing dropped: the same suites, in another order.
    assert_eq!(ours.len(), theirs.len());

    // And on the wire, whatever the client prefers.
    for (version, expected) in [
        (
            TlsVersion::Tls12,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (TlsVersion::Tls13, CipherSuite::TLS13_AES_128_GCM_SHA256),
    ] {
        assert_eq!(
            negotiated_suite(client(&ca, Some(version)), server.clone()),
            expected
        );
    }
}

/// The suite a handshake between these configurations agrees on (rustls's own connections,
/// which say which suite).
fn negotiated_suite(
    client: Arc<sockmsg_tls::rustls::ClientConfig>,
    server: Arc<sockmsg_tls::rustls::ServerConfig>,
) -> sockmsg_tls::rustls::CipherSuite {
    use sockmsg_tls::rustls::{ClientConnection, ServerConnection};
    let name = "localhost".try_into().expect("name");
    let mut c = ClientConnection::new(client, name).expect("client");
    let mut s = ServerConnection::new(server).expect("server");
    for _ in 0..10 {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("client write");
        }
        let mut input = &wire[..];
        while !input.is_empty() {
            s.read_tls(&mut input).expect("server read");
        }
        s.process_new_packets().expect("server process");
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).expect("server write");
        }
        let mut input = &wire[..];
        while !input.is_empty() {
            c.read_tls(&mut input).expect("client read");
        }
        c.process_new_packets().expect("client process");
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
    }
    let suite = s.negotiated_cipher_suite().expect("a suite").suite();
    assert_eq!(c.negotiated_cipher_suite().map(|c| c.suite()), Some(suite));
    suite
}
