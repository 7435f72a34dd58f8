//! A UDP socket that says when it has closed.
//!
//! quinn closes an endpoint's socket when the last handle to the endpoint, its connections
//! and their streams is gone, on the endpoint driver's next poll: a moment *after* the server
//! dropped its own handles. A server restarted on the same port in that moment would fail
//! with "address in use", so `RpcServer::run()` waits for [`SocketClosed`] before it returns.
//!
//! [`Watched`] wraps quinn's socket and every poller quinn makes from it; each poller holds
//! the wrapper, so the wrapper is dropped only after every poller, and its `Drop` releases
//! the inner socket *before* it signals.

use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// Resolves once the watched socket has been closed (or the endpoint could not be made).
#[derive(Debug)]
pub(crate) struct SocketClosed(oneshot::Receiver<()>);

impl SocketClosed {
    /// Waits until the socket is closed.
    pub(crate) async fn wait(self) {
        let _ = self.0.await;
    }
}

/// quinn's socket, plus the signal sent when it is released.
pub(crate) struct Watched {
    /// Taken in `Drop`, so that the socket is closed before `closed` fires.
    inner: Option<Arc<dyn AsyncUdpSocket>>,
    closed: Option<oneshot::Sender<()>>,
}

impl Watched {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>) -> (Arc<Self>, SocketClosed) {
        let (tx, rx) = oneshot::channel();
        let watched = Arc::new(Self {
            inner: Some(inner),
            closed: Some(tx),
        });
        (watched, SocketClosed(rx))
    }

    fn inner(&self) -> io::Result<&Arc<dyn AsyncUdpSocket>> {
        // Only `Drop` takes it.
        self.inner
            .as_ref()
            .ok_or_else(|| io::Error::other("socket already closed"))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Every poller holds this wrapper, so this is the last reference to the socket.
        drop(self.inner.take());
        if let Some(tx) = self.closed.take() {
            let _ = tx.send(());
        }
    }
}

impl fmt::Debug for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched").field("inner", &self.inner).finish()
    }
}

impl AsyncUdpSocket for Watched {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        let inner = match self.inner() {
            Ok(inner) => inner.clone().create_io_poller(),
            Err(_) => Box::pin(Closed),
        };
        Box::pin(WatchedPoller { inner, _socket: self })
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> io::Result<()> {
        self.inner()?.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        match self.inner() {
            Ok(inner) => inner.poll_recv(cx, bufs, meta),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner()?.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner().map_or(1, |s| s.max_transmit_segments())
    }

    fn max_receive_segments(&self) -> usize {
        self.inner().map_or(1, |s| s.max_receive_segments())
    }

    fn may_fragment(&self) -> bool {
        self.inner().map_or(true, |s| s.may_fragment())
    }
}

/// quinn's poller, holding the wrapper so that the socket outlives it. Fields drop in order:
/// the inner poller first.
#[derive(Debug)]
struct WatchedPoller {
    inner: Pin<Box<dyn UdpPoller>>,
    _socket: Arc<Watched>,
}

impl UdpPoller for WatchedPoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_writable(cx)
    }
}

/// The poller of a socket already closed (cannot happen: pollers are made from live handles).
#[derive(Debug)]
struct Closed;

impl UdpPoller for Closed {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::other("socket already closed")))
    }
}
