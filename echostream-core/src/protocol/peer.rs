//! [`Peer`], the handle to one connection, and all its methods: calls, events, closing, and
//! what the driver tasks call to carry out the frames they read.

use super::budget::Budgets;
use super::call::{
    call_error, decode_result, encode_value, going_away, time_left, too_large_response, Answer, CancelGuard,
};
use super::clock::ClockSync;
use super::driver::{self, Outgoing};
use super::encode::{encode_frame, encode_with, COPY_BELOW};
use super::state::{CallState, Closed};
use super::{
    describe_close, outbox, peer_fingerprint, side, timesync, CallOptions, ConnectionInfo, EarlyStart,
    HandshakeOutcome, Inbound, Payload, ProtocolConfig, Role, Shared, StreamHost, SyncedClock, ZeroRtt,
};
use crate::connection::tls::Fingerprint;
use crate::Error;
use bytes::{Bytes, BytesMut};
use echostream_types::frame::LENGTH_PREFIX;
use echostream_types::{
    CloseCode, Code, Codec, Frame, FrameError, Metadata, RequestRef, ResponseFrame, Status,
};
use futures::FutureExt;
use serde::{de::DeserializeOwned, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A handle to one connection, usable from either side: send requests and
/// events to the peer at the other end. Cheap to clone; calls fail with
/// [`Error::ConnectionClosed`] once the peer has gone.
#[derive(Clone)]
pub struct Peer {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("remote", &self.shared.remote)
            .field("connection_id", &self.shared.id)
            .field("role", &self.shared.state.role())
            .finish()
    }
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

impl Peer {
    /// Starts the tasks of a connection whose handshake has completed. `inbound` runs the
    /// peer's requests and events; `streams` is the registry of accepted stream names.
    pub(crate) fn start(
        conn: quinn::Connection,
        role: Role,
        hs: HandshakeOutcome,
        config: Arc<ProtocolConfig>,
        streams: Box<dyn StreamHost>,
        inbound: Arc<dyn Inbound>,
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
        let credit = super::credit::EventCredit::new(config.event_queue);
        let peer_compression = OnceLock::new();
        if !welcome_pending {
            credit.start(&hs.peer_hello.metadata);
            let _ = peer_compression.set(super::compress::accepted_by(&hs.peer_hello.metadata));
            let _ = peer_hello.set(super::application_hello_metadata(hs.peer_hello.metadata));
        }
        let (ev_tx, ev_rx) = mpsc::channel(config.event_queue.max(1));
        let fingerprint = OnceLock::new();
        if let Some(f) = peer_fingerprint(&conn) {
            let _ = fingerprint.set(f);
        }
        let shared = Arc::new(Shared {
            side: side::SideStreams::new(&config),
            budgets: Budgets::new(&config),
            state: CallState::new(role, config.max_concurrent_requests, welcome_pending, zero_rtt)
                .frame_limit(config.max_frame_size),
            streams,
            remote: conn.remote_address(),
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            conn,
            fingerprint,
            peer_hello,
            peer_max_frame: AtomicU32::new(hs.peer_hello.max_frame_size),
            established,
            tls_done: tls_done.clone(),
            config,
            inbound,
            out: Arc::new(out_tx),
            calls,
            events: ev_tx,
            events_dropped: AtomicU64::new(0),
            credit,
            peer_compression,
            clock_sync: OnceLock::new(),
            pings: Default::default(),
        });
        let peer = Peer { shared };
        let streams = (hs.send, hs.recv, hs.leftover);
        driver::spawn(&peer, streams, out_rx, lent, client_early, ev_rx, tls_done);
        peer
    }

    /// Reply permits and byte budgets of this connection.
    pub(crate) fn budgets(&self) -> &Budgets {
        &self.shared.budgets
    }

    /// The RPC layer's side of this connection (it implements [`Inbound`]).
    pub(crate) fn inbound(&self) -> &Arc<dyn Inbound> {
        &self.shared.inbound
    }

    /// The stream layer's state of this connection (see `stream::ConnStreams`).
    pub(crate) fn stream_host(&self) -> &dyn StreamHost {
        &*self.shared.streams
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
        self.shared.state.zero_rtt()
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
            calls_pending: self.shared.state.pending_len(),
            requests_running: self.shared.state.running_len(),
            zero_rtt: self.zero_rtt(),
            congestion_window: stats.path.cwnd,
            mtu: stats.path.current_mtu,
            streams_opened: self.shared.streams.live_streams().0,
            streams_accepted: self.shared.streams.live_streams().1,
            clock: self.shared.clock_sync.get().and_then(|sync| {
                let clock = SyncedClock { sync: sync.clone() };
                Some(super::ClockEstimate {
                    offset_nanos: clock.offset_nanos()?,
                    error_bound: clock.error_bound()?,
                    drift_ppm: clock.drift_ppm()?,
                })
            }),
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
        let sync = self
            .shared
            .clock_sync
            .get_or_init(|| ClockSync::start(&self.shared));
        SyncedClock { sync: sync.clone() }
    }

    /// Current round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.shared.conn.rtt()
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.state.closed().map(|c| c.reason.clone())
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
        self.shared.state.closed().is_some()
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.state.closed().is_some() || self.shared.conn.close_reason().is_some()
    }

    /// Events of the peer dropped on arrival because this connection's event queue was full:
    /// the reader never waits for room, so that no listener can stall it. A well-behaved peer
    /// is held back by event credit and never gets here; a peer that ignores credit (or
    /// announces none) does. Each drop is also counted in `echostream.events.dropped` (policy
    /// `queue_full`) and logged.
    pub fn events_dropped(&self) -> u64 {
        self.shared.events_dropped.load(Ordering::Relaxed)
    }

    /// Number of the peer's requests running here now.
    pub fn inflight_requests(&self) -> usize {
        self.shared.state.running_len()
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
        let payload = encode_value(codec, &args, method, "argument")?;
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
        decode_result(codec, &bytes, method)
    }

    /// Calls `method` with an already encoded argument and returns the
    /// encoded result (for proxies and tools that do not know the types).
    pub async fn request_raw(
        &self,
        method: &str,
        args: Payload,
        opts: CallOptions,
    ) -> Result<(Codec, Bytes), Error> {
        let mut opts = opts;
        super::trace::inject(&mut opts.metadata);
        let metrics = self.shared.config.call_metrics.get(method);
        metrics.started(args.bytes.len());
        let started = Instant::now();
        let result = self.request_answer(method, args, opts).await;
        let outcome = result
            .as_ref()
            .map(|(_, b)| b.len())
            .map_err(crate::metrics::code_of);
        metrics.finished(started, outcome);
        result
    }

    /// [`Peer::request_raw`] without the metrics: once, or again after the handshake when the
    /// server refused it as early data.
    async fn request_answer(
        &self,
        method: &str,
        args: Payload,
        opts: CallOptions,
    ) -> Result<(Codec, Bytes), Error> {
        let early = self.shared.state.role() == Role::Client && self.is_early();
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
                        opts.timeout = Some(time_left(t, started));
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
        if shared.state.peer_going_away() {
            return Err(going_away(shared.remote));
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
        if shared.state.role() == Role::Client && !may_go_early && self.is_early() {
            // Not safe to replay: hold it until the handshake completes.
            tracing::debug!(method, "call held until the TLS handshake completes");
            self.wait_established().await?;
        }
        let id = shared.state.next_id();
        let (tx, rx) = oneshot::channel();
        shared.state.insert_pending(id, tx);
        // The end is recorded before the waiting calls are failed: a call that missed that
        // sweep sees the end here.
        if shared.state.closed().is_some() {
            shared.state.remove_pending(id);
            return Err(self.closed_error());
        }
        // From here on, leaving early (error, timeout, or the caller dropping
        // this future) must remove the entry and tell the peer.
        let mut guard = CancelGuard::new(self, id);
        // What is left of the timeout travels with the request (relative, so clock skew does
        // not matter).
        let deadline = timeout.map(|t| time_left(t, started));
        let packed = self.deflate(args.codec, &args.bytes, opts.compression);
        let (codec, payload) = packed
            .as_ref()
            .map_or((args.codec, &args.bytes), |(c, b)| (*c, b));
        let request = RequestRef {
            id,
            method,
            codec,
            deadline,
            metadata: &opts.metadata,
            payload,
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
            Ok(r) => r.map_err(|e| call_error(method, timeout, e)),
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Whether a call of ours with this id still waits for its response.
    pub(super) fn awaits_response(&self, id: u64) -> bool {
        self.shared.state.awaits_response(id)
    }

    /// Measures one round trip on the control stream: sends a `PING` frame and waits for the
    /// peer's `PONG` (every EchoStream peer answers, without running a handler). Fails after
    /// `timeout` with [`Error::Timeout`] (method `echostream.ping`), or when the connection
    /// closes, or at once when 64 pings are already waiting on this connection.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        super::ping::round_trip(self, timeout).await
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
        self.shared.state.set_going_away();
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
    pub(super) fn check_open(&self) -> Result<(), Error> {
        if self.end_recorded() {
            return Err(self.closed_error());
        }
        Ok(())
    }

    pub(super) fn closed_error(&self) -> Error {
        match self.shared.state.closed() {
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

    pub(super) fn mark_closed_from(&self, e: &quinn::ConnectionError) {
        let (code, reason) = describe_close(e);
        self.mark_closed(code, reason);
    }

    pub(super) fn mark_closed(&self, code: Option<CloseCode>, reason: String) {
        self.record_close(Closed {
            code,
            reason,
            peer_violation: false,
        });
    }

    /// Records why the connection ended, fails every waiting call and aborts
    /// the peer's handlers (their answers could not be delivered).
    fn record_close(&self, closed: Closed) {
        let Some((pending, running)) = self.shared.state.record_close(closed) else {
            return;
        };
        for tx in pending {
            let _ = tx.send(Err(self.closed_error()));
        }
        for h in running {
            h.abort();
        }
        tracing::debug!(reason = self.close_reason(), "connection ended");
    }

    /// Aborts every call of the peer still running here and answers each with
    /// `CANCELLED` (a shutdown whose grace period ran out).
    pub(crate) async fn cancel_inflight(&self, why: &str) {
        for (id, (h, method)) in self.shared.state.drain_running() {
            h.abort();
            tracing::warn!(method, id, why, "call cancelled");
            let msg = format!("`{method}` was cancelled: {why}");
            self.send_response(id, Err(Status::new(Code::CANCELLED, msg)))
                .await;
        }
    }

    /// Encodes a frame and queues it, or sends it on its own stream when it
    /// is large and may travel out of order.
    pub(super) async fn send_frame(
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
            return side::send(self, head, tail, what).await;
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
    pub(super) fn note_write_failure(&self, e: outbox::Closed) {
        match e {
            outbox::Closed::Gone => {}
            outbox::Closed::Write(quinn::WriteError::ConnectionLost(e)) => self.mark_closed_from(&e),
            outbox::Closed::Write(e) => {
                tracing::debug!(error = %e, "control stream write failed");
                self.mark_closed(None, format!("control stream write failed: {e}"));
            }
        }
    }

    /// Runs the rest of a call of the peer (one its handler did not finish on the first poll)
    /// in a task of its own, registered so that a cancel or the connection's end aborts it;
    /// the task sends the answer. Still counted as running while it waits for room in the
    /// write queue, so a peer that does not read its answers cannot grow the number of tasks.
    pub(crate) fn spawn_call<F>(&self, id: u64, method: String, rest: F)
    where
        F: std::future::Future<Output = Result<Payload, Status>> + Send + 'static,
    {
        let peer = self.clone();
        self.shared.state.register_running(id, method, move || {
            tokio::spawn(async move {
                let result = rest.await;
                peer.send_response(id, result).await;
                peer.shared.state.finish_running(id);
            })
            .abort_handle()
        });
    }

    /// The refusal of a request for `method` that arrived as 0-RTT early data, when its handler
    /// is not `idempotent` (see [`Peer::is_early`]).
    pub(crate) fn refuse_early(&self, method: &str, idempotent: bool) -> Option<Status> {
        self.shared
            .state
            .refuse_early(method, idempotent, || self.is_early())
    }

    /// Places an answer the reader produced: small ones are appended to `replies` (the reader
    /// hands the batch to the writer); one too large for that, or any while the writer is
    /// congested (the reader holds batches it had no room for), goes from a short task of its
    /// own holding a reply permit (which may use a side stream). Never waits: with no permit
    /// left, a large answer comes back as [`Placed::NoRoom`].
    pub(super) fn answer(&self, answer: Answer, replies: &mut BytesMut, congested: bool) -> Placed {
        let Answer { id, result } = answer;
        if congested {
            if let Some(permit) = self.shared.budgets.reply_permit() {
                self.respond_later(permit, id, result);
                return Placed::Later;
            }
        }
        let mark = replies.len();
        let frame = self.response_frame(id, result);
        match frame.encode_split_ref(replies) {
            Ok(tail) if replies.len() - mark + tail.len() <= self.shared.config.inline_threshold => {
                if tail.len() < COPY_BELOW {
                    replies.extend_from_slice(tail);
                    Placed::Batched
                } else {
                    Placed::Tail(tail.clone())
                }
            }
            _ => {
                replies.truncate(mark);
                let Frame::Response(ResponseFrame { id, result }) = frame else {
                    return Placed::Batched;
                };
                let result = result.map(|(codec, bytes)| Payload { codec, bytes });
                match self.shared.budgets.reply_permit() {
                    Some(permit) => {
                        self.respond_later(permit, id, result);
                        Placed::Later
                    }
                    None => Placed::NoRoom(Answer { id, result }),
                }
            }
        }
    }

    /// Answers from a short task, which holds one of the connection's reply permits
    /// (`Budgets`) until the answer is written.
    pub(super) fn respond_later(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        id: u64,
        result: Result<Payload, Status>,
    ) {
        let peer = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            peer.send_response(id, result).await
        });
    }

    /// The response frame of a result (a handler's payload is compressed already, if at all:
    /// `Context::reply_payload`).
    fn response_frame(&self, id: u64, result: Result<Payload, Status>) -> Frame {
        Frame::Response(ResponseFrame {
            id,
            result: result.map(|p| (p.codec, p.bytes)),
        })
    }

    pub(super) async fn send_response(&self, id: u64, result: Result<Payload, Status>) {
        let frame = self.response_frame(id, result);
        match self
            .send_frame(&frame, || format!("response to request {id}"), true)
            .await
        {
            Ok(()) => {}
            Err(Error::FrameTooLarge { size, limit, .. }) => {
                tracing::warn!(id, size, limit, "response too large for the peer");
                let frame = too_large_response(id, size, limit);
                let _ = self.send_frame(&frame, || "error response".into(), false).await;
            }
            Err(e) => tracing::debug!(id, error = %e, "response not sent"),
        }
    }
}

/// Where [`Peer::answer`] put an answer.
pub(super) enum Placed {
    /// Appended to the reader's batch.
    Batched,
    /// Its head is in the batch; this payload follows it uncopied.
    Tail(Bytes),
    /// Sent from a task of its own.
    Later,
    /// Too large for the batch and no reply permit is free: the reader waits for one.
    NoRoom(Answer),
}
