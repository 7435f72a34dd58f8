//! Connection and server introspection as values, over real QUIC: what `ServerHandle::status`
//! and `ConnectionInfo` report about live connections, streams, identity, clock and limits.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::{PeerIdentity, StaticTokens};
use echostream::ServerIdentity;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_connections_streams_identity_clock_and_limits() {
    init_tracing();
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .max_connections(7)
        .max_connections_per_address(5)
        .max_concurrent_requests(9)
        .max_request_bytes_in_flight(123_456)
        .authenticator(StaticTokens::new().token("t-alice", PeerIdentity::new("alice")))
        .build()
        .unwrap();
    let (addr, fp, handle) = (
        server.local_addr().to_string(),
        server.fingerprint(),
        server.handle(),
    );
    let streams = server.streams();
    let mut incoming = streams.accept("probe").unwrap();
    let stop = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    handle.set_not_serving("db");

    let c = RpcClient::builder()
        .pin(fp)
        .token("t-alice")
        .connect(&addr)
        .await
        .unwrap();
    // Accepting is lazy: the open completes when the acceptor takes the stream.
    let (stream, accepted) = tokio::join!(c.open_stream("probe"), async {
        tokio::time::timeout(WAIT, incoming.next_stream())
            .await
            .unwrap()
            .unwrap()
            .1
    });
    let stream = stream.unwrap();
    stream.write_all(b"x").await.unwrap();
    c.clock().synced(3, WAIT).await.unwrap();

    let status = handle.status();
    assert_eq!(status.local_addr.to_string(), addr);
    assert_eq!(status.fingerprint, fp);
    assert_eq!(status.connections.len(), 1);
    let conn = &status.connections[0];
    assert_eq!(conn.identity.as_ref().map(|i| i.name()), Some("alice"));
    assert_eq!(conn.info.streams_accepted, 1);
    assert_eq!(conn.info.streams_opened, 0);
    assert!(conn.info.congestion_window > 0);
    assert!(conn.info.mtu >= 1200);
    assert!(conn.info.bytes_received > 0);
    assert_eq!(status.limits.max_connections, 7);
    assert_eq!(status.limits.max_connections_per_address, 5);
    assert_eq!(status.limits.max_concurrent_requests, 9);
    assert_eq!(status.limits.max_request_bytes_in_flight, 123_456);
    assert_eq!(status.health.get("").map(|h| h.name()), Some("SERVING"));
    assert_eq!(status.health.get("db").map(|h| h.name()), Some("NOT_SERVING"));
    assert!(status.methods.iter().any(|m| m == "echostream.health"));
    assert!(status.admission.accepted >= 1);

    // The client's view: the stream it opened, and the clock it synchronised.
    let info = c.info();
    assert_eq!(info.streams_opened, 1);
    let clock = info.clock.expect("clock sync ran");
    // One machine, one clock: the offset is within its bound plus a millisecond.
    assert!(
        clock.offset_nanos.unsigned_abs() <= (clock.error_bound + Duration::from_millis(1)).as_nanos() as u64,
        "{clock:?}"
    );
    // A connection whose clock nobody used reports none (info does not start it).
    assert!(conn.info.clock.is_none());

    drop(stream);
    drop(accepted);
    c.close().await;
    stop.shutdown();
    task.await.unwrap().unwrap();
}
