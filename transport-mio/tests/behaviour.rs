//! The server's behaviour, one aspect per test: half-close, errors isolated to their
//! connection, connection limit, shutdown, idle timeout, backpressure with pipelining,
//! large messages, SO_REUSEPORT, and the client's non-blocking connect.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{read_responses, request, result_of, wait_until, Running};
use sockmsg_protocol::{encode, Message};
use sockmsg_transport_mio::{
    ClientConfig, ClientError, ListenerMode, MultiClient, Server, ServerConfig,
};

fn config() -> ServerConfig {
    ServerConfig {
        workers: 2,
        ..ServerConfig::default()
    }
}

fn wire(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend(encode(m).expect("encodable"));
    }
    out
}

/// `clients` connections x `per` requests through the MultiClient, every answer checked.
fn good_clients(addr: std::net::SocketAddr, tag: &str, clients: usize, per: usize, depth: usize) {
    let requests = (0..clients)
        .map(|c| {
            (0..per)
                .map(|r| request(&format!("{tag} {c} {r}")))
                .collect()
        })
        .collect();
    let outcomes = MultiClient::new(ClientConfig {
        pipeline_depth: depth,
        ..ClientConfig::default()
    })
    .run(addr, requests)
    .expect("client loop");
    for (c, outcome) in outcomes.into_iter().enumerate() {
        let answers: Vec<String> = outcome
            .into_result()
            .unwrap_or_else(|e| panic!("{tag} client {c}: {e}"))
            .iter()
            .map(result_of)
            .collect();
        let expected: Vec<String> = (0..per).map(|r| format!("echo {tag} {c} {r}")).collect();
        assert_eq!(answers, expected, "{tag} client {c}");
    }
}

#[test]
fn a_half_closed_client_still_gets_every_response() {
    let server = Running::start(config());
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    let requests: Vec<Message> = (0..3).map(|i| request(&format!("half {i}"))).collect();
    stream.write_all(&wire(&requests)).expect("write");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let (responses, ended) = read_responses(&mut stream, 3, true);
    assert!(ended);
    let answers: Vec<String> = responses.iter().map(result_of).collect();
    assert_eq!(answers, ["echo half 0", "echo half 1", "echo half 2"]);
    assert!(wait_until(Duration::from_secs(5), || server.stats.open() == 0));
    assert_eq!(server.stats.snapshot().closed_clean, 1);
}

#[test]
fn a_message_sent_byte_by_byte_is_answered() {
    let server = Running::start(config());
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let bytes = wire(&[request("one byte at a time"), request("and the next")]);
    for b in bytes.chunks(1) {
        stream.write_all(b).expect("write");
        thread::sleep(Duration::from_micros(200));
    }
    let (responses, _) = read_responses(&mut stream, 2, false);
    assert_eq!(result_of(&responses[0]), "echo one byte at a time");
    assert_eq!(result_of(&responses[1]), "echo and the next");
}

#[test]
fn a_protocol_error_closes_only_that_connection() {
    let server = Running::start(ServerConfig {
        workers: 1, // everyone on the same loop
        ..ServerConfig::default()
    });
    let addr = server.addr;
    let good = thread::spawn(move || good_clients(addr, "good", 20, 20, 4));

    // A valid request, then a header that is not JSON.
    let mut bad = TcpStream::connect(server.addr).expect("connect");
    let mut bytes = wire(&[request("before the garbage")]);
    bytes.extend_from_slice(b"\x00\x05hello");
    bad.write_all(&bytes).expect("write");
    let (responses, ended) = read_responses(&mut bad, 1, true);
    assert!(ended, "the bad connection is closed");
    assert_eq!(responses.len(), 1, "the earlier request is still answered");
    assert_eq!(result_of(&responses[0]), "echo before the garbage");

    // A content-length over the limit.
    let mut huge = TcpStream::connect(server.addr).expect("connect");
    let header = br#"{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", "content-length": 99999999999}"#;
    huge.write_all(&(header.len() as u16).to_be_bytes())
        .expect("write");
    huge.write_all(header).expect("write");
    let (responses, ended) = read_responses(&mut huge, 0, true);
    assert!(ended && responses.is_empty());

    good.join().expect("good clients all answered");
    assert!(wait_until(Duration::from_secs(5), || server.stats.open() == 0));
    let stats = server.stats.snapshot();
    assert_eq!(stats.closed_protocol_error, 2, "{stats:?}");
    assert_eq!(stats.closed_clean, 20, "{stats:?}");
}

