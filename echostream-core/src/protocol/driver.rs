//! The tasks that drive one connection: the writer (batches frames into writes, 0-RTT
//! replay), the reader (decodes frames, carries out what [`CallState::classify`] decided), the
//! side-stream acceptor and the in-order event task. The handles ([`Peer`]) talk to them through
//! the outbox and the shared state.
//!
//! [`CallState::classify`]: super::state::CallState::classify

use super::budget::EventBytes;
use super::call::Answer;
use super::encode::COPY_BELOW;
use super::peer::Placed;
use super::replies::Replies;
use super::state::{Origin, Step};
use super::{in_span, outbox, side, Peer, Role, ZeroRtt};
use crate::Error;
use bytes::{Bytes, BytesMut};
use echostream_types::{CloseCode, Codec, EventFrame, Frame, FrameDecoder, FrameError};
use futures::FutureExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// An encoded frame on its way to the writer: head bytes plus an optional
/// uncopied payload.
pub(super) enum Outgoing {
    Frame {
        head: Bytes,
        tail: Bytes,
    },
    /// Write what is queued, finish the stream, wait for the peer to read it all.
    Finish(oneshot::Sender<()>, Duration),
    /// A clock-sync probe; the writer stamps `t1` as it writes it.
    TimeProbe,
    /// The answer to a probe; the writer stamps `t3` as it writes it.
    TimeReply {
        t1: u64,
        t2: u64,
    },
    /// A direct write left bytes for the writer (see `outbox`).
    Wake,
    /// A batch of the reader's answers; `_budget` holds its bytes against the outbox's bound
    /// on queued answers until the writer takes it.
    Replies {
        head: Bytes,
        tail: Bytes,
        _budget: tokio::sync::OwnedSemaphorePermit,
    },
}

/// Completes one of our calls with the peer's answer.
pub(super) type ReplySender = oneshot::Sender<Result<(Codec, Bytes), Error>>;

/// A client's 0-RTT start as [`Peer::start`] hands it over: the handshake's completion, the
/// encoded hello, the deadline.
pub(super) type ClientEarlyStart = (quinn::ZeroRttAccepted, Bytes, tokio::time::Instant);

/// The writer task's part of a client's 0-RTT start.
struct ClientEarly {
    accepted: quinn::ZeroRttAccepted,
    hello: Bytes,
    deadline: tokio::time::Instant,
    /// Hands the reader the receive half of the new control stream after a rejection.
    new_recv: oneshot::Sender<quinn::RecvStream>,
}

/// Starts the tasks of a new connection.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    peer: &Peer,
    (send, recv, leftover): (quinn::SendStream, quinn::RecvStream, BytesMut),
    out_rx: mpsc::Receiver<Outgoing>,
    lent: Arc<Mutex<outbox::Lent>>,
    client_early: Option<ClientEarlyStart>,
    ev_rx: mpsc::Receiver<QueuedEvent>,
    tls_done: Option<futures::future::Shared<quinn::ZeroRttAccepted>>,
) {
    let role = peer.shared.state.role();
    let span = tracing::debug_span!("conn", id = peer.shared.id, peer = %peer.shared.remote, role = ?role);
    let (recv_swap, writer_early) = match client_early {
        Some((accepted, hello, deadline)) => {
            let (tx, rx) = oneshot::channel();
            let early = ClientEarly {
                accepted,
                hello,
                deadline,
                new_recv: tx,
            };
            (Some(rx), Some(early))
        }
        None => (None, None),
    };
    if let Some(done) = tls_done {
        let weak = Arc::downgrade(&peer.shared);
        tokio::spawn(async move {
            let _ = done.await;
            if let Some(shared) = weak.upgrade() {
                // Resolved by a failed handshake too: then the data stays early.
                if shared.conn.close_reason().is_none() {
                    shared.established.send_replace(true);
                }
            }
        });
    }
    tokio::spawn(in_span(
        writer_task(send, out_rx, lent, peer.clone(), writer_early),
        span.clone(),
    ));
    tokio::spawn(in_span(
        reader_task(peer.clone(), recv, leftover, recv_swap),
        span.clone(),
    ));
    tokio::spawn(in_span(side_stream_task(peer.clone()), span.clone()));
    tokio::spawn(in_span(event_task(ev_rx), span));
}

