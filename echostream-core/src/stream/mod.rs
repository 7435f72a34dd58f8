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
//!
//! # Behaviour
//!
//! What the stream layer promises; `ARCHITECTURE.md` summarises it.
//!
//! ## Rules and how they hold
//!
//! - **No silent loss.** The opener reports a clean end of data only after the
//!   error half has ended *without* an error block; otherwise the read returns
//!   the error. On the acceptor, `write_eof` and `close` end the error half
//!   cleanly (no error can follow), so `error_write` after `write_eof` is
//!   refused (`write-closed`). How `with_data_flush` and a drop without close
//!   end the halves: `docs/PROTOCOL.md` §12.
//! - **Connection loss** surfaces as `StreamError::ConnectionLost` on both
//!   sides (quinn reports the connection error on every stream), never as a
//!   clean end.
//! - **Every wait is bounded** (header, partner half, answer: the pairing and
//!   open timeouts), so the pairing table drains to zero; a queued stream is
//!   answered only when `IncomingStreams` yields it (lazy acceptance).
//! - **Stream credit grows, never shrinks.** The per-connection QUIC stream
//!   limits start at the transport's values (100 bidirectional, 100
//!   unidirectional: idle memory per connection stays low) and double when more
//!   than half are in use, up to `StreamOptions::max_concurrent_streams`
//!   (16,384), with `set_max_concurrent_bi_streams`/`_uni_streams` on the live
//!   connection: the acceptor raises the bidirectional limit as data halves
//!   arrive, the opener the unidirectional limit as it opens streams (each
//!   needs an error half). QUIC cannot take stream credit back.
//!   Independently, `StreamOptions::max_streams_per_connection` (16,384) caps
//!   the XStreams one connection holds in its tables (both directions: live,
//!   being opened or accepted, orphan error halves); beyond it an incoming data
//!   half is refused `BUSY` before its header is read, an orphan error half is
//!   stopped with `0x18`, and a local open fails with `StreamError::Busy`.
//!
//! ## States
//!
//! `open` → `write-closed` (this side's `write_eof`) / `read-closed` (clean
//! end of the peer's data) → `closed` (both, or `close()`); any state →
//! `error` (an error written or received, the peer dropped the stream, the
//! connection lost). Every refused operation returns
//! `StreamError::InvalidState { stream, op, state }`, except in the error
//! state when the cause came from the peer or the connection: then the cause
//! itself is returned again (the cached remote error, `ConnectionLost`, ...).
//! `close()` is accepted in the error state (it releases the halves).
//!
//! ## Typed and time-synced streams
//!
//! `create_stream(name)` returns a `StreamSender` (`send(any serde value)`), a
//! stream handler gets `StreamReceiver<T>` (`recv() -> Option<T>`;
//! `StreamReceiver` alone means raw byte frames, `Vec<u8>`), and
//! `StreamDuplex<T>` carries both directions. Messages are length-prefixed and
//! checked against `max_message_size` (16 MiB) before buffering; a message too
//! large or undecodable ends that stream only. A stream handler's `Err`, or a
//! panic, reaches the sender as `Error::Remote { method: <stream name>, status
//! }` through the error half; a handler that returns normally closes the stream
//! cleanly (`docs/PROTOCOL.md` §13).
//!
//! `create_stream(name).with_time_sync()` (adaptive playout delay) or
//! `.with_playout_delay(PlayoutDelay::Fixed(d) | PlayoutDelay::Adaptive { min,
//! max, margin })` opens an ordinary typed stream and records the delay choice
//! in its metadata; `send_with_timestamp(msg, ts)` (`ts` on the sender's
//! clock, `Peer::local_clock()`) or `send_now(msg)` sends timestamped
//! messages. The acceptor takes a `TimedReceiver<T>` (a `#[stream_handler]` /
//! `stream_handler_fn` parameter, or `TimedReceiver::new(xstream)` on a stream
//! from `streams().accept(name)`, which is how a client receives from a
//! server). Its reader task starts the connection's clock sync
//! (`Peer::clock()`), reads messages from the start and stamps their arrival on the local clock, and once 4 probes have
//! been answered (10 s timeout, then `recv_aligned` fails) maps each sender
//! timestamp to the local clock (`SyncedClock::to_local`) and pushes it into
//! the jitter buffer. `recv_aligned()` returns the message and its aligned time
//! (local clock) no earlier than aligned time + playout delay: it sleeps on a
//! tokio timer until 1.5 ms before the due time and then yields in a loop,
//! because tokio timers have a 1 ms granularity.
//!
//! ## Jitter buffer (`stream::jitter`, sans-IO)
//!
//! `JitterBuffer<T>` is plain logic: `push(item, aligned, arrival) ->
//! PushOutcome`, `next_due()`, `poll(now) -> Option<(T, aligned)>`, `stats()`.
//!
//! - Frames are kept in a `BTreeMap` keyed by (aligned time, arrival sequence)
//!   and released in that order, each no earlier than aligned + the delay in
//!   force at release time.
//! - A frame arriving after aligned + delay, or with an aligned time before the
//!   last released one (it could only be released out of order), is dropped and
//!   counted `late`. At most `max_frames` (default 1024) are buffered; when full
//!   the incoming frame is dropped and counted `overflow` (tail drop: scheduled
//!   frames keep their slots). Frames read before the clock is synced wait in a
//!   queue with the same bound.
//! - Invariant (tested with proptest): `received = released + late + overflow
//!   + buffered`; releases are in order and never early.
//! - Delay: `Fixed(d)`, or `Adaptive { min, max, margin }`: starts at `max`;
//!   after 20 frames, every 25 frames and at once after a late frame, target =
//!   clamp(p99 of the last 500 transit times + margin, min, max), where transit
//!   = arrival − aligned (one-way delay plus clock-sync error). The delay jumps
//!   to the first target and grows to a larger one at once, but shrinks by at
//!   most `MAX_SHRINK` (2 ms) per recomputation: buffered frames are due at
//!   aligned + the current delay, so a sudden shrink would release them in a
//!   burst.
//! - Stats: received, released, late, overflow, buffered, the delay, the
//!   RFC 3550 interarrival jitter (`J += (|D| − J) / 16` over successive
//!   transit differences) and the transit p99.

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
