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

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, NamedGroup, OtherError, SignatureScheme};

/// The ALPN protocol identifier of EchoStream version 1, offered by clients and required by
/// servers.
pub const ALPN: &[u8] = b"echostream/1";

/// Environment variable that overrides [`echostream_home()`].
pub const HOME_ENV: &str = "ECHOSTREAM_HOME";

/// Name of the identity used by [`ServerIdentity::default()`].
pub const DEFAULT_IDENTITY_NAME: &str = "default";

/// File name of the certificate inside a persistent identity's directory.
const IDENTITY_CERT_FILE: &str = "cert.pem";
/// File name of the private key inside a persistent identity's directory.
const IDENTITY_KEY_FILE: &str = "key.pem";
/// Longest accepted persistent identity name (it becomes a directory name).
const MAX_IDENTITY_NAME_LEN: usize = 64;

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

// ---------------------------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------------------------

/// SHA-256 of a certificate's DER encoding: how pinned and known-hosts trust identify a server.
///
/// `Display` writes 64 lowercase hex digits. `FromStr` accepts hex digits in any case, with or
/// without `:` separators, and with or without a `sha256:` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(sha256:{self})")
    }
}

/// Why a string is not a [`Fingerprint`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseFingerprintError {
    /// Nothing but whitespace, separators or the prefix.
    #[error("empty fingerprint: expected 64 hex digits of a SHA-256 digest")]
    Empty,
    /// A prefix naming another digest, such as `sha1:`.
    #[error("unsupported fingerprint algorithm {0:?}: only `sha256:` fingerprints are used")]
    UnsupportedAlgorithm(String),
    /// A character that is neither a hex digit nor a `:` separator.
    #[error(
        "invalid character {character:?} at position {position} in fingerprint: expected hex \
         digits, optionally separated by ':'"
    )]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset in the string that was parsed.
        position: usize,
    },
    /// The wrong number of hex digits.
    #[error("fingerprint has {digits} hex digits; a SHA-256 fingerprint has 64")]
    WrongLength {
        /// How many hex digits were found.
        digits: usize,
    },
}

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let offset = s.len() - s.trim_start().len();
        let (body, body_offset) = match trimmed.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("sha256:") => (&trimmed[7..], offset + 7),
            _ => (trimmed, offset),
        };
        // A word before the first ':' that is not hex, like "sha1:", names another digest.
        if let Some((algorithm, _)) = body.split_once(':') {
            let is_hex = algorithm.chars().all(|c| c.is_ascii_hexdigit());
            let is_word = algorithm.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !algorithm.is_empty() && !is_hex && is_word {
                return Err(ParseFingerprintError::UnsupportedAlgorithm(algorithm.to_string()));
            }
        }
        let mut digits = String::with_capacity(64);
        for (index, character) in body.char_indices() {
            if character == ':' {
                continue;
            }
            if !character.is_ascii_hexdigit() {
                return Err(ParseFingerprintError::InvalidCharacter {
                    character,
                    position: body_offset + index,
                });
            }
            digits.push(character);
        }
        if digits.is_empty() {
            return Err(ParseFingerprintError::Empty);
        }
        if digits.len() != 64 {
            return Err(ParseFingerprintError::WrongLength { digits: digits.len() });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes).map_err(|_| {
            // Unreachable after the checks above; report it as a length problem rather than panic.
            ParseFingerprintError::WrongLength { digits: digits.len() }
        })?;
        Ok(Self(bytes))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Server identities
// ---------------------------------------------------------------------------------------------

/// Where a server's certificate and private key come from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ServerIdentity {
    /// Self-signed, generated on first use and stored under
    /// [`echostream_home()`]`/identities/<name>/{cert.pem,key.pem}` (the key file readable only
    /// by its owner on Unix), then reused so clients keep recognising the server.
    ///
    /// The name becomes a directory name: 1 to 64 ASCII letters, digits, `.`, `-` or `_`, not
    /// starting with `.`. The default identity is named [`DEFAULT_IDENTITY_NAME`].
    Persistent {
        /// Name of the identity (and of its directory).
        name: String,
    },
    /// Self-signed, in memory, new on every [`load`](ServerIdentity::load) (tests).
    Ephemeral,
    /// A certificate chain (leaf first) and its private key, from PEM files.
    PemFiles {
        /// PEM file with one or more `CERTIFICATE` blocks, leaf first.
        cert_chain: PathBuf,
        /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
        private_key: PathBuf,
    },
    /// A certificate chain (leaf first) and private key already in memory.
    Der {
        /// DER certificates, leaf first.
        cert_chain: Vec<CertificateDer<'static>>,
        /// The leaf's private key; in an `Arc` because `PrivateKeyDer` is not `Clone`.
        private_key: Arc<PrivateKeyDer<'static>>,
    },
}

