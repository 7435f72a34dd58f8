//! Command line and the sizes of each mode.

use crate::rt::Layout;
use crate::systems::System;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Tiny sizes: checks that every case runs and answers correctly (the test).
    Smoke,
    /// Under two minutes in release on 2 cores.
    Quick,
    /// The sizes the issue names.
    Full,
}

impl Mode {
    /// Name in the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }
}

/// Sizes of one mode.
#[derive(Clone, Debug)]
pub(crate) struct Sizes {
    /// Rounds over which the systems alternate.
    pub(crate) rounds: usize,
    /// Calls before measuring, per system.
    pub(crate) warmup: usize,
    /// Case 1: sequential calls per system per round.
    pub(crate) seq_calls: usize,
    /// Case 2: time per system per round.
    pub(crate) conc_slice: Duration,
    /// Case 3: time per system per round.
    pub(crate) big_slice: Duration,
    /// Case 4: bytes per stream.
    pub(crate) bulk_bytes: u64,
    /// Case 4: streams per system.
    pub(crate) bulk_rounds: usize,
    /// Case 5: events.
    pub(crate) events: u64,
    /// Case 6: concurrent streams.
    pub(crate) streams: usize,
    /// Case 7: idle connections.
    pub(crate) idle_conns: usize,
    /// Case 8: connects per variant.
    pub(crate) handshakes: usize,
    /// Case 9: time per system per round.
    pub(crate) mixed_slice: Duration,
    /// Calls counted for the allocation figures.
    pub(crate) alloc_calls: usize,
    /// The systems to run (`--systems`; all unless restricted).
    pub(crate) systems: Vec<System>,
}

impl Sizes {
    /// The sizes of `mode`.
    pub(crate) fn of(mode: Mode) -> Self {
        let ms = Duration::from_millis;
        match mode {
            Mode::Smoke => Sizes {
                rounds: 2,
                warmup: 5,
                seq_calls: 20,
                conc_slice: ms(40),
                big_slice: ms(40),
                bulk_bytes: 4 << 20,
                bulk_rounds: 1,
                events: 2_000,
                streams: 200,
                idle_conns: 20,
                handshakes: 3,
                mixed_slice: ms(100),
                alloc_calls: 20,
                systems: System::ALL.to_vec(),
            },
            Mode::Quick => Sizes {
                rounds: 4,
                warmup: 500,
                seq_calls: 3_000,
                conc_slice: ms(400),
                big_slice: ms(400),
                bulk_bytes: 256 << 20,
                bulk_rounds: 2,
                events: 200_000,
                streams: 10_000,
                idle_conns: 2_000,
                handshakes: 100,
                mixed_slice: ms(1000),
                alloc_calls: 2_000,
                systems: System::ALL.to_vec(),
            },
            Mode::Full => Sizes {
                rounds: 5,
                warmup: 2_000,
                seq_calls: 10_000,
                conc_slice: ms(1000),
                big_slice: ms(1000),
                bulk_bytes: 1 << 30,
                bulk_rounds: 2,
                events: 1_000_000,
                streams: 10_000,
                idle_conns: 10_000,
                handshakes: 300,
                mixed_slice: ms(3000),
                alloc_calls: 10_000,
                systems: System::ALL.to_vec(),
            },
        }
    }
}

/// Every case name, in run order.
pub(crate) const CASES: [&str; 10] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "alloc"];

/// A parsed command line.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Run size.
    pub(crate) mode: Mode,
    /// Cases to run.
    pub(crate) only: BTreeSet<String>,
    /// Where the JSON goes.
    pub(crate) json: PathBuf,
    /// Systems to run (for profiling one at a time); the table shows only these.
    pub(crate) systems: BTreeSet<System>,
    /// Runtime layouts for the cases that have two.
    pub(crate) layouts: Vec<Layout>,
    /// Install the Prometheus recorder first (`--prometheus`), so EchoStream's metrics record.
    pub(crate) prometheus: bool,
    /// With `--prometheus-sizes`: the payload size histograms too (opt-in in the library).
    pub(crate) prometheus_sizes: bool,
}

