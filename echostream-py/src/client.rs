//! `connect()`, the client, the peer handle, event subscriptions and the synced clock.

#[cfg(unix)]
use crate::completion::Completions;
use crate::errors::{bad_json, stream_to_py, to_py};
use crate::server::PyRoutes;
use crate::stream::Stream;
use crate::{metadata_pairs, seconds};
use echostream::rpc::Subscription;
use echostream::timesync::SyncedClock;
use echostream::{
    CallOptions, ClientTrust, Codec, ConnectionInfo, Fingerprint, Peer, ReconnectPolicy, RpcClient,
    ServerIdentity, SessionCache, ZeroRtt,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_async_runtimes::tokio::future_into_py;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

/// JSON text from the Python half, checked before anything is sent.
pub(crate) fn raw_json(text: String, what: &str) -> PyResult<Box<RawValue>> {
    RawValue::from_string(text).map_err(|e| bad_json(what, e))
}

/// Per-call options: always the JSON codec, plus the caller's timeout and metadata.
fn call_options(timeout: Option<f64>, md: Option<Vec<(String, String)>>) -> PyResult<CallOptions> {
    let mut opts = CallOptions::new().codec(Codec::Json);
    if let Some(t) = timeout {
        opts = opts.timeout(seconds(t, "timeout")?);
    }
    for (k, v) in md.unwrap_or_default() {
        opts = opts.metadata(k, v);
    }
    Ok(opts)
}

/// `sha256:HEX` strings as fingerprints; the `ValueError` names the one that is not.
pub(crate) fn fingerprints(pins: Vec<String>) -> PyResult<Vec<Fingerprint>> {
    pins.into_iter()
        .map(|pin| {
            pin.parse().map_err(|e| {
                PyValueError::new_err(format!(
                    "pin `{pin}` is not a fingerprint: {e} (expected sha256:HEX)"
                ))
            })
        })
        .collect()
}

/// `ReconnectPolicy` from the Python half (`Reconnect._spec`): initial and longest backoff in
/// seconds, most failed attempts in a row, whether calls wait for the new connection.
type ReconnectSpec = (f64, f64, Option<u32>, bool);

fn reconnect_policy((initial, max, attempts, wait): ReconnectSpec) -> PyResult<ReconnectPolicy> {
    Ok(ReconnectPolicy {
        initial_backoff: seconds(initial, "initial_backoff")?,
        max_backoff: seconds(max, "max_backoff")?,
        max_attempts: attempts,
        wait_for_connection: wait,
    })
}

/// The trust the keyword arguments ask for (`None`: the Rust default, trust on first use
/// recorded in the known-hosts file).
fn trust(
    pins: Option<Vec<String>>,
    ca: Option<String>,
    known_hosts: Option<String>,
    insecure: bool,
) -> PyResult<Option<ClientTrust>> {
    if insecure {
        return Ok(Some(ClientTrust::dangerous_accept_any_certificate()));
    }
    if let Some(pins) = pins {
        return Ok(Some(ClientTrust::Pinned(fingerprints(pins)?)));
    }
    if let Some(ca) = ca {
        return Ok(Some(ClientTrust::CaFile(ca.into())));
    }
    if let Some(file) = known_hosts {
        return Ok(Some(ClientTrust::known_hosts_file(std::path::PathBuf::from(
            file,
        ))));
    }
    Ok(None)
}

/// Connects to `addr` (`host:port`), or with `discover=NAME` to an instance of service NAME
/// found on the LAN (mDNS, for up to `discover_timeout` seconds; the announced fingerprint is
/// pinned unless a trust argument says otherwise). The keyword arguments map one to one onto
/// `ClientBuilder` setters and `DiscoverOptions`.
#[pyfunction]
#[pyo3(signature = (addr, *, pins=None, ca=None, known_hosts=None, insecure=false, token=None,
    timeout=None, server_name=None, cert=None, key=None, routes=None, hello=None, discover=None,
    discover_timeout=None, interfaces=None, identity=None, call_timeout=None, reconnect=None,
    zero_rtt=true, resumption=true, idempotent=None, idle_timeout=None, keep_alive=None,
    max_frame_size=None, stream_options=None, event_queue=None, assembly_timeout=None,
    max_assembly_bytes=None, interceptors=None, transport=None, completions=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect<'py>(
    py: Python<'py>,
    addr: Option<String>,
    pins: Option<Vec<String>>,
    ca: Option<String>,
    known_hosts: Option<String>,
    insecure: bool,
    token: Option<String>,
    timeout: Option<f64>,
    server_name: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    routes: Option<PyRoutes>,
    hello: Option<Vec<(String, String)>>,
    discover: Option<String>,
    discover_timeout: Option<f64>,
    interfaces: Option<crate::InterfacesArg>,
    identity: Option<crate::server::IdentitySpec>,
    call_timeout: Option<f64>,
    reconnect: Option<ReconnectSpec>,
    zero_rtt: bool,
    resumption: bool,
    idempotent: Option<Vec<String>>,
    idle_timeout: Option<f64>,
    keep_alive: Option<f64>,
    max_frame_size: Option<u32>,
    stream_options: Option<std::collections::HashMap<String, f64>>,
    event_queue: Option<usize>,
    assembly_timeout: Option<f64>,
    max_assembly_bytes: Option<usize>,
    interceptors: Option<Vec<Py<PyAny>>>,
    transport: Option<std::collections::HashMap<String, Bound<'py, PyAny>>>,
    completions: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut builder = RpcClient::builder()
        .codec(Codec::Json)
        .zero_rtt(zero_rtt)
        .resumption(resumption)
        .session_cache(session_cache());
    // First: the separate idle_timeout and keep_alive arguments below override it.
    if let Some(map) = transport {
        builder = builder.transport(crate::transport_options(map)?);
    }
    match call_timeout {
        // Calls carry no deadline unless they set one (the server's handler timeout applies).
        Some(0.0) => builder = builder.no_default_timeout(),
        Some(t) => builder = builder.timeout(seconds(t, "call_timeout")?),
        None => {}
    }
    if let Some(spec) = reconnect {
        builder = builder.reconnect(reconnect_policy(spec)?);
    }
    for method in idempotent.unwrap_or_default() {
        builder = builder.idempotent(method);
    }
    if let Some(t) = idle_timeout {
        builder = builder.idle_timeout(seconds(t, "idle_timeout")?);
    }
    if let Some(t) = keep_alive {
        builder = builder.keep_alive(Some(seconds(t, "keep_alive")?));
    }
    if let Some(n) = max_frame_size {
        builder = builder.max_frame_size(n);
    }
    if let Some(map) = stream_options {
        builder = builder.stream_options(crate::stream_options(map)?);
    }
    if let Some(n) = event_queue {
        builder = builder.event_queue(crate::positive(n, "event_queue")?);
    }
    if let Some(t) = assembly_timeout {
        builder = builder.assembly_timeout(seconds(t, "assembly_timeout")?);
    }
    if let Some(n) = max_assembly_bytes {
        builder = builder.max_assembly_bytes(crate::positive(n, "max_assembly_bytes")?);
    }
    let target = match (addr, discover) {
        (Some(addr), None) => Target::Address(addr),
        (None, Some(name)) => {
            let mut opts = echostream::DiscoverOptions::new(name);
            if let Some(t) = discover_timeout {
                opts = opts.timeout(seconds(t, "timeout")?);
            }
            if let Some(i) = interfaces {
                opts = opts.interfaces(crate::interfaces(i)?);
            }
            Target::Discover(opts)
        }
        _ => return Err(PyValueError::new_err("give either an address or discover=NAME")),
    };
    if let Some(t) = timeout {
        builder = builder.connect_timeout(seconds(t, "timeout")?);
    }
    let trust = trust(pins, ca, known_hosts, insecure)?;
    if let Some(trust) = &trust {
        builder = builder.trust(trust.clone());
    }
    if let Some(name) = server_name {
        builder = builder.server_name(name);
    }
    if let Some(token) = token {
        builder = builder.token(token);
    }
    match (cert, key, identity) {
        (Some(cert_chain), Some(private_key), None) => {
            builder = builder.client_identity(ServerIdentity::PemFiles {
                cert_chain: cert_chain.into(),
                private_key: private_key.into(),
            });
        }
        (None, None, Some(spec)) => {
            if let Some(id) = crate::server::identity(spec)? {
                builder = builder.client_identity(id);
            }
        }
        (None, None, None) => {}
        (_, _, Some(_)) => {
            return Err(PyValueError::new_err(
                "give the client certificate either as identity= or as cert= and key=, not both",
            ))
        }
        _ => return Err(PyValueError::new_err("cert and key go together (PEM files)")),
    }
    for (k, v) in hello.unwrap_or_default() {
        builder = builder.metadata(k, v.into_bytes());
    }
    if interceptors.is_some() || routes.is_some() {
        let locals = crate::server::PyLoop::current(py, completions)?;
        for f in interceptors.unwrap_or_default() {
            builder = builder.interceptor(crate::server::interceptor(f, &locals));
        }
        if let Some(routes) = routes {
            for h in routes.handlers(&locals, py) {
                builder = builder.handler(h);
            }
            for l in routes.listeners(&locals, py) {
                builder = builder.listener(l);
            }
            for s in routes.stream_handlers(&locals, py) {
                builder = builder.stream_handler(s);
            }
        }
    }
    future_into_py(py, async move {
        let inner = match target {
            Target::Address(addr) => builder.connect(&addr).await,
            Target::Discover(mut opts) => {
                if let Some(trust) = trust {
                    opts = opts.trust(trust);
                }
                builder.discover(opts).await
            }
        }
        .map_err(to_py)?;
        Ok(Client { inner })
    })
}

