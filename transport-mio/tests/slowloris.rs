//! Slowloris: peers dribbling one byte every 100 ms are closed by the header deadline while
//! good clients keep getting every answer.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{request, result_of, Running};
use sockmsg_protocol::encode;
use sockmsg_transport_mio::{ClientConfig, MultiClient, ServerConfig};

#[test]
fn slowloris_peers_are_closed_at_the_header_deadline() {
    const SLOW: usize = 20;
    let deadline = Duration::from_secs(1);
    let server = Running::start(ServerConfig {
        workers: 2,
        header_deadline: deadline,
        ..ServerConfig::default()
    });
    let addr = server.addr;

    // Good clients, all the while: rounds of 10 connections x 5 pipelined requests.
    let stop = Arc::new(AtomicBool::new(false));
    let good = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let client = MultiClient::new(ClientConfig {
                pipeline_depth: 2,
                timeout: Duration::from_secs(10),
                ..ClientConfig::default()
            });
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) && rounds < 1_000 {
                let requests = (0..10)
                    .map(|c| {
                        (0..5)
                            .map(|r| request(&format!("{rounds}/{c}/{r}")))
                            .collect()
                    })
                    .collect();
                let outcomes = client.run(addr, requests).expect("client loop");
                for (c, outcome) in outcomes.into_iter().enumerate() {
                    let responses = outcome.into_result().expect("a good client is answered");
                    let answers: Vec<String> = responses.iter().map(result_of).collect();
                    let expected: Vec<String> =
                        (0..5).map(|r| format!("echo {rounds}/{c}/{r}")).collect();
                    assert_eq!(answers, expected);
                }
                rounds += 1;
                thread::sleep(Duration::from_millis(20));
            }
            rounds
        })
    };

    // The slow peers: one byte of a valid request every 100 ms (it would take ~15 s).
    let wire = encode(&request("slowly")).expect("encodable");
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nonblocking(true).expect("non-blocking");
            s
        })
        .collect();
    let started = Instant::now();
    let mut closed_after: Vec<Option<Duration>> = vec![None; SLOW];
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(6) && closed_after.iter().any(Option::is_none) {
        for (s, closed) in slow.iter_mut().zip(closed_after.iter_mut()) {
            if closed.is_some() {
                continue;
            }
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(0) => *closed = Some(started.elapsed()),
                Ok(n) => panic!("a slow peer got {n} bytes of an answer"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if let Some(byte) = wire.get(sent..sent + 1) {
                        if s.write(byte).is_err() {
                            *closed = Some(started.elapsed());
                        }
                    }
                }
                Err(_) => *closed = Some(started.elapsed()),
            }
        }
        sent += 1;
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = good.join().expect("good clients all answered");

    assert!(
        sent < wire.len(),
        "the slow request must still be incomplete"
    );
    for (i, closed) in closed_after.iter().enumerate() {
        let after = closed.unwrap_or_else(|| panic!("slow peer {i} was never closed"));
        assert!(
            after >= deadline - Duration::from_millis(50) && after < deadline * 3,
            "slow peer {i} closed after {after:?}, deadline {deadline:?}"
        );
    }
    let stats = server.stats.snapshot();
    eprintln!("good rounds: {rounds}; {stats:?}");
    assert!(rounds >= 3, "good clients ran {rounds} rounds");
    assert_eq!(stats.closed_header_deadline, SLOW as u64);
    assert_eq!(stats.closed_idle, 0);
    assert_eq!(stats.requests, rounds as u64 * 50);
}
