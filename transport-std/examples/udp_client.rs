//! The UDP client of the socket-basics notes, one message per datagram: sends each word
//! (default `hello world exit`) as a request and prints the answer. Run `udp_server` first;
//! without it each request times out after 2 s.
//!
//! ```text
//! cargo run -p sockmsg-transport-std --example udp_client [ADDR] [WORD...]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use sockmsg_protocol::Message;
use sockmsg_transport_std::UdpEndpoint;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:12345".to_owned())
        .parse()?;
    let mut words: Vec<String> = args.collect();
    if words.is_empty() {
        words = ["hello", "world", "exit"].map(String::from).to_vec();
    }
    let local: SocketAddr = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()?;
    let mut endpoint = UdpEndpoint::bind(local)?;
    endpoint.set_read_timeout(Some(Duration::from_secs(2)))?;
    for word in words {
        match endpoint.request(
            &Message::binary("text/plain", word.clone().into_bytes()),
            server,
        ) {
            Ok(answer) => println!("{word} -> {}", String::from_utf8_lossy(answer.content())),
            Err(e) => {
                eprintln!("udp_client: {e}");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
