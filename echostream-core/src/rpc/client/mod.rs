//! The client: connects to a server and calls it.

pub use crate::connection::resumption::SessionCache;
use crate::connection::resumption::{HostSessions, SessionStore};
use crate::connection::tls::{ClientTrust, Fingerprint};
use crate::connection::{self, TransportOptions};
use crate::protocol::{
    client_error, client_handshake, client_send_hello, describe_close, CallOptions, ConnectionInfo,
    EarlyStart, HandshakeOutcome, Peer, ProtocolConfig, Role, MIN_PEER_FRAME,
};
use crate::rpc::subscribe::Subscriptions;
use crate::rpc::Subscription;
use crate::{Error, Result};
use echostream_types::CloseCode;
use serde::{de::DeserializeOwned, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

mod builder;
pub use builder::ClientBuilder;

/// Everything needed to (re)establish the connection.
/// Client endpoints of a builder and its clones: one per local bind address
/// (IPv4 or IPv6 wildcard), socket buffer size and tokio runtime (an
/// endpoint's driver task lives on the runtime that created it). The
/// builder keeps them while it lives, so connecting again from it (a
/// reconnect, the next 0-RTT connection) reuses the socket; drop the
/// builder to let the last client close it.
///
/// Builders also share with each other, through [`PROCESS_ENDPOINTS`]: a
/// second `RpcClient::connect` in the same runtime uses the socket of the
/// first while that lives (an endpoint costs about 3 MiB of quinn buffers;
/// connection settings are per connection, so nothing else needs a socket
/// of its own). [`ClientBuilder::share_socket`] opts out.
#[derive(Default)]
struct ClientEndpoints {
    slots: std::sync::Mutex<Vec<EndpointSlot>>,
}

struct EndpointSlot {
    bind: SocketAddr,
    socket_buffer: usize,
    runtime: tokio::runtime::Id,
    endpoint: Arc<SharedEndpoint>,
}

/// An endpoint and the number of clients using it.
#[derive(Debug)]
struct SharedEndpoint {
    endpoint: quinn::Endpoint,
    clients: std::sync::atomic::AtomicUsize,
}

/// One client's use of a shared endpoint (counted while it lives).
#[derive(Debug)]
struct EndpointUse(Arc<SharedEndpoint>);

impl EndpointUse {
    fn new(shared: Arc<SharedEndpoint>) -> Self {
        shared.clients.fetch_add(1, Ordering::AcqRel);
        EndpointUse(shared)
    }

    /// True when no other client uses the endpoint.
    fn alone(&self) -> bool {
        self.0.clients.load(Ordering::Acquire) <= 1
    }
}

impl std::ops::Deref for EndpointUse {
    type Target = quinn::Endpoint;
    fn deref(&self) -> &quinn::Endpoint {
        &self.0.endpoint
    }
}

impl Drop for EndpointUse {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The endpoints every builder may share, held weakly: one closes when its last client and
/// builder are gone, as a builder's own would.
static PROCESS_ENDPOINTS: std::sync::Mutex<Vec<WeakSlot>> = std::sync::Mutex::new(Vec::new());

/// An entry of [`PROCESS_ENDPOINTS`].
struct WeakSlot {
    bind: SocketAddr,
    socket_buffer: usize,
    runtime: tokio::runtime::Id,
    endpoint: std::sync::Weak<SharedEndpoint>,
}

impl ClientEndpoints {
    /// An endpoint for `bind` in this runtime: the builder's, else (when `share`) one another
    /// builder made that is still alive, else a new one.
    fn get(
        &self,
        bind: SocketAddr,
        transport: &TransportOptions,
        share: bool,
    ) -> std::io::Result<EndpointUse> {
        let runtime = tokio::runtime::Handle::current().id();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Endpoints of runtimes that ended are dead; so is any other idle one.
        slots.retain(|s| s.runtime == runtime || s.endpoint.clients.load(Ordering::Acquire) > 0);
        let found = slots
            .iter()
            .find(|s| s.bind == bind && s.socket_buffer == transport.socket_buffer && s.runtime == runtime);
        if let Some(s) = found {
            return Ok(EndpointUse::new(s.endpoint.clone()));
        }
        let endpoint = match share
            .then(|| shared_endpoint(bind, transport.socket_buffer, runtime))
            .flatten()
        {
            Some(endpoint) => endpoint,
            None => {
                let endpoint = Arc::new(SharedEndpoint {
                    endpoint: connection::endpoint(bind, None, transport)?,
                    clients: Default::default(),
                });
                if share {
                    let mut all = PROCESS_ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner());
                    all.push(WeakSlot {
                        bind,
                        socket_buffer: transport.socket_buffer,
                        runtime,
                        endpoint: Arc::downgrade(&endpoint),
                    });
                }
                endpoint
            }
        };
        slots.push(EndpointSlot {
            bind,
            socket_buffer: transport.socket_buffer,
            runtime,
            endpoint: endpoint.clone(),
        });
        Ok(EndpointUse::new(endpoint))
    }
}

/// A live endpoint of [`PROCESS_ENDPOINTS`] for this key; forgets the dead ones.
fn shared_endpoint(
    bind: SocketAddr,
    socket_buffer: usize,
    runtime: tokio::runtime::Id,
) -> Option<Arc<SharedEndpoint>> {
    let mut all = PROCESS_ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|s| s.endpoint.strong_count() > 0);
    all.iter()
        .filter(|s| s.bind == bind && s.socket_buffer == socket_buffer && s.runtime == runtime)
        .find_map(|s| s.endpoint.upgrade())
}

