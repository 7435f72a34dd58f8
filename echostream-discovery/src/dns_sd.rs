//! Unicast DNS-SD (RFC 6763 over ordinary DNS), with hickory-resolver.
//!
//! A service such as `_echostream._udp.example.internal.` lists its instances
//! as PTR records; each instance has an SRV record (target host and port), a
//! TXT record (`fp`, `proto`, application keys) and the target's A/AAAA
//! records. Where the service name has no PTR records but SRV records of
//! its own, as Consul's DNS interface and Kubernetes headless services serve
//! them, each SRV record is an instance (without TXT; see the README).
//!
//! A [`DnsWatcher`] is fed by one task per watch that resolves the whole set,
//! publishes it in a `watch` channel (the latest state only: nothing queues),
//! and sleeps until the shortest TTL seen expires, bounded by
//! [`DnsSd::refresh_bounds`]. The resolver's cache is cleared before each
//! refresh, so the maximum bound holds even for records with long TTLs. A
//! failed refresh keeps the instances known and is reported once as an
//! error; the next attempt waits the minimum bound, doubling per failure up
//! to the maximum.
//!
//! Everything a DNS server sends is untrusted: at most [`MAX_INSTANCES`]
//! instances, [`MAX_ADDRS`] addresses and [`MAX_TXT_ENTRIES`] TXT entries per
//! instance are kept; the rest is ignored (and logged).

use crate::instance::{dns_socket_addr, instance_label_bytes};
use crate::{BrowseEvent, DiscoveryError, Instance};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// Instances kept from one PTR answer; more are ignored.
pub const MAX_INSTANCES: usize = 256;
/// Addresses kept per instance.
pub const MAX_ADDRS: usize = 16;
/// TXT entries kept per instance.
pub const MAX_TXT_ENTRIES: usize = 64;
/// Default time one DNS query may take.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(3);
/// Default refresh bounds: re-query when the shortest TTL expires, but not
/// sooner than 1 s nor later than 60 s.
pub const DEFAULT_REFRESH_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// How long a service with no instances (no PTR records) waits before the next query,
/// within the refresh bounds.
const EMPTY_RETRY: Duration = Duration::from_secs(5);

/// A unicast DNS-SD service to follow: its name, the DNS server to ask (or
/// the system resolver), the query timeout and the refresh bounds.
///
/// ```no_run
/// # async fn doc() -> Result<(), echostream_discovery::DiscoveryError> {
/// use echostream_discovery::DnsSd;
/// // An example address in a `no_run` example: compiled, never contacted.
/// let service = DnsSd::new("_echostream._udp.example.internal").server("10.0.0.2:53".parse().unwrap());
/// for instance in service.lookup().await? {
///     println!("{} at {:?}", instance.name(), instance.addrs());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DnsSd {
    service: String,
    server: Option<SocketAddr>,
    timeout: Duration,
    min_refresh: Duration,
    max_refresh: Duration,
}

impl DnsSd {
    /// The service `service` (a fully qualified name: a final `.` is added
    /// when missing, no search domains apply), asked of the system resolver.
    pub fn new(service: impl Into<String>) -> Self {
        let mut service = service.into();
        if !service.ends_with('.') {
            service.push('.');
        }
        DnsSd {
            service,
            server: None,
            timeout: DEFAULT_DNS_TIMEOUT,
            min_refresh: DEFAULT_REFRESH_BOUNDS.0,
            max_refresh: DEFAULT_REFRESH_BOUNDS.1,
        }
    }

    /// Asks this DNS server (UDP, and TCP for truncated answers) instead of
    /// the system resolver.
    pub fn server(mut self, addr: SocketAddr) -> Self {
        self.server = Some(addr);
        self
    }

