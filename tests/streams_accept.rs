//! Accepting and opening streams: registration, unregistration, backpressure,
//! the decision policy, and opening in both directions.

mod common;
mod streams_common;

use common::*;
use echostream::prelude::*;
use echostream::stream::{stream_handler_fn, StreamError, StreamOptions};
use echostream::types::Metadata;

use futures::StreamExt;
use streams_common::*;

#[tokio::test]
async fn accepting_a_name_twice_is_already_registered() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder());
    let first = srv.streams.accept("files").unwrap();
    match srv.streams.accept("files") {
        Err(e @ StreamError::AlreadyRegistered { .. }) => {
            assert!(e.to_string().contains("`files` already has an acceptor"), "{e}")
        }
        other => panic!("expected AlreadyRegistered, got {other:?}"),
    }
    // A stream handler's name is taken too.
    let srv2 = serve_streams(
        RpcServer::builder()
            .stream_handler(stream_handler_fn("taken", |_ctx: Context, _s: XStream| async {})),
    );
    assert!(matches!(
        srv2.streams.accept("taken"),
        Err(StreamError::AlreadyRegistered { .. })
    ));
    drop(first);
    assert!(srv.streams.accept("files").is_ok(), "free again after the drop");
}

#[tokio::test]
async fn dropping_incoming_streams_unregisters_the_name() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder());
    let mut incoming = srv.streams.accept("files").unwrap();
    let client = connect(&srv.server).await;
    let (opened, taken) = bounded("open", async {
        tokio::join!(client.open_stream("files"), incoming.next())
    })
    .await;
    assert!(opened.is_ok() && taken.is_some());
    drop((opened, taken));

    // A stream waiting in the queue when the acceptor goes away is refused too.
    let c = client.clone();
    let waiting = tokio::spawn(async move { c.open_stream("files").await });
    eventually("the stream is queued", || srv.streams.waiting("files") == 1).await;
    drop(incoming);
    assert!(!srv.streams.is_accepted("files"));
    match bounded("queued open", waiting).await.unwrap() {
        Err(StreamError::NoAcceptor { stream }) => assert_eq!(stream, "files"),
        other => panic!("expected NoAcceptor for the queued stream, got {other:?}"),
    }
    match bounded("open after unregister", client.open_stream("files")).await {
        Err(e @ StreamError::NoAcceptor { .. }) => {
            assert_eq!(e.to_string(), "no acceptor for `files` on the peer")
        }
        other => panic!("expected NoAcceptor, got {other:?}"),
    }
    // Nothing leaked on either side.
    eventually("server streams released", || srv.streams.open_count() == 0).await;
    eventually("client streams released", || client.streams().open_count() == 0).await;
}

