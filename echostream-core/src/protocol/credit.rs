//! Event credit: how a sender of events is held back by the receiver's listeners without the
//! receiver's reader ever waiting for them.
//!
//! Each side announces in its hello (or welcome) how many events its listener queue holds,
//! under the metadata key [`EVENT_CREDIT_KEY`] (decimal text). The other side may then have at
//! most that many events unprocessed at the receiver: `emit` takes one unit of credit per
//! event and waits when none is left. The receiver gives credit back as its event task
//! finishes events (processed, or dropped for any reason), in batches of a quarter of its
//! queue, with an EVENT frame of the reserved name [`EVENT_CREDIT_EVENT`] whose payload is the
//! number of events returned (`u32`, big-endian). The reader handles that frame itself; it never
//! reaches listeners.
//!
//! So a slow listener slows its senders, as flow control would, but the control stream keeps
//! being read: a listener that calls its peer back gets its answer. A peer that ignores credit
//! (or announced none, as a peer without this feature does) only finds the queue full: its
//! excess events are dropped and counted (`driver::Overflow`). A peer without this feature sees
//! the credit events as events nobody listens to. A 0-RTT client learns the server's credit
//! from the welcome, which may come after the handshake: events it sends before that are not
//! held back (the server's reader still never waits for them).

use echostream_types::Metadata;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

/// Hello and welcome metadata key: how many events this side's listener queue holds.
pub(crate) const EVENT_CREDIT_KEY: &str = "echostream.event-credit";

/// The reserved event name that returns credit to the peer (payload: `u32` big-endian).
pub(crate) const EVENT_CREDIT_EVENT: &str = "echostream.event-credit";

/// Both directions of event credit on one connection.
pub(crate) struct EventCredit {
    /// Our sends: the permits left and the peer's announced queue; unset while the peer's
    /// hello is unknown or announced no credit (then sends are not held back).
    send: OnceLock<(Arc<Semaphore>, usize)>,
    /// The peer's events finished here whose credit has not been given back yet.
    owed: AtomicUsize,
    /// Credit is given back once this much is owed (a quarter of our queue, at least 1).
    batch: usize,
}

impl EventCredit {
    /// Credit for a side whose listener queue holds `own_queue` events.
    pub(crate) fn new(own_queue: usize) -> Self {
        Self {
            send: OnceLock::new(),
            owed: AtomicUsize::new(0),
            batch: (own_queue / 4).max(1),
        }
    }

    /// Adds this side's announcement to the metadata of its hello or welcome.
    pub(crate) fn announce(metadata: &mut Metadata, own_queue: usize) {
        metadata.insert(EVENT_CREDIT_KEY, own_queue.max(1).to_string());
    }

    /// The peer's hello metadata as the application sees it: without the credit announcement,
    /// which belongs to the protocol (after [`EventCredit::start`] read it).
    pub(crate) fn application_metadata(mut peer_hello: Metadata) -> Metadata {
        peer_hello.remove(EVENT_CREDIT_KEY);
        peer_hello
    }

    /// Starts holding our events back by what the peer announced in its hello (`peer_hello`).
    /// A missing, unreadable or zero announcement leaves sends unlimited.
    pub(crate) fn start(&self, peer_hello: &Metadata) {
        let Some(n) = peer_hello
            .get_str(EVENT_CREDIT_KEY)
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&n| n > 0)
        else {
            return;
        };
        let n = n as usize;
        let _ = self.send.set((Arc::new(Semaphore::new(n)), n));
    }

    /// Takes one unit of credit for an event, waiting while the peer's listeners are behind.
    pub(crate) async fn acquire(&self) {
        if let Some((sem, _)) = self.send.get() {
            if let Ok(permit) = sem.acquire().await {
                permit.forget();
            }
        }
    }

    /// The peer gave back `n` units. Never more than were taken: a peer cannot inflate our
    /// credit beyond what it announced.
    pub(crate) fn grant(&self, n: u32) {
        if let Some((sem, limit)) = self.send.get() {
            let taken = limit.saturating_sub(sem.available_permits());
            sem.add_permits((n as usize).min(taken));
        }
    }

    /// `n` of the peer's events are finished here. Returns the credit to give back now, once
    /// a batch is owed.
    pub(crate) fn finished(&self, n: usize) -> Option<u32> {
        let owed = self.owed.fetch_add(n, Ordering::AcqRel) + n;
        if owed < self.batch {
            return None;
        }
        let all = self.owed.swap(0, Ordering::AcqRel);
        (all > 0).then(|| u32::try_from(all).unwrap_or(u32::MAX))
    }

    /// One of the peer's events was dropped by the reader: its credit goes back with the
    /// next batch the event task gives.
    pub(crate) fn owe(&self) {
        self.owed.fetch_add(1, Ordering::AcqRel);
    }

    /// Reads the payload of a credit event: `u32` big-endian, else `None`.
    pub(crate) fn parse(payload: &[u8]) -> Option<u32> {
        <[u8; 4]>::try_from(payload).ok().map(u32::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credit_holds_sends_to_the_announced_queue_and_grants_never_exceed_it() {
        let c = EventCredit::new(8);
        let mut hello = Metadata::new();
        EventCredit::announce(&mut hello, 2);
        c.start(&hello);
        c.acquire().await;
        c.acquire().await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), c.acquire()).await;
        assert!(third.is_err(), "a third event waits for credit");
        c.grant(1_000_000);
        let (sem, _) = c.send.get().unwrap();
        assert_eq!(sem.available_permits(), 2, "a grant is capped at what was taken");
    }

    #[test]
    fn credit_is_given_back_in_batches_of_a_quarter_of_the_queue() {
        let c = EventCredit::new(8);
        assert_eq!(c.finished(1), None);
        assert_eq!(c.finished(1), Some(2));
        assert_eq!(c.finished(1), None);
        assert_eq!(EventCredit::parse(&7u32.to_be_bytes()), Some(7));
        assert_eq!(EventCredit::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn no_announcement_leaves_sends_unlimited() {
        let c = EventCredit::new(8);
        c.start(&Metadata::new());
        assert!(c.send.get().is_none());
    }
}
