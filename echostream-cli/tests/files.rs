//! `echostream send` to `echostream receive` (both the real binary), `identity` and
//! `known-hosts`: files arrive whole and checked, partial files resume and are never left under
//! the final name, failures on the receiver reach the sender, trust on first use can be
//! inspected and reset.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

/// `echostream receive --json` on 127.0.0.1:0; returns the child, its address and its pin.
fn receiver(t: &Scratch, dir: &Path, extra: &[&str]) -> (Child, String, String) {
    let dir = dir.to_str().unwrap().to_owned();
    let mut args = vec!["--json", "receive", "--bind", "127.0.0.1:0", "--identity", "rx"];
    args.extend_from_slice(extra);
    args.push(&dir);
    start_receiver(t.cmd(&args))
}

/// Starts a receiver command and reads its first line: where it listens, its fingerprint.
fn start_receiver(mut cmd: std::process::Command) -> (Child, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    (
        child,
        v["listening"].as_str().unwrap().to_owned(),
        v["fingerprint"].as_str().unwrap().to_owned(),
    )
}

/// Deterministic bytes that differ along the file (so a resumed transfer that reused the
/// wrong bytes fails its checksum).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_arrives_whole_and_a_partial_one_resumes() {
    let t = Scratch::new("send");
    let inbox = t.path().join("inbox");
    let (rx, addr, pin) = receiver(&t, &inbox, &[]);
    let data = pattern(3 * 1024 * 1024 + 17);
    let file = t.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap();

    let out = t
        .run(&["--json", "send", &addr, "files.upload", f, "--pin", &pin])
        .await
        .expect(0);
    let report = out.json();
    assert_eq!(report["size"], data.len());
    assert_eq!(report["resumed_from"], 0);
    assert_eq!(std::fs::read(inbox.join("data.bin")).unwrap(), data);
    assert!(!inbox.join(".data.bin.part").exists());

    // The same name again is refused (the receiver runs without --overwrite), with its reason.
    let out = t
        .run(&["send", &addr, "files.upload", f, "--pin", &pin])
        .await
        .expect(5);
    assert!(
        out.stderr.contains("already exists on the receiver"),
        "{}",
        out.stderr
    );
    // A name that leaves the directory is refused before any byte moves.
    let out = t
        .run(&[
            "send",
            &addr,
            "files.upload",
            f,
            "--as",
            "../escape.bin",
            "--pin",
            &pin,
        ])
        .await
        .expect(5);
    assert!(out.stderr.contains("not a plain file name"), "{}", out.stderr);
    // A stream name nobody accepts.
    t.run(&["send", &addr, "no.such.stream", f, "--as", "x.bin", "--pin", &pin])
        .await
        .expect(6);

    // A partial file with the right first bytes: only the rest travels.
    let half = data.len() / 2;
    std::fs::write(inbox.join(".again.bin.part"), &data[..half]).unwrap();
    let out = t
        .run(&[
            "--json",
            "send",
            &addr,
            "files.upload",
            f,
            "--as",
            "again.bin",
            "--pin",
            &pin,
        ])
        .await
        .expect(0);
    assert_eq!(out.json()["resumed_from"], half);
    assert_eq!(out.json()["bytes_sent"], data.len() - half);
    assert_eq!(std::fs::read(inbox.join("again.bin")).unwrap(), data);

    // A partial file with wrong bytes: the receiver's checksum fails, the sender shows the
    // receiver's message from the error half (exit 10), nothing is stored, and the bad
    // partial file is gone so the next attempt starts over and succeeds.
    std::fs::write(inbox.join(".bad.bin.part"), vec![0u8; 1000]).unwrap();
    let out = t
        .run(&["send", &addr, "files.upload", f, "--as", "bad.bin", "--pin", &pin])
        .await
        .expect(10);
    assert!(
        out.stderr.contains("checksum mismatch for `bad.bin`"),
        "{}",
        out.stderr
    );
    assert!(!inbox.join("bad.bin").exists());
    assert!(!inbox.join(".bad.bin.part").exists());
    t.run(&["send", &addr, "files.upload", f, "--as", "bad.bin", "--pin", &pin])
        .await
        .expect(0);
    assert_eq!(std::fs::read(inbox.join("bad.bin")).unwrap(), data);
    stop(rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_receivers_limit_is_refused_with_its_reason() {
    let t = Scratch::new("send-limit");
    let inbox = t.path().join("inbox");
    let (rx, addr, pin) = receiver(&t, &inbox, &["--max-size", "1000"]);
    let file = t.path().join("big.bin");
    std::fs::write(&file, pattern(5000)).unwrap();
    let out = t
        .run(&[
            "send",
            &addr,
            "files.upload",
            file.to_str().unwrap(),
            "--pin",
            &pin,
        ])
        .await
        .expect(5);
    assert!(
        out.stderr
            .contains("more than this receiver's limit of 1000 bytes"),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read_dir(&inbox).unwrap().next().is_none(),
        "nothing is written"
    );
    stop(rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_send_stops_cleanly_and_the_next_send_resumes() {
    let t = Scratch::new("send-int");
    let inbox = t.path().join("inbox");
    let (rx, addr, pin) = receiver(&t, &inbox, &[]);
    // Large enough that the transfer is still running when the signal arrives.
    let data = pattern(128 * 1024 * 1024);
    let file = t.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap().to_owned();
    let child = t
        .cmd(&["send", &addr, "files.upload", &f, "--pin", &pin])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until data is arriving, then interrupt the sender.
    let part = inbox.join(".big.bin.part");
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 1024 * 1024 {
        assert!(std::time::Instant::now() < deadline, "no data arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    interrupt(&child);
    let out = finish(child, "send (interrupted)").await.expect(130);
    assert!(out.stderr.contains("interrupted: sent"), "{}", out.stderr);
    assert!(out.stderr.contains("resumes"), "{}", out.stderr);
    // Never a file under the final name; the partial file stays for the next attempt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!inbox.join("big.bin").exists());
    let kept = std::fs::metadata(&part).expect("partial file kept").len();
    assert!(kept > 0 && (kept as usize) < data.len());

    let out = t
        .run(&["--json", "send", &addr, "files.upload", &f, "--pin", &pin])
        .await
        .expect(0);
    assert!(out.json()["resumed_from"].as_u64().unwrap() > 0, "{}", out.stdout);
    assert!(std::fs::read(inbox.join("big.bin")).unwrap() == data);
    stop(rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_once_exits_after_one_transfer_with_its_outcome() {
    let t = Scratch::new("recv-once");
    let inbox = t.path().join("inbox");
    let (rx, addr, pin) = receiver(&t, &inbox, &["--once"]);
    let file = t.path().join("one.bin");
    std::fs::write(&file, pattern(10_000)).unwrap();
    t.run(&[
        "send",
        &addr,
        "files.upload",
        file.to_str().unwrap(),
        "--pin",
        &pin,
    ])
    .await
    .expect(0);
    let out = finish(rx, "receive --once").await.expect(0);
    let done = out.json_lines();
    assert_eq!(done.last().unwrap()["received"], "one.bin");
    assert_eq!(done.last().unwrap()["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_created_shown_rotated_exported_and_served() {
    let t = Scratch::new("identity");
    let out = t
        .run(&["--json", "identity", "new", "--name", "rx"])
        .await
        .expect(0);
    let first = out.json()["fingerprint"].as_str().unwrap().to_owned();
    let out = t
        .run(&["--json", "identity", "show", "--name", "rx"])
        .await
        .expect(0);
    assert_eq!(out.json()["fingerprint"], first.as_str());
    // No silent rotation.
    let out = t.run(&["identity", "new", "--name", "rx"]).await.expect(1);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    let out = t
        .run(&["--json", "identity", "new", "--name", "rx", "--force"])
        .await
        .expect(0);
    let second = out.json()["fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let out = t.run(&["identity", "export", "--name", "rx"]).await.expect(0);
    assert!(
        out.stdout.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("PRIVATE KEY"));
    let out = t
        .run(&["identity", "export", "--name", "rx", "--with-key"])
        .await
        .expect(0);
    assert!(out.stdout.contains("PRIVATE KEY"));
    let out = t.run(&["--json", "identity", "list"]).await.expect(0);
    assert_eq!(out.json()[0]["name"], "rx");
    t.run(&["identity", "show", "--name", "absent"]).await.expect(1);
    t.run(&["identity", "show", "--name", "../etc"]).await.expect(1);
    // A server started with the identity presents it.
    let (rx, _, pin) = receiver(&t, &t.path().join("inbox"), &[]);
    assert_eq!(pin, second);
    stop(rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_record_first_contact_refuse_a_changed_identity_and_forget() {
    let t = Scratch::new("known-hosts");
    let s = serve(service(tokio::sync::mpsc::unbounded_channel().0));
    let addr = s.addr.clone();
    // No pin: trust on first use records the server.
    t.run(&["call", &addr, "math.add", "[1, 1]"]).await.expect(0);
    let out = t.run(&["--json", "known-hosts", "list"]).await.expect(0);
    assert_eq!(out.json()[0]["host"], addr.as_str());
    assert_eq!(out.json()[0]["fingerprint"], s.pin.as_str());
    // Another server (another identity) on the same address is refused.
    s.stop().await;
    let s2 = serve_on(|| service(tokio::sync::mpsc::unbounded_channel().0), &addr);
    let out = t.run(&["call", &addr, "math.add", "[1, 1]"]).await.expect(4);
    assert!(out.stderr.contains("known-hosts forget"), "{}", out.stderr);
    // Forgetting it makes the next connection a first contact again.
    let out = t.run(&["known-hosts", "forget", &addr]).await.expect(0);
    assert!(out.stdout.contains("forgot"), "{}", out.stdout);
    t.run(&["known-hosts", "forget", &addr]).await.expect(1);
    t.run(&["call", &addr, "math.add", "[1, 1]"]).await.expect(0);
    let out = t.run(&["--json", "known-hosts", "list"]).await.expect(0);
    assert_eq!(out.json()[0]["fingerprint"], s2.pin.as_str());
    s2.stop().await;
}

/// A receiver whose disk fills up mid-transfer: its directory is a 2 MiB tmpfs mounted in a
/// mount namespace made for it (root only; skipped with a message otherwise, unless
/// ECHOSTREAM_REQUIRE_NETNS=1 as in `.ci/run`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_the_receiver_reaches_the_sender_from_the_error_half() {
    let t = Scratch::new("disk-full");
    let inbox = t.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let probe = std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var("ECHOSTREAM_REQUIRE_NETNS").as_deref() != Ok("1"),
            "`unshare --mount` is needed (root)"
        );
        eprintln!("skipped: `unshare --mount` is not available (needs root)");
        return;
    }
    let home = t.path().to_str().unwrap().to_owned();
    let dir = inbox.to_str().unwrap().to_owned();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "sh",
        "-c",
        "mount -t tmpfs -o size=2m tmpfs \"$1\" && shift && exec \"$@\"",
        "sh",
    ])
    .arg(&dir)
    .arg(BIN)
    .args([
        "--json",
        "receive",
        "--bind",
        "127.0.0.1:0",
        "--identity",
        "rx",
        &dir,
    ])
    .env("ECHOSTREAM_HOME", &home)
    .env("NO_COLOR", "1");
    let (child, addr, pin) = start_receiver(cmd);
    let file = t.path().join("large.bin");
    std::fs::write(&file, pattern(8 * 1024 * 1024)).unwrap();
    let out = t
        .run(&[
            "send",
            &addr,
            "files.upload",
            file.to_str().unwrap(),
            "--pin",
            &pin,
        ])
        .await
        .expect(10);
    assert!(out.stderr.contains("No space left on device"), "{}", out.stderr);
    assert!(out.stderr.contains("large.bin"), "{}", out.stderr);
    stop(child);
}
