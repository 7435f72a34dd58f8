//! Sans-IO state of one connection's calls: which ids are ours, which calls wait for an answer,
//! which of the peer's calls run here, the go-away flags, the close record and the 0-RTT
//! status, plus the one function that decides what a decoded frame means ([`CallState::classify`]).
//!
//! No sockets, tasks or clocks: the driver (`protocol::driver`) decodes frames, passes them in
//! with the time they arrived, and carries out the [`Step`] it gets back. The waiter of a call
//! (`W`, a oneshot sender in the driver) and the handle of a running call (`H`, an abort handle)
//! are type parameters, so tests use plain values.
//!
//! Call order: [`CallState::next_id`] + [`CallState::insert_pending`] before a request goes out;
//! [`CallState::classify`] for every frame read; [`CallState::register_running`] when an
//! admitted request continues in a task, [`CallState::finish_running`] when it ends;
//! [`CallState::record_close`] once, when the connection ends.
//!
//! Shared between the connection's tasks and handles, so the tables sit behind their own
//! short-held locks (as the call path needs: callers insert while the reader removes).

use super::timesync::Sample;
use super::{handshake, Role, ZeroRtt};
use bytes::Bytes;
use echostream_types::{CloseCode, Code, Codec, EventFrame, Frame, Hello, RequestFrame, Status};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Why a connection ended.
#[derive(Debug)]
pub(crate) struct Closed {
    pub(crate) code: Option<CloseCode>,
    pub(crate) reason: String,
    /// We closed it because the peer broke the protocol.
    pub(crate) peer_violation: bool,
}

/// Where a frame was read: the control stream (with the local clock when its bytes arrived, the
/// receive time of clock-sync frames) or a side stream (one large request or response).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin {
    Control { received_at: u64 },
    Side,
}

/// What a frame asks of the driver, decided by [`CallState::classify`].
#[derive(Debug)]
pub(crate) enum Step<W, H> {
    /// The server's welcome, awaited by a client that sent its hello as early data.
    Welcome(Hello),
    /// A request that passed the protocol checks: run it.
    Request(RequestFrame),
    /// A request refused by the protocol checks: answer it with this status.
    Refuse(u64, Status),
    /// The answer to one of our calls, with the waiter it goes to (already removed).
    Complete(W, Result<(Codec, Bytes), Status>),
    /// The peer cancelled a call running here: abort it (already removed).
    Abort(H),
    /// Answer a ping with a pong carrying this nonce.
    Pong(u64),
    /// The answer to one of our pings, with its nonce.
    PongReceived(u64),
    /// Answer a clock-sync probe (`t2`: when it arrived).
    TimeReply { t1: u64, t2: u64 },
    /// A clock-sync sample completed by the peer's answer.
    ClockSample(Sample),
    /// An event for the listeners, in arrival order.
    Event(EventFrame),
    /// Nothing to do (a go-away recorded, an answer or cancel nobody waits for).
    Nothing,
    /// The peer broke the protocol: close with this code and reason.
    Violation(CloseCode, String),
}

/// The protocol-level verdict on a request (see [`CallState::admit`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// May run (the RPC layer applies its own policy next).
    Run,
    /// Refused with a status; the connection goes on.
    Refuse(Status),
    /// The peer broke the protocol.
    Violation(CloseCode, String),
}

/// The call table and flags of one connection (see the module docs).
pub(crate) struct CallState<W, H> {
    role: Role,
    /// The peer's requests allowed to run here at once.
    max_running: usize,
    next_id: AtomicU64,
    /// Our calls waiting for a response, by request id.
    pending: Mutex<HashMap<u64, W>>,
    /// The peer's calls running here, by request id (with the method), so a cancel can abort
    /// them.
    running: Mutex<HashMap<u64, (H, String)>>,
    /// Set once the peer sent a go-away: no new calls toward it.
    peer_going_away: AtomicBool,
    /// Set once we sent a go-away: new calls from the peer are refused.
    going_away: AtomicBool,
    /// A client that sent its hello as early data reads the welcome first.
    welcome_pending: AtomicBool,
    /// Why the connection ended, once it has.
    closed: OnceLock<Closed>,
    /// What became of this connection's early data (client side).
    zero_rtt: Mutex<ZeroRtt>,
    /// Our frame limit: no compressed payload decompresses beyond it.
    max_frame: u32,
}

