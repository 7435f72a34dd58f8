//! Protocol layer: the control stream over a quinn connection.
//!
//! One [`Peer`] per connection, shared by both directions. Its concurrency
//! model is "shared state + two tasks":
//! - a **writer task** owns the control stream's send half and drains a
//!   bounded channel of encoded frames, coalescing every frame that is ready
//!   into one write (batching under load, no extra latency when idle);
//! - a **reader task** owns the receive half, decodes frames with the sans-IO
//!   [`FrameDecoder`] and dispatches them: responses complete waiting callers
//!   through a map of oneshot senders, requests run their handler inline for
//!   one poll (answers are batched to the writer) and move to a task of their
//!   own only if they wait, events go to one in-order listener task through a
//!   bounded queue;
//! - a **side-stream task** accepts unidirectional streams that carry one
//!   large frame each, so a 16 MiB response does not hold up small calls on
//!   the control stream.
//!
//! Callers (`Peer::request`, handlers' responses) encode in their own task
//! and hand the bytes to the writer.

mod handshake;
mod outbox;
mod side;
pub mod timesync;

pub(crate) use handshake::{
    client_error, client_handshake, client_send_hello, server_read_hello, server_send_welcome,
    HandshakeOutcome, MIN_PEER_FRAME,
};

use crate::connection::tls::Fingerprint;
use crate::rpc::{Context, Payload, Router};
use crate::Error;
use bytes::{Bytes, BytesMut};
use echostream_types::frame::LENGTH_PREFIX;
use echostream_types::{
    CloseCode, Code, Codec, EventFrame, Frame, FrameDecoder, FrameError, Metadata, RequestFrame, RequestRef,
    ResponseFrame, Status,
};
use futures::FutureExt;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use timesync::{Clock, ClockFilter, Sample, SystemClock, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

/// Settings of the protocol layer for one side of a connection.
#[derive(Clone)]
pub(crate) struct ProtocolConfig {
    /// Largest frame this side accepts (announced in the hello).
    pub(crate) max_frame_size: u32,
    /// Requests and responses larger than this travel on their own stream.
    pub(crate) inline_threshold: usize,
    /// Requests from the peer allowed to run at once on one connection.
    pub(crate) max_concurrent_requests: usize,
    /// Events queued for listeners before the connection stops reading.
    pub(crate) event_queue: usize,
    /// Frames queued for the writer before callers wait.
    pub(crate) write_queue: usize,
    /// Time allowed for the hello/welcome exchange.
    pub(crate) hello_timeout: Duration,
    /// Deadline applied to calls that set none.
    pub(crate) default_timeout: Option<Duration>,
    /// Codec used when a call does not choose one.
    pub(crate) default_codec: Codec,
    /// Metadata sent in this side's hello.
    pub(crate) hello_metadata: Metadata,
    /// Interceptors, rate limits and the default handler timeout (see `rpc::security`).
    pub(crate) security: Arc<crate::rpc::security::SecurityPolicy>,
    /// The clock every timestamp is read from.
    pub(crate) clock: Arc<dyn Clock>,
    /// Time between clock-sync bursts once a connection's clock is in use.
    pub(crate) time_sync_interval: Duration,
    /// Client: methods declared idempotent, which may travel as 0-RTT early data (besides calls
    /// marked with [`CallOptions::idempotent`]).
    pub(crate) idempotent_methods: HashSet<String>,
    /// A side stream (one large frame) with no data for this long is dropped.
    pub(crate) assembly_timeout: Duration,
    /// Bytes of the peer's large frames assembled at once (at least one largest frame).
    pub(crate) assembly_budget: usize,
    /// The peer's side streams that may wait unread for the budget (set from the transport's
    /// windows by [`ProtocolConfig::fit_windows`]).
    pub(crate) assembly_waiting: usize,
}

impl std::fmt::Debug for ProtocolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolConfig")
            .field("max_frame_size", &self.max_frame_size)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .finish_non_exhaustive()
    }
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            max_frame_size: echostream_types::DEFAULT_MAX_FRAME_SIZE,
            inline_threshold: 64 * 1024,
            max_concurrent_requests: 1024,
            event_queue: 1024,
            write_queue: 1024,
            hello_timeout: Duration::from_secs(10),
            default_timeout: Some(Duration::from_secs(30)),
            default_codec: Codec::Bincode,
            hello_metadata: Metadata::new(),
            clock: SystemClock::shared(),
            time_sync_interval: Duration::from_secs(1),
            security: Arc::default(),
            idempotent_methods: HashSet::new(),
            assembly_timeout: side::DEFAULT_ASSEMBLY_TIMEOUT,
            assembly_budget: side::DEFAULT_ASSEMBLY_BUDGET,
            assembly_waiting: 16,
        }
    }
}

impl ProtocolConfig {
    /// Lets only as many of the peer's side streams wait unread as the transport's flow-control
    /// windows allow without starving the rest of the connection (see `protocol::side`).
    pub(crate) fn fit_windows(&mut self, t: &crate::connection::TransportOptions) {
        self.assembly_waiting = side::max_waiting(t.receive_window, t.stream_receive_window);
    }
}

/// Which end opened the connection; decides the request-id space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Opened the connection; its request ids are even.
    Client,
    /// Accepted the connection; its request ids are odd.
    Server,
}

impl Role {
    fn first_id(self) -> u64 {
        match self {
            Role::Client => 0,
            Role::Server => 1,
        }
    }
}

/// What happened to an event offered to one peer by a broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Queued for writing.
    Queued,
    /// The peer was already gone, or cannot accept a frame that large.
    Skipped,
    /// The peer's queue stayed full: it was disconnected as a slow consumer.
    Evicted,
}

/// A snapshot of one connection (see [`Peer::info`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// Process-unique connection id.
    pub connection_id: u64,
    /// The peer certificate's fingerprint, when it presented one.
    pub fingerprint: Option<Fingerprint>,
    /// Metadata from the peer's hello.
    pub hello_metadata: Metadata,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// UDP datagrams sent.
    pub packets_sent: u64,
    /// UDP datagrams received.
    pub packets_received: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Our calls waiting for an answer.
    pub calls_pending: usize,
    /// The peer's calls running here.
    pub requests_running: usize,
    /// Whether this connection sent 0-RTT early data, and what became of it (client side).
    pub zero_rtt: ZeroRtt,
}

/// Whether a connection sent 0-RTT early data and what the server did with it (see
/// [`Peer::zero_rtt`]). Reported by the client side; a server's connections report
/// [`ZeroRtt::NotAttempted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZeroRtt {
    /// No early data: no session ticket allowing it (first connection to the server, or the
    /// server does not enable 0-RTT), 0-RTT disabled on the client, or the server side.
    NotAttempted,
    /// The hello (and any idempotent calls) went out as early data; the TLS handshake has not
    /// completed yet.
    Pending,
    /// The server accepted the early data: the session was resumed and the early calls ran.
    Accepted,
    /// The server rejected the early data (unknown or expired ticket, 0-RTT disabled, server
    /// restarted). Everything sent early was sent again after the handshake; callers did not
    /// notice.
    Rejected,
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) no_timeout: bool,
    pub(crate) metadata: Metadata,
    pub(crate) codec: Option<Codec>,
    pub(crate) idempotent: bool,
}

impl CallOptions {
    /// Default options: the connection's default timeout and codec.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up after `timeout`; the deadline travels to the peer, whose
    /// handler is cancelled when it passes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self.no_timeout = false;
        self
    }

    /// Waits without a deadline (until the connection closes).
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self.no_timeout = true;
        self
    }

    /// Adds a metadata entry, visible to the handler as `ctx.metadata()`.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Encodes the argument (and asks for the result) with `codec`.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// Declares this call safe to repeat: on a connection that resumed a session it may travel
    /// as 0-RTT early data, before the TLS handshake completes. Early data can be replayed by
    /// an attacker, so mark only calls whose repetition does no harm (reads, idempotent
    /// writes); the server runs an early call only if its handler is declared idempotent too,
    /// and answers any other with [`Code::EARLY_DATA_REFUSED`] without running it, in which case
    /// the client sends the call again once the handshake has completed. Calls without this
    /// mark (and whose method is not in `ClientBuilder::idempotent`) wait for the handshake.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
}

