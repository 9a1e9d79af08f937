//! TlsSession: TLS in front of the server layer's Session, driven by a thread-per-
//! connection loop as thin as transport-std's (loopback, port 0, bounded): the guide's
//! demo service answering a Python `ssl` client and TlsClient, a PeerService deciding per
//! client under mutual TLS, close-after-answer ending with close_notify, and failures that
//! leave the server serving.

use std::io::{self, BufRead, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_demo::{request, result_line, DemoService};
use sockmsg_protocol::Message;
use sockmsg_server::ServerConfig;
use sockmsg_tls::certs::{Authority, Spec, Usage};
use sockmsg_tls::server::End;
use sockmsg_tls::{
    client_config, server_config, AnyPeer, ClientConfig, ClientError, ClientOptions, PeerIdentity,
    PeerService, Pem, ServerOptions, TlsClient, TlsSession,
};

struct Pki {
    dir: std::path::PathBuf,
    ca: String,
}

impl Pki {
    fn new(label: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "sockmsg-tls-session-{label}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = Authority::new(&format!("session test CA {label}"), 1).expect("CA");
        let server = ca
            .issue(&Spec::new(
                Usage::Server,
                "localhost",
                &["localhost", "127.0.0.1"],
                1,
            ))
            .expect("server");
        let client = ca
            .issue(&Spec::new(
                Usage::Client,
                "alice",
                &["alice.clients.invalid"],
                1,
            ))
            .expect("client");
        for (name, text) in [
            ("ca.pem", ca.cert_pem()),
            ("server.pem", server.cert_pem),
            ("server-key.pem", server.key_pem),
            ("client.pem", client.cert_pem),
            ("client-key.pem", client.key_pem),
        ] {
            std::fs::write(dir.join(name), text).expect("write");
        }
        Pki {
            ca: dir.join("ca.pem").to_string_lossy().into_owned(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn server(&self, mutual: bool) -> Arc<rustls::ServerConfig> {
        let mut options = ServerOptions::new(
            Pem::file(self.path("server.pem")),
            Pem::file(self.path("server-key.pem")),
        );
        if mutual {
            options = options.with_client_ca(Pem::file(&self.ca));
        }
        server_config(&options).expect("server config")
    }

    fn client(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        client_config(&ClientOptions {
            ca: Some(Pem::file(&self.ca)),
            identity: with_cert.then(|| {
                (
                    Pem::file(self.path("client.pem")),
                    Pem::file(self.path("client-key.pem")),
                )
            }),
            ..ClientOptions::default()
        })
        .expect("client config")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One connection's thread: the TLS session's wishes carried out with blocking calls.
fn drive(stream: &TcpStream, mut session: TlsSession) -> String {
    loop {
        let now = Instant::now();
        if session.is_done() {
            break;
        }
        let wait = |at: Option<Instant>| {
            at.map(|at| {
                at.saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            })
        };
        let result = if session.wants_write() {
            stream
                .set_write_timeout(wait(session.poll_timeout()))
                .and_then(|()| session.write_tls(&mut &*stream, now).map(drop))
        } else if session.wants_read() {
            stream
                .set_read_timeout(wait(session.poll_timeout()))
                .and_then(|()| session.read_tls(&mut &*stream, now).map(drop))
        } else {
            if let Some(at) = session.poll_timeout() {
                thread::sleep(at.saturating_duration_since(now));
            }
            session.handle_timeout(Instant::now());
            if !session.is_done() && session.poll_timeout().is_none() && !session.wants_write() {
                break; // nothing can move it any more
            }
            continue;
        };
        match result {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                session.handle_timeout(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => session.abort(sockmsg_server::CloseReason::Io(e)),
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    session
        .end()
        .map_or_else(|| "open".to_owned(), |end: End<'_>| end.to_string())
}

/// Serves `count` connections, one thread each; each connection's end comes out of the
/// receiver.
fn serve(
    tls: Arc<rustls::ServerConfig>,
    service: Arc<dyn PeerService>,
    config: ServerConfig,
    count: usize,
) -> (SocketAddr, Receiver<String>) {
    serve_with(
        tls,
        service,
        config,
        count,
        sockmsg_tls::DEFAULT_HANDSHAKE_TIMEOUT,
    )
}

fn serve_with(
    tls: Arc<rustls::ServerConfig>,
    service: Arc<dyn PeerService>,
    config: ServerConfig,
    count: usize,
    handshake: Duration,
) -> (SocketAddr, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = Arc::new(config.normalized());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..count {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let session =
                TlsSession::accept(tls.clone(), service.clone(), config.clone(), Instant::now())
                    .expect("session")
                    .with_handshake_timeout(Some(handshake));
            let tx = tx.clone();
            thread::spawn(move || {
                let _ = tx.send(drive(&stream, session));
            });
        }
    });
    (addr, rx)
}

fn end(rx: &Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(10)).expect("an end")
}

fn demo() -> Arc<dyn PeerService> {
    Arc::new(AnyPeer(Arc::new(DemoService::new())))
}

/// A [`TlsClient`] with the default [`ClientConfig`], for the server named `localhost`.
fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<TlsClient, sockmsg_tls::ClientError> {
    TlsClient::connect(addr, &ClientConfig::default(), tls, "localhost")
}

#[test]
fn demo_service_over_tls_to_tls_client_keep_alive() {
    let pki = Pki::new("keepalive");
    let (addr, ends) = serve(pki.server(false), demo(), ServerConfig::default(), 1);
    let mut client = connect(addr, pki.client(false)).expect("connect");
    for (value, expected) in [
        ("morpheus", "got result: Follow the white rabbit. \u{1f430}"),
        (
            "ring",
            "got result: In the caves beneath the Misty Mountains. \u{1f48d}",
        ),
    ] {
        let answer = client.request(request("search", value)).expect("answer");
        assert_eq!(result_line(&answer).expect("line"), expected);
    }
    client.close().expect("close");
    // The client's close_notify: the session sees a clean end.
    assert_eq!(
        end(&ends),
        sockmsg_server::CloseReason::PeerClosed.to_string()
    );
}

#[test]
fn peer_service_decides_per_client_under_mutual_tls() {
    let pki = Pki::new("mutual");
    let only_alice = |peer: Option<&PeerIdentity>, _request: Message| {
        let name = peer.map_or("nobody", PeerIdentity::name).to_owned();
        let verdict = if name == "alice.clients.invalid" {
            "welcome"
        } else {
            "denied"
        };
        Message::json(&serde_json::json!({"result": format!("{verdict}, {name}")}))
            .map_err(Into::into)
    };
    let (addr, ends) = serve(
        pki.server(true),
        Arc::new(only_alice),
        ServerConfig::default(),
        2,
    );
    // Without a certificate: refused in the handshake, logged with the reason.
    let refused =
        connect(addr, pki.client(false)).and_then(|mut c| c.request(request("search", "x")));
    assert!(refused.is_err());
    assert_eq!(
        end(&ends),
        "TLS: no client certificate: this server requires one (mutual TLS)"
    );
    let mut client = connect(addr, pki.client(true)).expect("connect");
    let answer = client.request(request("search", "x")).expect("answer");
    assert_eq!(
        result_line(&answer).expect("line"),
        "got result: welcome, alice.clients.invalid"
    );
    client.close().expect("close");
    let _ = end(&ends);
}

#[test]
fn close_after_answer_ends_with_close_notify_and_resumption_pays_off() {
    let pki = Pki::new("oneshot");
    let config = ServerConfig::default().with_close_after_answer(true);
    let (addr, ends) = serve(pki.server(false), demo(), config, 3);
    let client_config = pki.client(false);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let mut client = connect(addr, client_config.clone()).expect("connect");
        let answer = client.request(request("search", "ring")).expect("answer");
        assert!(result_line(&answer)
            .expect("line")
            .contains("Misty Mountains"));
        // The server closed after its answer, with close_notify: a clean end, not a
        // truncation.
        assert!(
            matches!(client.recv(), Err(ClientError::Closed { in_flight: 0, .. })),
            "a clean end"
        );
        kinds.push(client.tls().handshake_kind());
        assert_eq!(
            end(&ends),
            sockmsg_server::CloseReason::Answered.to_string()
        );
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

#[test]
fn plaintext_and_silent_peers_end_with_their_reason() {
    let pki = Pki::new("hostile");
    let (addr, ends) = serve_with(
        pki.server(false),
        demo(),
        ServerConfig::default(),
        3,
        Duration::from_millis(300),
    );
    // A peer that connects and says nothing: the handshake deadline closes it.
    let silent = TcpStream::connect(addr).expect("connect");
    let started = Instant::now();
    assert_eq!(end(&ends), "TLS handshake deadline");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
    // Plaintext sockmsg to the TLS port.
    let mut plain = TcpStream::connect(addr).expect("connect");
    let wire = sockmsg_protocol::encode(&request("search", "ring")).expect("encode");
    io::Write::write_all(&mut plain, &wire).expect("write");
    assert_eq!(
        end(&ends),
        "TLS: the peer sent plaintext, not TLS (a sockmsg message without TLS)"
    );
    drop(plain);
    // A good client right after is served.
    let mut client = connect(addr, pki.client(false)).expect("connect");
    let answer = client.request(request("search", "ring")).expect("answer");
    assert!(result_line(&answer)
        .expect("line")
        .contains("Misty Mountains"));
    client.close().expect("close");
    let _ = end(&ends);
}

#[test]
fn python_ssl_client_gets_the_demo_answers() {
    let pki = Pki::new("python");
    for mutual in [false, true] {
        let (addr, ends) = serve(pki.server(mutual), demo(), ServerConfig::default(), 1);
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace");
        let python = std::env::var("SOCKMSG_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let mut cmd = Command::new(python);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tls_peer.py"))
            .env("SOCKMSG_LIBMSG_DIR", workspace.join("tests/python"))
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .args(["client", "127.0.0.1", &addr.port().to_string()])
            .args(["--cafile", &pki.ca, "--server-name", "localhost"]);
        if mutual {
            cmd.args([
                "--cert",
                &pki.path("client.pem"),
                "--key",
                &pki.path("client-key.pem"),
            ]);
        }
        let out = cmd.args(["search", "morpheus"]).output().expect("python");
        assert!(out.status.success(), "{out:?}");
        let lines: Vec<String> = BufReader::new(&out.stdout[..])
            .lines()
            .map(|l| l.expect("utf-8"))
            .collect();
        assert_eq!(lines, ["got result: Follow the white rabbit. \u{1f430}"]);
        assert_eq!(
            end(&ends),
            sockmsg_server::CloseReason::PeerClosed.to_string()
        );
    }
}
