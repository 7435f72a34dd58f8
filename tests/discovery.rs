//! LAN discovery end to end: servers announced with `enable_discovery`, found
//! by `RpcClient::discover`, over real mDNS. Every test runs inside network
//! namespaces it creates (`netns::in_fresh_netns`, `netns::two_hosts`); mDNS
//! never runs in the machine's own namespace.
#![cfg(feature = "discovery")]

mod common;
#[path = "../echostream-discovery/tests/netns/mod.rs"]
mod netns;

use echostream::discovery::{Announcement, BrowseEvent, Discovery, Interfaces};
use echostream::prelude::*;
use echostream::rpc::ServerBuilder;
use echostream::rpc::{handler_fn, ShutdownHandle};
use echostream::{DiscoverOptions, Fingerprint, ServerIdentity};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound for anything awaited: mDNS probing alone takes about 0.75 s, and CI machines are shared.
const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    common::init_tracing();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A server on `bind` announcing `name` on `interfaces`; its `whoami` handler
/// answers with the caller's address as the server sees it.
fn announced_server(name: &str, bind: &str, interfaces: Interfaces) -> ServerBuilder {
    RpcServer::builder()
        .bind(bind)
        .identity(ServerIdentity::Ephemeral)
        .handler(handler_fn("whoami", |ctx: Context, _: ()| async move {
            Ok::<_, Error>(ctx.peer_addr().to_string())
        }))
        .enable_discovery(name)
        .discovery_interfaces(interfaces)
}

/// Builds and runs a server; returns the handle, its port, fingerprint and task.
fn start(
    builder: ServerBuilder,
) -> (
    ShutdownHandle,
    u16,
    Fingerprint,
    tokio::task::JoinHandle<Result<()>>,
) {
    let server = builder.build().expect("server builds");
    let port = server.local_addr().port();
    let fp = server.fingerprint();
    let handle = server.shutdown_handle();
    (handle, port, fp, tokio::spawn(server.run()))
}

fn loopback(name: &str) -> DiscoverOptions {
    DiscoverOptions::new(name)
        .interfaces(Interfaces::Loopback)
        .timeout(WAIT)
}

#[test]
fn discovered_server_answers_a_request_and_pins_the_announced_fingerprint() {
    if !netns::in_fresh_netns("discovered_server_answers_a_request_and_pins_the_announced_fingerprint") {
        return;
    }
    runtime().block_on(async {
        let (stop, port, fp, task) = start(
            announced_server("AudioService", "127.0.0.1:0", Interfaces::Loopback)
                .discovery_txt("room", "kitchen"),
        );
        let t0 = Instant::now();
        let client = RpcClient::builder()
            .discover(loopback("AudioService"))
            .await
            .expect("discovered");
        println!(
            "discover latency (server announced at the same time): {:?}",
            t0.elapsed()
        );
        assert_eq!(client.server_fingerprint(), Some(fp));
        assert_eq!(client.remote_addr().port(), port);
        let answer: String = client.request("whoami", ()).await.unwrap();
        assert_eq!(
            answer,
            format!("127.0.0.1:{}", client.local_addr().unwrap().port())
        );

        // The sketch's form, with default options, once the server is announced.
        // (A responder multicasts a record at most once a second, RFC 6762 §6:
        // a query within a second of the last answer waits for the next one.
        // Wait that out so the figure printed is the usual "client started later".)
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let t1 = Instant::now();
        let again = RpcClient::discover("AudioService")
            .await
            .expect("discovered again");
        println!("discover latency (server already announced): {:?}", t1.elapsed());
        let _: String = again.request("whoami", ()).await.unwrap();
        stop.shutdown();
        task.await.unwrap().unwrap();
    });
}

