//! The server: accepts connections and serves handlers on them.

use crate::connection;
use crate::connection::client_auth::PeerCertificate;
use crate::connection::tls::{Fingerprint, ServerIdentity};
use crate::protocol::{
    server_read_hello, server_send_welcome, ConnectionInfo, Delivery, Peer, ProtocolConfig, Role,
};
use crate::rpc::{PeerIdentity, Router, Subscription};
use crate::{Error, Result};
use bytes::BytesMut;
use echostream_types::{CloseCode, Codec, EventFrame, Frame, Metadata};
use futures::FutureExt;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

mod builder;
mod status;
pub use builder::ServerBuilder;
pub use status::{ConnectionStatus, ServerLimits, ServerStatus};

struct ServerShared {
    router: Arc<Router>,
    protocol: Arc<ProtocolConfig>,
    /// Live connections by connection id.
    peers: Mutex<HashMap<u64, Peer>>,
    /// Set, under the `peers` lock, when the graceful shutdown takes its list of connections
    /// to close: a connection admitted later (its admission or handshake was still running)
    /// is not on that list, and closes itself when it finds this set.
    closing: AtomicBool,
    handshake_timeout: Duration,
    shutdown: ShutdownHandle,
    /// Connected/disconnected notifications; lagging receivers miss the oldest.
    events: broadcast::Sender<ConnectionEvent>,
    policy: ConnectionPolicy,
    max_connections: usize,
    /// Connections past the TLS handshake but not yet admitted.
    connecting: AtomicUsize,
    slow_peer_timeout: Duration,
    /// Serve clients' 0-RTT early data (see [`ServerBuilder::zero_rtt`]).
    zero_rtt: bool,
    local_addr: SocketAddr,
    fingerprint: Fingerprint,
    /// Set once the graceful shutdown has finished.
    stopped: watch::Sender<bool>,
    /// Authenticator and admission control (see `rpc::security`).
    guard: Arc<crate::rpc::security::ServerGuard>,
    /// Health statuses (see `rpc::health`).
    health: Arc<crate::rpc::health::Health>,
}

/// How long `run()` waits, after closing every connection, for the tasks and stream handles
/// that still hold one (a stream handler returning after its connection-lost error), and so
/// the UDP socket, before it returns anyway.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Triggers a graceful shutdown of a running [`RpcServer`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Starts the shutdown: stop accepting, send go-away, let calls in flight
    /// finish within the grace period, then close every connection.
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }
}

/// How incoming connections are admitted.
#[derive(Clone, Debug, Default)]
pub struct ConnectionPolicy {
    decide: Option<mpsc::Sender<ConnectionRequest>>,
}

impl ConnectionPolicy {
    /// Admit every connection that completes the TLS handshake and the hello.
    pub fn approve_all() -> Self {
        Self { decide: None }
    }

    /// Hand each incoming connection to the application, which approves or
    /// rejects it with a reason (the client's `connect` fails with
    /// [`Error::Rejected`] carrying that reason). At most `queue` requests
    /// wait for a decision; beyond that, and for requests not answered within
    /// the handshake timeout, connections are rejected with a reason that says so.
    pub fn approve_via_event(queue: usize) -> (Self, ConnectionRequests) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (Self { decide: Some(tx) }, ConnectionRequests { rx })
    }
}

/// The stream of connections waiting for a decision (see
/// [`ConnectionPolicy::approve_via_event`]).
#[derive(Debug)]
pub struct ConnectionRequests {
    rx: mpsc::Receiver<ConnectionRequest>,
}

impl ConnectionRequests {
    /// The next connection to decide on; `None` once the server is gone.
    pub async fn recv(&mut self) -> Option<ConnectionRequest> {
        self.rx.recv().await
    }
}

