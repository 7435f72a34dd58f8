//! TLS for EchoStream connections: where a server's certificate comes from, how a client decides
//! to trust it, and the rustls configurations that quinn runs on.
//!
//! Every connection uses TLS 1.3 (QUIC requires it, and both configs refuse anything else) with
//! the aws-lc-rs provider, preferring the hybrid post-quantum key exchange `X25519MLKEM768`, and
//! the ALPN protocol [`ALPN`].
//!
//! # Server identities
//!
//! A [`ServerIdentity`] says where the certificate comes from. The default,
//! [`ServerIdentity::Persistent`], generates a self-signed certificate on first use and stores it
//! under [`echostream_home()`]`/identities/<name>/{cert.pem,key.pem}` so the server keeps the same
//! fingerprint across restarts and clients that recorded it keep trusting it. CA-issued
//! certificates are loaded with [`ServerIdentity::PemFiles`] or [`ServerIdentity::Der`].
//!
//! # Client trust
//!
//! A [`ClientTrust`] says how a client decides to trust a server. The default,
//! [`ClientTrust::KnownHosts`], is trust on first use, like SSH: the first connection to a host
//! records the SHA-256 [`Fingerprint`] of its leaf certificate, and later connections must present
//! one of the recorded fingerprints. [`ClientTrust::Pinned`] accepts only given fingerprints;
//! [`ClientTrust::CaRoots`] and [`ClientTrust::CaFile`] validate the chain against CA roots and
//! check the server name, like a browser. Accepting any certificate is possible only through
//! [`ClientTrust::dangerous_accept_any_certificate`], and logs a warning every time it is used.
//!
//! rustls reports a failed verification to quinn as a generic TLS alert, so [`client_crypto`] also
//! returns a [`TrustReport`]: after a failed handshake, [`TrustReport::failure`] says precisely
//! what was wrong (which fingerprints, which file and line).
//!
//! # Known-hosts file format
//!
//! The known-hosts file (by default [`echostream_home()`]`/known_hosts`) is UTF-8 text with one
//! entry per line:
//!
//! ```text
//! # comments and blank lines are ignored
//! 127.0.0.1:5000 sha256:3f2a…(64 hex digits)
//! build.example.com:443 sha256:9b0c…
//! ```
//!
//! - `HOST_KEY` is the address string the user connected to (whatever was passed to
//!   [`client_crypto`] as `host_key`); it is compared exactly and may not contain whitespace.
//! - The fingerprint is the SHA-256 of the leaf certificate's DER, written `sha256:` followed by
//!   hex digits (any case, `:` separators allowed when written by hand).
//! - A host may have several lines: any of their fingerprints is accepted. Add a second line by
//!   hand to accept a new certificate during a key rotation, and delete the old one afterwards.
//! - A malformed line is an error naming the file and line; it is never silently skipped, since
//!   a skipped line could turn a pinned host back into a first contact.
//! - Entries are appended on first contact (the parent directory is created if needed). Appends
//!   from one process are serialised by a lock and re-check the file under it; each append is a
//!   single `write` in append mode, which local file systems do not interleave between processes.
//!
//! # Layout
//! - `fingerprint`: [`Fingerprint`], parsing and display.
//! - `identity`: [`ServerIdentity`], [`LoadedIdentity`], persistent identities on disk, PEM
//!   loading, [`server_crypto`].
//! - `verify`: [`ClientTrust`], [`TrustReport`], [`client_crypto`], and the verifier core shared
//!   with the client-certificate verifier of [`client_auth`](super::client_auth).
//! - `known_hosts`: the known-hosts file (trust on first use).

mod fingerprint;
mod identity;
mod known_hosts;
mod verify;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::NamedGroup;

pub use fingerprint::{Fingerprint, ParseFingerprintError};
pub(crate) use identity::read_pem_certs;
pub use identity::{server_crypto, IdentityFiles, LoadedIdentity, ServerIdentity};
pub use known_hosts::{default_known_hosts_file, forget_known_host, list_known_hosts, KnownHost};
pub use verify::{
    client_crypto, client_crypto_with_cert, ClientTrust, RecordedHost, TrustFailure, TrustReport,
};
pub(crate) use verify::{pinned, root_store, signature_methods, VerifierCore};