/// An encoded frame on its way to the writer: head bytes plus an optional
/// uncopied payload.
enum Outgoing {
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

type ReplySender = oneshot::Sender<Result<(Codec, Bytes), Error>>;

/// How a connection starts when 0-RTT is in use.
pub(crate) enum EarlyStart {
    /// Client: the hello went out as 0-RTT early data; the welcome has not been read yet.
    Client {
        /// Resolves when the TLS handshake completes: whether the server took the early data.
        accepted: quinn::ZeroRttAccepted,
        /// The encoded hello, sent again if the early data is rejected.
        hello: Bytes,
        /// The connection is closed if the handshake has not completed by then.
        deadline: tokio::time::Instant,
    },
    /// Server: serving before the TLS handshake completed (0.5-RTT).
    Server {
        /// Resolves when the TLS handshake completes (or fails).
        accepted: futures::future::Shared<quinn::ZeroRttAccepted>,
    },
}

/// The writer task's part of a client's 0-RTT start.
struct ClientEarly {
    accepted: quinn::ZeroRttAccepted,
    hello: Bytes,
    deadline: tokio::time::Instant,
    /// Hands the reader the receive half of the new control stream after a rejection.
    new_recv: oneshot::Sender<quinn::RecvStream>,
}

/// Why a connection ended.
struct Closed {
    code: Option<CloseCode>,
    reason: String,
    /// We closed it because the peer broke the protocol.
    peer_violation: bool,
}

/// State shared by the handles and tasks of one connection.
struct Shared {
    conn: quinn::Connection,
    role: Role,
    id: u64,
    remote: SocketAddr,
    /// Read from the connection on first use: a connection started on 0-RTT has no peer
    /// certificate until its handshake completes (then, resumed, the one from the ticket).
    fingerprint: OnceLock<Fingerprint>,
    /// The peer's hello metadata; on a client that sent its hello as early data, set when the
    /// welcome arrives.
    peer_hello: OnceLock<Metadata>,
    /// The largest frame the peer accepts; before an early client's welcome arrives, the value
    /// remembered from the server's previous welcome.
    peer_max_frame: AtomicU32,
    /// False while the TLS handshake has not completed (0-RTT / 0.5-RTT): what a server
    /// receives then may be a replay, and a client holds calls not marked idempotent.
    established: watch::Sender<bool>,
    /// Server: resolves when the TLS handshake completes, for the synchronous check in
    /// [`Peer::is_early`] (quinn signals completion before it delivers the 1-RTT data).
    tls_done: Option<futures::future::Shared<quinn::ZeroRttAccepted>>,
    /// What became of this connection's early data (client side).
    zero_rtt: Mutex<ZeroRtt>,
    config: Arc<ProtocolConfig>,
    router: Arc<Router>,
    /// The way to the control stream: the writer's queue, or a direct write while it is idle.
    out: Arc<outbox::Outbox>,
    /// What the call priority sees (the outbox marks control frames; stream writes mark
    /// bulk data); `None` when it is off.
    calls: Option<Arc<crate::connection::priority::CallActivity>>,
    next_id: AtomicU64,
    /// Our calls waiting for a response, by request id.
    pending: Mutex<HashMap<u64, ReplySender>>,
    /// The peer's calls running here, by request id (with the method), so a
    /// cancel can abort them.
    inflight: Mutex<HashMap<u64, (tokio::task::AbortHandle, String)>>,
    /// The server this connection belongs to (server side only).
    server: Option<crate::rpc::ServerHandle>,
    /// Set once the peer sent a go-away: no new calls toward it.
    peer_going_away: AtomicBool,
    /// Set once we sent a go-away: new calls from the peer are refused.
    going_away: AtomicBool,
    /// Why the connection ended, once it has.
    closed: OnceLock<Closed>,
    events: mpsc::Sender<(EventFrame, Peer)>,
    /// Clock synchronisation with the peer, started on first use.
    clock_sync: OnceLock<Arc<ClockSync>>,
    /// Identity, rate-limit buckets and the reply backlog bound (see `rpc::security`).
    guard: crate::rpc::security::ConnGuard,
    /// Application streams of this connection (pairing table, limits).
    streams: crate::stream::ConnStreams,
    /// Large frames on side streams: send slots, the assembly budget.
    side: side::SideStreams,
}

/// A handle to one connection, usable from either side: send requests and
/// events to the peer at the other end. Cheap to clone; calls fail with
/// [`Error::ConnectionClosed`] once the peer has gone.
#[derive(Clone)]
pub struct Peer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("remote", &self.shared.remote)
            .field("connection_id", &self.shared.id)
            .field("role", &self.shared.role)
            .finish()
    }
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

