//! Per-connection stream state and the two handshakes: opening (data half
//! out, answer back, error half in) and accepting (header in, decision,
//! error half out, answer).

use super::control::{Registry, RouteError, Routed, Verdict};
use super::handler::StreamHandler;
use super::incoming::{conn_lost, Incoming};
use super::xstream::ErrorHalfEnd;
use super::{Side, StreamError, XStream};
use crate::protocol::{Context, Peer, StreamHost};
use echostream_types::pairing::{self, code, DataHeader, Refusal};
use echostream_types::CloseCode;
use echostream_types::Metadata;
use futures::future::BoxFuture;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// A pairing slot: the opener waits for the error half of stream `id`.
enum Slot {
    Waiting(oneshot::Sender<quinn::RecvStream>),
    /// An error half that arrived with no open waiting for it (held until
    /// the pairing timeout, then stopped).
    Arrived(quinn::RecvStream),
}

/// Stream state of one connection, held by the protocol layer as its `StreamHost`.
pub(crate) struct ConnStreams {
    pub(crate) registry: Arc<Registry>,
    conn: quinn::Connection,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Slot>>,
    /// Streams we opened and that are live, or being opened.
    opened: AtomicUsize,
    /// Streams we accepted and that are live, or being accepted.
    pub(super) accepted: AtomicUsize,
    /// Error halves held in the pairing table without their data half.
    orphans: AtomicUsize,
    bidi_limit: AtomicU32,
    uni_limit: AtomicU32,
}

impl ConnStreams {
    pub(crate) fn new(conn: &quinn::Connection, registry: Arc<Registry>) -> ConnStreams {
        let (bidi, uni) = *registry.initial_limits.lock().unwrap_or_else(|p| p.into_inner());
        ConnStreams {
            registry,
            conn: conn.clone(),
            next_id: AtomicU64::new(1),
            slots: Mutex::new(HashMap::new()),
            opened: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            orphans: AtomicUsize::new(0),
            bidi_limit: AtomicU32::new(bidi),
            uni_limit: AtomicU32::new(uni),
        }
    }