impl futures::Stream for ConnectionRequests {
    type Item = ConnectionRequest;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ConnectionRequest>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

/// One incoming connection waiting for the application's decision. Dropping
/// it without answering rejects the connection.
///
/// It is made once the client's hello has been read and validated and the
/// server's [`Authenticator`](crate::rpc::Authenticator) has run, so it carries
/// who connects, not only from where: the identity authentication established
/// (from a token or the client certificate), the verified client certificate,
/// and the hello metadata. A policy can therefore admit by identity.
#[derive(Debug)]
pub struct ConnectionRequest {
    remote: SocketAddr,
    auth: crate::rpc::auth::PeerAuth,
    metadata: Metadata,
    responder: oneshot::Sender<std::result::Result<(), String>>,
}

impl ConnectionRequest {
    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Who the client is, as authentication established it: the identity the server's
    /// [`Authenticator`](crate::rpc::Authenticator) returned (for example the one a
    /// [`StaticTokens`](crate::rpc::StaticTokens) token maps to), or, without an
    /// authenticator, [`PeerIdentity::from_certificate`] for a client that presented a
    /// verified certificate. `None` for an anonymous client. The same identity handlers see
    /// as [`Context::identity`](crate::rpc::Context::identity).
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.auth.identity.as_deref()
    }

    /// The client's verified certificate (mutual TLS, see
    /// [`ServerBuilder::client_auth`](crate::rpc::ServerBuilder::client_auth)): fingerprint,
    /// subject, names and the DER itself. `None` if it presented none.
    pub fn certificate(&self) -> Option<&PeerCertificate> {
        self.auth.certificate.as_deref()
    }

    /// The client certificate's fingerprint, if it presented one.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.certificate().map(|c| c.fingerprint)
    }

    /// Metadata from the client's hello (name, version, credentials under
    /// [`AUTH_METADATA_KEY`](crate::rpc::auth::AUTH_METADATA_KEY), ...).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Admits the connection.
    pub fn approve(self) {
        let _ = self.responder.send(Ok(()));
    }

    /// Refuses the connection; the client's `connect` fails with this reason.
    pub fn reject(self, reason: impl Into<String>) {
        let _ = self.responder.send(Err(reason.into()));
    }
}

/// A connection came or went (see [`ServerHandle::connection_events`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A client completed the handshake and was admitted.
    Connected(ConnectionInfo),
    /// A connection ended.
    Disconnected {
        /// The connection as it was when it ended (traffic counters included).
        info: ConnectionInfo,
        /// Why it ended.
        reason: String,
    },
}

/// Connected/disconnected notifications. Buffers 1024; a receiver that falls
/// further behind skips the oldest and counts them in [`ConnectionEvents::missed`].
#[derive(Debug)]
pub struct ConnectionEvents {
    rx: broadcast::Receiver<ConnectionEvent>,
    missed: u64,
    stopped: watch::Receiver<bool>,
}

