//! LAN discovery for EchoStream: DNS-SD (RFC 6763) over multicast DNS
//! (RFC 6762), built on `mdns-sd`.
//!
//! An EchoStream server announces itself as an instance of the service type
//! [`SERVICE_TYPE`] (`_echostream._udp.local.`) named after its service, for
//! example `AudioService._echostream._udp.local.`, with SRV (host and port),
//! A/AAAA (addresses) and TXT records. The TXT keys are in [`txt`]. Programs
//! find instances by service name; any standard mDNS browser (avahi-browse,
//! dns-sd, python-zeroconf) lists them too.
//!
//! ```no_run
//! # async fn doc() -> Result<(), echostream_discovery::DiscoveryError> {
//! use echostream_discovery::{Announcement, BrowseEvent, Discovery};
//! use std::time::Duration;
//!
//! let discovery = Discovery::new()?;
//! // A device: announced until `speaker` is shut down or dropped (goodbye).
//! let speaker = discovery.announce(Announcement::new("AudioService", 5000).txt("room", "kitchen"))?;
//!
//! // A controller: the first instance to appear.
//! let found = discovery.find("AudioService", Duration::from_secs(3)).await?;
//! println!("{} at {:?}", found.name(), found.addrs());
//!
//! // A monitor: instances appearing, changing, disappearing.
//! let mut browser = discovery.browse("AudioService")?;
//! while let Some(event) = browser.next().await {
//!     match event {
//!         BrowseEvent::Appeared(i) => println!("+ {}", i.name()),
//!         BrowseEvent::Updated(i) => println!("~ {}", i.name()),
//!         BrowseEvent::Disappeared(i) => println!("- {}", i.name()),
//!         _ => {}
//!     }
//! }
//! speaker.shutdown();
//! # Ok(()) }
//! ```
//!
//! # Threads
//!
//! A [`Discovery`] handle owns one mdns-sd daemon (one thread, its sockets,
//! its cache) and, once something browses, one pump thread; never a thread per
//! instance or per browser. [`Discovery::shared`] hands out one handle per
//! interface selection per process, so a process with a server and several
//! clients runs one daemon, and a client finds what the process's browse
//! already knows at once. The daemon stops when the last clone is dropped.
//!
//! # Layout
//! - [`Discovery`]: the daemon handle: `announce`, `browse`, `find`, `find_all`.
//! - `announce`: [`Announcement`], [`Announcer`], [`Addresses`].
//! - `browse`: [`Browser`], [`BrowseEvent`].
//! - `instance`: [`Instance`] (addresses in connection order, TXT).
//! - [`Interfaces`]: which interfaces to use.
//! - [`netns`]: is this process in a network namespace of its own?
//! - `source`: [`Source`] and [`Watcher`]: mDNS, a static list and unicast
//!   DNS-SD behind one interface.
//! - `dns_sd` (feature `dns-sd`): [`DnsSd`], PTR → SRV + TXT → A/AAAA with
//!   hickory-resolver, refreshed as TTLs expire.
//!
//! # Network namespaces
//!
//! mdns-sd multicasts on every selected interface, and in the machine's root
//! network namespace it joins multicast groups on the others even when told
//! to use loopback only. Tests and examples of this repository run it inside
//! network namespaces they create; see `ARCHITECTURE.md`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod announce;
mod browse;
#[cfg(feature = "dns-sd")]
mod dns_sd;
mod error;
mod instance;
mod interfaces;
pub mod netns;
mod source;

pub use announce::{Addresses, Announcement, Announcer, MAX_NAME_LEN};
pub use browse::{BrowseEvent, Browser};
#[cfg(feature = "dns-sd")]
pub use dns_sd::{
    DnsSd, DEFAULT_DNS_TIMEOUT, DEFAULT_REFRESH_BOUNDS, MAX_ADDRS, MAX_INSTANCES, MAX_TXT_ENTRIES,
};
pub use error::DiscoveryError;
pub use instance::{name_matches, Instance};
pub use interfaces::Interfaces;
pub use source::{Source, Watcher, DNS_SD_PREFIX};

use mdns_sd::ServiceDaemon;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The DNS-SD service type of every EchoStream instance.
pub const SERVICE_TYPE: &str = "_echostream._udp.local.";

/// The TXT keys EchoStream announces. Other keys belong to the application.
pub mod txt {
    /// EchoStream wire protocol version, decimal (`"1"`).
    pub const PROTOCOL_VERSION: &str = "proto";
    /// SHA-256 of the server certificate (leaf, DER), 64 lowercase hex digits.
    pub const FINGERPRINT: &str = "fp";
    /// Random id of this announcement (16 hex digits), stable across renames.
    pub const INSTANCE_ID: &str = "id";
    /// Keys an application cannot set.
    pub const RESERVED: &[&str] = &[PROTOCOL_VERSION, FINGERPRINT, INSTANCE_ID];
}

/// A handle on one mDNS daemon bound to an interface selection. Cheap to
/// clone; the daemon stops when the last clone (and every [`Announcer`] and
/// [`Browser`] made from it) is dropped.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    daemon: ServiceDaemon,
    interfaces: Interfaces,
    /// Instance names announced through this daemon (lowercased) → full
    /// names: two announcements of one name in one process get `name (2)`
    /// here, since mdns-sd would otherwise replace the first.
    announced: Mutex<HashMap<String, String>>,
    /// The browse table, once something browses.
    browse: Mutex<Option<Arc<browse::Shared>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let names: Vec<String> = lock(&self.announced).drain().map(|(_, full)| full).collect();
        for full in names {
            let _ = self.daemon.unregister(&full);
        }
        let _ = self.daemon.shutdown();
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("interfaces", &self.inner.interfaces)
            .finish_non_exhaustive()
    }
}

