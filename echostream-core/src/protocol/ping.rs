//! Round-trip probes on the control stream: [`Peer::ping`](super::Peer::ping) sends a `PING`
//! frame with a fresh nonce and waits for the `PONG` that echoes it (every peer answers pings;
//! see `docs/PROTOCOL.md`, frame 0x08). The answer goes through the peer's reader and writer
//! like a call's, so the time measured is what a small call on this connection would see,
//! without running any handler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use std::time::{Duration, Instant};

use echostream_types::frame::Frame;
use tokio::sync::oneshot;

use super::Peer;
use crate::Error;

/// At most this many pings wait for their pong on one connection; more fail at once (a ping
/// is a probe, and a caller with this many outstanding is not measuring anything).
pub(super) const MAX_PENDING_PINGS: usize = 64;

/// Pings waiting for their pong, by nonce.
#[derive(Default)]
pub(super) struct Pings {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl Pings {
    /// A new nonce and the receiver its pong completes; `None` when [`MAX_PENDING_PINGS`] wait.
    pub(super) fn start(&self) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.len() >= MAX_PENDING_PINGS {
            return None;
        }
        let nonce = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        waiting.insert(nonce, tx);
        Some((nonce, rx))
    }

    /// A pong arrived: completes its ping. A pong nobody waits for (a ping that timed out, or
    /// one the peer made up) is ignored.
    pub(super) fn pong(&self, nonce: u64) {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&nonce);
        if let Some(tx) = waiter {
            let _ = tx.send(());
        }
    }

    /// The caller stopped waiting (timeout, cancellation).
    pub(super) fn forget(&self, nonce: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&nonce);
    }
}

/// [`Peer::ping`]: one `PING`, the matching `PONG`, the time between.
pub(super) async fn round_trip(peer: &Peer, timeout: Duration) -> Result<Duration, Error> {
    peer.check_open()?;
    peer.wait_established().await?;
    let pings = &peer.shared.pings;
    let Some((nonce, answered)) = pings.start() else {
        return Err(Error::Config(format!(
            "{MAX_PENDING_PINGS} pings already wait for an answer from {}",
            peer.remote_addr()
        )));
    };
    let started = Instant::now();
    let exchange = async {
        peer.send_frame(&Frame::Ping(nonce), || "ping".to_owned(), false)
            .await?;
        tokio::select! {
            answer = answered => answer.map_err(|_| peer.closed_error()),
            closed = peer.closed() => Err(closed),
        }
    };
    let result = tokio::time::timeout(timeout, exchange).await;
    pings.forget(nonce);
    match result {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Timeout {
            method: "echostream.ping".to_owned(),
            after: timeout,
        }),
    }
}
