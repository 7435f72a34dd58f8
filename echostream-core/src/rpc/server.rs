//! The server: accepts connections and serves handlers on them.

use crate::connection::tls::{self, Fingerprint, ServerIdentity};
use crate::connection::{self, TransportOptions};
use crate::protocol::{server_handshake, Peer, ProtocolConfig, Role};
use crate::rpc::{Handler, Listener, Router, RouterBuilder};
use crate::{Error, Result};
use echostream_types::CloseCode;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

/// Builds an [`RpcServer`].
///
/// ```no_run
/// # use echostream_core::rpc::{RpcServer, handler_fn, Context};
/// # async fn doc() -> echostream_core::Result<()> {
/// let echo = handler_fn("echo", |_ctx: Context, s: String| async move { Ok::<_, echostream_core::Error>(s) });
/// let server = RpcServer::builder().bind("0.0.0.0:5000").handler(echo).build()?;
/// server.run().await?;
/// # Ok(()) }
/// ```
pub struct ServerBuilder {
    bind: String,
    identity: ServerIdentity,
    router: RouterBuilder,
    transport: TransportOptions,
    protocol: ProtocolConfig,
    handshake_timeout: Duration,
    grace: Duration,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("bind", &self.bind)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0:5000".into(),
            identity: ServerIdentity::default(),
            router: RouterBuilder::default(),
            transport: TransportOptions::default(),
            protocol: ProtocolConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(10),
        }
    }
}

impl ServerBuilder {
    /// The address to listen on (default `0.0.0.0:5000`); port 0 picks a free one.
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.bind = addr.into();
        self
    }

    /// Registers a handler under its method name.
    pub fn handler(mut self, h: impl Handler) -> Self {
        self.router.handler(Arc::new(h));
        self
    }

    /// Registers a listener for events of its name.
    pub fn listener(mut self, l: impl Listener) -> Self {
        self.router.listener(Arc::new(l));
        self
    }

    /// Registers a stream handler: it accepts the streams of its name that
    /// clients open, each in its own task.
    pub fn stream_handler(mut self, h: impl crate::stream::StreamHandler) -> Self {
        self.router.stream_handler(Arc::new(h));
        self
    }

    /// Stream limits and timeouts (queue sizes, pairing timeout, message size).
    pub fn stream_options(mut self, o: crate::stream::StreamOptions) -> Self {
        self.router.stream_options(o);
        self
    }

    /// Registers every `#[handler]` function linked into the binary.
    pub fn register_all(mut self) -> Self {
        self.router.register_all();
        self
    }

    /// The TLS identity (default: a persistent self-signed identity named "default").
    pub fn identity(mut self, identity: ServerIdentity) -> Self {
        self.identity = identity;
        self
    }

    /// Largest frame accepted from clients, in bytes (default 32 MiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.protocol.max_frame_size = bytes;
        self
    }

    /// Requests one connection may have running at once (default 1024);
    /// beyond it calls are refused with `RESOURCE_EXHAUSTED`.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.protocol.max_concurrent_requests = n;
        self
    }

    /// Idle timeout of connections (default 30 s).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.transport.idle_timeout = d;
        self
    }

    /// Keep-alive interval (default 10 s; `None` disables).
    pub fn keep_alive(mut self, d: Option<Duration>) -> Self {
        self.transport.keep_alive = d;
        self
    }

    /// Full transport settings.
    pub fn transport(mut self, t: TransportOptions) -> Self {
        self.transport = t;
        self
    }

    /// Time a client has to complete the TLS handshake and the hello (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self.protocol.hello_timeout = d;
        self
    }

    /// How long a graceful shutdown waits for calls in flight (default 10 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Adds a metadata entry to the server's welcome.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<bytes::Bytes>) -> Self {
        self.protocol.hello_metadata.insert(key, value);
        self
    }

    /// Binds the socket and loads the identity. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<RpcServer> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "RpcServer::build must be called inside a tokio runtime".into(),
            ));
        }
        let mut router = self.router;
        router.stream_limits(self.transport.max_bidi_streams, self.transport.max_uni_streams);
        let router = Arc::new(router.build()?);
        let addr: SocketAddr = self.bind.parse().or_else(|_| {
            use std::net::ToSocketAddrs;
            self.bind
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| Error::Config(format!("cannot parse or resolve bind address `{}`", self.bind)))
        })?;
        let identity = self.identity.load()?;
        let fingerprint = identity.fingerprint;
        let crypto = tls::server_crypto(&identity)?;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
            .map_err(|e| Error::Config(format!("TLS configuration unusable for QUIC: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server_config.transport_config(self.transport.quinn()?);
        let endpoint = connection::endpoint(addr, Some(server_config), &self.transport)
            .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))))?;
        let local_addr = endpoint.local_addr()?;
        let (shutdown_tx, _) = watch::channel(false);
        tracing::info!(%local_addr, %fingerprint, methods = ?router.methods(), "server ready");
        Ok(RpcServer {
            endpoint,
            local_addr,
            fingerprint,
            shared: Arc::new(ServerShared {
                router,
                protocol: Arc::new(self.protocol),
                peers: Mutex::new(HashMap::new()),
                handshake_timeout: self.handshake_timeout,
            }),
            shutdown: ShutdownHandle {
                tx: Arc::new(shutdown_tx),
            },
            grace: self.grace,
        })
    }
}

