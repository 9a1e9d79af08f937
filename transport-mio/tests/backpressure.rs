//! A peer that pipelines requests and never reads: the server's queued output for it stays
//! under the cap, reading from it pauses, and it is closed at the write deadline; other
//! connections never notice.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{request, result_of, wait_until, Running};
use socket2::{Domain, Protocol, Socket, Type};
use sockmsg_protocol::encode;
use sockmsg_transport_mio::{ClientConfig, MultiClient, ServerConfig};

#[test]
fn a_peer_that_never_reads_is_capped_then_closed() {
    let cap = 64 * 1024;
    let write_deadline = Duration::from_secs(1);
    let server = Running::start(ServerConfig {
        workers: 1, // the good client below shares the loop with the bad one
        output_cap: cap,
        write_deadline,
        // Small kernel buffers on both sides make the stall come quickly and surely.
        socket_recv_buffer: Some(16 * 1024),
        socket_send_buffer: Some(16 * 1024),
        ..ServerConfig::default()
    });

    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.set_send_buffer_size(16 * 1024).expect("SO_SNDBUF");
    socket.connect(&server.addr.into()).expect("connect");
    let mut bad: TcpStream = socket.into();
    // A write blocked for 300 ms returns what it wrote so far, or `WouldBlock`: the stall.
    bad.set_write_timeout(Some(Duration::from_millis(300)))
        .expect("SO_SNDTIMEO");

    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(encode(&request(&format!("never read {i}"))).expect("encodable"));
    }
    let started = Instant::now();
    let mut written = 0usize;
    let mut offset = 0usize;
    // Write until the writes have stalled (the server stopped reading).
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "writes never stalled: the server kept reading ({written} bytes)"
        );
        let chunk = batch.get(offset..).unwrap_or_default();
        match bad.write(chunk) {
            Ok(n) => {
                written += n;
                offset = (offset + n) % batch.len();
                if n < chunk.len() {
                    break; // a blocking write returns short only when it timed out
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!(
                "write failed before the stall: {e} after {written} bytes, {:?}",
                started.elapsed()
            ),
        }
    }
    let stalled = Instant::now();
    assert!(
        wait_until(Duration::from_secs(2), || server
            .stats
            .snapshot()
            .backpressured
            > 0),
        "the server never paused reading"
    );
    let stats = server.stats.snapshot();
    eprintln!("stalled after writing {written} bytes; {stats:?}");
    assert!(stats.backpressured >= 1);
    assert!(
        stats.max_output_queued <= cap,
        "queued output {} over the cap {cap}",
        stats.max_output_queued
    );
    assert!(stats.max_output_queued > cap / 2, "the queue did fill up");
    // Bounded: the server took only what its buffers and the cap allow.
    assert!(written < 64 * 1024 * 1024, "{written} bytes accepted");

    // Meanwhile another client on the same loop is served normally.
    let requests = (0..5)
        .map(|c| (0..10).map(|r| request(&format!("{c}.{r}"))).collect())
        .collect();
    let outcomes = MultiClient::new(ClientConfig::default())
        .run(server.addr, requests)
        .expect("client loop");
    for (c, outcome) in outcomes.into_iter().enumerate() {
        let answers: Vec<String> = outcome
            .into_result()
            .expect("good client answered")
            .iter()
            .map(result_of)
            .collect();
        let expected: Vec<String> = (0..10).map(|r| format!("echo {c}.{r}")).collect();
        assert_eq!(answers, expected);
    }

    // No progress: closed at the write deadline.
    assert!(
        wait_until(Duration::from_secs(5), || server
            .stats
            .snapshot()
            .closed_write_deadline
            == 1),
        "not closed by the write deadline: {:?}",
        server.stats.snapshot()
    );
    let closed_after = stalled.elapsed();
    assert!(
        closed_after < write_deadline * 3,
        "closed {closed_after:?} after the stall"
    );
    let stats = server.stats.snapshot();
    assert!(stats.max_output_queued <= cap);
    assert_eq!(stats.closed_clean, 5);

    // The peer sees the end: some responses, then end of stream or a reset.
    bad.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0usize;
    let end = loop {
        match bad.read(&mut buf) {
            Ok(0) => break "eof",
            Ok(n) => received += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    };
    eprintln!("the never-reading peer got {received} bytes, then {end}");
    assert!(received < written, "it cannot have been answered in full");
}
