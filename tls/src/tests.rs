//! The composition driven in memory: certificates generated here at run time (rcgen), bytes
//! moved between two [`TlsConnection`]s in pieces of every size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use sockmsg_protocol::{Connection, Deadlines, Event, Limits, Message, Role, Timeout};
use time::OffsetDateTime;

use crate::certs::{Authority, Issued, Spec, Usage};
use crate::{
    client_config, server_config, ClientOptions, Pem, ServerOptions, TlsConnection, TlsError,
    TlsTimeout, DEFAULT_HANDSHAKE_TIMEOUT,
};

struct Pki {
    ca: Authority,
    server: Issued,
    client: Issued,
}

fn pki() -> Pki {
    let ca = Authority::new("sockmsg test CA", 1).expect("CA");
    let server = ca
        .issue(&Spec::new(
            Usage::Server,
            "localhost",
            &["localhost", "127.0.0.1"],
            1,
        ))
        .expect("server certificate");
    let client = ca
        .issue(&Spec::new(
            Usage::Client,
            "alice",
            &["alice@example.com"],
            1,
        ))
        .expect("client certificate");
    Pki { ca, server, client }
}

fn server_options(cert: &Issued) -> ServerOptions {
    ServerOptions::new(
        Pem::memory("server.pem", cert.cert_pem.clone()),
        Pem::memory("server-key.pem", cert.key_pem.clone()),
    )
}

fn server_cfg(pki: &Pki, mutual: bool) -> Arc<rustls::ServerConfig> {
    let mut options = server_options(&pki.server);
    if mutual {
        options = options.with_client_ca(Pem::memory("client-ca.pem", pki.ca.cert_pem()));
    }
    server_config(&options).expect("server config")
}

fn client_cfg(ca: &Authority, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    client_config(&ClientOptions {
        ca: Some(Pem::memory("ca.pem", ca.cert_pem())),
        identity: identity.map(|id| {
            (
                Pem::memory("client.pem", id.cert_pem.clone()),
                Pem::memory("client-key.pem", id.key_pem.clone()),
            )
        }),
        ..ClientOptions::default()
    })
    .expect("client config")
}

fn request(value: &str) -> Message {
    Message::json(&serde_json::json!({"action": "search", "value": value})).expect("json")
}

/// Two compositions and the bytes in flight between them; the server echoes every request
/// with `answer: ` prepended to its content.
struct Pair {
    client: TlsConnection,
    server: TlsConnection,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    split: usize,
    now: Instant,
    answers: Vec<Message>,
    server_events: Vec<Result<Event, TlsError>>,
}

impl Pair {
    fn new(
        client_config: Arc<rustls::ClientConfig>,
        server_config: Arc<rustls::ServerConfig>,
        name: &str,
        split: usize,
    ) -> Pair {
        let now = Instant::now();
        Pair {
            client: TlsConnection::client(client_config, name, Connection::client(), now)
                .expect("client"),
            server: TlsConnection::server(server_config, Connection::server(), now)
                .expect("server"),
            c2s: Vec::new(),
            s2c: Vec::new(),
            split,
            now,
            answers: Vec::new(),
            server_events: Vec::new(),
        }
    }

    fn feed(to: &mut TlsConnection, wire: &mut Vec<u8>, split: usize, now: Instant) -> bool {
        let mut moved = false;
        while !wire.is_empty() && to.wants_read() {
            let k = split.min(wire.len());
            let mut piece = &wire[..k];
            match to.read_tls(&mut piece, now) {
                Ok(n) if n > 0 => {
                    wire.drain(..n);
                    moved = true;
                }
                _ => break,
            }
        }
        moved
    }

