//! Python functions behind the Rust `Handler`, `Listener` and `StreamHandler` traits, and the
//! server (`RpcServer` run on the runtime, driven through its `ServerHandle`).
//!
//! A Python function is always run on the asyncio loop that registered it (the one running
//! `Server.start()` or `connect()`): started by a job on that loop's completion queue
//! (`completion.rs`, `run_queued`), or, where the loop has none, through
//! `asyncio.run_coroutine_threadsafe`. The Rust task waits without the GIL, and dropping the Rust
//! future (the call's deadline, the caller's cancel, the connection's end) cancels the Python
//! task.

use crate::client::{info_dict, raw_json, EventStream, PeerHandle};
use crate::errors::{stream_to_py, to_py};
use crate::stream::Stream;
use crate::{metadata_pairs, positive, seconds, Buf};
use echostream::rpc::{ConnectionRequest, ConnectionRequests, RateLimit};
use echostream::rpc::{Handler, Listener, Payload, PeerIdentity, ServerHandle, StaticTokens};
use echostream::stream::StreamHandler;
use echostream::{
    ClientAuth, ClientCertTrust, Code, Codec, ConnectionEvent, ConnectionEvents, ConnectionPolicy, Context,
    IncomingStreams, RpcServer, ServerIdentity, Status, XStream,
};
use futures::future::BoxFuture;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyDict;
use pyo3_async_runtimes::tokio::future_into_py;
use pyo3_async_runtimes::TaskLocals;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// What the Python half registered: `(name, function)` lists of handlers, listeners and stream
/// handlers, and the names of the handlers declared idempotent. Each function takes
/// `(CallContext, data)` and returns a coroutine.
#[derive(FromPyObject)]
pub(crate) struct PyRoutes(
    Vec<(String, Py<PyAny>)>,
    Vec<(String, Py<PyAny>)>,
    Vec<(String, Py<PyAny>)>,
    Vec<String>,
);

/// The event loop Python functions run on, and (on unix) its completion queue, through which
/// they start without a tokio thread taking the GIL (`completion.rs`).
pub(crate) struct PyLoop {
    locals: TaskLocals,
    #[cfg(unix)]
    jobs: Option<Arc<crate::completion::Shared>>,
}

impl PyLoop {
    /// The running loop; `completions` is its `Completions` (the Python half's `_completions()`),
    /// or `None` where it has none.
    pub(crate) fn current(py: Python<'_>, completions: Option<Bound<'_, PyAny>>) -> PyResult<Arc<PyLoop>> {
        let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
        #[cfg(unix)]
        {
            let jobs = match completions {
                Some(c) => Some(c.cast::<crate::completion::Completions>()?.get().shared()),
                None => None,
            };
            Ok(Arc::new(PyLoop { locals, jobs }))
        }
        #[cfg(not(unix))]
        {
            let _ = completions;
            Ok(Arc::new(PyLoop { locals }))
        }
    }
}

/// One Python function and the loop it runs on.
struct Target {
    name: String,
    function: Arc<Py<PyAny>>,
    locals: Arc<PyLoop>,
}

impl Target {
    fn list(list: &[(String, Py<PyAny>)], locals: &Arc<PyLoop>, py: Python<'_>) -> Vec<Target> {
        list.iter()
            .map(|(name, f)| Target {
                name: name.clone(),
                function: Arc::new(f.clone_ref(py)),
                locals: locals.clone(),
            })
            .collect()
    }

    /// Runs `function(ctx, arg)` on the loop; resolves to what the coroutine returns.
    ///
    /// The core polls a call once inline, on the connection's reader, and then moves it to a
    /// task of its own: the first poll only queues a job (`run_queued`), or, without a queue,
    /// only yields, so that the GIL is taken in that task and a busy interpreter never stalls
    /// the reader (and the other calls of the connection).
    fn run<A>(&self, ctx: Context, arg: A) -> impl std::future::Future<Output = Outcome> + Send + 'static
    where
        A: for<'py> IntoPyObject<'py> + Send + 'static,
    {
        self.run_args((CallContext { inner: ctx }, arg))
    }

