//! Metrics through the [`metrics`] facade: the library records, the application picks the
//! exporter (Prometheus, OpenTelemetry, StatsD, ...) by installing a recorder.
//!
//! Install the recorder **before** building servers and clients: the per-method handles are
//! registered when a router is built, so a call records into them without allocating or
//! looking anything up, and with no recorder installed the handles do nothing.
//!
//! Names and labels follow OpenTelemetry's RPC semantic conventions where they exist (the
//! Prometheus exporter writes `.` as `_`). Label values are bounded: a server labels calls with
//! the method names it registered, and a call to any other name counts under
//! [`UNKNOWN_METHOD_LABEL`], never the peer's string.
//!
//! | name | kind, unit | labels |
//! |---|---|---|
//! | `rpc.server.duration` | histogram, seconds | `rpc.system`, `rpc.method`, `rpc.response.status_code` |
//! | `rpc.server.requests` | counter | `rpc.system`, `rpc.method` |
//! | `rpc.server.responses` | counter | `rpc.system`, `rpc.method`, `rpc.response.status_code` |
//! | `rpc.server.request.bytes` | counter, bytes | `rpc.system`, `rpc.method` |
//! | `rpc.server.response.bytes` | counter, bytes | `rpc.system`, `rpc.method` |
//! | `rpc.server.request.size` | histogram, bytes (only after [`record_size_histograms`]) | `rpc.system`, `rpc.method` |
//! | `rpc.server.response.size` | histogram, bytes (only after [`record_size_histograms`]) | `rpc.system`, `rpc.method` |
//! | `rpc.client.duration`, `rpc.client.requests`, `rpc.client.responses`, `rpc.client.request.bytes`, `rpc.client.response.bytes`, `rpc.client.request.size`, `rpc.client.response.size` | as the server's | the same, for calls this side makes (either side of a connection can call) |
//! | `echostream.rate_limited` | counter | `rpc.method` |
//! | `echostream.connections.accepted` | counter | |
//! | `echostream.connections.open` | gauge | `side` (`server`) |
//! | `echostream.events.sent`, `echostream.events.received` | counter | |
//! | `echostream.events.dropped` | counter | `policy` (`no_listener`, `refused`, `queue_full` (the connection's listener queue was full), `subscription_full`, `slow_consumer`) |
//! | `echostream.streams.opened` | counter | `side` (`opener`, `acceptor`) |
//! | `echostream.streams.refused` | counter | `reason` (`no_acceptor`, `busy`, `rejected`, `bad_header`) |
//! | `echostream.bytes.sent`, `echostream.bytes.received` | counter, bytes | `kind` (`stream`: application stream data; `control`: control-stream bytes) |
//! | `echostream.zero_rtt` | counter | `outcome` (`accepted`, `refused`) |
//! | `echostream.clock.offset`, `echostream.clock.error_bound` | gauge, seconds | `connection` (the connection id, while it lives) |
//! | `echostream.jitter.dropped` | counter | `reason` (`late`, `overflow`) |
//! | `echostream.connections.refused` | counter | `reason` (`limit`: connection limit; `rejected`: authenticator or decision policy; `hello`: no valid hello in time) |
//!
//! `rpc.response.status_code` is `OK` or the status code's name (`UNKNOWN_METHOD`,
//! `BAD_PAYLOAD`, `DEADLINE_EXCEEDED`, ..., `APPLICATION` for application codes).
//!
//! Payload sizes are byte counters by default (their ratio to the call count is the mean
//! size). The size histograms are opt-in: a histogram sample costs far more than a counter
//! increment with the Prometheus exporter, and the two of them per side took calls/s from
//! about 3 % to about 10 % below a run without a recorder (`echostream-bench --only 2
//! --prometheus`, 64 callers). Call [`record_size_histograms`] before building servers and
//! clients when the distribution is worth that.

