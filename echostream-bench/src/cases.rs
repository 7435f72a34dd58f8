//! The nine cases of issue 8 plus the allocation count per call. Each case
//! starts its own runtimes (so nothing of one case lingers in the next),
//! sets up every system once, then runs the systems in rotated order for a
//! number of rounds, so that drift on a noisy machine hits all of them alike.

use crate::alloc::{self, Side};
use crate::config::Sizes;
use crate::cpu;
use crate::report::Report;
use crate::rt::{run_on, Layout, Runtimes};
use crate::stats::{ns, Samples};
use crate::systems::{es, quic, rotated, start_quinn, start_unary, Client, Keep, System};
use crate::Res;
use bytes::Bytes;
use echostream::prelude::*;
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A payload of `n` bytes that is not all one value, so a wrong echo shows.
fn payload(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What one system did in one slice of a round.
#[derive(Debug, Default)]
struct Run {
    lat: Vec<u64>,
    calls: u64,
    elapsed: Duration,
    wrong: u64,
}

/// Accumulated over the rounds.
#[derive(Debug, Default)]
struct Acc {
    lat: Samples,
    calls: u64,
    elapsed: Duration,
    wrong: u64,
    /// CPU time of both sides' runtime threads during the rounds, in nanoseconds.
    cpu_ns: u64,
    failed: Option<String>,
}

/// `n` sequential calls.
async fn sequential(mut c: Client, p: Bytes, n: usize) -> Res<Run> {
    let mut run = Run {
        lat: Vec::with_capacity(n),
        ..Run::default()
    };
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let back = c.echo(&p).await?;
        run.lat.push(ns(t.elapsed()));
        run.wrong += u64::from(back != p);
    }
    run.elapsed = start.elapsed();
    run.calls = n as u64;
    Ok(run)
}

/// Longest a single call of the concurrent cases may take before the run counts as failed.
const CALL_BOUND: Duration = Duration::from_secs(30);