    /// One round: each side writes, the other reads; the server answers. `true` if any
    /// byte moved.
    fn step(&mut self) -> bool {
        let mut moved = false;
        while self.client.wants_write() {
            moved |= self
                .client
                .write_tls(&mut self.c2s, self.now)
                .expect("write")
                > 0;
        }
        moved |= Pair::feed(&mut self.server, &mut self.c2s, self.split, self.now);
        loop {
            let event = self.server.next_event();
            match &event {
                Ok(Event::Message(m)) => {
                    let mut content = b"answer: ".to_vec();
                    content.extend_from_slice(m.content());
                    self.server
                        .send(Message::binary("binary/answer", content), self.now)
                        .expect("send");
                }
                Ok(Event::End) => self.server.close(),
                _ => {}
            }
            let more = matches!(event, Ok(Event::Message(_)));
            if !matches!(event, Ok(Event::NeedData)) {
                self.server_events.push(event);
            }
            if !more {
                break;
            }
        }
        while self.server.wants_write() {
            moved |= self
                .server
                .write_tls(&mut self.s2c, self.now)
                .expect("write")
                > 0;
        }
        moved |= Pair::feed(&mut self.client, &mut self.s2c, self.split, self.now);
        while let Ok(Event::Message(m)) = self.client.next_event() {
            self.answers.push(m);
        }
        moved
    }

    fn run(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never settled");
    }
}

#[test]
fn handshake_and_request_in_pieces_of_every_size() {
    let pki = pki();
    let server = server_cfg(&pki, false);
    let client = client_cfg(&pki.ca, None);
    // Byte by byte, every size up to a TLS record header and past it, and whole flights.
    let splits = (1..=24).chain([31, 100, 517, 1500, 4096, 1 << 20]);
    for split in splits {
        let mut pair = Pair::new(client.clone(), server.clone(), "localhost", split);
        pair.client.send(request("ring"), pair.now).expect("send");
        pair.client
            .send(request("morpheus"), pair.now)
            .expect("send");
        pair.run();
        let answers: Vec<&[u8]> = pair.answers.iter().map(Message::content).collect();
        assert_eq!(
            answers,
            [
                &br#"answer: {"action": "search", "value": "ring"}"#[..],
                br#"answer: {"action": "search", "value": "morpheus"}"#,
            ],
            "split {split}"
        );
        assert!(!pair.client.is_handshaking() && !pair.server.is_handshaking());
        let identity = pair.client.peer_identity().expect("server identity");
        assert_eq!(identity.dns_names, ["localhost"]);
        assert_eq!(
            identity.ip_addresses,
            ["127.0.0.1".parse::<std::net::IpAddr>().expect("ip")]
        );
        // No client certificate was asked for: the server knows no identity.
        assert!(pair.server.peer_identity().is_none());
        assert_eq!(pair.client.in_flight(), 0);
    }
}

#[test]
fn large_message_goes_through_rustls_buffer_limit() {
    let pki = pki();
    let mut pair = Pair::new(
        client_cfg(&pki.ca, None),
        server_cfg(&pki, false),
        "localhost",
        16 * 1024,
    );
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    pair.client
        .send(Message::binary("binary/big", content.clone()), pair.now)
        .expect("send");
    // At most 64 KiB of TLS records wait at a time: the rest waits in the sockmsg machine.
    pair.step();
    assert!(pair.client.connection().pending_len() > 0 || !pair.answers.is_empty());
    pair.run();
    assert_eq!(pair.answers.len(), 1);
    let answer = pair.answers[0].content();
    assert_eq!(&answer[..8], b"answer: ");
    assert!(answer[8..] == content[..]);
}

#[test]
fn resumption_skips_the_full_handshake() {
    let pki = pki();
    let server = server_cfg(&pki, false);
    let client = client_cfg(&pki.ca, None);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let mut pair = Pair::new(client.clone(), server.clone(), "localhost", 1 << 20);
        pair.client
            .send(request("one-shot"), pair.now)
            .expect("send");
        pair.run();
        assert_eq!(pair.answers.len(), 1);
        kinds.push(pair.client.handshake_kind());
        assert_eq!(pair.server.handshake_kind(), pair.client.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed),
            Some(HandshakeKind::Resumed)
        ]
    );
}

