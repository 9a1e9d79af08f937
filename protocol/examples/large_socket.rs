//! The servers' read path for one 16 MiB message, on a loopback socket: the receiving
//! thread's CPU time per message for a `Connection` read as the mio, std and tokio servers
//! read it (`read_buf` + `commit`, the servers' 4 KiB read-buffer size), against a
//! straightforward reader that reserves the announced length up front and reads into it,
//! and the floor: reads into one reused buffer of the message's size, no decoder. A
//! writer thread sends the same encoded message over and over. Interleaved rounds, a new
//! connection per round and variant; medians (issue 14, BENCHMARKS.md):
//!
//! ```sh
//! cargo build --release -p sockmsg-protocol --example large_socket
//! target/release/examples/large_socket [ROUNDS] [MESSAGES] [floor|upfront|sockmsg]
//! ```
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use sockmsg_protocol::{encode, Connection, Event, Limits, Message, Role};

const LEN: usize = 16 * 1024 * 1024;

/// This thread's CPU time in nanoseconds.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0)
}

/// Receives `count` messages from `stream` the way `variant` does; content bytes in all.
fn receive(variant: &str, stream: &mut TcpStream, count: usize, wire_len: usize) -> usize {
    let mut total = 0;
    match variant {
        "floor" => {
            let mut buf = vec![0u8; wire_len];
            for _ in 0..count {
                let mut at = 0;
                while at < wire_len {
                    let n = stream.read(&mut buf[at..]).expect("read");
                    assert!(n > 0, "closed early");
                    at += n;
                }
                total += black_box(&buf).len() - (wire_len - LEN);
            }
        }
        "upfront" => {
            for _ in 0..count {
                let mut ph = [0u8; 2];
                stream.read_exact(&mut ph).expect("protoheader");
                let mut header = vec![0u8; usize::from(u16::from_be_bytes(ph))];
                stream.read_exact(&mut header).expect("header");
                let v: serde_json::Value = serde_json::from_slice(&header).expect("json");
                let len = v["content-length"].as_u64().expect("length") as usize;
                let mut content = Vec::with_capacity(len);
                (&mut *stream)
                    .take(len as u64)
                    .read_to_end(&mut content)
                    .expect("content");
                total += black_box(content).len();
            }
        }
        _ => {
            let mut conn =
                Connection::new(Role::Server, Limits::default()).with_read_buf_size(4096);
            let now = Instant::now();
            let mut got = 0;
            while got < count {
                match conn.next_event().expect("valid") {
                    Event::Message(m) => {
                        total += m.content_len();
                        black_box(m);
                        got += 1;
                    }
                    _ => {
                        let buf = conn.read_buf();
                        let n = stream.read(buf).expect("read");
                        assert!(n > 0, "closed early");
                        conn.commit(n, now).expect("within the slice");
                    }
                }
            }
        }
    }
    total
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let wire = encode(&Message::binary("x/y", vec![0x5a; LEN])).expect("encodable");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let only = args.next();
    let variants: Vec<&str> = ["floor", "upfront", "sockmsg"]
        .into_iter()
        .filter(|v| only.as_deref().map_or(true, |o| o == *v))
        .collect();
    let mut cpu = vec![Vec::new(); variants.len()];
    let mut wall = vec![Vec::new(); variants.len()];
    for round in 0..=rounds {
        for (i, variant) in variants.iter().enumerate() {
            let sender = {
                let wire = wire.clone();
                thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    for _ in 0..count {
                        s.write_all(&wire).expect("write");
                    }
                })
            };
            let (mut stream, _) = listener.accept().expect("accept");
            let (c0, t0) = (cpu_ns(), Instant::now());
            let total = receive(variant, &mut stream, count, wire.len());
            let (c1, t1) = (cpu_ns(), t0.elapsed());
            sender.join().expect("sender");
            assert_eq!(total, LEN * count);
            if round > 0 {
                // Round 0 warms up.
                cpu[i].push((c1 - c0) as f64 / count as f64);
                wall[i].push(t1.as_nanos() as f64 / count as f64);
            }
        }
    }
    let floor = cpu.first().map_or(0.0, |c| median(&mut c.clone()));
    println!("16 MiB over loopback, {rounds} rounds x {count} messages; receiver CPU per message (median), wall, floor / this");
    for (i, variant) in variants.iter().enumerate() {
        let c = median(&mut cpu[i]);
        println!(
            "{variant:8} cpu {:7.0} us  wall {:7.0} us  {:.2}x",
            c / 1e3,
            median(&mut wall[i]) / 1e3,
            floor / c
        );
    }
}
