//! Interop with the guide's Python peers, servers started in-process on port 0:
//!
//! * the guide's Python client against the demo application on every transport
//!   ([`Transport::ALL`]), for every demo case, bytes compared with PROTOCOL.md;
//! * the blocking Rust client against the guide's Python server (which closes after
//!   each answer), bytes compared the same way.

use std::sync::Arc;
use std::time::Duration;

use sockmsg_app::demo::{self, DemoService};
use sockmsg_app::serve::{spawn, ServerConfig, Transport};
use sockmsg_protocol::{encode, ByteOrder, Decoder, Event, Limits, Message};
use sockmsg_tests::{
    protocol_examples, protocol_md_path, run_guide_client, GuideServer, TempDir, DEMO_CASES,
    PROTOCOL_EXAMPLES,
};
use sockmsg_transport_std::{Client, ClientConfig};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits a captured stream into its messages (all of it must be whole messages).
fn messages(bytes: &[u8]) -> Vec<Message> {
    let mut decoder = Decoder::new(Limits::default());
    let mut rest = bytes;
    let mut out = Vec::new();
    while let Event::Message(m) = decoder.decode(&mut rest).expect("captured bytes decode") {
        out.push(m);
    }
    decoder.receive_eof();
    assert_eq!(decoder.next_event().expect("ends cleanly"), Event::End);
    out
}

/// The request `case` makes, as the guide's client builds it.
fn case_request(case: &sockmsg_tests::DemoCase) -> Message {
    let m = if case.json_action {
        demo::json_request(case.action, case.value)
    } else {
        demo::request(case.action, case.value)
    };
    match case.byteorder {
        Some("big") => m.with_byteorder(ByteOrder::Big),
        Some(_) => m.with_byteorder(ByteOrder::Little),
        None => m,
    }
}

#[test]
fn protocol_md_examples_are_the_ones_tested() {
    let path = protocol_md_path();
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let found = protocol_examples(&text);
    assert_eq!(found.len(), PROTOCOL_EXAMPLES.len(), "{}", path.display());
    for (doc, ours) in found.iter().zip(PROTOCOL_EXAMPLES) {
        assert_eq!(doc.as_slice(), ours);
    }
    // The header key table and the demo table are there too (the document is the
    // reference the tests and the demo are written from).
    for needle in [
        "| `byteorder` |",
        "| `content-type` |",
        "| `content-encoding` |",
        "| `content-length` |",
        "| `morpheus` | `Follow the white rabbit. \u{1f430}` |",
        "| `ring` | `In the caves beneath the Misty Mountains. \u{1f48d}` |",
        "| `\u{1f436}` | `\u{1f43e} Playing ball! \u{1f3d0}` |",
    ] {
        assert!(text.contains(needle), "{} lacks {needle:?}", path.display());
    }
}

#[test]
fn guide_client_against_the_demo_server_on_every_transport() {
    let dir = TempDir::new("interop-guide-client");
    // Responses are written `little` whatever this machine is, as in PROTOCOL.md.
    let service = DemoService::with_byteorder(ByteOrder::Little);
    for &transport in Transport::ALL {
        let server = spawn(
            transport,
            "127.0.0.1:0".parse().expect("addr"),
            &ServerConfig::default(),
            Arc::new(service),
        )
        .expect("server starts");
        let port = server.addr().port();
        for (i, case) in DEMO_CASES.iter().enumerate() {
            let what = format!("[{transport}] {}", case.name);
            let run = run_guide_client(
                &dir,
                &format!("{transport}-{i}"),
                port,
                case,
                CLIENT_TIMEOUT,
            );
            assert!(
                run.output.status.success(),
                "{what}: {}",
                sockmsg_tests::describe(&run.output)
            );
            assert_eq!(
                String::from_utf8_lossy(&run.output.stdout),
                format!("{}\n", case.stdout),
                "{what}: stdout"
            );
            // What the guide's client sent is what PROTOCOL.md (or our builder) says.
            let request = case_request(case);
            assert_eq!(
                run.sent,
                encode(&request).expect("encode"),
                "{what}: request"
            );
            if let Some(want) = case.request {
                assert_eq!(run.sent, want, "{what}: request == PROTOCOL.md");
            }
            // What it received is, byte for byte, the demo application's response.
            let want = encode(&service.respond(&request).expect("respond")).expect("encode");
            assert_eq!(run.received, want, "{what}: response");
            if let Some(want) = case.response {
                assert_eq!(run.received, want, "{what}: response == PROTOCOL.md");
            }
        }
        server
            .stop(Duration::from_secs(15))
            .expect("server stops gracefully");
    }
}

#[test]
fn rust_client_against_the_guide_server() {
    let dir = TempDir::new("interop-guide-server");
    let server = GuideServer::start(&dir, "guide", &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().expect("addr");
    let config = ClientConfig {
        read_timeout: Some(CLIENT_TIMEOUT),
        write_timeout: Some(CLIENT_TIMEOUT),
        ..ClientConfig::default()
    };
    let mut sent = Vec::new();
    let mut received = Vec::new();
    for case in DEMO_CASES {
        // The guide's server answers one request per connection, then closes.
        let mut client = Client::connect(addr, &config).expect("connect");
        let request = case_request(case);
        sent.extend(encode(&request).expect("encode"));
        let response = client
            .request(request)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(
            demo::result_line(&response).expect("printable"),
            case.stdout,
            "{}",
            case.name
        );
        received.extend(encode(&response).expect("encode"));
        client.close().expect("close after the server's close");
    }
    let log = server.stop();
    let capture_in = std::fs::read(dir.join("guide.in")).expect("capture-in");
    let capture_out = std::fs::read(dir.join("guide.out")).expect("capture-out");
    assert_eq!(capture_in, sent, "the server received exactly what we sent");
    assert_eq!(
        capture_out, received,
        "we decoded exactly what the server sent"
    );
    // Byte for byte against PROTOCOL.md where it gives the bytes.
    let requests = messages(&capture_in);
    let responses = messages(&capture_out);
    assert_eq!(requests.len(), DEMO_CASES.len());
    assert_eq!(responses.len(), DEMO_CASES.len());
    let (mut r_in, mut r_out) = (&capture_in[..], &capture_out[..]);
    for (case, (req, resp)) in DEMO_CASES.iter().zip(requests.iter().zip(&responses)) {
        let req_len = encode(req).expect("encode").len();
        let resp_len = encode(resp).expect("encode").len();
        if let Some(want) = case.request {
            assert_eq!(&r_in[..req_len], want, "{}: request", case.name);
        }
        if let Some(want) = case.response {
            assert_eq!(&r_out[..resp_len], want, "{}: response", case.name);
        }
        r_in = &r_in[req_len..];
        r_out = &r_out[resp_len..];
    }
    assert!(log.contains("closing connection to"), "{log}");
}