    /// How long one query may take before it fails with
    /// [`DiscoveryError::Dns`] (default 3 s; one attempt per server).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Re-query when the shortest TTL of the answers expires, but never
    /// sooner than `min` nor later than `max` (default 1 s and 60 s).
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_refresh = min.max(Duration::from_millis(10));
        self.max_refresh = max.max(self.min_refresh);
        self
    }

    /// The service name, fully qualified (`_echostream._udp.example.internal.`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The server asked, in words: `DNS server 10.0.0.2:53` (an example in text, never
    /// contacted) or `the system resolver`.
    pub fn server_description(&self) -> String {
        match self.server {
            Some(a) => format!("DNS server {a}"),
            None => "the system resolver".to_owned(),
        }
    }

    /// Resolves the service once: every instance with an SRV record and at
    /// least one address, sorted by name. A service without PTR records has
    /// no instances (`Ok` and empty).
    pub async fn lookup(&self) -> Result<Vec<Instance>, DiscoveryError> {
        let r = Resolving::new(self)?;
        let (found, _) = r.resolve().await?;
        Ok(found.into_values().collect())
    }

    pub(crate) fn watch(&self) -> Result<DnsWatcher, DiscoveryError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DiscoveryError::Resolver {
            server: self.server_description(),
            reason: "DNS-SD needs a tokio runtime: call it inside one".into(),
        })?;
        let resolving = Resolving::new(self)?;
        let (tx, rx) = watch::channel(Snapshot::default());
        let bounds = (self.min_refresh, self.max_refresh);
        runtime.spawn(refresh_loop(resolving, bounds, tx));
        Ok(DnsWatcher {
            rx,
            view: BTreeMap::new(),
            errors_seen: 0,
            pending: VecDeque::new(),
        })
    }
}

/// What the refresh task publishes: the latest state, nothing queued.
#[derive(Default)]
struct Snapshot {
    instances: BTreeMap<String, Instance>,
    /// Set by the first successful refresh.
    resolved: bool,
    /// Failed refreshes so far, and the last one's error.
    errors: u64,
    last_error: Option<DiscoveryError>,
}

/// A resolver and the names it asks, for one watch.
struct Resolving {
    resolver: TokioResolver,
    service: Name,
    server: String,
    timeout: Duration,
}

