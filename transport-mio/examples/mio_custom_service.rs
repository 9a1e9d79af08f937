//! Your own service on the mio (event-loop) transport: a shared tally.
//!
//! A request is the JSON object `{"add": NAME, "n": N}`; the answer is
//! `{"name": NAME, "total": T}`, T being the sum of every N added to NAME so far, by any
//! client. A request that is not such an object is answered `{"error": WHY}`; returning
//! an `Err` from the service instead would close that client's connection.
//!
//! The program starts the server on a free loopback port, sends requests over three
//! connections at once (pipelined, with the crate's `MultiClient`), prints the answers,
//! then shuts the server down and exits.
//!
//! ```text
//! cargo run -p sockmsg-transport-mio --example mio_custom_service
//! ```
//!
//! For a server that keeps running, keep the `Server::bind` and `Server::serve` lines and
//! call `ShutdownHandle::shutdown` from a Ctrl-C handler (as `app-server` does).

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{json, Value};
use sockmsg_protocol::Message;
use sockmsg_server::{Service, ServiceError};
use sockmsg_transport_mio::{multi_request, Server, ServerConfig};

/// The application. The transport calls it from its event-loop threads, so its state is
/// behind a `Mutex` (a `Service` is `Send + Sync`).
#[derive(Default)]
struct Tally {
    totals: Mutex<HashMap<String, i64>>,
}

impl Service for Tally {
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        let answer = match parse(&request) {
            Ok((name, n)) => {
                // A poisoned lock only means another call panicked: the map is still whole.
                let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
                let total = totals.entry(name.clone()).or_insert(0);
                *total = total.saturating_add(n);
                json!({"name": name, "total": *total})
            }
            Err(why) => json!({ "error": why }),
        };
        Ok(Message::json(&answer)?)
    }
}

/// `{"add": NAME, "n": N}` as (NAME, N), or why the request is not that.
fn parse(request: &Message) -> Result<(String, i64), String> {
    if !request.is_json() {
        return Err(format!(
            "expected text/json, got {}",
            request.content_type()
        ));
    }
    let value: Value = request.json_content().map_err(|e| e.to_string())?;
    let name = value.get("add").and_then(Value::as_str);
    let n = value.get("n").and_then(Value::as_i64);
    match (name, n) {
        (Some(name), Some(n)) => Ok((name.to_owned(), n)),
        _ => Err("expected {\"add\": NAME, \"n\": INTEGER}".to_owned()),
    }
}

/// Runs the server on 127.0.0.1 port 0, sends `requests` (one list per connection), stops
/// the server; returns the JSON answers of each connection, in order.
fn run(requests: Vec<Vec<Value>>) -> Result<Vec<Vec<Value>>, Box<dyn Error>> {
    let config = ServerConfig {
        workers: 1,
        ..ServerConfig::default()
    };
    let server =
        Server::bind("127.0.0.1:0", config).map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve(Arc::new(Tally::default())));

    let messages = requests
        .iter()
        .map(|list| list.iter().map(Message::json).collect())
        .collect::<Result<Vec<Vec<Message>>, _>>()?;
    // Up to 4 requests in flight per connection; the answers still come back in order.
    let outcome = multi_request(addr, messages, 4);
    shutdown.shutdown();
    let served = serving.join().map_err(|_| "the server thread panicked")?;
    served.map_err(|e| format!("serve on {addr}: {e}"))?;

    let mut answers = Vec::new();
    for (i, connection) in outcome
        .map_err(|e| format!("client loop: {e}"))?
        .into_iter()
        .enumerate()
    {
        let responses = connection.map_err(|e| format!("connection {i} to {addr}: {e}"))?;
        answers.push(
            responses
                .iter()
                .map(|m| m.json_content::<Value>())
                .collect::<Result<Vec<Value>, _>>()?,
        );
    }
    Ok(answers)
}

/// Three connections, each adding to the same two names.
fn requests() -> Vec<Vec<Value>> {
    (1..=3)
        .map(|i| {
            vec![
                json!({"add": "apples", "n": i}),
                json!({"add": "pears", "n": 10 * i}),
            ]
        })
        .collect()
}

fn main() {
    match run(requests()) {
        Ok(answers) => {
            for (i, list) in answers.iter().enumerate() {
                for answer in list {
                    println!("connection {i}: {answer}");
                }
            }
        }
        Err(e) => {
            eprintln!("mio_custom_service: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_counted_once_whatever_the_interleaving() {
        let answers = run(requests()).expect("the example runs");
        assert_eq!(answers.len(), 3);
        // Connections run concurrently, so each total depends on the order; the last
        // total seen for each name is the sum of all its additions.
        let mut last = HashMap::new();
        for list in &answers {
            assert_eq!(list.len(), 2);
            for answer in list {
                let name = answer["name"].as_str().expect("a name").to_owned();
                let total = answer["total"].as_i64().expect("a total");
                let seen = last.entry(name).or_insert(0);
                *seen = total.max(*seen);
            }
        }
        assert_eq!(last.get("apples"), Some(&6));
        assert_eq!(last.get("pears"), Some(&60));
    }

    #[test]
    fn a_bad_request_gets_an_error_answer_and_the_connection_goes_on() {
        let answers = run(vec![vec![
            json!({"add": "apples"}),
            json!(["not", "an", "object"]),
            json!({"add": "apples", "n": 2}),
        ]])
        .expect("the example runs");
        let list = answers.first().expect("one connection");
        assert_eq!(
            list.first()
                .and_then(|a| a.get("error"))
                .and_then(Value::as_str),
            Some("expected {\"add\": NAME, \"n\": INTEGER}")
        );
        assert!(list.get(1).and_then(|a| a.get("error")).is_some());
        assert_eq!(list.get(2), Some(&json!({"name": "apples", "total": 2})));
    }
}
