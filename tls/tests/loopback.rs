//! Over real sockets (loopback only, port 0, bounded): the certificates `app-certs` writes,
//! the blocking [`TlsClient`], a small blocking server over [`TlsConnection`], and interop
//! with Python's `ssl` module both ways, mutual TLS included.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use sockmsg_protocol::{Connection, Event, Message};
use sockmsg_tls::{
    client_config, server_config, ClientConfig, ClientError, ClientOptions, Pem, ServerOptions,
    TlsClient, TlsConnection, TlsError,
};

/// A fresh directory with the files `app-certs` writes.
struct Certs(PathBuf);

impl Certs {
    fn new() -> Certs {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sockmsg-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_app-certs"))
            .arg(&dir)
            .output()
            .expect("run app-certs");
        assert!(out.status.success(), "app-certs: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("--tls-cert"), "{stdout}");
        // A second run refuses to overwrite the keys.
        let again = Command::new(env!("CARGO_BIN_EXE_app-certs"))
            .arg(&dir)
            .output()
            .expect("run app-certs");
        assert_eq!(again.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert!(stderr.starts_with("app-certs: cannot write "), "{stderr}");
        assert!(stderr.contains("already exists"), "{stderr}");
        Certs(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn pem(&self, name: &str) -> Pem {
        Pem::file(self.path(name))
    }

    fn server(&self, mutual: bool) -> Arc<rustls::ServerConfig> {
        let mut options = ServerOptions::new(self.pem("server.pem"), self.pem("server-key.pem"));
        if mutual {
            options = options.with_client_ca(self.pem("ca.pem"));
        }
        server_config(&options).expect("server config")
    }

    fn client(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        client_config(&ClientOptions {
            ca: Some(self.pem("ca.pem")),
            identity: with_cert.then(|| (self.pem("client.pem"), self.pem("client-key.pem"))),
            ..ClientOptions::default()
        })
        .expect("client config")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How one connection to the test server ended: the client's identity, or the error.
type Outcome = Result<Option<String>, TlsError>;

/// A blocking server over `TlsConnection`, one thread per connection, serving `count`
/// connections. It answers `{"action": "search", "value": V}` with
/// `{"result": "V for PEER"}` (PEER: the client certificate's name, or `anonymous`).
struct TestServer {
    addr: SocketAddr,
    outcomes: Receiver<Outcome>,
    thread: JoinHandle<()>,
}

impl TestServer {
    fn start(config: Arc<rustls::ServerConfig>, count: usize) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, outcomes) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut workers = Vec::new();
            for _ in 0..count {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let (config, tx) = (config.clone(), tx.clone());
                workers.push(thread::spawn(move || serve(stream, config, tx)));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        TestServer {
            addr,
            outcomes,
            thread,
        }
    }

    fn outcome(&self) -> Outcome {
        self.outcomes
            .recv_timeout(Duration::from_secs(10))
            .expect("an outcome")
    }

    fn join(self) {
        self.thread.join().expect("server thread");
    }
}

fn answer(tls: &TlsConnection, request: &Message) -> Message {
    let peer = tls
        .peer_identity()
        .map_or("anonymous".to_owned(), |p| p.name().to_owned());
    let value = request
        .json_content::<serde_json::Value>()
        .ok()
        .and_then(|v| v["value"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Message::json(&serde_json::json!({"result": format!("{value} for {peer}")})).expect("json")
}

fn serve(mut stream: TcpStream, config: Arc<rustls::ServerConfig>, tx: Sender<Outcome>) {
    let start = Instant::now();
    let mut tls = TlsConnection::server(config, Connection::server(), start)
        .expect("server")
        .with_handshake_timeout(Some(Duration::from_secs(3)));
    let outcome = loop {
        let now = Instant::now();
        let mut failed = None;
        loop {
            match tls.next_event() {
                Ok(Event::Message(m)) => {
                    let a = answer(&tls, &m);
                    tls.send(a, now).expect("send");
                }
                Ok(Event::End) => {
                    tls.close();
                    break;
                }
                Ok(Event::NeedData) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        while tls.wants_write() {
            if tls.write_tls(&mut stream, now).is_err() {
                break;
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if !tls.wants_read() {
            break Ok(tls.peer_identity().map(|p| p.name().to_owned()));
        }
        let wait = tls.poll_timeout().map_or(Duration::from_secs(5), |at| {
            at.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        });
        let _ = stream.set_read_timeout(Some(wait));
        match tls.read_tls(&mut stream, Instant::now()) {
            Ok(_) => {}
            Err(_) => {
                if tls.handle_timeout(Instant::now()).is_some() || tls.poll_timeout().is_none() {
                    break match tls.error() {
                        Some(e) => Err(e.clone()),
                        None => Ok(None),
                    };
                }
            }
        }
    };
    let _ = tx.send(outcome);
}

fn search(value: &str) -> Message {
    Message::json(&serde_json::json!({"action": "search", "value": value})).expect("json")
}

fn result(answer: &Message) -> String {
    answer.json_content::<serde_json::Value>().expect("json")["result"]
        .as_str()
        .expect("result")
        .to_owned()
}

/// A [`TlsClient`] with the default [`ClientConfig`], for the server named `localhost`.
fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<TlsClient, sockmsg_tls::ClientError> {
    TlsClient::connect(addr, &ClientConfig::default(), tls, "localhost")
}

#[test]
fn app_certs_files_request_and_resumption() {
    let certs = Certs::new();
    let server = TestServer::start(certs.server(false), 2);
    let config = certs.client(false);
    let mut kinds = Vec::new();
    for value in ["ring", "morpheus"] {
        let mut client = connect(server.addr, config.clone()).expect("connect");
        let identity = client.peer_identity().expect("server identity").clone();
        assert_eq!(identity.dns_names, ["localhost"]);
        let a = client.request(search(value)).expect("answer");
        assert_eq!(result(&a), format!("{value} for anonymous"));
        kinds.push(client.tls().handshake_kind());
        client.close().expect("close");
        assert_eq!(server.outcome(), Ok(None));
    }
    assert_eq!(
        kinds,
        [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]
    );
    server.join();
}

#[test]
fn mutual_tls_failures_do_not_disturb_the_next_client() {
    let certs = Certs::new();
    let server = TestServer::start(certs.server(true), 3);

    // 1. No client certificate: the server names the reason, the client hears why.
    let refused =
        connect(server.addr, certs.client(false)).and_then(|mut c| c.request(search("x")));
    let e = refused.expect_err("refused");
    assert!(
        e.to_string().contains("requires a client certificate"),
        "{e}"
    );
    assert!(
        matches!(e.tls_error(), Some(TlsError::AlertReceived { alert }) if alert == "certificate_required"),
        "{e:?}"
    );
    assert_eq!(server.outcome(), Err(TlsError::NoClientCertificate));

    // 2. Plaintext sockmsg to the TLS port.
    let mut plain = TcpStream::connect(server.addr).expect("connect");
    let mut conn = Connection::client();
    conn.send(search("x"), Instant::now()).expect("send");
    conn.write_to(&mut plain, Instant::now()).expect("write");
    let outcome = server.outcome();
    assert!(
        matches!(outcome, Err(TlsError::NotTls { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        outcome.expect_err("error").to_string(),
        "the peer sent plaintext, not TLS (a sockmsg message without TLS)"
    );
    drop(plain);

    // 3. A client with its certificate: served, and the server knows who it is.
    let mut client = connect(server.addr, certs.client(true)).expect("connect");
    let a = client.request(search("ring")).expect("answer");
    assert_eq!(result(&a), "ring for client");
    client.close().expect("close");
    assert_eq!(server.outcome(), Ok(Some("client".to_owned())));
    server.join();
}

#[test]
fn wrong_name_and_unknown_ca_over_loopback() {
    let certs = Certs::new();
    let other = Certs::new();
    let server = TestServer::start(certs.server(false), 3);
    let e = TlsClient::connect(
        server.addr,
        &ClientConfig::default(),
        certs.client(false),
        "db.example.invalid",
    )
    .expect_err("name mismatch");
    assert_eq!(e.kind(), "name-mismatch");
    assert!(
        matches!(
            e,
            ClientError::Tls {
                source: TlsError::NameMismatch { .. },
                ..
            }
        ),
        "{e}"
    );
    let e = connect(server.addr, other.client(false)).expect_err("unknown CA");
    assert!(
        matches!(
            e,
            ClientError::Tls {
                source: TlsError::UnknownCa,
                ..
            }
        ),
        "{e}"
    );
    // A CA of the same name but another key (made outside app-certs): a bad signature.
    let same_name = sockmsg_tls::certs::Authority::new("sockmsg test CA", 1).expect("CA");
    let e = TlsClient::connect(
        server.addr,
        &ClientConfig::default(),
        client_config(&ClientOptions {
            ca: Some(Pem::memory("same-name-ca.pem", same_name.cert_pem())),
            ..ClientOptions::default()
        })
        .expect("config"),
        "localhost",
    )
    .map(|_| ())
    .expect_err("the server's CA has another name");
    assert!(
        matches!(
            e,
            ClientError::Tls {
                source: TlsError::UnknownCa,
                ..
            }
        ),
        "{e}"
    );
    for _ in 0..3 {
        let outcome = server.outcome();
        assert!(
            matches!(&outcome, Err(TlsError::AlertReceived { .. })),
            "{outcome:?}"
        );
    }
    server.join();
}

#[test]
fn tls_to_a_plaintext_port() {
    let certs = Certs::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A plaintext server that reads the ClientHello as a header length it waits for, then
    // gives up and closes; and one that never answers at all.
    let server = thread::spawn(move || {
        let (mut first, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        let _ = first.read(&mut buf);
        drop(first);
        let (silent, _) = listener.accept().expect("accept");
        thread::sleep(Duration::from_millis(600));
        drop(silent);
    });
    let e = connect(addr, certs.client(false)).expect_err("closed");
    assert!(
        matches!(
            e,
            ClientError::Tls {
                source: TlsError::ClosedDuringHandshake,
                ..
            }
        ),
        "{e}"
    );
    // The handshake is part of connecting: the exchange deadline bounds it, and the error
    // is the one every client gives for it.
    let config = ClientConfig {
        deadline: Some(Duration::from_millis(200)),
        ..ClientConfig::default()
    };
    let e =
        TlsClient::connect(addr, &config, certs.client(false), "localhost").expect_err("silent");
    assert!(
        matches!(
            e,
            ClientError::Deadline {
                op: sockmsg_tls::client::Op::Connect,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), "deadline");
    assert_eq!(
        e.to_string(),
        format!("timed out connecting to {addr}: the whole exchange had 200ms")
    );
    server.join().expect("server");
}

#[test]
fn tls_to_a_plaintext_server_that_answers_names_it() {
    let certs = Certs::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A plaintext server that answers whatever it gets with plaintext (an HTTP server).
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let _ = s.read(&mut [0u8; 4096]);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let e = connect(addr, certs.client(false)).expect_err("plaintext");
    assert!(
        matches!(e.tls_error(), Some(TlsError::NotTls { .. })),
        "{e:?}"
    );
    assert_eq!(e.kind(), "not-tls");
    assert!(
        e.to_string().starts_with(&format!(
            "TLS with {addr} failed: the peer sent plaintext, not TLS (first bytes "
        )),
        "{e}"
    );
    server.join().expect("server");
}

#[test]
fn an_expired_server_certificate_is_named() {
    let ca = sockmsg_tls::certs::Authority::new("expiry CA", 1).expect("CA");
    let mut spec = sockmsg_tls::certs::Spec::new(
        sockmsg_tls::certs::Usage::Server,
        "localhost",
        &["localhost"],
        1,
    );
    let now = sockmsg_tls::certs::OffsetDateTime::now_utc();
    spec.not_before = now - Duration::from_secs(30 * 86_400);
    spec.not_after = now - Duration::from_secs(86_400);
    let cert = ca.issue(&spec).expect("certificate");
    let server = TestServer::start(
        server_config(&ServerOptions::new(
            Pem::memory("server.pem", cert.cert_pem),
            Pem::memory("server-key.pem", cert.key_pem),
        ))
        .expect("server config"),
        1,
    );
    let tls = client_config(&ClientOptions {
        ca: Some(Pem::memory("ca.pem", ca.cert_pem())),
        ..ClientOptions::default()
    })
    .expect("client config");
    let e = connect(server.addr, tls).map(|_| ()).expect_err("expired");
    assert!(
        matches!(e.tls_error(), Some(TlsError::CertificateExpired)),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "TLS with {} failed: the peer's certificate has expired",
            server.addr
        )
    );
    let outcome = server.outcome();
    assert!(
        matches!(&outcome, Err(TlsError::AlertReceived { .. })),
        "{outcome:?}"
    );
    server.join();
}

// ---- interop with Python's ssl module ----

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
}

fn python() -> Command {
    let python = std::env::var("SOCKMSG_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tls_peer.py"))
        .env("SOCKMSG_LIBMSG_DIR", workspace().join("tests/python"))
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn python_ssl_client_against_the_rust_server() {
    let certs = Certs::new();
    for mutual in [false, true] {
        let server = TestServer::start(certs.server(mutual), 1);
        let mut cmd = python();
        cmd.args(["client", "127.0.0.1"])
            .arg(server.addr.port().to_string())
            .arg("--cafile")
            .arg(certs.path("ca.pem"))
            .args(["--server-name", "localhost"]);
        if mutual {
            cmd.arg("--cert")
                .arg(certs.path("client.pem"))
                .arg("--key")
                .arg(certs.path("client-key.pem"));
        }
        let out = cmd.args(["search", "ring"]).output().expect("python");
        assert!(out.status.success(), "{out:?}");
        let peer = if mutual { "client" } else { "anonymous" };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("got result: ring for {peer}\n")
        );
        // Python closes without close_notify, between messages: a clean end.
        assert_eq!(server.outcome(), Ok(mutual.then(|| "client".to_owned())));
        server.join();
    }
}

#[test]
fn python_ssl_client_refused_without_certificate() {
    let certs = Certs::new();
    let server = TestServer::start(certs.server(true), 1);
    let out = python()
        .args(["client", "127.0.0.1"])
        .arg(server.addr.port().to_string())
        .arg("--cafile")
        .arg(certs.path("ca.pem"))
        .args(["--server-name", "localhost", "search", "ring"])
        .output()
        .expect("python");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(server.outcome(), Err(TlsError::NoClientCertificate));
    server.join();
}

/// Starts the Python ssl server; returns it and its port.
fn python_server(
    certs: &Certs,
    client_ca: bool,
    count: usize,
) -> (
    std::process::Child,
    u16,
    BufReader<std::process::ChildStdout>,
) {
    let mut cmd = python();
    cmd.arg("server")
        .arg("--cert")
        .arg(certs.path("server.pem"))
        .arg("--key")
        .arg(certs.path("server-key.pem"))
        .args(["--count", &count.to_string(), "--timeout", "10"])
        .stdout(Stdio::piped());
    if client_ca {
        cmd.arg("--client-ca").arg(certs.path("ca.pem"));
    }
    let mut child = cmd.spawn().expect("python server");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("listening line");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, port, out)
}

#[test]
fn rust_client_against_a_python_ssl_server() {
    let certs = Certs::new();
    let (mut child, port, mut out) = python_server(&certs, false, 2);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The guide's demo answers, over TLS.
    let mut client = connect(addr, certs.client(false)).expect("connect");
    let a = client.request(search("morpheus")).expect("answer");
    assert_eq!(
        a.content(),
        "{\"result\": \"Follow the white rabbit. \u{1f430}\"}".as_bytes()
    );
    client.close().expect("close");
    let mut client = connect(addr, certs.client(false)).expect("connect");
    let a = client
        .request(Message::binary(
            "binary/custom-client-binary-type",
            b"binary request".to_vec(),
        ))
        .expect("answer");
    assert_eq!(a.content(), b"First 10 bytes of request: binary req");
    client.close().expect("close");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("output");
    assert_eq!(rest, "answered\nanswered\n");
    assert!(child.wait().expect("exit").success());
}

#[test]
fn mutual_tls_with_a_python_ssl_server() {
    let certs = Certs::new();
    let (mut child, port, mut out) = python_server(&certs, true, 2);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Without a certificate: refused, with the reason.
    let e = connect(addr, certs.client(false))
        .and_then(|mut c| c.request(search("ring")))
        .expect_err("refused");
    assert!(
        matches!(
            e,
            ClientError::Tls {
                source: TlsError::AlertReceived { .. },
                ..
            }
        ),
        "{e}"
    );
    // With one: served, and the Python server saw who we are.
    let mut client = connect(addr, certs.client(true)).expect("connect");
    let a = client.request(search("ring")).expect("answer");
    assert_eq!(
        a.content(),
        "{\"result\": \"In the caves beneath the Misty Mountains. \u{1f48d}\"}".as_bytes()
    );
    client.close().expect("close");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("output");
    assert!(rest.starts_with("handshake failed: "), "{rest}");
    assert!(rest.ends_with("peer: client\nanswered\n"), "{rest}");
    assert!(child.wait().expect("exit").success());
    let _ = std::io::stdout().flush();
}
