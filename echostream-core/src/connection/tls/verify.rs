//! Certificate verification. A client trusts a server through [`ClientTrust`] (the verifier behind
//! [`client_crypto`], which fills a [`TrustReport`]); a server verifies client certificates in
//! `client_auth`. Both verifiers share [`VerifierCore`]: the TLS 1.3 handshake-signature check,
//! the refusal of TLS 1.2, pinned-fingerprint lists and CA root stores.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use super::fingerprint::join_fingerprints;
use super::known_hosts::KnownHostsCheck;
use super::{crypto_provider, read_pem_certs, Fingerprint, LoadedIdentity, TlsError, ALPN};

/// How a client decides to trust a server's certificate.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientTrust {
    /// Trust on first use (the default): the first connection to a host key records the server's
    /// fingerprint in a known-hosts file, and later connections must present a recorded one. See
    /// the [module documentation](super) for the file format.
    KnownHosts {
        /// The known-hosts file; `None` means [`echostream_home()`](super::echostream_home)`/known_hosts`.
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
            LeafCheck::KnownHosts(KnownHostsCheck::load(path.as_deref(), host_key)?)
        }
        ClientTrust::Pinned(pins) => LeafCheck::Pinned(pinned(pins)?),
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
        core: VerifierCore::new(provider.clone()),
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
    let store = root_store(roots, origin)?;
    Ok(WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build()?)
}

// ---------------------------------------------------------------------------------------------
// The core both verifiers share
// ---------------------------------------------------------------------------------------------

/// What the server-certificate verifier (client side) and the client-certificate verifier
/// (server side, mutual TLS) have in common: the crypto provider whose algorithms check the
/// TLS 1.3 handshake signature, the proof that the peer holds the certificate's key.
#[derive(Debug)]
pub(crate) struct VerifierCore {
    provider: Arc<CryptoProvider>,
}

impl VerifierCore {
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }

    /// Every config enables TLS 1.3 only, so rustls never asks for a TLS 1.2 signature; refuse
    /// rather than trust if it ever does.
    pub(crate) fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "EchoStream accepts only TLS 1.3; refusing a TLS 1.2 handshake signature".to_string(),
        ))
    }

    pub(crate) fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    pub(crate) fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The three signature methods rustls's `ServerCertVerifier` and `ClientCertVerifier` share, for
/// a verifier with a `core: VerifierCore` field. An optional `$after(&self, cert)` runs once the
/// TLS 1.3 signature checks out (known hosts record a first contact there).
macro_rules! signature_methods {
    ($($after:path)?) => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &rustls::pki_types::CertificateDer<'_>,
            _dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            $crate::connection::tls::VerifierCore::refuse_tls12()
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let valid = self.core.verify_tls13(message, cert, dss)?;
            $($after(self, cert)?;)?
            Ok(valid)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.core.schemes()
        }
    };
}
pub(crate) use signature_methods;

/// A pin list for either side: an empty one would accept no peer, so it is a configuration error.
pub(crate) fn pinned(pins: &[Fingerprint]) -> Result<Vec<Fingerprint>, TlsError> {
    if pins.is_empty() {
        return Err(TlsError::NoPinnedFingerprints);
    }
    Ok(pins.to_vec())
}

/// A webpki root store for either side, naming `origin` (and the position) of an unusable root.
pub(crate) fn root_store(
    roots: &[CertificateDer<'static>],
    origin: &str,
) -> Result<rustls::RootCertStore, TlsError> {
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
    Ok(store)
}

// ---------------------------------------------------------------------------------------------
// The client's verifier of server certificates
// ---------------------------------------------------------------------------------------------

/// Certificate verifier for every [`ClientTrust`] mode: it checks the leaf (or delegates chain
/// validation to webpki), verifies the TLS 1.3 handshake signature, and fills the report.
#[derive(Debug)]
struct EchoServerVerifier {
    check: LeafCheck,
    core: VerifierCore,
    report: TrustReport,
}

#[derive(Debug)]
enum LeafCheck {
    Pinned(Vec<Fingerprint>),
    KnownHosts(KnownHostsCheck),
    AcceptAny,
    WebPki(Arc<WebPkiServerVerifier>),
}

impl EchoServerVerifier {
    /// After the handshake signature: a first contact is recorded in the known-hosts file.
    fn signature_verified(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if let LeafCheck::KnownHosts(known) = &self.check {
            match known.record_if_new(Fingerprint::of(cert)) {
                Ok(Some(recorded)) => self.report.lock().recorded = Some(recorded),
                Ok(None) => {}
                Err(failure) => return Err(self.report.fail(failure)),
            }
        }
        Ok(())
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
            LeafCheck::KnownHosts(known) => known
                .check(presented)
                .map(|()| ServerCertVerified::assertion())
                .map_err(|failure| self.report.fail(failure)),
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

    // webpki's own TLS 1.3 check uses the same provider's algorithms, so the core serves the
    // CA modes too.
    signature_methods!(EchoServerVerifier::signature_verified);
}