    /// Runs `function(*args)` on the loop, as [`Target::run`] does.
    fn run_args<A>(&self, args: A) -> futures::future::BoxFuture<'static, Outcome>
    where
        A: for<'py> pyo3::call::PyCallArgs<'py> + Send + 'static,
    {
        #[cfg(unix)]
        if let Some(jobs) = &self.locals.jobs {
            return Box::pin(run_queued(jobs.clone(), self.function.clone(), args));
        }
        let function = self.function.clone();
        let locals = self.locals.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            let (cf, rx) = Python::attach(|py| -> PyResult<(Py<PyAny>, oneshot::Receiver<Outcome>)> {
                let coro = function.bind(py).call1(args)?;
                let cf = py
                    .import("asyncio")?
                    .call_method1("run_coroutine_threadsafe", (coro, locals.locals.event_loop(py)))?;
                let (tx, rx) = oneshot::channel();
                cf.call_method1(
                    "add_done_callback",
                    (Done {
                        tx: Mutex::new(Some(tx)),
                    },),
                )?;
                Ok((cf.unbind(), rx))
            })?;
            let mut guard = CancelOnDrop(Some(cf));
            let out = rx
                .await
                .unwrap_or_else(|_| Err(PyRuntimeError::new_err("the asyncio loop dropped the call")));
            guard.0 = None;
            out
        })
    }
}

/// `function(*args)` started as a task of the loop by a job on its completion queue: the
/// loop's thread makes the coroutine and the task when it drains, the task's done callback
/// (also on that thread) sends the result, and dropping this future pushes a job that cancels
/// the task. No tokio thread takes the GIL, and the core's inline first poll only queues.
#[cfg(unix)]
async fn run_queued<A>(jobs: Arc<crate::completion::Shared>, function: Arc<Py<PyAny>>, args: A) -> Outcome
where
    A: for<'py> pyo3::call::PyCallArgs<'py> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let state = Arc::new(Queued::default());
    let job_state = state.clone();
    let pushed = jobs.push_job(Box::new(move |py, event_loop| {
        let done = Done {
            tx: Mutex::new(Some(tx)),
        };
        // Under the lock `CancelQueued` takes too: either it sees the task, or this sees that
        // the Rust side stopped waiting.
        let mut slot = match job_state.task.lock() {
            Ok(slot) => slot,
            Err(_) => return,
        };
        if job_state.cancelled.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let started = (|| -> PyResult<Bound<'_, PyAny>> {
            let coro = function.bind(py).call1(args)?;
            event_loop.call_method1("create_task", (coro,))
        })();
        let task = match started {
            Ok(task) => task,
            Err(e) => return done.send(Err(e)),
        };
        match Py::new(py, done) {
            Ok(callback) => {
                if let Err(e) = task.call_method1("add_done_callback", (callback.clone_ref(py),)) {
                    let _ = task.call_method0("cancel");
                    return callback.get().send(Err(e));
                }
            }
            // The callback (and its sender) is gone: the call ends as "dropped by the loop".
            Err(_) => {
                let _ = task.call_method0("cancel");
                return;
            }
        }
        *slot = Some(task.unbind());
    }));
    if let Err(reason) = pushed {
        return Err(PyRuntimeError::new_err(reason));
    }
    let mut guard = CancelQueued(Some((jobs, state)));
    let out = rx
        .await
        .unwrap_or_else(|_| Err(PyRuntimeError::new_err("the asyncio loop dropped the call")));
    guard.0 = None;
    out
}

/// A queued Python call's task, once the loop started it.
#[cfg(unix)]
#[derive(Default)]
struct Queued {
    task: Mutex<Option<Py<PyAny>>>,
    /// The Rust side stopped waiting: not started, or cancelled.
    cancelled: std::sync::atomic::AtomicBool,
}

/// Cancels a queued Python call when the Rust side stops waiting for it (deadline, the
/// caller's cancel, the connection's end), through a job: no GIL here.
#[cfg(unix)]
struct CancelQueued(Option<(Arc<crate::completion::Shared>, Arc<Queued>)>);

#[cfg(unix)]
impl Drop for CancelQueued {
    fn drop(&mut self) {
        if let Some((jobs, state)) = self.0.take() {
            let started = match state.task.lock() {
                Ok(mut slot) => {
                    state.cancelled.store(true, std::sync::atomic::Ordering::Release);
                    slot.take()
                }
                Err(_) => None,
            };
            // Not started yet: the start job sees `cancelled` and does nothing.
            if let Some(task) = started {
                let _ = jobs.push_job(Box::new(move |py, _| {
                    let _ = task.bind(py).call_method0("cancel");
                }));
            }
        }
    }
}

