//! The discovery error type.

use crate::Interfaces;
use std::time::Duration;

/// What can go wrong while announcing or browsing. Messages name the service,
/// the interfaces and the limit involved.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The service name cannot be an instance name.
    #[error("invalid service name `{name}`: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TXT entry cannot be announced.
    #[error("invalid TXT entry `{key}`: {reason}")]
    InvalidTxt {
        /// The key given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The mDNS daemon could not be started or refused a command.
    #[error("mDNS on {interfaces}: {reason}")]
    Daemon {
        /// The interfaces of the daemon.
        interfaces: Interfaces,
        /// What failed.
        reason: String,
    },
    /// No instance of the name appeared in time.
    #[error(
        "no instance of `{name}` appeared on {interfaces} within {waited:?} \
         ({} instance(s) of other names seen{})",
        other_names.len(),
        list_names(other_names)
    )]
    Timeout {
        /// The service name looked for.
        name: String,
        /// Where it was looked for.
        interfaces: Interfaces,
        /// How long.
        waited: Duration,
        /// Instance names of the service type that were seen but did not match.
        other_names: Vec<String>,
    },
    /// A unicast DNS query failed (timeout, refused, server failure). Not
    /// returned for a name that does not exist: that is an empty answer.
    #[error("DNS query for `{name}` ({record}) to {server} failed: {reason}")]
    Dns {
        /// The name queried.
        name: String,
        /// The record type asked for (`PTR`, `SRV`, `TXT`, `A/AAAA`).
        record: &'static str,
        /// The server asked, in words (`DNS server 10.0.0.2:53`, or the
        /// system resolver and its name servers).
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The DNS resolver could not be set up (system configuration unreadable).
    #[error("cannot set up the DNS resolver ({server}): {reason}")]
    Resolver {
        /// The server asked, in words.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The daemon stopped while browsing.
    #[error("browsing for `{name}` on {interfaces} ended: the mDNS daemon stopped")]
    Stopped {
        /// The service name looked for.
        name: String,
        /// Where it was looked for.
        interfaces: Interfaces,
    },
}

/// `": a, b, c"` (at most five, then "..."), or nothing for an empty list.
pub(crate) fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let mut shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
    if names.len() > 5 {
        shown.push("...".into());
    }
    format!(": {}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_message_says_what_where_how_long_and_what_else() {
        let e = DiscoveryError::Timeout {
            name: "AudioService".into(),
            interfaces: Interfaces::Loopback,
            waited: Duration::from_secs(2),
            other_names: vec!["Camera".into()],
        };
        assert_eq!(
            e.to_string(),
            "no instance of `AudioService` appeared on the IPv4 loopback interface within 2s \
             (1 instance(s) of other names seen: `Camera`)"
        );
    }
}
