//! `--balanced [DURATION]`: what the balancing layer costs (issue 23).
//!
//! 64 callers of the 64-byte idempotent `echo` for DURATION each (default 5 s), in one run,
//! split layout (servers on one runtime thread, clients on the other, so the counting
//! allocator attributes client allocations exactly):
//! - **plain**: one `RpcClient` connected to instance A;
//! - **balanced, 1 instance**: a `Balancer` over a static list holding only A (the layer's
//!   own cost: the same server work, the same one connection);
//! - **balanced, 3 instances**: a `Balancer` over A, B and C (the same three servers share
//!   the one server thread, so this shows the spread, not more capacity).
//!
//! It prints calls/s and client-side allocations per call for each, and the balanced/plain
//! ratios. The goal of issue 23 is a cost of at most 10 % of calls/s and no extra allocation
//! per call.

use crate::alloc::{self, Side};
use crate::rt::{run_on, Layout, Runtimes};
use crate::systems::es;
use bytes::Bytes;
use echostream::discovery::{Instance, Source};
use echostream::prelude::*;
use echostream::rpc::{Balancer, CallOptions};
use echostream::{DiscoverOptions, Fingerprint};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLERS: usize = 64;

/// Either client, called the same way.
#[derive(Clone)]
enum Target {
    Plain(RpcClient),
    Balanced(Balancer),
}

impl Target {
    async fn echo(&self, b: Bytes) -> Result<Bytes> {
        let opts = CallOptions::new().idempotent();
        match self {
            Target::Plain(c) => c.request_with("echo", b, opts).await,
            Target::Balanced(c) => c.request_with("echo", b, opts).await,
        }
    }
}

/// One measurement: calls/s and client allocations per call.
#[derive(Clone, Copy, Debug)]
struct Figure {
    calls_per_s: f64,
    allocs_per_call: f64,
    errors: u64,
}

async fn measure(target: Target, duration: Duration) -> Figure {
    let payload = Bytes::from(vec![7u8; 64]);
    // Warm-up: connections, buffers and the runtime's task slots reach their steady state.
    for _ in 0..200 {
        let _ = target.echo(payload.clone()).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let before = alloc::side(Side::Client);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (t, p, stop, calls, errors) = (
                target.clone(),
                payload.clone(),
                stop.clone(),
                calls.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    match t.echo(p.clone()).await {
                        Ok(_) => calls.fetch_add(1, Relaxed),
                        Err(_) => errors.fetch_add(1, Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let after = alloc::side(Side::Client);
    let n = calls.load(Relaxed).max(1);
    Figure {
        calls_per_s: n as f64 / elapsed.as_secs_f64(),
        allocs_per_call: (after.allocs - before.allocs) as f64 / n as f64,
        errors: errors.load(Relaxed),
    }
}

async fn balancer(servers: &[(String, Fingerprint)]) -> Result<Balancer> {
    let source = Source::fixed(servers.iter().enumerate().map(|(i, (addr, fp))| {
        let addr = addr.parse().unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
        Instance::at(format!("bench-{i}"), [addr]).with_fingerprint(fp.to_string())
    }));
    RpcClient::builder().balanced(DiscoverOptions::from(source)).await
}

/// Runs the three measurements and prints them; false when a step failed.
pub(crate) fn run(duration: Duration) -> bool {
    let rts = Runtimes::new(Layout::Split);
    let servers: Vec<(String, Fingerprint)> = match (0..3)
        .map(|_| {
            run_on(rts.server(), async {
                es::serve().await.map(|s| (s.addr, s.fingerprint))
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start the servers: {e}");
            return false;
        }
    };
    alloc::set_counting(true);
    let (a, fp) = servers[0].clone();
    let result = run_on(rts.client(), {
        let servers = servers.clone();
        async move {
            let plain = RpcClient::builder().pin(fp).connect(&a).await?;
            let p = measure(Target::Plain(plain), duration).await;
            let one = balancer(&servers[..1]).await?;
            let b1 = measure(Target::Balanced(one), duration).await;
            let three = balancer(&servers).await?;
            let b3 = measure(Target::Balanced(three.clone()), duration).await;
            let spread: Vec<u64> = three.instances().iter().map(|i| i.calls).collect();
            Ok::<_, Error>((p, b1, b3, spread))
        }
    });
    alloc::set_counting(false);
    let (p, b1, b3, spread) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("balanced benchmark failed: {e}");
            return false;
        }
    };
    println!("balanced client vs one plain connection: {CALLERS} callers, 64-byte idempotent echo, {duration:?} each, split 1+1 layout");
    println!(
        "{:<26} {:>12} {:>16} {:>8}",
        "client", "calls/s", "client allocs/call", "errors"
    );
    for (name, f) in [
        ("plain RpcClient (A)", p),
        ("Balancer, 1 instance (A)", b1),
        ("Balancer, 3 instances", b3),
    ] {
        println!(
            "{name:<26} {:>12.0} {:>16.2} {:>8}",
            f.calls_per_s, f.allocs_per_call, f.errors
        );
    }
    println!(
        "balanced(1)/plain: {:.3} calls/s, {:+.2} allocs/call; balanced(3)/plain: {:.3} calls/s; calls per instance (3): {spread:?}",
        b1.calls_per_s / p.calls_per_s,
        b1.allocs_per_call - p.allocs_per_call,
        b3.calls_per_s / p.calls_per_s,
    );
    p.errors + b1.errors + b3.errors == 0
}
