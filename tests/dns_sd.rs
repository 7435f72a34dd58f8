//! Unicast DNS-SD end to end: a real DNS server (dnsmasq) serving PTR, SRV,
//! TXT and A records for EchoStream servers on 127.0.0.1, read by
//! `DnsSd`, `Source::watch` and `RpcClient::discover("dns-sd:...")`.
//!
//! Every test runs inside a network namespace it creates (the helper of
//! `tests/discovery.rs`): dnsmasq listens on 127.0.0.1 there and nothing is
//! sent to any other address.
#![cfg(feature = "dns-sd")]

mod common;
#[path = "dns/mod.rs"]
mod dns;
#[path = "../echostream-discovery/tests/netns/mod.rs"]
mod netns;

use dns::{Dnsmasq, Record, SERVICE};
use echostream::discovery::{BrowseEvent, DiscoveryError, DnsSd, Source, Watcher};
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::{ClientTrust, DiscoverOptions, ServerIdentity};
use std::time::Duration;

/// Bound for anything awaited (shared CI machines).
const WAIT: Duration = Duration::from_secs(20);
/// The port dnsmasq listens on inside the namespace.
const DNS_PORT: u16 = 5300;

fn runtime() -> tokio::runtime::Runtime {
    common::init_tracing();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the test in a fresh namespace with dnsmasq available; false in the outer run.
fn inside(test: &str) -> bool {
    netns::in_fresh_netns(test) && dns::available(test)
}

/// A server on 127.0.0.1:0 whose `whoami` answers `name`.
fn server(name: &'static str) -> common::TestServer {
    common::serve(
        RpcServer::builder().handler(handler_fn("whoami", move |_c: Context, _: ()| async move {
            Ok::<_, Error>(name.to_owned())
        })),
    )
}

fn port(s: &common::TestServer) -> u16 {
    s.addr.parse::<std::net::SocketAddr>().unwrap().port()
}

fn service(dns: &Dnsmasq) -> DnsSd {
    DnsSd::new(SERVICE)
        .server(dns.addr)
        .timeout(Duration::from_secs(2))
        .refresh_bounds(Duration::from_millis(200), Duration::from_secs(30))
}

/// The next event of `w` (errors fail the test), within [`WAIT`].
async fn next_event(w: &mut Watcher) -> BrowseEvent {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("the source failed: {e}"),
        Ok(None) => panic!("the source stopped"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

#[test]
fn dns_sd_finds_several_instances_with_ports_txt_and_connects_pinning_the_fingerprint() {
    if !inside("dns_sd_finds_several_instances_with_ports_txt_and_connects_pinning_the_fingerprint") {
        return;
    }
    runtime().block_on(async {
        let servers = [server("one"), server("two"), server("three")];
        let records: Vec<Record> = ["one", "two", "three"]
            .iter()
            .zip(&servers)
            .map(|(l, s)| Record::new(l, port(s), &s.fingerprint.to_string()))
            .collect();
        let mut records = records;
        records[1].txt.push("room=kitchen".into());
        let dns = Dnsmasq::start(DNS_PORT, 60, &records);

        let found = service(&dns).lookup().await.expect("lookup");
        let mut names: Vec<&str> = found.iter().map(|i| i.name()).collect();
        names.sort();
        assert_eq!(names, ["one", "three", "two"]);
        for (label, s) in ["one", "two", "three"].iter().zip(&servers) {
            let i = found.iter().find(|i| i.name() == *label).unwrap();
            assert_eq!(i.port(), port(s));
            assert_eq!(i.addrs(), &[s.addr.parse().unwrap()]);
            assert_eq!(i.fingerprint(), Some(s.fingerprint.to_string()), "{i:?}");
            assert_eq!(i.protocol_version(), Some(1));
            assert_eq!(i.fullname(), format!("{label}.{SERVICE}."));
            assert_eq!(i.host(), format!("{label}.hosts.example.internal."));
        }
        let two = found.iter().find(|i| i.name() == "two").unwrap();
        assert_eq!(two.txt("room"), Some("kitchen"));

        // The sketch's form with a `dns-sd:` name and a given server; the fingerprint in TXT
        // is pinned, so the connection proves it matched.
        let client = RpcClient::builder()
            .discover(
                DiscoverOptions::new(format!("dns-sd:{SERVICE}"))
                    .dns_server(dns.addr)
                    .timeout(WAIT),
            )
            .await
            .expect("discovered over DNS-SD");
        let answer: String = client.request("whoami", ()).await.unwrap();
        let s = servers
            .iter()
            .find(|s| Some(s.fingerprint) == client.server_fingerprint())
            .unwrap();
        assert_eq!(client.remote_addr(), s.addr.parse().unwrap());
        assert!(["one", "two", "three"].contains(&answer.as_str()));

        // All three, from a `Source` given explicitly.
        let all = RpcClient::builder()
            .discover_all(DiscoverOptions::from(Source::DnsSd(service(&dns))).timeout(Duration::from_secs(2)))
            .await
            .expect("all connect");
        assert_eq!(all.len(), 3);
    });
}

#[test]
fn dns_sd_instance_with_a_wrong_fingerprint_in_txt_is_refused() {
    if !inside("dns_sd_instance_with_a_wrong_fingerprint_in_txt_is_refused") {
        return;
    }
    runtime().block_on(async {
        let s = server("one");
        let other = ServerIdentity::Ephemeral.load().unwrap().fingerprint;
        let dns = Dnsmasq::start(DNS_PORT, 60, &[Record::new("one", port(&s), &other.to_string())]);
        let err = RpcClient::builder()
            .discover(
                DiscoverOptions::new(format!("dns-sd:{SERVICE}"))
                    .dns_server(dns.addr)
                    .timeout(Duration::from_secs(3)),
            )
            .await
            .expect_err("the pinned fingerprint does not match");
        let text = err.to_string();
        assert!(text.contains(&format!("dns-sd:{SERVICE}")), "{text}");
        assert!(text.contains(&s.addr), "{text}");
    });
}

#[test]
fn dns_sd_watcher_sees_a_changed_record_once_its_ttl_expires() {
    if !inside("dns_sd_watcher_sees_a_changed_record_once_its_ttl_expires") {
        return;
    }
    runtime().block_on(async {
        let (a, b) = (server("a"), server("b"));
        let ra = Record::new("a", port(&a), &a.fingerprint.to_string());
        let rb = Record::new("b", 40000, &b.fingerprint.to_string());
        // TTL 1 s; the refresh bounds are 0.2 s and 30 s: only the TTL brings the change in time.
        let mut dns = Dnsmasq::start(DNS_PORT, 1, &[ra.clone(), rb.clone()]);
        let mut w = Source::DnsSd(service(&dns)).watch().unwrap();
        let mut seen = [next_event(&mut w).await, next_event(&mut w).await];
        seen.sort_by(|x, y| x.instance().name().cmp(y.instance().name()));
        assert!(matches!(&seen[0], BrowseEvent::Appeared(i) if i.name() == "a"));
        assert!(matches!(&seen[1], BrowseEvent::Appeared(i) if i.port() == 40000));

        // b moves to its real port and gains a TXT entry.
        let mut rb2 = Record::new("b", port(&b), &b.fingerprint.to_string());
        rb2.txt.push("version=2".into());
        dns.restart(&[ra, rb2]);
        match next_event(&mut w).await {
            BrowseEvent::Updated(i) => {
                assert_eq!(i.name(), "b");
                assert_eq!(i.port(), port(&b));
                assert_eq!(i.txt("version"), Some("2"));
            }
            other => panic!("expected b updated, got {other:?}"),
        }
        assert_eq!(w.instances().len(), 2);
    });
}

#[test]
fn dns_sd_watcher_reports_an_instance_removed_from_dns() {
    if !inside("dns_sd_watcher_reports_an_instance_removed_from_dns") {
        return;
    }
    runtime().block_on(async {
        let (a, b) = (server("a"), server("b"));
        let ra = Record::new("a", port(&a), &a.fingerprint.to_string());
        let rb = Record::new("b", port(&b), &b.fingerprint.to_string());
        let mut dns = Dnsmasq::start(DNS_PORT, 0, &[ra.clone(), rb]);
        let mut w = Source::DnsSd(service(&dns)).watch().unwrap();
        for _ in 0..2 {
            assert!(matches!(next_event(&mut w).await, BrowseEvent::Appeared(_)));
        }
        dns.restart(&[ra]);
        match next_event(&mut w).await {
            BrowseEvent::Disappeared(i) => assert_eq!(i.name(), "b"),
            other => panic!("expected b removed, got {other:?}"),
        }
        let left: Vec<String> = w.instances().iter().map(|i| i.name().to_owned()).collect();
        assert_eq!(left, ["a"]);

        // The last one gone: the service has no PTR records left, the set is empty.
        dns.restart(&[]);
        match next_event(&mut w).await {
            BrowseEvent::Disappeared(i) => assert_eq!(i.name(), "a"),
            other => panic!("expected a removed, got {other:?}"),
        }
        assert!(w.instances().is_empty());
    });
}

#[test]
fn dns_sd_resolver_timeout_names_the_name_and_the_server() {
    if !inside("dns_sd_resolver_timeout_names_the_name_and_the_server") {
        return;
    }
    runtime().block_on(async {
        // A UDP socket that reads queries and never answers (and no TCP listener): the
        // resolver must give up after its timeout.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let d = DnsSd::new(SERVICE)
            .server(addr)
            .timeout(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(WAIT, d.lookup())
            .await
            .expect("the lookup ends")
            .expect_err("nothing answers");
        println!("resolver error after {:?}: {err}", started.elapsed());
        match &err {
            DiscoveryError::Dns {
                name, record, server, ..
            } => {
                assert_eq!(name, &format!("{SERVICE}."));
                assert_eq!(*record, "PTR");
                assert_eq!(server, &format!("DNS server {addr}"));
            }
            other => panic!("expected a DNS error, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(SERVICE) && text.contains(&addr.to_string()),
            "{text}"
        );

        // Through discover: the DNS error is part of the final error.
        let err = RpcClient::builder()
            .discover(DiscoverOptions::from(Source::DnsSd(d.clone())).timeout(Duration::from_secs(2)))
            .await
            .expect_err("nothing answers");
        let text = err.to_string();
        assert!(
            text.contains(SERVICE) && text.contains(&addr.to_string()),
            "{text}"
        );

        // A watcher reports the failure as an error event and keeps going.
        let mut w = Source::DnsSd(d).watch().unwrap();
        match tokio::time::timeout(WAIT, w.next()).await {
            Ok(Some(Err(DiscoveryError::Dns { server, .. }))) => {
                assert_eq!(server, format!("DNS server {addr}"))
            }
            other => panic!("expected a DNS error event, got {other:?}"),
        }
        drop(silent);

        // Nothing bound at all on the port (refused rather than silent): the same kind of error.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = tokio::time::timeout(
            WAIT,
            DnsSd::new(SERVICE)
                .server(closed)
                .timeout(Duration::from_millis(500))
                .lookup(),
        )
        .await
        .expect("the lookup ends")
        .expect_err("nothing listens");
        println!("with nothing listening: {err}");
        match &err {
            DiscoveryError::Dns { name, server, .. } => {
                assert_eq!(name, &format!("{SERVICE}."));
                assert_eq!(server, &format!("DNS server {closed}"));
            }
            other => panic!("expected a DNS error, got {other:?}"),
        }
    });
}

#[test]
fn a_balancer_over_dns_sd_follows_instances_added_and_removed_in_dns() {
    if !inside("a_balancer_over_dns_sd_follows_instances_added_and_removed_in_dns") {
        return;
    }
    runtime().block_on(async {
        let servers = [server("one"), server("two"), server("three")];
        let records: Vec<Record> = ["one", "two", "three"]
            .iter()
            .zip(&servers)
            .map(|(l, s)| Record::new(l, port(s), &s.fingerprint.to_string()))
            .collect();
        let mut dns = Dnsmasq::start(DNS_PORT, 1, &records[..2]);
        let balancer = RpcClient::builder()
            .balanced(
                DiscoverOptions::new(format!("dns-sd:{SERVICE}"))
                    .dns_server(dns.addr)
                    .timeout(WAIT),
            )
            .await
            .expect("balancer over DNS-SD");
        let b = balancer.clone();
        common::wait_until("two instances in rotation", || b.healthy_count() == 2).await;

        // A third instance appears in DNS: it joins the rotation and gets calls.
        dns.restart(&records);
        let b = balancer.clone();
        common::wait_until("three instances in rotation", || b.healthy_count() == 3).await;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            seen.insert(balancer.request::<_, String>("whoami", ()).await.unwrap());
        }
        assert_eq!(seen.len(), 3, "{seen:?}");

        // The first is removed from DNS: it leaves, and no call reaches it any more.
        dns.restart(&records[1..]);
        let b = balancer.clone();
        common::wait_until("instance one forgotten", || b.instances().len() == 2).await;
        for _ in 0..100 {
            let who: String = balancer.request("whoami", ()).await.unwrap();
            assert_ne!(who, "one");
        }
    });
}

#[test]
fn plain_srv_records_as_a_kubernetes_headless_service_serves_them_are_instances() {
    if !inside("plain_srv_records_as_a_kubernetes_headless_service_serves_them_are_instances") {
        return;
    }
    runtime().block_on(async {
        let (a, b) = (server("pod-a"), server("pod-b"));
        // `_PORT-NAME._udp.SERVICE.NAMESPACE.svc.cluster.local`: SRV records only, one per pod.
        let name = "_rpc._udp.audio.default.svc.cluster.local";
        let dns = Dnsmasq::start_plain_srv(
            DNS_PORT,
            5,
            name,
            &[
                ("pod-a.audio.default.svc.cluster.local", port(&a)),
                ("pod-b.audio.default.svc.cluster.local", port(&b)),
            ],
        );
        let d = DnsSd::new(name).server(dns.addr);
        let mut found: Vec<(String, u16)> = d
            .lookup()
            .await
            .unwrap()
            .iter()
            .map(|i| (i.name().to_owned(), i.port()))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [("pod-a".to_owned(), port(&a)), ("pod-b".to_owned(), port(&b))]
        );

        // No TXT, so no fingerprint to pin: without other trust nothing is usable, and the
        // error says why.
        let err = RpcClient::builder()
            .discover(DiscoverOptions::from(Source::DnsSd(d.clone())).timeout(Duration::from_secs(2)))
            .await
            .expect_err("no fingerprint to pin");
        assert!(err.to_string().contains("no certificate fingerprint"), "{err}");

        // With the fingerprints pinned by configuration, a balancer uses both pods.
        let trust = ClientTrust::Pinned(vec![a.fingerprint, b.fingerprint]);
        let balancer = RpcClient::builder()
            .balanced(DiscoverOptions::from(Source::DnsSd(d)).trust(trust).timeout(WAIT))
            .await
            .expect("balancer over plain SRV records");
        let bal = balancer.clone();
        common::wait_until("both pods in rotation", || bal.healthy_count() == 2).await;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(balancer.request::<_, String>("whoami", ()).await.unwrap());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["pod-a", "pod-b"]);
    });
}
