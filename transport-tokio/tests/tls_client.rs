//! The async client over TLS (feature `tls`), on loopback against the tokio server's
//! `run_tls`, with certificates made at test time (rcgen): a request answered, and each
//! verification failure (unknown CA, wrong name, expired certificate) its own error.
#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sockmsg_protocol::Message;
use sockmsg_server::{ServerConfig, Service, ServiceError, ShutdownHandle};
use sockmsg_tls::certs::{Authority, Issued, Spec, Usage};
use sockmsg_tls::{client_config, server_config, AnyPeer, ClientOptions, Pem, ServerOptions};
use sockmsg_tls::{rustls, TlsError};
use sockmsg_transport_tokio::{Client, ClientConfig, ClientError, Op, Server};
use tokio::task::JoinHandle;

/// Every test is over well within this.
const BOUND: Duration = Duration::from_secs(20);

fn echo() -> Arc<dyn Service> {
    Arc::new(|m: Message| -> Result<Message, ServiceError> {
        Ok(Message::binary(
            "binary/custom-server-binary-type",
            m.content().to_vec(),
        ))
    })
}

fn request(value: &str) -> Message {
    Message::binary(
        "binary/custom-client-binary-type",
        value.as_bytes().to_vec(),
    )
}

fn client_tls(ca: &Authority) -> Arc<rustls::ClientConfig> {
    client_config(&ClientOptions {
        ca: Some(Pem::memory("ca.pem", ca.cert_pem())),
        ..ClientOptions::default()
    })
    .expect("client config")
}

/// A TLS echo server on loopback presenting `cert`.
fn serve(cert: &Issued) -> (SocketAddr, ShutdownHandle, JoinHandle<std::io::Result<()>>) {
    let tls = server_config(&ServerOptions::new(
        Pem::memory("server.pem", cert.cert_pem.clone()),
        Pem::memory("server-key.pem", cert.key_pem.clone()),
    ))
    .expect("server config");
    let server = Server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        ServerConfig::default(),
    )
    .expect("bind");
    let addr = server.local_addr();
    let stop = server.shutdown_handle();
    let running = tokio::spawn(server.run_tls(Arc::new(AnyPeer(echo())), tls));
    (addr, stop, running)
}

fn config() -> ClientConfig {
    ClientConfig {
        deadline: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    }
}

