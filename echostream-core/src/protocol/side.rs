//! Side streams: a request or response larger than the inline threshold travels alone on a
//! unidirectional stream, so a 16 MiB transfer does not hold up small calls on the control
//! stream. Byte layout and stream codes: `echostream_types::side`.
//!
//! # Why no mix of large and small calls can wedge a connection
//!
//! QUIC flow control gives each stream a window (256 KiB by default) and the whole connection
//! one more (16 MiB). Data a receiver has not read counts against both. If many side streams
//! sat unread, each holding its window, they could take the whole connection window; then
//! neither the frames being read nor the control stream could receive another byte, and no
//! timeout would fire. So the receiver never leaves more than a few side streams unread:
//!
//! - **Read at once, within a byte budget.** A side stream's frame head (length, type, id) is
//!   read as soon as the stream arrives. The frame's bytes are reserved from the connection's
//!   assembly budget (default 64 MiB, at least one largest frame) and the stream is read to its
//!   end right away; what it delivers is read out of quinn, so its credit returns at once.
//! - **Few may wait.** When the budget is taken, at most `max_waiting` streams wait for it
//!   unread, where `max_waiting × stream window ≤ connection window / 4` (16 × 256 KiB = 4 MiB
//!   of 16 MiB with the defaults). A stream beyond that is stopped with `BUSY` before anything
//!   of it is processed, and the sender sends it again after a short pause. So unread side
//!   streams hold at most a quarter of the connection window, and the rest (the control
//!   stream's window and the frames being assembled) always has credit.
//! - **Progress is guaranteed.** A stream that holds budget is being read, needs only its own
//!   credit (granted as it is read) and the connection's (never exhausted, above), so it ends:
//!   complete, reset by its sender, or dropped after the assembly timeout when no data arrives
//!   for that long. Each end releases its budget to the streams waiting.
//! - **Senders open few.** A sender keeps at most [`SEND_SLOTS`] side streams open per
//!   connection (8, below the 16 a default receiver lets wait), queueing the rest, so a
//!   well-behaved peer is never refused.
//!
//! Cancelling a call ends only its side stream: the sender resets it ([`code::CANCELLED`]) if
//! the call's future is dropped mid-write, and the receiver forgets the partial frame. A
//! response that nobody waits for any more is stopped after its head ([`code::UNWANTED`]).
//! A stream that ends cleanly inside its frame, or carries more than one frame, is still a
//! protocol violation.

use super::call::Answer;
use super::driver::perform;
use super::state::Origin;
use super::Peer;
use crate::Error;
use bytes::{Bytes, BytesMut};
use echostream_types::side::{code, CallHead, CallKind, HEAD_LEN, SIDE_FRAME};
use echostream_types::{CloseCode, Code, Frame, FrameDecoder, FrameError, Status};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Side streams one side keeps open at once per connection; more wait for a slot.
pub(crate) const SEND_SLOTS: usize = 8;

/// Default time a side stream may go without receiving data before it is dropped.
pub(crate) const DEFAULT_ASSEMBLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bytes of large frames assembled at once per connection (at least one frame).
pub(crate) const DEFAULT_ASSEMBLY_BUDGET: usize = 64 * 1024 * 1024;

/// Longest pause between sends of a side stream the receiver refused as busy.
const MAX_BUSY_BACKOFF: Duration = Duration::from_millis(100);

/// Side-stream state of one connection.
pub(crate) struct SideStreams {
    /// Our side streams open at once.
    send_slots: Semaphore,
    /// One permit per byte of the peer's large frames being assembled.
    budget: Semaphore,
    budget_bytes: usize,
    /// The peer's side streams waiting unread for budget.
    waiting: AtomicUsize,
    max_waiting: usize,
    /// A side stream with no data for this long is dropped.
    idle_timeout: Duration,
}

impl SideStreams {
    pub(crate) fn new(config: &super::ProtocolConfig) -> Self {
        let frame = config.max_frame_size as usize + echostream_types::frame::LENGTH_PREFIX;
        let budget_bytes = config.assembly_budget.max(frame).min(Semaphore::MAX_PERMITS);
        Self {
            send_slots: Semaphore::new(SEND_SLOTS),
            budget: Semaphore::new(budget_bytes),
            budget_bytes,
            waiting: AtomicUsize::new(0),
            max_waiting: config.assembly_waiting.max(1),
            idle_timeout: config.assembly_timeout,
        }
    }
}

/// How many side streams may wait unread for budget so that together they hold at most a
/// quarter of the connection window (see the module docs), at least one.
pub(crate) fn max_waiting(receive_window: Option<u32>, stream_window: Option<u32>) -> usize {
    // quinn's defaults when unset: an unlimited connection window, 1.25 MB per stream.
    let conn = receive_window.map_or(u64::MAX, u64::from);
    let stream = stream_window.map_or(1_250_000, u64::from).max(1);
    usize::try_from(conn / 4 / stream)
        .unwrap_or(usize::MAX)
        .clamp(1, 1024)
}

