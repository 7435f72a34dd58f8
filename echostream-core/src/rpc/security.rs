//! Security settings of servers and clients, and the per-connection guard that applies them.
//!
//! - `SecurityPolicy` (one per side, shared by its connections): the interceptor chain, rate
//!   limits, the default handler timeout. Held by `SharedOptions`, so a client applies it to
//!   what its server asks of it exactly as a server does to its clients; its setters
//!   (`policy_setters!`) are expanded in both builders.
//! - `ConnGuard` (one per connection): who the peer is and its token buckets (the byte and
//!   reply budgets are the protocol's, `protocol::budget`).
//! - the builder methods for authentication, access control, limits and TLS options
//!   (`RpcServer::builder().authenticator(..).protect(..).rate_limit(..)`,
//!   `RpcClient::builder().token(..).client_identity(..).protect(..).rate_limit(..)`).
//! - [`check_stream_open`]: what the stream manager runs (through `protocol::Inbound`) before
//!   accepting a stream, so stream opens pass the same rate limits and interceptors as requests.

use crate::connection::client_auth::{ClientAuth, ClientIdentity, KeyLog, PeerCertificate, ServerTls};
use crate::connection::tls::LoadedIdentity;
use crate::protocol::Peer;
use crate::rpc::auth::{Authenticator, PeerAuth, PeerIdentity, AUTH_METADATA_KEY};
use crate::rpc::interceptor::{CallKind, Interceptor};
use crate::rpc::limits::{
    rate_limited, AddressValidation, Admission, AdmissionStats, Pattern, RateLimit, Slot, TokenBucket,
    Verdict,
};
use crate::rpc::{ClientBuilder, Context, Handler, Payload, ServerBuilder, ServerHandle};
use echostream_types::{Metadata, Status};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default deadline of a handler whose request carries none (`CallOptions::no_timeout`).
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(300);

pub use crate::protocol::budget::DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT;

/// Default most connections from one source IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1000;

/// Per-side settings applied to every call a peer makes on this side.
#[derive(Clone)]
pub(crate) struct SecurityPolicy {
    /// Interceptors in registration order, each for the names its pattern matches.
    chain: Vec<(Pattern, Arc<dyn Interceptor>)>,
    /// Calls the peer may make on one connection, all names together.
    pub(crate) connection_rate: Option<RateLimit>,
    /// Per-method rules: each rule has one bucket per connection, shared by the names it matches.
    method_rates: Vec<(Pattern, RateLimit)>,
    /// Deadline for handlers whose request has none.
    pub(crate) handler_timeout: Option<Duration>,
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        Self {
            chain: Vec::new(),
            connection_rate: None,
            method_rates: Vec::new(),
            handler_timeout: Some(DEFAULT_HANDLER_TIMEOUT),
        }
    }
}

impl std::fmt::Debug for SecurityPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityPolicy")
            .field("interceptors", &self.chain.len())
            .field("connection_rate", &self.connection_rate)
            .field("method_rates", &self.method_rates)
            .field("handler_timeout", &self.handler_timeout)
            .finish()
    }
}

/// Security state of one connection.
pub(crate) struct ConnGuard {
    pub(crate) auth: PeerAuth,
    policy: Arc<SecurityPolicy>,
    connection_bucket: Option<Mutex<TokenBucket>>,
    /// One bucket per `policy.method_rates` rule, same order.
    method_buckets: Vec<Mutex<TokenBucket>>,
}

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnGuard")
            .field("identity", &self.auth.identity)
            .finish_non_exhaustive()
    }
}

impl ConnGuard {
    pub(crate) fn new(conn: &quinn::Connection, policy: Arc<SecurityPolicy>, mut auth: PeerAuth) -> Self {
        if auth.certificate.is_none() {
            auth.certificate = PeerCertificate::of_connection(conn).map(Arc::new);
        }
        let now = Instant::now();
        Self {
            auth,
            connection_bucket: policy
                .connection_rate
                .map(|r| Mutex::new(TokenBucket::new(r, now))),
            method_buckets: policy
                .method_rates
                .iter()
                .map(|(_, r)| Mutex::new(TokenBucket::new(*r, now)))
                .collect(),
            policy,
        }
    }

