//! `bench`: a load generator in the way of ghz. N callers share one or more connections and
//! call one method with the same JSON argument, for a duration or a number of calls; the report
//! gives calls/s, latency percentiles, a histogram and errors by status.

use super::{ctrl_c, json_argument};
use crate::args::{BenchArgs, BinaryCodec};
use crate::cmd::call::call_options;
use crate::connect::connect;
use crate::exit::{code_label, Class, Failure};
use crate::output;
use bytes::Bytes;
use echostream::rpc::Payload;
use echostream::{Codec, RpcClient};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// What one caller measured.
struct Tally {
    /// Latencies of successful calls, in nanoseconds.
    latencies: Histogram<u64>,
    /// Failed calls by label, with the first message of each.
    errors: BTreeMap<String, (u64, String, Class)>,
}

impl Tally {
    fn new() -> Self {
        Self {
            // 3 significant digits, auto-resizing: any latency fits.
            latencies: Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latencies.add(&other.latencies);
        for (label, (n, msg, class)) in other.errors {
            let e = self.errors.entry(label).or_insert((0, msg, class));
            e.0 += n;
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.0).sum()
    }
}

/// `Histogram::new(3)` cannot fail (3 significant figures is in range); this keeps the
/// constructor total without an `unwrap`.
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, u64::MAX / 2, 2).unwrap_or_else(|_| std::process::abort())
}

/// The run's stop conditions, shared by the callers.
struct Plan {
    stop: AtomicBool,
    /// Calls left to start when `--calls` is given.
    left: Option<AtomicU64>,
    deadline: Option<Instant>,
    done: AtomicU64,
}

impl Plan {
    /// True when the caller may start another call.
    fn take(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match &self.left {
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
            None => true,
        }
    }
}

pub(crate) async fn run(a: BenchArgs, json: bool) -> Result<(), Failure> {
    // Encoded once, like ghz: the calls measure the framework, not this tool's JSON encoder,
    // and answers are checked for success without being decoded.
    let argument = match &a.binary {
        Some(path) => Payload {
            codec: match a.codec {
                BinaryCodec::Json => Codec::Json,
                BinaryCodec::Bincode => Codec::Bincode,
            },
            bytes: Bytes::from(
                std::fs::read(path)
                    .map_err(|e| Failure::other(format!("cannot read {}: {e}", path.display())))?,
            ),
        },
        None => {
            let value = json_argument(a.argument.as_deref(), "argument")?;
            Payload {
                codec: Codec::Json,
                bytes: Bytes::from(serde_json::to_vec(&value).map_err(|e| Failure::other(e.to_string()))?),
            }
        }
    };
    let opts = call_options(&a.opts)?;
    if a.concurrency == 0 || a.connections == 0 {
        return Err(Failure::new(
            Class::Usage,
            "--concurrency and --connections must be at least 1",
        ));
    }
    let mut clients = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        clients.push(connect(&a.target).await?);
    }
    // One call first: a wrong method or argument fails here with its own message, not as
    // thousands of identical errors.
    let first = clients[0]
        .peer()
        .request_raw(&a.method, argument.clone(), opts.clone())
        .await;
    if let Err(e) = first {
        let mut failure = Failure::from(e);
        if failure.class == Class::UnknownMethod {
            failure = super::reflect::with_suggestions(&clients[0], &a.method, failure).await;
        }
        close_all(&clients).await;
        return Err(failure);
    }
    for i in 0..a.warmup {
        let client = &clients[(i as usize) % clients.len()];
        let _ = client
            .peer()
            .request_raw(&a.method, argument.clone(), opts.clone())
            .await;
    }
    let duration = match (a.duration, a.calls) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_DURATION),
    };
    let started = Instant::now();
    let plan = Arc::new(Plan {
        stop: AtomicBool::new(false),
        left: a.calls.map(AtomicU64::new),
        deadline: duration.map(|d| started + d),
        done: AtomicU64::new(0),
    });
    let method: Arc<str> = a.method.clone().into();
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..a.concurrency {
        let peer = clients[i % clients.len()].peer();
        let (plan, method, argument, opts) = (plan.clone(), method.clone(), argument.clone(), opts.clone());
        callers.spawn(async move {
            let mut tally = Tally::new();
            while plan.take() {
                let t0 = Instant::now();
                let r = peer.request_raw(&method, argument.clone(), opts.clone()).await;
                let took = t0.elapsed();
                plan.done.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(_) => {
                        let _ = tally
                            .latencies
                            .record(took.as_nanos().min(u128::from(u64::MAX)) as u64);
                    }
                    Err(e) => {
                        let f = Failure::from(e);
                        let label = match &f.status {
                            Some(s) => code_label(s.code()),
                            None => f.class.name().to_owned(),
                        };
                        let lost = f.class == Class::Unreachable;
                        tally.errors.entry(label).or_insert((0, f.message, f.class)).0 += 1;
                        // A lost connection fails every later call at once: stop this caller.
                        if lost {
                            break;
                        }
                    }
                }
            }
            tally
        });
    }
    let ticker = live_progress(json, plan.clone(), duration, a.calls);
    let mut total = Tally::new();
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = callers.join_next() => match joined {
                Some(Ok(t)) => total.merge(t),
                Some(Err(e)) => return Err(Failure::other(format!("a caller task failed: {e}"))),
                None => break,
            },
            _ = ctrl_c(), if !interrupted => {
                interrupted = true;
                plan.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    close_all(&clients).await;
    let ok = total.latencies.len();
    let errors = total.error_count();
    if json {
        output::json_pretty(&json_report(&a, &total, elapsed, interrupted));
    } else {
        print_report(&a, &total, elapsed);
    }
    if interrupted {
        return Err(Failure::interrupted(format!(
            "stopped after {} calls",
            ok + errors
        )));
    }
    if ok == 0 && errors > 0 {
        if let Some((label, (_, msg, class))) = total.errors.iter().next() {
            return Err(Failure::new(
                *class,
                format!("every call failed ({label}): {msg}"),
            ));
        }
    }
    Ok(())
}

