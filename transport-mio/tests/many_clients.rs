//! 1,000 concurrent clients × 10 pipelined requests each, every answer correct.

mod common;

use std::time::{Duration, Instant};

use common::{request, result_of, wait_until, Running};
use sockmsg_transport_mio::{ClientConfig, MultiClient, ServerConfig};

#[test]
fn thousand_concurrent_clients_ten_requests_each() {
    const CLIENTS: usize = 1_000;
    const REQUESTS: usize = 10;
    let server = Running::start(ServerConfig {
        workers: 2,
        backlog: 4096,
        ..ServerConfig::default()
    });
    let requests = (0..CLIENTS)
        .map(|c| {
            (0..REQUESTS)
                .map(|r| request(&format!("client {c} request {r}")))
                .collect()
        })
        .collect();
    let client = MultiClient::new(ClientConfig {
        pipeline_depth: 4,
        timeout: Duration::from_secs(60),
        ..ClientConfig::default()
    });
    let started = Instant::now();
    let outcomes = client.run(server.addr, requests).expect("client loop");
    let elapsed = started.elapsed();
    assert_eq!(outcomes.len(), CLIENTS);
    for (c, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_complete(), "client {c}: {:?}", outcome.error);
        assert_eq!(outcome.responses.len(), REQUESTS, "client {c}");
        for (r, response) in outcome.responses.iter().enumerate() {
            assert_eq!(
                result_of(response),
                format!("echo client {c} request {r}"),
                "client {c} response {r} answers the wrong request"
            );
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || server.stats.open() == 0),
        "server connections not all closed: {:?}",
        server.stats.snapshot()
    );
    let stats = server.stats.snapshot();
    eprintln!("{CLIENTS} clients x {REQUESTS} requests in {elapsed:?}; {stats:?}");
    assert_eq!(stats.accepted, CLIENTS as u64);
    assert_eq!(stats.requests, (CLIENTS * REQUESTS) as u64);
    // The clients half-close after their last request: each is a clean close.
    assert_eq!(stats.closed_clean, CLIENTS as u64);
    assert_eq!(stats.closed(), CLIENTS as u64);
    // Every client connects before any sends: they are open at the same time.
    assert!(stats.max_open >= CLIENTS / 2, "max open {}", stats.max_open);
}