#[test]
fn a_failing_or_panicking_service_closes_only_that_connection() {
    let server = Running::start(config());
    for (i, poison) in ["fail", "panic"].into_iter().enumerate() {
        let mut stream = TcpStream::connect(server.addr).expect("connect");
        let requests = [
            Message::binary("x/y", b"first".to_vec()),
            Message::binary("x/y", poison.as_bytes().to_vec()),
            Message::binary("x/y", b"never answered".to_vec()),
        ];
        stream.write_all(&wire(&requests)).expect("write");
        let (responses, ended) = read_responses(&mut stream, 1, true);
        assert!(ended);
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].content(), b"echo:first");
        assert!(wait_until(Duration::from_secs(5), || server
            .stats
            .snapshot()
            .closed_service_error
            == i as u64 + 1));
        good_clients(server.addr, poison, 5, 5, 2);
    }
}

#[test]
fn connections_beyond_the_maximum_are_closed_at_once() {
    let server = Running::start(ServerConfig {
        max_connections: 3,
        ..config()
    });
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || server.stats.open() == 3));
    let mut extra = TcpStream::connect(server.addr).expect("the kernel accepts it");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    match extra.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the extra connection was not closed: {other:?}"),
    }
    assert_eq!(server.stats.snapshot().rejected, 1);

    // The three still work; once one goes, a new one is admitted.
    let mut first = open.remove(0);
    first
        .write_all(&wire(&[request("still here")]))
        .expect("write");
    let (responses, _) = read_responses(&mut first, 1, false);
    assert_eq!(result_of(&responses[0]), "echo still here");
    drop(first);
    assert!(wait_until(Duration::from_secs(5), || server.stats.open() == 2));
    let mut again = TcpStream::connect(server.addr).expect("connect");
    again
        .write_all(&wire(&[request("admitted")]))
        .expect("write");
    let (responses, _) = read_responses(&mut again, 1, false);
    assert_eq!(result_of(&responses[0]), "echo admitted");
    assert_eq!(server.stats.snapshot().max_open, 3);
}

#[test]
fn shutdown_closes_connections_and_serve_returns() {
    let mut server = Running::start(config());
    let mut idle: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || server.stats.open() == 5));
    let started = Instant::now();
    server.stop().expect("serve returns Ok");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "idle connections do not delay it"
    );
    for stream in &mut idle {
        let (responses, ended) = read_responses(stream, 0, true);
        assert!(ended && responses.is_empty());
    }
    let stats = server.stats.snapshot();
    assert_eq!(stats.closed_shutdown, 5);
    assert_eq!(stats.open, 0);
    // The listener is gone.
    assert!(TcpStream::connect(server.addr).is_err());
}

#[test]
fn shutdown_before_serve_returns_at_once() {
    let server = Server::bind("127.0.0.1:0", config()).expect("bind");
    server.shutdown_handle().shutdown();
    assert!(server.shutdown_handle().is_shutdown());
    let started = Instant::now();
    server
        .serve(common::test_service())
        .expect("serve returns Ok");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = Running::start(ServerConfig {
        idle_timeout: idle,
        ..config()
    });
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .write_all(&wire(&[request("then silence")]))
        .expect("write");
    let (responses, _) = read_responses(&mut stream, 1, false);
    assert_eq!(result_of(&responses[0]), "echo then silence");
    let answered = Instant::now();
    let (more, ended) = read_responses(&mut stream, 0, true);
    let after = answered.elapsed();
    assert!(ended && more.is_empty());
    assert!(
        after >= idle - Duration::from_millis(50) && after < idle * 10,
        "closed {after:?} after the last response"
    );
    assert_eq!(server.stats.snapshot().closed_idle, 1);
}

#[test]
fn pipelining_past_a_small_output_cap_pauses_and_resumes() {
    let cap = 1024;
    let server = Running::start(ServerConfig {
        output_cap: cap,
        ..config()
    });
    // 300 requests in flight per connection: responses pile up far beyond the cap.
    good_clients(server.addr, "capped", 4, 300, 300);
    let stats = server.stats.snapshot();
    assert!(stats.max_output_queued <= cap, "{stats:?}");
    assert!(stats.backpressured >= 1, "{stats:?}");
    assert_eq!(stats.requests, 1200);
}

#[test]
fn a_response_larger_than_the_cap_is_sent_alone() {
    let server = Running::start(ServerConfig {
        output_cap: 1024,
        ..config()
    });
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    let big = vec![b'x'; 10_000];
    let requests = [
        Message::binary("x/y", big.clone()),
        Message::binary("x/y", b"small".to_vec()),
    ];
    stream.write_all(&wire(&requests)).expect("write");
    let (responses, _) = read_responses(&mut stream, 2, false);
    assert_eq!(responses[0].content().len(), 10_005);
    assert_eq!(responses[1].content(), b"echo:small");
}