impl Resolving {
    fn new(d: &DnsSd) -> Result<Self, DiscoveryError> {
        let setup_err = |reason: String| DiscoveryError::Resolver {
            server: d.server_description(),
            reason,
        };
        let service = Name::from_utf8(&d.service).map_err(|e| DiscoveryError::InvalidName {
            name: d.service.clone(),
            reason: format!("not a DNS name: {e}"),
        })?;
        let (config, mut opts, server) = match d.server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                let mut opts = hickory_resolver::config::ResolverOpts::default();
                // Only the server given answers: not the hosts file.
                opts.use_hosts_file = ResolveHosts::Never;
                (
                    ResolverConfig::from_name_servers(vec![ns]),
                    opts,
                    d.server_description(),
                )
            }
            None => {
                let (config, opts) = hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| setup_err(format!("cannot read the system DNS configuration: {e}")))?;
                let servers: Vec<String> = config
                    .name_servers()
                    .iter()
                    .map(|ns| {
                        let port = ns.connections.first().map_or(53, |c| c.port);
                        SocketAddr::new(ns.ip, port).to_string()
                    })
                    .collect();
                let server = format!("the system resolver (name servers {})", servers.join(", "));
                (config, opts, server)
            }
        };
        opts.timeout = d.timeout;
        opts.attempts = 1;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| setup_err(e.to_string()))?;
        Ok(Resolving {
            resolver,
            service,
            server,
            timeout: d.timeout,
        })
    }

    fn error(&self, name: &Name, record: &'static str, e: &NetError) -> DiscoveryError {
        let reason = match e {
            NetError::Timeout => format!("no answer within {:?}", self.timeout),
            e => e.to_string(),
        };
        DiscoveryError::Dns {
            name: name.to_utf8(),
            record,
            server: self.server.clone(),
            reason,
        }
    }

    /// Every instance of the service (by lowercased full name) and the
    /// shortest TTL of the answers, in seconds.
    async fn resolve(&self) -> Result<(BTreeMap<String, Instance>, u32), DiscoveryError> {
        // Fresh answers each time: the refresh interval, not the cache, decides.
        self.resolver.clear_cache();
        let ptr = match self.resolver.lookup(self.service.clone(), RecordType::PTR).await {
            Ok(l) => l,
            // No DNS-SD listing: perhaps plain SRV records (Consul, Kubernetes).
            Err(e) if e.is_no_records_found() => return self.resolve_plain_srv().await,
            Err(e) => return Err(self.error(&self.service, "PTR", &e)),
        };
        let mut ttl = u32::MAX;
        let mut names: Vec<Name> = Vec::new();
        for r in ptr.answers() {
            let RData::PTR(p) = &r.data else { continue };
            if names.len() == MAX_INSTANCES {
                tracing::warn!(service = %self.service, limit = MAX_INSTANCES, "DNS-SD: more instances than the limit; the rest are ignored");
                break;
            }
            ttl = ttl.min(r.ttl);
            if !names.iter().any(|n| n.eq_ignore_root_case(&p.0)) {
                names.push(p.0.clone());
            }
        }
        if names.is_empty() {
            return self.resolve_plain_srv().await;
        }
        let found = futures::future::join_all(names.iter().map(|n| self.resolve_instance(n))).await;
        let mut out = BTreeMap::new();
        for r in found {
            if let Some((inst, t)) = r? {
                ttl = ttl.min(t);
                out.insert(inst.fullname().to_ascii_lowercase(), inst);
            }
        }
        Ok((out, ttl))
    }

    /// One instance: SRV, TXT, then the target's addresses. `None` when it
    /// has no SRV record, a port of 0, no target or no address yet.
    async fn resolve_instance(&self, name: &Name) -> Result<Option<(Instance, u32)>, DiscoveryError> {
        let srv = match self.resolver.lookup(name.clone(), RecordType::SRV).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => return Ok(None),
            Err(e) => return Err(self.error(name, "SRV", &e)),
        };
        // RFC 2782: lowest priority first, then the highest weight.
        let best = srv
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s, r.ttl)),
                _ => None,
            })
            .min_by_key(|(s, _)| (s.priority, std::cmp::Reverse(s.weight)));
        let Some((srv_data, srv_ttl)) = best else {
            return Ok(None);
        };
        if srv_data.port == 0 || srv_data.target.is_root() {
            return Ok(None);
        }
        let (port, target) = (srv_data.port, srv_data.target.clone());
        let mut ttl = srv_ttl;
        let mut txt = Vec::new();
        match self.resolver.lookup(name.clone(), RecordType::TXT).await {
            Ok(l) => {
                // RFC 6763 §6.8: one TXT record per instance; the first one is used.
                if let Some(r) = l.answers().iter().find(|r| matches!(r.data, RData::TXT(_))) {
                    ttl = ttl.min(r.ttl);
                    if let RData::TXT(t) = &r.data {
                        txt = parse_txt(t.txt_data.iter().map(|s| &s[..]), name);
                    }
                }
            }
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(self.error(name, "TXT", &e)),
        }
        let Some((addrs, t)) = self.addresses(&target, port).await? else {
            return Ok(None);
        };
        ttl = ttl.min(t);
        let label = instance_label_bytes(name.iter().next().unwrap_or_default());
        let inst = Instance::from_parts(label, name.to_utf8(), target.to_utf8(), port, addrs, txt);
        Ok(Some((inst, ttl)))
    }
}