// Stop collecting after this much, so one write does not grow without bound.
const BATCH_BYTES: usize = 256 * 1024;

type FinishRequest = (oneshot::Sender<()>, Duration);

/// Moves `first` and whatever else is queued (up to [`BATCH_BYTES`]) into `chunks`, stopping at
/// a finish request, which it returns.
fn collect_batch(
    first: Outgoing,
    rx: &mut mpsc::Receiver<Outgoing>,
    buf: &mut BytesMut,
    chunks: &mut Vec<Bytes>,
    peer: &Peer,
) -> Option<FinishRequest> {
    let mut batched = 0usize;
    let mut finish = None;
    let mut next = Some(first);
    while let Some(o) = next.take() {
        match o {
            // An answer batch's budget is given back here: the queue no longer holds it.
            Outgoing::Frame { head, tail } | Outgoing::Replies { head, tail, .. } => {
                batched += head.len() + tail.len();
                buf.extend_from_slice(&head);
                if tail.len() < COPY_BELOW {
                    buf.extend_from_slice(&tail);
                } else {
                    chunks.push(buf.split().freeze());
                    chunks.push(tail);
                }
            }
            Outgoing::Finish(done, wait) => {
                finish = Some((done, wait));
                break;
            }
            Outgoing::TimeProbe => {
                let t1 = peer.shared.config.clock.now().0;
                let _ = Frame::TimeRequest { t1 }.encode(buf);
            }
            Outgoing::TimeReply { t1, t2 } => {
                let t3 = peer.shared.config.clock.now().0;
                let _ = Frame::TimeResponse { t1, t2, t3 }.encode(buf);
            }
            // The leftover it announces was taken when the stream was reclaimed.
            Outgoing::Wake => {}
        }
        if batched < BATCH_BYTES {
            next = rx.try_recv().ok();
        }
    }
    if !buf.is_empty() {
        chunks.push(buf.split().freeze());
    }
    finish
}

/// A client's 0-RTT phase: writes frames as early data, keeping a copy, until the TLS handshake
/// completes. If the server rejected the early data, opens a new control stream and sends the
/// hello and every early frame again. Returns the stream to go on with and a finish request
/// that arrived meanwhile, or `None` when the connection is over.
async fn early_phase(
    mut send: quinn::SendStream,
    rx: &mut mpsc::Receiver<Outgoing>,
    peer: &Peer,
    early: ClientEarly,
) -> Option<(quinn::SendStream, Option<FinishRequest>)> {
    let ClientEarly {
        accepted,
        hello,
        deadline,
        new_recv,
    } = early;
    // Shared, so that a write blocked by flow control can also watch the deadline.
    let accepted = accepted.shared();
    let late = || {
        let reason = "the TLS handshake (0-RTT) did not complete in time";
        peer.shared
            .conn
            .close(CloseCode::HELLO_TIMEOUT.0.into(), reason.as_bytes());
        peer.mark_closed(
            Some(CloseCode::HELLO_TIMEOUT),
            format!("could not connect: {reason}"),
        );
    };
    let mut replay = BytesMut::from(&hello[..]);
    let mut buf = BytesMut::new();
    let mut chunks: Vec<Bytes> = Vec::new();
    // Set once a write failed because the early data was rejected: keep copying, stop writing.
    let mut stream_rejected = false;
    let mut finish = None;
    let outcome = loop {
        tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadline, accepted.clone()) => break r,
            o = rx.recv(), if finish.is_none() => {
                let Some(first) = o else {
                    let _ = send.finish();
                    return None;
                };
                finish = collect_batch(first, rx, &mut buf, &mut chunks, peer);
                for c in &chunks {
                    replay.extend_from_slice(c);
                }
                if !stream_rejected {
                    // Gives up only if the deadline passes before the handshake completes.
                    let too_late = async {
                        if tokio::time::timeout_at(deadline, accepted.clone()).await.is_ok() {
                            std::future::pending::<()>().await;
                        }
                    };
                    let written = tokio::select! {
                        r = send.write_all_chunks(&mut chunks) => r,
                        () = too_late => {
                            late();
                            return None;
                        }
                    };
                    match written {
                        Ok(()) => {}
                        Err(quinn::WriteError::ZeroRttRejected) => stream_rejected = true,
                        Err(quinn::WriteError::ConnectionLost(e)) => {
                            peer.mark_closed_from(&e);
                            return None;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "control stream write failed");
                            return None;
                        }
                    }
                }
                chunks.clear();
            }
        }
    };
    let conn = &peer.shared.conn;
    match outcome {
        Err(_) => {
            late();
            None
        }
        Ok(true) => {
            peer.shared.state.set_zero_rtt(ZeroRtt::Accepted);
            crate::metrics::zero_rtt("accepted");
            tracing::debug!("0-RTT early data accepted");
            peer.shared.established.send_replace(true);
            Some((send, finish))
        }
        Ok(false) => {
            if let Some(e) = conn.close_reason() {
                peer.mark_closed_from(&e);
                return None;
            }
            peer.shared.state.set_zero_rtt(ZeroRtt::Rejected);
            crate::metrics::zero_rtt("refused");
            tracing::debug!(
                bytes = replay.len(),
                "0-RTT early data rejected; sending it again"
            );
            let (mut send, recv) = match conn.open_bi().await {
                Ok(s) => s,
                Err(e) => {
                    peer.mark_closed_from(&e);
                    return None;
                }
            };
            let _ = send.set_priority(1);
            if let Err(e) = send.write_all(&replay).await {
                tracing::debug!(error = %e, "control stream write failed");
                if let quinn::WriteError::ConnectionLost(e) = e {
                    peer.mark_closed_from(&e);
                }
                return None;
            }
            if new_recv.send(recv).is_err() {
                return None;
            }
            peer.shared.established.send_replace(true);
            Some((send, finish))
        }
    }
}