/// What a Python call ends with.
type Outcome = PyResult<Returned>;

/// What a Python call returned, and its bytes when it is `bytes` (what the Python half's
/// handler wrappers return): read on the loop's thread, where the GIL is held anyway, so that
/// the handler's answer needs no GIL on a tokio thread.
struct Returned {
    object: Py<PyAny>,
    bytes: Option<PyBackedBytes>,
}

/// Completion callback of the `concurrent.futures.Future` of one Python call.
#[pyclass(frozen)]
struct Done {
    tx: Mutex<Option<oneshot::Sender<Outcome>>>,
}

impl Done {
    /// Hands the call's outcome to the Rust side waiting for it (once).
    fn send(&self, result: Outcome) {
        if let Some(tx) = self.tx.lock().ok().and_then(|mut g| g.take()) {
            let _ = tx.send(result);
        }
    }
}

#[pymethods]
impl Done {
    fn __call__(&self, fut: &Bound<'_, PyAny>) {
        self.send(fut.call_method0("result").map(|r| Returned {
            bytes: r.extract::<PyBackedBytes>().ok(),
            object: r.unbind(),
        }));
    }
}

/// Cancels the Python task if the Rust side stops waiting for it.
struct CancelOnDrop(Option<Py<PyAny>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cf) = self.0.take() {
            Python::attach(|py| {
                let _ = cf.bind(py).call_method0("cancel");
            });
        }
    }
}

/// A Python exception as the status the caller receives: an `echostream.RemoteError` keeps its
/// code and message (the Python half turns every other exception into one).
fn status_of(e: PyErr) -> Status {
    Python::attach(|py| {
        let v = e.value(py);
        let code = v.getattr("code").and_then(|c| c.extract::<u32>());
        let message = v.getattr("message").and_then(|m| m.extract::<String>());
        match (code, message) {
            (Ok(code), Ok(message)) => Status::new(Code(code), message),
            _ => Status::new(Code::INTERNAL, e.to_string()),
        }
    })
}

fn not_json(kind: &str, name: &str, codec: Codec) -> Status {
    Status::new(
        Code::BAD_PAYLOAD,
        format!(
            "{kind} `{name}` is written in Python and takes the JSON codec; this one came encoded with \
             {codec:?} (send it with CallOptions::codec(Codec::Json))"
        ),
    )
}

/// A Python request handler, and whether it is declared idempotent (run for 0-RTT calls).
pub(crate) struct PyHandler(Target, bool);

impl Handler for PyHandler {
    fn method(&self) -> &str {
        &self.0.name
    }

    fn idempotent(&self) -> bool {
        self.1
    }

    fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>> {
        if args.codec != Codec::Json {
            return Box::pin(std::future::ready(Err(not_json(
                "handler",
                &self.0.name,
                args.codec,
            ))));
        }
        let running = self.0.run(ctx, Buf(args.bytes));
        let name = self.0.name.clone();
        Box::pin(async move {
            let out = running.await.map_err(status_of)?;
            // The Python half returns `bytes`; they are sent without a copy.
            let Some(bytes) = out.bytes else {
                return Err(Status::new(
                    Code::INTERNAL,
                    format!("handler `{name}`: the Python half answered with something other than bytes"),
                ));
            };
            Ok(Payload {
                codec: Codec::Json,
                bytes: bytes::Bytes::from_owner(bytes),
            })
        })
    }
}

/// A Python event listener.
pub(crate) struct PyListener(Target);

impl Listener for PyListener {
    fn event(&self) -> &str {
        &self.0.name
    }

    fn call(&self, ctx: Context, payload: Payload) -> BoxFuture<'static, Result<(), Status>> {
        if payload.codec != Codec::Json {
            return Box::pin(std::future::ready(Err(not_json(
                "listener",
                &self.0.name,
                payload.codec,
            ))));
        }
        let running = self.0.run(ctx, Buf(payload.bytes));
        Box::pin(async move {
            running.await.map_err(status_of)?;
            Ok(())
        })
    }
}

/// A Python stream handler.
pub(crate) struct PyStreamHandler(Target);

impl StreamHandler for PyStreamHandler {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn call(&self, ctx: Context, stream: XStream) -> BoxFuture<'static, Result<(), Status>> {
        let running = self.0.run(ctx, Stream::new(stream));
        Box::pin(async move {
            running.await.map_err(status_of)?;
            Ok(())
        })
    }
}