    /// Takes a token from the connection's bucket and from the bucket of every per-method rule
    /// matching `name`; the first empty one refuses the call with `RATE_LIMITED`.
    pub(crate) fn check_rate(&self, name: &str) -> Result<(), Status> {
        let now = Instant::now();
        if let (Some(bucket), Some(limit)) = (&self.connection_bucket, self.policy.connection_rate) {
            lock(bucket)
                .take(now)
                .map_err(|wait| rate_limited(name, "per connection", limit, wait))?;
        }
        for ((pattern, limit), bucket) in self.policy.method_rates.iter().zip(&self.method_buckets) {
            if pattern.matches(name) {
                lock(bucket).take(now).map_err(|wait| {
                    rate_limited(name, &format!("for `{pattern}` per connection"), *limit, wait)
                })?;
            }
        }
        Ok(())
    }

    /// Whether any interceptor is registered.
    pub(crate) fn has_chain(&self) -> bool {
        !self.policy.chain.is_empty()
    }

    /// Runs the interceptors that match the call's name, in order.
    pub(crate) async fn check_chain(&self, ctx: &Context, kind: CallKind) -> Result<(), Status> {
        self.policy.check_chain(ctx, kind).await
    }

    /// The interceptors and limits this guard applies.
    pub(crate) fn policy(&self) -> &Arc<SecurityPolicy> {
        &self.policy
    }

    /// The deadline a handler runs with: the caller's, else the default handler timeout.
    pub(crate) fn handler_deadline(&self, requested: Option<Duration>) -> Option<Duration> {
        requested.or(self.policy.handler_timeout)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a handler call behind the interceptor chain (the rate limits were checked by the
/// reader, which calls the handler directly when there is no chain).
pub(crate) async fn guarded_call(
    policy: Arc<SecurityPolicy>,
    handler: Arc<dyn Handler>,
    ctx: Context,
    args: Payload,
) -> Result<Payload, Status> {
    policy.check_chain(&ctx, CallKind::Request).await?;
    handler.call(ctx, args).await
}

impl SecurityPolicy {
    /// Runs the interceptors that match the call's name, in order.
    async fn check_chain(&self, ctx: &Context, kind: CallKind) -> Result<(), Status> {
        for (pattern, interceptor) in &self.chain {
            if pattern.matches(ctx.method()) {
                interceptor.intercept(ctx, kind).await?;
            }
        }
        Ok(())
    }
}

/// Rate limits and interceptors for an incoming event; `Err` means drop it.
pub(crate) async fn check_event(
    guard: &ConnGuard,
    peer: &Peer,
    name: &str,
    metadata: &Metadata,
) -> Result<(), Status> {
    guard.check_rate(name)?;
    if guard.has_chain() {
        let ctx = Context::new(name.to_owned(), None, metadata.clone(), None, peer.clone());
        catching_panics(name, guard.check_chain(&ctx, CallKind::Event)).await?;
    }
    Ok(())
}

/// Runs an interceptor check, turning a panic into an `INTERNAL` denial.
async fn catching_panics(
    name: &str,
    check: impl std::future::Future<Output = Result<(), Status>>,
) -> Result<(), Status> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(check).catch_unwind().await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(name, "an interceptor panicked");
            Err(Status::new(
                echostream_types::Code::INTERNAL,
                format!("an interceptor panicked while checking `{name}`"),
            ))
        }
    }
}

/// Applies this side's rate limits and interceptors to a stream the peer wants to open.
///
/// The stream manager calls it before accepting a stream named `name` with the opener's
/// `metadata`; on `Err` it refuses the stream and sends the status's message to the opener as
/// the reason. On `Ok` it returns the [`Context`] the stream handler receives (its
/// [`Context::identity`] is the opener's).
pub async fn check_stream_open(peer: &Peer, name: &str, metadata: &Metadata) -> Result<Context, Status> {
    peer.inbound().stream_open(peer, name, metadata).await
}

