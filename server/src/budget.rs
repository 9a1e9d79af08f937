//! One memory budget for a whole server: the bytes its connections hold for input and
//! output, counted in one place.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// The shared count of the bytes a server's connections hold (buffers allocated plus
/// reservations for what they are about to receive), against a limit. Cheap to clone:
/// clones count together. A transport makes one per server
/// ([`MemoryBudget::for_config`]) and hands it to each [`crate::Session`]
/// ([`crate::Session::with_budget`]); the sessions charge it before they allocate.
///
/// Two budgets are equal only if they are the same counter.
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    refused: AtomicU64,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .field("peak", &self.peak())
            .finish()
    }
}

impl PartialEq for MemoryBudget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for MemoryBudget {}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing used.
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The budget a server runs under: [`crate::ServerConfig::memory_meter`] if set (to
    /// share it, or read its figures), else a new one of
    /// [`crate::ServerConfig::memory_budget`] bytes.
    pub fn for_config(config: &crate::ServerConfig) -> MemoryBudget {
        config
            .memory_meter
            .clone()
            .unwrap_or_else(|| MemoryBudget::new(config.memory_budget))
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes held or reserved now, over every connection.
    pub fn used(&self) -> usize {
        self.inner.used.load(Relaxed)
    }

    /// The most bytes ever held or reserved at once.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Relaxed)
    }

    /// Messages and answers refused so far because the budget had no room for them.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Relaxed)
    }

    /// Takes `bytes` if they fit under `limit` (at most the budget's limit), all or
    /// nothing; the check and the charge are one atomic step.
    pub(crate) fn try_charge(&self, bytes: usize, limit: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let limit = limit.min(self.inner.limit);
        let taken = self.inner.used.fetch_update(Relaxed, Relaxed, |used| {
            used.checked_add(bytes).filter(|&total| total <= limit)
        });
        match taken {
            Ok(before) => {
                self.inner.peak.fetch_max(before + bytes, Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Counts `bytes` already allocated, whatever the limit (memory the service allocated
    /// for an answer, say: it exists; the budget only reports it).
    pub(crate) fn charge(&self, bytes: usize) {
        if bytes > 0 {
            let before = self.inner.used.fetch_add(bytes, Relaxed);
            self.inner
                .peak
                .fetch_max(before.saturating_add(bytes), Relaxed);
        }
    }

    /// Gives `bytes` back.
    pub(crate) fn release(&self, bytes: usize) {
        if bytes > 0 {
            // Never below zero, even if a caller miscounts.
            let _ = self
                .inner
                .used
                .fetch_update(Relaxed, Relaxed, |used| Some(used.saturating_sub(bytes)));
        }
    }

    pub(crate) fn note_refused(&self) {
        self.inner.refused.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_within_the_limit_only_and_keeps_the_peak() {
        let b = MemoryBudget::new(100);
        assert!(b.try_charge(60, usize::MAX));
        assert!(
            !b.try_charge(41, usize::MAX),
            "over the limit: refused whole"
        );
        assert_eq!(b.used(), 60);
        assert!(!b.try_charge(30, 80), "under a lower ceiling");
        assert!(b.try_charge(40, usize::MAX));
        b.release(70);
        assert_eq!((b.used(), b.peak()), (30, 100));
        b.release(1000);
        assert_eq!(b.used(), 0);
        assert_ne!(b, MemoryBudget::new(100));
        assert_eq!(b, b.clone());
    }
}
