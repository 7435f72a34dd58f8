//! One instance behind a [`Balancer`](super::Balancer): its connection, its
//! counters, and the task that connects it, watches it and probes it back
//! after a failure.
//!
//! Concurrency model: the member's task owns the connection's life cycle;
//! callers only read the current client (a `RwLock<Option<RpcClient>>`, held
//! for a clone) and bump atomics. A call that meets a connection failure
//! ejects the member at once ([`Member::eject`]) and wakes the task, which
//! then probes with exponential backoff until the instance answers again.
//! A member is never forgotten while its source lists it.

use crate::connection::tls::ClientTrust;
use crate::rpc::health::HealthStatus;
use crate::rpc::{Caller, ClientBuilder, RpcClient};
use crate::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// First wait before probing an ejected instance again; doubles per failure.
pub(super) const PROBE_INITIAL: Duration = Duration::from_millis(50);
/// Longest wait between two probes.
pub(super) const PROBE_MAX: Duration = Duration::from_secs(2);
/// Longest a connection attempt to a member may take (less when the builder's connect
/// timeout is shorter): a dead instance does not answer at all, and a probe stuck for the
/// builder's default 10 s would keep a restarted instance out of rotation that long.
pub(super) const PROBE_CONNECT_LIMIT: Duration = Duration::from_secs(3);

/// One instance and its connection.
#[derive(Debug)]
pub(super) struct Member {
    /// The instance's full name (lowercased): the key the source uses.
    pub(super) key: String,
    pub(super) name: String,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) fingerprint: Option<String>,
    trust: ClientTrust,
    /// The connection while the instance is in rotation; `None` while ejected.
    client: RwLock<Option<RpcClient>>,
    /// Calls sent and not yet answered (what power-of-two-choices compares).
    pub(super) outstanding: AtomicUsize,
    /// Calls answered (with any result) by this instance.
    pub(super) calls: AtomicU64,
    /// Times the instance was taken out of rotation.
    pub(super) ejections: AtomicU64,
    /// Why the last connection or probe failed.
    last_error: Mutex<Option<String>>,
    /// Set when the source no longer lists the instance (or the balancer is dropped).
    removed: AtomicBool,
    /// Wakes the task: an ejection by a call, or removal.
    wake: Notify,
}

