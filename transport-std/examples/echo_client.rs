//! The guide's `echo-client.py`, speaking messages: send `Hello, world`, print what comes
//! back, close. Run `echo_server` first.
//!
//! ```text
//! cargo run -p sockmsg-transport-std --example echo_client [ADDR]   # default 127.0.0.1:65432
//! ```

use std::net::SocketAddr;

use sockmsg_protocol::Message;
use sockmsg_transport_std::{Client, ClientConfig};

fn main() {
    let arg = std::env::args().nth(1);
    let addr = arg.as_deref().unwrap_or("127.0.0.1:65432");
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("echo_client: address '{addr}': {e} (expected IP:PORT)");
        std::process::exit(2)
    });
    if let Err(e) = run(addr) {
        eprintln!("echo_client: {e}");
        std::process::exit(1);
    }
}

fn run(addr: SocketAddr) -> Result<(), String> {
    let mut client = Client::connect(addr, &ClientConfig::default())
        .map_err(|e| format!("{e} (is echo_server running?)"))?;
    let answer = client
        .request(Message::binary("text/plain", b"Hello, world".to_vec()))
        .map_err(|e| e.to_string())?;
    println!("Received '{}'", String::from_utf8_lossy(answer.content()));
    client.close().map_err(|e| e.to_string())
}
