//! Integrity and scale: 1 GiB through one stream hashed at both ends,
//! 10 MiB both ways at once, 10,000 concurrent streams on one connection.
//! These assert behaviour only; the time each took is printed for the record
//! (`cargo test --test streams_scale -- --nocapture`).

mod common;
mod streams_common;

use bytes::Bytes;
use common::*;
use echostream::prelude::*;
use echostream::stream::{stream_handler_fn, StreamError};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streams_common::*;

/// Generated data: chunk `i` is a fixed pseudo-random block with `i` written
/// into its first eight bytes, so every chunk differs and nothing is stored.
struct Generator {
    block: Vec<u8>,
}

impl Generator {
    fn new(chunk: usize) -> Self {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let block = (0..chunk)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Generator { block }
    }

    fn chunk(&self, i: u64) -> Bytes {
        let mut c = self.block.clone();
        c[..8].copy_from_slice(&i.to_be_bytes());
        Bytes::from(c)
    }
}

async fn send_generated(s: &XStream, total: u64, chunk: usize) -> [u8; 32] {
    let g = Generator::new(chunk);
    let mut hash = Sha256::new();
    let n = total / chunk as u64;
    for i in 0..n {
        let c = g.chunk(i);
        hash.update(&c);
        s.write_chunk(c).await.unwrap();
    }
    s.write_eof().await.unwrap();
    hash.finalize().into()
}