    pub(crate) fn stream_opened(&self, _side: Side) {
        self.registry.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_released(&self, side: Side) {
        self.registry.open.fetch_sub(1, Ordering::Relaxed);
        match side {
            Side::Opener => self.opened.fetch_sub(1, Ordering::Relaxed),
            Side::Acceptor => self.accepted.fetch_sub(1, Ordering::Relaxed),
        };
    }

    /// Raises the limit of streams the peer may open once more than half of
    /// it is in use (doubling, up to the ceiling). QUIC cannot take credit
    /// back, so limits only grow; each connection pays for what it used.
    fn grow(&self, limit: &AtomicU32, in_use: usize, set: impl Fn(quinn::VarInt)) {
        let ceiling = self.registry.opts.max_concurrent_streams;
        let cur = limit.load(Ordering::Relaxed);
        let need = (in_use as u64).saturating_mul(2).saturating_add(16);
        if need <= u64::from(cur) || cur >= ceiling {
            return;
        }
        let want = u32::try_from(need.next_power_of_two())
            .unwrap_or(u32::MAX)
            .min(ceiling);
        if limit
            .compare_exchange(cur, want, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::debug!(from = cur, to = want, "raising a stream limit");
            set(want.into());
        }
    }

    fn grow_bidi(&self) {
        let in_use = self.accepted.load(Ordering::Relaxed);
        self.grow(&self.bidi_limit, in_use, |v| {
            self.conn.set_max_concurrent_bi_streams(v)
        });
    }

    fn grow_uni(&self) {
        let in_use = self.opened.load(Ordering::Relaxed);
        self.grow(&self.uni_limit, in_use, |v| {
            self.conn.set_max_concurrent_uni_streams(v)
        });
    }

    /// Streams this connection holds in both directions (see
    /// [`super::StreamOptions::max_streams_per_connection`]).
    fn in_use(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
            + self.accepted.load(Ordering::Relaxed)
            + self.orphans.load(Ordering::Relaxed)
    }

    /// The refusal reason when the connection is over its stream limit,
    /// counting the stream being added.
    fn over_limit(&self, whose: &str) -> Option<String> {
        let limit = self.registry.opts.max_streams_per_connection;
        let in_use = self.in_use();
        (in_use > limit).then(|| {
            format!(
                "the connection already holds {} streams ({whose} per-connection limit of {limit}, \
                 max_streams_per_connection)",
                in_use - 1
            )
        })
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Decrements a counter unless defused (an open or accept that did not
/// become a live XStream).
struct CountGuard<'a> {
    counter: &'a AtomicUsize,
    armed: bool,
}

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts a half waiting for its partner.
struct PendingGuard<'a>(&'a Registry);

impl<'a> PendingGuard<'a> {
    fn new(r: &'a Registry) -> Self {
        r.pending.fetch_add(1, Ordering::Relaxed);
        PendingGuard(r)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The streams the peer opens, handed over by the protocol layer.
impl StreamHost for ConnStreams {
    fn live_streams(&self) -> (usize, usize) {
        (
            self.opened.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
        )
    }

    fn accept_uni(&self, peer: Peer, kind: u8, recv: quinn::RecvStream) -> BoxFuture<'static, ()> {
        if kind == pairing::ERROR_HALF {
            // Boxed: the task is only as large as what it awaits, and thousands of error
            // halves can be arriving at once.
            return Box::pin(incoming_uni(peer, recv));
        }
        peer.close_with(
            CloseCode::PROTOCOL_VIOLATION,
            &format!("unidirectional stream of unknown type {kind:#04x}"),
        );
        Box::pin(std::future::ready(()))
    }

    fn accept_bi(
        &self,
        peer: Peer,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(incoming_bi(peer, send, recv))
    }
}

/// The stream table and stream opening, added to [`Peer`] by the stream layer.
impl Peer {
    /// This connection's stream state.
    pub(crate) fn stream_state(&self) -> &ConnStreams {
        let host: &dyn Any = self.stream_host();
        match host.downcast_ref() {
            Some(streams) => streams,
            // `Peer::start` is only ever given a `ConnStreams` (by the RPC layer).
            None => unreachable!("a connection's stream host is not the stream layer's"),
        }
    }

    /// Opens a stream named `name` toward this peer (see [`super::Streams::open_stream`]).
    pub async fn open_stream(&self, name: &str) -> Result<XStream, StreamError> {
        self.open_stream_with(name, Metadata::new()).await
    }

    /// Opens a stream with metadata the acceptor sees.
    pub async fn open_stream_with(&self, name: &str, metadata: Metadata) -> Result<XStream, StreamError> {
        let st = self.stream_state();
        let opts = st.registry.opts.clone();
        let id = st.next_id.fetch_add(1, Ordering::Relaxed);
        let header = DataHeader {
            id,
            name: name.to_owned(),
            metadata,
        }
        .encode()
        .map_err(|e| StreamError::Invalid {
            stream: name.to_owned(),
            detail: e.to_string(),
        })?;
        if let Some(reason) = self.close_reason() {
            return Err(StreamError::ConnectionLost {
                stream: name.to_owned(),
                reason,
            });
        }
        st.opened.fetch_add(1, Ordering::Relaxed);
        let mut count = CountGuard {
            counter: &st.opened,
            armed: true,
        };
        if let Some(reason) = st.over_limit("this side's") {
            return Err(StreamError::Busy {
                stream: name.to_owned(),
                reason,
            });
        }
        st.grow_uni();
        let _pending = PendingGuard::new(&st.registry);
        // Register before sending the header: the error half may race the answer.
        let (slot_tx, slot_rx) = oneshot::channel();
        st.lock_slots().insert(id, Slot::Waiting(slot_tx));
        let mut slot = SlotGuard { st, id, armed: true };

        let timeout = opts.open_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || StreamError::Timeout {
            stream: name.to_owned(),
            after: timeout,
        };
        // A stream opened as 0-RTT early data could be replayed (and is lost if the server
        // rejects the early data): wait for the handshake.
        match tokio::time::timeout_at(deadline, self.wait_established()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(StreamError::ConnectionLost {
                    stream: name.to_owned(),
                    reason: e.to_string(),
                })
            }
            Err(_) => return Err(timed_out()),
        }
        let (mut send, mut recv) =
            match tokio::time::timeout_at(deadline, self.quinn_connection().open_bi()).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => return Err(conn_lost(name, &e)),
                Err(_) => return Err(timed_out()),
            };
        let answered = tokio::time::timeout_at(deadline, async {
            match send.write_chunk(header).await {
                Ok(()) => {}
                Err(quinn::WriteError::ConnectionLost(e)) => return Err(conn_lost(name, &e)),
                // Refused before the header was read: the answer says why.
                Err(_) => {}
            }
            read_answer(&mut recv, name).await
        })
        .await;
        match answered {
            // Counted once the acceptor said yes.
            Ok(Ok(())) => crate::metrics::stream_opened("opener"),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                // Abort explicitly: a dropped send half would look like a clean end.
                let _ = send.reset(code::PEER_DROPPED.into());
                let _ = recv.stop(code::PEER_DROPPED.into());
                return Err(timed_out());
            }
        }
        let err_half = match tokio::time::timeout(opts.pairing_timeout, slot_rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) | Err(_) => {
                let _ = send.reset(code::PAIRING_TIMEOUT.into());
                let _ = recv.stop(code::PAIRING_TIMEOUT.into());
                if let Some(reason) = self.close_reason() {
                    return Err(StreamError::ConnectionLost {
                        stream: name.to_owned(),
                        reason,
                    });
                }
                tracing::debug!(stream = name, id, "error half did not arrive in time");
                return Err(StreamError::PairingTimeout {
                    stream: name.to_owned(),
                    missing: "error half",
                    after: opts.pairing_timeout,
                });
            }
        };
        slot.armed = false;
        count.armed = false;
        Ok(XStream::new(
            name.to_owned(),
            id,
            Side::Opener,
            self.clone(),
            Metadata::new(),
            opts,
            send,
            recv,
            ErrorHalfEnd::Recv(err_half),
        ))
    }
}