impl std::fmt::Debug for ClientEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("ClientEndpoints").field("endpoints", &n).finish()
    }
}

struct ConnectParams {
    addr: String,
    target: SocketAddr,
    trust: ClientTrust,
    server_name: String,
    transport: TransportOptions,
    protocol: Arc<ProtocolConfig>,
    connect_timeout: Duration,
    router: Arc<crate::rpc::Router>,
    /// Interceptors and limits applied to what the server asks of this client (shared by every
    /// connection the client makes; each connection has its own rate buckets).
    policy: Arc<crate::rpc::security::SecurityPolicy>,
    security: Arc<crate::rpc::security::LoadedClientSecurity>,
    sessions: Arc<SessionStore>,
    resumption: bool,
    zero_rtt: bool,
}

/// How a client re-establishes a dropped connection.
///
/// After the connection ends (for any reason other than [`RpcClient::close`]
/// or dropping the client), a background task reconnects to the same address
/// with the same options, waiting `initial_backoff`, then twice as long after
/// each failure up to `max_backoff`. Handlers, listeners and subscriptions
/// carry over: nothing is registered again by hand. Calls made while
/// disconnected fail fast with [`Error::ConnectionClosed`], unless
/// `wait_for_connection` is set: then they wait for the new connection, up
/// to their own timeout. A call in flight when the connection drops fails
/// (it may or may not have run on the server); it is never resent.
#[derive(Clone, Debug)]
pub struct ReconnectPolicy {
    /// First wait before reconnecting.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
    /// Calls made while disconnected wait for the new connection (up to their timeout).
    pub wait_for_connection: bool,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_attempts: None,
            wait_for_connection: false,
        }
    }
}