use echostream_types::Code;
use metrics::{Counter, Histogram, SharedString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The `rpc.system` label value.
pub const RPC_SYSTEM: &str = "echostream";
/// The `rpc.method` label of calls to a method the server does not have.
pub const UNKNOWN_METHOD_LABEL: &str = "_unknown";

/// Metric names (see the module documentation for kinds, units and labels).
pub mod names {
    /// Server call duration.
    pub const SERVER_DURATION: &str = "rpc.server.duration";
    /// Server calls received.
    pub const SERVER_REQUESTS: &str = "rpc.server.requests";
    /// Server answers sent, by status.
    pub const SERVER_RESPONSES: &str = "rpc.server.responses";
    /// Server request payload size.
    pub const SERVER_REQUEST_SIZE: &str = "rpc.server.request.size";
    /// Server response payload size.
    pub const SERVER_RESPONSE_SIZE: &str = "rpc.server.response.size";
    /// Client call duration.
    pub const CLIENT_DURATION: &str = "rpc.client.duration";
    /// Client calls made.
    pub const CLIENT_REQUESTS: &str = "rpc.client.requests";
    /// Client answers received, by status.
    pub const CLIENT_RESPONSES: &str = "rpc.client.responses";
    /// Client request payload size.
    pub const CLIENT_REQUEST_SIZE: &str = "rpc.client.request.size";
    /// Client response payload size.
    pub const CLIENT_RESPONSE_SIZE: &str = "rpc.client.response.size";
    /// Server request payload bytes in total.
    pub const SERVER_REQUEST_BYTES: &str = "rpc.server.request.bytes";
    /// Server response payload bytes in total.
    pub const SERVER_RESPONSE_BYTES: &str = "rpc.server.response.bytes";
    /// Client request payload bytes in total.
    pub const CLIENT_REQUEST_BYTES: &str = "rpc.client.request.bytes";
    /// Client response payload bytes in total.
    pub const CLIENT_RESPONSE_BYTES: &str = "rpc.client.response.bytes";
    /// Events sent.
    pub const EVENTS_SENT: &str = "echostream.events.sent";
    /// Events received.
    pub const EVENTS_RECEIVED: &str = "echostream.events.received";
    /// Events not delivered, by policy.
    pub const EVENTS_DROPPED: &str = "echostream.events.dropped";
    /// Application streams opened, by side.
    pub const STREAMS_OPENED: &str = "echostream.streams.opened";
    /// Incoming application streams refused, by reason.
    pub const STREAMS_REFUSED: &str = "echostream.streams.refused";
    /// Bytes sent, by kind.
    pub const BYTES_SENT: &str = "echostream.bytes.sent";
    /// Bytes received, by kind.
    pub const BYTES_RECEIVED: &str = "echostream.bytes.received";
    /// 0-RTT outcomes (client side).
    pub const ZERO_RTT: &str = "echostream.zero_rtt";
    /// Clock offset to the peer, per connection.
    pub const CLOCK_OFFSET: &str = "echostream.clock.offset";
    /// Clock offset error bound, per connection.
    pub const CLOCK_ERROR_BOUND: &str = "echostream.clock.error_bound";
    /// Timed-stream frames the jitter buffer dropped, by reason.
    pub const JITTER_DROPPED: &str = "echostream.jitter.dropped";
    /// Calls refused by a rate limit.
    pub const RATE_LIMITED: &str = "echostream.rate_limited";
    /// Connections accepted by a server (past the hello).
    pub const CONNECTIONS_ACCEPTED: &str = "echostream.connections.accepted";
    /// Connections open now.
    pub const CONNECTIONS_OPEN: &str = "echostream.connections.open";
    /// Connections a server refused, by reason.
    pub const CONNECTIONS_REFUSED: &str = "echostream.connections.refused";
}

/// Registers the descriptions and units of every metric with the installed recorder (an
/// exporter shows them as help text). Optional; call after installing the recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        names::SERVER_DURATION,
        Unit::Seconds,
        "Duration of calls handled, by method and status"
    );
    describe_counter!(names::SERVER_REQUESTS, "Calls received, by method");
    describe_counter!(names::SERVER_RESPONSES, "Answers sent, by method and status");
    describe_histogram!(
        names::SERVER_REQUEST_SIZE,
        Unit::Bytes,
        "Request payload size, by method"
    );
    describe_histogram!(
        names::SERVER_RESPONSE_SIZE,
        Unit::Bytes,
        "Response payload size, by method"
    );
    describe_histogram!(
        names::CLIENT_DURATION,
        Unit::Seconds,
        "Duration of calls made, by method and status"
    );
    describe_counter!(names::CLIENT_REQUESTS, "Calls made, by method");
    describe_counter!(names::CLIENT_RESPONSES, "Answers received, by method and status");
    describe_histogram!(
        names::CLIENT_REQUEST_SIZE,
        Unit::Bytes,
        "Request payload size, by method"
    );
    describe_histogram!(
        names::CLIENT_RESPONSE_SIZE,
        Unit::Bytes,
        "Response payload size, by method"
    );
    for (name, what) in [
        (
            names::SERVER_REQUEST_BYTES,
            "Request payload bytes received, by method",
        ),
        (
            names::SERVER_RESPONSE_BYTES,
            "Response payload bytes sent, by method",
        ),
        (
            names::CLIENT_REQUEST_BYTES,
            "Request payload bytes sent, by method",
        ),
        (
            names::CLIENT_RESPONSE_BYTES,
            "Response payload bytes received, by method",
        ),
    ] {
        describe_counter!(name, Unit::Bytes, what);
    }
    describe_counter!(names::EVENTS_SENT, "Events sent");
    describe_counter!(names::EVENTS_RECEIVED, "Events received");
    describe_counter!(names::EVENTS_DROPPED, "Events not delivered, by policy");
    describe_counter!(names::STREAMS_OPENED, "Application streams opened, by side");
    describe_counter!(
        names::STREAMS_REFUSED,
        "Incoming application streams refused, by reason"
    );
    describe_counter!(names::BYTES_SENT, Unit::Bytes, "Bytes sent, by kind");
    describe_counter!(names::BYTES_RECEIVED, Unit::Bytes, "Bytes received, by kind");
    describe_counter!(names::ZERO_RTT, "0-RTT early data outcomes");
    describe_gauge!(
        names::CLOCK_OFFSET,
        Unit::Seconds,
        "Peer clock minus local clock, per connection"
    );
    describe_gauge!(
        names::CLOCK_ERROR_BOUND,
        Unit::Seconds,
        "Bound on the clock offset's error, per connection"
    );
    describe_counter!(
        names::JITTER_DROPPED,
        "Timed-stream frames dropped by the jitter buffer, by reason"
    );
    describe_counter!(names::RATE_LIMITED, "Calls refused by a rate limit, by method");
    describe_counter!(names::CONNECTIONS_ACCEPTED, "Connections a server accepted");
    describe_gauge!(names::CONNECTIONS_OPEN, "Connections open now, by side");
    describe_counter!(
        names::CONNECTIONS_REFUSED,
        "Connections a server refused, by reason"
    );
}