async fn writer_task(
    send: quinn::SendStream,
    mut rx: mpsc::Receiver<Outgoing>,
    lent: Arc<Mutex<outbox::Lent>>,
    peer: Peer,
    early: Option<ClientEarly>,
) {
    let (mut send, mut finish) = match early {
        Some(early) => match early_phase(send, &mut rx, &peer, early).await {
            Some(s) => s,
            None => return,
        },
        None => (send, None),
    };
    // Empty until the first write: an idle connection holds no buffer
    // (16 KiB up front was a quarter of an idle connection's memory).
    let mut buf = BytesMut::new();
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        if finish.is_none() {
            let first = match rx.try_recv() {
                Ok(o) => o,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Idle: lend the stream, so that senders write directly, until
                    // something is queued.
                    if let Some(back) = outbox::Lent::lend(&lent, send, &rx) {
                        send = back;
                        continue;
                    }
                    // This task holds the peer, and so the queue's senders: the queue never
                    // closes while it waits. A connection that ends while idle (the peer
                    // closed it, or it timed out) must end the wait, or the task and the
                    // whole connection (its state, its quinn connection, the endpoint's
                    // socket) would outlive it.
                    let next = tokio::select! {
                        next = rx.recv() => next,
                        _ = peer.shared.conn.closed() => return,
                    };
                    // Only this task takes the stream out of the slot.
                    let Some(back) = outbox::Lent::reclaim(&lent, &mut chunks) else {
                        return;
                    };
                    send = back;
                    match next {
                        Some(o) => o,
                        None => break,
                    }
                }
            };
            finish = collect_batch(first, &mut rx, &mut buf, &mut chunks, &peer);
        }
        // Room in the call priority's limit for the batch, before the write wakes quinn's
        // driver and after (a bulk packet sent meanwhile may have taken it).
        peer.shared.out.written();
        crate::metrics::control_bytes_sent(chunks.iter().map(Bytes::len).sum());
        let written = send.write_all_chunks(&mut chunks).await;
        peer.shared.out.written();
        if let Err(e) = written {
            tracing::debug!(error = %e, "control stream write failed");
            if let quinn::WriteError::ConnectionLost(e) = e {
                peer.mark_closed_from(&e);
            }
            break;
        }
        chunks.clear();
        if let Some((done, wait)) = finish.take() {
            let _ = send.finish();
            let _ = tokio::time::timeout(wait, send.stopped()).await;
            let _ = done.send(());
            return;
        }
    }
    if !chunks.is_empty() {
        // What a direct write left, when every sender is gone.
        let _ = send.write_all_chunks(&mut chunks).await;
    }
    let _ = send.finish();
}