/// One connection attempt on an existing endpoint.
async fn connect_peer(endpoint: &quinn::Endpoint, p: &ConnectParams) -> Result<Peer> {
    let addr = p.addr.as_str();
    let connect_err = |reason: String| Error::Connect {
        addr: addr.to_owned(),
        reason,
    };
    // Tickets are kept per address string, so servers sharing a host name never see each
    // other's tickets. With resumption the configuration is kept with them: rustls resumes a
    // ticket only with the verifier that received it.
    let host = p.resumption.then(|| p.sessions.host(addr));
    let (crypto, report) = match &host {
        Some(h) => {
            let key = format!("{}|early={}", p.security.config_key(&p.trust), p.zero_rtt);
            h.tls_config(&key, |tickets| {
                let (mut crypto, report) = p.security.client_crypto(&p.trust, addr)?;
                crypto.resumption = rustls::client::Resumption::store(tickets);
                crypto.enable_early_data = p.zero_rtt;
                Ok::<_, Error>((crypto, report))
            })?
        }
        None => {
            let (mut crypto, report) = p.security.client_crypto(&p.trust, addr)?;
            crypto.resumption = rustls::client::Resumption::disabled();
            (Arc::new(crypto), report)
        }
    };
    report.clear();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| Error::Config(format!("TLS configuration unusable for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(p.transport.quinn()?);
    let connecting = endpoint
        .connect_with(config, p.target, &p.server_name)
        .map_err(|e| connect_err(e.to_string()))?;
    let connecting = match (&host, p.zero_rtt) {
        (Some(host), true) => match connecting.into_0rtt() {
            Ok((conn, accepted)) => return connect_early(conn, accepted, p, host).await,
            // No ticket that allows early data: a full (or plain resumed) handshake.
            Err(connecting) => connecting,
        },
        _ => connecting,
    };
    let conn = match tokio::time::timeout(p.connect_timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if let Some(f) = report.failure() {
                return Err(Error::IdentityRejected {
                    addr: addr.to_owned(),
                    reason: f.to_string(),
                });
            }
            if let Some(reason) = crate::rpc::security::refused_before_tls(&e) {
                return Err(Error::Rejected {
                    addr: addr.to_owned(),
                    reason,
                });
            }
            let (code, reason) = describe_close(&e);
            if code == Some(CloseCode::REJECTED) {
                return Err(Error::Rejected {
                    addr: addr.to_owned(),
                    reason,
                });
            }
            return Err(connect_err(reason));
        }
        Err(_) => {
            return Err(connect_err(format!(
                "no answer from {} within {:?} (is a server listening there?)",
                p.target, p.connect_timeout
            )))
        }
    };
    let hs = match tokio::time::timeout(p.connect_timeout, client_handshake(&conn, &p.protocol)).await {
        Ok(Ok(hs)) => hs,
        Ok(Err(e)) => return Err(client_error(&conn, addr, e)),
        Err(_) => {
            conn.close(CloseCode::HELLO_TIMEOUT.0.into(), b"no welcome in time");
            return Err(connect_err(format!(
                "the server did not answer the hello within {:?}",
                p.connect_timeout
            )));
        }
    };
    if let Some(h) = &host {
        h.set_peer_max_frame(hs.peer_hello.max_frame_size);
    }
    let peer = start_peer(conn, hs, p, None);
    tracing::debug!(target = %p.target, id = peer.connection_id(), "connected");
    Ok(peer)
}

/// Starts a client connection's tasks. A client runs the server's calls under the default
/// security policy (no interceptors or rate limits).
fn start_peer(
    conn: quinn::Connection,
    hs: HandshakeOutcome,
    p: &ConnectParams,
    early: Option<EarlyStart>,
) -> Peer {
    let inbound = crate::rpc::inbound::ConnInbound::new(
        &conn,
        p.router.clone(),
        None,
        p.policy.clone(),
        Default::default(),
    );
    let streams = Box::new(crate::stream::ConnStreams::new(&conn, p.router.stream_registry()));
    Peer::start(
        conn,
        Role::Client,
        hs,
        p.protocol.clone(),
        streams,
        inbound,
        early,
    )
}

/// The 0-RTT path of [`connect_peer`]: writes the hello as early data and starts the connection
/// without waiting for the welcome (its reader task reads it). Calls not declared idempotent
/// wait until the handshake completes; the writer task closes the connection if it does not
/// complete within the connect timeout.
async fn connect_early(
    conn: quinn::Connection,
    accepted: quinn::ZeroRttAccepted,
    p: &ConnectParams,
    host: &HostSessions,
) -> Result<Peer> {
    let addr = p.addr.as_str();
    let deadline = tokio::time::Instant::now() + p.connect_timeout;
    let (send, recv, hello) =
        match tokio::time::timeout_at(deadline, client_send_hello(&conn, &p.protocol)).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => return Err(client_error(&conn, addr, e)),
            Err(_) => {
                conn.close(
                    CloseCode::HELLO_TIMEOUT.0.into(),
                    b"could not send the hello in time",
                );
                return Err(Error::Connect {
                    addr: addr.to_owned(),
                    reason: format!("could not send the hello within {:?}", p.connect_timeout),
                });
            }
        };
    // Until the welcome arrives, frames are checked against the limit the server announced
    // last time (a ticket implies an earlier full connection through this store).
    let hs = HandshakeOutcome {
        send,
        recv,
        leftover: bytes::BytesMut::new(),
        peer_hello: echostream_types::Hello {
            version: echostream_types::PROTOCOL_VERSION,
            max_frame_size: host.peer_max_frame().unwrap_or(MIN_PEER_FRAME),
            metadata: echostream_types::Metadata::new(),
        },
    };
    let early = EarlyStart::Client {
        accepted,
        hello,
        deadline,
    };
    let peer = start_peer(conn, hs, p, Some(early));
    tracing::debug!(target = %p.target, id = peer.connection_id(), "connected with 0-RTT");
    Ok(peer)
}

