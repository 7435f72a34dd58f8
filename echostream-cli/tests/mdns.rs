//! `echostream browse` and `mdns:NAME` targets over real mDNS. Each test runs inside a network
//! namespace it creates (only `lo`), so no multicast leaves it; without root it prints why and
//! skips, unless ECHOSTREAM_REQUIRE_NETNS=1 (set by `.ci/run`).

mod common;
#[path = "../../echostream-discovery/tests/netns/mod.rs"]
mod netns;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn announced(name: &str) -> TestServer {
    serve(service(tokio::sync::mpsc::unbounded_channel().0).enable_discovery(name))
}

#[test]
fn browse_lists_announced_servers_and_mdns_targets_reach_them() {
    if !netns::in_fresh_netns("browse_lists_announced_servers_and_mdns_targets_reach_them") {
        return;
    }
    runtime().block_on(async {
        let t = Scratch::new("mdns-browse");
        let s = announced("CliMdns");
        let out = t.run(&["--json", "browse", "--timeout", "3"]).await.expect(0);
        let found = out.json();
        let me = found
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "CliMdns")
            .unwrap_or_else(|| panic!("CliMdns not browsed: {found}"));
        assert_eq!(me["fingerprint"], s.pin.as_str());
        assert_eq!(
            me["port"],
            s.addr.rsplit_once(':').unwrap().1.parse::<u16>().unwrap()
        );
        assert!(me["protocol_version"].is_number());
        let out = t.run(&["browse", "CliMdns", "--timeout", "3"]).await.expect(0);
        assert!(out.stdout.contains("CliMdns"), "{}", out.stdout);
        assert!(out.stdout.contains("FINGERPRINT"), "{}", out.stdout);

        // An mdns: target pins the announced fingerprint, with no known-hosts entry.
        let out = t
            .run(&["call", "mdns:CliMdns", "math.add", "[2, 2]"])
            .await
            .expect(0);
        assert_eq!(out.stdout.trim(), "4");
        let out = t.run(&["--json", "known-hosts", "list"]).await.expect(0);
        assert_eq!(out.json(), serde_json::json!([]));
        t.run(&["list", "mdns:CliMdns"]).await.expect(0);
        // A name nobody announces: unreachable, after the connect timeout.
        let out = t
            .run(&[
                "call",
                "mdns:NobodyHere",
                "math.add",
                "[1, 1]",
                "--connect-timeout",
                "1.5",
            ])
            .await
            .expect(3);
        assert!(out.stderr.contains("NobodyHere"), "{}", out.stderr);
        s.stop().await;
    });
}

#[test]
fn browse_watch_prints_appearances_and_departures() {
    if !netns::in_fresh_netns("browse_watch_prints_appearances_and_departures") {
        return;
    }
    runtime().block_on(async {
        let t = Scratch::new("mdns-watch");
        let mut child = t
            .cmd(&["--json", "browse", "--watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel::<serde_json::Value>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let wait_for = |event: &str, name: &str| loop {
            let v = lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no `{event}` for {name}"));
            if v["event"] == event && v["name"] == name {
                return v;
            }
        };
        // Give the browser a moment to start before the announcement.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = announced("CliWatch");
        let seen = tokio::task::block_in_place(|| wait_for("appeared", "CliWatch"));
        assert_eq!(seen["fingerprint"], s.pin.as_str());
        s.stop().await;
        tokio::task::block_in_place(|| wait_for("disappeared", "CliWatch"));
        interrupt(&child);
        let status = tokio::task::block_in_place(|| child.wait()).unwrap();
        assert_eq!(status.code(), Some(0), "browse --watch ends cleanly on Ctrl-C");
    });
}