/// Usage text.
pub(crate) const USAGE: &str = "\
echostream-bench: EchoStream side by side with raw quinn, tonic and tarpc (loopback)

USAGE: echostream-bench [--quick | --full | --smoke] [--only CASES] [--systems LIST]
                       [--layout shared|split] [--json PATH]
       echostream-bench --serve ADDR

  --quick        about 1 minute on 2 cores (release build)
  --full         the issue's sizes (default), about 4 minutes
  --smoke        tiny sizes, checks that every case runs (the crate's test)
  --only CASES   comma-separated: 1,2,3,4,5,6,7,8,9,alloc (default: all)
  --systems LIST comma-separated: es,es-typed,quinn,tonic,tonic-tls,tarpc (default: all); for
                 profiling one system (ratios need the baselines)
  --layout L     shared or split: cases 1, 2 and 9 in one layout only (default: both)
  --json PATH    where to write the JSON (default target/echostream-bench.json)
  --prometheus   record EchoStream's metrics into the Prometheus exporter (their cost)
  --prometheus-sizes  the same, with the opt-in payload size histograms
  --serve ADDR   only run the EchoStream bench server on ADDR (for `echostream bench`)
  --soak DURATION [--every D]
                 a long mixed load (calls, events, streams, clients coming and going) that
                 prints heap, RSS, descriptors and tasks and checks they stay flat (90s, 10m)
  --balanced [DURATION]
                 the balanced client (over 1 and 3 instances) against one plain connection:
                 calls/s and client allocations per call, 64 callers, DURATION each (3s),
                 median of three interleaved rounds
  --failover [DURATION]
                 64 callers of a balanced client over three servers for DURATION (20s); one
                 server killed at 25 % and restarted at 60 %: calls per second per instance,
                 failed calls, time back in rotation, spread
";

impl Config {
    /// Parses the arguments after the program name.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut cfg = Config {
            mode: Mode::Full,
            only: CASES.iter().map(|c| c.to_string()).collect(),
            json: PathBuf::from("target/echostream-bench.json"),
            systems: System::ALL.into_iter().collect(),
            layouts: vec![Layout::Shared, Layout::Split],
            prometheus: false,
            prometheus_sizes: false,
        };
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => cfg.mode = Mode::Quick,
                "--full" => cfg.mode = Mode::Full,
                "--smoke" => cfg.mode = Mode::Smoke,
                "--only" => {
                    let list = args.next().ok_or("--only needs a list of cases")?;
                    cfg.only.clear();
                    for c in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                        if !CASES.contains(&c) {
                            return Err(format!("unknown case `{c}` (cases: {})", CASES.join(",")));
                        }
                        cfg.only.insert(c.to_string());
                    }
                }
                "--systems" => {
                    let list = args.next().ok_or("--systems needs a list of systems")?;
                    cfg.systems.clear();
                    for name in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                        let sys = System::ALL.into_iter().find(|s| s.key() == name).ok_or_else(|| {
                            format!(
                                "unknown system `{name}` (systems: es,es-typed,quinn,tonic,tonic-tls,tarpc)"
                            )
                        })?;
                        cfg.systems.insert(sys);
                    }
                }
                "--layout" => {
                    cfg.layouts = match args.next().as_deref() {
                        Some("shared") => vec![Layout::Shared],
                        Some("split") => vec![Layout::Split],
                        _ => return Err("--layout needs `shared` or `split`".into()),
                    }
                }
                "--json" => cfg.json = args.next().ok_or("--json needs a path")?.into(),
                "--prometheus" => cfg.prometheus = true,
                "--prometheus-sizes" => {
                    cfg.prometheus = true;
                    cfg.prometheus_sizes = true;
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        Ok(cfg)
    }
}

/// `90`, `90s`, `10m`, `1h` or `500ms` as a duration.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 90s, 10m)"))?;
    let secs = |s: u64| std::time::Duration::from_secs(s);
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(secs(n)),
        "m" => Ok(secs(n * 60)),
        "h" => Ok(secs(n * 3600)),
        _ => Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    }
}
