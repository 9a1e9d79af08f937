//! User-space memory per idle connection of the mio server (Linux).
//!
//! Run by `transport-mio/scripts/idle-memory.sh`. This process runs the server with a
//! counting allocator and measures its heap (bytes live) and resident set (`VmRSS`); a
//! child process (this same program, `--clients`) opens the connections, so that the
//! clients' memory is not counted.
//!
//! ```text
//! idle_memory [--connections N] [--workers W]       # measure (default 10,000 connections)
//! ```
//!
//! Three measurements against the baseline (server started, no connection):
//! 1. N connections accepted, nothing sent;
//! 2. the same connections after one request and response each, idle again;
//! 3. after the clients closed them (should be back to about the baseline).

#[cfg(target_os = "linux")]
fn main() {
    if let Err(e) = imp::main() {
        eprintln!("idle_memory: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("idle_memory: Linux only (it reads /proc/self/status)");
}

#[cfg(target_os = "linux")]
mod imp {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::error::Error;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sockmsg_protocol::{encode, Connection, Event, Limits, Message, Role};
    use sockmsg_server::{Service, ServiceError};
    use sockmsg_transport_mio::{Server, ServerConfig, Stats};

    /// The system allocator, counting the bytes currently allocated.
    struct Counting;

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    // SAFETY: every call is forwarded unchanged to the system allocator; only a counter is
    // updated alongside.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Relaxed);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc_zeroed(layout);
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                LIVE.fetch_sub(layout.size(), Relaxed);
                LIVE.fetch_add(new_size, Relaxed);
            }
            p
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    type Res<T> = Result<T, Box<dyn Error>>;

    pub fn main() -> Res<()> {
        let args: Vec<String> = std::env::args().collect();
        if args.get(1).map(String::as_str) == Some("--clients") {
            let addr: SocketAddr = args.get(2).ok_or("--clients ADDR N")?.parse()?;
            let n: usize = args.get(3).ok_or("--clients ADDR N")?.parse()?;
            return clients(addr, n);
        }
        let mut connections = 10_000usize;
        let mut workers = ServerConfig::default().workers;
        let mut it = args.iter().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--connections" => connections = it.next().ok_or("--connections N")?.parse()?,
                "--workers" => workers = it.next().ok_or("--workers W")?.parse()?,
                other => return Err(format!("unknown argument '{other}'").into()),
            }
        }
        measure(connections, workers)
    }

    /// Raises the soft limit on open files to at least `want` (up to the hard limit).
    fn raise_nofile(want: usize) -> Res<()> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let want = want as libc::rlim_t;
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err("getrlimit failed".into());
            }
            if lim.rlim_cur < want {
                lim.rlim_cur = want.min(lim.rlim_max);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err("setrlimit failed".into());
                }
            }
        }
        if lim.rlim_cur < want {
            return Err(
                format!("need {want} open files, the hard limit is {}", lim.rlim_max).into(),
            );
        }
        Ok(())
    }

    fn rss_bytes() -> Res<usize> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .ok_or("no VmRSS in /proc/self/status")?;
        Ok(kb * 1024)
    }

    struct Sample {
        heap: usize,
        rss: usize,
    }

    fn sample() -> Res<Sample> {
        Ok(Sample {
            heap: LIVE.load(Relaxed),
            rss: rss_bytes()?,
        })
    }

    fn per_conn(label: &str, base: &Sample, now: &Sample, n: usize) {
        let heap = now.heap as f64 - base.heap as f64;
        let rss = now.rss as f64 - base.rss as f64;
        println!(
            "{label:<28} heap {:>+12} B total, {:>+8.1} B/connection;   RSS {:>+12} B total, {:>+8.1} B/connection",
            heap as i64,
            heap / n as f64,
            rss as i64,
            rss / n as f64
        );
    }

    fn wait_open(stats: &Stats, want: usize) -> Res<()> {
        let start = Instant::now();
        while stats.open() != want {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(
                    format!("{} connections open, waiting for {want}", stats.open()).into(),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn measure(n: usize, workers: usize) -> Res<()> {
        raise_nofile(n + 256)?;
        let config = ServerConfig {
            workers,
            max_connections: n + 16,
            backlog: 4096,
            ..ServerConfig::default()
        };
        let server = Server::bind("127.0.0.1:0", config)?;
        let addr = server.local_addr();
        let stats = server.stats();
        let shutdown = server.shutdown_handle();
        let service: Arc<dyn Service> =
            Arc::new(|request: Message| -> Result<Message, ServiceError> {
                Ok(Message::binary("x/echo", request.into_content()))
            });
        let serving = std::thread::spawn(move || server.serve(service));
        std::thread::sleep(Duration::from_millis(200));
        let base = sample()?;

        let mut child = Command::new(std::env::current_exe()?)
            .arg("--clients")
            .arg(addr.to_string())
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut to_child = child.stdin.take().ok_or("child stdin")?;
        let mut from_child = BufReader::new(child.stdout.take().ok_or("child stdout")?);
        let mut line = String::new();

        let expect = |from: &mut BufReader<_>, line: &mut String, what: &str| -> Res<()> {
            line.clear();
            from.read_line(line)?;
            if line.trim() != what {
                return Err(format!("client process said {line:?}, expected {what:?}").into());
            }
            Ok(())
        };

        println!("mio server, {workers} event loop(s), {n} idle connections (server process only)");
        expect(&mut from_child, &mut line, "connected")?;
        wait_open(&stats, n)?;
        std::thread::sleep(Duration::from_millis(500));
        let fresh = sample()?;
        per_conn("accepted, nothing sent:", &base, &fresh, n);

        writeln!(to_child, "request")?;
        expect(&mut from_child, &mut line, "requested")?;
        std::thread::sleep(Duration::from_millis(500));
        let used = sample()?;
        per_conn("after 1 request each, idle:", &base, &used, n);

        drop(to_child);
        child.wait()?;
        wait_open(&stats, 0)?;
        std::thread::sleep(Duration::from_millis(200));
        let closed = sample()?;
        per_conn("all closed again:", &base, &closed, n);
        let snap = stats.snapshot();
        println!(
            "accepted {}, requests {}, closed clean {}",
            snap.accepted, snap.requests, snap.closed_clean
        );

        shutdown.shutdown();
        serving.join().map_err(|_| "server thread panicked")??;
        Ok(())
    }

    /// The child: opens `n` connections, then on "request" sends one request on each and
    /// reads its response; exits (closing them all) when its stdin closes.
    fn clients(addr: SocketAddr, n: usize) -> Res<()> {
        raise_nofile(n + 256)?;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            conns.push(TcpStream::connect(addr).map_err(|e| format!("connect {i}: {e}"))?);
        }
        let mut out = std::io::stdout();
        writeln!(out, "connected")?;
        out.flush()?;
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line?.trim() != "request" {
                continue;
            }
            let wire = encode(&Message::binary("x/ping", b"ping".to_vec()))?;
            for s in &mut conns {
                s.write_all(&wire)?;
            }
            for s in &mut conns {
                let mut dec = Connection::new(Role::Client, Limits::default());
                loop {
                    match dec.next_event()? {
                        Event::Message(_) => break,
                        Event::End => return Err("server closed".into()),
                        Event::NeedData => {
                            // `Ok(0)` records the end of stream.
                            dec.read_from(s, std::time::Instant::now())?;
                        }
                    }
                }
            }
            writeln!(out, "requested")?;
            out.flush()?;
        }
        Ok(())
    }
}