/// The session tickets every `connect()` of this process shares: each call builds a builder of
/// its own, and a second `connect()` to the same server resumes the session (0-RTT where the
/// server allows it) as a Rust program reusing one builder does.
fn session_cache() -> &'static SessionCache {
    static CACHE: std::sync::OnceLock<SessionCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(SessionCache::new)
}

/// Where `connect` goes.
enum Target {
    Address(String),
    Discover(echostream::DiscoverOptions),
}

/// A connection to a server (`RpcClient`).
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct Client {
    inner: RpcClient,
}

#[pymethods]
impl Client {
    /// Calls `method` with JSON text `args`; resolves to the JSON text of the result.
    #[pyo3(signature = (method, args, timeout=None, metadata=None))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        method: String,
        args: String,
        timeout: Option<f64>,
        metadata: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        json_request(py, self.inner.clone(), method, args, timeout, metadata)
    }

    /// `request`, finished through `completions` (see `completion.rs`): returns the call's id
    /// there at once.
    #[cfg(unix)]
    #[pyo3(signature = (completions, method, args, timeout=None, metadata=None))]
    fn request_via(
        &self,
        completions: Bound<'_, Completions>,
        method: String,
        args: String,
        timeout: Option<f64>,
        metadata: Option<Vec<(String, String)>>,
    ) -> PyResult<u64> {
        json_request_via(
            completions.get(),
            self.inner.clone(),
            method,
            args,
            timeout,
            metadata,
        )
    }

    /// Sends event `name` with JSON text `value`.
    fn emit<'py>(&self, py: Python<'py>, name: String, value: String) -> PyResult<Bound<'py, PyAny>> {
        let value = raw_json(value, "the event value")?;
        let client = self.inner.clone();
        future_into_py(py, async move {
            client.emit(&name, &*value).await.map_err(to_py)?;
            Ok(())
        })
    }

    /// The events `name` the server sends, as JSON text.
    fn subscribe(&self, name: &str) -> EventStream {
        EventStream::new(crate::in_runtime(|| self.inner.subscribe(name)))
    }

    /// One round trip on the control stream; resolves to seconds.
    #[pyo3(signature = (timeout=5.0))]
    fn ping<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let timeout = seconds(timeout, "timeout")?;
        let client = self.inner.clone();
        future_into_py(py, async move {
            let rtt = client.ping(timeout).await.map_err(to_py)?;
            Ok(rtt.as_secs_f64())
        })
    }

    /// The handle of the current connection (calls, events and streams towards the server).
    fn peer(&self) -> PeerHandle {
        PeerHandle {
            inner: self.inner.peer(),
        }
    }

    /// The clock synchronised with the server's.
    fn clock(&self) -> Clock {
        Clock {
            inner: crate::in_runtime(|| self.inner.clock()),
        }
    }

    /// Connection details as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        info_dict(py, &self.inner.info())
    }

    /// Whether the connection is up.
    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// What happens to the connection from now on (`RpcClient::connection_events`).
    fn connection_events(&self) -> ClientEventStream {
        ClientEventStream {
            inner: Arc::new(tokio::sync::Mutex::new(self.inner.connection_events())),
        }
    }

    /// The server's health status for `service` (`""`: the whole server), from its health
    /// service: `"SERVING"`, `"NOT_SERVING"`, `"UNKNOWN"` or `"SERVICE_UNKNOWN"`.
    #[pyo3(signature = (service=""))]
    fn health<'py>(&self, py: Python<'py>, service: &str) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        let service = service.to_owned();
        future_into_py(py, async move {
            let status = echostream::Caller::health(&client, &service)
                .await
                .map_err(to_py)?;
            Ok(status.name())
        })
    }

    /// Whether a TLS session ticket for the server is held (a reconnection resumes).
    fn can_resume(&self) -> bool {
        self.inner.can_resume()
    }

    /// The server's address.
    #[getter]
    fn remote_address(&self) -> String {
        self.inner.remote_addr().to_string()
    }

    /// The server's certificate fingerprint (64 hex digits of SHA-256).
    #[getter]
    fn server_fingerprint(&self) -> Option<String> {
        self.inner.server_fingerprint().map(|f| f.to_string())
    }

    /// Opens stream `name` towards the server.
    #[pyo3(signature = (name, metadata=None))]
    fn open_stream<'py>(
        &self,
        py: Python<'py>,
        name: String,
        metadata: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let md = crate::metadata(metadata);
        let peer = self.inner.peer();
        future_into_py(py, async move {
            let s = peer.open_stream_with(&name, md).await.map_err(stream_to_py)?;
            Ok(Stream::new(s))
        })
    }

    /// Closes the connection gracefully.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        future_into_py(py, async move {
            client.close().await;
            Ok(())
        })
    }
}

