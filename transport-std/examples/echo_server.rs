//! The guide's `echo-server.py`, speaking messages: accept one connection, send every
//! message back unchanged, exit when the client closes.
//!
//! ```text
//! cargo run -p sockmsg-transport-std --example echo_server [ADDR]   # default 127.0.0.1:65432
//! cargo run -p sockmsg-transport-std --example echo_client [ADDR]
//! ```

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use sockmsg_protocol::Connection;
use sockmsg_transport_std::Framed;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:65432".to_owned())
        .parse()?;
    let listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    let (conn, peer) = listener.accept()?;
    println!("Connected by {peer}");
    // Give up on a client that goes silent for a minute.
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut framed = Framed::new(conn, Connection::server(), peer)
        .with_timeouts(Some(Duration::from_secs(60)), None);
    // `recv` gives None when the client closes: the guide's `if not data: break`.
    while let Some(message) = framed.recv()? {
        println!(
            "echoing a {} message of {} bytes",
            message.content_type(),
            message.content().len()
        );
        framed.send(message)?;
    }
    println!("{peer} closed the connection");
    Ok(())
}
