//! What a browser learns about one announced instance.

use crate::{txt, SERVICE_TYPE};
use mdns_sd::{ResolvedService, ScopedIp};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// One resolved instance of `_echostream._udp.local.`: its name, port,
/// addresses in connection order, and TXT entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    name: String,
    fullname: String,
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    txt: BTreeMap<String, String>,
}

impl Instance {
    /// Builds an instance from what mdns-sd resolved.
    pub(crate) fn from_resolved(r: &ResolvedService) -> Self {
        let port = r.get_port();
        let mut addrs: Vec<SocketAddr> = r
            .get_addresses()
            .iter()
            .filter_map(|ip| socket_addr(ip, port))
            .collect();
        sort_addrs(&mut addrs);
        let txt = r
            .get_properties()
            .iter()
            // RFC 6763 §6.4: keys are case-insensitive.
            .map(|p| (p.key().to_ascii_lowercase(), p.val_str().to_owned()))
            .collect();
        Instance {
            name: instance_label(r.get_fullname()),
            fullname: r.get_fullname().to_owned(),
            host: r.get_hostname().to_owned(),
            port,
            addrs,
            txt,
        }
    }

    /// An instance from parts: what a static list or a unicast DNS-SD lookup
    /// found. Addresses are sorted into connection order; TXT keys lowercased
    /// (RFC 6763 §6.4), the first value of a repeated key kept.
    pub(crate) fn from_parts(
        name: String,
        fullname: String,
        host: String,
        port: u16,
        mut addrs: Vec<SocketAddr>,
        txt: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        sort_addrs(&mut addrs);
        addrs.dedup();
        let mut map = BTreeMap::new();
        for (k, v) in txt {
            map.entry(k.to_ascii_lowercase()).or_insert(v);
        }
        Instance {
            name,
            fullname,
            host,
            port,
            addrs,
            txt: map,
        }
    }

    /// An instance of a static list ([`crate::Source::fixed`]): `name` at
    /// `addrs` (all with the same port), no TXT entries yet. Add the server's
    /// fingerprint with [`Instance::with_fingerprint`] to pin it, as the TXT
    /// record of a discovered instance would.
    pub fn at(name: impl Into<String>, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        let name = name.into();
        let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        let port = addrs.first().map_or(0, SocketAddr::port);
        let host = addrs.first().map(|a| a.ip().to_string()).unwrap_or_default();
        Instance::from_parts(name.clone(), name, host, port, addrs, [])
    }

    /// This instance with a TXT entry set (key lowercased); for static lists.
    pub fn with_txt(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.txt.insert(key.into().to_ascii_lowercase(), value.into());
        self
    }

    /// This instance with the server certificate fingerprint (64 hex digits)
    /// in its TXT entries, as an announced server carries it; for static lists.
    pub fn with_fingerprint(self, fingerprint: impl Into<String>) -> Self {
        self.with_txt(txt::FINGERPRINT, fingerprint)
    }

    /// Keeps the addresses of an earlier resolve of the same instance (same
    /// host and port): mdns-sd reports A and AAAA records as they arrive, and a
    /// later resolve can carry only some of them.
    pub(crate) fn keep_addrs_of(&mut self, earlier: &Instance) {
        if earlier.host.eq_ignore_ascii_case(&self.host) && earlier.port == self.port {
            for a in &earlier.addrs {
                if !self.addrs.contains(a) {
                    self.addrs.push(*a);
                }
            }
            sort_addrs(&mut self.addrs);
        }
    }

