//! A real DNS server for the unicast DNS-SD tests: dnsmasq (Debian's
//! `dnsmasq-base`), started by a test inside the network namespace it made,
//! listening on 127.0.0.1 only, answering only the records given on its
//! command line (no upstream servers, no hosts file, no configuration file).
//!
//! Why dnsmasq: one small binary that serves PTR, SRV, TXT and A records
//! from command-line flags, with no zone files, no daemon user set-up and no
//! service to stop; unbound, knot and bind9 need a configuration tree and
//! zone files for the same. dnsmasq rereads only some files on SIGHUP (not
//! the records given as flags), so a test that changes records restarts it
//! on the same port ([`Dnsmasq::restart`]).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a dnsmasq started here runs (`timeout` kills it after that), well above the
/// netns helper's 120 s limit for a whole test.
const LIFETIME: &str = "300";

/// The DNS-SD service every test serves.
pub const SERVICE: &str = "_echostream._udp.example.internal";

/// One instance's records: PTR from [`SERVICE`], SRV to `host` and `port`,
/// TXT entries, and an A record for `host`.
#[derive(Clone, Debug)]
pub struct Record {
    pub label: String,
    pub host: String,
    pub addr: std::net::Ipv4Addr,
    pub port: u16,
    pub txt: Vec<String>,
}

impl Record {
    pub fn new(label: &str, port: u16, fingerprint: &str) -> Self {
        Record {
            label: label.to_owned(),
            host: format!("{label}.hosts.example.internal"),
            addr: std::net::Ipv4Addr::LOCALHOST,
            port,
            txt: vec![format!("fp={fingerprint}"), "proto=1".to_owned()],
        }
    }

    pub fn fullname(&self) -> String {
        format!("{}.{SERVICE}", self.label)
    }
}

/// A running dnsmasq; killed (and reaped) on drop.
pub struct Dnsmasq {
    child: Option<Child>,
    pub addr: SocketAddr,
    ttl: u32,
    /// Plain SRV records (owner, target host, port), with an A record (127.0.0.1) per target.
    plain_srv: Vec<(String, String, u16)>,
}

impl Dnsmasq {
    /// Starts dnsmasq on 127.0.0.1:`port` serving `records` with `ttl` seconds.
    pub fn start(port: u16, ttl: u32, records: &[Record]) -> Dnsmasq {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut d = Dnsmasq {
            child: None,
            addr,
            ttl,
            plain_srv: Vec::new(),
        };
        d.spawn(records);
        d
    }

    /// Starts dnsmasq serving only plain SRV records on `owner` (no PTR, no TXT), one per
    /// `(target host, port)`, as Kubernetes headless services and Consul serve them.
    pub fn start_plain_srv(port: u16, ttl: u32, owner: &str, targets: &[(&str, u16)]) -> Dnsmasq {
        let mut d = Dnsmasq {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ttl,
            plain_srv: targets
                .iter()
                .map(|(h, p)| (owner.to_owned(), (*h).to_owned(), *p))
                .collect(),
        };
        d.spawn(&[]);
        d
    }

    /// Stops it and starts it again on the same port with other records.
    pub fn restart(&mut self, records: &[Record]) {
        self.stop();
        self.spawn(records);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `timeout` passes SIGTERM on to dnsmasq and exits with it.
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    fn spawn(&mut self, records: &[Record]) {
        // Under `timeout`: if this test process is killed (the netns helper's time limit),
        // dnsmasq does not outlive it by more than LIFETIME in the namespace it keeps alive.
        let mut cmd = Command::new("timeout");
        cmd.args(["--signal=KILL", LIFETIME, &dnsmasq_path()]);
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--user=root",
            "--group=root",
            "--log-facility=-",
            "--log-queries",
            // Authoritative for the test zone: a name without records is NXDOMAIN, not REFUSED.
            "--local=/example.internal/",
            "--local=/cluster.local/",
        ])
        .arg(format!("--port={}", self.addr.port()))
        .arg(format!("--local-ttl={}", self.ttl))
        .arg(format!("--auth-ttl={}", self.ttl));
        for r in records {
            cmd.arg(format!("--ptr-record={SERVICE},{}", r.fullname()));
            cmd.arg(format!("--srv-host={},{},{},0,0", r.fullname(), r.host, r.port));
            let mut txt = format!("--txt-record={}", r.fullname());
            for t in &r.txt {
                txt.push(',');
                txt.push_str(t);
            }
            cmd.arg(txt);
            cmd.arg(format!("--host-record={},{}", r.host, r.addr));
        }
        for (owner, host, port) in &self.plain_srv {
            cmd.arg(format!("--srv-host={owner},{host},{port},0,0"));
            cmd.arg(format!("--host-record={host},127.0.0.1"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dnsmasq: {e}"));
        self.child = Some(child);
        wait_listening(self.addr);
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// dnsmasq's path: on PATH or in /usr/sbin (not on a non-root PATH on Debian).
pub fn dnsmasq_path() -> String {
    for p in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"] {
        if std::path::Path::new(p).exists() {
            return p.to_owned();
        }
    }
    "dnsmasq".to_owned()
}

/// True when dnsmasq can be run; otherwise a skip (or, with
/// `ECHOSTREAM_REQUIRE_NETNS=1`, a failure) naming what is missing.
pub fn available(test: &str) -> bool {
    match Command::new(dnsmasq_path())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => true,
        other => {
            let why = format!("cannot run dnsmasq ({other:?}): install Debian's dnsmasq-base");
            if std::env::var("ECHOSTREAM_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("{test}: {why} and ECHOSTREAM_REQUIRE_NETNS=1 forbids skipping");
            }
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Waits (bounded) until something accepts TCP connections on `addr`
/// (dnsmasq opens its TCP and UDP sockets together).
fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dnsmasq did not listen on {addr} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