impl Peer {
    /// Starts the tasks of a connection whose handshake has completed.
    pub(crate) fn start(
        conn: quinn::Connection,
        role: Role,
        hs: HandshakeOutcome,
        config: Arc<ProtocolConfig>,
        router: Arc<Router>,
        server: Option<crate::rpc::ServerHandle>,
        early: Option<EarlyStart>,
    ) -> Peer {
        let calls = crate::connection::priority::activity_of(&conn);
        let (out_tx, out_rx, lent) = outbox::Outbox::new(config.write_queue, calls.clone());
        let (mut client_early, mut tls_done, mut welcome_pending) = (None, None, false);
        let zero_rtt = match early {
            None => ZeroRtt::NotAttempted,
            Some(EarlyStart::Client {
                accepted,
                hello,
                deadline,
            }) => {
                welcome_pending = true;
                client_early = Some((accepted, hello, deadline));
                ZeroRtt::Pending
            }
            Some(EarlyStart::Server { accepted }) => {
                tls_done = Some(accepted);
                ZeroRtt::NotAttempted
            }
        };
        let established = watch::channel(client_early.is_none() && tls_done.is_none()).0;
        let peer_hello = OnceLock::new();
        if !welcome_pending {
            let _ = peer_hello.set(hs.peer_hello.metadata);
        }
        let (ev_tx, ev_rx) = mpsc::channel(config.event_queue.max(1));
        let fingerprint = OnceLock::new();
        if let Some(f) = peer_fingerprint(&conn) {
            let _ = fingerprint.set(f);
        }
        let guard = crate::rpc::security::ConnGuard::new(&conn, &config, hs.auth);
        let shared = Arc::new(Shared {
            side: side::SideStreams::new(&config),
            guard,
            streams: crate::stream::ConnStreams::new(&conn, router.stream_registry()),
            remote: conn.remote_address(),
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            conn,
            role,
            fingerprint,
            peer_hello,
            peer_max_frame: AtomicU32::new(hs.peer_hello.max_frame_size),
            established,
            tls_done: tls_done.clone(),
            zero_rtt: Mutex::new(zero_rtt),
            config,
            router,
            server,
            out: Arc::new(out_tx),
            calls,
            next_id: AtomicU64::new(role.first_id()),
            pending: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            peer_going_away: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            closed: OnceLock::new(),
            events: ev_tx,
            clock_sync: OnceLock::new(),
        });
        let peer = Peer { shared };
        let span =
            tracing::debug_span!("conn", id = peer.shared.id, peer = %peer.shared.remote, role = ?role);
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
            writer_task(hs.send, out_rx, lent, peer.clone(), writer_early),
            span.clone(),
        ));
        tokio::spawn(in_span(
            reader_task(peer.clone(), hs.recv, hs.leftover, recv_swap, welcome_pending),
            span.clone(),
        ));
        tokio::spawn(in_span(side_stream_task(peer.clone()), span.clone()));
        tokio::spawn(in_span(event_task(ev_rx), span));
        peer
    }

    pub(crate) fn guard(&self) -> &crate::rpc::security::ConnGuard {
        &self.shared.guard
    }

    pub(crate) fn stream_state(&self) -> &crate::stream::ConnStreams {
        &self.shared.streams
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.shared.remote
    }

    /// A process-unique id of this connection.
    pub fn connection_id(&self) -> u64 {
        self.shared.id
    }

    /// SHA-256 fingerprint of the peer's certificate, when it presented one.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        if let Some(f) = self.shared.fingerprint.get() {
            return Some(*f);
        }
        let f = peer_fingerprint(&self.shared.conn)?;
        Some(*self.shared.fingerprint.get_or_init(|| f))
    }

    /// Metadata the peer sent in its hello. Empty on a client whose hello went out as 0-RTT
    /// early data until the server's welcome arrives.
    pub fn hello_metadata(&self) -> &Metadata {
        static EMPTY: OnceLock<Metadata> = OnceLock::new();
        match self.shared.peer_hello.get() {
            Some(m) => m,
            None => EMPTY.get_or_init(Metadata::new),
        }
    }

    /// The largest frame the peer accepts.
    pub fn peer_max_frame_size(&self) -> u32 {
        self.shared.peer_max_frame.load(Ordering::Acquire)
    }

    /// True while this connection's TLS handshake has not completed, with 0-RTT in use.
    ///
    /// On a server, whatever arrives then is 0-RTT early data, which an attacker can replay:
    /// only idempotent handlers run; other calls are refused with
    /// [`Code::EARLY_DATA_REFUSED`]. On a client, calls not marked idempotent are held until it
    /// turns false. Always false on connections that do not use 0-RTT.
    pub fn is_early(&self) -> bool {
        if *self.shared.established.borrow() {
            return false;
        }
        if let Some(done) = &self.shared.tls_done {
            // quinn completes this future before it hands out data that arrived after the
            // handshake, so a frame read now is early exactly when it is still pending. A future
            // resolved by a failed handshake leaves the connection early (and closed).
            if done.clone().now_or_never().is_some() && self.shared.conn.close_reason().is_none() {
                self.shared.established.send_replace(true);
                return false;
            }
        }
        true
    }

    /// Whether this connection sent 0-RTT early data and what became of it (client side).
    pub fn zero_rtt(&self) -> ZeroRtt {
        *lock(&self.shared.zero_rtt)
    }

    /// Waits until the TLS handshake has completed (at once when 0-RTT is not in use); fails if
    /// the connection ends first.
    pub(crate) async fn wait_established(&self) -> Result<(), Error> {
        if !self.is_early() {
            return Ok(());
        }
        let mut rx = self.shared.established.subscribe();
        tokio::select! {
            r = rx.wait_for(|e| *e) => r.map(|_| ()).map_err(|_| self.closed_error()),
            e = self.shared.conn.closed() => {
                self.mark_closed_from(&e);
                Err(self.closed_error())
            }
        }
    }

    /// A snapshot of the connection: identity, round-trip time, traffic
    /// counters (from quinn's statistics) and calls in flight.
    pub fn info(&self) -> ConnectionInfo {
        let stats = self.shared.conn.stats();
        ConnectionInfo {
            remote: self.shared.remote,
            connection_id: self.shared.id,
            fingerprint: self.fingerprint(),
            hello_metadata: self.hello_metadata().clone(),
            rtt: stats.path.rtt,
            bytes_sent: stats.udp_tx.bytes,
            bytes_received: stats.udp_rx.bytes,
            packets_sent: stats.udp_tx.datagrams,
            packets_received: stats.udp_rx.datagrams,
            lost_packets: stats.path.lost_packets,
            calls_pending: lock(&self.shared.pending).len(),
            requests_running: lock(&self.shared.inflight).len(),
            zero_rtt: self.zero_rtt(),
        }
    }

    /// This side's clock (the one configured on the server or client builder).
    pub fn local_clock(&self) -> Arc<dyn timesync::Clock> {
        self.shared.config.clock.clone()
    }

    /// The peer's clock, as estimated by the clock-sync exchange on this
    /// connection. The first call starts the exchange (a burst of probes
    /// every `time_sync_interval`, default 1 s) for the connection's lifetime.
    pub fn clock(&self) -> SyncedClock {
        let sync = self.shared.clock_sync.get_or_init(|| {
            let sync = Arc::new(ClockSync {
                local: self.shared.config.clock.clone(),
                filter: Mutex::new(ClockFilter::new(512)),
                updates: tokio::sync::watch::channel(0).0,
                kick: tokio::sync::Notify::new(),
            });
            tokio::spawn(clock_sync_task(Arc::downgrade(&self.shared), sync.clone()));
            sync
        });
        SyncedClock { sync: sync.clone() }
    }

    /// The server this connection belongs to, when this is the server side.
    pub fn server(&self) -> Option<&crate::rpc::ServerHandle> {
        self.shared.server.as_ref()
    }

    /// Current round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.shared.conn.rtt()
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.closed.get().map(|c| c.reason.clone())
    }

    /// Waits until the connection ends and returns why (the same error
    /// later calls would fail with).
    pub async fn closed(&self) -> Error {
        let e = self.shared.conn.closed().await;
        self.mark_closed_from(&e);
        self.closed_error()
    }

    /// True once this side recorded the connection's end (its reader or writer saw it, or it
    /// was closed here). Unlike [`Peer::is_closed`] it does not take quinn's connection lock,
    /// which matters on the path of every call.
    pub(crate) fn end_recorded(&self) -> bool {
        self.shared.closed.get().is_some()
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.get().is_some() || self.shared.conn.close_reason().is_some()
    }

    /// Number of the peer's requests running here now.
    pub fn inflight_requests(&self) -> usize {
        lock(&self.shared.inflight).len()
    }

    /// Runs a stream write, telling the call priority at every poll that stream data (bulk,
    /// as opposed to control frames) is moving on this connection: only while both run is
    /// the congestion window limited.
    pub(crate) async fn bulk_write<F: std::future::Future>(&self, write: F) -> F::Output {
        crate::connection::priority::marking_bulk(self.shared.calls.as_deref(), write).await
    }

    /// Whether a stream read should let other tasks run first because calls are running
    /// on this connection (see `CallActivity::read_yields`).
    pub(crate) fn read_yields(&self) -> bool {
        self.shared.calls.as_ref().is_some_and(|c| c.read_yields())
    }

    /// The underlying quinn connection (statistics, advanced use).
    pub fn quinn_connection(&self) -> &quinn::Connection {
        &self.shared.conn
    }

    /// Calls `method` with `args` and waits for the typed result, with the
    /// connection's default timeout.
    pub async fn request<A, R>(&self, method: &str, args: A) -> Result<R, Error>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.request_with(method, args, CallOptions::default()).await
    }

    /// Calls `method` with per-call options (timeout, metadata, codec).
    ///
    /// Dropping the returned future cancels the call: a cancel frame is sent
    /// and the peer aborts its handler.
    pub async fn request_with<A, R>(&self, method: &str, args: A, opts: CallOptions) -> Result<R, Error>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let codec = opts.codec.unwrap_or(self.shared.config.default_codec);
        let payload = codec.encode(&args).map_err(|e| Error::BadPayload {
            method: method.to_owned(),
            detail: format!("argument did not encode ({}): {e}", codec.name()),
        })?;
        let (codec, bytes) = self
            .request_raw(
                method,
                Payload {
                    codec,
                    bytes: payload,
                },
                opts,
            )
            .await?;
        codec.decode::<R>(&bytes).map_err(|e| Error::BadPayload {
            method: method.to_owned(),
            detail: format!(
                "result did not decode as {} ({}): {e}",
                std::any::type_name::<R>(),
                codec.name()
            ),
        })
    }

    /// Calls `method` with an already encoded argument and returns the
    /// encoded result (for proxies and tools that do not know the types).
    pub async fn request_raw(
        &self,
        method: &str,
        args: Payload,
        opts: CallOptions,
    ) -> Result<(Codec, Bytes), Error> {
        let early = self.shared.role == Role::Client && self.is_early();
        if !early {
            return self.request_once(method, args, opts).await;
        }
        let started = Instant::now();
        match self.request_once(method, args.clone(), opts.clone()).await {
            // Marked idempotent here but not on the server: it did not run there, so it is
            // safe to send again once the handshake has completed (and nothing is early).
            Err(Error::Remote { status, .. }) if status.code() == Code::EARLY_DATA_REFUSED => {
                tracing::debug!(
                    method,
                    "early call refused by the server; sending it after the handshake"
                );
                self.wait_established().await?;
                let mut opts = opts;
                if let Some(t) = opts.timeout.or(self.shared.config.default_timeout) {
                    if !opts.no_timeout {
                        opts.timeout =
                            Some(t.saturating_sub(started.elapsed()).max(Duration::from_millis(1)));
                    }
                }
                self.request_once(method, args, opts).await
            }
            other => other,
        }
    }

    /// One attempt of [`Peer::request_raw`]. The timeout covers the whole call from here:
    /// waiting for the handshake, sending the request (which may wait for flow-control
    /// credit) and waiting for the answer.
    async fn request_once(
        &self,
        method: &str,
        args: Payload,
        opts: CallOptions,
    ) -> Result<(Codec, Bytes), Error> {
        let shared = &self.shared;
        self.check_open()?;
        if shared.peer_going_away.load(Ordering::Acquire) {
            return Err(Error::ConnectionClosed {
                code: Some(CloseCode::GOING_AWAY),
                reason: format!(
                    "the peer at {} is shutting down and takes no new requests",
                    shared.remote
                ),
            });
        }
        let timeout = if opts.no_timeout {
            None
        } else {
            opts.timeout.or(shared.config.default_timeout)
        };
        let started = Instant::now();
        let call = self.call(method, args, &opts, timeout, started);
        match timeout {
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!(method, ?t, "request timed out");
                    Err(Error::Timeout {
                        method: method.to_owned(),
                        after: t,
                    })
                }
            },
            None => call.await,
        }
    }

    /// The body of [`Peer::request_once`], under its timeout. Dropped at the timeout or by the
    /// caller, it sends a cancel and resets a side stream still being written.
    async fn call(
        &self,
        method: &str,
        args: Payload,
        opts: &CallOptions,
        timeout: Option<Duration>,
        started: Instant,
    ) -> Result<(Codec, Bytes), Error> {
        let shared = &self.shared;
        let may_go_early = opts.idempotent || shared.config.idempotent_methods.contains(method);
        if shared.role == Role::Client && !may_go_early && self.is_early() {
            // Not safe to replay: hold it until the handshake completes.
            tracing::debug!(method, "call held until the TLS handshake completes");
            self.wait_established().await?;
        }
        let id = shared.next_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&shared.pending).insert(id, tx);
        // The end is recorded before the waiting calls are failed: a call that missed that
        // sweep sees the end here.
        if shared.closed.get().is_some() {
            lock(&shared.pending).remove(&id);
            return Err(self.closed_error());
        }
        // From here on, leaving early (error, timeout, or the caller dropping
        // this future) must remove the entry and tell the peer.
        let mut guard = CancelGuard {
            peer: self,
            id,
            armed: true,
        };
        // What is left of the timeout travels with the request (relative, so clock skew does
        // not matter).
        let deadline = timeout.map(|t| t.saturating_sub(started.elapsed()).max(Duration::from_millis(1)));
        let request = RequestRef {
            id,
            method,
            codec: args.codec,
            deadline,
            metadata: &opts.metadata,
            payload: &args.bytes,
        };
        tracing::debug!(method, id, "request");
        let encoded = encode_with(|buf| request.encode_split_ref(buf));
        let sent = self
            .send_encoded(encoded, || format!("request `{method}`"), true)
            .await;
        if let Err(e) = sent {
            guard.forget();
            return Err(match e {
                // The peer stopped the request's side stream (busy, stalled).
                Error::Status(status) => Error::from_remote(method, status),
                e => e,
            });
        }
        let reply = rx.await;
        guard.armed = false;
        match reply {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(Error::Status(status))) => Err(match status.code() {
                Code::DEADLINE_EXCEEDED => Error::Timeout {
                    method: method.to_owned(),
                    after: timeout.unwrap_or_default(),
                },
                _ => Error::from_remote(method, status),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Whether a call of ours with this id still waits for its response.
    fn awaits_response(&self, id: u64) -> bool {
        lock(&self.shared.pending).contains_key(&id)
    }

    /// Sends a one-way event. Returns once the event is handed to the
    /// connection's writer (not when the peer has processed it); waits while
    /// the write queue is full.
    pub async fn emit<T: Serialize>(&self, name: &str, value: T) -> Result<(), Error> {
        self.emit_with(name, value, CallOptions::default()).await
    }

    /// [`Peer::emit`] with metadata or a codec.
    pub async fn emit_with<T: Serialize>(
        &self,
        name: &str,
        value: T,
        opts: CallOptions,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.shared.role == Role::Client {
            // An event cannot be told apart from its replay: never send one early.
            self.wait_established().await?;
        }
        let codec = opts.codec.unwrap_or(self.shared.config.default_codec);
        let payload = codec.encode(&value).map_err(|e| Error::BadPayload {
            method: name.to_owned(),
            detail: format!("event did not encode ({}): {e}", codec.name()),
        })?;
        let frame = Frame::Event(EventFrame {
            name: name.to_owned(),
            codec,
            metadata: opts.metadata,
            payload,
        });
        // Events stay on the control stream so that they arrive in order.
        self.send_frame(&frame, || format!("event `{name}`"), false).await
    }

    /// Queues an already encoded event, waiting at most `wait` for room in the
    /// write queue. A peer that cannot take it in time is disconnected with
    /// `SLOW_CONSUMER` (see `ServerHandle::broadcast`).
    pub(crate) async fn send_prepared_event(&self, head: Bytes, tail: Bytes, wait: Duration) -> Delivery {
        if self.end_recorded() {
            return Delivery::Skipped;
        }
        let size = (head.len() - LENGTH_PREFIX + tail.len()) as u64;
        let limit = self.peer_max_frame_size();
        if size > u64::from(limit) {
            tracing::warn!(peer = %self.shared.remote, size, limit,
                "broadcast event larger than the peer's frame limit; not sent to it");
            return Delivery::Skipped;
        }
        match tokio::time::timeout(wait, self.shared.out.send(Outgoing::Frame { head, tail })).await {
            Ok(Ok(())) => Delivery::Queued,
            Ok(Err(e)) => {
                self.note_write_failure(e);
                Delivery::Skipped
            }
            Err(_) => {
                let reason =
                    format!("it did not keep up with events: its write queue stayed full for {wait:?}");
                tracing::warn!(peer = %self.shared.remote, reason, "disconnecting slow peer");
                self.shared
                    .conn
                    .close(CloseCode::SLOW_CONSUMER.0.into(), reason.as_bytes());
                self.mark_closed(
                    Some(CloseCode::SLOW_CONSUMER),
                    format!("closed locally: {reason}"),
                );
                Delivery::Evicted
            }
        }
    }

    /// Closes the connection now with a reason; calls in flight fail.
    pub fn close(&self, reason: &str) {
        self.mark_closed(Some(CloseCode::NORMAL), format!("closed locally: {reason}"));
        self.shared
            .conn
            .close(CloseCode::NORMAL.0.into(), reason.as_bytes());
    }

    /// Delivers every queued frame (waiting up to `wait` for the peer to read
    /// them), then closes the connection with `code`.
    pub(crate) async fn finish_and_close(&self, code: CloseCode, reason: &str, wait: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.shared.out.send(Outgoing::Finish(tx, wait)).await.is_ok() {
            let _ = tokio::time::timeout(wait, rx).await;
        }
        // Record the reason first: the tasks that notice the close would
        // otherwise record a vaguer "closed locally".
        self.mark_closed(Some(code), format!("closed locally: {reason}"));
        self.shared.conn.close(code.0.into(), reason.as_bytes());
    }

    /// Tells the peer we take no new requests (go-away); calls already
    /// running finish.
    pub(crate) async fn go_away(&self, reason: &str) {
        self.shared.going_away.store(true, Ordering::Release);
        let frame = Frame::GoAway {
            code: CloseCode::GOING_AWAY,
            reason: reason.to_owned(),
        };
        let _ = self.send_frame(&frame, || "go-away".into(), false).await;
    }

    /// Closes with a code after a protocol failure, logging it.
    pub(crate) fn close_with(&self, code: CloseCode, reason: &str) {
        tracing::warn!(peer = %self.shared.remote, code = %code, reason, "closing connection");
        let peer_violation = matches!(code, CloseCode::PROTOCOL_VIOLATION | CloseCode::FRAME_TOO_LARGE);
        self.record_close(Closed {
            code: Some(code),
            reason: format!("{} broke the protocol ({code}): {reason}", self.shared.remote),
            peer_violation,
        });
        self.shared.conn.close(code.0.into(), reason.as_bytes());
    }

    /// Fails once the connection's end was recorded. Only the recorded end is read: asking
    /// quinn (`close_reason`) takes the connection's lock, which its driver holds while it
    /// processes packets, on every call. An end not yet recorded is noticed by the reader or
    /// the writer, which then fail every waiting call.
    fn check_open(&self) -> Result<(), Error> {
        if self.end_recorded() {
            return Err(self.closed_error());
        }
        Ok(())
    }

    fn closed_error(&self) -> Error {
        match self.shared.closed.get() {
            Some(c) if c.peer_violation => Error::Protocol(c.reason.clone()),
            Some(c) => Error::ConnectionClosed {
                code: c.code,
                reason: c.reason.clone(),
            },
            None => match self.shared.conn.close_reason() {
                Some(e) => {
                    let (code, reason) = describe_close(&e);
                    Error::ConnectionClosed { code, reason }
                }
                None => Error::ConnectionClosed {
                    code: None,
                    reason: "connection closed".into(),
                },
            },
        }
    }

    fn mark_closed_from(&self, e: &quinn::ConnectionError) {
        let (code, reason) = describe_close(e);
        self.mark_closed(code, reason);
    }

    fn mark_closed(&self, code: Option<CloseCode>, reason: String) {
        self.record_close(Closed {
            code,
            reason,
            peer_violation: false,
        });
    }

    /// Records why the connection ended, fails every waiting call and aborts
    /// the peer's handlers (their answers could not be delivered).
    fn record_close(&self, closed: Closed) {
        if self.shared.closed.set(closed).is_err() {
            return;
        }
        let pending: Vec<_> = lock(&self.shared.pending).drain().collect();
        for (_, tx) in pending {
            let _ = tx.send(Err(self.closed_error()));
        }
        let inflight: Vec<_> = lock(&self.shared.inflight).drain().collect();
        for (_, (h, _)) in inflight {
            h.abort();
        }
        tracing::debug!(reason = self.close_reason(), "connection ended");
    }

    /// Aborts every call of the peer still running here and answers each with
    /// `CANCELLED` (a shutdown whose grace period ran out).
    pub(crate) async fn cancel_inflight(&self, why: &str) {
        let inflight: Vec<_> = lock(&self.shared.inflight).drain().collect();
        for (id, (h, method)) in inflight {
            h.abort();
            tracing::warn!(method, id, why, "call cancelled");
            let msg = format!("`{method}` was cancelled: {why}");
            self.send_response(id, Err(Status::new(Code::CANCELLED, msg)))
                .await;
        }
    }

    /// Encodes a frame and queues it, or sends it on its own stream when it
    /// is large and may travel out of order.
    async fn send_frame(
        &self,
        frame: &Frame,
        what: impl Fn() -> String,
        may_use_side_stream: bool,
    ) -> Result<(), Error> {
        self.send_encoded(encode_frame(frame), what, may_use_side_stream)
            .await
    }

    /// [`Peer::send_frame`] for a frame already encoded as (head, payload).
    async fn send_encoded(
        &self,
        encoded: Result<(Bytes, Bytes), FrameError>,
        what: impl Fn() -> String,
        may_use_side_stream: bool,
    ) -> Result<(), Error> {
        let (head, tail) = encoded.map_err(|e| match e {
            FrameError::FieldTooLong { .. } => Error::Config(format!("{}: {e}", what())),
            other => Error::Protocol(other.to_string()),
        })?;
        let size = (head.len() - LENGTH_PREFIX + tail.len()) as u64;
        let limit = self.peer_max_frame_size();
        if size > u64::from(limit) {
            return Err(Error::FrameTooLarge {
                what: what(),
                size,
                limit,
            });
        }
        if may_use_side_stream && size as usize > self.shared.config.inline_threshold {
            // A side stream opened as early data would be lost if the server rejects it.
            self.wait_established().await?;
            return self.send_on_side_stream(head, tail, what).await;
        }
        match self.shared.out.send(Outgoing::Frame { head, tail }).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.note_write_failure(e);
                Err(self.closed_error())
            }
        }
    }

    /// Records the connection's end when a direct write found it (the writer would have).
    fn note_write_failure(&self, e: outbox::Closed) {
        match e {
            outbox::Closed::Gone => {}
            outbox::Closed::Write(quinn::WriteError::ConnectionLost(e)) => self.mark_closed_from(&e),
            outbox::Closed::Write(e) => {
                tracing::debug!(error = %e, "control stream write failed");
                self.mark_closed(None, format!("control stream write failed: {e}"));
            }
        }
    }

    /// Handles one decoded frame. Returns an answer the caller sends (a request answered at
    /// once), or an error to close the connection.
    fn dispatch(&self, frame: Frame) -> Result<Option<Answer>, (CloseCode, String)> {
        match frame {
            Frame::Request(req) => self.on_request(req),
            Frame::Response(resp) => {
                self.on_response(resp);
                Ok(None)
            }
            Frame::Event(_) => Err((
                CloseCode::PROTOCOL_VIOLATION,
                "event frame outside the control stream".into(),
            )),
            Frame::Cancel { id } => {
                if let Some((h, _)) = lock(&self.shared.inflight).remove(&id) {
                    tracing::debug!(id, "request cancelled by the caller");
                    h.abort();
                }
                Ok(None)
            }
            Frame::Ping(n) => {
                let mut head = BytesMut::new();
                if Frame::Pong(n).encode(&mut head).is_ok() {
                    // A pong is only a probe answer: drop it rather than wait.
                    let _ = self.shared.out.try_send(Outgoing::Frame {
                        head: head.freeze(),
                        tail: Bytes::new(),
                    });
                }
                Ok(None)
            }
            Frame::Pong(_) => Ok(None),
            Frame::GoAway { code, reason } => {
                tracing::debug!(%code, reason, "peer is going away");
                self.shared.peer_going_away.store(true, Ordering::Release);
                Ok(None)
            }
            Frame::Hello(_) | Frame::Welcome(_) => Err((
                CloseCode::PROTOCOL_VIOLATION,
                "hello/welcome frame after the handshake".into(),
            )),
            other => Err((
                CloseCode::PROTOCOL_VIOLATION,
                format!("unexpected {} frame", other.kind()),
            )),
        }
    }

    fn on_response(&self, resp: ResponseFrame) {
        let tx = lock(&self.shared.pending).remove(&resp.id);
        match tx {
            Some(tx) => {
                let _ = tx.send(resp.result.map_err(Error::Status));
            }
            // Normal after a timeout or cancel: the caller stopped waiting.
            None => tracing::debug!(id = resp.id, "response for a request nobody waits for"),
        }
    }

    /// Checks a request and runs its handler. The handler is polled once right here: most
    /// answer without waiting, and their answer goes back to the reader to be batched with the
    /// others from the same read (no task spawned, no hop to another thread). A handler that
    /// waits continues in a task of its own, registered for cancellation.
    fn on_request(&self, req: RequestFrame) -> Result<Option<Answer>, (CloseCode, String)> {
        let shared = &self.shared;
        let peer_first = match shared.role {
            Role::Client => Role::Server.first_id(),
            Role::Server => Role::Client.first_id(),
        };
        if req.id % 2 != peer_first {
            return Err((
                CloseCode::PROTOCOL_VIOLATION,
                format!("request id {} is not in the peer's id space", req.id),
            ));
        }
        let id = req.id;
        let method = req.method;
        let refuse = |status: Status| {
            Ok(Some(Answer {
                id,
                result: Err(status),
            }))
        };
        if shared.going_away.load(Ordering::Acquire) {
            return refuse(Status::new(Code::UNAVAILABLE, "server is shutting down"));
        }
        if let Err(status) = shared.guard.check_rate(&method) {
            return refuse(status);
        }
        let Some(handler) = shared.router.handler(&method) else {
            tracing::debug!(method, id, "unknown method");
            let msg = format!("no handler for method `{method}`");
            return refuse(Status::new(Code::UNKNOWN_METHOD, msg));
        };
        if shared.role == Role::Server && !handler.idempotent() && self.is_early() {
            tracing::warn!(
                method,
                id,
                "non-idempotent call arrived as 0-RTT early data: refused"
            );
            let msg = format!(
                "`{method}` arrived as 0-RTT early data, which can be replayed, and its handler is not \
                 declared idempotent: refused without running; send it after the handshake completes"
            );
            return refuse(Status::new(Code::EARLY_DATA_REFUSED, msg));
        }
        {
            let inflight = lock(&shared.inflight);
            if inflight.len() >= shared.config.max_concurrent_requests {
                drop(inflight);
                let msg = format!(
                    "too many concurrent requests on this connection (limit {}); `{method}` refused",
                    shared.config.max_concurrent_requests
                );
                return refuse(Status::new(Code::RESOURCE_EXHAUSTED, msg));
            }
            if inflight.contains_key(&id) {
                return Err((
                    CloseCode::PROTOCOL_VIOLATION,
                    format!("request id {id} reused while in flight"),
                ));
            }
        }
        let reservation = match shared.guard.reserve_request_bytes(&method, req.payload.len()) {
            Ok(r) => r,
            Err(status) => return refuse(status),
        };
        let deadline = shared
            .guard
            .handler_deadline(req.deadline)
            .map(|d| Instant::now() + d);
        let ctx = Context::new(method, Some(id), req.metadata, deadline, self.clone());
        // Made only when debug logs are on: even a disabled span costs per call when
        // tracing's `log` feature is on.
        let span = if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug_span!("call", method = %ctx.method(), id)
        } else {
            tracing::Span::none()
        };
        let args = Payload {
            codec: req.codec,
            bytes: req.payload,
        };
        // With interceptors the call is the chain, then the handler; without, the handler's
        // own future (already boxed by `Handler::call`), so the common case boxes nothing more.
        let mut call: futures::future::BoxFuture<'static, Result<Payload, Status>> =
            if shared.guard.has_chain() {
                Box::pin(crate::rpc::security::guarded_call(
                    self.clone(),
                    handler,
                    ctx.clone(),
                    args,
                ))
            } else {
                handler.call(ctx.clone(), args)
            };
        // Polled with a no-op waker: if it is not ready, the task below polls it again at once
        // with its own waker, as the `Future` contract allows. The deadline cannot have passed
        // during one poll that found the call ready.
        let first = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().now_or_never()))
        };
        match first {
            Ok(Some(result)) => {
                return Ok(Some(Answer {
                    id,
                    result: finished(&ctx, result),
                }))
            }
            Err(panic) => {
                return Ok(Some(Answer {
                    id,
                    result: panicked(&ctx, &panic),
                }))
            }
            Ok(None) => {}
        }
        let peer = self.clone();
        let rest = in_span(finish_call(call, ctx.clone(), reservation, deadline), span);
        let mut inflight = lock(&shared.inflight);
        // The lock is held across spawn so the task cannot remove its entry
        // before it is inserted.
        let task = tokio::spawn(async move {
            let result = rest.await;
            // Still counted as in flight while waiting for room in the write queue, so a
            // peer that does not read its answers cannot grow the number of tasks.
            peer.send_response(id, result).await;
            lock(&peer.shared.inflight).remove(&id);
        });
        inflight.insert(id, (task.abort_handle(), ctx.method().to_owned()));
        Ok(None)
    }

    /// Sends an answer the reader produced: small ones are appended to `replies` (the reader
    /// hands the batch to the writer); one too large for that goes from its own task, which
    /// may use a side stream.
    fn answer(&self, answer: Answer, replies: &mut BytesMut) -> Option<Bytes> {
        let Answer { id, result } = answer;
        let mark = replies.len();
        let frame = Frame::Response(ResponseFrame {
            id,
            result: result.map(|p| (p.codec, p.bytes)),
        });
        match frame.encode_split_ref(replies) {
            Ok(tail) if replies.len() - mark + tail.len() <= self.shared.config.inline_threshold => {
                if tail.len() < COPY_BELOW {
                    replies.extend_from_slice(tail);
                    None
                } else {
                    Some(tail.clone())
                }
            }
            _ => {
                replies.truncate(mark);
                let Frame::Response(ResponseFrame { id, result }) = frame else {
                    return None;
                };
                self.respond_later(id, result.map(|(codec, bytes)| Payload { codec, bytes }));
                None
            }
        }
    }

    /// Answers from a short task; bounded by the guard's reply permits (the reader waits for
    /// one before reading more).
    fn respond_later(&self, id: u64, result: Result<Payload, Status>) {
        let peer = self.clone();
        let permit = self.shared.guard.reply_permit();
        tokio::spawn(async move {
            let _permit = permit;
            peer.send_response(id, result).await
        });
    }

    async fn send_response(&self, id: u64, result: Result<Payload, Status>) {
        let frame = Frame::Response(ResponseFrame {
            id,
            result: result.map(|p| (p.codec, p.bytes)),
        });
        match self
            .send_frame(&frame, || format!("response to request {id}"), true)
            .await
        {
            Ok(()) => {}
            Err(Error::FrameTooLarge { size, limit, .. }) => {
                let msg = format!(
                    "the result is {size} bytes, larger than the caller's frame limit of {limit} bytes"
                );
                tracing::warn!(id, size, limit, "response too large for the peer");
                let frame = Frame::Response(ResponseFrame {
                    id,
                    result: Err(Status::new(Code::RESPONSE_TOO_LARGE, msg)),
                });
                let _ = self.send_frame(&frame, || "error response".into(), false).await;
            }
            Err(e) => tracing::debug!(id, error = %e, "response not sent"),
        }
    }
}