#[test]
fn two_servers_of_one_name_are_both_listed_and_both_answer() {
    if !netns::in_fresh_netns("two_servers_of_one_name_are_both_listed_and_both_answer") {
        return;
    }
    runtime().block_on(async {
        let one = announced_server("AudioService", "127.0.0.1:0", Interfaces::Loopback)
            .build()
            .unwrap();
        let two = announced_server("AudioService", "127.0.0.1:0", Interfaces::Loopback)
            .build()
            .unwrap();
        assert_eq!(one.discovery_instance().as_deref(), Some("AudioService"));
        assert_eq!(two.discovery_instance().as_deref(), Some("AudioService (2)"));
        let mut ports = vec![one.local_addr().port(), two.local_addr().port()];
        ports.sort();
        let tasks = [tokio::spawn(one.run()), tokio::spawn(two.run())];

        // A separate daemon, like another process on the same host.
        let watcher = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let mut browser = watcher.browse("AudioService").unwrap();
        let deadline = Instant::now() + WAIT;
        while browser.instances().len() < 2 && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), browser.next()).await;
        }
        let mut listed: Vec<(String, u16)> = browser
            .instances()
            .iter()
            .map(|i| (i.name().to_owned(), i.port()))
            .collect();
        listed.sort();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].0, "AudioService");
        assert_eq!(listed[1].0, "AudioService (2)");

        let clients = RpcClient::builder()
            .discover_all(loopback("AudioService").timeout(Duration::from_secs(3)))
            .await
            .expect("both connect");
        let mut answered: Vec<u16> = clients.iter().map(|c| c.remote_addr().port()).collect();
        answered.sort();
        assert_eq!(answered, ports);
        for c in &clients {
            let _: String = c.request("whoami", ()).await.unwrap();
        }
        for t in tasks {
            t.abort();
        }
    });
}

#[test]
fn shut_down_server_is_reported_removed() {
    if !netns::in_fresh_netns("shut_down_server_is_reported_removed") {
        return;
    }
    runtime().block_on(async {
        let watcher = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let mut browser = watcher.browse("Kitchen Speaker").unwrap();
        let (stop, port, _, task) = start(announced_server(
            "Kitchen Speaker",
            "127.0.0.1:0",
            Interfaces::Loopback,
        ));
        let t0 = Instant::now();
        match tokio::time::timeout(WAIT, browser.next())
            .await
            .expect("appears in time")
        {
            Some(BrowseEvent::Appeared(i)) => assert_eq!(i.port(), port),
            other => panic!("expected the server to appear, got {other:?}"),
        }
        println!("announcement seen by a running browser after {:?}", t0.elapsed());

        let t1 = Instant::now();
        stop.shutdown();
        task.await.unwrap().unwrap();
        loop {
            match tokio::time::timeout(WAIT, browser.next())
                .await
                .expect("removal in time")
            {
                Some(BrowseEvent::Disappeared(i)) => {
                    assert_eq!(i.name(), "Kitchen Speaker");
                    break;
                }
                Some(BrowseEvent::Updated(_)) => continue,
                other => panic!("expected the server to disappear, got {other:?}"),
            }
        }
        println!("goodbye latency (shutdown to removal): {:?}", t1.elapsed());
        assert!(browser.instances().is_empty());
    });
}

