//! `app-client --tls` against a Python `ssl`-wrapped server written from the guide
//! (tls/tests/python/tls_peer.py, the guide's framing and demo answers): the exact demo
//! answers over TLS, mutual TLS, and each handshake failure's own error line. Loopback,
//! port 0, bounded by the peers' timeouts.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use sockmsg_tests::TempDir;
use sockmsg_tls::certs::{Authority, Issued, Spec, Usage};

/// A test CA and certificates written as `app-certs` writes them.
fn write_certs(dir: &Path, server_days_ago: Option<u64>) {
    // A CA name of its own per directory: two directories are two unrelated CAs.
    let ca = Authority::new(&format!("app-client test CA {}", dir.display()), 1).expect("CA");
    let mut spec = Spec::new(Usage::Server, "localhost", &["localhost", "127.0.0.1"], 1);
    if let Some(days) = server_days_ago {
        let now = sockmsg_tls::certs::OffsetDateTime::now_utc();
        spec.not_before = now - Duration::from_secs((days + 30) * 86_400);
        spec.not_after = now - Duration::from_secs(days * 86_400);
    }
    let server = ca.issue(&spec).expect("server certificate");
    let client = ca
        .issue(&Spec::new(Usage::Client, "client", &[], 1))
        .expect("client certificate");
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write");
    let pair = |prefix: &str, issued: &Issued| {
        write(&format!("{prefix}.pem"), &issued.cert_pem);
        write(&format!("{prefix}-key.pem"), &issued.key_pem);
    };
    write("ca.pem", &ca.cert_pem());
    pair("server", &server);
    pair("client", &client);
}

fn python_peer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tls/tests/python/tls_peer.py")
}

/// The Python ssl server: serves `count` connections, one request each.
struct PyServer {
    child: Child,
    port: u16,
    out: BufReader<ChildStdout>,
}

impl PyServer {
    fn start(certs: &Path, client_ca: bool, count: usize) -> PyServer {
        let mut cmd = Command::new(sockmsg_tests::python());
        cmd.arg(python_peer())
            .arg("server")
            .arg("--cert")
            .arg(certs.join("server.pem"))
            .arg("--key")
            .arg(certs.join("server-key.pem"))
            .args(["--count", &count.to_string(), "--timeout", "10"])
            .env("SOCKMSG_LIBMSG_DIR", sockmsg_tests::python_dir())
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if client_ca {
            cmd.arg("--client-ca").arg(certs.join("ca.pem"));
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
        PyServer { child, port, out }
    }

    /// Everything the server printed after its first line, once it exited.
    fn finish(mut self) -> String {
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).expect("output");
        assert!(self.child.wait().expect("exit").success());
        rest
    }
}

