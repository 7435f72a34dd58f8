//! `echostream-bench`: EchoStream side by side with raw quinn, tonic (h2c
//! and TLS) and tarpc, in one process, over loopback (issue 8).
//!
//! `cargo run --release -p echostream-bench -- --quick` prints one table
//! (a figure per system and EchoStream's ratio to each baseline, then the
//! issue's goals with ✓/✗) and writes the same figures as JSON.
//!
//! # Layout
//! - `config`: command line and the sizes of `--smoke`, `--quick`, full.
//! - `rt`: runtime layouts (one shared 2-worker runtime, or one runtime per side).
//! - `alloc`: the counting global allocator, attributing bytes to a side.
//! - `cpu`: CPU time per side from the runtime threads' schedstat.
//! - `systems`: EchoStream and the baselines: servers and clients.
//! - `cases`: the nine cases and the allocation count, and the goals.
//! - `report`: figures, table, JSON.
//! - `soak`: `--soak DURATION`, a long mixed load that checks for leaks.
//! - `balanced`: `--balanced [DURATION]`, the balanced client against one plain connection.
//! - `failover`: `--failover [DURATION]`, the balanced client through an instance killed and
//!   restarted.

mod alloc;
mod balanced;
mod cases;
mod config;
mod cpu;
mod failover;
mod report;
mod rt;
mod soak;
mod stats;
mod systems;

use config::{Config, Mode, Sizes, USAGE};
use report::Report;
use std::time::Instant;

/// Error type of the benchmark's fallible steps.
pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--serve") => {
            serve(&args.next().unwrap_or_else(|| "127.0.0.1:5000".to_owned()));
            return;
        }
        Some("--balanced") => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let duration = match args.next().map(|d| config::parse_duration(&d)) {
                None => std::time::Duration::from_secs(3),
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    eprintln!("{e}\n");
                    eprint!("{USAGE}");
                    std::process::exit(2);
                }
            };
            std::process::exit(if balanced::run(duration) { 0 } else { 1 });
        }
        Some("--failover") => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let duration = match args.next().map(|d| config::parse_duration(&d)) {
                None => std::time::Duration::from_secs(20),
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    eprintln!("{e}\n");
                    eprint!("{USAGE}");
                    std::process::exit(2);
                }
            };
            std::process::exit(if failover::run_failover(duration) { 0 } else { 1 });
        }
        Some("--soak") => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let parsed = args
                .next()
                .ok_or_else(|| "--soak needs a duration (e.g. 90s, 10m)".to_owned())
                .and_then(|d| config::parse_duration(&d));
            let every = match args.next().as_deref() {
                None => Ok(None),
                Some("--every") => args
                    .next()
                    .ok_or_else(|| "--every needs a duration".to_owned())
                    .and_then(|d| config::parse_duration(&d))
                    .map(Some),
                Some(other) => Err(format!("unknown argument `{other}` after --soak")),
            };
            match (parsed, every) {
                (Ok(duration), Ok(every)) => {
                    // Ten samples at least, one a minute at most.
                    let every = every.unwrap_or_else(|| {
                        (duration / 10).clamp(
                            std::time::Duration::from_secs(1),
                            std::time::Duration::from_secs(60),
                        )
                    });
                    std::process::exit(if soak::run(duration, every) { 0 } else { 1 });
                }
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("{e}\n");
                    eprint!("{USAGE}");
                    std::process::exit(2);
                }
            }
        }
        _ => {}
    }
    let cfg = match Config::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}\n");
            }
            eprint!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    // tonic's TLS server asks rustls for the process-wide provider; make it
    // the one EchoStream uses (aws-lc-rs) rather than leave it to features.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if cfg.prometheus {
        // Before any server or client exists: per-method handles are registered at build.
        if let Err(e) = install_prometheus(cfg.prometheus_sizes) {
            eprintln!("cannot install the Prometheus recorder: {e}");
            std::process::exit(1);
        }
    }
    let report = run(&cfg);
    println!("{}", report.table());
    if let Some(dir) = cfg.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(&report) {
        Ok(text) => match std::fs::write(&cfg.json, text) {
            Ok(()) => eprintln!("JSON written to {}", cfg.json.display()),
            Err(e) => eprintln!("cannot write {}: {e}", cfg.json.display()),
        },
        Err(e) => eprintln!("cannot encode the JSON: {e}"),
    }
    if !report.failures.is_empty() || report.wrong_answers.values().any(|&n| n > 0) {
        std::process::exit(1);
    }
}

