//! A client over many instances of one service: [`Balancer`].
//!
//! - **Membership** follows a discovery [`Source`](echostream_discovery::Source)
//!   (mDNS, a static list, unicast DNS-SD): one member per instance, added,
//!   replaced (new address or fingerprint) and removed as the source changes.
//! - **One connection per healthy instance**, made from the builder given
//!   (all members share its UDP endpoint); the fingerprint an instance
//!   announces in TXT is pinned exactly as [`RpcClient::discover`] pins it.
//! - **Power of two choices**: each call draws two instances in rotation at
//!   random and goes to the one with fewer calls outstanding.
//! - **Ejection and probing**: a call that meets a connection failure takes
//!   the instance out of rotation at once; its task probes it again after
//!   50 ms, doubling to 2 s, for as long as the source lists it. A server with
//!   the health service (`echostream.health`) must answer `SERVING` to enter
//!   rotation, and its health watch saying `NOT_SERVING` (as a graceful
//!   shutdown does first) takes it out.
//! - **Retries**: a call marked idempotent ([`CallOptions::idempotent`], or a
//!   method named in [`ClientBuilder::idempotent`]) whose connection fails
//!   mid-call is sent once more, to another instance. Any other call fails
//!   with the error naming the instance and its address: it may have run.
//! - **Stickiness**: streams, subscriptions, clock sync and handlers the server
//!   calls back live on one connection; [`Balancer::pin`] hands out one
//!   instance's [`RpcClient`] for them.
//!
//! The call path allocates nothing of its own: it clones two `Arc`s (the
//! member list and the chosen client) and bumps atomics; the argument is
//! encoded once, and again only for a retry.
//!
//! Layout: this file holds the public type, the choice and the call path;
//! `member` holds one instance's connection, counters and probing task.

mod member;

use crate::protocol::{decode_result, encode_value, CallOptions, Payload, Peer};
use crate::rpc::discovery::{discovery_error, timeout_error, trust_for, DiscoverOptions};
use crate::rpc::{Caller, ClientBuilder, RpcClient};
use crate::{Error, Result};
use echostream_discovery::{BrowseEvent, Instance, Watcher};
use echostream_types::Codec;
use member::Member;
use serde::{de::DeserializeOwned, Serialize};
use std::cell::Cell;
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// A client that spreads calls over every healthy instance of a service;
/// see the [module documentation](self). Cheap to clone; the connections
/// close when the last clone is dropped.
///
/// ```no_run
/// # async fn doc() -> echostream_core::Result<()> {
/// use echostream_core::rpc::{CallOptions, DiscoverOptions, RpcClient};
/// let balancer = RpcClient::balanced("dns-sd:_echostream._udp.example.internal").await?;
/// let n: u64 = balancer
///     .request_with("counter.get", (), CallOptions::new().idempotent())
///     .await?;
/// // State that lives on one connection: one instance's client.
/// let pinned = balancer.pin().await?;
/// let stream = pinned.create_stream("audio.stream").build().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

/// What the balancer and its tasks share.
struct Shared {
    /// The members, replaced as a whole when the source changes (calls clone the `Arc`).
    members: RwLock<Arc<[Arc<Member>]>>,
    /// Bumped when a member enters or leaves rotation: callers waiting for one wake.
    healthy_changed: watch::Sender<u64>,
    /// Instances the source listed that cannot be used (protocol version, fingerprint), with why.
    unusable: Mutex<Vec<String>>,
    /// The last failed refresh of the source.
    source_error: Mutex<Option<String>>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The source followed, in words.
    what: String,
    idempotent_methods: HashSet<String>,
    default_timeout: Option<Duration>,
    default_codec: Codec,
    /// The task that follows the source.
    follow: tokio::task::AbortHandle,
    /// A connection for [`Caller::stream_peer`] when no instance is in rotation.
    last_peer: Mutex<Peer>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.follow.abort();
        for m in read(&self.shared.members).iter() {
            m.remove();
        }
    }
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("source", &self.inner.what)
            .field("instances", &self.instances())
            .finish()
    }
}

/// One instance as the balancer sees it (see [`Balancer::instances`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InstanceStats {
    /// The instance name.
    pub name: String,
    /// Its addresses, the one connected to first.
    pub addrs: Vec<SocketAddr>,
    /// In rotation (connected and, where the server has the health service, serving).
    pub healthy: bool,
    /// Calls sent and not yet answered.
    pub outstanding: usize,
    /// Calls answered by it so far (any result).
    pub calls: u64,
    /// Times it was taken out of rotation.
    pub ejections: u64,
    /// Why its last connection or probe failed.
    pub last_error: Option<String>,
}

