//! The hand-written JSON paths against serde_json alone, one kind of work at a time, for
//! instruction counts (`valgrind --tool=callgrind target/release/examples/json_cost MODE N`).
//! Modes: `canonical` (the guide's exact header), `flat` (the same keys, compact and
//! reordered), `content` (the search request's JSON content), `content-4k` (a 4 KiB mixed
//! document).
use sockmsg_protocol::{parse_header, Limits, Message};

const CANONICAL: &[u8] = br#"{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", "content-length": 41}"#;
const FLAT: &[u8] = br#"{"content-length":41,"content-encoding":"utf-8","content-type":"text/json","byteorder":"little"}"#;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let limits = Limits::default();
    let mut total = 0u64;
    match mode.as_str() {
        "canonical" | "flat" => {
            let bytes = if mode == "canonical" { CANONICAL } else { FLAT };
            for _ in 0..n {
                let h = parse_header(std::hint::black_box(bytes), &limits).expect("valid");
                total += h.content_length;
            }
        }
        "content" | "content-4k" => {
            let value = if mode == "content" {
                serde_json::json!({"action": "search", "value": "morpheus"})
            } else {
                let item = serde_json::json!({"id": 12345, "name": "caf\u{e9} \"quoted\"", "tags": ["a", "b", "c"], "score": -1.5e-3, "ok": true, "none": null});
                serde_json::Value::Array(vec![item; 24])
            };
            let m = Message::json(&value).expect("serializable");
            for _ in 0..n {
                std::hint::black_box(&m)
                    .validate_json(&limits)
                    .expect("valid");
                total += 1;
            }
            eprintln!("content bytes: {}", m.content().len());
        }
        _ => {
            eprintln!("usage: json_cost canonical|flat|content|content-4k [N]");
            std::process::exit(2);
        }
    }
    println!("{total}");
}
