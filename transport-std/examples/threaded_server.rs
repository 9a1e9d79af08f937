//! In the spirit of `socketserver.ThreadingTCPServer`: each connection gets its own thread,
//! so slow handlers do not hold each other up.
//!
//! With no argument it demonstrates itself and exits: a server on a free port whose
//! handler sleeps 1 s per request, three clients at once, all answered in about 1 s (not
//! 3 s), then a graceful shutdown. With an address it serves until Ctrl-C.
//!
//! ```text
//! cargo run -p sockmsg-transport-std --example threaded_server            # demo, exits
//! cargo run -p sockmsg-transport-std --example threaded_server 127.0.0.1:12345
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sockmsg_protocol::Message;
use sockmsg_server::{Service, ServiceError};
use sockmsg_transport_std::{Client, ClientConfig, Server, ServerConfig};

/// The request handler: prints who it serves, sleeps, answers `hello`.
struct SlowHello;

impl Service for SlowHello {
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        println!(
            "handling '{}' on {}",
            String::from_utf8_lossy(request.content()),
            thread::current().name().unwrap_or("?")
        );
        thread::sleep(Duration::from_secs(1));
        Ok(Message::binary("text/plain", b"hello".to_vec()))
    }
}

fn main() {
    let serve_forever = std::env::args().nth(1);
    let addr = serve_forever.as_deref().unwrap_or("127.0.0.1:0");
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("threaded_server: address '{addr}': {e} (expected IP:PORT)");
        std::process::exit(2)
    });
    if let Err(e) = run(addr, serve_forever.is_some()) {
        eprintln!("threaded_server: {e}");
        std::process::exit(1);
    }
}

fn run(addr: SocketAddr, serve_forever: bool) -> Result<(), String> {
    let server =
        Server::bind(addr, ServerConfig::default()).map_err(|e| format!("bind {addr}: {e}"))?;
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    println!("listening on {addr}");

    if serve_forever {
        let on_ctrl_c = shutdown.clone();
        ctrlc::set_handler(move || on_ctrl_c.shutdown())
            .map_err(|e| format!("set the Ctrl-C handler: {e}"))?;
        server
            .serve(Arc::new(SlowHello))
            .map_err(|e| format!("serve on {addr}: {e}"))?;
        println!("stopped");
        return Ok(());
    }

    let running = thread::spawn(move || server.serve(Arc::new(SlowHello)));
    let start = Instant::now();
    let clients: Vec<_> = (1..=3)
        .map(|i| {
            thread::spawn(move || -> Result<String, String> {
                let mut c =
                    Client::connect(addr, &ClientConfig::default()).map_err(|e| e.to_string())?;
                let answer = c
                    .request(Message::binary(
                        "text/plain",
                        format!("client {i}").into_bytes(),
                    ))
                    .map_err(|e| e.to_string())?;
                c.close().map_err(|e| e.to_string())?;
                Ok(String::from_utf8_lossy(answer.content()).into_owned())
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let answer = c
            .join()
            .map_err(|_| "a client thread panicked".to_owned())?
            .map_err(|e| format!("client {}: {e}", i + 1))?;
        println!("client {} got '{answer}'", i + 1);
    }
    println!(
        "3 requests of 1 s each answered in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    shutdown.shutdown();
    running
        .join()
        .map_err(|_| "the server thread panicked".to_owned())?
        .map_err(|e| format!("serve on {addr}: {e}"))?;
    println!("server stopped");
    Ok(())
}
