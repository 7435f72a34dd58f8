//! The write path of [`XStream`]: writes, `flush` and `write_eof`.

use super::interrupt::Dir;
use super::{lock, Inner, XStream};
use crate::stream::error::StreamError;
use crate::stream::Side;
use bytes::Bytes;

// The write path.
impl XStream {
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
        crate::metrics::stream_bytes_sent(chunk.len());
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
        crate::metrics::stream_bytes_sent(chunks.iter().map(Bytes::len).sum());
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
}

// Behind the write path.
impl Inner {
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
}