async fn reader_task(
    peer: Peer,
    mut recv: quinn::RecvStream,
    mut buf: BytesMut,
    mut new_recv: Option<oneshot::Receiver<quinn::RecvStream>>,
) {
    let decoder = FrameDecoder::new(peer.shared.config.max_frame_size);
    // When the bytes now in `buf` arrived: the receive time of clock-sync frames.
    let mut received_at = peer.shared.config.clock.now().0;
    // Answers to requests handled during this read, handed to the writer as one frame
    // batch, never waiting for it (see `replies`).
    let mut replies = Replies::new();
    let mut chunks: [Bytes; 16] = Default::default();
    let is_server = peer.shared.state.role() == Role::Server;
    let mut overflow = Overflow::default();
    loop {
        loop {
            // A peer far beyond its limits that does not read its answers: hold it back here.
            while replies.over_limit() {
                if !replies.drain_one(&peer).await {
                    return;
                }
            }
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } => CloseCode::FRAME_TOO_LARGE,
                        _ => CloseCode::PROTOCOL_VIOLATION,
                    };
                    peer.close_with(code, &format!("control stream: {e}"));
                    return;
                }
            };
            let origin = Origin::Control { received_at };
            let step = peer
                .shared
                .state
                .classify(frame, origin, || is_server && peer.is_early());
            // What the welcome, a probe or a sample needs is done by `perform`, without the
            // reply-room wait below.
            let quiet = matches!(
                step,
                Step::Welcome(_) | Step::TimeReply { .. } | Step::ClockSample(_)
            );
            let answer = match step {
                Step::Event(ev) if ev.name == super::credit::EVENT_CREDIT_EVENT => {
                    match super::credit::EventCredit::parse(&ev.payload) {
                        Some(n) => peer.shared.credit.grant(n),
                        None => tracing::debug!(
                            len = ev.payload.len(),
                            "event credit with a payload other than 4 bytes: ignored"
                        ),
                    }
                    continue;
                }
                Step::Event(ev) => {
                    // Never waits: a listener may be waiting for this very reader.
                    if !overflow.offer(&peer, ev) {
                        return;
                    }
                    continue;
                }
                step => match perform(&peer, step) {
                    Ok(answer) => answer,
                    Err((code, reason)) => {
                        peer.close_with(code, &reason);
                        return;
                    }
                },
            };
            if quiet {
                continue;
            }
            let Some(answer) = answer else {
                if !replies.flush(&peer, Bytes::new()) {
                    return;
                }
                continue;
            };
            let congested = replies.congested();
            match peer.answer(answer, replies.batch(), congested) {
                Placed::Batched if replies.batch().len() < COPY_BELOW * 16 => {}
                Placed::Batched => {
                    if !replies.flush(&peer, Bytes::new()) {
                        return;
                    }
                }
                Placed::Tail(tail) => {
                    if !replies.flush(&peer, tail) {
                        return;
                    }
                }
                Placed::Later => {}
                Placed::NoRoom(Answer { id, result }) => {
                    // Every reply permit is taken: wait for one, moving held answers to the
                    // writer meanwhile (their room and a permit come back independently).
                    let permit = loop {
                        tokio::select! {
                            p = peer.shared.budgets.reply_permit_wait() => break p,
                            ok = replies.drain_one(&peer) => if !ok { return },
                        }
                    };
                    let Some(permit) = permit else { return };
                    peer.respond_later(permit, id, result);
                }
            }
        }
        if !replies.flush(&peer, Bytes::new()) {
            return;
        }
        // Several chunks per call: each read takes the connection's lock. While answers are
        // held, wait for the network and for the writer's room at once.
        let read = loop {
            if !replies.congested() {
                break recv.read_chunks(&mut chunks).await;
            }
            tokio::select! {
                read = recv.read_chunks(&mut chunks) => break read,
                ok = replies.drain_one(&peer) => if !ok { return },
            }
        };
        match read {
            Ok(Some(n)) => {
                received_at = peer.shared.config.clock.now().0;
                let before = buf.len();
                for chunk in &mut chunks[..n] {
                    buf.extend_from_slice(chunk);
                    *chunk = Bytes::new();
                }
                crate::metrics::control_bytes_received(buf.len() - before);
            }
            Ok(None) => {
                // The peer finished its control stream: it will send nothing more.
                let e = peer.shared.conn.closed().await;
                peer.mark_closed_from(&e);
                return;
            }
            Err(quinn::ReadError::ConnectionLost(e)) => {
                peer.mark_closed_from(&e);
                return;
            }
            Err(quinn::ReadError::ZeroRttRejected) if new_recv.is_some() => {
                // The server never saw this stream; the writer opens a new one.
                let Some(rx) = new_recv.take() else { return };
                match rx.await {
                    Ok(r) => {
                        recv = r;
                        buf.clear();
                    }
                    Err(_) => return,
                }
            }
            Err(e) => {
                peer.close_with(
                    CloseCode::PROTOCOL_VIOLATION,
                    &format!("control stream failed: {e}"),
                );
                return;
            }
        }
    }
}

