//! [`XStream`]: one data half (bidirectional QUIC stream) plus one error half
//! (unidirectional, acceptor → opener), with explicit states.
//!
//! Concurrency model: shared state behind an `Arc`, one `tokio` mutex per
//! direction (so one read and one write run at once while two reads, or two
//! writes, take turns), and a `watch` channel that wakes blocked operations
//! when the stream fails. On the opening side a small task reads the error
//! half and publishes what it finds through a second `watch`; every blocked
//! operation selects on it, so an error ends a blocked read or write at once.

use super::error::StreamError;
use super::{Side, StreamOptions};
use crate::protocol::{describe_close, Peer};
use bytes::Bytes;
use echostream_types::pairing::{self, code};
use echostream_types::Metadata;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
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

/// The error half as the opener sees it.
#[derive(Clone, Debug)]
pub(crate) enum ErrorHalf {
    /// Nothing yet.
    Pending,
    /// Ended without an error block.
    Clean,
    /// One error block arrived.
    Error { flushed: bool, data: Bytes },
    /// The half failed (peer dropped, connection lost, malformed).
    Failed(StreamError),
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

/// The data half's receiving end. A busy reader takes up to [`READ_AHEAD`] chunks from
/// quinn at once, so it takes quinn's connection lock (which the connection's driver holds
/// while it processes received packets) once per batch instead of once per packet.
struct Reader {
    stream: quinn::RecvStream,
    /// Chunks taken from quinn and not handed out yet: `batch[next..end]`, in order.
    /// Allocated at the stream's third read from quinn, so that the many streams that carry
    /// a packet or two (a request, an echo) never hold it.
    batch: Option<Box<[Bytes; READ_AHEAD]>>,
    next: usize,
    end: usize,
    /// Reads from quinn made one chunk at a time (before `batch` exists).
    single_reads: u8,
}

/// The most chunks (about one packet each) taken from quinn at once.
const READ_AHEAD: usize = 32;

impl Reader {
    fn new(stream: quinn::RecvStream) -> Self {
        Self {
            stream,
            batch: None,
            next: 0,
            end: 0,
            single_reads: 0,
        }
    }

    /// The next chunk already taken from quinn, at most `max` bytes of it.
    fn take(&mut self, max: usize) -> Option<Bytes> {
        if self.next == self.end {
            return None;
        }
        let slot = &mut self.batch.as_mut()?[self.next];
        if slot.len() > max {
            return Some(slot.split_to(max));
        }
        self.next += 1;
        Some(std::mem::take(slot))
    }

