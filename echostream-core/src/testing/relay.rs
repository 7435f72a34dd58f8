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
        }
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

    /// `None` to drop, else how long to hold the datagram.
    fn plan(&self) -> Option<Duration> {
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
        forward(&shared, up, shared.upstream, buf[..n].to_vec());
    }
    for t in tasks {
        t.abort();
    }
}

/// Receives from the server for one client and sends back to that client.
async fn back_loop(up: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, _)) = up.recv_from(&mut buf).await {
        forward(&shared, front.clone(), client, buf[..n].to_vec());
    }
}

fn forward(shared: &Arc<Shared>, via: Arc<UdpSocket>, to: SocketAddr, data: Vec<u8>) {
    match shared.plan() {
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
                let _ = d.via.try_send_to(&d.data, d.to);
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