/// The host part of `"host:port"`, `"[v6]:port"` or a bare host.
fn host_part(addr: &str) -> String {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return sa.ip().to_string();
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host.trim_matches(['[', ']']).to_owned(),
        _ => addr.to_owned(),
    }
}

struct ClientInner {
    /// The connection in use; replaced by the reconnect task.
    current: RwLock<Peer>,
    /// Bumped each time a new connection replaces the old one.
    generation: watch::Sender<u64>,
    /// Shared with other clients of the same builder (see `ClientEndpoints`).
    endpoint: EndpointUse,
    params: ConnectParams,
    reconnect: Option<ReconnectPolicy>,
    /// Set by `close()`: do not reconnect.
    closed_by_user: AtomicBool,
    /// Set once no further connection will come: `close()`, or the reconnect task gave up.
    /// Ends [`ClientConnectionEvents`].
    ended: watch::Sender<bool>,
}

impl ClientInner {
    fn current(&self) -> Peer {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // The connection's tasks keep it alive; the last client handle ends it.
        let peer = self.current();
        if !peer.is_closed() {
            peer.close("client dropped");
        }
    }
}

/// Re-establishes the connection each time it ends, until the client is
/// dropped or closed.
async fn supervise(inner: Weak<ClientInner>, policy: ReconnectPolicy) {
    loop {
        let Some(peer) = inner.upgrade().map(|i| i.current()) else {
            return;
        };
        let why = peer.closed().await;
        drop(peer);
        let mut backoff = policy.initial_backoff;
        let mut failures = 0u32;
        loop {
            let Some(client) = inner.upgrade() else {
                return;
            };
            if client.closed_by_user.load(Ordering::Acquire) {
                return;
            }
            tracing::info!(addr = %client.params.addr, reason = %why, ?backoff, "connection lost; reconnecting");
            drop(client);
            tokio::time::sleep(backoff).await;
            let Some(client) = inner.upgrade() else {
                return;
            };
            if client.closed_by_user.load(Ordering::Acquire) {
                return;
            }
            match connect_peer(&client.endpoint, &client.params).await {
                Ok(peer) => {
                    let addr = client.params.addr.clone();
                    // Published at once: with 0-RTT, waiting calls marked idempotent go early.
                    *client.current.write().unwrap_or_else(|p| p.into_inner()) = peer.clone();
                    client.generation.send_modify(|g| *g += 1);
                    drop(client);
                    if let Err(e) = peer.wait_established().await {
                        // A 0-RTT attempt whose handshake failed counts as a failed attempt.
                        failures += 1;
                        tracing::debug!(%addr, error = %e, failures, "reconnect attempt failed");
                        if policy.max_attempts.is_some_and(|m| failures >= m) {
                            tracing::warn!(%addr, failures, "giving up reconnecting");
                            if let Some(client) = inner.upgrade() {
                                client.ended.send_replace(true);
                            }
                            return;
                        }
                        backoff = (backoff * 2).min(policy.max_backoff);
                        continue;
                    }
                    tracing::info!(%addr, resumed = ?peer.zero_rtt(), "reconnected");
                    break;
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!(addr = %client.params.addr, error = %e, failures, "reconnect attempt failed");
                    if policy.max_attempts.is_some_and(|m| failures >= m) {
                        tracing::warn!(addr = %client.params.addr, failures, "giving up reconnecting");
                        client.ended.send_replace(true);
                        return;
                    }
                    backoff = (backoff * 2).min(policy.max_backoff);
                }
            }
        }
    }
}

/// A connection to a server. `Clone + Send + Sync` and cheap to clone: share
/// one client between many tasks; calls are multiplexed on one connection.
/// The connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("addr", &self.inner.params.addr)
            .field("peer", &self.inner.current())
            .finish()
    }
}

impl RpcClient {
    fn start(
        peer: Peer,
        endpoint: EndpointUse,
        params: ConnectParams,
        reconnect: Option<ReconnectPolicy>,
    ) -> Self {
        let (generation, _) = watch::channel(0);
        let inner = Arc::new(ClientInner {
            current: RwLock::new(peer),
            generation,
            endpoint,
            params,
            reconnect: reconnect.clone(),
            closed_by_user: AtomicBool::new(false),
            ended: watch::channel(false).0,
        });
        if let Some(policy) = reconnect {
            tokio::spawn(supervise(Arc::downgrade(&inner), policy));
        }
        RpcClient { inner }
    }