#[test]
fn tls12_works_and_resumes() {
    let pki = pki();
    let server = server_cfg(&pki, false);
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in Pem::memory("ca", pki.ca.cert_pem())
            .certificates()
            .expect("ca")
        {
            r.add(c).expect("root");
        }
        r
    };
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let mut pair = Pair::new(client.clone(), server.clone(), "localhost", 7);
        pair.client.send(request("tls12"), pair.now).expect("send");
        pair.run();
        assert_eq!(pair.answers.len(), 1);
        assert_eq!(
            pair.server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        kinds.push(pair.client.handshake_kind());
    }
    assert_eq!(
        kinds,
        [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]
    );
}

#[test]
fn alpn_is_agreed_when_both_offer_it() {
    let pki = pki();
    let mut options = server_options(&pki.server);
    options.alpn = vec![b"sockmsg/1".to_vec()];
    let server = server_config(&options).expect("server");
    let client = client_config(&ClientOptions {
        ca: Some(Pem::memory("ca.pem", pki.ca.cert_pem())),
        alpn: vec![b"sockmsg/1".to_vec()],
        ..ClientOptions::default()
    })
    .expect("client");
    let mut pair = Pair::new(client, server, "localhost", 1 << 20);
    pair.client.send(request("alpn"), pair.now).expect("send");
    pair.run();
    assert_eq!(pair.answers.len(), 1);
    assert_eq!(pair.server.alpn_protocol(), Some(&b"sockmsg/1"[..]));
}

#[test]
fn mutual_tls_gives_the_server_the_client_identity() {
    let pki = pki();
    let mut pair = Pair::new(
        client_cfg(&pki.ca, Some(&pki.client)),
        server_cfg(&pki, true),
        "localhost",
        3,
    );
    pair.client
        .send(request("who am i"), pair.now)
        .expect("send");
    pair.run();
    assert_eq!(pair.answers.len(), 1);
    let identity = pair.server.peer_identity().expect("client identity");
    assert_eq!(identity.common_name.as_deref(), Some("alice"));
    assert_eq!(identity.emails, ["alice@example.com"]);
    assert_eq!(identity.name(), "alice@example.com");
    assert!(
        identity.subject.contains("CN=alice"),
        "{}",
        identity.subject
    );
}

/// Runs a pair to the end and returns the first error each side reports.
fn failure(mut pair: Pair) -> (Option<TlsError>, Option<TlsError>) {
    pair.client.send(request("x"), pair.now).expect("send");
    pair.run();
    assert!(pair.answers.is_empty(), "no answer may arrive");
    let server = pair.server.next_event().err();
    let client = pair.client.next_event().err();
    // A failed connection wants nothing more: the transport closes it.
    assert!(!pair.server.wants_read() && !pair.server.wants_write());
    assert!(!pair.client.wants_read() && !pair.client.wants_write());
    (client, server)
}

#[test]
fn unknown_ca_is_named_on_both_sides() {
    let pki = pki();
    let other = Authority::new("some other CA", 1).expect("CA");
    let (client, server) = failure(Pair::new(
        client_cfg(&other, None),
        server_cfg(&pki, false),
        "localhost",
        1 << 20,
    ));
    let client = client.expect("client error");
    assert_eq!(client, TlsError::UnknownCa);
    assert!(client.to_string().contains("unknown CA"), "{client}");
    let server = server.expect("server error");
    assert!(
        matches!(&server, TlsError::AlertReceived { alert } if alert == "unknown_ca"),
        "{server:?}"
    );
    assert!(server.to_string().contains("does not trust"), "{server}");
}