/// `ConnectionInfo` as a dict.
pub(crate) fn info_dict<'py>(py: Python<'py>, info: &ConnectionInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("remote", info.remote.to_string())?;
    d.set_item("connection_id", info.connection_id)?;
    d.set_item("fingerprint", info.fingerprint.as_ref().map(|f| f.to_string()))?;
    d.set_item("hello_metadata", metadata_pairs(&info.hello_metadata))?;
    d.set_item("rtt", info.rtt.as_secs_f64())?;
    d.set_item("bytes_sent", info.bytes_sent)?;
    d.set_item("bytes_received", info.bytes_received)?;
    d.set_item("packets_sent", info.packets_sent)?;
    d.set_item("packets_received", info.packets_received)?;
    d.set_item("lost_packets", info.lost_packets)?;
    d.set_item("calls_pending", info.calls_pending)?;
    d.set_item("requests_running", info.requests_running)?;
    d.set_item("zero_rtt", zero_rtt_name(info.zero_rtt))?;
    Ok(d)
}

/// What became of 0-RTT, as the Python half names it.
fn zero_rtt_name(z: ZeroRtt) -> &'static str {
    match z {
        ZeroRtt::NotAttempted => "not-attempted",
        ZeroRtt::Pending => "pending",
        ZeroRtt::Accepted => "accepted",
        ZeroRtt::Rejected => "rejected",
        // A state added to the core later.
        _ => "unknown",
    }
}