    /// The instance name as announced, for example `"AudioService"`, or
    /// `"AudioService (2)"` after mDNS resolved a name conflict.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full DNS-SD name, for example `"AudioService._echostream._udp.local."`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// The host name of the SRV record, for example `"audioservice-1f2e3d4c.local."`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port of the SRV record.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket addresses to try, best first: IPv4, then routable IPv6, then
    /// IPv4 link-local, then IPv6 link-local (with the scope id of the
    /// interface it was seen on). Link-local IPv6 addresses without a scope id
    /// are left out: nothing can connect to them.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A TXT value by key (keys are case-insensitive); a key without a value gives `""`.
    pub fn txt(&self, key: &str) -> Option<&str> {
        self.txt.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    /// Every TXT entry, keys lowercased, sorted by key.
    pub fn txt_entries(&self) -> &BTreeMap<String, String> {
        &self.txt
    }

    /// The application's TXT entries: every entry except the reserved keys in [`txt`].
    pub fn app_txt(&self) -> impl Iterator<Item = (&str, &str)> {
        self.txt
            .iter()
            .filter(|(k, _)| !txt::RESERVED.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The server certificate's SHA-256 fingerprint (64 lowercase hex digits),
    /// when the TXT record carries a well-formed one.
    pub fn fingerprint(&self) -> Option<String> {
        let fp = self.txt(txt::FINGERPRINT)?;
        (fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit())).then(|| fp.to_ascii_lowercase())
    }

    /// The EchoStream wire protocol version from the TXT record.
    pub fn protocol_version(&self) -> Option<u16> {
        self.txt(txt::PROTOCOL_VERSION)?.parse().ok()
    }

    /// The instance id from the TXT record: random per announcement, stable
    /// across name-conflict renames and address updates.
    pub fn instance_id(&self) -> Option<&str> {
        self.txt(txt::INSTANCE_ID).filter(|s| !s.is_empty())
    }

    /// True when this instance answers to the service name `name`: its
    /// instance name is `name`, or `name (N)` as renamed by mDNS conflict
    /// resolution. Compared ASCII-case-insensitively, as DNS names are.
    pub fn matches(&self, name: &str) -> bool {
        name_matches(&self.name, name)
    }
}

/// True when instance name `label` is `name` or `name (N)`, ASCII-case-insensitively.
pub fn name_matches(label: &str, name: &str) -> bool {
    if label.eq_ignore_ascii_case(name) {
        return true;
    }
    let Some(prefix) = label.get(..name.len()) else {
        return false;
    };
    if !prefix.eq_ignore_ascii_case(name) {
        return false;
    }
    let rest = &label[name.len()..];
    match rest.strip_prefix(" (").and_then(|r| r.strip_suffix(')')) {
        Some(n) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// The instance label of a full name: the type suffix removed, DNS escapes
/// (`\.`, `\\`, `\DDD`) undone.
pub(crate) fn instance_label(fullname: &str) -> String {
    let suffix = format!(".{SERVICE_TYPE}");
    let escaped = match fullname.len().checked_sub(suffix.len()) {
        Some(cut) if fullname.is_char_boundary(cut) && fullname[cut..].eq_ignore_ascii_case(&suffix) => {
            &fullname[..cut]
        }
        _ => fullname,
    };
    unescape(escaped)
}

/// An instance label from the raw bytes of a DNS label (no escapes to undo).
#[cfg(feature = "dns-sd")]
pub(crate) fn instance_label_bytes(label: &[u8]) -> String {
    String::from_utf8_lossy(label).into_owned()
}

fn unescape(s: &str) -> String {
    let mut bytes = Vec::with_capacity(s.len());
    let raw = s.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            let digits = raw.get(i + 1..i + 4);
            if let Some(d) = digits.filter(|d| d.iter().all(u8::is_ascii_digit)) {
                let v = d.iter().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    bytes.push(b);
                    i += 4;
                    continue;
                }
            }
            bytes.push(raw[i + 1]);
            i += 2;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A socket address for a unicast DNS answer: link-local IPv6 addresses are
/// dropped (a DNS answer carries no scope id, so nothing can connect to them).
#[cfg(feature = "dns-sd")]
pub(crate) fn dns_socket_addr(ip: IpAddr, port: u16) -> Option<SocketAddr> {
    match ip {
        IpAddr::V6(v6) if is_link_local_v6(&v6) => None,
        ip => Some(SocketAddr::new(ip, port)),
    }
}

fn socket_addr(ip: &ScopedIp, port: u16) -> Option<SocketAddr> {
    match ip {
        ScopedIp::V4(v4) => Some(SocketAddr::V4(SocketAddrV4::new(*v4.addr(), port))),
        ScopedIp::V6(v6) => {
            let addr = *v6.addr();
            if is_link_local_v6(&addr) {
                let scope = v6.scope_id().index;
                (scope != 0).then(|| SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope)))
            } else {
                Some(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, 0)))
            }
        }
        _ => None,
    }
}

