//! The library client against fake servers on loopback: host names, one deadline for the
//! whole exchange, answers followed by more bytes, and peers that do not speak this
//! protocol (HTTP, TLS, random bytes), each named for what it sent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Error, Foreign, Limits, Message, PeerError};
use sockmsg_transport_std::{Client, ClientConfig, Deadline, Op, TransportError};

/// Longest any fake server lives: every test stops by itself.
const SERVER_LIFE: Duration = Duration::from_secs(15);

fn req() -> Message {
    Message::binary("x/request", b"ping".to_vec())
}

fn answer() -> Vec<u8> {
    encode(&Message::binary("x/answer", b"pong".to_vec())).expect("encode")
}

/// A server on 127.0.0.1, port 0, that accepts one connection, reads the request's first
/// bytes, and runs `script` on it (on its own thread, which ends by itself).
fn fake_server(script: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(SERVER_LIFE));
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            script(s);
        }
    });
    addr
}

/// Writes `bytes` one at a time, `every` apart, stopping when the client goes away.
fn drip(mut s: TcpStream, bytes: &[u8], every: Duration) {
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            return;
        }
        thread::sleep(every);
    }
}

/// Writes `bytes`, then keeps the connection open (sending nothing) until the client
/// closes or the server's life ends.
fn send_and_hold(mut s: TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let mut sink = [0u8; 256];
    let end = Instant::now() + SERVER_LIFE;
    while Instant::now() < end {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        deadline: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    }
}

