//! The way to a connection's control-stream send half.
//!
//! Frames normally go through a bounded queue to the writer task, which
//! batches them. When the writer is idle it *lends* the send half here, and a
//! frame is then written straight into quinn by whoever sends it: one task hop
//! less on a lightly loaded connection. Order is kept because the direct path
//! is open only while nothing is queued: the first frame that goes to the
//! queue closes it until the writer has drained the queue and lends the
//! stream again.
//!
//! A single frame written directly closes the path too (and wakes the writer
//! to open it again): when many callers send at once, the first goes at once
//! and the others are batched by the writer, as many small quinn writes cost
//! more than one large one. The reader's answers are a batch already and keep
//! the path open.

use super::driver::Outgoing;
use crate::connection::priority::CallActivity;
use bytes::Bytes;
use futures::FutureExt;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Bytes of the reader's answer batches that may wait in the writer's queue. The queue
/// counts frames (1,024), and a batch can hold 64 KiB of answers: without this bound a peer
/// that sends requests and never reads the answers would park 64 MiB here before the reader
/// stops reading (and QUIC flow control holds the peer back).
const QUEUED_REPLY_BYTES: usize = 256 * 1024;

/// What a direct write did.
pub(super) enum Direct {
    /// Written (quinn holds the bytes; anything quinn did not take is left for the writer).
    Done,
    /// The direct path is closed (writer busy, frames queued, stream blocked): use the queue.
    NotNow,
    /// The stream failed.
    Failed(quinn::WriteError),
}

/// State shared by the senders and the writer task, behind one lock.
#[derive(Default)]
pub(super) struct Lent {
    /// The send half, while the writer lends it.
    send: Option<quinn::SendStream>,
    /// Something was queued since the writer last lent the stream: the direct path stays
    /// closed until the writer has drained the queue.
    queued: bool,
    /// What a direct write could not hand to quinn (flow control): written by the writer
    /// before anything else.
    leftover: Vec<Bytes>,
}

/// The sending end: the writer's queue plus the lending slot.
pub(super) struct Outbox {
    queue: mpsc::Sender<Outgoing>,
    lent: Arc<Mutex<Lent>>,
    /// Budget of [`QUEUED_REPLY_BYTES`] for answer batches in the queue.
    reply_bytes: Arc<Semaphore>,
    /// Told of every frame, so that bulk data yields to calls (`None` when the connection's
    /// call priority is off).
    calls: Option<Arc<CallActivity>>,
}

impl Outbox {
    /// An outbox and the writer's ends (its queue and the lending slot).
    pub(super) fn new(
        capacity: usize,
        calls: Option<Arc<CallActivity>>,
    ) -> (Self, mpsc::Receiver<Outgoing>, Arc<Mutex<Lent>>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let lent = Arc::new(Mutex::new(Lent::default()));
        (
            Self {
                queue,
                lent: lent.clone(),
                reply_bytes: Arc::new(Semaphore::new(QUEUED_REPLY_BYTES)),
                calls,
            },
            rx,
            lent,
        )
    }

    /// Sends `o`, directly when the writer is idle, else through the queue (waiting for room).
    /// `Err` when the writer is gone.
    pub(super) async fn send(&self, o: Outgoing) -> Result<(), Closed> {
        let o = match o {
            Outgoing::Frame { head, tail } => {
                self.mark();
                let mut chunks = [head, tail];
                match self.write_direct(&mut chunks, false) {
                    Direct::Done => return Ok(()),
                    Direct::Failed(e) => return Err(Closed::Write(e)),
                    Direct::NotNow => {
                        let [head, tail] = chunks;
                        Outgoing::Frame { head, tail }
                    }
                }
            }
            other => other,
        };
        self.enqueue(o).await
    }

