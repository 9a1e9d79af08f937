//! What only the mio transport has: its counters under backpressure, SO_REUSEPORT loops,
//! its timer heap, and its non-blocking client. What every server does (half-close,
//! deadlines, limits, errors, shutdown) is the conformance suite's, run on every transport:
//! `tests/tests/conformance.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{read_responses, request, result_of, wait_until, Running};
use sockmsg_protocol::{encode, Message};
use sockmsg_transport_mio::{
    ClientConfig, ClientError, ListenerMode, MioOptions, MultiClient, Server, ServerConfig,
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
    let server = Running::start_with(
        config(),
        MioOptions {
            listener: ListenerMode::ReusePort,
            ..MioOptions::default()
        },
    );
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
