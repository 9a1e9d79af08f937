//! The tokio server's own cases (the conformance suite in `tests/` runs the shared ones):
//! shutdown in the middle of messages, or the server's future dropped there, ends every
//! task and closes every descriptor (counted: the runtime's alive tasks, /proc/self/fd),
//! and answers acknowledged before it are all delivered; both runtime flavours serve.

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

/// Tasks alive on the current runtime, once the count settles at `want` (it is not
/// strongly consistent across worker threads), or whatever it is after five seconds.
async fn alive_tasks_settle(want: usize) -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..500 {
        if metrics.num_alive_tasks() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    metrics.num_alive_tasks()
}

#[test]
fn dropping_the_server_mid_message_delivers_what_it_owes_and_leaks_no_task_or_descriptor() {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(BOUND, async {
            let fds_before = open_fds();
            let tasks_before = alive_tasks_settle(0).await;
            assert_eq!(tasks_before, 0, "block_on's future is not a task");
            let config = ServerConfig {
                shutdown_grace: Duration::from_millis(500),
                ..ServerConfig::default()
            };
            let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
            let addr = server.local_addr();
            // The echo service, counting the requests it has taken (acknowledged).
            let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counted = Arc::clone(&calls);
            let inner = echo();
            let service: Arc<dyn Service> = Arc::new(move |m: Message| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                inner.call(m)
            });
            // No ShutdownHandle taken: the only way this server ends is being dropped.
            let serving = tokio::spawn(server.run(service));

            let mut answered = Vec::new();
            for i in 0..10 {
                let mut c = Client::connect(addr, &ClientConfig::default())
                    .await
                    .expect("connect");
                let answer = c.request(req(&format!("n{i}"))).await.expect("answer");
                assert_eq!(answer.content(), format!("echo:n{i}").as_bytes());
                answered.push(c);
            }
            let mut partial = Vec::new();
            for _ in 0..10 {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                let wire = encode(&req("never finished")).expect("encode");
                s.write_all(&wire[..wire.len() / 2]).await.expect("half");
                partial.push(s);
            }
            let mut owed = Client::connect(addr, &ClientConfig::default())
                .await
                .expect("connect");
            for i in 0..50 {
                owed.queue(req(&format!("p{i}"))).expect("queue");
            }
            owed.flush().await.expect("flush");
            // Dropped once the service has taken all 60 requests (answers may still be
            // owed: they are queued or being written).
            for _ in 0..1000 {
                if calls.load(std::sync::atomic::Ordering::SeqCst) == 60 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 60);
            // The server task and one task per connection: 21 of them.
            assert_eq!(alive_tasks_settle(22).await, 22);

            serving.abort();
            let ended = serving.await;
            assert!(ended.as_ref().is_err_and(|e| e.is_cancelled()), "{ended:?}");
            // The listener closed with the server's future.
            let refused = TcpStream::connect(addr).await;
            assert!(refused.is_err(), "{refused:?}");
            // Every answer owed arrives, in order, then the connection closes.
            for i in 0..50 {
                let a = owed.recv().await.expect("owed answer");
                assert_eq!(a.content(), format!("echo:p{i}").as_bytes());
            }
            assert!(matches!(
                owed.recv().await,
                Err(ClientError::Closed { in_flight: 0, .. })
            ));
            // Idle and half-sent connections are closed, not left open.
            for mut c in answered {
                let r = c.recv().await;
                assert!(
                    matches!(
                        r,
                        Err(ClientError::Closed { .. } | ClientError::Reset { .. })
                    ),
                    "{r:?}"
                );
            }
            for mut s in partial {
                let mut rest = Vec::new();
                let r = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest).await;
                assert!(
                    r.map_or(true, |n| n == 0),
                    "nothing is answered to half a request"
                );
            }
            drop(owed);
            // No connection task is left, and no descriptor of the server's.
            assert_eq!(
                alive_tasks_settle(0).await,
                0,
                "connection tasks left running"
            );
            assert_eq!(open_fds(), fds_before, "descriptors left open");
        })
        .await
        .expect("bounded");
    });
}