impl Default for ServerIdentity {
    fn default() -> Self {
        Self::Persistent {
            name: DEFAULT_IDENTITY_NAME.to_string(),
        }
    }
}

/// A server identity ready for [`server_crypto`].
#[derive(Debug)]
pub struct LoadedIdentity {
    /// DER certificates, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub private_key: PrivateKeyDer<'static>,
    /// Fingerprint of the leaf certificate, which clients pin or record.
    pub fingerprint: Fingerprint,
}

impl Clone for LoadedIdentity {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            private_key: self.private_key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

impl ServerIdentity {
    /// A [`ServerIdentity::Persistent`] identity with this name.
    pub fn persistent(name: impl Into<String>) -> Self {
        Self::Persistent { name: name.into() }
    }

    /// Loads the identity, generating and storing it first if it is a persistent identity that
    /// does not exist yet, in [`echostream_home()`].
    pub fn load(&self) -> Result<LoadedIdentity, TlsError> {
        self.load_from(&echostream_home())
    }

    /// Like [`load`](ServerIdentity::load), with persistent identities stored under `home`
    /// instead of [`echostream_home()`]. Other variants ignore `home`.
    pub fn load_from(&self, home: &Path) -> Result<LoadedIdentity, TlsError> {
        match self {
            Self::Persistent { name } => load_persistent(name, home),
            Self::Ephemeral => Ok(generate_self_signed("ephemeral", None)?.identity),
            Self::PemFiles {
                cert_chain,
                private_key,
            } => read_pem_identity(cert_chain, private_key),
            Self::Der {
                cert_chain,
                private_key,
            } => checked_identity(
                cert_chain.clone(),
                private_key.clone_key(),
                "the in-memory certificate chain",
            ),
        }
    }
}

/// Builds a [`LoadedIdentity`] after checking the chain is non-empty and the key fits the leaf.
fn checked_identity(
    cert_chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<LoadedIdentity, TlsError> {
    let Some(leaf) = cert_chain.first() else {
        return Err(TlsError::EmptyCertChain {
            what: what.to_string(),
        });
    };
    let fingerprint = Fingerprint::of(leaf);
    rustls::sign::CertifiedKey::from_der(cert_chain.clone(), private_key.clone_key(), &crypto_provider())
        .map_err(|source| TlsError::InvalidIdentity {
            what: what.to_string(),
            source,
        })?;
    Ok(LoadedIdentity {
        cert_chain,
        private_key,
        fingerprint,
    })
}

fn validate_identity_name(name: &str) -> Result<(), TlsError> {
    let reason = if name.is_empty() {
        Some("the name is empty")
    } else if name.contains(['/', '\\']) {
        Some("the name contains a path separator")
    } else if name == "." || name == ".." || name.contains("..") {
        Some("the name contains \"..\"")
    } else if name.starts_with('.') {
        Some("the name starts with '.'")
    } else if name.len() > MAX_IDENTITY_NAME_LEN {
        Some("the name is longer than 64 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        Some("only ASCII letters, digits, '.', '-' and '_' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TlsError::BadIdentityName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn path_exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(io_error("check", path))
}

fn load_persistent(name: &str, home: &Path) -> Result<LoadedIdentity, TlsError> {
    validate_identity_name(name)?;
    let identities = home.join("identities");
    let dir = identities.join(name);
    let cert_path = dir.join(IDENTITY_CERT_FILE);
    let key_path = dir.join(IDENTITY_KEY_FILE);

    match (path_exists(&cert_path)?, path_exists(&key_path)?) {
        (true, true) => return read_persistent(&cert_path, &key_path),
        (true, false) => {
            return Err(TlsError::IncompleteIdentity {
                dir,
                missing: key_path,
            })
        }
        (false, true) => {
            return Err(TlsError::IncompleteIdentity {
                dir,
                missing: cert_path,
            })
        }
        (false, false) => {}
    }

    fs::create_dir_all(&identities).map_err(io_error("create directory", &identities))?;
    let generated = generate_self_signed(name, Some(name))?;

    // Write both files into a private temporary directory and rename it into place: the rename
    // is atomic, so a concurrent process either wins (and we load its identity) or loses, and
    // nobody ever sees a certificate paired with another process's key.
    let tmp = identities.join(format!(".{name}.tmp-{}", unique_suffix()));
    let staged = stage_identity(&tmp, &generated);
    if let Err(err) = staged {
        let _ = fs::remove_dir_all(&tmp);
        return Err(err);
    }
    // An empty directory (created by hand, say) would block the rename on some platforms;
    // `remove_dir` only removes it if it is empty.
    let _ = fs::remove_dir(&dir);
    match fs::rename(&tmp, &dir) {
        Ok(()) => {
            tracing::info!(
                identity = name,
                fingerprint = %generated.identity.fingerprint,
                dir = %dir.display(),
                "generated a new self-signed server identity"
            );
            Ok(generated.identity)
        }
        Err(source) => {
            let _ = fs::remove_dir_all(&tmp);
            if path_exists(&cert_path)? && path_exists(&key_path)? {
                // Another process created the identity first; use theirs.
                read_persistent(&cert_path, &key_path)
            } else {
                Err(TlsError::Io {
                    action: "create identity directory",
                    path: dir,
                    source,
                })
            }
        }
    }
}

fn read_persistent(cert_path: &Path, key_path: &Path) -> Result<LoadedIdentity, TlsError> {
    warn_if_key_readable_by_others(key_path);
    read_pem_identity(cert_path, key_path)
}

#[cfg(unix)]
fn warn_if_key_readable_by_others(key_path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(key_path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                key = %key_path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "server private key is accessible to other users; run `chmod 600` on it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_key_readable_by_others(_key_path: &Path) {}

fn stage_identity(tmp: &Path, generated: &GeneratedIdentity) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(tmp).map_err(io_error("create directory", tmp))?;
    write_new_file(&tmp.join(IDENTITY_CERT_FILE), &generated.cert_pem, false)?;
    write_new_file(&tmp.join(IDENTITY_KEY_FILE), &generated.key_pem, true)?;
    Ok(())
}

fn write_new_file(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io_error("create", path))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", path))
}

/// A unique-enough suffix for temporary names: process id, time and a per-process counter.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{count}", std::process::id())
}

struct GeneratedIdentity {
    cert_pem: String,
    key_pem: String,
    identity: LoadedIdentity,
}

/// Generates a self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1`, `::1` and
/// `dns_name` when it is a valid DNS name.
fn generate_self_signed(label: &str, dns_name: Option<&str>) -> Result<GeneratedIdentity, TlsError> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, format!("EchoStream {label}"));
    params.distinguished_name = subject;
    let mut sans = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    if let Some(name) = dns_name {
        if name != "localhost" && DnsName::try_from(name).is_ok() && name.parse::<IpAddr>().is_err() {
            sans.push(SanType::DnsName(name.try_into()?));
        }
    }
    params.subject_alt_names = sans;
    let cert = params.self_signed(&key)?;
    let cert_der = cert.der().clone();
    let identity = LoadedIdentity {
        fingerprint: Fingerprint::of(&cert_der),
        cert_chain: vec![cert_der],
        private_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    };
    Ok(GeneratedIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        identity,
    })
}

