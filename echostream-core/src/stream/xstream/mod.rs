//! [`XStream`]: one data half (bidirectional QUIC stream) plus one error half
//! (unidirectional, acceptor → opener), with explicit states.
//!
//! Concurrency model: shared state behind an `Arc`, one `tokio` mutex per
//! direction (so one read and one write run at once while two reads, or two
//! writes, take turns), and a `watch` channel that wakes blocked operations
//! when the stream fails. On the opening side a small task reads the error
//! half and publishes what it finds through a second `watch`; every blocked
//! operation selects on it, so an error ends a blocked read or write at once.
//!
//! # Layout
//! Each file holds one `impl XStream` block (the public methods of its job) and the
//! `impl Inner` helpers behind them.
//! - this file: the type and its state machine ([`StreamState`], the flags, the shared
//!   `Inner`), construction and accessors ([`XStream::state`], [`XStream::failure`]),
//!   [`XStream::close`], the state checks, and what `Drop` resets.
//! - `read`: the read path ([`XStream::read`], [`XStream::read_chunk`],
//!   [`XStream::read_exact`], [`XStream::read_to_end`]) and its batched reader over quinn.
//! - `write`: the write path ([`XStream::write`], [`XStream::write_chunk`],
//!   [`XStream::write_chunks`], [`XStream::flush`], [`XStream::write_eof`]).
//! - `error_half`: the error half ([`XStream::error_write`], [`XStream::error_read`],
//!   [`XStream::error_received`]): the opener's task that watches for the peer's error and
//!   caches it, and the mapping of the peer's reset and stop codes.
//! - `interrupt`: running a read or write while watching for interruption (the stream
//!   failing or closing, or an error arriving), with the first-poll fast path.

mod error_half;
mod interrupt;
mod read;
mod write;

pub(crate) use error_half::ErrorHalfEnd;

use super::error::StreamError;
use super::{Side, StreamOptions};
use crate::protocol::Peer;
use echostream_types::pairing::code;
use echostream_types::Metadata;
use error_half::{watch_error_half, ErrorHalf};
use read::Reader;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where a stream stands. Every failed operation names the state that refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamState {
    /// Both directions are open.
    Open,
    /// This side called `write_eof` (or the acceptor wrote an error with
    /// flush); reading goes on.
    WriteClosed,
    /// The peer's data ended (clean EOF); writing goes on.
    ReadClosed,
    /// Both directions ended, or `close()` was called.
    Closed,
    /// An error was written or received, the peer dropped the stream, or the
    /// connection was lost.
    Error,
}

impl std::fmt::Display for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StreamState::Open => "open",
            StreamState::WriteClosed => "write-closed",
            StreamState::ReadClosed => "read-closed",
            StreamState::Closed => "closed",
            StreamState::Error => "in its error state",
        })
    }
}

#[derive(Default)]
struct Flags {
    read_closed: bool,
    write_closed: bool,
    closed: bool,
    failed: bool,
    /// Why the stream failed, when the failure came from the peer or the connection.
    cause: Option<StreamError>,
    error_written: bool,
    /// Halves already ended, so `Drop` leaves them alone.
    send_done: bool,
    recv_done: bool,
    err_done: bool,
}

pub(crate) struct Inner {
    name: String,
    id: u64,
    side: Side,
    peer: Peer,
    metadata: Metadata,
    opts: Arc<StreamOptions>,
    send: tokio::sync::Mutex<quinn::SendStream>,
    recv: tokio::sync::Mutex<Reader>,
    /// Acceptor only: the error half, until it is finished.
    err_send: tokio::sync::Mutex<Option<quinn::SendStream>>,
    /// Opener only: what the error-half task found.
    err_rx: Option<watch::Receiver<ErrorHalf>>,
    /// Opener only: the code the error-half task stops the half with when
    /// the stream goes away before the half ended.
    err_stop_code: Arc<AtomicU32>,
    flags: Mutex<Flags>,
    /// Set to true when the stream fails; wakes blocked operations.
    failed_tx: watch::Sender<bool>,
}

/// A stream: a bidirectional data half plus a one-way error half from the
/// accepting side to the opening side.
///
/// Methods take `&self`: share the stream (for example in an `Arc`) to read
/// in one task while another writes. Two reads (or two writes) at once take
/// turns. Dropping the last handle without [`XStream::close`] resets both
/// halves; the peer then sees [`StreamError::PeerDropped`].
pub struct XStream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for XStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XStream")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .field("side", &self.inner.side)
            .field("state", &self.state())
            .finish()
    }
}