impl ConnectionEvents {
    /// The next event; `None` once the server is gone.
    pub async fn recv(&mut self) -> Option<ConnectionEvent> {
        loop {
            let next = tokio::select! {
                biased;
                e = self.rx.recv() => e,
                _ = self.stopped.wait_for(|s| *s) => {
                    // Deliver what is still buffered, then end.
                    match self.rx.try_recv() {
                        Ok(e) => return Some(e),
                        Err(_) => return None,
                    }
                }
            };
            match next {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Events skipped because this receiver fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// What a broadcast did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Peers the event was queued for.
    pub delivered: usize,
    /// Peers disconnected as slow consumers (their write queue stayed full
    /// for the slow-peer timeout).
    pub disconnected: Vec<SocketAddr>,
}

/// A cheap, cloneable handle to a server: usable after [`RpcServer::run`]
/// took the server, and from handlers (`ctx.server()`).
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    pub(crate) fn security_guard(&self) -> &crate::rpc::security::ServerGuard {
        &self.shared.guard
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// SHA-256 fingerprint of the server certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.fingerprint
    }

    /// Handles to every connected peer, in no particular order.
    pub fn peers(&self) -> Vec<Peer> {
        lock(&self.shared.peers).values().cloned().collect()
    }

    /// The peer with this connection id, if it is still connected.
    pub fn peer(&self, connection_id: u64) -> Option<Peer> {
        lock(&self.shared.peers).get(&connection_id).cloned()
    }

    /// Number of connected peers.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.peers).len()
    }

    /// Marks `service` (`""`: the whole server) `SERVING` in the health service.
    pub fn set_serving(&self, service: &str) {
        self.shared
            .health
            .set(service, crate::rpc::health::HealthStatus::Serving);
    }

    /// Marks `service` (`""`: the whole server) `NOT_SERVING`: health probes and watchers see
    /// it, and a balanced client takes this server out of rotation for it.
    pub fn set_not_serving(&self, service: &str) {
        self.shared
            .health
            .set(service, crate::rpc::health::HealthStatus::NotServing);
    }

    /// The health status of `service` (`SERVICE_UNKNOWN` when none was set).
    pub fn health(&self, service: &str) -> crate::rpc::health::HealthStatus {
        self.shared.health.get(service)
    }

    /// The stream control handle: accept names, open streams toward
    /// clients, set the decision policy. Take it before `run()`.
    pub fn streams(&self) -> crate::stream::Streams {
        crate::stream::Streams::new(self.shared.router.stream_registry())
    }

    /// The method names this server answers, sorted.
    pub fn methods(&self) -> Vec<String> {
        self.shared.router.methods()
    }

    /// Events that a listener here could not decode or that failed, since start.
    pub fn failed_events(&self) -> u64 {
        self.shared.router.bad_events()
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        self.shared.shutdown.shutdown();
    }

    /// Waits until the server has shut down (its `run` is about to return).
    pub async fn stopped(&self) {
        let mut rx = self.shared.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Connected/disconnected notifications from now on.
    pub fn connection_events(&self) -> ConnectionEvents {
        ConnectionEvents {
            rx: self.shared.events.subscribe(),
            missed: 0,
            stopped: self.shared.stopped.subscribe(),
        }
    }

    /// A typed stream of the events of `name` from every client (see
    /// [`Subscription`] for the slow-consumer policy).
    pub fn subscribe<T: DeserializeOwned>(&self, name: &str) -> Subscription<T> {
        self.shared
            .router
            .subscriptions
            .subscribe(name, crate::rpc::subscribe::DEFAULT_SUBSCRIPTION_BUFFER)
    }

    /// Sends an event to every connected peer.
    ///
    /// The event is encoded once and queued on each connection concurrently,
    /// so one slow peer does not hold up the others. A peer whose write queue
    /// stays full for the slow-peer timeout (it is not reading) is
    /// disconnected with close code `SLOW_CONSUMER` and a reason, rather than
    /// silently missing events; the report lists it. Returns when every peer
    /// has the event queued or has been disconnected.
    pub async fn broadcast<T: Serialize>(&self, name: &str, value: T) -> Result<BroadcastReport> {
        let codec = self.shared.protocol.default_codec;
        let payload = codec.encode(&value).map_err(|e| Error::BadPayload {
            method: name.to_owned(),
            detail: format!("event did not encode ({}): {e}", codec.name()),
        })?;
        self.broadcast_encoded(name, codec, payload).await
    }

    async fn broadcast_encoded(
        &self,
        name: &str,
        codec: Codec,
        payload: bytes::Bytes,
    ) -> Result<BroadcastReport> {
        let frame = Frame::Event(EventFrame {
            name: name.to_owned(),
            codec,
            metadata: Metadata::new(),
            payload,
        });
        let mut head = BytesMut::new();
        let tail = frame
            .encode_split(&mut head)
            .map_err(|e| Error::Config(format!("event `{name}`: {e}")))?;
        let head = head.freeze();
        let wait = self.shared.slow_peer_timeout;
        let peers = self.peers();
        let sends = peers
            .iter()
            .map(|p| p.send_prepared_event(head.clone(), tail.clone(), wait));
        let results = futures::future::join_all(sends).await;
        let mut report = BroadcastReport::default();
        for (p, outcome) in peers.iter().zip(results) {
            match outcome {
                Delivery::Queued => report.delivered += 1,
                Delivery::Evicted => report.disconnected.push(p.remote_addr()),
                Delivery::Skipped => {}
            }
        }
        Ok(report)
    }
}

/// A bound server. Call [`RpcServer::run`] (or [`RpcServer::run_until`]) to
/// serve; take a [`RpcServer::handle`] first to reach it afterwards.
pub struct RpcServer {
    endpoint: quinn::Endpoint,
    handle: ServerHandle,
    grace: Duration,
    /// The mDNS announcement, if discovery is enabled; says goodbye at shutdown.
    pub(super) discovery: super::discovery::ServerAnnouncement,
    /// Fires once the endpoint's socket is closed (see `connection::socket`).
    socket_closed: crate::connection::socket::SocketClosed,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("local_addr", &self.handle.local_addr())
            .field("fingerprint", &self.handle.fingerprint())
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    /// A builder with defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// A cheap handle for after `run` took the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// SHA-256 fingerprint of the server certificate, for clients to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.handle.fingerprint()
    }

    /// A handle that triggers a graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.shared.shutdown.clone()
    }

