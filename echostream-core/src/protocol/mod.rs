//! Protocol layer: the control stream over a quinn connection.
//!
//! One [`Peer`] per connection, shared by both directions. Its concurrency
//! model is "shared state + tasks" (the tasks live in `driver`):
//! - a **writer task** owns the control stream's send half and drains a
//!   bounded channel of encoded frames, coalescing every frame that is ready
//!   into one write (batching under load, no extra latency when idle);
//! - a **reader task** owns the receive half, decodes frames with the sans-IO
//!   [`FrameDecoder`](echostream_types::FrameDecoder), asks the sans-IO call state what each
//!   one means (`state::CallState::classify`) and carries it out: responses complete waiting
//!   callers, requests go up to the RPC layer through the `Inbound` trait, which polls the
//!   handler once right there (answers are batched to the writer) and moves it to a task of
//!   its own only if it waits; events go to one in-order listener task through a bounded
//!   queue, never waited for (a listener may be waiting for this very reader): senders are
//!   held back by event credit (`credit`), and events of a peer that overruns it are dropped
//!   and counted;
//! - a **side-stream task** accepts unidirectional streams that carry one
//!   large frame each, so a 16 MiB response does not hold up small calls on
//!   the control stream.
//!
//! Callers (`Peer::request`, handlers' responses) encode in their own task
//! and hand the bytes to the writer.
//!
//! # Layout
//! - `state`: sans-IO call table (id spaces, pending and running calls, the cap, go-away,
//!   the close record, 0-RTT status) and `classify`, the one place that decides what a frame
//!   means.
//! - `driver`: the reader, writer, side-stream and event tasks.
//! - `peer`: [`Peer`], the per-connection handle, and its methods; `emit`: its event methods.
//! - `credit`: event credit, which holds a sender of events back by the receiver's listeners
//!   without the receiver's reader ever waiting for them.
//! - `call`: what those methods use that is not a method: the guard that cancels a dropped
//!   call, `Answer` (a request answered where it was read), and small helpers for a call's
//!   payloads, deadline and failures.
//! - `inbound`: the trait through which the protocol hands requests, events and stream
//!   opens up to the RPC layer (which implements it).
//! - `context`: [`Context`] (a call's context on a connection) and [`Payload`].
//! - `budget`: per-connection byte and reply budgets.
//! - `encode`, `outbox`, `side`, `handshake`: frame encoding, the way to the control stream,
//!   large frames on their own streams, the hello/welcome exchange.
//! - `clock`: clock sync with the peer ([`SyncedClock`]); [`timesync`]: its sans-IO math.

pub(crate) mod budget;
mod call;
mod clock;
mod compress;
mod context;
mod credit;
mod driver;
mod emit;
mod encode;
mod handshake;
mod inbound;
mod outbox;
mod peer;
mod ping;
mod replies;
mod side;
mod state;
pub mod timesync;
pub mod trace;

/// The balancer (`rpc::balance`) encodes an argument once for a call it may send twice.
#[cfg(feature = "discovery")]
pub(crate) use call::{decode_result, encode_value};
pub use clock::SyncedClock;

/// A peer's hello metadata as applications see it (without the protocol's own entries).
pub(crate) fn application_hello_metadata(hello: echostream_types::Metadata) -> echostream_types::Metadata {
    let mut hello = credit::EventCredit::application_metadata(hello);
    hello.remove(echostream_types::compress::HELLO_KEY);
    hello
}
pub use context::{Context, Payload};
pub(crate) use handshake::{
    client_error, client_handshake, client_send_hello, server_read_hello, server_send_welcome,
    HandshakeOutcome, MIN_PEER_FRAME,
};
pub(crate) use inbound::{Inbound, StreamHost};
pub use peer::Peer;

use crate::connection::tls::Fingerprint;
use budget::Budgets;
use bytes::Bytes;
use clock::ClockSync;
use driver::ReplySender;
use echostream_types::{CloseCode, Codec, Metadata};
use state::CallState;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use timesync::{Clock, SystemClock};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// Default most events of one connection queued for its listeners: the event credit this side
/// announces. The reader drops (and counts) events that find the queue full rather than wait
/// for listeners (see `driver`, `credit`).
pub(crate) const DEFAULT_EVENT_QUEUE: usize = 16 * 1024;

