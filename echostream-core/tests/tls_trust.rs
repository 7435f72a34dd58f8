//! End-to-end tests of server identities and client trust modes over real QUIC on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use echostream_core::connection::tls::{
    client_crypto, server_crypto, ClientTrust, Fingerprint, LoadedIdentity, ParseFingerprintError,
    ServerIdentity, TlsError, TrustFailure, TrustReport, ALPN,
};
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const WAIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "echostream-tls-{label}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An echo server: every bi stream gets its bytes back.
struct Server {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
}

impl Server {
    fn start(identity: &LoadedIdentity) -> Self {
        let crypto = server_crypto(identity).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(crypto).unwrap()));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let accept = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                        let Ok(data) = recv.read_to_end(1024).await else {
                            return;
                        };
                        if send.write_all(&data).await.is_err() {
                            return;
                        }
                        let _ = send.finish();
                    }
                });
            }
        });
        Self { endpoint, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
    }
}

/// Connects with `trust`, identifying the server as `host_key` in known-hosts files and as
/// `server_name` in TLS, and proves the connection carries data.
async fn connect(
    server: &Server,
    trust: &ClientTrust,
    host_key: &str,
    server_name: &str,
) -> (Result<quinn::Connection, quinn::ConnectionError>, TrustReport) {
    let (crypto, report) = client_crypto(trust, host_key).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto).unwrap()));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint.connect_with(config, server.addr, server_name).unwrap();
    let result = bounded("the handshake", connecting).await;
    if let Ok(connection) = &result {
        let (mut send, mut recv) = bounded("a stream", connection.open_bi()).await.unwrap();
        send.write_all(b"ping").await.unwrap();
        send.finish().unwrap();
        let echoed = bounded("the echo", recv.read_to_end(1024)).await.unwrap();
        assert_eq!(echoed, b"ping");
    }
    (result, report)
}

async fn connect_ok(
    server: &Server,
    trust: &ClientTrust,
    host_key: &str,
    server_name: &str,
) -> (quinn::Connection, TrustReport) {
    let (result, report) = connect(server, trust, host_key, server_name).await;
    match result {
        Ok(connection) => (connection, report),
        Err(err) => panic!("connection failed: {err}; trust failure: {:?}", report.failure()),
    }
}

async fn connect_err(
    server: &Server,
    trust: &ClientTrust,
    host_key: &str,
    server_name: &str,
) -> (quinn::ConnectionError, TrustReport) {
    let (result, report) = connect(server, trust, host_key, server_name).await;
    match result {
        Ok(_) => panic!("connection unexpectedly succeeded"),
        Err(err) => (err, report),
    }
}

fn ephemeral() -> LoadedIdentity {
    ServerIdentity::Ephemeral.load().unwrap()
}

/// A CA and a leaf for "localhost" that it signed, as (CA cert, server identity).
fn ca_signed_localhost() -> (CertificateDer<'static>, ServerIdentity) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "EchoStream test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let identity = ServerIdentity::Der {
        cert_chain: vec![leaf.der().clone(), ca_cert.der().clone()],
        private_key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            leaf_key.serialize_der(),
        ))),
    };
    (ca_cert.der().clone(), identity)
}

#[tokio::test]
async fn pinned_right_fingerprint_connects_with_tls13_and_echostream_alpn() {
    let identity = ephemeral();
    let server = Server::start(&identity);
    let trust = ClientTrust::pinned(identity.fingerprint);
    let (connection, report) = connect_ok(&server, &trust, "pinned-host", "localhost").await;

    let data = connection
        .handshake_data()
        .unwrap()
        .downcast::<HandshakeData>()
        .unwrap();
    assert_eq!(data.protocol.as_deref(), Some(ALPN));
    assert_eq!(ALPN, b"echostream/1");
    assert_eq!(report.observed(), Some(identity.fingerprint));
    assert!(report.failure().is_none());
}

