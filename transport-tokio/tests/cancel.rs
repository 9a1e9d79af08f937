//! Cancellation: client futures (`request`, `send`, `recv`) and whole clients dropped in the
//! middle of a message, and an async server's future dropped with an answer in progress.
//! Nothing acknowledged is lost (a request queued is answered, an answer owed arrives
//! whole), no task is left running (the runtime's alive tasks) and no descriptor left open
//! (/proc/self/fd), and the server keeps serving.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sockmsg_protocol::Message;
use sockmsg_server::{AsyncService, ServerConfig, ServiceError};
use sockmsg_transport_tokio::{Client, ClientConfig, ClientError, Server};

const BOUND: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time: they count the process's descriptors.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Descriptors this process has open (Linux).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Echoes (`echo:` + content) after awaiting the milliseconds a content starting with
/// `slow` names after it (`slow300`), at once otherwise; counts its calls.
fn echo(calls: Arc<AtomicUsize>) -> Arc<dyn AsyncService> {
    Arc::new(move |m: Message| {
        calls.fetch_add(1, SeqCst);
        async move {
            if let Some(ms) = m.content().strip_prefix(b"slow") {
                let ms: u64 = std::str::from_utf8(ms)?.parse()?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let mut content = b"echo:".to_vec();
            content.extend_from_slice(m.content());
            Ok::<_, ServiceError>(Message::binary("x/answer", content))
        }
    })
}

fn req(text: &str) -> Message {
    Message::binary("x/request", text.as_bytes().to_vec())
}

/// Larger than what loopback's socket buffers hold in both directions, so its writing
/// waits for the server to read.
fn big(tag: u8) -> Message {
    let mut content = vec![tag; 12 << 20];
    content[..4].copy_from_slice(b"big!");
    Message::binary("x/request", content)
}

fn is_echo_of(answer: &Message, request: &Message) -> bool {
    answer.content().strip_prefix(b"echo:") == Some(request.content())
}

#[test]
fn client_futures_dropped_mid_message_lose_nothing_and_leak_nothing() {
    let _serial = serial();
    let runtime = runtime();
    runtime.block_on(async {
        tokio::time::timeout(BOUND, async {
            let fds_before = open_fds();
            assert_eq!(alive_tasks_settle(0).await, 0);
            let calls = Arc::new(AtomicUsize::new(0));
            // One answer in flight per connection: while the service awaits, the server
            // does not read that connection, so a large request behind it stalls.
            let config = ServerConfig::default().with_max_in_flight(1);
            let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
            let (addr, stop) = (server.local_addr(), server.shutdown_handle());
            let serving = tokio::spawn(server.run_async(echo(Arc::clone(&calls))));
            let mut client = Client::connect(addr, &ClientConfig::default())
                .await
                .expect("connect");

            // `request` dropped while its answer is awaited: the request was queued (and
            // sent), so the next `recv` is its answer.
            let dropped =
                tokio::time::timeout(Duration::from_millis(50), client.request(req("slow300")))
                    .await;
            assert!(dropped.is_err(), "answered within 50 ms: {dropped:?}");
            assert_eq!(client.in_flight(), 1);
            let a = client.recv().await.expect("the dropped request's answer");
            assert_eq!(a.content(), b"echo:slow300");

            // `send` dropped in the middle of a large request (the server is not reading
            // while it answers the slow one before it): the rest is written by the next
            // call, and both are answered, whole and in order.
            client.send(req("slow300")).await.expect("send");
            let large = big(b'a');
            let dropped =
                tokio::time::timeout(Duration::from_millis(100), client.send(large.clone())).await;
            assert!(dropped.is_err(), "12 MiB written while the server waits");
            assert_eq!(client.in_flight(), 2);
            let a = client.recv().await.expect("slow answer");
            assert_eq!(a.content(), b"echo:slow300");
            let a = client.recv().await.expect("large answer");
            assert!(is_echo_of(&a, &large), "the large request arrived whole");

            // `recv` dropped again and again (every millisecond) while a large answer
            // arrives: it carries on each time, and the answer is whole.
            let large = big(b'b');
            client.queue(large.clone()).expect("queue");
            let mut drops = 0;
            let a = loop {
                match tokio::time::timeout(Duration::from_millis(1), client.recv()).await {
                    Ok(answer) => break answer.expect("large answer"),
                    Err(_) => drops += 1,
                }
            };
            assert!(drops > 0, "a 12 MiB exchange within a millisecond");
            assert!(is_echo_of(&a, &large), "the answer arrived whole");

            // A whole client dropped in the middle of a request: the server closes that
            // connection (its task ends) and serves the others.
            let mut quitter = Client::connect(addr, &ClientConfig::default())
                .await
                .expect("connect");
            quitter.send(req("slow200")).await.expect("send");
            let half =
                tokio::time::timeout(Duration::from_millis(50), quitter.send(big(b'c'))).await;
            assert!(half.is_err(), "12 MiB written while the server waits");
            drop(quitter);
            assert_eq!(
                client
                    .request(req("still"))
                    .await
                    .expect("served")
                    .content(),
                b"echo:still"
            );

            // The server task and this client's connection only; no task of the dropped
            // futures or client is left.
            assert_eq!(alive_tasks_settle(2).await, 2, "tasks left running");
            client.close().await.expect("close");
            assert_eq!(alive_tasks_settle(1).await, 1, "connection tasks left");
            stop.shutdown();
            serving.await.expect("task").expect("served");
            assert_eq!(alive_tasks_settle(0).await, 0);
            assert_eq!(open_fds(), fds_before, "descriptors left open");
        })
        .await
        .expect("bounded");
    });
}

#[test]
fn an_async_server_dropped_with_an_answer_in_progress_delivers_it_and_leaks_nothing() {
    let _serial = serial();
    let runtime = runtime();
    runtime.block_on(async {
        tokio::time::timeout(BOUND, async {
            let fds_before = open_fds();
            assert_eq!(alive_tasks_settle(0).await, 0);
            let calls = Arc::new(AtomicUsize::new(0));
            let config = ServerConfig {
                shutdown_grace: Duration::from_secs(5),
                ..ServerConfig::default()
            };
            let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
            let addr = server.local_addr();
            // No ShutdownHandle taken: the only way this server ends is being dropped.
            let serving = tokio::spawn(server.run_async(echo(Arc::clone(&calls))));
            let mut idle = Client::connect(addr, &ClientConfig::default())
                .await
                .expect("connect");
            assert_eq!(
                idle.request(req("i")).await.expect("i").content(),
                b"echo:i"
            );
            let mut owed = Client::connect(addr, &ClientConfig::default())
                .await
                .expect("connect");
            for r in ["slow300", "after"] {
                owed.queue(req(r)).expect("queue");
            }
            owed.flush().await.expect("flush");
            while calls.load(SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(alive_tasks_settle(3).await, 3);

            serving.abort();
            let ended = serving.await;
            assert!(ended.as_ref().is_err_and(|e| e.is_cancelled()), "{ended:?}");
            // Both answers owed arrive, in order; then the connection closes.
            assert_eq!(owed.recv().await.expect("slow").content(), b"echo:slow300");
            assert_eq!(owed.recv().await.expect("after").content(), b"echo:after");
            assert!(matches!(
                owed.recv().await,
                Err(ClientError::Closed { in_flight: 0, .. })
            ));
            let r = idle.recv().await;
            assert!(
                matches!(
                    r,
                    Err(ClientError::Closed { .. } | ClientError::Reset { .. })
                ),
                "{r:?}"
            );
            drop((owed, idle));
            assert_eq!(alive_tasks_settle(0).await, 0, "connection tasks left");
            assert_eq!(open_fds(), fds_before, "descriptors left open");
        })
        .await
        .expect("bounded");
    });
}
