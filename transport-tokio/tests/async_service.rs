//! An `AsyncService` on the tokio server: the same rules as a sync service (answers in
//! request order, the output cap, panics closing only their connection, shutdown waiting
//! for answers owed), plus the bound on answers in flight per connection.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::Message;
use sockmsg_server::{AsyncService, ServerConfig, ServiceError, ShutdownHandle};
use sockmsg_transport_tokio::{Client, ClientConfig, ClientError, Server};
use tokio::task::JoinHandle;

const BOUND: Duration = Duration::from_secs(20);

fn req(text: &str) -> Message {
    Message::binary("x/request", text.as_bytes().to_vec())
}

/// A server running `service` on the current runtime.
fn start(
    config: ServerConfig,
    service: Arc<dyn AsyncService>,
) -> (
    std::net::SocketAddr,
    ShutdownHandle,
    JoinHandle<std::io::Result<()>>,
) {
    let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
    let (addr, stop) = (server.local_addr(), server.shutdown_handle());
    (addr, stop, tokio::spawn(server.run_async(service)))
}

/// Calls in progress now, and the most at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) {
        self.calls.fetch_add(1, SeqCst);
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, SeqCst);
    }
}

/// Answers `N:MS` after awaiting MS milliseconds with `re:N`; panics on `boom` after
/// awaiting a little.
fn sleepy(seen: Arc<Concurrency>) -> Arc<dyn AsyncService> {
    Arc::new(move |m: Message| {
        let seen = Arc::clone(&seen);
        async move {
            seen.enter();
            let text = String::from_utf8(m.content().to_vec())?;
            if text == "boom" {
                tokio::time::sleep(Duration::from_millis(20)).await;
                panic!("the service panicked on purpose");
            }
            let (n, ms) = text.split_once(':').unwrap_or((&text, "0"));
            tokio::time::sleep(Duration::from_millis(ms.parse()?)).await;
            seen.leave();
            Ok::<_, ServiceError>(Message::binary("x/answer", format!("re:{n}").into_bytes()))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_varying_waits_come_back_in_order_within_the_bound() {
    tokio::time::timeout(BOUND, async {
        let seen = Arc::new(Concurrency::default());
        let config = ServerConfig::default().with_max_in_flight(8);
        let (addr, stop, serving) = start(config, sleepy(Arc::clone(&seen)));
        let mut client = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        // Later requests are answered sooner: they wait for the earlier ones.
        for i in 0..40 {
            client
                .queue(req(&format!("{i}:{}", (40 - i) % 9 * 10)))
                .expect("queue");
        }
        for i in 0..40 {
            let a = client.recv().await.expect("answer");
            assert_eq!(a.content(), format!("re:{i}").as_bytes(), "answer {i}");
        }
        let most = seen.most.load(SeqCst);
        assert!(
            (2..=8).contains(&most),
            "answers awaited at once: {most} (bound 8)"
        );
        // A sync-like single request on the same connection still works.
        assert_eq!(
            client.request(req("last")).await.expect("last").content(),
            b"re:last"
        );
        client.close().await.expect("close");
        stop.shutdown();
        serving.await.expect("task").expect("served");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_panicking_service_closes_only_that_connection() {
    tokio::time::timeout(BOUND, async {
        let seen = Arc::new(Concurrency::default());
        let (addr, stop, serving) = start(ServerConfig::default(), sleepy(Arc::clone(&seen)));
        let mut bystander = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        assert_eq!(
            bystander.request(req("b1:0")).await.expect("b1").content(),
            b"re:b1"
        );
        let mut victim = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        for r in ["a1:50", "boom", "a2:0"] {
            victim.queue(req(r)).expect("queue");
        }
        // The answer before the panic is sent; nothing after it.
        assert_eq!(victim.recv().await.expect("a1").content(), b"re:a1");
        let r = victim.recv().await;
        assert!(
            matches!(
                r,
                Err(ClientError::Closed { in_flight: 2, .. } | ClientError::Reset { .. })
            ),
            "{r:?}"
        );
        // The other connection, and new ones, are served as before.
        assert_eq!(
            bystander.request(req("b2:0")).await.expect("b2").content(),
            b"re:b2"
        );
        let mut newcomer = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        assert_eq!(
            newcomer.request(req("c:0")).await.expect("c").content(),
            b"re:c"
        );
        stop.shutdown();
        serving.await.expect("task").expect("served");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn shutdown_waits_for_an_answer_in_flight() {
    tokio::time::timeout(BOUND, async {
        let seen = Arc::new(Concurrency::default());
        let config = ServerConfig {
            shutdown_grace: Duration::from_secs(5),
            ..ServerConfig::default()
        };
        let (addr, stop, serving) = start(config, sleepy(Arc::clone(&seen)));
        let mut idle = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        assert_eq!(
            idle.request(req("i:0")).await.expect("i").content(),
            b"re:i"
        );
        let mut owed = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        owed.send(req("slow:400")).await.expect("send");
        while seen.calls.load(SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let asked = Instant::now();
        stop.shutdown();
        // The idle connection closes at once; the answer owed still comes.
        let r = idle.recv().await;
        assert!(
            matches!(
                r,
                Err(ClientError::Closed { .. } | ClientError::Reset { .. })
            ),
            "{r:?}"
        );
        assert_eq!(owed.recv().await.expect("owed").content(), b"re:slow");
        assert!(matches!(
            owed.recv().await,
            Err(ClientError::Closed { in_flight: 0, .. })
        ));
        serving.await.expect("task").expect("served");
        assert!(asked.elapsed() >= Duration::from_millis(300));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn the_output_cap_holds_a_peer_that_does_not_read() {
    tokio::time::timeout(BOUND, async {
        const ANSWER: usize = 256 * 1024;
        const REQUESTS: usize = 120;
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let service: Arc<dyn AsyncService> = Arc::new(move |m: Message| {
            counted.fetch_add(1, SeqCst);
            async move {
                tokio::task::yield_now().await;
                let mut content = m.content().to_vec();
                content.resize(ANSWER, b'.');
                Ok::<_, ServiceError>(Message::binary("x/answer", content))
            }
        });
        let config = ServerConfig {
            output_cap: ANSWER,
            ..ServerConfig::default()
        }
        .with_max_in_flight(4);
        let (addr, stop, serving) = start(config, service);
        let mut client = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        for i in 0..REQUESTS {
            client.queue(req(&format!("{i:04}"))).expect("queue");
        }
        client.flush().await.expect("flush");
        // Not reading: the server stops taking requests once the kernel's buffers and
        // the output cap are full, however many are sent.
        let mut stalled = 0;
        for _ in 0..100 {
            let before = calls.load(SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if calls.load(SeqCst) == before {
                stalled = before;
                break;
            }
        }
        assert!(
            stalled > 0 && stalled < REQUESTS,
            "the service was called {stalled} times for {REQUESTS} requests not read"
        );
        // Reading again: every answer, in order.
        for i in 0..REQUESTS {
            let a = client.recv().await.expect("answer");
            assert_eq!(a.content().len(), ANSWER);
            assert!(a.content().starts_with(format!("{i:04}").as_bytes()));
        }
        assert_eq!(calls.load(SeqCst), REQUESTS);
        client.close().await.expect("close");
        stop.shutdown();
        serving.await.expect("task").expect("served");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn the_idle_timeout_waits_while_the_service_does() {
    tokio::time::timeout(BOUND, async {
        let seen = Arc::new(Concurrency::default());
        let config = ServerConfig {
            idle_timeout: Some(Duration::from_millis(150)),
            ..ServerConfig::default()
        };
        let (addr, stop, serving) = start(config, sleepy(Arc::clone(&seen)));
        let mut client = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        // Three times the idle timeout awaiting: the connection is not idle meanwhile.
        let a = client.request(req("db:450")).await.expect("answer");
        assert_eq!(a.content(), b"re:db");
        // Idle afterwards: closed by the timeout.
        let r = client.recv().await;
        assert!(
            matches!(r, Err(ClientError::Closed { in_flight: 0, .. })),
            "{r:?}"
        );
        stop.shutdown();
        serving.await.expect("task").expect("served");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn an_answer_over_the_message_limit_is_not_sent() {
    tokio::time::timeout(BOUND, async {
        let service: Arc<dyn AsyncService> = Arc::new(|m: Message| async move {
            let size = if m.content() == b"big" { 2000 } else { 10 };
            Ok::<_, ServiceError>(Message::binary("x/answer", vec![b'z'; size]))
        });
        let mut config = ServerConfig::default();
        config.limits.max_content_len = 1000;
        let (addr, stop, serving) = start(config, service);
        let mut client = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        for r in ["small", "big", "small"] {
            client.queue(req(r)).expect("queue");
        }
        assert_eq!(client.recv().await.expect("small").content().len(), 10);
        let r = client.recv().await;
        assert!(
            matches!(r, Err(ClientError::Closed { in_flight: 2, .. })),
            "{r:?}"
        );
        stop.shutdown();
        serving.await.expect("task").expect("served");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelining_connections_each_get_their_answers_in_order() {
    tokio::time::timeout(BOUND, async {
        let seen = Arc::new(Concurrency::default());
        let (addr, stop, serving) = start(ServerConfig::default(), sleepy(Arc::clone(&seen)));
        let mut clients = Vec::new();
        for c in 0..16 {
            clients.push(tokio::spawn(async move {
                let mut client = Client::connect(addr, &ClientConfig::default())
                    .await
                    .expect("connect");
                for i in 0..50 {
                    let wait = (c * 7 + i * 13) % 11;
                    client
                        .queue(req(&format!("{c}.{i}:{wait}")))
                        .expect("queue");
                }
                for i in 0..50 {
                    let a = client.recv().await.expect("answer");
                    assert_eq!(a.content(), format!("re:{c}.{i}").as_bytes());
                }
                client.close().await.expect("close");
            }));
        }
        for c in clients {
            c.await.expect("client task");
        }
        assert_eq!(seen.calls.load(SeqCst), 16 * 50);
        stop.shutdown();
        serving.await.expect("task").expect("served");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_connection_awaiting_its_answer_is_not_evicted_as_idle() {
    tokio::time::timeout(BOUND, async {
        let seen = Arc::new(Concurrency::default());
        // One slot, evicting the idle connection at the cap (the default policy).
        let config = ServerConfig::default().with_max_connections(1);
        let (addr, stop, serving) = start(config, sleepy(Arc::clone(&seen)));
        let mut first = Client::connect(addr, &ClientConfig::default())
            .await
            .expect("connect");
        first.send(req("first:400")).await.expect("send");
        while seen.calls.load(SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A newcomer at the cap: the first connection is busy (awaiting), so it waits.
        let newcomer = tokio::spawn(async move {
            let mut c = Client::connect(addr, &ClientConfig::default())
                .await
                .expect("connect");
            c.request(req("second:0"))
                .await
                .expect("answer")
                .into_content()
        });
        assert_eq!(
            first.recv().await.expect("not evicted").content(),
            b"re:first"
        );
        // Idle now: evicted for the newcomer, who is served.
        assert_eq!(newcomer.await.expect("newcomer"), b"re:second");
        let r = first.recv().await;
        assert!(
            matches!(
                r,
                Err(ClientError::Closed { .. } | ClientError::Reset { .. })
            ),
            "{r:?}"
        );
        stop.shutdown();
        serving.await.expect("task").expect("served");
    })
    .await
    .expect("bounded");
}