/// Carries out what [`CallState::classify`](super::state::CallState::classify) decided for
/// one frame (the reader queues events itself). Returns an answer to send (a request answered
/// at once or refused), or the violation to close the connection with.
pub(super) fn perform(
    peer: &Peer,
    step: Step<ReplySender, tokio::task::AbortHandle>,
) -> Result<Option<Answer>, (CloseCode, String)> {
    let shared = &peer.shared;
    match step {
        Step::Request(req) => {
            let id = req.id;
            Ok(shared
                .inbound
                .request(peer, req)
                .map(|result| Answer { id, result }))
        }
        Step::Refuse(id, status) => Ok(Some(Answer {
            id,
            result: Err(status),
        })),
        Step::Complete(tx, result) => {
            let _ = tx.send(result.map_err(Error::Status));
            Ok(None)
        }
        Step::Abort(handle) => {
            handle.abort();
            Ok(None)
        }
        Step::Pong(n) => {
            let mut head = BytesMut::new();
            if Frame::Pong(n).encode(&mut head).is_ok() {
                // A pong is only a probe answer: drop it rather than wait.
                let _ = shared.out.try_send(Outgoing::Frame {
                    head: head.freeze(),
                    tail: Bytes::new(),
                });
            }
            Ok(None)
        }
        Step::PongReceived(n) => {
            shared.pings.pong(n);
            Ok(None)
        }
        Step::Welcome(welcome) => {
            shared
                .peer_max_frame
                .store(welcome.max_frame_size, std::sync::atomic::Ordering::Release);
            shared.credit.start(&welcome.metadata);
            let _ = shared
                .peer_compression
                .set(super::compress::accepted_by(&welcome.metadata));
            let _ = shared
                .peer_hello
                .set(super::application_hello_metadata(welcome.metadata));
            tracing::debug!("welcome received");
            Ok(None)
        }
        Step::TimeReply { t1, t2 } => {
            // A probe answer is only useful if prompt: drop it rather than wait.
            let _ = shared.out.try_send(Outgoing::TimeReply { t1, t2 });
            Ok(None)
        }
        Step::ClockSample(sample) => {
            if let Some(sync) = shared.clock_sync.get() {
                tracing::trace!(?sample, "clock sample");
                sync.add(sample);
            }
            Ok(None)
        }
        Step::Event(_) | Step::Nothing => Ok(None),
        Step::Violation(code, reason) => Err((code, reason)),
    }
}

