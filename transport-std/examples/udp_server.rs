//! The UDP server of the socket-basics notes, one message per datagram: answers each
//! request (its content in upper case) and prints it; exits after answering `exit`, or
//! after a minute without requests.
//!
//! ```text
//! cargo run -p sockmsg-transport-std --example udp_server [ADDR]   # default 127.0.0.1:12345
//! cargo run -p sockmsg-transport-std --example udp_client [ADDR] [WORD...]
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sockmsg_protocol::Message;
use sockmsg_server::ServiceError;
use sockmsg_transport_std::UdpEndpoint;

fn main() {
    let arg = std::env::args().nth(1);
    let addr = arg.as_deref().unwrap_or("127.0.0.1:12345");
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("udp_server: address '{addr}': {e} (expected IP:PORT)");
        std::process::exit(2)
    });
    if let Err(e) = run(addr) {
        eprintln!("udp_server: {e}");
        std::process::exit(1);
    }
}

fn run(addr: SocketAddr) -> Result<(), String> {
    let mut endpoint = UdpEndpoint::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    endpoint
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| format!("set a read timeout: {e}"))?;
    let addr = endpoint
        .local_addr()
        .map_err(|e| format!("the address bound for {addr}: {e}"))?;
    println!("listening on {addr} (udp)");

    let exit = Arc::new(AtomicBool::new(false));
    let exit_requested = Arc::clone(&exit);
    let service = move |request: Message| -> Result<Message, ServiceError> {
        println!("received '{}'", String::from_utf8_lossy(request.content()));
        exit_requested.store(request.content() == b"exit", Ordering::SeqCst);
        Ok(Message::binary(
            "text/plain",
            request.content().to_ascii_uppercase(),
        ))
    };
    loop {
        match endpoint.serve_one(&service) {
            Ok(from) => println!("answered {from}"),
            Err(e) if e.is_timeout() => {
                println!("no request for a minute, exiting");
                return Ok(());
            }
            // A bad datagram costs its sender an answer, not the server its life.
            Err(e) => eprintln!("udp_server: {e}"),
        }
        if exit.load(Ordering::SeqCst) {
            println!("exit requested");
            return Ok(());
        }
    }
}
