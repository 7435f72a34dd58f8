//! Runs the benchmark program in `--smoke` mode (tiny sizes) and checks that
//! every case produced its figures and that every answer was correct. It
//! never looks at how fast anything was: speed is the program's output,
//! not something a test can assert on a shared machine. Beside it (in
//! parallel), a short `--soak` checks that nothing leaks under a long mixed
//! load.

use serde_json::Value;
use std::process::Command;

#[test]
fn smoke_run_produces_every_figure_with_correct_answers() {
    let dir = std::env::temp_dir().join(format!("echostream-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("smoke.json");
    let out = Command::new(env!("CARGO_BIN_EXE_echostream-bench"))
        .args(["--smoke", "--json"])
        .arg(&json)
        // Nothing is written there (ephemeral identities, pinned clients);
        // set anyway so a run can never touch the user's directory.
        .env("ECHOSTREAM_HOME", dir.join("home"))
        .output()
        .expect("the benchmark binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    assert_eq!(report["failures"].as_array().unwrap().len(), 0, "{stderr}");
    let wrong = report["wrong_answers"].as_object().unwrap();
    for case in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "alloc"] {
        assert!(
            wrong.keys().any(|k| k.starts_with(&format!("{case}/"))),
            "case {case} checked no answers"
        );
    }
    for (what, n) in wrong {
        assert_eq!(n.as_u64(), Some(0), "wrong answers in {what}");
    }

    let figures = report["figures"].as_array().unwrap();
    let has = |case: &str, system: &str| {
        figures
            .iter()
            .any(|f| f["case"] == case && f["system"] == system && f["value"].is_number())
    };
    let unary = ["EchoStream", "raw quinn", "tonic h2c", "tonic TLS", "tarpc"];
    for case in ["1", "2", "3", "alloc"] {
        for system in unary {
            assert!(has(case, system), "no figure for case {case}, {system}");
        }
    }
    // The typed client of the same echo: the unary cases but 3.
    for case in ["1", "2", "alloc"] {
        assert!(
            has(case, "EchoStream typed"),
            "no figure for case {case}, EchoStream typed"
        );
    }
    for case in ["4", "5", "6", "7", "8", "9"] {
        for system in ["EchoStream", "raw quinn"] {
            assert!(has(case, system), "no figure for case {case}, {system}");
        }
    }
    // Every figure has a value (EchoStream's 0-RTT connect included).
    for f in figures {
        assert!(f["value"].is_number(), "figure without a value: {f}");
    }
    // Both layouts ran for cases 1 and 2.
    for case in ["1", "2"] {
        for layout in ["shared 2-worker", "split 1+1"] {
            assert!(
                figures.iter().any(|f| f["case"] == case && f["layout"] == layout),
                "case {case} did not run with the {layout} layout"
            );
        }
    }
    // The table went to stdout, with the goals.
    assert!(stdout.contains("| case | metric | layout |"), "{stdout}");
    assert!(stdout.contains("| case | goal"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--soak` for 3 minutes (`ECHOSTREAM_SOAK_SECS` for longer): calls, events, streams, and clients
/// coming and going; the server heap stays flat after warm-up, and descriptors, tasks and
/// connections return to their baseline once the clients leave (the program checks and exits
/// non-zero otherwise; see `echostream-bench/src/soak.rs`).
#[test]
fn soak_keeps_server_memory_flat_and_returns_descriptors_tasks_and_connections_to_baseline() {
    let secs: u64 = std::env::var("ECHOSTREAM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let dir = std::env::temp_dir().join(format!("echostream-bench-soak-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_echostream-bench"))
        .args(["--soak", &format!("{secs}s")])
        .env("ECHOSTREAM_HOME", dir.join("home"))
        .output()
        .expect("the benchmark binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("soak: PASS"),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // At least ten samples, each with work done since the one before.
    let samples: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert!(samples.len() >= 10, "{stdout}");
    assert!(stdout.contains("clients came and went"), "{stdout}");
}
