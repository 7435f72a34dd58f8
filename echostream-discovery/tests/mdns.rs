//! Announce, browse, goodbye and timeouts over real mDNS, each test inside a
//! network namespace it creates (see `netns/mod.rs`).

mod netns;

use echostream_discovery::{Announcement, BrowseEvent, Discovery, DiscoveryError, Interfaces};
use std::time::{Duration, Instant};

/// Generous bound for anything awaited (mDNS probing takes about 0.75 s).
const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn next_event(b: &mut echostream_discovery::Browser) -> BrowseEvent {
    tokio::time::timeout(WAIT, b.next())
        .await
        .expect("an event in time")
        .expect("browsing goes on")
}

#[test]
fn announced_instance_is_browsed_with_its_txt_then_removed_after_goodbye() {
    if !netns::in_fresh_netns("announced_instance_is_browsed_with_its_txt_then_removed_after_goodbye") {
        return;
    }
    runtime().block_on(async {
        // Two daemons, like two processes: one announces, one browses.
        let device = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let watcher = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let mut browser = watcher.browse("Wohnzimmer Lautsprecher ü").unwrap();
        let t0 = Instant::now();
        let ann = device
            .announce(
                Announcement::new("Wohnzimmer Lautsprecher ü", 4242)
                    .protocol_version(1)
                    .fingerprint("AB".repeat(32))
                    .txt("room", "living room"),
            )
            .unwrap();
        let inst = match next_event(&mut browser).await {
            BrowseEvent::Appeared(i) => i,
            other => panic!("expected Appeared, got {other:?}"),
        };
        println!("appeared after {:?}: {inst:?}", t0.elapsed());
        assert_eq!(inst.name(), "Wohnzimmer Lautsprecher ü");
        assert_eq!(inst.port(), 4242);
        assert_eq!(inst.fingerprint(), Some("ab".repeat(32)));
        assert_eq!(inst.protocol_version(), Some(1));
        assert_eq!(inst.instance_id(), Some(ann.instance_id()));
        assert_eq!(inst.txt("room"), Some("living room"));
        assert_eq!(inst.app_txt().collect::<Vec<_>>(), [("room", "living room")]);
        assert!(
            inst.addrs().iter().any(|a| a.to_string() == "127.0.0.1:4242"),
            "{:?}",
            inst.addrs()
        );

        let t1 = Instant::now();
        ann.shutdown();
        loop {
            match next_event(&mut browser).await {
                BrowseEvent::Disappeared(i) => {
                    assert_eq!(i.name(), "Wohnzimmer Lautsprecher ü");
                    break;
                }
                BrowseEvent::Updated(_) => continue,
                other => panic!("expected Disappeared, got {other:?}"),
            }
        }
        println!("removed {:?} after the goodbye", t1.elapsed());
    });
}

#[test]
fn two_announcements_of_one_name_in_one_process_are_both_found() {
    if !netns::in_fresh_netns("two_announcements_of_one_name_in_one_process_are_both_found") {
        return;
    }
    runtime().block_on(async {
        let d = Discovery::shared(Interfaces::Loopback).unwrap();
        let a = d.announce(Announcement::new("AudioService", 5001)).unwrap();
        let b = d.announce(Announcement::new("AudioService", 5002)).unwrap();
        assert_eq!(a.instance_name(), "AudioService");
        assert_eq!(b.instance_name(), "AudioService (2)");
        let watcher = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let mut browser = watcher.browse("AudioService").unwrap();
        let deadline = Instant::now() + WAIT;
        while browser.instances().len() < 2 && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), browser.next()).await;
        }
        let mut ports: Vec<u16> = browser.instances().iter().map(|i| i.port()).collect();
        ports.sort();
        assert_eq!(ports, [5001, 5002]);
    });
}

#[test]
fn finding_an_unknown_name_times_out_naming_what_where_and_what_else() {
    if !netns::in_fresh_netns("finding_an_unknown_name_times_out_naming_what_where_and_what_else") {
        return;
    }
    runtime().block_on(async {
        let d = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let _cam = d.announce(Announcement::new("Camera", 6000)).unwrap();
        let watcher = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        // Let the camera be seen first, so the error can count it.
        watcher.find("Camera", WAIT).await.expect("camera found");
        let err = watcher
            .find("Nonexistent", Duration::from_millis(1500))
            .await
            .unwrap_err();
        let msg = err.to_string();
        println!("{msg}");
        match err {
            DiscoveryError::Timeout {
                name,
                interfaces,
                waited,
                other_names,
            } => {
                assert_eq!(name, "Nonexistent");
                assert_eq!(interfaces, Interfaces::Loopback);
                assert_eq!(waited, Duration::from_millis(1500));
                assert_eq!(other_names, ["Camera"]);
            }
            other => panic!("expected a timeout, got {other}"),
        }
        assert!(
            msg.contains("`Nonexistent`") && msg.contains("loopback") && msg.contains("1.5s"),
            "{msg}"
        );
    });
}