/// Runs `fut` inside `span`, or bare when the span is disabled (no subscriber wants it):
/// entering a span costs on every poll, even a disabled one when tracing's `log` feature is
/// on (some dependency often turns it on), and these futures are polled for every call.
pub(crate) fn in_span<F: std::future::Future>(
    fut: F,
    span: tracing::Span,
) -> futures::future::Either<F, tracing::instrument::Instrumented<F>> {
    if span.is_disabled() {
        futures::future::Either::Left(fut)
    } else {
        futures::future::Either::Right(fut.instrument(span))
    }
}

/// Encodes `frame` as one buffer of exactly its size (a payload below [`COPY_BELOW`] copied
/// in, else returned apart, uncopied). One allocation per frame: encoding into a growing
/// buffer and freezing it took two (the buffer, and the shared header `Bytes` adds when the
/// capacity is not the length).
fn encode_frame(frame: &Frame) -> Result<(Bytes, Bytes), FrameError> {
    encode_with(|buf| frame.encode_split_ref(buf))
}

/// Runs `encode` (which writes a frame up to its payload and returns the payload) in the
/// thread's scratch buffer; returns the frame as (head, payload), small payloads copied into
/// the head.
fn encode_with<'a>(
    encode: impl FnOnce(&mut BytesMut) -> Result<&'a Bytes, FrameError>,
) -> Result<(Bytes, Bytes), FrameError> {
    thread_local! {
        // Scratch space reused by every frame encoded on this thread.
        static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        buf.clear();
        let tail = encode(&mut buf)?;
        let tail = if tail.len() < COPY_BELOW {
            buf.extend_from_slice(tail);
            Bytes::new()
        } else {
            tail.clone()
        };
        let head = Bytes::copy_from_slice(&buf);
        // A large frame's head stays small, but do not keep a buffer grown by an odd one.
        if buf.capacity() > 4 * COPY_BELOW {
            *buf = BytesMut::new();
        }
        Ok((head, tail))
    })
}

