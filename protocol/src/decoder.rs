//! The receive side: bytes in, messages out.

use std::io;
use std::mem;
use std::sync::{Arc, Mutex, Weak};

use crate::error::{LocalError, PeerError, Phase};
use crate::header::{parse_header, Header};
use crate::message::{check_json_content, Message};
use crate::protoheader;
use crate::{Limits, ReadSpare};

/// Content is allocated in pieces of at least this much, each new piece as large as what
/// was received before it up to [`PIECE_MAX`], and never past what the header announced:
/// a peer that announces 16 MiB and sends nothing costs nothing, one that sends `n` bytes
/// costs at most `n + min(max(n, 64 KiB), 1 MiB)`: what it sent, plus a constant. A full
/// piece is kept as it is and the next bytes go into a new one: no byte is copied again as
/// the content grows (growing one buffer by doubling copied as much again as the content,
/// wherever `realloc` could not grow in place, and held twice what was received).
const CONTENT_STEP: usize = 64 * 1024;

/// The largest piece allocated ahead of the bytes that fill it (bytes already in hand, as
/// [`Decoder::receive`] has them, get one piece of their size).
const PIECE_MAX: usize = 1024 * 1024;

/// Of a piece that was not allocated zeroed (its first bytes were appended, not read),
/// [`Decoder::read_buf`] initialises and lends at most this much at a time (at least the
/// read-buffer size). Safe Rust must zero memory before lending it to `recv`; zeroing one
/// window just ahead of the read keeps that in cache. A piece started by `read_buf` is
/// allocated zeroed instead (`calloc`: free for memory the allocator maps fresh) and lent
/// whole.
const CONTENT_WINDOW: usize = 128 * 1024;

/// The most full-size pieces ([`PIECE_MAX`]) a connection keeps for its next large
/// content once the message that held them is dropped ([`Decoder::with_piece_reuse`]):
/// 16 MiB.
const SPARE_MAX: usize = 16;

/// Pieces of large contents given back by the messages that held them, for the next
/// large content of the same connection: memory already mapped and written (no page
/// faults, no zero-fill before `recv`). Shared between a decoder and the messages it made
/// (which hold it weakly); while `open` is `false` (the connection freed its buffers) it
/// takes nothing back. Behind a `Mutex` only because a [`crate::Message`] is `Send`: a
/// service may drop one on another thread than its connection's. The core starts no thread
/// and never waits on one; the lock is held for a few pushes or pops.
#[derive(Debug, Default)]
pub(crate) struct Spare {
    pieces: Vec<Vec<u8>>,
    open: bool,
}

/// Gives the pieces of a dropped message back to the connection they came from: those of
/// full size, as long as it is open to them and has room; the rest are freed. A piece is
/// kept whole and initialised (its length is its capacity), ready to be lent to `recv`.
pub(crate) fn give_back(home: &Weak<Mutex<Spare>>, pieces: &mut Vec<Vec<u8>>) {
    let Some(home) = home.upgrade() else {
        return;
    };
    let Ok(mut spare) = home.lock() else {
        return;
    };
    if !spare.open {
        return;
    }
    for mut piece in pieces.drain(..) {
        if spare.pieces.len() == SPARE_MAX {
            break;
        }
        if piece.capacity() == PIECE_MAX {
            piece.resize(PIECE_MAX, 0);
            spare.pieces.push(piece);
        }
    }
}

/// How many pieces `spare` holds (out of line: only connections that received a content
/// in pieces have one).
#[inline(never)]
fn spare_len(spare: &Mutex<Spare>) -> usize {
    spare.lock().map_or(0, |s| s.pieces.len())
}

/// Default size of the staging buffer behind [`Decoder::read_buf`].
pub(crate) const DEFAULT_READ_BUF: usize = 16 * 1024;

/// A header buffer larger than this is freed once its header is parsed.
const HBUF_KEEP: usize = 4 * 1024;

/// The message a connection is receiving, as far as its size is known
/// ([`crate::Connection::receiving`]): what a server must be ready to allocate for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Receiving {
    /// Stream offset where the message starts (tells one message from the next).
    pub start: u64,
    /// Bytes announced for the part now arriving: the header's length while the header
    /// arrives in pieces, then the content's length.
    pub announced: usize,
    /// Of those, bytes not allocated yet: the most the connection will still allocate to
    /// receive this part.
    pub to_allocate: usize,
    /// Of those, bytes received so far (taken in by the machine; bytes still staged are
    /// not counted).
    pub received: usize,
    /// The size of the buffer the machine allocates next to receive this part (a content
    /// is received in pieces: at least 64 KiB, or as large as what was received up to
    /// 1 MiB, never more than what is left; 0 for a header). A transport that reads large
    /// contents into buffers of its own ([`crate::Connection::receive_piece`]) sizes them
    /// by this, so that memory follows the bytes received.
    pub next_piece: usize,
}

