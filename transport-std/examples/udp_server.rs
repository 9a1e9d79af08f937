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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:12345".to_owned())
        .parse()?;
    let mut endpoint = UdpEndpoint::bind(addr)?;
    endpoint.set_read_timeout(Some(Duration::from_secs(60)))?;
    println!("listening on {} (udp)", endpoint.local_addr()?);

    let exit = Arc::new(AtomicBool::new(false));
    let exit_requested = Arc::clone(&exit);
    let service = move |request: Message| -> Result<Message, ServiceError> {
        println!("received {:?}", String::from_utf8_lossy(request.content()));
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
