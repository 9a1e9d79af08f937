//! One message per datagram over loopback UDP.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Message, PeerError, Phase};
use sockmsg_server::ServiceError;
use sockmsg_transport_std::{TransportError, UdpEndpoint, MAX_DATAGRAM};

const LIMIT: Duration = Duration::from_secs(5);

fn endpoint() -> UdpEndpoint {
    let mut e = UdpEndpoint::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    e.set_read_timeout(Some(LIMIT)).expect("timeout");
    e
}

fn upper(m: Message) -> Result<Message, ServiceError> {
    Ok(Message::binary("x/upper", m.content().to_ascii_uppercase()))
}

#[test]
fn request_and_response() -> Result<(), TransportError> {
    let mut server = endpoint();
    let server_addr = server.local_addr().expect("addr");
    let serving = thread::spawn(move || -> Result<Vec<SocketAddr>, TransportError> {
        (0..3).map(|_| server.serve_one(&upper)).collect()
    });
    let mut client = endpoint();
    for word in ["ping", "pong", "done"] {
        let answer = client.request(&Message::binary("x/y", word.as_bytes()), server_addr)?;
        assert_eq!(answer.content(), word.to_ascii_uppercase().as_bytes());
    }
    let from = serving.join().expect("server thread")?;
    assert_eq!(from, vec![client.local_addr().expect("addr"); 3]);
    Ok(())
}

fn raw_send(to: SocketAddr, bytes: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.send_to(bytes, to).expect("send");
}

#[test]
fn each_datagram_must_be_exactly_one_message() {
    let mut receiver = endpoint();
    let to = receiver.local_addr().expect("addr");
    let wire = encode(&Message::binary("x/y", b"hello".to_vec())).expect("encode");

    let mut two = wire.clone();
    two.extend_from_slice(&wire);
    raw_send(to, &two);
    match receiver.recv_from() {
        Err(TransportError::TrailingBytes {
            message_len, extra, ..
        }) => {
            assert_eq!(message_len, wire.len());
            assert_eq!(extra, wire.len());
        }
        other => panic!("expected TrailingBytes, got {other:?}"),
    }

    for (cut, phase, missing) in [
        (1, Phase::Protoheader, 1),
        (10, Phase::Header, wire.len() - 5 - 10),
        (wire.len() - 2, Phase::Content, 2),
    ] {
        raw_send(to, &wire[..cut]);
        match receiver.recv_from() {
            Err(TransportError::Protocol { source, .. }) => {
                assert_eq!(
                    source,
                    PeerError::UnexpectedEof { phase, missing },
                    "cut {cut}"
                )
            }
            other => panic!("cut {cut}: expected UnexpectedEof, got {other:?}"),
        }
    }

    raw_send(to, b"");
    assert!(matches!(
        receiver.recv_from(),
        Err(TransportError::Protocol {
            source: sockmsg_protocol::Error::Peer(PeerError::UnexpectedEof {
                phase: Phase::Protoheader,
                missing: 2
            }),
            ..
        })
    ));

    // A good datagram after all the bad ones is received as usual.
    raw_send(to, &wire);
    let (m, _) = receiver.recv_from().expect("good datagram");
    assert_eq!(m.content(), b"hello");
}

#[test]
fn no_answer_is_a_timeout_naming_the_server() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let mut client = endpoint();
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let start = Instant::now();
    match client.request(&Message::binary("x/y", b"?".to_vec()), silent_addr) {
        Err(e @ TransportError::Timeout { .. }) => assert_eq!(e.addr(), silent_addr),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() < LIMIT);
}

#[test]
fn oversized_messages_are_refused_before_sending() {
    let client = endpoint();
    let to = client.local_addr().expect("addr");
    let big = Message::binary("x/y", vec![0; MAX_DATAGRAM]);
    match client.send_to(&big, to) {
        Err(TransportError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput)
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn nobody_listening_is_refused_or_a_timeout() {
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr")
    };
    let mut client = endpoint();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    match client.request(&Message::binary("x/y", b"?".to_vec()), port) {
        // Linux reports the ICMP port unreachable; other systems may stay silent.
        Err(e @ (TransportError::Refused { .. } | TransportError::Timeout { .. })) => {
            assert_eq!(e.addr(), port)
        }
        other => panic!("expected Refused or a timeout, got {other:?}"),
    }
}
