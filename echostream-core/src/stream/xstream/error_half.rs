//! The error half of [`XStream`]: the acceptor's `error_write`, the opener's task that
//! watches the half and caches what the peer wrote (`error_read`, `error_received`), and the
//! mapping of the peer's reset and stop codes, which on the opener may wait for that half.

use super::{lock, Inner, XStream};
use crate::protocol::describe_close;
use crate::stream::error::StreamError;
use crate::stream::{Side, StreamState};
use bytes::Bytes;
use echostream_types::pairing::{self, code};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

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

/// The error half, as handed to [`XStream::new`].
pub(crate) enum ErrorHalfEnd {
    /// Acceptor: writes errors here.
    Send(quinn::SendStream),
    /// Opener: reads errors from here.
    Recv(quinn::RecvStream),
}

// The error half.
impl XStream {
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
}

// Behind the error half, and the peer's reset and stop codes.
impl Inner {
    /// Opener: an error that ends the stream at once (not flushed, or a
    /// failed half) moves the stream to its error state even when no
    /// operation is running.
    pub(super) fn observe_error_half(&self) {
        let Some(rx) = &self.err_rx else { return };
        let e = match &*rx.borrow() {
            ErrorHalf::Error { flushed: false, data } => self.remote(data.clone()),
            ErrorHalf::Failed(e) => e.clone(),
            _ => return,
        };
        self.fail(e);
    }

    pub(super) fn remote(&self, data: Bytes) -> StreamError {
        StreamError::Remote {
            stream: self.name.clone(),
            data,
        }
    }

    /// Opener: waits (up to the pairing timeout) for the error half to end.
    /// `None` when it ended cleanly, else the error to report.
    pub(super) async fn error_half_result(&self) -> Option<StreamError> {
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
    pub(super) async fn peer_code(&self, c: u64) -> StreamError {
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

    pub(super) fn connection_lost(&self, ce: &quinn::ConnectionError) -> StreamError {
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
pub(super) async fn watch_error_half(
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