struct ServerShared {
    router: Arc<Router>,
    protocol: Arc<ProtocolConfig>,
    /// Live connections by connection id.
    peers: Mutex<HashMap<u64, Peer>>,
    handshake_timeout: Duration,
}

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

/// A bound server. Call [`RpcServer::run`] (or [`RpcServer::run_until`]) to serve.
pub struct RpcServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    fingerprint: Fingerprint,
    shared: Arc<ServerShared>,
    shutdown: ShutdownHandle,
    grace: Duration,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("local_addr", &self.local_addr)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    /// A builder with defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 fingerprint of the server certificate, for clients to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// A handle that triggers a graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Handles to every connected peer.
    pub fn peers(&self) -> Vec<Peer> {
        lock(&self.shared.peers).values().cloned().collect()
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

    /// Number of connected peers.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.peers).len()
    }

    /// Serves until the shutdown handle is triggered.
    pub async fn run(self) -> Result<()> {
        let mut rx = self.shutdown.tx.subscribe();
        self.run_until(async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await
    }

    /// Serves until `signal` completes (or the shutdown handle is
    /// triggered), then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        let mut rx = self.shutdown.tx.subscribe();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = rx.wait_for(|v| *v) => break,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => {
                        let shared = self.shared.clone();
                        let remote = incoming.remote_address();
                        tokio::spawn(serve_connection(incoming, shared)
                            .instrument(tracing::debug_span!("accept", peer = %remote)));
                    }
                    None => break,
                },
            }
        }
        self.graceful_shutdown().await;
        Ok(())
    }

    async fn graceful_shutdown(&self) {
        tracing::info!(addr = %self.local_addr, "shutting down");
        // Refuse new connections from now on.
        self.endpoint.set_server_config(None);
        let peers = self.peers();
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
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

async fn serve_connection(incoming: quinn::Incoming, shared: Arc<ServerShared>) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(shared.handshake_timeout, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let hs = match tokio::time::timeout(
        shared.protocol.hello_timeout,
        server_handshake(&conn, &shared.protocol),
    )
    .await
    {
        Ok(Ok(hs)) => hs,
        Ok(Err(e)) => {
            if let Some(code) = e.close {
                tracing::warn!(%remote, %code, reason = %e.reason, "handshake refused");
                conn.close(code.0.into(), e.reason.as_bytes());
            } else {
                tracing::debug!(%remote, reason = %e.reason, "connection lost during the hello");
            }
            return;
        }
        Err(_) => {
            let reason = format!("no hello within {:?}", shared.protocol.hello_timeout);
            tracing::warn!(%remote, reason, "closing connection");
            conn.close(CloseCode::HELLO_TIMEOUT.0.into(), reason.as_bytes());
            return;
        }
    };
    let peer = Peer::start(
        conn.clone(),
        Role::Server,
        hs,
        shared.protocol.clone(),
        shared.router.clone(),
    );
    let id = peer.connection_id();
    tracing::debug!(%remote, id, "client connected");
    lock(&shared.peers).insert(id, peer.clone());
    let reason = conn.closed().await;
    lock(&shared.peers).remove(&id);
    tracing::debug!(%remote, id, reason = %reason, "client disconnected");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
