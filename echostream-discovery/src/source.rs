//! Discovery sources behind one interface: the mDNS browser, a static list,
//! and unicast DNS-SD (feature `dns-sd`).
//!
//! Each [`Source`] yields the same [`Instance`] records (name, addresses,
//! port, TXT with the fingerprint) through a [`Watcher`]: first every instance
//! known as `Appeared`, then changes (`Updated`, `Disappeared`) as the source
//! learns them. Watchers keep no queue of their own beyond one event per
//! known instance: changes between two polls coalesce, as with [`Browser`].

use crate::{BrowseEvent, Browser, Discovery, DiscoveryError, Instance, Interfaces};
use std::collections::VecDeque;
use std::fmt;

#[cfg(feature = "dns-sd")]
use crate::dns_sd::DnsSd;

/// The prefix of a unicast DNS-SD service in a [`Source::parse`] string:
/// `"dns-sd:_echostream._udp.example.internal"`.
pub const DNS_SD_PREFIX: &str = "dns-sd:";

/// Where instances of a service come from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Source {
    /// Multicast DNS on the LAN: instances named `name` (or `name (N)`).
    Mdns {
        /// The instance name looked for.
        name: String,
        /// Where to browse.
        interfaces: Interfaces,
    },
    /// A fixed list; each instance appears once and never changes.
    Static(Vec<Instance>),
    /// Unicast DNS-SD: PTR → SRV + TXT → A/AAAA from a DNS server.
    #[cfg(feature = "dns-sd")]
    DnsSd(DnsSd),
}

impl Source {
    /// mDNS instances named `name` on every interface.
    pub fn mdns(name: impl Into<String>) -> Self {
        Source::Mdns {
            name: name.into(),
            interfaces: Interfaces::All,
        }
    }

    /// A fixed list of instances (see [`Instance::at`]).
    pub fn fixed(instances: impl IntoIterator<Item = Instance>) -> Self {
        Source::Static(instances.into_iter().collect())
    }

    /// Unicast DNS-SD of `service` (for example
    /// `_echostream._udp.example.internal`) with the system resolver; see
    /// [`DnsSd`] for a given server and the refresh bounds.
    #[cfg(feature = "dns-sd")]
    pub fn dns_sd(service: impl Into<String>) -> Self {
        Source::DnsSd(DnsSd::new(service))
    }

    /// `"dns-sd:SERVICE"` selects unicast DNS-SD with the system resolver;
    /// anything else is an mDNS instance name (on `interfaces`).
    pub fn parse(spec: &str, interfaces: Interfaces) -> Result<Self, DiscoveryError> {
        match spec.strip_prefix(DNS_SD_PREFIX) {
            #[cfg(feature = "dns-sd")]
            Some(service) => Ok(Source::dns_sd(service)),
            #[cfg(not(feature = "dns-sd"))]
            Some(_) => Err(DiscoveryError::InvalidName {
                name: spec.to_owned(),
                reason: "unicast DNS-SD needs the `dns-sd` feature of echostream-discovery".into(),
            }),
            None => Ok(Source::Mdns {
                name: spec.to_owned(),
                interfaces,
            }),
        }
    }

    /// What is looked for, for messages: the mDNS name, `"static list"` or the DNS-SD service.
    pub fn name(&self) -> &str {
        match self {
            Source::Mdns { name, .. } => name,
            Source::Static(_) => "static list",
            #[cfg(feature = "dns-sd")]
            Source::DnsSd(d) => d.service(),
        }
    }

    /// Starts following the source. mDNS uses the process's shared daemon
    /// for the interfaces ([`Discovery::shared`]); DNS-SD spawns one task on
    /// the current tokio runtime, which ends with the last watcher.
    pub fn watch(&self) -> Result<Watcher, DiscoveryError> {
        let kind = match self {
            Source::Mdns { name, interfaces } => {
                let discovery = Discovery::shared(interfaces.clone())?;
                Kind::Mdns(discovery.browse(name)?)
            }
            Source::Static(list) => Kind::Static {
                pending: list.iter().cloned().collect(),
                all: list.clone(),
            },
            #[cfg(feature = "dns-sd")]
            Source::DnsSd(d) => Kind::Dns(d.watch()?),
        };
        Ok(Watcher {
            what: self.to_string(),
            kind,
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Mdns { interfaces, .. } => write!(f, "mDNS on {interfaces}"),
            Source::Static(list) => write!(f, "a static list of {} instance(s)", list.len()),
            #[cfg(feature = "dns-sd")]
            Source::DnsSd(d) => write!(f, "DNS-SD via {}", d.server_description()),
        }
    }
}

/// Instances of one [`Source`] appearing, changing and disappearing. Made by
/// [`Source::watch`].
pub struct Watcher {
    what: String,
    kind: Kind,
}

enum Kind {
    Mdns(Browser),
    Static {
        pending: VecDeque<Instance>,
        all: Vec<Instance>,
    },
    #[cfg(feature = "dns-sd")]
    Dns(crate::dns_sd::DnsWatcher),
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("source", &self.what)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// The next change; `Some(Err(..))` when a refresh of the source failed
    /// (DNS-SD: the instances known stay as they were, and the source tries
    /// again); `None` once the source has stopped (mDNS daemon gone). A
    /// static list never ends: after its instances it waits forever.
    pub async fn next(&mut self) -> Option<Result<BrowseEvent, DiscoveryError>> {
        match &mut self.kind {
            Kind::Mdns(b) => b.next().await.map(Ok),
            Kind::Static { pending, .. } => match pending.pop_front() {
                Some(i) => Some(Ok(BrowseEvent::Appeared(i))),
                None => std::future::pending().await,
            },
            #[cfg(feature = "dns-sd")]
            Kind::Dns(d) => d.next().await,
        }
    }

    /// The instances known right now, sorted by name.
    pub fn instances(&mut self) -> Vec<Instance> {
        match &mut self.kind {
            Kind::Mdns(b) => b.instances(),
            Kind::Static { all, .. } => {
                let mut v = all.clone();
                v.sort_by(|a, b| a.name().cmp(b.name()));
                v
            }
            #[cfg(feature = "dns-sd")]
            Kind::Dns(d) => d.instances(),
        }
    }

    /// mDNS: instance names of the service type seen that do not match; other sources: none.
    pub fn other_names(&self) -> Vec<String> {
        match &self.kind {
            Kind::Mdns(b) => b.other_names(),
            _ => Vec::new(),
        }
    }

    /// The source followed, in words (for messages).
    pub fn source(&self) -> &str {
        &self.what
    }
}
