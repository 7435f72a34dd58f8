//! Two peers flooding each other at once, over real QUIC on loopback: each side's calls and
//! the answers it owes the other share one control stream per direction, so a reader that
//! waited for its own writer while that writer waited for the other side's reader (which
//! waited for *its* writer) would wedge the connection for good. These tests flood both
//! directions well past the control stream's window and check that everything completes.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use futures::future::join_all;
use std::time::Duration;

/// Far more than the control stream's receive window (256 KiB) and the writer's reply budget
/// in flight each way: 128 callers × 40 KiB ≈ 5 MiB per direction at once.
const CALLERS: usize = 128;
const CALLS_EACH: usize = 12;
const PAYLOAD: usize = 40 * 1024;
/// What the refused-call flood's callers report for a call refused as expected.
const REFUSED: &[u8] = b"refused as expected";

/// Generous: a wedged connection never finishes; a debug build on a loaded 2-core machine
/// moves these 2 × 60 MiB in a few seconds.
const BOUND: Duration = Duration::from_secs(120);

async fn flood(
    echoes: bool,
    caller: impl Fn(Vec<u8>) -> futures::future::BoxFuture<'static, Result<Vec<u8>>>,
) -> usize {
    let caller = &caller;
    let rounds = (0..CALLERS).map(|i| async move {
        let mut ok = 0;
        for n in 0..CALLS_EACH {
            let payload = vec![(i + n) as u8; PAYLOAD];
            let back = caller(payload.clone())
                .await
                .expect("call in a mutual flood succeeds");
            let expected: &[u8] = if echoes { &payload } else { REFUSED };
            assert!(back == expected, "answer matches its request");
            ok += 1;
        }
        ok
    });
    join_all(rounds).await.into_iter().sum()
}

/// A server serving `server.echo` and a client serving `client.echo` (both answer on their
/// first poll), connected; the server's handle on its client.
async fn echo_pair() -> (RpcClient, Peer) {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(echostream::ServerIdentity::Ephemeral)
        .handler(handler_fn("server.echo", |_c: Context, b: Vec<u8>| async move {
            Ok::<_, Error>(b)
        }))
        .build()
        .unwrap();
    let handle = server.handle();
    let addr = handle.local_addr().to_string();
    tokio::spawn(server.run());
    let client = tokio::time::timeout(
        WAIT,
        RpcClient::builder()
            .pin(handle.fingerprint())
            .handler(handler_fn("client.echo", |_c: Context, b: Vec<u8>| async move {
                Ok::<_, Error>(b)
            }))
            .connect(&addr),
    )
    .await
    .expect("connect in time")
    .expect("connect succeeds");
    wait_until("the server sees its client", || !handle.peers().is_empty()).await;
    let peer = handle.peers().remove(0);
    (client, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_flooding_each_other_with_calls_answered_at_once_all_complete() {
    // Handlers that finish on their first poll are answered by the reader itself, in its batch
    // of replies: the path that used to wait for the writer.
    let (client, peer) = echo_pair().await;
    let opts = CallOptions::new().timeout(BOUND);
    let c = client.clone();
    let o = opts.clone();
    let up = tokio::spawn(async move {
        flood(true, move |b| {
            let (c, o) = (c.clone(), o.clone());
            Box::pin(async move { c.request_with("server.echo", b, o).await })
        })
        .await
    });
    let down = tokio::spawn(async move {
        flood(true, move |b| {
            let (p, o) = (peer.clone(), opts.clone());
            Box::pin(async move { p.request_with("client.echo", b, o).await })
        })
        .await
    });
    let (up, down) = tokio::time::timeout(BOUND, async { (up.await, down.await) })
        .await
        .expect("a mutual flood completes: the connection did not wedge");
    assert_eq!(up.expect("client flood task"), CALLERS * CALLS_EACH);
    assert_eq!(down.expect("server flood task"), CALLERS * CALLS_EACH);
    // The connection is still usable both ways.
    let r: Vec<u8> = client.request("server.echo", vec![1u8; 3]).await.unwrap();
    assert_eq!(r, vec![1u8; 3]);
    assert!(client.is_connected());
}

/// Each side floods the other with large calls to a method it does not serve (each refused
/// by the reader) and with pings: every call fails with `UNKNOWN_METHOD` naming the method,
/// the pings are answered, and a real call afterwards works both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_flooding_each_other_with_refused_calls_and_pings_all_complete() {
    let (client, peer) = echo_pair().await;
    let refused = |method: &'static str, call: futures::future::BoxFuture<'static, Result<Vec<u8>>>| async move {
        match call.await {
            Err(Error::UnknownMethod { method: m }) => {
                assert_eq!(m, method);
                Ok(REFUSED.to_vec())
            }
            other => panic!("expected UNKNOWN_METHOD for `{method}`, got {other:?}"),
        }
    };
    let opts = CallOptions::new().timeout(BOUND);
    let (c, o) = (client.clone(), opts.clone());
    let up = tokio::spawn(async move {
        flood(false, move |_| {
            let (c, o) = (c.clone(), o.clone());
            Box::pin(refused(
                "server.nothing",
                Box::pin(async move { c.request_with("server.nothing", vec![1u8; PAYLOAD], o).await }),
            ))
        })
        .await
    });
    let p = peer.clone();
    let down = tokio::spawn(async move {
        flood(false, move |_| {
            let (p, o) = (p.clone(), opts.clone());
            Box::pin(refused(
                "client.nothing",
                Box::pin(async move { p.request_with("client.nothing", vec![2u8; PAYLOAD], o).await }),
            ))
        })
        .await
    });
    // Pings both ways while the floods run (at most 64 wait per connection; a ping beyond
    // that fails at once, which is fine: none may hang).
    let (c, p) = (client.clone(), peer.clone());
    let pings = tokio::spawn(async move {
        let mut answered = 0;
        for _ in 0..200 {
            let (a, b) = tokio::join!(c.ping(BOUND), p.ping(BOUND));
            answered += usize::from(a.is_ok()) + usize::from(b.is_ok());
        }
        answered
    });
    let (up, down, pings) = tokio::time::timeout(BOUND, async { (up.await, down.await, pings.await) })
        .await
        .expect("a mutual flood of refused calls and pings completes: the connection did not wedge");
    assert_eq!(up.expect("client flood task"), CALLERS * CALLS_EACH);
    assert_eq!(down.expect("server flood task"), CALLERS * CALLS_EACH);
    assert!(pings.expect("ping task") > 0, "no ping was answered");
    let r: Vec<u8> = peer.request("client.echo", vec![5u8; 3]).await.unwrap();
    assert_eq!(r, vec![5u8; 3]);
    let r: Vec<u8> = client.request("server.echo", vec![6u8; 3]).await.unwrap();
    assert_eq!(r, vec![6u8; 3]);
}