fn read_file(path: &Path, action: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(io_error(action, path))
}

pub(crate) fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path, "read certificates from")?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            path: path.to_path_buf(),
            detail: format!("invalid PEM: {err}"),
        })
}

fn read_pem_identity(cert_path: &Path, key_path: &Path) -> Result<LoadedIdentity, TlsError> {
    let cert_chain = read_pem_certs(cert_path)?;
    if cert_chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path.to_path_buf(),
            detail: "no CERTIFICATE block found (expected a PEM certificate chain, leaf first)".to_string(),
        });
    }
    let key_bytes = read_file(key_path, "read private key from")?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|err| TlsError::Pem {
        path: key_path.to_path_buf(),
        detail: match err {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key block found (expected \
                 PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY in PEM)"
                .to_string(),
            other => format!("invalid PEM: {other}"),
        },
    })?;
    checked_identity(
        cert_chain,
        private_key,
        &format!("{} and {}", cert_path.display(), key_path.display()),
    )
}

// ---------------------------------------------------------------------------------------------
// Server config
// ---------------------------------------------------------------------------------------------

/// The rustls server configuration for an identity: aws-lc-rs, TLS 1.3 only, ALPN [`ALPN`], no
/// client authentication, and no 0-RTT data.
pub fn server_crypto(identity: &LoadedIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.private_key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// Client trust
// ---------------------------------------------------------------------------------------------

/// How a client decides to trust a server's certificate.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientTrust {
    /// Trust on first use (the default): the first connection to a host key records the server's
    /// fingerprint in a known-hosts file, and later connections must present a recorded one. See
    /// the [module documentation](self) for the file format.
    KnownHosts {
        /// The known-hosts file; `None` means [`echostream_home()`]`/known_hosts`.
        path: Option<PathBuf>,
    },
    /// Only certificates with one of these leaf fingerprints are accepted (server names are not
    /// checked).
    Pinned(Vec<Fingerprint>),
    /// WebPKI chain validation against these root certificates, checking the server name given
    /// to quinn's `connect`.
    CaRoots(Vec<CertificateDer<'static>>),
    /// Like [`ClientTrust::CaRoots`], with the roots read from a PEM file.
    CaFile(PathBuf),
    /// Accepts any certificate: the connection is encrypted but anyone able to intercept it can
    /// impersonate the server. Only constructible through
    /// [`ClientTrust::dangerous_accept_any_certificate`]; every [`client_crypto`] call with it
    /// logs a warning.
    #[non_exhaustive]
    DangerousAcceptAny,
}

impl Default for ClientTrust {
    fn default() -> Self {
        Self::KnownHosts { path: None }
    }
}

impl ClientTrust {
    /// Trust that accepts any certificate, for tests and debugging only: it offers no protection
    /// against an active attacker.
    pub fn dangerous_accept_any_certificate() -> Self {
        Self::DangerousAcceptAny
    }

    /// Trust that accepts only the certificate with this fingerprint.
    pub fn pinned(fingerprint: Fingerprint) -> Self {
        Self::Pinned(vec![fingerprint])
    }

    /// Trust on first use with an explicit known-hosts file.
    pub fn known_hosts_file(path: impl Into<PathBuf>) -> Self {
        Self::KnownHosts {
            path: Some(path.into()),
        }
    }
}

/// Why a client refused a server's certificate, with what it needs to fix it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustFailure {
    /// The server's fingerprint is not one of the pinned ones.
    #[error(
        "the server presented certificate sha256:{presented}, which is not pinned (pinned: {}); \
         if the server's certificate was replaced on purpose, pin the new fingerprint",
        join_fingerprints(expected)
    )]
    PinMismatch {
        /// Fingerprint of the certificate the server presented.
        presented: Fingerprint,
        /// The pinned fingerprints.
        expected: Vec<Fingerprint>,
    },
    /// The server's fingerprint differs from the one recorded for this host.
    #[error(
        "the identity of server {host} has changed: it presented certificate sha256:{presented}, \
         but {} line {line} records sha256:{recorded}. Someone may be intercepting the \
         connection, or the server was reinstalled or its certificate replaced. If you expected \
         this change, delete line {line} of {} (and any other line for {host}) and connect again",
        file.display(),
        file.display()
    )]
    KnownHostMismatch {
        /// The host key (address string) the client connected to.
        host: String,
        /// Fingerprint of the certificate the server presented.
        presented: Fingerprint,
        /// Fingerprint recorded for this host.
        recorded: Fingerprint,
        /// The known-hosts file.
        file: PathBuf,
        /// 1-based line of the recorded entry.
        line: usize,
    },
    /// The known-hosts file could not be read or updated.
    #[error("known-hosts file {}: {detail}", file.display())]
    KnownHostsFile {
        /// The known-hosts file.
        file: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// CA validation rejected the certificate chain or server name.
    #[error("the server's certificate chain was rejected: {detail}")]
    Chain {
        /// webpki's reason.
        detail: String,
    },
}