/// One connection (`Peer`): the server's view of a client, or the client's of its server.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct PeerHandle {
    pub(crate) inner: Peer,
}

#[pymethods]
impl PeerHandle {
    /// Calls `method` on this peer with JSON text `args`; resolves to JSON text.
    #[pyo3(signature = (method, args, timeout=None, metadata=None))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        method: String,
        args: String,
        timeout: Option<f64>,
        metadata: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        json_request(py, self.inner.clone(), method, args, timeout, metadata)
    }

    /// `request`, finished through `completions` (see `completion.rs`): returns the call's id
    /// there at once.
    #[cfg(unix)]
    #[pyo3(signature = (completions, method, args, timeout=None, metadata=None))]
    fn request_via(
        &self,
        completions: Bound<'_, Completions>,
        method: String,
        args: String,
        timeout: Option<f64>,
        metadata: Option<Vec<(String, String)>>,
    ) -> PyResult<u64> {
        json_request_via(
            completions.get(),
            self.inner.clone(),
            method,
            args,
            timeout,
            metadata,
        )
    }

    /// Sends event `name` with JSON text `value` to this peer.
    fn emit<'py>(&self, py: Python<'py>, name: String, value: String) -> PyResult<Bound<'py, PyAny>> {
        let value = raw_json(value, "the event value")?;
        let peer = self.inner.clone();
        future_into_py(py, async move {
            peer.emit_with(&name, &*value, CallOptions::new().codec(Codec::Json))
                .await
                .map_err(to_py)?;
            Ok(())
        })
    }

    /// One round trip; resolves to seconds.
    #[pyo3(signature = (timeout=5.0))]
    fn ping<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let timeout = seconds(timeout, "timeout")?;
        let peer = self.inner.clone();
        future_into_py(py, async move {
            let rtt = peer.ping(timeout).await.map_err(to_py)?;
            Ok(rtt.as_secs_f64())
        })
    }

    /// Opens stream `name` towards this peer.
    #[pyo3(signature = (name, metadata=None))]
    fn open_stream<'py>(
        &self,
        py: Python<'py>,
        name: String,
        metadata: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let md = crate::metadata(metadata);
        let peer = self.inner.clone();
        future_into_py(py, async move {
            let s = peer.open_stream_with(&name, md).await.map_err(stream_to_py)?;
            Ok(Stream::new(s))
        })
    }

    /// Resolves, with the reason as an exception object, once the connection is closed.
    fn closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let peer = self.inner.clone();
        future_into_py(py, async move {
            let e = peer.closed().await;
            Ok(e.to_string())
        })
    }

    /// Closes the connection with `reason`.
    #[pyo3(signature = (reason="closed by the application"))]
    fn close(&self, reason: &str) {
        crate::in_runtime(|| self.inner.close(reason));
    }

    /// Whether the connection is closed.
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Connection details as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        info_dict(py, &self.inner.info())
    }

    /// The clock synchronised with this peer's.
    fn clock(&self) -> Clock {
        Clock {
            inner: crate::in_runtime(|| self.inner.clock()),
        }
    }

    /// The peer's address.
    #[getter]
    fn address(&self) -> String {
        self.inner.remote_addr().to_string()
    }

    /// What became of 0-RTT on this connection.
    #[getter]
    fn zero_rtt(&self) -> &'static str {
        zero_rtt_name(self.inner.zero_rtt())
    }

    /// The connection's id (unique within this process).
    #[getter]
    fn connection_id(&self) -> u64 {
        self.inner.connection_id()
    }

    /// The peer's certificate fingerprint, if it presented one.
    #[getter]
    fn fingerprint(&self) -> Option<String> {
        self.inner.fingerprint().map(|f| f.to_string())
    }

    /// The metadata of the peer's hello.
    #[getter]
    fn hello_metadata(&self) -> Vec<(String, String)> {
        metadata_pairs(self.inner.hello_metadata())
    }

    fn __repr__(&self) -> String {
        format!(
            "<Peer {} #{}>",
            self.inner.remote_addr(),
            self.inner.connection_id()
        )
    }
}

