//! The tarpc baseline: unary echo over TCP with tarpc's bincode transport
//! (length-delimited frames, one TCP connection, many requests in flight).

use crate::Res;
use bytes::Bytes;
use futures::StreamExt;
use std::net::SocketAddr;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;

/// The service.
#[tarpc::service]
pub(crate) trait Echo {
    /// Returns its argument.
    async fn echo(data: Bytes) -> Bytes;
}

#[derive(Clone, Copy, Debug)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, data: Bytes) -> Bytes {
        data
    }
}

/// A running tarpc server.
pub(crate) struct RpcServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a server on `127.0.0.1:0` (call inside the server runtime).
/// `TCP_NODELAY` on both ends, like tonic's client and like QUIC (no Nagle).
pub(crate) async fn serve() -> Res<RpcServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let transport = tarpc::serde_transport::Transport::from((stream, Bincode::default()));
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(EchoServer.serve())
                    .for_each(|call| async move {
                        tokio::spawn(call);
                    }),
            );
        }
    });
    Ok(RpcServer { addr, task })
}

/// Connects one client (call inside the client runtime).
pub(crate) async fn connect(addr: SocketAddr) -> Res<EchoClient> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let transport = tarpc::serde_transport::Transport::from((stream, Bincode::default()));
    Ok(EchoClient::new(tarpc::client::Config::default(), transport).spawn())
}
