//! Announcing an instance: [`Announcement`] describes it, [`Announcer`] keeps
//! it on the network until shut down.

use crate::{txt, Discovery, DiscoveryError, SERVICE_TYPE};
use mdns_sd::{IfKind, ServiceInfo};
use std::net::{IpAddr, SocketAddr};

/// Longest instance name in bytes (one DNS label), leaving room for a
/// conflict suffix such as `" (12)"`.
pub const MAX_NAME_LEN: usize = 58;

/// Which addresses an announcement carries in its A/AAAA records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Addresses {
    /// Every address of the daemon's interfaces, kept up to date when they change.
    #[default]
    Auto,
    /// Like `Auto`, IPv4 addresses only (a server bound to `0.0.0.0`).
    AutoIpv4,
    /// Exactly these (a server bound to one address). Each is announced only
    /// on the interface whose subnet holds it.
    Fixed(Vec<IpAddr>),
}

impl Addresses {
    /// The addresses that reach a socket bound to `addr`: every address for
    /// `[::]` (dual stack), IPv4 ones for `0.0.0.0`, else just that address.
    pub fn for_bound(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V6(v6) if v6.is_unspecified() => Addresses::Auto,
            IpAddr::V4(v4) if v4.is_unspecified() => Addresses::AutoIpv4,
            ip => Addresses::Fixed(vec![ip]),
        }
    }
}

/// What to announce: a named EchoStream instance listening on a port.
///
/// ```
/// use echostream_discovery::Announcement;
/// let a = Announcement::new("AudioService", 5000)
///     .fingerprint("ab".repeat(32))
///     .txt("room", "kitchen");
/// ```
#[derive(Clone, Debug)]
pub struct Announcement {
    name: String,
    port: u16,
    protocol_version: Option<u16>,
    fingerprint: Option<String>,
    instance_id: String,
    app_txt: Vec<(String, String)>,
    addresses: Addresses,
}

impl Announcement {
    /// An instance named `name` (spaces and UTF-8 allowed, at most
    /// [`MAX_NAME_LEN`] bytes) on `port`, with a fresh random instance id.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        Announcement {
            name: name.into(),
            port,
            protocol_version: None,
            fingerprint: None,
            instance_id: random_id(),
            app_txt: Vec::new(),
            addresses: Addresses::Auto,
        }
    }

    /// The EchoStream wire protocol version (TXT key [`txt::PROTOCOL_VERSION`]).
    pub fn protocol_version(mut self, version: u16) -> Self {
        self.protocol_version = Some(version);
        self
    }

    /// The server certificate's SHA-256 fingerprint as hex (TXT key [`txt::FINGERPRINT`]).
    pub fn fingerprint(mut self, hex: impl Into<String>) -> Self {
        self.fingerprint = Some(hex.into());
        self
    }

    /// Replaces the random instance id (TXT key [`txt::INSTANCE_ID`]).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    /// Adds an application TXT entry. Keys are printable ASCII without `=`,
    /// not one of [`txt::RESERVED`]; key and value together fit in 254 bytes.
    pub fn txt(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.app_txt.push((key.into(), value.into()));
        self
    }

    /// Which addresses to announce (default [`Addresses::Auto`]).
    pub fn addresses(mut self, addresses: Addresses) -> Self {
        self.addresses = addresses;
        self
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The random or chosen instance id.
    pub fn id(&self) -> &str {
        &self.instance_id
    }

    /// Checks the name and the TXT entries without touching the network.
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        validate_name(&self.name)?;
        let mut seen = std::collections::HashSet::new();
        for (k, v) in self.txt_entries() {
            let bad = |reason: &str| DiscoveryError::InvalidTxt {
                key: k.clone(),
                reason: reason.to_owned(),
            };
            if k.is_empty() {
                return Err(bad("empty key"));
            }
            if !k.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'=') {
                return Err(bad("keys are printable ASCII without `=` (RFC 6763 §6.4)"));
            }
            if k.len() + 1 + v.len() > 255 {
                return Err(bad(&format!(
                    "key, `=` and value take {} bytes; a TXT string holds at most 255",
                    k.len() + 1 + v.len()
                )));
            }
            if !seen.insert(k.to_ascii_lowercase()) {
                return Err(bad("given twice (keys are case-insensitive)"));
            }
        }
        for (k, _) in &self.app_txt {
            if txt::RESERVED.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(DiscoveryError::InvalidTxt {
                    key: k.clone(),
                    reason: format!("reserved for EchoStream (reserved keys: {:?})", txt::RESERVED),
                });
            }
        }
        Ok(())
    }

    /// Reserved entries first, then the application's.
    fn txt_entries(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if let Some(p) = self.protocol_version {
            v.push((txt::PROTOCOL_VERSION.to_owned(), p.to_string()));
        }
        if let Some(fp) = &self.fingerprint {
            v.push((txt::FINGERPRINT.to_owned(), fp.to_ascii_lowercase()));
        }
        v.push((txt::INSTANCE_ID.to_owned(), self.instance_id.clone()));
        v.extend(self.app_txt.iter().cloned());
        v
    }

    /// The mdns-sd record set for instance name `label`.
    pub(crate) fn service_info(&self, label: &str) -> Result<ServiceInfo, DiscoveryError> {
        let host = format!("{}.local.", host_label(&self.name, &self.instance_id));
        let fixed: Vec<IpAddr> = match &self.addresses {
            Addresses::Fixed(a) => a.clone(),
            _ => Vec::new(),
        };
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            label,
            &host,
            &fixed[..],
            self.port,
            &self.txt_entries()[..],
        )
        .map_err(|e| DiscoveryError::InvalidName {
            name: self.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(match self.addresses {
            Addresses::Auto => info.enable_addr_auto(),
            Addresses::AutoIpv4 => {
                let mut info = info.enable_addr_auto();
                info.set_interfaces(vec![IfKind::IPv4]);
                info
            }
            _ => info,
        })
    }
}