/// An authenticator written in Python: the Python half's wrapper takes `(remote, fingerprint,
/// token, metadata)` and returns a coroutine resolving to the identity's name; `None` or an
/// exception rejects the client (the exception's text is the reason it reads).
pub(crate) struct PyAuthenticator(Target);

impl echostream::rpc::Authenticator for PyAuthenticator {
    fn authenticate(
        &self,
        request: echostream::rpc::AuthRequest,
    ) -> BoxFuture<'static, echostream::rpc::AuthResult> {
        let args = (
            request.remote.to_string(),
            request.certificate.as_ref().map(|c| c.fingerprint.to_string()),
            request.token().map(str::to_owned),
            metadata_pairs(&request.metadata),
        );
        // Runs on the asyncio loop; the connection's handshake task waits (within the
        // handshake timeout) without the GIL, and no other connection waits for it.
        let running = self.0.run_args(args);
        Box::pin(async move {
            match running.await {
                Ok(returned) => Python::attach(|py| match returned.object.extract::<Option<String>>(py) {
                    Ok(Some(name)) => Ok(Some(PeerIdentity::new(name))),
                    Ok(None) => Err("rejected by the authenticator".to_owned()),
                    Err(_) => {
                        Err("the authenticator returned something other than a name (str) or None".to_owned())
                    }
                }),
                Err(e) => Err(status_of(e).message().to_owned()),
            }
        })
    }
}

/// An interceptor written in Python: the Python half's wrapper takes `(CallContext, kind)`
/// (`"request"`, `"event"` or `"stream"`) and returns a coroutine; the call goes on unless it
/// raises (an `echostream.RemoteError` keeps its code; the wrapper turns a `False` into
/// `PERMISSION_DENIED`).
pub(crate) struct PyInterceptor(Target);

impl echostream::rpc::Interceptor for PyInterceptor {
    fn intercept(
        &self,
        ctx: &Context,
        kind: echostream::rpc::CallKind,
    ) -> BoxFuture<'static, Result<(), Status>> {
        let kind = match kind {
            echostream::rpc::CallKind::Request => "request",
            echostream::rpc::CallKind::Event => "event",
            echostream::rpc::CallKind::StreamOpen => "stream",
            _ => "unknown",
        };
        let running = self.0.run(ctx.clone(), kind);
        Box::pin(async move {
            running.await.map_err(status_of)?;
            Ok(())
        })
    }
}

/// The interceptor that runs `function` (the Python half's wrapper) on the loop of `locals`.
pub(crate) fn interceptor(function: Py<PyAny>, locals: &Arc<PyLoop>) -> PyInterceptor {
    PyInterceptor(target("interceptor", function, locals))
}

/// A Python function run on the loop of `locals`, by the name its errors use.
fn target(name: &str, function: Py<PyAny>, locals: &Arc<PyLoop>) -> Target {
    Target {
        name: name.to_owned(),
        function: Arc::new(function),
        locals: locals.clone(),
    }
}

impl PyRoutes {
    pub(crate) fn handlers(&self, locals: &Arc<PyLoop>, py: Python<'_>) -> Vec<PyHandler> {
        Target::list(&self.0, locals, py)
            .into_iter()
            .map(|t| {
                let idempotent = self.3.contains(&t.name);
                PyHandler(t, idempotent)
            })
            .collect()
    }

    pub(crate) fn listeners(&self, locals: &Arc<PyLoop>, py: Python<'_>) -> Vec<PyListener> {
        Target::list(&self.1, locals, py)
            .into_iter()
            .map(PyListener)
            .collect()
    }

    pub(crate) fn stream_handlers(&self, locals: &Arc<PyLoop>, py: Python<'_>) -> Vec<PyStreamHandler> {
        Target::list(&self.2, locals, py)
            .into_iter()
            .map(PyStreamHandler)
            .collect()
    }
}

/// What a handler gets with each call (`Context`).
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct CallContext {
    inner: Context,
}

#[pymethods]
impl CallContext {
    /// The method, event or stream name.
    #[getter]
    fn method(&self) -> String {
        self.inner.method().to_owned()
    }

    /// The caller's address.
    #[getter]
    fn peer_address(&self) -> String {
        self.inner.peer_addr().to_string()
    }

    /// The caller's certificate fingerprint, if it presented one (mutual TLS).
    #[getter]
    fn fingerprint(&self) -> Option<String> {
        self.inner.peer_fingerprint().map(|f| f.to_string())
    }

