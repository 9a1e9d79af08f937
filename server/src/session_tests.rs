//! The session's policy, driven by hand: no socket, no clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Connection, Event, Message, Role};

use crate::{
    CloseReason, MemoryBudget, ServerConfig, Service, ServiceError, Session, SessionState,
};

/// Answers binary content `C` with `C` repeated `n` times where the content is `n:C`,
/// fails on `fail`, panics on `panic`.
fn service() -> Arc<dyn Service> {
    Arc::new(|m: Message| -> Result<Message, ServiceError> {
        match m.content() {
            b"fail" => Err("failing on request".into()),
            b"panic" => panic!("panicking on request"),
            c => {
                let text = std::str::from_utf8(c)?;
                let (n, body) = text.split_once(':').unwrap_or(("1", text));
                Ok(Message::binary("x/y", body.repeat(n.parse()?).into_bytes()))
            }
        }
    })
}

fn session(config: ServerConfig, now: Instant) -> Session {
    Session::new(service(), Arc::new(config.normalized()), now)
}

fn request(text: &str) -> Vec<u8> {
    encode(&Message::binary("x/y", text.as_bytes().to_vec())).expect("encodable")
}

/// Feeds `bytes` as the socket would, in pieces as large as the session lends.
fn feed(s: &mut Session, mut bytes: &[u8], now: Instant) {
    while !bytes.is_empty() && s.wants_read() {
        let buf = s.read_buf();
        let n = buf.len().min(bytes.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        s.commit(n, now);
        bytes = &bytes[n..];
    }
}

/// Everything the session has to send, decoded.
fn drain(s: &mut Session, now: Instant) -> Vec<Vec<u8>> {
    let mut wire = Vec::new();
    while s.wants_write() {
        s.write_to(&mut wire, now).expect("a Vec takes everything");
    }
    answers(&wire)
}

fn answers(wire: &[u8]) -> Vec<Vec<u8>> {
    let mut client = Connection::new(Role::Client, Default::default());
    let mut input = wire;
    let mut out = Vec::new();
    loop {
        match client.next_event() {
            Ok(Event::Message(m)) => out.push(m.content().to_vec()),
            Ok(Event::NeedData) if !input.is_empty() => {
                client
                    .read_from(&mut input, Instant::now())
                    .expect("reading a slice");
            }
            _ => return out,
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default(), now);
    let wire = [request("a"), request("2:b"), request("3:c")].concat();
    feed(&mut s, &wire, now);
    assert_eq!(
        drain(&mut s, now),
        [b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]
    );
    assert!(matches!(s.state(), SessionState::Open));
    assert!(s.wants_read());
}

#[test]
fn every_split_gives_the_same_answers() {
    let wire = [request("one"), request("2:two")].concat();
    for cut in 0..=wire.len() {
        let now = Instant::now();
        let mut s = session(ServerConfig::default(), now);
        feed(&mut s, &wire[..cut], now);
        feed(&mut s, &wire[cut..], now);
        assert_eq!(
            drain(&mut s, now),
            [b"one".to_vec(), b"twotwo".to_vec()],
            "cut at {cut}"
        );
    }
}

#[test]
fn output_cap_pauses_requests_until_answers_drain() {
    let now = Instant::now();
    let config = ServerConfig::default().with_output_cap(100);
    let mut s = session(config, now);
    // Three answers of 80 bytes: the second would take the queue over 100.
    let wire = [request("80:x"), request("80:y"), request("80:z")].concat();
    feed(&mut s, &wire, now);
    assert!(matches!(s.state(), SessionState::Backpressured));
    assert!(!s.wants_read(), "no reading while the queue is full");
    // One answer (80 bytes and its framing) is queued; the other two wait.
    assert!(
        s.connection().pending_len() < 200,
        "{}",
        s.connection().pending_len()
    );
    let got = drain(&mut s, now);
    assert_eq!(got.len(), 3);
    assert_eq!(got[2], vec![b'z'; 80]);
    assert!(matches!(s.state(), SessionState::Open));
}

#[test]
fn an_answer_larger_than_the_cap_is_queued_alone() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default().with_output_cap(10), now);
    feed(&mut s, &[request("1000:a"), request("b")].concat(), now);
    // The large answer is queued alone; the next one waits.
    assert!(s.connection().pending_len() > 1000);
    assert!(
        s.connection().pending_len() < 1200,
        "{}",
        s.connection().pending_len()
    );
    assert!(matches!(s.state(), SessionState::Backpressured));
    assert_eq!(drain(&mut s, now).len(), 2);
}

