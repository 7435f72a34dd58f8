//! Metrics: EchoStream records through the `metrics` facade; this program installs the
//! Prometheus exporter, serves its text on a loopback HTTP port, and makes some calls.
//!
//! ```text
//! cargo run --example metrics                        # then: curl http://127.0.0.1:9464/metrics
//! cargo run --example metrics -- --metrics-addr 127.0.0.1:9000 --calls 100
//! ```
//!
//! It starts a server (`math.add`, `math.fail`, a `note` listener, an `upload` stream), connects
//! a client, makes `--calls` good calls, a third as many failing ones and two to a method the
//! server does not have, sends three events and a 100 KiB stream, syncs clocks, prints where the
//! metrics are, and keeps serving until stdin closes (Ctrl-D) or Ctrl-C. The exporter is
//! installed before the server is built: that is when per-method handles are registered.

use echostream::prelude::*;
use echostream::rpc::{handler_fn, listener_fn};
use echostream::stream::stream_handler_fn;
use echostream::ServerIdentity;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;

/// Histogram buckets for call durations, in seconds (50 µs to 1 s).
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];
/// Histogram buckets for payload sizes, in bytes.
const SIZE_BUCKETS: &[f64] = &[16.0, 64.0, 256.0, 1024.0, 16384.0, 262144.0, 1048576.0];

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut metrics_addr: SocketAddr = "127.0.0.1:9464".parse()?;
    let mut calls = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--metrics-addr" => {
                metrics_addr = args.next().ok_or("--metrics-addr needs an address")?.parse()?
            }
            "--calls" => calls = args.next().ok_or("--calls needs a number")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if !metrics_addr.ip().is_loopback() {
        return Err("this example serves metrics on loopback addresses only".into());
    }

    // 1. The exporter, with histogram buckets (without them Prometheus gets summaries).
    PrometheusBuilder::new()
        .with_http_listener(metrics_addr)
        .set_buckets_for_metric(Matcher::Suffix("duration".into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("size".into()), SIZE_BUCKETS)?
        .install()?;
    echostream::metrics::describe();
    // The payload size histograms are opt-in (they cost more than the rest together); this
    // example shows them. Byte counters per method are recorded either way.
    echostream::metrics::record_size_histograms(true);

    // 2. A server and a client.
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(handler_fn(
            "math.add",
            |_c: Context, (a, b): (i64, i64)| async move { Ok::<_, Error>(a + b) },
        ))
        .handler(handler_fn("math.fail", |_c: Context, _: ()| async move {
            Err::<(), _>(Error::with_code(Code(1001), "always fails"))
        }))
        .listener(listener_fn("note", |_c: Context, _n: u64| async {}))
        .stream_handler(stream_handler_fn(
            "upload",
            |_c: Context, s: XStream| async move {
                s.read_to_end().await?;
                Ok::<_, echostream::stream::StreamError>(())
            },
        ))
        .build()?;
    let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
    tokio::spawn(server.run());
    let client = RpcClient::builder()
        .pin(fingerprint)
        .connect(&addr.to_string())
        .await?;

    // 3. Some traffic.
    for i in 0..calls {
        let _: i64 = client.request("math.add", (i as i64, 1i64)).await?;
    }
    for _ in 0..calls / 3 {
        let _ = client.request::<_, ()>("math.fail", ()).await;
    }
    for _ in 0..2 {
        let _ = client.request::<_, ()>("no.such.method", ()).await;
    }
    // Events, a stream of 100 KiB, and clock sync (per-connection gauges).
    for n in 0..3u64 {
        client.emit("note", n).await?;
    }
    let upload = client.open_stream("upload").await?;
    upload.write_all(&vec![7u8; 100 * 1024]).await?;
    upload.write_eof().await?;
    upload.read_to_end().await?;
    // A stream name nobody accepts: refused (counted by reason).
    let _ = client.open_stream("no.such.stream").await;
    client
        .clock()
        .synced(3, std::time::Duration::from_secs(10))
        .await?;

    println!(
        "{{\"server\": \"{addr}\", \"metrics\": \"http://{metrics_addr}/metrics\", \"calls\": {calls}}}"
    );
    eprintln!("metrics at http://{metrics_addr}/metrics; close stdin (Ctrl-D) or Ctrl-C to stop");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    tokio::select! {
        _ = async { while stdin.read(&mut buf).await.is_ok_and(|n| n > 0) {} } => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    client.close().await;
    Ok(())
}
