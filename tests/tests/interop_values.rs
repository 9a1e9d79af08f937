//! Python-exact answers: JSON requests of every kind of value sent to the guide's Python
//! server (over loopback, one connection per request, as it closes after each answer) and
//! to the demo service; the answers must be the same bytes, and the guide server's log
//! line `received request {repr}` must be the demo's `repr()` of the request.

use std::time::Duration;

use sockmsg_demo::{pyfmt::PyJson, DemoService};
use sockmsg_protocol::{ByteOrder, Message};
use sockmsg_tests::{GuideServer, TempDir};
use sockmsg_transport_std::{Client, ClientConfig};

/// Requests whose answers show values through `Error: invalid action "{action}".` (any
/// value, since Python only compares it) or `No match for "{value}".` (hashable values
/// only: a list or dict makes the guide's server fail).
const CASES: &[&str] = &[
    r#"{"action": "search", "value": 123456789012345678901234567890}"#,
    r#"{"action": "search", "value": -123456789012345678901234567890}"#,
    r#"{"action": "search", "value": 18446744073709551616}"#,
    r#"{"action": "search", "value": -9223372036854775809}"#,
    r#"{"action": "search", "value": -0}"#,
    r#"{"action": "search", "value": 1e15}"#,
    r#"{"action": "search", "value": 1.0}"#,
    r#"{"action": "search", "value": -0.0}"#,
    r#"{"action": "search", "value": 1e400}"#,
    r#"{"action": [123456789012345678901234567890, -123456789012345678901234567890, 1e15, 1.0, -0.0]}"#,
    r#"{"action": [0.1, 1e16, 1e-5, 1E400, -1e400, 5e-324, 0.000, 1.50, 2E3, 123456789012345.6, 1234567890123456.7, 0.30000000000000004]}"#,
    r#"{"action": {"a": 1, "b": [true, false, null], "a": {"x": "it's", "y": "q\"", "z": "both'\""}, "\u0061": 7}}"#,
    r#"{"action": {"k": {"k": 1, "j": 2, "k": [3]}, "z": {}, "k": {"j": 4, "k": 5, "j": 6}}}"#,
    r#"{"action": ["\u0000\u001f\u007f\u0085\u00a0\u00ad\u2028\ufeff\ud83d\ude00\ud800x\udfff", "\\", "\t\n\r\b\f", "é", "😀", "\u001b[31m"]}"#,
    r#"{"action": [[[[[]]]], {"": {"": {"": [{}]}}}], "value": 1}"#,
    r#"{"action": ["\ud800\udfff \u0378 \u1f99 \ue000 \u3000 \u061c \ud83e\udef0 \ud83e\udefa \u0600 \ud80d\udc30"]}"#,
    r#"{"action": 1.0}"#,
    r#"{"action": "find", "action": "search", "value": "ring"}"#,
    r#"{"action": "search", "value": "x", "value": "ring"}"#,
    r#"{"value": "🐶", "action": "se\u0061rch"}"#,
    r#"{"action": "search", "value": "\u001b[31mred\n"}"#,
];

#[test]
fn python_exact_values_against_the_guide_server() {
    let dir = TempDir::new("interop-values");
    let server = GuideServer::start(&dir, "values", &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().expect("addr");
    let config = ClientConfig {
        read_timeout: Some(Duration::from_secs(10)),
        write_timeout: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    };
    let service = DemoService::with_byteorder(ByteOrder::Little);
    for json in CASES {
        let request =
            Message::from_parts("text/json".into(), "utf-8".into(), json.as_bytes().to_vec());
        let mut client = Client::connect(addr, &config).expect("connect");
        let python = client
            .request(request.clone())
            .unwrap_or_else(|e| panic!("{json}: the guide server gave no answer: {e}"));
        let ours = service.respond(&request).expect("the demo answers");
        assert_eq!(
            String::from_utf8_lossy(ours.content()),
            String::from_utf8_lossy(python.content()),
            "{json}"
        );
        assert_eq!(ours, python, "{json}: whole message");
        let _ = client.close();
    }
    let log = server.stop();
    let logged: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("received request "))
        .filter_map(|l| l.rsplit_once(" from ('127.0.0.1', ").map(|(repr, _)| repr))
        .collect();
    assert_eq!(logged.len(), CASES.len(), "{log}");
    for (json, python_repr) in CASES.iter().zip(logged) {
        let doc = PyJson::parse(json, 32).expect("JSON");
        assert_eq!(doc.root().py_repr(), python_repr, "{json}");
    }
}