    /// A builder for options.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with default options: trust on first use (known-hosts file
    /// under the per-user directory), 30 s default call timeout.
    pub async fn connect(addr: &str) -> Result<Self> {
        ClientBuilder::default().connect(addr).await
    }

    /// The connection to use for a new call: the current one, or, while
    /// disconnected with `wait_for_connection`, the next one (waiting at
    /// most `limit`).
    async fn peer_for_call(&self, limit: Option<Duration>) -> (Peer, bool) {
        let peer = self.inner.current();
        let wait = self
            .inner
            .reconnect
            .as_ref()
            .is_some_and(|p| p.wait_for_connection);
        if !wait || !peer.end_recorded() || self.inner.closed_by_user.load(Ordering::Acquire) {
            return (peer, false);
        }
        let mut rx = self.inner.generation.subscribe();
        let seen = *rx.borrow_and_update();
        let changed = rx.wait_for(|g| *g != seen);
        match limit {
            Some(l) => {
                let _ = tokio::time::timeout(l, changed).await;
            }
            None => {
                let _ = changed.await;
            }
        }
        (self.inner.current(), true)
    }

    /// Calls `method` with `args` and waits for its typed result.
    ///
    /// ```no_run
    /// # async fn doc(client: echostream_core::rpc::RpcClient) -> echostream_core::Result<()> {
    /// let n: u64 = client.request("counter.add", (2u64, 3u64)).await?;
    /// // A call whose result is `()` names it, since nothing else fixes the type:
    /// let () = client.request("audio.play", "music.mp3").await?;
    /// # Ok(()) }
    /// ```
    pub async fn request<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: A) -> Result<R> {
        self.request_with(method, args, CallOptions::default()).await
    }

    /// Calls `method` with per-call options (timeout, metadata, codec).
    pub async fn request_with<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
        mut opts: CallOptions,
    ) -> Result<R> {
        let limit = if opts.no_timeout {
            None
        } else {
            opts.timeout.or(self.inner.params.protocol.default_timeout)
        };
        let started = tokio::time::Instant::now();
        let (peer, waited) = self.peer_for_call(limit).await;
        if let (Some(l), true) = (limit, waited) {
            // Time spent waiting for a reconnection counts against the call.
            opts = opts.timeout(l.saturating_sub(started.elapsed()).max(Duration::from_millis(1)));
        }
        peer.request_with(method, args, opts).await
    }

    /// Sends a one-way event; see [`Peer::emit`].
    pub async fn emit<T: Serialize>(&self, name: &str, value: T) -> Result<()> {
        let limit = self.inner.params.protocol.default_timeout;
        self.peer_for_call(limit).await.0.emit(name, value).await
    }

    /// One round trip to the server on the control stream; see [`Peer::ping`].
    pub async fn ping(&self, timeout: Duration) -> Result<Duration> {
        self.peer_for_call(Some(timeout)).await.0.ping(timeout).await
    }

    /// A typed stream of the events of `name` the server sends (see
    /// [`Subscription`] for the slow-consumer policy). Subscriptions survive
    /// reconnection.
    pub fn subscribe<T: DeserializeOwned>(&self, name: &str) -> Subscription<T> {
        self.inner
            .params
            .router
            .subscriptions
            .subscribe(name, crate::rpc::subscribe::DEFAULT_SUBSCRIPTION_BUFFER)
    }

    /// The current connection handle (also what server-side handlers see as
    /// `ctx.peer()`). With reconnection enabled, a later call may return a
    /// different one.
    pub fn peer(&self) -> Peer {
        self.inner.current()
    }

    /// The server's clock as estimated over the current connection (see
    /// [`crate::protocol::SyncedClock`]); the first call starts the exchange.
    pub fn clock(&self) -> crate::protocol::SyncedClock {
        self.inner.current().clock()
    }

    /// A snapshot of the current connection: RTT, traffic, calls in flight.
    pub fn info(&self) -> ConnectionInfo {
        self.inner.current().info()
    }

    /// True while the current connection is open.
    pub fn is_connected(&self) -> bool {
        !self.inner.current().is_closed()
    }

    /// What happens to this client's connection from now on: [`ConnectionEvent::Disconnected`](crate::rpc::ConnectionEvent::Disconnected)
    /// when the current connection ends (with why), and, with a [`ReconnectPolicy`],
    /// [`ConnectionEvent::Connected`](crate::rpc::ConnectionEvent::Connected) each time a new connection replaces it. The stream ends
    /// after the last connection's end: without reconnection, after [`RpcClient::close`], once
    /// the reconnect task gives up, or when the client is dropped.
    pub fn connection_events(&self) -> ClientConnectionEvents {
        let current = self.inner.current();
        ClientConnectionEvents {
            inner: Arc::downgrade(&self.inner),
            generation: self.inner.generation.subscribe(),
            ended: self.inner.ended.subscribe(),
            last_id: current.connection_id(),
            watching: Some(current),
        }
    }

    /// Events from the server that a listener here could not decode or that failed.
    pub fn failed_events(&self) -> u64 {
        self.inner.params.router.bad_events()
    }

    /// The server's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.params.target
    }

    /// The local address of the client's UDP socket.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// True when this client holds a TLS session ticket for the server, so that the next
    /// connection to it (a reconnection, or a connection from a clone of the same builder)
    /// resumes the session and may send 0-RTT early data. Servers send tickets right after the
    /// handshake; a connection closed at once may not have received any.
    pub fn can_resume(&self) -> bool {
        let p = &self.inner.params;
        p.resumption && p.sessions.get(&p.addr).is_some_and(|h| h.tickets() > 0)
    }

    /// The server certificate's SHA-256 fingerprint.
    pub fn server_fingerprint(&self) -> Option<Fingerprint> {
        self.inner.current().fingerprint()
    }

    /// Delivers what is queued, then closes the connection (no reconnection
    /// after this).
    pub async fn close(&self) {
        self.inner.closed_by_user.store(true, Ordering::Release);
        self.inner.ended.send_replace(true);
        self.inner
            .current()
            .finish_and_close(CloseCode::NORMAL, "client closed", Duration::from_secs(2))
            .await;
        // Let the endpoint send the close before the caller (maybe) exits.
        // An endpoint still shared with other clients of the same builder
        // keeps running and sends it anyway: do not wait for their
        // connections.
        if self.inner.endpoint.alone() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
        }
    }
}

