//! Transport layer: QUIC endpoints, transport settings and TLS.
//!
//! - [`tls`]: identities, trust modes, fingerprints, rustls configurations.
//! - [`client_auth`]: client certificates (mutual TLS), the TLS key log, peer certificates.
//! - [`priority`]: small calls before bulk data (a congestion-window limit while calls run).
//! - `resumption`: the TLS session tickets a client keeps per server (resumption, 0-RTT).
//! - this module: UDP sockets with enlarged buffers, quinn endpoints and the
//!   transport settings EchoStream applies to every connection.

pub mod client_auth;
pub mod priority;
pub(crate) mod resumption;
pub(crate) mod socket;
pub mod tls;

pub use priority::CallPriority;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Default connection-wide receive window (16 MiB): room for about a dozen
/// streams at quinn's default per-stream window.
pub const DEFAULT_RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;

/// Default per-stream receive window: 256 KiB (quinn's own default is 1.25 MB).
///
/// A stream's window bounds how much of its data can be on the way at once, and data of
/// one stream queued ahead (in the receiver's socket buffer) delays everything behind it on
/// the connection, small calls included. Measured on loopback with one bulk stream running
/// (`echostream-bench --only 4,9`): small-call p99 during the bulk transfer 804 µs at
/// 1.25 MB, 479 µs at 256 KiB, 291 µs at 128 KiB, 202 µs at 64 KiB; bulk throughput the
/// same down to 128 KiB (about 1 GB/s), 20 % lower at 64 KiB. A window also caps one
/// stream at `window / round trip`: 256 KiB is about 256 MB/s at 1 ms (a LAN), 50 MB/s at
/// 5 ms (Wi-Fi); raise it for long fat paths ([`TransportOptions::lossy_link`] does).
pub const DEFAULT_STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;

/// QUIC transport settings shared by servers and clients.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// A connection with no traffic for this long is closed; the peer's
    /// vanishing is noticed within this time.
    pub idle_timeout: Duration,
    /// How often to send keep-alives on a quiet connection (keep below the
    /// idle timeout).
    pub keep_alive: Option<Duration>,
    /// Bidirectional streams the peer may have open at once.
    pub max_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once.
    pub max_uni_streams: u32,
    /// UDP socket send/receive buffer size in bytes (best effort: the kernel
    /// caps it at `net.core.rmem_max`/`wmem_max`). The kernel default of about
    /// 208 KiB drops packets on fast loopback transfers.
    pub socket_buffer: usize,
    /// Per-stream receive window (flow control) in bytes; default
    /// [`DEFAULT_STREAM_RECEIVE_WINDOW`] (256 KiB), `None` keeps quinn's
    /// (1.25 MB). Smaller values keep small calls quick while a bulk stream
    /// runs and make a peer that stops reading push back sooner; larger ones
    /// let one stream go faster on a path with a long round trip.
    pub stream_receive_window: Option<u32>,
    /// Connection-wide receive window in bytes: the most data the peer may send
    /// that this side has not read yet, all streams together (quinn's default is
    /// unlimited). It bounds what quinn buffers per connection whatever the peer
    /// does. `None` keeps quinn's default.
    pub receive_window: Option<u32>,
    /// The congestion controller (see [`Congestion`]).
    pub congestion: Congestion,
    /// How many later packets must be acknowledged before an unacknowledged
    /// one counts as lost (RFC 9002's packet threshold; quinn's default is
    /// 3). A path that reorders (jitter, Wi-Fi aggregation, several links)
    /// makes a small threshold declare packets lost that are merely late,
    /// and each such "loss" halves the sending rate; raise it there. Time-
    /// based loss detection (9/8 of the round trip) still applies.
    pub reordering_threshold: u32,
    /// How late (as a multiple of the round trip) an unacknowledged packet
    /// may be before it counts as lost (RFC 9002's time threshold; quinn's
    /// default and the least accepted here is 9/8). On a path whose round
    /// trip varies a lot (±50 %), packets that are merely slow pass 9/8 and
    /// are resent needlessly; raise it there.
    pub loss_time_threshold: f32,
    /// Small calls before bulk data: while this side sends requests, answers or events and
    /// also writes stream data, its congestion window is limited so that little stream data
    /// is on the way ahead of the calls, and stream reads take turns with other tasks (see
    /// [`priority`]). Default on ([`CallPriority::default`]); `None` turns it off and bulk
    /// streams keep their full speed while calls wait behind their data.
    pub call_priority: Option<CallPriority>,
}

/// Which congestion controller a connection uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Congestion {
    /// CUBIC (RFC 9438), quinn's default: fair and well understood, but it
    /// backs off at every loss, so random loss caps throughput (about
    /// `1.2 · MTU / (RTT · √loss)`).
    #[default]
    Cubic,
    /// NewReno (RFC 9002 §7).
    NewReno,
    /// BBR (quinn's implementation, which quinn marks experimental): paces at
    /// the measured bottleneck rate and round trip instead of reacting to
    /// each loss, so a path with random loss (Wi-Fi, a lossy radio link)
    /// keeps its throughput. Less fair to loss-based flows sharing a
    /// congested link.
    Bbr,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            max_bidi_streams: 100,
            max_uni_streams: 100,
            socket_buffer: 4 * 1024 * 1024,
            stream_receive_window: Some(DEFAULT_STREAM_RECEIVE_WINDOW),
            receive_window: Some(DEFAULT_RECEIVE_WINDOW),
            congestion: Congestion::Cubic,
            reordering_threshold: 3,
            loss_time_threshold: 9.0 / 8.0,
            call_priority: Some(CallPriority::default()),
        }
    }
}

