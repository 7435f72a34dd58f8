//! Which network interfaces a [`crate::Discovery`] announces and browses on.

use mdns_sd::{IfKind, ServiceDaemon};
use std::fmt;

/// The interfaces an mDNS daemon uses, for announcing and browsing alike.
///
/// mdns-sd selects interfaces per daemon, so a [`crate::Discovery`] handle is
/// bound to one selection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Interfaces {
    /// Every interface with an address (loopback included). The default.
    #[default]
    All,
    /// Only the IPv4 loopback interface (`127.0.0.1`). mDNS over IPv6 on `lo`
    /// does not work on Linux (no multicast route), so IPv6 loopback is left out.
    Loopback,
    /// Only the interfaces with these names (for example `"eth0"`), IPv4 and IPv6.
    Named(Vec<String>),
}

impl Interfaces {
    /// Only the named interfaces.
    pub fn named<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Interfaces::Named(names.into_iter().map(Into::into).collect())
    }

    /// Applies the selection to a fresh daemon. Later selections win in mdns-sd,
    /// so "disable all, then enable some" restricts it.
    pub(crate) fn apply(&self, daemon: &ServiceDaemon) -> Result<(), mdns_sd::Error> {
        match self {
            Interfaces::All => Ok(()),
            Interfaces::Loopback => {
                daemon.disable_interface(IfKind::All)?;
                daemon.enable_interface(IfKind::LoopbackV4)
            }
            Interfaces::Named(names) => {
                daemon.disable_interface(IfKind::All)?;
                let kinds: Vec<IfKind> = names.iter().map(|n| IfKind::Name(n.clone())).collect();
                daemon.enable_interface(kinds)
            }
        }
    }
}

impl fmt::Display for Interfaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interfaces::All => f.write_str("all interfaces"),
            Interfaces::Loopback => f.write_str("the IPv4 loopback interface"),
            Interfaces::Named(names) if names.is_empty() => f.write_str("no interface (empty list)"),
            Interfaces::Named(names) => write!(f, "interface(s) {}", names.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_selection() {
        assert_eq!(Interfaces::All.to_string(), "all interfaces");
        assert_eq!(
            Interfaces::named(["veth0", "eth1"]).to_string(),
            "interface(s) veth0, eth1"
        );
    }
}