impl Resolving {
    /// Plain SRV records on the service name itself, as Consul's DNS interface
    /// (`_echostream._udp.service.consul`) and Kubernetes headless services
    /// (`_port-name._udp.svc.namespace.svc.cluster.local`) serve them: one
    /// instance per record (every priority), named after the first label of
    /// its target, with the full name `TARGET:PORT` and no TXT (so no
    /// fingerprint to pin: verify such servers with a CA or pinned
    /// fingerprints).
    async fn resolve_plain_srv(&self) -> Result<(BTreeMap<String, Instance>, u32), DiscoveryError> {
        let srv = match self.resolver.lookup(self.service.clone(), RecordType::SRV).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => return Ok((BTreeMap::new(), u32::MAX)),
            Err(e) => return Err(self.error(&self.service, "SRV", &e)),
        };
        let mut ttl = u32::MAX;
        let mut targets: Vec<(Name, u16)> = Vec::new();
        for r in srv.answers() {
            let RData::SRV(s) = &r.data else { continue };
            if s.port == 0 || s.target.is_root() {
                continue;
            }
            if targets.len() == MAX_INSTANCES {
                tracing::warn!(service = %self.service, limit = MAX_INSTANCES, "DNS-SD: more SRV records than the limit; the rest are ignored");
                break;
            }
            ttl = ttl.min(r.ttl);
            if !targets
                .iter()
                .any(|(t, p)| *p == s.port && t.eq_ignore_root_case(&s.target))
            {
                targets.push((s.target.clone(), s.port));
            }
        }
        let found = futures::future::join_all(targets.iter().map(|(t, p)| self.addresses(t, *p))).await;
        let mut out = BTreeMap::new();
        for ((target, port), r) in targets.iter().zip(found) {
            let Some((addrs, t)) = r? else { continue };
            ttl = ttl.min(t);
            let host = target.to_utf8();
            let label = instance_label_bytes(target.iter().next().unwrap_or_default());
            let inst = Instance::from_parts(label, format!("{host}:{port}"), host, *port, addrs, []);
            out.insert(inst.fullname().to_ascii_lowercase(), inst);
        }
        Ok((out, ttl))
    }

    /// The A/AAAA addresses of `target` with `port` (at most [`MAX_ADDRS`]) and their
    /// shortest TTL; `None` when it has none.
    async fn addresses(
        &self,
        target: &Name,
        port: u16,
    ) -> Result<Option<(Vec<SocketAddr>, u32)>, DiscoveryError> {
        let ips = match self.resolver.lookup_ip(target.clone()).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => return Ok(None),
            Err(e) => return Err(self.error(target, "A/AAAA", &e)),
        };
        let mut ttl = u32::MAX;
        for r in ips.as_lookup().answers() {
            if matches!(r.data, RData::A(_) | RData::AAAA(_)) {
                ttl = ttl.min(r.ttl);
            }
        }
        let addrs: Vec<SocketAddr> = ips
            .iter()
            .filter_map(|ip| dns_socket_addr(ip, port))
            .take(MAX_ADDRS)
            .collect();
        Ok((!addrs.is_empty()).then_some((addrs, ttl)))
    }
}

