//! Test servers for the load generator's tests: the demo application over blocking std
//! sockets and `sockmsg_protocol::Connection` (no transport crate), in well-behaved and
//! misbehaving variants. Loopback, port 0; each server thread stops when dropped.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sockmsg_demo::DemoService;
use sockmsg_protocol::{Connection, Event, Message};

/// How a test server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The demo application, many requests per connection, pipelining welcome.
    Demo,
    /// The demo application, one request per connection, then close (the guide's server).
    OneShot,
    /// Answers every request with a valid but wrong answer.
    WrongAnswer,
    /// Reads requests and never answers.
    Silent,
    /// Closes every connection as soon as a request arrives, without answering.
    CloseEarly,
    /// Answers with bytes that are not a message.
    Garbage,
    /// The demo application, taking this long over each request (one at a time per
    /// connection).
    Slow(Duration),
    /// Answers every request with the request itself (as transport-mio's
    /// `mio_echo_server` example).
    EchoMessages,
}

/// A server on a loopback port; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(behaviour: Behaviour) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = Arc::clone(&flag);
                        std::thread::spawn(move || {
                            let _ = serve(stream, behaviour, &flag);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        TestServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, behaviour: Behaviour, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    stream.set_nodelay(true)?;
    let mut conn = Connection::server();
    let mut answered = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match conn.read_from(&mut stream, Instant::now()) {
            Ok(_) => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        loop {
            let request = match conn.next_event() {
                Ok(Event::Message(m)) => {
                    answered = true;
                    m
                }
                Ok(Event::NeedData) => break,
                Ok(Event::End) | Err(_) => return Ok(()),
            };
            match behaviour {
                Behaviour::Demo | Behaviour::OneShot => {
                    let answer = DemoService::new()
                        .respond(&request)
                        .map_err(io::Error::other)?;
                    conn.send(answer, Instant::now())
                        .map_err(io::Error::other)?;
                }
                Behaviour::Slow(pause) => {
                    std::thread::sleep(pause);
                    let answer = DemoService::new()
                        .respond(&request)
                        .map_err(io::Error::other)?;
                    conn.send(answer, Instant::now())
                        .map_err(io::Error::other)?;
                    while conn.wants_write() {
                        conn.write_to(&mut stream, Instant::now())?;
                    }
                }
                Behaviour::EchoMessages => conn
                    .send(request, Instant::now())
                    .map_err(io::Error::other)?,
                Behaviour::WrongAnswer => {
                    let answer = Message::json(&serde_json::json!({"result": "wrong"}))
                        .map_err(io::Error::other)?;
                    conn.send(answer, Instant::now())
                        .map_err(io::Error::other)?;
                }
                Behaviour::Silent => {}
                Behaviour::CloseEarly => return Ok(()),
                Behaviour::Garbage => {
                    stream.write_all(b"\x00\x05hello")?;
                    return Ok(());
                }
            }
            if behaviour == Behaviour::OneShot {
                break;
            }
        }
        while conn.wants_write() {
            conn.write_to(&mut stream, Instant::now())?;
        }
        if behaviour == Behaviour::OneShot && conn.in_flight() == 0 && answered {
            return Ok(());
        }
    }
}

/// Reads everything a child process printed, for assertions.
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}
