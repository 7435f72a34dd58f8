//! Runs a test inside network namespaces that the test creates itself, so
//! mDNS traffic never leaves them.
//!
//! One host: the test re-executes its own test binary under
//! `unshare --net sh -c 'ip link set lo up && exec <binary> --exact <test>'`
//! with [`INNER_ENV`] set; the inner run does the work, the outer run asserts
//! it passed. Two hosts: two `ip netns` namespaces joined by a veth pair, one
//! inner run in each, deleted afterwards (also when the test fails).
//!
//! Without root or `unshare` the tests print why and skip, unless
//! `ECHOSTREAM_REQUIRE_NETNS=1` (set by `.ci/run`), which makes that a failure.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set to the test name in the inner run.
pub const INNER_ENV: &str = "ECHOSTREAM_NETNS_INNER";
/// `a` or `b` in the inner runs of a two-host test.
pub const HOST_ENV: &str = "ECHOSTREAM_NETNS_HOST";
/// A file host B's run creates when it is done (host A waits for it).
pub const DONE_ENV: &str = "ECHOSTREAM_NETNS_DONE_FILE";
/// Makes a missing namespace facility a failure instead of a skip.
pub const REQUIRE_ENV: &str = "ECHOSTREAM_REQUIRE_NETNS";
/// How long an inner run may take before it is killed.
pub const INNER_LIMIT: Duration = Duration::from_secs(120);

/// Addresses of the two hosts on the veth link (only inside the namespaces).
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
/// Interface name of the veth end in each namespace.
pub const VETH: &str = "es0";

/// True in the inner run, which must do the test's work. In the outer run it
/// runs the inner one in a fresh namespace with only `lo` (up), asserts that
/// it passed, and returns false (also after printing a skip message).
pub fn in_fresh_netns(test: &str) -> bool {
    if std::env::var(INNER_ENV).as_deref() == Ok(test) {
        assert_isolated();
        return true;
    }
    if let Err(why) = can_unshare() {
        skip(test, &why);
        return false;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args(inner_args(test))
        .env(INNER_ENV, test)
        .env(OUTER_NS_ENV, own_netns());
    let out = run_bounded(cmd, test);
    assert_passed(test, "fresh namespace", &out);
    false
}

/// Which end of the link an inner run of [`two_hosts`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// Runs first and until host B is done (typically the server), at [`ADDR_A`].
    A,
    /// Runs its checks and finishes (typically the client), at [`ADDR_B`].
    B,
}

/// `Some(host)` in an inner run of a two-host test. In the outer run it makes
/// two namespaces joined by a veth pair (`10.231.0.1/24` and `10.231.0.2/24`
/// on `es0`), runs host A and then host B in them, waits for B, tells A to
/// stop, asserts both passed, deletes the namespaces and returns `None`.
pub fn two_hosts(test: &str) -> Option<Host> {
    if std::env::var(INNER_ENV).as_deref() == Ok(test) {
        assert_isolated();
        return match std::env::var(HOST_ENV).as_deref() {
            Ok("a") => Some(Host::A),
            Ok("b") => Some(Host::B),
            other => panic!("{HOST_ENV} must be a or b, got {other:?}"),
        };
    }
    if let Err(why) = can_unshare() {
        skip(test, &why);
        return None;
    }
    let link = Link::create().unwrap_or_else(|e| panic!("cannot create the veth namespaces: {e}"));
    let done = std::env::temp_dir().join(format!("{}-done", link.ns[1]));
    let _ = std::fs::remove_file(&done);
    let exe = std::env::current_exe().expect("test binary path");
    let spawn = |ns: &str, host: &str| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&exe)
            .args(inner_args(test))
            .env(INNER_ENV, test)
            .env(HOST_ENV, host)
            .env(OUTER_NS_ENV, own_netns())
            .env(DONE_ENV, &done);
        cmd
    };
    let a = std::thread::spawn({
        let cmd = spawn(&link.ns[0], "a");
        let test = test.to_owned();
        move || run_bounded(cmd, &test)
    });
    let out_b = run_bounded(spawn(&link.ns[1], "b"), test);
    // Host A waits for this file; create it even if B failed so A ends.
    std::fs::write(&done, b"done").expect("write the done file");
    let out_a = a.join().expect("host A runner");
    let _ = std::fs::remove_file(&done);
    drop(link);
    // Labels only: the veth addresses inside the namespaces made above.
    assert_passed(test, "host A (10.231.0.1)", &out_a);
    assert_passed(test, "host B (10.231.0.2)", &out_b);
    None
}

