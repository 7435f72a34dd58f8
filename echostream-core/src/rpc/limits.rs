//! Limits: token-bucket rate limits, connection admission before TLS, and the bound on
//! answers waiting for the write queue.

use echostream_types::{Code, Status};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token-bucket rate: `burst` calls at once, refilled at `per_second` calls per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: u32,
}

impl RateLimit {
    /// `n` calls per second, with a burst of `n` (at least 1).
    pub fn per_second(n: u32) -> Self {
        Self {
            per_second: f64::from(n.max(1)),
            burst: n.max(1),
        }
    }

    /// `n` calls per minute, with a burst of `n` (at least 1).
    pub fn per_minute(n: u32) -> Self {
        Self {
            per_second: f64::from(n.max(1)) / 60.0,
            burst: n.max(1),
        }
    }

    /// Sets how many calls may come at once after a quiet period (at least 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// The refill rate in calls per second.
    pub fn rate(&self) -> f64 {
        self.per_second
    }

    /// The bucket size.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.per_second >= 1.0 {
            write!(f, "{}/s (burst {})", self.per_second, self.burst)
        } else {
            write!(f, "{}/min (burst {})", self.per_second * 60.0, self.burst)
        }
    }
}

/// One token bucket (sans-IO: the time is passed in).
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.limit.per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }
}

/// The `RATE_LIMITED` status for `method`: the message names the limit and the retry delay;
/// the details carry the delay in milliseconds as 8 big-endian bytes (see
/// [`retry_after`](retry_after)).
pub(crate) fn rate_limited(method: &str, scope: &str, limit: RateLimit, wait: Duration) -> Status {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    Status::new(
        Code::RATE_LIMITED,
        format!("`{method}` refused: rate limit of {limit} {scope} exceeded; retry after {ms} ms"),
    )
    .with_details(ms.to_be_bytes().to_vec())
}

pub use crate::error::retry_after;

/// A name pattern: `*` (everything), `prefix.*` (everything starting with `prefix.`), or an
/// exact name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    Any,
    Prefix(String),
    Exact(String),
}

impl Pattern {
    pub(crate) fn parse(text: &str) -> Self {
        if text == "*" {
            Pattern::Any
        } else if let Some(prefix) = text.strip_suffix('*') {
            Pattern::Prefix(prefix.to_owned())
        } else {
            Pattern::Exact(text.to_owned())
        }
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Exact(e) => name == e,
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Prefix(p) => write!(f, "{p}*"),
            Pattern::Exact(e) => f.write_str(e),
        }
    }
}

/// When a server makes a new client prove its address (QUIC Retry) before any TLS work.
///
/// A Retry costs the client one round trip and the server almost nothing; it stops a flood of
/// Initial packets from spoofed addresses from reaching TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressValidation {
    /// Never (fastest connects; spoofed floods reach TLS).
    Never,
    /// When more than this many handshakes are in progress (the default, with 64).
    UnderLoad {
        /// Handshakes in progress above which unvalidated clients get a Retry.
        handshakes: usize,
    },
    /// Every new client.
    Always,
}

impl Default for AddressValidation {
    fn default() -> Self {
        AddressValidation::UnderLoad { handshakes: 64 }
    }
}

/// Counters of what the server did with incoming connection attempts before TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionStats {
    /// Attempts answered with a QUIC Retry (address validation).
    pub retried: u64,
    /// Attempts refused before TLS (connection limits): the client sees a refused connection.
    pub refused: u64,
    /// Attempts accepted into the TLS handshake.
    pub accepted: u64,
}

/// Connection limits applied to incoming attempts before any TLS work.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) max_connections: usize,
    pub(crate) max_per_address: usize,
    pub(crate) validation: AddressValidation,
    /// Connections in any stage (handshaking or live), per source IP address.
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Connections in any stage.
    total: AtomicUsize,
    /// Connections still in the TLS handshake or the hello.
    handshaking: Arc<AtomicUsize>,
    retried: AtomicU64,
    refused: AtomicU64,
    accepted: AtomicU64,
}

/// What to do with an incoming attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    Retry,
    Refuse(String),
}

impl Admission {
    pub(crate) fn new(max_connections: usize, max_per_address: usize, validation: AddressValidation) -> Self {
        Self {
            max_connections,
            max_per_address,
            validation,
            per_address: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            handshaking: Arc::new(AtomicUsize::new(0)),
            retried: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        }
    }