#[test]
fn a_balancer_over_mdns_takes_instances_as_they_are_announced_and_drops_them_on_goodbye() {
    if !netns::in_fresh_netns(
        "a_balancer_over_mdns_takes_instances_as_they_are_announced_and_drops_them_on_goodbye",
    ) {
        return;
    }
    runtime().block_on(async {
        let (stop_one, port_one, _, task_one) =
            start(announced_server("Mixer", "127.0.0.1:0", Interfaces::Loopback));
        let balancer = RpcClient::builder()
            .balanced(loopback("Mixer"))
            .await
            .expect("balancer over mDNS");
        assert_eq!(balancer.healthy_count(), 1);

        // A second instance announced later joins the rotation.
        let (stop_two, port_two, _, task_two) =
            start(announced_server("Mixer", "127.0.0.1:0", Interfaces::Loopback));
        let deadline = Instant::now() + WAIT;
        while balancer.healthy_count() < 2 {
            assert!(
                Instant::now() < deadline,
                "second instance not in rotation: {:?}",
                balancer.instances()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut ports = std::collections::BTreeSet::new();
        for s in balancer.instances() {
            ports.insert(s.addrs[0].port());
        }
        assert_eq!(ports, [port_one, port_two].into_iter().collect());

        // The first says goodbye (graceful shutdown): it leaves, and calls keep working.
        stop_one.shutdown();
        task_one.await.unwrap().unwrap();
        let deadline = Instant::now() + WAIT;
        while balancer.instances().len() > 1 {
            assert!(
                Instant::now() < deadline,
                "goodbye not applied: {:?}",
                balancer.instances()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..20 {
            let _: String = balancer.request("whoami", ()).await.unwrap();
        }
        assert_eq!(balancer.instances()[0].addrs[0].port(), port_two);
        stop_two.shutdown();
        task_two.await.unwrap().unwrap();
    });
}

#[test]
fn discovering_an_unknown_name_times_out_saying_what_where_how_long_and_what_else() {
    if !netns::in_fresh_netns(
        "discovering_an_unknown_name_times_out_saying_what_where_how_long_and_what_else",
    ) {
        return;
    }
    runtime().block_on(async {
        let (_stop, _, _, _task) = start(announced_server("Camera", "127.0.0.1:0", Interfaces::Loopback));
        // Find the camera first, so the failed search has something else to count.
        RpcClient::builder()
            .discover(loopback("Camera"))
            .await
            .expect("camera found");
        let t0 = Instant::now();
        let err = RpcClient::builder()
            .discover(loopback("Nonexistent").timeout(Duration::from_millis(1500)))
            .await
            .unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(1500));
        let msg = err.to_string();
        println!("{msg}");
        match err {
            Error::DiscoveryTimeout {
                name,
                interfaces,
                waited,
                other_names,
                failures,
            } => {
                assert_eq!(name, "Nonexistent");
                assert_eq!(interfaces, "the IPv4 loopback interface");
                assert_eq!(waited, Duration::from_millis(1500));
                assert_eq!(other_names, ["Camera"]);
                assert!(failures.is_empty(), "{failures:?}");
            }
            other => panic!("expected DiscoveryTimeout, got {other}"),
        }
        assert!(
            msg.contains("`Nonexistent`") && msg.contains("1.5s") && msg.contains("`Camera`"),
            "{msg}"
        );
    });
}

#[test]
fn an_instance_that_fails_to_connect_is_skipped_for_the_next() {
    if !netns::in_fresh_netns("an_instance_that_fails_to_connect_is_skipped_for_the_next") {
        return;
    }
    runtime().block_on(async {
        // A stale announcement: the right port, the wrong certificate.
        let (_stop, port, fp, _task) = start(
            RpcServer::builder()
                .bind("127.0.0.1:0")
                .identity(ServerIdentity::Ephemeral)
                .handler(handler_fn("ping", |_: Context, _: ()| async {
                    Ok::<_, Error>(())
                })),
        );
        let stale = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let _stale = stale
            .announce(
                Announcement::new("Printer", port)
                    .protocol_version(1)
                    .fingerprint("00".repeat(32))
                    .addresses(echostream::discovery::Addresses::Fixed(vec!["127.0.0.1"
                        .parse()
                        .unwrap()])),
            )
            .unwrap();
        let client_side = Discovery::shared(Interfaces::Loopback).unwrap();
        client_side
            .find("Printer", WAIT)
            .await
            .expect("the stale instance is seen first");

        // Only the stale one exists: the error lists why it was unusable.
        let err = RpcClient::builder()
            .discover(loopback("Printer").timeout(Duration::from_secs(4)))
            .await
            .unwrap_err();
        let msg = err.to_string();
        println!("{msg}");
        assert!(
            matches!(&err, Error::DiscoveryTimeout { failures, .. } if failures.len() == 1),
            "{msg}"
        );
        assert!(
            msg.contains("found but unusable") && msg.contains("identity"),
            "{msg}"
        );

        // A real instance appears: discovery skips the stale one and connects.
        let real = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let _real = real
            .announce(
                Announcement::new("Printer", port)
                    .protocol_version(1)
                    .fingerprint(fp.to_string())
                    .addresses(echostream::discovery::Addresses::Fixed(vec!["127.0.0.1"
                        .parse()
                        .unwrap()])),
            )
            .unwrap();
        let client = RpcClient::builder()
            .discover(loopback("Printer"))
            .await
            .expect("the real one");
        assert_eq!(client.server_fingerprint(), Some(fp));
        let () = client.request("ping", ()).await.unwrap();
    });
}

/// The python interpreter with zeroconf (`ECHOSTREAM_PYTHON`, set by `.ci/run`).
fn zeroconf_python(test: &str) -> Option<PathBuf> {
    let why = match std::env::var_os("ECHOSTREAM_PYTHON") {
        None => "ECHOSTREAM_PYTHON is not set (.ci/run sets it to .ci/venv/bin/python)".to_owned(),
        Some(p) => match Command::new(&p).args(["-c", "import zeroconf"]).output() {
            Ok(o) if o.status.success() => return Some(PathBuf::from(p)),
            Ok(o) => format!(
                "{p:?} cannot import zeroconf: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("cannot run {p:?}: {e}"),
        },
    };
    if std::env::var("ECHOSTREAM_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("{test}: {why}, and ECHOSTREAM_REQUIRE_PYTHON=1 forbids skipping");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/zeroconf_peer.py")
}

#[test]
fn python_zeroconf_lists_and_resolves_an_echostream_server_with_its_txt_keys() {
    const TEST: &str = "python_zeroconf_lists_and_resolves_an_echostream_server_with_its_txt_keys";
    let Some(python) = zeroconf_python(TEST) else {
        return;
    };
    if !netns::in_fresh_netns(TEST) {
        return;
    }
    runtime().block_on(async {
        let name = "Wohnzimmer Lautsprecher ü";
        let (_stop, port, fp, _task) = start(
            announced_server(name, "127.0.0.1:0", Interfaces::Loopback).discovery_txt("room", "living room"),
        );
        let out = tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(peer_script())
                .args(["resolve", name, "10"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "zeroconf did not resolve the server: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("zeroconf resolved: {stdout}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["fullname"], format!("{name}._echostream._udp.local."));
        assert_eq!(v["port"], port);
        assert_eq!(v["addresses"], serde_json::json!(["127.0.0.1"]));
        assert_eq!(v["txt"]["proto"], "1");
        assert_eq!(v["txt"]["fp"], fp.to_string());
        assert_eq!(v["txt"]["id"].as_str().map(str::len), Some(16));
        assert_eq!(v["txt"]["room"], "living room");
    });
}

#[test]
fn server_announced_by_python_zeroconf_is_browsed_and_discovered() {
    const TEST: &str = "server_announced_by_python_zeroconf_is_browsed_and_discovered";
    let Some(python) = zeroconf_python(TEST) else {
        return;
    };
    if !netns::in_fresh_netns(TEST) {
        return;
    }
    runtime().block_on(async {
        // A server without enable_discovery; zeroconf announces it instead.
        let (_stop, port, fp, _task) = start(
            RpcServer::builder()
                .bind("127.0.0.1:0")
                .identity(ServerIdentity::Ephemeral)
                .handler(handler_fn("ping", |_: Context, _: ()| async {
                    Ok::<_, Error>("pong")
                })),
        );
        let mut peer = announce_with_zeroconf(
            &python,
            &["announce", "Attic Speaker", &port.to_string(), &fp.to_string()],
        );

        let watcher = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let mut browser = watcher.browse("Attic Speaker").unwrap();
        let inst = match tokio::time::timeout(WAIT, browser.next())
            .await
            .expect("seen in time")
        {
            Some(BrowseEvent::Appeared(i)) => i,
            other => panic!("expected the zeroconf instance, got {other:?}"),
        };
        assert_eq!(inst.port(), port);
        assert_eq!(inst.host(), "zeroconf-peer.local.");
        assert_eq!(inst.fingerprint(), Some(fp.to_string()));
        assert_eq!(inst.instance_id(), Some("zeroconf-peer"));
        assert_eq!(inst.txt("room"), Some("attic"));
        assert_eq!(inst.addrs()[0].to_string(), format!("127.0.0.1:{port}"));

        let client = RpcClient::builder()
            .discover(loopback("Attic Speaker"))
            .await
            .expect("discovered");
        let pong: String = client.request("ping", ()).await.unwrap();
        assert_eq!(pong, "pong");

        // Closing its stdin makes the peer unregister: a goodbye from zeroconf.
        drop(peer.stdin.take());
        loop {
            match tokio::time::timeout(WAIT, browser.next())
                .await
                .expect("goodbye in time")
            {
                Some(BrowseEvent::Disappeared(_)) => break,
                Some(_) => continue,
                None => panic!("browsing stopped"),
            }
        }
        assert!(peer.wait().unwrap().success());
    });
}

#[test]
fn an_instance_that_dies_silently_disappears_when_its_records_expire() {
    const TEST: &str = "an_instance_that_dies_silently_disappears_when_its_records_expire";
    let Some(python) = zeroconf_python(TEST) else {
        return;
    };
    if !netns::in_fresh_netns(TEST) {
        return;
    }
    runtime().block_on(async {
        // mdns-sd does not let us shorten our own records' TTL (120 s), so an
        // independent responder announces with a 3 s TTL and is then killed:
        // no goodbye is ever sent.
        let mut peer = announce_with_zeroconf(
            &python,
            &["announce", "Short Lived", "4242", &"ab".repeat(32), "3"],
        );
        let watcher = Discovery::with_interfaces(Interfaces::Loopback).unwrap();
        let mut browser = watcher.browse("Short Lived").unwrap();
        match tokio::time::timeout(WAIT, browser.next())
            .await
            .expect("seen in time")
        {
            Some(BrowseEvent::Appeared(i)) => assert_eq!(i.port(), 4242),
            other => panic!("expected the instance, got {other:?}"),
        }
        peer.kill().unwrap();
        let _ = peer.wait();
        let t0 = std::time::Instant::now();
        loop {
            match tokio::time::timeout(WAIT, browser.next())
                .await
                .expect("removed once its records expired")
            {
                Some(BrowseEvent::Disappeared(_)) => break,
                Some(_) => continue,
                None => panic!("browsing stopped"),
            }
        }
        println!("silent death noticed after {:?} (TTL 3 s)", t0.elapsed());
    });
}

#[test]
fn discovery_and_connection_cross_a_veth_link_between_two_namespaces() {
    const TEST: &str = "discovery_and_connection_cross_a_veth_link_between_two_namespaces";
    let Some(host) = netns::two_hosts(TEST) else {
        return;
    };
    let veth = Interfaces::named([netns::VETH]);
    runtime().block_on(async {
        match host {
            netns::Host::A => {
                // Dual stack: announces the IPv4 and the link-local IPv6 address of es0.
                let (stop, _, _, task) = start(announced_server("Veth Speaker", "[::]:0", veth));
                tokio::task::spawn_blocking(netns::wait_for_host_b).await.unwrap();
                stop.shutdown();
                task.await.unwrap().unwrap();
            }
            netns::Host::B => {
                let t0 = Instant::now();
                let client = RpcClient::builder()
                    .discover(
                        DiscoverOptions::new("Veth Speaker")
                            .interfaces(veth.clone())
                            .timeout(WAIT),
                    )
                    .await
                    .expect("discovered across the link");
                println!("discovered across the veth link in {:?}", t0.elapsed());
                // IPv4 is tried first.
                assert_eq!(client.remote_addr().ip(), std::net::IpAddr::V4(netns::ADDR_A));
                let answer: String = client.request("whoami", ()).await.unwrap();
                let seen: std::net::SocketAddr = answer.parse().unwrap();
                assert_eq!(seen.ip().to_canonical(), std::net::IpAddr::V4(netns::ADDR_B));
                assert_eq!(seen.port(), client.local_addr().unwrap().port());

                // The link-local IPv6 address comes with the scope id of es0,
                // and a connection to it crosses the link too.
                let discovery = Discovery::shared(veth).unwrap();
                let mut browser = discovery.browse("Veth Speaker").unwrap();
                let deadline = Instant::now() + WAIT;
                let (inst, v6) = loop {
                    // A and AAAA records may resolve separately: wait for both.
                    let found = browser.instances().into_iter().find_map(|i| {
                        let v6 = i.addrs().iter().copied().find(|a| a.is_ipv6())?;
                        i.addrs().iter().any(|a| a.is_ipv4()).then_some((i, v6))
                    });
                    if let Some(f) = found {
                        break f;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no IPv6 address announced: {:?}",
                        browser.instances()
                    );
                    let _ = tokio::time::timeout(Duration::from_millis(200), browser.next()).await;
                };
                println!("announced addresses: {:?}", inst.addrs());
                assert!(inst.addrs()[0].is_ipv4(), "IPv4 first: {:?}", inst.addrs());
                match v6 {
                    std::net::SocketAddr::V6(a) => {
                        assert_eq!(a.ip().segments()[0], 0xfe80, "{a}");
                        assert_ne!(a.scope_id(), 0, "link-local without a scope id: {a}");
                    }
                    other => panic!("not IPv6: {other}"),
                }
                let fp: Fingerprint = inst.fingerprint().unwrap().parse().unwrap();
                let over_v6 = RpcClient::builder()
                    .pin(fp)
                    .connect(&v6.to_string())
                    .await
                    .expect("IPv6 link-local");
                let answer: String = over_v6.request("whoami", ()).await.unwrap();
                assert!(answer.starts_with("[fe80::"), "{answer}");
            }
        }
    });
}

/// Starts the python-zeroconf peer announcing with `args`, and waits until it says it has
/// registered.
fn announce_with_zeroconf(python: &std::path::Path, args: &[&str]) -> std::process::Child {
    let mut peer = Command::new(python)
        .arg(peer_script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(peer.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "registered");
    peer
}
