//! `--soak DURATION`: a long mixed load against one EchoStream server, watching for leaks.
//!
//! A few resident clients call, emit events and open streams without pause while other
//! clients connect, do one of each and leave. The server runs on its own runtime thread (the
//! split layout), so the counting allocator attributes its heap exactly. Every sample prints
//! the server's live heap, the process's RSS, open file descriptors, the tasks alive on each
//! runtime and the server's connections. At the end every client leaves, and the run checks:
//! - the server's live heap after warm-up stays flat: the median of the last quarter of the
//!   samples is at most 5 % above the median of the quarter after warm-up;
//! - file descriptors, the server runtime's tasks and its connections return to their baseline
//!   (measured before any client came) within a grace period.
//!
//! It prints `soak: PASS` or `soak: FAIL` with the reasons, and exits non-zero on failure.

use crate::alloc::{self, Side};
use crate::rt::{run_on, Runtimes};
use crate::systems::es;
use bytes::Bytes;
use echostream::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident clients, busy for the whole run.
const RESIDENTS: usize = 8;
/// Clients connecting and leaving at the same time.
const CHURNERS: usize = 2;
/// How far above the post-warm-up level the server heap may end.
const MAX_GROWTH: f64 = 0.05;
/// How long the leaving clients' resources may take to go away.
const GRACE: Duration = Duration::from_secs(30);

/// One sample of the process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    server_heap: i64,
    rss: u64,
    fds: usize,
    server_tasks: usize,
    client_tasks: usize,
    connections: usize,
}

/// Operations done, by kind.
#[derive(Debug, Default)]
struct Done {
    calls: AtomicU64,
    events: AtomicU64,
    streams: AtomicU64,
    clients: AtomicU64,
    errors: AtomicU64,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
}

fn median(mut v: Vec<i64>) -> f64 {
    v.sort_unstable();
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2] as f64,
        n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0,
    }
}