/// Removes a pairing slot when an open gives up.
struct SlotGuard<'a> {
    st: &'a ConnStreams,
    id: u64,
    armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(Slot::Arrived(mut r)) = self.st.lock_slots().remove(&self.id) {
                let _ = r.stop(code::PAIRING_TIMEOUT.into());
            }
        } else {
            self.st.lock_slots().remove(&self.id);
        }
    }
}

/// Reads the acceptor's answer: accepted, or refused with a code and reason.
async fn read_answer(recv: &mut quinn::RecvStream, name: &str) -> Result<(), StreamError> {
    let stream = || name.to_owned();
    let read_failed = |e: quinn::ReadExactError| match e {
        quinn::ReadExactError::FinishedEarly(_) => StreamError::Protocol {
            stream: stream(),
            detail: "the peer ended the stream before answering".into(),
        },
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e)) => conn_lost(name, &e),
        quinn::ReadExactError::ReadError(quinn::ReadError::Reset(c)) => {
            match u32::try_from(c.into_inner()).unwrap_or(u32::MAX) {
                code::NO_ACCEPTOR => StreamError::NoAcceptor { stream: stream() },
                code::REFUSED => StreamError::NoAcceptor { stream: stream() },
                code::PEER_DROPPED => StreamError::PeerDropped { stream: stream() },
                code::PAIRING_TIMEOUT => StreamError::PairingTimeout {
                    stream: stream(),
                    missing: "header (as seen by the peer)",
                    after: Duration::ZERO,
                },
                other => StreamError::PeerAborted {
                    stream: stream(),
                    what: "while opening",
                    code: u64::from(other),
                },
            }
        }
        quinn::ReadExactError::ReadError(e) => StreamError::Protocol {
            stream: stream(),
            detail: e.to_string(),
        },
    };
    let mut b = [0u8; 1];
    recv.read_exact(&mut b).await.map_err(read_failed)?;
    match b[0] {
        pairing::ANSWER_ACCEPTED => Ok(()),
        pairing::ANSWER_REFUSED => {
            let mut head = [0u8; 3];
            recv.read_exact(&mut head).await.map_err(read_failed)?;
            let (refusal, len) = pairing::decode_refusal_prefix(head).map_err(|e| StreamError::Protocol {
                stream: stream(),
                detail: e.to_string(),
            })?;
            let mut reason = vec![0u8; len];
            recv.read_exact(&mut reason).await.map_err(read_failed)?;
            let reason = String::from_utf8_lossy(&reason).into_owned();
            Err(match refusal {
                Some(Refusal::NoAcceptor) => StreamError::NoAcceptor { stream: stream() },
                Some(Refusal::Busy) => StreamError::Busy {
                    stream: stream(),
                    reason,
                },
                Some(Refusal::Rejected) => StreamError::Rejected {
                    stream: stream(),
                    reason,
                },
                Some(Refusal::BadHeader) | None => StreamError::Protocol {
                    stream: stream(),
                    detail: format!("the peer refused the stream: {reason}"),
                },
            })
        }
        other => Err(StreamError::Protocol {
            stream: stream(),
            detail: format!("unknown answer byte {other:#04x}"),
        }),
    }
}

