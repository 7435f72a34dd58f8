//! TLS session tickets a client keeps, per server, for resumption and 0-RTT.
//!
//! A [`SessionStore`] belongs to one client builder and is shared by every connection made from
//! it (clones of the builder, reconnections by the reconnect supervisor), so a reconnect finds the
//! tickets the previous connection received. Builders made separately share one through a
//! [`SessionCache`] (`ClientBuilder::session_cache`). Tickets are kept per *host key*, the address string
//! the user connected to, and not per TLS server name: two servers on the same IP address but
//! different ports never see each other's tickets.
//!
//! rustls resumes a ticket only with the certificate verifier (and client-certificate resolver)
//! of the configuration that received it, so the TLS configuration itself is kept per host too
//! and reused while the trust settings stay the same; a connection with other trust settings
//! builds a new one, and the old tickets are no longer offered.
//!
//! Tickets live in memory only: they hold resumption secrets, and a ticket that outlives the
//! process would let whoever reads it impersonate this client's earlier session.

use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

use super::tls::TrustReport;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Hosts remembered at most; beyond this the store starts again from empty (a full handshake
/// costs a round trip, not correctness).
const MAX_HOSTS: usize = 256;
/// Tickets kept per host: rustls servers send two per connection.
const TICKETS_PER_HOST: usize = 8;

/// TLS session tickets kept in memory for resumption and 0-RTT, per server address, that
/// several client builders can share ([`ClientBuilder::session_cache`]).
///
/// Every builder has one of its own, shared with its clones and the connections made from them.
/// Give the same cache to builders made separately (one per call of a function that connects,
/// as the Python `connect()` does) so that a connection from one resumes the session another
/// received. Sharing is safe whatever the builders' other settings: a ticket is offered only
/// through a TLS configuration built for the same trust settings, client certificate and key
/// log, and rustls resumes it only with the verifier that received it. Cheap to clone.
///
/// [`ClientBuilder::session_cache`]: crate::rpc::ClientBuilder::session_cache
#[derive(Clone, Debug, Default)]
pub struct SessionCache(pub(crate) Arc<SessionStore>);

impl SessionCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unused TLS 1.3 tickets held for the server at `addr` (the address string given to
    /// `connect`).
    pub fn tickets(&self, addr: &str) -> usize {
        self.0.get(addr).map_or(0, |h| h.tickets())
    }
}

/// Session tickets per host key, shared by the connections of one client builder.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    hosts: Mutex<HashMap<String, Arc<HostSessions>>>,
}

impl SessionStore {
    /// The tickets of one host, created on first use.
    pub(crate) fn host(&self, host_key: &str) -> Arc<HostSessions> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hosts.get(host_key) {
            return h.clone();
        }
        if hosts.len() >= MAX_HOSTS {
            hosts.clear();
        }
        let h = Arc::new(HostSessions::default());
        hosts.insert(host_key.to_owned(), h.clone());
        h
    }

    /// The tickets of a host if any were stored.
    pub(crate) fn get(&self, host_key: &str) -> Option<Arc<HostSessions>> {
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host_key)
            .cloned()
    }
}

/// A TLS configuration kept for one server, with the trust settings it was built from.
type KeptConfig = (String, Arc<rustls::ClientConfig>, TrustReport);

/// The tickets of one server, and what the client learnt about it on the last full connection.
#[derive(Debug, Default)]
pub(crate) struct HostSessions {
    tickets: Arc<Tickets>,
    /// The TLS configuration the tickets belong to, keyed by its trust settings.
    config: Mutex<Option<KeptConfig>>,
    /// The frame limit the server announced in its last welcome; frames sent before the next
    /// welcome arrives (0-RTT) are checked against it. 0 while unknown.
    peer_max_frame: AtomicU32,
}

impl HostSessions {
    /// Unused TLS 1.3 tickets held for this server.
    pub(crate) fn tickets(&self) -> usize {
        self.tickets.count.load(Ordering::Acquire)
    }

    /// The TLS configuration for trust settings `key`: the kept one if it was built for the same
    /// settings, else a new one from `make` (which is given the ticket store to install).
    pub(crate) fn tls_config<E>(
        &self,
        key: &str,
        make: impl FnOnce(Arc<dyn ClientSessionStore>) -> Result<(rustls::ClientConfig, TrustReport), E>,
    ) -> Result<(Arc<rustls::ClientConfig>, TrustReport), E> {
        let mut kept = self.config.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, config, report)) = kept.as_ref() {
            if k == key {
                return Ok((config.clone(), report.clone()));
            }
        }
        let (config, report) = make(self.tickets.clone())?;
        let config = Arc::new(config);
        *kept = Some((key.to_owned(), config.clone(), report.clone()));
        Ok((config, report))
    }

    /// The frame limit from the server's last welcome, if one was seen.
    pub(crate) fn peer_max_frame(&self) -> Option<u32> {
        match self.peer_max_frame.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    pub(crate) fn set_peer_max_frame(&self, n: u32) {
        self.peer_max_frame.store(n, Ordering::Release);
    }
}

/// The ticket store installed in a kept configuration (a separate object, so that the
/// configuration does not hold its own owner).
#[derive(Debug)]
struct Tickets {
    cache: ClientSessionMemoryCache,
    /// TLS 1.3 tickets stored and not yet used (each is used at most once).
    count: AtomicUsize,
}

impl Default for Tickets {
    fn default() -> Self {
        Self {
            cache: ClientSessionMemoryCache::new(TICKETS_PER_HOST),
            count: AtomicUsize::new(0),
        }
    }
}

impl ClientSessionStore for Tickets {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.cache.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        // EchoStream speaks TLS 1.3 only; kept for completeness of the trait.
        self.cache.set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.cache.insert_tls13_ticket(server_name, value);
        // The cache drops the oldest ticket beyond its capacity.
        let _ = self.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            Some((n + 1).min(TICKETS_PER_HOST))
        });
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let taken = self.cache.take_tls13_ticket(server_name);
        if taken.is_some() {
            let _ = self
                .count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(1)));
        }
        taken
    }
}
