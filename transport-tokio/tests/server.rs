//! The tokio server's own cases (the conformance suite in `tests/` runs the shared ones):
//! shutdown in the middle of messages ends every task and closes every descriptor, and
//! answers acknowledged before it are all delivered; both runtime flavours serve.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sockmsg_protocol::{encode, Message};
use sockmsg_server::{ServerConfig, Service, ServiceError};
use sockmsg_transport_tokio::{Client, ClientConfig, ClientError, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(20);

/// The tests of this file run one at a time: one counts the process's descriptors.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn echo() -> Arc<dyn Service> {
    Arc::new(|m: Message| -> Result<Message, ServiceError> {
        Ok(Message::binary(
            "x/answer",
            [b"echo:", m.content()].concat(),
        ))
    })
}

fn req(text: &str) -> Message {
    Message::binary("x/request", text.as_bytes().to_vec())
}

/// Descriptors this process has open (Linux).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn shutdown_mid_message_ends_every_task_and_closes_every_descriptor() {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let before = open_fds();
    runtime.block_on(async {
        tokio::time::timeout(BOUND, async {
            let config = ServerConfig {
                shutdown_grace: Duration::from_millis(500),
                ..ServerConfig::default()
            };
            let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
            let addr = server.local_addr();
            let stop = server.shutdown_handle();
            let serving = tokio::spawn(server.run(echo()));

            // Clients with answered requests, then half a message each, left hanging.
            let mut clients = Vec::new();
            for i in 0..20 {
                let mut c = Client::connect(addr, &ClientConfig::default())
                    .await
                    .expect("connect");
                let answer = c.request(req(&format!("n{i}"))).await.expect("answer");
                assert_eq!(answer.content(), format!("echo:n{i}").as_bytes());
                clients.push(c);
            }
            let mut partial = Vec::new();
            for _ in 0..20 {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                let wire = encode(&req("never finished")).expect("encode");
                s.write_all(&wire[..wire.len() / 2]).await.expect("half");
                partial.push(s);
            }
            // Pipelined requests whose answers are owed when the shutdown comes.
            let mut owed = Client::connect(addr, &ClientConfig::default())
                .await
                .expect("connect");
            for i in 0..50 {
                owed.queue(req(&format!("p{i}"))).expect("queue");
            }
            owed.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(100)).await;

            stop.shutdown();
            serving.await.expect("task").expect("served");
            // Every answer the server owed was delivered before it closed.
            for i in 0..50 {
                let a = owed.recv().await.expect("owed answer");
                assert_eq!(a.content(), format!("echo:p{i}").as_bytes());
            }
            assert!(matches!(
                owed.recv().await,
                Err(ClientError::Closed { in_flight: 0, .. })
            ));
            // The others were closed, not left open.
            for mut c in clients {
                let r = c.recv().await;
                assert!(
                    matches!(
                        r,
                        Err(ClientError::Closed { .. } | ClientError::Reset { .. })
                    ),
                    "{r:?}"
                );
            }
            drop(partial);
        })
        .await
        .expect("bounded");
    });
    drop(runtime);
    let after = open_fds();
    // The runtime's own descriptors (epoll, eventfd) are gone with it; nothing of the
    // server's 41 connections and listener is left.
    assert!(
        after <= before,
        "descriptors before {before}, after {after}"
    );
}

#[test]
fn current_thread_and_multi_thread_runtimes_serve_alike() {
    let _serial = serial();
    for workers in [1, 3] {
        let config = ServerConfig::default().with_workers(workers);
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
        let (addr, stop) = (server.local_addr(), server.shutdown_handle());
        let serving = std::thread::spawn(move || server.serve(echo()));
        let client_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        client_rt.block_on(async {
            tokio::time::timeout(BOUND, async {
                let mut tasks = Vec::new();
                for c in 0..8 {
                    tasks.push(tokio::spawn(async move {
                        let mut client = Client::connect(addr, &ClientConfig::default())
                            .await
                            .expect("connect");
                        for i in 0..100 {
                            client.queue(req(&format!("{c}/{i}"))).expect("queue");
                        }
                        for i in 0..100 {
                            let a = client.recv().await.expect("answer");
                            assert_eq!(a.content(), format!("echo:{c}/{i}").as_bytes());
                        }
                        client.close().await.expect("close");
                    }));
                }
                for t in tasks {
                    t.await.expect("client task");
                }
            })
            .await
            .expect("bounded");
        });
        stop.shutdown();
        serving.join().expect("server thread").expect("served");
    }
}