#[test]
fn an_answer_over_the_message_limit_is_not_sent() {
    let now = Instant::now();
    let mut config = ServerConfig::default();
    config.limits.max_content_len = 100;
    let mut s = session(config, now);
    feed(&mut s, &[request("a"), request("101:x")].concat(), now);
    assert_eq!(
        drain(&mut s, now),
        [b"a".to_vec()],
        "the good answer is still sent"
    );
    assert!(matches!(
        s.close_reason(),
        Some(CloseReason::AnswerTooLarge {
            len: 101,
            limit: 100
        })
    ));
}

#[test]
fn close_after_answer_closes_once_the_answer_is_sent() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default().with_close_after_answer(true), now);
    feed(&mut s, &[request("a"), request("b")].concat(), now);
    assert!(!s.wants_read());
    assert_eq!(drain(&mut s, now), [b"a".to_vec()]);
    assert!(matches!(s.close_reason(), Some(CloseReason::Answered)));
}

#[test]
fn half_close_gets_every_answer_then_closes_cleanly() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default(), now);
    feed(&mut s, &[request("a"), request("b")].concat(), now);
    s.receive_eof(now);
    assert!(!s.wants_read());
    assert_eq!(drain(&mut s, now).len(), 2);
    assert!(matches!(s.close_reason(), Some(CloseReason::PeerClosed)));
}

#[test]
fn a_protocol_error_flushes_earlier_answers_then_closes() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default(), now);
    feed(
        &mut s,
        &[request("a"), b"\x00\x05{{{{{".to_vec()].concat(),
        now,
    );
    assert_eq!(drain(&mut s, now), [b"a".to_vec()]);
    match s.close_reason() {
        Some(r @ CloseReason::Protocol(_)) => assert!(r.is_failure()),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn service_failures_and_panics_close_with_their_reason() {
    for (content, panicked) in [("fail", false), ("panic", true)] {
        let now = Instant::now();
        let mut s = session(ServerConfig::default(), now);
        feed(&mut s, &request(content), now);
        match s.close_reason() {
            Some(CloseReason::ServicePanicked) => assert!(panicked),
            Some(CloseReason::Service(_)) => assert!(!panicked),
            other => panic!("{content}: {other:?}"),
        }
    }
}

#[test]
fn deadlines_header_idle_and_write() {
    let t0 = Instant::now();
    let s3 = Some(Duration::from_secs(3));
    let config = ServerConfig::default().with_deadlines(s3, Some(Duration::from_secs(10)), s3);

    // Idle: nothing arrives.
    let mut s = session(config.clone(), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    s.handle_timeout(t0 + Duration::from_secs(9));
    assert!(!s.is_closed());
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert!(matches!(s.close_reason(), Some(CloseReason::Idle(_))));

    // Header: one byte of a request, then nothing.
    let mut s = session(config.clone(), t0);
    feed(&mut s, &request("a")[..1], t0 + Duration::from_secs(1));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(4)));
    s.handle_timeout(t0 + Duration::from_secs(4));
    assert!(matches!(
        s.close_reason(),
        Some(CloseReason::HeaderDeadline(_))
    ));

    // Write: an answer nobody reads.
    let mut s = session(config, t0);
    feed(&mut s, &request("a"), t0);
    assert!(s.wants_write());
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    s.handle_timeout(t0 + Duration::from_secs(3));
    assert!(matches!(
        s.close_reason(),
        Some(CloseReason::WriteDeadline(_))
    ));
}

#[test]
fn shutdown_closes_a_half_received_request_at_once_and_never_blames_the_peer() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default(), now);
    feed(&mut s, &request("a")[..5], now);
    s.begin_shutdown(now);
    assert!(matches!(s.close_reason(), Some(CloseReason::Shutdown)));
}

