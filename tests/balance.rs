//! The balanced client over real QUIC on 127.0.0.1: three in-process servers from a static
//! source, many concurrent callers, one server killed (its run task and endpoint dropped, its
//! connections closed) and started again on the same port with the same identity.
//!
//! Assertions are about behaviour (no failed idempotent call, traffic back on the restarted
//! instance, a roughly even spread, named errors, nothing hanging), never about speed.
#![cfg(feature = "discovery")]

mod common;

use common::*;
use echostream::discovery::{Instance, Source};
use echostream::prelude::*;
use echostream::rpc::{handler_fn, Balancer, CallOptions, Caller, ServerHandle};
use echostream::{DiscoverOptions, ServerIdentity};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LABELS: [&str; 3] = ["s0", "s1", "s2"];

/// A typed service, to call through the balancer with its generated client.
mod api {
    use echostream::prelude::*;

    /// Which instance answers.
    #[echostream::service("who")]
    pub trait Who {
        /// The instance label.
        #[idempotent]
        async fn name(&self) -> Result<String>;
    }
}

struct Named(&'static str);

impl api::Who for Named {
    async fn name(&self) -> Result<String> {
        Ok(self.0.to_owned())
    }
}
/// Concurrent callers of the idempotent method.
const CALLERS: usize = 64;
/// Calls each phase waits for (counted, not timed).
const PHASE_CALLS: u64 = 3_000;

/// `whoami` (idempotent) answers the instance label; `slow.write` (not idempotent) answers it
/// after 2 s.
fn instance(identity: &ServerIdentity, bind: &str, label: &'static str) -> Result<RpcServer> {
    RpcServer::builder()
        .bind(bind)
        .identity(identity.clone())
        .handler(handler_fn("whoami", move |_c: Context, _: ()| async move {
            Ok::<_, Error>(label.to_owned())
        }))
        .service(api::WhoServer::new(Named(label)))
        .handler(handler_fn("slow.write", move |_c: Context, _: ()| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, Error>(label.to_owned())
        }))
        .build()
}

struct Running {
    handle: ServerHandle,
    task: tokio::task::JoinHandle<Result<()>>,
}

fn run(server: RpcServer) -> Running {
    Running {
        handle: server.handle(),
        task: tokio::spawn(server.run()),
    }
}

/// A crash as far as the client can tell: the accept loop and endpoint are dropped and every
/// connection is closed at once, with calls in flight.
fn kill(server: Running) {
    server.task.abort();
    for p in server.handle.peers() {
        p.close("killed by the test");
    }
}