    /// Hands the reader's batch of answers to the writer *without waiting*: directly when the
    /// writer is idle, else into the queue if it and the answer budget have room now. On
    /// `Full` the chunks come back untouched (the reader holds them: `replies`).
    pub(super) fn try_send_replies(&self, head: Bytes, tail: Bytes) -> Result<(), TryReplies> {
        self.mark();
        let mut chunks = [head, tail];
        match self.write_direct(&mut chunks, true) {
            Direct::Done => return Ok(()),
            Direct::Failed(e) => return Err(TryReplies::Closed(Closed::Write(e))),
            Direct::NotNow => {}
        }
        let [head, tail] = chunks;
        let len = reply_len(&head, &tail);
        let Ok(budget) = self.reply_bytes.clone().try_acquire_many_owned(len) else {
            return Err(TryReplies::Full(head, tail));
        };
        let permit = match self.queue.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return Err(TryReplies::Full(head, tail)),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(TryReplies::Closed(Closed::Gone)),
        };
        let mut lent = lock(&self.lent);
        lent.queued = true;
        permit.send(Outgoing::Replies {
            head,
            tail,
            _budget: budget,
        });
        Ok(())
    }

    /// Waits until a batch of `len` answer bytes fits in the queue. Cancel-safe: dropping the
    /// future gives back what it took, so the reader can wait for this and for the network at
    /// once.
    pub(super) async fn reply_room(&self, len: usize) -> Result<ReplyRoom, Closed> {
        let n = u32::try_from(len.clamp(1, QUEUED_REPLY_BYTES)).unwrap_or(u32::MAX);
        let budget = self
            .reply_bytes
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| Closed::Gone)?;
        let slot = self
            .queue
            .clone()
            .reserve_owned()
            .await
            .map_err(|_| Closed::Gone)?;
        Ok(ReplyRoom { budget, slot })
    }

    /// Queues a batch of answers in the room [`Outbox::reply_room`] found.
    pub(super) fn send_in_room(&self, room: ReplyRoom, head: Bytes, tail: Bytes) {
        self.mark();
        let mut lent = lock(&self.lent);
        lent.queued = true;
        room.slot.send(Outgoing::Replies {
            head,
            tail,
            _budget: room.budget,
        });
    }

    /// Puts `o` in the writer's queue, waiting for room; closes the direct path.
    async fn enqueue(&self, o: Outgoing) -> Result<(), Closed> {
        let permit = self.queue.reserve().await.map_err(|_| Closed::Gone)?;
        let mut lent = lock(&self.lent);
        lent.queued = true;
        permit.send(o);
        Ok(())
    }

    /// Queues `o` without waiting (never the direct path: for answers to probes, which are
    /// stamped by the writer, and for cancels sent from `Drop`).
    pub(super) fn try_send(&self, o: Outgoing) -> Result<(), mpsc::error::TrySendError<Outgoing>> {
        if let Outgoing::Frame { .. } = o {
            self.mark();
        }
        let permit = match self.queue.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return Err(mpsc::error::TrySendError::Full(o)),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(mpsc::error::TrySendError::Closed(o)),
        };
        let mut lent = lock(&self.lent);
        lent.queued = true;
        permit.send(o);
        Ok(())
    }

    /// Tells the call priority that an application frame (request, answer, event, cancel)
    /// goes out. Clock probes do not count: they are a second's background work, and the
    /// clock filter keeps the samples that were not delayed.
    fn mark(&self) {
        if let Some(c) = &self.calls {
            c.mark();
        }
    }

    /// Tells the call priority that control-stream data was just handed to quinn, so that the
    /// packet carrying it is not held back by the limit (see `CallActivity::written`).
    pub(super) fn written(&self) {
        if let Some(c) = &self.calls {
            c.written();
        }
    }

    /// Writes one frame (`[head, tail]`) straight into quinn if the writer lends the stream
    /// and nothing is queued. Never waits: quinn is polled once. On `NotNow` the chunks are
    /// untouched.
    fn write_direct(&self, chunks: &mut [Bytes; 2], batch: bool) -> Direct {
        let mut lent = lock(&self.lent);
        if lent.queued || lent.send.is_none() {
            return Direct::NotNow;
        }
        let mut woken = false;
        if !batch {
            // One frame closes the path. The writer is woken before quinn's driver (which the
            // write wakes), so that the driver, woken last, runs first and sends the frame.
            let Ok(permit) = self.queue.try_reserve() else {
                return Direct::NotNow;
            };
            lent.queued = true;
            permit.send(Outgoing::Wake);
            woken = true;
        }
        let Some(send) = lent.send.as_mut() else {
            return Direct::NotNow;
        };
        let written = match send.write_chunks(chunks).now_or_never() {
            // Blocked by flow control: nothing was written.
            None => return Direct::NotNow,
            Some(Err(e)) => return Direct::Failed(e),
            Some(Ok(w)) => w,
        };
        crate::metrics::control_bytes_sent(written.bytes);
        self.written();
        // quinn advanced a partly written chunk in place; `written.chunks` are complete.
        let rest: Vec<Bytes> = chunks[written.chunks..]
            .iter_mut()
            .filter(|c| !c.is_empty())
            .map(std::mem::take)
            .collect();
        if rest.is_empty() {
            return Direct::Done;
        }
        // The writer writes the rest before anything else, then lends the stream again once
        // the queue is empty.
        lent.leftover = rest;
        lent.queued = true;
        // Full: the writer is awake anyway. Closed: the connection is over.
        if !woken {
            if let Ok(permit) = self.queue.try_reserve() {
                permit.send(Outgoing::Wake);
            }
        }
        Direct::Done
    }
}

/// Room for one batch of answers in the writer's queue (see [`Outbox::reply_room`]).
pub(super) struct ReplyRoom {
    budget: OwnedSemaphorePermit,
    slot: mpsc::OwnedPermit<Outgoing>,
}

/// Why [`Outbox::try_send_replies`] did not send.
pub(super) enum TryReplies {
    /// No room now: the batch, untouched.
    Full(Bytes, Bytes),
    /// The writer is gone or the stream failed.
    Closed(Closed),
}

/// A batch's weight against [`QUEUED_REPLY_BYTES`] (a batch larger than the whole budget
/// takes all of it).
fn reply_len(head: &Bytes, tail: &Bytes) -> u32 {
    u32::try_from((head.len() + tail.len()).clamp(1, QUEUED_REPLY_BYTES)).unwrap_or(u32::MAX)
}

/// Why a frame could not be sent.
pub(super) enum Closed {
    /// The writer task has ended.
    Gone,
    /// A direct write failed.
    Write(quinn::WriteError),
}

impl Lent {
    /// Writer: lends `send` if the queue is empty (then the direct path opens); otherwise
    /// hands it back.
    pub(super) fn lend(
        slot: &Mutex<Lent>,
        send: quinn::SendStream,
        rx: &mpsc::Receiver<Outgoing>,
    ) -> Option<quinn::SendStream> {
        let mut lent = lock(slot);
        // Senders set `queued` and send under this lock, so an empty queue here means that
        // nothing queued is waiting: direct writes cannot overtake a queued frame.
        if !rx.is_empty() {
            return Some(send);
        }
        lent.queued = false;
        lent.send = Some(send);
        None
    }

    /// Writer: takes the stream back (after the queue woke it), with what a direct write
    /// left unwritten, to be written first.
    pub(super) fn reclaim(slot: &Mutex<Lent>, leftover: &mut Vec<Bytes>) -> Option<quinn::SendStream> {
        let mut lent = lock(slot);
        lent.queued = true;
        leftover.append(&mut lent.leftover);
        lent.send.take()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