/// What the decoder has for you.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A complete message.
    Message(Message),
    /// Everything received so far has been consumed; feed more bytes.
    NeedData,
    /// The stream ended cleanly between two messages; no more messages will come.
    End,
}

/// The phase the decoder is in: where the next byte goes.
#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) the 2-byte protoheader.
    Protoheader,
    /// The header length is known; waiting for its bytes.
    Header { len: usize },
    /// The header is known; `len` content bytes in all.
    Content { header: Header, len: usize },
    /// Clean end of stream.
    End,
    /// A peer error; reported again on every call.
    Failed(PeerError),
}

/// Which buffer [`Decoder::read_buf`] lent out, and how large it was.
#[derive(Debug, Clone, Copy)]
enum Lent {
    None,
    Staging(usize),
    Content(usize),
}

/// The receive state machine behind [`crate::Connection`] (its one way in) and the
/// one-shot [`crate::decode`]; not public, so those are the only doors.
///
/// [`Decoder::decode`] takes bytes from a slice as it needs them (httparse style: a
/// complete message is parsed in place, only a partial one is copied) and returns at most
/// one message per call; [`Decoder::read_buf`] + [`Decoder::commit`] stage bytes for
/// [`Decoder::next_event`]. [`Decoder::position`] and [`Decoder::message_start`] locate
/// messages and errors in the stream. End of stream is explicit ([`Decoder::receive_eof`]):
/// clean between messages ([`Event::End`]), [`PeerError::UnexpectedEof`] inside one. The
/// verdict never depends on how the bytes were split, and after a peer error the decoder
/// stays failed.
#[derive(Debug)]
pub(crate) struct Decoder {
    limits: Limits,
    state: State,
    /// Protoheader bytes while it is split.
    ph: [u8; 2],
    ph_have: usize,
    /// Header bytes while the header is split.
    hbuf: Vec<u8>,
    /// Content being received: the full `pieces` (`pieces_len` bytes of data in
    /// `pieces_cap` allocated), then the piece being filled, `content`:
    /// `content.capacity()` is allocated, `content.len()` is initialised (data, or zeroes
    /// lent to `recv`), its first `filled - pieces_len` bytes hold data. `filled` counts
    /// the content's bytes received in all.
    content: Vec<u8>,
    pieces: Vec<Vec<u8>>,
    pieces_len: usize,
    pieces_cap: usize,
    filled: usize,
    /// Staging buffer for `receive` and `read_buf`: unread bytes are `rbuf[rpos..rend]`.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    read_buf_size: usize,
    /// Bytes of header and content buffer the decoder may still allocate
    /// ([`Decoder::set_alloc_allowance`]); `usize::MAX`: no bound.
    allowance: usize,
    lent: Lent,
    eof: bool,
    /// Stream offset of the next byte the state machine will consume.
    position: u64,
    /// Stream offset where the message in progress (or the next one) starts.
    message_start: u64,
    /// Whether pieces of dropped messages come back ([`Decoder::with_piece_reuse`]).
    reuse: bool,
    /// Where they come back to: made with the first message received in pieces.
    spare: Option<Arc<Mutex<Spare>>>,
}

