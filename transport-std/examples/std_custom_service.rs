//! Your own service on the blocking transport (a thread per connection): word counts.
//!
//! A request's content is text (any content type, UTF-8); the answer is the JSON object
//! `{"lines": L, "words": W, "bytes": B}`. Content that is not UTF-8 makes the service
//! return an error, which closes that connection (the client sees it closed) and leaves
//! the server and its other connections running.
//!
//! The program starts the server on a free loopback port, sends each argument (default:
//! two sample texts) as a request on one connection, prints the answers, then shuts the
//! server down and exits.
//!
//! ```text
//! cargo run -p sockmsg-transport-std --example std_custom_service [TEXT...]
//! ```
//!
//! For a server that keeps running, keep the `Server::bind` and `Server::serve` lines and
//! call `ShutdownHandle::shutdown` from a Ctrl-C handler (see the `threaded_server`
//! example).

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use sockmsg_protocol::Message;
use sockmsg_server::{Service, ServiceError};
use sockmsg_transport_std::{Client, ClientConfig, Server, ServerConfig, ShutdownHandle};

/// The application: stateless, so nothing to share between connection threads.
struct WordCount;

impl Service for WordCount {
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        let text = std::str::from_utf8(request.content())
            .map_err(|e| format!("the request's content is not UTF-8: {e}"))?;
        Ok(Message::json(&json!({
            "lines": text.lines().count(),
            "words": text.split_whitespace().count(),
            "bytes": text.len(),
        }))?)
    }
}

/// A running server and what stops it.
struct Running {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    serving: thread::JoinHandle<std::io::Result<()>>,
}

/// Starts the server on 127.0.0.1, port 0 (a free port), in a thread.
fn start() -> Result<Running, Box<dyn Error>> {
    let config = ServerConfig {
        // Bounded: a client that goes quiet is dropped after 10 s.
        idle_timeout: Some(Duration::from_secs(10)),
        ..ServerConfig::default()
    };
    let server = Server::bind(([127, 0, 0, 1], 0).into(), config)
        .map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    Ok(Running {
        addr: server.local_addr(),
        shutdown: server.shutdown_handle(),
        serving: thread::spawn(move || server.serve(Arc::new(WordCount))),
    })
}

impl Running {
    /// Stops the server and waits for its thread.
    fn stop(self) -> Result<(), Box<dyn Error>> {
        self.shutdown.shutdown();
        let served = self
            .serving
            .join()
            .map_err(|_| "the server thread panicked")?;
        Ok(served.map_err(|e| format!("serve on {}: {e}", self.addr))?)
    }
}

/// Sends each of `texts` to `addr` on one connection; the answers, in order.
fn ask(addr: SocketAddr, texts: &[Vec<u8>]) -> Result<Vec<Value>, Box<dyn Error>> {
    let config = ClientConfig {
        read_timeout: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    };
    let mut client = Client::connect(addr, &config)?;
    let mut answers = Vec::new();
    for text in texts {
        let answer = client
            .request(Message::binary("text/plain", text.clone()))
            .map_err(|e| format!("request to {addr}: {e}"))?;
        answers.push(answer.json_content::<Value>()?);
    }
    client.close()?;
    Ok(answers)
}

/// Starts the server, sends `texts` on one connection, stops the server.
fn run(texts: &[Vec<u8>]) -> Result<Vec<Value>, Box<dyn Error>> {
    let server = start()?;
    let answers = ask(server.addr, texts);
    server.stop()?;
    answers
}

fn main() {
    let mut texts: Vec<Vec<u8>> = std::env::args().skip(1).map(String::into_bytes).collect();
    if texts.is_empty() {
        texts = vec![
            b"Hello, world".to_vec(),
            b"one request,\none answer,\nmany on one connection\n".to_vec(),
        ];
    }
    match run(&texts) {
        Ok(answers) => {
            for (text, answer) in texts.iter().zip(answers) {
                let text = String::from_utf8_lossy(text);
                println!("{} -> {answer}", text.escape_default());
            }
        }
        Err(e) => {
            eprintln!("std_custom_service: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_words_and_bytes_on_one_connection() {
        let answers = run(&[
            b"Hello, world".to_vec(),
            "a b\nc \u{1f436}\n".as_bytes().to_vec(),
            Vec::new(),
        ])
        .expect("the example runs");
        assert_eq!(
            answers,
            [
                json!({"lines": 1, "words": 2, "bytes": 12}),
                json!({"lines": 2, "words": 4, "bytes": 11}),
                json!({"lines": 0, "words": 0, "bytes": 0}),
            ]
        );
    }

    #[test]
    fn content_that_is_not_utf8_closes_that_connection_only() {
        let server = start().expect("the server starts");
        let err = ask(server.addr, &[b"fine".to_vec(), vec![0xff, 0xfe]])
            .expect_err("the second request fails")
            .to_string();
        assert!(err.starts_with("request to 127.0.0.1:"), "{err}");
        // The server goes on: a new connection is answered.
        let answers = ask(server.addr, &[b"still here".to_vec()]).expect("a new connection");
        assert_eq!(answers, [json!({"lines": 1, "words": 2, "bytes": 10})]);
        server.stop().expect("the server stops");
    }
}