/// A side stream being written: reset (not finished) if dropped before [`Sending::finish`],
/// so the receiver sees a cancelled call rather than a frame cut short.
struct Sending {
    stream: quinn::SendStream,
    /// Reset on drop: cleared once the stream is finished or the receiver stopped it.
    armed: bool,
}

impl Sending {
    fn finish(mut self) {
        self.armed = false;
        let _ = self.stream.finish();
    }

    /// The receiver stopped the stream: nothing to reset.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.stream.reset(code::CANCELLED.into());
        }
    }
}

/// Sends one encoded frame on a side stream of its own. Waits for one of the
/// connection's [`SEND_SLOTS`]; sends again after a pause while the receiver refuses it as
/// busy (nothing of it was processed), for up to the assembly timeout.
pub(super) async fn send(
    peer: &Peer,
    head: Bytes,
    tail: Bytes,
    what: impl Fn() -> String,
) -> Result<(), Error> {
    let side = &peer.shared.side;
    let conn_err = |e: quinn::ConnectionError| {
        peer.mark_closed_from(&e);
        peer.closed_error()
    };
    // Never closed, so acquiring cannot fail; without a slot we still send.
    let _slot = side.send_slots.acquire().await.ok();
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let s = peer.shared.conn.open_uni().await.map_err(conn_err)?;
        let mut sending = Sending {
            stream: s,
            armed: true,
        };
        let mut chunks = [Bytes::from_static(&[SIDE_FRAME]), head.clone(), tail.clone()];
        let written = peer
            .bulk_write(sending.stream.write_all_chunks(&mut chunks))
            .await;
        match written {
            Ok(()) => {
                sending.finish();
                return Ok(());
            }
            Err(quinn::WriteError::Stopped(c)) => {
                sending.disarm();
                let c = u32::try_from(c.into_inner()).unwrap_or(u32::MAX);
                if c == code::BUSY && started.elapsed() < side.idle_timeout {
                    tracing::debug!(what = %what(), ?pause, "peer busy assembling large frames; sending again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BUSY_BACKOFF);
                    continue;
                }
                return Err(stopped_error(&what(), c, side.idle_timeout));
            }
            Err(quinn::WriteError::ConnectionLost(e)) => return Err(conn_err(e)),
            Err(e) => {
                return Err(Error::ConnectionClosed {
                    code: None,
                    reason: format!("side stream of {} failed: {e}", what()),
                })
            }
        }
    }
}

/// The error for a side stream the receiver stopped.
fn stopped_error(what: &str, c: u32, waited: Duration) -> Error {
    let msg = match c {
        code::BUSY => format!(
            "{what} was refused by the peer for {waited:?}: it is assembling as many large \
             messages as its budget allows; retry later or send smaller messages"
        ),
        code::STALLED => {
            format!("{what} was dropped by the peer: no data reached it within its assembly timeout")
        }
        code::UNWANTED => format!("{what} was not wanted any more by the peer (its call ended)"),
        other => format!("{what} was stopped by the peer with stream code {other:#x}"),
    };
    Error::Status(Status::new(Code::RESOURCE_EXHAUSTED, msg))
}

/// How reading a side stream ended early.
enum Ended {
    /// The sender reset it: the call was cancelled.
    Reset(u64),
    /// FIN before the frame was complete.
    Short,
    /// The connection is gone.
    Lost(quinn::ConnectionError),
    /// No data for the assembly timeout.
    Stalled,
    /// Another read error (stream already stopped, ...).
    Other(String),
}

/// Appends the next chunk of at most `want` bytes to `out`, waiting at most `idle` for it.
/// `Ok(false)`: the stream ended (FIN).
async fn read_some(
    recv: &mut quinn::RecvStream,
    out: &mut BytesMut,
    want: usize,
    idle: Duration,
) -> Result<bool, Ended> {
    match tokio::time::timeout(idle, recv.read_chunk(want, true)).await {
        Err(_) => Err(Ended::Stalled),
        Ok(Ok(Some(chunk))) => {
            out.extend_from_slice(&chunk.bytes);
            Ok(true)
        }
        Ok(Ok(None)) => Ok(false),
        Ok(Err(quinn::ReadError::Reset(c))) => Err(Ended::Reset(c.into_inner())),
        Ok(Err(quinn::ReadError::ConnectionLost(e))) => Err(Ended::Lost(e)),
        Ok(Err(e)) => Err(Ended::Other(e.to_string())),
    }
}

/// Reads bytes until `out` holds `len`; FIN before that is [`Ended::Short`].
async fn read_until(
    recv: &mut quinn::RecvStream,
    out: &mut BytesMut,
    len: usize,
    idle: Duration,
) -> Result<(), Ended> {
    while out.len() < len {
        if !read_some(recv, out, len - out.len(), idle).await? {
            return Err(Ended::Short);
        }
    }
    Ok(())
}

