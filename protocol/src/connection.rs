//! One side of a connection: both directions, the deadlines and the backpressure in one
//! state machine.

use std::io::{self, IoSlice};
use std::time::Instant;

use crate::decoder::{Decoder, Event, Receiving};
use crate::encoder::Encoder;
use crate::error::{LocalError, PeerError};
use crate::limits::{Deadlines, Limits, Timeout};
use crate::message::Message;
use crate::ReadSpare;

/// Which side of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends requests, receives responses.
    Client,
    /// Receives requests, sends responses.
    Server,
}

/// One side of a connection: what arrives, what leaves, the requests in flight, the
/// deadlines and the output cap, with no I/O and no clock.
///
/// There is **one way in** and **one way out**:
///
/// * in: [`Connection::read_buf`] lends a slice to receive into and [`Connection::commit`]
///   says how much arrived ([`Connection::read_from`] does both with any `io::Read`; `Ok(0)`
///   records the end of stream, as [`Connection::receive_eof`] does); then
///   [`Connection::next_event`] hands out messages.
/// * out: [`Connection::send`] queues a message; [`Connection::pending_slices`] and
///   [`Connection::consume`] hand out the bytes and take note of what was sent
///   ([`Connection::write_to`] does both with any `io::Write`).
///
/// The machine says what it wants: a transport waits for readability while
/// [`Connection::wants_read`], for writability while [`Connection::wants_write`], shuts its
/// write side down when [`Connection::wants_shutdown`], and sleeps no later than
/// [`Connection::poll_timeout`], then calls [`Connection::handle_timeout`]. Every method that
/// moves bytes takes `now`; the machine never reads a clock.
///
/// Pipelining is natural: a client may queue its next request before the previous answer
/// arrives; answers come back in order, and [`Connection::in_flight`] counts those owed.
///
/// ```
/// use std::time::{Duration, Instant};
/// use sockmsg_protocol::{Connection, Deadlines, Limits, Role, Timeout};
///
/// let start = Instant::now();
/// let deadlines = Deadlines { idle: Some(Duration::from_secs(60)), ..Deadlines::default() };
/// let mut conn = Connection::new(Role::Server, Limits::default()).with_deadlines(deadlines, start);
/// assert!(conn.wants_read() && !conn.wants_write());
/// assert_eq!(conn.poll_timeout(), Some(start + Duration::from_secs(60)));
/// assert_eq!(conn.handle_timeout(start + Duration::from_secs(59)), None);
/// assert_eq!(conn.handle_timeout(start + Duration::from_secs(60)), Some(Timeout::Idle));
/// assert!(!conn.wants_read() && conn.poll_timeout().is_none());
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    decoder: Decoder,
    encoder: Encoder,
    closed: bool,
    sent: u64,
    received: u64,
    deadlines: Deadlines,
    /// Reading is held back while this many bytes or more are pending.
    output_cap: usize,
    timed_out: Option<Timeout>,
    /// The latest instant passed in.
    now: Option<Instant>,
    /// Last time bytes moved either way (or the deadlines were set).
    last_activity: Option<Instant>,
    /// Last time output made progress, or became pending.
    write_progress: Option<Instant>,
    /// When the header clock of the message in progress started.
    message_started: Option<Instant>,
}

impl Connection {
    /// A connection in `role` with `limits` on what it accepts (and sends), no deadlines and
    /// no output cap.
    #[inline]
    pub fn new(role: Role, limits: Limits) -> Connection {
        Connection {
            role,
            decoder: Decoder::new(limits),
            encoder: Encoder::new(),
            closed: false,
            sent: 0,
            received: 0,
            deadlines: Deadlines::default(),
            output_cap: usize::MAX,
            timed_out: None,
            now: None,
            last_activity: None,
            write_progress: None,
            message_started: None,
        }
    }

    /// A client connection with default limits.
    pub fn client() -> Connection {
        Connection::new(Role::Client, Limits::default())
    }

    /// A server connection with default limits.
    pub fn server() -> Connection {
        Connection::new(Role::Server, Limits::default())
    }

    /// The same connection with `deadlines` (see [`Deadlines`]); the idle clock starts at
    /// `now`.
    #[inline]
    pub fn with_deadlines(mut self, deadlines: Deadlines, now: Instant) -> Connection {
        self.deadlines = deadlines;
        self.tick(now);
        self.last_activity = Some(now);
        self.write_progress = Some(now);
        self
    }