    /// Handles to every connected peer.
    pub fn peers(&self) -> Vec<Peer> {
        self.handle.peers()
    }

    /// The stream control handle (see [`ServerHandle::streams`]).
    pub fn streams(&self) -> crate::stream::Streams {
        self.handle.streams()
    }

    /// The method names this server answers, sorted.
    pub fn methods(&self) -> Vec<String> {
        self.handle.methods()
    }

    /// Events that a listener here could not decode or that failed, since start.
    pub fn failed_events(&self) -> u64 {
        self.handle.failed_events()
    }

    /// Number of connected peers.
    pub fn connection_count(&self) -> usize {
        self.handle.connection_count()
    }

    /// Serves until the shutdown handle is triggered, then shuts down gracefully: new
    /// connections are refused, health turns `NOT_SERVING`, every peer gets a go-away, calls in
    /// flight may finish within the grace period, the rest are cancelled, and every connection
    /// is closed. Returns once no task holds a connection any more (a stream handler that has
    /// not yet seen its connection-lost error; waited for up to 5 s), so that a new server can
    /// bind the same port at once.
    pub async fn run(self) -> Result<()> {
        let mut rx = self.handle.shared.shutdown.tx.subscribe();
        self.run_until(async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await
    }

    /// Serves until `signal` completes (or the shutdown handle is
    /// triggered), then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        let mut rx = self.handle.shared.shutdown.tx.subscribe();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = rx.wait_for(|v| *v) => break,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => {
                        // Connection limits and address validation, before any TLS work.
                        let Some((incoming, slot)) = self.handle.shared.guard.screen(incoming) else {
                            continue;
                        };
                        let handle = self.handle.clone();
                        let remote = incoming.remote_address();
                        tokio::spawn(crate::protocol::in_span(
                            serve_connection(incoming, handle, slot),
                            tracing::debug_span!("accept", peer = %remote),
                        ));
                    }
                    None => break,
                },
            }
        }
        self.graceful_shutdown().await;
        // quinn closes the socket once every handle to the endpoint, its connections and their
        // streams is gone: tasks still holding a closed connection (a stream handler that has
        // not yet seen its connection-lost error) keep the port bound, and a restart on it
        // would fail with "address in use". Wait for that, bounded.
        let RpcServer {
            endpoint,
            handle,
            socket_closed,
            discovery,
            ..
        } = self;
        let addr = handle.local_addr();
        drop((endpoint, discovery));
        if tokio::time::timeout(RELEASE_WAIT, socket_closed.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                %addr,
                "tasks still hold connections {RELEASE_WAIT:?} after the shutdown (a stream \
                 handler ignoring its connection-lost error?): the port stays bound until they \
                 end"
            );
        }
        handle.shared.stopped.send_replace(true);
        Ok(())
    }

    async fn graceful_shutdown(&self) {
        tracing::info!(addr = %self.local_addr(), "shutting down");
        self.discovery.goodbye();
        // Refuse new connections from now on.
        self.endpoint.set_server_config(None);
        // Health first: probes and watchers see NOT_SERVING while the connections still stand.
        self.handle
            .shared
            .health
            .drain(self.grace.min(Duration::from_secs(2)))
            .await;
        let peers: Vec<Peer> = {
            let table = lock(&self.handle.shared.peers);
            self.handle.shared.closing.store(true, Ordering::Release);
            table.values().cloned().collect()
        };
        for p in &peers {
            p.go_away("server shutting down").await;
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        while peers.iter().any(|p| p.inflight_requests() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let why = format!(
            "the server shut down before it finished (grace period {:?})",
            self.grace
        );
        futures::future::join_all(peers.iter().map(|p| p.cancel_inflight(&why))).await;
        let flushes = peers
            .iter()
            .map(|p| p.finish_and_close(CloseCode::GOING_AWAY, "server shut down", Duration::from_secs(2)));
        futures::future::join_all(flushes).await;
        drop(peers);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Decrements the count of connections being admitted when dropped.
struct Admitting<'a>(&'a AtomicUsize);

impl Drop for Admitting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    handle: ServerHandle,
    mut slot: crate::rpc::limits::Slot,
) {
    let shared = &handle.shared;
    let remote = incoming.remote_address();
    let (conn, early) = if shared.zero_rtt {
        // Serve at once (0.5-RTT): the hello and idempotent calls in the client's first flight
        // are answered before the handshake completes.
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "connection failed");
                return;
            }
        };
        let Ok((conn, accepted)) = connecting.into_0rtt() else {
            // quinn always allows 0.5-RTT on incoming connections.
            tracing::debug!(%remote, "0.5-RTT unavailable; connection dropped");
            return;
        };
        let accepted = accepted.shared();
        let (watch, c, limit) = (accepted.clone(), conn.clone(), shared.handshake_timeout);
        tokio::spawn(async move {
            if tokio::time::timeout(limit, watch).await.is_err() {
                tracing::debug!(%remote, "TLS handshake timed out");
                c.close(
                    CloseCode::HELLO_TIMEOUT.0.into(),
                    b"TLS handshake did not complete in time",
                );
            }
        });
        (conn, Some(crate::protocol::EarlyStart::Server { accepted }))
    } else {
        match tokio::time::timeout(shared.handshake_timeout, incoming).await {
            Ok(Ok(c)) => (c, None),
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        }
    };
    let admitting = shared.connecting.fetch_add(1, Ordering::AcqRel);
    let guard = Admitting(&shared.connecting);
    if handle.connection_count() + admitting >= shared.max_connections {
        let reason = format!(
            "the server is at its connection limit ({})",
            shared.max_connections
        );
        tracing::warn!(%remote, reason, "connection rejected");
        crate::metrics::connection_refused("limit");
        conn.close(CloseCode::REJECTED.0.into(), reason.as_bytes());
        return;
    }
    let admitted = tokio::time::timeout(shared.protocol.hello_timeout, admit(&conn, shared)).await;
    let (hs, auth) = match admitted {
        Ok(Ok(admitted)) => admitted,
        Ok(Err((code, reason))) => {
            crate::metrics::connection_refused(if code == Some(CloseCode::REJECTED) {
                "rejected"
            } else {
                "hello"
            });
            if let Some(code) = code {
                tracing::warn!(%remote, %code, reason, "connection refused");
                conn.close(code.0.into(), reason.as_bytes());
            } else {
                tracing::debug!(%remote, reason, "connection lost during the hello");
            }
            return;
        }
        Err(_) => {
            let reason = format!(
                "no hello (or no decision) within {:?}",
                shared.protocol.hello_timeout
            );
            tracing::warn!(%remote, reason, "closing connection");
            crate::metrics::connection_refused("hello");
            conn.close(CloseCode::HELLO_TIMEOUT.0.into(), reason.as_bytes());
            return;
        }
    };
    let inbound = crate::rpc::inbound::ConnInbound::new(
        &conn,
        shared.router.clone(),
        Some(handle.clone()),
        shared.guard.policy.clone(),
        auth,
    );
    let peer = Peer::start(
        conn.clone(),
        Role::Server,
        hs,
        shared.protocol.clone(),
        Box::new(crate::stream::ConnStreams::new(
            &conn,
            shared.router.stream_registry(),
        )),
        inbound,
        early,
    );
    // A connection served on early data is announced once its handshake completes: until then
    // it may be a replay that never completes.
    if let Err(e) = peer.wait_established().await {
        tracing::debug!(%remote, error = %e, "connection ended before its TLS handshake completed");
        return;
    }
    let id = peer.connection_id();
    crate::metrics::connection_accepted();
    let _open = crate::metrics::OpenConnection::new("server");
    let closing = {
        let mut table = lock(&shared.peers);
        table.insert(id, peer.clone());
        shared.closing.load(Ordering::Acquire)
    };
    drop(guard);
    slot.handshake_done();
    tracing::debug!(%remote, id, "client connected");
    let _ = shared.events.send(ConnectionEvent::Connected(peer.info()));
    if closing {
        // Admitted after the shutdown listed the connections to close: nobody else will close
        // this one, and the server's `run()` may already have returned.
        tracing::debug!(%remote, id, "admitted during the shutdown; closing");
        peer.finish_and_close(CloseCode::GOING_AWAY, "server shut down", Duration::from_secs(2))
            .await;
    }
    let reason = peer.closed().await.to_string();
    lock(&shared.peers).remove(&id);
    tracing::debug!(%remote, id, reason, "client disconnected");
    let _ = shared.events.send(ConnectionEvent::Disconnected {
        info: peer.info(),
        reason,
    });
}

