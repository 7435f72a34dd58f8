//! [`ServerBuilder`]: every setter of the server's builder, and `build`. The setters shared with
//! the client's builder are written once in `rpc/options.rs` (`shared_setters!`), among them
//! access control and rate limits (`rpc/security.rs`, `policy_setters!`); the server's own
//! security setters (authentication, client certificates, connection limits) are in
//! `rpc/security.rs`, `service`/`reflection` in `rpc/service.rs`, `enable_discovery` in
//! `rpc/discovery.rs`.

use super::*;

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
    /// `pub(super)`: `rpc::service` adds the `service` setter.
    /// Handlers served, transport and protocol settings (shared with the other builder).
    pub(crate) opts: crate::rpc::options::SharedOptions,
    handshake_timeout: Duration,
    grace: Duration,
    policy: ConnectionPolicy,
    max_connections: usize,
    slow_peer_timeout: Duration,
    zero_rtt: bool,
    pub(crate) discovery: crate::rpc::discovery::ServerDiscovery,
    /// Authentication, access control, rate limits, admission (see `rpc::security`).
    pub(crate) security: crate::rpc::security::ServerSecurity,
    /// Serve `echostream.health` and `echostream.health.watch` (see `rpc::health`).
    health: bool,
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
            opts: Default::default(),
            handshake_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(10),
            policy: ConnectionPolicy::approve_all(),
            max_connections: 10_000,
            slow_peer_timeout: Duration::from_secs(2),
            zero_rtt: false,
            discovery: Default::default(),
            security: Default::default(),
            health: true,
        }
    }
}

impl ServerBuilder {
    crate::rpc::options::shared_setters!("clients");

    /// The address to listen on (default `0.0.0.0:5000`); port 0 picks a free one.
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.bind = addr.into();
        self
    }

    /// The TLS identity (default: a persistent self-signed identity named "default").
    pub fn identity(mut self, identity: ServerIdentity) -> Self {
        self.identity = identity;
        self
    }

    /// Accepts 0-RTT early data from clients resuming a session (default: off).
    ///
    /// With it on, a returning client's hello and its calls marked idempotent travel in its
    /// first flight, saving the round trips of the handshake and the hello. Early data can be
    /// replayed by an attacker who recorded it, so while the TLS handshake has not completed
    /// the server runs only handlers declared idempotent (`#[handler("x", idempotent)]`, or
    /// [`Handler::idempotent`](crate::rpc::Handler::idempotent)) and answers other calls with `Code::EARLY_DATA_REFUSED`;
    /// events are dropped and incoming streams wait for the handshake. The hello is processed
    /// early too: the authenticator and connection policy see a hello that may be a replay.
    ///
    /// Off by default because it is a promise about the application: enable it once the
    /// handlers marked idempotent really are safe to run twice. Not available together with
    /// client certificates ([`ServerBuilder::client_auth`]), which are only verified when the
    /// handshake completes: [`build`](ServerBuilder::build) fails.
    ///
    /// With it off, the server still issues session tickets, so clients resume sessions
    /// (skipping certificate verification), but their first flight carries no data.
    pub fn zero_rtt(mut self, enabled: bool) -> Self {
        self.zero_rtt = enabled;
        self
    }

    /// Time a client has to complete the TLS handshake and the hello (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self.opts.protocol.hello_timeout = d;
        self
    }

    /// Serve the health service (default: on): the reserved method `echostream.health` and
    /// stream `echostream.health.watch`, with statuses set through
    /// [`ServerHandle::set_serving`] and [`ServerHandle::set_not_serving`]. See
    /// [`crate::rpc::health`].
    pub fn health_service(mut self, enabled: bool) -> Self {
        self.health = enabled;
        self
    }

    /// How long a graceful shutdown waits for calls in flight (default 10 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// How incoming connections are admitted (default: approve all). See
    /// [`ConnectionPolicy::approve_via_event`].
    pub fn connection_policy(mut self, policy: ConnectionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Most connections held at once (default 10,000); the one over the
    /// limit is closed with `REJECTED` and a reason naming the limit.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// How long [`ServerHandle::broadcast`] waits for a peer whose write
    /// queue is full before disconnecting it as a slow consumer (default 2 s).
    pub fn slow_peer_timeout(mut self, d: Duration) -> Self {
        self.slow_peer_timeout = d;
        self
    }

    /// Binds the socket and loads the identity. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<RpcServer> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "RpcServer::build must be called inside a tokio runtime".into(),
            ));
        }
        let mut opts = self.opts;
        let health = crate::rpc::health::Health::new();
        if self.health {
            // Ordinary registrations, so interceptors, limits and reflection see them; a user
            // handler of the same name is reported as a duplicate.
            opts.router
                .handler(Arc::new(crate::rpc::health::CheckHandler(health.clone())));
            opts.router
                .stream_handler(Arc::new(crate::rpc::health::WatchHandler(health.clone())));
        }
        opts.settle();
        let router = opts.router;
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
        let mut crypto = crate::connection::client_auth::server_crypto(&identity, &self.security.tls)?;
        if self.zero_rtt {
            if !matches!(
                self.security.tls.client_auth,
                crate::connection::client_auth::ClientAuth::None
            ) {
                return Err(Error::Config(
                    "0-RTT cannot be combined with client certificates: early data is processed before \
                     the client's certificate is verified; disable one of them"
                        .into(),
                ));
            }
            // QUIC's value for "0-RTT accepted" (RFC 9001 section 4.6.1).
            crypto.max_early_data_size = u32::MAX;
        }
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
            .map_err(|e| Error::Config(format!("TLS configuration unusable for QUIC: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server_config.transport_config(opts.transport.quinn()?);
        let (endpoint, socket_closed) =
            connection::endpoint_watched(addr, Some(server_config), &opts.transport)
                .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))))?;
        let local_addr = endpoint.local_addr()?;
        let (shutdown_tx, _) = watch::channel(false);
        let (events, _) = broadcast::channel(1024);
        let protocol = opts.protocol;
        let guard = self.security.finish(opts.policy, self.max_connections);
        tracing::info!(%local_addr, %fingerprint, methods = ?router.methods(), "server ready");
        Ok(RpcServer {
            endpoint,
            handle: ServerHandle {
                shared: Arc::new(ServerShared {
                    router,
                    protocol: Arc::new(protocol),
                    guard,
                    peers: Mutex::new(HashMap::new()),
                    closing: Default::default(),
                    handshake_timeout: self.handshake_timeout,
                    shutdown: ShutdownHandle {
                        tx: Arc::new(shutdown_tx),
                    },
                    events,
                    policy: self.policy,
                    max_connections: self.max_connections,
                    connecting: AtomicUsize::new(0),
                    slow_peer_timeout: self.slow_peer_timeout,
                    zero_rtt: self.zero_rtt,
                    local_addr,
                    fingerprint,
                    stopped: watch::channel(false).0,
                    health,
                }),
            },
            grace: self.grace,
            socket_closed,
            discovery: self.discovery.start(local_addr, fingerprint)?,
        })
    }
}
