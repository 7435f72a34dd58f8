//! The control handle: accepting names, opening streams, the decision policy.

use super::handler::StreamHandler;
use super::incoming::Incoming;
use super::{StreamError, StreamOptions, XStream};
use crate::protocol::Peer;
use echostream_types::Metadata;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use tokio::sync::{mpsc, oneshot};

/// Who takes the streams of one name.
pub(crate) enum Acceptor {
    /// An [`IncomingStreams`] (generation `gen`) with its bounded queue.
    Queue {
        gen: u64,
        tx: mpsc::Sender<Incoming>,
        capacity: usize,
    },
    /// A registered [`StreamHandler`]: each stream runs it in its own task.
    Handler(Arc<dyn StreamHandler>),
}

enum Policy {
    ApproveAll,
    ViaEvent(mpsc::Sender<StreamRequest>),
}

/// The stream names accepted by one server (over all its connections) or
/// one client, with the decision policy and counters.
pub(crate) struct Registry {
    pub(crate) opts: Arc<StreamOptions>,
    acceptors: Mutex<HashMap<String, Acceptor>>,
    next_gen: AtomicU64,
    policy: Mutex<Policy>,
    /// Live XStreams over all connections.
    pub(crate) open: AtomicUsize,
    /// Halves waiting for their partner.
    pub(crate) pending: AtomicUsize,
    /// Initial per-connection limits (the transport's), the floor of growth.
    pub(crate) initial_limits: Mutex<(u32, u32)>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(StreamOptions::default())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &lock(&self.acceptors).keys().collect::<Vec<_>>())
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish()
    }
}

/// What the decision policy said.
pub(crate) enum Verdict {
    Approve,
    Busy(String),
    Reject(String),
}

impl Registry {
    pub(crate) fn new(opts: StreamOptions) -> Registry {
        Registry {
            opts: Arc::new(opts),
            acceptors: Mutex::new(HashMap::new()),
            next_gen: AtomicU64::new(1),
            policy: Mutex::new(Policy::ApproveAll),
            open: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            initial_limits: Mutex::new((100, 100)),
        }
    }

    /// Registers a handler at build time (duplicates are a configuration error).
    pub(crate) fn add_handler(&self, h: Arc<dyn StreamHandler>) -> Result<(), crate::Error> {
        let name = h.name().to_owned();
        if name.is_empty() || name.len() > echostream_types::pairing::MAX_NAME {
            return Err(crate::Error::Config(format!(
                "stream handler name must be 1 to {} bytes, got {} bytes",
                echostream_types::pairing::MAX_NAME,
                name.len()
            )));
        }
        let mut map = lock(&self.acceptors);
        if map.contains_key(&name) {
            return Err(crate::Error::Config(format!(
                "two stream handlers are registered for `{name}`"
            )));
        }
        map.insert(name, Acceptor::Handler(h));
        Ok(())
    }

    pub(crate) fn has_acceptor(&self, name: &str) -> bool {
        lock(&self.acceptors).contains_key(name)
    }

    /// Hands an incoming stream to its acceptor: a handler, or the queue
    /// (refused as busy when full).
    pub(crate) fn route(&self, inc: Incoming) -> Routed {
        let map = lock(&self.acceptors);
        match map.get(&inc.header.name) {
            None => Routed::Refused(Box::new(inc), RouteError::NoAcceptor),
            Some(Acceptor::Handler(h)) => Routed::Handler(Box::new(inc), h.clone()),
            Some(Acceptor::Queue { tx, capacity, .. }) => match tx.try_send(inc) {
                Ok(()) => Routed::Queued,
                Err(mpsc::error::TrySendError::Full(inc)) => {
                    let reason = format!(
                        "the acceptor for `{}` already has {capacity} streams waiting (its queue limit)",
                        inc.header.name
                    );
                    Routed::Refused(Box::new(inc), RouteError::Busy(reason))
                }
                Err(mpsc::error::TrySendError::Closed(inc)) => {
                    Routed::Refused(Box::new(inc), RouteError::NoAcceptor)
                }
            },
        }
    }

