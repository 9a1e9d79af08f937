//! `Framed` + `StreamExt` / `SinkExt`: a server task and a client on loopback, both plain
//! tokio-util code around [`sockmsg_transport_tokio::Codec`]. The client pipelines three
//! requests with `feed` + `flush`, then reads the answers as a stream.
//!
//! ```sh
//! cargo run -p sockmsg-transport-tokio --example tokio_framed
//! ```

use futures_util::{SinkExt, StreamExt};
use sockmsg_protocol::Message;
use sockmsg_transport_tokio::{Codec, CodecError};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[derive(serde::Deserialize)]
struct Request {
    action: String,
    value: String,
}

/// Answers each request with its value upper-cased, until the client closes.
async fn serve(stream: TcpStream) -> Result<(), CodecError> {
    let mut framed = Framed::new(stream, Codec::default());
    while let Some(request) = framed.next().await {
        let request = request?;
        let answer = match request.json_content::<Request>() {
            Ok(r) => format!("{} {}", r.action, r.value.to_uppercase()),
            Err(e) => format!("bad request: {e}"),
        };
        framed
            .send(Message::json(&serde_json::json!({"result": answer}))?)
            .await?;
    }
    Ok(())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        serve(stream).await.map_err(std::io::Error::other)
    });

    let mut client = Framed::new(TcpStream::connect(addr).await?, Codec::default());
    for value in ["morpheus", "ring", "\u{1f436}"] {
        let request = serde_json::json!({"action": "search", "value": value});
        client.feed(Message::json(&request)?).await?;
    }
    client.flush().await?;
    for _ in 0..3 {
        let answer = client.next().await.ok_or("the server closed early")??;
        println!("{}", String::from_utf8_lossy(answer.content()));
    }
    // Closing our side ends the server's stream: it returns.
    client.close().await?;
    server.await??;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("tokio_framed: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn three_pipelined_requests_are_answered() {
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), super::run()).await;
        assert!(matches!(done, Ok(Ok(()))), "{done:?}");
    }
}