impl<W, H> CallState<W, H> {
    pub(crate) fn new(role: Role, max_running: usize, welcome_pending: bool, zero_rtt: ZeroRtt) -> Self {
        Self {
            role,
            max_running,
            next_id: AtomicU64::new(role.first_id()),
            pending: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            peer_going_away: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            welcome_pending: AtomicBool::new(welcome_pending),
            closed: OnceLock::new(),
            zero_rtt: Mutex::new(zero_rtt),
            max_frame: echostream_types::DEFAULT_MAX_FRAME_SIZE,
        }
    }

    /// Sets our frame limit, which also bounds a compressed payload's uncompressed size.
    pub(crate) fn frame_limit(mut self, limit: u32) -> Self {
        self.max_frame = limit;
        self
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The id of our next call (each side steps by two in its own space).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(2, Ordering::Relaxed)
    }

    pub(crate) fn insert_pending(&self, id: u64, waiter: W) {
        lock(&self.pending).insert(id, waiter);
    }

    /// Stops waiting for call `id` (timeout, cancel, send failure).
    pub(crate) fn remove_pending(&self, id: u64) -> Option<W> {
        lock(&self.pending).remove(&id)
    }

    /// Whether a call of ours with this id still waits for its response.
    pub(crate) fn awaits_response(&self, id: u64) -> bool {
        lock(&self.pending).contains_key(&id)
    }

    pub(crate) fn pending_len(&self) -> usize {
        lock(&self.pending).len()
    }

    pub(crate) fn running_len(&self) -> usize {
        lock(&self.running).len()
    }

    /// Registers a call of the peer that continues in a task. The table stays locked while
    /// `start` runs, so a task that ends at once cannot remove its entry before it is inserted.
    pub(crate) fn register_running(&self, id: u64, method: String, start: impl FnOnce() -> H) {
        let mut running = lock(&self.running);
        let handle = start();
        running.insert(id, (handle, method));
    }

    /// Forgets a call of the peer that ended.
    pub(crate) fn finish_running(&self, id: u64) {
        lock(&self.running).remove(&id);
    }

    /// Takes every call of the peer still running (to abort them).
    pub(crate) fn drain_running(&self) -> Vec<(u64, (H, String))> {
        lock(&self.running).drain().collect()
    }

    /// Marks that we sent a go-away: the peer's new requests are refused from now on.
    pub(crate) fn set_going_away(&self) {
        self.going_away.store(true, Ordering::Release);
    }

    /// True once the peer announced it takes no new requests.
    pub(crate) fn peer_going_away(&self) -> bool {
        self.peer_going_away.load(Ordering::Acquire)
    }

    /// Records why the connection ended and takes every waiting call and running handler, to be
    /// failed and aborted. `None` when the end was already recorded.
    pub(crate) fn record_close(&self, closed: Closed) -> Option<(Vec<W>, Vec<H>)> {
        self.closed.set(closed).ok()?;
        let pending = lock(&self.pending).drain().map(|(_, w)| w).collect();
        let running = lock(&self.running).drain().map(|(_, (h, _))| h).collect();
        Some((pending, running))
    }

    pub(crate) fn closed(&self) -> Option<&Closed> {
        self.closed.get()
    }

    pub(crate) fn zero_rtt(&self) -> ZeroRtt {
        *lock(&self.zero_rtt)
    }

    pub(crate) fn set_zero_rtt(&self, z: ZeroRtt) {
        *lock(&self.zero_rtt) = z;
    }

    /// The protocol's checks of a request from the peer, in order: its id space, our go-away,
    /// the cap on running calls, an id reused while its call runs.
    pub(crate) fn admit(&self, req: &RequestFrame) -> Admission {
        if req.id % 2 != self.role.peer().first_id() {
            return Admission::Violation(
                CloseCode::PROTOCOL_VIOLATION,
                format!("request id {} is not in the peer's id space", req.id),
            );
        }
        if self.going_away.load(Ordering::Acquire) {
            return Admission::Refuse(Status::new(Code::UNAVAILABLE, "server is shutting down"));
        }
        let running = lock(&self.running);
        if running.len() >= self.max_running {
            let msg = format!(
                "too many concurrent requests on this connection (limit {}); `{}` refused",
                self.max_running, req.method
            );
            return Admission::Refuse(Status::new(Code::RESOURCE_EXHAUSTED, msg));
        }
        if running.contains_key(&req.id) {
            return Admission::Violation(
                CloseCode::PROTOCOL_VIOLATION,
                format!("request id {} reused while in flight", req.id),
            );
        }
        Admission::Run
    }

