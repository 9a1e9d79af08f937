//! `app-client --tls` against a Python `ssl`-wrapped server written from the guide
//! (tls/tests/python/tls_peer.py, the guide's framing and demo answers): the exact demo
//! answers over TLS, mutual TLS, and each handshake failure's own error line. Loopback,
//! port 0, bounded by the peers' timeouts.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use sockmsg_tests::{ChildGuard, TempDir};
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

/// `python3 tls_peer.py` (the TLS peer of tls/tests/python) with UTF-8 output, the guide's
/// `libmsg` on its path and no standard input; its arguments follow.
fn python_peer() -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tls/tests/python/tls_peer.py");
    let mut cmd = Command::new(sockmsg_tests::python());
    cmd.arg(script)
        .env("SOCKMSG_LIBMSG_DIR", sockmsg_tests::python_dir())
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    cmd
}

/// The Python ssl server: serves `count` connections, one request each.
struct PyServer {
    child: Child,
    port: u16,
    out: BufReader<ChildStdout>,
}

impl PyServer {
    fn start(certs: &Path, client_ca: bool, count: usize) -> PyServer {
        let mut cmd = python_peer();
        cmd.arg("server")
            .arg("--cert")
            .arg(certs.join("server.pem"))
            .arg("--key")
            .arg(certs.join("server-key.pem"))
            .args(["--count", &count.to_string(), "--timeout", "10"])
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

/// `app-client` presenting the client certificate that `write_certs` wrote.
fn client_with_cert(port: u16, args: &[&str], certs: &Path) -> Output {
    let mut all = vec![
        "--cert",
        "CERTS/client.pem",
        "--key",
        "CERTS/client-key.pem",
    ];
    all.extend_from_slice(args);
    client(port, &all, certs)
}

/// Asserts that a run succeeded and printed `line`, and nothing else, on stdout.
fn assert_printed(out: &Output, line: &str) {
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(out), format!("{line}\n"));
}

/// Asserts that a run failed with exit status 1; returns what it wrote on stderr.
fn assert_failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    stderr(out)
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
    assert_printed(&json, "got result: Follow the white rabbit. \u{1f430}");
    // The certificate also names 127.0.0.1: no --server-name needed.
    let binary = client(server.port, &["binary", "request"], dir.path());
    assert_printed(
        &binary,
        "got response: b'First 10 bytes of request: binaryrequ'",
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
    let accepted = client_with_cert(server.port, &["search", "ring"], dir.path());
    assert_printed(
        &accepted,
        "got result: In the caves beneath the Misty Mountains. \u{1f48d}",
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
    let err = assert_failed(&wrong_ca);
    assert!(err.ends_with("unknown CA\n"), "{err}");
    let wrong_name = client(
        server.port,
        &["--server-name", "db.example.invalid", "search", "ring"],
        dir.path(),
    );
    let err = assert_failed(&wrong_name);
    assert!(
        err.contains("\"db.example.invalid\" (name mismatch)"),
        "{err}"
    );
    let _ = server.finish();

    let server = PyServer::start(expired.path(), false, 1);
    let out = client(server.port, &["search", "ring"], expired.path());
    let err = assert_failed(&out);
    assert!(
        err.ends_with("the peer's certificate has expired\n"),
        "{err}"
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
    let err = assert_failed(&out);
    assert!(
        err.ends_with("the peer closed the connection during the TLS handshake\n"),
        "{err}"
    );
    plain.join().expect("plain server");

    // A missing CA file: the line names it.
    let out = Command::new(env!("CARGO_BIN_EXE_app-client"))
        .args(["127.0.0.1", &port.to_string(), "search", "ring", "--tls"])
        .args(["--ca", "/nonexistent/ca.pem"])
        .output()
        .expect("app-client");
    let err = assert_failed(&out);
    assert!(
        err.starts_with("app-client: cannot load the TLS settings: /nonexistent/ca.pem: "),
        "{err}"
    );
}

/// `app-server --tls-*` on the std transport, port 0; stopped (killed) when dropped.
struct AppServer {
    _child: ChildGuard,
    port: u16,
}

impl AppServer {
    fn start(certs: &Path, client_ca: bool) -> AppServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-server"));
        cmd.args(["127.0.0.1", "0", "--transport", "std"])
            .arg("--tls-cert")
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(certs.join("server-key.pem"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        if client_ca {
            cmd.arg("--tls-client-ca").arg(certs.join("ca.pem"));
        }
        let mut child = ChildGuard::spawn("app-server", &mut cmd);
        let port = child.listening_addr(Duration::from_secs(30)).port();
        AppServer {
            _child: child,
            port,
        }
    }
}

fn python_client(port: u16, certs: &Path, with_cert: bool, value: &str) -> Output {
    let mut cmd = python_peer();
    cmd.args(["client", "127.0.0.1", &port.to_string(), "search", value])
        .arg("--cafile")
        .arg(certs.join("ca.pem"))
        .args(["--server-name", "localhost"]);
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
    let server = AppServer::start(dir.path(), false);
    let py = python_client(server.port, dir.path(), false, "morpheus");
    assert_printed(&py, "got result: Follow the white rabbit. \u{1f430}");
    let rust = client(server.port, &["search", "ring"], dir.path());
    assert_printed(
        &rust,
        "got result: In the caves beneath the Misty Mountains. \u{1f48d}",
    );
    // A plaintext client on the TLS port learns it is talking to TLS.
    let plain = Command::new(env!("CARGO_BIN_EXE_app-client"))
        .args(["127.0.0.1", &server.port.to_string(), "search", "ring"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("app-client");
    assert_eq!(plain.status.code(), Some(1));
    assert!(stderr(&plain).contains("TLS"), "{}", stderr(&plain));
}

#[test]
fn app_server_mutual_tls_both_ways() {
    let dir = TempDir::new("tls-server-mutual");
    write_certs(dir.path(), None);
    let server = AppServer::start(dir.path(), true);
    let py_refused = python_client(server.port, dir.path(), false, "ring");
    assert_eq!(py_refused.status.code(), Some(1), "{py_refused:?}");
    let py = python_client(server.port, dir.path(), true, "ring");
    assert_printed(
        &py,
        "got result: In the caves beneath the Misty Mountains. \u{1f48d}",
    );
    let refused = client(server.port, &["search", "ring"], dir.path());
    let err = assert_failed(&refused);
    assert!(err.contains("requires a client certificate"), "{err}");
    let accepted = client_with_cert(server.port, &["search", "morpheus"], dir.path());
    assert_printed(&accepted, "got result: Follow the white rabbit. \u{1f430}");
    // TLS on the mio transport is refused as a usage error.
    let mio = Command::new(env!("CARGO_BIN_EXE_app-server"))
        .args([
            "127.0.0.1",
            "0",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "b.pem",
        ])
        .output()
        .expect("app-server");
    assert_eq!(mio.status.code(), Some(2));
    assert!(stderr(&mio).contains("--transport std"), "{}", stderr(&mio));
}