impl RpcClient {
    /// A [`Balancer`] over every instance `opts` finds (an mDNS name, a
    /// `dns-sd:` service, or any [`DiscoverOptions::source`]), with default
    /// client options. Returns once one instance is in rotation; fails with
    /// [`Error::DiscoveryTimeout`] if none is within the discovery timeout.
    pub async fn balanced(opts: impl Into<DiscoverOptions>) -> Result<Balancer> {
        ClientBuilder::default().balanced(opts).await
    }
}

impl ClientBuilder {
    /// A [`Balancer`] whose connections use this builder's options (handlers,
    /// timeouts, idempotent methods). A reconnect policy is ignored: the
    /// balancer probes failed instances itself.
    pub async fn balanced(self, opts: impl Into<DiscoverOptions>) -> Result<Balancer> {
        let opts = opts.into();
        let source = opts.to_source()?;
        let watcher = source.watch().map_err(discovery_error)?;
        let idempotent_methods = self.opts.protocol.idempotent_methods.clone();
        let default_timeout = self.opts.protocol.default_timeout;
        let default_codec = self.opts.protocol.default_codec;
        let builder = self.without_reconnect();
        let shared = Arc::new(Shared {
            members: RwLock::new(Arc::from(Vec::new())),
            healthy_changed: watch::channel(0).0,
            unusable: Mutex::new(Vec::new()),
            source_error: Mutex::new(None),
        });
        let mut rx = shared.healthy_changed.subscribe();
        let follow = tokio::spawn(follow(shared.clone(), watcher, builder, opts.clone())).abort_handle();
        let deadline = tokio::time::Instant::now() + opts.discover_timeout();
        let first = loop {
            rx.borrow_and_update();
            if let Some(c) = read(&shared.members).iter().find_map(|m| m.client()) {
                break c;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                follow.abort();
                let mut failures = lock(&shared.unusable).clone();
                failures.extend(read(&shared.members).iter().map(|m| {
                    format!(
                        "{}: {}",
                        m.describe(),
                        m.last_error().unwrap_or_else(|| "no answer yet".into())
                    )
                }));
                failures.extend(lock(&shared.source_error).clone());
                for m in read(&shared.members).iter() {
                    m.remove();
                }
                return Err(timeout_error(&opts, &source, Vec::new(), failures));
            }
        };
        Ok(Balancer {
            inner: Arc::new(Inner {
                shared,
                what: source.to_string(),
                idempotent_methods,
                default_timeout,
                default_codec,
                follow,
                last_peer: Mutex::new(first.peer()),
            }),
        })
    }
}

/// Applies the source's changes to the member list until the source ends.
async fn follow(shared: Arc<Shared>, mut watcher: Watcher, builder: ClientBuilder, opts: DiscoverOptions) {
    while let Some(event) = watcher.next().await {
        match event {
            Ok(BrowseEvent::Appeared(i) | BrowseEvent::Updated(i)) => upsert(&shared, &i, &builder, &opts),
            Ok(BrowseEvent::Disappeared(i)) => {
                let key = i.fullname().to_ascii_lowercase();
                let mut members = write(&shared.members);
                if members.iter().any(|m| m.key == key) {
                    let kept: Vec<Arc<Member>> = members
                        .iter()
                        .filter(|m| {
                            let gone = m.key == key;
                            if gone {
                                m.remove();
                            }
                            !gone
                        })
                        .cloned()
                        .collect();
                    *members = Arc::from(kept);
                    tracing::info!(instance = %i.name(), "instance removed by its source");
                }
                drop(members);
                shared.healthy_changed.send_modify(|v| *v += 1);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(source = %watcher.source(), error = %e, "discovery refresh failed; instances kept");
                *lock(&shared.source_error) = Some(e.to_string());
            }
        }
    }
}

/// Adds an instance, or replaces its member when its addresses, port or fingerprint changed.
fn upsert(shared: &Arc<Shared>, inst: &Instance, builder: &ClientBuilder, opts: &DiscoverOptions) {
    let key = inst.fullname().to_ascii_lowercase();
    let fingerprint = inst.fingerprint();
    let mut members = write(&shared.members);
    if let Some(m) = members.iter().find(|m| m.key == key) {
        let same_place = m.addrs.first().is_some_and(|a| inst.addrs().contains(a));
        if same_place && m.fingerprint == fingerprint {
            return;
        }
    }
    let trust = match trust_for(inst, opts) {
        Ok(t) => t,
        Err(why) => {
            let mut unusable = lock(&shared.unusable);
            // Bounded by the source's own limits; keep the latest few for messages.
            if unusable.len() >= 64 {
                unusable.remove(0);
            }
            unusable.push(format!("`{}`: {why}", inst.name()));
            return;
        }
    };
    let member = Arc::new(Member::new(
        key.clone(),
        inst.name().to_owned(),
        inst.addrs().to_vec(),
        fingerprint,
        trust,
    ));
    let mut list: Vec<Arc<Member>> = Vec::with_capacity(members.len() + 1);
    for m in members.iter() {
        if m.key == key {
            m.remove();
        } else {
            list.push(m.clone());
        }
    }
    list.push(member.clone());
    *members = Arc::from(list);
    drop(members);
    tokio::spawn(member::run(
        member,
        builder.clone(),
        shared.healthy_changed.clone(),
    ));
}