/// `callers` tasks calling in a loop for `dur`, each with its own client clone.
async fn concurrent(c: Client, p: Bytes, callers: usize, dur: Duration) -> Res<Run> {
    let start = Instant::now();
    let deadline = start + dur;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let mut c = c.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let mut run = Run::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    // A call that never ends (a wedged connection) fails the system's run
                    // instead of hanging the benchmark.
                    let back = match tokio::time::timeout(CALL_BOUND, c.echo(&p)).await {
                        Ok(r) => r?,
                        Err(_) => {
                            return Err(format!(
                            "a {}-byte call with {callers} callers did not complete within {CALL_BOUND:?}",
                            p.len()
                        )
                            .into())
                        }
                    };
                    run.lat.push(ns(t.elapsed()));
                    run.wrong += u64::from(back != p);
                }
                Res::Ok(run)
            })
        })
        .collect();
    let mut total = Run::default();
    for t in tasks {
        let r = t.await??;
        total.calls += r.lat.len() as u64;
        total.lat.extend(r.lat);
        total.wrong += r.wrong;
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// The selected systems for which QUIC-level cases make sense.
fn quic_systems(sz: &Sizes) -> Vec<System> {
    System::QUIC
        .into_iter()
        .filter(|s| sz.systems.contains(s))
        .collect()
}

/// Starts every unary system; a system that fails to start is reported and left out.
fn start_all(
    rts: &Runtimes,
    systems: &[System],
    report: &mut Report,
    case: &str,
) -> Vec<(System, Client, Keep)> {
    let mut out = Vec::new();
    for &s in systems {
        match start_unary(s, rts) {
            Ok((c, k)) => out.push((s, c, k)),
            Err(e) => report.fail(format!("case {case}: {} did not start: {e}", s.name())),
        }
    }
    out
}

/// Runs `slice` for each client, `rounds` times in rotated order.
fn rounds<F, Fut>(
    rts: &Runtimes,
    clients: &[(System, Client, Keep)],
    rounds: usize,
    mut slice: F,
) -> BTreeMap<System, Acc>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Res<Run>> + Send + 'static,
{
    let mut acc: BTreeMap<System, Acc> = BTreeMap::new();
    let idx: Vec<usize> = (0..clients.len()).collect();
    for round in 0..rounds {
        for i in rotated(&idx, round) {
            let (sys, client, _) = &clients[i];
            let a = acc.entry(*sys).or_default();
            if a.failed.is_some() {
                continue;
            }
            let cpu0 = cpu::all_ns();
            match run_on(rts.client(), slice(client.clone())) {
                Ok(r) => {
                    a.cpu_ns += cpu::all_ns().saturating_sub(cpu0);
                    a.calls += r.calls;
                    a.elapsed += r.elapsed;
                    a.wrong += r.wrong;
                    a.lat.0.extend(r.lat);
                }
                Err(e) => a.failed = Some(e.to_string()),
            }
        }
    }
    acc
}

fn warm_up(rts: &Runtimes, clients: &[(System, Client, Keep)], p: &Bytes, n: usize) {
    for (_, c, _) in clients {
        let _ = run_on(rts.client(), sequential(c.clone(), p.clone(), n));
    }
}

/// Case 1: one caller, sequential 64-byte echo.
pub(crate) fn case1(sz: &Sizes, layout: Layout, report: &mut Report) {
    let rts = Runtimes::new(layout);
    let clients = start_all(&rts, &sz.systems, report, "1");
    let p = payload(64);
    warm_up(&rts, &clients, &p, sz.warmup);
    let n = sz.seq_calls;
    let acc = rounds(&rts, &clients, sz.rounds, |c| sequential(c, p.clone(), n));
    let l = layout.name();
    for (sys, mut a) in acc {
        report.wrong("1", sys, a.wrong);
        if let Some(e) = &a.failed {
            report.fail(format!("case 1 ({l}): {}: {e}", sys.name()));
        }
        report.add("1", "p50", l, sys, a.lat.pct_us(0.50), "µs");
        report.add("1", "p99", l, sys, a.lat.pct_us(0.99), "µs");
        report.add("1", "p999", l, sys, a.lat.pct_us(0.999), "µs");
        let rate = (a.calls > 0).then(|| a.calls as f64 / a.elapsed.as_secs_f64());
        report.add("1", "calls/s", l, sys, rate, "calls/s");
    }
}

/// Case 2: 64 and 256 concurrent callers on one connection.
pub(crate) fn case2(sz: &Sizes, layout: Layout, report: &mut Report) {
    let rts = Runtimes::new(layout);
    let clients = start_all(&rts, &sz.systems, report, "2");
    let p = payload(64);
    warm_up(&rts, &clients, &p, sz.warmup);
    let l = layout.name();
    for callers in [64usize, 256] {
        let dur = sz.conc_slice;
        let acc = rounds(&rts, &clients, sz.rounds, |c| {
            concurrent(c, p.clone(), callers, dur)
        });
        for (sys, mut a) in acc {
            report.wrong("2", sys, a.wrong);
            if let Some(e) = &a.failed {
                report.fail(format!("case 2 ({l}, {callers} callers): {}: {e}", sys.name()));
            }
            let rate = (a.calls > 0).then(|| a.calls as f64 / a.elapsed.as_secs_f64());
            report.add(
                "2",
                &format!("calls/s, {callers} callers"),
                l,
                sys,
                rate,
                "calls/s",
            );
            // CPU per call (both sides together) is steadier than calls/s on a shared
            // machine: the figure to compare when a change costs a little per call.
            let cpu = (a.calls > 0).then(|| a.cpu_ns as f64 / 1e3 / a.calls as f64);
            report.add(
                "2",
                &format!("CPU per call, {callers} callers"),
                l,
                sys,
                cpu,
                "µs",
            );
            report.add(
                "2",
                &format!("p50, {callers} callers"),
                l,
                sys,
                a.lat.pct_us(0.50),
                "µs",
            );
            report.add(
                "2",
                &format!("p99, {callers} callers"),
                l,
                sys,
                a.lat.pct_us(0.99),
                "µs",
            );
        }
    }
}

/// Case 3: large payloads: 1 MiB with 8 and 64 concurrent callers, 256 KiB with 256 (the
/// wide shapes once wedged a connection whose receiver left side streams unread).
pub(crate) fn case3(sz: &Sizes, report: &mut Report) {
    let layout = Layout::Shared;
    let rts = Runtimes::new(layout);
    // The typed client adds nothing to a large payload's cost: cases 1, 2
    // and `alloc` measure it.
    let systems: Vec<System> = sz
        .systems
        .iter()
        .copied()
        .filter(|s| *s != System::EchoStreamTyped)
        .collect();
    let clients = start_all(&rts, &systems, report, "3");
    warm_up(&rts, &clients, &payload(1 << 20), 4);
    let dur = sz.big_slice;
    let l = layout.name();
    for (callers, size, label) in [
        (8usize, 1usize << 20, "1 MiB"),
        (64, 1 << 20, "1 MiB"),
        (256, 256 << 10, "256 KiB"),
    ] {
        let p = payload(size);
        let acc = rounds(&rts, &clients, sz.rounds, |c| {
            concurrent(c, p.clone(), callers, dur)
        });
        for (sys, mut a) in acc {
            report.wrong("3", sys, a.wrong);
            if let Some(e) = &a.failed {
                report.fail(format!(
                    "case 3 ({label}, {callers} callers): {}: {e}",
                    sys.name()
                ));
            }
            // Payload bytes per second in each direction (request = reply).
            let mbs = (a.calls > 0).then(|| a.calls as f64 * p.len() as f64 / 1e6 / a.elapsed.as_secs_f64());
            report.add(
                "3",
                &format!("{label} echo, {callers} callers"),
                l,
                sys,
                mbs,
                "MB/s",
            );
            report.add(
                "3",
                &format!("p50, {label}, {callers} callers"),
                l,
                sys,
                a.lat.pct_us(0.50),
                "µs",
            );
        }
    }
}

/// An EchoStream server and one client on the layout's runtimes.
fn start_es(rts: &Runtimes) -> Res<(es::EsServer, RpcClient)> {
    let srv = run_on(rts.server(), es::serve())?;
    let (addr, fp) = (srv.addr.clone(), srv.fingerprint);
    let client = run_on(rts.client(), async move { es::connect(&addr, fp).await })?;
    Ok((srv, client))
}

/// A bulk writer on either system: opens its stream, then writes 64 KiB
/// chunks until `total` bytes or until `stop`, then ends the stream and
/// returns (bytes sent, bytes the server counted, time from the first
/// write to the server's count).
#[derive(Clone)]
enum Bulk {
    EchoStream(RpcClient),
    Quinn(quinn::Connection),
}

impl Bulk {
    async fn run(self, total: u64, stop: Option<Arc<AtomicBool>>) -> Res<(u64, u64, Duration)> {
        let chunk = Bytes::from(vec![0xA5u8; 64 << 10]);
        let stopped = || stop.as_ref().is_some_and(|s| s.load(Relaxed));
        let mut sent = 0u64;
        match self {
            Bulk::EchoStream(c) => {
                let s = c.open_stream("sink").await?;
                let start = Instant::now();
                while sent < total && !stopped() {
                    s.write_chunk(chunk.clone()).await?;
                    sent += chunk.len() as u64;
                }
                s.write_eof().await?;
                let back = s.read_to_end().await?;
                let counted = u64::from_be_bytes(back.as_slice().try_into()?);
                Ok((sent, counted, start.elapsed()))
            }
            Bulk::Quinn(conn) => {
                let (mut send, mut recv) = conn.open_bi().await?;
                let start = Instant::now();
                send.write_all(&[quic::TAG_SINK]).await?;
                while sent < total && !stopped() {
                    send.write_chunk(chunk.clone()).await?;
                    sent += chunk.len() as u64;
                }
                send.finish()?;
                let back = recv.read_to_end(8).await?;
                let counted = u64::from_be_bytes(back.as_slice().try_into()?);
                Ok((sent, counted, start.elapsed()))
            }
        }
    }
}

/// Case 4: one stream, `bulk_bytes` in 64 KiB writes; MB/s and CPU per side.
/// Split layout, so each side's CPU time is its runtime's threads'.
pub(crate) fn case4(sz: &Sizes, report: &mut Report) {
    let layout = Layout::Split;
    let rts = Runtimes::new(layout);
    let l = layout.name();
    let mut bulks = Vec::new();
    let mut keep: Vec<Keep> = Vec::new();
    match start_es(&rts) {
        Ok((s, c)) => {
            bulks.push((System::EchoStream, Bulk::EchoStream(c)));
            keep.push(Box::new(s));
        }
        Err(e) => report.fail(format!("case 4: EchoStream did not start: {e}")),
    }
    match start_quinn(&rts) {
        Ok((s, ep, c)) => {
            bulks.push((System::Quinn, Bulk::Quinn(c)));
            keep.push(Box::new((s, ep)));
        }
        Err(e) => report.fail(format!("case 4: raw quinn did not start: {e}")),
    }
    // Per system: bytes, time, server CPU ns, client CPU ns, wrong counts.
    let mut acc: BTreeMap<System, (u64, Duration, u64, u64, u64)> = BTreeMap::new();
    for round in 0..sz.bulk_rounds {
        for (sys, bulk) in rotated(&[0usize, 1][..bulks.len()], round)
            .into_iter()
            .map(|i| &bulks[i])
        {
            let (s0, c0) = (cpu::cpu_ns(Side::Server), cpu::cpu_ns(Side::Client));
            match run_on(rts.client(), bulk.clone().run(sz.bulk_bytes, None)) {
                Ok((sent, counted, took)) => {
                    let a = acc.entry(*sys).or_default();
                    a.0 += sent;
                    a.1 += took;
                    a.2 += cpu::cpu_ns(Side::Server) - s0;
                    a.3 += cpu::cpu_ns(Side::Client) - c0;
                    a.4 += u64::from(sent != counted);
                }
                Err(e) => report.fail(format!("case 4: {}: {e}", sys.name())),
            }
        }
    }
    let what = format!("1 stream, {} MiB in 64 KiB writes", sz.bulk_bytes >> 20);
    for (sys, (bytes, took, s_ns, c_ns, wrong)) in acc {
        report.wrong("4", sys, wrong);
        let gib = bytes as f64 / GIB;
        report.add(
            "4",
            &what,
            l,
            sys,
            Some(bytes as f64 / 1e6 / took.as_secs_f64()),
            "MB/s",
        );
        report.add(
            "4",
            "CPU per GiB, server (receiver)",
            l,
            sys,
            Some(s_ns as f64 / 1e9 / gib),
            "s/GiB",
        );
        report.add(
            "4",
            "CPU per GiB, client (sender)",
            l,
            sys,
            Some(c_ns as f64 / 1e9 / gib),
            "s/GiB",
        );
    }
    drop(keep);
}

/// Case 5: small one-way events, one sender: events/s and time to the last.
pub(crate) fn case5(sz: &Sizes, report: &mut Report) {
    let layout = Layout::Shared;
    let rts = Runtimes::new(layout);
    let l = layout.name();
    let n = sz.events;
    let limit = Duration::from_secs(120);
    for sys in quic_systems(sz) {
        let result: Res<(Duration, Duration, u64, u64)> = match sys {
            System::EchoStream => start_es(&rts).and_then(|(srv, client)| {
                let sink = srv.events.clone();
                sink.arm(n);
                let r = run_on(rts.client(), async move {
                    let start = Instant::now();
                    for seq in 0..n {
                        client.emit("bench.event", seq).await?;
                    }
                    let sent = start.elapsed();
                    tokio::time::timeout(limit, sink.wait()).await?;
                    Res::Ok((sent, start.elapsed()))
                })?;
                let (got, wrong) = srv.events.counts();
                Ok((r.0, r.1, got, wrong))
            }),
            _ => start_quinn(&rts).and_then(|(srv, _ep, conn)| {
                let sink = srv.events.clone();
                sink.arm(n);
                let r = run_on(rts.client(), async move {
                    let start = Instant::now();
                    let mut send = conn.open_uni().await?;
                    for seq in 0..n {
                        send.write_all(&seq.to_be_bytes()).await?;
                    }
                    send.finish()?;
                    let sent = start.elapsed();
                    tokio::time::timeout(limit, sink.wait()).await?;
                    Res::Ok((sent, start.elapsed()))
                })?;
                let (got, wrong) = srv.events.counts();
                Ok((r.0, r.1, got, wrong))
            }),
        };
        match result {
            Ok((sent, last, got, out_of_order)) => {
                report.wrong("5", sys, out_of_order + (n - got.min(n)));
                let what = format!("{n} events");
                report.add(
                    "5",
                    &format!("{what}: events/s"),
                    l,
                    sys,
                    Some(n as f64 / last.as_secs_f64()),
                    "events/s",
                );
                report.add(
                    "5",
                    &format!("{what}: last received"),
                    l,
                    sys,
                    Some(last.as_secs_f64() * 1e3),
                    "ms",
                );
                report.add(
                    "5",
                    &format!("{what}: last sent"),
                    l,
                    sys,
                    Some(sent.as_secs_f64() * 1e3),
                    "ms",
                );
            }
            Err(e) => report.fail(format!("case 5: {}: {e}", sys.name())),
        }
    }
}

/// Case 6: `streams` concurrent streams on one connection, each a 64-byte echo.
pub(crate) fn case6(sz: &Sizes, report: &mut Report) {
    let layout = Layout::Shared;
    let rts = Runtimes::new(layout);
    let l = layout.name();
    let n = sz.streams;
    let mut systems: Vec<(System, Bulk, Keep)> = Vec::new();
    match start_es(&rts) {
        Ok((s, c)) => systems.push((System::EchoStream, Bulk::EchoStream(c), Box::new(s))),
        Err(e) => report.fail(format!("case 6: EchoStream did not start: {e}")),
    }
    match start_quinn(&rts) {
        Ok((s, ep, c)) => systems.push((System::Quinn, Bulk::Quinn(c), Box::new((s, ep)))),
        Err(e) => report.fail(format!("case 6: raw quinn did not start: {e}")),
    }
    let idx: Vec<usize> = (0..systems.len()).collect();
    let mut acc: BTreeMap<System, (Duration, i64, u64, u32)> = BTreeMap::new();
    let rounds = sz.rounds.min(2);
    for round in 0..rounds {
        for i in rotated(&idx, round) {
            let (sys, handle, _) = &systems[i];
            let handle = handle.clone();
            // Counting is on while timing here (the peak needs it); both
            // systems pay the same few atomic updates per allocation.
            alloc::set_counting(true);
            let base = alloc::reset_peak();
            let r = run_on(rts.client(), async move {
                let p = payload(64);
                let start = Instant::now();
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        let (h, p) = (handle.clone(), p.clone());
                        tokio::spawn(async move {
                            let back = match h {
                                Bulk::EchoStream(c) => {
                                    let s = c.open_stream("echo").await?;
                                    s.write_chunk(p.clone()).await?;
                                    s.write_eof().await?;
                                    let back = s.read_to_end().await?;
                                    s.close().await?;
                                    Bytes::from(back)
                                }
                                Bulk::Quinn(conn) => quic::echo(&conn, &p).await?,
                            };
                            Res::Ok(u64::from(back != p))
                        })
                    })
                    .collect();
                let mut wrong = 0;
                for t in tasks {
                    wrong += t.await??;
                }
                Res::Ok((start.elapsed(), wrong))
            });
            let peak = alloc::total_peak() - base;
            alloc::set_counting(false);
            match r {
                Ok((took, wrong)) => {
                    let a = acc.entry(*sys).or_default();
                    a.0 += took;
                    a.1 = a.1.max(peak);
                    a.2 += wrong;
                    a.3 += 1;
                }
                Err(e) => report.fail(format!("case 6: {}: {e}", sys.name())),
            }
        }
    }
    for (sys, (took, peak, wrong, runs)) in acc {
        report.wrong("6", sys, wrong);
        let what = format!("{n} concurrent echo streams");
        report.add(
            "6",
            &format!("{what}: total time"),
            l,
            sys,
            Some(took.as_secs_f64() * 1e3 / f64::from(runs)),
            "ms",
        );
        report.add(
            "6",
            &format!("{what}: peak heap, both sides"),
            l,
            sys,
            Some(peak as f64 / MIB),
            "MiB",
        );
    }
}

