//! What the demo service writes to the log, captured from a `tracing` subscriber: one line
//! per event whatever the peer sends (a content-type cannot forge a second line), peer text
//! escaped and cut, and nothing at all per request at the default `info` level.

use std::io;
use std::sync::{Arc, Mutex};

use sockmsg_demo::DemoService;
use sockmsg_protocol::Message;
use sockmsg_server::Service;
use tracing_subscriber::fmt::MakeWriter;

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

/// The log lines of `requests` answered at `level`.
fn log_of(level: tracing::Level, requests: Vec<Message>) -> String {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        for request in requests {
            DemoService::new().call(request).expect("answered");
        }
    });
    captured.text()
}

#[test]
fn a_content_type_cannot_forge_a_log_line() {
    let forged = "binary/x\n2030-01-01T00:00:00Z ERROR forged: admin logged in\r\x1b[2K";
    let log = log_of(
        tracing::Level::DEBUG,
        vec![Message::binary(forged, b"0123456789abc".to_vec())],
    );
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].ends_with(
            r#"received "binary/x\n2030-01-01T00:00:00Z ERROR forged: admin logged in\r\u{1b}[2K" request (13 bytes)"#
        ),
        "{log}"
    );
    assert!(
        lines[1].ends_with(r"sending b'First 10 bytes of request: 0123456789'"),
        "{log}"
    );
    assert!(!log.contains('\r') && !log.contains('\x1b'), "{log:?}");
}

#[test]
fn long_peer_text_is_cut_with_its_length() {
    let long = format!("binary/{}", "x".repeat(60_000));
    let log = log_of(
        tracing::Level::DEBUG,
        vec![Message::binary(long, b"".to_vec())],
    );
    assert!(
        log.contains(r#"…" (60007 bytes) request (0 bytes)"#),
        "{log}"
    );
    assert!(log.len() < 400, "{} bytes of log", log.len());
}

#[test]
fn json_values_are_logged_as_python_repr_cut_short() {
    let json = format!(
        r#"{{"action": "search", "value": "line\n2030-01-01 ERROR x", "pad": "{}"}}"#,
        "y".repeat(1000)
    );
    let request = Message::from_parts("text/json".into(), "utf-8".into(), json.into_bytes());
    let log = log_of(tracing::Level::DEBUG, vec![request]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains(r"received request {'action': 'search', 'value': 'line\n2030-01-01 ERROR x', 'pad': 'yyy"),
        "{log}"
    );
    assert!(lines[0].ends_with("..."), "{log}");
    assert!(
        lines[1].ends_with(r#"sending {'result': 'No match for "line\n2030-01-01 ERROR x".'}"#),
        "{log}"
    );
}

#[test]
fn nothing_per_request_at_the_default_level() {
    let log = log_of(
        tracing::Level::INFO,
        vec![
            sockmsg_demo::request("search", "ring"),
            sockmsg_demo::request("binary", "x"),
        ],
    );
    assert_eq!(log, "");
}