#[test]
fn shutdown_lets_owed_answers_flush_within_the_grace() {
    let now = Instant::now();
    let config = ServerConfig {
        shutdown_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let mut s = session(config.clone(), now);
    feed(&mut s, &request("a"), now);
    s.begin_shutdown(now);
    assert!(s.wants_write() && !s.wants_read());
    assert_eq!(drain(&mut s, now), [b"a".to_vec()]);
    assert!(matches!(s.close_reason(), Some(CloseReason::Shutdown)));

    // An answer never read: closed at the end of the grace, for the shutdown, even if the
    // socket fails meanwhile.
    let mut s = session(config, now);
    feed(&mut s, &request("a"), now);
    s.begin_shutdown(now);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(2)));
    s.abort(CloseReason::Io(std::io::Error::from(
        std::io::ErrorKind::BrokenPipe,
    )));
    assert!(matches!(s.close_reason(), Some(CloseReason::Shutdown)));
}

#[test]
fn an_idle_connection_gives_its_buffers_back_soon_after_its_last_request() {
    let t0 = Instant::now();
    let mut s = session(ServerConfig::default(), t0);
    feed(&mut s, &request("a"), t0);
    assert_eq!(drain(&mut s, t0), [b"a".to_vec()]);
    let held = s.connection().allocated();
    assert!(held >= 4096, "kept for the next request: {held}");
    let at = s.poll_timeout().expect("a wake-up to free them");
    assert!(at <= t0 + Duration::from_secs(1), "{:?}", at - t0);
    s.handle_timeout(at);
    let left = s.connection().allocated();
    assert!(left < 256, "the buffers are freed: {left} bytes left");
    assert!(!s.is_closed());
    // Then only the idle timeout is left.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
}

#[test]
fn pending_slices_and_consume_send_the_same_bytes_as_write_to() {
    let now = Instant::now();
    let wire_in = [request("a"), request("2:b"), request("3:c")].concat();
    let mut by_write = session(ServerConfig::default(), now);
    feed(&mut by_write, &wire_in, now);
    let mut expected = Vec::new();
    while by_write.wants_write() {
        by_write.write_to(&mut expected, now).expect("a Vec");
    }

    // As an async transport would: borrow the slices, send some, say how much.
    let mut by_slices = session(ServerConfig::default(), now);
    feed(&mut by_slices, &wire_in, now);
    let mut sent = Vec::new();
    while by_slices.wants_write() {
        let mut slices = [std::io::IoSlice::new(&[]); 4];
        let n = by_slices.pending_slices(&mut slices);
        let first = slices[..n].first().map_or(&[][..], |s| &s[..]);
        let take = first.len().min(7); // a short write
        sent.extend_from_slice(&first[..take]);
        by_slices.consume(take, now);
    }
    assert_eq!(sent, expected);
    assert_eq!(answers(&sent).len(), 3);
}

/// A request with `len` bytes of content of which only `sent` are on the wire.
fn partial(len: usize, sent: usize) -> Vec<u8> {
    let mut wire = encode(&Message::binary("x/y", vec![b'a'; len])).expect("encodable");
    wire.truncate(wire.len() - (len - sent));
    wire
}

