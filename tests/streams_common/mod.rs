//! Helpers for the stream tests: a server whose stream handle the test
//! keeps, and an opener/acceptor pair of one stream.
#![allow(dead_code, unreachable_pub, missing_docs)]

use crate::common::*;
use echostream::prelude::*;
use echostream::rpc::ServerBuilder;
use echostream::stream::{IncomingStreams, StreamOptions, Streams};
use echostream::ServerIdentity;
use std::sync::Arc;

pub struct StreamServer {
    pub server: TestServer,
    pub streams: Streams,
}

/// Builds and runs a server, keeping its stream control handle.
pub fn serve_streams(builder: ServerBuilder) -> StreamServer {
    let server = builder
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .build()
        .expect("server builds");
    let streams = server.streams();
    let addr = server.local_addr().to_string();
    let fingerprint = server.fingerprint();
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    StreamServer {
        server: TestServer {
            addr,
            fingerprint,
            shutdown,
            task,
        },
        streams,
    }
}

pub struct Pair {
    pub srv: StreamServer,
    pub client: RpcClient,
    pub incoming: IncomingStreams,
    pub opener: Arc<XStream>,
    pub acceptor: Arc<XStream>,
}

/// One stream named "t": the client opens it, the server accepts it.
pub async fn pair_with(server_opts: StreamOptions, client_opts: StreamOptions) -> Pair {
    init_tracing();
    let srv = serve_streams(RpcServer::builder().stream_options(server_opts));
    let mut incoming = srv.streams.accept("t").expect("accept t");
    let client = tokio::time::timeout(
        WAIT,
        client_for(&srv.server)
            .stream_options(client_opts)
            .connect(&srv.server.addr),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let (opener, accepted) = tokio::time::timeout(WAIT, async {
        tokio::join!(client.open_stream("t"), incoming.next_stream())
    })
    .await
    .expect("pairing in time");
    let opener = opener.expect("open_stream succeeds");
    let (_, acceptor) = accepted.expect("a stream arrives");
    Pair {
        srv,
        client,
        incoming,
        opener: Arc::new(opener),
        acceptor: Arc::new(acceptor),
    }
}

pub async fn pair() -> Pair {
    pair_with(StreamOptions::default(), StreamOptions::default()).await
}

/// Bounds any wait of a test.
pub async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

/// Waits until `cond` holds (polling), or panics naming `what`.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("{what} did not happen within {WAIT:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