impl Member {
    pub(super) fn new(
        key: String,
        name: String,
        addrs: Vec<SocketAddr>,
        fingerprint: Option<String>,
        trust: ClientTrust,
    ) -> Self {
        Member {
            key,
            name,
            addrs,
            fingerprint,
            trust,
            client: RwLock::new(None),
            outstanding: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            last_error: Mutex::new(None),
            removed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// The first address: what messages name.
    pub(super) fn addr(&self) -> Option<SocketAddr> {
        self.addrs.first().copied()
    }

    /// The connection, while in rotation.
    pub(super) fn client(&self) -> Option<RpcClient> {
        self.client.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.client.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    pub(super) fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Takes the instance out of rotation if `failed` is still its connection (a
    /// failure seen on an older connection does not eject a newer one).
    pub(super) fn eject(&self, failed: &RpcClient, why: &Error) {
        let mut slot = self.client.write().unwrap_or_else(|p| p.into_inner());
        let same = slot
            .as_ref()
            .is_some_and(|c| c.peer().connection_id() == failed.peer().connection_id());
        if same {
            *slot = None;
            drop(slot);
            self.ejections.fetch_add(1, Ordering::Relaxed);
            *lock(&self.last_error) = Some(why.to_string());
            tracing::info!(instance = %self.name, addr = ?self.addr(), error = %why, "instance ejected");
            self.wake.notify_one();
        }
    }

    /// The source dropped the instance (or the balancer went away): the task ends.
    pub(super) fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.wake.notify_one();
    }

    fn removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// `instance NAME at ADDR` for messages.
    pub(super) fn describe(&self) -> String {
        match self.addr() {
            Some(a) => format!("instance `{}` at {a}", self.name),
            None => format!("instance `{}`", self.name),
        }
    }

    /// Connects to the first address that answers and checks the health service
    /// when the server has one.
    async fn connect(&self, builder: &ClientBuilder) -> Result<RpcClient, String> {
        let mut errors = Vec::new();
        for addr in &self.addrs {
            let target = addr.to_string();
            let attempt = builder.clone().trust(self.trust.clone()).connect(&target);
            let connected = match tokio::time::timeout(PROBE_CONNECT_LIMIT, attempt).await {
                Ok(r) => r,
                Err(_) => {
                    errors.push(format!("{addr}: no answer within {PROBE_CONNECT_LIMIT:?}"));
                    continue;
                }
            };
            match connected {
                Ok(c) => match c.health("").await {
                    Ok(HealthStatus::Serving) => return Ok(c),
                    // A server without the health service is judged by its connection alone.
                    Err(Error::UnknownMethod { .. }) => return Ok(c),
                    Ok(other) => {
                        c.close().await;
                        errors.push(format!("{addr}: health {other:?}"));
                    }
                    Err(e) => errors.push(format!("{addr}: health check failed: {e}")),
                },
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(errors.join("; "))
    }
}

/// Follows an instance until it is removed: connect (with health check), serve
/// until the connection ends, the health service says `NOT_SERVING` or a call
/// ejects it, then probe again after a backoff that doubles up to [`PROBE_MAX`].
pub(super) async fn run(
    member: std::sync::Arc<Member>,
    builder: ClientBuilder,
    healthy_changed: watch::Sender<u64>,
) {
    let mut backoff = PROBE_INITIAL;
    while !member.removed() {
        match member.connect(&builder).await {
            Ok(client) => {
                backoff = PROBE_INITIAL;
                if member.removed() {
                    return;
                }
                *member.client.write().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
                tracing::info!(instance = %member.name, addr = ?member.addr(), "instance in rotation");
                healthy_changed.send_modify(|v| *v += 1);
                let why = serve(&member, &client).await;
                {
                    let mut slot = member.client.write().unwrap_or_else(|p| p.into_inner());
                    let same = slot
                        .as_ref()
                        .is_some_and(|c| c.peer().connection_id() == client.peer().connection_id());
                    if same {
                        *slot = None;
                        member.ejections.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(why) = why {
                    tracing::info!(instance = %member.name, addr = ?member.addr(), reason = %why, "instance out of rotation");
                    *lock(&member.last_error) = Some(why);
                }
                healthy_changed.send_modify(|v| *v += 1);
                // Calls in flight keep their clone; the connection closes with the last one.
                drop(client);
            }
            Err(why) => {
                tracing::debug!(instance = %member.name, error = %why, ?backoff, "probe failed");
                *lock(&member.last_error) = Some(why);
            }
        }
        if member.removed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = member.wake.notified() => {}
        }
        backoff = (backoff * 2).min(PROBE_MAX);
    }
}

/// Waits until the member should leave rotation; returns why (`None`: removed or ejected by a call).
async fn serve(member: &Member, client: &RpcClient) -> Option<String> {
    let peer = client.peer();
    // The health watch, when the server has one: NOT_SERVING (a graceful shutdown starts
    // with it) takes the instance out before its connection closes.
    let watch = client.watch_health("").await.ok();
    let health = async {
        match &watch {
            Some(rx) => loop {
                match rx.recv().await {
                    Some(HealthStatus::Serving) => continue,
                    Some(other) => return format!("health {other:?}"),
                    None => return "the health watch ended".to_owned(),
                }
            },
            None => std::future::pending().await,
        }
    };
    tokio::pin!(health);
    let closed = peer.closed();
    tokio::pin!(closed);
    loop {
        if member.removed() || !member.is_healthy() {
            return None;
        }
        tokio::select! {
            e = &mut closed => return Some(e.to_string()),
            why = &mut health => return Some(why),
            // An ejection by a call, or removal: checked at the top of the loop.
            _ = member.wake.notified() => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