/// [`check_stream_open`] with the connection's guard at hand (`rpc::inbound`).
pub(crate) async fn stream_open_with(
    guard: &ConnGuard,
    peer: &Peer,
    name: &str,
    metadata: &Metadata,
) -> Result<Context, Status> {
    guard.check_rate(name)?;
    let ctx = Context::new(name.to_owned(), None, metadata.clone(), None, peer.clone());
    catching_panics(name, guard.check_chain(&ctx, CallKind::StreamOpen)).await?;
    Ok(ctx)
}

// ---------------------------------------------------------------------------------------------
// Both sides
// ---------------------------------------------------------------------------------------------

/// The setters of the interceptors and limits applied to what the peer asks of this side
/// (`SharedOptions::policy` and the request byte budget), for a builder with a field
/// `opts: SharedOptions`. Expanded by `shared_setters!`, so the server's and the client's
/// builders offer the same protections with the same types and defaults. `$peer` names the
/// other side in the docs ("clients", "the server").
macro_rules! policy_setters {
    ($peer:literal) => {
        #[doc = concat!(
                            "Runs `interceptor` before every request, event and stream open from ",
                            $peer,
                            " (see [`interceptor`](crate::rpc::interceptor) for the order)."
                        )]
        pub fn interceptor(self, interceptor: impl crate::rpc::Interceptor) -> Self {
            self.protect("*", interceptor)
        }

        #[doc = concat!(
                            "Runs `interceptor` before the calls from ",
                            $peer,
                            " whose name matches `pattern`: `\"admin.*\"` (prefix), `\"user.delete\"` ",
                            "(exact) or `\"*\"` (all). Requests it denies get its status, events it ",
                            "denies are dropped and counted, streams it denies are refused with its ",
                            "message."
                        )]
        ///
        /// ```no_run
        /// # use echostream_core::rpc::{RpcServer, RpcClient, require_role};
        /// let server = RpcServer::builder().protect("admin.*", require_role("admin"));
        /// let client = RpcClient::builder().protect("device.*", require_role("controller"));
        /// ```
        pub fn protect(mut self, pattern: &str, interceptor: impl crate::rpc::Interceptor) -> Self {
            self.opts
                .policy
                .protect(pattern, std::sync::Arc::new(interceptor));
            self
        }

        #[doc = concat!(
                            "Calls (requests, events, stream opens) ",
                            $peer,
                            " may make on one connection, all names together (default: unlimited). Over ",
                            "the limit a request fails with `RATE_LIMITED` and a retry delay, an event is ",
                            "dropped, a stream is refused; the connection stays usable."
                        )]
        pub fn rate_limit(mut self, limit: crate::rpc::RateLimit) -> Self {
            self.opts.policy.connection_rate = Some(limit);
            self
        }

        #[doc = concat!(
                            "Calls of the names matching `pattern` ",
                            $peer,
                            " may make on one connection (one bucket per rule and connection, shared by ",
                            "the names the pattern matches; default: unlimited)."
                        )]
        pub fn method_rate_limit(mut self, pattern: &str, limit: crate::rpc::RateLimit) -> Self {
            self.opts.policy.method_rate(pattern, limit);
            self
        }

        #[doc = concat!(
                            "Payload bytes of the requests from ",
                            $peer,
                            " that may be running at once on one connection (default 64 MiB, never less ",
                            "than the frame limit). A request over it is refused with ",
                            "`RESOURCE_EXHAUSTED` naming the limit; this bounds what a peer can make this ",
                            "side hold in memory."
                        )]
        pub fn max_request_bytes_in_flight(mut self, bytes: usize) -> Self {
            self.opts.protocol.max_request_bytes = bytes;
            self
        }

        #[doc = concat!(
                            "Deadline of a handler here whose request from ",
                            $peer,
                            " carries none (default 300 s; `None`: no limit). Past it the handler is ",
                            "cancelled and the caller gets `DEADLINE_EXCEEDED`."
                        )]
        pub fn default_handler_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
            self.opts.policy.handler_timeout = timeout;
            self
        }
    };
}

pub(crate) use policy_setters;

impl SecurityPolicy {
    /// Adds an interceptor for the names `pattern` matches, after those already registered.
    pub(crate) fn protect(&mut self, pattern: &str, interceptor: Arc<dyn Interceptor>) {
        self.chain.push((Pattern::parse(pattern), interceptor));
    }