async fn close_all(clients: &[RpcClient]) {
    for c in clients {
        c.close().await;
    }
}

/// A one-line live count on stderr while the bench runs (only on a terminal).
fn live_progress(
    json: bool,
    plan: Arc<Plan>,
    duration: Option<Duration>,
    calls: Option<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if json || !std::io::stderr().is_terminal() {
            return;
        }
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let done = plan.done.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            let goal = match (duration, calls) {
                (Some(d), _) => format!("{secs:.0}/{:.0} s", d.as_secs_f64()),
                (None, Some(n)) => format!("of {n} calls"),
                _ => String::new(),
            };
            eprint!(
                "\r\x1b[2K{done} calls {goal}, {:.0} calls/s",
                done as f64 / secs.max(1e-9)
            );
        }
    })
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn print_report(a: &BenchArgs, t: &Tally, elapsed: Duration) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    let h = &t.latencies;
    let ok = h.len();
    let errors = t.error_count();
    let secs = elapsed.as_secs_f64();
    println!("{}", output::bold("Summary:"));
    println!("  method:       {}", a.method);
    println!("  target:       {}", a.target.target);
    println!(
        "  callers:      {} on {} connection(s)",
        a.concurrency, a.connections
    );
    println!("  calls:        {} ({ok} ok, {errors} failed)", ok + errors);
    println!("  duration:     {secs:.2} s");
    println!(
        "  rate:         {:.1} calls/s",
        (ok + errors) as f64 / secs.max(1e-9)
    );
    if ok > 0 {
        println!();
        println!("{}", output::bold("Latency (ms):"));
        println!(
            "  min {:.3}  mean {:.3}  max {:.3}",
            ms(h.min()),
            h.mean() / 1e6,
            ms(h.max())
        );
        for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            println!("  {label:<6} {:.3}", ms(h.value_at_quantile(q)));
        }
        println!();
        println!("{}", output::bold("Histogram (ms):"));
        let buckets = histogram(h, 10);
        let most = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1);
        for (upper, count) in buckets {
            let width = (count * 40).div_ceil(most) as usize;
            println!("  {:>9.3} [{count:>8}] |{}", ms(upper), "■".repeat(width));
        }
    }
    if !t.errors.is_empty() {
        println!();
        println!("{}", output::bold("Errors:"));
        for (label, (n, msg, _)) in &t.errors {
            println!("  {} {label}: {msg}", output::red(&format!("[{n}]")));
        }
    }
}

/// `n` linear buckets from min to max: (upper bound in ns, count).
fn histogram(h: &Histogram<u64>, n: u64) -> Vec<(u64, u64)> {
    let (lo, hi) = (h.min(), h.max());
    let step = ((hi - lo) / n).max(1);
    let mut out = Vec::new();
    let mut from = lo;
    for i in 0..n {
        let to = if i + 1 == n { hi } else { lo + step * (i + 1) };
        let count = h.count_between(from, to) - if i == 0 { 0 } else { h.count_at(from) };
        out.push((to, count));
        from = to;
        if to >= hi {
            break;
        }
    }
    out
}

fn json_report(a: &BenchArgs, t: &Tally, elapsed: Duration, interrupted: bool) -> serde_json::Value {
    let h = &t.latencies;
    let ok = h.len();
    let errors = t.error_count();
    let secs = elapsed.as_secs_f64();
    let latency = (ok > 0).then(|| {
        serde_json::json!({
            "min": ms(h.min()), "mean": h.mean() / 1e6, "max": ms(h.max()),
            "p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
            "p99": ms(h.value_at_quantile(0.99)), "p999": ms(h.value_at_quantile(0.999)),
            "histogram": histogram(h, 10).into_iter()
                .map(|(upper, count)| serde_json::json!({ "le_ms": ms(upper), "count": count }))
                .collect::<Vec<_>>(),
        })
    });
    serde_json::json!({
        "method": a.method,
        "target": a.target.target,
        "concurrency": a.concurrency,
        "connections": a.connections,
        "calls": ok + errors,
        "ok": ok,
        "errors": errors,
        "errors_by_status": t.errors.iter().map(|(label, (n, msg, _))| (label.clone(), serde_json::json!({ "count": n, "message": msg }))).collect::<serde_json::Map<_, _>>(),
        "seconds": secs,
        "calls_per_second": (ok + errors) as f64 / secs.max(1e-9),
        "latency_ms": latency,
        "interrupted": interrupted,
    })
}