/// Counts a call as outstanding on a member while it lives (also when the call is dropped).
struct InFlight<'a>(&'a Member);

impl<'a> InFlight<'a> {
    fn new(m: &'a Member) -> Self {
        m.outstanding.fetch_add(1, Ordering::AcqRel);
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.0.calls.fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// xorshift64* state, seeded per thread from the standard library's random hasher keys.
    static RNG: Cell<u64> = Cell::new({
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish() | 1
    });
}

fn random() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// Draws a healthy member other than `exclude` at random: a few draws, then a scan.
fn draw<'a>(members: &'a [Arc<Member>], exclude: Option<&Member>) -> Option<&'a Arc<Member>> {
    let ok = |m: &Arc<Member>| exclude.is_none_or(|x| !std::ptr::eq(x, &**m)) && m.is_healthy();
    let n = members.len();
    if n == 0 {
        return None;
    }
    for _ in 0..4 {
        let m = &members[(random() % n as u64) as usize];
        if ok(m) {
            return Some(m);
        }
    }
    let start = (random() % n as u64) as usize;
    (0..n).map(|k| &members[(start + k) % n]).find(|m| ok(m))
}

impl Balancer {
    /// Power of two choices among the members in rotation (other than `exclude`).
    fn try_pick(&self, exclude: Option<&Member>) -> Option<(Arc<Member>, RpcClient)> {
        let members = read(&self.inner.shared.members).clone();
        let a = draw(&members, exclude)?;
        let b = draw(&members, exclude).unwrap_or(a);
        let (first, second) = if b.outstanding.load(Ordering::Acquire) < a.outstanding.load(Ordering::Acquire)
        {
            (b, a)
        } else {
            (a, b)
        };
        // Either may have left rotation since the draw.
        first
            .client()
            .map(|c| (first.clone(), c))
            .or_else(|| second.client().map(|c| (second.clone(), c)))
    }

