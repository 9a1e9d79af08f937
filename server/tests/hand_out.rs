//! The session's hand-out of requests to an async service, driven by hand: no socket, no
//! clock, no runtime. Answers given back in any order go out in request order, under the
//! same rules as a sync service's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sockmsg_protocol::{encode, Connection, Event, Message, Role};
use sockmsg_server::{CallError, CloseReason, MemoryBudget, RequestId, ServerConfig, Session};

fn session(config: ServerConfig, now: Instant) -> Session {
    Session::new_async(Arc::new(config.normalized()), now)
}

fn request(text: &str) -> Vec<u8> {
    encode(&Message::binary("x/y", text.as_bytes().to_vec())).expect("encodable")
}

fn answer_to(m: &Message) -> Message {
    Message::binary("x/answer", [b"re:", m.content()].concat())
}

/// Feeds `bytes` as the socket would, while the session reads; returns what it did not take.
fn feed<'a>(s: &mut Session, mut bytes: &'a [u8], now: Instant) -> &'a [u8] {
    while !bytes.is_empty() && s.wants_read() {
        let buf = s.read_buf();
        let n = buf.len().min(bytes.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        s.commit(n, now);
        bytes = &bytes[n..];
    }
    bytes
}

/// Everything the session sends now, decoded.
fn sent(s: &mut Session, now: Instant) -> Vec<String> {
    let mut wire = Vec::new();
    while s.wants_write() {
        s.write_to(&mut wire, now).expect("to a Vec");
    }
    let mut client = Connection::new(Role::Client, Default::default());
    client.read_from(&mut &wire[..], now).expect("from a slice");
    let mut out = Vec::new();
    while let Ok(Event::Message(m)) = client.next_event() {
        out.push(String::from_utf8_lossy(m.content()).into_owned());
    }
    out
}

fn take_all(s: &mut Session) -> Vec<(RequestId, Message)> {
    std::iter::from_fn(|| s.take_request()).collect()
}

#[test]
fn answers_given_back_in_any_order_go_out_in_request_order() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default(), now);
    let wire: Vec<u8> = (0..6).flat_map(|i| request(&format!("r{i}"))).collect();
    assert!(feed(&mut s, &wire, now).is_empty());
    let taken = take_all(&mut s);
    assert_eq!(taken.len(), 6);
    assert_eq!(s.answers_owed(), 6);
    // The last three first: nothing can be sent before r0's answer.
    for (id, m) in taken.iter().rev().take(3) {
        s.give_answer(*id, Ok(answer_to(m)), now);
    }
    assert!(!s.wants_write());
    let (id0, m0) = &taken[0];
    s.give_answer(*id0, Ok(answer_to(m0)), now);
    assert_eq!(sent(&mut s, now), ["re:r0"]);
    for (id, m) in &taken[1..3] {
        s.give_answer(*id, Ok(answer_to(m)), now);
    }
    // A second answer for the same request is ignored.
    s.give_answer(*id0, Ok(Message::binary("x/y", b"again".to_vec())), now);
    assert_eq!(
        sent(&mut s, now),
        ["re:r1", "re:r2", "re:r3", "re:r4", "re:r5"]
    );
    assert_eq!(s.answers_owed(), 0);
    assert!(s.wants_read() && s.idle_since().is_some());
}

#[test]
fn no_more_requests_are_taken_beyond_max_in_flight() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default().with_max_in_flight(2), now);
    let wire: Vec<u8> = (0..5).flat_map(|i| request(&format!("r{i}"))).collect();
    let rest = feed(&mut s, &wire, now);
    let first = take_all(&mut s);
    assert_eq!(first.len(), 2, "two in flight at most");
    assert!(!s.wants_read(), "held at the bound: the socket is not read");
    // Owed answers keep the connection busy: not a candidate for eviction.
    assert_eq!(s.idle_since(), None);
    s.give_answer(first[1].0, Ok(answer_to(&first[1].1)), now);
    assert!(
        take_all(&mut s).is_empty(),
        "r1 answered, but r0 is still owed"
    );
    s.give_answer(first[0].0, Ok(answer_to(&first[0].1)), now);
    let rest = feed(&mut s, rest, now);
    assert!(rest.is_empty());
    let second = take_all(&mut s);
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].1.content(), b"r2");
    assert_eq!(sent(&mut s, now), ["re:r0", "re:r1"]);
}

#[test]
fn a_failed_or_panicked_answer_closes_after_the_answers_before_it() {
    for (failure, label) in [
        (CallError::Failed("no such row".into()), "service-error"),
        (CallError::Panicked, "service-panic"),
    ] {
        let now = Instant::now();
        let mut s = session(ServerConfig::default(), now);
        let wire: Vec<u8> = (0..3).flat_map(|i| request(&format!("r{i}"))).collect();
        feed(&mut s, &wire, now);
        let taken = take_all(&mut s);
        s.give_answer(taken[2].0, Ok(answer_to(&taken[2].1)), now);
        s.give_answer(taken[1].0, Err(failure), now);
        s.give_answer(taken[0].0, Ok(answer_to(&taken[0].1)), now);
        assert_eq!(sent(&mut s, now), ["re:r0"], "nothing after the failure");
        let reason = s.close_reason().expect("closed");
        assert_eq!(reason.label(), label, "{reason}");
    }
}