    /// The same connection with an output cap: while [`Connection::pending_len`] is at
    /// least `bytes`, the machine takes no more input ([`Connection::wants_read`] is `false`
    /// and [`Connection::next_event`] answers [`Event::NeedData`] without decoding what is
    /// buffered), and the header deadline of a message in progress does not run, since it
    /// is this side that is not reading. Once output drains below the cap, buffered
    /// messages come out of [`Connection::next_event`] again and the header clock restarts.
    #[inline]
    pub fn with_output_cap(mut self, bytes: usize) -> Connection {
        self.output_cap = bytes;
        self
    }

    /// The same connection with a read buffer of `size` bytes (at least 64; default
    /// 16 KiB): the most [`Connection::read_buf`] lends at a time outside large content,
    /// and the content size from which content is received in place.
    #[inline]
    pub fn with_read_buf_size(mut self, size: usize) -> Connection {
        self.decoder = self.decoder.with_read_buf_size(size);
        self
    }

    /// The same connection keeping the pieces of the large contents it receives for the
    /// next one, once the message that held them is dropped (up to 16 pieces of 1 MiB):
    /// a content of several MiB is then received into memory already mapped and written,
    /// with no page faults and no zero-fill before `recv`, where fresh pieces cost both
    /// (most of a 16 MiB request's receive CPU where the allocator maps large buffers
    /// afresh). The pieces kept count in [`Connection::allocated`], and
    /// [`Connection::release_buffers`] frees them (messages dropped after that free
    /// theirs, until the next large content arrives): a server calls it once the
    /// connection is idle. Off by default. A kept piece is taken for each new piece of a
    /// content while at least 1 MiB of it is still to come; fresh pieces still follow the
    /// bytes received.
    ///
    /// ```
    /// use std::time::Instant;
    /// use sockmsg_protocol::{encode, Connection, Event, Limits, Message, Role};
    ///
    /// let mut conn = Connection::new(Role::Server, Limits::default()).with_piece_reuse(true);
    /// let wire = encode(&Message::binary("x/y", vec![7; 3 << 20]))?;
    /// for round in 0..3 {
    ///     // As a socket would deliver it: one read_buf + commit per read.
    ///     let mut input = &wire[..];
    ///     let message = loop {
    ///         if let Event::Message(m) = conn.next_event()? {
    ///             break m;
    ///         }
    ///         let buf = conn.read_buf();
    ///         let n = buf.len().min(input.len());
    ///         let (now, rest) = input.split_at(n);
    ///         buf[..n].copy_from_slice(now);
    ///         input = rest;
    ///         conn.commit(n, Instant::now())?;
    ///     };
    ///     assert_eq!(message.content_len(), 3 << 20);
    ///     drop(message); // its full 1 MiB pieces go back to the connection
    ///     // Kept, and received into again: 2 MiB after the first message (its first
    ///     // MiB was fresh pieces of 64 to 512 KiB), 3 MiB after the others.
    ///     assert_eq!(conn.allocated() >> 20, if round == 0 { 2 } else { 3 });
    /// }
    /// conn.release_buffers();
    /// assert!(conn.allocated() < 1 << 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn with_piece_reuse(mut self, on: bool) -> Connection {
        self.decoder = self.decoder.with_piece_reuse(on);
        self
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        self.decoder.limits()
    }

    /// The deadlines in force.
    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    #[inline]
    fn tick(&mut self, now: Instant) {
        if self.now.map_or(true, |t| now > t) {
            self.now = Some(now);
        }
    }

    #[inline]
    fn at_cap(&self) -> bool {
        self.encoder.pending_len() >= self.output_cap
    }

    // ---- one way in ----

    /// Lends a writable slice to receive into; say how many bytes were written with
    /// [`Connection::commit`]. While a large content is arriving (at least the read-buffer
    /// size still to come) the slice is the message's own content buffer, so those bytes
    /// are never copied again.
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.decoder.read_buf()
    }

    /// Records that `n` bytes arrived at `now` at the start of the slice last lent by
    /// [`Connection::read_buf`]. More than that slice held is
    /// [`LocalError::CommitTooLarge`]; bytes after the end of stream,
    /// [`LocalError::ReceiveAfterEof`].
    pub fn commit(&mut self, n: usize, now: Instant) -> Result<(), LocalError> {
        self.decoder.commit(n)?;
        if n > 0 {
            self.note_input(now);
        }
        Ok(())
    }

    /// The same way in for bytes already in memory (a `BytesMut` a codec was handed, a
    /// capture): takes bytes from the front of `input` at `now`, advancing it, as copying
    /// them into [`Connection::read_buf`] and committing would, and returns how many it
    /// took (at most one read buffer's worth; 0 only for an empty `input`). The bytes of a
    /// large content go straight into the message's own buffer, without the zero-fill
    /// that lending it to a reader needs. Bytes after the end of stream are
    /// [`LocalError::ReceiveAfterEof`].
    ///
    /// ```
    /// use std::time::Instant;
    /// use sockmsg_protocol::{encode, Connection, Event, Message};
    ///
    /// let wire = encode(&Message::binary("x/y", vec![7u8; 100_000]))?;
    /// let mut conn = Connection::server();
    /// let mut input = &wire[..];
    /// let message = loop {
    ///     match conn.next_event()? {
    ///         Event::Message(m) => break m,
    ///         _ => conn.receive(&mut input, Instant::now())?,
    ///     };
    /// };
    /// assert_eq!((message.content_len(), input.len()), (100_000, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive(&mut self, input: &mut &[u8], now: Instant) -> Result<usize, LocalError> {
        let n = self.decoder.receive(input)?;
        if n > 0 {
            self.note_input(now);
        }
        Ok(n)
    }

    /// Takes `piece`, bytes received at `now` into a buffer of the caller's, whole, as the
    /// next piece of the content arriving: no byte is copied (the message keeps the buffer;
    /// see [`Message::content_chunks`]). For a transport that reads large contents into
    /// buffers it sizes itself (a codec handed a `BytesMut`): size them by
    /// [`Connection::receiving`], never by the announced length alone. Taken only while a
    /// content is arriving, nothing received is waiting to be decoded, at least
    /// `piece.len()` bytes of the content are still to come and the allocation allowance
    /// covers `piece.capacity()`; otherwise `Ok(Some(piece))` hands it back untouched, for
    /// [`Connection::receive`]. Bytes after the end of stream are
    /// [`LocalError::ReceiveAfterEof`].
    pub fn receive_piece(
        &mut self,
        piece: Vec<u8>,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, LocalError> {
        let n = piece.len();
        let back = self.decoder.receive_piece(piece)?;
        if back.is_none() && n > 0 {
            self.note_input(now);
        }
        Ok(back)
    }

    fn note_input(&mut self, now: Instant) {
        self.tick(now);
        self.last_activity = Some(now);
        if self.message_started.is_none() {
            self.message_started = Some(now);
        }
    }

    /// Reads once from `reader` into [`Connection::read_buf`] and commits what arrived.
    /// `Ok(0)` is the end of stream, recorded as by [`Connection::receive_eof`]. Errors
    /// (`WouldBlock` and `Interrupted` included) are returned untouched.
    pub fn read_from<R: io::Read + ?Sized>(
        &mut self,
        reader: &mut R,
        now: Instant,
    ) -> io::Result<usize> {
        let n = self.decoder.read_from(reader)?;
        if n > 0 {
            self.note_input(now);
        }
        Ok(n)
    }

    /// As [`Connection::read_from`], for a reader that can append to a `Vec`: while a large
    /// content arrives (at least the read-buffer size still to come), the piece of it being
    /// filled is lent to [`ReadSpare::read_spare`] with the room left in it, so the bytes
    /// land in memory that was never zeroed (a `&mut [u8]` lent to `read` must be zeroed
    /// first). Pieces are sized as for [`Connection::read_buf`] (at least 64 KiB, as large as
    /// what was received up to 1 MiB, never from the announced length alone) and never
    /// grown. Otherwise (headers, small messages) it reads once into
    /// [`Connection::read_buf`], exactly as `read_from`. Bytes appended before an error are
    /// taken in; a `WouldBlock` after some is `Ok`.
    pub fn read_spare_from<R: ReadSpare + ?Sized>(
        &mut self,
        reader: &mut R,
        now: Instant,
    ) -> io::Result<usize> {
        let n = self.decoder.read_spare_from(reader)?;
        if n > 0 {
            self.note_input(now);
        }
        Ok(n)
    }

    /// `true` while [`Connection::read_spare_from`] would lend the piece of a large content
    /// (at least the read-buffer size of it still to come, nothing received waiting to be
    /// decoded), so a caller can keep its own path for everything else.
    #[inline]
    pub fn reads_into_spare(&self) -> bool {
        self.decoder.reads_into_spare()
    }

    /// Records the end of the incoming stream: later events are [`Event::End`] if it came
    /// between two messages, [`PeerError::UnexpectedEof`] otherwise.
    pub fn receive_eof(&mut self) {
        self.decoder.receive_eof();
    }

    /// The next event from what was received: a message, [`Event::NeedData`] when
    /// everything received is consumed (or while output is at the cap), or [`Event::End`]
    /// after a clean end of stream. A peer error is reported again on every later call.
    pub fn next_event(&mut self) -> Result<Event, PeerError> {
        if self.at_cap() || self.timed_out.is_some() {
            return Ok(Event::NeedData);
        }
        let event = self.decoder.next_event();
        self.after_event(&event);
        event
    }

    fn after_event(&mut self, event: &Result<Event, PeerError>) {
        if !self.decoder.message_in_progress() || event.is_err() {
            self.message_started = None;
        } else if let Ok(Event::Message(_)) = event {
            // The next message is already under way: its clock starts now.
            self.message_started = self.now;
        }
        if let Ok(Event::Message(_)) = event {
            self.received += 1;
        }
    }

    // ---- one way out ----

    /// Queues a message (a request for a client, a response for a server) at `now`.
    /// Refused, with nothing queued: after [`Connection::close`] or a deadline
    /// ([`LocalError::SendAfterClose`]); for a server, an answer whose content is longer
    /// than [`Limits::max_content_len`] ([`LocalError::ContentOverLimit`]: a server never
    /// sends a message its own limits would refuse; a client's limits only bound what it
    /// accepts, so a client may tighten them without restricting its requests); a header
    /// the format cannot carry.
    pub fn send(&mut self, message: Message, now: Instant) -> Result<(), LocalError> {
        if self.closed || self.timed_out.is_some() {
            return Err(LocalError::SendAfterClose);
        }
        if self.role == Role::Server {
            let size = message.content_len() as u64;
            let max = self.decoder.limits().max_content_len;
            if size > max {
                return Err(LocalError::ContentOverLimit { size, max });
            }
        }
        let was_empty = !self.encoder.wants_write();
        self.encoder.queue(message)?;
        self.sent += 1;
        self.tick(now);
        if was_empty {
            self.write_progress = Some(now);
        }
        Ok(())
    }

    /// Fills `out` with the pending bytes, in order, for a vectored write; returns how many
    /// slices it filled.
    pub fn pending_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        self.encoder.pending_slices(out)
    }

    /// Bytes waiting to be sent.
    #[inline]
    pub fn pending_len(&self) -> usize {
        self.encoder.pending_len()
    }

    /// Records that the first `n` pending bytes were sent at `now` (more than pending is
    /// clamped).
    pub fn consume(&mut self, n: usize, now: Instant) {
        let before = self.encoder.pending_len();
        self.encoder.consume(n);
        self.after_output(before, now);
    }

    fn after_output(&mut self, before: usize, now: Instant) {
        let after = self.encoder.pending_len();
        if after == before {
            return;
        }
        self.tick(now);
        self.write_progress = Some(now);
        self.last_activity = Some(now);
        if before >= self.output_cap && after < self.output_cap && self.message_started.is_some() {
            // The pause was ours, not the peer's: the header clock starts again.
            self.message_started = Some(now);
        }
    }

    /// Writes pending bytes to `writer` once (vectored when there are several slices) and
    /// consumes what it accepted. Errors, `WouldBlock` and `Interrupted` included, are the
    /// caller's; a writer that accepts nothing while bytes are pending gives `WriteZero`.
    pub fn write_to<W: io::Write + ?Sized>(
        &mut self,
        writer: &mut W,
        now: Instant,
    ) -> io::Result<usize> {
        let before = self.encoder.pending_len();
        let n = self.encoder.write_to(writer)?;
        self.after_output(before, now);
        Ok(n)
    }

    // ---- what the machine wants ----

    /// `true` while reading can produce anything: no end of stream, no peer error, no
    /// deadline passed, not closed for reading (a server after [`Connection::close`]; a
    /// client after it once no answer is owed), and output below the cap.
    #[inline]
    pub fn wants_read(&self) -> bool {
        self.reading() && !self.at_cap()
    }

    /// Reading is possible, the output cap aside.
    #[inline]
    fn reading(&self) -> bool {
        self.timed_out.is_none()
            && !self.decoder.is_eof()
            && self.decoder.error().is_none()
            && !self.closed_for_reading()
    }

    #[inline]
    fn closed_for_reading(&self) -> bool {
        self.closed && (self.role == Role::Server || self.in_flight() == 0)
    }

    /// `true` while bytes are waiting to be sent (and no deadline passed).
    #[inline]
    pub fn wants_write(&self) -> bool {
        self.timed_out.is_none() && self.encoder.wants_write()
    }

    /// No more messages will be sent. Once everything queued is sent,
    /// [`Connection::wants_shutdown`] says so.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// `true` after [`Connection::close`].
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `true` when closed and everything queued was sent: time to shut down the write side.
    pub fn wants_shutdown(&self) -> bool {
        self.closed && self.timed_out.is_none() && !self.encoder.wants_write()
    }

    /// The earliest deadline running now, and which one it is.
    #[inline]
    fn deadline(&self) -> Option<(Instant, Timeout)> {
        if self.timed_out.is_some() {
            return None;
        }
        let mut best: Option<(Instant, Timeout)> = None;
        let mut consider = |start: Option<Instant>, limit: Option<std::time::Duration>, t| {
            if let (Some(start), Some(limit)) = (start, limit) {
                let at = start + limit;
                if best.map_or(true, |(b, _)| at < b) {
                    best = Some((at, t));
                }
            }
        };
        let pending = self.encoder.wants_write();
        let in_progress = self.decoder.message_in_progress();
        if pending {
            consider(self.write_progress, self.deadlines.write, Timeout::Write);
        }
        if in_progress && self.reading() && !self.at_cap() {
            consider(self.message_started, self.deadlines.header, Timeout::Header);
        }
        if !pending && !in_progress {
            consider(self.last_activity, self.deadlines.idle, Timeout::Idle);
        }
        best
    }

    /// When the transport must call [`Connection::handle_timeout`] at the latest: the
    /// earliest running deadline, or `None` when none runs.
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline().map(|(at, _)| at)
    }

    /// Checks the deadlines at `now`. `Some(t)`: deadline `t` passed (at or before `now`);
    /// the connection is finished: it wants no more reading or writing, and the transport
    /// closes it. `None`: nothing passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Timeout> {
        self.tick(now);
        match self.deadline() {
            Some((at, t)) if at <= now => {
                self.timed_out = Some(t);
                self.message_started = None;
                Some(t)
            }
            _ => None,
        }
    }

    /// The deadline that finished this connection, if one did.
    pub fn timed_out(&self) -> Option<Timeout> {
        self.timed_out
    }

    /// Messages owed by the other side: for a client, requests sent and not yet answered;
    /// for a server, requests received and not yet answered.
    #[inline]
    pub fn in_flight(&self) -> u64 {
        match self.role {
            Role::Client => self.sent.saturating_sub(self.received),
            Role::Server => self.received.saturating_sub(self.sent),
        }
    }

    /// `true` if part of a message has arrived but not all of it (bytes received and not
    /// yet decoded included).
    #[inline]
    pub fn message_in_progress(&self) -> bool {
        self.decoder.message_in_progress()
    }

    /// Offset in the incoming stream of the next byte to decode: how many received bytes
    /// [`Connection::next_event`] has gone through (bytes committed but not yet decoded
    /// are not counted). After a peer error, the offset where it was detected.
    ///
    /// With [`Connection::message_start`], this is for users who bring their own I/O and
    /// want to locate messages and errors in a stream (a capture inspector, a proxy that
    /// logs offsets; `app-inspect` does both). Taken just before and just after the
    /// [`Connection::next_event`] that hands out a message, they give its span:
    ///
    /// ```
    /// use std::time::Instant;
    /// use sockmsg_protocol::{encode, Connection, Event, Limits, Message, PeerError, Role};
    ///
    /// let mut stream = encode(&Message::binary("x/y", b"one".to_vec()))?;
    /// let first = stream.len() as u64;
    /// stream.extend(encode(&Message::binary("x/y", b"two!".to_vec()))?);
    /// let second = stream.len() as u64;
    /// stream.extend([0xff, 0xff]); // announces a 65,535-byte header: over the limit
    /// let limits = Limits { max_header_len: 1024, ..Limits::default() };
    /// let mut conn = Connection::new(Role::Server, limits);
    /// conn.read_from(&mut &stream[..], Instant::now())?;
    /// let mut spans = Vec::new();
    /// let error = loop {
    ///     let start = conn.message_start();
    ///     match conn.next_event() {
    ///         Ok(Event::Message(m)) => spans.push((start, conn.position(), m.into_content())),
    ///         Ok(other) => panic!("{other:?}"),
    ///         Err(e) => break (conn.message_start(), conn.position(), e),
    ///     }
    /// };
    /// assert_eq!(spans, [(0, first, b"one".to_vec()), (first, second, b"two!".to_vec())]);
    /// // The bad message starts at `second` and was refused after its 2-byte length.
    /// assert_eq!((error.0, error.1), (second, second + 2));
    /// assert!(matches!(error.2, PeerError::HeaderTooLong { size: 65535, max: 1024 }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn position(&self) -> u64 {
        self.decoder.position()
    }

    /// Offset in the incoming stream where the message in progress (or the next one)
    /// begins; see [`Connection::position`].
    pub fn message_start(&self) -> u64 {
        self.decoder.message_start()
    }

    /// Bytes this connection holds allocated for input and output: what the peer costs in
    /// memory right now.
    #[inline]
    pub fn allocated(&self) -> usize {
        self.decoder.allocated() + self.encoder.allocated()
    }

    /// The message being received, once its size is known: where it starts, the bytes
    /// announced for the part arriving now (a header that arrives in pieces, then the
    /// content) and how many of them are not allocated yet. A server that keeps a memory
    /// budget reserves `to_allocate` before reading on, or refuses the message: the
    /// machine never allocates more than that for it.
    #[inline]
    pub fn receiving(&self) -> Option<Receiving> {
        self.decoder.receiving()
    }

    /// Bytes the next [`Connection::read_buf`] would allocate outside
    /// [`Connection::receiving`] (its staging buffer), so that a budget can be checked
    /// before, not after, the allocation.
    #[inline]
    pub fn read_alloc_need(&self) -> usize {
        self.decoder.read_alloc_need()
    }

    /// Bounds what the machine may allocate from now on to receive headers and contents
    /// (`usize::MAX`, the default: no bound). A server keeping a memory budget reserves
    /// [`Receiving::to_allocate`] and allows exactly that; a part that needs more stays
    /// staged ([`Connection::next_event`] answers [`Event::NeedData`]) until the allowance
    /// is raised. The staging buffer itself is sized by [`Connection::read_alloc_need`].
    #[inline]
    pub fn set_alloc_allowance(&mut self, bytes: usize) {
        self.decoder.set_alloc_allowance(bytes);
    }

    /// Takes the buffer [`Connection::read_buf`] lends between messages, if it holds no
    /// byte not yet decoded, so that a transport can keep such buffers in a pool while
    /// connections are idle instead of freeing each one into the allocator; `None` if
    /// there is none or it is in use. The next read allocates one unless one is given back
    /// with [`Connection::give_read_buffer`].
    #[inline]
    pub fn take_read_buffer(&mut self) -> Option<Vec<u8>> {
        self.decoder.take_read_buffer()
    }

    /// Gives the connection a buffer for [`Connection::read_buf`] to lend (its bytes are
    /// overwritten); hands it back if the connection has one already. A slice lent by
    /// [`Connection::read_buf`] and not committed is lent no more once the buffer is
    /// taken: commit only what was read since.
    #[inline]
    pub fn give_read_buffer(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        self.decoder.give_read_buffer(buf)
    }

    /// Frees the buffers that hold nothing, so an idle connection holds no buffer.
    pub fn release_buffers(&mut self) {
        self.decoder.release_buffers();
        self.encoder.release_buffers();
    }
}