async fn receive_hashed(s: &XStream) -> (u64, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut len = 0u64;
    while let Some(c) = s.read_chunk().await.unwrap() {
        len += c.len() as u64;
        hash.update(&c);
    }
    (len, hash.finalize().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_transfer_arrives_byte_exact() {
    const TOTAL: u64 = 1 << 30;
    let p = pair().await;
    let started = Instant::now();
    let acceptor = p.acceptor.clone();
    let receiver = tokio::spawn(async move {
        let r = receive_hashed(&acceptor).await;
        acceptor.close().await.unwrap();
        r
    });
    let sent = tokio::time::timeout(
        Duration::from_secs(600),
        send_generated(&p.opener, TOTAL, 1 << 20),
    )
    .await
    .expect("1 GiB sent within 10 minutes");
    let (len, got) = tokio::time::timeout(Duration::from_secs(600), receiver)
        .await
        .expect("1 GiB received within 10 minutes")
        .unwrap();
    assert_eq!(len, TOTAL);
    assert_eq!(
        got, sent,
        "SHA-256 of what arrived equals SHA-256 of what was sent"
    );
    assert_eq!(bounded("clean end", p.opener.read_to_end()).await.unwrap(), b"");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "1 GiB through one stream: {secs:.2} s ({:.0} MB/s)",
        TOTAL as f64 / secs / 1e6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_in_both_directions_at_once() {
    const TOTAL: u64 = 10 << 20;
    let p = pair().await;
    let (o, a) = (p.opener.clone(), p.acceptor.clone());
    let (o2, a2) = (p.opener.clone(), p.acceptor.clone());
    let started = Instant::now();
    let up_send = tokio::spawn(async move { send_generated(&o, TOTAL, 64 * 1024).await });
    let down_send = tokio::spawn(async move { send_generated(&a, TOTAL, 48 * 1024 + 7).await });
    let up_recv = tokio::spawn(async move { receive_hashed(&a2).await });
    let down_recv = tokio::spawn(async move { receive_hashed(&o2).await });
    let up_sent = bounded("up send", up_send).await.unwrap();
    let down_sent = bounded("down send", down_send).await.unwrap();
    let (up_len, up_got) = bounded("up receive", up_recv).await.unwrap();
    p.acceptor.close().await.unwrap();
    let (down_len, down_got) = bounded("down receive", down_recv).await.unwrap();
    assert_eq!(up_len, TOTAL);
    assert_eq!(up_got, up_sent);
    assert_eq!(down_len, TOTAL / (48 * 1024 + 7) * (48 * 1024 + 7));
    assert_eq!(down_got, down_sent);
    println!(
        "10 MiB each way at once: {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_echo_streams_on_one_connection_all_complete_and_release() {
    const N: usize = 10_000;
    init_tracing();
    let echo = stream_handler_fn("echo", |_ctx: Context, s: XStream| async move {
        let data = s.read_to_end().await?;
        s.write_all(&data).await?;
        Ok::<_, Error>(())
    });
    let srv = serve_streams(RpcServer::builder().stream_handler(echo));
    let client = connect(&srv.server).await;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let s = c.open_stream("echo").await?;
            let msg = format!("{i:064}");
            s.write_all(msg.as_bytes()).await?;
            s.write_eof().await?;
            let back = s.read_to_end().await?;
            assert_eq!(back, msg.as_bytes());
            s.close().await?;
            Ok::<_, StreamError>(())
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks))
        .await
        .expect("10,000 streams complete within 2 minutes");
    let failed: Vec<_> = all.into_iter().filter_map(|r| r.unwrap().err()).collect();
    assert!(
        failed.is_empty(),
        "{} streams failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let elapsed = started.elapsed();
    // Every stream is released on both sides, and no half waits for a partner.
    let streams = Arc::new(client.streams());
    eventually("client streams released", || streams.open_count() == 0).await;
    eventually("server streams released", || srv.streams.open_count() == 0).await;
    assert_eq!(streams.pending_pairings(), 0);
    assert_eq!(srv.streams.pending_pairings(), 0);
    println!(
        "{N} concurrent 64-byte echo streams on one connection: {:.0} ms",
        elapsed.as_secs_f64() * 1e3
    );
}

#[echostream::handler("echo")]
async fn echo_number(_ctx: Context, x: u64) -> Result<u64> {
    Ok(x)
}

/// The congestion window the client's side of the connection uses now.
fn client_window(client: &RpcClient) -> u64 {
    client.peer().quinn_connection().stats().path.cwnd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_limit_the_congestion_window_of_a_bulk_stream_until_they_stop() {
    // While calls run, the side sending them keeps little stream data in flight (at least
    // `CallPriority::min_window`, 16 KiB): the window the bulk stream had alone comes down,
    // and goes back up once the calls stop and the hold (50 ms) has passed.
    const ALONE: u64 = 128 << 10;
    const WITH_CALLS: u64 = 64 << 10;
    init_tracing();
    let srv = serve_streams(RpcServer::builder().handler(echo_number));
    let mut incoming = srv.streams.accept("bulk").expect("accept bulk");
    let client = connect(&srv.server).await;
    let (opener, accepted) = bounded("pairing", async {
        tokio::join!(client.open_stream("bulk"), incoming.next_stream())
    })
    .await;
    let (opener, (_, acceptor)) = (opener.unwrap(), accepted.unwrap());
    let sink = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(Some(c)) = acceptor.read_chunk().await {
            n += c.len() as u64;
        }
        n
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let chunk = Bytes::from(vec![7u8; 64 << 10]);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                opener.write_chunk(chunk.clone()).await.unwrap();
                n += chunk.len() as u64;
            }
            opener.write_eof().await.unwrap();
            n
        }
    });

    eventually("the bulk stream's window grows past 128 KiB", || {
        client_window(&client) > ALONE
    })
    .await;
    let calling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let caller = tokio::spawn({
        let (client, calling) = (client.clone(), calling.clone());
        async move {
            let mut calls = 0u64;
            while calling.load(std::sync::atomic::Ordering::Relaxed) {
                let back: u64 = client.request("echo", calls).await.unwrap();
                assert_eq!(back, calls);
                calls += 1;
            }
            calls
        }
    });
    eventually("the window comes down to 64 KiB or less while calls run", || {
        client_window(&client) <= WITH_CALLS
    })
    .await;
    calling.store(false, std::sync::atomic::Ordering::Relaxed);
    let calls = bounded("the caller stops", caller).await.unwrap();
    eventually("the window grows past 128 KiB again after the calls", || {
        client_window(&client) > ALONE
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = bounded("the writer stops", writer).await.unwrap();
    let received = bounded("the sink drains", sink).await.unwrap();
    assert_eq!(received, sent, "all bulk data arrived");
    println!(
        "{calls} calls during the bulk stream; {} MB moved",
        sent / 1_000_000
    );
}
