//! The guide's echo server on tokio: accepts one connection, answers every message with
//! itself until the client closes, then exits.
//!
//! ```sh
//! cargo run -p sockmsg-transport-tokio --example tokio_echo_server -- 127.0.0.1:65432
//! cargo run -p sockmsg-transport-tokio --example tokio_echo_client -- 127.0.0.1:65432 "Hello, world"
//! ```

use futures_util::{SinkExt, StreamExt};
use sockmsg_transport_tokio::Codec;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:65432".to_owned());
    let fail = |what: &str, why: &dyn std::fmt::Display| -> ! {
        eprintln!("tokio_echo_server: {what}: {why}");
        std::process::exit(1)
    };
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => fail(&format!("cannot listen on {addr}"), &e),
    };
    let local = listener
        .local_addr()
        .map_or(addr.clone(), |a| a.to_string());
    println!("listening on {local}");
    let (stream, peer) = match listener.accept().await {
        Ok(accepted) => accepted,
        Err(e) => fail(&format!("accepting on {local}"), &e),
    };
    println!("connected by {peer}");
    let mut framed = Framed::new(stream, Codec::default());
    while let Some(received) = framed.next().await {
        let message = match received {
            Ok(m) => m,
            Err(e) => fail(&format!("reading from {peer}"), &e),
        };
        println!(
            "echoing {} bytes of {}",
            message.content().len(),
            message.content_type()
        );
        if let Err(e) = framed.send(message).await {
            fail(&format!("writing to {peer}"), &e);
        }
    }
    println!("{peer} closed the connection");
}