#[test]
fn a_dripped_answer_ends_at_the_deadline_for_the_whole_exchange() {
    // 1 byte per 200 ms: every wait is short, the whole answer would take seconds.
    let addr = fake_server(|s| drip(s, &answer(), Duration::from_millis(200)));
    let mut client = Client::connect(addr, &config()).expect("connect");
    let start = Instant::now();
    let result = client.request_within(req(), Duration::from_secs(1));
    let took = start.elapsed();
    match result {
        Err(e @ TransportError::Deadline { .. }) => {
            let TransportError::Deadline {
                op,
                limit,
                received,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*op, Op::Read);
            assert_eq!(*limit, Duration::from_secs(1));
            assert!((2..=8).contains(received), "{received} bytes");
            assert!(e.is_timeout());
            let text = e.to_string();
            assert!(text.contains("whole exchange"), "{text}");
            assert!(text.contains(&addr.to_string()), "{text}");
        }
        other => panic!("expected a deadline error, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(1800), "{took:?}");
}

#[test]
fn the_configured_deadline_bounds_request_and_connect_by_shares_it() {
    let addr = fake_server(|s| drip(s, &answer(), Duration::from_millis(200)));
    let cfg = ClientConfig {
        deadline: Some(Duration::from_millis(700)),
        ..ClientConfig::default()
    };
    let mut client = Client::connect(addr, &cfg).expect("connect");
    let start = Instant::now();
    let e = client
        .request(req())
        .expect_err("the answer cannot arrive in time");
    assert!(matches!(e, TransportError::Deadline { .. }), "{e:?}");
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");

    // One deadline for connect and request: time spent connecting counts.
    let addr = fake_server(|s| drip(s, &answer(), Duration::from_millis(200)));
    let deadline = Deadline::after(Duration::from_millis(800));
    let mut client = Client::connect_by(addr, &cfg, Some(deadline)).expect("connect");
    thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let e = client
        .request_by(req(), Some(deadline))
        .expect_err("too slow");
    assert!(
        matches!(e, TransportError::Deadline { limit, .. } if limit == Duration::from_millis(800))
    );
    assert!(
        start.elapsed() < Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_slow_but_timely_answer_is_received() -> Result<(), TransportError> {
    let addr = fake_server(|s| drip(s, &answer(), Duration::from_millis(5)));
    let mut client = Client::connect(addr, &config())?;
    let m = client.request_within(req(), Duration::from_secs(10))?;
    assert_eq!(m.content(), b"pong");
    client.close_now();
    Ok(())
}

#[test]
fn an_answer_followed_by_more_bytes_is_returned_and_close_now_does_not_wait() {
    let mut wire = answer();
    wire.extend_from_slice(b"and then a lot more that never ends");
    let addr = fake_server(move |s| send_and_hold(s, &wire));
    let start = Instant::now();
    let mut client = Client::connect(addr, &config()).expect("connect");
    let m = client.request(req()).expect("the answer");
    assert_eq!(m.content(), b"pong");
    client.close_now();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn close_is_bounded_even_if_the_server_keeps_sending() {
    let addr = fake_server(|mut s| {
        let _ = s.write_all(&answer());
        drip(s, &[b'x'; 64], Duration::from_millis(50));
    });
    let cfg = ClientConfig {
        read_timeout: Some(Duration::from_millis(500)),
        ..config()
    };
    let mut client = Client::connect(addr, &cfg).expect("connect");
    let m = client.request(req()).expect("the answer");
    assert_eq!(m.content(), b"pong");
    let start = Instant::now();
    client.close().expect("close");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

/// Connects to a server that answers `bytes` and holds the connection; the error and how
/// long it took.
fn foreign_answer(bytes: &'static [u8]) -> (TransportError, Duration, SocketAddr) {
    let addr = fake_server(move |s| send_and_hold(s, bytes));
    let mut client = Client::connect(addr, &config()).expect("connect");
    let start = Instant::now();
    let e = client.request(req()).expect_err("not this protocol");
    (e, start.elapsed(), addr)
}

#[test]
fn an_http_server_is_named_at_once() {
    let (e, took, addr) = foreign_answer(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
    );
    assert!(
        matches!(
            &e,
            TransportError::Foreign {
                seen: Foreign::Http { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{addr} does not speak this protocol: it answered \"HTTP/1.1 400 Bad Request\" \
             (an HTTP server?)"
        )
    );
    assert_eq!(e.io_kind(), std::io::ErrorKind::InvalidData);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_tls_server_is_named_at_once() {
    let (e, took, _) = foreign_answer(&[0x16, 0x03, 0x03, 0x00, 0x31, 0x02, 0x00, 0x00]);
    assert!(
        matches!(
            &e,
            TransportError::Foreign {
                seen: Foreign::Tls { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("TLS"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn random_bytes_announcing_a_huge_header_are_named_at_once() {
    let (e, took, _) = foreign_answer(&[0xff, 0xf3, 0x17, 0x9a, 0x00, 0x42, 0xc0, 0xde]);
    match &e {
        TransportError::Foreign {
            seen: Foreign::Binary { header_len, .. },
            ..
        } => assert_eq!(*header_len, 0xfff3),
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("65523-byte JSON header"), "{text}");
    assert!(text.contains("ff f3 17 9a"), "{text}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn foreign_bytes_that_end_early_are_named_too() {
    // Three bytes, then the server closes: the decoder sees a truncated header.
    let addr = fake_server(|mut s| {
        let _ = s.write_all(b"OK\n");
    });
    let mut client = Client::connect(addr, &config()).expect("connect");
    let e = client.request(req()).expect_err("not this protocol");
    assert!(
        matches!(
            &e,
            TransportError::Foreign {
                seen: Foreign::Text { .. },
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn an_answer_beyond_the_clients_content_limit_fails_before_its_content_arrives() {
    let big = encode(&Message::binary("x/big", vec![7u8; 4096])).expect("encode");
    let header_only: &'static [u8] = big[..big.len() - 4096].to_vec().leak();
    let addr = fake_server(move |s| send_and_hold(s, header_only));
    let cfg = ClientConfig {
        limits: Limits {
            max_content_len: 1024,
            ..Limits::default()
        },
        ..config()
    };
    let mut client = Client::connect(addr, &cfg).expect("connect");
    let start = Instant::now();
    let e = client.request(req()).expect_err("too long");
    assert!(
        matches!(
            e.protocol_error(),
            Some(Error::Peer(PeerError::ContentTooLong {
                size: 4096,
                max: 1024
            }))
        ),
        "{e:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn host_names_are_resolved_and_each_address_tried() -> Result<(), TransportError> {
    for target in ["localhost", "LOCALHOST"] {
        let addr = fake_server(|s| send_and_hold(s, &answer()));
        let mut client = Client::connect((target, addr.port()), &config())?;
        assert!(client.peer_addr().ip().is_loopback());
        assert_eq!(client.request(req())?.content(), b"pong");
        client.close_now();
    }
    let addr = fake_server(|s| send_and_hold(s, &answer()));
    let mut client = Client::connect(format!("localhost:{}", addr.port()), &config())?;
    assert_eq!(client.peer_addr(), addr);
    assert_eq!(client.request(req())?.content(), b"pong");
    client.close_now();
    Ok(())
}

#[test]
fn each_address_is_tried_in_turn() -> Result<(), TransportError> {
    let refused = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind");
    let addr = fake_server(|s| send_and_hold(s, &answer()));
    let mut client = Client::connect(&[refused, addr][..], &config())?;
    assert_eq!(client.peer_addr(), addr);
    assert_eq!(client.request(req())?.content(), b"pong");
    client.close_now();
    match Client::connect(&[refused, refused][..], &config()) {
        Err(e @ TransportError::Refused { .. }) => assert_eq!(e.addr(), refused),
        other => panic!("expected refused, got {other:?}"),
    }
    Ok(())
}

#[test]
fn an_unresolvable_name_is_a_resolve_error_naming_it() {
    let start = Instant::now();
    for target in ["no-such-host.invalid:80", "no-such-host.invalid"] {
        match Client::connect(target, &config()) {
            Err(e @ TransportError::Resolve { .. }) => {
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("cannot resolve {target}: ")),
                    "{text}"
                );
            }
            other => panic!("{target}: expected a resolve error, got {other:?}"),
        }
    }
    match Client::connect(("no-such-host.invalid", 80), &config()) {
        Err(TransportError::Resolve { host, .. }) => assert_eq!(host, "no-such-host.invalid:80"),
        other => panic!("expected a resolve error, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_refused_host_name_names_the_address_tried() {
    // A port nothing listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let cfg = ClientConfig {
        connect_timeout: Some(Duration::from_secs(2)),
        ..config()
    };
    match Client::connect(("127.0.0.1", port), &cfg) {
        Err(e @ TransportError::Refused { .. }) => {
            assert_eq!(e.addr(), SocketAddr::from(([127, 0, 0, 1], port)))
        }
        other => panic!("expected refused, got {other:?}"),
    }
}