#[test]
fn large_messages_round_trip() {
    let server = Running::start(config());
    let size = 3 * 1024 * 1024 + 17;
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let requests = (0..3)
        .map(|_| vec![Message::binary("x/y", content.clone()); 2])
        .collect();
    let outcomes = MultiClient::new(ClientConfig::default())
        .run(server.addr, requests)
        .expect("client loop");
    for outcome in outcomes {
        let responses = outcome.into_result().expect("answered");
        assert_eq!(responses.len(), 2);
        for r in responses {
            assert_eq!(r.content().len(), size + 5);
            assert_eq!(r.content().get(..5), Some(&b"echo:"[..]));
            assert!(r.content().get(5..) == Some(&content[..]));
        }
    }
}

#[test]
fn reuseport_loops_serve_and_a_shared_listener_refuses_a_taken_port() {
    let server = Running::start(ServerConfig {
        listener: ListenerMode::ReusePort,
        ..config()
    });
    good_clients(server.addr, "reuseport", 50, 4, 2);
    assert_eq!(server.stats.snapshot().requests, 200);

    let shared = Server::bind("127.0.0.1:0", config()).expect("bind");
    let taken = Server::bind(shared.local_addr(), config());
    assert!(
        taken.is_err(),
        "the default mode must not share a port silently"
    );
}

#[test]
fn the_client_reports_a_refused_connection() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }; // closed again: nothing listens there now
    let outcomes = MultiClient::new(ClientConfig::default())
        .run(port, vec![vec![request("anyone?")]; 3])
        .expect("client loop");
    for outcome in outcomes {
        match outcome.error {
            Some(ClientError::Connect(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused)
            }
            other => panic!("expected a refused connection, got {other:?}"),
        }
    }
}

#[test]
fn the_client_reports_a_server_that_closes_early() {
    // A one-shot peer: reads a little, answers nothing, closes.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
    });
    let outcomes = MultiClient::new(ClientConfig {
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })
    .run(addr, vec![vec![request("a"), request("b")]])
    .expect("client loop");
    peer.join().expect("peer");
    match &outcomes[0].error {
        Some(ClientError::Closed {
            answered: 0,
            expected: 2,
        }) => {}
        Some(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected an early close, got {other:?}"),
    }
}

#[test]
fn deadlines_of_closed_connections_do_not_pile_up() {
    // One loop, default (long) idle timeout: each one-shot connection leaves a timer entry
    // behind that would otherwise stay for 75 s.
    let server = Running::start(ServerConfig {
        workers: 1,
        ..ServerConfig::default()
    });
    for i in 0..3_000 {
        let mut stream = TcpStream::connect(server.addr).expect("connect");
        if i % 100 == 0 {
            stream
                .write_all(&wire(&[request("one shot")]))
                .expect("write");
            stream.shutdown(Shutdown::Write).expect("half-close");
            let (responses, ended) = read_responses(&mut stream, 1, true);
            assert!(ended && responses.len() == 1);
        }
    }
    assert!(wait_until(Duration::from_secs(10), || server.stats.open() == 0));
    // One more turn of the loop, so the gauge is fresh.
    drop(TcpStream::connect(server.addr).expect("connect"));
    assert!(wait_until(Duration::from_secs(5), || server
        .stats
        .snapshot()
        .accepted
        == 3_001));
    let stats = server.stats.snapshot();
    assert!(
        stats.timer_entries <= 2 * stats.open + 1024 + 16,
        "{} timer entries for {} open connections",
        stats.timer_entries,
        stats.open
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_request_and_its_fin_in_one_segment_are_both_seen() {
    use socket2::{Domain, Protocol, Socket, Type};
    let server = Running::start(config());
    for i in 0..20 {
        // TCP_CORK holds the data back until the shutdown, so the FIN rides on the same
        // segment: the server gets one event for both.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        socket.connect(&server.addr.into()).expect("connect");
        socket.set_cork(true).expect("TCP_CORK");
        let mut stream: TcpStream = socket.into();
        stream
            .write_all(&wire(&[request(&format!("corked {i}"))]))
            .expect("write");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let (responses, ended) = read_responses(&mut stream, 1, true);
        assert!(ended, "the server saw the end of stream");
        assert_eq!(result_of(&responses[0]), format!("echo corked {i}"));
    }
    assert!(wait_until(Duration::from_secs(5), || server.stats.open() == 0));
    assert_eq!(server.stats.snapshot().closed_clean, 20);
}