    /// The call's metadata as `(key, value)` pairs.
    #[getter]
    fn metadata(&self) -> Vec<(String, String)> {
        metadata_pairs(self.inner.metadata())
    }

    /// The metadata of the caller's hello.
    #[getter]
    fn hello_metadata(&self) -> Vec<(String, String)> {
        metadata_pairs(self.inner.hello_metadata())
    }

    /// Seconds left before the caller's deadline, if it set one.
    #[getter]
    fn remaining(&self) -> Option<f64> {
        self.inner.remaining().map(|d| d.as_secs_f64())
    }

    /// Who the caller is, as the server's token table or client certificate established it
    /// (`None` for an anonymous caller).
    #[getter]
    fn identity(&self) -> Option<String> {
        self.inner.identity().map(|i| i.name().to_owned())
    }

    /// The connection the call came on, for calls back to the caller.
    #[getter]
    fn peer(&self) -> PeerHandle {
        PeerHandle {
            inner: self.inner.peer().clone(),
        }
    }
}

/// An identity from the Python half (`Identity._spec`): `("default" | "ephemeral" |
/// "persistent" | "pem", name or certificate path, key path)`.
pub(crate) type IdentitySpec = (String, Option<String>, Option<String>);

/// How the server checks client certificates, from the Python half (`ClientAuth._spec`):
/// `(required, CA file, pinned fingerprints)`, exactly one of the last two given.
pub(crate) type ClientAuthSpec = (bool, Option<String>, Option<Vec<String>>);

fn client_auth_of((required, ca, pins): ClientAuthSpec) -> PyResult<ClientAuth> {
    let trust = match (ca, pins) {
        (Some(ca), None) => ClientCertTrust::CaFile(ca.into()),
        (None, Some(pins)) => ClientCertTrust::pinned(crate::client::fingerprints(pins)?),
        _ => {
            return Err(PyValueError::new_err(
                "client_auth: give either a CA file (ca=) or pinned fingerprints (pins=)",
            ))
        }
    };
    Ok(if required {
        ClientAuth::required(trust)
    } else {
        ClientAuth::optional(trust)
    })
}

/// The identity a spec names (`None`: the Rust default, the persistent identity "default").
pub(crate) fn identity(spec: IdentitySpec) -> PyResult<Option<ServerIdentity>> {
    match spec {
        (k, None, None) if k == "default" => Ok(None),
        (k, None, None) if k == "ephemeral" => Ok(Some(ServerIdentity::Ephemeral)),
        (k, Some(name), None) if k == "persistent" => Ok(Some(ServerIdentity::Persistent { name })),
        (k, Some(cert), Some(key)) if k == "pem" => Ok(Some(ServerIdentity::PemFiles {
            cert_chain: cert.into(),
            private_key: key.into(),
        })),
        (k, ..) => Err(PyValueError::new_err(format!(
            "identity `{k}` is not a known kind"
        ))),
    }
}

/// The fingerprint of the identity a spec names, loading it (a persistent one is made on first
/// use). An ephemeral identity has none to give: it is new each time it is loaded.
#[pyfunction]
pub(crate) fn identity_fingerprint(py: Python<'_>, spec: IdentitySpec) -> PyResult<String> {
    let id = match identity(spec)? {
        Some(ServerIdentity::Ephemeral) => {
            return Err(PyValueError::new_err(
                "an ephemeral identity has no lasting fingerprint: it is new each time it is loaded \
                 (use Identity.persistent(name) or Identity.pem(...))",
            ))
        }
        Some(id) => id,
        None => ServerIdentity::default(),
    };
    let loaded = py
        .detach(|| id.load())
        .map_err(|e| to_py(echostream::Error::from(e)))?;
    Ok(loaded.fingerprint.to_string())
}