/// Case 7: `idle_conns` idle connections to one server: the server's heap
/// per connection and the time to establish them (16 handshakes in flight).
/// Split layout, so the server's heap is its runtime threads' allocations.
///
/// The clients are light on both systems: connections on one shared quinn
/// endpoint (for EchoStream, with the hello/welcome done by hand, see
/// [`es::hello_connect`]). What a real `RpcClient` costs on the client side
/// is measured separately on a smaller number.
pub(crate) fn case7(sz: &Sizes, report: &mut Report) {
    let layout = Layout::Split;
    let l = layout.name();
    let n = sz.idle_conns;
    const IN_FLIGHT: usize = 16;
    for sys in quic_systems(sz) {
        let rts = Runtimes::new(layout);
        alloc::set_counting(true);
        let r: Res<(Duration, i64, u64)> = (|| {
            let (addr, fp, keep): (_, _, Keep) = match sys {
                System::EchoStream => {
                    let srv = run_on(rts.server(), es::serve())?;
                    let addr = srv.addr.parse::<std::net::SocketAddr>()?;
                    (addr, srv.fingerprint, Box::new(srv))
                }
                _ => {
                    let srv = run_on(rts.server(), quic::serve(false))?;
                    (srv.addr, srv.fingerprint, Box::new(srv))
                }
            };
            std::thread::sleep(Duration::from_millis(100));
            let s0 = alloc::side(Side::Server).live;
            let (conns, took) = run_on(rts.client(), async move {
                let ep = quic::client_endpoint()?;
                let config = quic::client_config(fp, quic::Resume::Default)?;
                let start = Instant::now();
                let conns: Vec<Keep> = futures::stream::iter(0..n)
                    .map(|_| {
                        let (ep, config) = (ep.clone(), config.clone());
                        async move {
                            let c: Keep = match sys {
                                System::EchoStream => Box::new(es::hello_connect(&ep, config, addr).await?),
                                _ => Box::new(ep.connect_with(config, addr, "localhost")?.await?),
                            };
                            Res::Ok(c)
                        }
                    })
                    .buffer_unordered(IN_FLIGHT)
                    .try_collect()
                    .await?;
                Res::Ok(((ep, conns), start.elapsed()))
            })?;
            // Let handshake leftovers (tickets, probes, hello buffers) settle.
            std::thread::sleep(Duration::from_millis(1000));
            let server = alloc::side(Side::Server).live - s0;
            let held = match keep.downcast_ref::<es::EsServer>() {
                Some(srv) => srv.handle.connection_count() as u64,
                None => keep
                    .downcast_ref::<quic::QuinnServer>()
                    .map_or(0, |srv| srv.connections.load(Relaxed)),
            };
            run_on(rts.client(), async move { drop(conns) });
            drop(keep);
            Ok((took, server, held))
        })();
        alloc::set_counting(false);
        match r {
            Ok((took, server, held)) => {
                report.wrong("7", sys, (n as u64).saturating_sub(held));
                let what = format!("{n} idle connections");
                let per = Some(server as f64 / n as f64 / 1024.0);
                report.add(
                    "7",
                    &format!("{what}: server heap per connection"),
                    l,
                    sys,
                    per,
                    "KiB",
                );
                report.add(
                    "7",
                    &format!("{what}: time to establish"),
                    l,
                    sys,
                    Some(took.as_secs_f64()),
                    "s",
                );
            }
            Err(e) => report.fail(format!("case 7: {}: {e}", sys.name())),
        }
        drop(rts);
    }
    rpc_client_heap(sz, report);
}

