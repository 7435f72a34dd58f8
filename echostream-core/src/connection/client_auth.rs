//! Client certificates (mutual TLS), the TLS key-log option, and what a peer's certificate says.
//!
//! - [`ClientAuth`]: whether a server asks clients for a certificate, and how it verifies one
//!   ([`ClientCertTrust`]: CA roots or pinned fingerprints).
//! - [`KeyLog`]: writes TLS session secrets for packet analysers (off by default; a warning is
//!   logged whenever it is on).
//! - [`PeerCertificate`]: fingerprint and names of the certificate the other side presented.
//!
//! Clients present an identity loaded like a server's ([`super::tls::ServerIdentity`], aliased
//! [`ClientIdentity`]): a persistent or ephemeral self-signed certificate (for pinning), or a
//! CA-issued chain.

use super::tls::{
    crypto_provider, pinned, read_pem_certs, root_store, signature_methods, Fingerprint, LoadedIdentity,
    ServerIdentity, TlsError, VerifierCore,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DistinguishedName};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where a client's certificate and key come from: the same sources as a server's.
pub type ClientIdentity = ServerIdentity;

/// How a server verifies client certificates.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientCertTrust {
    /// The chain must lead to one of these roots (WebPKI validation, client-auth usage).
    CaRoots(Vec<CertificateDer<'static>>),
    /// Like [`ClientCertTrust::CaRoots`], with the roots read from a PEM file.
    CaFile(PathBuf),
    /// Only leaf certificates with these SHA-256 fingerprints (self-signed clients).
    Pinned(Vec<Fingerprint>),
}

impl ClientCertTrust {
    /// Accepts only the client certificates with these fingerprints.
    pub fn pinned(fingerprints: impl IntoIterator<Item = Fingerprint>) -> Self {
        Self::Pinned(fingerprints.into_iter().collect())
    }
}

/// Whether a server asks for client certificates (mutual TLS).
///
/// The default asks for none: clients are anonymous at the TLS level and the
/// [`Authenticator`](crate::rpc::Authenticator) (credentials in the hello) decides.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificate is requested (the default).
    #[default]
    None,
    /// A certificate is requested; a client without one is admitted anonymously, a client with
    /// an untrusted one is refused during the TLS handshake.
    Optional(ClientCertTrust),
    /// Every client must present a trusted certificate; others fail the TLS handshake.
    Required(ClientCertTrust),
}

impl ClientAuth {
    /// Every client must present a certificate trusted by `trust`.
    pub fn required(trust: ClientCertTrust) -> Self {
        Self::Required(trust)
    }

    /// Clients may present a certificate; if they do, `trust` must accept it.
    pub fn optional(trust: ClientCertTrust) -> Self {
        Self::Optional(trust)
    }
}

/// Where TLS session secrets are written (NSS key-log format, as read by Wireshark and tshark).
///
/// Anyone holding the file can decrypt the captured traffic: for debugging only. Off unless set;
/// every configuration built with it logs a warning.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum KeyLog {
    /// The file named by the `SSLKEYLOGFILE` environment variable (nothing if unset).
    FromEnv,
    /// This file (appended to; created with mode 0600 on Unix).
    Path(PathBuf),
}

impl KeyLog {
    fn install(&self, side: &str) -> Arc<dyn rustls::KeyLog> {
        match self {
            KeyLog::FromEnv => {
                tracing::warn!(
                    side,
                    file = ?std::env::var_os("SSLKEYLOGFILE"),
                    "TLS key logging is ON (SSLKEYLOGFILE): anyone with that file can decrypt this \
                     traffic; use for debugging only"
                );
                Arc::new(rustls::KeyLogFile::new())
            }
            KeyLog::Path(path) => {
                tracing::warn!(
                    side,
                    file = %path.display(),
                    "TLS key logging is ON: anyone with that file can decrypt this traffic; use \
                     for debugging only"
                );
                Arc::new(PathKeyLog {
                    path: path.clone(),
                    file: Mutex::new(None),
                })
            }
        }
    }
}