/// A request answered where it was read.
pub(crate) struct Answer {
    id: u64,
    result: Result<Payload, Status>,
}

/// The rest of a handler call that did not finish on its first poll: the deadline applies,
/// panics become a status. `reservation` holds the argument's bytes against the
/// connection's budget until the call ends.
async fn finish_call(
    call: futures::future::BoxFuture<'static, Result<Payload, Status>>,
    ctx: Context,
    reservation: Option<tokio::sync::OwnedSemaphorePermit>,
    deadline: Option<Instant>,
) -> Result<Payload, Status> {
    let _reservation = reservation;
    let fut = AssertUnwindSafe(call).catch_unwind();
    let result = match deadline {
        Some(d) => match tokio::time::timeout_at(d.into(), fut).await {
            Ok(r) => r,
            Err(_) => Ok(Err(Status::new(
                Code::DEADLINE_EXCEEDED,
                format!(
                    "handler for `{}` did not finish before the caller's deadline",
                    ctx.method()
                ),
            ))),
        },
        None => fut.await,
    };
    match result {
        Ok(result) => finished(&ctx, result),
        Err(panic) => panicked(&ctx, &panic),
    }
}

/// A handler's result, logged when it is an error.
fn finished(ctx: &Context, result: Result<Payload, Status>) -> Result<Payload, Status> {
    if let Err(s) = &result {
        tracing::debug!(method = ctx.method(), code = %s.code(), "handler returned an error");
    }
    result
}

