//! 2,000 idle connections accepted and closed cleanly; the open file descriptor count
//! returns to where it started.
#![cfg(target_os = "linux")]

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{wait_until, Running};
use sockmsg_transport_mio::ServerConfig;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Raises the soft limit on open files to at least `want` (up to the hard limit).
fn raise_nofile(want: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur
}

#[test]
fn two_thousand_idle_connections_open_and_close_cleanly() {
    const N: usize = 2_000;
    let limit = raise_nofile((2 * N + 256) as libc::rlim_t);
    assert!(
        limit >= (2 * N + 64) as libc::rlim_t,
        "RLIMIT_NOFILE too low: {limit}"
    );

    let before = open_fds();
    let mut server = Running::start(ServerConfig {
        workers: 2,
        backlog: 4096,
        ..ServerConfig::default()
    });
    let baseline = open_fds();

    let clients: Vec<TcpStream> = (0..N)
        .map(|i| TcpStream::connect(server.addr).unwrap_or_else(|e| panic!("connect {i}: {e}")))
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || server.stats.open() == N),
        "not all accepted: {:?}",
        server.stats.snapshot()
    );
    assert_eq!(
        open_fds(),
        baseline + 2 * N,
        "one fd per side of each connection"
    );

    drop(clients);
    assert!(
        wait_until(Duration::from_secs(20), || server.stats.open() == 0),
        "not all closed: {:?}",
        server.stats.snapshot()
    );
    assert!(
        wait_until(Duration::from_secs(5), || open_fds() == baseline),
        "fds: {} now, {baseline} before the connections",
        open_fds()
    );
    let stats = server.stats.snapshot();
    assert_eq!(stats.accepted, N as u64);
    assert_eq!(stats.max_open, N);
    assert_eq!(stats.closed_clean, N as u64, "{stats:?}");
    assert_eq!(stats.closed(), N as u64, "{stats:?}");
    assert_eq!(stats.rejected, 0);

    server.stop().expect("serve returns cleanly");
    // The shutdown handle owns the loops' wakers (one eventfd each): drop it too.
    drop(server);
    assert_eq!(open_fds(), before, "the server gave back every fd");
}
