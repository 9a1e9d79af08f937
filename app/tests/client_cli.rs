//! `app-client` against hostile and foreign fake servers on loopback: one deadline for the
//! whole exchange, an answer printed as soon as it is complete, peers that do not speak
//! this protocol named for what they sent, host names, exit codes and the error line.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_tests::{describe, run_bounded, SEARCH_MORPHEUS_RESPONSE};

/// Longest any run may take (the assertions on time are much tighter).
const LIMIT: Duration = Duration::from_secs(20);

/// Longest a fake server lives: every test stops by itself.
const SERVER_LIFE: Duration = Duration::from_secs(15);

fn app_client() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-client"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// A one-connection fake server on 127.0.0.1, port 0, that reads the request's first bytes
/// and runs `behave`; its port.
fn fake_server(behave: impl FnOnce(TcpStream) + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(SERVER_LIFE));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            behave(s);
        }
    });
    port
}

/// Writes `bytes`, then keeps the connection open without sending more until the client
/// goes away (or the server's life ends).
fn send_and_hold(mut s: TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            return;
        }
    }
}

/// `app-client HOST PORT search morpheus EXTRA...`: its output and how long it ran.
fn search(host: &str, port: u16, extra: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = run_bounded(
        "app-client",
        app_client()
            .args([host, &port.to_string(), "search", "morpheus"])
            .args(extra),
        LIMIT,
    );
    (out, start.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit 1, nothing on stdout, and exactly one error line starting with `prefix`.
fn assert_fails_with(out: &Output, prefix: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    assert!(out.stdout.is_empty(), "{}", describe(out));
    let text = stderr(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{text}");
    assert!(lines[0].starts_with(prefix), "{text}");
    text
}

const GOOD_LINE: &str = "got result: Follow the white rabbit. 🐰\n";

#[test]
fn a_dripped_answer_ends_at_the_one_deadline() {
    // 1 byte per 200 ms: each wait is short, the whole answer would take ~30 s.
    let port = fake_server(|mut s| {
        for b in SEARCH_MORPHEUS_RESPONSE {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let (out, took) = search("127.0.0.1", port, &["--timeout", "1"]);
    let text = assert_fails_with(
        &out,
        &format!("app-client: no complete answer from 127.0.0.1:{port}: timed out after 1s"),
    );
    assert!(
        text.contains("the deadline for the whole exchange"),
        "{text}"
    );
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[test]
fn a_good_answer_followed_by_more_bytes_is_printed_at_once() {
    let port = fake_server(|s| {
        let mut wire = SEARCH_MORPHEUS_RESPONSE.to_vec();
        wire.extend_from_slice(b"\x00\x10 and more bytes that never end");
        send_and_hold(s, &wire)
    });
    let (out, took) = search("127.0.0.1", port, &["--timeout", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), GOOD_LINE);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn an_http_server_is_named() {
    let port = fake_server(|s| {
        send_and_hold(
            s,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\n\
              Bad Request",
        )
    });
    let (out, took) = search("127.0.0.1", port, &[]);
    let text = assert_fails_with(&out, "app-client: ");
    assert_eq!(
        text.trim_end(),
        format!(
            "app-client: 127.0.0.1:{port} does not speak this protocol: it answered \
             \"HTTP/1.1 400 Bad Request\" (an HTTP server?)"
        )
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_tls_server_is_named() {
    let port = fake_server(|s| send_and_hold(s, &[0x16, 0x03, 0x03, 0x00, 0x5d, 0x02, 0x00]));
    let (out, took) = search("127.0.0.1", port, &[]);
    let text = assert_fails_with(
        &out,
        &format!("app-client: 127.0.0.1:{port} does not speak this protocol: "),
    );
    assert!(text.contains("TLS handshake record"), "{text}");
    assert!(text.contains("a TLS server?"), "{text}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn random_bytes_announcing_a_huge_header_are_named() {
    let port = fake_server(|s| send_and_hold(s, &[0xf7, 0x3a, 0x81, 0x04, 0xc3, 0x00, 0x5e]));
    let (out, took) = search("127.0.0.1", port, &[]);
    let text = assert_fails_with(
        &out,
        &format!("app-client: 127.0.0.1:{port} does not speak this protocol: "),
    );
    assert!(
        text.contains(
            "it answered bytes f7 3a 81 04 c3 00 5e, announcing a 63290-byte JSON header \
             that does not start with '{'"
        ),
        "{text}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn peer_text_is_escaped_in_the_error_line() {
    let port = fake_server(|s| send_and_hold(s, b"ERR \x1b[2Jforged\r2030-01-01 fake line\n"));
    let (out, _) = search("127.0.0.1", port, &[]);
    let text = assert_fails_with(&out, "app-client: ");
    assert!(!text.trim_end().contains(['\r', '\x1b']), "{text:?}");
    assert!(text.contains(r#""ERR \u{1b}[2Jforged""#), "{text}");
}

#[test]
fn an_answer_beyond_max_content_fails_at_its_header() {
    let port = fake_server(|s| send_and_hold(s, SEARCH_MORPHEUS_RESPONSE));
    let (out, took) = search("127.0.0.1", port, &["--max-content", "10"]);
    let text = assert_fails_with(
        &out,
        &format!("app-client: bad answer from 127.0.0.1:{port}: "),
    );
    assert!(text.contains("exceeds the maximum 10"), "{text}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn localhost_works() {
    let port = fake_server(|s| send_and_hold(s, SEARCH_MORPHEUS_RESPONSE));
    let (out, _) = search("localhost", port, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), GOOD_LINE);
}

#[test]
fn an_unresolvable_host_exits_1_naming_it() {
    let (out, took) = search("no-such-host.invalid", 9, &[]);
    assert_fails_with(&out, "app-client: cannot resolve no-such-host.invalid:9: ");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_refused_host_name_names_host_and_address() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (out, _) = search("localhost", port, &[]);
    let text = assert_fails_with(
        &out,
        &format!("app-client: cannot connect to localhost:{port} ("),
    );
    assert!(text.trim_end().ends_with(": connection refused"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["127.0.0.1", "1", "search", "x", "--timeout", "0"][..],
        &["127.0.0.1", "1", "search", "x", "--max-content", "-1"],
        &["127.0.0.1", "99999", "search", "x"],
    ] {
        let out = run_bounded("app-client", app_client().args(args), LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
}