    /// Adds a per-method rate rule.
    pub(crate) fn method_rate(&mut self, pattern: &str, limit: RateLimit) {
        self.method_rates.push((Pattern::parse(pattern), limit));
    }
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// Server security settings collected by the builder.
pub(crate) struct ServerSecurity {
    authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) tls: ServerTls,
    max_per_address: usize,
    validation: AddressValidation,
}

impl Default for ServerSecurity {
    fn default() -> Self {
        Self {
            authenticator: None,
            tls: ServerTls::default(),
            max_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            validation: AddressValidation::default(),
        }
    }
}

impl ServerSecurity {
    /// Builds the server's guard around `policy` (the interceptors and limits both builders
    /// share, `SharedOptions::policy`).
    pub(crate) fn finish(self, policy: SecurityPolicy, max_connections: usize) -> Arc<ServerGuard> {
        Arc::new(ServerGuard {
            policy: Arc::new(policy),
            authenticator: self.authenticator,
            admission: Arc::new(Admission::new(
                max_connections,
                self.max_per_address,
                self.validation,
            )),
        })
    }
}

/// What the accept loop and the admission of each connection need.
pub(crate) struct ServerGuard {
    /// Interceptors and limits applied to every connection's calls.
    pub(crate) policy: Arc<SecurityPolicy>,
    authenticator: Option<Arc<dyn Authenticator>>,
    admission: Arc<Admission>,
}

impl ServerGuard {
    /// The per-address connection limit in force.
    pub(crate) fn max_connections_per_address(&self) -> usize {
        self.admission.max_per_address
    }

    /// Applies the connection limits and address validation to an attempt, before any TLS
    /// work. Returns the attempt and its slot when it may proceed.
    pub(crate) fn screen(&self, incoming: quinn::Incoming) -> Option<(quinn::Incoming, Slot)> {
        let remote = incoming.remote_address();
        match self.admission.decide(remote, incoming.remote_address_validated()) {
            Verdict::Accept => Some((incoming, self.admission.occupy(remote))),
            Verdict::Retry => {
                if incoming.may_retry() {
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().ignore();
                    }
                } else {
                    incoming.ignore();
                }
                None
            }
            Verdict::Refuse(reason) => {
                // Debug level: a flood must not turn into a flood of log lines.
                tracing::debug!(%remote, reason, "connection refused before TLS");
                incoming.refuse();
                None
            }
        }
    }

    /// Authenticates a client after its hello.
    pub(crate) async fn authenticate(
        &self,
        conn: &quinn::Connection,
        hello: &Metadata,
    ) -> Result<PeerAuth, String> {
        crate::rpc::auth::authenticate(self.authenticator.as_ref(), conn, hello).await
    }
}

/// Security and limits of a server.
impl ServerBuilder {
    /// Checks each client's credentials (hello metadata) and certificate once per connection;
    /// see [`Authenticator`]. A rejected client's `connect` fails with
    /// [`Error::Rejected`](crate::Error::Rejected) and the reason.
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.security.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Asks clients for certificates (mutual TLS); see [`ClientAuth`].
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.security.tls.client_auth = client_auth;
        self
    }

    /// Writes TLS session secrets for packet analysers. For debugging only: anyone with the
    /// file can decrypt the traffic; a warning is logged.
    pub fn tls_key_log(mut self, key_log: KeyLog) -> Self {
        self.security.tls.key_log = Some(key_log);
        self
    }

    /// Most connections from one IP address, counting handshakes in progress (default 1000).
    /// Attempts beyond it are refused before any TLS work.
    pub fn max_connections_per_address(mut self, n: usize) -> Self {
        self.security.max_per_address = n;
        self
    }

    /// When new clients must prove their address with a QUIC Retry before any TLS work
    /// (default: when more than 64 handshakes are in progress).
    pub fn address_validation(mut self, validation: AddressValidation) -> Self {
        self.security.validation = validation;
        self
    }
}