/// A bidirectional stream the peer opened (other than the control stream):
/// an XStream data half, or refused.
async fn incoming_bi(peer: Peer, send: quinn::SendStream, recv: quinn::RecvStream) {
    // Admission and pairing run in boxes of their own, freed before the handler runs: a
    // future is as large as its largest state, and every stream's task would otherwise hold
    // their ~1.4 KiB while its handler runs (10,000 concurrent streams: ~14 MB).
    let Some((inc, handler)) = Box::pin(admit_bi(peer, send, recv)).await else {
        return;
    };
    let metadata = inc.header.metadata.clone();
    let (peer, stream) = match Box::pin(inc.complete()).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "stream lost before its handler started");
            return;
        }
    };
    let ctx = Context::new(stream.name().to_owned(), None, metadata, None, peer);
    super::handler::run_stream_handler(handler, ctx, stream).await;
}

/// Reads the header of an incoming data half and decides: `Some` when a stream handler takes
/// it; otherwise it was queued for an acceptor, or refused (the opener told why).
async fn admit_bi(
    peer: Peer,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Option<(Incoming, Arc<dyn StreamHandler>)> {
    let st = peer.stream_state();
    st.accepted.fetch_add(1, Ordering::Relaxed);
    if let Some(reason) = st.over_limit("the") {
        tracing::debug!(peer = %peer.remote_addr(), %reason, "incoming stream refused");
        // Refused before its header is read: the opener's answer says why.
        let inc = Incoming::new(&peer, send, recv);
        inc.refuse(Refusal::Busy, &reason).await;
        return None;
    }
    st.grow_bidi();
    let registry = st.registry.clone();
    let _pending = PendingGuard::new(&registry);
    let wait = registry.opts.pairing_timeout;
    let header = match tokio::time::timeout(wait, read_header(&mut recv)).await {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HeaderError::Timeout),
    };
    let mut inc = Incoming::new(&peer, send, recv);
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            let (c, msg) = match &e {
                HeaderError::NotAStream(_) => (code::REFUSED, e.to_string()),
                HeaderError::Timeout => (code::PAIRING_TIMEOUT, e.to_string()),
                HeaderError::Lost(_) => (code::PEER_DROPPED, e.to_string()),
                HeaderError::Bad(_) => {
                    tracing::warn!(peer = %peer.remote_addr(), error = %e, "bad stream header");
                    inc.refuse(Refusal::BadHeader, &e.to_string()).await;
                    return None;
                }
            };
            tracing::debug!(peer = %peer.remote_addr(), error = msg, "incoming bidirectional stream dropped");
            if let Some(s) = &mut inc.send {
                let _ = s.reset(c.into());
            }
            if let Some(r) = &mut inc.recv {
                let _ = r.stop(c.into());
            }
            inc.send = None;
            inc.recv = None;
            return None;
        }
    };
    let name = header.name.clone();
    inc.header = header;
    if !registry.has_acceptor(&name) {
        let reason = format!("no acceptor for `{name}`");
        inc.refuse(Refusal::NoAcceptor, &reason).await;
        return None;
    }
    // Rate limits and interceptors see a stream open like a request.
    if let Err(status) = peer
        .inbound()
        .stream_open(&peer, &name, &inc.header.metadata)
        .await
    {
        let reason = format!("stream `{name}` refused: {}", status.message());
        tracing::debug!(stream = %name, code = %status.code(), "stream open denied");
        inc.refuse(Refusal::Rejected, &reason).await;
        return None;
    }
    match registry.decide(&peer, &name, &inc.header.metadata).await {
        Verdict::Approve => {}
        Verdict::Busy(reason) => {
            inc.refuse(Refusal::Busy, &reason).await;
            return None;
        }
        Verdict::Reject(reason) => {
            inc.refuse(Refusal::Rejected, &reason).await;
            return None;
        }
    }
    match registry.route(inc) {
        // Counted once it passed every check and went to its acceptor.
        Routed::Queued => {
            crate::metrics::stream_opened("acceptor");
            None
        }
        Routed::Handler(inc, handler) => {
            crate::metrics::stream_opened("acceptor");
            Some((*inc, handler))
        }
        Routed::Refused(inc, RouteError::NoAcceptor) => {
            let reason = format!("no acceptor for `{name}`");
            inc.refuse(Refusal::NoAcceptor, &reason).await;
            None
        }
        Routed::Refused(inc, RouteError::Busy(reason)) => {
            inc.refuse(Refusal::Busy, &reason).await;
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error("bidirectional stream of unknown type {0:#04x}")]
    NotAStream(u8),
    #[error("stream header not received within the pairing timeout")]
    Timeout,
    #[error("stream ended inside its header: {0}")]
    Lost(String),
    #[error("bad stream header: {0}")]
    Bad(String),
}

