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

/// Serves one connection from `listener`; the error is the program's error line.
async fn serve_one(listener: TcpListener) -> Result<(), String> {
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let (stream, peer) = listener
        .accept()
        .await
        .map_err(|e| format!("accepting on {local}: {e}"))?;
    println!("connected by {peer}");
    let mut framed = Framed::new(stream, Codec::default());
    while let Some(received) = framed.next().await {
        let message = received.map_err(|e| format!("reading from {peer}: {e}"))?;
        println!(
            "echoing {} bytes of {}",
            message.content().len(),
            message.content_type()
        );
        framed
            .send(message)
            .await
            .map_err(|e| format!("writing to {peer}: {e}"))?;
    }
    println!("{peer} closed the connection");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:65432".to_owned());
    let result = match TcpListener::bind(&addr).await {
        Ok(listener) => {
            if let Ok(local) = listener.local_addr() {
                println!("listening on {local}");
            }
            serve_one(listener).await
        }
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    };
    if let Err(line) = result {
        eprintln!("tokio_echo_server: {line}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmsg_protocol::Message;
    use sockmsg_transport_tokio::{Client, ClientConfig};

    #[tokio::test]
    async fn echoes_each_message_then_ends_with_the_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve_one(listener));
        let mut client = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        for text in ["Hello, world", "again"] {
            let m = Message::binary("binary/custom-client-binary-type", text.as_bytes().to_vec());
            assert_eq!(client.request(m.clone()).await.expect("echo"), m);
        }
        client.close().await.expect("close");
        let served = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("bounded");
        assert_eq!(served.expect("task"), Ok(()));
    }
}
