//! XStream rules (MISSION.md, "XStream"), one test per rule, over real QUIC
//! on loopback.

mod common;
mod streams_common;

use bytes::{BufMut, BytesMut};
use common::*;
use echostream::prelude::*;
use echostream::stream::{StreamError, StreamOptions, StreamState};
use echostream::types::{Frame, FrameDecoder, Hello, Metadata};
use echostream::Fingerprint;
use std::sync::Arc;
use std::time::Duration;
use streams_common::*;

#[tokio::test]
async fn states_are_explicit_and_each_refusal_names_the_state() {
    let p = pair().await;
    assert_eq!(p.opener.state(), StreamState::Open);
    assert_eq!(p.acceptor.state(), StreamState::Open);
    assert_eq!(p.opener.side(), echostream::stream::Side::Opener);
    assert_eq!(p.acceptor.side(), echostream::stream::Side::Acceptor);

    p.opener.write_all(b"hello").await.unwrap();
    p.opener.write_eof().await.unwrap();
    assert_eq!(p.opener.state(), StreamState::WriteClosed);
    match p.opener.write_all(b"more").await {
        Err(StreamError::InvalidState { op, state, stream }) => {
            assert_eq!(
                (op, state, stream.as_str()),
                ("write", StreamState::WriteClosed, "t")
            );
        }
        other => panic!("expected a write-closed refusal, got {other:?}"),
    }
    let err = p.opener.write_eof().await.unwrap_err();
    assert!(err.to_string().contains("write-closed"), "{err}");

    let got = bounded("acceptor read_to_end", p.acceptor.read_to_end())
        .await
        .unwrap();
    assert_eq!(got, b"hello");
    assert_eq!(p.acceptor.state(), StreamState::ReadClosed);
    match p.acceptor.read(&mut [0u8; 4]).await {
        Err(StreamError::InvalidState { state, .. }) => assert_eq!(state, StreamState::ReadClosed),
        other => panic!("expected a read-closed refusal, got {other:?}"),
    }
    p.acceptor.write_all(b"bye").await.unwrap();
    p.acceptor.close().await.unwrap();
    assert_eq!(p.acceptor.state(), StreamState::Closed);
    match p.acceptor.write_all(b"x").await {
        Err(StreamError::InvalidState { state, .. }) => assert_eq!(state, StreamState::Closed),
        other => panic!("expected a closed refusal, got {other:?}"),
    }
    assert!(matches!(
        p.acceptor.close().await,
        Err(StreamError::InvalidState {
            state: StreamState::Closed,
            ..
        })
    ));

    let got = bounded("opener read_to_end", p.opener.read_to_end())
        .await
        .unwrap();
    assert_eq!(got, b"bye");
    assert_eq!(p.opener.state(), StreamState::Closed);
    assert_eq!(bounded("error_read", p.opener.error_read()).await.unwrap(), b"");

    // The error state refuses too, and says so.
    let p = pair().await;
    p.acceptor.error_write(b"bad", false).await.unwrap();
    assert_eq!(p.acceptor.state(), StreamState::Error);
    match p.acceptor.write_all(b"x").await {
        Err(e @ StreamError::InvalidState { .. }) => {
            assert!(e.to_string().contains("error state"), "{e}")
        }
        other => panic!("expected an error-state refusal, got {other:?}"),
    }
    eventually("the opener sees the error state", || {
        p.opener.state() == StreamState::Error
    })
    .await;
}

#[tokio::test]
async fn received_error_is_cached_for_every_error_read() {
    let p = pair().await;
    p.acceptor.error_write(b"disk full", false).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            bounded("error_read", p.opener.error_read()).await.unwrap(),
            b"disk full"
        );
    }
    assert_eq!(p.opener.error_received().as_deref(), Some(&b"disk full"[..]));
    // Reads report the same error, again and again.
    for _ in 0..2 {
        match bounded("read", p.opener.read(&mut [0u8; 8])).await {
            Err(StreamError::Remote { data, stream }) => {
                assert_eq!((&data[..], stream.as_str()), (&b"disk full"[..], "t"))
            }
            other => panic!("expected the remote error, got {other:?}"),
        }
    }
    assert_eq!(p.opener.state(), StreamState::Error);
}

