//! Types shared by the `server` and `client` examples.
//!
//! Both sides name the same serde types; nothing else ties them together
//! (the wire carries plain bincode or JSON, not type names).

use serde::{Deserialize, Serialize};

/// The address both examples use when none is given.
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:5000";

/// What `user.login` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The user who logged in.
    pub(crate) user: String,
    /// An opaque token for later calls.
    pub(crate) token: u64,
}