fn join_fingerprints(fingerprints: &[Fingerprint]) -> String {
    fingerprints
        .iter()
        .map(|fp| format!("sha256:{fp}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A host newly added to a known-hosts file by a first-contact handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedHost {
    /// The host key.
    pub host: String,
    /// The recorded fingerprint.
    pub fingerprint: Fingerprint,
    /// The known-hosts file.
    pub file: PathBuf,
    /// 1-based line of the new entry.
    pub line: usize,
}

/// What the certificate verifier of a client config saw during its most recent handshake.
///
/// rustls turns a verification failure into a generic TLS alert, so after a failed connection
/// attempt the caller asks this report for the precise reason. Clones share the same state.
/// When one client config is used for several concurrent handshakes, the report describes
/// whichever verified last; use one config per connection for precise reports.
#[derive(Clone, Debug, Default)]
pub struct TrustReport {
    state: Arc<Mutex<ReportState>>,
}

#[derive(Debug, Default)]
struct ReportState {
    observed: Option<Fingerprint>,
    failure: Option<TrustFailure>,
    recorded: Option<RecordedHost>,
}

impl TrustReport {
    fn lock(&self) -> MutexGuard<'_, ReportState> {
        // The state is plain data, so a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Why the most recent handshake's certificate was refused, if it was.
    pub fn failure(&self) -> Option<TrustFailure> {
        self.lock().failure.clone()
    }

    /// Fingerprint of the leaf certificate the server presented in the most recent handshake.
    pub fn observed(&self) -> Option<Fingerprint> {
        self.lock().observed
    }

    /// The known-hosts entry the most recent handshake added (first contact), if any.
    pub fn recorded(&self) -> Option<RecordedHost> {
        self.lock().recorded.clone()
    }

    /// Forgets the previous handshake, before a new attempt with a reused configuration (a
    /// resumed handshake does not verify the certificate again, so it would not reset it).
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.failure = None;
        state.recorded = None;
    }

    fn begin(&self, observed: Fingerprint) {
        let mut state = self.lock();
        state.observed = Some(observed);
        state.failure = None;
        state.recorded = None;
    }

    /// Records the failure and returns the rustls error that aborts the handshake; its text
    /// carries the same message, so it also reaches quinn's connection error.
    fn fail(&self, failure: TrustFailure) -> rustls::Error {
        self.lock().failure = Some(failure.clone());
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(failure))))
    }
}

