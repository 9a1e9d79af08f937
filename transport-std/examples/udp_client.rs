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

fn main() {
    let mut args = std::env::args().skip(1);
    let server = args.next();
    let server = server.as_deref().unwrap_or("127.0.0.1:12345");
    let server: SocketAddr = server.parse().unwrap_or_else(|e| {
        eprintln!("udp_client: address '{server}': {e} (expected IP:PORT)");
        std::process::exit(2)
    });
    let mut words: Vec<String> = args.collect();
    if words.is_empty() {
        words = ["hello", "world", "exit"].map(String::from).to_vec();
    }
    if let Err(e) = run(server, words) {
        eprintln!("udp_client: {e}");
        std::process::exit(1);
    }
}

fn run(server: SocketAddr, words: Vec<String>) -> Result<(), String> {
    let local: SocketAddr = if server.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = UdpEndpoint::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    endpoint
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| format!("set a read timeout: {e}"))?;
    for word in words {
        let answer = endpoint
            .request(
                &Message::binary("text/plain", word.clone().into_bytes()),
                server,
            )
            .map_err(|e| e.to_string())?;
        println!("{word} -> {}", String::from_utf8_lossy(answer.content()));
    }
    Ok(())
}