#[tokio::test]
async fn pinned_wrong_fingerprint_fails_naming_both_fingerprints() {
    let identity = ephemeral();
    let server = Server::start(&identity);
    let other = Fingerprint([0xab; 32]);
    let trust = ClientTrust::Pinned(vec![other]);
    let (err, report) = connect_err(&server, &trust, "pinned-host", "localhost").await;

    match report.failure() {
        Some(TrustFailure::PinMismatch { presented, expected }) => {
            assert_eq!(presented, identity.fingerprint);
            assert_eq!(expected, vec![other]);
        }
        other => panic!("expected PinMismatch, got {other:?}"),
    }
    let message = report.failure().unwrap().to_string();
    assert!(message.contains(&identity.fingerprint.to_string()), "{message}");
    assert!(message.contains(&other.to_string()), "{message}");
    // The verifier's message also reaches quinn's error.
    assert!(
        err.to_string().contains(&identity.fingerprint.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn empty_pin_list_is_rejected_before_connecting() {
    let err = client_crypto(&ClientTrust::Pinned(Vec::new()), "h").unwrap_err();
    assert!(matches!(err, TlsError::NoPinnedFingerprints), "{err}");
}

#[tokio::test]
async fn known_hosts_records_first_contact_then_rejects_a_changed_server() {
    let dir = TempDir::new("tofu");
    let file = dir.path().join("nested").join("known_hosts");
    let trust = ClientTrust::known_hosts_file(&file);
    let host_key = "127.0.0.1:5000";

    let first = ephemeral();
    let server = Server::start(&first);
    let (_connection, report) = connect_ok(&server, &trust, host_key, "localhost").await;
    let recorded = report.recorded().expect("first contact is recorded");
    assert_eq!(recorded.fingerprint, first.fingerprint);
    assert_eq!(recorded.file, file);
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().nth(recorded.line - 1).unwrap();
    assert_eq!(line, format!("{host_key} sha256:{}", first.fingerprint));

    // Same server again: accepted, nothing new recorded.
    let (_connection, report) = connect_ok(&server, &trust, host_key, "localhost").await;
    assert!(report.recorded().is_none());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // A different server answering for the same host key.
    let impostor = ephemeral();
    let impostor_server = Server::start(&impostor);
    let (_err, report) = connect_err(&impostor_server, &trust, host_key, "localhost").await;
    let failure = report.failure();
    match &failure {
        Some(TrustFailure::KnownHostMismatch {
            host,
            presented,
            recorded: recorded_fp,
            file: failure_file,
            line: failure_line,
        }) => {
            assert_eq!(host, host_key);
            assert_eq!(*presented, impostor.fingerprint);
            assert_eq!(*recorded_fp, first.fingerprint);
            assert_eq!(failure_file, &file);
            assert_eq!(*failure_line, recorded.line);
            let message = failure.as_ref().unwrap().to_string();
            assert!(message.contains(&file.display().to_string()), "{message}");
            assert!(message.contains(&format!("line {}", recorded.line)), "{message}");
            assert!(message.contains(&impostor.fingerprint.to_string()), "{message}");
            assert!(message.contains(&first.fingerprint.to_string()), "{message}");
        }
        other => panic!("expected KnownHostMismatch, got {other:?}"),
    }
    // The impostor is not recorded.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // Another host key is a first contact of its own.
    let (_connection, report) = connect_ok(&impostor_server, &trust, "other:1", "localhost").await;
    assert!(report.recorded().is_some());
}

#[tokio::test]
async fn known_hosts_accepts_any_of_several_fingerprints_for_a_host() {
    let dir = TempDir::new("rotation");
    let file = dir.path().join("known_hosts");
    let old = Fingerprint([1; 32]);
    let new = ephemeral();
    std::fs::write(
        &file,
        format!("# rotation\nrotating:1 sha256:{old}\nrotating:1 SHA256:{}\n", {
            let hex = new.fingerprint.to_string().to_uppercase();
            // Hand-written style, with ':' separators.
            hex.as_bytes()
                .chunks(2)
                .map(|pair| std::str::from_utf8(pair).unwrap())
                .collect::<Vec<_>>()
                .join(":")
        }),
    )
    .unwrap();
    let server = Server::start(&new);
    let trust = ClientTrust::known_hosts_file(&file);
    let (_connection, report) = connect_ok(&server, &trust, "rotating:1", "localhost").await;
    assert!(report.recorded().is_none());
}

#[tokio::test]
async fn malformed_known_hosts_line_is_an_error_naming_file_and_line() {
    let dir = TempDir::new("corrupt");
    let file = dir.path().join("known_hosts");
    std::fs::write(&file, "# ok\nhost:1 sha256:1234\n").unwrap();
    let err = client_crypto(&ClientTrust::known_hosts_file(&file), "host:1").unwrap_err();
    match &err {
        TlsError::KnownHosts {
            file: err_file, line, ..
        } => {
            assert_eq!(err_file, &file);
            assert_eq!(*line, 2);
        }
        other => panic!("expected KnownHosts error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("line 2"), "{message}");

    let err = client_crypto(&ClientTrust::known_hosts_file(&file), "bad host").unwrap_err();
    assert!(matches!(err, TlsError::BadHostKey { .. }), "{err}");
}

#[tokio::test]
async fn ca_issued_chain_is_accepted_with_its_root_and_rejected_by_another_ca() {
    let (ca_root, identity) = ca_signed_localhost();
    let loaded = identity.load().unwrap();
    assert_eq!(loaded.cert_chain.len(), 2);
    let server = Server::start(&loaded);

    let trust = ClientTrust::CaRoots(vec![ca_root.clone()]);
    let (_connection, report) = connect_ok(&server, &trust, "ignored", "localhost").await;
    assert_eq!(report.observed(), Some(loaded.fingerprint));

    // The right CA, but the certificate is not valid for this name.
    let (_err, report) = connect_err(&server, &trust, "ignored", "example.com").await;
    assert!(
        matches!(report.failure(), Some(TrustFailure::Chain { .. })),
        "{:?}",
        report.failure()
    );

    let (other_root, _) = ca_signed_localhost();
    let trust = ClientTrust::CaRoots(vec![other_root]);
    let (_err, report) = connect_err(&server, &trust, "ignored", "localhost").await;
    match report.failure() {
        Some(TrustFailure::Chain { detail }) => assert!(!detail.is_empty()),
        other => panic!("expected Chain failure, got {other:?}"),
    }
}

#[tokio::test]
async fn ca_file_roots_and_pem_identity_files_load() {
    let dir = TempDir::new("pem");
    let (ca_root, identity) = ca_signed_localhost();
    let ServerIdentity::Der {
        cert_chain,
        private_key,
    } = &identity
    else {
        unreachable!()
    };
    let pem = |label: &str, der: &[u8]| {
        use std::fmt::Write;
        let b64 = base64_encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            writeln!(out, "{}", std::str::from_utf8(chunk).unwrap()).unwrap();
        }
        writeln!(out, "-----END {label}-----").unwrap();
        out
    };
    let chain_path = dir.path().join("chain.pem");
    let key_path = dir.path().join("key.pem");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(
        &chain_path,
        cert_chain
            .iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(&key_path, pem("PRIVATE KEY", private_key.secret_der())).unwrap();
    std::fs::write(&ca_path, pem("CERTIFICATE", &ca_root)).unwrap();

    let from_files = ServerIdentity::PemFiles {
        cert_chain: chain_path.clone(),
        private_key: key_path.clone(),
    };
    let loaded = from_files.load().unwrap();
    assert_eq!(loaded.cert_chain, *cert_chain);
    assert_eq!(loaded.fingerprint, Fingerprint::of(&cert_chain[0]));

    let server = Server::start(&loaded);
    let trust = ClientTrust::CaFile(ca_path);
    connect_ok(&server, &trust, "ignored", "localhost").await;

    // Errors name the file.
    let missing = dir.path().join("missing.pem");
    let err = ServerIdentity::PemFiles {
        cert_chain: missing.clone(),
        private_key: key_path.clone(),
    }
    .load()
    .unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    let err = ServerIdentity::PemFiles {
        cert_chain: key_path.clone(),
        private_key: key_path.clone(),
    }
    .load()
    .unwrap_err();
    assert!(
        matches!(&err, TlsError::Pem { path, .. } if *path == key_path),
        "{err}"
    );
    let err = ServerIdentity::PemFiles {
        cert_chain: chain_path.clone(),
        private_key: chain_path.clone(),
    }
    .load()
    .unwrap_err();
    assert!(
        matches!(&err, TlsError::Pem { path, .. } if *path == chain_path),
        "{err}"
    );

    // A key that does not belong to the certificate.
    let other_key = ephemeral().private_key;
    let other_key_path = dir.path().join("other-key.pem");
    std::fs::write(&other_key_path, pem("PRIVATE KEY", other_key.secret_der())).unwrap();
    let err = ServerIdentity::PemFiles {
        cert_chain: chain_path,
        private_key: other_key_path,
    }
    .load()
    .unwrap_err();
    assert!(matches!(err, TlsError::InvalidIdentity { .. }), "{err}");
}

/// Standard base64 with padding (the test has no base64 crate).
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn dangerous_accept_any_connects_to_any_server() {
    let server = Server::start(&ephemeral());
    let trust = ClientTrust::dangerous_accept_any_certificate();
    let (_connection, report) = connect_ok(&server, &trust, "anything", "whatever.invalid").await;
    assert!(report.observed().is_some());
}

#[tokio::test]
async fn persistent_identity_is_reused_until_its_directory_is_deleted() {
    let home = TempDir::new("home");
    let identity = ServerIdentity::persistent("my-server");
    let first = identity.load_from(home.path()).unwrap();
    let second = identity.load_from(home.path()).unwrap();
    assert_eq!(first.fingerprint, second.fingerprint);
    assert_eq!(first.cert_chain, second.cert_chain);

    let dir = home.path().join("identities").join("my-server");
    assert!(dir.join("cert.pem").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // It works as a server identity, and a client pinning it connects.
    let server = Server::start(&second);
    connect_ok(&server, &ClientTrust::pinned(first.fingerprint), "h", "localhost").await;

    // Other names are other identities.
    let other = ServerIdentity::persistent("other")
        .load_from(home.path())
        .unwrap();
    assert_ne!(other.fingerprint, first.fingerprint);

    std::fs::remove_dir_all(&dir).unwrap();
    let regenerated = identity.load_from(home.path()).unwrap();
    assert_ne!(regenerated.fingerprint, first.fingerprint);

    // A half-deleted identity is not silently replaced.
    std::fs::remove_file(dir.join("key.pem")).unwrap();
    let err = identity.load_from(home.path()).unwrap_err();
    assert!(matches!(err, TlsError::IncompleteIdentity { .. }), "{err}");
}

#[tokio::test]
async fn persistent_identity_loads_concurrently_agree_on_one_fingerprint() {
    let home = TempDir::new("race");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let home = home.path().to_path_buf();
            std::thread::spawn(move || {
                ServerIdentity::persistent("raced")
                    .load_from(&home)
                    .unwrap()
                    .fingerprint
            })
        })
        .collect();
    let fingerprints: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(fingerprints.iter().all(|fp| *fp == fingerprints[0]));
    let leftovers: Vec<_> = std::fs::read_dir(home.path().join("identities"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("raced")]);
}

#[tokio::test]
async fn default_identity_is_persistent_named_default_and_bad_names_are_rejected() {
    assert!(matches!(
        ServerIdentity::default(),
        ServerIdentity::Persistent { ref name } if name == "default"
    ));
    assert!(matches!(
        ClientTrust::default(),
        ClientTrust::KnownHosts { path: None }
    ));
    let home = TempDir::new("names");
    for bad in ["", "../escape", "a/b", ".."] {
        let err = ServerIdentity::persistent(bad)
            .load_from(home.path())
            .unwrap_err();
        match &err {
            TlsError::BadIdentityName { name, .. } => assert_eq!(name, bad),
            other => panic!("expected BadIdentityName for {bad:?}, got {other:?}"),
        }
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    assert!(!home.path().join("escape").exists());
}

#[test]
fn fingerprint_formats_and_parses_round_trip() {
    let fp = Fingerprint::of(b"not really a certificate");
    let text = fp.to_string();
    assert_eq!(text.len(), 64);
    assert!(text
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(format!("sha256:{text}").parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(
        format!("SHA256:{}", text.to_uppercase())
            .parse::<Fingerprint>()
            .unwrap(),
        fp
    );
    let colons = fp
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
    assert!(format!("{fp:?}").contains(&text));
    assert_eq!(
        Fingerprint::of(b"").to_string(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );

    assert_eq!("".parse::<Fingerprint>(), Err(ParseFingerprintError::Empty));
    assert_eq!(
        "abcd".parse::<Fingerprint>(),
        Err(ParseFingerprintError::WrongLength { digits: 4 })
    );
    assert_eq!(
        format!("{}g", &text[..63]).parse::<Fingerprint>(),
        Err(ParseFingerprintError::InvalidCharacter {
            character: 'g',
            position: 63
        })
    );
    assert!(matches!(
        format!("sha1:{text}").parse::<Fingerprint>(),
        Err(ParseFingerprintError::UnsupportedAlgorithm(name)) if name == "sha1"
    ));
    let message = "xyz".parse::<Fingerprint>().unwrap_err().to_string();
    assert!(message.contains("'x'"), "{message}");
}

/// Runs a TLS handshake in memory between a client and server connection.
fn handshake(
    client: &mut rustls::ClientConnection,
    server: &mut rustls::ServerConnection,
) -> Result<(), rustls::Error> {
    for _ in 0..10 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).unwrap();
            server.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).unwrap();
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn configs_negotiate_tls13_and_refuse_tls12() {
    let identity = ephemeral();
    let server_config = Arc::new(server_crypto(&identity).unwrap());
    let (client_config, _) = client_crypto(&ClientTrust::pinned(identity.fingerprint), "h").unwrap();

    let mut client =
        rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap()).unwrap();
    let mut server = rustls::ServerConnection::new(server_config.clone()).unwrap();
    handshake(&mut client, &mut server).unwrap();
    assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(client.alpn_protocol(), Some(ALPN));

    // A client that only speaks TLS 1.2 is refused.
    let tls12_client =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    let mut client =
        rustls::ClientConnection::new(Arc::new(tls12_client), "localhost".try_into().unwrap()).unwrap();
    let mut server = rustls::ServerConnection::new(server_config).unwrap();
    assert!(handshake(&mut client, &mut server).is_err());
}
