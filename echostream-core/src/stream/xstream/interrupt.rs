//! Running a read or write of [`XStream`](super::XStream) while watching for interruption: the stream
//! failing or being closed by another task, or (opener) an error from the peer.

use super::error_half::ErrorHalf;
use super::Inner;
use crate::stream::error::StreamError;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    Read,
    Write,
}

// Watching an operation for interruption.
impl Inner {
    /// Runs a read or write of this stream, watching for interruption (`interrupted`) in
    /// parallel only when it does not complete on its first poll. Data already buffered, or
    /// room to write, is the usual case on a busy stream, and setting up the watchers costs
    /// two watch subscriptions and two waiter registrations per call (4-5 % of a bulk
    /// receiver's CPU time in `perf`). What they would report at once is checked before
    /// (`lock_half`, `stopped`). It borrows the pinned operation, which stays in the caller's
    /// state: taken by value, it was stored twice (a `write_chunk` future grew from 1,128 to
    /// 1,904 bytes; borrowed, 1,272).
    pub(super) async fn guarded<F: Future>(
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
}