/// Heap of one real `RpcClient`, on the client side, averaged over a few idle clients made
/// by separate `connect` calls (they share one UDP endpoint per runtime: issue 24 item 3).
fn rpc_client_heap(sz: &Sizes, report: &mut Report) {
    let layout = Layout::Split;
    let m = sz.idle_conns.min(100);
    let rts = Runtimes::new(layout);
    alloc::set_counting(true);
    let r: Res<(i64, usize)> = (|| {
        let srv = run_on(rts.server(), es::serve())?;
        let (addr, fp) = (srv.addr.clone(), srv.fingerprint);
        std::thread::sleep(Duration::from_millis(100));
        let c0 = alloc::side(Side::Client).live;
        let clients = run_on(rts.client(), async move {
            let mut clients = Vec::with_capacity(m);
            for _ in 0..m {
                clients.push(es::connect(&addr, fp).await?);
            }
            Res::Ok(clients)
        })?;
        std::thread::sleep(Duration::from_millis(500));
        let c = alloc::side(Side::Client).live - c0;
        let held = srv.handle.connection_count();
        run_on(rts.client(), async move { drop(clients) });
        drop(srv);
        Ok((c, held))
    })();
    alloc::set_counting(false);
    match r {
        Ok((client, held)) => {
            report.wrong("7", System::EchoStream, (m - held.min(m)) as u64);
            report.add_noted(
                "7",
                &format!("{m} idle RpcClients: client heap per client"),
                layout.name(),
                System::EchoStream,
                Some(client as f64 / m as f64 / 1024.0),
                "KiB",
                Some("separate RpcClient::connect calls share one quinn endpoint per runtime".into()),
            );
        }
        Err(e) => report.fail(format!("case 7 (RpcClient heap): {e}")),
    }
}