/// One round of a client's work: a call, an event, and every tenth round a stream.
async fn one_round(c: &RpcClient, n: u64, payload: &Bytes, done: &Done) -> crate::Res<()> {
    let back: Bytes = c.request("echo", payload).await?;
    if back != *payload {
        return Err("echo returned other bytes".into());
    }
    done.calls.fetch_add(1, Relaxed);
    c.emit("bench.event", n).await?;
    done.events.fetch_add(1, Relaxed);
    if n.is_multiple_of(10) {
        let s = c.open_stream("echo").await?;
        s.write_all(&[n as u8; 4096]).await?;
        s.write_eof().await?;
        let back = s.read_to_end().await?;
        if back.len() != 4096 {
            return Err(format!("stream echo returned {} bytes of 4096", back.len()).into());
        }
        done.streams.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// Runs the soak for `duration`, sampling every `every`; true when every check passed.
pub(crate) fn run(duration: Duration, every: Duration) -> bool {
    alloc::set_counting(true);
    let rts = Runtimes::new(crate::rt::Layout::Split);
    let server = match run_on(rts.server(), es::serve()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: the server did not start: {e}");
            return false;
        }
    };
    let server_rt = rts.server().clone();
    let client_rt = rts.client().clone();
    let tasks = move || {
        (
            server_rt.metrics().num_alive_tasks(),
            client_rt.metrics().num_alive_tasks(),
        )
    };
    let handle = server.handle.clone();
    let sample = |at: Duration| {
        let (server_tasks, client_tasks) = tasks();
        Sample {
            at,
            server_heap: alloc::side(Side::Server).live,
            rss: rss_bytes(),
            fds: open_fds(),
            server_tasks,
            client_tasks,
            connections: handle.connection_count(),
        }
    };
    let baseline = sample(Duration::ZERO);
    println!(
        "soak: {duration:?}, a sample every {every:?}; {RESIDENTS} resident clients, {CHURNERS} \
         connecting and leaving"
    );
    println!(
        "baseline: server heap {}, RSS {}, {} fds, tasks server {} / client {}",
        mib(baseline.server_heap as f64),
        mib(baseline.rss as f64),
        baseline.fds,
        baseline.server_tasks,
        baseline.client_tasks
    );

    let done = Arc::new(Done::default());
    let stop = Arc::new(AtomicBool::new(false));
    let payload = Bytes::from(vec![7u8; 64]);
    let mut workers = Vec::new();
    for _ in 0..RESIDENTS {
        let (addr, fp) = (server.addr.clone(), server.fingerprint);
        let (done, stop, payload) = (done.clone(), stop.clone(), payload.clone());
        workers.push(rts.client().spawn(async move {
            let c = es::connect(&addr, fp).await?;
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                if let Err(e) = one_round(&c, n, &payload, &done).await {
                    done.errors.fetch_add(1, Relaxed);
                    eprintln!("soak: resident client: {e}");
                }
                n += 1;
            }
            c.close().await;
            crate::Res::Ok(())
        }));
    }
    for _ in 0..CHURNERS {
        let (addr, fp) = (server.addr.clone(), server.fingerprint);
        let (done, stop, payload) = (done.clone(), stop.clone(), payload.clone());
        workers.push(rts.client().spawn(async move {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                let result = async {
                    let c = es::connect(&addr, fp).await?;
                    one_round(&c, n * 10, &payload, &done).await?;
                    c.close().await;
                    crate::Res::Ok(())
                }
                .await;
                match result {
                    Ok(()) => {
                        done.clients.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        done.errors.fetch_add(1, Relaxed);
                        eprintln!("soak: churning client: {e}");
                    }
                }
                n += 1;
            }
            crate::Res::Ok(())
        }));
    }

    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < duration {
        std::thread::sleep(
            every
                .min(duration.saturating_sub(start.elapsed()))
                .max(Duration::from_millis(10)),
        );
        let s = sample(start.elapsed());
        println!(
            "[{:>6.0} s] server heap {:>10}, RSS {:>10}, {:>4} fds, tasks server {:>4} / client {:>4}, \
             {:>3} connections; {} calls, {} events, {} streams, {} clients came and went, {} errors",
            s.at.as_secs_f64(),
            mib(s.server_heap as f64),
            mib(s.rss as f64),
            s.fds,
            s.server_tasks,
            s.client_tasks,
            s.connections,
            done.calls.load(Relaxed),
            done.events.load(Relaxed),
            done.streams.load(Relaxed),
            done.clients.load(Relaxed),
            done.errors.load(Relaxed),
        );
        samples.push(s);
    }

    // Everybody leaves; then the process should look as it did before they came.
    stop.store(true, Relaxed);
    for w in workers {
        match run_on(rts.client(), w) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                done.errors.fetch_add(1, Relaxed);
                eprintln!("soak: a client failed: {e}");
            }
            Err(e) => {
                done.errors.fetch_add(1, Relaxed);
                eprintln!("soak: a client task failed: {e}");
            }
        }
    }
    let left = Instant::now();
    let mut after = sample(start.elapsed());
    while left.elapsed() < GRACE
        && (after.connections > 0 || after.fds > baseline.fds || after.server_tasks > baseline.server_tasks)
    {
        std::thread::sleep(Duration::from_millis(100));
        after = sample(start.elapsed());
    }
    println!(
        "after the clients left ({:.1} s): server heap {}, RSS {}, {} fds, tasks server {} / client \
         {}, {} connections",
        left.elapsed().as_secs_f64(),
        mib(after.server_heap as f64),
        mib(after.rss as f64),
        after.fds,
        after.server_tasks,
        after.client_tasks,
        after.connections
    );

    let mut failures = Vec::new();
    // Warm-up: the first quarter. Compare the quarter after it with the last quarter.
    let n = samples.len();
    if n >= 8 {
        let q = n / 4;
        let early = median(samples[q..2 * q].iter().map(|s| s.server_heap).collect());
        let late = median(samples[n - q..].iter().map(|s| s.server_heap).collect());
        let growth = if early > 0.0 { late / early - 1.0 } else { 0.0 };
        println!(
            "server heap after warm-up: {} → {} ({:+.1} %, limit {:+.0} %)",
            mib(early),
            mib(late),
            growth * 100.0,
            MAX_GROWTH * 100.0
        );
        if growth > MAX_GROWTH {
            failures.push(format!(
                "the server heap grew {:.1} % after warm-up (limit {:.0} %)",
                growth * 100.0,
                MAX_GROWTH * 100.0
            ));
        }
    } else {
        failures.push(format!(
            "only {n} samples: run longer or sample more often (at least 8)"
        ));
    }
    if after.connections > 0 {
        failures.push(format!(
            "{} connections still open {GRACE:?} after the clients left",
            after.connections
        ));
    }
    if after.fds > baseline.fds {
        failures.push(format!(
            "{} file descriptors open, {} before the clients came",
            after.fds, baseline.fds
        ));
    }
    if after.server_tasks > baseline.server_tasks {
        failures.push(format!(
            "{} server tasks alive, {} before the clients came",
            after.server_tasks, baseline.server_tasks
        ));
    }
    let errors = done.errors.load(Relaxed);
    if errors > 0 {
        failures.push(format!("{errors} operations failed"));
    }
    if done.clients.load(Relaxed) == 0 || done.streams.load(Relaxed) == 0 {
        failures.push("no client came and went, or no stream completed".to_owned());
    }
    if failures.is_empty() {
        println!("soak: PASS");
        true
    } else {
        for f in &failures {
            println!("soak: FAIL: {f}");
        }
        false
    }
}