/// `key=value` strings (RFC 6763 §6.3-6.4): a key is printable ASCII without
/// `=`, lowercased; an entry without `=` has an empty value; an empty key is
/// skipped. At most [`MAX_TXT_ENTRIES`].
fn parse_txt<'a>(strings: impl Iterator<Item = &'a [u8]>, name: &Name) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in strings {
        if out.len() == MAX_TXT_ENTRIES {
            tracing::warn!(instance = %name, limit = MAX_TXT_ENTRIES, "DNS-SD: TXT entries over the limit ignored");
            break;
        }
        let (key, value) = match s.iter().position(|b| *b == b'=') {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => (s, &[][..]),
        };
        if key.is_empty() || !key.iter().all(|b| (0x20..0x7f).contains(b)) {
            continue;
        }
        out.push((
            String::from_utf8_lossy(key).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    out
}

/// The wait before the next refresh, always within `min..=max`: the shortest TTL of a
/// successful answer (`u32::MAX`, no records at all: [`EMPTY_RETRY`]), or after `failures`
/// failed refreshes in a row (`ttl` is `None`), `min` doubled per failure.
fn next_refresh(ttl: Option<u32>, failures: u32, min: Duration, max: Duration) -> Duration {
    let wait = match ttl {
        Some(u32::MAX) => EMPTY_RETRY,
        Some(ttl) => Duration::from_secs(u64::from(ttl)),
        None => min.saturating_mul(1u32 << failures.clamp(1, 17).saturating_sub(1)),
    };
    wait.clamp(min, max)
}

/// The refresh task of one watch; ends when the last watcher is dropped.
async fn refresh_loop(r: Resolving, (min, max): (Duration, Duration), tx: watch::Sender<Snapshot>) {
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            res = r.resolve() => res,
            _ = tx.closed() => return,
        };
        let wait = match result {
            Ok((instances, ttl)) => {
                failures = 0;
                let wait = next_refresh(Some(ttl), 0, min, max);
                tx.send_if_modified(|s| {
                    // The first answer is published even when empty: watchers then know.
                    let changed = s.instances != instances || !s.resolved;
                    s.instances = instances;
                    s.resolved = true;
                    changed
                });
                wait
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, failures, "DNS-SD refresh failed");
                tx.send_modify(|s| {
                    s.errors += 1;
                    s.last_error = Some(e);
                });
                next_refresh(None, failures, min, max)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
    }
}

/// Follows one DNS-SD service (see [`crate::Watcher`]).
pub(crate) struct DnsWatcher {
    rx: watch::Receiver<Snapshot>,
    view: BTreeMap<String, Instance>,
    errors_seen: u64,
    pending: VecDeque<Result<BrowseEvent, DiscoveryError>>,
}

impl DnsWatcher {
    pub(crate) async fn next(&mut self) -> Option<Result<BrowseEvent, DiscoveryError>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            self.refresh();
            if !self.pending.is_empty() {
                continue;
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    pub(crate) fn instances(&mut self) -> Vec<Instance> {
        let mut v: Vec<Instance> = self.rx.borrow().instances.values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Diffs the view against the latest snapshot into `pending`.
    fn refresh(&mut self) {
        let snap = self.rx.borrow_and_update();
        if snap.errors > self.errors_seen {
            self.errors_seen = snap.errors;
            if let Some(e) = &snap.last_error {
                self.pending.push_back(Err(e.clone()));
            }
        }
        for (k, inst) in &snap.instances {
            match self.view.get(k) {
                None => self.pending.push_back(Ok(BrowseEvent::Appeared(inst.clone()))),
                Some(old) if old != inst => self.pending.push_back(Ok(BrowseEvent::Updated(inst.clone()))),
                _ => {}
            }
        }
        for (k, inst) in &self.view {
            if !snap.instances.contains_key(k) {
                self.pending.push_back(Ok(BrowseEvent::Disappeared(inst.clone())));
            }
        }
        self.view = snap.instances.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_parse_into_lowercased_keys_and_skip_bad_ones() {
        let name = Name::from_utf8("a._echostream._udp.example.internal.").unwrap();
        let raw: Vec<&[u8]> = vec![b"FP=abc", b"flag", b"=novalue", b"k\x01=v", b"room=K\xc3\xbcche"];
        let got = parse_txt(raw.into_iter(), &name);
        assert_eq!(
            got,
            vec![
                ("fp".to_owned(), "abc".to_owned()),
                ("flag".to_owned(), String::new()),
                ("room".to_owned(), "Küche".to_owned()),
            ]
        );
    }

    #[test]
    fn refresh_follows_the_shortest_ttl_within_the_bounds_and_backs_off_on_failure() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(next_refresh(Some(30), 0, min, max), Duration::from_secs(30));
        // A TTL of 0 (do not cache) is re-queried at the minimum, not in a loop.
        assert_eq!(next_refresh(Some(0), 0, min, max), min);
        assert_eq!(next_refresh(Some(86_400), 0, min, max), max);
        assert_eq!(next_refresh(Some(u32::MAX), 0, min, max), EMPTY_RETRY);
        assert_eq!(next_refresh(None, 1, min, max), Duration::from_secs(1));
        assert_eq!(next_refresh(None, 3, min, max), Duration::from_secs(4));
        assert_eq!(next_refresh(None, 1000, min, max), max);
    }

    #[test]
    fn txt_entries_beyond_the_limit_are_ignored() {
        let name = Name::from_utf8("a.example.").unwrap();
        let many: Vec<Vec<u8>> = (0..1000).map(|i| format!("k{i}=v").into_bytes()).collect();
        let got = parse_txt(many.iter().map(|v| &v[..]), &name);
        assert_eq!(got.len(), MAX_TXT_ENTRIES);
    }
}
