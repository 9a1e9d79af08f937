//! The servers' read path for one 16 MiB message, on a loopback socket: the receiving
//! thread's CPU time per message for a `Connection` read as the mio and std servers read
//! it (`read_buf` + `commit`, the servers' 4 KiB read-buffer size; the tokio server reads a
//! large content with `read_spare_from` and tokio's `poll_read_buf`), against a
//! straightforward reader that reserves the announced length up front and reads into it,
//! and the floor: reads into one reused buffer of the message's size, no decoder. Two safe
//! ways to read a std socket into memory never zeroed, evaluated for the std and mio
//! servers (issue 14, "i14-large2") and not adopted: `spare`, `read_spare_from` with
//! `std`'s `read_to_end` into the piece (a 1-byte peek to wait, as the std server does,
//! then non-blocking until `WouldBlock`), and `bufwriter`, pieces as `BufWriter` buffers
//! that `io::copy` fills with one read per wake-up, taken out with `into_parts` (the
//! header read as `upfront` does). A writer thread sends the same encoded message over and
//! over. `reuse` is `sockmsg` on a connection that keeps the pieces of the messages it
//! dropped for the next (`Connection::with_piece_reuse`, as the servers' sessions do): from
//! the second message on, its full-size pieces are memory already mapped and written.
//! Interleaved rounds, a new connection per round and variant; medians (issue 14,
//! BENCHMARKS.md):
//!
//! ```sh
//! cargo build --release -p sockmsg-protocol --example large_socket
//! target/release/examples/large_socket [ROUNDS] [MESSAGES] [floor|upfront|sockmsg|reuse|spare|bufwriter]
//! ```
use std::hint::black_box;
use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use sockmsg_protocol::{encode, Connection, Event, Limits, Message, ReadSpare, Role};

const LEN: usize = 16 * 1024 * 1024;

/// This thread's CPU time in nanoseconds.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0)
}

/// A std socket lent a piece: `read` blocking, the piece read non-blocking into its
/// spare capacity with `std`'s own uninitialised reads (the route evaluated for the std
/// and mio servers, not adopted).
struct Spare<'a>(&'a TcpStream);

impl Read for Spare<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&mut &*self.0).read(buf)
    }
}

impl ReadSpare for Spare<'_> {
    fn read_spare(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        // `std` reads into the spare capacity itself, through `read_to_end` only, which
        // reads until `WouldBlock` (so non-blocking for the call), starting at 8 KiB and
        // doubling while reads come back full.
        let before = buf.len();
        self.0.set_nonblocking(true)?;
        let read = self.0.take(limit as u64).read_to_end(buf);
        self.0.set_nonblocking(false)?;
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && buf.len() > before => {
                Ok(buf.len() - before)
            }
            other => other,
        }
    }
}

/// A `BufWriter`'s inner writer that takes nothing: its buffer is the piece, and a flush
/// (the buffer has less than 8 KiB left) fails, keeping every byte.
struct Full;

impl Write for Full {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("full"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
        "bufwriter" => {
            for _ in 0..count {
                let len = read_content_length(stream);
                let mut pieces: Vec<Vec<u8>> = Vec::new();
                let mut filled = 0;
                while filled < len {
                    let size = filled.clamp(65536, 1 << 20).min(len - filled);
                    let mut bw = BufWriter::with_capacity(size, Full);
                    while size - bw.buffer().len() >= 8192 {
                        stream.peek(&mut [0u8; 1]).expect("peek");
                        stream.set_nonblocking(true).expect("non-blocking");
                        let left = (size - bw.buffer().len()) as u64;
                        // Ends at `WouldBlock`, at the limit, or at "full".
                        let _ = io::copy(&mut (&*stream).take(left), &mut bw);
                        stream.set_nonblocking(false).expect("blocking");
                    }
                    let (_, buf) = bw.into_parts();
                    let mut piece = buf.expect("no panic");
                    // The last bytes (under 8 KiB) through a zeroed slice.
                    let at = piece.len();
                    piece.resize(size, 0);
                    stream.read_exact(&mut piece[at..]).expect("tail");
                    pieces.push(piece);
                    filled += size;
                }
                total += black_box(pieces).iter().map(Vec::len).sum::<usize>();
            }
        }
        "upfront" => {
            for _ in 0..count {
                let len = read_content_length(stream);
                let mut content = Vec::with_capacity(len);
                (&mut *stream)
                    .take(len as u64)
                    .read_to_end(&mut content)
                    .expect("content");
                total += black_box(content).len();
            }
        }
        "spare" => {
            total = drain_connection(
                Connection::new(Role::Server, Limits::default()),
                count,
                |conn| {
                    assert!(stream.peek(&mut [0u8; 1]).expect("peek") > 0, "closed");
                    let n = conn
                        .read_spare_from(&mut Spare(stream), Instant::now())
                        .expect("read");
                    assert!(n > 0, "closed early");
                },
            );
        }
        _ => {
            let conn = Connection::new(Role::Server, Limits::default())
                .with_piece_reuse(variant == "reuse");
            let now = Instant::now();
            total = drain_connection(conn, count, |conn| {
                let buf = conn.read_buf();
                let n = stream.read(buf).expect("read");
                assert!(n > 0, "closed early");
                conn.commit(n, now).expect("within the slice");
            });
        }
    }
    total
}

/// Reads a message's protoheader and JSON header from `stream` (the straightforward
/// way: `read_exact`, `serde_json::Value`); its content length.
fn read_content_length(stream: &mut TcpStream) -> usize {
    let mut ph = [0u8; 2];
    stream.read_exact(&mut ph).expect("protoheader");
    let mut header = vec![0u8; usize::from(u16::from_be_bytes(ph))];
    stream.read_exact(&mut header).expect("header");
    let v: serde_json::Value = serde_json::from_slice(&header).expect("json");
    v["content-length"].as_u64().expect("length") as usize
}

/// Takes `count` messages from `conn` (the servers' 4 KiB read-buffer size), each dropped
/// as it comes, calling `read` whenever it needs bytes; content bytes in all.
fn drain_connection(
    conn: Connection,
    count: usize,
    mut read: impl FnMut(&mut Connection),
) -> usize {
    let mut conn = conn.with_read_buf_size(4096);
    let (mut got, mut total) = (0, 0);
    while got < count {
        match conn.next_event().expect("valid") {
            Event::Message(m) => {
                total += m.content_len();
                black_box(m);
                got += 1;
            }
            _ => read(&mut conn),
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
    let variants: Vec<&str> = ["floor", "upfront", "sockmsg", "reuse", "spare", "bufwriter"]
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