/// Which side of a call records: the one answering it or the one making it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallSide {
    Server,
    Client,
}

/// The metric names of one side: (duration, requests, responses, request size, response
/// size, request bytes, response bytes).
fn names_of(side: CallSide) -> [&'static str; 7] {
    match side {
        CallSide::Server => [
            names::SERVER_DURATION,
            names::SERVER_REQUESTS,
            names::SERVER_RESPONSES,
            names::SERVER_REQUEST_SIZE,
            names::SERVER_RESPONSE_SIZE,
            names::SERVER_REQUEST_BYTES,
            names::SERVER_RESPONSE_BYTES,
        ],
        CallSide::Client => [
            names::CLIENT_DURATION,
            names::CLIENT_REQUESTS,
            names::CLIENT_RESPONSES,
            names::CLIENT_REQUEST_SIZE,
            names::CLIENT_RESPONSE_SIZE,
            names::CLIENT_REQUEST_BYTES,
            names::CLIENT_RESPONSE_BYTES,
        ],
    }
}

/// Whether handles made from now on include the size histograms.
static SIZE_HISTOGRAMS: AtomicBool = AtomicBool::new(false);

/// Records `rpc.*.request.size` and `rpc.*.response.size` histograms too, for the handles made
/// after this call (so call it before building servers and clients). Off by default: see the
/// module documentation for their cost. The byte counters are recorded either way.
pub fn record_size_histograms(on: bool) {
    SIZE_HISTOGRAMS.store(on, Ordering::Relaxed);
}

/// The handles of one method on one side, registered once; recording through them neither
/// allocates nor looks anything up.
#[derive(Debug)]
pub(crate) struct CallMetrics {
    side: CallSide,
    method: SharedString,
    requests: Counter,
    ok: Counter,
    ok_duration: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
    /// Request and response size histograms, when [`record_size_histograms`] asked for them.
    sizes: Option<(Histogram, Histogram)>,
}

