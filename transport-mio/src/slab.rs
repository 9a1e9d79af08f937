//! A minimal slab: stable keys (used as mio tokens), freed keys reused.

/// Values stored under small integer keys; a removed key is reused by the next insert.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Slab<T> {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// The key the next [`Slab::insert`] will use.
    pub(crate) fn next_key(&self) -> usize {
        self.free.last().copied().unwrap_or(self.entries.len())
    }

    /// Stores `value`, returning its key (the one [`Slab::next_key`] announced).
    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if let Some(key) = self.free.pop() {
            if let Some(slot) = self.entries.get_mut(key) {
                *slot = Some(value);
                return key;
            }
        }
        self.entries.push(Some(value));
        self.entries.len() - 1
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.entries.get_mut(key).and_then(Option::as_mut)
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.entries.get_mut(key).and_then(Option::take)?;
        self.len -= 1;
        self.free.push(key);
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys of all stored values.
    pub(crate) fn keys(&self) -> Vec<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.as_ref().map(|_| k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn keys_are_stable_and_reused() {
        let mut s = Slab::new();
        assert_eq!(s.next_key(), 0);
        let a = s.insert("a");
        let b = s.insert("b");
        let c = s.insert("c");
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(s.remove(b), Some("b"));
        assert_eq!(s.remove(b), None);
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_key(), 1);
        assert_eq!(s.insert("d"), 1);
        assert_eq!(s.get_mut(1).map(|v| *v), Some("d"));
        assert_eq!(s.get_mut(7), None);
        assert_eq!(s.keys(), vec![0, 1, 2]);
        for k in s.keys() {
            s.remove(k);
        }
        assert!(s.is_empty());
    }
}