    /// Decides on an attempt from `remote` (`validated`: it already answered a Retry).
    pub(crate) fn decide(&self, remote: SocketAddr, validated: bool) -> Verdict {
        let total = self.total.load(Ordering::Acquire);
        if total >= self.max_connections {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Refuse(format!(
                "{remote}: the server is at its connection limit ({})",
                self.max_connections
            ));
        }
        let from_here = lock(&self.per_address).get(&remote.ip()).copied().unwrap_or(0);
        if from_here >= self.max_per_address {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Refuse(format!(
                "{remote}: {} already has {from_here} connections, the per-address limit ({})",
                remote.ip(),
                self.max_per_address
            ));
        }
        if !validated {
            let retry = match self.validation {
                AddressValidation::Never => false,
                AddressValidation::Always => true,
                AddressValidation::UnderLoad { handshakes } => {
                    self.handshaking.load(Ordering::Acquire) >= handshakes
                }
            };
            if retry {
                self.retried.fetch_add(1, Ordering::Relaxed);
                return Verdict::Retry;
            }
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Verdict::Accept
    }

    /// Counts an accepted connection until the returned slot drops.
    pub(crate) fn occupy(self: &Arc<Self>, remote: SocketAddr) -> Slot {
        *lock(&self.per_address).entry(remote.ip()).or_insert(0) += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        self.handshaking.fetch_add(1, Ordering::AcqRel);
        Slot {
            admission: self.clone(),
            ip: remote.ip(),
            handshaking: true,
        }
    }

    pub(crate) fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            retried: self.retried.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
        }
    }

    /// Connections in any stage, per source address, and handshakes in progress (for tests and
    /// the memory-bound documentation: the map never holds an address without a connection).
    pub(crate) fn tracked(&self) -> (usize, usize, usize) {
        (
            self.total.load(Ordering::Acquire),
            lock(&self.per_address).len(),
            self.handshaking.load(Ordering::Acquire),
        )
    }
}

/// One connection counted by [`Admission`]; releases its counts when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
    handshaking: bool,
}

impl Slot {
    /// The connection finished its handshake (or ended): it no longer counts as handshaking.
    pub(crate) fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.admission.handshaking.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.handshake_done();
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = lock(&self.admission.per_address);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_says_when_to_retry() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit::per_second(10).burst(3), t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait >= Duration::from_millis(99),
            "{wait:?}"
        );
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn rate_limited_status_carries_the_retry_delay() {
        let s = rate_limited(
            "login",
            "per connection",
            RateLimit::per_minute(6),
            Duration::from_secs(10),
        );
        assert_eq!(s.code(), Code::RATE_LIMITED);
        assert_eq!(retry_after(&s), Some(Duration::from_secs(10)));
        assert!(
            s.message().contains("`login`") && s.message().contains("6/min"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn patterns_match_exact_prefix_and_all() {
        assert!(Pattern::parse("*").matches("x"));
        assert!(Pattern::parse("admin.*").matches("admin.reboot"));
        assert!(!Pattern::parse("admin.*").matches("administrator"));
        assert!(Pattern::parse("login").matches("login"));
        assert!(!Pattern::parse("login").matches("login2"));
    }

    #[test]
    fn admission_limits_per_address_and_releases_on_drop() {
        let a = Arc::new(Admission::new(10, 2, AddressValidation::Never));
        let addr: SocketAddr = "127.0.0.11:1000".parse().unwrap();
        let other: SocketAddr = "127.0.0.12:1000".parse().unwrap();
        assert_eq!(a.decide(addr, false), Verdict::Accept);
        let s1 = a.occupy(addr);
        let _s2 = a.occupy(addr);
        assert!(matches!(a.decide(addr, false), Verdict::Refuse(r) if r.contains("per-address limit (2)")));
        assert_eq!(a.decide(other, false), Verdict::Accept);
        drop(s1);
        assert_eq!(a.decide(addr, false), Verdict::Accept);
        drop(_s2);
        assert_eq!(a.tracked(), (0, 0, 0));
    }

    #[test]
    fn address_validation_under_load_retries_only_unvalidated_clients() {
        let a = Arc::new(Admission::new(
            10,
            10,
            AddressValidation::UnderLoad { handshakes: 1 },
        ));
        let addr: SocketAddr = "127.0.0.11:1000".parse().unwrap();
        assert_eq!(a.decide(addr, false), Verdict::Accept);
        let _s = a.occupy(addr);
        assert_eq!(a.decide(addr, false), Verdict::Retry);
        assert_eq!(a.decide(addr, true), Verdict::Accept);
    }
}