/// Starts the instance again on `addr` (the old endpoint may hold the port for a moment).
async fn restart(identity: &ServerIdentity, addr: SocketAddr, label: &'static str) -> Running {
    let deadline = Instant::now() + WAIT;
    loop {
        match instance(identity, &addr.to_string(), label) {
            Ok(s) => return run(s),
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot bind {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answers counted per instance label, and failures.
#[derive(Default)]
struct Tally {
    per_label: [AtomicU64; 3],
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn snapshot(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.per_label[i].load(Ordering::Relaxed))
    }
    fn total(&self) -> u64 {
        self.snapshot().iter().sum()
    }
}

async fn wait_for_calls(tally: &Tally, n: u64) {
    let target = tally.total() + n;
    common::wait_until("callers make progress", || tally.total() >= target).await;
}

fn diff(a: [u64; 3], b: [u64; 3]) -> [u64; 3] {
    [0, 1, 2].map(|i| b[i] - a[i])
}

async fn balanced_over(servers: &[SocketAddr], fp: &str) -> Balancer {
    balanced_with_idle(servers, fp, Duration::from_secs(5)).await
}

async fn balanced_with_idle(servers: &[SocketAddr], fp: &str, idle: Duration) -> Balancer {
    let source = Source::fixed(
        LABELS
            .iter()
            .zip(servers)
            .map(|(l, a)| Instance::at(*l, [*a]).with_fingerprint(fp)),
    );
    let balancer = RpcClient::builder()
        .idle_timeout(idle)
        // `whoami` may be repeated: a balancer retries it on another instance.
        .idempotent("whoami")
        .keep_alive(Some(Duration::from_millis(500)))
        .balanced(DiscoverOptions::from(source).timeout(WAIT))
        .await
        .expect("balancer");
    let b = balancer.clone();
    common::wait_until("all three instances in rotation", || b.healthy_count() == 3).await;
    balancer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balanced_idempotent_calls_survive_a_killed_and_restarted_instance_and_spread_evenly() {
    init_tracing();
    let identity = fixed_identity();
    let fp = identity.load().unwrap().fingerprint.to_string();
    let mut running: Vec<Option<Running>> = Vec::new();
    let mut addrs = Vec::new();
    for l in LABELS {
        let s = instance(&identity, "127.0.0.1:0", l).unwrap();
        addrs.push(s.local_addr());
        running.push(Some(run(s)));
    }
    let balancer = balanced_over(&addrs, &fp).await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (b, tally, stop) = (balancer.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r: Result<String> = b
                        .request_with("whoami", (), CallOptions::new().idempotent())
                        .await;
                    match r {
                        Ok(label) => {
                            let i = LABELS.iter().position(|l| *l == label).unwrap();
                            tally.per_label[i].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            tally.first_failure.lock().unwrap().get_or_insert(e.to_string());
                        }
                    }
                }
            })
        })
        .collect();

    // Phase 1: all healthy; the spread is roughly even.
    wait_for_calls(&tally, 200).await;
    let before = tally.snapshot();
    wait_for_calls(&tally, PHASE_CALLS).await;
    let even = diff(before, tally.snapshot());
    let total: u64 = even.iter().sum();
    println!("phase 1 (3 healthy): {even:?}");
    for (i, n) in even.iter().enumerate() {
        // An even share is a third; power of two choices keeps each well within ±50 %.
        assert!(
            *n * 6 >= total && *n * 2 <= total,
            "{} got {n} of {total} calls: {even:?}",
            LABELS[i]
        );
    }

    // Non-idempotent calls in flight everywhere when s2 dies: those on s2 fail, naming it.
    let slow: Vec<_> = (0..24)
        .map(|_| {
            let b = balancer.clone();
            tokio::spawn(async move { b.request::<_, String>("slow.write", ()).await })
        })
        .collect();
    let b = balancer.clone();
    common::wait_until("slow calls in flight on s2", || {
        b.instances().iter().any(|i| i.name == "s2" && i.outstanding > 0)
    })
    .await;
    kill(running[2].take().unwrap());
    let s2 = format!("instance `s2` at {}", addrs[2]);
    let mut failed_on_s2 = 0;
    for call in slow {
        match tokio::time::timeout(WAIT, call)
            .await
            .expect("no call hangs")
            .unwrap()
        {
            Ok(label) => assert_ne!(label, "s2", "s2 was killed before answering"),
            Err(e) => {
                assert!(e.to_string().contains(&s2), "the error names the instance: {e}");
                failed_on_s2 += 1;
            }
        }
    }
    assert!(failed_on_s2 > 0, "some slow call was in flight on s2");

    // Phase 2: s2 is out of rotation, the others carry every call.
    let b = balancer.clone();
    common::wait_until("s2 out of rotation", || b.healthy_count() == 2).await;
    let before = tally.snapshot();
    wait_for_calls(&tally, PHASE_CALLS).await;
    let down = diff(before, tally.snapshot());
    println!("phase 2 (s2 down): {down:?}");
    assert_eq!(down[2], 0, "no answer from a dead instance");
    let stats = balancer.instances();
    let s2_stats = stats.iter().find(|i| i.name == "s2").unwrap();
    assert!(!s2_stats.healthy);
    assert!(s2_stats.ejections >= 1);
    assert!(s2_stats.last_error.is_some());

    // Phase 3: s2 restarted on the same port: probed back into rotation, traffic again.
    running[2] = Some(restart(&identity, addrs[2], "s2").await);
    let restarted = Instant::now();
    let b = balancer.clone();
    common::wait_until("s2 back in rotation", || b.healthy_count() == 3).await;
    // Information only (probe backoff tops out at 2 s): never asserted.
    println!("s2 back in rotation {:?} after its restart", restarted.elapsed());
    let before = tally.snapshot();
    wait_for_calls(&tally, PHASE_CALLS).await;
    let back = diff(before, tally.snapshot());
    println!("phase 3 (s2 back): {back:?}");
    let total: u64 = back.iter().sum();
    assert!(back[2] * 6 >= total, "s2 gets its share again: {back:?}");

    stop.store(true, Ordering::Relaxed);
    for c in callers {
        tokio::time::timeout(WAIT, c).await.expect("callers end").unwrap();
    }
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "idempotent calls failed; first: {:?}",
        tally.first_failure.lock().unwrap()
    );
    for r in running.into_iter().flatten() {
        r.handle.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_keeps_one_instance_and_typed_clients_work_over_the_balancer() {
    init_tracing();
    let identity = fixed_identity();
    let fp = identity.load().unwrap().fingerprint.to_string();
    let servers: Vec<RpcServer> = LABELS
        .iter()
        .map(|l| instance(&identity, "127.0.0.1:0", l).unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
    let running: Vec<Running> = servers.into_iter().map(run).collect();
    let balancer = balanced_over(&addrs, &fp).await;

    // Every call through one pinned client reaches the same instance.
    let pinned = balancer.pin().await.unwrap();
    let first: String = pinned.request("whoami", ()).await.unwrap();
    for _ in 0..20 {
        let again: String = pinned.request("whoami", ()).await.unwrap();
        assert_eq!(again, first);
    }
    // The health service of each server is reachable through the `Caller` methods.
    assert_eq!(
        balancer.health("").await.unwrap(),
        echostream::rpc::health::HealthStatus::Serving
    );
    // Calls through the balancer reach every instance, plain or through a generated client.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        seen.insert(balancer.request::<_, String>("whoami", ()).await.unwrap());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let who = api::WhoClient::new(balancer.clone());
    let mut typed = std::collections::BTreeSet::new();
    for _ in 0..300 {
        typed.insert(who.name().await.unwrap());
    }
    assert_eq!(typed.len(), 3, "{typed:?}");

    // A graceful shutdown (NOT_SERVING first) takes the instance out without failed calls.
    running[0].handle.shutdown();
    let b = balancer.clone();
    common::wait_until("s0 out of rotation", || b.healthy_count() == 2).await;
    for _ in 0..100 {
        let label: String = balancer.request("whoami", ()).await.unwrap();
        assert_ne!(label, "s0");
    }
    for r in running {
        r.handle.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_with_no_reachable_instance_fails_naming_them() {
    init_tracing();
    // A bound UDP socket that never answers: a QUIC handshake to it gets nothing back.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let fp = ServerIdentity::Ephemeral.load().unwrap().fingerprint.to_string();
    let source = Source::fixed([Instance::at("ghost", [addr]).with_fingerprint(fp)]);
    let err = RpcClient::builder()
        .connect_timeout(Duration::from_millis(300))
        .balanced(DiscoverOptions::from(source).timeout(Duration::from_secs(2)))
        .await
        .expect_err("nothing answers");
    let text = err.to_string();
    assert!(text.contains(&format!("instance `ghost` at {addr}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balanced_idempotent_calls_survive_an_instance_that_goes_silent_and_comes_back() {
    init_tracing();
    // s2 sits behind a relay that the test cuts: its packets vanish, as when a host crashes or
    // its network goes away (no CONNECTION_CLOSE, no ICMP). Keep-alives then find the
    // connection dead within the idle timeout.
    let identity = fixed_identity();
    let fp = identity.load().unwrap().fingerprint.to_string();
    let mut running = Vec::new();
    let mut addrs = Vec::new();
    for l in LABELS {
        let s = instance(&identity, "127.0.0.1:0", l).unwrap();
        addrs.push(s.local_addr());
        running.push(run(s));
    }
    let relay = echostream::testing::Relay::start(addrs[2], echostream::testing::Impairment::none(), 7)
        .await
        .unwrap();
    addrs[2] = relay.local_addr();
    let balancer = balanced_with_idle(&addrs, &fp, Duration::from_secs(2)).await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (b, tally, stop) = (balancer.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match b.request::<_, String>("whoami", ()).await {
                        Ok(label) => {
                            let i = LABELS.iter().position(|l| *l == label).unwrap();
                            tally.per_label[i].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            tally.first_failure.lock().unwrap().get_or_insert(e.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    wait_for_calls(&tally, PHASE_CALLS).await;

    relay.set_cut(true);
    let b = balancer.clone();
    common::wait_until("the silent instance leaves the rotation", || {
        b.healthy_count() == 2
    })
    .await;
    let before = tally.snapshot();
    wait_for_calls(&tally, PHASE_CALLS).await;
    let down = diff(before, tally.snapshot());
    println!("s2 silent: {down:?}");
    assert_eq!(down[2], 0);

    relay.set_cut(false);
    let b = balancer.clone();
    common::wait_until("s2 back in rotation", || b.healthy_count() == 3).await;
    let before = tally.snapshot();
    wait_for_calls(&tally, PHASE_CALLS).await;
    let back = diff(before, tally.snapshot());
    println!("s2 reachable again: {back:?}");
    assert!(back[2] > 0, "s2 gets calls again: {back:?}");

    stop.store(true, Ordering::Relaxed);
    for c in callers {
        tokio::time::timeout(WAIT, c).await.expect("callers end").unwrap();
    }
    // The method is declared idempotent on the builder: retried, never failed.
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "first failure: {:?}",
        tally.first_failure.lock().unwrap()
    );
    for r in running {
        r.handle.shutdown();
    }
}
