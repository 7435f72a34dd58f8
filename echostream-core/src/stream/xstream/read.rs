//! The read path of [`XStream`]: reads take chunks from quinn in batches (see [`Reader`]).

use super::interrupt::Dir;
use super::{lock, Inner, XStream};
use crate::stream::error::StreamError;
use crate::stream::Side;
use bytes::Bytes;

/// The data half's receiving end. A busy reader takes many chunks from quinn at once (one
/// awaited `read_chunks`: everything quinn has received, up to the batch's size), so it takes
/// quinn's connection lock (which the connection's driver holds while it processes received
/// packets) once per batch instead of once per packet, and one large read returns a whole
/// burst.
///
/// quinn is only ever polled by a read that awaits it: polling a quinn read once "to see
/// what is there" with a waker of its own would replace the waker of the task that waits,
/// and the end of the connection could then wake nobody.
pub(super) struct Reader {
    pub(super) stream: quinn::RecvStream,
    /// Chunks taken from quinn and not handed out yet: `batch[next..end]`, in order.
    /// Allocated at the stream's third read from quinn, so that the many streams that carry
    /// a packet or two (a request, an echo) never hold it; grown (never shrunk) when a read
    /// asks for more bytes than its slots hold ([`slots_for`]).
    batch: Vec<Bytes>,
    next: usize,
    end: usize,
    /// Reads from quinn made one chunk at a time (before `batch` exists).
    single_reads: u8,
}

/// Chunks (about one packet each) taken from quinn at once by `read_chunk`, `read_to_end`
/// and reads of up to 32 KiB.
const READ_AHEAD: usize = 32;
/// The most chunks one read takes from quinn at once: more than a default stream window
/// (256 KiB) of packets, so one read of a large buffer takes everything that has arrived.
/// What a batch holds beyond the read that took it waits for the next read: at most this
/// many packets per stream, whatever the peer sends.
const READ_AHEAD_MAX: usize = 512;
/// The fewest bytes a chunk of a busy stream carries (one packet's STREAM frame on the
/// smallest QUIC path, less headers), to size a batch for a read of `max` bytes.
const CHUNK_BYTES: usize = 1024;

/// The batch size for a read of up to `max` bytes.
fn slots_for(max: usize) -> usize {
    (max / CHUNK_BYTES).clamp(READ_AHEAD, READ_AHEAD_MAX)
}

impl Reader {
    pub(super) fn new(stream: quinn::RecvStream) -> Self {
        Self {
            stream,
            batch: Vec::new(),
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
        let slot = &mut self.batch[self.next];
        if slot.len() > max {
            return Some(slot.split_to(max));
        }
        self.next += 1;
        Some(std::mem::take(slot))
    }

    /// The next chunk from quinn, at most `max` bytes of it; `None` at the end. Once the
    /// stream has read two chunks this way, it takes a batch of up to `slots` chunks and keeps
    /// the rest.
    async fn read_more(&mut self, max: usize, slots: usize) -> Result<Option<Bytes>, quinn::ReadError> {
        if self.batch.is_empty() && self.single_reads < 2 {
            self.single_reads += 1;
            let chunk = self.stream.read_chunk(max, true).await?.map(|c| c.bytes);
            crate::metrics::stream_bytes_received(chunk.as_ref().map_or(0, Bytes::len));
            return Ok(chunk);
        }
        // Called only once the batch is drained (`take` gave nothing), so growing it moves no
        // chunk that is waiting.
        if self.batch.len() < slots {
            self.batch.resize(slots, Bytes::new());
        }
        let batch = &mut self.batch[..slots];
        let Some(n) = self.stream.read_chunks(batch).await? else {
            return Ok(None);
        };
        (self.next, self.end) = (0, n);
        crate::metrics::stream_bytes_received(batch[..n].iter().map(Bytes::len).sum());
        // quinn fills at least one slot of a non-empty slice, and never with an empty chunk.
        Ok(Some(self.take(max).unwrap_or_default()))
    }
}

// The read path.
impl XStream {
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

    /// Reads up to `max` bytes without copying them: appends to `out` the chunks as they
    /// arrived, in order, and returns how many bytes it appended; `Ok(0)` at the clean end
    /// of the data (as [`XStream::read`]). Like `read`, it waits for the first bytes, then
    /// takes everything else that has already arrived, up to `max`.
    ///
    /// For a consumer that hands the bytes on (to another buffer, a file, another language)
    /// and would otherwise copy them twice.
    pub async fn read_chunks(&self, max: usize, out: &mut Vec<Bytes>) -> Result<usize, StreamError> {
        if max == 0 {
            self.inner.check_readable("read_chunks")?;
            return Ok(0);
        }
        self.inner.gather("read_chunks", max, |c| out.push(c)).await
    }

    /// Reads the next chunk as it arrived, without copying; `Ok(None)` at
    /// the clean end.
    pub async fn read_chunk(&self) -> Result<Option<Bytes>, StreamError> {
        self.inner.next_chunk("read_chunk", usize::MAX, READ_AHEAD).await
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
    /// [`StreamOptions::max_read_to_end`](crate::stream::StreamOptions::max_read_to_end) bytes.
    pub async fn read_to_end(&self) -> Result<Vec<u8>, StreamError> {
        let limit = self.inner.opts.max_read_to_end;
        let mut out = Vec::new();
        while let Some(c) = self
            .inner
            .next_chunk("read_to_end", usize::MAX, READ_AHEAD)
            .await?
        {
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
}

// Behind the read path: a chunk from the batch or from quinn, the clean end, failures.
impl Inner {
    /// Reads into `buf` (not empty): see [`Inner::gather`]. 0 at the clean end.
    async fn read_into(&self, op: &'static str, buf: &mut [u8]) -> Result<usize, StreamError> {
        let mut at = 0;
        self.gather(op, buf.len(), |c| {
            buf[at..at + c.len()].copy_from_slice(&c);
            at += c.len();
        })
        .await
    }

    /// Up to `max` bytes (`max` > 0), handed to `each` chunk by chunk, in order: the next
    /// chunk, waiting for it (and taking from quinn, in the same awaited read, everything
    /// else it has received, up to [`slots_for`]`(max)` chunks), then whatever else of that
    /// batch fits. Returns the bytes handed over; 0 at the clean end.
    async fn gather(
        &self,
        op: &'static str,
        max: usize,
        mut each: impl FnMut(Bytes),
    ) -> Result<usize, StreamError> {
        let Some(first) = self.next_chunk(op, max, slots_for(max)).await? else {
            return Ok(0);
        };
        let mut n = first.len();
        each(first);
        if n == max {
            return Ok(n);
        }
        // Another task reading meanwhile just means this read returns less.
        if let Ok(mut recv) = self.recv.try_lock() {
            while n < max {
                let Some(c) = recv.take(max - n) else {
                    break;
                };
                n += c.len();
                each(c);
            }
        }
        Ok(n)
    }

    async fn next_chunk(
        &self,
        op: &'static str,
        max: usize,
        slots: usize,
    ) -> Result<Option<Bytes>, StreamError> {
        if self.peer.read_yields() {
            tokio::task::yield_now().await;
        }
        let mut recv = self.lock_half(&self.recv, op, false).await?;
        if let Some(c) = recv.take(max) {
            return Ok(Some(c));
        }
        let r = {
            let io = std::pin::pin!(recv.read_more(max, slots));
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
}