/// Receives the one frame of a side stream (its type byte already read) and dispatches it.
pub(super) async fn receive(peer: Peer, mut recv: quinn::RecvStream) {
    let side = &peer.shared.side;
    let idle = side.idle_timeout;
    let mut head = BytesMut::with_capacity(HEAD_LEN);
    if let Err(end) = read_until(&mut recv, &mut head, HEAD_LEN, idle).await {
        return ended(&peer, &mut recv, end, None);
    }
    let mut head_bytes = [0u8; HEAD_LEN];
    head_bytes.copy_from_slice(&head[..HEAD_LEN]);
    let call = match CallHead::parse(&head_bytes, peer.shared.config.max_frame_size) {
        Ok(h) => h,
        Err(FrameError::TooLarge { declared, limit }) => {
            return peer.close_with(
                CloseCode::FRAME_TOO_LARGE,
                &format!(
                "side stream announces a frame of {declared} bytes, over the frame limit of {limit} bytes"
            ),
            )
        }
        Err(e) => return peer.close_with(CloseCode::PROTOCOL_VIOLATION, &format!("side stream: {e}")),
    };
    if call.kind == CallKind::Response && !peer.awaits_response(call.id) {
        tracing::debug!(
            id = call.id,
            "large response for a call nobody waits for: stopped"
        );
        let _ = recv.stop(code::UNWANTED.into());
        return;
    }
    let total = call.frame_bytes();
    let Some(_reserved) = reserve(side, call.len, &peer).await else {
        let _ = recv.stop(code::BUSY.into());
        return;
    };
    // Allocated only now: the length is within the frame limit and the budget holds it.
    let mut frame = BytesMut::with_capacity(total);
    frame.extend_from_slice(&head);
    if let Err(end) = read_until(&mut recv, &mut frame, total, idle).await {
        return ended(&peer, &mut recv, end, Some((call, frame.len())));
    }
    // The frame is complete: the stream must end here.
    let mut extra = BytesMut::new();
    match read_some(&mut recv, &mut extra, 1, idle).await {
        Ok(false) => {}
        Ok(true) => {
            return peer.close_with(
                CloseCode::PROTOCOL_VIOLATION,
                "side stream holds more than one frame",
            )
        }
        Err(end) => return ended(&peer, &mut recv, end, Some((call, total))),
    }
    let decoder = FrameDecoder::new(peer.shared.config.max_frame_size);
    let result = match decoder.decode(&mut frame) {
        Ok(Some(f @ (Frame::Request(_) | Frame::Response(_)))) if frame.is_empty() => {
            let step = peer.shared.state.classify(f, Origin::Side, || false);
            match perform(&peer, step) {
                Ok(Some(Answer { id, result })) => {
                    peer.send_response(id, result).await;
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Ok(_) => Err((
            CloseCode::PROTOCOL_VIOLATION,
            "side stream frame does not match its head".to_owned(),
        )),
        Err(e) => Err((CloseCode::PROTOCOL_VIOLATION, format!("side stream: {e}"))),
    };
    if let Err((code, reason)) = result {
        peer.close_with(code, &reason);
    }
}

/// Reserves `len` bytes of the assembly budget; waits for them only while few other streams
/// wait (see the module docs). `None`: refuse the stream as busy.
async fn reserve<'a>(
    side: &'a SideStreams,
    len: u32,
    peer: &Peer,
) -> Option<tokio::sync::SemaphorePermit<'a>> {
    if let Ok(p) = side.budget.try_acquire_many(len) {
        return Some(p);
    }
    if side.waiting.fetch_add(1, Ordering::AcqRel) >= side.max_waiting {
        side.waiting.fetch_sub(1, Ordering::AcqRel);
        tracing::debug!(
            peer = %peer.shared.remote,
            len,
            budget = side.budget_bytes,
            waiting = side.max_waiting,
            "large frame refused as busy: the assembly budget is taken and enough streams wait"
        );
        return None;
    }
    let permit = side.budget.acquire_many(len).await.ok();
    side.waiting.fetch_sub(1, Ordering::AcqRel);
    permit
}

/// Ends a side stream that did not deliver its frame. `call` is the frame's head and the
/// bytes received, once known.
fn ended(peer: &Peer, recv: &mut quinn::RecvStream, end: Ended, call: Option<(CallHead, usize)>) {
    let (kind, id) = call.map_or(("frame", None), |(c, _)| match c.kind {
        CallKind::Request => ("request", Some(c.id)),
        CallKind::Response => ("response", Some(c.id)),
    });
    match end {
        Ended::Reset(c) => {
            tracing::debug!(
                kind,
                id,
                code = c,
                "side stream reset by its sender: call cancelled"
            )
        }
        Ended::Lost(e) => peer.mark_closed_from(&e),
        Ended::Other(e) => tracing::debug!(kind, id, error = %e, "side stream read failed"),
        Ended::Stalled => {
            let (received, total) = call.map_or((0, 0), |(c, n)| (n, c.frame_bytes()));
            tracing::warn!(
                peer = %peer.shared.remote,
                kind,
                id,
                received,
                total,
                timeout = ?peer.shared.side.idle_timeout,
                "large {kind} stalled (no data within the assembly timeout): dropped"
            );
            let _ = recv.stop(code::STALLED.into());
        }
        Ended::Short => peer.close_with(CloseCode::PROTOCOL_VIOLATION, "side stream ends inside its frame"),
    }
}