fn client(port: u16, args: &[&str], certs: &Path) -> Output {
    let path = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-client"));
    cmd.arg("127.0.0.1")
        .arg(port.to_string())
        .args(["--timeout", "10", "--tls", "--ca", &path("ca.pem")])
        .env("RUST_LOG", "warn");
    for arg in args {
        cmd.arg(arg.replace("CERTS/", &format!("{}/", certs.display())));
    }
    cmd.output().expect("app-client")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn demo_answers_over_tls_from_a_python_ssl_server() {
    let dir = TempDir::new("tls-client");
    write_certs(dir.path(), None);
    let server = PyServer::start(dir.path(), false, 2);
    let json = client(
        server.port,
        &["--server-name", "localhost", "search", "morpheus"],
        dir.path(),
    );
    assert!(json.status.success(), "{json:?}");
    assert_eq!(
        stdout(&json),
        "got result: Follow the white rabbit. \u{1f430}\n"
    );
    // The certificate also names 127.0.0.1: no --server-name needed.
    let binary = client(server.port, &["binary", "request"], dir.path());
    assert!(binary.status.success(), "{binary:?}");
    assert_eq!(
        stdout(&binary),
        "got response: b'First 10 bytes of request: binaryrequ'\n"
    );
    assert_eq!(server.finish(), "answered\nanswered\n");
}

#[test]
fn mutual_tls_with_a_python_ssl_server() {
    let dir = TempDir::new("tls-client");
    write_certs(dir.path(), None);
    let server = PyServer::start(dir.path(), true, 2);
    let refused = client(server.port, &["search", "ring"], dir.path());
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let line = stderr(&refused);
    assert!(
        line.starts_with(&format!(
            "app-client: TLS handshake with 127.0.0.1:{} failed: ",
            server.port
        )),
        "{line}"
    );
    assert!(line.contains("requires a client certificate"), "{line}");
    let accepted = client(
        server.port,
        &[
            "--cert",
            "CERTS/client.pem",
            "--key",
            "CERTS/client-key.pem",
            "search",
            "ring",
        ],
        dir.path(),
    );
    assert!(accepted.status.success(), "{accepted:?}");
    assert_eq!(
        stdout(&accepted),
        "got result: In the caves beneath the Misty Mountains. \u{1f48d}\n"
    );
    let printed = server.finish();
    assert!(printed.starts_with("handshake failed: "), "{printed}");
    assert!(printed.ends_with("peer: client\nanswered\n"), "{printed}");
}

#[test]
fn each_handshake_failure_has_its_own_line() {
    let dir = TempDir::new("tls-client");
    write_certs(dir.path(), None);
    let other = TempDir::new("tls-client-other");
    write_certs(other.path(), None);
    let expired = TempDir::new("tls-client-expired");
    write_certs(expired.path(), Some(2));

    let server = PyServer::start(dir.path(), false, 2);
    let wrong_ca = client(server.port, &["search", "ring"], other.path());
    assert_eq!(wrong_ca.status.code(), Some(1));
    assert!(
        stderr(&wrong_ca).ends_with("unknown CA\n"),
        "{}",
        stderr(&wrong_ca)
    );
    let wrong_name = client(
        server.port,
        &["--server-name", "db.example.invalid", "search", "ring"],
        dir.path(),
    );
    assert_eq!(wrong_name.status.code(), Some(1));
    assert!(
        stderr(&wrong_name).contains("\"db.example.invalid\" (name mismatch)"),
        "{}",
        stderr(&wrong_name)
    );
    let _ = server.finish();

    let server = PyServer::start(expired.path(), false, 1);
    let out = client(server.port, &["search", "ring"], expired.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with("the peer's certificate has expired\n"),
        "{}",
        stderr(&out)
    );
    let _ = server.finish();

    // TLS to a plaintext port that reads the ClientHello and closes.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let plain = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let _ = s.read(&mut [0u8; 4096]);
    });
    let out = client(port, &["search", "ring"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with("the peer closed the connection during the TLS handshake\n"),
        "{}",
        stderr(&out)
    );
    plain.join().expect("plain server");

    // TLS to a plaintext server that answers in plaintext (an HTTP server, say).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_port = listener.local_addr().expect("addr").port();
    let http = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let _ = s.read(&mut [0u8; 4096]);
        let _ = std::io::Write::write_all(&mut s, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let out = client(http_port, &["search", "ring"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "app-client: TLS handshake with 127.0.0.1:{http_port} failed: the peer sent \
             plaintext, not TLS (first bytes "
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    http.join().expect("http server");

    // A server that accepts and never answers the handshake: the deadline's line, as
    // without TLS.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = listener.local_addr().expect("addr").port();
    let out = Command::new(env!("CARGO_BIN_EXE_app-client"))
        .args(["127.0.0.1", &silent_port.to_string(), "search", "ring"])
        .args(["--timeout", "0.5", "--tls", "--ca"])
        .arg(dir.path().join("ca.pem"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("app-client");
    drop(listener);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "app-client: cannot connect to 127.0.0.1:{silent_port}: timed out: the whole \
             exchange had 500ms (--timeout)\n"
        )
    );

    // A missing CA file: the line names it.
    let out = Command::new(env!("CARGO_BIN_EXE_app-client"))
        .args(["127.0.0.1", &port.to_string(), "search", "ring", "--tls"])
        .args(["--ca", "/nonexistent/ca.pem"])
        .output()
        .expect("app-client");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("app-client: cannot load the TLS settings: /nonexistent/ca.pem: "),
        "{}",
        stderr(&out)
    );
}

/// The transports `app-server --transport` takes.
const TRANSPORTS: [&str; 3] = ["mio", "std", "tokio"];

/// `app-server --tls-*` on `transport`, port 0; stopped (killed) when dropped.
struct AppServer {
    child: Child,
    port: u16,
}

impl AppServer {
    fn start(certs: &Path, client_ca: bool, transport: &str) -> AppServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-server"));
        cmd.args(["127.0.0.1", "0", "--transport", transport])
            .arg("--tls-cert")
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(certs.join("server-key.pem"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if client_ca {
            cmd.arg("--tls-client-ca").arg(certs.join("ca.pem"));
        }
        let mut child = cmd.spawn().expect("app-server");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("listening line");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        AppServer { child, port }
    }

    /// Waits (at most 20 s) until it has logged a line containing `until`, then stops it
    /// and returns what it logged (warnings and errors). Waiting matters: the client may
    /// learn of its failure (the server's alert) before the server's line is written.
    fn log(mut self, until: &str) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(err) = self.child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut log = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(until);
                    log.push_str(&line);
                    log.push('\n');
                    if found {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What else it wrote before it stopped (the reader ends at end of file).
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
            log.push_str(&line);
            log.push('\n');
        }
        log
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_client(port: u16, certs: &Path, with_cert: bool, value: &str) -> Output {
    let mut cmd = Command::new(sockmsg_tests::python());
    cmd.arg(python_peer())
        .args(["client", "127.0.0.1", &port.to_string(), "search", value])
        .arg("--cafile")
        .arg(certs.join("ca.pem"))
        .args(["--server-name", "localhost"])
        .env("SOCKMSG_LIBMSG_DIR", sockmsg_tests::python_dir())
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    if with_cert {
        cmd.arg("--cert")
            .arg(certs.join("client.pem"))
            .arg("--key")
            .arg(certs.join("client-key.pem"));
    }
    cmd.output().expect("python client")
}

#[test]
fn app_server_over_tls_answers_python_ssl_and_app_client() {
    let dir = TempDir::new("tls-server");
    write_certs(dir.path(), None);
    let mut plaintext_lines = Vec::new();
    for transport in TRANSPORTS {
        plaintext_lines.push(over_tls_on(transport, dir.path()));
    }
    // The same line on every transport (the composition is one, and so is its log).
    assert!(
        plaintext_lines.iter().all(|l| *l == plaintext_lines[0]),
        "{plaintext_lines:#?}"
    );
}

/// Python's `ssl` and `app-client --tls` against `app-server --tls-*` on `transport`, and a
/// plaintext client; returns the server's line about that client, without its address.
fn over_tls_on(transport: &str, certs: &Path) -> String {
    let dir = certs;
    let server = AppServer::start(dir, false, transport);
    let py = python_client(server.port, dir, false, "morpheus");
    assert!(py.status.success(), "{transport}: {py:?}");
    assert_eq!(
        stdout(&py),
        "got result: Follow the white rabbit. \u{1f430}\n"
    );
    let rust = client(server.port, &["search", "ring"], dir);
    assert!(rust.status.success(), "{transport}: {rust:?}");
    assert_eq!(
        stdout(&rust),
        "got result: In the caves beneath the Misty Mountains. \u{1f48d}\n"
    );
    // A plaintext client on the TLS port learns it is talking to TLS.
    let plain = Command::new(env!("CARGO_BIN_EXE_app-client"))
        .args(["127.0.0.1", &server.port.to_string(), "search", "ring"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("app-client");
    assert_eq!(plain.status.code(), Some(1), "{transport}");
    assert!(
        stderr(&plain).contains("TLS"),
        "{transport}: {}",
        stderr(&plain)
    );
    // The server closed it with one line naming the reason.
    let log = server.log("closing connection to");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("closing connection to"))
        .collect();
    assert_eq!(lines.len(), 1, "{transport}: {log}");
    let line = lines[0];
    assert!(
        line.contains("WARN") && line.contains("TLS") && line.contains("plaintext"),
        "{transport}: {line}"
    );
    // Without the time stamp and the client's address.
    let reason = line.split_once(" (").map_or(line, |(_, r)| r);
    reason.to_owned()
}

#[test]
fn app_server_mutual_tls_both_ways() {
    let dir = TempDir::new("tls-server-mutual");
    write_certs(dir.path(), None);
    let server = AppServer::start(dir.path(), true, "std");
    let py_refused = python_client(server.port, dir.path(), false, "ring");
    assert_eq!(py_refused.status.code(), Some(1), "{py_refused:?}");
    let py = python_client(server.port, dir.path(), true, "ring");
    assert!(py.status.success(), "{py:?}");
    assert_eq!(
        stdout(&py),
        "got result: In the caves beneath the Misty Mountains. \u{1f48d}\n"
    );
    let refused = client(server.port, &["search", "ring"], dir.path());
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("requires a client certificate"),
        "{}",
        stderr(&refused)
    );
    let accepted = client(
        server.port,
        &[
            "--cert",
            "CERTS/client.pem",
            "--key",
            "CERTS/client-key.pem",
            "search",
            "morpheus",
        ],
        dir.path(),
    );
    assert!(accepted.status.success(), "{accepted:?}");
    assert_eq!(
        stdout(&accepted),
        "got result: Follow the white rabbit. \u{1f430}\n"
    );
    // Mutual TLS on the other transports too.
    for transport in ["mio", "tokio"] {
        let server = AppServer::start(dir.path(), true, transport);
        let py = python_client(server.port, dir.path(), true, "ring");
        assert!(py.status.success(), "{transport}: {py:?}");
        let refused = python_client(server.port, dir.path(), false, "ring");
        assert_eq!(refused.status.code(), Some(1), "{transport}: {refused:?}");
        let log = server.log("closing connection to");
        assert!(
            log.contains("closing connection to") && log.contains("certificate"),
            "{transport}: {log}"
        );
    }
}

#[test]
fn tls_version_chooses_what_app_client_offers() {
    let dir = TempDir::new("tls-version");
    write_certs(dir.path(), None);
    let server = AppServer::start(dir.path(), false, "mio");
    let ca = dir.path().join("ca.pem");
    for (version, expected) in [
        (Some("1.2"), "TLS 1.2 with 127.0.0.1:"),
        (Some("1.3"), "TLS 1.3 with 127.0.0.1:"),
        (None, "TLS 1.3 with 127.0.0.1:"),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-client"));
        cmd.args(["127.0.0.1", &server.port.to_string(), "search", "ring"])
            .args(["--timeout", "10", "--tls", "--ca"])
            .arg(&ca)
            .env("RUST_LOG", "info");
        if let Some(version) = version {
            cmd.args(["--tls-version", version]);
        }
        let out = cmd.output().expect("app-client");
        assert!(out.status.success(), "{version:?}: {out:?}");
        assert_eq!(
            stdout(&out),
            "got result: In the caves beneath the Misty Mountains. \u{1f48d}\n"
        );
        let log = stderr(&out);
        assert!(
            log.lines()
                .any(|l| l.contains(expected) && l.ends_with("full handshake")),
            "{version:?}: {log}"
        );
    }
    for bad in [
        &["--tls", "--tls-version", "1.1"][..],
        &["--tls", "--tls-version", "tls1.3"],
        &["--tls-version", "1.2"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_app-client"))
            .args(["127.0.0.1", &server.port.to_string(), "search", "ring"])
            .args(bad)
            .output()
            .expect("app-client");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(stderr(&out).contains("--tls-version"), "{bad:?}: {out:?}");
    }
}