#[test]
fn wrong_name_is_a_name_mismatch() {
    let pki = pki();
    let (client, _) = failure(Pair::new(
        client_cfg(&pki.ca, None),
        server_cfg(&pki, false),
        "db.example.invalid",
        1 << 20,
    ));
    let client = client.expect("client error");
    assert_eq!(
        client,
        TlsError::NameMismatch {
            expected: "db.example.invalid".into()
        }
    );
    assert!(client.to_string().contains("name mismatch"), "{client}");
}

#[test]
fn expired_certificate_is_named() {
    let pki = pki();
    let mut spec = Spec::new(Usage::Server, "localhost", &["localhost"], 1);
    spec.not_before = OffsetDateTime::now_utc() - Duration::from_secs(10 * 86_400);
    spec.not_after = OffsetDateTime::now_utc() - Duration::from_secs(86_400);
    let expired = pki.ca.issue(&spec).expect("certificate");
    let server = server_config(&server_options(&expired)).expect("server");
    let (client, _) = failure(Pair::new(
        client_cfg(&pki.ca, None),
        server,
        "localhost",
        1 << 20,
    ));
    let client = client.expect("client error");
    assert_eq!(client, TlsError::CertificateExpired);
    assert_eq!(client.kind(), "certificate-expired");
}

#[test]
fn client_without_certificate_when_required() {
    let pki = pki();
    let (client, server) = failure(Pair::new(
        client_cfg(&pki.ca, None),
        server_cfg(&pki, true),
        "localhost",
        1 << 20,
    ));
    let server = server.expect("server error");
    assert_eq!(server, TlsError::NoClientCertificate);
    assert!(
        server.to_string().contains("no client certificate"),
        "{server}"
    );
    let client = client.expect("client error");
    assert!(
        matches!(&client, TlsError::AlertReceived { alert } if alert == "certificate_required"),
        "{client:?}"
    );
    assert!(client.to_string().contains("requires a client certificate"));
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let pki = pki();
    let other = Authority::new("rogue CA", 1).expect("CA");
    let rogue = other
        .issue(&Spec::new(
            Usage::Client,
            "mallory",
            &["mallory.example"],
            1,
        ))
        .expect("certificate");
    let (_, server) = failure(Pair::new(
        client_cfg(&pki.ca, Some(&rogue)),
        server_cfg(&pki, true),
        "localhost",
        1 << 20,
    ));
    assert_eq!(server, Some(TlsError::UnknownCa));
}

