//! One side of a connection: both directions in one state machine.

use std::io;

use crate::decoder::{Decoder, Event};
use crate::encoder::Encoder;
use crate::error::Error;
use crate::message::Message;
use crate::Limits;

/// Which side of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends requests, receives responses.
    Client,
    /// Receives requests, sends responses.
    Server,
}

/// One side of a connection: a [`Decoder`] for what arrives, an [`Encoder`] for what
/// leaves, and the bookkeeping that ties them together (requests in flight, closing).
///
/// Pipelining is natural: a client may queue its next request before the previous answer
/// arrives; answers come back in order, and [`Connection::in_flight`] counts those owed.
///
/// Driving it from a transport is two loops, as with rustls: while [`Connection::wants_read`],
/// read into [`Connection::read_buf`] and [`Connection::commit`], then take events with
/// [`Connection::next_event`]; while [`Connection::wants_write`], write
/// [`Connection::pending`] and [`Connection::consume`] what was sent.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    decoder: Decoder,
    encoder: Encoder,
    closed: bool,
    sent: u64,
    received: u64,
}

impl Connection {
    /// A connection in `role` with `limits` on what it accepts.
    pub fn new(role: Role, limits: Limits) -> Connection {
        Connection {
            role,
            decoder: Decoder::new(limits),
            encoder: Encoder::new(),
            closed: false,
            sent: 0,
            received: 0,
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

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Queues a message (a request for a client, a response for a server). After
    /// [`Connection::close`] this is [`Error::SendAfterClose`].
    pub fn send(&mut self, message: Message) -> Result<(), Error> {
        if self.closed {
            return Err(Error::SendAfterClose);
        }
        self.encoder.queue(message)?;
        self.sent += 1;
        Ok(())
    }

    /// No more messages will be sent. Once [`Connection::pending_len`] is zero the transport
    /// should shut down its write side ([`Connection::wants_shutdown`]).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// `true` after [`Connection::close`].
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `true` when closed and everything queued was sent: time to shut down the write side.
    pub fn wants_shutdown(&self) -> bool {
        self.closed && !self.encoder.wants_write()
    }

    /// `true` while reading can produce anything: no end of stream and no failure yet.
    pub fn wants_read(&self) -> bool {
        !self.decoder.is_eof() && self.decoder.error().is_none()
    }

    /// `true` while bytes are waiting to be sent.
    pub fn wants_write(&self) -> bool {
        self.encoder.wants_write()
    }

    /// Messages owed by the other side: for a client, requests sent and not yet answered;
    /// for a server, requests received and not yet answered.
    pub fn in_flight(&self) -> u64 {
        match self.role {
            Role::Client => self.sent.saturating_sub(self.received),
            Role::Server => self.received.saturating_sub(self.sent),
        }
    }

    /// The next event from what was received (see [`Decoder::next_event`]).
    pub fn next_event(&mut self) -> Result<Event, Error> {
        self.count(|d| d.next_event())
    }

    /// Decodes from `input` directly (see [`Decoder::decode`]).
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Event, Error> {
        self.count(|d| d.decode(input))
    }

    fn count(
        &mut self,
        f: impl FnOnce(&mut Decoder) -> Result<Event, Error>,
    ) -> Result<Event, Error> {
        let event = f(&mut self.decoder)?;
        if let Event::Message(_) = event {
            self.received += 1;
        }
        Ok(event)
    }

    /// Copies received bytes in (see [`Decoder::receive`]).
    pub fn receive(&mut self, data: &[u8]) -> Result<(), Error> {
        self.decoder.receive(data)
    }

    /// A slice to receive into (see [`Decoder::read_buf`]).
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.decoder.read_buf()
    }

    /// Records bytes written into [`Connection::read_buf`] (see [`Decoder::commit`]).
    pub fn commit(&mut self, n: usize) -> Result<(), Error> {
        self.decoder.commit(n)
    }

    /// Reads once from `reader` (see [`Decoder::read_from`]).
    pub fn read_from<R: io::Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.decoder.read_from(reader)
    }

    /// Records the end of the incoming stream.
    pub fn receive_eof(&mut self) {
        self.decoder.receive_eof();
    }

    /// The next contiguous run of bytes to send.
    pub fn pending(&self) -> &[u8] {
        self.encoder.pending()
    }

    /// Bytes waiting to be sent.
    pub fn pending_len(&self) -> usize {
        self.encoder.pending_len()
    }

    /// Records that `n` pending bytes were sent.
    pub fn consume(&mut self, n: usize) {
        self.encoder.consume(n);
    }

    /// Writes pending bytes once (see [`Encoder::write_to`]).
    pub fn write_to<W: io::Write + ?Sized>(&mut self, writer: &mut W) -> io::Result<usize> {
        self.encoder.write_to(writer)
    }

    /// The receive side.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The receive side, mutably.
    pub fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// The send side.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Frees buffers that hold nothing (see [`Decoder::release_buffers`]).
    pub fn release_buffers(&mut self) {
        self.decoder.release_buffers();
        self.encoder.release_buffers();
    }
}
