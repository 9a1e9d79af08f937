//! The guide's echo client on tokio: sends one message, prints the echo, closes.
//!
//! ```sh
//! cargo run -p sockmsg-transport-tokio --example tokio_echo_client -- 127.0.0.1:65432 "Hello, world"
//! ```

use sockmsg_protocol::Message;
use sockmsg_transport_tokio::{Client, ClientConfig, ClientError};

/// Sends `text` to the echo server at `addr`; returns the echo.
async fn echo(addr: &str, text: &str) -> Result<Vec<u8>, ClientError> {
    let mut client = Client::connect(addr, &ClientConfig::default()).await?;
    let message = Message::binary("binary/custom-client-binary-type", text.as_bytes().to_vec());
    let echoed = client.request(message).await?;
    client.close().await?;
    Ok(echoed.into_content())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:65432".to_owned());
    let text = args.next().unwrap_or_else(|| "Hello, world".to_owned());
    match echo(&addr, &text).await {
        Ok(echoed) => println!("received {:?}", String::from_utf8_lossy(&echoed)),
        Err(e) => {
            eprintln!("tokio_echo_client: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use sockmsg_transport_tokio::Codec;
    use tokio_util::codec::Framed;

    #[tokio::test]
    async fn gets_its_echo_and_names_a_refused_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut framed = Framed::new(stream, Codec::default());
            while let Some(Ok(m)) = framed.next().await {
                framed.send(m).await.expect("echo");
            }
        });
        assert_eq!(
            echo(&addr, "Hello, world").await.expect("echo"),
            b"Hello, world"
        );

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let gone = closed.local_addr().expect("addr").to_string();
        drop(closed);
        let e = echo(&gone, "x").await.expect_err("refused");
        assert_eq!(e.to_string(), format!("connection to {gone} refused"));
    }
}