/// `a / b` when both were measured (and `b` is not zero).
fn quotient(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Case 8 row: full handshakes from one kept builder (its socket reused).
const FULL_KEPT: &str = "connect + first call, full handshake, builder kept: p50";

/// Samples and checks of case 8.
#[derive(Debug, Default)]
struct Connects {
    es_full: Samples,
    es_full_kept: Samples,
    es_connect: Samples,
    es_zero: Samples,
    q_full: Samples,
    q_new_ep: Samples,
    q_zero: Samples,
    accepted: u64,
    wrong_es: u64,
    wrong_q: u64,
}

/// Case 8: new connection + first 64-byte call, p50; full handshakes, and
/// 0-RTT resumption for both.
pub(crate) fn case8(sz: &Sizes, report: &mut Report) {
    let layout = Layout::Shared;
    let rts = Runtimes::new(layout);
    let l = layout.name();
    let k = sz.handshakes;
    let es_srv = match run_on(rts.server(), es::serve()) {
        Ok(s) => s,
        Err(e) => return report.fail(format!("case 8: EchoStream did not start: {e}")),
    };
    let q_srv = match run_on(rts.server(), quic::serve(false)) {
        Ok(s) => s,
        Err(e) => return report.fail(format!("case 8: raw quinn did not start: {e}")),
    };
    let z_srv = match run_on(rts.server(), quic::serve(true)) {
        Ok(s) => s,
        Err(e) => return report.fail(format!("case 8: raw quinn (0-RTT) did not start: {e}")),
    };
    let (es_addr, es_fp) = (es_srv.addr.clone(), es_srv.fingerprint);
    let (q_addr, q_fp, z_addr, z_fp) = (q_srv.addr, q_srv.fingerprint, z_srv.addr, z_srv.fingerprint);
    let r = run_on(rts.client(), async move {
        let p = payload(64);
        let ep = quic::client_endpoint()?;
        let full = quic::client_config(q_fp, quic::Resume::Never)?;
        // One configuration (and so one session store) for every 0-RTT connect.
        let zero = quic::client_config(z_fp, quic::Resume::ZeroRtt)?;
        {
            // Prime the session store with a full handshake; keep the
            // connection until the server's tickets have arrived.
            let conn = ep.connect_with(zero.clone(), z_addr, "localhost")?.await?;
            quic::echo(&conn, &p).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            conn.close(0u32.into(), b"primed");
        }
        let mut m = Connects::default();
        for i in 0..k {
            for which in rotated(&[0, 1, 2, 3, 4, 5], i) {
                match which {
                    0 => {
                        let t = Instant::now();
                        let c = es::connect(&es_addr, es_fp).await?;
                        m.es_connect.0.push(ns(t.elapsed()));
                        let back: Bytes = c.request("echo", &p).await?;
                        m.es_full.0.push(ns(t.elapsed()));
                        m.wrong_es += u64::from(back != p);
                        drop(c);
                    }
                    1 => {
                        let t = Instant::now();
                        let conn = ep.connect_with(full.clone(), q_addr, "localhost")?.await?;
                        let back = quic::echo(&conn, &p).await?;
                        m.q_full.0.push(ns(t.elapsed()));
                        m.wrong_q += u64::from(back != p);
                        conn.close(0u32.into(), b"done");
                    }
                    2 => {
                        let t = Instant::now();
                        let connecting = ep.connect_with(zero.clone(), z_addr, "localhost")?;
                        let (conn, early) = match connecting.into_0rtt() {
                            Ok((conn, accepted)) => (conn, Some(accepted)),
                            Err(connecting) => (connecting.await?, None),
                        };
                        let back = quic::echo(&conn, &p).await?;
                        m.q_zero.0.push(ns(t.elapsed()));
                        m.wrong_q += u64::from(back != p);
                        if let Some(a) = early {
                            m.accepted += u64::from(a.await);
                        }
                        // The next 0-RTT connect needs this connection's tickets.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        conn.close(0u32.into(), b"done");
                    }
                    3 => {
                        // Like an RpcClient: a new UDP endpoint per connection.
                        let t = Instant::now();
                        let own = quic::client_endpoint()?;
                        let conn = own.connect_with(full.clone(), q_addr, "localhost")?.await?;
                        let back = quic::echo(&conn, &p).await?;
                        m.q_new_ep.0.push(ns(t.elapsed()));
                        m.wrong_q += u64::from(back != p);
                        conn.close(0u32.into(), b"done");
                    }
                    5 => m
                        .es_full_kept
                        .0
                        .push(ns(es::full_connect_kept(&es_addr, es_fp).await?)),
                    _ => m
                        .es_zero
                        .0
                        .push(ns(es::echostream_zero_rtt_connect(&es_addr, es_fp).await?)),
                }
            }
        }
        Res::Ok(m)
    });
    match r {
        Ok(mut m) => {
            report.wrong("8", System::EchoStream, m.wrong_es);
            report.wrong("8", System::Quinn, m.wrong_q);
            let full = "connect + first call, full handshake: p50";
            let zero = "connect + first call, 0-RTT: p50";
            report.add("8", full, l, System::EchoStream, m.es_full.pct_us(0.5), "µs");
            report.add("8", full, l, System::Quinn, m.q_full.pct_us(0.5), "µs");
            report.add(
                "8",
                FULL_KEPT,
                l,
                System::EchoStream,
                m.es_full_kept.pct_us(0.5),
                "µs",
            );
            let own = "connect + first call, full handshake, new UDP endpoint each: p50";
            report.add("8", own, l, System::Quinn, m.q_new_ep.pct_us(0.5), "µs");
            let connect = "RpcClient::connect alone (endpoint, handshake, hello): p50";
            report.add(
                "8",
                connect,
                l,
                System::EchoStream,
                m.es_connect.pct_us(0.5),
                "µs",
            );
            report.add("8", zero, l, System::EchoStream, m.es_zero.pct_us(0.5), "µs");
            report.add_noted(
                "8",
                zero,
                l,
                System::Quinn,
                m.q_zero.pct_us(0.5),
                "µs",
                Some(format!(
                    "early data accepted on {} of {k} connections",
                    m.accepted
                )),
            );
        }
        Err(e) => report.fail(format!("case 8: {e}")),
    }
    drop((es_srv, q_srv, z_srv));
}

/// Case 9: sequential small calls while a bulk stream runs on the same connection.
pub(crate) fn case9(sz: &Sizes, layout: Layout, report: &mut Report) {
    let rts = Runtimes::new(layout);
    let l = layout.name();
    let mut systems: Vec<(System, Bulk, Client, Keep)> = Vec::new();
    match start_es(&rts) {
        Ok((s, c)) => systems.push((
            System::EchoStream,
            Bulk::EchoStream(c.clone()),
            Client::EchoStream(c),
            Box::new(s),
        )),
        Err(e) => report.fail(format!("case 9: EchoStream did not start: {e}")),
    }
    match start_quinn(&rts) {
        Ok((s, ep, c)) => systems.push((
            System::Quinn,
            Bulk::Quinn(c.clone()),
            Client::Quinn(c),
            Box::new((s, ep)),
        )),
        Err(e) => report.fail(format!("case 9: raw quinn did not start: {e}")),
    }
    let idx: Vec<usize> = (0..systems.len()).collect();
    let mut acc: BTreeMap<System, (Samples, u64, Duration, u64, Samples)> = BTreeMap::new();
    let slice = sz.mixed_slice;
    for round in 0..sz.rounds.min(2) {
        for i in rotated(&idx, round) {
            let (sys, bulk, client, _) = &systems[i];
            let (bulk, client) = (bulk.clone(), client.clone());
            let r = run_on(rts.client(), async move {
                let p = payload(64);
                let mut c = client;
                let mut wrong = 0;
                // The same calls without the bulk stream, on this connection just before: a
                // baseline taken in the same process state as the figure it is set against.
                let mut alone = Vec::new();
                let start = Instant::now();
                while start.elapsed() < slice / 2 {
                    let t = Instant::now();
                    let back = c.echo(&p).await?;
                    alone.push(ns(t.elapsed()));
                    wrong += u64::from(back != p);
                }
                let stop = Arc::new(AtomicBool::new(false));
                let writer = tokio::spawn(bulk.run(u64::MAX, Some(stop.clone())));
                // Let the bulk stream reach full speed first.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut lat = Vec::new();
                let start = Instant::now();
                while start.elapsed() < slice {
                    let t = Instant::now();
                    let back = c.echo(&p).await?;
                    lat.push(ns(t.elapsed()));
                    wrong += u64::from(back != p);
                }
                stop.store(true, Relaxed);
                let (sent, counted, took) = writer.await??;
                wrong += u64::from(sent != counted);
                Res::Ok((lat, sent, took, wrong, alone))
            });
            match r {
                Ok((lat, sent, took, wrong, alone)) => {
                    let a = acc.entry(*sys).or_default();
                    a.0 .0.extend(lat);
                    a.1 += sent;
                    a.2 += took;
                    a.3 += wrong;
                    a.4 .0.extend(alone);
                }
                Err(e) => report.fail(format!("case 9: {}: {e}", sys.name())),
            }
        }
    }
    for (sys, (mut lat, bytes, took, wrong, mut alone)) in acc {
        report.wrong("9", sys, wrong);
        let p99 = lat.pct_us(0.99);
        let alone_p99 = alone.pct_us(0.99);
        report.add("9", "small-call p50 during bulk", l, sys, lat.pct_us(0.50), "µs");
        report.add("9", "small-call p99 during bulk", l, sys, p99, "µs");
        let base = report.get("1", "p99", l, sys);
        let ratio = match (p99, base) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        report.add("9", "p99 during bulk / case 1 p99", l, sys, ratio, "×");
        report.add(
            "9",
            "small-call p99 just before, no bulk",
            l,
            sys,
            alone_p99,
            "µs",
        );
        let in_place = match (p99, alone_p99) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        report.add("9", "p99 during bulk / p99 just before", l, sys, in_place, "×");
        report.add(
            "9",
            "bulk stream meanwhile",
            l,
            sys,
            Some(bytes as f64 / 1e6 / took.as_secs_f64()),
            "MB/s",
        );
    }
}

/// Bytes and allocations per sequential unary 64-byte call, on each side.
/// Split layout: each side's threads are its own runtime's.
pub(crate) fn allocations(sz: &Sizes, report: &mut Report) {
    let layout = Layout::Split;
    let l = layout.name();
    let n = sz.alloc_calls;
    for sys in sz.systems.iter().copied() {
        let rts = Runtimes::new(layout);
        let (client, keep) = match start_unary(sys, &rts) {
            Ok(x) => x,
            Err(e) => {
                report.fail(format!("allocations: {} did not start: {e}", sys.name()));
                continue;
            }
        };
        let p = payload(64);
        let _ = run_on(rts.client(), sequential(client.clone(), p.clone(), sz.warmup));
        alloc::set_counting(true);
        let (s0, c0) = (alloc::side(Side::Server), alloc::side(Side::Client));
        let r = run_on(rts.client(), sequential(client.clone(), p, n));
        let (s1, c1) = (alloc::side(Side::Server), alloc::side(Side::Client));
        alloc::set_counting(false);
        match r {
            Ok(run) => {
                report.wrong("alloc", sys, run.wrong);
                let per = |a: u64, b: u64| Some((b - a) as f64 / n as f64);
                report.add(
                    "alloc",
                    "allocations per call, server",
                    l,
                    sys,
                    per(s0.allocs, s1.allocs),
                    "allocs",
                );
                report.add(
                    "alloc",
                    "allocations per call, client",
                    l,
                    sys,
                    per(c0.allocs, c1.allocs),
                    "allocs",
                );
                report.add(
                    "alloc",
                    "bytes allocated per call, server",
                    l,
                    sys,
                    per(s0.bytes, s1.bytes),
                    "B",
                );
                report.add(
                    "alloc",
                    "bytes allocated per call, client",
                    l,
                    sys,
                    per(c0.bytes, c1.bytes),
                    "B",
                );
            }
            Err(e) => report.fail(format!("allocations: {}: {e}", sys.name())),
        }
        run_on(rts.client(), async move { drop(client) });
        drop(keep);
    }
}

/// Evaluates the goals of issue 8 on the collected figures.
pub(crate) fn goals(report: &mut Report) {
    for layout in [Layout::Shared, Layout::Split] {
        let l = layout.name();
        report.goal_ratio("1", "p50 ≤ 1.0 × raw quinn", "p50", l, System::Quinn, 1.0, true);
        report.goal_ratio("1", "p50 ≤ 1.1 × tarpc", "p50", l, System::Tarpc, 1.1, true);
        for callers in [64, 256] {
            let m = format!("calls/s, {callers} callers");
            report.goal_ratio(
                "2",
                &format!("{m} ≥ 1.0 × tarpc"),
                &m,
                l,
                System::Tarpc,
                1.0,
                false,
            );
            report.goal_ratio(
                "2",
                &format!("{m} ≥ 2 × raw quinn"),
                &m,
                l,
                System::Quinn,
                2.0,
                false,
            );
            report.goal_ratio(
                "2",
                &format!("{m} ≥ 4 × tonic h2c"),
                &m,
                l,
                System::Tonic,
                4.0,
                false,
            );
        }
    }
    // Drop goals of layouts or cases that did not run.
    report.goals.retain(|g| g.ratio.is_some());
    let split = Layout::Split.name();
    let shared = Layout::Shared.name();
    if let Some(m) = report
        .figures
        .iter()
        .find(|f| f.case == "4" && f.unit == "MB/s")
        .map(|f| f.metric.clone())
    {
        report.goal_ratio(
            "4",
            "stream MB/s ≥ 0.95 × raw quinn",
            &m,
            split,
            System::Quinn,
            0.95,
            false,
        );
    }
    if let Some(f) = report
        .figures
        .iter()
        .find(|f| f.case == "6" && f.system == System::EchoStream.name() && f.unit == "ms")
    {
        let done = f.value.is_some() && report.wrong_answers.get("6/EchoStream") == Some(&0);
        let layout = f.layout.clone();
        let goal = format!(
            "{} completes (1 = yes)",
            f.metric.trim_end_matches(": total time")
        );
        report.push_goal("6", &goal, &layout, Some(f64::from(u8::from(done))), 1.0, false);
    }
    if let Some(f) = report
        .figures
        .iter()
        .find(|f| f.case == "7" && f.system == System::EchoStream.name() && f.metric.contains("server heap"))
    {
        let (v, layout) = (f.value, f.layout.clone());
        report.push_goal(
            "7",
            "server heap per idle connection ≤ 64 KiB (ratio = figure / 64 KiB)",
            &layout,
            v.map(|v| v / 64.0),
            1.0,
            true,
        );
    }
    if let Some(f) = report.figures.iter().find(|f| {
        f.case == "7" && f.system == System::EchoStream.name() && f.metric.contains("idle RpcClients")
    }) {
        let (v, layout) = (f.value, f.layout.clone());
        report.push_goal(
            "7",
            "client heap per idle RpcClient ≤ 64 KiB (ratio = figure / 64 KiB)",
            &layout,
            v.map(|v| v / 64.0),
            1.0,
            true,
        );
    }
    let full = "connect + first call, full handshake: p50";
    let zero = "connect + first call, 0-RTT: p50";
    if report.get("8", full, shared, System::EchoStream).is_some() {
        // Like for like: both from a builder kept across connections (the
        // UDP socket reused), one with a full handshake, one with 0-RTT.
        let ratio = quotient(
            report.get("8", zero, shared, System::EchoStream),
            report.get("8", FULL_KEPT, shared, System::EchoStream),
        );
        report.push_goal(
            "8",
            "0-RTT connect + call ≤ 0.75 × full handshake, builder kept (EchoStream)",
            shared,
            ratio,
            0.75,
            true,
        );
        let q = quotient(
            report.get("8", zero, shared, System::Quinn),
            report.get("8", full, shared, System::Quinn),
        );
        report.push_goal(
            "8",
            "the same for raw quinn (reference, not a goal)",
            shared,
            q,
            0.75,
            true,
        );
    }
    for l in [shared, split] {
        let r = report.get("9", "p99 during bulk / case 1 p99", l, System::EchoStream);
        if r.is_some() {
            let goal = "small-call p99 during bulk ≤ 2 × case 1 p99 (EchoStream alone)";
            report.push_goal("9", goal, l, r, 2.0, true);
        }
    }
}