/// `--serve ADDR`: only the EchoStream benchmark server (the `echo` method of cases 1 and 2,
/// the `bench.event` listener, the `echo` and `sink` streams) on one runtime worker, as the
/// server side of the split layout, until the process is stopped.
fn serve(bind: &str) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        match systems::es::serve_on(bind).await {
            Ok(server) => {
                println!("{} sha256:{}", server.addr, server.fingerprint);
                std::future::pending::<()>().await;
            }
            Err(e) => {
                eprintln!("cannot serve on {bind}: {e}");
                std::process::exit(1);
            }
        }
    });
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(cfg: &Config) -> Report {
    let sz = Sizes {
        systems: cfg.systems.iter().copied().collect(),
        ..Sizes::of(cfg.mode)
    };
    let mut report = Report::default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meta = [
        ("mode", serde_json::json!(cfg.mode.name())),
        ("cases", serde_json::json!(cfg.only)),
        ("cores", serde_json::json!(cores)),
        ("loadavg_start", serde_json::json!(load())),
        (
            "unix_time",
            serde_json::json!(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)),
        ),
        ("debug_build", serde_json::json!(cfg!(debug_assertions))),
        (
            "systems",
            serde_json::json!("EchoStream (this tree), raw quinn 0.11 + rustls 0.23 aws-lc-rs, tonic 0.13 (prost), tarpc 0.38 (bincode over TCP)"),
        ),
    ];
    for (k, v) in meta {
        report.meta.insert(k.into(), v);
    }
    let started = Instant::now();
    let want = |c: &str| cfg.only.contains(c);
    let step = |name: &str| eprintln!("[{:6.1} s] {name}", started.elapsed().as_secs_f64());
    if cfg.mode == Mode::Full {
        eprintln!("full run: about 4 minutes on 2 cores; --quick takes about 1");
    }
    for &layout in &cfg.layouts {
        if want("1") {
            step(&format!("case 1: sequential 64 B echo ({})", layout.name()));
            cases::case1(&sz, layout, &mut report);
        }
        if want("2") {
            step(&format!(
                "case 2: 64 and 256 concurrent callers ({})",
                layout.name()
            ));
            cases::case2(&sz, layout, &mut report);
        }
    }
    if want("3") {
        step("case 3: large payloads (1 MiB with 8 and 64 callers, 256 KiB with 256)");
        cases::case3(&sz, &mut report);
    }
    if want("4") {
        step("case 4: one bulk stream");
        cases::case4(&sz, &mut report);
    }
    if want("5") {
        step("case 5: one-way events");
        cases::case5(&sz, &mut report);
    }
    if want("6") {
        step("case 6: concurrent streams");
        cases::case6(&sz, &mut report);
    }
    if want("7") {
        step("case 7: idle connections");
        cases::case7(&sz, &mut report);
    }
    if want("8") {
        step("case 8: connect + first call");
        cases::case8(&sz, &mut report);
    }
    if want("9") {
        for &layout in &cfg.layouts {
            step(&format!(
                "case 9: small calls during a bulk stream ({})",
                layout.name()
            ));
            cases::case9(&sz, layout, &mut report);
        }
    }
    if want("alloc") {
        step("allocations per call");
        cases::allocations(&sz, &mut report);
    }
    cases::goals(&mut report);
    step("done");
    report
        .meta
        .insert("loadavg_end".into(), serde_json::json!(load()));
    report.meta.insert(
        "seconds".into(),
        serde_json::json!(started.elapsed().as_secs_f64()),
    );
    report
}

/// Installs the Prometheus recorder as a deployment would (`examples/metrics.rs`): bucketed
/// histograms and a periodic upkeep. Without upkeep the exporter keeps every histogram sample
/// until the next scrape, and the bench would measure that growing buffer, not the recording.
fn install_prometheus(sizes: bool) -> Result<(), Box<dyn std::error::Error>> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    const DURATION_BUCKETS: &[f64] = &[
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
    ];
    const SIZE_BUCKETS: &[f64] = &[16.0, 64.0, 256.0, 1024.0, 16384.0, 262144.0, 1048576.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration".into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("size".into()), SIZE_BUCKETS)?
        .install_recorder()?;
    echostream::metrics::describe();
    echostream::metrics::record_size_histograms(sizes);
    // The exporter's own HTTP listener runs upkeep every 5 s; once a second keeps the
    // buffered samples small, as a scrape every few seconds would.
    std::thread::Builder::new()
        .name("prometheus-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            handle.run_upkeep();
        })?;
    Ok(())
}