/// A client's connection events as dicts (`ClientConnectionEvents`).
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct ClientEventStream {
    inner: Arc<tokio::sync::Mutex<echostream::ClientConnectionEvents>>,
}

#[pymethods]
impl ClientEventStream {
    /// The next event (`{"event": "connected" | "disconnected", ...}`), or `None` once no
    /// further connection will come.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        future_into_py(py, async move {
            let event = inner.lock().await.recv().await;
            crate::server::event_dict(event)
        })
    }
}

/// The events of one name, as JSON text.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct EventStream {
    inner: Arc<tokio::sync::Mutex<Subscription<Box<RawValue>>>>,
}

impl EventStream {
    pub(crate) fn new(sub: Subscription<Box<RawValue>>) -> Self {
        EventStream {
            inner: Arc::new(tokio::sync::Mutex::new(sub)),
        }
    }
}

#[pymethods]
impl EventStream {
    /// The next event's JSON text, or `None` once the connection is gone for good.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sub = self.inner.clone();
        future_into_py(py, async move {
            let mut sub = sub.lock().await;
            Ok(sub.recv().await.map(|v| v.get().to_owned()))
        })
    }

    /// Events dropped because this subscription fell behind.
    fn dropped(&self) -> u64 {
        self.inner.try_lock().map(|s| s.dropped()).unwrap_or(0)
    }
}