impl Decoder {
    /// A decoder at the start of a stream.
    #[inline]
    pub(crate) fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            state: State::Protoheader,
            ph: [0; 2],
            ph_have: 0,
            hbuf: Vec::new(),
            content: Vec::new(),
            pieces: Vec::new(),
            pieces_len: 0,
            pieces_cap: 0,
            filled: 0,
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            read_buf_size: DEFAULT_READ_BUF,
            allowance: usize::MAX,
            lent: Lent::None,
            eof: false,
            position: 0,
            message_start: 0,
            reuse: false,
            spare: None,
        }
    }

    /// Keeps the full-size pieces of the large contents this decoder received, once the
    /// messages holding them are dropped (at most [`SPARE_MAX`] of them), for the next
    /// large content: memory already mapped and written, which `recv` fills without page
    /// faults or a zero-fill first. They count in [`Decoder::allocated`] and are freed by
    /// [`Decoder::release_buffers`]; a kept piece is taken for a new piece while at least
    /// [`PIECE_MAX`] of the content is still to come.
    #[inline]
    pub(crate) fn with_piece_reuse(mut self, on: bool) -> Decoder {
        self.reuse = on;
        if !on {
            self.spare = None;
        }
        self
    }

    /// Sets the size of the staging buffer [`Decoder::read_buf`] lends (at least 64 bytes;
    /// default [`DEFAULT_READ_BUF`]). Content of at least this many remaining bytes is
    /// received directly into the message's own buffer.
    #[inline]
    pub(crate) fn with_read_buf_size(mut self, size: usize) -> Decoder {
        self.read_buf_size = size.max(64);
        self
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bounds what the decoder may allocate from now on for headers and contents
    /// (`usize::MAX`: no bound). A part that needs more waits, its bytes staged, until the
    /// allowance is raised.
    #[inline]
    pub(crate) fn set_alloc_allowance(&mut self, bytes: usize) {
        self.allowance = bytes;
    }

    /// Decodes from `input`, advancing it past the bytes consumed. Returns at most one
    /// message; call again (with the rest of `input`) until [`Event::NeedData`], which means
    /// all of `input` was consumed.
    pub(crate) fn decode(&mut self, input: &mut &[u8]) -> Result<Event, PeerError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        if self.rpos < self.rend {
            let rbuf = mem::take(&mut self.rbuf);
            let mut staged = rbuf.get(self.rpos..self.rend).unwrap_or_default();
            let before = staged.len();
            let result = self.step(&mut staged);
            self.rpos += before - staged.len();
            self.rbuf = rbuf;
            if self.rpos == self.rend {
                self.rpos = 0;
                self.rend = 0;
            }
            match result {
                Ok(Some(m)) => return Ok(Event::Message(m)),
                // Stopped by the allocation allowance, bytes still staged.
                Ok(None) if self.rpos < self.rend => return Ok(Event::NeedData),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        match self.step(input) {
            Ok(Some(m)) => Ok(Event::Message(m)),
            Ok(None) if self.eof => self.at_eof(),
            Ok(None) => Ok(Event::NeedData),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The next event from bytes already taken in (after [`Decoder::receive_eof`], the
    /// verdict on the end of the stream).
    pub(crate) fn next_event(&mut self) -> Result<Event, PeerError> {
        if !self.has_event() {
            // What `decode` would find, without running it: a server asks after every
            // request and every write, and is usually told this.
            return Ok(Event::NeedData);
        }
        self.decode(&mut &[][..])
    }

    /// `false` when [`Decoder::next_event`] can only be [`Event::NeedData`]: nothing is
    /// staged, no content lent out is complete, the stream has not ended, no error is held.
    /// (Protoheader and header bytes reach their state only as they are decoded, and a
    /// part complete in the staged bytes is decoded in the same call.)
    fn has_event(&self) -> bool {
        self.rpos < self.rend
            || self.eof
            || match self.state {
                State::Content { len, .. } => self.filled >= len,
                State::Failed(_) => true,
                State::Protoheader | State::Header { .. } | State::End => false,
            }
    }

    /// Lends a writable slice to receive into; report how many bytes were written with
    /// [`Decoder::commit`]. While a content of at least the read-buffer size is arriving and
    /// nothing else is staged, this is the message's own content buffer.
    pub(crate) fn read_buf(&mut self) -> &mut [u8] {
        if let State::Content { len, .. } = self.state {
            let remaining = len - self.filled;
            if self.rpos == self.rend && remaining >= self.read_buf_size {
                // Past the allowance, the staging buffer is lent instead.
                let at = self.filled - self.pieces_len;
                let room = self.content.len() > at
                    || at < self.content.capacity()
                    || self.new_piece(len, self.read_buf_size, true);
                if room {
                    let at = self.filled - self.pieces_len;
                    if self.content.len() == at {
                        // Initialise one window (what `recv` may write), no more.
                        let window = self.read_buf_size.max(CONTENT_WINDOW);
                        let end = (at + window)
                            .min(self.content.capacity())
                            .min(at + remaining);
                        self.content.resize(end, 0);
                    }
                    let spare = self.content.get_mut(at..).unwrap_or_default();
                    self.lent = Lent::Content(spare.len());
                    return spare;
                }
            }
        }
        self.compact_staging();
        // Room for one more read: grow when full, or to the configured size at first.
        if self.rbuf.len() == self.rend || self.rbuf.len() < self.read_buf_size {
            self.rbuf.resize(self.rend + self.read_buf_size, 0);
        }
        let spare = self.rbuf.get_mut(self.rend..).unwrap_or_default();
        self.lent = Lent::Staging(spare.len());
        spare
    }

    /// Records that `n` bytes were written at the start of the slice last returned by
    /// [`Decoder::read_buf`]. Committing more than that slice held is
    /// [`LocalError::CommitTooLarge`]; committing after end of stream is [`LocalError::ReceiveAfterEof`].
    pub(crate) fn commit(&mut self, n: usize) -> Result<(), LocalError> {
        let lent = mem::replace(&mut self.lent, Lent::None);
        match lent {
            _ if n == 0 => Ok(()),
            _ if self.eof => Err(LocalError::ReceiveAfterEof),
            Lent::Staging(avail) if n <= avail => {
                self.rend += n;
                Ok(())
            }
            Lent::Content(avail) if n <= avail => {
                self.filled += n;
                self.position += n as u64;
                Ok(())
            }
            Lent::Staging(available) | Lent::Content(available) => {
                Err(LocalError::CommitTooLarge {
                    committed: n,
                    available,
                })
            }
            Lent::None => Err(LocalError::CommitTooLarge {
                committed: n,
                available: 0,
            }),
        }
    }

    /// Takes bytes already in memory from the front of `input`, advancing it, as copying
    /// them into [`Decoder::read_buf`] and committing would: at most one lending's worth,
    /// except that the bytes of a large content are appended straight to its pieces,
    /// without the zero-fill a lent slice needs. Returns how many were taken (0 only for an
    /// empty `input`).
    pub(crate) fn receive(&mut self, input: &mut &[u8]) -> Result<usize, LocalError> {
        if input.is_empty() {
            return Ok(0);
        }
        if self.eof {
            return Err(LocalError::ReceiveAfterEof);
        }
        // A slice lent and not committed is lent no more.
        self.lent = Lent::None;
        if let State::Content { len, .. } = self.state {
            let remaining = len - self.filled;
            if self.rpos == self.rend && remaining >= self.read_buf_size {
                let most = self.content_room(len);
                let take = remaining
                    .min(input.len())
                    .min(most.saturating_sub(self.filled));
                if take > 0 {
                    let (bytes, rest) = input.split_at(take);
                    self.put_content(bytes, len);
                    self.position += take as u64;
                    *input = rest;
                    return Ok(take);
                }
            }
        }
        let buf = self.read_buf();
        let n = buf.len().min(input.len());
        let (bytes, rest) = input.split_at(n);
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(bytes);
        }
        self.commit(n)?;
        *input = rest;
        Ok(n)
    }

    /// Takes `piece`, bytes received into a buffer of the caller's, as the next piece of
    /// the content arriving, without copying it: only while a content is arriving, nothing
    /// is staged, at least `piece.len()` bytes of it are still to come and the allowance
    /// covers `piece.capacity()`. Otherwise `piece` is handed back untouched, for
    /// [`Decoder::receive`].
    pub(crate) fn receive_piece(&mut self, piece: Vec<u8>) -> Result<Option<Vec<u8>>, LocalError> {
        if piece.is_empty() {
            return Ok(None);
        }
        if self.eof {
            return Err(LocalError::ReceiveAfterEof);
        }
        let State::Content { len, .. } = self.state else {
            return Ok(Some(piece));
        };
        if self.rpos != self.rend
            || piece.len() > len - self.filled
            || piece.capacity() > self.allowance
        {
            return Ok(Some(piece));
        }
        self.lent = Lent::None;
        // The piece being filled ends here (zeroes lent and not written are not content).
        let mut current = mem::take(&mut self.content);
        current.truncate(self.filled - self.pieces_len);
        if !current.is_empty() {
            self.pieces_len += current.len();
            self.pieces_cap += current.capacity();
            self.pieces.push(current);
        }
        self.spend(piece.capacity());
        self.filled += piece.len();
        self.position += piece.len() as u64;
        self.pieces_len += piece.len();
        self.pieces_cap += piece.capacity();
        self.pieces.push(piece);
        Ok(None)
    }

    /// Reads once from `reader` into [`Decoder::read_buf`] and commits what arrived. `Ok(0)`
    /// means end of stream, which is recorded as by [`Decoder::receive_eof`]. Errors
    /// (including `WouldBlock` and `Interrupted`) are returned untouched for the caller's
    /// loop to handle.
    pub(crate) fn read_from<R: io::Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        let result = reader.read(self.read_buf());
        match result {
            Ok(0) => {
                self.lent = Lent::None;
                self.receive_eof();
                Ok(0)
            }
            Ok(n) => self
                .commit(n)
                .map(|()| n)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) => {
                self.lent = Lent::None;
                Err(e)
            }
        }
    }

    /// As [`Decoder::read_from`], except that while a large content arrives (what
    /// [`Decoder::read_buf`] would lend the content buffer for), the piece being filled is
    /// lent to `reader` as a `Vec` to append to, within its spare capacity: the bytes land
    /// in memory that was never zeroed. Bytes appended before an error are committed; a
    /// `WouldBlock` after some is `Ok`.
    pub(crate) fn read_spare_from<R: ReadSpare + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<usize> {
        let Some(limit) = self.spare_room() else {
            return self.read_from(reader);
        };
        self.lent = Lent::None;
        let at = self.filled - self.pieces_len;
        // Zeroes lent to `recv` earlier and not written are not content: spare again.
        self.content.truncate(at);
        let cap = self.content.capacity();
        let result = reader.read_spare(&mut self.content, limit);
        if self.content.capacity() != cap {
            // A reader that grew the piece (it must not): the memory is counted all the
            // same.
            self.spend(self.content.capacity().saturating_sub(cap));
        }
        let n = self.content.len().saturating_sub(at);
        if n > limit || self.content.len() < at {
            // More than was lent, or bytes taken away: the stream is lost (the piece is
            // put back to the length the decoder counts, so it stays consistent).
            self.content.resize(at, 0);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                LocalError::CommitTooLarge {
                    committed: n,
                    available: limit,
                },
            ));
        }
        self.filled += n;
        self.position += n as u64;
        match result {
            Ok(_) if n == 0 => {
                self.receive_eof();
                Ok(0)
            }
            Ok(_) => Ok(n),
            Err(e) if n > 0 && is_transient(&e) => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// `true` while [`Decoder::read_spare_from`] lends the content's piece (a large
    /// content arriving, nothing staged), unless the allowance stops it.
    #[inline]
    pub(crate) fn reads_into_spare(&self) -> bool {
        match self.state {
            State::Content { len, .. } => {
                self.rpos == self.rend && len - self.filled >= self.read_buf_size && !self.eof
            }
            _ => false,
        }
    }

    /// While a large content arrives and nothing is staged: makes sure the piece being
    /// filled has spare capacity (a new piece is allocated, not zeroed, if the allowance
    /// covers it) and returns how many bytes may be appended to it. `None`: the bytes go
    /// through [`Decoder::read_buf`].
    fn spare_room(&mut self) -> Option<usize> {
        let State::Content { len, .. } = self.state else {
            return None;
        };
        if !self.reads_into_spare() {
            return None;
        }
        let remaining = len - self.filled;
        let at = self.filled - self.pieces_len;
        if at == self.content.capacity() && !self.new_piece(len, self.read_buf_size, false) {
            return None;
        }
        let at = self.filled - self.pieces_len;
        Some((self.content.capacity() - at).min(remaining))
    }

    /// Records the end of the stream. Later events are [`Event::End`] if it came between two
    /// messages, [`PeerError::UnexpectedEof`] otherwise.
    pub(crate) fn receive_eof(&mut self) {
        self.eof = true;
    }

    /// `true` once end of stream was recorded.
    #[inline]
    pub(crate) fn is_eof(&self) -> bool {
        self.eof
    }

    /// The peer error the decoder failed with, if it did.
    #[inline]
    pub(crate) fn error(&self) -> Option<&PeerError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// `true` if part of a message has been taken in but not the whole of it: a stream that
    /// ends now is cut inside a message.
    #[inline]
    pub(crate) fn message_in_progress(&self) -> bool {
        self.rpos < self.rend
            || match self.state {
                State::Protoheader => self.ph_have > 0,
                State::Header { .. } | State::Content { .. } => true,
                State::End | State::Failed(_) => false,
            }
    }

    /// Offset in the stream of the next byte to decode: the number of bytes consumed.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Offset in the stream where the message in progress (or the next one) begins.
    pub(crate) fn message_start(&self) -> u64 {
        self.message_start
    }

    /// Bytes this decoder holds allocated (staging, header and content buffers): what a
    /// peer's input costs in memory right now.
    #[inline]
    pub(crate) fn allocated(&self) -> usize {
        self.rbuf.capacity()
            + self.hbuf.capacity()
            + self.content_allocated()
            + self.spare_count() * PIECE_MAX
    }

    /// Pieces kept for the next large content ([`Decoder::with_piece_reuse`]). Inline
    /// down to the test for a connection that never received a content in pieces (every
    /// request's accounting asks).
    #[inline]
    fn spare_count(&self) -> usize {
        match &self.spare {
            None => 0,
            Some(spare) => spare_len(spare),
        }
    }

    /// Of a content of `total` bytes, the bytes the kept pieces will hold: a kept piece
    /// is taken for every new piece while at least [`PIECE_MAX`] is still to come (each
    /// new piece starts where the allocated ones end).
    #[inline]
    fn spare_usable(&self, total: usize) -> usize {
        let Some(spare) = &self.spare else {
            return 0;
        };
        let count = spare_len(spare);
        let from = self.content_allocated();
        (total.saturating_sub(from) / PIECE_MAX).min(count) * PIECE_MAX
    }

    /// How far into a content of `total` bytes the decoder may receive now: what is
    /// allocated for it, what kept pieces will hold, and what the allowance lets it
    /// allocate after them.
    fn content_room(&self, total: usize) -> usize {
        self.content_allocated()
            .saturating_add(self.spare_usable(total))
            .saturating_add(self.allowance)
            .min(total)
    }

    /// A kept piece, for the next piece of a content of `total` bytes with room for at
    /// least `at_least` of them, while at least a whole piece of it is still to come
    /// (memory already allocated: unlike a fresh piece, it need not follow the bytes
    /// received).
    fn take_spare(&mut self, total: usize, at_least: usize) -> Option<Vec<u8>> {
        if at_least > PIECE_MAX || total - self.filled < PIECE_MAX {
            return None;
        }
        self.spare.as_ref()?.lock().ok()?.pieces.pop()
    }

    /// Bytes allocated for the content being received (its pieces and the one filling).
    #[inline]
    fn content_allocated(&self) -> usize {
        self.pieces_cap + self.content.capacity()
    }

    /// The message being received, if its size is known: where it starts in the stream,
    /// the bytes its header announced for the part now arriving (the header while it is
    /// split, then the content), and how many of them are not allocated yet.
    #[inline]
    pub(crate) fn receiving(&self) -> Option<Receiving> {
        let (announced, allocated, received, next_piece) = match self.state {
            State::Header { len } => (len, self.hbuf.capacity(), self.hbuf.len(), 0),
            State::Content { len, .. } => (
                len,
                self.content_allocated() + self.spare_usable(len),
                self.filled,
                self.piece_size(len),
            ),
            _ => return None,
        };
        Some(Receiving {
            start: self.message_start,
            announced,
            to_allocate: announced.saturating_sub(allocated),
            received,
            next_piece,
        })
    }

    /// Bytes the next [`Decoder::read_buf`] would allocate for its staging buffer (0 when
    /// it lends the content buffer of a large content, whose growth [`Decoder::receiving`]
    /// covers, or when the staging buffer has room).
    #[inline]
    pub(crate) fn read_alloc_need(&self) -> usize {
        if let State::Content { len, .. } = self.state {
            if self.rpos == self.rend && len - self.filled >= self.read_buf_size {
                return 0;
            }
        }
        let rend = self.rend - self.rpos;
        if self.rbuf.len() == self.rend || self.rbuf.len() < self.read_buf_size {
            (rend + self.read_buf_size).saturating_sub(self.rbuf.capacity())
        } else {
            0
        }
    }

    /// Takes the staging buffer out, if it holds no unread byte (to keep it in a pool
    /// while the connection is idle); the next read allocates one, or uses the one given
    /// back with [`Decoder::give_read_buffer`].
    #[inline]
    pub(crate) fn take_read_buffer(&mut self) -> Option<Vec<u8>> {
        if self.rpos != self.rend || self.rbuf.capacity() == 0 {
            return None;
        }
        // A slice lent and not committed (a read that found nothing) is lent no more.
        if let Lent::Staging(_) = self.lent {
            self.lent = Lent::None;
        }
        self.rpos = 0;
        self.rend = 0;
        Some(mem::take(&mut self.rbuf))
    }

    /// Gives a staging buffer to a decoder that has none (its contents are overwritten);
    /// hands it back if the decoder has one already.
    #[inline]
    pub(crate) fn give_read_buffer(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        if self.rbuf.capacity() == 0 && !matches!(self.lent, Lent::Staging(_)) {
            self.rbuf = buf;
            self.rpos = 0;
            self.rend = 0;
            None
        } else {
            Some(buf)
        }
    }

    /// Frees the buffers that hold nothing, so an idle connection costs only the decoder
    /// itself.
    pub(crate) fn release_buffers(&mut self) {
        if self.rpos == self.rend {
            self.rbuf = Vec::new();
            self.rpos = 0;
            self.rend = 0;
        }
        if self.hbuf.is_empty() {
            self.hbuf = Vec::new();
        }
        if let Some(Ok(mut spare)) = self.spare.as_ref().map(|s| s.lock()) {
            // Messages dropped from now on free their pieces, until the next one in
            // pieces is received.
            spare.open = false;
            spare.pieces = Vec::new();
        }
    }

    fn fail(&mut self, e: PeerError) -> PeerError {
        self.state = State::Failed(e.clone());
        e
    }

    fn at_eof(&mut self) -> Result<Event, PeerError> {
        let (phase, missing) = match self.state {
            State::Protoheader if self.ph_have == 0 => {
                self.state = State::End;
                return Ok(Event::End);
            }
            State::End => return Ok(Event::End),
            State::Protoheader => (Phase::Protoheader, 2 - self.ph_have),
            State::Header { len } => (Phase::Header, len - self.hbuf.len()),
            State::Content { len, .. } => (Phase::Content, len - self.filled),
            State::Failed(ref e) => return Err(e.clone()),
        };
        Err(self.fail(PeerError::UnexpectedEof { phase, missing }))
    }

    fn compact_staging(&mut self) {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
    }

    /// The size of the next piece of a content of `total` bytes: one step, or as large as
    /// what was received so far up to [`PIECE_MAX`], never past what is left.
    #[inline]
    fn piece_size(&self, total: usize) -> usize {
        self.filled
            .clamp(CONTENT_STEP, PIECE_MAX)
            .min(total.saturating_sub(self.filled))
    }

    /// The piece being filled is full (or there is none): starts a new one for the next
    /// bytes of a content of `total` bytes, with room for at least `at_least` of them: one
    /// step, or as large as what was received so far, or `at_least` if more, never past
    /// `total` or the allowance. `zeroed`: allocated zeroed, to be lent whole to `recv`;
    /// otherwise nothing is initialised (bytes are appended). `false` (nothing allocated)
    /// if the allowance does not cover `at_least` bytes.
    fn new_piece(&mut self, total: usize, at_least: usize, zeroed: bool) -> bool {
        let left = total - self.filled;
        let at_least = at_least.min(left);
        if at_least == 0 {
            return false;
        }
        if let Some(mut piece) = self.take_spare(total, at_least) {
            // Kept whole and initialised: lent to `recv` as it is, or appended to.
            if !zeroed {
                piece.clear();
            }
            self.install_piece(piece);
            return true;
        }
        if at_least > self.allowance {
            return false;
        }
        let size = self.piece_size(total).max(at_least).min(self.allowance);
        let piece = if zeroed {
            // To be lent to `recv`, which needs it initialised: asked of the allocator
            // zeroed (`calloc`), which costs nothing more for memory it maps fresh (pages
            // the kernel zeroes anyway, and only once touched), where zeroing it here
            // wrote every byte once more before `recv` did.
            vec![0; size]
        } else {
            Vec::with_capacity(size)
        };
        self.install_piece(piece);
        self.spend(self.content.capacity());
        true
    }

    /// Makes `piece` the piece being filled; the full one before it joins the pieces.
    fn install_piece(&mut self, piece: Vec<u8>) {
        let full = mem::replace(&mut self.content, piece);
        if full.capacity() > 0 {
            let mut full = full;
            // Zeroes lent to `recv` and not written are not content.
            full.truncate(self.filled - self.pieces_len);
            self.pieces_len += full.len();
            self.pieces_cap += full.capacity();
            self.pieces.push(full);
        }
    }

    fn spend(&mut self, bytes: usize) {
        if self.allowance != usize::MAX {
            self.allowance = self.allowance.saturating_sub(bytes);
        }
    }

    /// Appends received content bytes to the piece being filled: over zeroes lent to `recv`
    /// and not written, then past the initialised part without zeroing first; then into
    /// new pieces. The caller made sure the allowance covers them.
    fn put_content(&mut self, mut bytes: &[u8], total: usize) {
        while !bytes.is_empty() {
            let at = self.filled - self.pieces_len;
            // With pieces kept, a full-size one at a time (bytes in hand otherwise get one
            // piece of their size).
            let want = if self.spare.is_some() {
                bytes.len().min(PIECE_MAX)
            } else {
                bytes.len()
            };
            if at == self.content.capacity() && !self.new_piece(total, want, false) {
                return;
            }
            let at = self.filled - self.pieces_len;
            let room = self.content.capacity() - at;
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            let end = at + now.len();
            let overlap = self.content.len().min(end).saturating_sub(at);
            let (over, after) = now.split_at(overlap);
            if let Some(dst) = self.content.get_mut(at..at + overlap) {
                dst.copy_from_slice(over);
            }
            self.content.extend_from_slice(after);
            self.filled += now.len();
            bytes = later;
        }
    }

    /// Runs the state machine over `src`, consuming from its front. Returns a message as soon
    /// as one is complete (leaving the rest of `src`), or `None` once `src` is exhausted.
    fn step(&mut self, src: &mut &[u8]) -> Result<Option<Message>, PeerError> {
        loop {
            // Matched in place: the state (which holds a parsed header) is moved only when
            // a message completes, not on every call.
            match &mut self.state {
                State::Protoheader => {
                    let len = if self.ph_have == 0 {
                        if let Some((ph, rest)) = src.split_first_chunk::<{ protoheader::LEN }>() {
                            *src = rest;
                            protoheader::read(ph)
                        } else if let Some((&b, rest)) = src.split_first() {
                            *src = rest;
                            self.ph = [b, 0];
                            self.ph_have = 1;
                            self.position += 1;
                            return Ok(None);
                        } else {
                            return Ok(None);
                        }
                    } else {
                        let Some((&b, rest)) = src.split_first() else {
                            return Ok(None);
                        };
                        *src = rest;
                        self.ph_have = 0;
                        self.position -= 1;
                        protoheader::read(&[self.ph[0], b])
                    };
                    self.message_start = self.position;
                    self.position += 2;
                    let len = usize::from(len);
                    if len > self.limits.max_header_len {
                        return Err(PeerError::HeaderTooLong {
                            size: len,
                            max: self.limits.max_header_len,
                        });
                    }
                    self.state = State::Header { len };
                }
                State::Header { len } => {
                    let len = *len;
                    let parsed = if self.hbuf.is_empty() && src.len() >= len {
                        let (bytes, rest) = src.split_at(len);
                        *src = rest;
                        self.position += len as u64;
                        parse_header(bytes, &self.limits)
                    } else {
                        let take = (len - self.hbuf.len()).min(src.len());
                        let need = self.hbuf.len() + take;
                        let cap = self.hbuf.capacity();
                        if need > cap {
                            // Grows with the bytes received (doubling), within the allowance.
                            let most = cap.saturating_add(self.allowance).min(len);
                            if need > most {
                                return Ok(None);
                            }
                            let new_cap = need.max(cap.saturating_mul(2)).min(most);
                            self.hbuf.reserve_exact(new_cap - self.hbuf.len());
                            self.spend(self.hbuf.capacity().saturating_sub(cap));
                        }
                        let (bytes, rest) = src.split_at(take);
                        *src = rest;
                        self.hbuf.extend_from_slice(bytes);
                        // Buffered header bytes are consumed: count them now, as split
                        // protoheader and content bytes are (found by fuzz/decode_stream).
                        self.position += take as u64;
                        if self.hbuf.len() < len {
                            return Ok(None);
                        }
                        let parsed = parse_header(&self.hbuf, &self.limits);
                        if self.hbuf.capacity() > HBUF_KEEP {
                            self.hbuf = Vec::new();
                        } else {
                            self.hbuf.clear();
                        }
                        parsed
                    };
                    let header = parsed?;
                    let Ok(len) = usize::try_from(header.content_length) else {
                        return Err(PeerError::ContentTooLong {
                            size: header.content_length,
                            max: self.limits.max_content_len,
                        });
                    };
                    self.filled = 0;
                    self.content = Vec::new();
                    self.state = State::Content { header, len };
                }
                State::Content { len, .. } => {
                    let len = *len;
                    if self.filled < len {
                        let most = self.content_room(len);
                        let take = (len - self.filled)
                            .min(src.len())
                            .min(most.saturating_sub(self.filled));
                        if take == 0 {
                            return Ok(None);
                        }
                        let (bytes, rest) = src.split_at(take);
                        *src = rest;
                        if self.filled == 0 && take == len && self.content.capacity() == 0 {
                            // The whole content is here: one exact allocation, one copy.
                            self.content = bytes.to_vec();
                            self.spend(take);
                            self.filled = take;
                        } else {
                            self.put_content(bytes, len);
                        }
                        self.position += take as u64;
                        if self.filled < len {
                            return Ok(None);
                        }
                    }
                    return self.complete().map(Some);
                }
                State::End => return Ok(None),
                State::Failed(e) => return Err(e.clone()),
            }
        }
    }

    /// Where the pieces of a message completed now go back to once it is dropped (opened
    /// again if the connection had freed its buffers); nowhere without piece reuse.
    fn spare_home(&mut self) -> Weak<Mutex<Spare>> {
        if !self.reuse {
            return Weak::new();
        }
        let spare = self.spare.get_or_insert_with(Arc::default);
        if let Ok(mut s) = spare.lock() {
            s.open = true;
        }
        Arc::downgrade(spare)
    }

    /// The content is complete: hand out the message and start the next one.
    fn complete(&mut self) -> Result<Message, PeerError> {
        let State::Content { header, .. } = mem::replace(&mut self.state, State::Protoheader)
        else {
            return Err(PeerError::UnexpectedEof {
                phase: Phase::Content,
                missing: 0,
            });
        };
        let mut content = mem::take(&mut self.content);
        content.truncate(self.filled - self.pieces_len);
        let len = self.filled;
        self.filled = 0;
        self.message_start = self.position;
        if !self.pieces.is_empty() {
            let mut pieces = mem::take(&mut self.pieces);
            self.pieces_len = 0;
            self.pieces_cap = 0;
            if !content.is_empty() {
                pieces.push(content);
            }
            if pieces.len() == 1 {
                content = pieces.pop().unwrap_or_default();
            } else if !(self.limits.check_json_content && header.is_json()) {
                let home = self.spare_home();
                return Ok(Message::from_decoded_pieces(header, pieces, len, home));
            } else {
                // JSON is checked, and parsed later, as one text.
                content = Vec::with_capacity(len);
                for piece in &pieces {
                    content.extend_from_slice(piece);
                }
                give_back(&self.spare_home(), &mut pieces);
            }
        }
        let mut checked_depth = None;
        if self.limits.check_json_content && header.is_json() {
            check_json_content(&header, &content, &self.limits)?;
            checked_depth = Some(self.limits.max_depth.min(127));
        }
        Ok(Message::from_decoded(header, content, checked_depth))
    }
}

/// An error after which a read may be tried again: bytes appended before it were a
/// complete read.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::TimedOut
    )
}