#[tokio::test]
async fn second_error_write_is_refused() {
    let p = pair().await;
    p.acceptor.error_write(b"first", true).await.unwrap();
    match p.acceptor.error_write(b"second", true).await {
        Err(e @ StreamError::ErrorAlreadyWritten { .. }) => {
            assert!(e.to_string().contains("already"), "{e}")
        }
        other => panic!("expected ErrorAlreadyWritten, got {other:?}"),
    }
    assert_eq!(
        bounded("error_read", p.opener.error_read()).await.unwrap(),
        b"first"
    );
    // Only the acceptor writes errors; only the opener reads them.
    assert!(matches!(
        p.opener.error_write(b"x", false).await,
        Err(StreamError::WrongSide { .. })
    ));
    assert!(matches!(
        p.acceptor.error_read().await,
        Err(StreamError::WrongSide { .. })
    ));
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn error_with_data_flush_arrives_after_all_data_already_written() {
    let p = pair().await;
    let data = pattern(4 * 1024 * 1024);
    let acceptor = p.acceptor.clone();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        acceptor.write_all(&sent).await.unwrap();
        acceptor.error_write(b"after the data", true).await.unwrap();
    });
    // Start reading only once the error is already on its way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = Vec::new();
    let err = loop {
        match bounded("read", p.opener.read_chunk()).await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => panic!("clean end of data although the acceptor wrote an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        got.len(),
        data.len(),
        "every byte written before the error arrives first"
    );
    assert!(got == data);
    match err {
        StreamError::Remote { data, .. } => assert_eq!(&data[..], b"after the data"),
        other => panic!("expected the remote error, got {other:?}"),
    }
    bounded("writer", writer).await.unwrap();
}

