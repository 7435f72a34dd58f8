//! Typed event subscriptions: a stream of events for code that prefers a
//! stream to a listener function.

use crate::protocol::Peer;
use crate::rpc::Payload;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use tokio::sync::mpsc;

/// Default number of events a subscription buffers.
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 1024;

struct Slot {
    tx: mpsc::Sender<(Peer, Payload)>,
    dropped: Arc<AtomicU64>,
}

/// Live subscriptions of one endpoint (server or client), by event name.
#[derive(Default)]
pub(crate) struct Subscriptions {
    slots: Mutex<HashMap<String, Vec<Slot>>>,
}

impl Subscriptions {
    pub(crate) fn subscribe<T: DeserializeOwned>(&self, name: &str, buffer: usize) -> Subscription<T> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        lock(&self.slots).entry(name.to_owned()).or_default().push(Slot {
            tx,
            dropped: dropped.clone(),
        });
        Subscription {
            name: name.to_owned(),
            rx,
            dropped,
            undecodable: 0,
            _t: PhantomData,
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        lock(&self.slots).get(name).is_some_and(|v| !v.is_empty())
    }

    /// Offers an event to every subscriber of its name without waiting: a
    /// subscriber whose buffer is full misses it, and its drop counter says so.
    pub(crate) fn deliver(&self, name: &str, peer: &Peer, payload: &Payload) {
        let mut slots = lock(&self.slots);
        let Some(list) = slots.get_mut(name) else {
            return;
        };
        list.retain(|slot| match slot.tx.try_send((peer.clone(), payload.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = slot.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                crate::metrics::event_dropped("subscription_full");
                tracing::debug!(
                    event = name,
                    dropped = n,
                    "subscriber is behind; event dropped for it"
                );
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if list.is_empty() {
            slots.remove(name);
        }
    }
}

/// A stream of the events of one name, decoded as `T`.
///
/// **Slow consumer policy: counted drops.** The subscription buffers a
/// bounded number of events (default 1024). When it is full, new events are
/// dropped *for this subscription only* and counted in [`Subscription::dropped`];
/// listeners, other subscriptions and the connection are not slowed down.
/// Use a listener instead when every event must be processed (listeners
/// apply backpressure to the sender). Events that do not decode as `T` are
/// skipped, logged and counted in [`Subscription::undecodable`].
///
/// Dropping the subscription ends it.
pub struct Subscription<T> {
    name: String,
    rx: mpsc::Receiver<(Peer, Payload)>,
    dropped: Arc<AtomicU64>,
    undecodable: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .field("undecodable", &self.undecodable)
            .finish()
    }
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The next event, or `None` once the endpoint is gone.
    pub async fn recv(&mut self) -> Option<T> {
        self.recv_with_peer().await.map(|(_, v)| v)
    }

    /// The next event with the connection it came from.
    pub async fn recv_with_peer(&mut self) -> Option<(Peer, T)> {
        loop {
            let (peer, payload) = self.rx.recv().await?;
            if let Some(v) = self.decode(&payload) {
                return Some((peer, v));
            }
        }
    }

    fn decode(&mut self, payload: &Payload) -> Option<T> {
        match payload.codec.decode::<T>(&payload.bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.undecodable += 1;
                tracing::warn!(event = %self.name, error = %e, type_name = std::any::type_name::<T>(),
                    "event skipped by a subscription: it does not decode");
                None
            }
        }
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Events missed because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events skipped because they did not decode as `T`.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }
}

impl<T: DeserializeOwned> futures::Stream for Subscription<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some((_, payload))) => {
                    if let Some(v) = this.decode(&payload) {
                        return Poll::Ready(Some(v));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
