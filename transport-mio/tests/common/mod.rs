//! Helpers shared by the integration tests: a test service, a running server, waiting.
#![allow(dead_code)]

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use sockmsg_protocol::Message;
use sockmsg_server::{Service, ServiceError};
use sockmsg_transport_mio::{MioOptions, Server, ServerConfig, ShutdownHandle, Stats};

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// JSON `{"action": "search", "value": V}` is answered `{"result": "echo V"}`; binary content
/// `C` is answered `echo:C`, except `fail` (a service error) and `panic` (a panic).
pub fn test_service() -> Arc<dyn Service> {
    Arc::new(|request: Message| -> Result<Message, ServiceError> {
        if request.is_json() {
            let v: serde_json::Value = request.json_content()?;
            let value = v["value"].as_str().unwrap_or_default();
            return Ok(Message::json(
                &json!({ "result": format!("echo {value}") }),
            )?);
        }
        match request.content() {
            b"fail" => Err("the test service fails on request".into()),
            b"panic" => panic!("the test service panics on request"),
            content => {
                let mut answer = b"echo:".to_vec();
                answer.extend_from_slice(content);
                Ok(Message::binary("binary/custom-server-binary-type", answer))
            }
        }
    })
}

/// A search request for `value`.
pub fn request(value: &str) -> Message {
    Message::json(&json!({ "action": "search", "value": value })).expect("encodable")
}

/// The `result` of a JSON response.
pub fn result_of(m: &Message) -> String {
    let v: serde_json::Value = m.json_content().expect("JSON response");
    v["result"].as_str().expect("a result string").to_owned()
}

/// A server running on its own thread; stopped (and joined) on drop.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub stats: Stats,
    pub shutdown: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    pub fn start(config: ServerConfig) -> Running {
        Running::start_with(config, MioOptions::default())
    }

    /// [`Running::start`] with options of the mio transport.
    pub fn start_with(config: ServerConfig, options: MioOptions) -> Running {
        init_tracing();
        let server = Server::bind_with("127.0.0.1:0", config, options).expect("bind on loopback");
        let addr = server.local_addr();
        let stats = server.stats();
        let shutdown = server.shutdown_handle();
        let service = test_service();
        let thread = Some(std::thread::spawn(move || server.serve(service)));
        Running {
            addr,
            stats,
            shutdown,
            thread,
        }
    }

    /// Shuts the server down and waits for `serve` to return (at most 10 s).
    pub fn stop(&mut self) -> io::Result<()> {
        self.shutdown.shutdown();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let started = Instant::now();
        while !thread.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "serve did not return within 10 s of shutdown"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("server thread")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `f` every 5 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads from a blocking `stream` (5 s read timeout) and decodes responses: until `want`
/// have arrived, or with `until_end`, until the stream ends (end of stream or reset).
/// Returns the responses and whether the stream ended.
pub fn read_responses(
    stream: &mut std::net::TcpStream,
    want: usize,
    until_end: bool,
) -> (Vec<Message>, bool) {
    use sockmsg_protocol::{Connection, Event, Limits, Role};
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut decoder = Connection::new(Role::Client, Limits::default());
    let mut got = Vec::new();
    loop {
        loop {
            match decoder.next_event().expect("well-formed responses") {
                Event::Message(m) => got.push(m),
                Event::NeedData => break,
                Event::End => return (got, true),
            }
        }
        assert!(got.len() <= want, "more responses than expected");
        if got.len() == want && !until_end {
            return (got, false);
        }
        // `Ok(0)` records the end of stream.
        match decoder.read_from(stream, std::time::Instant::now()) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("read failed after {} responses: {e}", got.len()),
        }
    }
}
