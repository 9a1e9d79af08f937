//! The guide's `echo-client.py`, speaking messages: send `Hello, world`, print what comes
//! back, close. Run `echo_server` first.
//!
//! ```text
//! cargo run -p sockmsg-transport-std --example echo_client [ADDR]   # default 127.0.0.1:65432
//! ```

use std::net::SocketAddr;

use sockmsg_protocol::Message;
use sockmsg_transport_std::{Client, ClientConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:65432".to_owned())
        .parse()?;
    let mut client = match Client::connect(addr, &ClientConfig::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("echo_client: {e} (is echo_server running?)");
            std::process::exit(1);
        }
    };
    let answer = client.request(Message::binary("text/plain", b"Hello, world".to_vec()))?;
    println!("Received {:?}", String::from_utf8_lossy(answer.content()));
    client.close()?;
    Ok(())
}