/// Builds the server (binding its socket) and runs it on the runtime; must be called from a
/// coroutine, whose loop then runs the Python handlers.
#[pyfunction]
#[pyo3(signature = (bind, identity_spec, routes, discovery=None, interfaces=None, tokens=None,
    require_token=false, client_auth=None, approve_connections=None, max_connections=None,
    handshake_timeout=None, shutdown_grace=None, zero_rtt=false, idle_timeout=None,
    max_frame_size=None, max_concurrent_requests=None, stream_options=None, rate_limit=None,
    method_rate_limits=None, default_handler_timeout=None, max_connections_per_address=None,
    event_queue=None, assembly_timeout=None, max_assembly_bytes=None, authenticator=None,
    interceptors=None, transport=None, completions=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_server(
    py: Python<'_>,
    bind: String,
    identity_spec: IdentitySpec,
    routes: PyRoutes,
    discovery: Option<String>,
    interfaces: Option<crate::InterfacesArg>,
    tokens: Option<Vec<(String, String)>>,
    require_token: bool,
    client_auth: Option<ClientAuthSpec>,
    approve_connections: Option<usize>,
    max_connections: Option<usize>,
    handshake_timeout: Option<f64>,
    shutdown_grace: Option<f64>,
    zero_rtt: bool,
    idle_timeout: Option<f64>,
    max_frame_size: Option<u32>,
    max_concurrent_requests: Option<usize>,
    stream_options: Option<std::collections::HashMap<String, f64>>,
    rate_limit: Option<u32>,
    method_rate_limits: Option<Vec<(String, u32)>>,
    default_handler_timeout: Option<f64>,
    max_connections_per_address: Option<usize>,
    event_queue: Option<usize>,
    assembly_timeout: Option<f64>,
    max_assembly_bytes: Option<usize>,
    authenticator: Option<Py<PyAny>>,
    interceptors: Option<Vec<Py<PyAny>>>,
    transport: Option<std::collections::HashMap<String, Bound<'_, PyAny>>>,
    completions: Option<Bound<'_, PyAny>>,
) -> PyResult<NativeServer> {
    let locals = PyLoop::current(py, completions)?;
    let mut builder = RpcServer::builder()
        .bind(bind)
        .codec(Codec::Json)
        .zero_rtt(zero_rtt);
    // First: the separate idle_timeout argument below overrides it.
    if let Some(map) = transport {
        builder = builder.transport(crate::transport_options(map)?);
    }
    if let Some(spec) = client_auth {
        builder = builder.client_auth(client_auth_of(spec)?);
    }
    let mut requests = None;
    if let Some(queue) = approve_connections {
        let (policy, rx) = ConnectionPolicy::approve_via_event(queue);
        builder = builder.connection_policy(policy);
        requests = Some(rx);
    }
    if let Some(n) = max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(t) = handshake_timeout {
        builder = builder.handshake_timeout(seconds(t, "handshake_timeout")?);
    }
    if let Some(t) = shutdown_grace {
        builder = builder.shutdown_grace(seconds(t, "shutdown_grace")?);
    }
    if let Some(t) = idle_timeout {
        builder = builder.idle_timeout(seconds(t, "idle_timeout")?);
    }
    if let Some(n) = max_frame_size {
        builder = builder.max_frame_size(n);
    }
    if let Some(n) = max_concurrent_requests {
        builder = builder.max_concurrent_requests(n);
    }
    if let Some(map) = stream_options {
        builder = builder.stream_options(crate::stream_options(map)?);
    }
    if let Some(n) = rate_limit {
        builder = builder.rate_limit(RateLimit::per_second(n));
    }
    for (pattern, n) in method_rate_limits.unwrap_or_default() {
        builder = builder.method_rate_limit(&pattern, RateLimit::per_second(n));
    }
    if let Some(t) = default_handler_timeout {
        builder = builder.default_handler_timeout(Some(seconds(t, "default_handler_timeout")?));
    }
    if let Some(n) = max_connections_per_address {
        builder = builder.max_connections_per_address(n);
    }
    if let Some(n) = event_queue {
        builder = builder.event_queue(positive(n, "event_queue")?);
    }
    if let Some(t) = assembly_timeout {
        builder = builder.assembly_timeout(seconds(t, "assembly_timeout")?);
    }
    if let Some(n) = max_assembly_bytes {
        builder = builder.max_assembly_bytes(positive(n, "max_assembly_bytes")?);
    }
    for f in interceptors.unwrap_or_default() {
        builder = builder.interceptor(interceptor(f, &locals));
    }
    if let Some(id) = identity(identity_spec)? {
        builder = builder.identity(id);
    }
    if let Some(name) = discovery {
        builder = builder.enable_discovery(name);
    }
    if let Some(i) = interfaces {
        builder = builder.discovery_interfaces(crate::interfaces(i)?);
    }
    if let Some(f) = authenticator {
        if tokens.is_some() || require_token {
            return Err(PyValueError::new_err(
                "give either tokens/require_token or an authenticator, not both",
            ));
        }
        builder = builder.authenticator(PyAuthenticator(target("authenticator", f, &locals)));
    }
    if tokens.is_some() || require_token {
        let mut table = StaticTokens::new();
        for (token, name) in tokens.unwrap_or_default() {
            table = table.token(token, PeerIdentity::new(name));
        }
        if require_token {
            table = table.required();
        }
        builder = builder.authenticator(table);
    }
    for h in routes.handlers(&locals, py) {
        builder = builder.handler(h);
    }
    for l in routes.listeners(&locals, py) {
        builder = builder.listener(l);
    }
    for s in routes.stream_handlers(&locals, py) {
        builder = builder.stream_handler(s);
    }
    let runtime = pyo3_async_runtimes::tokio::get_runtime();
    let server = py.detach(|| {
        let _entered = runtime.enter();
        builder.build()
    });
    let server = server.map_err(to_py)?;
    let handle = server.handle();
    let task = runtime.spawn(server.run());
    Ok(NativeServer {
        handle,
        task: Mutex::new(Some(task)),
        requests: Mutex::new(requests),
    })
}