async fn read_header(recv: &mut quinn::RecvStream) -> Result<DataHeader, HeaderError> {
    let lost = |e: quinn::ReadExactError| HeaderError::Lost(e.to_string());
    let mut head = [0u8; 3];
    recv.read_exact(&mut head[..1]).await.map_err(lost)?;
    if head[0] != pairing::DATA_HALF {
        return Err(HeaderError::NotAStream(head[0]));
    }
    recv.read_exact(&mut head[1..]).await.map_err(lost)?;
    // A u16 length is at most MAX_HEADER (64 KiB - 1): safe to allocate.
    let len = u16::from_be_bytes([head[1], head[2]]) as usize;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(lost)?;
    DataHeader::decode_body(body.into()).map_err(|e| HeaderError::Bad(e.to_string()))
}

/// A unidirectional stream whose type byte is `0x03`: an error half for a
/// stream this side opened. The type byte is already consumed.
async fn incoming_uni(peer: Peer, mut recv: quinn::RecvStream) {
    let st = peer.stream_state();
    let wait = st.registry.opts.pairing_timeout;
    let mut id = [0u8; 8];
    match tokio::time::timeout(wait, recv.read_exact(&mut id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "error half ended inside its header");
            return;
        }
        Err(_) => {
            let _ = recv.stop(code::PAIRING_TIMEOUT.into());
            return;
        }
    }
    let id = u64::from_be_bytes(id);
    // Decide under the lock, act after it (no lock across an await).
    let orphan = {
        let mut slots = st.lock_slots();
        match slots.remove(&id) {
            Some(Slot::Waiting(tx)) => {
                if let Err(mut r) = tx.send(recv) {
                    let _ = r.stop(code::PAIRING_TIMEOUT.into());
                }
                false
            }
            Some(Slot::Arrived(mut old)) => {
                let _ = old.stop(code::PROTOCOL.into());
                let mut recv = recv;
                let _ = recv.stop(code::PROTOCOL.into());
                false
            }
            None => {
                st.orphans.fetch_add(1, Ordering::Relaxed);
                if let Some(reason) = st.over_limit("the") {
                    st.orphans.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(id, %reason, "error half without a data half refused");
                    let mut recv = recv;
                    let _ = recv.stop(code::STREAM_LIMIT.into());
                    false
                } else {
                    // No open waits for it (yet): hold it for the pairing timeout.
                    slots.insert(id, Slot::Arrived(recv));
                    true
                }
            }
        }
    };
    if !orphan {
        return;
    }
    let _pending = PendingGuard::new(&st.registry);
    let _orphan = CountGuard {
        counter: &st.orphans,
        armed: true,
    };
    tokio::time::sleep(wait).await;
    let left = {
        let mut slots = st.lock_slots();
        match slots.remove(&id) {
            Some(Slot::Arrived(r)) => Some(r),
            Some(other) => {
                slots.insert(id, other);
                None
            }
            None => None,
        }
    };
    if let Some(mut r) = left {
        tracing::debug!(
            id,
            "error half without a data half dropped after the pairing timeout"
        );
        let _ = r.stop(code::PAIRING_TIMEOUT.into());
    }
}