impl TransportOptions {
    /// Settings for a lossy, jittery path (Wi-Fi, radio links): BBR instead
    /// of CUBIC, loss detection that tolerates reordering (64 packets,
    /// twice the round trip), quinn's larger stream window (1.25 MB, for
    /// the longer round trip) and no call priority (jitter would pass for
    /// queueing). Measured through the test relay at 5 % loss
    /// and 20 ms ± 10 ms each way: one stream moves about 5 MB/s, against
    /// about 0.1 MB/s with the defaults (see `tests/faults_streams.rs`).
    /// The price in bytes (`cargo run --release --example lossy_link`): with
    /// queue-like jitter (datagrams keep their order, as on real links) the
    /// sender puts 1.08 bytes on the wire per byte delivered, and declares
    /// lost about as many packets as were dropped. With jitter that reorders
    /// each datagram on its own (the relay's default, ~80 packets deep at
    /// 5 MB/s) it is 2.3-2.4: packets overtaken by more than 64 others are
    /// resent needlessly, and quinn's receiver keeps at most 64 ACK ranges, so
    /// some that did arrive are never acknowledged. A 256-packet threshold
    /// cuts that to 1.6-1.7 (the ACK-range cap is the floor) but slowed the
    /// in-order case by about a fifth in our runs, so the preset keeps 64.
    /// BBR is also less fair than CUBIC to loss-based flows on a congested
    /// link. Use it on both sides.
    pub fn lossy_link() -> Self {
        Self {
            congestion: Congestion::Bbr,
            stream_receive_window: Some(1_250_000),
            reordering_threshold: 64,
            loss_time_threshold: 2.0,
            // Round trips that swing ±50 % look like queueing to the call priority's limit,
            // which would then hold bulk streams at its least window whenever calls run.
            call_priority: None,
            ..Self::default()
        }
    }

    /// The quinn transport configuration EchoStream builds from these
    /// options (public so that a raw quinn peer, such as a benchmark
    /// baseline, can use exactly the same settings).
    pub fn quinn(&self) -> Result<Arc<quinn::TransportConfig>, crate::Error> {
        let mut t = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            crate::Error::Config(format!("idle timeout {:?} is too large", self.idle_timeout))
        })?;
        t.max_idle_timeout(Some(idle));
        t.keep_alive_interval(self.keep_alive);
        t.max_concurrent_bidi_streams(self.max_bidi_streams.into());
        t.max_concurrent_uni_streams(self.max_uni_streams.into());
        if let Some(w) = self.stream_receive_window {
            t.stream_receive_window(w.into());
        }
        if let Some(w) = self.receive_window {
            t.receive_window(w.into());
        }
        t.packet_threshold(self.reordering_threshold.max(3));
        t.time_threshold(self.loss_time_threshold.max(9.0 / 8.0));
        let controller: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> = match self.congestion {
            Congestion::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            Congestion::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
            Congestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        };
        match self.call_priority {
            Some(cfg) => t.congestion_controller_factory(Arc::new(priority::PriorityFactory {
                inner: controller,
                cfg,
            })),
            None => t.congestion_controller_factory(controller),
        };
        Ok(Arc::new(t))
    }
}

/// Binds a UDP socket with the buffers of `opts` and wraps it in a quinn
/// endpoint, as EchoStream's servers and clients do (public for raw quinn
/// peers that must match them). Must run inside a tokio runtime.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    opts: &TransportOptions,
) -> std::io::Result<quinn::Endpoint> {
    endpoint_watched(addr, server, opts).map(|(endpoint, _)| endpoint)
}

/// [`endpoint`], plus what tells when its socket has been closed (see `socket`).
pub(crate) fn endpoint_watched(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    opts: &TransportOptions,
) -> std::io::Result<(quinn::Endpoint, socket::SocketClosed)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped traffic on "[::]" like most servers do.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a failure here only costs throughput.
    if let Err(e) = socket.set_recv_buffer_size(opts.socket_buffer) {
        tracing::debug!(error = %e, "could not set UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(opts.socket_buffer) {
        tracing::debug!(error = %e, "could not set UDP send buffer");
    }
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime found: EchoStream needs a tokio runtime"))?;
    let socket = runtime.wrap_udp_socket(socket.into())?;
    let (socket, closed) = socket::Watched::new(socket);
    let endpoint =
        quinn::Endpoint::new_with_abstract_socket(quinn::EndpointConfig::default(), server, socket, runtime)?;
    Ok((endpoint, closed))
}

/// Resolves `"host:port"` (or an IP literal) to socket addresses.
pub(crate) async fn resolve(addr: &str) -> Result<Vec<SocketAddr>, crate::Error> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| crate::Error::Connect {
            addr: addr.to_owned(),
            reason: format!("cannot resolve address: {e}"),
        })?
        .collect();
    if found.is_empty() {
        return Err(crate::Error::Connect {
            addr: addr.to_owned(),
            reason: "address resolved to nothing".into(),
        });
    }
    Ok(found)
}
