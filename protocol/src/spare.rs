//! Reading a large content into memory that was never zeroed, in safe Rust:
//! [`ReadSpare`], for [`crate::Connection::read_spare_from`].
//!
//! Safe Rust must initialise a `&mut [u8]` before lending it to `read`; for a large
//! content that writes every byte once more, ahead of the `recv` that overwrites it (free
//! only where the allocator maps each piece fresh). A `Vec`'s spare capacity need not be
//! initialised: a reader that can append to it directly (tokio's `poll_read_buf` into a
//! `BufMut`, bytes already in memory) writes each byte once.

use std::io;

/// A reader that can also append to a `Vec` without the spare capacity being zeroed first.
/// [`crate::Connection::read_spare_from`] lends it the piece of a large content being
/// filled; for everything else it is an [`io::Read`].
pub trait ReadSpare: io::Read {
    /// Appends at most `limit` bytes to `buf`, within its spare capacity (`limit` is never
    /// more than `buf.capacity() - buf.len()`; growing `buf` breaks the memory bound the
    /// caller keeps, and is counted), and returns how many: one read's worth, as
    /// [`io::Read::read`] would take. `Ok(0)` is the end of the stream. Bytes appended
    /// before an error count; a `WouldBlock` (or `Interrupted`, `TimedOut`) after some is
    /// taken as a complete read.
    fn read_spare(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize>;
}

impl<R: ReadSpare + ?Sized> ReadSpare for &mut R {
    fn read_spare(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        (**self).read_spare(buf, limit)
    }
}

/// Bytes in memory (decrypted TLS records, say): appended as they are.
impl ReadSpare for &[u8] {
    fn read_spare(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        let (now, rest) = self.split_at(limit.min(self.len()));
        buf.extend_from_slice(now);
        *self = rest;
        Ok(now.len())
    }
}

#[cfg(test)]
mod tests {
    use super::ReadSpare;

    #[test]
    fn a_slice_appends_what_it_has_within_the_limit() {
        let mut input: &[u8] = b"abcdef";
        let mut buf = Vec::with_capacity(4);
        assert_eq!(input.read_spare(&mut buf, 4).expect("reads"), 4);
        assert_eq!((&buf[..], input), (&b"abcd"[..], &b"ef"[..]));
        assert_eq!(buf.capacity(), 4, "not grown");
        let mut more = Vec::with_capacity(8);
        assert_eq!((&mut input).read_spare(&mut more, 8).expect("reads"), 2);
        assert_eq!((&more[..], input.len()), (&b"ef"[..], 0));
        assert_eq!(input.read_spare(&mut more, 6).expect("the end"), 0);
    }
}