/// The status answering a call whose handler panicked.
fn panicked(ctx: &Context, panic: &Box<dyn std::any::Any + Send>) -> Result<Payload, Status> {
    let msg = panic_message(panic);
    tracing::error!(method = ctx.method(), panic = msg, "handler panicked");
    Err(Status::new(
        Code::HANDLER_PANICKED,
        format!("handler for `{}` failed: it panicked: {msg}", ctx.method()),
    ))
}

/// Removes a pending call and sends a cancel when the caller stops waiting.
struct CancelGuard<'a> {
    peer: &'a Peer,
    id: u64,
    armed: bool,
}

impl CancelGuard<'_> {
    fn forget(&mut self) {
        lock(&self.peer.shared.pending).remove(&self.id);
        self.armed = false;
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        lock(&self.peer.shared.pending).remove(&self.id);
        let mut head = BytesMut::new();
        if (Frame::Cancel { id: self.id }).encode(&mut head).is_ok() {
            let out = Outgoing::Frame {
                head: head.freeze(),
                tail: Bytes::new(),
            };
            if let Err(mpsc::error::TrySendError::Full(out)) = self.peer.shared.out.try_send(out) {
                let tx = self.peer.shared.out.clone();
                tokio::spawn(async move {
                    let _ = tx.send(out).await;
                });
            }
        }
    }
}