#[tokio::test]
async fn busy_when_the_acceptor_falls_behind() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder());
    let mut incoming = srv.streams.accept_with_queue("slow", 2).unwrap();
    let client = connect(&srv.server).await;
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let c = client.clone();
        waiting.push(tokio::spawn(async move { c.open_stream("slow").await }));
    }
    // Once both wait in the queue, one more is refused at once.
    eventually("two streams are queued", || srv.streams.waiting("slow") == 2).await;
    match bounded("third open", client.open_stream("slow")).await {
        Err(e @ StreamError::Busy { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("busy") && text.contains("2 streams waiting"),
                "{text}"
            );
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // The application catches up: the queued ones are accepted.
    for _ in 0..2 {
        let (_, s) = bounded("take", incoming.next()).await.unwrap();
        s.close().await.unwrap();
    }
    for w in waiting {
        assert!(bounded("queued open", w).await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn rejected_with_a_reason_via_the_decision_policy() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder());
    let mut incoming = srv.streams.accept("camera.feed").unwrap();
    let mut requests = srv.streams.approve_via_event();
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            assert_eq!(req.name(), "camera.feed");
            assert!(req.peer().remote_addr().ip().is_loopback());
            match req.metadata().get_str("user") {
                Some("alice") => req.approve(),
                Some(other) => {
                    let reason = format!("{other} may not watch this camera");
                    req.reject(reason)
                }
                None => drop(req), // no answer: rejected
            }
        }
    });
    tokio::spawn(async move {
        while let Some((_, s)) = incoming.next().await {
            let _ = s.close().await;
        }
    });
    let client = connect(&srv.server).await;
    let md = |u: &str| Metadata::new().with("user", u.to_owned());
    let peer = client.peer().clone();
    let ok = bounded(
        "alice",
        srv.streams.open_stream_with(&peer, "camera.feed", md("alice")),
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    match bounded("mallory", peer.open_stream_with("camera.feed", md("mallory"))).await {
        Err(StreamError::Rejected { stream, reason }) => {
            assert_eq!(stream, "camera.feed");
            assert_eq!(reason, "mallory may not watch this camera");
        }
        other => panic!("expected Rejected with the reason, got {other:?}"),
    }
    match bounded("anonymous", peer.open_stream("camera.feed")).await {
        Err(StreamError::Rejected { reason, .. }) => {
            assert!(reason.contains("without a decision"), "{reason}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // Back to the default policy.
    srv.streams.approve_all();
    assert!(bounded("anonymous again", peer.open_stream("camera.feed"))
        .await
        .is_ok());
}

#[tokio::test]
async fn either_side_can_open_a_stream() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder());
    let mut incoming = srv.streams.accept("up").unwrap();
    let client = connect(&srv.server).await;
    let mut client_incoming = client.streams().accept("down").unwrap();

    let (up, taken) = bounded("client opens", async {
        tokio::join!(client.open_stream("up"), incoming.next())
    })
    .await;
    let up = up.unwrap();
    let (server_peer, up_accepted) = taken.unwrap();
    // The server opens toward the client on the same connection.
    let (down, taken) = bounded("server opens", async {
        tokio::join!(
            srv.streams.open_stream(&server_peer, "down"),
            client_incoming.next()
        )
    })
    .await;
    let down = down.unwrap();
    let (_, down_accepted) = taken.unwrap();

    up.write_all(b"to the server").await.unwrap();
    up.write_eof().await.unwrap();
    assert_eq!(up_accepted.read_to_end().await.unwrap(), b"to the server");
    down.write_all(b"to the client").await.unwrap();
    down.write_eof().await.unwrap();
    assert_eq!(down_accepted.read_to_end().await.unwrap(), b"to the client");
    for s in [&up_accepted, &down_accepted] {
        s.close().await.unwrap();
    }
    assert_eq!(bounded("up end", up.read_to_end()).await.unwrap(), b"");
    assert_eq!(bounded("down end", down.read_to_end()).await.unwrap(), b"");
}

#[tokio::test]
async fn a_peer_without_the_name_answers_no_acceptor() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder());
    let client = connect(&srv.server).await;
    match bounded("open", client.open_stream("nobody.home")).await {
        Err(StreamError::NoAcceptor { stream }) => assert_eq!(stream, "nobody.home"),
        other => panic!("expected NoAcceptor, got {other:?}"),
    }
    // The connection is unaffected.
    assert!(!client.peer().is_closed());
    assert_eq!(client.streams().open_count(), 0);
    assert_eq!(client.streams().pending_pairings(), 0);
}

#[tokio::test]
async fn an_open_the_acceptor_never_takes_times_out_and_is_skipped_later() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder());
    let mut incoming = srv.streams.accept("lazy").unwrap();
    let impatient = client_for(&srv.server)
        .stream_options(StreamOptions::new().open_timeout(std::time::Duration::from_millis(300)))
        .connect(&srv.server.addr)
        .await
        .unwrap();
    match bounded("open", impatient.open_stream("lazy")).await {
        Err(e @ StreamError::Timeout { .. }) => assert!(e.to_string().contains("lazy"), "{e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(impatient.streams().pending_pairings(), 0);
    assert_eq!(impatient.streams().open_count(), 0);
    // The abandoned stream is skipped (or fails on its first read) when the
    // application gets to it; a live one behind it works.
    let client = connect(&srv.server).await;
    let opener = tokio::spawn(async move {
        let s = client.open_stream("lazy").await.unwrap();
        s.write_all(b"live").await.unwrap();
        s.write_eof().await.unwrap();
        (client, s) // the connection lives as long as the client
    });
    loop {
        let (_, taken) = bounded("take", incoming.next()).await.unwrap();
        match bounded("read", taken.read_to_end()).await {
            Ok(data) => {
                assert_eq!(data, b"live");
                break;
            }
            Err(e) => assert!(!e.is_connection_lost(), "{e}"),
        }
    }
    let _opened = bounded("opener", opener).await.unwrap();
    assert_eq!(srv.streams.waiting("lazy"), 0);
}
