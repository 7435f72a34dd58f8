//! Helpers shared by the end-to-end tests: servers on 127.0.0.1:0 with
//! ephemeral identities, clients that pin them.
#![allow(dead_code, unreachable_pub, missing_docs)]

use echostream::prelude::*;

use echostream::rpc::ServerBuilder;
use echostream::{Fingerprint, ServerIdentity};
use std::time::Duration;

/// Generous bound for anything a test waits on (loaded CI machines).
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct TestServer {
    pub addr: String,
    pub fingerprint: Fingerprint,
    pub shutdown: echostream::rpc::ShutdownHandle,
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Starts a server on 127.0.0.1:0 with an ephemeral identity.
pub fn serve(builder: ServerBuilder) -> TestServer {
    let server = builder
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .build()
        .expect("server builds");
    let addr = server.local_addr().to_string();
    let fingerprint = server.fingerprint();
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    TestServer {
        addr,
        fingerprint,
        shutdown,
        task,
    }
}

/// A client builder that pins the test server.
pub fn client_for(s: &TestServer) -> echostream::rpc::ClientBuilder {
    RpcClient::builder().pin(s.fingerprint)
}

pub async fn connect(s: &TestServer) -> RpcClient {
    tokio::time::timeout(WAIT, client_for(s).connect(&s.addr))
        .await
        .expect("connect in time")
        .expect("connect succeeds")
}

/// A unique scratch directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "echostream-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A raw quinn server (no EchoStream protocol code) with an ephemeral
/// EchoStream identity: for tests that play a misbehaving server. Returns the
/// endpoint, its address and the certificate fingerprint to pin.
pub fn raw_server() -> (quinn::Endpoint, String, Fingerprint) {
    let id = ServerIdentity::Ephemeral.load().unwrap();
    let crypto = echostream::tls::server_crypto(&id).unwrap();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).unwrap();
    let ep = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(std::sync::Arc::new(quic)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = ep.local_addr().unwrap().to_string();
    (ep, addr, id.fingerprint)
}

/// Resident memory of this process in KiB, from /proc/self/status (Linux); 0 elsewhere.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until `f` holds, failing the test after [`WAIT`].
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "not reached in time: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One identity (an ephemeral one, kept as DER) for a server restarted on the same port, so
/// a client pinning it trusts every instance.
pub fn fixed_identity() -> ServerIdentity {
    let id = ServerIdentity::Ephemeral.load().unwrap();
    ServerIdentity::Der {
        cert_chain: id.cert_chain.clone(),
        private_key: std::sync::Arc::new(id.private_key.clone_key()),
    }
}
