//! The metrics example end to end: it installs the Prometheus exporter on a loopback port,
//! serves calls over real QUIC, and this test scrapes `/metrics` over HTTP and checks that the
//! counters and histogram buckets moved by exactly the calls made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// `target/<profile>/examples/metrics`, built by `cargo test` with the other examples.
fn example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path = dir.join("examples").join("metrics");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build --examples`)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (head, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        out.push((name.to_owned(), labels, value.parse().expect("a number")));
    }
    out
}

fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

fn scrape(addr: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect to the metrics port");
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[test]
fn the_metrics_example_serves_counters_and_buckets_that_match_the_calls() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(example())
        .args(["--metrics-addr", &addr, "--calls", "12"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("\"calls\": 12"), "{line}");

    let deadline = Instant::now() + WAIT;
    let samples = loop {
        let samples = parse(&scrape(&addr));
        if value(&samples, "rpc_server_requests", &[("rpc_method", "math.add")]) == Some(12.0) {
            break samples;
        }
        assert!(Instant::now() < deadline, "counters never reached the calls made");
        std::thread::sleep(Duration::from_millis(50));
    };
    let add = [("rpc_method", "math.add"), ("rpc_system", "echostream")];
    assert_eq!(value(&samples, "rpc_server_requests", &add), Some(12.0));
    let ok = [("rpc_method", "math.add"), ("rpc_response_status_code", "OK")];
    assert_eq!(value(&samples, "rpc_server_responses", &ok), Some(12.0));
    // The duration histogram: 12 in the +Inf bucket and in the count; buckets are cumulative.
    let inf = [
        ("rpc_method", "math.add"),
        ("rpc_response_status_code", "OK"),
        ("le", "+Inf"),
    ];
    assert_eq!(value(&samples, "rpc_server_duration_bucket", &inf), Some(12.0));
    assert_eq!(value(&samples, "rpc_server_duration_count", &ok), Some(12.0));
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "rpc_server_duration_bucket"
                && l.get("rpc_method").map(String::as_str) == Some("math.add")
                && l.get("rpc_response_status_code").map(String::as_str) == Some("OK")
        })
        .map(|s| s.2)
        .collect();
    assert!(
        buckets.len() > 2 && buckets.windows(2).all(|w| w[0] <= w[1]),
        "{buckets:?}"
    );
    // Request sizes: a (i64, i64) in bincode is 2 bytes, so all 12 are in the 16-byte bucket.
    let small = [("rpc_method", "math.add"), ("le", "16")];
    assert_eq!(
        value(&samples, "rpc_server_request_size_bucket", &small),
        Some(12.0)
    );
    // The byte counters: 12 requests of 2 bytes.
    assert_eq!(
        value(
            &samples,
            "rpc_server_request_bytes",
            &[("rpc_method", "math.add")]
        ),
        Some(24.0)
    );
    // Failures by status code, and the unknown method under one bounded label.
    let failed = [
        ("rpc_method", "math.fail"),
        ("rpc_response_status_code", "APPLICATION"),
    ];
    assert_eq!(value(&samples, "rpc_server_responses", &failed), Some(4.0));
    let unknown = [
        ("rpc_method", "_unknown"),
        ("rpc_response_status_code", "UNKNOWN_METHOD"),
    ];
    assert_eq!(value(&samples, "rpc_server_responses", &unknown), Some(2.0));
    assert!(
        !samples.iter().any(|(n, l, _)| n.starts_with("rpc_server")
            && l.get("rpc_method").map(String::as_str) == Some("no.such.method")),
        "a peer's method name must never become a server label"
    );
    // The calling side (the example's client, in the same process) counts the same calls.
    assert_eq!(value(&samples, "rpc_client_requests", &add), Some(12.0));
    assert_eq!(value(&samples, "rpc_client_duration_count", &ok), Some(12.0));
    let client_failed = [
        ("rpc_method", "math.fail"),
        ("rpc_response_status_code", "APPLICATION"),
    ];
    assert_eq!(value(&samples, "rpc_client_responses", &client_failed), Some(4.0));
    let client_unknown = [
        ("rpc_method", "no.such.method"),
        ("rpc_response_status_code", "UNKNOWN_METHOD"),
    ];
    assert_eq!(
        value(&samples, "rpc_client_responses", &client_unknown),
        Some(2.0)
    );
    assert_eq!(value(&samples, "echostream_connections_accepted", &[]), Some(1.0));
    // Events, the stream and its bytes, clock gauges (client and server share the process).
    assert_eq!(value(&samples, "echostream_events_sent", &[]), Some(3.0));
    assert_eq!(value(&samples, "echostream_events_received", &[]), Some(3.0));
    assert_eq!(
        value(&samples, "echostream_streams_opened", &[("side", "opener")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "echostream_streams_opened", &[("side", "acceptor")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "echostream_streams_refused",
            &[("reason", "no_acceptor")]
        ),
        Some(1.0)
    );
    let sent = value(&samples, "echostream_bytes_sent", &[("kind", "stream")]).unwrap_or(0.0);
    let received = value(&samples, "echostream_bytes_received", &[("kind", "stream")]).unwrap_or(0.0);
    assert!(
        sent >= 102_400.0 && received >= 102_400.0,
        "stream bytes {sent} sent, {received} received"
    );
    assert!(value(&samples, "echostream_bytes_received", &[("kind", "control")]).unwrap_or(0.0) > 0.0);
    assert!(value(&samples, "echostream_bytes_sent", &[("kind", "control")]).unwrap_or(0.0) > 0.0);
    assert_eq!(
        value(&samples, "echostream_connections_open", &[("side", "server")]),
        Some(1.0)
    );

    // The clock gauges appear after the first refresh of the estimate (about a second).
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = parse(&scrape(&addr));
        let bound = samples
            .iter()
            .find(|(n, _, _)| n == "echostream_clock_error_bound");
        let offset = samples.iter().find(|(n, _, _)| n == "echostream_clock_offset");
        if let (Some(bound), Some(offset)) = (bound, offset) {
            assert!(bound.1.contains_key("connection"), "{bound:?}");
            // One machine, one clock: the offset is within its bound plus a millisecond.
            assert!(
                offset.2.abs() <= bound.2 + 0.001,
                "offset {} s, bound {} s",
                offset.2,
                bound.2
            );
            break;
        }
        assert!(Instant::now() < deadline, "no clock gauges");
        std::thread::sleep(Duration::from_millis(100));
    }

    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
}
