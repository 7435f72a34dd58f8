//! What the server and client builders share: the handlers this side serves, the transport and
//! protocol settings, and the protections against the peer (interceptors, rate limits, handler
//! timeout, byte budgets), in one struct both hold, with their setters written once
//! (`shared_setters!`, expanded inside each builder's own `impl`; the protections' setters are
//! `rpc::security::policy_setters!`, which it expands). So a client defends itself against its
//! server with the same types and the same defaults as a server against its clients.

use crate::connection::TransportOptions;
use crate::protocol::ProtocolConfig;
use crate::rpc::security::SecurityPolicy;
use crate::rpc::RouterBuilder;

/// Options both builders hold.
#[derive(Clone, Default)]
pub(crate) struct SharedOptions {
    /// Handlers, listeners and stream handlers this side serves to its peers.
    pub(crate) router: RouterBuilder,
    /// QUIC transport settings.
    pub(crate) transport: TransportOptions,
    /// Protocol settings of each connection.
    pub(crate) protocol: ProtocolConfig,
    /// Interceptors, rate limits and the default handler timeout applied to what the peer asks
    /// of this side (its requests, events and stream opens).
    pub(crate) policy: SecurityPolicy,
}

impl SharedOptions {
    /// Settles what depends on several options: the stream limits' floor from the transport's,
    /// and how many side streams may wait unread from its flow-control windows.
    pub(crate) fn settle(&mut self) {
        let t = &self.transport;
        self.router.stream_limits(t.max_bidi_streams, t.max_uni_streams);
        self.protocol.fit_windows(t);
    }
}