impl CallMetrics {
    pub(crate) fn new(side: CallSide, method: &str) -> Arc<Self> {
        let method: SharedString = method.to_owned().into();
        let m = method.clone();
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut l = vec![
                metrics::Label::new("rpc.system", RPC_SYSTEM),
                metrics::Label::new("rpc.method", m.clone()),
            ];
            if let Some((k, v)) = extra {
                l.push(metrics::Label::new(k, v));
            }
            l
        };
        let ok = Some(("rpc.response.status_code", "OK"));
        let [duration, requests, responses, request_size, response_size, request_bytes, response_bytes] =
            names_of(side);
        let sizes = SIZE_HISTOGRAMS.load(Ordering::Relaxed).then(|| {
            (
                metrics::histogram!(request_size, labels(None)),
                metrics::histogram!(response_size, labels(None)),
            )
        });
        Arc::new(CallMetrics {
            side,
            requests: metrics::counter!(requests, labels(None)),
            ok: metrics::counter!(responses, labels(ok)),
            ok_duration: metrics::histogram!(duration, labels(ok)),
            request_bytes: metrics::counter!(request_bytes, labels(None)),
            response_bytes: metrics::counter!(response_bytes, labels(None)),
            sizes,
            method,
        })
    }

    /// A call began with a payload of `bytes`.
    pub(crate) fn started(&self, bytes: usize) {
        self.requests.increment(1);
        self.request_bytes.increment(bytes as u64);
        if let Some((request_size, _)) = &self.sizes {
            request_size.record(bytes as f64);
        }
    }

    /// A call that began at `started` ended: with an answer of `bytes`, or an error status.
    pub(crate) fn finished(&self, started: Instant, outcome: Result<usize, Code>) {
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(bytes) => {
                self.ok.increment(1);
                self.ok_duration.record(secs);
                self.response_bytes.increment(bytes as u64);
                if let Some((_, response_size)) = &self.sizes {
                    response_size.record(bytes as f64);
                }
            }
            // Errors are the rare path: their handles are looked up by label here.
            Err(code) => {
                let [duration, _, responses, ..] = names_of(self.side);
                let code = code_label(code);
                let labels = [
                    metrics::Label::new("rpc.system", RPC_SYSTEM),
                    metrics::Label::new("rpc.method", self.method.clone()),
                    metrics::Label::new("rpc.response.status_code", code),
                ];
                metrics::counter!(responses, labels.iter()).increment(1);
                metrics::histogram!(duration, labels.iter()).record(secs);
            }
        }
    }

    /// The method label these handles carry.
    pub(crate) fn method(&self) -> &str {
        &self.method
    }
}

/// The calling side's handles per method name, made on a method's first call. Names come from
/// the local program, not the peer; past [`MAX_CLIENT_METHODS`] names (a proxy forwarding
/// arbitrary names, say) further ones share the `_other` label.
#[derive(Debug, Default)]
pub(crate) struct CallMetricsCache {
    methods: std::sync::RwLock<std::collections::HashMap<String, Arc<CallMetrics>>>,
}

/// Distinct method labels one client side records before folding the rest into `_other`.
pub const MAX_CLIENT_METHODS: usize = 1024;

impl CallMetricsCache {
    pub(crate) fn get(&self, method: &str) -> Arc<CallMetrics> {
        if let Some(m) = self.methods.read().unwrap_or_else(|p| p.into_inner()).get(method) {
            return m.clone();
        }
        let mut methods = self.methods.write().unwrap_or_else(|p| p.into_inner());
        let key = if methods.len() >= MAX_CLIENT_METHODS && !methods.contains_key(method) {
            "_other"
        } else {
            method
        };
        methods
            .entry(key.to_owned())
            .or_insert_with(|| CallMetrics::new(CallSide::Client, key))
            .clone()
    }
}

/// A status code as a bounded label value.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::INTERNAL => "INTERNAL",
        Code::UNKNOWN_METHOD => "UNKNOWN_METHOD",
        Code::BAD_PAYLOAD => "BAD_PAYLOAD",
        Code::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        Code::CANCELLED => "CANCELLED",
        Code::HANDLER_PANICKED => "HANDLER_PANICKED",
        Code::UNAVAILABLE => "UNAVAILABLE",
        Code::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        Code::PERMISSION_DENIED => "PERMISSION_DENIED",
        Code::UNAUTHENTICATED => "UNAUTHENTICATED",
        Code::RATE_LIMITED => "RATE_LIMITED",
        Code::RESPONSE_TOO_LARGE => "RESPONSE_TOO_LARGE",
        Code::EARLY_DATA_REFUSED => "EARLY_DATA_REFUSED",
        c if c.0 >= Code::APPLICATION.0 => "APPLICATION",
        _ => "OTHER",
    }
}

/// A connection counted in `echostream.connections.open` while it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection(&'static str);

impl OpenConnection {
    pub(crate) fn new(side: &'static str) -> Self {
        metrics::gauge!(names::CONNECTIONS_OPEN, "side" => side).increment(1.0);
        OpenConnection(side)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(names::CONNECTIONS_OPEN, "side" => self.0).decrement(1.0);
    }
}