    /// The refusal of a request that arrived as 0-RTT early data (`early` tells) for a handler
    /// not declared idempotent: early data can be replayed. Only a server refuses.
    pub(crate) fn refuse_early(
        &self,
        method: &str,
        idempotent: bool,
        early: impl FnOnce() -> bool,
    ) -> Option<Status> {
        if self.role != Role::Server || idempotent || !early() {
            return None;
        }
        tracing::warn!(method, "non-idempotent call arrived as 0-RTT early data: refused");
        let msg = format!(
            "`{method}` arrived as 0-RTT early data, which can be replayed, and its handler is not \
             declared idempotent: refused without running; send it after the handshake completes"
        );
        Some(Status::new(Code::EARLY_DATA_REFUSED, msg))
    }

    /// Decides what one decoded frame does, or which violation it is. `early` tells whether the
    /// frame arrived as 0-RTT early data (asked only for an event on a server).
    pub(crate) fn classify(&self, frame: Frame, origin: Origin, early: impl FnOnce() -> bool) -> Step<W, H> {
        let control = matches!(origin, Origin::Control { .. });
        if control && self.welcome_pending.load(Ordering::Acquire) {
            return match handshake::check_welcome(frame) {
                Ok(welcome) => {
                    self.welcome_pending.store(false, Ordering::Release);
                    Step::Welcome(welcome)
                }
                Err(e) => Step::Violation(e.close.unwrap_or(CloseCode::PROTOCOL_VIOLATION), e.reason),
            };
        }
        // A compressed payload is checked against our frame limit and decompressed here, so
        // what follows (admission, budgets, handlers) sees only plain payloads.
        let frame = match super::compress::inflate_frame(frame, self.max_frame) {
            Ok(frame) => frame,
            Err((code, reason)) => return Step::Violation(code, reason),
        };
        match (frame, origin) {
            (Frame::Request(req), _) => match self.admit(&req) {
                Admission::Run => Step::Request(req),
                Admission::Refuse(status) => Step::Refuse(req.id, status),
                Admission::Violation(code, reason) => Step::Violation(code, reason),
            },
            (Frame::Response(resp), _) => match self.remove_pending(resp.id) {
                Some(waiter) => Step::Complete(waiter, resp.result),
                None => {
                    // Normal after a timeout or cancel: the caller stopped waiting.
                    tracing::debug!(id = resp.id, "response for a request nobody waits for");
                    Step::Nothing
                }
            },
            (Frame::Cancel { id }, _) => match lock(&self.running).remove(&id) {
                Some((handle, _)) => {
                    tracing::debug!(id, "request cancelled by the caller");
                    Step::Abort(handle)
                }
                None => Step::Nothing,
            },
            (Frame::Ping(n), _) => Step::Pong(n),
            (Frame::Pong(n), _) => Step::PongReceived(n),
            (Frame::GoAway { code, reason }, _) => {
                tracing::debug!(%code, reason, "peer is going away");
                self.peer_going_away.store(true, Ordering::Release);
                Step::Nothing
            }
            (Frame::Event(ev), Origin::Control { .. }) => {
                if self.role == Role::Server && early() {
                    // One-way and possibly replayed: there is no way to refuse it to the
                    // sender, so it is dropped. Well-behaved clients never send one early.
                    tracing::warn!(event = ev.name, "event arrived as 0-RTT early data: dropped");
                    return Step::Nothing;
                }
                Step::Event(ev)
            }
            (Frame::Event(_), Origin::Side) => Step::Violation(
                CloseCode::PROTOCOL_VIOLATION,
                "event frame outside the control stream".into(),
            ),
            (Frame::TimeRequest { t1 }, Origin::Control { received_at }) => {
                Step::TimeReply { t1, t2: received_at }
            }
            (Frame::TimeResponse { t1, t2, t3 }, Origin::Control { received_at }) => {
                Step::ClockSample(Sample::from_timestamps(t1, t2, t3, received_at))
            }
            (Frame::Hello(_) | Frame::Welcome(_), _) => Step::Violation(
                CloseCode::PROTOCOL_VIOLATION,
                "hello/welcome frame after the handshake".into(),
            ),
            (other, _) => Step::Violation(
                CloseCode::PROTOCOL_VIOLATION,
                format!("unexpected {} frame", other.kind()),
            ),
        }
    }
}

/// Locks a mutex, recovering from poisoning (the tables stay valid even if a holder panicked).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
