//! What a hostile answer can make the blocking client allocate, measured by the allocator
//! itself: an answer that announces 16 MiB of content and sends a little of it must cost
//! about what was sent, not what was announced; one beyond the client's content limit costs
//! nothing.
//!
//! This test binary installs a counting global allocator and holds a single `#[test]`
//! (with several, the harness allocates for the next test's thread while one measures).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use sockmsg_protocol::{encode, Error, Limits, Message, PeerError};
use sockmsg_tests::alloc::{peak_during, Counting};
use sockmsg_transport_std::{Client, ClientConfig, TransportError};

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: usize = 1024 * 1024;
/// Content bytes the hostile server actually sends.
const SENT: usize = 100 * 1024;

/// A server that answers with a header announcing `announced` content bytes, then `sent`
/// of them, then holds the connection until the client leaves (at most 10 s).
fn hostile_server(announced: usize, sent: usize) -> std::net::SocketAddr {
    let wire = encode(&Message::binary("x/huge", vec![0u8; announced])).expect("encode");
    let header_len = wire.len() - announced;
    let mut reply = wire;
    reply.truncate(header_len + sent);
    reply.shrink_to_fit();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&reply);
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    addr
}

#[test]
fn hostile_answers_cost_what_was_sent_not_what_was_announced() {
    // 16 MiB announced (the default limit), 100 KiB sent, then silence until the deadline.
    let addr = hostile_server(16 * MIB, SENT);
    let mut client = Client::connect(addr, &ClientConfig::default()).expect("connect");
    let (peak, ()) = peak_during(|| {
        let e = client
            .request_within(
                Message::binary("x/q", b"?".to_vec()),
                Duration::from_millis(500),
            )
            .expect_err("the answer never completes");
        assert!(matches!(e, TransportError::Deadline { .. }), "{e:?}");
    });
    eprintln!("16 MiB announced, {SENT} bytes sent: peak {peak} bytes");
    assert!(
        peak < 4 * SENT + 128 * 1024,
        "{peak} bytes allocated for {SENT} received (16 MiB announced)"
    );
    client.close_now();

    // Beyond the client's own content limit: refused at the header, nothing reserved.
    let addr = hostile_server(2 * MIB, 0);
    let config = ClientConfig {
        limits: Limits {
            max_content_len: MIB as u64,
            ..Limits::default()
        },
        ..ClientConfig::default()
    };
    let mut client = Client::connect(addr, &config).expect("connect");
    let (peak, ()) = peak_during(|| {
        let e = client
            .request_within(
                Message::binary("x/q", b"?".to_vec()),
                Duration::from_secs(5),
            )
            .expect_err("too long");
        assert!(
            matches!(
                e.protocol_error(),
                Some(Error::Peer(PeerError::ContentTooLong { .. }))
            ),
            "{e:?}"
        );
    });
    eprintln!("2 MiB announced beyond a 1 MiB limit: peak {peak} bytes");
    assert!(
        peak < 256 * 1024,
        "{peak} bytes allocated for a refused answer"
    );
    client.close_now();
}
