//! Browsing: one mdns-sd browse per daemon, fanned out to any number of
//! [`Browser`]s.
//!
//! mdns-sd allows one browse per service type per daemon, so a pump thread
//! (one per [`crate::Discovery`], started by its first browser) drains that
//! browse into a shared table of resolved instances and bumps a `watch`
//! counter. Each [`Browser`] keeps its own view and, when woken, diffs it
//! against the table. Nothing queues per browser: a browser that is not
//! polled costs nothing and later sees the current state (changes between
//! two polls coalesce). Successive resolves of one instance (same host and port)
//! accumulate addresses: mdns-sd reports A and AAAA records as they arrive,
//! and a later resolve may carry only some of them.

use crate::{instance::instance_label, Instance, Interfaces, SERVICE_TYPE};
use mdns_sd::{Receiver, ServiceEvent};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A change seen by a [`Browser`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrowseEvent {
    /// A new instance was resolved.
    Appeared(Instance),
    /// A known instance changed (more addresses, new TXT, new port).
    Updated(Instance),
    /// An instance said goodbye or its records expired.
    Disappeared(Instance),
}

impl BrowseEvent {
    /// The instance the event is about.
    pub fn instance(&self) -> &Instance {
        match self {
            BrowseEvent::Appeared(i) | BrowseEvent::Updated(i) | BrowseEvent::Disappeared(i) => i,
        }
    }
}

#[derive(Default)]
pub(crate) struct Table {
    /// Resolved instances by lowercased full name, with the version of their last change.
    instances: HashMap<String, (u64, Instance)>,
    /// Every instance name seen (found or resolved) since browsing started.
    seen: HashSet<String>,
    version: u64,
    stopped: bool,
}

/// State shared by the pump thread and the browsers of one daemon.
pub(crate) struct Shared {
    table: Mutex<Table>,
    changed: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Shared {
            table: Mutex::new(Table::default()),
            changed: watch::channel(0).0,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, event: ServiceEvent) {
        let mut t = self.table();
        match event {
            ServiceEvent::ServiceFound(_, fullname) => {
                t.seen.insert(instance_label(&fullname));
                return;
            }
            ServiceEvent::ServiceResolved(r) => {
                let mut inst = Instance::from_resolved(&r);
                t.seen.insert(inst.name().to_owned());
                let key = r.get_fullname().to_ascii_lowercase();
                if let Some((_, old)) = t.instances.get(&key) {
                    inst.keep_addrs_of(old);
                    // A repeated resolve with nothing new is not a change.
                    if *old == inst {
                        return;
                    }
                }
                t.version += 1;
                let v = t.version;
                t.instances.insert(key, (v, inst));
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if t.instances.remove(&fullname.to_ascii_lowercase()).is_none() {
                    return;
                }
                t.version += 1;
            }
            ServiceEvent::SearchStopped(_) => t.stopped = true,
            _ => return,
        }
        let v = t.version;
        drop(t);
        self.changed.send_replace(v);
    }

    fn stop(&self) {
        self.table().stopped = true;
        self.changed.send_modify(|v| *v += 1);
    }

    /// Drains the daemon's browse channel on a thread of its own until the
    /// daemon stops (its sender drops).
    pub(crate) fn start_pump(self: &Arc<Self>, rx: Receiver<ServiceEvent>) -> std::io::Result<()> {
        let shared = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("echostream-mdns-browse".into())
            .spawn(move || {
                while let Ok(ev) = rx.recv() {
                    match shared.upgrade() {
                        Some(s) => s.apply(ev),
                        None => return,
                    }
                }
                if let Some(s) = shared.upgrade() {
                    s.stop();
                }
            })
            .map(|_| ())
    }
}

/// Instances of one service name (or of every name) appearing, changing and
/// disappearing. Made by [`crate::Discovery::browse`].
///
/// A new browser first reports every instance already known as `Appeared`.
pub struct Browser {
    /// Keeps the daemon (and so the browse) alive.
    discovery: crate::Discovery,
    shared: Arc<Shared>,
    rx: watch::Receiver<u64>,
    name: Option<String>,
    view: HashMap<String, (u64, Instance)>,
    pending: VecDeque<BrowseEvent>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("name", &self.name)
            .field("interfaces", self.discovery.interfaces())
            .field("known", &self.view.len())
            .finish_non_exhaustive()
    }
}

impl Browser {
    pub(crate) fn new(discovery: crate::Discovery, shared: Arc<Shared>, name: Option<String>) -> Self {
        let rx = shared.changed.subscribe();
        Browser {
            discovery,
            shared,
            rx,
            name,
            view: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// The next change, or `None` once the daemon has stopped.
    pub async fn next(&mut self) -> Option<BrowseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            // Mark the current version seen before reading the table, so a
            // change made after the read wakes the wait below.
            self.rx.borrow_and_update();
            let stopped = self.refresh();
            if !self.pending.is_empty() {
                continue;
            }
            if stopped || self.rx.changed().await.is_err() {
                self.refresh();
                return self.pending.pop_front();
            }
        }
    }

    /// The matching instances known right now (as of the last event returned,
    /// plus anything resolved since).
    pub fn instances(&mut self) -> Vec<Instance> {
        self.refresh();
        let mut v: Vec<Instance> = self.shared_matching().into_values().map(|(_, i)| i).collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Instance names of the service type seen so far that do not match this
    /// browser's name, sorted.
    pub fn other_names(&self) -> Vec<String> {
        let t = self.shared.table();
        let mut v: Vec<String> = t.seen.iter().filter(|n| !self.wants(n)).cloned().collect();
        v.sort();
        v
    }

    /// The service name this browser follows (`None`: every instance of the type).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The interfaces browsed.
    pub fn interfaces(&self) -> &Interfaces {
        self.discovery.interfaces()
    }

    fn wants(&self, label: &str) -> bool {
        self.name.as_deref().is_none_or(|n| crate::name_matches(label, n))
    }

    fn shared_matching(&self) -> HashMap<String, (u64, Instance)> {
        let t = self.shared.table();
        t.instances
            .iter()
            .filter(|(_, (_, i))| self.wants(i.name()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Diffs the view against the table into `pending`; returns whether browsing stopped.
    fn refresh(&mut self) -> bool {
        let now = self.shared_matching();
        let stopped = self.shared.table().stopped;
        let mut appeared = Vec::new();
        for (k, (v, inst)) in &now {
            match self.view.get(k) {
                None => appeared.push(BrowseEvent::Appeared(inst.clone())),
                Some((old, _)) if old != v => self.pending.push_back(BrowseEvent::Updated(inst.clone())),
                _ => {}
            }
        }
        // Report in a stable order: by name.
        appeared.sort_by(|a, b| a.instance().name().cmp(b.instance().name()));
        self.pending.extend(appeared);
        let gone: Vec<String> = self
            .view
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some((_, inst)) = self.view.remove(&k) {
                self.pending.push_back(BrowseEvent::Disappeared(inst));
            }
        }
        self.view = now;
        stopped
    }
}

/// Starts the daemon's browse of [`SERVICE_TYPE`].
pub(crate) fn start(daemon: &mdns_sd::ServiceDaemon) -> Result<Receiver<ServiceEvent>, mdns_sd::Error> {
    daemon.browse(SERVICE_TYPE)
}
