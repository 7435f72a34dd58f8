//! The answers the reader produces itself (requests its handlers finished on the first poll,
//! refusals) on their way to the writer, **without the reader waiting for the writer**.
//!
//! Why: the writer waits for QUIC flow control, that is, for the peer's reader. If our reader
//! waited for our writer, two peers flooding each other would each wait for the other for
//! ever (`tests/mutual_flood.rs`). So a batch the writer cannot take at once is *held* here
//! while the reader goes on reading, and handed over as the writer makes room (the reader waits
//! for that room and for the network at the same time). While batches are held, answers that
//! are ready go out from short tasks of their own, each holding one of the connection's reply
//! permits (`Budgets`); only when those are all taken do small answers join the held batches.
//!
//! The held bytes are bounded by [`HELD_LIMIT`]: beyond it the reader stops reading until the
//! writer takes some, which holds back a peer that sends requests beyond its limits without
//! reading the answers (`tests/abuse.rs`). A peer that keeps fewer requests outstanding than
//! the connection's `max_concurrent_requests` never gets near it.

use super::outbox::TryReplies;
use super::Peer;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Most bytes of answers the reader holds for a writer that has no room (about 10,000 refusals).
pub(super) const HELD_LIMIT: usize = 1024 * 1024;

/// The reader's answers: the batch being gathered and the batches the writer could not take.
pub(super) struct Replies {
    /// Answers gathered during this read, handed to the writer as one batch.
    batch: BytesMut,
    /// Batches the writer had no room for, oldest first.
    held: VecDeque<(Bytes, Bytes)>,
    held_bytes: usize,
}

impl Replies {
    pub(super) fn new() -> Self {
        Self {
            batch: BytesMut::new(),
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    /// True while batches wait for the writer: answers then go out from their own tasks.
    pub(super) fn congested(&self) -> bool {
        !self.held.is_empty()
    }

    /// True when the reader must stop reading until the writer takes held answers.
    pub(super) fn over_limit(&self) -> bool {
        self.held_bytes >= HELD_LIMIT
    }

    /// The batch being gathered.
    pub(super) fn batch(&mut self) -> &mut BytesMut {
        &mut self.batch
    }

    /// Hands the batch (then `tail`, uncopied) to the writer if it has room now, else holds
    /// it. Never waits. `false` when the writer is gone (the connection is over).
    pub(super) fn flush(&mut self, peer: &Peer, tail: Bytes) -> bool {
        if self.batch.is_empty() && tail.is_empty() {
            return true;
        }
        let head = self.batch.split().freeze();
        if !self.held.is_empty() {
            // Order among answers does not matter on the wire, but older held batches go first
            // so that none waits behind newer ones for long.
            self.hold(head, tail);
            return true;
        }
        match peer.shared.out.try_send_replies(head, tail) {
            Ok(()) => true,
            Err(TryReplies::Full(head, tail)) => {
                self.hold(head, tail);
                true
            }
            Err(TryReplies::Closed(e)) => {
                peer.note_write_failure(e);
                false
            }
        }
    }

    fn hold(&mut self, head: Bytes, tail: Bytes) {
        self.held_bytes += head.len() + tail.len();
        self.held.push_back((head, tail));
    }

    /// Waits until the writer has room for the oldest held batch and hands it over; never
    /// completes while nothing is held. Cancel-safe (the batch leaves only once room is
    /// found), so the reader can race it against the network. `false` when the writer is gone.
    pub(super) async fn drain_one(&mut self, peer: &Peer) -> bool {
        let Some((head, tail)) = self.held.front() else {
            return std::future::pending().await;
        };
        let len = head.len() + tail.len();
        let room = match peer.shared.out.reply_room(len).await {
            Ok(room) => room,
            Err(e) => {
                peer.note_write_failure(e);
                return false;
            }
        };
        let Some((head, tail)) = self.held.pop_front() else {
            return true;
        };
        self.held_bytes -= len;
        peer.shared.out.send_in_room(room, head, tail);
        true
    }
}