    /// Runs the decision policy for an incoming stream.
    pub(crate) async fn decide(&self, peer: &Peer, name: &str, metadata: &Metadata) -> Verdict {
        let tx = match &*lock(&self.policy) {
            Policy::ApproveAll => return Verdict::Approve,
            Policy::ViaEvent(tx) => tx.clone(),
        };
        let (rtx, rrx) = oneshot::channel();
        let req = StreamRequest {
            peer: peer.clone(),
            name: name.to_owned(),
            metadata: metadata.clone(),
            responder: Some(rtx),
        };
        match tx.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Verdict::Busy(format!(
                    "{} stream requests are waiting for a decision (the decision queue limit)",
                    self.opts.decision_queue
                ))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Verdict::Reject("the peer no longer takes decisions on streams".into())
            }
        }
        match tokio::time::timeout(self.opts.decision_timeout, rrx).await {
            Ok(Ok(StreamDecision::Approve)) => Verdict::Approve,
            Ok(Ok(StreamDecision::Reject(reason))) => Verdict::Reject(reason),
            Ok(Err(_)) => Verdict::Reject("the application dropped the request without a decision".into()),
            Err(_) => Verdict::Reject(format!("no decision within {:?}", self.opts.decision_timeout)),
        }
    }

    fn unregister(&self, name: &str, gen: u64) {
        let mut map = lock(&self.acceptors);
        if matches!(map.get(name), Some(Acceptor::Queue { gen: g, .. }) if *g == gen) {
            map.remove(name);
        }
    }
}

/// Where [`Registry::route`] put a stream.
pub(crate) enum Routed {
    /// In the acceptor's queue.
    Queued,
    /// To be run by this handler.
    Handler(Box<Incoming>, Arc<dyn StreamHandler>),
    /// Refused.
    Refused(Box<Incoming>, RouteError),
}

pub(crate) enum RouteError {
    NoAcceptor,
    Busy(String),
}

/// The control handle of streams on a server or a client: accept names,
/// open streams, choose the decision policy. Cheap to clone.
///
/// ```no_run
/// # use echostream_core::rpc::RpcServer;
/// # use futures::StreamExt;
/// # async fn doc(server: &RpcServer) -> echostream_core::Result<()> {
/// let mut incoming = server.streams().accept("files.upload")?;
/// while let Some((peer, stream)) = incoming.next().await {
///     let data = stream.read_to_end().await?;
///     stream.close().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Streams {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.registry.fmt(f)
    }
}

impl Streams {
    pub(crate) fn new(registry: Arc<Registry>) -> Streams {
        Streams { registry }
    }

    /// Accepts the streams named `name`, with the default queue
    /// ([`StreamOptions::accept_queue`]). Fails if the name already has an
    /// acceptor. Dropping the returned [`IncomingStreams`] unregisters it.
    pub fn accept(&self, name: &str) -> Result<IncomingStreams, StreamError> {
        self.accept_with_queue(name, self.registry.opts.accept_queue)
    }

    /// [`Streams::accept`] with a queue of `capacity` streams waiting for
    /// the application; further streams are refused as busy.
    pub fn accept_with_queue(&self, name: &str, capacity: usize) -> Result<IncomingStreams, StreamError> {
        if name.is_empty() || name.len() > echostream_types::pairing::MAX_NAME {
            return Err(StreamError::Invalid {
                stream: name.to_owned(),
                detail: format!(
                    "a stream name must be 1 to {} bytes",
                    echostream_types::pairing::MAX_NAME
                ),
            });
        }
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let gen = self.registry.next_gen.fetch_add(1, Ordering::Relaxed);
        {
            let mut map = lock(&self.registry.acceptors);
            if map.contains_key(name) {
                return Err(StreamError::AlreadyRegistered {
                    stream: name.to_owned(),
                });
            }
            map.insert(name.to_owned(), Acceptor::Queue { gen, tx, capacity });
        }
        // Lazy: a queued stream is answered only when the application takes it.
        let inner = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                let inc: Incoming = rx.recv().await?;
                match inc.complete().await {
                    Ok((peer, s)) => return Some(((peer, s), rx)),
                    Err(e) => tracing::debug!(error = %e, "incoming stream lost before it was taken"),
                }
            }
        })
        .boxed();
        Ok(IncomingStreams {
            name: name.to_owned(),
            inner,
            _registration: Registration {
                registry: self.registry.clone(),
                name: name.to_owned(),
                gen,
            },
        })
    }

    /// Opens a stream named `name` toward `peer`; returns once the peer
    /// accepted it and both halves are paired.
    pub async fn open_stream(&self, peer: &Peer, name: &str) -> Result<XStream, StreamError> {
        peer.open_stream_with(name, Metadata::new()).await
    }

    /// [`Streams::open_stream`] with metadata the acceptor sees.
    pub async fn open_stream_with(
        &self,
        peer: &Peer,
        name: &str,
        metadata: Metadata,
    ) -> Result<XStream, StreamError> {
        peer.open_stream_with(name, metadata).await
    }

    /// Default policy: every incoming stream whose name has an acceptor is approved.
    pub fn approve_all(&self) {
        *lock(&self.registry.policy) = Policy::ApproveAll;
    }

    /// Switches to the approve-via-event policy: each incoming stream is
    /// handed to the application as a [`StreamRequest`] to approve or
    /// reject with a reason (the opener's `open_stream` fails with it).
    /// Requests beyond [`StreamOptions::decision_queue`] are refused as busy;
    /// after the returned receiver is dropped, streams are rejected until
    /// [`Streams::approve_all`] is called.
    pub fn approve_via_event(&self) -> StreamRequests {
        let (tx, rx) = mpsc::channel(self.registry.opts.decision_queue.max(1));
        *lock(&self.registry.policy) = Policy::ViaEvent(tx);
        StreamRequests { rx }
    }

    /// Live streams (opened or accepted) over all connections of this side.
    pub fn open_count(&self) -> usize {
        self.registry.open.load(Ordering::Relaxed)
    }

    /// Halves waiting for their partner (should fall back to zero).
    pub fn pending_pairings(&self) -> usize {
        self.registry.pending.load(Ordering::Relaxed)
    }

    /// The stream options in force.
    pub fn options(&self) -> &StreamOptions {
        &self.registry.opts
    }

    /// Streams of `name` waiting in its acceptor's queue for the application
    /// to take them (0 for a handler or an unknown name).
    pub fn waiting(&self, name: &str) -> usize {
        match lock(&self.registry.acceptors).get(name) {
            Some(Acceptor::Queue { tx, .. }) => tx.max_capacity() - tx.capacity(),
            _ => 0,
        }
    }

    /// Whether `name` has an acceptor here.
    pub fn is_accepted(&self, name: &str) -> bool {
        self.registry.has_acceptor(name)
    }
}

