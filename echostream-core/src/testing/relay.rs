//! A UDP relay with configurable impairments.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// What the relay does to each datagram, in each direction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Uniform random extra delay in `[-jitter, +jitter]` (clamped at zero
    /// total); datagrams may be reordered as a result.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a datagram is dropped.
    pub loss: f64,
    /// Jitter as a queue makes it: each datagram's delay varies, but none overtakes an earlier
    /// one in the same direction. Off by default: each datagram is delayed independently, so
    /// jitter reorders them (about `2 × jitter × rate` deep), harsher than most real links.
    pub in_order: bool,
    /// Link rate in bits per second, each direction (`None`: unlimited). Datagrams leave one
    /// after another, each taking its size at this rate, behind a drop-tail queue of
    /// [`Impairment::queue`]; the delay and jitter above come on top.
    pub rate: Option<u64>,
    /// The longest a datagram may wait for the rate-limited link before it is dropped (a
    /// router's buffer, in time); only with [`Impairment::rate`].
    pub queue: Duration,
}

impl Impairment {
    /// A perfect link.
    pub fn none() -> Self {
        Self::default()
    }

    /// A fixed delay with jitter.
    pub fn delay(delay: Duration, jitter: Duration) -> Self {
        Self {
            delay,
            jitter,
            loss: 0.0,
            in_order: false,
            rate: None,
            queue: Duration::ZERO,
        }
    }

    /// Limits the link to `bits_per_second` in each direction, with a 50 ms drop-tail queue
    /// (see [`Impairment::rate`]).
    pub fn with_rate(mut self, bits_per_second: u64) -> Self {
        self.rate = Some(bits_per_second.max(1));
        self.queue = Duration::from_millis(50);
        self
    }

    /// Keeps datagrams in order (see [`Impairment::in_order`]).
    pub fn in_order(mut self) -> Self {
        self.in_order = true;
        self
    }

    /// Adds random loss.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }
}

struct Shared {
    upstream: SocketAddr,
    /// Datagrams waiting for their release time, served by the scheduler thread.
    delayed: Mutex<std::sync::mpsc::Sender<Delayed>>,
    impairment: Mutex<Impairment>,
    /// While set, every datagram is dropped in both directions.
    cut: AtomicBool,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    /// Per direction (0: toward the server, 1: toward the client): forwarded, dropped.
    by_direction: [[AtomicU64; 2]; 2],
    /// Datagrams the relay could not send on (its socket's buffer was full): lost too, but
    /// not by the impairment.
    send_failures: AtomicU64,
    /// Per direction, the release time of the latest delayed datagram (for `in_order`).
    last_due: [Mutex<Option<std::time::Instant>>; 2],
    /// Per direction, when the rate-limited link is free again.
    link_free: [Mutex<Option<std::time::Instant>>; 2],
    rng: Mutex<u64>,
}

impl Shared {
    /// xorshift64*: deterministic per seed, good enough for loss and jitter.
    fn random(&self) -> f64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let v = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `None` to drop, else how long to hold the datagram of `len` bytes that goes
    /// `direction`.
    fn plan(&self, direction: usize, len: usize) -> Option<Duration> {
        let serial = self.serialize(direction, len)?;
        let d = self.plan_one()? + serial;
        if !self.impairment.lock().unwrap_or_else(|p| p.into_inner()).in_order {
            return Some(d);
        }
        let now = std::time::Instant::now();
        let mut last = self.last_due[direction].lock().unwrap_or_else(|p| p.into_inner());
        let due = last.map_or(now + d, |l| l.max(now + d));
        *last = Some(due);
        Some(due - now)
    }

    /// The wait for the rate-limited link and the datagram's own transmission time, or `None`
    /// when the queue is full (drop-tail). Zero without a rate.
    fn serialize(&self, direction: usize, len: usize) -> Option<Duration> {
        let (rate, queue) = {
            let imp = self.impairment.lock().unwrap_or_else(|p| p.into_inner());
            (imp.rate, imp.queue)
        };
        let Some(rate) = rate else {
            return Some(Duration::ZERO);
        };
        let now = std::time::Instant::now();
        let mut free = self.link_free[direction]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let start = free.map_or(now, |f| f.max(now));
        if start - now > queue {
            return None;
        }
        let done = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
        *free = Some(done);
        Some(done - now)
    }

    /// The impairment's verdict for one datagram, on its own.
    fn plan_one(&self) -> Option<Duration> {
        if self.cut.load(Ordering::Relaxed) {
            return None;
        }
        let imp = self.impairment.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if imp.loss > 0.0 && self.random() < imp.loss {
            return None;
        }
        if imp.jitter.is_zero() {
            return Some(imp.delay);
        }
        let j = imp.jitter.as_secs_f64() * (2.0 * self.random() - 1.0);
        Some(Duration::from_secs_f64((imp.delay.as_secs_f64() + j).max(0.0)))
    }
}

