//! Since when a connection is idle, told across threads: the mark a connection's thread or
//! task keeps up to date, and the accept loop reads to close the connection idle the
//! longest at the cap ([`crate::WhenFull::EvictIdle`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// One connection's idle mark, for transports whose connections run on other threads,
/// tasks or event loops than the one that accepts.
///
/// ```
/// use std::time::{Duration, Instant};
/// use sockmsg_server::IdleMark;
/// let (a, b, busy) = (IdleMark::default(), IdleMark::default(), IdleMark::default());
/// let now = Instant::now();
/// a.note(Some(now + Duration::from_secs(1)));
/// b.note(Some(now));
/// busy.note(None);
/// assert_eq!(IdleMark::longest_idle([(&a, "a"), (&b, "b"), (&busy, "busy")]), Some("b"));
/// assert!(!busy.evict()); // busy: never evicted
/// assert!(b.evict());
/// assert!(b.is_evicted() && !b.evict());
/// assert!(!b.note(None)); // too late to start a request: it closes
/// assert_eq!(IdleMark::longest_idle([(&a, "a"), (&b, "b"), (&busy, "busy")]), Some("a"));
/// ```
#[derive(Debug, Default)]
pub struct IdleMark {
    /// 0 while busy; [`EVICTED`] once evicted; else 1 + milliseconds from [`epoch`] to when
    /// it went idle. One atomic, so that a connection is evicted only while idle: the
    /// accept loop's [`IdleMark::evict`] and the connection's [`IdleMark::note`] of `None`
    /// (busy, before it hands a request to the service) cannot both succeed.
    since: AtomicU64,
}

/// The mark of an evicted connection.
const EVICTED: u64 = u64::MAX;

/// The instant idle marks count from (the first use in this process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl IdleMark {
    /// Records since when the connection is idle (`None`: busy), as
    /// [`crate::Session::idle_since`] says; `false` (and nothing recorded) once the
    /// connection was evicted. A connection notes `None` before it takes in bytes that can
    /// start a service call, and closes as [`crate::CloseReason::Evicted`] if that fails,
    /// so no request is ever lost to an eviction decided on a stale mark.
    pub fn note(&self, idle_since: Option<Instant>) -> bool {
        let since = idle_since.map_or(0, |at| {
            let ms = at.saturating_duration_since(epoch()).as_millis();
            u64::try_from(ms).unwrap_or(EVICTED - 1).min(EVICTED - 2) + 1
        });
        self.since
            .fetch_update(Relaxed, Relaxed, |now| (now != EVICTED).then_some(since))
            .is_ok()
    }

    /// Marks the connection for eviction if it is idle; `false` if it is busy (it became
    /// busy since it was chosen: choose again) or already evicted.
    pub fn evict(&self) -> bool {
        self.since
            .fetch_update(Relaxed, Relaxed, |now| {
                (now != 0 && now != EVICTED).then_some(EVICTED)
            })
            .is_ok()
    }

    /// `true` once [`IdleMark::evict`] succeeded.
    pub fn is_evicted(&self) -> bool {
        self.since.load(Relaxed) == EVICTED
    }

    /// Of the connections idle and not yet evicted, the one idle the longest (ties: the
    /// first); `None` if none is.
    pub fn longest_idle<'a, T>(marks: impl IntoIterator<Item = (&'a IdleMark, T)>) -> Option<T> {
        marks
            .into_iter()
            .filter_map(|(mark, item)| {
                let since = mark.since.load(Relaxed);
                (since != 0 && since != EVICTED).then_some((since, item))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, item)| item)
    }
}