/// A running server (`ServerHandle`).
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct NativeServer {
    handle: ServerHandle,
    task: Mutex<Option<tokio::task::JoinHandle<echostream::Result<()>>>>,
    /// The connections waiting for a decision (approve via event), until Python takes them.
    requests: Mutex<Option<ConnectionRequests>>,
}

#[pymethods]
impl NativeServer {
    /// The bound address.
    #[getter]
    fn address(&self) -> String {
        self.handle.local_addr().to_string()
    }

    /// The certificate fingerprint clients pin.
    #[getter]
    fn fingerprint(&self) -> String {
        self.handle.fingerprint().to_string()
    }

    /// The connected clients.
    fn peers(&self) -> Vec<PeerHandle> {
        self.handle
            .peers()
            .into_iter()
            .map(|inner| PeerHandle { inner })
            .collect()
    }

    /// Sends event `name` (JSON text) to every client; resolves to how many it was queued for.
    fn broadcast<'py>(&self, py: Python<'py>, name: String, value: String) -> PyResult<Bound<'py, PyAny>> {
        let value = raw_json(value, "the event value")?;
        let handle = self.handle.clone();
        future_into_py(py, async move {
            let report = handle.broadcast(&name, &*value).await.map_err(to_py)?;
            Ok(report.delivered)
        })
    }

    /// Marks `service` (`""`: the whole server) serving in the health service.
    fn set_serving(&self, service: &str) {
        self.handle.set_serving(service);
    }

    /// Marks `service` (`""`: the whole server) not serving: health probes and watchers see it.
    fn set_not_serving(&self, service: &str) {
        self.handle.set_not_serving(service);
    }

    /// The health status of `service`: `"SERVING"`, `"NOT_SERVING"`, `"UNKNOWN"` or
    /// `"SERVICE_UNKNOWN"` (none was set).
    fn health(&self, service: &str) -> &'static str {
        self.handle.health(service).name()
    }

    /// The events `name` clients send, as JSON text.
    fn subscribe(&self, name: &str) -> EventStream {
        let sub: echostream::Subscription<Box<RawValue>> = crate::in_runtime(|| self.handle.subscribe(name));
        EventStream::new(sub)
    }

    /// The streams `name` clients open.
    fn accept(&self, name: &str) -> PyResult<StreamAcceptor> {
        let incoming = crate::in_runtime(|| self.handle.streams().accept(name)).map_err(stream_to_py)?;
        Ok(StreamAcceptor {
            inner: Arc::new(tokio::sync::Mutex::new(incoming)),
        })
    }

    /// Connection events (connected / disconnected) from now on.
    fn connection_events(&self) -> ConnectionEventStream {
        ConnectionEventStream {
            inner: Arc::new(tokio::sync::Mutex::new(self.handle.connection_events())),
        }
    }

    /// The connections waiting for the application's decision (the server was started with
    /// `approve_connections`); can be taken once.
    fn connection_requests(&self) -> PyResult<ConnectionRequestStream> {
        let taken = self.requests.lock().ok().and_then(|mut r| r.take());
        let Some(rx) = taken else {
            return Err(PyRuntimeError::new_err(
                "connection_requests(): the server was not started with approve_connections, or \
                 they were already taken",
            ));
        };
        Ok(ConnectionRequestStream {
            inner: Arc::new(tokio::sync::Mutex::new(rx)),
        })
    }

    /// Stops accepting, lets running calls finish (the shutdown grace), and resolves once the
    /// server has stopped.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::in_runtime(|| self.handle.shutdown());
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        let handle = self.handle.clone();
        future_into_py(py, async move {
            match task {
                Some(task) => match task.await {
                    Ok(result) => result.map_err(to_py)?,
                    Err(e) => return Err(PyRuntimeError::new_err(format!("the server task failed: {e}"))),
                },
                None => handle.stopped().await,
            }
            Ok(())
        })
    }
}