#[tokio::test]
async fn error_without_data_flush_overtakes_queued_data() {
    let p = pair().await;
    let acceptor = p.acceptor.clone();
    // More than the flow-control window: the write blocks, data stays queued.
    let writer = tokio::spawn(async move { acceptor.write_all(&pattern(32 * 1024 * 1024)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.acceptor.error_write(b"abandon", false).await.unwrap();
    let blocked = bounded("blocked acceptor write", writer).await.unwrap();
    assert!(
        blocked.is_err(),
        "the acceptor's own blocked write ends with the error state"
    );
    // Wait for the error, then read: the error comes before the queued data.
    assert_eq!(
        bounded("error_read", p.opener.error_read()).await.unwrap(),
        b"abandon"
    );
    let mut got = 0usize;
    let err = loop {
        match bounded("read", p.opener.read_chunk()).await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("clean end of data although the acceptor wrote an error"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StreamError::Remote { .. }), "{err:?}");
    assert!(
        got < 32 * 1024 * 1024,
        "the error overtook queued data ({got} bytes read)"
    );
}

#[tokio::test]
async fn error_during_blocked_read_wakes_reader() {
    for flush in [false, true] {
        let p = pair().await;
        let opener = p.opener.clone();
        let reader = tokio::spawn(async move { opener.read(&mut [0u8; 64]).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!reader.is_finished(), "the read is blocked: nothing was written");
        p.acceptor.error_write(b"stop reading", flush).await.unwrap();
        match bounded("blocked read", reader).await.unwrap() {
            Err(StreamError::Remote { data, .. }) => assert_eq!(&data[..], b"stop reading"),
            other => panic!("expected the remote error (flush {flush}), got {other:?}"),
        }
        assert_eq!(p.opener.state(), StreamState::Error);
    }
}

#[tokio::test]
async fn error_during_blocked_write_wakes_writer() {
    let p = pair().await;
    let opener = p.opener.clone();
    // The acceptor never reads: the opener's writes block on flow control.
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 1024 * 1024];
        let mut written = 0usize;
        loop {
            if let Err(e) = opener.write_all(&chunk).await {
                return (written, e);
            }
            written += chunk.len();
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "the writer is blocked by flow control");
    p.acceptor.error_write(b"no space left", false).await.unwrap();
    let (written, err) = bounded("blocked write", writer).await.unwrap();
    assert!(written < 1024 * 1024 * 1024);
    match err {
        StreamError::Remote { data, .. } => assert_eq!(&data[..], b"no space left"),
        other => panic!("expected the remote error, got {other:?}"),
    }
    assert_eq!(p.opener.state(), StreamState::Error);
}

#[tokio::test]
async fn connection_loss_mid_stream_gives_both_sides_connection_lost() {
    let p = pair().await;
    p.opener.write_all(b"partial").await.unwrap();
    let mut buf = [0u8; 7];
    bounded("partial data", p.acceptor.read_exact(&mut buf))
        .await
        .unwrap();
    let (o, a) = (p.opener.clone(), p.acceptor.clone());
    let opener_read = tokio::spawn(async move { o.read(&mut [0u8; 16]).await });
    let acceptor_read = tokio::spawn(async move { a.read(&mut [0u8; 16]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The connection dies abruptly (no stream is closed first).
    p.client
        .peer()
        .quinn_connection()
        .close(0u32.into(), b"pulled the cable");
    for (side, r) in [
        ("opener", bounded("opener read", opener_read).await.unwrap()),
        ("acceptor", bounded("acceptor read", acceptor_read).await.unwrap()),
    ] {
        match r {
            Err(e @ StreamError::ConnectionLost { .. }) => assert_eq!(e.stream(), "t"),
            other => panic!("{side}: expected connection lost, never a clean end; got {other:?}"),
        }
    }
    for s in [&p.opener, &p.acceptor] {
        assert_eq!(s.state(), StreamState::Error);
        assert!(matches!(
            s.write_all(b"x").await,
            Err(StreamError::ConnectionLost { .. })
        ));
    }
    assert!(matches!(
        p.opener.error_read().await,
        Err(StreamError::ConnectionLost { .. })
    ));
}

#[tokio::test]
async fn dropping_without_close_resets_both_halves_as_peer_dropped() {
    // The acceptor drops: the opener's read and its error half report it.
    let p = pair().await;
    let Pair {
        opener,
        acceptor,
        srv,
        ..
    } = p;
    let o = opener.clone();
    let reader = tokio::spawn(async move { o.read(&mut [0u8; 16]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(acceptor);
    match bounded("opener read", reader).await.unwrap() {
        Err(e @ StreamError::PeerDropped { .. }) => {
            assert!(e.to_string().contains("peer dropped the stream"), "{e}")
        }
        other => panic!("expected PeerDropped, got {other:?}"),
    }
    assert!(matches!(
        bounded("error_read", opener.error_read()).await,
        Err(StreamError::PeerDropped { .. })
    ));
    eventually("the server releases the stream", || srv.streams.open_count() == 0).await;

    // The opener drops: the acceptor's read reports it.
    let p = pair().await;
    let Pair {
        opener,
        acceptor,
        srv,
        ..
    } = p;
    drop(opener);
    match bounded("acceptor read", acceptor.read(&mut [0u8; 16])).await {
        Err(StreamError::PeerDropped { .. }) => {}
        other => panic!("expected PeerDropped, got {other:?}"),
    }
    drop(acceptor);
    eventually("the server releases the stream", || srv.streams.open_count() == 0).await;
}

#[tokio::test]
async fn one_read_and_one_write_run_at_once_and_two_reads_take_turns() {
    let p = pair().await;
    let acceptor = p.acceptor.clone();
    // Echo on the acceptor.
    tokio::spawn(async move {
        while let Ok(Some(c)) = acceptor.read_chunk().await {
            if acceptor.write_chunk(c).await.is_err() {
                break;
            }
        }
        let _ = acceptor.close().await;
    });
    let data = pattern(2 * 1024 * 1024);
    let (o1, o2) = (p.opener.clone(), p.opener.clone());
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for c in sent.chunks(64 * 1024) {
            o1.write_all(c).await.unwrap();
        }
        o1.write_eof().await.unwrap();
    });
    // Two readers share the read direction; together they see every byte once.
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (o, total) = (o2.clone(), total.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 10_000];
            loop {
                match o.read(&mut buf).await {
                    Ok(0) | Err(StreamError::InvalidState { .. }) => break,
                    Ok(n) => {
                        total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        }));
    }
    bounded("writer", writer).await.unwrap();
    for r in readers {
        bounded("reader", r).await.unwrap();
    }
    assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), data.len());
}

// --- Pairing timeouts, with a raw QUIC peer that leaves a half unpaired ---

/// A raw quinn server that completes the hello and hands the connection to `f`.
async fn raw_peer<F, Fut>(f: F) -> (String, Fingerprint)
where
    F: FnOnce(quinn::Connection) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (ep, addr, fp) = raw_server();
    tokio::spawn(async move {
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut buf = BytesMut::new();
        let dec = FrameDecoder::new(1 << 20);
        while dec.decode(&mut buf).unwrap().is_none() {
            let c = recv.read_chunk(1 << 16, true).await.unwrap().unwrap();
            buf.extend_from_slice(&c.bytes);
        }
        let mut out = BytesMut::new();
        Frame::Welcome(Hello {
            version: 1,
            max_frame_size: 1 << 20,
            metadata: Metadata::new(),
        })
        .encode(&mut out)
        .unwrap();
        send.write_all(&out).await.unwrap();
        f(conn.clone()).await;
        let _ = conn.closed().await;
        drop((send, recv, ep));
    });
    (addr, fp)
}

fn short_pairing() -> StreamOptions {
    StreamOptions::new().pairing_timeout(Duration::from_millis(300))
}

#[tokio::test]
async fn pairing_timeout_fails_an_open_whose_error_half_never_arrives() {
    init_tracing();
    let (addr, fp) = raw_peer(|conn| async move {
        // Accept the data half and answer "accepted", but never open the error half.
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut head = [0u8; 3];
        recv.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x02, "data half type byte");
        let len = u16::from_be_bytes([head[1], head[2]]) as usize;
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.unwrap();
        send.write_all(&[0x00]).await.unwrap();
        // The opener gives up and aborts the data half with the pairing-timeout code.
        let code = recv.received_reset().await;
        assert!(matches!(code, Ok(Some(c)) if c.into_inner() == 0x12) || send.stopped().await.is_ok());
    })
    .await;
    let client = RpcClient::builder()
        .pin(fp)
        .stream_options(short_pairing())
        .connect(&addr)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    match bounded("open", client.open_stream("lonely")).await {
        Err(e @ StreamError::PairingTimeout { .. }) => {
            assert!(e.to_string().contains("error half"), "{e}");
            assert!(e.to_string().contains("lonely"), "{e}");
        }
        other => panic!("expected a pairing timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        client.streams().pending_pairings(),
        0,
        "the waiting half was freed"
    );
    assert_eq!(client.streams().open_count(), 0);
}

#[tokio::test]
async fn pairing_timeout_drops_an_error_half_whose_data_half_never_comes() {
    init_tracing();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (addr, fp) = raw_peer(|conn| async move {
        // An error half for a stream id the client never opened.
        let mut uni = conn.open_uni().await.unwrap();
        let mut b = BytesMut::new();
        b.put_u8(0x03);
        b.put_u64(999);
        uni.write_all(&b).await.unwrap();
        let stopped = uni.stopped().await;
        let _ = tx.send(stopped.ok().flatten().map(|c| c.into_inner()));
    })
    .await;
    let client = RpcClient::builder()
        .pin(fp)
        .stream_options(short_pairing())
        .connect(&addr)
        .await
        .unwrap();
    let code = bounded("the orphan half is stopped", rx).await.unwrap();
    assert_eq!(code, Some(0x12), "stopped with the pairing-timeout code");
    eventually("the orphan half is freed", || {
        client.streams().pending_pairings() == 0
    })
    .await;
    // The connection is still fine.
    assert!(!client.peer().is_closed());
}

#[tokio::test]
async fn pairing_timeout_drops_a_data_half_whose_header_never_completes() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder().stream_options(short_pairing()));
    let mut incoming = srv.streams.accept("t").unwrap();
    let client = connect(&srv.server).await;
    // A data half that starts but never finishes its header.
    let (mut send, mut recv) = client.peer().quinn_connection().open_bi().await.unwrap();
    send.write_all(&[0x02, 0x00]).await.unwrap();
    let mut b = [0u8; 1];
    match bounded("the server gives up", recv.read(&mut b)).await {
        Err(quinn::ReadError::Reset(c)) => assert_eq!(c.into_inner(), 0x12),
        other => panic!("expected a reset with the pairing-timeout code, got {other:?}"),
    }
    eventually("the half is freed", || srv.streams.pending_pairings() == 0).await;
    assert_eq!(srv.streams.open_count(), 0);
    let (ok, taken) = bounded("a real stream still works", async {
        tokio::join!(client.open_stream("t"), incoming.next_stream())
    })
    .await;
    assert!(ok.is_ok() && taken.is_some(), "{ok:?}");
}

#[tokio::test]
async fn reads_of_any_size_return_every_byte_in_order_and_take_waiting_packets_at_once() {
    let p = pair().await;
    let data = pattern(768 * 1024 + 3);
    let opener = p.opener.clone();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        opener.write_all(&sent).await.unwrap();
        opener.write_eof().await.unwrap();
    });
    // Let a window's worth of packets arrive first, so that reads find them waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sizes = [1usize, 7, 1000, 1500, 4096, 65536, 3, 20000];
    let (mut got, mut largest_read) = (Vec::new(), 0);
    for i in 0.. {
        let want = sizes[i % sizes.len()];
        match i % 3 {
            0 => {
                let mut buf = vec![0u8; want];
                let n = bounded("read", p.acceptor.read(&mut buf)).await.unwrap();
                if n == 0 {
                    break;
                }
                largest_read = largest_read.max(n);
                got.extend_from_slice(&buf[..n]);
            }
            1 => match bounded("read_chunk", p.acceptor.read_chunk()).await.unwrap() {
                Some(c) => got.extend_from_slice(&c),
                None => break,
            },
            _ => {
                let mut buf = vec![0u8; want.min(data.len() - got.len())];
                bounded("read_exact", p.acceptor.read_exact(&mut buf))
                    .await
                    .unwrap();
                got.extend_from_slice(&buf);
            }
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes arrive in order");
    // A packet carries at most about 1,450 bytes on loopback: a larger read took several.
    assert!(
        largest_read > 1500,
        "a large read takes every waiting packet that fits (largest read: {largest_read} bytes)"
    );
    bounded("writer", writer).await.unwrap();
}

#[tokio::test]
async fn a_large_read_takes_all_that_arrived_and_leaves_the_end_or_the_error_to_the_next_read() {
    // The end of the data: the read that gathered everything returns bytes, the next one 0.
    let p = pair().await;
    let data = pattern(256 * 1024 + 5);
    let (opener, sent) = (p.opener.clone(), data.clone());
    let writer = tokio::spawn(async move {
        opener.write_all(&sent).await.unwrap();
        opener.write_eof().await.unwrap();
    });
    // Let a window's worth of packets arrive first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = Vec::new();
    let mut largest = 0;
    loop {
        let n = bounded("read", p.acceptor.read(&mut buf)).await.unwrap();
        if n == 0 {
            break;
        }
        largest = largest.max(n);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data, "every byte, in order");
    // One batch from quinn is at most 32 packets (under 64 KiB): a read took several batches.
    assert!(
        largest > 64 * 1024,
        "a read takes every waiting packet that fits (largest read: {largest} bytes)"
    );
    bounded("writer", writer).await.unwrap();

    // An error after the data: the read that gathered the data returns it, the next the error.
    let p = pair().await;
    let (acceptor, sent) = (p.acceptor.clone(), data.clone());
    let writer = tokio::spawn(async move {
        acceptor.write_all(&sent).await.unwrap();
        acceptor.error_write(b"after the data", true).await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    let err = loop {
        match bounded("read", p.opener.read(&mut buf)).await {
            Ok(0) => panic!("clean end of data although the acceptor wrote an error"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert!(got == data, "every byte before the error");
    assert!(
        matches!(&err, StreamError::Remote { data, .. } if &data[..] == b"after the data"),
        "{err:?}"
    );
    bounded("writer", writer).await.unwrap();
}

#[tokio::test]
async fn xstream_works_as_tokio_async_read_and_write() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = pair().await;
    let Pair {
        opener,
        acceptor,
        srv: _srv,
        client: _client,
        ..
    } = p;
    let opener = Arc::try_unwrap(opener).unwrap();
    let acceptor = Arc::try_unwrap(acceptor).unwrap();
    let data = pattern(3 * 1024 * 1024 + 17);
    let sent = data.clone();
    let server = tokio::spawn(async move {
        let mut io = acceptor.into_io();
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        io.stream().error_write(b"checked", true).await.unwrap();
        got
    });
    let mut io = opener.into_io();
    io.write_all(&sent).await.unwrap();
    io.shutdown().await.unwrap();
    let got = bounded("acceptor reads", server).await.unwrap();
    assert!(got == data);
    let mut rest = Vec::new();
    let err = bounded("opener reads", io.read_to_end(&mut rest))
        .await
        .unwrap_err();
    match err.get_ref().and_then(|e| e.downcast_ref::<StreamError>()) {
        Some(StreamError::Remote { data, .. }) => assert_eq!(&data[..], b"checked"),
        other => panic!("expected the remote error inside the io::Error, got {other:?}"),
    }
}