impl ServerHandle {
    /// What the server did with connection attempts before TLS: retries, refusals, accepted.
    pub fn admission_stats(&self) -> AdmissionStats {
        self.security_guard().admission.stats()
    }

    /// Connections the admission control tracks now: (connections in any stage, distinct source
    /// addresses, handshakes in progress). For tests and monitoring.
    #[doc(hidden)]
    pub fn admission_tracked(&self) -> (usize, usize, usize) {
        self.security_guard().admission.tracked()
    }
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// Client security settings collected by the builder.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientSecurity {
    identity: Option<ClientIdentity>,
    key_log: Option<KeyLog>,
}

/// [`ClientSecurity`] with the identity loaded, ready for every connection attempt.
#[derive(Debug, Default)]
pub(crate) struct LoadedClientSecurity {
    identity: Option<LoadedIdentity>,
    key_log: Option<KeyLog>,
}

impl ClientSecurity {
    pub(crate) fn load(&self) -> Result<LoadedClientSecurity, crate::Error> {
        Ok(LoadedClientSecurity {
            identity: self.identity.as_ref().map(|i| i.load()).transpose()?,
            key_log: self.key_log.clone(),
        })
    }
}

impl LoadedClientSecurity {
    /// What a TLS configuration built by [`Self::client_crypto`] depends on, to tell whether a
    /// kept one (for session resumption) can be reused.
    pub(crate) fn config_key(&self, trust: &crate::connection::tls::ClientTrust) -> String {
        format!(
            "{trust:?}|{:?}|{:?}",
            self.identity.as_ref().map(|i| i.fingerprint),
            self.key_log
        )
    }

    /// The rustls client configuration for one attempt.
    pub(crate) fn client_crypto(
        &self,
        trust: &crate::connection::tls::ClientTrust,
        host_key: &str,
    ) -> Result<(rustls::ClientConfig, crate::connection::tls::TrustReport), crate::Error> {
        Ok(crate::connection::client_auth::client_crypto(
            trust,
            host_key,
            self.identity.as_ref(),
            self.key_log.as_ref(),
        )?)
    }
}

/// Credentials and TLS options of a client.
impl ClientBuilder {
    /// Sends `token` as the credentials in the hello (metadata key
    /// [`AUTH_METADATA_KEY`]), for the server's [`Authenticator`].
    pub fn token(self, token: impl Into<String>) -> Self {
        self.credentials(token.into())
    }

    /// Sends arbitrary bytes as the credentials in the hello.
    pub fn credentials(self, credentials: impl Into<bytes::Bytes>) -> Self {
        self.metadata(AUTH_METADATA_KEY, credentials)
    }

    /// Presents this certificate to servers that ask for one (mutual TLS).
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.security.identity = Some(identity);
        self
    }

    /// Writes TLS session secrets for packet analysers. For debugging only; a warning is logged.
    pub fn tls_key_log(mut self, key_log: KeyLog) -> Self {
        self.security.key_log = Some(key_log);
        self
    }
}

/// When the server refused the attempt before TLS (connection limits), the reason to show.
pub(crate) fn refused_before_tls(e: &quinn::ConnectionError) -> Option<String> {
    match e {
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            Some(
                "the server refused the connection before the TLS handshake: it is at a \
                 connection limit (total, or per address)"
                    .to_string(),
            )
        }
        _ => None,
    }
}

impl Context {
    /// Who the caller is, as established when it connected (authenticator or client
    /// certificate); `None` for an anonymous caller.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.peer().identity()
    }

    /// The certificate the caller presented (mutual TLS on a server; the server's certificate
    /// on a client).
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.peer().peer_certificate()
    }

    /// True when the caller has an identity.
    pub fn is_authenticated(&self) -> bool {
        self.identity().is_some()
    }
}

/// Identity, added by the RPC layer (the protocol layer does not know who the peer is).
impl Peer {
    /// Who the peer is (see [`Context::identity`]).
    pub fn identity(&self) -> Option<&PeerIdentity> {
        crate::rpc::inbound::of(self)?.guard.auth.identity.as_deref()
    }

    /// The certificate the peer presented, with its names.
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        crate::rpc::inbound::of(self)?.guard.auth.certificate.as_deref()
    }
}