#[test]
fn plaintext_to_a_tls_server_is_named() {
    let pki = pki();
    let config = server_cfg(&pki, false);
    let now = Instant::now();
    let mut plain = Connection::client();
    plain.send(request("ring"), now).expect("send");
    let mut wire = Vec::new();
    while plain.wants_write() {
        plain.write_to(&mut wire, now).expect("write");
    }
    let cases: [(&[u8], &str); 2] = [
        (&wire, "a sockmsg message without TLS"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP"),
    ];
    for (bytes, shown) in cases {
        let mut server =
            TlsConnection::server(config.clone(), Connection::server(), now).expect("server");
        let mut input = bytes;
        server.read_tls(&mut input, now).expect("read");
        let error = server.next_event().expect_err("not TLS");
        assert!(matches!(error, TlsError::NotTls { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with("the peer sent plaintext, not TLS"),
            "{text}"
        );
        assert!(text.contains(shown), "{text}");
        assert!(!server.wants_read());
    }
}

#[test]
fn tls_client_to_a_plaintext_peer_is_named() {
    // A plaintext server answering something that is not TLS (an HTTP error here).
    let pki = pki();
    let now = Instant::now();
    let mut client = TlsConnection::client(
        client_cfg(&pki.ca, None),
        "localhost",
        Connection::client(),
        now,
    )
    .expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello, now).expect("hello");
    assert!(!hello.is_empty());
    let mut answer: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\r\n";
    client.read_tls(&mut answer, now).expect("read");
    let error = client.next_event().expect_err("not TLS");
    assert!(matches!(error, TlsError::NotTls { .. }), "{error:?}");
    // A plaintext sockmsg server says nothing and closes at its header deadline.
    let mut client = TlsConnection::client(
        client_cfg(&pki.ca, None),
        "localhost",
        Connection::client(),
        now,
    )
    .expect("client");
    client.write_tls(&mut Vec::new(), now).expect("hello");
    client.read_tls(&mut &b""[..], now).expect("eof");
    assert_eq!(client.next_event(), Err(TlsError::ClosedDuringHandshake));
}

/// A connected pair after the handshake, with nothing in flight.
fn connected(split: usize) -> Pair {
    let pki = pki();
    let mut pair = Pair::new(
        client_cfg(&pki.ca, None),
        server_cfg(&pki, false),
        "localhost",
        split,
    );
    pair.run();
    assert!(!pair.client.is_handshaking() && !pair.server.is_handshaking());
    pair
}

#[test]
fn truncation_mid_message_is_not_a_clean_end() {
    let mut pair = connected(1 << 20);
    // 40 KB of content: three TLS records at least.
    pair.client
        .send(Message::binary("binary/big", vec![7u8; 40_000]), pair.now)
        .expect("send");
    while pair.client.wants_write() {
        pair.client
            .write_tls(&mut pair.c2s, pair.now)
            .expect("write");
    }
    // Deliver only the first record (5-byte header + its length), then the end of stream.
    let len = usize::from(u16::from_be_bytes([pair.c2s[3], pair.c2s[4]]));
    let mut first = &pair.c2s[..5 + len];
    while !first.is_empty() {
        pair.server.read_tls(&mut first, pair.now).expect("read");
    }
    assert_eq!(pair.server.next_event(), Ok(Event::NeedData));
    assert_eq!(
        pair.server.read_tls(&mut &b""[..], pair.now).expect("eof"),
        0
    );
    let error = pair.server.next_event().expect_err("truncated");
    assert_eq!(error, TlsError::Truncated);
    assert!(error.to_string().contains("close_notify"));
}

#[test]
fn end_between_messages_without_close_notify_is_clean() {
    // Python's ssl sockets close without close_notify; between messages that is the end.
    let mut pair = connected(1 << 20);
    pair.client.send(request("a"), pair.now).expect("send");
    pair.run();
    assert_eq!(pair.answers.len(), 1);
    pair.server.read_tls(&mut &b""[..], pair.now).expect("eof");
    assert_eq!(pair.server.next_event(), Ok(Event::End));
}

#[test]
fn close_sends_close_notify_and_the_peer_sees_the_end() {
    let mut pair = connected(5);
    pair.client.send(request("last"), pair.now).expect("send");
    pair.run();
    assert_eq!(pair.answers.len(), 1);
    pair.client.close();
    assert!(pair.client.wants_write(), "close_notify to send");
    pair.run();
    assert!(pair.client.wants_shutdown());
    // The server saw End (close_notify), closed in turn, and its close_notify arrived.
    assert!(pair.server_events.contains(&Ok(Event::End)));
    assert!(pair.server.wants_shutdown());
    // A client that closed with no answer owed wants nothing more: the transport closes it.
    assert!(!pair.client.wants_read() && !pair.client.wants_write());
}

#[test]
fn stall_mid_handshake_meets_the_handshake_deadline() {
    let pki = pki();
    let start = Instant::now();
    let mut client = TlsConnection::client(
        client_cfg(&pki.ca, None),
        "localhost",
        Connection::client(),
        start,
    )
    .expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello, start).expect("hello");
    let mut server = TlsConnection::server(server_cfg(&pki, false), Connection::server(), start)
        .expect("server");
    // Half a ClientHello, then silence.
    let mut half = &hello[..hello.len() / 2];
    server.read_tls(&mut half, start).expect("read");
    assert_eq!(server.next_event(), Ok(Event::NeedData));
    assert!(server.wants_read());
    assert_eq!(
        server.poll_timeout(),
        Some(start + DEFAULT_HANDSHAKE_TIMEOUT)
    );
    let almost = start + DEFAULT_HANDSHAKE_TIMEOUT - Duration::from_millis(1);
    assert_eq!(server.handle_timeout(almost), None);
    assert_eq!(
        server.handle_timeout(start + DEFAULT_HANDSHAKE_TIMEOUT),
        Some(TlsTimeout::Handshake)
    );
    assert_eq!(
        server.next_event(),
        Err(TlsError::HandshakeTimeout {
            after: DEFAULT_HANDSHAKE_TIMEOUT
        })
    );
    assert!(!server.wants_read() && !server.wants_write());
    assert_eq!(server.poll_timeout(), None);
    // A shorter deadline, and the idle deadline of the machine inside, both count.
    let deadlines = Deadlines {
        idle: Some(Duration::from_secs(3)),
        ..Deadlines::default()
    };
    let conn = Connection::new(Role::Server, Limits::default()).with_deadlines(deadlines, start);
    let server = TlsConnection::server(server_cfg(&pki, false), conn, start)
        .expect("server")
        .with_handshake_timeout(Some(Duration::from_secs(2)));
    assert_eq!(server.poll_timeout(), Some(start + Duration::from_secs(2)));
}

#[test]
fn the_sockmsg_deadlines_still_run_after_the_handshake() {
    let pki = pki();
    let start = Instant::now();
    let deadlines = Deadlines {
        header: Some(Duration::from_secs(5)),
        ..Deadlines::default()
    };
    let conn = Connection::new(Role::Server, Limits::default()).with_deadlines(deadlines, start);
    let mut pair = Pair::new(
        client_cfg(&pki.ca, None),
        server_cfg(&pki, false),
        "localhost",
        1 << 20,
    );
    pair.server = TlsConnection::server(server_cfg(&pki, false), conn, start).expect("server");
    pair.run();
    assert!(!pair.server.is_handshaking());
    // Half a message (a slowloris), then nothing.
    pair.client.send(request("slow"), start).expect("send");
    let mut wire = Vec::new();
    while pair.client.wants_write() {
        pair.client.write_tls(&mut wire, start).expect("write");
    }
    // Re-encrypting half a message is not possible: send a message whose record is cut.
    let cut = Message::binary("binary/x", vec![1u8; 40_000]);
    pair.client.send(cut, start).expect("send");
    while pair.client.wants_write() {
        pair.client.write_tls(&mut wire, start).expect("write");
    }
    // Everything for the first message, and the first record of the second.
    let mut fed = 0;
    let mut records = 0;
    while fed < wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[fed + 3], wire[fed + 4]]));
        fed += 5 + len;
        records += 1;
        if records == 2 {
            break;
        }
    }
    let mut input = &wire[..fed];
    while !input.is_empty() {
        pair.server.read_tls(&mut input, start).expect("read");
    }
    assert!(matches!(pair.server.next_event(), Ok(Event::Message(_))));
    assert_eq!(pair.server.next_event(), Ok(Event::NeedData));
    // As a transport does: sleep to each timer in turn (the first frees the idle buffers).
    let mut passed = None;
    for _ in 0..3 {
        let at = pair.server.poll_timeout().expect("a timer");
        passed = pair.server.handle_timeout(at);
        if passed.is_some() {
            break;
        }
    }
    assert_eq!(passed, Some(TlsTimeout::Protocol(Timeout::Header)));
}

