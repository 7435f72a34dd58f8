//! `ping`: round trips on the control stream (`PING`/`PONG` frames, no handler runs) like
//! `ping(8)`, and the clock offset, error bound and drift from clock sync.

use super::ctrl_c;
use crate::args::{seconds, PingArgs};
use crate::connect::connect;
use crate::exit::{Class, Failure};
use crate::output::{self, millis};
use echostream::Error;
use std::time::Duration;

pub(crate) async fn run(a: PingArgs, json: bool) -> Result<(), Failure> {
    let interval = seconds(a.interval).ok_or_else(|| {
        Failure::new(
            Class::Usage,
            format!("-i {} is not a positive number of seconds", a.interval),
        )
    })?;
    let wait = seconds(a.wait).ok_or_else(|| {
        Failure::new(
            Class::Usage,
            format!("-W {} is not a positive number of seconds", a.wait),
        )
    })?;
    let client = connect(&a.target).await?;
    let server = client.remote_addr();
    // The first use starts the clock-sync exchange, which runs beside the pings.
    let clock = client.clock();
    // The health service's word, when the server has one.
    let health = echostream::Caller::health(&client, "").await.ok();
    if !json {
        let health_text = health.map_or("not offered".to_owned(), |h| h.to_string());
        println!(
            "PING {} ({server}) over QUIC, health {health_text}",
            a.target.target
        );
    }
    let mut rtts: Vec<Duration> = Vec::new();
    let mut sent = 0u64;
    let mut failure = None;
    let mut ticker = tokio::time::interval(interval);
    loop {
        if a.count.is_some_and(|n| sent >= n) {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = ctrl_c() => break,
        }
        sent += 1;
        let seq = sent;
        let answer = tokio::select! {
            answer = client.ping(wait) => answer,
            _ = ctrl_c() => break,
        };
        match answer {
            Ok(rtt) => {
                rtts.push(rtt);
                if json {
                    output::json_line(&serde_json::json!({ "seq": seq, "rtt_ms": rtt.as_secs_f64() * 1e3 }));
                } else {
                    println!("reply from {server}: seq={seq} time={}", millis(rtt));
                }
            }
            Err(Error::Timeout { .. }) => {
                if json {
                    output::json_line(&serde_json::json!({ "seq": seq, "timeout": true }));
                } else {
                    println!(
                        "no reply from {server}: seq={seq} (waited {:.1} s)",
                        wait.as_secs_f64()
                    );
                }
            }
            Err(e) => {
                failure = Some(Failure::from(e));
                break;
            }
        }
    }
    // A few clock samples arrive within the first second; do not wait long for more.
    let _ = clock.synced(3, Duration::from_secs(2)).await;
    let received = rtts.len() as u64;
    let stats = Stats::of(&rtts);
    let clock_json = serde_json::json!({
        "offset_ms": clock.offset_nanos().map(|n| n as f64 / 1e6),
        "error_bound_ms": clock.error_bound().map(|d| d.as_secs_f64() * 1e3),
        "drift_ppm": clock.drift_ppm(),
        "best_rtt_ms": clock.rtt().map(|d| d.as_secs_f64() * 1e3),
    });
    if json {
        output::json_line(&serde_json::json!({
            "target": a.target.target,
            "address": server.to_string(),
            "sent": sent,
            "received": received,
            "rtt_ms": stats.as_ref().map(|s| serde_json::json!({
                "min": s.min * 1e3, "avg": s.avg * 1e3, "max": s.max * 1e3, "mdev": s.mdev * 1e3,
            })),
            "clock": clock_json,
            "health": health,
        }));
    } else {
        println!("--- {} ping statistics ---", a.target.target);
        let loss = if sent == 0 {
            0.0
        } else {
            100.0 * (sent - received) as f64 / sent as f64
        };
        println!("{sent} pings sent, {received} answered, {loss:.0}% lost");
        if let Some(s) = &stats {
            println!(
                "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
                s.min * 1e3,
                s.avg * 1e3,
                s.max * 1e3,
                s.mdev * 1e3
            );
        }
        match (clock.offset_nanos(), clock.error_bound()) {
            (Some(offset), Some(bound)) => println!(
                "clock: server - local = {:+.3} ms ± {}, drift {:+.2} ppm",
                offset as f64 / 1e6,
                millis(bound),
                clock.drift_ppm().unwrap_or(0.0)
            ),
            _ => println!("clock: not synchronised yet (too few samples)"),
        }
    }
    client.close().await;
    if let Some(f) = failure {
        return Err(f);
    }
    if sent > 0 && received == 0 {
        return Err(Failure::new(
            Class::Timeout,
            format!("no answer to {sent} pings from {server}"),
        ));
    }
    Ok(())
}

/// min/avg/max/mdev in seconds, as `ping` prints them.
struct Stats {
    min: f64,
    avg: f64,
    max: f64,
    mdev: f64,
}

impl Stats {
    fn of(rtts: &[Duration]) -> Option<Stats> {
        if rtts.is_empty() {
            return None;
        }
        let xs: Vec<f64> = rtts.iter().map(Duration::as_secs_f64).collect();
        let n = xs.len() as f64;
        let avg = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - avg).powi(2)).sum::<f64>() / n;
        Some(Stats {
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            avg,
            max: xs.iter().copied().fold(0.0, f64::max),
            mdev: var.sqrt(),
        })
    }
}