// Construction and accessors.
impl XStream {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        id: u64,
        side: Side,
        peer: Peer,
        metadata: Metadata,
        opts: Arc<StreamOptions>,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        error_half: ErrorHalfEnd,
    ) -> XStream {
        let (err_send, err_rx, err_stop_code) = match error_half {
            ErrorHalfEnd::Send(s) => (Some(s), None, Arc::new(AtomicU32::new(code::PEER_DROPPED))),
            ErrorHalfEnd::Recv(r) => {
                let (tx, rx) = watch::channel(ErrorHalf::Pending);
                let stop = Arc::new(AtomicU32::new(code::PEER_DROPPED));
                tokio::spawn(watch_error_half(
                    r,
                    tx,
                    stop.clone(),
                    opts.max_error_size,
                    name.clone(),
                ));
                (None, Some(rx), stop)
            }
        };
        peer.stream_state().stream_opened(side);
        let (failed_tx, _) = watch::channel(false);
        XStream {
            inner: Arc::new(Inner {
                name,
                id,
                side,
                peer,
                metadata,
                opts,
                send: tokio::sync::Mutex::new(send),
                recv: tokio::sync::Mutex::new(Reader::new(recv)),
                err_send: tokio::sync::Mutex::new(err_send),
                err_rx,
                err_stop_code,
                flags: Mutex::new(Flags::default()),
                failed_tx,
            }),
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The pairing identifier (chosen by the opener, unique per connection and opener).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether this side opened or accepted the stream.
    pub fn side(&self) -> Side {
        self.inner.side
    }

    /// Metadata the opener sent with the stream.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// The connection the stream runs on.
    pub fn peer(&self) -> &Peer {
        &self.inner.peer
    }

    /// The current state.
    pub fn state(&self) -> StreamState {
        self.inner.observe_error_half();
        let f = lock(&self.inner.flags);
        if f.failed {
            return StreamState::Error;
        }
        if f.closed || (f.read_closed && f.write_closed) {
            return StreamState::Closed;
        }
        if self.inner.peer.is_closed() {
            return StreamState::Error;
        }
        match (f.read_closed, f.write_closed) {
            (true, _) => StreamState::ReadClosed,
            (_, true) => StreamState::WriteClosed,
            _ => StreamState::Open,
        }
    }

    /// Why the stream is in its error state, when the cause came from the
    /// peer or the connection (`None` after a local `error_write`).
    pub fn failure(&self) -> Option<StreamError> {
        lock(&self.inner.flags).cause.clone()
    }

    pub(crate) fn options(&self) -> &StreamOptions {
        &self.inner.opts
    }

    /// A second handle to the same stream (for the handler wrapper, which
    /// finishes the stream after the application code returns).
    pub(crate) fn share(&self) -> XStream {
        XStream {
            inner: self.inner.clone(),
        }
    }
}

// Closing and aborting.
impl XStream {
    /// Closes the stream: finishes what this side sends (data already
    /// written is still delivered), ends the error half without an error on
    /// the accepting side, and stops reading. Accepted in the error state, to
    /// release the halves; refused on a stream already closed.
    pub async fn close(&self) -> Result<(), StreamError> {
        let inner = &self.inner;
        {
            let f = lock(&inner.flags);
            if f.closed {
                return Err(inner.state_error("close", StreamState::Closed));
            }
        }
        // Wake blocked operations of other tasks so they release the halves.
        {
            let mut f = lock(&inner.flags);
            f.closed = true;
        }
        inner.failed_tx.send_replace(true);
        inner.err_stop_code.store(code::CLOSED, Ordering::Relaxed);
        let (send_done, recv_done, err_done) = {
            let f = lock(&inner.flags);
            (f.send_done, f.recv_done, f.err_done)
        };
        if !send_done {
            let _ = inner.send.lock().await.finish();
        }
        if !err_done {
            if let Some(mut e) = inner.err_send.lock().await.take() {
                let _ = e.finish();
            }
        }
        if !recv_done {
            let _ = inner.recv.lock().await.stream.stop(code::CLOSED.into());
        }
        let mut f = lock(&inner.flags);
        f.send_done = true;
        f.recv_done = true;
        f.err_done = true;
        Ok(())
    }

    /// Abandons both directions with a stream error code and moves to the
    /// error state (a typed stream that hit a bad message).
    pub(crate) async fn abort(&self, c: u32) {
        let inner = &self.inner;
        inner.fail_local();
        let _ = inner.send.lock().await.reset(c.into());
        let _ = inner.recv.lock().await.stream.stop(c.into());
        if let Some(mut e) = inner.err_send.lock().await.take() {
            let _ = e.reset(c.into());
        }
        inner.err_stop_code.store(c, Ordering::Relaxed);
        let mut f = lock(&inner.flags);
        f.send_done = true;
        f.recv_done = true;
        f.err_done = true;
    }
}

// State checks and failure, shared by every operation.
impl Inner {
    fn state_error(&self, op: &'static str, state: StreamState) -> StreamError {
        StreamError::InvalidState {
            stream: self.name.clone(),
            op,
            state,
        }
    }

    fn check_readable(&self, op: &'static str) -> Result<(), StreamError> {
        self.check_half(op, false)
    }

    fn check_writable(&self, op: &'static str) -> Result<(), StreamError> {
        self.check_half(op, true)
    }

    /// Whether the read (or write) half may be used, else the error naming
    /// the state that refuses it.
    fn check_half(&self, op: &'static str, write: bool) -> Result<(), StreamError> {
        self.observe_error_half();
        let f = lock(&self.flags);
        // A failure caused by the peer or the connection is reported again
        // as itself (it says what happened); a local one as the state.
        if let Some(cause) = &f.cause {
            return Err(cause.clone());
        }
        let (half_closed, half_state) = if write {
            (f.write_closed, StreamState::WriteClosed)
        } else {
            (f.read_closed, StreamState::ReadClosed)
        };
        let state = if f.failed {
            StreamState::Error
        } else if f.closed || (f.read_closed && f.write_closed) {
            StreamState::Closed
        } else if half_closed {
            half_state
        } else {
            return Ok(());
        };
        Err(self.state_error(op, state))
    }

    /// Records a failure (the first cause wins) and wakes blocked operations.
    fn fail(&self, e: StreamError) -> StreamError {
        {
            let mut f = lock(&self.flags);
            if !f.failed {
                f.failed = true;
                f.cause = Some(e.clone());
            }
        }
        self.failed_tx.send_replace(true);
        e
    }

    fn fail_local(&self) {
        lock(&self.flags).failed = true;
        self.failed_tx.send_replace(true);
    }

    /// What a blocked operation returns when another task failed or closed the stream.
    fn woken_error(&self, op: &'static str) -> StreamError {
        let f = lock(&self.flags);
        if let Some(c) = &f.cause {
            return c.clone();
        }
        let state = if f.failed {
            StreamState::Error
        } else {
            StreamState::Closed
        };
        drop(f);
        self.state_error(op, state)
    }

    /// Locks one half of the data stream for an operation, checking the state once the
    /// lock is held (and before waiting for it, so that an operation on a closed stream does
    /// not wait for another task's blocked one).
    async fn lock_half<'a, T>(
        &self,
        half: &'a tokio::sync::Mutex<T>,
        op: &'static str,
        write: bool,
    ) -> Result<tokio::sync::MutexGuard<'a, T>, StreamError> {
        let guard = match half.try_lock() {
            Ok(g) => g,
            Err(_) => {
                self.check_half(op, write)?;
                half.lock().await
            }
        };
        self.check_half(op, write)?;
        Ok(guard)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let f = self.flags.get_mut().unwrap_or_else(|p| p.into_inner());
        let (send_done, recv_done, err_done) = (f.send_done, f.recv_done, f.err_done);
        let code: quinn::VarInt = code::PEER_DROPPED.into();
        if !send_done {
            let _ = self.send.get_mut().reset(code);
        }
        if !recv_done {
            let _ = self.recv.get_mut().stream.stop(code);
        }
        if !err_done {
            if let Some(s) = self.err_send.get_mut() {
                let _ = s.reset(code);
            }
        }
        // The opener's error-half task sees its receiver go and stops the
        // half with `err_stop_code`.
        self.peer.stream_state().stream_released(self.side);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
