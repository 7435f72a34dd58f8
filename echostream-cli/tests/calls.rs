//! `echostream call`, `emit`, `listen`, `list`, `describe`, `ping` and `bench` against servers on
//! 127.0.0.1, run as the real binary: results, JSON output parsed back, and one test per
//! exit-code class.

mod common;

use common::*;
use echostream::rpc::PeerIdentity;
use echostream::rpc::StaticTokens;
use echostream::Codec;
use std::time::Duration;
use tokio::sync::mpsc;

fn notes() -> (
    mpsc::UnboundedSender<serde_json::Value>,
    mpsc::UnboundedReceiver<serde_json::Value>,
) {
    mpsc::unbounded_channel()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_the_json_result_from_arguments_stdin_and_metadata() {
    let s = serve(service(notes().0));
    let t = Scratch::new("call-ok");
    let out = t
        .run(&["call", &s.addr, "math.add", "[2, 3]", "--pin", &s.pin])
        .await
        .expect(0);
    assert_eq!(out.stdout.trim(), "5");
    let out = t
        .run(&[
            "--json",
            "call",
            &s.addr,
            "user.login",
            "\"root\"",
            "--pin",
            &s.pin,
        ])
        .await
        .expect(0);
    assert_eq!(out.json(), serde_json::json!({ "user": "root", "admin": true }));
    let out = t
        .run_with_stdin(
            &["call", &s.addr, "user.login", "-", "--pin", &s.pin],
            Some("\"alice\"\n"),
        )
        .await
        .expect(0);
    assert_eq!(out.json()["user"], "alice");
    let out = t
        .run(&[
            "call",
            &s.addr,
            "meta.get",
            "\"trace-id\"",
            "--pin",
            &s.pin,
            "--metadata",
            "trace-id=abc",
            "--idempotent",
            "--timeout",
            "5",
        ])
        .await
        .expect(0);
    assert_eq!(out.json(), "abc");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_class_has_its_own_exit_code_and_message() {
    let s = serve(service(notes().0));
    let t = Scratch::new("call-fail");
    let pin = s.pin.clone();
    let call = |method: &'static str, json: Option<&'static str>| {
        let mut args = vec!["call".to_owned(), s.addr.clone(), method.to_owned()];
        args.extend(json.map(str::to_owned));
        args.extend(["--pin".to_owned(), pin.clone()]);
        args
    };
    let run = |args: Vec<String>| {
        let t = &t;
        async move { t.run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };

    // Unknown method (6), with a suggestion from reflection.
    let out = run(call("math.ad", Some("[1, 2]"))).await.expect(6);
    assert!(out.stderr.contains("unknown method `math.ad`"), "{}", out.stderr);
    assert!(out.stderr.contains("did you mean `math.add`"), "{}", out.stderr);

    // Bad payload (7): malformed JSON, located, before any connection; and a wrong type.
    let out = run(call("math.add", Some("[1, 2"))).await.expect(7);
    assert!(out.stderr.contains("line 1 column 5"), "{}", out.stderr);
    let out = run(call("math.add", Some("\"two\""))).await.expect(7);
    assert!(
        out.stderr.contains("bad payload for `math.add`"),
        "{}",
        out.stderr
    );

    // Remote error (8): the handler's code and message on stderr, and in the JSON error.
    let out = run(call("fail", None)).await.expect(8);
    assert!(
        out.stderr
            .contains("APPLICATION (1001): this method always fails"),
        "{}",
        out.stderr
    );
    let mut args = call("fail", None);
    args.insert(0, "--json".into());
    let out = run(args).await.expect(8);
    let err = &out.json_lines()[0]["error"];
    assert_eq!(err["class"], "remote_error");
    assert_eq!(err["code"], 1001);
    assert_eq!(err["exit_code"], 8);

    // Timeout (9).
    let mut args = call("slow", Some("5000"));
    args.extend(["--timeout".into(), "0.3".into()]);
    let out = run(args).await.expect(9);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);

    // Trust (4): another fingerprint pinned.
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let out = t
        .run(&["call", &s.addr, "math.add", "[1, 2]", "--pin", &wrong])
        .await
        .expect(4);
    assert!(out.stderr.contains("rejected"), "{}", out.stderr);
    assert!(out.stderr.contains(&s.fingerprint.to_string()), "{}", out.stderr);

    // Unreachable (3): a UDP port that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = t
        .run(&[
            "call",
            &addr,
            "math.add",
            "[1, 2]",
            "--pin",
            &s.pin,
            "--connect-timeout",
            "1",
        ])
        .await
        .expect(3);
    assert!(out.stderr.contains(&addr), "{}", out.stderr);

    // Usage (2): a target without a port.
    t.run(&["call", "127.0.0.1", "math.add"]).await.expect(2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_rejected_with_exit_code_5() {
    let tokens = StaticTokens::new().token("good-token", PeerIdentity::new("alice"));
    let s = serve(service(notes().0).authenticator(tokens));
    let t = Scratch::new("call-token");
    let out = t
        .run(&[
            "call",
            &s.addr,
            "math.add",
            "[1, 2]",
            "--pin",
            &s.pin,
            "--token",
            "bad-token",
        ])
        .await
        .expect(5);
    assert!(out.stderr.contains("rejected"), "{}", out.stderr);
    t.run(&[
        "call",
        &s.addr,
        "math.add",
        "[1, 2]",
        "--pin",
        &s.pin,
        "--token",
        "good-token",
    ])
    .await
    .expect(0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_describe_show_what_reflection_reports() {
    let s = serve(service(notes().0));
    let t = Scratch::new("list");
    let out = t
        .run(&["--json", "list", &s.addr, "--pin", &s.pin])
        .await
        .expect(0);
    let d = out.json();
    let methods: Vec<&str> = d["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for m in ["math.add", "user.login", "fail", "slow", "echostream.describe"] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    assert_eq!(d["events"][0]["name"], "note");
    let out = t.run(&["list", &s.addr, "--pin", &s.pin]).await.expect(0);
    assert!(out.stdout.contains("(i64, i64) -> i64"), "{}", out.stdout);
    let out = t
        .run(&["--json", "describe", &s.addr, "math.add", "--pin", &s.pin])
        .await
        .expect(0);
    assert_eq!(out.json()["kind"], "method");
    assert_eq!(out.json()["request"], "(i64, i64)");
    let out = t
        .run(&["describe", &s.addr, "user.logn", "--pin", &s.pin])
        .await
        .expect(6);
    assert!(out.stderr.contains("did you mean `user.login`"), "{}", out.stderr);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_reaches_the_listener_and_listen_prints_json_lines() {
    let (tx, mut rx) = notes();
    let s = serve(service(tx).codec(Codec::Json));
    let t = Scratch::new("events");
    t.run(&["emit", &s.addr, "note", "{\"n\": 7}", "--pin", &s.pin])
        .await
        .expect(0);
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("event arrives");
    assert_eq!(got, Some(serde_json::json!({ "n": 7 })));

    // `listen` for three events the server broadcasts after it connected.
    let child = t
        .cmd(&[
            "--json", "listen", &s.addr, "tick", "--count", "3", "--pin", &s.pin,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_connection(&s, "listen").await;
    // The listener is registered before the connection exists, so nothing sent now is lost.
    for i in 0..3u64 {
        s.handle
            .broadcast("tick", serde_json::json!({ "i": i }))
            .await
            .unwrap();
    }
    let out = finish(child, "listen").await.expect(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["event"], "tick");
        assert_eq!(line["value"]["i"], i as u64);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_round_trips_and_the_clock_offset() {
    let s = serve(service(notes().0));
    let t = Scratch::new("ping");
    let out = t
        .run(&[
            "--json", "ping", &s.addr, "-c", "3", "-i", "0.05", "--pin", &s.pin,
        ])
        .await
        .expect(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    let summary = &lines[3];
    assert_eq!(summary["sent"], 3);
    assert_eq!(summary["received"], 3);
    assert!(summary["rtt_ms"]["min"].as_f64().unwrap() > 0.0);
    // Same machine, same clock: the offset is within its own error bound plus a millisecond.
    let offset = summary["clock"]["offset_ms"].as_f64().expect("clock synced");
    let bound = summary["clock"]["error_bound_ms"].as_f64().unwrap();
    assert!(
        offset.abs() <= bound + 1.0,
        "offset {offset} ms, bound {bound} ms"
    );
    let out = t
        .run(&["ping", &s.addr, "-c", "2", "-i", "0.05", "--pin", &s.pin])
        .await
        .expect(0);
    assert!(out.stdout.contains("rtt min/avg/max/mdev"), "{}", out.stdout);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_counts_calls_latencies_and_errors_by_status() {
    let s = serve(service(notes().0));
    let t = Scratch::new("bench");
    let out = t
        .run(&[
            "--json",
            "bench",
            &s.addr,
            "math.add",
            "[1, 2]",
            "--calls",
            "200",
            "-n",
            "4",
            "--connections",
            "2",
            "--pin",
            &s.pin,
        ])
        .await
        .expect(0);
    let r = out.json();
    assert_eq!(r["calls"], 200);
    assert_eq!(r["ok"], 200);
    assert_eq!(r["errors"], 0);
    let lat = &r["latency_ms"];
    assert!(lat["p50"].as_f64().unwrap() > 0.0);
    assert!(lat["p50"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap());
    let buckets: u64 = lat["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(buckets, 200);

    // Every other call of `flaky` fails (the first succeeds, which the bench checks first).
    let out = t
        .run(&[
            "--json", "bench", &s.addr, "flaky", "--calls", "100", "-n", "1", "--pin", &s.pin,
        ])
        .await
        .expect(0);
    let r = out.json();
    assert_eq!(r["calls"], 100);
    assert_eq!(r["errors_by_status"]["APPLICATION (1002)"]["count"], 50);
    assert_eq!(r["ok"], 50);

    // A duration, and the human report.
    let out = t
        .run(&[
            "bench",
            &s.addr,
            "math.add",
            "[1, 2]",
            "--duration",
            "300ms",
            "-n",
            "2",
            "--pin",
            &s.pin,
        ])
        .await
        .expect(0);
    assert!(out.stdout.contains("p99.9"), "{}", out.stdout);
    // Pre-encoded bytes in another codec (`--binary`): (1i64, 2i64) in bincode's standard
    // configuration is two zigzag varints, 2 and 4.
    let encoded = t.path().join("args.bincode");
    std::fs::write(&encoded, [2u8, 4]).unwrap();
    let f = encoded.to_str().unwrap();
    let out = t
        .run(&[
            "--json", "bench", &s.addr, "math.add", "--binary", f, "--codec", "bincode", "--calls", "20",
            "--pin", &s.pin,
        ])
        .await
        .expect(0);
    assert_eq!(out.json()["ok"], 20);
    // The same bytes read as JSON do not decode: the first call fails with the payload class.
    t.run(&[
        "bench", &s.addr, "math.add", "--binary", f, "--calls", "20", "--pin", &s.pin,
    ])
    .await
    .expect(7);
    // A method that does not exist fails once, with the usual exit code.
    t.run(&["bench", &s.addr, "math.ad", "--calls", "10", "--pin", &s.pin])
        .await
        .expect(6);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_exit_codes_and_completions_are_generated() {
    let t = Scratch::new("help");
    let out = t.run(&["--help"]).await.expect(0);
    assert!(out.stdout.contains("Exit codes:"), "{}", out.stdout);
    for cmd in [
        "browse",
        "list",
        "describe",
        "call",
        "emit",
        "listen",
        "send",
        "receive",
        "ping",
        "bench",
        "identity",
        "known-hosts",
        "health",
    ] {
        assert!(out.stdout.contains(cmd), "{cmd} missing from --help");
        let sub = t.run(&[cmd, "--help"]).await.expect(0);
        assert!(
            sub.stdout.contains("echostream "),
            "`{cmd} --help` has no example:\n{}",
            sub.stdout
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = t.run(&["completions", shell]).await.expect(0);
        assert!(out.stdout.contains("echostream"), "{shell}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_connects_without_trust_and_says_so_loudly() {
    let s = serve(service(notes().0));
    let t = Scratch::new("insecure");
    let out = t
        .run(&["call", &s.addr, "math.add", "[1, 2]", "--insecure"])
        .await
        .expect(0);
    assert_eq!(out.stdout.trim(), "3");
    assert!(out.stderr.contains("WARNING: --insecure"), "{}", out.stderr);
    // Nothing was recorded as trusted.
    let out = t.run(&["--json", "known-hosts", "list"]).await.expect(0);
    assert_eq!(out.json(), serde_json::json!([]));
    // --insecure and --pin contradict each other: a usage error.
    t.run(&[
        "call",
        &s.addr,
        "math.add",
        "[1, 2]",
        "--insecure",
        "--pin",
        &s.pin,
    ])
    .await
    .expect(2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_bench_prints_the_partial_report() {
    let s = serve(service(notes().0));
    let t = Scratch::new("bench-int");
    let child = t
        .cmd(&[
            "--json",
            "bench",
            &s.addr,
            "math.add",
            "[1, 2]",
            "--duration",
            "120s",
            "-n",
            "2",
            "--pin",
            &s.pin,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it run, then interrupt.
    wait_for_connection(&s, "bench").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    interrupt(&child);
    let out = finish(child, "bench (interrupted)").await.expect(130);
    assert!(
        out.stderr.contains("interrupted: stopped after"),
        "{}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    // The report (pretty JSON), then the error object on its own line.
    let report: serde_json::Value = serde_json::from_str(&lines[..lines.len() - 1].join("\n")).unwrap();
    assert_eq!(report["interrupted"], true);
    assert!(report["ok"].as_u64().unwrap() > 0);
    assert!(report["seconds"].as_f64().unwrap() < 60.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_identity_new_passes_mutual_tls() {
    use echostream::{ClientAuth, ClientCertTrust, Fingerprint};
    let t = Scratch::new("mtls");
    let out = t
        .run(&["--json", "identity", "new", "--name", "device"])
        .await
        .expect(0);
    let id = out.json();
    let fp: Fingerprint = id["fingerprint"].as_str().unwrap().parse().unwrap();
    let (cert, key) = (
        id["certificate"].as_str().unwrap().to_owned(),
        id["private_key"].as_str().unwrap().to_owned(),
    );
    let s = serve(service(notes().0).client_auth(ClientAuth::required(ClientCertTrust::pinned([fp]))));
    let out = t
        .run(&[
            "call", &s.addr, "math.add", "[1, 2]", "--pin", &s.pin, "--cert", &cert, "--key", &key,
        ])
        .await
        .expect(0);
    assert_eq!(out.stdout.trim(), "3");
    // Without it the server refuses the handshake: rejected (5), naming the certificate.
    let out = t
        .run(&["call", &s.addr, "math.add", "[1, 2]", "--pin", &s.pin])
        .await
        .expect(5);
    assert!(out.stderr.contains("client certificate"), "{}", out.stderr);
    // --cert needs --key.
    t.run(&[
        "call", &s.addr, "math.add", "[1, 2]", "--pin", &s.pin, "--cert", &cert,
    ])
    .await
    .expect(2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_when_serving_11_otherwise_and_watch_follows_changes() {
    let s = serve(service(notes().0));
    let t = Scratch::new("health");
    let out = t.run(&["health", &s.addr, "--pin", &s.pin]).await.expect(0);
    assert_eq!(out.stdout.trim(), "SERVING");
    s.handle.set_not_serving("db");
    let out = t
        .run(&["--json", "health", &s.addr, "db", "--pin", &s.pin])
        .await
        .expect(11);
    assert_eq!(out.json_lines()[0]["status"], "NOT_SERVING");
    let out = t
        .run(&["health", &s.addr, "nope", "--pin", &s.pin])
        .await
        .expect(11);
    assert!(out.stderr.contains("SERVICE_UNKNOWN"), "{}", out.stderr);
    // ping shows it too.
    let out = t
        .run(&["--json", "ping", &s.addr, "-c", "1", "--pin", &s.pin])
        .await
        .expect(0);
    assert_eq!(out.json_lines().last().unwrap()["health"], "SERVING");

    // --watch: the status now, each change, and the end when the server shuts down.
    let mut child = t
        .cmd(&["--json", "health", &s.addr, "--watch", "--pin", &s.pin])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap());
        }
    });
    let next = || lines.recv_timeout(WAIT).expect("a health line");
    assert_eq!(tokio::task::block_in_place(next)["status"], "SERVING");
    s.handle.set_not_serving("");
    assert_eq!(tokio::task::block_in_place(next)["status"], "NOT_SERVING");
    s.handle.set_serving("");
    assert_eq!(tokio::task::block_in_place(next)["status"], "SERVING");
    s.stop().await;
    assert_eq!(tokio::task::block_in_place(next)["status"], "NOT_SERVING");
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert_eq!(status.code(), Some(11), "the last word was NOT_SERVING");
}