/// The setters of [`SharedOptions`], for a builder with a field `opts: SharedOptions`.
/// `$peer` names the other side in the docs ("the server", "clients").
macro_rules! shared_setters {
    ($peer:literal) => {
        crate::rpc::security::policy_setters!($peer);

        #[doc = concat!("Registers a handler ", $peer, " can call.")]
        pub fn handler(mut self, h: impl crate::rpc::Handler) -> Self {
            self.opts.router.handler(std::sync::Arc::new(h));
            self
        }

        #[doc = concat!("Registers a listener for events ", $peer, " emits.")]
        pub fn listener(mut self, l: impl crate::rpc::Listener) -> Self {
            self.opts.router.listener(std::sync::Arc::new(l));
            self
        }

        #[doc = concat!(
                    "Registers a stream handler: it accepts the streams of its name that ",
                    $peer,
                    " opens, each in its own task."
                )]
        pub fn stream_handler(mut self, h: impl crate::stream::StreamHandler) -> Self {
            self.opts.router.stream_handler(std::sync::Arc::new(h));
            self
        }

        /// Stream limits and timeouts (queue sizes, pairing timeout, message size).
        pub fn stream_options(mut self, o: crate::stream::StreamOptions) -> Self {
            self.opts.router.stream_options(o);
            self
        }

        /// Registers every `#[handler]`, `#[listener]` and `#[stream_handler]` function
        /// linked into the binary.
        pub fn register_all(mut self) -> Self {
            self.opts.router.register_all();
            self
        }

        #[doc = concat!(
                    "Default timeout of the calls this side makes to ",
                    $peer,
                    " (default 30 s); per-call options override it."
                )]
        pub fn timeout(mut self, d: std::time::Duration) -> Self {
            self.opts.protocol.default_timeout = Some(d);
            self
        }

        /// Calls wait without a deadline unless they set one.
        pub fn no_default_timeout(mut self) -> Self {
            self.opts.protocol.default_timeout = None;
            self
        }

        #[doc = concat!(
                    "Compresses the payloads of the calls, answers and events this side sends to ",
                    $peer,
                    " (default [`Compression::None`](echostream_types::compress::Compression::None)). ",
                    "Only with an algorithm the peer announced in its hello, only for payloads of at ",
                    "least [`compression_min_size`](Self::compression_min_size) bytes, and only when ",
                    "the result is at least 10 % smaller. This side always accepts zstd and LZ4 from ",
                    "its peer, whatever this setting; per-call options override it for calls and events. ",
                    "Pays on slow links with compressible payloads (JSON, text); costs CPU on fast ones."
                )]
        pub fn compression(mut self, c: echostream_types::compress::Compression) -> Self {
            self.opts.protocol.compression = c;
            self
        }

        /// Payloads shorter than this are never compressed (default 1 KiB).
        pub fn compression_min_size(mut self, bytes: usize) -> Self {
            self.opts.protocol.compression_min_size = bytes;
            self
        }

        /// Codec of calls and events that do not choose one (default bincode).
        pub fn codec(mut self, codec: echostream_types::Codec) -> Self {
            self.opts.protocol.default_codec = codec;
            self
        }

        /// The clock timestamps are read from (default: the system clock).
        /// Tests inject an offset, drift or step with `timesync::SkewedClock`.
        pub fn clock(mut self, clock: std::sync::Arc<dyn crate::protocol::timesync::Clock>) -> Self {
            self.opts.protocol.clock = clock;
            self
        }

        /// Time between clock-sync bursts on connections whose clock is in use (default 1 s).
        pub fn time_sync_interval(mut self, d: std::time::Duration) -> Self {
            self.opts.protocol.time_sync_interval = d;
            self
        }

        /// Events queued per connection for listeners (default 16,384, and at
        /// most 64 MiB of payload). This side announces it in its hello as event
        /// credit: the peer's `emit` waits while that many of its events are
        /// unprocessed here (backpressure that never stops the connection's
        /// reader, so a listener that calls the peer back still gets its answer).
        /// An event that finds the queue full anyway (a peer that ignores credit)
        /// is dropped, counted (`Peer::events_dropped`, metric
        /// `echostream.events.dropped` with policy `queue_full`) and logged.
        pub fn event_queue(mut self, n: usize) -> Self {
            self.opts.protocol.event_queue = n;
            self
        }

        /// Adds a metadata entry to this side's hello (name, version, credentials, ...).
        pub fn metadata(mut self, key: impl Into<String>, value: impl Into<bytes::Bytes>) -> Self {
            self.opts.protocol.hello_metadata.insert(key, value);
            self
        }

        #[doc = concat!("Largest frame accepted from ", $peer, " (default 32 MiB).")]
        pub fn max_frame_size(mut self, bytes: u32) -> Self {
            self.opts.protocol.max_frame_size = bytes;
            self
        }

        #[doc = concat!(
                    "Requests from ",
                    $peer,
                    " that one connection may have running at once (default 1024); beyond it calls ",
                    "are refused with `RESOURCE_EXHAUSTED`."
                )]
        pub fn max_concurrent_requests(mut self, n: usize) -> Self {
            self.opts.protocol.max_concurrent_requests = n;
            self
        }

        #[doc = concat!(
                    "How long a large request or response from ",
                    $peer,
                    " (one that travels on a side stream of its own) may go without receiving data ",
                    "before it is dropped, with a log line, to free the room it holds (default 10 s). ",
                    "The sender's call fails with `RESOURCE_EXHAUSTED` naming it."
                )]
        pub fn assembly_timeout(mut self, d: std::time::Duration) -> Self {
            self.opts.protocol.assembly_timeout = d;
            self
        }

        #[doc = concat!(
                    "Bytes of large messages from ",
                    $peer,
                    " received at once per connection (default 64 MiB, at least one largest frame); ",
                    "more wait, and a peer that sends far more is told to send again later."
                )]
        pub fn max_assembly_bytes(mut self, bytes: usize) -> Self {
            self.opts.protocol.assembly_budget = bytes;
            self
        }

        /// Idle timeout (default 30 s): a connection with no traffic for this long is closed.
        pub fn idle_timeout(mut self, d: std::time::Duration) -> Self {
            self.opts.transport.idle_timeout = d;
            self
        }

        /// Keep-alive interval (default 10 s; `None` disables).
        pub fn keep_alive(mut self, d: Option<std::time::Duration>) -> Self {
            self.opts.transport.keep_alive = d;
            self
        }

        /// Full transport settings (windows, stream credit, congestion control, call priority).
        pub fn transport(mut self, t: crate::connection::TransportOptions) -> Self {
            self.opts.transport = t;
            self
        }
    };
}

pub(crate) use shared_setters;