/// Shared handles by interface selection (weak: the daemon stops with its last user).
static SHARED: Mutex<Vec<(Interfaces, Weak<Inner>)>> = Mutex::new(Vec::new());

impl Discovery {
    /// A new daemon on every interface.
    pub fn new() -> Result<Self, DiscoveryError> {
        Self::with_interfaces(Interfaces::All)
    }

    /// A new daemon of its own on the given interfaces.
    pub fn with_interfaces(interfaces: Interfaces) -> Result<Self, DiscoveryError> {
        let daemon_err = |e: mdns_sd::Error| DiscoveryError::Daemon {
            interfaces: interfaces.clone(),
            reason: e.to_string(),
        };
        let daemon = ServiceDaemon::new().map_err(daemon_err)?;
        if let Err(e) = interfaces.apply(&daemon) {
            let _ = daemon.shutdown();
            return Err(daemon_err(e));
        }
        Ok(Discovery {
            inner: Arc::new(Inner {
                daemon,
                interfaces,
                announced: Mutex::new(HashMap::new()),
                browse: Mutex::new(None),
            }),
        })
    }

    /// The process-wide handle for this interface selection, made on first use.
    pub fn shared(interfaces: Interfaces) -> Result<Self, DiscoveryError> {
        let mut all = lock(&SHARED);
        all.retain(|(_, w)| w.strong_count() > 0);
        if let Some(inner) = all
            .iter()
            .find(|(i, _)| *i == interfaces)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(Discovery { inner });
        }
        let d = Self::with_interfaces(interfaces.clone())?;
        all.push((interfaces, Arc::downgrade(&d.inner)));
        Ok(d)
    }

    /// The interfaces this daemon uses.
    pub fn interfaces(&self) -> &Interfaces {
        &self.inner.interfaces
    }

    /// Announces an instance. Returns at once: mdns-sd probes the name
    /// (about 0.75 s) and then announces in the background.
    pub fn announce(&self, announcement: Announcement) -> Result<Announcer, DiscoveryError> {
        announcement.validate()?;
        let mut announced = lock(&self.inner.announced);
        let mut label = announcement.name().to_owned();
        let mut n = 2;
        while announced.contains_key(&label.to_ascii_lowercase()) {
            label = format!("{} ({n})", announcement.name());
            n += 1;
        }
        let info = announcement.service_info(&label)?;
        let fullname = info.get_fullname().to_owned();
        self.inner.daemon.register(info).map_err(|e| self.daemon_err(e))?;
        announced.insert(label.to_ascii_lowercase(), fullname.clone());
        Ok(Announcer::new(
            self.clone(),
            label,
            fullname,
            announcement.id().to_owned(),
        ))
    }

    pub(crate) fn unregister(&self, label: &str, fullname: &str) {
        lock(&self.inner.announced).remove(&label.to_ascii_lowercase());
        if let Err(e) = self.inner.daemon.unregister(fullname) {
            // Only fails when the daemon is gone, which already ended the announcement.
            let _ = e;
        }
    }

    /// Follows the instances of service `name` (see [`Instance::matches`]).
    pub fn browse(&self, name: &str) -> Result<Browser, DiscoveryError> {
        announce::validate_name(name)?;
        Ok(Browser::new(
            self.clone(),
            self.browse_table()?,
            Some(name.to_owned()),
        ))
    }

    /// Follows every EchoStream instance, whatever its name.
    pub fn browse_all(&self) -> Result<Browser, DiscoveryError> {
        Ok(Browser::new(self.clone(), self.browse_table()?, None))
    }

    fn browse_table(&self) -> Result<Arc<browse::Shared>, DiscoveryError> {
        let mut slot = lock(&self.inner.browse);
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let shared = browse::Shared::new();
        let rx = browse::start(&self.inner.daemon).map_err(|e| self.daemon_err(e))?;
        shared.start_pump(rx).map_err(|e| DiscoveryError::Daemon {
            interfaces: self.inner.interfaces.clone(),
            reason: format!("cannot start the browse thread: {e}"),
        })?;
        *slot = Some(shared.clone());
        Ok(shared)
    }

    /// The first instance of `name` to resolve, waiting at most `timeout`.
    pub async fn find(&self, name: &str, timeout: Duration) -> Result<Instance, DiscoveryError> {
        let mut browser = self.browse(name)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, browser.next()).await {
                Ok(Some(BrowseEvent::Appeared(i) | BrowseEvent::Updated(i))) => return Ok(i),
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(DiscoveryError::Stopped {
                        name: name.to_owned(),
                        interfaces: self.inner.interfaces.clone(),
                    })
                }
                Err(_) => {
                    return Err(DiscoveryError::Timeout {
                        name: name.to_owned(),
                        interfaces: self.inner.interfaces.clone(),
                        waited: timeout,
                        other_names: browser.other_names(),
                    })
                }
            }
        }
    }

    /// Every instance of `name` present after browsing for `window` (possibly none).
    pub async fn find_all(&self, name: &str, window: Duration) -> Result<Vec<Instance>, DiscoveryError> {
        let mut browser = self.browse(name)?;
        let _ = tokio::time::timeout(window, async { while browser.next().await.is_some() {} }).await;
        Ok(browser.instances())
    }

    fn daemon_err(&self, e: mdns_sd::Error) -> DiscoveryError {
        DiscoveryError::Daemon {
            interfaces: self.inner.interfaces.clone(),
            reason: e.to_string(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