struct Registration {
    registry: Arc<Registry>,
    name: String,
    gen: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(&self.name, self.gen);
    }
}

/// The streams of one accepted name, as `(peer, stream)` pairs.
/// A `futures::Stream`; lazy: a waiting stream is answered when taken.
/// Dropping it unregisters the name: waiting and later openers get
/// [`StreamError::NoAcceptor`].
pub struct IncomingStreams {
    name: String,
    inner: BoxStream<'static, (Peer, XStream)>,
    // Dropped after `inner`: unregister, then refuse what is still queued.
    _registration: Registration,
}

impl std::fmt::Debug for IncomingStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingStreams")
            .field("name", &self.name)
            .finish()
    }
}

impl IncomingStreams {
    /// The accepted name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next stream (same as `StreamExt::next`).
    pub async fn next_stream(&mut self) -> Option<(Peer, XStream)> {
        self.inner.next().await
    }
}

impl Stream for IncomingStreams {
    type Item = (Peer, XStream);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// An application's answer to a [`StreamRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamDecision {
    /// Take the stream.
    Approve,
    /// Refuse it; the opener's `open_stream` fails with this reason.
    Reject(String),
}

/// An incoming stream waiting for the application's decision.
/// Dropping it without answering rejects the stream.
pub struct StreamRequest {
    peer: Peer,
    name: String,
    metadata: Metadata,
    responder: Option<oneshot::Sender<StreamDecision>>,
}

impl std::fmt::Debug for StreamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRequest")
            .field("peer", &self.peer.remote_addr())
            .field("name", &self.name)
            .finish()
    }
}

impl StreamRequest {
    /// The connection the stream comes from.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The opener's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Approves the stream.
    pub fn approve(mut self) {
        self.respond(StreamDecision::Approve);
    }

    /// Rejects the stream with a reason the opener receives.
    pub fn reject(mut self, reason: impl Into<String>) {
        self.respond(StreamDecision::Reject(reason.into()));
    }

    /// Answers with a decision.
    pub fn respond(&mut self, decision: StreamDecision) {
        if let Some(tx) = self.responder.take() {
            let _ = tx.send(decision);
        }
    }
}

/// The requests of the approve-via-event policy; a `futures::Stream`.
#[derive(Debug)]
pub struct StreamRequests {
    rx: mpsc::Receiver<StreamRequest>,
}

impl StreamRequests {
    /// The next request.
    pub async fn recv(&mut self) -> Option<StreamRequest> {
        self.rx.recv().await
    }
}

impl Stream for StreamRequests {
    type Item = StreamRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<StreamRequest>> {
        self.rx.poll_recv(cx)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