/// The ALPN protocol identifier of EchoStream version 1, offered by clients and required by
/// servers.
pub const ALPN: &[u8] = b"echostream/1";

/// Environment variable that overrides [`echostream_home()`].
pub const HOME_ENV: &str = "ECHOSTREAM_HOME";

/// Name of the identity used by [`ServerIdentity::default()`].
pub const DEFAULT_IDENTITY_NAME: &str = "default";

/// The per-user EchoStream directory, holding persistent identities and the known-hosts file.
///
/// It is `$ECHOSTREAM_HOME` if set and non-empty (tests and CI use it), else
/// `<data dir>/echostream` (for example `~/.local/share/echostream` on Linux), else
/// `./.echostream` when the platform has no data directory.
pub fn echostream_home() -> PathBuf {
    if let Some(home) = std::env::var_os(HOME_ENV) {
        if !home.is_empty() {
            return PathBuf::from(home);
        }
    }
    match dirs::data_dir() {
        Some(data) => data.join("echostream"),
        None => PathBuf::from(".echostream"),
    }
}

/// The rustls crypto provider every EchoStream config uses: aws-lc-rs with its default cipher
/// suites, and `X25519MLKEM768` moved to the front of the key-exchange groups.
///
/// rustls puts the hybrid post-quantum group first only with its `prefer-post-quantum` feature;
/// the order is fixed here so that it does not depend on which features the build enabled.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // A stable sort keeps the provider's order for every other group.
    provider
        .kx_groups
        .sort_by_key(|group| group.name() != NamedGroup::X25519MLKEM768);
    Arc::new(provider)
}

/// Error building a TLS identity or configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file system operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read certificate chain".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A PEM file could not be parsed or lacks the expected item.
    #[error("{}: {detail}", path.display())]
    Pem {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A persistent identity name that cannot be used as a directory name.
    #[error("invalid identity name {name:?}: {reason}")]
    BadIdentityName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A persistent identity directory holding only one of its two files. It is not regenerated,
    /// since that would silently change the server's fingerprint.
    #[error(
        "identity directory {} is incomplete: {} is missing; restore it, or delete the directory \
         to generate a new identity (clients that recorded the old one will then refuse it)",
        dir.display(),
        missing.display()
    )]
    IncompleteIdentity {
        /// The identity's directory.
        dir: PathBuf,
        /// The missing file.
        missing: PathBuf,
    },
    /// A certificate chain with no certificate.
    #[error("{what} contains no certificate")]
    EmptyCertChain {
        /// Where the chain came from.
        what: String,
    },
    /// The private key does not fit the certificate, or cannot be used.
    #[error("unusable identity from {what}: {source}")]
    InvalidIdentity {
        /// Where the identity came from.
        what: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// Generating a self-signed certificate failed.
    #[error("could not generate a self-signed certificate: {0}")]
    CertGeneration(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// A CA root certificate that webpki cannot use as a trust anchor.
    #[error("CA root certificate #{index} from {origin} is unusable: {source}")]
    BadCaRoot {
        /// Where the roots came from.
        origin: String,
        /// Position of the certificate (0-based).
        index: usize,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// CA-based trust with no root certificate.
    #[error("no CA root certificate in {origin}: a client could trust no server")]
    NoCaRoots {
        /// Where the roots were expected.
        origin: String,
    },
    /// Building the webpki verifier failed.
    #[error("could not build the certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// [`ClientTrust::Pinned`] with an empty list.
    #[error("pinned trust needs at least one fingerprint: an empty pin list accepts no server")]
    NoPinnedFingerprints,
    /// A malformed line in a known-hosts file.
    #[error("known-hosts file {} line {line}: {detail}", file.display())]
    KnownHosts {
        /// The known-hosts file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        detail: String,
    },
    /// A host key that cannot be written to a known-hosts file.
    #[error("invalid host key {host_key:?} for the known-hosts file: {reason}")]
    BadHostKey {
        /// The rejected host key.
        host_key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_prefers_hybrid_post_quantum_key_exchange() {
        let provider = crypto_provider();
        assert_eq!(provider.kx_groups[0].name(), NamedGroup::X25519MLKEM768);
        assert!(provider.kx_groups.iter().any(|g| g.name() == NamedGroup::X25519));
    }
}
