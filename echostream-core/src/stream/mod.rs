//! Application streams: [`XStream`] pairs (a bidirectional data half plus a
//! one-way error half from the acceptor to the opener), the control handle
//! that accepts and opens them ([`Streams`]), and typed message streams on
//! top ([`StreamSender`], [`StreamReceiver`], [`StreamDuplex`]).
//!
//! # Layout
//! The bytes of the pairing protocol and of typed messages are in
//! `echostream_types::{pairing, message}` (sans-IO, unit-tested, fuzzed).
//! - `xstream`: [`XStream`], one file per job: `mod.rs` holds the type, its states
//!   ([`StreamState`]), construction, accessors and `close`; `read`, `write` and `error_half`
//!   hold the read path, the write path and the error half (`error_write`, `error_read`,
//!   the opener's watch for the peer's error), each as an `impl XStream` block; `interrupt`
//!   runs an operation while watching for the stream failing or closing.
//! - `control`: [`Streams`], [`IncomingStreams`], the decision policy.
//! - `incoming`: a stream the peer opened, waiting for its acceptor (used by `conn` and
//!   `control`, which do not import each other).
//! - `conn`: per-connection state: pairing table, stream-limit growth, the
//!   opening and accepting handshakes; implements `protocol::StreamHost`, through which
//!   the protocol layer hands over the streams the peer opens.
//! - `message`: typed-message framing over an XStream (write one, read the next).
//! - `typed`: the typed endpoints [`StreamSender`], [`StreamReceiver`],
//!   [`StreamDuplex`] and the `create_stream` builder.
//! - `timed`: [`TimedReceiver`], messages released at their sender timestamp.
//! - `handler`: [`StreamHandler`], `stream_handler_fn`, the `#[stream_handler]`
//!   registry.
//! - `io`: [`XStreamIo`], tokio `AsyncRead`/`AsyncWrite` over an XStream.
//! - `error`: [`StreamError`].

mod conn;
mod control;
mod error;
mod handler;
mod incoming;
mod io;
pub mod jitter;
mod message;
mod timed;
mod typed;
mod xstream;

pub(crate) use conn::ConnStreams;
pub(crate) use control::Registry;
pub use control::{IncomingStreams, StreamDecision, StreamRequest, StreamRequests, Streams};
pub use echostream_types::message::TIMED_FLAG;
pub use error::StreamError;
pub use handler::{
    registered_stream_handlers, stream_handler_fn, FnStreamHandler, FromXStream, StreamHandler,
    StreamHandlerRegistration, StreamHandlerResult,
};
pub use io::XStreamIo;
pub use jitter::{JitterBuffer, JitterConfig, JitterStats, PlayoutDelay, PushOutcome};
pub use timed::TimedReceiver;
pub use typed::{CreateStream, StreamDuplex, StreamReceiver, StreamSender, PLAYOUT_METADATA};
pub use xstream::{StreamState, XStream};

use std::time::Duration;

/// Which end of a stream this side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Opened the stream; reads the error half.
    Opener,
    /// Accepted the stream; may write the error half.
    Acceptor,
}

/// Limits and timeouts of streams, per server or client.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StreamOptions {
    /// Streams of one name waiting for the application to take them; beyond
    /// it openers are refused as busy (default 64).
    pub accept_queue: usize,
    /// Requests waiting for an approve-via-event decision; beyond it openers
    /// are refused as busy (default 64).
    pub decision_queue: usize,
    /// How long a half waits for its partner: the opener for the error half
    /// after the acceptance, the acceptor for the header (default 10 s).
    pub pairing_timeout: Duration,
    /// How long `open_stream` waits for the acceptor's answer (default 30 s).
    pub open_timeout: Duration,
    /// How long an approve-via-event decision may take (default 10 s).
    pub decision_timeout: Duration,
    /// Largest error block written or accepted (default 64 KiB).
    pub max_error_size: usize,
    /// Largest typed message accepted or sent (default 16 MiB).
    pub max_message_size: usize,
    /// Most bytes `read_to_end` collects (default 256 MiB).
    pub max_read_to_end: usize,
    /// Ceiling for the per-connection stream limits, which start at the
    /// transport's values and double as streams are used (default 16,384).
    pub max_concurrent_streams: u32,
    /// Most XStreams one connection may hold at once, counting both
    /// directions: live streams, streams being opened or accepted (data
    /// halves waiting for their header, decision or acceptor) and error
    /// halves held in the pairing table without their data half. Beyond it
    /// an incoming data half is refused as busy (the reason names the limit),
    /// an orphan error half is stopped with code `0x18` (`STREAM_LIMIT`),
    /// and a local `open_stream` fails with [`StreamError::Busy`]
    /// (default 16,384, the same as the transport ceiling).
    pub max_streams_per_connection: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            accept_queue: 64,
            decision_queue: 64,
            pairing_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(30),
            decision_timeout: Duration::from_secs(10),
            max_error_size: 64 * 1024,
            max_message_size: 16 * 1024 * 1024,
            max_read_to_end: 256 * 1024 * 1024,
            max_concurrent_streams: 16_384,
            max_streams_per_connection: 16_384,
        }
    }
}

impl StreamOptions {
    /// Defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`StreamOptions::accept_queue`].
    pub fn accept_queue(mut self, n: usize) -> Self {
        self.accept_queue = n.max(1);
        self
    }

    /// Sets [`StreamOptions::decision_queue`].
    pub fn decision_queue(mut self, n: usize) -> Self {
        self.decision_queue = n.max(1);
        self
    }

    /// Sets [`StreamOptions::max_error_size`].
    pub fn max_error_size(mut self, bytes: usize) -> Self {
        self.max_error_size = bytes;
        self
    }

    /// Sets [`StreamOptions::max_read_to_end`].
    pub fn max_read_to_end(mut self, bytes: usize) -> Self {
        self.max_read_to_end = bytes;
        self
    }

    /// Sets [`StreamOptions::pairing_timeout`].
    pub fn pairing_timeout(mut self, d: Duration) -> Self {
        self.pairing_timeout = d;
        self
    }

    /// Sets [`StreamOptions::open_timeout`].
    pub fn open_timeout(mut self, d: Duration) -> Self {
        self.open_timeout = d;
        self
    }

    /// Sets [`StreamOptions::decision_timeout`].
    pub fn decision_timeout(mut self, d: Duration) -> Self {
        self.decision_timeout = d;
        self
    }

    /// Sets [`StreamOptions::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`StreamOptions::max_concurrent_streams`].
    pub fn max_concurrent_streams(mut self, n: u32) -> Self {
        self.max_concurrent_streams = n;
        self
    }

    /// Sets [`StreamOptions::max_streams_per_connection`] (at least 1).
    pub fn max_streams_per_connection(mut self, n: usize) -> Self {
        self.max_streams_per_connection = n.max(1);
        self
    }
}
