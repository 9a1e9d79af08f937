//! Deadlines of one event loop: a min-heap of (instant, key, connection id).
//!
//! Entries are never removed early. A connection remembers the earliest instant it has in
//! the heap; when its deadline moves later nothing is pushed, when it moves earlier a new
//! entry is pushed. An entry that fires is checked against the connection (same id, the
//! instant it remembers) and stale ones are skipped, so each connection has at most a few
//! entries at any time. Entries of closed connections would linger until their instant
//! (up to the idle timeout): the loop drops them all when they outnumber the live ones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers::default()
    }

    pub(crate) fn push(&mut self, at: Instant, key: usize, id: u64) {
        self.heap.push(Reverse((at, key, id)));
    }

    /// The earliest instant in the heap (possibly stale).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u64)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the entries for which `live(instant, key, id)` holds.
    pub(crate) fn retain(&mut self, mut live: impl FnMut(Instant, usize, u64) -> bool) {
        self.heap
            .retain(|Reverse((at, key, id))| live(*at, *key, *id));
    }
}

#[cfg(test)]
mod tests {
    use super::Timers;
    use std::time::{Duration, Instant};

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.push(t0 + Duration::from_secs(3), 1, 10);
        t.push(t0 + Duration::from_secs(1), 2, 20);
        t.push(t0 + Duration::from_secs(2), 3, 30);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        let due = t0 + Duration::from_millis(2500);
        assert_eq!(t.pop_due(due).map(|e| e.1), Some(2));
        assert_eq!(t.pop_due(due).map(|e| e.1), Some(3));
        assert_eq!(t.pop_due(due), None);
        assert_eq!(t.len(), 1);
        t.push(t0, 4, 40);
        t.push(t0, 5, 50);
        t.retain(|_, key, _| key != 4);
        assert_eq!(t.len(), 2);
        assert_eq!(t.pop_due(t0).map(|e| e.1), Some(5));
    }
}