/// A UDP relay on 127.0.0.1 in front of one upstream server. Connect clients
/// to [`Relay::local_addr`] instead of the server. Stops when dropped.
#[derive(Debug)]
pub struct Relay {
    local: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Starts a relay to `upstream` (a loopback address) with an impairment and a random seed.
    pub async fn start(upstream: SocketAddr, impairment: Impairment, seed: u64) -> std::io::Result<Relay> {
        let front = Arc::new(bind(upstream.ip())?);
        let local = front.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel();
        // tokio's timers have 1 ms granularity, too coarse to emulate a
        // 5 ms ± 2 ms link: delayed datagrams are released by a thread that
        // waits with the OS's high-resolution timers.
        std::thread::Builder::new()
            .name("echostream-relay".into())
            .spawn(move || scheduler(rx))?;
        let shared = Arc::new(Shared {
            delayed: Mutex::new(tx),
            upstream,
            impairment: Mutex::new(impairment),
            cut: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            by_direction: Default::default(),
            send_failures: AtomicU64::new(0),
            last_due: Default::default(),
            link_free: Default::default(),
            rng: Mutex::new(seed | 1),
        });
        let task = tokio::spawn(front_loop(front, shared.clone()));
        Ok(Relay { local, shared, task })
    }

    /// The address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Drops every datagram from now on (a vanished peer or a dead link), or
    /// forwards again.
    pub fn set_cut(&self, cut: bool) {
        self.shared.cut.store(cut, Ordering::Relaxed);
    }

    /// Changes the impairment of datagrams from now on.
    pub fn set_impairment(&self, impairment: Impairment) {
        *self.shared.impairment.lock().unwrap_or_else(|p| p.into_inner()) = impairment;
    }

    /// Datagrams forwarded and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.forwarded.load(Ordering::Relaxed),
            self.shared.dropped.load(Ordering::Relaxed),
        )
    }

    /// The counts per direction, and the datagrams the relay failed to send.
    pub fn stats(&self) -> RelayStats {
        let get = |d: usize, i: usize| self.shared.by_direction[d][i].load(Ordering::Relaxed);
        RelayStats {
            to_server_forwarded: get(0, 0),
            to_server_dropped: get(0, 1),
            to_client_forwarded: get(1, 0),
            to_client_dropped: get(1, 1),
            send_failures: self.shared.send_failures.load(Ordering::Relaxed),
        }
    }
}

/// What a [`Relay`] did, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams from clients forwarded to the server.
    pub to_server_forwarded: u64,
    /// Datagrams from clients the impairment dropped.
    pub to_server_dropped: u64,
    /// Datagrams from the server forwarded to clients.
    pub to_client_forwarded: u64,
    /// Datagrams from the server the impairment dropped.
    pub to_client_dropped: u64,
    /// Datagrams lost because the relay's own socket could not take them (counted as
    /// forwarded above): a relay too slow for the sender, not the impairment.
    pub send_failures: u64,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP socket on `ip` with buffers as large as EchoStream's own: with the
/// kernel's default (~208 KiB) a fast sender overflows the relay, which would
/// add loss nobody asked for.
fn bind(ip: std::net::IpAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let size = crate::connection::TransportOptions::default().socket_buffer;
    // Best effort, as for EchoStream's sockets: the kernel caps the size.
    let _ = socket.set_recv_buffer_size(size);
    let _ = socket.set_send_buffer_size(size);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives from clients; one upstream socket per client, so the server sees
/// each client as a distinct address.
async fn front_loop(front: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut tasks = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = front.recv_from(&mut buf).await else {
            break;
        };
        let up = match clients.get(&from) {
            Some(s) => s.clone(),
            None => {
                let Ok(sock) = bind(shared.upstream.ip()) else {
                    continue;
                };
                let sock = Arc::new(sock);
                clients.insert(from, sock.clone());
                tasks.push(tokio::spawn(back_loop(
                    sock.clone(),
                    front.clone(),
                    from,
                    shared.clone(),
                )));
                sock
            }
        };
        forward(&shared, up, shared.upstream, buf[..n].to_vec(), 0);
    }
    for t in tasks {
        t.abort();
    }
}

/// Receives from the server for one client and sends back to that client.
async fn back_loop(up: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, _)) = up.recv_from(&mut buf).await {
        forward(&shared, front.clone(), client, buf[..n].to_vec(), 1);
    }
}

fn forward(shared: &Arc<Shared>, via: Arc<UdpSocket>, to: SocketAddr, data: Vec<u8>, direction: usize) {
    let plan = shared.plan(direction, data.len());
    shared.by_direction[direction][usize::from(plan.is_none())].fetch_add(1, Ordering::Relaxed);
    match plan {
        None => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Some(d) if d.is_zero() => {
            shared.forwarded.fetch_add(1, Ordering::Relaxed);
            if via.try_send_to(&data, to).is_err() {
                tokio::spawn(async move {
                    let _ = via.send_to(&data, to).await;
                });
            }
        }
        Some(d) => {
            shared.forwarded.fetch_add(1, Ordering::Relaxed);
            let item = Delayed {
                due: std::time::Instant::now() + d,
                via,
                to,
                data,
                failures: shared.clone(),
            };
            let _ = shared
                .delayed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(item);
        }
    }
}

/// A datagram held back until `due`.
struct Delayed {
    due: std::time::Instant,
    via: Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
    /// Where a failed send is counted.
    failures: Arc<Shared>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        other.due.cmp(&self.due)
    }
}

/// Releases delayed datagrams at their due time; ends when the relay is dropped.
fn scheduler(rx: std::sync::mpsc::Receiver<Delayed>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut heap = std::collections::BinaryHeap::new();
    loop {
        let now = std::time::Instant::now();
        while heap.peek().is_some_and(|d: &Delayed| d.due <= now) {
            if let Some(d) = heap.pop() {
                // A non-blocking send on the tokio socket works from any thread.
                if d.via.try_send_to(&d.data, d.to).is_err() {
                    d.failures.send_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let next = match heap.peek() {
            Some(d) => rx.recv_timeout(d.due.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(d) => heap.push(d),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