async fn failure(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    name: &str,
) -> (ClientError, TlsError) {
    let e = Client::connect_tls(addr, &config(), tls, name)
        .await
        .expect_err("verification fails");
    match &e {
        ClientError::Tls { source, .. } => {
            let source = source.clone();
            (e, source)
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_over_tls_are_answered_and_the_server_is_identified() {
    tokio::time::timeout(BOUND, async {
        let ca = Authority::new("test CA", 1).expect("CA");
        let cert = ca
            .issue(&Spec::new(Usage::Server, "localhost", &["localhost"], 1))
            .expect("certificate");
        let (addr, stop, running) = serve(&cert);
        let tls = client_tls(&ca);
        let mut client = Client::connect_tls(addr, &config(), Arc::clone(&tls), "localhost")
            .await
            .expect("handshake");
        assert_eq!(client.peer_identity().map(|p| p.name()), Some("localhost"));
        for word in ["hello", "world"] {
            let answer = client.request(request(word)).await.expect("answer");
            assert_eq!(answer.content(), word.as_bytes());
        }
        // Pipelined: three queued, three answers in order.
        for i in 0..3 {
            client.queue(request(&format!("p{i}"))).expect("queue");
        }
        for i in 0..3 {
            let answer = client.recv().await.expect("answer");
            assert_eq!(answer.content(), format!("p{i}").as_bytes());
        }
        client.close().await.expect("close");

        // The same rustls configuration again: the session is resumed.
        let mut again = Client::connect_tls(addr, &config(), tls, "localhost")
            .await
            .expect("handshake");
        let answer = again.request(request("again")).await.expect("answer");
        assert_eq!(answer.content(), b"again");
        assert_eq!(
            again.tls().and_then(|t| t.handshake_kind()),
            Some(rustls::HandshakeKind::Resumed)
        );
        again.close().await.expect("close");

        stop.shutdown();
        running.await.expect("server task").expect("server");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn an_unknown_ca_a_wrong_name_and_an_expired_certificate_are_each_named() {
    tokio::time::timeout(BOUND, async {
        let ca = Authority::new("test CA", 1).expect("CA");
        let cert = ca
            .issue(&Spec::new(Usage::Server, "localhost", &["localhost"], 1))
            .expect("certificate");
        let (addr, stop, running) = serve(&cert);

        let other = Authority::new("another CA", 1).expect("CA");
        let (e, source) = failure(addr, client_tls(&other), "localhost").await;
        assert_eq!(source, TlsError::UnknownCa);
        assert_eq!(e.kind(), "unknown-ca");
        assert!(e.to_string().contains("unknown CA"), "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");

        let (e, source) = failure(addr, client_tls(&ca), "db.example.invalid").await;
        assert_eq!(
            source,
            TlsError::NameMismatch {
                expected: "db.example.invalid".into()
            }
        );
        assert_eq!(e.kind(), "name-mismatch");

        // The server still serves a good client after those.
        let mut good = Client::connect_tls(addr, &config(), client_tls(&ca), "localhost")
            .await
            .expect("handshake");
        assert_eq!(
            good.request(request("ok")).await.expect("answer").content(),
            b"ok"
        );
        good.close().await.expect("close");
        stop.shutdown();
        running.await.expect("server task").expect("server");

        let mut spec = Spec::new(Usage::Server, "localhost", &["localhost"], 1);
        spec.not_before -= Duration::from_secs(10 * 86_400);
        spec.not_after = spec.not_before + Duration::from_secs(86_400);
        let expired = ca.issue(&spec).expect("certificate");
        let (addr, stop, running) = serve(&expired);
        let (e, source) = failure(addr, client_tls(&ca), "localhost").await;
        assert_eq!(source, TlsError::CertificateExpired);
        assert_eq!(e.kind(), "certificate-expired");
        assert!(e.to_string().contains("expired"), "{e}");
        stop.shutdown();
        running.await.expect("server task").expect("server");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_handshake_with_a_silent_plaintext_server_ends_at_the_exchange_deadline() {
    tokio::time::timeout(BOUND, async {
        let server = Server::bind(
            "127.0.0.1:0".parse().expect("addr"),
            ServerConfig::default(),
        )
        .expect("bind");
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let running = tokio::spawn(server.run(echo()));
        let ca = Authority::new("test CA", 1).expect("CA");
        // The plaintext server takes our ClientHello for the start of a long header and
        // waits for the rest: the handshake is bounded by the one deadline of the exchange.
        let config = ClientConfig {
            deadline: Some(Duration::from_millis(500)),
            ..ClientConfig::default()
        };
        let started = std::time::Instant::now();
        let e = Client::connect_tls(addr, &config, client_tls(&ca), "localhost")
            .await
            .expect_err("no TLS there");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        match &e {
            ClientError::Deadline {
                op: Op::Connect,
                limit,
                ..
            } => assert_eq!(*limit, Duration::from_millis(500)),
            other => panic!("expected the exchange deadline, got {other:?}"),
        }
        assert!(e.to_string().starts_with("timed out connecting to"), "{e}");
        stop.shutdown();
        running.await.expect("server task").expect("server");
    })
    .await
    .expect("bounded");
}

#[test]
fn the_blocking_tls_client_fails_with_this_clients_error_type() {
    // One type for both TLS clients: what handles one's errors handles the other's.
    let same: fn(sockmsg_tls::ClientError) -> ClientError = std::convert::identity;
    let e = same(sockmsg_tls::ClientError::Tls {
        addr: "h:1".into(),
        source: TlsError::UnknownCa,
    });
    assert_eq!(e.kind(), "unknown-ca");
    assert_eq!(
        e.to_string(),
        "TLS with h:1 failed: the peer's certificate is signed by an unknown CA"
    );
}
