//! Hostile peers against the demo server on every transport (issue 12): a good client is
//! still served while attackers hold connections, send costly shapes or never read their
//! answers, and an answer past the message limit is refused without stopping the server.
//!
//! Servers run in this process through `sockmsg_app::serve::spawn`, on 127.0.0.1 port 0.
//! Figures of a server process (CPU time, RSS, log lines) are measured by
//! `app/tests/hostile_process.rs` on the `app-server` binary, and all of them by
//! `scripts/attacks.sh` (RELIABILITY.md).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_app::serve::{spawn, RunningServer, ServerConfig, Transport};
use sockmsg_demo::shapes::{request as shape_request, Shape};
use sockmsg_demo::{self as demo, DemoService};
use sockmsg_protocol::{encode, Limits, Message};
use sockmsg_transport_std::{Client, ClientConfig};

/// Longest any single wait of these tests may take.
const LIMIT: Duration = Duration::from_secs(20);
/// Longest a good client may wait for its answer while an attack runs.
const GOOD_WAIT: Duration = Duration::from_secs(5);

fn client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Some(LIMIT),
        read_timeout: Some(LIMIT),
        write_timeout: Some(LIMIT),
        ..ClientConfig::default()
    }
}

fn start(transport: Transport, settings: &ServerConfig) -> RunningServer {
    let service = DemoService::new().with_limits(&settings.limits);
    spawn(
        transport,
        "127.0.0.1:0".parse().expect("addr"),
        settings,
        Arc::new(service),
    )
    .unwrap_or_else(|e| panic!("[{transport}] cannot start: {e}"))
}

/// A guide request answered within [`GOOD_WAIT`]; returns how long it waited.
fn good_client(transport: Transport, addr: SocketAddr, during: &str) -> Duration {
    let started = Instant::now();
    let config = ClientConfig {
        connect_timeout: Some(GOOD_WAIT),
        read_timeout: Some(GOOD_WAIT),
        write_timeout: Some(GOOD_WAIT),
        ..ClientConfig::default()
    };
    let answer = Client::connect(addr, &config)
        .and_then(|mut c| c.request(demo::request("search", "morpheus")))
        .unwrap_or_else(|e| panic!("[{transport}] good client during {during}: {e}"));
    let waited = started.elapsed();
    assert_eq!(
        demo::result_line(&answer).expect("a JSON answer"),
        "got result: Follow the white rabbit. 🐰",
        "[{transport}] during {during}"
    );
    assert!(
        waited <= GOOD_WAIT,
        "[{transport}] good client waited {waited:?} during {during}"
    );
    waited
}

/// The bytes of a full 65,535-byte header whose extra key holds `[0,0,...]`, announcing
/// 100 bytes of content (which never come).
fn full_header_of_zeros() -> Vec<u8> {
    let head = r#"{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", "content-length": 100, "x": ["#;
    let mut header = String::with_capacity(65_535);
    header.push_str(head);
    header.push('0');
    while header.len() + 4 <= 65_535 {
        header.push_str(",0");
    }
    header.push_str("]}");
    while header.len() < 65_535 {
        header.insert(header.len() - 1, ' ');
    }
    assert_eq!(header.len(), 65_535);
    let mut bytes = Vec::with_capacity(2 + header.len());
    bytes.extend_from_slice(&65_535u16.to_be_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// 128 connections each holding a full 65,535-byte header of `[0,0,...]` with no content
/// after it: the server keeps them (until its read timeout) and still serves a good client.
#[test]
fn a_good_client_is_served_while_attackers_hold_full_headers() {
    let attack = full_header_of_zeros();
    for &transport in Transport::ALL {
        let server = start(
            transport,
            &ServerConfig {
                max_connections: 256,
                ..ServerConfig::default()
            },
        );
        let mut held = Vec::new();
        for i in 0..128 {
            let mut s = TcpStream::connect(server.addr())
                .unwrap_or_else(|e| panic!("[{transport}] attacker {i}: {e}"));
            s.set_write_timeout(Some(LIMIT)).expect("timeout");
            s.write_all(&attack)
                .unwrap_or_else(|e| panic!("[{transport}] attacker {i} sending: {e}"));
            held.push(s);
        }
        good_client(transport, server.addr(), "128 held headers");
        // The attackers' connections are still open: the server waits for their content.
        let mut first = &held[0];
        first
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        match first.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => {
                panic!("[{transport}] an attacker's connection was answered or closed: {other:?}")
            }
        }
        drop(held);
        server.stop(LIMIT).expect("stops");
    }
}

/// Each adversarial shape of 1 MiB is answered (or refused at the limit), and a good
/// client sent while it is being handled waits at most [`GOOD_WAIT`].
#[test]
fn a_good_client_is_served_while_hostile_shapes_are_handled() {
    for &transport in Transport::ALL {
        let server = start(transport, &ServerConfig::default());
        let addr = server.addr();
        for &shape in Shape::ALL {
            let attack = shape_request(shape, 1024 * 1024);
            let attacker = thread::spawn(move || {
                Client::connect(addr, &client_config()).and_then(|mut c| c.request(attack))
            });
            good_client(transport, addr, shape.name());
            let answer = attacker
                .join()
                .expect("attacker thread")
                .unwrap_or_else(|e| panic!("[{transport}] {}: {e}", shape.name()));
            assert!(answer.is_json(), "[{transport}] {}", shape.name());
        }
        server.stop(LIMIT).expect("stops");
    }
}

/// With a 1 MiB message limit, a request whose answer would pass it (300 KB of `1e15`, a
/// 1.2 MB answer) is not answered: the connection closes, nothing of the answer is sent,
/// and the server goes on serving.
#[test]
fn an_answer_past_the_configured_limit_closes_the_connection() {
    let settings = ServerConfig {
        limits: Limits {
            max_content_len: 1024 * 1024,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let attack = encode(&shape_request(Shape::ManyNumbers, 300_000)).expect("encodes");
    for &transport in Transport::ALL {
        let server = start(transport, &settings);
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        s.write_all(&attack).expect("send");
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got);
        assert!(
            got.is_empty(),
            "[{transport}] {} bytes of an answer past the limit were sent ({read:?})",
            got.len()
        );
        good_client(transport, server.addr(), "after a refused answer");
        server.stop(LIMIT).expect("stops");
    }
}

/// Six clients send requests whose answers (about 0.9 MiB each, within a 1 MiB limit)
/// they never read: the server keeps serving a good client.
#[test]
fn a_good_client_is_served_while_clients_never_read_their_answers() {
    let settings = ServerConfig {
        limits: Limits {
            max_content_len: 1024 * 1024,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let request = shape_request(Shape::ManyNumbers, 230_000);
    let attack = encode(&request).expect("encodes");
    for &transport in Transport::ALL {
        let server = start(transport, &settings);
        // The answer fits the limit: one client that reads gets it whole.
        let answer: Message = Client::connect(server.addr(), &client_config())
            .and_then(|mut c| c.request(request.clone()))
            .unwrap_or_else(|e| panic!("[{transport}] a reading client: {e}"));
        assert!(
            answer.content().len() > 800_000,
            "[{transport}] {}",
            answer.content().len()
        );
        let mut idle = Vec::new();
        for _ in 0..6 {
            let mut s = TcpStream::connect(server.addr()).expect("connect");
            s.set_write_timeout(Some(LIMIT)).expect("timeout");
            s.write_all(&attack).expect("send");
            idle.push(s);
        }
        thread::sleep(Duration::from_millis(300));
        good_client(transport, server.addr(), "6 clients that never read");
        drop(idle);
        server.stop(LIMIT).expect("stops");
    }
}
