//! The health service's wire names and status values (see `echostream::rpc::health`).
//!
//! A server answers [`HEALTH_METHOD`] with the [`HealthStatus`] of a service (the empty name is
//! the server as a whole), and on a stream named [`HEALTH_WATCH_STREAM`] (metadata
//! [`HEALTH_SERVICE_METADATA`] names the service) it sends the status now and then every
//! change, as JSON messages. The values and their meaning follow gRPC's health protocol.

use serde::{Deserialize, Serialize};

/// The reserved method that answers a service's health: argument the service name (`""` for
/// the whole server), result a [`HealthStatus`].
pub const HEALTH_METHOD: &str = "echostream.health";

/// The reserved stream on which a server pushes a service's health: first the status now,
/// then each change.
pub const HEALTH_WATCH_STREAM: &str = "echostream.health.watch";

/// The metadata key of [`HEALTH_WATCH_STREAM`] that names the service (absent: the whole
/// server).
pub const HEALTH_SERVICE_METADATA: &str = "service";

/// How a service is doing. In JSON: `"SERVING"`, `"NOT_SERVING"`, `"UNKNOWN"`,
/// `"SERVICE_UNKNOWN"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// The server does not know yet (a status set as unknown on purpose).
    Unknown,
    /// Ready for calls.
    Serving,
    /// Up but not taking calls (starting, draining, shutting down, failing a dependency): a
    /// load balancer takes it out of rotation.
    NotServing,
    /// No status was ever set for this service name.
    ServiceUnknown,
}

impl HealthStatus {
    /// The JSON name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "UNKNOWN",
            HealthStatus::Serving => "SERVING",
            HealthStatus::NotServing => "NOT_SERVING",
            HealthStatus::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_travel_as_grpc_names_in_json() {
        for s in [
            HealthStatus::Unknown,
            HealthStatus::Serving,
            HealthStatus::NotServing,
            HealthStatus::ServiceUnknown,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<HealthStatus>(&json).unwrap(), s);
        }
    }
}
