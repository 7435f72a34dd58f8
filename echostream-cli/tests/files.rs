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

/// `echostream known-hosts list` of the scratch dir's file: every entry as (host, fingerprint);
/// fails the test if the file does not parse.
async fn known_hosts(t: &Scratch) -> Vec<(String, String)> {
    let out = t.run(&["--json", "known-hosts", "list"]).await.expect(0);
    out.json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| {
            (
                e["host"].as_str().unwrap_or_default().to_owned(),
                e["fingerprint"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_making_first_contacts_at_the_same_moment_keep_every_entry() {
    let t = Scratch::new("tofu-race");
    let servers: Vec<TestServer> = (0..8)
        .map(|_| serve(service(tokio::sync::mpsc::unbounded_channel().0)))
        .collect();
    // Two rounds: the first creates the file (header and all) under contention, the second
    // appends to it while four `forget`s rewrite it (each removes an entry put there for it).
    // Each round starts one process per server at once.
    let file = t.path().join("known_hosts");
    for (r, round) in servers.chunks(4).enumerate() {
        let forget: Vec<String> = if r == 0 {
            vec!["127.0.0.2:1".to_owned()]
        } else {
            // Entries for the `forget`s to remove, so they rewrite the file.
            let extra: String = (1..=4)
                .map(|k| format!("127.0.0.2:{k} sha256:{}\n", "ab".repeat(32)))
                .collect();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .expect("open");
            std::io::Write::write_all(&mut f, extra.as_bytes()).expect("append");
            (1..=4).map(|k| format!("127.0.0.2:{k}")).collect()
        };
        let mut children: Vec<Child> = round
            .iter()
            .map(|s| {
                t.cmd(&["ping", "-c", "1", &s.addr])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn echostream ping")
            })
            .collect();
        for host in &forget {
            children.push(
                t.cmd(&["known-hosts", "forget", host])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn echostream known-hosts forget"),
            );
        }
        for (i, child) in children.into_iter().enumerate() {
            let out = finish(child, "a first contact").await;
            if i < round.len() {
                out.expect(0);
            }
        }
    }
    let entries = known_hosts(&t).await;
    for s in &servers {
        let found: Vec<_> = entries.iter().filter(|(h, _)| h == &s.addr).collect();
        assert_eq!(found.len(), 1, "{} in {entries:?}", s.addr);
        assert_eq!(found[0].1, s.pin);
    }
    assert_eq!(entries.len(), servers.len(), "{entries:?}");
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_killed_while_recording_leave_no_torn_line_and_a_damaged_file_is_never_trusted_silently() {
    let t = Scratch::new("tofu-kill");
    let servers: Vec<TestServer> = (0..12)
        .map(|_| serve(service(tokio::sync::mpsc::unbounded_channel().0)))
        .collect();
    // Processes killed at staggered moments: some before, some during, some after their
    // first contact is written. Whoever finished must be recorded; nothing may be torn.
    let mut children = Vec::new();
    for s in &servers {
        let child = t
            .cmd(&["ping", "-c", "1", &s.addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echostream ping");
        children.push(child);
    }
    let mut finished = Vec::new();
    for (i, mut child) in children.into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
        let _ = child.kill();
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        if status.success() {
            finished.push(i);
        }
    }
    let entries = known_hosts(&t).await;
    for i in finished {
        let s = &servers[i];
        assert!(
            entries.iter().any(|(h, f)| h == &s.addr && f == &s.pin),
            "{} finished but is not recorded: {entries:?}",
            s.addr
        );
    }
    // Every server can still be reached: the recorded ones by their entry, the rest as first
    // contacts.
    for s in &servers {
        t.run(&["ping", "-c", "1", &s.addr]).await.expect(0);
    }
    assert_eq!(known_hosts(&t).await.len(), servers.len());

    // A file cut off in the middle of its last entry (a disk that filled up, an editor crash)
    // is an error naming the file and line, for every host: never a new first contact.
    let file = t.path().join("known_hosts");
    let text = std::fs::read_to_string(&file).expect("read known_hosts");
    let cut = text.trim_end().len() - 10;
    std::fs::write(&file, &text[..cut]).expect("truncate known_hosts");
    let last_line = text[..cut].lines().count();
    let out = t.run(&["ping", "-c", "1", &servers[0].addr]).await;
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&file.display().to_string()) && out.stderr.contains(&format!("line {last_line}")),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read known_hosts"),
        text[..cut],
        "the damaged file was changed"
    );
    for s in servers {
        s.stop().await;
    }
}