#[test]
fn config_errors_name_the_file() {
    let missing = server_config(&ServerOptions::new(
        Pem::file("/nonexistent/server.pem"),
        Pem::file("/nonexistent/key.pem"),
    ))
    .expect_err("missing");
    assert!(
        missing.to_string().starts_with("/nonexistent/server.pem: "),
        "{missing}"
    );
    let pki = pki();
    let no_cert = server_config(&ServerOptions::new(
        Pem::memory("key-as-cert.pem", pki.server.key_pem.clone()),
        Pem::memory("key.pem", pki.server.key_pem.clone()),
    ))
    .expect_err("no cert");
    assert_eq!(
        no_cert.to_string(),
        "key-as-cert.pem: no certificate (no \"BEGIN CERTIFICATE\" section)"
    );
    let no_key = server_config(&ServerOptions::new(
        Pem::memory("server.pem", pki.server.cert_pem.clone()),
        Pem::memory("cert-as-key.pem", pki.server.cert_pem.clone()),
    ))
    .expect_err("no key");
    assert!(
        no_key
            .to_string()
            .starts_with("cert-as-key.pem: no private key"),
        "{no_key}"
    );
    // A key that does not match the certificate.
    let wrong_key = server_config(&ServerOptions::new(
        Pem::memory("server.pem", pki.server.cert_pem.clone()),
        Pem::memory("client-key.pem", pki.client.key_pem.clone()),
    ))
    .expect_err("mismatch");
    assert!(
        wrong_key
            .to_string()
            .starts_with("client-key.pem: unusable key"),
        "{wrong_key}"
    );
}