#[test]
fn the_idle_deadline_waits_while_an_answer_is_owed() {
    let now = Instant::now();
    let idle = Duration::from_secs(1);
    let config = ServerConfig {
        idle_timeout: Some(idle),
        first_byte_deadline: None,
        ..ServerConfig::default()
    };
    let mut s = session(config, now);
    feed(&mut s, &request("slow"), now);
    let (id, m) = s.take_request().expect("request");
    // No deadline runs while the service works and nothing waits to be sent.
    assert_eq!(s.poll_timeout(), None);
    let later = now + 10 * idle;
    s.handle_timeout(later);
    assert!(!s.is_closed());
    s.give_answer(id, Ok(answer_to(&m)), later);
    assert_eq!(sent(&mut s, later), ["re:slow"]);
    // Sent: the idle clock starts again from there.
    s.handle_timeout(later + idle - Duration::from_millis(1));
    assert!(!s.is_closed());
    s.handle_timeout(later + idle);
    assert!(matches!(s.close_reason(), Some(CloseReason::Idle(_))));
}

#[test]
fn shutdown_waits_for_owed_answers_within_the_grace() {
    let now = Instant::now();
    let grace = Duration::from_secs(2);
    let config = ServerConfig {
        shutdown_grace: grace,
        ..ServerConfig::default()
    };
    // Answered within the grace: sent, then closed.
    let mut s = session(config.clone(), now);
    feed(&mut s, &request("owed"), now);
    let (id, m) = s.take_request().expect("request");
    s.begin_shutdown(now);
    assert!(!s.is_closed(), "an answer is owed");
    s.give_answer(id, Ok(answer_to(&m)), now + grace / 2);
    assert_eq!(sent(&mut s, now + grace / 2), ["re:owed"]);
    assert!(matches!(s.close_reason(), Some(CloseReason::Shutdown)));
    // Not answered within it: closed at its end, a late answer ignored.
    let mut s = session(config, now);
    feed(&mut s, &request("late"), now);
    let (id, m) = s.take_request().expect("request");
    s.begin_shutdown(now);
    assert_eq!(s.poll_timeout(), Some(now + grace));
    s.handle_timeout(now + grace);
    assert!(matches!(s.close_reason(), Some(CloseReason::Shutdown)));
    assert_eq!(s.answers_owed(), 0);
    s.give_answer(id, Ok(answer_to(&m)), now + grace);
    assert!(!s.wants_write());
}

#[test]
fn close_after_answer_takes_one_request() {
    let now = Instant::now();
    let mut s = session(ServerConfig::default().with_close_after_answer(true), now);
    let wire: Vec<u8> = (0..2).flat_map(|i| request(&format!("r{i}"))).collect();
    feed(&mut s, &wire, now);
    let taken = take_all(&mut s);
    assert_eq!(taken.len(), 1);
    assert!(!s.wants_read() && !s.is_closed());
    s.give_answer(taken[0].0, Ok(answer_to(&taken[0].1)), now);
    assert_eq!(sent(&mut s, now), ["re:r0"]);
    assert!(matches!(s.close_reason(), Some(CloseReason::Answered)));
}

#[test]
fn the_output_cap_holds_owed_answers_back() {
    let now = Instant::now();
    let config = ServerConfig {
        output_cap: 1000,
        ..ServerConfig::default()
    };
    let mut s = session(config, now);
    let wire: Vec<u8> = (0..3).flat_map(|i| request(&format!("r{i}"))).collect();
    feed(&mut s, &wire, now);
    let taken = take_all(&mut s);
    for (id, _) in &taken {
        s.give_answer(*id, Ok(Message::binary("x/y", vec![b'a'; 800])), now);
    }
    // One answer queued; the others wait under the cap (owed, parked).
    assert!(s.connection().pending_len() < 1000);
    assert!(!s.wants_read());
    let mut wire = Vec::new();
    while s.wants_write() {
        s.write_to(&mut wire, now).expect("to a Vec");
    }
    assert_eq!(wire.len(), 3 * (wire.len() / 3), "three answers alike");
    assert!(wire.len() > 2400);
    assert_eq!(s.answers_owed(), 0);
    assert!(s.wants_read());
}

#[test]
fn an_answer_over_the_message_limit_is_refused() {
    let now = Instant::now();
    let mut config = ServerConfig::default();
    config.limits.max_content_len = 100;
    let mut s = session(config, now);
    let wire: Vec<u8> = ["small", "big", "after"]
        .iter()
        .flat_map(|r| request(r))
        .collect();
    feed(&mut s, &wire, now);
    let taken = take_all(&mut s);
    s.give_answer(taken[2].0, Ok(answer_to(&taken[2].1)), now);
    s.give_answer(taken[1].0, Ok(Message::binary("x/y", vec![0; 101])), now);
    s.give_answer(taken[0].0, Ok(answer_to(&taken[0].1)), now);
    // The answer before is sent; none after the refused one.
    assert_eq!(sent(&mut s, now), ["re:small"]);
    assert!(matches!(
        s.close_reason(),
        Some(CloseReason::AnswerTooLarge {
            len: 101,
            limit: 100
        })
    ));
}

#[test]
fn requests_and_answers_held_count_in_the_memory_budget() {
    let now = Instant::now();
    let budget = MemoryBudget::new(64 * 1024 * 1024);
    let mut s = session(ServerConfig::default(), now).with_budget(budget.clone(), now);
    let content = "x".repeat(100_000);
    feed(&mut s, &request(&content), now);
    let (id, m) = s.take_request().expect("request");
    assert!(budget.used() >= 100_000, "the request in flight is counted");
    s.give_answer(id, Ok(answer_to(&m)), now);
    sent(&mut s, now);
    assert!(
        budget.used() < 100_000,
        "answered and sent: {}",
        budget.used()
    );
    drop(s);
    assert_eq!(budget.used(), 0);
}
