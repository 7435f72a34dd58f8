//! `--balanced [DURATION]`: what the balancing layer costs (issue 23).
//!
//! 64 callers of the 64-byte idempotent `echo` for DURATION each (default 3 s), three rounds
//! interleaved (plain, balanced 1, balanced 3, then again; the median of each is compared, so
//! a burst of other work on a shared machine does not land on one system only), in one run,
//! split layout (servers on one runtime thread, clients on the other, so the counting
//! allocator attributes client allocations exactly):
//! - **plain**: one `RpcClient` connected to instance A;
//! - **balanced, 1 instance**: a `Balancer` over a static list holding only A (the layer's
//!   own cost: the same server work, the same one connection);
//! - **3 plain clients**: one `RpcClient` per instance A, B, C, each caller bound to one: what
//!   three connections cost by themselves (smaller batches per connection);
//! - **balanced, 3 instances**: a `Balancer` over A, B and C (the same three servers share
//!   the one server thread, so this shows the spread, not more capacity); its cost is read
//!   against the three plain clients.
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
/// Interleaved rounds; the median of each system is reported.
const ROUNDS: usize = 3;

/// The clients compared, called the same way.
#[derive(Clone)]
enum Target {
    Plain(RpcClient),
    /// One plain client per instance, each caller task bound to one (no balancing logic):
    /// what three connections cost by themselves.
    Spread(Arc<[RpcClient]>),
    Balanced(Balancer),
}

impl Target {
    async fn echo(&self, caller: usize, b: Bytes) -> Result<Bytes> {
        let opts = CallOptions::new().idempotent();
        match self {
            Target::Plain(c) => c.request_with("echo", b, opts).await,
            Target::Spread(cs) => cs[caller % cs.len()].request_with("echo", b, opts).await,
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
    for i in 0..200 {
        let _ = target.echo(i, payload.clone()).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let before = alloc::side(Side::Client);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (t, p, stop, calls, errors) = (
                target.clone(),
                payload.clone(),
                stop.clone(),
                calls.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    match t.echo(caller, p.clone()).await {
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
            let plain = Target::Plain(RpcClient::builder().pin(fp).connect(&a).await?);
            let one = Target::Balanced(balancer(&servers[..1]).await?);
            let three_b = balancer(&servers).await?;
            let three = Target::Balanced(three_b.clone());
            let mut each = Vec::new();
            for (addr, fp) in &servers {
                each.push(RpcClient::builder().pin(*fp).connect(addr).await?);
            }
            let spread3 = Target::Spread(Arc::from(each));
            let mut rounds = Vec::new();
            for _ in 0..ROUNDS {
                let p = measure(plain.clone(), duration).await;
                let b1 = measure(one.clone(), duration).await;
                let s3 = measure(spread3.clone(), duration).await;
                let b3 = measure(three.clone(), duration).await;
                rounds.push([p, b1, s3, b3]);
            }
            let spread: Vec<u64> = three_b.instances().iter().map(|i| i.calls).collect();
            Ok::<_, Error>((rounds, spread))
        }
    });
    alloc::set_counting(false);
    let (rounds, spread) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("balanced benchmark failed: {e}");
            return false;
        }
    };
    let median = |k: usize| {
        let mut v: Vec<Figure> = rounds.iter().map(|r| r[k]).collect();
        v.sort_by(|x, y| x.calls_per_s.total_cmp(&y.calls_per_s));
        let mid = v[v.len() / 2];
        Figure {
            errors: v.iter().map(|f| f.errors).sum(),
            ..mid
        }
    };
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "round {}: plain {:.0}, balanced(1) {:.0}, 3 plain clients {:.0}, balanced(3) {:.0} calls/s",
            i + 1,
            r[0].calls_per_s,
            r[1].calls_per_s,
            r[2].calls_per_s,
            r[3].calls_per_s
        );
    }
    let (p, b1, s3, b3) = (median(0), median(1), median(2), median(3));
    println!("balanced client vs one plain connection: {CALLERS} callers, 64-byte idempotent echo, {duration:?} each, median of {ROUNDS} interleaved rounds, split 1+1 layout");
    println!(
        "{:<26} {:>12} {:>16} {:>8}",
        "client", "calls/s", "client allocs/call", "errors"
    );
    for (name, f) in [
        ("plain RpcClient (A)", p),
        ("Balancer, 1 instance (A)", b1),
        ("3 plain clients (A, B, C)", s3),
        ("Balancer, 3 instances", b3),
    ] {
        println!(
            "{name:<26} {:>12.0} {:>16.2} {:>8}",
            f.calls_per_s, f.allocs_per_call, f.errors
        );
    }
    println!(
        "balanced(1)/plain: {:.3} calls/s, {:+.2} allocs/call; balanced(3)/3 plain clients: {:.3} calls/s, {:+.2} allocs/call; balanced(3)/plain: {:.3}; calls per instance (3): {spread:?}",
        b1.calls_per_s / p.calls_per_s,
        b1.allocs_per_call - p.allocs_per_call,
        b3.calls_per_s / s3.calls_per_s,
        b3.allocs_per_call - s3.allocs_per_call,
        b3.calls_per_s / p.calls_per_s,
    );
    p.errors + b1.errors + s3.errors + b3.errors == 0
}
