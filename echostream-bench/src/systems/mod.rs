//! The systems under comparison: EchoStream and its three baselines, each
//! with an echo server and a client, started on the runtimes of a layout.

pub(crate) mod es;
pub(crate) mod grpc;
pub(crate) mod quic;
pub(crate) mod rpc;

use crate::rt::{run_on, Runtimes};
use crate::Res;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::Notify;

/// A system in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum System {
    /// EchoStream: typed requests on the control stream.
    EchoStream,
    /// EchoStream called through a typed descriptor (`Caller::call` with a
    /// `Method<Bytes, Bytes>`, what a generated service client does): the
    /// same echo as `EchoStream`, to show the typed layer costs nothing.
    /// Cases 1, 2 and `alloc` only.
    EchoStreamTyped,
    /// Raw quinn: one new bidirectional stream per call.
    Quinn,
    /// tonic over plaintext HTTP/2 (h2c).
    Tonic,
    /// tonic over HTTP/2 with TLS 1.3 (rustls, aws-lc-rs).
    TonicTls,
    /// tarpc over TCP, bincode transport.
    Tarpc,
}

impl System {
    /// Every system, in table order.
    pub(crate) const ALL: [System; 6] = [
        System::EchoStream,
        System::EchoStreamTyped,
        System::Quinn,
        System::Tonic,
        System::TonicTls,
        System::Tarpc,
    ];
    /// The systems for which stream, event and QUIC-level cases make sense.
    pub(crate) const QUIC: [System; 2] = [System::EchoStream, System::Quinn];

    /// Name on the command line (`--systems`).
    pub(crate) fn key(self) -> &'static str {
        match self {
            System::EchoStream => "es",
            System::EchoStreamTyped => "es-typed",
            System::Quinn => "quinn",
            System::Tonic => "tonic",
            System::TonicTls => "tonic-tls",
            System::Tarpc => "tarpc",
        }
    }

    /// Column name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::EchoStream => "EchoStream",
            System::EchoStreamTyped => "EchoStream typed",
            System::Quinn => "raw quinn",
            System::Tonic => "tonic h2c",
            System::TonicTls => "tonic TLS",
            System::Tarpc => "tarpc",
        }
    }
}

/// `systems` rotated by `round`, so that no system always runs first (or
/// right after the same neighbour) while the machine drifts.
pub(crate) fn rotated<T: Copy>(systems: &[T], round: usize) -> Vec<T> {
    let n = systems.len();
    (0..n).map(|i| systems[(i + round) % n]).collect()
}

/// Counts events on a server and wakes the benchmark when the last arrives.
/// Shared in-process between the server's handler and the measuring task.
#[derive(Debug, Default)]
pub(crate) struct EventSink {
    count: AtomicU64,
    target: AtomicU64,
    next: AtomicU64,
    out_of_order: AtomicU64,
    done: Notify,
}

impl EventSink {
    /// Expects `target` events numbered from 0.
    pub(crate) fn arm(&self, target: u64) {
        self.count.store(0, Relaxed);
        self.next.store(0, Relaxed);
        self.out_of_order.store(0, Relaxed);
        self.target.store(target, Relaxed);
    }

    /// Records event number `seq` (events of one sender arrive one at a time).
    pub(crate) fn on_event(&self, seq: u64) {
        if self.next.fetch_add(1, Relaxed) != seq {
            self.out_of_order.fetch_add(1, Relaxed);
        }
        if self.count.fetch_add(1, Relaxed) + 1 == self.target.load(Relaxed) {
            self.done.notify_one();
        }
    }

    /// Waits until the target count has arrived.
    pub(crate) async fn wait(&self) {
        self.done.notified().await;
    }

    /// Events received so far and how many were out of order or missing.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.count.load(Relaxed), self.out_of_order.load(Relaxed))
    }
}

/// A unary echo client of any system. Each concurrent caller owns a clone,
/// as each would own a clone of a generated tonic client.
#[derive(Clone)]
pub(crate) enum Client {
    /// EchoStream.
    EchoStream(echostream::RpcClient),
    /// EchoStream through the typed descriptor [`es::ECHO`].
    EchoStreamTyped(echostream::RpcClient),
    /// Raw quinn.
    Quinn(quinn::Connection),
    /// tonic (either transport).
    Tonic(grpc::GrpcClient),
    /// tarpc.
    Tarpc(rpc::EchoClient),
}

impl Client {
    /// Sends `payload` and returns the echo.
    pub(crate) async fn echo(&mut self, payload: &Bytes) -> Res<Bytes> {
        match self {
            Client::EchoStream(c) => Ok(c.request::<_, Bytes>("echo", payload).await?),
            // A `Bytes` clone shares the buffer: no allocation.
            Client::EchoStreamTyped(c) => Ok(echostream::Caller::call(c, &es::ECHO, payload.clone()).await?),
            Client::Quinn(c) => quic::echo(c, payload).await,
            Client::Tonic(c) => grpc::echo(c, payload).await,
            Client::Tarpc(c) => Ok(c.echo(tarpc::context::current(), payload.clone()).await?),
        }
    }
}

/// What keeps a server alive (its endpoint, its handle).
pub(crate) type Keep = Box<dyn std::any::Any + Send>;

/// Starts `sys`'s echo server on the server runtime and connects one
/// client on the client runtime.
pub(crate) fn start_unary(sys: System, rts: &Runtimes) -> Res<(Client, Keep)> {
    match sys {
        System::EchoStream | System::EchoStreamTyped => {
            let srv = run_on(rts.server(), es::serve())?;
            let (addr, fp) = (srv.addr.clone(), srv.fingerprint);
            let c = run_on(rts.client(), async move { es::connect(&addr, fp).await })?;
            let c = match sys {
                System::EchoStream => Client::EchoStream(c),
                _ => Client::EchoStreamTyped(c),
            };
            Ok((c, Box::new(srv)))
        }
        System::Quinn => {
            let (srv, ep, conn) = start_quinn(rts)?;
            Ok((Client::Quinn(conn), Box::new((srv, ep))))
        }
        System::Tonic | System::TonicTls => {
            let tls = sys == System::TonicTls;
            let srv = run_on(rts.server(), grpc::serve(tls))?;
            let target = srv.target();
            let c = run_on(rts.client(), async move { grpc::connect(target).await })?;
            Ok((Client::Tonic(c), Box::new(srv)))
        }
        System::Tarpc => {
            let srv = run_on(rts.server(), rpc::serve())?;
            let addr = srv.addr;
            let c = run_on(rts.client(), async move { rpc::connect(addr).await })?;
            Ok((Client::Tarpc(c), Box::new(srv)))
        }
    }
}

/// A raw-quinn server, a client endpoint and one connection.
pub(crate) fn start_quinn(rts: &Runtimes) -> Res<(quic::QuinnServer, quinn::Endpoint, quinn::Connection)> {
    let srv = run_on(rts.server(), quic::serve(false))?;
    let (addr, fp) = (srv.addr, srv.fingerprint);
    let (ep, conn) = run_on(rts.client(), async move {
        let ep = quic::client_endpoint()?;
        let conn = quic::connect(&ep, addr, fp, quic::Resume::Default).await?;
        Res::Ok((ep, conn))
    })?;
    Ok((srv, ep, conn))
}