    /// The next chunk from quinn, at most `max` bytes of it; `None` at the end. Once the
    /// stream has read two chunks this way, it takes a batch and keeps the rest.
    async fn read_more(&mut self, max: usize) -> Result<Option<Bytes>, quinn::ReadError> {
        if self.batch.is_none() && self.single_reads < 2 {
            self.single_reads += 1;
            return Ok(self.stream.read_chunk(max, true).await?.map(|c| c.bytes));
        }
        let batch = self
            .batch
            .get_or_insert_with(|| Box::new(std::array::from_fn(|_| Bytes::new())));
        let Some(n) = self.stream.read_chunks(&mut batch[..]).await? else {
            return Ok(None);
        };
        (self.next, self.end) = (0, n);
        // quinn fills at least one slot of a non-empty slice, and never with an empty chunk.
        Ok(Some(self.take(max).unwrap_or_default()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

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

    /// Reads up to `buf.len()` bytes; `Ok(0)` at the clean end of the data.
    ///
    /// On the opening side a clean end is reported only once the error half
    /// has ended without an error; an error written by the acceptor is
    /// returned instead ([`StreamError::Remote`]).
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, StreamError> {
        if buf.is_empty() {
            self.inner.check_readable("read")?;
            return Ok(0);
        }
        self.inner.read_into("read", buf).await
    }

    /// Reads the next chunk as it arrived, without copying; `Ok(None)` at
    /// the clean end.
    pub async fn read_chunk(&self) -> Result<Option<Bytes>, StreamError> {
        self.inner.next_chunk("read_chunk", usize::MAX).await
    }

    /// Fills `buf` exactly, or fails with [`StreamError::UnexpectedEof`].
    pub async fn read_exact(&self, buf: &mut [u8]) -> Result<(), StreamError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read_into("read_exact", &mut buf[got..]).await? {
                0 => {
                    return Err(StreamError::UnexpectedEof {
                        stream: self.inner.name.clone(),
                        got,
                        wanted: buf.len(),
                    })
                }
                n => got += n,
            }
        }
        Ok(())
    }

    /// Reads everything up to the clean end, at most
    /// [`StreamOptions::max_read_to_end`] bytes.
    pub async fn read_to_end(&self) -> Result<Vec<u8>, StreamError> {
        let limit = self.inner.opts.max_read_to_end;
        let mut out = Vec::new();
        while let Some(c) = self.inner.next_chunk("read_to_end", usize::MAX).await? {
            if out.len() + c.len() > limit {
                return Err(StreamError::TooLarge {
                    stream: self.inner.name.clone(),
                    what: "read_to_end data",
                    size: (out.len() + c.len()) as u64,
                    limit: limit as u64,
                });
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// Writes some of `buf`, returning how much was taken.
    pub async fn write(&self, buf: &[u8]) -> Result<usize, StreamError> {
        let inner = &self.inner;
        let mut send = inner.lock_half(&inner.send, "write", true).await?;
        let r = {
            let io = std::pin::pin!(inner.peer.bulk_write(send.write(buf)));
            inner.guarded(Dir::Write, "write", io).await?
        };
        drop(send);
        match r {
            Ok(n) => Ok(n),
            Err(e) => Err(inner.write_failed(e, "write").await),
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, buf: &[u8]) -> Result<(), StreamError> {
        self.write_chunk(Bytes::copy_from_slice(buf)).await
    }

    /// Writes a chunk without copying it.
    pub async fn write_chunk(&self, chunk: Bytes) -> Result<(), StreamError> {
        let inner = &self.inner;
        let mut send = inner.lock_half(&inner.send, "write", true).await?;
        let r = {
            let io = std::pin::pin!(inner.peer.bulk_write(send.write_chunk(chunk)));
            inner.guarded(Dir::Write, "write", io).await?
        };
        drop(send);
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(inner.write_failed(e, "write").await),
        }
    }

    /// Writes several chunks as one unit: no other write of this stream
    /// comes between them.
    pub async fn write_chunks(&self, chunks: &mut [Bytes]) -> Result<(), StreamError> {
        let inner = &self.inner;
        let mut send = inner.lock_half(&inner.send, "write", true).await?;
        let r = {
            let io = std::pin::pin!(inner.peer.bulk_write(send.write_all_chunks(chunks)));
            inner.guarded(Dir::Write, "write", io).await?
        };
        drop(send);
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(inner.write_failed(e, "write").await),
        }
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

    /// Checks that the stream can still send. QUIC sends written data without
    /// holding it back, so there is nothing else to push out.
    pub async fn flush(&self) -> Result<(), StreamError> {
        self.inner.check_writable("flush")
    }

    /// Ends this side's data: the peer reads a clean end once it has read
    /// everything. On the accepting side this also ends the error half
    /// without an error (no error can follow).
    pub async fn write_eof(&self) -> Result<(), StreamError> {
        let inner = &self.inner;
        inner.check_writable("write_eof")?;
        let mut send = inner.send.lock().await;
        inner.check_writable("write_eof")?;
        let _ = send.finish();
        drop(send);
        if inner.side == Side::Acceptor {
            if let Some(mut e) = inner.err_send.lock().await.take() {
                let _ = e.finish();
            }
        }
        let mut f = lock(&inner.flags);
        f.write_closed = true;
        f.send_done = true;
        f.err_done = true;
        Ok(())
    }

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

    /// Accepting side: writes the stream's one error block, then ends the
    /// error half. With `with_data_flush`, all data already written reaches
    /// the opener first (the data half is finished, then the error follows);
    /// without it the data half is abandoned and the error may overtake
    /// queued data. Either way the stream moves to its error state; a second
    /// call fails with [`StreamError::ErrorAlreadyWritten`].
    pub async fn error_write(&self, data: &[u8], with_data_flush: bool) -> Result<(), StreamError> {
        let inner = &self.inner;
        if inner.side != Side::Acceptor {
            return Err(StreamError::WrongSide {
                stream: inner.name.clone(),
                op: "error_write",
                side: "accepting",
            });
        }
        if data.len() > inner.opts.max_error_size {
            return Err(StreamError::TooLarge {
                stream: inner.name.clone(),
                what: "error block",
                size: data.len() as u64,
                limit: inner.opts.max_error_size as u64,
            });
        }
        {
            let mut f = lock(&inner.flags);
            if f.error_written {
                return Err(StreamError::ErrorAlreadyWritten {
                    stream: inner.name.clone(),
                });
            }
            let state = if f.failed {
                Some(StreamState::Error)
            } else if f.closed {
                Some(StreamState::Closed)
            } else if f.write_closed {
                Some(StreamState::WriteClosed)
            } else {
                None
            };
            if let Some(state) = state {
                return Err(inner.state_error("error_write", state));
            }
            f.error_written = true;
        }
        if with_data_flush {
            // Waits for a write in progress, so its data goes first.
            let _ = inner.send.lock().await.finish();
        }
        let result = inner.send_error_block(with_data_flush, data).await;
        // Enter the error state and wake blocked operations, then release the halves.
        inner.fail_local();
        if !with_data_flush {
            let _ = inner.send.lock().await.reset(code::ERROR_SENT.into());
        }
        let _ = inner.recv.lock().await.stream.stop(code::ERROR_SENT.into());
        {
            let mut f = lock(&inner.flags);
            f.send_done = true;
            f.recv_done = true;
            f.err_done = true;
        }
        result
    }

    /// Opening side: waits for the error half to end and returns the error
    /// block, or an empty vector when the acceptor ended the stream without
    /// an error. The block is cached: every call returns the same bytes.
    pub async fn error_read(&self) -> Result<Vec<u8>, StreamError> {
        let inner = &self.inner;
        let Some(rx) = &inner.err_rx else {
            return Err(StreamError::WrongSide {
                stream: inner.name.clone(),
                op: "error_read",
                side: "opening",
            });
        };
        let mut rx = rx.clone();
        let got = match rx.wait_for(|h| !matches!(h, ErrorHalf::Pending)).await {
            Ok(h) => Some(h.clone()),
            Err(_) => None,
        };
        let half = got.unwrap_or_else(|| rx.borrow().clone());
        match half {
            ErrorHalf::Error { data, .. } => Ok(data.to_vec()),
            ErrorHalf::Clean => Ok(Vec::new()),
            ErrorHalf::Failed(e) => Err(e),
            ErrorHalf::Pending => Err(StreamError::Protocol {
                stream: inner.name.clone(),
                detail: "the error half ended without a result".into(),
            }),
        }
    }

    /// Opening side: the error block if one has arrived, without waiting.
    pub fn error_received(&self) -> Option<Bytes> {
        match &*self.inner.err_rx.as_ref()?.borrow() {
            ErrorHalf::Error { data, .. } => Some(data.clone()),
            _ => None,
        }
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

/// The error half, as handed to [`XStream::new`].
pub(crate) enum ErrorHalfEnd {
    /// Acceptor: writes errors here.
    Send(quinn::SendStream),
    /// Opener: reads errors from here.
    Recv(quinn::RecvStream),
}

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

    /// Opener: an error that ends the stream at once (not flushed, or a
    /// failed half) moves the stream to its error state even when no
    /// operation is running.
    fn observe_error_half(&self) {
        let Some(rx) = &self.err_rx else { return };
        let e = match &*rx.borrow() {
            ErrorHalf::Error { flushed: false, data } => self.remote(data.clone()),
            ErrorHalf::Failed(e) => e.clone(),
            _ => return,
        };
        self.fail(e);
    }

    fn remote(&self, data: Bytes) -> StreamError {
        StreamError::Remote {
            stream: self.name.clone(),
            data,
        }
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

    /// What `interrupted` would resolve to at once that `check_half` does not report: (opener)
    /// an error that arrived after all the data, which ends writes but not reads. (A failed
    /// or closed stream, and an error that ends both directions, `check_half` reports.)
    fn stopped(&self, dir: Dir) -> Option<StreamError> {
        if dir == Dir::Read {
            return None;
        }
        let data = match &*self.err_rx.as_ref()?.borrow() {
            ErrorHalf::Error { data, .. } => data.clone(),
            _ => return None,
        };
        Some(self.fail(self.remote(data)))
    }

    /// Resolves when the operation must stop: the stream failed or was
    /// closed by another task, or (opener) an error arrived that ends this
    /// direction. Never resolves otherwise.
    async fn interrupted(&self, dir: Dir, op: &'static str) -> StreamError {
        let mut failed = self.failed_tx.subscribe();
        let mut err = self.err_rx.clone();
        loop {
            if *failed.borrow_and_update() {
                return self.woken_error(op);
            }
            if let Some(rx) = &mut err {
                let hit = match &*rx.borrow_and_update() {
                    ErrorHalf::Error { flushed, data } if dir == Dir::Write || !flushed => {
                        Some(self.remote(data.clone()))
                    }
                    ErrorHalf::Failed(e) => Some(e.clone()),
                    _ => None,
                };
                if let Some(e) = hit {
                    return self.fail(e);
                }
            }
            match &mut err {
                Some(rx) => {
                    tokio::select! {
                        _ = failed.changed() => {}
                        r = rx.changed() => if r.is_err() {
                            // The error half's task is done: nothing more comes from there.
                            err = None;
                        },
                    }
                }
                None => {
                    let _ = failed.changed().await;
                }
            }
        }
    }

    /// Runs a read or write of this stream, watching for interruption (`interrupted`) in
    /// parallel only when it does not complete on its first poll. Data already buffered, or
    /// room to write, is the usual case on a busy stream, and setting up the watchers costs
    /// two watch subscriptions and two waiter registrations per call (4-5 % of a bulk
    /// receiver's CPU time in `perf`). What they would report at once is checked before
    /// (`lock_half`, `stopped`). It borrows the pinned operation, which stays in the caller's
    /// state: taken by value, it was stored twice (a `write_chunk` future grew from 1,128 to
    /// 1,904 bytes; borrowed, 1,272).
    async fn guarded<F: Future>(
        &self,
        dir: Dir,
        op: &'static str,
        mut io: Pin<&mut F>,
    ) -> Result<F::Output, StreamError> {
        if let Some(e) = self.stopped(dir) {
            return Err(e);
        }
        let first = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await;
        if let Poll::Ready(r) = first {
            return Ok(r);
        }
        tokio::select! {
            biased;
            e = self.interrupted(dir, op) => Err(e),
            r = &mut io => Ok(r),
        }
    }

    /// Reads into `buf` (not empty): the next chunk, waiting for it, then whatever else was
    /// already taken from quinn and fits. 0 at the clean end.
    async fn read_into(&self, op: &'static str, buf: &mut [u8]) -> Result<usize, StreamError> {
        let Some(first) = self.next_chunk(op, buf.len()).await? else {
            return Ok(0);
        };
        let mut n = first.len();
        buf[..n].copy_from_slice(&first);
        if n == buf.len() {
            return Ok(n);
        }
        // Another task reading meanwhile just means this read returns less.
        if let Ok(mut recv) = self.recv.try_lock() {
            while n < buf.len() {
                let Some(c) = recv.take(buf.len() - n) else {
                    break;
                };
                buf[n..n + c.len()].copy_from_slice(&c);
                n += c.len();
            }
        }
        Ok(n)
    }

    async fn next_chunk(&self, op: &'static str, max: usize) -> Result<Option<Bytes>, StreamError> {
        if self.peer.read_yields() {
            tokio::task::yield_now().await;
        }
        let mut recv = self.lock_half(&self.recv, op, false).await?;
        if let Some(c) = recv.take(max) {
            return Ok(Some(c));
        }
        let r = {
            let io = std::pin::pin!(recv.read_more(max));
            self.guarded(Dir::Read, op, io).await?
        };
        match r {
            Ok(Some(c)) => Ok(Some(c)),
            Ok(None) => {
                lock(&self.flags).recv_done = true;
                drop(recv);
                self.data_ended().await
            }
            Err(e) => {
                lock(&self.flags).recv_done = true;
                drop(recv);
                Err(self.read_failed(e).await)
            }
        }
    }

    /// The peer's data ended cleanly. The opener reports a clean end only
    /// once the error half has ended without an error.
    async fn data_ended(&self) -> Result<Option<Bytes>, StreamError> {
        if self.side == Side::Opener {
            match self.error_half_result().await {
                None => {}
                Some(e) => return Err(self.fail(e)),
            }
        }
        lock(&self.flags).read_closed = true;
        Ok(None)
    }

    /// Opener: waits (up to the pairing timeout) for the error half to end.
    /// `None` when it ended cleanly, else the error to report.
    async fn error_half_result(&self) -> Option<StreamError> {
        let mut rx = self.err_rx.clone()?;
        let wait = self.opts.pairing_timeout;
        let got = match tokio::time::timeout(wait, rx.wait_for(|h| !matches!(h, ErrorHalf::Pending))).await {
            Ok(Ok(h)) => Some(h.clone()),
            Ok(Err(_)) => None,
            Err(_) => {
                return Some(StreamError::PairingTimeout {
                    stream: self.name.clone(),
                    missing: "end of the error half (after the end of the data)",
                    after: wait,
                })
            }
        };
        let half = got.unwrap_or_else(|| rx.borrow().clone());
        match half {
            ErrorHalf::Clean => None,
            ErrorHalf::Error { data, .. } => Some(self.remote(data)),
            ErrorHalf::Failed(e) => Some(e),
            ErrorHalf::Pending => Some(StreamError::Protocol {
                stream: self.name.clone(),
                detail: "the error half ended without a result".into(),
            }),
        }
    }

    /// Maps a reset or stop code from the peer.
    async fn peer_code(&self, c: u64) -> StreamError {
        let stream = self.name.clone();
        match u32::try_from(c).unwrap_or(u32::MAX) {
            code::ERROR_SENT if self.side == Side::Opener => match self.error_half_result().await {
                Some(e) => e,
                None => StreamError::Protocol {
                    stream,
                    detail: "the data half was abandoned for an error, but the error half ended cleanly"
                        .into(),
                },
            },
            code::PEER_DROPPED => StreamError::PeerDropped { stream },
            code::CLOSED => StreamError::PeerClosed { stream },
            other => StreamError::PeerAborted {
                stream,
                what: describe_code(other),
                code: c,
            },
        }
    }

    async fn read_failed(&self, e: quinn::ReadError) -> StreamError {
        let e = match e {
            quinn::ReadError::Reset(c) => self.peer_code(c.into_inner()).await,
            quinn::ReadError::ConnectionLost(ce) => self.connection_lost(&ce),
            quinn::ReadError::ClosedStream => return self.woken_error("read"),
            other => StreamError::Protocol {
                stream: self.name.clone(),
                detail: other.to_string(),
            },
        };
        self.fail(e)
    }

    async fn write_failed(&self, e: quinn::WriteError, op: &'static str) -> StreamError {
        lock(&self.flags).send_done = true;
        let e = match e {
            quinn::WriteError::Stopped(c) => self.peer_code(c.into_inner()).await,
            quinn::WriteError::ConnectionLost(ce) => self.connection_lost(&ce),
            quinn::WriteError::ClosedStream => return self.woken_error(op),
            other => StreamError::Protocol {
                stream: self.name.clone(),
                detail: other.to_string(),
            },
        };
        self.fail(e)
    }

    fn connection_lost(&self, ce: &quinn::ConnectionError) -> StreamError {
        StreamError::ConnectionLost {
            stream: self.name.clone(),
            reason: describe_close(ce).1,
        }
    }

    async fn send_error_block(&self, flushed: bool, data: &[u8]) -> Result<(), StreamError> {
        let Some(mut s) = self.err_send.lock().await.take() else {
            return Err(self.state_error("error_write", StreamState::Closed));
        };
        let block = pairing::encode_error_block(flushed, data);
        match s.write_chunk(block).await {
            Ok(()) => {
                let _ = s.finish();
                Ok(())
            }
            Err(quinn::WriteError::ConnectionLost(ce)) => Err(self.fail(self.connection_lost(&ce))),
            Err(quinn::WriteError::Stopped(c)) => Err(self.peer_code(c.into_inner()).await),
            Err(e) => Err(StreamError::Protocol {
                stream: self.name.clone(),
                detail: e.to_string(),
            }),
        }
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

fn describe_code(c: u32) -> &'static str {
    match c {
        code::REFUSED => "stream type refused",
        code::PAIRING_TIMEOUT => "pairing timeout",
        code::PROTOCOL => "stream protocol violation",
        code::NO_ACCEPTOR => "no acceptor",
        code::MESSAGE_TOO_LARGE => "a message was larger than the receiver's limit",
        code::BAD_MESSAGE => "a message did not decode at the receiver",
        _ => "unknown code",
    }
}

/// Opener: reads the error half until it ends and publishes the result.
async fn watch_error_half(
    mut recv: quinn::RecvStream,
    tx: watch::Sender<ErrorHalf>,
    stop_code: Arc<AtomicU32>,
    max: usize,
    name: String,
) {
    tokio::select! {
        half = read_error_half(&mut recv, max, &name) => {
            if let ErrorHalf::Failed(StreamError::Protocol { .. } | StreamError::TooLarge { .. }) = &half {
                let _ = recv.stop(code::PROTOCOL.into());
            }
            tx.send_replace(half);
        }
        _ = tx.closed() => {
            let _ = recv.stop(stop_code.load(Ordering::Relaxed).into());
        }
    }
}

async fn read_error_half(recv: &mut quinn::RecvStream, max: usize, name: &str) -> ErrorHalf {
    let failed = |e: quinn::ReadError| {
        ErrorHalf::Failed(match e {
            quinn::ReadError::Reset(c) if c.into_inner() == u64::from(code::PEER_DROPPED) => {
                StreamError::PeerDropped { stream: name.into() }
            }
            quinn::ReadError::ConnectionLost(ce) => StreamError::ConnectionLost {
                stream: name.into(),
                reason: describe_close(&ce).1,
            },
            other => StreamError::PeerAborted {
                stream: name.into(),
                what: "error half aborted",
                code: match other {
                    quinn::ReadError::Reset(c) => c.into_inner(),
                    _ => 0,
                },
            },
        })
    };
    let exact_failed = |e: quinn::ReadExactError| match e {
        quinn::ReadExactError::FinishedEarly(_) => ErrorHalf::Failed(StreamError::Protocol {
            stream: name.into(),
            detail: "truncated error block".into(),
        }),
        quinn::ReadExactError::ReadError(e) => failed(e),
    };
    let mut prefix = [0u8; 5];
    match recv.read(&mut prefix[..1]).await {
        Ok(None) => return ErrorHalf::Clean,
        Ok(Some(_)) => {}
        Err(e) => return failed(e),
    }
    if let Err(e) = recv.read_exact(&mut prefix[1..]).await {
        return exact_failed(e);
    }
    let (flushed, len) = match pairing::decode_error_prefix(prefix, max) {
        Ok(v) => v,
        Err(e) => {
            return ErrorHalf::Failed(StreamError::Protocol {
                stream: name.into(),
                detail: format!("bad error block: {e}"),
            })
        }
    };
    // The length was checked against the limit above.
    let mut data = vec![0u8; len];
    if let Err(e) = recv.read_exact(&mut data).await {
        return exact_failed(e);
    }
    let mut more = [0u8; 1];
    if let Ok(Some(_)) = recv.read(&mut more).await {
        return ErrorHalf::Failed(StreamError::Protocol {
            stream: name.into(),
            detail: "more than one error block on the error half".into(),
        });
    }
    ErrorHalf::Error {
        flushed,
        data: Bytes::from(data),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
