//! Test utilities: an imperfect network on loopback.
//!
//! [`Relay`] sits between a client and a server (both on loopback) and
//! forwards UDP datagrams, optionally adding delay, jitter (which also
//! reorders), random loss, or dropping everything ("cut", to simulate a peer
//! that vanished). Used by the reliability, lifecycle and time-sync tests and
//! benchmarks. It only ever sends to the upstream address it was given and to
//! the clients that wrote to it.

mod relay;

pub use relay::{Impairment, Relay, RelayStats};
