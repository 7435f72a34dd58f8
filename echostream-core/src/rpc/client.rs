//! The client: connects to a server and calls it.

use crate::connection::tls::{self, ClientTrust, Fingerprint};
use crate::connection::{self, TransportOptions};
use crate::protocol::{
    client_error, client_handshake, describe_close, CallOptions, Peer, ProtocolConfig, Role,
};
use crate::rpc::{Handler, Listener, RouterBuilder};
use crate::{Error, Result};
use echostream_types::{CloseCode, Codec};
use serde::{de::DeserializeOwned, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Builds an [`RpcClient`]: trust mode, timeouts, and handlers the server may call.
pub struct ClientBuilder {
    trust: ClientTrust,
    server_name: Option<String>,
    router: RouterBuilder,
    transport: TransportOptions,
    protocol: ProtocolConfig,
    connect_timeout: Duration,
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
            router: RouterBuilder::default(),
            transport: TransportOptions::default(),
            protocol: ProtocolConfig::default(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl ClientBuilder {
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

    /// Registers a handler the server can call on this client.
    pub fn handler(mut self, h: impl Handler) -> Self {
        self.router.handler(Arc::new(h));
        self
    }

    /// Registers a listener for events the server emits.
    pub fn listener(mut self, l: impl Listener) -> Self {
        self.router.listener(Arc::new(l));
        self
    }

    /// Registers a stream handler: it accepts the streams of its name that
    /// the server opens, each in its own task.
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

    /// Default call timeout (default 30 s); per-call options override it.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.protocol.default_timeout = Some(d);
        self
    }

    /// Calls wait without a deadline unless they set one.
    pub fn no_default_timeout(mut self) -> Self {
        self.protocol.default_timeout = None;
        self
    }

    /// Codec of calls that do not choose one (default bincode).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.protocol.default_codec = codec;
        self
    }

    /// Adds a metadata entry to the hello (client name, credentials, ...).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<bytes::Bytes>) -> Self {
        self.protocol.hello_metadata.insert(key, value);
        self
    }

    /// Largest frame accepted from the server (default 32 MiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.protocol.max_frame_size = bytes;
        self
    }

    /// Idle timeout (default 30 s).
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

    /// Time allowed for the QUIC/TLS handshake and the hello (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self.protocol.hello_timeout = d;
        self
    }

    /// Connects to `addr` (`"host:port"` or an IP literal), trying each
    /// resolved address in turn.
    pub async fn connect(mut self, addr: &str) -> Result<RpcClient> {
        let (bidi, uni) = (self.transport.max_bidi_streams, self.transport.max_uni_streams);
        self.router.stream_limits(bidi, uni);
        let router = Arc::new(self.router.build()?);
        let protocol = Arc::new(self.protocol.clone());
        let targets = connection::resolve(addr).await?;
        let mut last = None;
        for target in targets {
            match self.connect_one(addr, target, &router, &protocol).await {
                Ok(c) => return Ok(c),
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

    async fn connect_one(
        &self,
        addr: &str,
        target: SocketAddr,
        router: &Arc<crate::rpc::Router>,
        protocol: &Arc<ProtocolConfig>,
    ) -> Result<RpcClient> {
        let connect_err = |reason: String| Error::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let (crypto, report) = tls::client_crypto(&self.trust, addr)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| Error::Config(format!("TLS configuration unusable for QUIC: {e}")))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.transport.quinn()?);
        let bind: SocketAddr = if target.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = connection::endpoint(bind, None, &self.transport)
            .map_err(|e| connect_err(format!("cannot bind a local UDP socket: {e}")))?;
        let server_name = self.server_name.clone().unwrap_or_else(|| host_part(addr));
        let connecting = endpoint
            .connect_with(config, target, &server_name)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if let Some(f) = report.failure() {
                    return Err(Error::IdentityRejected {
                        addr: addr.to_owned(),
                        reason: f.to_string(),
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
                    "no answer from {target} within {:?} (is a server listening there?)",
                    self.connect_timeout
                )))
            }
        };
        let hs = match tokio::time::timeout(self.connect_timeout, client_handshake(&conn, protocol)).await {
            Ok(Ok(hs)) => hs,
            Ok(Err(e)) => {
                if let Some(code) = e.close {
                    conn.close(code.0.into(), e.reason.as_bytes());
                }
                return Err(client_error(addr, e));
            }
            Err(_) => {
                conn.close(CloseCode::HELLO_TIMEOUT.0.into(), b"no welcome in time");
                return Err(connect_err(format!(
                    "the server did not answer the hello within {:?}",
                    self.connect_timeout
                )));
            }
        };
        let peer = Peer::start(conn, Role::Client, hs, protocol.clone(), router.clone());
        tracing::debug!(%target, id = peer.connection_id(), "connected");
        Ok(RpcClient {
            inner: Arc::new(ClientInner {
                peer,
                router: router.clone(),
                endpoint,
                addr: addr.to_owned(),
            }),
        })
    }
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
    peer: Peer,
    router: Arc<crate::rpc::Router>,
    endpoint: quinn::Endpoint,
    addr: String,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // The connection's tasks keep it alive; the last client handle ends it.
        if !self.peer.is_closed() {
            self.peer.close("client dropped");
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
            .field("addr", &self.inner.addr)
            .field("peer", &self.inner.peer)
            .finish()
    }
}

impl RpcClient {
    /// A builder for options.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with default options: trust on first use (known-hosts file
    /// under the per-user directory), 30 s default call timeout.
    pub async fn connect(addr: &str) -> Result<Self> {
        ClientBuilder::default().connect(addr).await
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
        self.inner.peer.request(method, args).await
    }

    /// Calls `method` with per-call options (timeout, metadata, codec).
    pub async fn request_with<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
        opts: CallOptions,
    ) -> Result<R> {
        self.inner.peer.request_with(method, args, opts).await
    }

    /// Sends a one-way event; see [`Peer::emit`].
    pub async fn emit<T: Serialize>(&self, name: &str, value: T) -> Result<()> {
        self.inner.peer.emit(name, value).await
    }

    /// The connection handle (also what server-side handlers see as `ctx.peer()`).
    pub fn peer(&self) -> &Peer {
        &self.inner.peer
    }

    /// Events from the server that a listener here could not decode or that failed.
    pub fn failed_events(&self) -> u64 {
        self.inner.router.bad_events()
    }

    /// The server's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.peer.remote_addr()
    }

    /// The local address of the client's UDP socket.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// The server certificate's SHA-256 fingerprint.
    pub fn server_fingerprint(&self) -> Option<Fingerprint> {
        self.inner.peer.fingerprint()
    }

    /// Delivers what is queued, then closes the connection.
    pub async fn close(&self) {
        self.inner
            .peer
            .finish_and_close(CloseCode::NORMAL, "client closed", Duration::from_secs(2))
            .await;
    }
}
