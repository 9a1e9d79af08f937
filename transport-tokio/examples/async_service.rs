//! An `AsyncService` that awaits: each request is answered by asking another sockmsg
//! server (standing in for a database) through the async `Client`. The client pipelines
//! its lookups; they end in any order (the "database" takes longer for longer words), and
//! the answers still come back in request order. Both servers start on free loopback
//! ports and stop at the end.
//!
//! ```sh
//! cargo run -p sockmsg-transport-tokio --example async_service
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sockmsg_protocol::Message;
use sockmsg_server::{AnswerFuture, AsyncService, ServerConfig, Service, ServiceError};
use sockmsg_transport_tokio::{Client, ClientConfig, Server};

/// The "database": a sync service looking words up in a table.
fn database() -> Arc<dyn Service> {
    let table: HashMap<&str, &str> = [
        ("morpheus", "Follow the white rabbit. \u{1f430}"),
        (
            "ring",
            "In the caves beneath the Misty Mountains. \u{1f48d}",
        ),
        ("\u{1f436}", "\u{1f43e} Playing ball! \u{1f3d0}"),
    ]
    .into_iter()
    .collect();
    Arc::new(move |m: Message| -> Result<Message, ServiceError> {
        let word = std::str::from_utf8(m.content())?;
        let found = table.get(word).copied().unwrap_or("No match.");
        Ok(Message::binary("text/plain", found.as_bytes().to_vec()))
    })
}

/// The service the client talks to: asks the database, awaiting its answer (and a delay
/// that grows with the word, so that lookups end out of order).
struct Lookup {
    database: SocketAddr,
}

impl AsyncService for Lookup {
    fn call(&self, request: Message) -> AnswerFuture {
        let database = self.database;
        Box::pin(async move {
            let word = String::from_utf8(request.content().to_vec())?;
            tokio::time::sleep(Duration::from_millis(10 * word.len() as u64)).await;
            let mut db = Client::connect(database, &ClientConfig::default()).await?;
            let found = db
                .request(Message::binary("text/plain", word.as_bytes().to_vec()))
                .await?;
            db.close().await?;
            let text = format!("{word}: {}", String::from_utf8_lossy(found.content()));
            Ok(Message::binary("text/plain", text.into_bytes()))
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts both servers, pipelines `words` to the front one, and returns its answers in
/// order; both servers are stopped before it returns.
async fn run(words: &[&str]) -> Result<Vec<String>, BoxError> {
    let any_port: SocketAddr = "127.0.0.1:0".parse()?;
    let db = Server::bind(any_port, ServerConfig::default())
        .map_err(|e| format!("cannot listen on {any_port}: {e}"))?;
    let (db_addr, db_stop) = (db.local_addr(), db.shutdown_handle());
    let db_task = tokio::spawn(db.run(database()));

    let front = Server::bind(any_port, ServerConfig::default())
        .map_err(|e| format!("cannot listen on {any_port}: {e}"))?;
    let (addr, stop) = (front.local_addr(), front.shutdown_handle());
    let front_task = tokio::spawn(front.run_async(Arc::new(Lookup { database: db_addr })));
    println!("database on {db_addr}, lookup service on {addr}");

    let asking = async {
        let mut client = Client::connect(addr, &ClientConfig::default()).await?;
        for word in words {
            client.queue(Message::binary("text/plain", word.as_bytes().to_vec()))?;
        }
        let mut answers = Vec::new();
        for _ in words {
            let answer = client.recv().await?;
            answers.push(String::from_utf8_lossy(answer.content()).into_owned());
        }
        client.close().await?;
        Ok::<_, BoxError>(answers)
    };
    let answers = asking.await;
    stop.shutdown();
    db_stop.shutdown();
    front_task.await??;
    db_task.await??;
    answers
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Longest first: its lookup ends last, its answer still comes first.
    match run(&["morpheus", "ring", "\u{1f436}", "nothing"]).await {
        Ok(answers) => {
            for a in answers {
                println!("{a}");
            }
        }
        Err(e) => {
            eprintln!("async_service: lookups failed: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_come_back_in_request_order_though_lookups_end_out_of_it() {
        let answers = tokio::time::timeout(
            Duration::from_secs(20),
            run(&["morpheus", "ring", "\u{1f436}", "x"]),
        )
        .await
        .expect("bounded")
        .expect("lookups");
        assert_eq!(
            answers,
            [
                "morpheus: Follow the white rabbit. \u{1f430}",
                "ring: In the caves beneath the Misty Mountains. \u{1f48d}",
                "\u{1f436}: \u{1f43e} Playing ball! \u{1f3d0}",
                "x: No match.",
            ]
        );
    }
}