/// Incoming streams of one name.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct StreamAcceptor {
    inner: Arc<tokio::sync::Mutex<IncomingStreams>>,
}

#[pymethods]
impl StreamAcceptor {
    /// The next `(peer, stream)`, or `None` once the server is gone.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        future_into_py(py, async move {
            let mut incoming = inner.lock().await;
            Ok(incoming
                .next_stream()
                .await
                .map(|(peer, s)| (PeerHandle { inner: peer }, Stream::new(s))))
        })
    }
}

/// Connection events as dicts.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct ConnectionEventStream {
    inner: Arc<tokio::sync::Mutex<ConnectionEvents>>,
}

#[pymethods]
impl ConnectionEventStream {
    /// The next event (`{"event": "connected" | "disconnected", ...}`), or `None`.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        future_into_py(py, async move {
            let event = inner.lock().await.recv().await;
            event_dict(event)
        })
    }
}

/// A connection event as the dict Python gets (`None` at the end, or for a kind of event this
/// front does not know).
pub(crate) fn event_dict(event: Option<ConnectionEvent>) -> PyResult<Option<Py<PyDict>>> {
    Python::attach(|py| {
        let Some(event) = event else { return Ok(None) };
        let (kind, info, reason) = match event {
            ConnectionEvent::Connected(info) => ("connected", info, None),
            ConnectionEvent::Disconnected { info, reason } => ("disconnected", info, Some(reason)),
            _ => return Ok(None),
        };
        let d = info_dict(py, &info)?;
        d.set_item("event", kind)?;
        d.set_item("reason", reason)?;
        Ok(Some(d.unbind()))
    })
}

/// The connections waiting for a decision (`ConnectionRequests`).
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct ConnectionRequestStream {
    inner: Arc<tokio::sync::Mutex<ConnectionRequests>>,
}

#[pymethods]
impl ConnectionRequestStream {
    /// The next connection to decide on, or `None` once the server is gone.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        future_into_py(py, async move {
            let request = inner.lock().await.recv().await;
            Ok(request.map(PendingConnection::new))
        })
    }
}

/// One connection waiting for the application's decision (`ConnectionRequest`). Dropping it
/// undecided rejects the connection.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct PendingConnection {
    remote: String,
    fingerprint: Option<String>,
    metadata: Vec<(String, String)>,
    /// `None` once decided.
    request: Mutex<Option<ConnectionRequest>>,
}

impl PendingConnection {
    fn new(r: ConnectionRequest) -> Self {
        PendingConnection {
            remote: r.remote_addr().to_string(),
            fingerprint: r.fingerprint().map(|f| f.to_string()),
            metadata: metadata_pairs(r.metadata()),
            request: Mutex::new(Some(r)),
        }
    }

    fn take(&self) -> PyResult<ConnectionRequest> {
        self.request
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or_else(|| {
                PyRuntimeError::new_err(format!("the connection from {} is already decided", self.remote))
            })
    }
}

#[pymethods]
impl PendingConnection {
    /// The client's address.
    #[getter]
    fn remote(&self) -> String {
        self.remote.clone()
    }

    /// The client certificate's fingerprint, if it presented one.
    #[getter]
    fn fingerprint(&self) -> Option<String> {
        self.fingerprint.clone()
    }

    /// The metadata of the client's hello.
    #[getter]
    fn metadata(&self) -> Vec<(String, String)> {
        self.metadata.clone()
    }

    /// Admits the connection.
    fn approve(&self) -> PyResult<()> {
        self.take()?.approve();
        Ok(())
    }

    /// Refuses the connection; the client's `connect` fails with `reason`.
    fn reject(&self, reason: String) -> PyResult<()> {
        self.take()?.reject(reason);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("<ConnectionRequest from {}>", self.remote)
    }
}
