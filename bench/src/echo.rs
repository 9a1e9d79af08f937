//! The echo baseline: a minimal server with no framing (mio, one thread) that writes back
//! every byte it reads. It is the floor every sockmsg server is measured against: the same
//! bytes through the same kernel and event loop, with no decoding, no JSON and no
//! application, so a server's requests/s can be given as a fraction of it in the same run
//! (`app-bench --echo`).
//!
//! ```
//! use std::io::{Read, Write};
//! use sockmsg_bench::echo::EchoServer;
//!
//! let server = EchoServer::bind("127.0.0.1:0".parse()?)?;
//! let addr = server.local_addr()?;
//! let stop = server.stopper();
//! let thread = std::thread::spawn(move || server.run());
//!
//! let mut conn = std::net::TcpStream::connect(addr)?;
//! conn.write_all(b"hello")?;
//! let mut back = [0u8; 5];
//! conn.read_exact(&mut back)?;
//! assert_eq!(&back, b"hello");
//!
//! stop.stop()?;
//! thread.join().expect("server thread")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
const READ_BUF: usize = 64 * 1024;

/// The echo server: bind, then [`EchoServer::run`] until stopped.
#[derive(Debug)]
pub struct EchoServer {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

/// Stops a running [`EchoServer`] from another thread.
#[derive(Debug, Clone)]
pub struct EchoStopper {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl EchoStopper {
    /// Makes [`EchoServer::run`] return (connections still open are dropped).
    pub fn stop(&self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake()
    }
}

/// One client: what was read and not yet written back is `pending[pos..]`.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    pos: usize,
    /// The client shut down its write side: close once everything is written back.
    eof: bool,
}

impl EchoServer {
    /// Listens on `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> io::Result<EchoServer> {
        EchoServer::with_listener(TcpListener::bind(addr)?)
    }

    /// `loops` event loops (at least one) sharing one listener on `addr`, each to be run on
    /// its own thread: the baseline for servers that run a loop per core.
    pub fn bind_loops(addr: SocketAddr, loops: usize) -> io::Result<Vec<EchoServer>> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let mut servers = Vec::with_capacity(loops.max(1));
        for _ in 1..loops.max(1) {
            servers.push(EchoServer::with_listener(TcpListener::from_std(
                listener.try_clone()?,
            ))?);
        }
        servers.push(EchoServer::with_listener(TcpListener::from_std(listener))?);
        Ok(servers)
    }

    fn with_listener(mut listener: TcpListener) -> io::Result<EchoServer> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(EchoServer {
            poll,
            listener,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops [`EchoServer::run`].
    pub fn stopper(&self) -> EchoStopper {
        EchoStopper {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Serves until stopped. Errors on one connection close that connection only; `Err` is
    /// for the event loop itself failing.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut conns: Vec<Option<Conn>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut buf = vec![0u8; READ_BUF];
        loop {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(&mut conns, &mut free)?,
                    WAKER => {}
                    Token(t) => {
                        let i = t - FIRST_CONN;
                        let keep = match conns.get_mut(i) {
                            Some(Some(conn)) => serve(conn, &mut buf),
                            _ => true,
                        };
                        if !keep {
                            if let Some(slot) = conns.get_mut(i) {
                                if let Some(mut conn) = slot.take() {
                                    let _ = self.poll.registry().deregister(&mut conn.stream);
                                }
                                free.push(i);
                            }
                        }
                    }
                }
            }
        }
    }

    fn accept(&mut self, conns: &mut Vec<Option<Conn>>, free: &mut Vec<usize>) -> io::Result<()> {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, a connection reset before accept, …: try again later.
                Err(_) => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let i = free.pop().unwrap_or(conns.len());
            self.poll.registry().register(
                &mut stream,
                Token(i + FIRST_CONN),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let conn = Conn {
                stream,
                pending: Vec::new(),
                pos: 0,
                eof: false,
            };
            match conns.get_mut(i) {
                Some(slot) => *slot = Some(conn),
                None => conns.push(Some(conn)),
            }
        }
    }
}

/// Echoes what can be echoed now; `false` when the connection is finished.
fn serve(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        // Write back what is owed first; read more only once it is all written.
        while conn.pos < conn.pending.len() {
            let Some(owed) = conn.pending.get(conn.pos..) else {
                return false;
            };
            match conn.stream.write(owed) {
                Ok(0) => return false,
                Ok(n) => conn.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        conn.pending.clear();
        conn.pos = 0;
        if conn.eof {
            return false;
        }
        match conn.stream.read(buf) {
            Ok(0) => conn.eof = true,
            Ok(n) => {
                let Some(data) = buf.get(..n) else {
                    return false;
                };
                match conn.stream.write(data) {
                    Ok(w) if w == n => {}
                    Ok(w) => conn
                        .pending
                        .extend_from_slice(data.get(w..).unwrap_or_default()),
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted =>
                    {
                        conn.pending.extend_from_slice(data);
                    }
                    Err(_) => return false,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