/// Streams toward the server (the stream layer's operations, reached through the client's peer).
impl RpcClient {
    /// The stream control handle: accept names, open streams, set the decision policy.
    pub fn streams(&self) -> crate::stream::Streams {
        self.peer().streams()
    }

    /// Opens a byte stream named `name` toward the server.
    pub async fn open_stream(
        &self,
        name: &str,
    ) -> Result<crate::stream::XStream, crate::stream::StreamError> {
        self.peer().open_stream(name).await
    }

    /// A typed message stream toward the server:
    /// `client.create_stream("audio.stream").await?` or, with settings,
    /// `client.create_stream(name).with_metadata(k, v).build().await?`.
    pub fn create_stream(&self, name: &str) -> crate::stream::CreateStream {
        self.peer().create_stream(name)
    }
}

/// A client's connection events (see [`RpcClient::connection_events`]). Holds no strong
/// reference to the client: dropping the client ends it.
#[derive(Debug)]
pub struct ClientConnectionEvents {
    inner: Weak<ClientInner>,
    /// Bumped by the reconnect task each time a new connection is in place.
    generation: watch::Receiver<u64>,
    ended: watch::Receiver<bool>,
    /// The connection whose end is reported next (`None` between connections).
    watching: Option<Peer>,
    /// The id of the last connection reported: the next one with another id is new.
    last_id: u64,
}

impl ClientConnectionEvents {
    /// The next event; `None` once no further connection will come.
    pub async fn recv(&mut self) -> Option<crate::rpc::ConnectionEvent> {
        use crate::rpc::ConnectionEvent;
        if let Some(peer) = self.watching.take() {
            let reason = peer.closed().await.to_string();
            self.last_id = peer.connection_id();
            return Some(ConnectionEvent::Disconnected {
                info: peer.info(),
                reason,
            });
        }
        loop {
            // Marked seen before reading the current connection, so a replacement made after
            // the read wakes the wait below.
            self.generation.borrow_and_update();
            let current = {
                let inner = self.inner.upgrade()?;
                inner.reconnect.as_ref()?;
                inner.current()
            };
            if current.connection_id() != self.last_id {
                self.last_id = current.connection_id();
                let info = current.info();
                self.watching = Some(current);
                return Some(ConnectionEvent::Connected(info));
            }
            drop(current);
            tokio::select! {
                changed = self.generation.changed() => changed.ok()?,
                _ = self.ended.wait_for(|e| *e) => return None,
            }
        }
    }
}
