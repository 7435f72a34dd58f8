//! Instruction counts per unary call, for profiling EchoStream's call path
//! under `valgrind --tool=callgrind` (repeatable, unlike wall-clock time).
//!
//! Server and client run on one current-thread runtime, so a run executes the
//! same instructions whatever else the machine does. It makes 500 warm-up
//! calls, then the given number of 64-byte echo calls from one caller or from
//! several concurrent ones. The work happens in many tasks (callers, readers,
//! writers, quinn's drivers), so count the whole program twice with different
//! call counts and divide the difference: that removes the start-up (TLS
//! handshake, the entropy source's self-test) and leaves one call's cost on
//! both sides together, the kernel excluded.
//!
//! ```text
//! cargo build --release -p echostream-bench --example call_profile
//! for n in 2048 10240; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!     target/release/examples/call_profile $n 64 2>&1 | grep Collected
//! done
//! # (second total - first total) / 8192 = instructions per call
//! ```
//!
//! Arguments: calls (default 2000) and concurrent callers (default 1).

use bytes::Bytes;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::ServerIdentity;

const WARMUP: usize = 500;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let callers: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = RpcServer::builder()
            .bind("127.0.0.1:0")
            .identity(ServerIdentity::Ephemeral)
            .handler(handler_fn("echo", |_ctx: Context, b: Bytes| async move {
                Ok::<_, Error>(b)
            }))
            .build()?;
        let addr = server.local_addr().to_string();
        let fingerprint = server.fingerprint();
        tokio::spawn(server.run());
        let client = RpcClient::builder().pin(fingerprint).connect(&addr).await?;
        let payload = Bytes::from(vec![7u8; 64]);
        calls_from(&client, &payload, WARMUP, callers).await?;
        let t = std::time::Instant::now();
        calls_from(&client, &payload, calls, callers).await?;
        let took = t.elapsed();
        println!(
            "{calls} calls, {callers} caller(s): {:.1} µs per call (wall clock, meaningless under valgrind)",
            took.as_secs_f64() * 1e6 / calls as f64
        );
        Ok(())
    })
}

/// `calls` echo calls split over `callers` concurrent tasks.
async fn calls_from(client: &RpcClient, payload: &Bytes, calls: usize, callers: usize) -> Result<()> {
    let per = calls / callers;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, payload) = (client.clone(), payload.clone());
            tokio::spawn(async move {
                for _ in 0..per {
                    let back: Bytes = client.request("echo", &payload).await?;
                    if back != payload {
                        return Err(Error::Config("wrong echo".into()));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| Error::Config(e.to_string()))??;
    }
    Ok(())
}