/// Settings of the protocol layer for one side of a connection.
#[derive(Clone)]
pub(crate) struct ProtocolConfig {
    /// Largest frame this side accepts (announced in the hello).
    pub(crate) max_frame_size: u32,
    /// Requests and responses larger than this travel on their own stream.
    pub(crate) inline_threshold: usize,
    /// Requests from the peer allowed to run at once on one connection.
    pub(crate) max_concurrent_requests: usize,
    /// Events queued for listeners, announced as event credit; beyond it (or the event byte
    /// budget) the reader drops them.
    pub(crate) event_queue: usize,
    /// Frames queued for the writer before callers wait.
    pub(crate) write_queue: usize,
    /// Time allowed for the hello/welcome exchange.
    pub(crate) hello_timeout: Duration,
    /// Deadline applied to calls that set none.
    pub(crate) default_timeout: Option<Duration>,
    /// Codec used when a call does not choose one.
    /// How this side compresses what it sends (`echostream_types::compress`).
    pub(crate) compression: echostream_types::compress::Compression,
    /// Payloads shorter than this are sent uncompressed.
    pub(crate) compression_min_size: usize,
    pub(crate) default_codec: Codec,
    /// Metadata sent in this side's hello.
    pub(crate) hello_metadata: Metadata,
    /// Payload bytes of the peer's requests running at once (at least the frame limit).
    pub(crate) max_request_bytes: usize,
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
    /// The metric handles of the calls this side makes, per method (shared by the connections
    /// of one builder).
    pub(crate) call_metrics: Arc<crate::metrics::CallMetricsCache>,
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
            event_queue: DEFAULT_EVENT_QUEUE,
            write_queue: 1024,
            hello_timeout: Duration::from_secs(10),
            default_timeout: Some(Duration::from_secs(30)),
            compression: echostream_types::compress::Compression::None,
            compression_min_size: echostream_types::compress::DEFAULT_MIN_SIZE,
            default_codec: Codec::Bincode,
            hello_metadata: Metadata::new(),
            clock: SystemClock::shared(),
            time_sync_interval: Duration::from_secs(1),
            max_request_bytes: budget::DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT,
            idempotent_methods: HashSet::new(),
            assembly_timeout: side::DEFAULT_ASSEMBLY_TIMEOUT,
            assembly_budget: side::DEFAULT_ASSEMBLY_BUDGET,
            assembly_waiting: 16,
            call_metrics: Arc::default(),
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
    /// The other end's role.
    pub(crate) fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }

    pub(crate) fn first_id(self) -> u64 {
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
    /// The congestion window, in bytes.
    pub congestion_window: u64,
    /// The path's current maximum UDP payload (after MTU discovery), in bytes.
    pub mtu: u16,
    /// Application streams this side opened that are live.
    pub streams_opened: usize,
    /// Application streams this side accepted that are live.
    pub streams_accepted: usize,
    /// The peer's clock as estimated here, when clock sync runs on this connection (it starts
    /// on the first use of [`Peer::clock`]; `info` does not start it).
    pub clock: Option<ClockEstimate>,
}

/// The clock-sync estimate in [`ConnectionInfo`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClockEstimate {
    /// Peer clock minus local clock now, in nanoseconds.
    pub offset_nanos: i64,
    /// A bound on the offset's error.
    pub error_bound: Duration,
    /// How fast the peer's clock runs relative to ours, in parts per million.
    pub drift_ppm: f64,
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
    pub(crate) compression: Option<echostream_types::compress::Compression>,
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

    /// Compresses this call's argument (or this event's value) with `compression` instead of
    /// the connection's setting, when the peer accepts that algorithm and it pays (see
    /// `ClientBuilder::compression`); `Compression::None` sends it as it is. The answer is
    /// compressed by the peer's own setting.
    pub fn compression(mut self, compression: echostream_types::compress::Compression) -> Self {
        self.compression = Some(compression);
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
    /// and answers any other with
    /// [`Code::EARLY_DATA_REFUSED`](echostream_types::Code::EARLY_DATA_REFUSED) without running
    /// it, in which case the client sends the call again once the handshake has completed.
    /// Calls without this mark (and whose method is not in `ClientBuilder::idempotent`) wait
    /// for the handshake.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
}

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

/// State shared by the handles and tasks of one connection.
struct Shared {
    conn: quinn::Connection,
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
    config: Arc<ProtocolConfig>,
    /// The RPC layer's side of this connection: what runs the peer's requests and events.
    inbound: Arc<dyn Inbound>,
    /// The way to the control stream: the writer's queue, or a direct write while it is idle.
    out: Arc<outbox::Outbox>,
    /// What the call priority sees (the outbox marks control frames; stream writes mark
    /// bulk data); `None` when it is off.
    calls: Option<Arc<crate::connection::priority::CallActivity>>,
    /// Ids, waiting and running calls, go-away, the close record, 0-RTT status.
    state: CallState<ReplySender, tokio::task::AbortHandle>,
    events: mpsc::Sender<driver::QueuedEvent>,
    /// Events of the peer dropped because the event queue was full (see `driver`).
    events_dropped: AtomicU64,
    /// Event credit in both directions (see `credit`).
    credit: credit::EventCredit,
    /// The compression algorithms the peer announced in its hello (see `compress`); unset
    /// until its hello is known, and nothing is compressed meanwhile.
    peer_compression: OnceLock<echostream_types::compress::Accepted>,
    /// Clock synchronisation with the peer, started on first use.
    clock_sync: OnceLock<Arc<ClockSync>>,
    /// Reply permits and the byte budgets of running requests and queued events.
    budgets: Budgets,
    /// Application streams of this connection (pairing table, limits).
    streams: Box<dyn StreamHost>,
    /// Large frames on side streams: send slots, the assembly budget.
    side: side::SideStreams,
    /// Our pings waiting for their pong.
    pings: ping::Pings,
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
