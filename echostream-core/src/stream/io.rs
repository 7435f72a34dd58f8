//! tokio `AsyncRead` + `AsyncWrite` over an [`XStream`], for `tokio::io::copy`,
//! codecs and other byte-stream tools.

use super::{StreamError, StreamState, XStream};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An [`XStream`] as a tokio byte stream (see [`XStream::into_io`]).
///
/// Errors keep their meaning: an error written by the acceptor arrives as an
/// `io::Error` wrapping [`StreamError::Remote`] (use `get_ref` and
/// `downcast_ref` to get it back). `poll_shutdown` is `write_eof`.
pub struct XStreamIo {
    stream: XStream,
    leftover: Bytes,
    read: Option<BoxFuture<'static, Result<Option<Bytes>, StreamError>>>,
    write: Option<BoxFuture<'static, Result<usize, StreamError>>>,
    shutdown: Option<BoxFuture<'static, Result<(), StreamError>>>,
}

impl std::fmt::Debug for XStreamIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XStreamIo").field("stream", &self.stream).finish()
    }
}

impl XStream {
    /// This stream as a tokio `AsyncRead + AsyncWrite`.
    pub fn into_io(self) -> XStreamIo {
        XStreamIo {
            stream: self,
            leftover: Bytes::new(),
            read: None,
            write: None,
            shutdown: None,
        }
    }
}

impl XStreamIo {
    /// The stream (for `error_read`, `error_write`, `state`, `close`).
    pub fn stream(&self) -> &XStream {
        &self.stream
    }
}

impl AsyncRead for XStreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.leftover.is_empty() {
            let fut = this.read.get_or_insert_with(|| {
                let s = this.stream.share();
                Box::pin(async move { s.read_chunk().await })
            });
            let r = ready!(fut.as_mut().poll(cx));
            this.read = None;
            match r {
                Ok(Some(chunk)) => this.leftover = chunk,
                Ok(None) => return Poll::Ready(Ok(())),
                // Reading again after the end is the end again, as io expects.
                Err(StreamError::InvalidState {
                    state: StreamState::ReadClosed | StreamState::Closed,
                    ..
                }) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        let n = this.leftover.len().min(buf.remaining());
        buf.put_slice(&this.leftover.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for XStreamIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A write in flight carries the bytes of an earlier call with the
        // same buffer (the AsyncWrite contract); report its result.
        let fut = this.write.get_or_insert_with(|| {
            let s = this.stream.share();
            let chunk = Bytes::copy_from_slice(buf);
            Box::pin(async move {
                let n = chunk.len();
                s.write_chunk(chunk).await.map(|()| n)
            })
        });
        let r = ready!(fut.as_mut().poll(cx));
        this.write = None;
        Poll::Ready(r.map_err(Into::into))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(fut) = &mut self.write {
            let r = ready!(fut.as_mut().poll(cx));
            self.write = None;
            r.map_err(io::Error::from)?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        let this = &mut *self;
        let fut = this.shutdown.get_or_insert_with(|| {
            let s = this.stream.share();
            Box::pin(async move { s.write_eof().await })
        });
        let r = ready!(fut.as_mut().poll(cx));
        this.shutdown = None;
        match r {
            // Shutting down twice is fine, as io expects.
            Err(StreamError::InvalidState {
                state: StreamState::WriteClosed | StreamState::Closed,
                ..
            }) => Poll::Ready(Ok(())),
            other => Poll::Ready(other.map_err(Into::into)),
        }
    }
}
