//! Since when a connection is idle, told across threads: the mark a connection's thread or
//! task keeps up to date, and the accept loop reads to close the connection idle the
//! longest at the cap ([`crate::WhenFull::EvictIdle`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
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
/// assert!(b.evict());
/// assert!(b.is_evicted() && !b.evict());
/// assert_eq!(IdleMark::longest_idle([(&a, "a"), (&b, "b"), (&busy, "busy")]), Some("a"));
/// ```
#[derive(Debug, Default)]
pub struct IdleMark {
    /// 0 while busy; else 1 + milliseconds from [`epoch`] to when it went idle.
    since: AtomicU64,
    /// Set by the accept loop: the connection is to close as [`crate::CloseReason::Evicted`].
    evicted: AtomicBool,
}

/// The instant idle marks count from (the first use in this process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl IdleMark {
    /// Records since when the connection is idle (`None`: busy), as
    /// [`crate::Session::idle_since`] says.
    pub fn note(&self, idle_since: Option<Instant>) {
        let since = idle_since.map_or(0, |at| {
            let ms = at.saturating_duration_since(epoch()).as_millis();
            u64::try_from(ms).unwrap_or(u64::MAX - 1).min(u64::MAX - 1) + 1
        });
        self.since.store(since, Relaxed);
    }

    /// Marks the connection for eviction; `false` if it already was.
    pub fn evict(&self) -> bool {
        !self.evicted.swap(true, Relaxed)
    }

    /// `true` once [`IdleMark::evict`] was called.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Relaxed)
    }

    /// Of the connections idle and not yet evicted, the one idle the longest (ties: the
    /// first); `None` if none is.
    pub fn longest_idle<'a, T>(marks: impl IntoIterator<Item = (&'a IdleMark, T)>) -> Option<T> {
        marks
            .into_iter()
            .filter_map(|(mark, item)| {
                let since = mark.since.load(Relaxed);
                (since != 0 && !mark.is_evicted()).then_some((since, item))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, item)| item)
    }
}