/// Accepts unidirectional streams (one large frame each, or XStream error
/// halves) and bidirectional streams (XStream data halves).
async fn side_stream_task(peer: Peer) {
    let conn = peer.shared.conn.clone();
    loop {
        tokio::select! {
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    let peer = peer.clone();
                    tokio::spawn(async move {
                        let mut recv = recv;
                        let mut kind = [0u8; 1];
                        let wait = peer.shared.config.assembly_timeout;
                        // Boxed: the task is only as large as what it awaits, and thousands
                        // of error halves can be arriving at once.
                        match tokio::time::timeout(wait, recv.read_exact(&mut kind)).await {
                            Ok(Ok(())) if kind[0] == echostream_types::side::SIDE_FRAME => {
                                Box::pin(side::receive(peer, recv)).await
                            }
                            Ok(Ok(())) => {
                                let host = peer.shared.streams.accept_uni(peer.clone(), kind[0], recv);
                                host.await
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "unidirectional stream ended before its type"),
                            Err(_) => {
                                let _ = recv.stop(echostream_types::side::code::STALLED.into());
                            }
                        }
                    });
                }
                Err(e) => {
                    peer.mark_closed_from(&e);
                    return;
                }
            },
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    let peer = peer.clone();
                    tokio::spawn(async move {
                        // A stream opened in early data could be a replay: serve it only once
                        // the handshake has completed.
                        if peer.wait_established().await.is_ok() {
                            let host = peer.shared.streams.accept_bi(peer.clone(), send, recv);
                            host.await
                        }
                    });
                }
                Err(e) => {
                    peer.mark_closed_from(&e);
                    return;
                }
            },
        }
    }
}

/// An event on its way to the event task, with its bytes held against the connection's event
/// budget until it has been processed.
pub(super) type QueuedEvent = (EventFrame, Peer, EventBytes);

/// Hands events to the RPC layer one at a time, in arrival order, and gives the sender its
/// event credit back as they finish (see `credit`).
async fn event_task(mut rx: mpsc::Receiver<QueuedEvent>) {
    while let Some((ev, peer, bytes)) = rx.recv().await {
        let inbound = peer.shared.inbound.clone();
        inbound.event(&peer, ev).await;
        drop(bytes);
        if let Some(n) = peer.shared.credit.finished(1) {
            peer.give_event_credit(n).await;
        }
    }
}

/// The reader's side of the event queue: it queues each event without waiting, and drops
/// (counts, logs) the events that find the queue full.
///
/// Why not wait for room: the queue is drained by listeners, which are user code, and a
/// listener may wait for something only this reader can deliver (the answer to its own call to
/// the peer, a handler's effect, a pong, a clock sample). A reader waiting for the queue would
/// then never read it, and the connection would stall until the listener's call timed out. A
/// well-behaved sender is held back by event credit instead (`credit`: it never has more
/// events unprocessed here than the queue holds), so the queue is only found full by a peer
/// that ignores credit or announced none. For those the policy is drop-newest: the event is not
/// delivered, `echostream.events.dropped` (policy `queue_full`) and [`Peer::events_dropped`]
/// count it, and the first drop of a run logs a `warn` line naming the event, the peer and the
/// limit; the end of the run logs how many were dropped (one line per run, however long: a
/// flooding peer cannot flood the log).
#[derive(Default)]
struct Overflow {
    /// Events dropped since the queue was last found with room.
    run: u64,
}

impl Overflow {
    /// Queues `ev` for the listeners, or drops it when the queue is full. False when the
    /// connection's event task is gone (the connection is over).
    fn offer(&mut self, peer: &Peer, ev: EventFrame) -> bool {
        let shared = &peer.shared;
        let full = match shared.budgets.try_reserve_event_bytes(ev.payload.len()) {
            None => Some((ev, true)),
            Some(bytes) => match shared.events.try_send((ev, peer.clone(), bytes)) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full((ev, _, _))) => Some((ev, false)),
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            },
        };
        match full {
            None if self.run > 0 => {
                tracing::warn!(
                    peer = %shared.remote,
                    dropped = self.run,
                    "event queue has room again after dropping {} events of this connection",
                    self.run
                );
                self.run = 0;
            }
            None => {}
            Some((ev, over_bytes)) => {
                crate::metrics::event_received();
                crate::metrics::event_dropped("queue_full");
                // Finished too: its credit goes back with the next batch.
                shared.credit.owe();
                shared
                    .events_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.run == 0 {
                    let limit = if over_bytes {
                        format!(
                            "{} bytes of event payloads, the event byte budget",
                            shared.budgets.event_bytes_limit()
                        )
                    } else {
                        format!("{} events, event_queue", shared.config.event_queue.max(1))
                    };
                    tracing::warn!(
                        event = %ev.name,
                        peer = %shared.remote,
                        "event `{}` dropped: the connection's event queue is full ({limit}); \
                         listeners are not keeping up, further events are dropped and counted \
                         until it has room",
                        ev.name
                    );
                }
                self.run += 1;
            }
        }
        true
    }
}