/// Reads the hello, applies the connection policy, answers. Returns the handshake and who the
/// client is.
async fn admit(
    conn: &quinn::Connection,
    shared: &ServerShared,
) -> std::result::Result<
    (crate::protocol::HandshakeOutcome, crate::rpc::auth::PeerAuth),
    (Option<CloseCode>, String),
> {
    let (send, recv, leftover, hello) = server_read_hello(conn).await.map_err(|e| (e.close, e.reason))?;
    let auth = shared
        .guard
        .authenticate(conn, &hello.metadata)
        .await
        .map_err(|reason| (Some(CloseCode::REJECTED), reason))?;
    if let Some(decide) = &shared.policy.decide {
        let (tx, rx) = oneshot::channel();
        let request = ConnectionRequest {
            remote: conn.remote_address(),
            auth: auth.clone(),
            metadata: crate::protocol::application_hello_metadata(hello.metadata.clone()),
            responder: tx,
        };
        if decide.try_send(request).is_err() {
            return Err((
                Some(CloseCode::REJECTED),
                "the server is busy deciding on other connections; try again".into(),
            ));
        }
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err((Some(CloseCode::REJECTED), reason)),
            Err(_) => {
                return Err((
                    Some(CloseCode::REJECTED),
                    "the server application did not approve the connection".into(),
                ))
            }
        }
    }
    let hs = server_send_welcome(send, recv, leftover, hello, &shared.protocol)
        .await
        .map_err(|e| (e.close, e.reason))?;
    Ok((hs, auth))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
