//! [`ServerStatus`]: a server's own state as values, for a status page or a health report:
//! where it listens, each connection (who, how it is doing), the limits in force, the health
//! statuses.

use super::*;
use crate::rpc::health::HealthStatus;
use crate::rpc::{AdmissionStats, PeerIdentity};
use std::collections::BTreeMap;

/// A snapshot of a server (see [`ServerHandle::status`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Its certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// Every live connection.
    pub connections: Vec<ConnectionStatus>,
    /// The limits in force.
    pub limits: ServerLimits,
    /// The health status of each service name set (`""`: the whole server).
    pub health: BTreeMap<String, HealthStatus>,
    /// What happened to connection attempts before TLS (accepted, retried, refused).
    pub admission: AdmissionStats,
    /// The methods it answers, sorted.
    pub methods: Vec<String>,
    /// Events a listener could not decode or that failed, since start.
    pub failed_events: u64,
}

/// One connection in a [`ServerStatus`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionStatus {
    /// Address, RTT, congestion window, traffic, streams, calls in flight, 0-RTT, clock.
    pub info: ConnectionInfo,
    /// Who the client is (token or client certificate), when it said.
    pub identity: Option<PeerIdentity>,
}

/// The limits a server enforces (see the builder setters of the same names).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Connections in all (`max_connections`).
    pub max_connections: usize,
    /// Connections from one address (`max_connections_per_address`).
    pub max_connections_per_address: usize,
    /// Calls running at once per connection (`max_concurrent_requests`).
    pub max_concurrent_requests: usize,
    /// Request payload bytes held at once per connection (`max_request_bytes_in_flight`).
    pub max_request_bytes_in_flight: usize,
    /// The largest frame accepted (`max_frame_size`).
    pub max_frame_size: u32,
    /// Time allowed for the TLS handshake (`handshake_timeout`).
    pub handshake_timeout: Duration,
    /// Time allowed for the hello after it (`connect_timeout` on the client side).
    pub hello_timeout: Duration,
    /// How long a broadcast waits for a slow client before disconnecting it.
    pub slow_peer_timeout: Duration,
}

impl ServerHandle {
    /// A snapshot of the server: connections, limits, health, admission (see [`ServerStatus`]).
    pub fn status(&self) -> ServerStatus {
        let shared = &self.shared;
        let mut connections: Vec<ConnectionStatus> = self
            .peers()
            .into_iter()
            .map(|p| ConnectionStatus {
                info: p.info(),
                identity: p.identity().cloned(),
            })
            .collect();
        connections.sort_by_key(|c| c.info.connection_id);
        ServerStatus {
            local_addr: shared.local_addr,
            fingerprint: shared.fingerprint,
            connections,
            limits: ServerLimits {
                max_connections: shared.max_connections,
                max_connections_per_address: self.security_guard().max_connections_per_address(),
                max_concurrent_requests: shared.protocol.max_concurrent_requests,
                max_request_bytes_in_flight: shared.protocol.max_request_bytes,
                max_frame_size: shared.protocol.max_frame_size,
                handshake_timeout: shared.handshake_timeout,
                hello_timeout: shared.protocol.hello_timeout,
                slow_peer_timeout: shared.slow_peer_timeout,
            },
            health: shared.health.all(),
            admission: self.admission_stats(),
            methods: self.methods(),
            failed_events: self.failed_events(),
        }
    }
}
