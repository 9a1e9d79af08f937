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
    /// Bytes of large answers (over the output cap) held now, within `used`.
    large: AtomicUsize,
    large_peak: AtomicUsize,
}

/// Why a large answer could not be charged ([`MemoryBudget::try_charge_large`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LargeRefusal {
    /// Large answers already hold their share.
    Share,
    /// The budget itself has no room.
    Budget,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .field("peak", &self.peak())
            .field("large_answers", &self.large_answers())
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
                large: AtomicUsize::new(0),
                large_peak: AtomicUsize::new(0),
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

    /// Bytes of answers larger than the output cap held now, over every connection (within
    /// [`MemoryBudget::used`]; at most [`crate::ServerConfig::large_answer_share`]).
    pub fn large_answers(&self) -> usize {
        self.inner.large.load(Relaxed)
    }

    /// The most bytes of answers larger than the output cap ever held at once.
    pub fn large_answers_peak(&self) -> usize {
        self.inner.large_peak.load(Relaxed)
    }

    /// Takes `bytes` for a large answer: from the large answers' `share` and from the
    /// budget, both or neither.
    pub(crate) fn try_charge_large(&self, bytes: usize, share: usize) -> Result<(), LargeRefusal> {
        let taken = self.inner.large.fetch_update(Relaxed, Relaxed, |held| {
            held.checked_add(bytes).filter(|&total| total <= share)
        });
        let before = taken.map_err(|_| LargeRefusal::Share)?;
        if !self.try_charge(bytes, self.limit()) {
            self.release_large(bytes);
            return Err(LargeRefusal::Budget);
        }
        self.inner
            .large_peak
            .fetch_max(before.saturating_add(bytes), Relaxed);
        Ok(())
    }

    /// Gives `bytes` of the large answers' share back (what they hold in the budget
    /// follows the connection's buffers: see `Session::account`).
    pub(crate) fn release_large(&self, bytes: usize) {
        if bytes > 0 {
            let _ = self
                .inner
                .large
                .fetch_update(Relaxed, Relaxed, |held| Some(held.saturating_sub(bytes)));
        }
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

/// Bytes a connection holds outside its [`crate::Session`] (a TLS layer's record buffers),
/// counted in the server's [`MemoryBudget`]: set as they grow and shrink, given back when
/// dropped.
///
/// ```
/// use sockmsg_server::{BudgetCharge, MemoryBudget};
/// let budget = MemoryBudget::new(100);
/// let mut charge = BudgetCharge::new(&budget);
/// assert!(charge.try_set(60));
/// assert!(!charge.try_set(120), "over the limit: refused, nothing taken");
/// assert_eq!((charge.bytes(), budget.used(), budget.refused()), (60, 60, 1));
/// charge.set(20);
/// assert_eq!(budget.used(), 20);
/// drop(charge);
/// assert_eq!(budget.used(), 0);
/// ```
#[derive(Debug)]
pub struct BudgetCharge {
    budget: MemoryBudget,
    bytes: usize,
}

impl BudgetCharge {
    /// Nothing charged yet to `budget`.
    pub fn new(budget: &MemoryBudget) -> BudgetCharge {
        BudgetCharge {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// The bytes charged now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The budget charged.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Sets the charge to `bytes` before they are allocated: growing only if the budget
    /// has room for the difference (all or nothing: `false`, nothing taken, and the
    /// refusal counted in [`MemoryBudget::refused`]); shrinking always.
    pub fn try_set(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            if !self
                .budget
                .try_charge(bytes - self.bytes, self.budget.limit())
            {
                self.budget.note_refused();
                return false;
            }
        } else {
            self.budget.release(self.bytes - bytes);
        }
        self.bytes = bytes;
        true
    }

    /// Sets the charge to `bytes`, whatever the limit (memory already allocated: it
    /// exists; the budget only reports it).
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget.charge(bytes - self.bytes);
        } else {
            self.budget.release(self.bytes - bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for BudgetCharge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
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

    #[test]
    fn large_answers_take_their_share_and_the_budget_together_or_not_at_all() {
        let b = MemoryBudget::new(100);
        assert_eq!(b.try_charge_large(20, 30), Ok(()));
        assert_eq!(b.try_charge_large(20, 30), Err(LargeRefusal::Share));
        assert_eq!((b.used(), b.large_answers()), (20, 20), "nothing taken");
        assert!(b.try_charge(75, usize::MAX));
        assert_eq!(b.try_charge_large(10, 30), Err(LargeRefusal::Budget));
        assert_eq!(
            (b.used(), b.large_answers()),
            (95, 20),
            "the share given back"
        );
        b.release_large(20);
        b.release(20);
        assert_eq!(
            (b.used(), b.large_answers(), b.large_answers_peak()),
            (75, 0, 20)
        );
    }
}
