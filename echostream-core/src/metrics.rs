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
//! | `rpc.server.request.size` | histogram, bytes | `rpc.system`, `rpc.method` |
//! | `rpc.server.response.size` | histogram, bytes | `rpc.system`, `rpc.method` |
//! | `echostream.rate_limited` | counter | `rpc.method` |
//! | `echostream.connections.accepted` | counter | |
//! | `echostream.connections.open` | gauge | `side` (`server`) |
//! | `echostream.connections.refused` | counter | `reason` (`limit`: connection limit; `rejected`: authenticator or decision policy; `hello`: no valid hello in time) |
//!
//! `rpc.response.status_code` is `OK` or the status code's name (`UNKNOWN_METHOD`,
//! `BAD_PAYLOAD`, `DEADLINE_EXCEEDED`, ..., `APPLICATION` for application codes).

use echostream_types::{Code, Status};
use metrics::{Counter, Histogram, SharedString};
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
    describe_counter!(names::RATE_LIMITED, "Calls refused by a rate limit, by method");
    describe_counter!(names::CONNECTIONS_ACCEPTED, "Connections a server accepted");
    describe_gauge!(names::CONNECTIONS_OPEN, "Connections open now, by side");
    describe_counter!(
        names::CONNECTIONS_REFUSED,
        "Connections a server refused, by reason"
    );
}

/// The handles of one method a server answers, registered once; recording through them neither
/// allocates nor looks anything up.
#[derive(Debug)]
pub(crate) struct CallMetrics {
    method: SharedString,
    requests: Counter,
    ok: Counter,
    ok_duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
}

impl CallMetrics {
    pub(crate) fn new(method: &str) -> Arc<Self> {
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
        Arc::new(CallMetrics {
            requests: metrics::counter!(names::SERVER_REQUESTS, labels(None)),
            ok: metrics::counter!(names::SERVER_RESPONSES, labels(ok)),
            ok_duration: metrics::histogram!(names::SERVER_DURATION, labels(ok)),
            request_size: metrics::histogram!(names::SERVER_REQUEST_SIZE, labels(None)),
            response_size: metrics::histogram!(names::SERVER_RESPONSE_SIZE, labels(None)),
            method,
        })
    }

    /// A call began with a payload of `bytes`.
    pub(crate) fn started(&self, bytes: usize) {
        self.requests.increment(1);
        self.request_size.record(bytes as f64);
    }

    /// A call that began at `started` ended: with an answer of `bytes`, or an error status.
    pub(crate) fn finished(&self, started: Instant, outcome: Result<usize, &Status>) {
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(bytes) => {
                self.ok.increment(1);
                self.ok_duration.record(secs);
                self.response_size.record(bytes as f64);
            }
            // Errors are the rare path: their handles are looked up by label here.
            Err(status) => {
                let code = code_label(status.code());
                let labels = [
                    metrics::Label::new("rpc.system", RPC_SYSTEM),
                    metrics::Label::new("rpc.method", self.method.clone()),
                    metrics::Label::new("rpc.response.status_code", code),
                ];
                metrics::counter!(names::SERVER_RESPONSES, labels.iter()).increment(1);
                metrics::histogram!(names::SERVER_DURATION, labels.iter()).record(secs);
            }
        }
    }

    /// The method label these handles carry.
    pub(crate) fn method(&self) -> &str {
        &self.method
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