    /// A member in rotation, waiting (at most `limit`) for one to come back when none is.
    async fn pick(
        &self,
        exclude: Option<&Member>,
        limit: Option<Duration>,
    ) -> Result<(Arc<Member>, RpcClient)> {
        if let Some(found) = self.try_pick(exclude) {
            return Ok(found);
        }
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let mut rx = self.inner.shared.healthy_changed.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(found) = self.try_pick(exclude) {
                return Ok(found);
            }
            let changed = rx.changed();
            let ok = match deadline {
                Some(d) => matches!(tokio::time::timeout_at(d, changed).await, Ok(Ok(()))),
                None => changed.await.is_ok(),
            };
            if !ok {
                return Err(self.no_instance_error(limit));
            }
        }
    }

    fn no_instance_error(&self, waited: Option<Duration>) -> Error {
        let members = read(&self.inner.shared.members).clone();
        let each: Vec<String> = members
            .iter()
            .map(|m| {
                format!(
                    "{}: {}",
                    m.describe(),
                    m.last_error().unwrap_or_else(|| "connecting".into())
                )
            })
            .collect();
        Error::ConnectionClosed {
            code: None,
            reason: format!(
                "no instance from {} in rotation{} ({} known{}{})",
                self.inner.what,
                waited.map(|w| format!(" within {w:?}")).unwrap_or_default(),
                members.len(),
                if each.is_empty() { "" } else { ": " },
                each.join("; ")
            ),
        }
    }

    /// Calls `method` on one instance and waits for its typed result (see
    /// [`RpcClient::request`]).
    pub async fn request<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: A) -> Result<R> {
        self.request_with(method, args, CallOptions::default()).await
    }

    /// Calls `method` with per-call options on one instance. A call marked
    /// idempotent whose connection fails is sent once more to another
    /// instance; other calls fail with an error naming the instance.
    pub async fn request_with<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
        opts: CallOptions,
    ) -> Result<R> {
        let idempotent = opts.idempotent || self.inner.idempotent_methods.contains(method);
        let limit = if opts.no_timeout {
            None
        } else {
            opts.timeout.or(self.inner.default_timeout)
        };
        // Encoded here, and again only for a retry: cloning the encoded `Bytes` to keep it would
        // cost an allocation per call (a `Bytes` made from a `Vec` allocates on its first clone).
        let codec = opts.codec.unwrap_or(self.inner.default_codec);
        let encode = |args: &A| -> Result<Payload> {
            Ok(Payload {
                codec,
                bytes: encode_value(codec, args, method, "argument")?,
            })
        };
        let first = encode(&args)?;
        // Options are kept for a retry only when one may happen (metadata is cloned then).
        let (now, for_retry) = if idempotent {
            (opts.clone(), Some(opts))
        } else {
            (opts, None)
        };
        let (member, client) = self.pick(None, limit).await?;
        let result = {
            let _counted = InFlight::new(&member);
            client.peer().request_raw(method, first, now).await
        };
        let e = match result {
            Ok((codec, bytes)) => return decode_result(codec, &bytes, method),
            Err(e) if e.is_connection_error() => e,
            Err(e) => return Err(e),
        };
        member.eject(&client, &e);
        let Some(opts) = for_retry else {
            return Err(named(&member, e));
        };
        let Ok((second, client)) = self.pick(Some(&member), limit).await else {
            return Err(named(&member, e));
        };
        tracing::debug!(method, from = %member.describe(), to = %second.describe(), "idempotent call retried");
        let again = encode(&args)?;
        let _counted = InFlight::new(&second);
        match client.peer().request_raw(method, again, opts).await {
            Ok((codec, bytes)) => decode_result(codec, &bytes, method),
            Err(e) if e.is_connection_error() => {
                second.eject(&client, &e);
                Err(named(&second, e))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a one-way event to one instance (see [`RpcClient::emit`]). Never resent.
    pub async fn emit<T: Serialize>(&self, name: &str, value: T) -> Result<()> {
        let (member, client) = self.pick(None, self.inner.default_timeout).await?;
        client.emit(name, value).await.map_err(|e| {
            if e.is_connection_error() {
                member.eject(&client, &e);
                named(&member, e)
            } else {
                e
            }
        })
    }

    /// One instance's client, for state that lives on one connection: streams,
    /// subscriptions, clock sync, handlers the server calls back. Chosen like
    /// a call (two random instances in rotation, the less busy one); waits up
    /// to the default call timeout for an instance. If that connection fails,
    /// pin again.
    pub async fn pin(&self) -> Result<RpcClient> {
        let (_, client) = self.pick(None, self.inner.default_timeout).await?;
        *lock(&self.inner.last_peer) = client.peer();
        Ok(client)
    }

    /// Every instance known, sorted by name.
    pub fn instances(&self) -> Vec<InstanceStats> {
        let members = read(&self.inner.shared.members).clone();
        let mut v: Vec<InstanceStats> = members
            .iter()
            .map(|m| InstanceStats {
                name: m.name.clone(),
                addrs: m.addrs.clone(),
                healthy: m.is_healthy(),
                outstanding: m.outstanding.load(Ordering::Acquire),
                calls: m.calls.load(Ordering::Relaxed),
                ejections: m.ejections.load(Ordering::Relaxed),
                last_error: m.last_error(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The number of instances in rotation now.
    pub fn healthy_count(&self) -> usize {
        read(&self.inner.shared.members)
            .iter()
            .filter(|m| m.is_healthy())
            .count()
    }

    /// The source followed, in words.
    pub fn source(&self) -> &str {
        &self.inner.what
    }
}

/// The error of a call on `member`, naming the instance and its address.
fn named(member: &Member, e: Error) -> Error {
    match e {
        Error::ConnectionClosed { code, reason } => Error::ConnectionClosed {
            code,
            reason: format!("{}: {reason}", member.describe()),
        },
        Error::Protocol(m) => Error::Protocol(format!("{}: {m}", member.describe())),
        other => other,
    }
}

/// Typed service clients over a balancer: calls and events are balanced;
/// streams open on the connection [`Balancer::pin`] would choose.
impl Caller for Balancer {
    fn send_request<A, R>(
        &self,
        method: &str,
        args: A,
        opts: CallOptions,
    ) -> impl Future<Output = Result<R>> + Send
    where
        A: Serialize + Send,
        R: DeserializeOwned + Send,
    {
        self.request_with(method, args, opts)
    }

    fn send_event<T>(&self, name: &str, value: T) -> impl Future<Output = Result<()>> + Send
    where
        T: Serialize + Send,
    {
        self.emit(name, value)
    }

    fn stream_peer(&self) -> Peer {
        match self.try_pick(None) {
            Some((_, c)) => c.peer(),
            None => lock(&self.inner.last_peer).clone(),
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
