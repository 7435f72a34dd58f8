//! [`ClientBuilder`]: every setter of the client's builder, and `connect`. The setters shared
//! with the server's builder are written once in `rpc/options.rs` (`shared_setters!`), among
//! them the protections against the server (interceptors, rate limits, default handler timeout,
//! request byte budget: `rpc/security.rs`, `policy_setters!`); the credential setters (token, client certificate, key log) are in `rpc/security.rs`,
//! `service`/`reflection` in `rpc/service.rs`, `discover` in `rpc/discovery.rs`.

use super::*;

/// Builds an [`RpcClient`]: trust mode, timeouts, handlers the server may call, and the limits
/// that protect them from the server (the same as a server's, with the same defaults:
/// [`protect`](Self::protect), [`rate_limit`](Self::rate_limit),
/// [`default_handler_timeout`](Self::default_handler_timeout), ...).
///
/// A builder and its clones share TLS session tickets and UDP sockets:
/// keep one to connect again cheaply (0-RTT, no new socket); the socket is
/// released when the builder and every client made from it are gone.
#[derive(Clone)]
pub struct ClientBuilder {
    trust: ClientTrust,
    server_name: Option<String>,
    /// `pub(super)`: `rpc::service` adds the `service` setter.
    /// Handlers served, transport and protocol settings (shared with the other builder).
    pub(crate) opts: crate::rpc::options::SharedOptions,
    connect_timeout: Duration,
    reconnect: Option<ReconnectPolicy>,
    /// Shared by clones of the builder (discovery tries several instances).
    early_subscriptions: Arc<Subscriptions>,
    /// TLS session tickets per server, shared by every connection made from this builder and
    /// its clones (reconnections included).
    sessions: Arc<SessionStore>,
    /// UDP endpoints shared the same way: reconnecting, or connecting a
    /// second client from the same builder, reuses the socket (binding one
    /// costs a few hundred µs and ~3 MiB of quinn buffers).
    endpoints: Arc<ClientEndpoints>,
    /// Share UDP endpoints with other builders in the process (see `ClientEndpoints`).
    share_socket: bool,
    /// Offer session resumption.
    resumption: bool,
    /// Send the hello and idempotent calls as 0-RTT early data when a ticket allows it.
    zero_rtt: bool,
    /// Client certificate and key log (see `rpc::security`).
    pub(crate) security: crate::rpc::security::ClientSecurity,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("trust", &self.trust)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            trust: ClientTrust::default(),
            server_name: None,
            opts: Default::default(),
            connect_timeout: Duration::from_secs(10),
            reconnect: None,
            early_subscriptions: Arc::default(),
            sessions: Arc::default(),
            endpoints: Arc::default(),
            share_socket: true,
            resumption: true,
            zero_rtt: true,
            security: Default::default(),
        }
    }
}

impl ClientBuilder {
    crate::rpc::options::shared_setters!("the server");

    /// How to trust the server (default: trust on first use with the known-hosts file).
    pub fn trust(mut self, trust: ClientTrust) -> Self {
        self.trust = trust;
        self
    }

    /// Accepts only a server whose certificate has this SHA-256 fingerprint.
    pub fn pin(self, fingerprint: Fingerprint) -> Self {
        self.trust(ClientTrust::Pinned(vec![fingerprint]))
    }

    /// Trust on first use with this known-hosts file.
    pub fn known_hosts(self, path: impl Into<PathBuf>) -> Self {
        self.trust(ClientTrust::KnownHosts {
            path: Some(path.into()),
        })
    }

    /// The name checked against a CA-issued certificate (default: the host
    /// part of the address passed to `connect`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Whether this client may share its UDP socket with other clients of the process (on by
    /// default). Clients connecting from one tokio runtime with the same socket buffer size
    /// use one quinn endpoint while any of them lives: an idle client then costs a connection's
    /// state, not a socket and its ~3 MiB of buffers. Every connection keeps its own transport
    /// settings, trust and session tickets either way; `false` gives this builder's clients a
    /// socket of their own (its local port, its own buffers), shared only among themselves.
    pub fn share_socket(mut self, share: bool) -> Self {
        self.share_socket = share;
        self
    }

