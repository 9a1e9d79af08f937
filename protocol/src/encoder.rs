//! The send side: messages in, bytes out.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use crate::error::LocalError;
use crate::message::{encode_framing, Message};

/// Content up to this size is copied next to its header (one segment, one `send` for small
/// messages); larger content is queued as its own segment, moved and never copied.
const INLINE_CONTENT: usize = 16 * 1024;
/// A segment grows by coalescing small messages up to about this size.
const SEGMENT_TARGET: usize = 64 * 1024;
/// Drained segments up to this capacity are kept for reuse.
const SPARE_KEEP: usize = 4 * 1024;
/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Slices looked for first by [`Encoder::write_to`].
const FEW_SLICES: usize = 4;

/// The outgoing queue behind [`crate::Connection`]'s one way out: encodes messages and
/// hands out the pending bytes until the transport reports them sent. Partial sends are its
/// business: report any count, it keeps the rest.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    segments: Segments,
    /// Bytes of the front segment already sent.
    head: usize,
    pending: usize,
    spare: Vec<u8>,
}

impl Encoder {
    /// An empty queue.
    #[inline]
    pub(crate) fn new() -> Encoder {
        Encoder::default()
    }

    /// Encodes `message` at the end of the queue. On error nothing is queued.
    pub(crate) fn queue(&mut self, message: Message) -> Result<(), LocalError> {
        let inline = message.content_len() <= INLINE_CONTENT;
        let fresh = match self.segments.back() {
            Some(tail) => tail.len() >= SEGMENT_TARGET,
            None => true,
        };
        if fresh {
            let seg = if self.spare.capacity() > 0 {
                std::mem::take(&mut self.spare)
            } else {
                Vec::with_capacity(if inline {
                    256 + message.content_len()
                } else {
                    256
                })
            };
            self.segments.push_back(seg);
        }
        let Some(tail) = self.segments.back_mut() else {
            return Ok(());
        };
        let before = tail.len();
        if let Err(e) = encode_framing(&message, tail) {
            if fresh && tail.is_empty() {
                self.segments.pop_back();
            }
            return Err(e);
        }
        if inline {
            for chunk in message.content_chunks() {
                tail.extend_from_slice(chunk);
            }
            self.pending += tail.len() - before;
        } else {
            self.pending += tail.len() - before;
            // A content received in pieces is sent as its pieces, never joined.
            for piece in message.into_content_pieces() {
                if !piece.is_empty() {
                    self.pending += piece.len();
                    self.segments.push_back(piece);
                }
            }
        }
        Ok(())
    }

    /// Bytes waiting to be sent.
    #[inline]
    pub(crate) fn pending_len(&self) -> usize {
        self.pending
    }

    /// `true` while bytes are waiting to be sent.
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        self.pending > 0
    }

    /// The next contiguous run of pending bytes (empty when nothing is pending).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> &[u8] {
        self.segments
            .front()
            .and_then(|s| s.get(self.head..))
            .unwrap_or_default()
    }

    /// Fills `slices` with the pending bytes, in order, for a vectored write; returns how
    /// many it filled.
    pub(crate) fn pending_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            let Some(slot) = slices.get_mut(n) else { break };
            let bytes = if i == 0 {
                seg.get(self.head..).unwrap_or_default()
            } else {
                seg
            };
            if !bytes.is_empty() {
                *slot = IoSlice::new(bytes);
                n += 1;
            }
        }
        n
    }

    /// Records that the first `n` pending bytes were sent (more than pending is clamped).
    pub(crate) fn consume(&mut self, n: usize) {
        let mut n = n.min(self.pending);
        self.pending -= n;
        while let Some(front) = self.segments.front() {
            let avail = front.len() - self.head;
            if n < avail {
                self.head += n;
                break;
            }
            n -= avail;
            self.head = 0;
            if let Some(mut seg) = self.segments.pop_front() {
                if seg.capacity() <= SPARE_KEEP && self.spare.capacity() == 0 {
                    seg.clear();
                    self.spare = seg;
                }
            }
        }
    }

    /// Writes pending bytes to `writer` once (vectored), consuming what it accepted.
    /// Errors, `WouldBlock` and `Interrupted` included, are the caller's to handle; a
    /// writer that accepts nothing while bytes are pending gives `WriteZero`.
    pub(crate) fn write_to<W: io::Write + ?Sized>(&mut self, writer: &mut W) -> io::Result<usize> {
        if self.pending == 0 {
            return Ok(0);
        }
        // Small answers are one run of bytes: a short array first (filling the long one,
        // 1 KiB on the stack, cost more than the write's own bookkeeping), the long one
        // only when the short one is full (large contents queued apart), so that a batch
        // still goes in one call.
        let mut few = [IoSlice::new(&[]); FEW_SLICES];
        let count = self.pending_slices(&mut few);
        let n = if count < FEW_SLICES {
            // One slice (the usual answer to one request) goes by plain `write`: on a
            // socket that is `send`, which costs the kernel less than `writev`.
            match few.get(..count).unwrap_or_default() {
                [one] => writer.write(one)?,
                several => writer.write_vectored(several)?,
            }
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = self.pending_slices(&mut slices);
            writer.write_vectored(slices.get(..count).unwrap_or_default())?
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the writer accepted no bytes",
            ));
        }
        self.consume(n);
        Ok(n)
    }

    /// Frees the reusable buffer, so an idle connection holds nothing.
    pub(crate) fn release_buffers(&mut self) {
        self.spare = Vec::new();
    }

    /// Bytes this queue holds allocated.
    #[inline]
    pub(crate) fn allocated(&self) -> usize {
        self.segments.allocated() + self.spare.capacity()
    }
}

/// The segments queued, oldest first: the first held in place, the rest in a `VecDeque`.
/// An answer at a time (the usual case) never allocates the deque: a connection that sends
/// one answer and closes (one-shot) saved its allocation and its free, about 200
/// instructions (callgrind).
#[derive(Debug, Default)]
struct Segments {
    /// The oldest segment; `None` only when `more` is empty too.
    first: Option<Vec<u8>>,
    more: VecDeque<Vec<u8>>,
}

impl Segments {
    fn push_back(&mut self, seg: Vec<u8>) {
        if self.first.is_none() {
            self.first = Some(seg);
        } else {
            self.more.push_back(seg);
        }
    }

    fn pop_back(&mut self) -> Option<Vec<u8>> {
        self.more.pop_back().or_else(|| self.first.take())
    }

    fn pop_front(&mut self) -> Option<Vec<u8>> {
        let front = self.first.take();
        self.first = self.more.pop_front();
        front
    }

    fn front(&self) -> Option<&Vec<u8>> {
        self.first.as_ref()
    }

    fn back(&self) -> Option<&Vec<u8>> {
        self.more.back().or(self.first.as_ref())
    }

    fn back_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self.more.back_mut() {
            Some(last) => Some(last),
            None => self.first.as_mut(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.first.iter().chain(self.more.iter())
    }

    /// Bytes held: the segments' buffers and the deque's (the first is in place). Asked
    /// on every step of a server session (its memory budget): no iterator chained over
    /// the first and the rest.
    #[inline]
    fn allocated(&self) -> usize {
        let first = self.first.as_ref().map_or(0, Vec::capacity);
        if self.more.capacity() == 0 {
            return first;
        }
        first
            + self.more.iter().map(Vec::capacity).sum::<usize>()
            + self.more.capacity() * std::mem::size_of::<Vec<u8>>()
    }
}