/// Checks that `name` can be an instance name.
pub(crate) fn validate_name(name: &str) -> Result<(), DiscoveryError> {
    let bad = |reason: String| DiscoveryError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!(
            "{} bytes; at most {MAX_NAME_LEN} (a DNS label is 63 bytes, with room for a conflict suffix)",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("contains control characters".into()));
    }
    Ok(())
}

/// A DNS host label for the SRV target: the name's ASCII letters and digits
/// plus the first 8 characters of the instance id, e.g. `audioservice-1f2e3d4c`.
fn host_label(name: &str, id: &str) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base = base
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    base.truncate(40);
    let base = base.trim_end_matches('-');
    let base = if base.is_empty() { "echostream" } else { base };
    let suffix: String = id.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    if suffix.is_empty() {
        base.to_owned()
    } else {
        format!("{base}-{}", suffix.to_ascii_lowercase())
    }
}

/// 16 hex digits, random enough to tell instances apart (not a secret).
pub(crate) fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{:016x}", h.finish())
}

/// Keeps an instance announced. [`Announcer::shutdown`] (or dropping it)
/// unregisters it: mdns-sd sends a goodbye (TTL 0) at once and once more
/// 120 ms later, and browsers drop the instance about a second after that.
#[derive(Debug)]
pub struct Announcer {
    discovery: Discovery,
    label: String,
    fullname: String,
    id: String,
    active: bool,
}

impl Announcer {
    pub(crate) fn new(discovery: Discovery, label: String, fullname: String, id: String) -> Self {
        Announcer {
            discovery,
            label,
            fullname,
            id,
            active: true,
        }
    }

    /// The instance name used: the service name, or `"name (N)"` when another
    /// announcement of this process already used the name.
    pub fn instance_name(&self) -> &str {
        &self.label
    }

    /// The full DNS-SD name.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// The instance id announced in TXT.
    pub fn instance_id(&self) -> &str {
        &self.id
    }

    /// The discovery handle this announcement runs on.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Says goodbye: unregisters the instance (does not wait for the network).
    pub fn shutdown(mut self) {
        self.goodbye();
    }

    fn goodbye(&mut self) {
        if std::mem::take(&mut self.active) {
            self.discovery.unregister(&self.label, &self.fullname);
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.goodbye();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_dns_safe() {
        assert_eq!(
            host_label("AudioService", "1f2e3d4c5b6a"),
            "audioservice-1f2e3d4c"
        );
        assert_eq!(host_label("Küche Lautsprecher", "ab"), "k-che-lautsprecher-ab");
        assert_eq!(host_label("ü", "12345678"), "echostream-12345678");
    }

    #[test]
    fn validation_names_the_problem() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let e = Announcement::new(long, 1).validate().unwrap_err().to_string();
        assert!(e.contains("59 bytes; at most 58"), "{e}");
        let e = Announcement::new("A", 1)
            .txt("fp", "x")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`fp`") && e.contains("reserved"), "{e}");
        let e = Announcement::new("A", 1)
            .txt("a=b", "x")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("without `=`"), "{e}");
        let e = Announcement::new("A", 1)
            .txt("k", "v".repeat(300))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 255"), "{e}");
        assert!(Announcement::new("Wohnzimmer Lautsprecher ü", 1)
            .txt("room", "a b")
            .validate()
            .is_ok());
    }

    #[test]
    fn ids_differ() {
        assert_ne!(random_id(), random_id());
        assert_eq!(random_id().len(), 16);
    }
}
