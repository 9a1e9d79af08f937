//! The guide's echo client on tokio: sends one message, prints the echo, closes.
//!
//! ```sh
//! cargo run -p sockmsg-transport-tokio --example tokio_echo_client -- 127.0.0.1:65432 "Hello, world"
//! ```

use sockmsg_protocol::Message;
use sockmsg_transport_tokio::{Client, ClientConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:65432".to_owned());
    let text = args.next().unwrap_or_else(|| "Hello, world".to_owned());
    let result = async {
        let mut client = Client::connect(addr.as_str(), &ClientConfig::default()).await?;
        let message = Message::binary("binary/custom-client-binary-type", text.into_bytes());
        let echo = client.request(message).await?;
        println!("received {:?}", String::from_utf8_lossy(echo.content()));
        client.close().await
    }
    .await;
    if let Err(e) = result {
        eprintln!("tokio_echo_client: {e}");
        std::process::exit(1);
    }
}
