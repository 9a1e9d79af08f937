//! The async client on loopback, against small servers written with `Framed` + the codec.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sockmsg_protocol::Message;
use sockmsg_transport_tokio::{Client, ClientConfig, ClientError, Codec, Op};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// Every test is over well within this.
const BOUND: Duration = Duration::from_secs(20);

fn request(value: &str) -> Message {
    Message::json(&serde_json::json!({"action": "search", "value": value})).expect("json")
}

/// An echo server for `connections` connections: each message is answered with itself;
/// at the end of a client's stream the server closes its side. Returns how many messages
/// it answered.
async fn echo_server(connections: usize) -> (String, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let mut answered = 0;
        for _ in 0..connections {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut framed = Framed::new(stream, Codec::default());
            while let Some(Ok(m)) = framed.next().await {
                framed.send(m).await.expect("answer");
                answered += 1;
            }
        }
        answered
    });
    (addr, task)
}

#[tokio::test]
async fn request_and_pipelined_answers_come_back_in_order() {
    tokio::time::timeout(BOUND, async {
        let (addr, server) = echo_server(1).await;
        let mut client = Client::connect(addr.as_str(), &ClientConfig::default())
            .await
            .expect("connect");
        let one = client.request(request("ring")).await.expect("answer");
        assert_eq!(one, request("ring"));
        for i in 0..200 {
            client.queue(request(&format!("n{i}"))).expect("queue");
        }
        assert_eq!(client.in_flight(), 200);
        for i in 0..200 {
            let answer = client.recv().await.expect("answer");
            assert_eq!(answer, request(&format!("n{i}")), "answer {i}");
        }
        assert_eq!(client.in_flight(), 0);
        // A large content, both ways.
        let big = Message::binary("binary/custom-client-binary-type", vec![0xA5; 3 << 20]);
        assert_eq!(client.request(big.clone()).await.expect("big"), big);
        client.close().await.expect("close");
        assert_eq!(server.await.expect("server"), 202);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn half_close_still_gets_the_answers_then_a_clean_end() {
    tokio::time::timeout(BOUND, async {
        let (addr, server) = echo_server(1).await;
        let mut client = Client::connect(addr.as_str(), &ClientConfig::default())
            .await
            .expect("connect");
        for v in ["a", "b", "c"] {
            client.queue(request(v)).expect("queue");
        }
        client.shutdown_write().await.expect("half-close");
        let refused = client
            .queue(request("late"))
            .expect_err("sending after shutdown");
        assert_eq!(refused.kind(), "send-after-close", "{refused}");
        for v in ["a", "b", "c"] {
            assert_eq!(client.recv().await.expect("answer"), request(v));
        }
        match client.recv().await {
            Err(ClientError::Closed {
                in_flight: 0,
                addr: a,
            }) => assert_eq!(a, addr),
            other => panic!("expected a clean end, got {other:?}"),
        }
        assert_eq!(server.await.expect("server"), 3);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn host_names_are_resolved() {
    tokio::time::timeout(BOUND, async {
        let (addr, server) = echo_server(1).await;
        let port = addr.rsplit(':').next().expect("port");
        let named = format!("localhost:{port}");
        let mut client = match Client::connect(named.as_str(), &ClientConfig::default()).await {
            Ok(c) => c,
            // localhost may resolve to ::1 first, where nothing listens: every address is
            // tried, so a refusal means none of them answered.
            Err(e) => panic!("connect {named}: {e}"),
        };
        assert!(client.peer_addr().ip().is_loopback());
        assert_eq!(
            client.request(request("x")).await.expect("answer"),
            request("x")
        );
        client.close().await.expect("close");
        assert_eq!(server.await.expect("server"), 1);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn refused_and_unresolvable_addresses_are_named() {
    tokio::time::timeout(BOUND, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let e = Client::connect(addr, &ClientConfig::default())
            .await
            .expect_err("nothing listens");
        assert!(matches!(e, ClientError::Refused { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("connection to {addr} refused"));

        let config = ClientConfig {
            connect_timeout: Some(Duration::from_secs(5)),
            ..ClientConfig::default()
        };
        let e = Client::connect("no-such-host.invalid:65432", &config)
            .await
            .expect_err("unresolvable");
        assert!(matches!(e.kind(), "resolve" | "timeout"), "{e:?}");
        assert_eq!(e.addr(), "no-such-host.invalid:65432");
        assert!(e.to_string().contains("no-such-host.invalid:65432"), "{e}");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_server_that_breaks_the_protocol_or_goes_away_is_a_typed_error() {
    tokio::time::timeout(BOUND, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            // First connection: a header that is not JSON.
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(b"\x00\x03{x}").await.expect("write");
            s.shutdown().await.expect("shutdown");
            // Second: reads the request, closes without answering.
            let (s, _) = listener.accept().await.expect("accept");
            let mut framed = Framed::new(s, Codec::default());
            let got = framed.next().await;
            assert!(matches!(got, Some(Ok(_))), "{got:?}");
            drop(framed);
            // Third: never answers.
            let (s, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(s);
        });
        let mut client = Client::connect(addr.as_str(), &ClientConfig::default())
            .await
            .expect("connect");
        let e = client.request(request("x")).await.expect_err("garbage");
        assert!(matches!(e, ClientError::Protocol { .. }), "{e:?}");
        assert_eq!(e.kind(), "invalid-json");

        let mut client = Client::connect(addr.as_str(), &ClientConfig::default())
            .await
            .expect("connect");
        match client.request(request("x")).await {
            Err(ClientError::Closed { in_flight: 1, .. }) => {}
            // The server may reset as it drops a socket with our bytes unread.
            Err(ClientError::Reset { op: Op::Read, .. }) => {}
            other => panic!("expected the server gone, got {other:?}"),
        }

        let config = ClientConfig {
            read_timeout: Some(Duration::from_millis(200)),
            ..ClientConfig::default()
        };
        let mut client = Client::connect(addr.as_str(), &config)
            .await
            .expect("connect");
        match client.request(request("x")).await {
            Err(ClientError::Timeout {
                op: Op::Read,
                after,
                ..
            }) => assert_eq!(after, Duration::from_millis(200)),
            other => panic!("expected a read timeout, got {other:?}"),
        }
        assert_eq!(client.in_flight(), 1);
        drop(client);
        server.await.expect("server");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_dropped_recv_loses_nothing() {
    tokio::time::timeout(BOUND, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let mut framed = Framed::new(s, Codec::default());
            let m = framed.next().await.expect("request").expect("valid");
            // Answer in two halves, a pause between.
            let wire = sockmsg_protocol::encode(&m).expect("encode");
            let (a, b) = wire.split_at(wire.len() / 2);
            let s = framed.get_mut();
            s.write_all(a).await.expect("first half");
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.write_all(b).await.expect("second half");
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let mut client = Client::connect(addr.as_str(), &ClientConfig::default())
            .await
            .expect("connect");
        client.send(request("halves")).await.expect("send");
        // The first recv is given up after the first half arrived.
        let gave_up = tokio::time::timeout(Duration::from_millis(150), client.recv()).await;
        assert!(gave_up.is_err(), "no whole answer yet: {gave_up:?}");
        assert_eq!(client.recv().await.expect("answer"), request("halves"));
        server.await.expect("server");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn an_answer_dripped_byte_by_byte_ends_at_the_exchange_deadline() {
    tokio::time::timeout(BOUND, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            // A plausible answer, one byte every 50 ms: each wait is short, the whole is not.
            let answer = b"\x00\x50{\"byteorder\": \"little\", \"content-type\": \"text/json\"";
            for b in answer {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let config = ClientConfig {
            read_timeout: Some(Duration::from_secs(5)),
            ..ClientConfig::default()
        };
        let mut client = Client::connect(addr.as_str(), &config)
            .await
            .expect("connect");
        let started = std::time::Instant::now();
        let e = client
            .request_within(request("x"), Duration::from_millis(400))
            .await
            .expect_err("dripped");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        match &e {
            ClientError::Deadline {
                op: Op::Read,
                limit,
                received,
                ..
            } => {
                assert_eq!(*limit, Duration::from_millis(400));
                assert!(*received > 0 && *received < 60, "{received}");
            }
            other => panic!("expected the exchange deadline, got {other:?}"),
        }
        assert_eq!(e.kind(), "deadline");
        assert!(e.is_timeout());
        assert!(e.to_string().contains("the whole exchange"), "{e}");
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_peer_that_does_not_speak_the_protocol_is_named_for_what_it_sent() {
    tokio::time::timeout(BOUND, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await
                .expect("write");
            // Keep the connection open: the client must tell at once, not time out.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut client = Client::connect(addr.as_str(), &ClientConfig::default())
            .await
            .expect("connect");
        let started = std::time::Instant::now();
        let e = client.request(request("x")).await.expect_err("http");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(e, ClientError::Foreign { .. }), "{e:?}");
        assert_eq!(e.kind(), "foreign");
        assert!(
            e.to_string().contains("does not speak this protocol"),
            "{e}"
        );
        assert!(e.to_string().contains("HTTP"), "{e}");
        server.abort();
    })
    .await
    .expect("bounded");
}
