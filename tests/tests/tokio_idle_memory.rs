//! What an idle connection costs the tokio server in memory, counted by the allocator
//! (issue 14: at most 2 KiB per connection): 2,000 loopback connections to a server on a
//! current-thread runtime, fresh and after one request each (whose buffers go back once
//! the connection is idle).
//!
//! This test binary installs a counting global allocator, so it holds a single `#[test]`:
//! the counters are the process's, and the harness allocates for any other test's thread.
//! The allocator counts the sizes asked for; malloc adds its own rounding (8 to 16 bytes a
//! block), which the RSS figures in BENCHMARKS.md include.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Message};
use sockmsg_server::{ServerConfig, Service, ServiceError};
use sockmsg_tests::alloc::{live, Counting};
use sockmsg_transport_tokio::Server;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Connections held open at once (the client's and the server's end of each are in this
/// process: twice as many descriptors).
const CONNECTIONS: usize = 2_000;

/// The target, per connection.
const TARGET: usize = 2048;

/// Every wait of this test ends by this long.
const BOUND: Duration = Duration::from_secs(20);

/// The live heap once it has not moved for a quarter of a second (the server accepting or
/// settling its connections), or after [`BOUND`].
fn settled_heap() -> usize {
    let start = Instant::now();
    let mut last = live();
    let mut still = 0;
    while still < 5 && start.elapsed() < BOUND {
        std::thread::sleep(Duration::from_millis(50));
        let now = live();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// Open files this process may have (Linux: /proc/self/limits), if known.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn an_idle_connection_costs_the_server_at_most_2_kib_fresh_and_after_a_request() {
    // Client and server ends in this process, and some slack for the runtime and harness.
    let n = match open_file_limit() {
        Some(limit) if limit < 2 * CONNECTIONS + 64 => limit.saturating_sub(64) / 2,
        _ => CONNECTIONS,
    };
    assert!(
        n >= 200,
        "too few open files allowed to measure ({n} connections)"
    );
    let service: Arc<dyn Service> = Arc::new(|m: Message| -> Result<Message, ServiceError> {
        Ok(Message::binary("x/answer", m.content().to_vec()))
    });
    let config = ServerConfig::default()
        .with_workers(1)
        .with_max_connections(n + 16);
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
    let (addr, stop): (SocketAddr, _) = (server.local_addr(), server.shutdown_handle());
    let serving = std::thread::spawn(move || server.serve(service));

    let mut clients = Vec::with_capacity(n);
    let request = encode(&Message::binary("x/request", b"ping".to_vec())).expect("encode");
    let mut answer = [0u8; 512];
    let base = settled_heap();
    for _ in 0..n {
        clients.push(TcpStream::connect(addr).expect("connect"));
    }
    let fresh = settled_heap().saturating_sub(base) / n;

    for client in &mut clients {
        client.set_read_timeout(Some(BOUND)).expect("timeout");
        client.write_all(&request).expect("request");
    }
    for client in &mut clients {
        let got = client.read(&mut answer).expect("answer");
        assert!(got > 0, "no answer");
    }
    // An idle connection gives its buffers back shortly after its last answer.
    std::thread::sleep(Duration::from_millis(300));
    let after = settled_heap().saturating_sub(base) / n;

    drop(clients);
    stop.shutdown();
    serving.join().expect("server thread").expect("served");
    eprintln!(
        "heap per idle connection ({n} connections): fresh {fresh} B, after one request {after} B"
    );
    assert!(
        fresh <= TARGET,
        "a fresh idle connection costs {fresh} bytes (target {TARGET})"
    );
    assert!(
        after <= TARGET,
        "an idle connection after one request costs {after} bytes (target {TARGET})"
    );
}