    /// Time allowed for the QUIC/TLS handshake and the hello (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self.opts.protocol.hello_timeout = d;
        self
    }

    /// Resume TLS sessions (default: on). The client keeps, in memory, the session tickets each
    /// server sends, per server address; every connection made from this builder (and its
    /// clones, and the reconnect supervisor) shares them, so a reconnection skips the
    /// certificate exchange and, if the server allows it, sends early data (see
    /// [`ClientBuilder::zero_rtt`]). Turning it off also turns 0-RTT off.
    pub fn resumption(mut self, enabled: bool) -> Self {
        self.resumption = enabled;
        self
    }

    /// Keeps session tickets in `cache` instead of this builder's own store, so that builders
    /// made separately resume each other's sessions (see [`SessionCache`]). The builder's
    /// clones and their connections share it as they share the builder's own store.
    pub fn session_cache(mut self, cache: &SessionCache) -> Self {
        self.sessions = cache.0.clone();
        self
    }

    /// The session tickets this builder keeps, to hand to another builder
    /// ([`ClientBuilder::session_cache`]).
    pub fn sessions(&self) -> SessionCache {
        SessionCache(self.sessions.clone())
    }

    /// Send early data on resumed connections (default: on; it has an effect only with
    /// servers that enable 0-RTT, which they do not by default).
    ///
    /// When a session ticket allows it, the hello and the calls declared idempotent
    /// ([`CallOptions::idempotent`] or [`ClientBuilder::idempotent`]) travel in the first
    /// flight, before the TLS handshake completes, and `connect` returns without waiting for
    /// the server's welcome. Every other call, events and streams wait for the handshake. If
    /// the server rejects the early data, everything sent early is sent again after the
    /// handshake: callers only see the answer. Errors the welcome would have reported at
    /// `connect` (a refused hello, a version mismatch) then fail the first calls instead.
    pub fn zero_rtt(mut self, enabled: bool) -> Self {
        self.zero_rtt = enabled;
        self
    }

    /// Declares calls to `method` safe to repeat, so that they may travel as 0-RTT early data
    /// (like [`CallOptions::idempotent`] on each call). Only for methods whose repetition does
    /// no harm: early data can be replayed by an attacker. The server runs an early call only
    /// if its own handler is declared idempotent.
    pub fn idempotent(mut self, method: impl Into<String>) -> Self {
        self.opts.protocol.idempotent_methods.insert(method.into());
        self
    }

    /// This builder without a reconnect policy (a balancer probes its instances itself).
    #[cfg(feature = "discovery")]
    pub(crate) fn without_reconnect(mut self) -> Self {
        self.reconnect = None;
        self
    }

    /// Re-establish a dropped connection automatically (see [`ReconnectPolicy`]).
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// A typed subscription created before connecting, so no event sent
    /// right after the welcome is missed. See [`Subscription`].
    pub fn subscribe<T: DeserializeOwned>(&mut self, name: &str) -> Subscription<T> {
        // The router is built at connect time; subscriptions live in a
        // registry shared with it.
        self.early_subscriptions
            .subscribe(name, crate::rpc::subscribe::DEFAULT_SUBSCRIPTION_BUFFER)
    }

    /// Connects to `addr` (`"host:port"` or an IP literal), trying each
    /// resolved address in turn.
    pub async fn connect(mut self, addr: &str) -> Result<RpcClient> {
        self.opts.settle();
        let mut router = self.opts.router.build()?;
        router.subscriptions = self.early_subscriptions;
        let router = Arc::new(router);
        let protocol = Arc::new(self.opts.protocol.clone());
        let policy = Arc::new(self.opts.policy.clone());
        let security = Arc::new(self.security.load()?);
        let targets = connection::resolve(addr).await?;
        let mut last = None;
        for target in targets {
            let bind: SocketAddr = if target.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let endpoint = self
                .endpoints
                .get(bind, &self.opts.transport, self.share_socket)
                .map_err(|e| Error::Connect {
                    addr: addr.to_owned(),
                    reason: format!("cannot bind a local UDP socket: {e}"),
                })?;
            let params = ConnectParams {
                addr: addr.to_owned(),
                target,
                trust: self.trust.clone(),
                server_name: self.server_name.clone().unwrap_or_else(|| host_part(addr)),
                transport: self.opts.transport.clone(),
                protocol: protocol.clone(),
                connect_timeout: self.connect_timeout,
                router: router.clone(),
                policy: policy.clone(),
                security: security.clone(),
                sessions: self.sessions.clone(),
                resumption: self.resumption,
                zero_rtt: self.zero_rtt && self.resumption,
            };
            match connect_peer(&endpoint, &params).await {
                Ok(peer) => return Ok(RpcClient::start(peer, endpoint, params, self.reconnect.clone())),
                // A rejected identity is a verdict about the server, not a
                // reason to try another address of the same name.
                Err(e @ Error::IdentityRejected { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(%target, error = %e, "connect attempt failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Connect {
            addr: addr.to_owned(),
            reason: "no address to try".into(),
        }))
    }
}