#[test]
fn another_ca_with_the_same_name_is_a_bad_signature() {
    let pki = pki();
    let impostor = Authority::new("sockmsg test CA", 1).expect("CA");
    let (client, _) = failure(Pair::new(
        client_cfg(&impostor, None),
        server_cfg(&pki, false),
        "localhost",
        1 << 20,
    ));
    let client = client.expect("client error");
    assert_eq!(client, TlsError::BadSignature);
    assert!(client.to_string().contains("same name"), "{client}");
}

#[test]
fn output_cap_holds_plaintext_in_rustls_and_resumes() {
    let pki = pki();
    let now = Instant::now();
    let mut pair = Pair::new(
        client_cfg(&pki.ca, None),
        server_cfg(&pki, false),
        "localhost",
        1 << 20,
    );
    // A server that stops taking requests while one answer byte is pending.
    let conn = Connection::server().with_output_cap(1);
    pair.server = TlsConnection::server(server_cfg(&pki, false), conn, now).expect("server");
    for i in 0..50 {
        pair.client
            .send(request(&i.to_string()), now)
            .expect("send");
    }
    pair.run();
    assert_eq!(pair.answers.len(), 50);
    let last = pair.answers[49].content();
    assert!(last.ends_with(br#""value": "49"}"#), "{last:?}");
}

/// A server session over TLS and a client, both in memory.
mod session {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sockmsg_protocol::{Connection, Event, Message};
    use sockmsg_server::{CloseReason, ServerConfig, Service, ServiceError};

    use super::{client_cfg, pki, server_cfg};
    use crate::server::End;
    use crate::{AnyPeer, PeerService, TlsConnection, TlsSession};

    struct Echo;

    impl Service for Echo {
        fn call(&self, request: Message) -> Result<Message, ServiceError> {
            Ok(Message::binary("binary/echo", request.content().to_vec()))
        }
    }

    /// A TLS client and a TLS server session with an echo service, made at `now`.
    fn echo_pair(now: Instant) -> (TlsConnection, TlsSession) {
        let pki = pki();
        let service: Arc<dyn PeerService> = Arc::new(AnyPeer(Arc::new(Echo)));
        let client = TlsConnection::client(
            client_cfg(&pki.ca, None),
            "localhost",
            Connection::client(),
            now,
        )
        .expect("client");
        let server = TlsSession::accept(
            server_cfg(&pki, false),
            service,
            Arc::new(ServerConfig::default()),
            now,
        )
        .expect("accept");
        (client, server)
    }

    /// Moves ciphertext both ways until neither side has anything to say; the client's
    /// answers.
    fn exchange(client: &mut TlsConnection, server: &mut TlsSession, now: Instant) -> Vec<Message> {
        let mut answers = Vec::new();
        for _ in 0..1000 {
            let mut moved = false;
            let mut wire = Vec::new();
            while client.wants_write() {
                moved |= client.write_tls(&mut wire, now).expect("client write") > 0;
            }
            let mut input = &wire[..];
            while !input.is_empty() {
                server.read_tls(&mut input, now).expect("server read");
            }
            wire.clear();
            while server.wants_write() {
                moved |= server.write_tls(&mut wire, now).expect("server write") > 0;
            }
            let mut input = &wire[..];
            while !input.is_empty() {
                client.read_tls(&mut input, now).expect("client read");
            }
            while let Event::Message(m) = client.next_event().expect("client event") {
                answers.push(m);
            }
            if !moved {
                return answers;
            }
        }
        panic!("the exchange did not settle");
    }

    /// Once idle a moment the session frees its buffers and the composition its own; the
    /// next requests (larger than a TLS record) need them again and go through.
    #[test]
    fn a_connection_works_after_its_buffers_were_freed() {
        let start = Instant::now();
        let (mut client, mut server) = echo_pair(start);
        for round in 0..3u8 {
            let now = start + Duration::from_secs(u64::from(round));
            let content = vec![round; 20_000 * usize::from(round + 1)];
            client
                .send(Message::binary("binary/x", content.clone()), now)
                .expect("send");
            let answers = exchange(&mut client, &mut server, now);
            assert_eq!(answers.len(), 1, "round {round}");
            assert_eq!(answers[0].content(), &content[..], "round {round}");
            assert!(
                !format!("{server:?}").contains("buffers: 0,"),
                "round {round}"
            );
            // The timer to free the buffers is the next one, 100 ms on.
            let at = server.poll_timeout().expect("a timer");
            assert!(at <= now + crate::RELEASE_DELAY, "round {round}");
            assert_eq!(server.handle_timeout(now + crate::RELEASE_DELAY), None);
            assert!(!server.is_done(), "round {round}");
            let debug = format!("{server:?}");
            assert!(debug.contains("buffers: 0,"), "{debug}");
            assert!(
                debug.contains("received: 0") && debug.contains("to_send: 0"),
                "{debug}"
            );
            client.release_buffers();
        }
    }

    /// A socket error with TLS records still to write: the connection is done at once
    /// (nothing more can be written), not left wanting to write forever.
    #[test]
    fn abort_with_records_pending_is_done() {
        let now = Instant::now();
        let (mut client, mut server) = echo_pair(now);
        assert!(exchange(&mut client, &mut server, now).is_empty());
        client
            .send(Message::binary("binary/x", vec![7; 100_000]), now)
            .expect("send");
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire, now).expect("client write");
        }
        let mut input = &wire[..];
        while !input.is_empty() {
            server.read_tls(&mut input, now).expect("server read");
        }
        // The echo is queued: records to write.
        assert!(server.wants_write() && !server.is_done());
        server.abort(CloseReason::Io(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert!(!server.wants_write());
        assert!(server.is_done());
        assert!(
            matches!(server.end(), Some(End::Session(CloseReason::Io(_)))),
            "{:?}",
            server.end()
        );
    }
}

/// The server chooses AES-128-GCM-SHA256 for TLS 1.3 whatever the client prefers (rustls's
/// and Python's clients list AES-256-GCM-SHA384 first): its SHA-384 key schedule was 15% of
/// a resumed one-shot connection's server CPU.
#[test]
fn the_server_prefers_aes_128_gcm_sha256() {
    let pki = pki();
    let server = server_cfg(&pki, false);
    assert!(server.ignore_client_order);
    let first = server
        .crypto_provider()
        .cipher_suites
        .first()
        .map(|s| s.suite());
    assert_eq!(first, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    // The client's own order is rustls's default, AES-256 first: what the server overrides.
    let client = client_cfg(&pki.ca, None);
    let client_first = client
        .crypto_provider()
        .cipher_suites
        .first()
        .map(|s| s.suite());
    assert_eq!(
        client_first,
        Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
}