/// A server refused a connection for `reason` (`limit`, `rejected`, `hello`).
pub(crate) fn connection_refused(reason: &'static str) {
    metrics::counter!(names::CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// A server accepted a connection.
pub(crate) fn connection_accepted() {
    metrics::counter!(names::CONNECTIONS_ACCEPTED).increment(1);
}

/// A call refused by a rate limit (`method` is a bounded label).
pub(crate) fn rate_limited(method: &str) {
    metrics::counter!(names::RATE_LIMITED, "rpc.method" => method.to_owned()).increment(1);
}

/// The status code a failed call counts under on the calling side.
pub(crate) fn code_of(e: &crate::Error) -> Code {
    use crate::Error as E;
    match e {
        E::Remote { status, .. } | E::Status(status) => status.code(),
        E::Timeout { .. } => Code::DEADLINE_EXCEEDED,
        E::Cancelled { .. } => Code::CANCELLED,
        E::UnknownMethod { .. } => Code::UNKNOWN_METHOD,
        E::BadPayload { .. } => Code::BAD_PAYLOAD,
        E::RateLimited { .. } => Code::RATE_LIMITED,
        E::PermissionDenied { .. } => Code::PERMISSION_DENIED,
        E::Unauthenticated { .. } => Code::UNAUTHENTICATED,
        E::FrameTooLarge { .. } => Code::RESOURCE_EXHAUSTED,
        E::Connect { .. } | E::ConnectionClosed { .. } | E::Rejected { .. } => Code::UNAVAILABLE,
        _ => Code::INTERNAL,
    }
}

/// An event was handed to the connection's writer.
pub(crate) fn event_sent() {
    metrics::counter!(names::EVENTS_SENT).increment(1);
}

/// An event arrived.
pub(crate) fn event_received() {
    metrics::counter!(names::EVENTS_RECEIVED).increment(1);
}

/// An event was not delivered: `no_listener`, `refused`, `queue_full`, `subscription_full`,
/// `slow_consumer`.
pub(crate) fn event_dropped(policy: &'static str) {
    metrics::counter!(names::EVENTS_DROPPED, "policy" => policy).increment(1);
}

/// An application stream was opened (`opener`) or accepted (`acceptor`).
pub(crate) fn stream_opened(side: &'static str) {
    metrics::counter!(names::STREAMS_OPENED, "side" => side).increment(1);
}

/// An incoming stream was refused: `no_acceptor`, `busy`, `rejected`, `bad_header`.
pub(crate) fn stream_refused(reason: &'static str) {
    metrics::counter!(names::STREAMS_REFUSED, "reason" => reason).increment(1);
}

/// Counters registered on first use (the hot paths do not look them up again).
struct ByteCounters {
    stream_sent: metrics::Counter,
    stream_received: metrics::Counter,
    control_received: metrics::Counter,
    control_sent: metrics::Counter,
}

fn byte_counters() -> &'static ByteCounters {
    static COUNTERS: std::sync::OnceLock<ByteCounters> = std::sync::OnceLock::new();
    COUNTERS.get_or_init(|| ByteCounters {
        stream_sent: metrics::counter!(names::BYTES_SENT, "kind" => "stream"),
        stream_received: metrics::counter!(names::BYTES_RECEIVED, "kind" => "stream"),
        control_received: metrics::counter!(names::BYTES_RECEIVED, "kind" => "control"),
        control_sent: metrics::counter!(names::BYTES_SENT, "kind" => "control"),
    })
}

/// Application stream data written.
pub(crate) fn stream_bytes_sent(n: usize) {
    byte_counters().stream_sent.increment(n as u64);
}

/// Application stream data read.
pub(crate) fn stream_bytes_received(n: usize) {
    byte_counters().stream_received.increment(n as u64);
}

/// Control-stream bytes written.
pub(crate) fn control_bytes_sent(n: usize) {
    byte_counters().control_sent.increment(n as u64);
}

/// Control-stream bytes read.
pub(crate) fn control_bytes_received(n: usize) {
    byte_counters().control_received.increment(n as u64);
}

/// What a server did with this client's 0-RTT early data: `accepted` or `refused`.
pub(crate) fn zero_rtt(outcome: &'static str) {
    metrics::counter!(names::ZERO_RTT, "outcome" => outcome).increment(1);
}

/// The clock estimate of connection `id` (after each probe burst).
pub(crate) fn clock(id: u64, offset_nanos: i64, error_bound: std::time::Duration) {
    let id = id.to_string();
    metrics::gauge!(names::CLOCK_OFFSET, "connection" => id.clone()).set(offset_nanos as f64 / 1e9);
    metrics::gauge!(names::CLOCK_ERROR_BOUND, "connection" => id).set(error_bound.as_secs_f64());
}

/// The jitter buffer dropped a frame: `late` or `overflow`.
pub(crate) fn jitter_dropped(reason: &'static str) {
    metrics::counter!(names::JITTER_DROPPED, "reason" => reason).increment(1);
}