/// The clock synchronised with a peer's (`SyncedClock`). Times are nanoseconds since the UNIX
/// epoch on the peer's clock.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct Clock {
    inner: SyncedClock,
}

#[pymethods]
impl Clock {
    /// Waits until `samples` clock samples are in (at most `timeout` seconds).
    #[pyo3(signature = (samples=8, timeout=5.0))]
    fn synced<'py>(&self, py: Python<'py>, samples: u64, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let timeout = seconds(timeout, "timeout")?;
        let clock = self.inner.clone();
        future_into_py(py, async move {
            clock.synced(samples, timeout).await.map_err(to_py)?;
            Ok(())
        })
    }

    /// The peer's time now, in nanoseconds since the epoch (`None` before the first sample).
    fn now(&self) -> Option<u64> {
        self.inner.now().map(|t| t.0)
    }

    /// This side's time now, in nanoseconds since the epoch.
    fn local_now(&self) -> u64 {
        self.inner.local_now().0
    }

    /// Peer clock minus local clock, in nanoseconds.
    fn offset_nanos(&self) -> Option<i64> {
        self.inner.offset_nanos()
    }

    /// Round-trip time of the best sample, in seconds.
    fn rtt(&self) -> Option<f64> {
        self.inner.rtt().map(|d: Duration| d.as_secs_f64())
    }

    /// Bound of the offset's error, in seconds.
    fn error_bound(&self) -> Option<f64> {
        self.inner.error_bound().map(|d| d.as_secs_f64())
    }

    /// Drift of the peer's clock against the local one, in parts per million.
    fn drift_ppm(&self) -> Option<f64> {
        self.inner.drift_ppm()
    }
}

/// One call with JSON text in and out, over a client or a peer handle (both are `Caller`s).
#[cfg(unix)]
fn json_request_via<C: echostream::Caller + 'static>(
    completions: &Completions,
    caller: C,
    method: String,
    args: String,
    timeout: Option<f64>,
    metadata: Option<Vec<(String, String)>>,
) -> PyResult<u64> {
    let args = raw_json(args, "the arguments")?;
    let opts = call_options(timeout, metadata)?;
    Ok(completions.spawn(async move {
        let out: Box<RawValue> = caller.send_request(&method, &*args, opts).await?;
        Ok(out.get().to_owned())
    }))
}

fn json_request<'py, C: echostream::Caller + 'static>(
    py: Python<'py>,
    caller: C,
    method: String,
    args: String,
    timeout: Option<f64>,
    metadata: Option<Vec<(String, String)>>,
) -> PyResult<Bound<'py, PyAny>> {
    let args = raw_json(args, "the arguments")?;
    let opts = call_options(timeout, metadata)?;
    future_into_py(py, async move {
        let out: Box<RawValue> = caller.send_request(&method, &*args, opts).await.map_err(to_py)?;
        Ok(out.get().to_owned())
    })
}