#[test]
fn the_budget_reserves_a_large_message_refuses_the_next_and_never_goes_past() {
    let now = Instant::now();
    let budget = MemoryBudget::new(1024 * 1024);
    let config = ServerConfig::default();
    let mut sessions: Vec<Session> = (0..4)
        .map(|_| session(config.clone(), now).with_budget(budget.clone(), now))
        .collect();
    // 4 x 400 KiB announced (most of it sent) under 1 MiB: two fit under seven eighths.
    for s in &mut sessions {
        feed(s, &partial(400 * 1024, 390 * 1024), now);
    }
    let refused: Vec<_> = sessions
        .iter()
        .filter(|s| matches!(s.close_reason(), Some(CloseReason::OverBudget { .. })))
        .collect();
    assert_eq!(refused.len(), 2, "{sessions:?}");
    assert_eq!(budget.refused(), 2);
    assert!(budget.peak() <= budget.limit(), "{budget:?}");
    // A small request still gets room and its answer.
    let mut small = session(config, now).with_budget(budget.clone(), now);
    feed(&mut small, &request("3:ok"), now);
    assert_eq!(drain(&mut small, now), [b"okokok".to_vec()]);
    assert!(budget.peak() <= budget.limit(), "{budget:?}");
    // Everything is given back when the sessions go.
    drop(sessions);
    drop(small);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_full_budget_holds_reading_back_until_there_is_room() {
    let now = Instant::now();
    let budget = MemoryBudget::new(64 * 1024);
    let mut big = session(ServerConfig::default(), now).with_budget(budget.clone(), now);
    // 40 KiB in progress: small enough to wait rather than be refused.
    feed(&mut big, &partial(40 * 1024, 30 * 1024), now);
    let mut other = session(ServerConfig::default(), now).with_budget(budget.clone(), now);
    feed(&mut other, &partial(40 * 1024, 1024), now);
    assert!(!other.wants_read(), "no room: the other waits");
    assert!(other.close_reason().is_none());
    assert!(other
        .poll_timeout()
        .is_some_and(|at| at <= now + Duration::from_millis(20)));
    // The first completes and goes: the other reads again at its next look.
    feed(&mut big, &vec![b'a'; 10 * 1024], now);
    assert_eq!(drain(&mut big, now).len(), 1);
    drop(big);
    other.handle_timeout(now + Duration::from_millis(20));
    assert!(other.wants_read());
    assert!(budget.peak() <= budget.limit(), "{budget:?}");
}

#[test]
fn an_answer_over_the_output_cap_needs_room_in_the_budget() {
    let now = Instant::now();
    let budget = MemoryBudget::new(256 * 1024);
    // Room in the large answers' share (the whole budget), not in the budget.
    assert!(budget.try_charge(200 * 1024, usize::MAX));
    let config = ServerConfig::default()
        .with_output_cap(64 * 1024)
        .with_large_answer_share(usize::MAX);
    let mut s = session(config, now).with_budget(budget.clone(), now);
    // 30,000 x "xyz" = 90,000 bytes: over the cap, queued alone only if it fits.
    feed(&mut s, &request("30000:xyz"), now);
    assert!(
        matches!(
            s.close_reason(),
            Some(CloseReason::OverBudget { what: "answer", .. })
        ),
        "{s:?}"
    );
    assert!(drain(&mut s, now).is_empty());
}

#[test]
fn a_silent_connection_closes_at_the_first_byte_deadline_a_talking_one_does_not() {
    let now = Instant::now();
    let config = ServerConfig::default().with_first_byte_deadline(Some(Duration::from_secs(2)));
    let mut silent = session(config.clone(), now);
    assert_eq!(silent.poll_timeout(), Some(now + Duration::from_secs(2)));
    assert_eq!(silent.idle_since(), Some(now));
    silent.handle_timeout(now + Duration::from_secs(2));
    assert!(matches!(
        silent.close_reason(),
        Some(CloseReason::FirstByteDeadline(_))
    ));
    let mut talking = session(config, now);
    feed(&mut talking, &request("hi"), now);
    assert_eq!(drain(&mut talking, now), [b"hi".to_vec()]);
    talking.handle_timeout(now + Duration::from_secs(3));
    assert!(talking.close_reason().is_none());
    assert!(talking.idle_since().is_some());
}

// ---- large answers: their share of the budget, and the least send rate ----

/// Says `n` bytes of the session's output were sent at `now`.
fn take(s: &mut Session, n: usize, now: Instant) {
    assert!(s.connection().pending_len() >= n, "{s:?}");
    s.consume(n, now);
}

#[test]
fn a_large_answer_holds_its_share_until_its_last_byte_is_sent() {
    let now = Instant::now();
    let budget = MemoryBudget::new(1024 * 1024);
    let config = ServerConfig::default().with_output_cap(1000);
    let mut s = session(config, now).with_budget(budget.clone(), now);
    feed(&mut s, &request("100000:x"), now);
    assert!(s.wants_write() && s.close_reason().is_none(), "{s:?}");
    assert_eq!(budget.large_answers(), 100_000);
    assert!(budget.used() >= 100_000, "{budget:?}");
    // Its buffer is held whole until it is sent, and so is its share.
    take(&mut s, 60_000, now);
    assert_eq!(budget.large_answers(), 100_000);
    let mut rest = Vec::new();
    while s.wants_write() {
        s.write_to(&mut rest, now).expect("a Vec takes everything");
    }
    assert!(
        rest.len() > 40_000 && rest.ends_with(b"xxxx"),
        "{}",
        rest.len()
    );
    assert_eq!(budget.large_answers(), 0);
    assert!(budget.used() < 100_000, "{budget:?}");
    // An answer within the cap is not a large one.
    feed(&mut s, &request("900:y"), now);
    assert_eq!(budget.large_answers(), 0);
    assert_eq!(budget.large_answers_peak(), 100_000);
}

#[test]
fn large_answers_together_hold_at_most_their_share() {
    let now = Instant::now();
    let budget = MemoryBudget::new(1024 * 1024);
    // A quarter of the budget by default: 262,144 bytes, two answers of 100,000.
    let config = ServerConfig::default().with_output_cap(1000);
    assert_eq!(config.large_answer_share_of(budget.limit()), 256 * 1024);
    let open = |n: usize| {
        let mut s = session(config.clone(), now).with_budget(budget.clone(), now);
        feed(&mut s, &request(&format!("{n}:x")), now);
        s
    };
    let mut a = open(100_000);
    let b = open(100_000);
    let c = open(100_000);
    assert!(a.close_reason().is_none() && b.close_reason().is_none());
    match c.close_reason() {
        Some(r @ CloseReason::AnswerShareFull { need, share }) => {
            assert_eq!((*need, *share), (100_000, 256 * 1024));
            assert!(r.is_failure(), "logged as a warning");
            assert!(r.to_string().contains("share of the memory budget"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(budget.large_answers(), 200_000);
    assert_eq!(budget.refused(), 1);
    // Room comes back as an answer is sent, or its connection closes or goes away.
    drain(&mut a, now);
    let d = open(100_000);
    assert!(d.close_reason().is_none(), "{d:?}");
    let mut b = b;
    b.abort(CloseReason::Io(std::io::ErrorKind::BrokenPipe.into()));
    assert_eq!(
        budget.large_answers(),
        100_000,
        "b's share is given back at close"
    );
    drop(d);
    assert_eq!(budget.large_answers(), 0);
    assert!(budget.large_answers_peak() <= 256 * 1024, "{budget:?}");
    drop((a, b, c));
    assert_eq!(budget.used(), 0, "{budget:?}");
}

#[test]
fn a_large_answer_refused_by_the_message_limit_gives_its_share_back() {
    let now = Instant::now();
    let budget = MemoryBudget::new(1024 * 1024);
    let mut config = ServerConfig::default().with_output_cap(1000);
    config.limits.max_content_len = 50_000;
    let mut s = session(config, now).with_budget(budget.clone(), now);
    feed(&mut s, &request("60000:x"), now);
    assert!(
        matches!(s.close_reason(), Some(CloseReason::AnswerTooLarge { .. })),
        "{s:?}"
    );
    assert_eq!(budget.large_answers(), 0);
}

/// A session whose peer must take 10,000 bytes/s over windows of 10 s while a large
/// answer (100,000 bytes, over a cap of 1,000) is sent; no write deadline in the way.
fn rated(now: Instant) -> Session {
    let config = ServerConfig::default()
        .with_output_cap(1000)
        .with_deadlines(None, None, None)
        .with_min_send_rate(Some(10_000), Duration::from_secs(10));
    let mut s = session(config, now);
    feed(&mut s, &request("100000:x"), now);
    assert!(s.wants_write());
    // The window starts at the transport's first attempt to send (nothing taken here).
    s.consume(0, now);
    s
}

#[test]
fn a_peer_slower_than_the_least_send_rate_is_closed_at_the_end_of_a_window() {
    let t0 = Instant::now();
    let secs = |n: u64| t0 + Duration::from_secs(n);
    let mut s = rated(t0);
    assert_eq!(s.poll_timeout(), Some(secs(10)));
    // First window: 50,000 bytes in 10 s (5,000/s... plus a stall): too slow? No: the
    // window needs 100,000; it took 50,000.
    take(&mut s, 30_000, secs(2));
    take(&mut s, 20_000, secs(9));
    s.handle_timeout(secs(9));
    assert!(s.close_reason().is_none(), "calling early is harmless");
    s.handle_timeout(secs(10));
    match s.close_reason() {
        Some(
            r @ CloseReason::SlowReader {
                took,
                window,
                min_rate,
            },
        ) => {
            assert_eq!(
                (*took, *window, *min_rate),
                (50_000, Duration::from_secs(10), 10_000)
            );
            assert!(!r.is_failure());
            assert!(r.to_string().contains("10000 bytes/s"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!s.wants_write() && s.poll_timeout().is_none());
}

#[test]
fn a_peer_that_never_reads_is_closed_after_one_window() {
    let t0 = Instant::now();
    let mut s = rated(t0);
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert!(
        matches!(
            s.close_reason(),
            Some(CloseReason::SlowReader { took: 0, .. })
        ),
        "{s:?}"
    );
}

#[test]
fn a_peer_that_keeps_up_on_average_is_not_closed_for_a_slow_moment() {
    let t0 = Instant::now();
    let secs = |n: u64| t0 + Duration::from_secs(n);
    let mut s = rated(t0);
    // Nothing for 8 s, then the window's worth at once: 10,000 bytes/s on average.
    take(&mut s, 100_000, secs(8));
    s.handle_timeout(secs(10));
    assert!(s.close_reason().is_none(), "{s:?}");
    // What is left (the framing) goes; nothing over the cap: no window runs.
    drain(&mut s, secs(11));
    assert!(
        s.poll_timeout().map_or(true, |at| at < secs(12)),
        "only the release of idle buffers: {:?}",
        s.poll_timeout()
    );
    s.handle_timeout(secs(40));
    assert!(s.close_reason().is_none(), "{s:?}");
}

#[test]
fn the_next_window_starts_where_the_last_ended() {
    let t0 = Instant::now();
    let secs = |n: u64| t0 + Duration::from_secs(n);
    let config = ServerConfig::default()
        .with_output_cap(1000)
        .with_deadlines(None, None, None)
        .with_min_send_rate(Some(10_000), Duration::from_secs(10));
    let mut s = session(config, t0);
    feed(&mut s, &request("300000:x"), t0);
    s.consume(0, t0);
    take(&mut s, 120_000, secs(5));
    s.handle_timeout(secs(10));
    assert!(s.close_reason().is_none());
    assert_eq!(s.poll_timeout(), Some(secs(20)));
    // The second window counts only its own bytes: the first's surplus does not carry.
    take(&mut s, 90_000, secs(15));
    s.handle_timeout(secs(20));
    assert!(
        matches!(
            s.close_reason(),
            Some(CloseReason::SlowReader { took: 90_000, .. })
        ),
        "{s:?}"
    );
}

#[test]
fn no_rate_rule_below_the_cap_or_when_turned_off() {
    let t0 = Instant::now();
    let config = ServerConfig::default()
        .with_output_cap(1000)
        .with_deadlines(None, None, Some(Duration::from_secs(30)));
    // An answer within the cap, unread: only the write deadline runs.
    let mut s = session(config.clone(), t0);
    feed(&mut s, &request("500:x"), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    // No minimum: a large answer unread is closed by the write deadline alone.
    let mut s = session(config.with_min_send_rate(None, Duration::from_secs(10)), t0);
    feed(&mut s, &request("100000:x"), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    s.handle_timeout(t0 + Duration::from_secs(30));
    assert!(matches!(
        s.close_reason(),
        Some(CloseReason::WriteDeadline(_))
    ));
}

#[test]
fn the_window_starts_when_the_transport_sends_not_when_the_answer_was_made() {
    // A service that took 8 s: the answer comes with the request's instant, t0; the
    // transport's first attempt to send is at t0 + 8 s. The peer gets a whole window.
    let t0 = Instant::now();
    let secs = |n: u64| t0 + Duration::from_secs(n);
    let config = ServerConfig::default()
        .with_output_cap(1000)
        .with_deadlines(None, None, None)
        .with_min_send_rate(Some(10_000), Duration::from_secs(10));
    let mut s = session(config, t0);
    feed(&mut s, &request("300000:x"), t0);
    // Until the transport sends, the window's end is provisional (only earlier).
    assert_eq!(s.poll_timeout(), Some(secs(10)));
    take(&mut s, 0, secs(8));
    assert_eq!(s.poll_timeout(), Some(secs(18)));
    take(&mut s, 100_000, secs(17));
    // Checked late (the loop was busy): a window's worth is still enough.
    s.handle_timeout(secs(21));
    assert!(s.close_reason().is_none(), "{s:?}");
    assert_eq!(s.poll_timeout(), Some(secs(31)));
}

/// Answers every request with its content's length, dropping the request.
fn sizes(config: ServerConfig, now: Instant) -> Session {
    let service: Arc<dyn Service> = Arc::new(|m: Message| -> Result<Message, ServiceError> {
        Ok(Message::binary(
            "x/y",
            m.content_len().to_string().into_bytes(),
        ))
    });
    Session::new(service, Arc::new(config.normalized()), now)
}

#[test]
fn large_requests_one_after_another_reuse_their_pieces_within_the_budget() {
    let t0 = Instant::now();
    let budget = MemoryBudget::new(64 << 20);
    let config = ServerConfig {
        memory_meter: Some(budget.clone()),
        ..ServerConfig::default()
    };
    let mut s = sizes(config, t0);
    for size in [16 << 20, (16 << 20) - 3961, 3 << 20] {
        let wire = encode(&Message::binary("x/y", vec![5; size])).expect("encodable");
        feed(&mut s, &wire, t0);
        assert_eq!(drain(&mut s, t0), [size.to_string().into_bytes()], "{size}");
        assert!(
            budget.used() <= 17 << 20,
            "{size}: {} charged",
            budget.used()
        );
    }
    // The full-size pieces were kept for the next request, and counted.
    let held = s.connection().allocated();
    assert!(held >= 2 << 20, "kept: {held}");
    assert!(budget.used() >= held);
    // Idle: they go back with the rest.
    let at = s.poll_timeout().expect("a wake-up to free them");
    s.handle_timeout(at);
    assert!(s.connection().allocated() < 256);
    // (What stays charged is the reservation for the next read.)
    assert!(budget.used() <= 8192, "{} charged", budget.used());
}

#[test]
fn a_boxed_session_is_the_session_new_with_budget_makes() {
    let now = Instant::now();
    let config = Arc::new(ServerConfig::default().normalized());
    let budget = MemoryBudget::new(1024 * 1024);
    let plain = Session::new_with_budget(service(), Arc::clone(&config), budget.clone(), now);
    let charged = plain.budget_charged();
    let mut boxed = Session::new_boxed_with_budget(service(), config, budget.clone(), now);
    // The same reservation (its read buffer), on the same budget, the same deadline.
    assert!(charged > 0);
    assert_eq!(boxed.budget_charged(), charged);
    assert_eq!(budget.used(), 2 * charged);
    assert_eq!(boxed.poll_timeout(), plain.poll_timeout());
    assert_eq!(boxed.idle_since(), Some(now));
    feed(&mut boxed, &request("2:ok"), now);
    assert_eq!(drain(&mut boxed, now), [b"okok".to_vec()]);
    drop(plain);
    drop(boxed);
    assert_eq!(budget.used(), 0);
}

#[test]
fn kept_pieces_go_back_at_once_when_the_budget_is_more_than_half_taken() {
    let t0 = Instant::now();
    let wire = encode(&Message::binary("x/y", vec![5; 16 << 20])).expect("encodable");
    let answer = [(16usize << 20).to_string().into_bytes()];
    for (limit, kept) in [(64 << 20, true), (24 << 20, false)] {
        let budget = MemoryBudget::new(limit);
        let config = ServerConfig {
            memory_meter: Some(budget.clone()),
            ..ServerConfig::default()
        };
        let mut a = sizes(config.clone(), t0);
        let mut b = sizes(config, t0);
        feed(&mut a, &wire, t0);
        assert_eq!(drain(&mut a, t0), answer);
        // Idle: under a roomy budget its pieces stay for its next request (for 100 ms);
        // under a budget more than half taken by them, they are freed now.
        let held = a.connection().allocated();
        assert_eq!(held >= 15 << 20, kept, "{limit}: {held} held");
        // Another connection's 16 MiB request is taken either way.
        feed(&mut b, &wire, t0);
        assert_eq!(drain(&mut b, t0), answer, "{limit}");
        assert!(!b.is_closed(), "{limit}: {:?}", b.state());
    }
}
