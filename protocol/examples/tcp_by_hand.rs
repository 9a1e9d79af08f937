//! The protocol crate driven by hand over a `std::net::TcpStream`, no transport crate: one
//! search request to `app-server` (127.0.0.1:65432 unless ADDR is given), its answer printed.
//! `cargo run -p sockmsg-protocol --example tcp_by_hand [ADDR [VALUE]]`
use serde_json::{json, Value};
use sockmsg_protocol::{Connection, Event, Message};
use std::{net::TcpStream, time::Duration, time::Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Connects to `addr`, sends `{"action": "search", "value": VALUE}`, returns the answer.
fn search(addr: &str, value: &str) -> Res<Value> {
    let io = |what: &str, e: std::io::Error| format!("{what} {addr}: {e}");
    let mut stream = TcpStream::connect(addr).map_err(|e| io("connect to", e))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = Connection::client(); // the sans-IO state machine: bytes in and out
    let request = Message::json(&json!({"action": "search", "value": value}))?;
    conn.send(request, Instant::now())?; // `now` drives the core's deadlines, if any
    while conn.wants_write() {
        conn.write_to(&mut stream, Instant::now())
            .map_err(|e| io("send to", e))?;
    }
    loop {
        match conn.next_event()? {
            Event::Message(answer) => return Ok(answer.json_content()?),
            Event::End => return Err(format!("{addr} closed without answering").into()),
            Event::NeedData => drop(
                conn.read_from(&mut stream, Instant::now())
                    .map_err(|e| io("read", e))?,
            ),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:65432".to_owned());
    let value = args.next().unwrap_or_else(|| "morpheus".to_owned());
    let answer = search(&addr, &value).unwrap_or_else(|e| {
        eprintln!("tcp_by_hand: {e}");
        std::process::exit(1)
    });
    println!("{answer}");
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A one-shot server, also by hand: reads one request, answers the demo's way for
    /// `morpheus` (PROTOCOL.md), closes.
    fn one_shot_server() -> Res<(String, thread::JoinHandle<Res<()>>)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let serving = thread::spawn(move || -> Res<()> {
            let (mut stream, _) = listener.accept()?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut conn = Connection::server();
            let request = loop {
                match conn.next_event()? {
                    Event::Message(m) => break m,
                    Event::End => return Err("client closed".into()),
                    Event::NeedData => drop(conn.read_from(&mut stream, Instant::now())?),
                }
            };
            let value: Value = request.json_content()?;
            let result = match value.get("value").and_then(Value::as_str) {
                Some("morpheus") => "Follow the white rabbit. \u{1f430}".to_owned(),
                other => format!("No match for \"{}\".", other.unwrap_or_default()),
            };
            conn.send(Message::json(&json!({ "result": result }))?, Instant::now())?;
            while conn.wants_write() {
                conn.write_to(&mut stream, Instant::now())?;
            }
            Ok(())
        });
        Ok((addr, serving))
    }

    #[test]
    fn a_search_by_hand_gets_its_answer() {
        for (value, result) in [
            ("morpheus", "Follow the white rabbit. \u{1f430}"),
            ("\u{1f436}?", "No match for \"\u{1f436}?\"."),
        ] {
            let (addr, serving) = one_shot_server().expect("server");
            let answer = search(&addr, value).expect("an answer");
            assert_eq!(answer, json!({ "result": result }));
            serving.join().expect("server thread").expect("server");
        }
    }

    #[test]
    fn a_refused_connection_names_the_address() {
        // A port just freed: nothing listens there (loopback only).
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .to_string();
        let err = search(&addr, "morpheus").expect_err("refused").to_string();
        assert!(err.starts_with(&format!("connect to {addr}: ")), "{err}");
    }
}