/// Locks a mutex, recovering from poisoning (the protected maps stay valid
/// even if a holder panicked).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

pub(crate) fn peer_fingerprint(conn: &quinn::Connection) -> Option<Fingerprint> {
    let id = conn.peer_identity()?;
    let certs = id
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| Fingerprint::of(c.as_ref()))
}

/// Turns quinn's close reason into our code + a sentence.
pub(crate) fn describe_close(e: &quinn::ConnectionError) -> (Option<CloseCode>, String) {
    use quinn::ConnectionError as C;
    match e {
        C::ApplicationClosed(a) => {
            let code = u32::try_from(a.error_code.into_inner()).map(CloseCode).ok();
            let reason = String::from_utf8_lossy(&a.reason).into_owned();
            let name = code.map(|c| c.name()).unwrap_or("unknown code");
            (code, format!("peer closed the connection ({name}): {reason}"))
        }
        C::LocallyClosed => (None, "connection closed locally".into()),
        C::TimedOut => (
            None,
            "connection lost: the peer did not answer within the idle timeout".into(),
        ),
        C::Reset => (None, "connection reset by the peer".into()),
        C::ConnectionClosed(c) => (None, format!("peer closed the connection: {c}")),
        other => (None, format!("connection lost: {other}")),
    }
}

// Small frames are copied into one buffer; payloads above this size are
// passed to quinn as their own chunk, uncopied.
const COPY_BELOW: usize = 4096;
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
            *lock(&peer.shared.zero_rtt) = ZeroRtt::Accepted;
            tracing::debug!("0-RTT early data accepted");
            peer.shared.established.send_replace(true);
            Some((send, finish))
        }
        Ok(false) => {
            if let Some(e) = conn.close_reason() {
                peer.mark_closed_from(&e);
                return None;
            }
            *lock(&peer.shared.zero_rtt) = ZeroRtt::Rejected;
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
                    let next = rx.recv().await;
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
    mut welcome_pending: bool,
) {
    let decoder = FrameDecoder::new(peer.shared.config.max_frame_size);
    // When the bytes now in `buf` arrived: the receive time of clock-sync frames.
    let mut received_at = peer.shared.config.clock.now().0;
    // Answers to requests handled during this read, handed to the writer as one frame
    // batch before the reader waits for anything.
    let mut replies = BytesMut::new();
    let mut chunks: [Bytes; 16] = Default::default();
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) if welcome_pending => match handshake::check_welcome(frame) {
                    Ok(welcome) => {
                        welcome_pending = false;
                        peer.shared
                            .peer_max_frame
                            .store(welcome.max_frame_size, Ordering::Release);
                        let _ = peer.shared.peer_hello.set(welcome.metadata);
                        tracing::debug!("welcome received");
                    }
                    Err(e) => {
                        peer.close_with(e.close.unwrap_or(CloseCode::PROTOCOL_VIOLATION), &e.reason);
                        return;
                    }
                },
                Ok(Some(Frame::TimeRequest { t1 })) => {
                    // A probe answer is only useful if prompt: drop it rather than wait.
                    let _ = peer
                        .shared
                        .out
                        .try_send(Outgoing::TimeReply { t1, t2: received_at });
                }
                Ok(Some(Frame::TimeResponse { t1, t2, t3 })) => {
                    if let Some(sync) = peer.shared.clock_sync.get() {
                        tracing::trace!(
                            forward = t2 as i128 - t1 as i128,
                            turnaround = t3 as i128 - t2 as i128,
                            back = received_at as i128 - t3 as i128,
                            "clock sample"
                        );
                        sync.add(Sample::from_timestamps(t1, t2, t3, received_at));
                    }
                }
                Ok(Some(Frame::Event(ev))) => {
                    if peer.shared.role == Role::Server && peer.is_early() {
                        // One-way and possibly replayed: there is no way to refuse it to the
                        // sender, so it is dropped. Well-behaved clients never send one early.
                        tracing::warn!(event = ev.name, "event arrived as 0-RTT early data: dropped");
                        continue;
                    }
                    if !flush_replies(&peer, &mut replies, Bytes::new()).await {
                        return;
                    }
                    peer.shared.guard.reserve_event_bytes(ev.payload.len()).await;
                    // Waits while the listener queue is full: the peer's emits
                    // then wait on QUIC flow control instead of piling up here.
                    if peer.shared.events.send((ev, peer.clone())).await.is_err() {
                        return;
                    }
                }
                Ok(Some(frame)) => match peer.dispatch(frame) {
                    Err((code, reason)) => {
                        peer.close_with(code, &reason);
                        return;
                    }
                    Ok(Some(answer)) => {
                        let tail = peer.answer(answer, &mut replies);
                        if (tail.is_some() || replies.len() >= COPY_BELOW * 16)
                            && !flush_replies(&peer, &mut replies, tail.unwrap_or_default()).await
                        {
                            return;
                        }
                        // A large answer went to its own task: bounded like the others.
                        peer.shared.guard.wait_for_reply_room().await;
                    }
                    Ok(None) => {
                        if !flush_replies(&peer, &mut replies, Bytes::new()).await {
                            return;
                        }
                        peer.shared.guard.wait_for_reply_room().await;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } => CloseCode::FRAME_TOO_LARGE,
                        _ => CloseCode::PROTOCOL_VIOLATION,
                    };
                    peer.close_with(code, &format!("control stream: {e}"));
                    return;
                }
            }
        }
        if !flush_replies(&peer, &mut replies, Bytes::new()).await {
            return;
        }
        // Several chunks per call: each read takes the connection's lock.
        match recv.read_chunks(&mut chunks).await {
            Ok(Some(n)) => {
                received_at = peer.shared.config.clock.now().0;
                for chunk in &mut chunks[..n] {
                    buf.extend_from_slice(chunk);
                    *chunk = Bytes::new();
                }
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

/// Hands the reader's batched answers (and `tail`, the payload of the last one when it was not
/// copied) to the writer. Returns false when the connection is closed.
async fn flush_replies(peer: &Peer, replies: &mut BytesMut, tail: Bytes) -> bool {
    if replies.is_empty() {
        return true;
    }
    let head = replies.split().freeze();
    match peer.shared.out.send_replies(head, tail).await {
        Ok(()) => true,
        Err(e) => {
            peer.note_write_failure(e);
            false
        }
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
                            Ok(Ok(())) if kind[0] == crate::stream::ERROR_HALF => {
                                Box::pin(crate::stream::incoming_uni(peer, recv)).await
                            }
                            Ok(Ok(())) if kind[0] == echostream_types::side::SIDE_FRAME => {
                                Box::pin(side::receive(peer, recv)).await
                            }
                            Ok(Ok(())) => peer.close_with(
                                CloseCode::PROTOCOL_VIOLATION,
                                &format!("unidirectional stream of unknown type {:#04x}", kind[0]),
                            ),
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
                            crate::stream::incoming_bi(peer, send, recv).await
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

/// Runs listeners one event at a time, in arrival order, then offers the
/// event to subscriptions.
async fn event_task(mut rx: mpsc::Receiver<(EventFrame, Peer)>) {
    while let Some((ev, peer)) = rx.recv().await {
        let _bytes = peer.guard().release_event_bytes_on_drop(ev.payload.len());
        let router = peer.shared.router.clone();
        let listeners = router.listeners(&ev.name);
        let args = Payload {
            codec: ev.codec,
            bytes: ev.payload,
        };
        if listeners.is_empty() && !router.subscriptions.has(&ev.name) {
            tracing::debug!(event = %ev.name, "event with no listener or subscription");
            continue;
        }
        if let Err(status) = crate::rpc::security::check_event(&peer, &ev.name, &ev.metadata).await {
            router.count_bad_event();
            tracing::warn!(event = %ev.name, peer = %peer.shared.remote, error = %status, "event refused");
            continue;
        }
        for l in listeners {
            let ctx = Context::new(ev.name.clone(), None, ev.metadata.clone(), None, peer.clone());
            let fut = AssertUnwindSafe(l.call(ctx, args.clone())).catch_unwind();
            match fut.await {
                Ok(Ok(())) => {}
                Ok(Err(status)) => {
                    router.count_bad_event();
                    tracing::warn!(event = %ev.name, peer = %peer.shared.remote, error = %status, "listener failed");
                }
                Err(p) => {
                    router.count_bad_event();
                    tracing::error!(event = %ev.name, panic = panic_message(&p), "listener panicked");
                }
            }
        }
        router.subscriptions.deliver(&ev.name, &peer, &args);
    }
}

/// Clock-sync state of one connection.
struct ClockSync {
    local: Arc<dyn Clock>,
    filter: Mutex<ClockFilter>,
    /// Number of samples taken so far, for waiters.
    updates: tokio::sync::watch::Sender<u64>,
    /// Asks the driver for a burst now.
    kick: tokio::sync::Notify,
}

impl ClockSync {
    fn add(&self, s: Sample) {
        lock(&self.filter).add(s);
        self.updates.send_modify(|n| *n += 1);
    }
}

/// Probes per burst on a quiet path.
const BURST: usize = 8;
/// Spread of the low delays above which a path counts as jittery.
const JITTERY_SPREAD_NS: f64 = 200_000.0;
/// How long a probe round waits for its answers before the next.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Sends a burst of probes now and then, while the connection lives.
async fn clock_sync_task(shared: std::sync::Weak<Shared>, sync: Arc<ClockSync>) {
    // Probes are not sent as early data: their timestamps would be wrong in a replay.
    match shared.upgrade() {
        Some(s) => {
            if (Peer { shared: s }).wait_established().await.is_err() {
                return;
            }
        }
        None => return,
    }
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        if s.closed.get().is_some() {
            return;
        }
        let interval = s.config.time_sync_interval;
        let out = s.out.clone();
        drop(s);
        // A jittery path needs more samples for the same accuracy (the
        // estimate rests on the few whose delay came out lowest), and probes
        // are ~40 bytes each: take four times as many there.
        let jittery = lock(&sync.filter)
            .estimate()
            .is_some_and(|e| e.spread > JITTERY_SPREAD_NS);
        // On a quiet path, pairs: the first of a pair finds an idle path (the
        // drivers asleep) and travels slower one way than its answer; the
        // second, right behind it, travels a warm path both ways. On a
        // jittery path that warm-up is noise, and a probe sent behind
        // another waits for it (the control stream delivers in order), which
        // would break the symmetry the filter relies on: send single probes.
        let (rounds, per_round) = if jittery { (4 * BURST, 1) } else { (BURST / 2, 2) };
        let mut answers = sync.updates.subscribe();
        for _ in 0..rounds {
            let before = *answers.borrow_and_update();
            for _ in 0..per_round {
                if out.send(Outgoing::TimeProbe).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            // Next round once these are answered (or lost), so that no
            // probe is ever in flight behind another.
            let answered = answers.wait_for(|n| *n >= before + per_round as u64);
            match tokio::time::timeout(PROBE_TIMEOUT, answered).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => return,
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = sync.kick.notified() => {}
        }
    }
}

/// A connection's view of the peer's clock (see [`Peer::clock`]). Cheap to clone.
///
/// All methods that need an estimate return `None` until the first probe
/// has been answered (use [`SyncedClock::synced`] to wait for it).
#[derive(Clone)]
pub struct SyncedClock {
    sync: Arc<ClockSync>,
}

impl std::fmt::Debug for SyncedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncedClock")
            .field("estimate", &lock(&self.sync.filter).estimate())
            .finish()
    }
}

impl SyncedClock {
    fn estimate(&self) -> Option<timesync::Estimate> {
        lock(&self.sync.filter).estimate()
    }

    /// Waits until at least `samples` probes have been answered (or `timeout`).
    pub async fn synced(&self, samples: u64, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.sync.updates.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= samples))
            .await
            .map_err(|_| Error::Timeout {
                method: "clock sync".into(),
                after: timeout,
            })?
            .map_err(|_| Error::ConnectionClosed {
                code: None,
                reason: "connection ended during clock sync".into(),
            })?;
        Ok(())
    }

    /// Asks for a burst of probes now (on demand refresh).
    pub fn refresh(&self) {
        self.sync.kick.notify_one();
    }

    /// This host's clock now.
    pub fn local_now(&self) -> Timestamp {
        self.sync.local.now()
    }

    /// The peer's clock now, as estimated.
    pub fn now(&self) -> Option<Timestamp> {
        self.to_peer(self.local_now())
    }

    /// Peer clock minus local clock now, in nanoseconds.
    pub fn offset_nanos(&self) -> Option<i64> {
        let now = self.local_now().0;
        self.estimate().map(|e| e.offset_at(now).round() as i64)
    }

    /// How fast the peer's clock runs relative to ours, in parts per million.
    pub fn drift_ppm(&self) -> Option<f64> {
        self.estimate().map(|e| e.drift * 1e6)
    }

    /// The smallest round-trip delay among the trusted samples.
    pub fn rtt(&self) -> Option<Duration> {
        self.estimate().map(|e| Duration::from_nanos(e.delay as u64))
    }

    /// A bound on the offset's error: half the best round trip plus the spread of the fit.
    pub fn error_bound(&self) -> Option<Duration> {
        self.estimate().map(|e| Duration::from_nanos(e.error as u64))
    }

    /// A local time expressed on the peer's clock.
    pub fn to_peer(&self, local: Timestamp) -> Option<Timestamp> {
        self.estimate()
            .map(|e| local.offset_by(e.offset_at(local.0).round() as i64))
    }

    /// A peer time expressed on the local clock.
    pub fn to_local(&self, peer: Timestamp) -> Option<Timestamp> {
        // The offset changes by about drift·offset over the offset itself:
        // evaluate it at the local time first guessed.
        self.estimate().map(|e| {
            let guess = peer.offset_by(-(e.offset_at(peer.0).round() as i64));
            peer.offset_by(-(e.offset_at(guess.0).round() as i64))
        })
    }
}
