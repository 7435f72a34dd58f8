//! Server identities: where a server's (or a mutual-TLS client's) certificate and key come from,
//! persistent self-signed identities on disk, PEM loading, and the server's rustls configuration.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{crypto_provider, echostream_home, io_error, Fingerprint, TlsError, ALPN, DEFAULT_IDENTITY_NAME};

/// File name of the certificate inside a persistent identity's directory.
const IDENTITY_CERT_FILE: &str = "cert.pem";
/// File name of the private key inside a persistent identity's directory.
const IDENTITY_KEY_FILE: &str = "key.pem";
/// Longest accepted persistent identity name (it becomes a directory name).
const MAX_IDENTITY_NAME_LEN: usize = 64;

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
            detail: pem_error_detail(&bytes, &err),
        })
}

/// A PEM error with the line it is about, when there is one: a truncated file (a block with no
/// END line) names the line its last block begins on.
fn pem_error_detail(bytes: &[u8], err: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let lines = || {
        bytes
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
    };
    match err {
        Error::MissingSectionEnd { end_marker } => {
            let begun = lines()
                .enumerate()
                .filter(|(_, l)| l.starts_with(b"-----BEGIN "))
                .map(|(i, _)| i + 1)
                .last();
            let end = String::from_utf8_lossy(end_marker);
            match begun {
                Some(line) => format!(
                    "line {line}: the block that begins here has no `{end}` line (the file is \
                     truncated or damaged)"
                ),
                None => format!("no `{end}` line (the file is truncated or damaged)"),
            }
        }
        Error::IllegalSectionStart { line: bad } => match lines().position(|l| l == bad.as_slice()) {
            Some(i) => format!("line {}: malformed `-----BEGIN` line", i + 1),
            None => format!("invalid PEM: {err}"),
        },
        other => format!("invalid PEM: {other}"),
    }
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
            other => pem_error_detail(&key_bytes, &other),
        },
    })?;
    checked_identity(
        cert_chain,
        private_key,
        &format!("{} and {}", cert_path.display(), key_path.display()),
    )
}

/// Where a persistent identity ([`ServerIdentity::Persistent`]) lives on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityFiles {
    /// The identity's name.
    pub name: String,
    /// `<home>/identities/<name>`.
    pub dir: PathBuf,
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// The private key, PEM (readable only by its owner on Unix).
    pub key: PathBuf,
}

impl IdentityFiles {
    /// The files of the persistent identity `name` under `home` (for example
    /// [`echostream_home()`]); checks the name, not whether the files exist.
    pub fn of(name: &str, home: &Path) -> Result<Self, TlsError> {
        validate_identity_name(name)?;
        let dir = home.join("identities").join(name);
        Ok(Self {
            name: name.to_owned(),
            cert: dir.join(IDENTITY_CERT_FILE),
            key: dir.join(IDENTITY_KEY_FILE),
            dir,
        })
    }

    /// True when both files exist.
    pub fn exist(&self) -> Result<bool, TlsError> {
        Ok(path_exists(&self.cert)? && path_exists(&self.key)?)
    }

    /// Reads the identity without creating it (unlike [`ServerIdentity::load`]); fails naming
    /// the missing file when it does not exist.
    pub fn read(&self) -> Result<LoadedIdentity, TlsError> {
        read_persistent(&self.cert, &self.key)
    }

    /// Generates a new self-signed identity under this name and puts it in place of the old
    /// one, if any. Every client that recorded the old fingerprint will refuse the server until
    /// it forgets it: this is a key rotation. The new directory is staged beside the old one
    /// and renamed into place, so a reader never sees a certificate with another key.
    pub fn regenerate(&self) -> Result<LoadedIdentity, TlsError> {
        let identities = self.dir.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&identities).map_err(io_error("create directory", &identities))?;
        let generated = generate_self_signed(&self.name, Some(&self.name))?;
        let tmp = identities.join(format!(".{}.tmp-{}", self.name, unique_suffix()));
        if let Err(err) = stage_identity(&tmp, &generated) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(err);
        }
        let old = identities.join(format!(".{}.old-{}", self.name, unique_suffix()));
        let had_old = path_exists(&self.dir)?;
        if had_old {
            if let Err(source) = fs::rename(&self.dir, &old) {
                let _ = fs::remove_dir_all(&tmp);
                return Err(TlsError::Io {
                    action: "move aside the old identity",
                    path: self.dir.clone(),
                    source,
                });
            }
        }
        if let Err(source) = fs::rename(&tmp, &self.dir) {
            let _ = fs::remove_dir_all(&tmp);
            if had_old {
                let _ = fs::rename(&old, &self.dir);
            }
            return Err(TlsError::Io {
                action: "create identity directory",
                path: self.dir.clone(),
                source,
            });
        }
        if had_old {
            let _ = fs::remove_dir_all(&old);
        }
        tracing::info!(
            identity = %self.name,
            fingerprint = %generated.identity.fingerprint,
            dir = %self.dir.display(),
            "generated a new self-signed server identity (replacing any old one)"
        );
        Ok(generated.identity)
    }

    /// The names of the persistent identities stored under `home`, sorted.
    pub fn list(home: &Path) -> Result<Vec<String>, TlsError> {
        let identities = home.join("identities");
        let entries = match fs::read_dir(&identities) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read directory", &identities)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("read directory", &identities))?;
            if let Some(name) = entry.file_name().to_str() {
                if validate_identity_name(name).is_ok() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

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
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn regenerate_replaces_the_identity_and_read_never_creates_one() {
        let home = std::env::temp_dir().join(format!("es-id-regen-{}", std::process::id()));
        let files = IdentityFiles::of("rotated", &home).unwrap();
        assert!(!files.exist().unwrap());
        assert!(files.read().is_err());
        assert!(!files.exist().unwrap(), "read must not create the identity");
        let first = ServerIdentity::persistent("rotated").load_from(&home).unwrap();
        assert_eq!(files.read().unwrap().fingerprint, first.fingerprint);
        let second = files.regenerate().unwrap();
        assert_ne!(second.fingerprint, first.fingerprint);
        assert_eq!(files.read().unwrap().fingerprint, second.fingerprint);
        assert_eq!(IdentityFiles::list(&home).unwrap(), ["rotated"]);
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn a_truncated_persistent_identity_is_an_error_naming_file_and_line_never_a_new_identity() {
        let home = std::env::temp_dir().join(format!("es-id-cut-{}", std::process::id()));
        let first = ServerIdentity::persistent("cut").load_from(&home).unwrap();
        let files = IdentityFiles::of("cut", &home).unwrap();
        for (path, begins) in [(&files.cert, 1), (&files.key, 1)] {
            let whole = fs::read_to_string(path).unwrap();
            let cut = &whole[..whole.len() / 2];
            fs::write(path, cut).unwrap();
            let err = ServerIdentity::persistent("cut")
                .load_from(&home)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(
                err.contains(&format!("line {begins}")) && err.contains("truncated"),
                "{err}"
            );
            assert_eq!(
                fs::read_to_string(path).unwrap(),
                cut,
                "the damaged file was replaced"
            );
            fs::write(path, whole).unwrap();
        }
        let again = ServerIdentity::persistent("cut").load_from(&home).unwrap();
        assert_eq!(again.fingerprint, first.fingerprint);
        fs::remove_dir_all(&home).unwrap();
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
}
