//! The multi-connection client against fake servers on loopback: host names, the run's
//! one time limit, and peers that do not speak this protocol, each named for what it sent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Foreign, Message};
use sockmsg_transport_mio::{ClientConfig, ClientError, MultiClient};

/// Longest any fake server lives: every test stops by itself.
const SERVER_LIFE: Duration = Duration::from_secs(15);

fn req() -> Message {
    Message::binary("x/request", b"ping".to_vec())
}

fn answer() -> Vec<u8> {
    encode(&Message::binary("x/answer", b"pong".to_vec())).expect("encode")
}

/// A server on 127.0.0.1, port 0, that accepts `n` connections and runs `script` on each
/// (one thread per connection; all end by themselves).
fn fake_server(n: usize, script: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for _ in 0..n {
            if let Ok((s, _)) = listener.accept() {
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(SERVER_LIFE));
                    script(s)
                });
            }
        }
    });
    addr
}

/// Reads the request's first bytes, writes `bytes`, then holds the connection until the
/// client goes away.
fn answer_and_hold(mut s: TcpStream, bytes: &[u8]) {
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf);
    let _ = s.write_all(bytes);
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            return;
        }
    }
}

fn run(addr: impl sockmsg_transport_mio::ServerAddr, n: usize) -> Vec<Option<ClientError>> {
    MultiClient::new(ClientConfig {
        timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
    .run(addr, vec![vec![req()]; n])
    .expect("client loop")
    .into_iter()
    .map(|o| o.error)
    .collect()
}

#[test]
fn host_names_are_resolved() {
    let addr = fake_server(2, |s| answer_and_hold(s, &answer()));
    let outcomes = MultiClient::new(ClientConfig::default())
        .run(("localhost", addr.port()), vec![vec![req()]; 2])
        .expect("client loop");
    for o in outcomes {
        let responses = o.into_result().expect("answered");
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].content(), b"pong");
    }
    let addr = fake_server(1, |s| answer_and_hold(s, &answer()));
    let errors = run(format!("localhost:{}", addr.port()), 1);
    assert!(errors[0].is_none(), "{errors:?}");
}

#[test]
fn each_address_is_tried_in_turn() {
    let refused = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind");
    let addr = fake_server(2, |s| answer_and_hold(s, &answer()));
    let errors = run(&[refused, addr][..], 2);
    assert!(errors.iter().all(Option::is_none), "{errors:?}");
    // Every address refuses: the error names the last one tried.
    let errors = run(&[refused, refused][..], 1);
    assert!(
        matches!(&errors[0], Some(ClientError::Connect(e))
            if e.to_string().contains(&refused.to_string())),
        "{errors:?}"
    );
}

#[test]
fn an_unresolvable_name_fails_the_run_naming_it() {
    let start = Instant::now();
    let e = MultiClient::new(ClientConfig::default())
        .run("no-such-host.invalid:9", vec![vec![req()]])
        .expect_err("cannot resolve");
    assert!(
        e.to_string()
            .starts_with("cannot resolve no-such-host.invalid:9: "),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_refused_connection_names_the_address() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind");
    let errors = run(addr, 1);
    match &errors[0] {
        Some(e @ ClientError::Connect(io)) => {
            assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
            assert!(
                e.to_string()
                    .starts_with(&format!("cannot connect to {addr}: ")),
                "{e}"
            );
        }
        other => panic!("expected refused, got {other:?}"),
    }
}

#[test]
fn an_http_server_is_named_at_once() {
    let addr = fake_server(2, |s| {
        answer_and_hold(s, b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
    });
    let start = Instant::now();
    for e in run(addr, 2) {
        match &e {
            Some(ClientError::Foreign(Foreign::Http { status_line })) => {
                assert_eq!(status_line.shown(), "HTTP/1.1 400 Bad Request")
            }
            other => panic!("expected an HTTP server, got {other:?}"),
        }
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("(an HTTP server?)"), "{text}");
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_tls_server_and_random_bytes_are_named_at_once() {
    let tls = fake_server(1, |s| {
        answer_and_hold(s, &[0x15, 0x03, 0x03, 0x00, 0x02, 2, 40])
    });
    let random = fake_server(1, |s| answer_and_hold(s, &[0xfa, 0xce, 0x00, 0x13, 0x37]));
    let start = Instant::now();
    let errors = run(tls, 1);
    assert!(
        matches!(&errors[0], Some(ClientError::Foreign(Foreign::Tls { .. }))),
        "{errors:?}"
    );
    let errors = run(random, 1);
    match &errors[0] {
        Some(e @ ClientError::Foreign(Foreign::Binary { header_len, .. })) => {
            assert_eq!(*header_len, 0xface);
            assert!(e.to_string().contains("64206-byte JSON header"), "{e}");
        }
        other => panic!("expected random bytes, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_dripped_answer_ends_at_the_runs_time_limit() {
    let addr = fake_server(1, |mut s| {
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        for b in answer() {
            if s.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let start = Instant::now();
    let outcomes = MultiClient::new(ClientConfig {
        timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    })
    .run(addr, vec![vec![req()]])
    .expect("client loop");
    let took = start.elapsed();
    assert!(
        matches!(
            outcomes[0].error,
            Some(ClientError::TimedOut {
                answered: 0,
                expected: 1
            })
        ),
        "{:?}",
        outcomes[0].error
    );
    assert!(took < Duration::from_millis(1600), "{took:?}");
}
