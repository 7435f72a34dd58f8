//! `--failover [DURATION]`: the balanced client through an instance failure (issue 23).
//!
//! Three servers with one identity on 127.0.0.1, a `Balancer` over them (a static list), 64
//! callers of an idempotent 64-byte echo for DURATION (default 20 s). At a quarter of the run
//! instance C is killed (its accept loop and endpoint dropped, every connection closed with
//! calls in flight); at 60 % it starts again on the same port. Prints, per second, the calls
//! answered by each instance, then the failed calls, how long after its restart C was back in
//! rotation and answering, and the spread over the healthy instances in the windows where all
//! were up. A program, not a test: the figures are what it measured on this machine.

use crate::rt::{run_on, Layout, Runtimes};
use bytes::Bytes;
use echostream::discovery::{Instance, Source};
use echostream::prelude::*;
use echostream::rpc::{handler_fn, CallOptions, ServerHandle};
use echostream::{DiscoverOptions, ServerIdentity};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLERS: usize = 64;

fn server(identity: &ServerIdentity, bind: &str, index: u64) -> Result<RpcServer> {
    RpcServer::builder()
        .bind(bind)
        .identity(identity.clone())
        .handler(handler_fn("echo.from", move |_c: Context, b: Bytes| async move {
            Ok::<_, Error>((index, b))
        }))
        .build()
}

struct Running {
    handle: ServerHandle,
    task: tokio::task::JoinHandle<Result<()>>,
}

fn run(s: RpcServer) -> Running {
    Running {
        handle: s.handle(),
        task: tokio::spawn(s.run()),
    }
}

/// Runs the scenario and prints it; false when a step failed or a call failed.
pub(crate) fn run_failover(duration: Duration) -> bool {
    let rts = Runtimes::new(Layout::Shared);
    let result = run_on(rts.client(), scenario(duration));
    match result {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("failover benchmark failed: {e}");
            false
        }
    }
}

async fn scenario(duration: Duration) -> Result<bool> {
    let loaded = ServerIdentity::Ephemeral.load()?;
    let identity = ServerIdentity::Der {
        cert_chain: loaded.cert_chain.clone(),
        private_key: Arc::new(loaded.private_key.clone_key()),
    };
    let fp = loaded.fingerprint.to_string();
    let mut running = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for i in 0..3 {
        let s = server(&identity, "127.0.0.1:0", i)?;
        addrs.push(s.local_addr());
        running.push(Some(run(s)));
    }
    let source = Source::fixed(
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Instance::at(["A", "B", "C"][i], [*a]).with_fingerprint(fp.clone())),
    );
    let balancer = RpcClient::builder()
        .balanced(DiscoverOptions::from(source))
        .await?;
    let started = Instant::now();
    while balancer.healthy_count() < 3 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let per_instance: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (b, per, failed, stop) = (
                balancer.clone(),
                per_instance.clone(),
                failed.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let payload = Bytes::from(vec![7u8; 64]);
                while !stop.load(Relaxed) {
                    let r: Result<(u64, Bytes)> = b
                        .request_with("echo.from", payload.clone(), CallOptions::new().idempotent())
                        .await;
                    match r {
                        Ok((i, _)) if i < 3 => {
                            per[i as usize].fetch_add(1, Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let t0 = Instant::now();
    let kill_at = duration / 4;
    let restart_at = duration * 3 / 5;
    let mut killed = false;
    let mut restarted_at: Option<Instant> = None;
    let mut back_in_rotation: Option<Duration> = None;
    let mut first_answer: Option<Duration> = None;
    let mut last = [0u64; 3];
    let mut all_up_windows = [0u64; 3];
    println!("second   A calls   B calls   C calls   (C killed at {kill_at:?}, restarted at {restart_at:?})");
    let mut second = 0u32;
    while t0.elapsed() < duration {
        // Checks every 10 ms, prints every second.
        let tick = t0 + Duration::from_secs(u64::from(second) + 1);
        while Instant::now() < tick {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !killed && t0.elapsed() >= kill_at {
                killed = true;
                if let Some(r) = running[2].take() {
                    r.task.abort();
                    for p in r.handle.peers() {
                        p.close("killed by echostream-bench --failover");
                    }
                }
            }
            if killed && restarted_at.is_none() && t0.elapsed() >= restart_at {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match server(&identity, &addrs[2].to_string(), 2) {
                        Ok(s) => {
                            running[2] = Some(run(s));
                            break;
                        }
                        Err(e) if Instant::now() > deadline => return Err(e),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                restarted_at = Some(Instant::now());
            }
            if let Some(r) = restarted_at {
                if back_in_rotation.is_none() && balancer.healthy_count() == 3 {
                    back_in_rotation = Some(r.elapsed());
                }
                if first_answer.is_none() && per_instance[2].load(Relaxed) > last[2] {
                    first_answer = Some(r.elapsed());
                }
            }
        }
        let now = [0, 1, 2].map(|i| per_instance[i].load(Relaxed));
        let d = [0, 1, 2].map(|i| now[i] - last[i]);
        let window_start = t0 + Duration::from_secs(u64::from(second));
        let before_kill = window_start + Duration::from_secs(1) <= t0 + kill_at;
        let after_return =
            back_in_rotation.is_some_and(|b| restarted_at.is_some_and(|r| r + b <= window_start));
        if before_kill || after_return {
            for i in 0..3 {
                all_up_windows[i] += d[i];
            }
        }
        println!("{:>6}   {:>7}   {:>7}   {:>7}", second + 1, d[0], d[1], d[2]);
        last = now;
        second += 1;
    }
    stop.store(true, Relaxed);
    for c in callers {
        let _ = c.await;
    }
    let total: u64 = all_up_windows.iter().sum();
    let mean = total as f64 / 3.0;
    let worst = all_up_windows
        .iter()
        .map(|n| ((*n as f64 - mean) / mean.max(1.0)).abs())
        .fold(0.0, f64::max);
    let failures = failed.load(Relaxed);
    println!("failed idempotent calls: {failures}");
    println!(
        "C back in rotation {:?} after its restart, first answer from it after {:?}",
        back_in_rotation, first_answer
    );
    println!(
        "spread while all three were up (whole seconds): {all_up_windows:?}, largest deviation from the mean {:.1} %",
        worst * 100.0
    );
    for r in running.into_iter().flatten() {
        r.handle.shutdown();
    }
    Ok(failures == 0)
}
