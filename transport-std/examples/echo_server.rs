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

fn main() {
    let arg = std::env::args().nth(1);
    let addr = arg.as_deref().unwrap_or("127.0.0.1:65432");
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("echo_server: address '{addr}': {e} (expected IP:PORT)");
        std::process::exit(2)
    });
    if let Err(e) = run(addr) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn run(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("the address bound for {addr}: {e}"))?;
    println!("listening on {addr}");
    let (conn, peer) = listener
        .accept()
        .map_err(|e| format!("accept on {addr}: {e}"))?;
    println!("Connected by {peer}");
    // Give up on a client that goes silent for a minute.
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| format!("set a read timeout for {peer}: {e}"))?;
    let mut framed = Framed::new(conn, Connection::server(), peer)
        .with_timeouts(Some(Duration::from_secs(60)), None);
    // `recv` gives None when the client closes: the guide's `if not data: break`.
    while let Some(message) = framed.recv().map_err(|e| e.to_string())? {
        println!(
            "echoing a {} message of {} bytes",
            message.content_type(),
            message.content().len()
        );
        framed.send(message).map_err(|e| e.to_string())?;
    }
    println!("{peer} closed the connection");
    Ok(())
}