fn is_link_local_v6(ip: &std::net::Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// Connection order: 0 IPv4, 1 routable IPv6, 2 IPv4 link-local, 3 IPv6 link-local.
fn rank(a: &SocketAddr) -> u8 {
    match a.ip() {
        IpAddr::V4(v4) if v4.is_link_local() => 2,
        IpAddr::V4(_) => 0,
        IpAddr::V6(v6) if is_link_local_v6(&v6) => 3,
        IpAddr::V6(_) => 1,
    }
}

/// Sorts addresses into connection order (stable within a rank by address).
pub(crate) fn sort_addrs(addrs: &mut [SocketAddr]) {
    addrs.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_or_with_a_conflict_suffix() {
        assert!(name_matches("AudioService", "AudioService"));
        assert!(name_matches("audioservice", "AudioService"));
        assert!(name_matches("AudioService (2)", "AudioService"));
        assert!(name_matches("AudioService (12)", "AudioService"));
        assert!(!name_matches("AudioService (x)", "AudioService"));
        assert!(!name_matches("AudioService2", "AudioService"));
        assert!(!name_matches("Audio", "AudioService"));
        assert!(!name_matches("AudioService ()", "AudioService"));
        assert!(name_matches(
            "Wohnzimmer Lautsprecher ü",
            "Wohnzimmer Lautsprecher ü"
        ));
        assert!(!name_matches("ü", "u"));
    }

    #[test]
    fn labels_are_unescaped_and_stripped_of_the_type() {
        assert_eq!(
            instance_label("AudioService._echostream._udp.local."),
            "AudioService"
        );
        assert_eq!(
            instance_label("My\\.Speaker._ECHOSTREAM._udp.local."),
            "My.Speaker"
        );
        assert_eq!(instance_label("a\\\\b._echostream._udp.local."), "a\\b");
        assert_eq!(instance_label("caf\\195\\169._echostream._udp.local."), "café");
        assert_eq!(instance_label("Küche 2._echostream._udp.local."), "Küche 2");
    }

    fn inst(host: &str, port: u16, addrs: &[&str]) -> Instance {
        Instance {
            name: "A".into(),
            fullname: "A._echostream._udp.local.".into(),
            host: host.into(),
            port,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            txt: BTreeMap::new(),
        }
    }

    #[test]
    fn a_later_resolve_keeps_earlier_addresses_of_the_same_host_and_port() {
        // Addresses here are only parsed and compared, never contacted (loopback
        // and documentation ranges all the same).
        let earlier = inst("a.local.", 5000, &["[fe80::1%2]:5000"]);
        let mut later = inst("a.local.", 5000, &["127.0.0.2:5000"]);
        later.keep_addrs_of(&earlier);
        assert_eq!(
            later.addrs(),
            inst("", 0, &["127.0.0.2:5000", "[fe80::1%2]:5000"]).addrs()
        );
        // A new port or host is a new endpoint: old addresses are dropped.
        let mut moved = inst("a.local.", 5001, &["127.0.0.2:5001"]);
        moved.keep_addrs_of(&later);
        assert_eq!(moved.addrs().len(), 1);
    }

    #[test]
    fn addresses_sort_ipv4_first_and_link_local_last() {
        // Addresses here are only parsed and sorted, never contacted.
        let mut v: Vec<SocketAddr> = vec![
            "[fe80::1%3]:5000".parse().unwrap(),
            "[2001:db8::1]:5000".parse().unwrap(),
            "169.254.1.1:5000".parse().unwrap(),
            "127.0.0.2:5000".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
        ];
        sort_addrs(&mut v);
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            s,
            [
                "127.0.0.1:5000",
                "127.0.0.2:5000",
                "[2001:db8::1]:5000",
                "169.254.1.1:5000",
                "[fe80::1%3]:5000"
            ]
        );
    }
}