/// The rustls client configuration for a trust mode: aws-lc-rs, TLS 1.3 only, ALPN [`ALPN`].
///
/// `host_key` identifies the server in the known-hosts file: the address string the user
/// connected to, e.g. `"127.0.0.1:5000"` or `"example.com:443"`. It is only used by
/// [`ClientTrust::KnownHosts`]; CA modes check the server name passed to quinn's `connect`, and
/// the fingerprint modes ignore server names.
///
/// The known-hosts file is read here, so a malformed file fails before any connection attempt.
/// The returned [`TrustReport`] explains a failed handshake made with this config.
pub fn client_crypto(
    trust: &ClientTrust,
    host_key: &str,
) -> Result<(rustls::ClientConfig, TrustReport), TlsError> {
    client_crypto_with_cert(trust, host_key, None)
}

/// [`client_crypto`] presenting a client certificate (mutual TLS) when `identity` is set.
pub fn client_crypto_with_cert(
    trust: &ClientTrust,
    host_key: &str,
    identity: Option<&LoadedIdentity>,
) -> Result<(rustls::ClientConfig, TrustReport), TlsError> {
    let provider = crypto_provider();
    let check = match trust {
        ClientTrust::KnownHosts { path } => {
            validate_host_key(host_key)?;
            let file = match path {
                Some(path) => path.clone(),
                None => echostream_home().join("known_hosts"),
            };
            let entries = read_known_hosts_for(&file, host_key)?;
            LeafCheck::KnownHosts(KnownHostsCheck {
                file,
                host: host_key.to_string(),
                entries: Mutex::new(entries),
            })
        }
        ClientTrust::Pinned(pins) => {
            if pins.is_empty() {
                return Err(TlsError::NoPinnedFingerprints);
            }
            LeafCheck::Pinned(pins.clone())
        }
        ClientTrust::CaRoots(roots) => {
            LeafCheck::WebPki(webpki_verifier(roots, "ClientTrust::CaRoots", &provider)?)
        }
        ClientTrust::CaFile(path) => {
            let roots = read_pem_certs(path)?;
            let origin = path.display().to_string();
            LeafCheck::WebPki(webpki_verifier(&roots, &origin, &provider)?)
        }
        ClientTrust::DangerousAcceptAny => {
            tracing::warn!(
                host = host_key,
                "TLS certificate verification is DISABLED (ClientTrust::DangerousAcceptAny): \
                 anyone able to intercept this connection can impersonate the server"
            );
            LeafCheck::AcceptAny
        }
    };
    let report = TrustReport::default();
    let verifier = EchoServerVerifier {
        check,
        provider: provider.clone(),
        report: report.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(id) => config.with_client_auth_cert(id.cert_chain.clone(), id.private_key.clone_key())?,
        None => config.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((config, report))
}

fn webpki_verifier(
    roots: &[CertificateDer<'static>],
    origin: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    if roots.is_empty() {
        return Err(TlsError::NoCaRoots {
            origin: origin.to_string(),
        });
    }
    let mut store = rustls::RootCertStore::empty();
    for (index, root) in roots.iter().enumerate() {
        store.add(root.clone()).map_err(|source| TlsError::BadCaRoot {
            origin: origin.to_string(),
            index,
            source,
        })?;
    }
    Ok(WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build()?)
}

/// Certificate verifier for every [`ClientTrust`] mode: it checks the leaf (or delegates chain
/// validation to webpki), verifies the TLS 1.3 handshake signature, and fills the report.
#[derive(Debug)]
struct EchoServerVerifier {
    check: LeafCheck,
    provider: Arc<CryptoProvider>,
    report: TrustReport,
}

#[derive(Debug)]
enum LeafCheck {
    Pinned(Vec<Fingerprint>),
    KnownHosts(KnownHostsCheck),
    AcceptAny,
    WebPki(Arc<WebPkiServerVerifier>),
}

#[derive(Debug)]
struct KnownHostsCheck {
    file: PathBuf,
    host: String,
    /// Entries for `host`, loaded by `client_crypto` and extended on first contact; the lock is
    /// taken before `KNOWN_HOSTS_WRITE_LOCK`, never after.
    entries: Mutex<Vec<KnownHostEntry>>,
}

#[derive(Clone, Copy, Debug)]
struct KnownHostEntry {
    fingerprint: Fingerprint,
    line: usize,
}

impl KnownHostsCheck {
    fn entries(&self) -> MutexGuard<'_, Vec<KnownHostEntry>> {
        self.entries.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn mismatch(&self, presented: Fingerprint, recorded: KnownHostEntry) -> TrustFailure {
        TrustFailure::KnownHostMismatch {
            host: self.host.clone(),
            presented,
            recorded: recorded.fingerprint,
            file: self.file.clone(),
            line: recorded.line,
        }
    }

    /// Called once the server has proved it holds the certificate's key: records a first
    /// contact, re-checking the file in case another handshake recorded the host meanwhile.
    fn record_if_new(&self, presented: Fingerprint, report: &TrustReport) -> Result<(), TrustFailure> {
        let mut entries = self.entries();
        if entries.iter().any(|e| e.fingerprint == presented) {
            return Ok(());
        }
        match append_known_host(&self.file, &self.host, presented) {
            Ok(Appended::New(line)) => {
                entries.push(KnownHostEntry {
                    fingerprint: presented,
                    line,
                });
                tracing::info!(
                    host = %self.host,
                    fingerprint = %presented,
                    file = %self.file.display(),
                    line,
                    "first contact: recorded the server's certificate fingerprint"
                );
                report.lock().recorded = Some(RecordedHost {
                    host: self.host.clone(),
                    fingerprint: presented,
                    file: self.file.clone(),
                    line,
                });
                Ok(())
            }
            Ok(Appended::AlreadyPresent(line)) => {
                entries.push(KnownHostEntry {
                    fingerprint: presented,
                    line,
                });
                Ok(())
            }
            Err(AppendError::Mismatch(recorded)) => Err(self.mismatch(presented, recorded)),
            Err(AppendError::File(detail)) => Err(TrustFailure::KnownHostsFile {
                file: self.file.clone(),
                detail,
            }),
        }
    }
}

impl ServerCertVerifier for EchoServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        self.report.begin(presented);
        match &self.check {
            LeafCheck::Pinned(pins) => {
                if pins.contains(&presented) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(self.report.fail(TrustFailure::PinMismatch {
                        presented,
                        expected: pins.clone(),
                    }))
                }
            }
            LeafCheck::KnownHosts(known) => {
                let entries = known.entries();
                // No entry: first contact, recorded once the handshake signature checks out.
                match entries.first() {
                    Some(first) if !entries.iter().any(|e| e.fingerprint == presented) => {
                        Err(self.report.fail(known.mismatch(presented, *first)))
                    }
                    _ => Ok(ServerCertVerified::assertion()),
                }
            }
            LeafCheck::AcceptAny => Ok(ServerCertVerified::assertion()),
            LeafCheck::WebPki(webpki) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .inspect_err(|err| {
                    self.report.lock().failure = Some(TrustFailure::Chain {
                        detail: err.to_string(),
                    });
                }),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The config only enables TLS 1.3, so rustls never gets here; refuse rather than trust.
        Err(rustls::Error::General(
            "EchoStream accepts only TLS 1.3; refusing a TLS 1.2 handshake signature".to_string(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if let LeafCheck::WebPki(webpki) = &self.check {
            return webpki.verify_tls13_signature(message, cert, dss);
        }
        let valid = rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )?;
        if let LeafCheck::KnownHosts(known) = &self.check {
            known
                .record_if_new(Fingerprint::of(cert), &self.report)
                .map_err(|failure| self.report.fail(failure))?;
        }
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Known-hosts file
// ---------------------------------------------------------------------------------------------

/// Serialises known-hosts appends within the process, so two first contacts cannot both decide
/// a host is new and append different fingerprints.
static KNOWN_HOSTS_WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Written at the top of a known-hosts file when it is created.
const KNOWN_HOSTS_HEADER: &str = "# EchoStream known hosts: one `HOST_KEY sha256:FINGERPRINT` \
     entry per line, recorded on first contact.\n# Delete a line to forget that server's \
     identity; add a line to accept another certificate for a host.\n";

fn validate_host_key(host_key: &str) -> Result<(), TlsError> {
    let reason = if host_key.is_empty() {
        Some("it is empty")
    } else if host_key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else if host_key.starts_with('#') {
        Some("it starts with '#', which marks a comment")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TlsError::BadHostKey {
            host_key: host_key.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// One parsed entry: host key, fingerprint, 1-based line.
type ParsedEntry<'a> = (&'a str, Fingerprint, usize);

/// Parses a whole known-hosts file; `Err((line, detail))` for the first malformed line.
fn parse_known_hosts(content: &str) -> Result<Vec<ParsedEntry<'_>>, (usize, String)> {
    let mut entries = Vec::new();
    for (index, raw) in content.lines().enumerate() {
        let line = index + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let mut fields = text.split_whitespace();
        let (Some(host), fingerprint) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(fingerprint) = fingerprint else {
            return Err((
                line,
                format!(
                    "missing fingerprint after host key {host:?} (expected `HOST_KEY sha256:FINGERPRINT`)"
                ),
            ));
        };
        if fields.next().is_some() {
            return Err((
                line,
                "more than two fields (expected `HOST_KEY sha256:FINGERPRINT`)".to_string(),
            ));
        }
        let is_sha256 = fingerprint
            .get(..7)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("sha256:"));
        if !is_sha256 {
            return Err((
                line,
                format!("fingerprint {fingerprint:?} must start with `sha256:`"),
            ));
        }
        let parsed = fingerprint
            .parse::<Fingerprint>()
            .map_err(|err| (line, format!("invalid fingerprint for {host:?}: {err}")))?;
        entries.push((host, parsed, line));
    }
    Ok(entries)
}

/// Reads the file's text; a missing file is an empty one.
fn read_known_hosts_text(file: &Path) -> io::Result<String> {
    match fs::read_to_string(file) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(err),
    }
}

fn entries_for(entries: &[ParsedEntry<'_>], host: &str) -> Vec<KnownHostEntry> {
    entries
        .iter()
        .filter(|(entry_host, _, _)| *entry_host == host)
        .map(|&(_, fingerprint, line)| KnownHostEntry { fingerprint, line })
        .collect()
}

fn read_known_hosts_for(file: &Path, host: &str) -> Result<Vec<KnownHostEntry>, TlsError> {
    let text = read_known_hosts_text(file).map_err(io_error("read known-hosts file", file))?;
    let entries = parse_known_hosts(&text).map_err(|(line, detail)| TlsError::KnownHosts {
        file: file.to_path_buf(),
        line,
        detail,
    })?;
    Ok(entries_for(&entries, host))
}

enum Appended {
    New(usize),
    AlreadyPresent(usize),
}

enum AppendError {
    Mismatch(KnownHostEntry),
    File(String),
}

/// Appends `host sha256:fingerprint` unless the file (re-read under the lock) already has the
/// fingerprint for the host, or has other fingerprints for it.
fn append_known_host(file: &Path, host: &str, fingerprint: Fingerprint) -> Result<Appended, AppendError> {
    let _guard = KNOWN_HOSTS_WRITE_LOCK
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let text =
        read_known_hosts_text(file).map_err(|err| AppendError::File(format!("could not read it: {err}")))?;
    let parsed = parse_known_hosts(&text)
        .map_err(|(line, detail)| AppendError::File(format!("line {line}: {detail}")))?;
    let existing = entries_for(&parsed, host);
    if let Some(entry) = existing.iter().find(|e| e.fingerprint == fingerprint) {
        return Ok(Appended::AlreadyPresent(entry.line));
    }
    if let Some(entry) = existing.first() {
        return Err(AppendError::Mismatch(*entry));
    }

    let mut addition = String::new();
    let mut line = text.lines().count() + 1;
    if text.is_empty() {
        addition.push_str(KNOWN_HOSTS_HEADER);
        line += KNOWN_HOSTS_HEADER.lines().count();
    } else if !text.ends_with('\n') {
        addition.push('\n');
    }
    addition.push_str(&format!("{host} sha256:{fingerprint}\n"));

    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|err| {
            AppendError::File(format!("could not create directory {}: {err}", parent.display()))
        })?;
    }
    let mut handle = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|err| AppendError::File(format!("could not open it for appending: {err}")))?;
    // One write call, so appends from other processes do not interleave within the entry.
    handle
        .write_all(addition.as_bytes())
        .map_err(|err| AppendError::File(format!("could not append to it: {err}")))?;
    Ok(Appended::New(line))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_parser_reports_the_malformed_line() {
        let text = "# comment\n\nhost:1 sha256:00\n";
        let err = parse_known_hosts(text).unwrap_err();
        assert_eq!(err.0, 3);
        assert!(err.1.contains("64"), "{}", err.1);

        let err = parse_known_hosts("a\n").unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("missing fingerprint"), "{}", err.1);

        let fp = Fingerprint([7; 32]);
        let err = parse_known_hosts(&format!("a {fp}\n")).unwrap_err();
        assert!(err.1.contains("sha256:"), "{}", err.1);
    }

    #[test]
    fn known_hosts_parser_accepts_several_lines_per_host() {
        let (a, b) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let text = format!(
            "h:1 sha256:{a}\r\n  # x\nother sha256:{b}\nh:1 SHA256:{}\n",
            b.to_string().to_uppercase()
        );
        let entries = parse_known_hosts(&text).unwrap();
        let for_h = entries_for(&entries, "h:1");
        assert_eq!(for_h.len(), 2);
        assert_eq!((for_h[0].fingerprint, for_h[0].line), (a, 1));
        assert_eq!((for_h[1].fingerprint, for_h[1].line), (b, 4));
    }

    #[test]
    fn identity_names_that_escape_the_directory_are_rejected() {
        for bad in ["", "a/b", "a\\b", "..", "../x", ".hidden", "sp ace", "é"] {
            assert!(validate_identity_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["default", "my-server_2", "host.example.com"] {
            validate_identity_name(good).unwrap();
        }
    }

    #[test]
    fn provider_prefers_hybrid_post_quantum_key_exchange() {
        let provider = crypto_provider();
        assert_eq!(provider.kx_groups[0].name(), NamedGroup::X25519MLKEM768);
        assert!(provider.kx_groups.iter().any(|g| g.name() == NamedGroup::X25519));
    }
}