/// rustls key log writing to a chosen path, opened on first use.
#[derive(Debug)]
struct PathKeyLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl rustls::KeyLog for PathKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            let mut options = std::fs::OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            match options.open(&self.path) {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot open the TLS key log");
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut() {
            let line = format!("{label} {} {}\n", hex::encode(client_random), hex::encode(secret));
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// TLS settings of a server beyond its identity.
#[derive(Clone, Debug, Default)]
pub struct ServerTls {
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// Key log (debugging only).
    pub key_log: Option<KeyLog>,
}

/// The rustls server configuration: [`super::tls::server_crypto`] plus client authentication and
/// the key log.
pub fn server_crypto(identity: &LoadedIdentity, tls: &ServerTls) -> Result<rustls::ServerConfig, TlsError> {
    let provider = crypto_provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match &tls.client_auth {
        ClientAuth::None => None,
        ClientAuth::Optional(trust) => Some(client_verifier(trust, false)?),
        ClientAuth::Required(trust) => Some(client_verifier(trust, true)?),
    };
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(identity.cert_chain.clone(), identity.private_key.clone_key())?;
    config.alpn_protocols = vec![super::tls::ALPN.to_vec()];
    if let Some(log) = &tls.key_log {
        config.key_log = log.install("server");
    }
    Ok(config)
}

/// The rustls client configuration: [`super::tls::client_crypto`] plus an optional client
/// certificate and key log.
pub fn client_crypto(
    trust: &super::tls::ClientTrust,
    host_key: &str,
    identity: Option<&LoadedIdentity>,
    key_log: Option<&KeyLog>,
) -> Result<(rustls::ClientConfig, super::tls::TrustReport), TlsError> {
    let (mut config, report) = super::tls::client_crypto_with_cert(trust, host_key, identity)?;
    if let Some(log) = key_log {
        config.key_log = log.install("client");
    }
    Ok((config, report))
}

fn client_verifier(trust: &ClientCertTrust, required: bool) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let provider = crypto_provider();
    let store = match trust {
        ClientCertTrust::Pinned(pins) => {
            return Ok(Arc::new(PinnedClientVerifier {
                pins: pinned(pins)?,
                required,
                core: VerifierCore::new(provider),
            }));
        }
        ClientCertTrust::CaRoots(roots) => root_store(roots, "ClientCertTrust::CaRoots")?,
        ClientCertTrust::CaFile(path) => root_store(&read_pem_certs(path)?, &path.display().to_string())?,
    };
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider);
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(format!("client verifier: {e}"))))
}

/// Accepts client certificates whose leaf fingerprint is pinned, after checking the handshake
/// signature (the client must hold the key).
#[derive(Debug)]
struct PinnedClientVerifier {
    pins: Vec<Fingerprint>,
    required: bool,
    core: VerifierCore,
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        if self.pins.contains(&presented) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(fingerprint = %presented, "client certificate is not pinned; refused");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    signature_methods!();
}

/// What the certificate the other side presented says: its fingerprint and names.
///
/// On a server with [`ClientAuth`] this is the client's verified certificate; on a client it is
/// the server's (verified by its [`ClientTrust`](super::tls::ClientTrust)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerCertificate {
    /// SHA-256 of the leaf certificate's DER.
    pub fingerprint: Fingerprint,
    /// The subject distinguished name, RFC 4514 style (`CN=alice,O=Example`); empty if the
    /// certificate could not be parsed.
    pub subject: String,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// Subject alternative names: DNS names, IP addresses, e-mail addresses and URIs, as text.
    pub alt_names: Vec<String>,
    /// The leaf certificate itself (DER), for checks the fields above do not cover (an
    /// extension, a policy OID, the key).
    pub der: bytes::Bytes,
}

impl PeerCertificate {
    /// Reads a DER certificate. Never fails: a certificate rustls accepted but the parser does
    /// not understand keeps its fingerprint, with no names.
    pub fn from_der(der: &[u8]) -> Self {
        use x509_parser::extensions::GeneralName;
        let fingerprint = Fingerprint::of(der);
        let mut cert = PeerCertificate {
            fingerprint,
            subject: String::new(),
            common_name: None,
            alt_names: Vec::new(),
            der: bytes::Bytes::copy_from_slice(der),
        };
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(der) else {
            return cert;
        };
        cert.subject = parsed.subject().to_string();
        cert.common_name = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                let text = match name {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::RFC822Name(e) => Some((*e).to_owned()),
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip)
                            .ok()
                            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*ip)
                            .ok()
                            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
                        _ => None,
                    },
                    _ => None,
                };
                cert.alt_names.extend(text);
            }
        }
        cert
    }

    /// Every name of the subject: the common name, then the alternative names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.common_name
            .as_deref()
            .into_iter()
            .chain(self.alt_names.iter().map(String::as_str))
    }

    /// The certificate the other end of `conn` presented, if any.
    pub(crate) fn of_connection(conn: &quinn::Connection) -> Option<Self> {
        let id = conn.peer_identity()?;
        let certs = id.downcast::<Vec<CertificateDer<'static>>>().ok()?;
        certs.first().map(|c| Self::from_der(c.as_ref()))
    }
}