/// In host A's inner run: waits until host B has finished (bounded).
pub fn wait_for_host_b() {
    let path = PathBuf::from(std::env::var(DONE_ENV).expect("two-host inner run"));
    let deadline = Instant::now() + INNER_LIMIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "host B did not finish within {INNER_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inner_args(test: &str) -> Vec<String> {
    vec![
        "--exact".into(),
        test.into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

/// The outer run's network namespace, passed to the inner run.
const OUTER_NS_ENV: &str = "ECHOSTREAM_NETNS_OUTER";

fn own_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .expect("read /proc/self/ns/net")
        .display()
        .to_string()
}

/// The inner run must never share the outer run's network namespace, and its
/// namespace holds only what the helper made: `lo`, and `es0` for two hosts.
fn assert_isolated() {
    let outer = std::env::var(OUTER_NS_ENV).expect("the outer run names its namespace");
    let mine = own_netns();
    assert_ne!(
        mine, outer,
        "refusing to run mDNS in the outer run's network namespace"
    );
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("read /proc/self/net/dev");
    for name in dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim())
    {
        assert!(
            name == "lo" || name == VETH,
            "refusing to run mDNS: namespace {mine} has interface {name}"
        );
    }
}

fn can_unshare() -> Result<(), String> {
    match Command::new("unshare")
        .args(["--net", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "`unshare --net` failed ({}): {} (needs root or CAP_SYS_ADMIN)",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return Err(format!("cannot run `unshare`: {e}")),
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`ip -V` failed ({s})")),
        Err(e) => Err(format!("cannot run `ip` (iproute2): {e}")),
    }
}

fn skip(test: &str, why: &str) {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{test}: cannot create a network namespace ({why}) and {REQUIRE_ENV}=1 forbids skipping");
    }
    eprintln!("SKIPPED {test}: cannot create a network namespace: {why}. mDNS tests run only inside namespaces they create (run as root to include them).");
}

pub struct Output {
    status: Option<std::process::ExitStatus>,
    text: String,
}

/// Runs `cmd` with its output captured, killing it after [`INNER_LIMIT`].
fn run_bounded(mut cmd: Command, test: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{test}: cannot start the inner run: {e}"));
    let mut readers = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        readers.push(std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = pipe.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        }));
    }
    let deadline = Instant::now() + INNER_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{test}: waiting for the inner run: {e}"),
        }
    };
    let text = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    Output { status, text }
}

fn assert_passed(test: &str, where_: &str, out: &Output) {
    // Show the inner output in the outer test's captured output.
    println!("----- {test} in {where_} -----\n{}", out.text);
    match out.status {
        None => panic!("{test} in {where_}: killed after {INNER_LIMIT:?}"),
        Some(s) if !s.success() => panic!("{test} in {where_} failed ({s}); its output is above"),
        Some(_) => assert!(
            out.text.contains("1 passed"),
            "{test} in {where_}: the inner run did not run exactly this test"
        ),
    }
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Link {
    ns: [String; 2],
}

impl Link {
    fn create() -> Result<Link, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let base = format!("es-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let link = Link {
            ns: [format!("{base}-a"), format!("{base}-b")],
        };
        let [a, b] = &link.ns;
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        // Created directly inside the namespaces: nothing appears in the root one.
        ip(&[
            "link", "add", VETH, "netns", a, "type", "veth", "peer", "name", VETH, "netns", b,
        ])?;
        for (ns, addr) in [(a, ADDR_A), (b, ADDR_B)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", VETH])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", VETH, "up"])?;
        }
        // Like a LAN whose links have been up a while: wait until IPv6
        // duplicate address detection is over (a tentative link-local address
        // makes mdns-sd drop the interface until its next address check, 5 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        for ns in &link.ns {
            loop {
                let o = Command::new("ip")
                    .args(["-n", ns, "-6", "addr", "show", "dev", VETH])
                    .output()
                    .map_err(|e| format!("ip -6 addr: {e}"))?;
                let text = String::from_utf8_lossy(&o.stdout);
                if text.contains("fe80") && !text.contains("tentative") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "IPv6 link-local address of {VETH} in {ns} not ready: {text}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(link)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}
