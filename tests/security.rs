//! Authentication, access control, limits and TLS options through the public API.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::{
    authenticator_fn, handler_fn, interceptor_fn, listener_fn, require_role, AuthRequest, CallKind, Handler,
    HandlerExt, PeerIdentity, RateLimit, StaticTokens,
};
use echostream::rpc::{AddressValidation, ServerBuilder};
use echostream::stream::StreamError;
use echostream::types::Code;
use echostream::{ClientAuth, ClientCertTrust, ClientTrust, Fingerprint, KeyLog, ServerIdentity};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn whoami() -> impl Handler {
    handler_fn("whoami", |ctx: Context, _: ()| async move {
        Ok::<_, Error>(
            ctx.identity()
                .map_or("anonymous".to_string(), |i| i.name().to_string()),
        )
    })
}

fn tokens() -> StaticTokens {
    StaticTokens::new()
        .token("alice-token", PeerIdentity::new("alice").with_role("admin"))
        .token("bob-token", PeerIdentity::new("bob").with_role("user"))
}

#[tokio::test]
async fn token_authenticator_admits_rejects_and_exposes_the_identity() {
    init_tracing();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let s = serve(
        RpcServer::builder()
            .authenticator(tokens())
            .handler(whoami())
            .handler(handler_fn("count", move |_c: Context, _: ()| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Error>(()) }
            })),
    );
    let alice = client_for(&s)
        .token("alice-token")
        .connect(&s.addr)
        .await
        .unwrap();
    assert_eq!(alice.request::<_, String>("whoami", ()).await.unwrap(), "alice");
    let anonymous = connect(&s).await;
    assert_eq!(
        anonymous.request::<_, String>("whoami", ()).await.unwrap(),
        "anonymous"
    );

    let err = client_for(&s).token("stolen").connect(&s.addr).await.unwrap_err();
    match &err {
        Error::Rejected { addr, reason } => {
            assert_eq!(addr, &s.addr);
            assert!(
                reason.contains("authentication failed: invalid credentials"),
                "{reason}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no handler ran for the rejected client"
    );

    // A required token turns anonymous clients away too.
    let strict = serve(
        RpcServer::builder()
            .authenticator(tokens().required())
            .handler(whoami()),
    );
    let err = client_for(&strict).connect(&strict.addr).await.unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { reason, .. } if reason.contains("credentials required")),
        "{err:?}"
    );
}

#[tokio::test]
async fn async_authenticator_sees_credentials_address_and_can_reject() {
    let s = serve(
        RpcServer::builder()
            .authenticator(authenticator_fn(|req: AuthRequest| async move {
                assert!(req.remote.ip().is_loopback());
                tokio::time::sleep(Duration::from_millis(10)).await;
                match req.credentials().map(|b| b.to_vec()) {
                    Some(b) if b == [0xCA, 0xFE] => Ok(Some(PeerIdentity::new("device-cafe"))),
                    _ => Err("unknown device".to_string()),
                }
            }))
            .handler(whoami()),
    );
    let ok = client_for(&s)
        .credentials(vec![0xCA, 0xFE])
        .connect(&s.addr)
        .await
        .unwrap();
    assert_eq!(
        ok.request::<_, String>("whoami", ()).await.unwrap(),
        "device-cafe"
    );
    let err = client_for(&s).connect(&s.addr).await.unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { reason, .. } if reason.contains("unknown device")),
        "{err:?}"
    );
}

fn guarded_server(ran: Arc<AtomicUsize>) -> ServerBuilder {
    let r1 = ran.clone();
    let r2 = ran;
    RpcServer::builder()
        .authenticator(tokens())
        .protect("admin.*", require_role("admin"))
        .handler(handler_fn("admin.reboot", move |_c: Context, _: ()| {
            r1.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Error>("rebooting".to_string()) }
        }))
        .handler(
            handler_fn("user.profile", move |ctx: Context, _: ()| {
                r2.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, Error>(ctx.identity().map(|i| i.name().to_string())) }
            })
            .require_authenticated(),
        )
        .handler(handler_fn("public.ping", |_c: Context, _: ()| async {
            Ok::<_, Error>("pong".to_string())
        }))
}

#[tokio::test]
async fn interceptors_deny_with_unauthenticated_or_permission_denied_and_handlers_never_run() {
    let ran = Arc::new(AtomicUsize::new(0));
    let s = serve(guarded_server(ran.clone()));
    let anonymous = connect(&s).await;
    let bob = client_for(&s).token("bob-token").connect(&s.addr).await.unwrap();
    let alice = client_for(&s)
        .token("alice-token")
        .connect(&s.addr)
        .await
        .unwrap();

    assert_eq!(
        anonymous.request::<_, String>("public.ping", ()).await.unwrap(),
        "pong"
    );
    for method in ["admin.reboot", "user.profile"] {
        match anonymous
            .request::<_, Option<String>>(method, ())
            .await
            .unwrap_err()
        {
            Error::Unauthenticated { method: m, reason } => {
                assert_eq!(m, method);
                assert!(reason.contains(method), "{reason}");
            }
            other => panic!("expected unauthenticated for {method}, got {other:?}"),
        }
    }
    match bob.request::<_, String>("admin.reboot", ()).await.unwrap_err() {
        Error::PermissionDenied { reason, .. } => {
            assert!(
                reason.contains("role `admin`") && reason.contains("bob"),
                "{reason}"
            )
        }
        other => panic!("expected permission denied, got {other:?}"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "no denied handler ran");
    assert_eq!(
        bob.request::<_, Option<String>>("user.profile", ())
            .await
            .unwrap(),
        Some("bob".to_string())
    );
    assert_eq!(
        alice.request::<_, String>("admin.reboot", ()).await.unwrap(),
        "rebooting"
    );
    // The connections stay usable after denials.
    assert_eq!(bob.request::<_, String>("public.ping", ()).await.unwrap(), "pong");
}

#[tokio::test]
async fn interceptors_run_in_registration_order_and_see_events() {
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let heard = Arc::new(AtomicUsize::new(0));
    let h = heard.clone();
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .interceptor(interceptor_fn(move |ctx: &Context, kind: CallKind| {
            o1.lock()
                .unwrap()
                .push(format!("first {} {kind:?}", ctx.method()));
            Ok(())
        }))
        .interceptor(interceptor_fn(move |ctx: &Context, kind: CallKind| {
            o2.lock()
                .unwrap()
                .push(format!("second {} {kind:?}", ctx.method()));
            if kind == CallKind::Event && ctx.method() == "audit.forbidden" {
                return Err(Status::new(Code::PERMISSION_DENIED, "no"));
            }
            Ok(())
        }))
        .handler(handler_fn("ping", |_c: Context, _: ()| async {
            Ok::<_, Error>(())
        }))
        .listener(listener_fn("audit.ok", move |_c: Context, _: u8| {
            h.fetch_add(1, Ordering::SeqCst);
            async {}
        }))
        .listener(listener_fn("audit.forbidden", |_c: Context, _: u8| async {
            panic!("a denied event reached its listener")
        }))
        .build()
        .unwrap();
    let handle = server.handle();
    tokio::spawn(server.run());
    let c = RpcClient::builder()
        .pin(handle.fingerprint())
        .connect(&handle.local_addr().to_string())
        .await
        .unwrap();
    let () = c.request("ping", ()).await.unwrap();
    c.emit("audit.forbidden", 1u8).await.unwrap();
    c.emit("audit.ok", 1u8).await.unwrap();
    wait_until("the allowed event arrived", || heard.load(Ordering::SeqCst) == 1).await;
    assert_eq!(handle.failed_events(), 1, "the denied event is counted");
    let seen = order.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "first ping Request",
            "second ping Request",
            "first audit.forbidden Event",
            "second audit.forbidden Event",
            "first audit.ok Event",
            "second audit.ok Event",
        ]
    );
}

#[tokio::test]
async fn method_rate_limit_refuses_with_a_retry_delay_and_the_connection_stays_usable() {
    let s = serve(
        RpcServer::builder()
            .method_rate_limit("login", RateLimit::per_second(4).burst(2))
            .handler(handler_fn("login", |_c: Context, _: ()| async {
                Ok::<_, Error>(())
            }))
            .handler(handler_fn("other", |_c: Context, _: ()| async {
                Ok::<_, Error>(())
            })),
    );
    let c = connect(&s).await;
    let () = c.request("login", ()).await.unwrap();
    let () = c.request("login", ()).await.unwrap();
    let retry = match c.request::<_, ()>("login", ()).await.unwrap_err() {
        Error::RateLimited {
            method,
            retry_after,
            message,
        } => {
            assert_eq!(method, "login");
            assert!(
                message.contains("4/s") && message.contains("retry after"),
                "{message}"
            );
            let retry = retry_after.expect("the server says when to retry");
            assert!(
                retry > Duration::ZERO && retry <= Duration::from_millis(250),
                "{retry:?}"
            );
            retry
        }
        other => panic!("expected rate limited, got {other:?}"),
    };
    // Other methods are not limited by that rule, and the connection is fine.
    for _ in 0..10 {
        let () = c.request("other", ()).await.unwrap();
    }
    tokio::time::sleep(retry).await;
    let () = c.request("login", ()).await.unwrap();
}

#[tokio::test]
async fn connection_rate_limit_counts_every_method() {
    let s = serve(
        RpcServer::builder()
            .rate_limit(RateLimit::per_minute(5))
            .handler(handler_fn("a", |_c: Context, _: ()| async { Ok::<_, Error>(()) }))
            .handler(handler_fn("b", |_c: Context, _: ()| async { Ok::<_, Error>(()) })),
    );
    let c = connect(&s).await;
    for i in 0..5 {
        let () = c.request(if i % 2 == 0 { "a" } else { "b" }, ()).await.unwrap();
    }
    match c.request::<_, ()>("b", ()).await.unwrap_err() {
        Error::RateLimited {
            message, retry_after, ..
        } => {
            assert!(message.contains("per connection"), "{message}");
            assert!(retry_after.unwrap() > Duration::from_secs(5));
        }
        other => panic!("expected rate limited, got {other:?}"),
    }
    // Another connection has its own bucket.
    let () = connect(&s).await.request("a", ()).await.unwrap();
}

#[tokio::test]
async fn default_handler_timeout_bounds_requests_that_carry_no_deadline() {
    let s = serve(
        RpcServer::builder()
            .default_handler_timeout(Some(Duration::from_millis(200)))
            .handler(handler_fn("hang", |_c: Context, _: ()| async {
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            })),
    );
    let c = connect(&s).await;
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        WAIT,
        c.request_with::<_, ()>("hang", (), CallOptions::new().no_timeout()),
    )
    .await
    .expect("the server ends the call")
    .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn max_concurrent_requests_refuses_the_excess_with_resource_exhausted() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let s = serve(
        RpcServer::builder()
            .max_concurrent_requests(2)
            .handler(handler_fn("wait", move |_c: Context, _: ()| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok::<_, Error>(())
                }
            })),
    );
    let c = connect(&s).await;
    let a = tokio::spawn({
        let c = c.clone();
        async move { c.request::<_, ()>("wait", ()).await }
    });
    let b = tokio::spawn({
        let c = c.clone();
        async move { c.request::<_, ()>("wait", ()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    match c.request::<_, ()>("wait", ()).await.unwrap_err() {
        Error::Remote { status, .. } => {
            assert_eq!(status.code(), Code::RESOURCE_EXHAUSTED);
            assert!(status.message().contains("limit 2"), "{}", status.message());
        }
        other => panic!("expected resource exhausted, got {other:?}"),
    }
    gate.notify_waiters();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

#[tokio::test]
async fn max_frame_size_is_announced_and_enforced_before_sending() {
    let s = serve(
        RpcServer::builder()
            .max_frame_size(64 * 1024)
            .handler(handler_fn("echo", |_c: Context, b: Vec<u8>| async move {
                Ok::<_, Error>(b)
            })),
    );
    let c = connect(&s).await;
    match c
        .request::<_, Vec<u8>>("echo", vec![0u8; 100_000])
        .await
        .unwrap_err()
    {
        Error::FrameTooLarge { what, limit, .. } => {
            assert_eq!(limit, 64 * 1024);
            assert!(what.contains("echo"), "{what}");
        }
        other => panic!("expected frame too large, got {other:?}"),
    }
    assert_eq!(
        c.request::<_, Vec<u8>>("echo", vec![1u8; 1000])
            .await
            .unwrap()
            .len(),
        1000
    );
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_are_refused_before_tls() {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .max_connections_per_address(2)
        .handler(whoami())
        .build()
        .unwrap();
    let handle = server.handle();
    tokio::spawn(server.run());
    let addr = handle.local_addr().to_string();
    let builder = || RpcClient::builder().pin(handle.fingerprint());
    let a = builder().connect(&addr).await.unwrap();
    let _b = builder().connect(&addr).await.unwrap();
    let err = builder().connect(&addr).await.unwrap_err();
    match &err {
        Error::Rejected { reason, .. } => assert!(reason.contains("connection limit"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(handle.admission_stats().refused, 1);
    drop(a);
    wait_until("a slot is free again", || handle.admission_tracked().0 == 1).await;
    builder().connect(&addr).await.unwrap();
}

#[tokio::test]
async fn address_validation_always_sends_a_retry_and_clients_still_connect() {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .address_validation(AddressValidation::Always)
        .handler(whoami())
        .build()
        .unwrap();
    let handle = server.handle();
    tokio::spawn(server.run());
    let c = RpcClient::builder()
        .pin(handle.fingerprint())
        .connect(&handle.local_addr().to_string())
        .await
        .unwrap();
    assert_eq!(c.request::<_, String>("whoami", ()).await.unwrap(), "anonymous");
    let stats = handle.admission_stats();
    assert_eq!((stats.retried, stats.accepted), (1, 1), "{stats:?}");
}

/// A fixed identity (so its fingerprint is known before the server starts).
fn fixed(identity: ServerIdentity) -> (ServerIdentity, Fingerprint) {
    let id = identity.load().unwrap();
    (
        ServerIdentity::Der {
            cert_chain: id.cert_chain.clone(),
            private_key: Arc::new(id.private_key.clone_key()),
        },
        id.fingerprint,
    )
}

#[tokio::test]
async fn mutual_tls_with_pinned_client_certificates() {
    let (device, device_fp) = fixed(ServerIdentity::Ephemeral);
    let (stranger, _) = fixed(ServerIdentity::Ephemeral);
    let s = serve(
        RpcServer::builder()
            .client_auth(ClientAuth::required(ClientCertTrust::pinned([device_fp])))
            .handler(handler_fn("cert", |ctx: Context, _: ()| async move {
                let cert = ctx.peer_certificate().expect("a verified client certificate");
                Ok::<_, Error>((
                    cert.fingerprint.to_string(),
                    cert.common_name.clone(),
                    ctx.identity().map(|i| i.name().to_string()),
                ))
            })),
    );
    let c = client_for(&s)
        .client_identity(device)
        .connect(&s.addr)
        .await
        .unwrap();
    let (fp, cn, name): (String, Option<String>, Option<String>) = c.request("cert", ()).await.unwrap();
    assert_eq!(fp, device_fp.to_string());
    assert_eq!(cn.as_deref(), Some("EchoStream ephemeral"));
    assert_eq!(
        name.as_deref(),
        Some("EchoStream ephemeral"),
        "identity from the certificate"
    );
    // No certificate, or one that is not pinned: no connection, and the error says why.
    match client_for(&s).connect(&s.addr).await {
        Err(Error::Rejected { reason, .. }) => {
            assert!(reason.contains("client certificate"), "{reason}")
        }
        other => panic!("expected a rejection naming the client certificate, got {other:?}"),
    }
    assert!(client_for(&s)
        .client_identity(stranger)
        .connect(&s.addr)
        .await
        .is_err());
}

/// A CA, and a client certificate for `name` signed by it.
fn ca_and_client(name: &str) -> (CertificateDer<'static>, ServerIdentity) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Device CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![format!("{name}.local")]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "EchoStream tests");
    // A name inside the certificate, read back by the test; never contacted.
    params
        .subject_alt_names
        // A name written into the certificate and read back; no traffic goes to it.
        .push(SanType::IpAddress("10.1.2.3".parse().unwrap()));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let identity = ServerIdentity::Der {
        cert_chain: vec![cert.der().clone()],
        private_key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        ))),
    };
    (ca_cert.der().clone(), identity)
}

#[tokio::test]
async fn mutual_tls_with_a_ca_exposes_subject_names_to_the_authenticator_and_handlers() {
    let (ca, sensor) = ca_and_client("sensor-7");
    let (_other_ca, rogue) = ca_and_client("rogue");
    let s = serve(
        RpcServer::builder()
            .client_auth(ClientAuth::optional(ClientCertTrust::CaRoots(vec![ca])))
            .authenticator(authenticator_fn(|req: AuthRequest| async move {
                Ok(req.certificate.map(|c| {
                    PeerIdentity::new(c.common_name.clone().unwrap_or_default()).with_role("sensor")
                }))
            }))
            .handler(handler_fn("names", |ctx: Context, _: ()| async move {
                let cert = ctx
                    .peer_certificate()
                    .map(|c| (c.subject.clone(), c.alt_names.clone()));
                let sensor = ctx.identity().is_some_and(|i| i.has_role("sensor"));
                Ok::<_, Error>((cert, sensor))
            })),
    );
    let c = client_for(&s)
        .client_identity(sensor)
        .connect(&s.addr)
        .await
        .unwrap();
    let (cert, is_sensor): (Option<(String, Vec<String>)>, bool) = c.request("names", ()).await.unwrap();
    let (subject, alt) = cert.unwrap();
    assert!(subject.contains("CN=sensor-7"), "{subject}");
    // The certificate's names as the server read them (never an address connected to).
    assert_eq!(alt, vec!["sensor-7.local".to_string(), "10.1.2.3".to_string()]);
    assert!(is_sensor);
    // Optional: no certificate is fine (anonymous)...
    let anon = connect(&s).await;
    let (cert, is_sensor): (Option<(String, Vec<String>)>, bool) = anon.request("names", ()).await.unwrap();
    assert!(cert.is_none() && !is_sensor);
    // ...but a certificate from another CA is refused.
    assert!(client_for(&s)
        .client_identity(rogue)
        .connect(&s.addr)
        .await
        .is_err());
}

#[tokio::test]
async fn key_log_writes_session_secrets_when_asked() {
    let dir = scratch_dir("keylog");
    let file = dir.join("keys.log");
    let s = serve(
        RpcServer::builder()
            .tls_key_log(KeyLog::Path(file.clone()))
            .handler(whoami()),
    );
    let c = connect(&s).await;
    let _: String = c.request("whoami", ()).await.unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("CLIENT_HANDSHAKE_TRAFFIC_SECRET "), "{text}");
    assert!(text.contains("SERVER_TRAFFIC_SECRET_0 "), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

mod key_exchange {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, NamedGroup, SignatureScheme};

    /// Runs a TLS handshake in memory and returns the group each side negotiated.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> (Option<NamedGroup>, Option<NamedGroup>) {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets().unwrap();
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets().unwrap();
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking(), "handshake completed");
        (
            c.negotiated_key_exchange_group().map(|g| g.name()),
            s.negotiated_key_exchange_group().map(|g| g.name()),
        )
    }

    fn x25519_only() -> Arc<CryptoProvider> {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        p.kx_groups.retain(|g| g.name() == NamedGroup::X25519);
        Arc::new(p)
    }

    /// A client that trusts anything (only the key exchange is under test), with a provider
    /// that lacks the post-quantum group.
    #[derive(Debug)]
    struct AnyServer(Arc<CryptoProvider>);
    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.2".into()))
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    #[test]
    fn our_configs_negotiate_x25519mlkem768_and_fall_back_to_x25519() {
        let id = ServerIdentity::Ephemeral.load().unwrap();
        let ours_server =
            || echostream::connection::client_auth::server_crypto(&id, &Default::default()).unwrap();
        let ours_client = || {
            echostream::tls::client_crypto(&ClientTrust::pinned(id.fingerprint), "localhost:1")
                .unwrap()
                .0
        };
        // Both sides ours: the hybrid post-quantum group.
        assert_eq!(
            handshake(ours_client(), ours_server()),
            (Some(NamedGroup::X25519MLKEM768), Some(NamedGroup::X25519MLKEM768))
        );
        // A server without it: our client falls back to X25519.
        let old_server = rustls::ServerConfig::builder_with_provider(x25519_only())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(id.cert_chain.clone(), id.private_key.clone_key())
            .unwrap();
        assert_eq!(
            handshake(ours_client(), old_server),
            (Some(NamedGroup::X25519), Some(NamedGroup::X25519))
        );
        // A client without it: our server accepts X25519.
        let old_client = rustls::ClientConfig::builder_with_provider(x25519_only())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(x25519_only())))
            .with_no_client_auth();
        assert_eq!(
            handshake(old_client, ours_server()),
            (Some(NamedGroup::X25519), Some(NamedGroup::X25519))
        );
    }
}

#[tokio::test]
async fn request_payload_bytes_in_flight_are_bounded_per_connection() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let s = serve(
        RpcServer::builder()
            .max_frame_size(1024 * 1024)
            .max_request_bytes_in_flight(1536 * 1024)
            .handler(handler_fn("hold", move |_c: Context, b: Vec<u8>| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok::<_, Error>(b.len())
                }
            })),
    );
    let c = connect(&s).await;
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.request::<_, usize>("hold", vec![0u8; 900_000]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    match c
        .request::<_, usize>("hold", vec![0u8; 900_000])
        .await
        .unwrap_err()
    {
        Error::Remote { status, .. } => {
            assert_eq!(status.code(), Code::RESOURCE_EXHAUSTED);
            assert!(status.message().contains("1572864 bytes"), "{}", status.message());
        }
        other => panic!("expected resource exhausted, got {other:?}"),
    }
    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), 900_000);
    // The budget is back once the call ended.
    let second = tokio::spawn({
        let c = c.clone();
        async move { c.request::<_, usize>("hold", vec![0u8; 900_000]).await }
    });
    // One holder at a time: `notify_one` keeps the wake-up for a handler not waiting yet
    // (a loaded machine may take longer than any sleep to get it there).
    gate.notify_one();
    assert_eq!(second.await.unwrap().unwrap(), 900_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_from_one_host_is_refused_before_tls_while_others_are_served() {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .max_connections_per_address(10)
        .handshake_timeout(Duration::from_secs(2))
        .handler(whoami())
        .build()
        .unwrap();
    let handle = server.handle();
    tokio::spawn(server.run());
    let good = RpcClient::builder()
        .pin(handle.fingerprint())
        .connect(&handle.local_addr().to_string())
        .await
        .unwrap();
    // The flood comes from another loopback address, through one raw quinn endpoint.
    let (crypto, _) =
        echostream::tls::client_crypto(&ClientTrust::dangerous_accept_any_certificate(), "flood").unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.2:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let attempts = (0..500).map(|_| {
        let connecting = ep.connect(handle.local_addr(), "localhost").unwrap();
        async move { tokio::time::timeout(Duration::from_secs(10), connecting).await }
    });
    let flood = tokio::spawn(futures::future::join_all(attempts));
    for _ in 0..20 {
        assert_eq!(
            good.request::<_, String>("whoami", ()).await.unwrap(),
            "anonymous"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcomes = flood.await.unwrap();
    let connected = outcomes.iter().filter(|o| matches!(o, Ok(Ok(_)))).count();
    let stats = handle.admission_stats();
    eprintln!("flood of 500: {connected} got a TLS connection; {stats:?}");
    assert!(
        connected <= 10,
        "{connected} connections got through the per-address limit"
    );
    assert!(stats.refused >= 490, "{stats:?}");
    drop(outcomes);
    // The flood's half-open connections time out (no hello); only the good client remains.
    wait_until("the flood is gone", || handle.admission_tracked() == (1, 1, 0)).await;
    assert_eq!(
        good.request::<_, String>("whoami", ()).await.unwrap(),
        "anonymous"
    );
}

#[tokio::test]
async fn the_stream_open_hook_applies_rate_limits_and_interceptors_with_call_kind_stream_open() {
    // What the stream manager will call before accepting a stream; driven here from a handler.
    let s = serve(
        RpcServer::builder()
            .authenticator(tokens())
            .method_rate_limit("audio.*", RateLimit::per_minute(2))
            .protect(
                "audio.*",
                interceptor_fn(|ctx: &Context, kind: CallKind| {
                    if kind == CallKind::StreamOpen && !ctx.is_authenticated() {
                        return Err(Status::new(Code::UNAUTHENTICATED, "streams need a login"));
                    }
                    Ok(())
                }),
            )
            .handler(handler_fn("probe", |ctx: Context, name: String| async move {
                let meta = echostream::types::Metadata::new();
                Ok::<_, Error>(
                    match echostream::rpc::security::check_stream_open(ctx.peer(), &name, &meta).await {
                        Ok(stream_ctx) => Ok(stream_ctx.identity().map(|i| i.name().to_string())),
                        Err(status) => Err((status.code().0, status.message().to_string())),
                    },
                )
            })),
    );
    type Outcome = Result<Option<String>, (u32, String)>;
    let anonymous = connect(&s).await;
    let denied: Outcome = anonymous.request("probe", "audio.stream").await.unwrap();
    assert_eq!(denied, Err((10, "streams need a login".to_string())));
    let alice = client_for(&s)
        .token("alice-token")
        .connect(&s.addr)
        .await
        .unwrap();
    let ok: Outcome = alice.request("probe", "audio.stream").await.unwrap();
    assert_eq!(ok, Ok(Some("alice".to_string())));
    let ok: Outcome = alice.request("probe", "audio.stream").await.unwrap();
    assert!(ok.is_ok());
    // The third open within the minute hits the per-method rule.
    let limited: Outcome = alice.request("probe", "audio.stream").await.unwrap();
    assert!(
        matches!(&limited, Err((11, m)) if m.contains("retry after")),
        "{limited:?}"
    );
}

#[tokio::test]
async fn interceptors_decide_real_stream_opens_and_the_opener_gets_the_reason() {
    let s = serve(
        RpcServer::builder()
            .authenticator(tokens())
            .protect(
                "audio.*",
                interceptor_fn(|ctx: &Context, kind: CallKind| {
                    if kind == CallKind::StreamOpen && !ctx.is_authenticated() {
                        return Err(Status::new(Code::UNAUTHENTICATED, "streams need a login"));
                    }
                    Ok(())
                }),
            )
            .stream_handler(echostream::stream::stream_handler_fn(
                "audio.stream",
                |_ctx: Context, rx: StreamReceiver<u32>| async move { while rx.recv().await.is_some() {} },
            )),
    );
    let anonymous = connect(&s).await;
    match anonymous.open_stream("audio.stream").await {
        Err(StreamError::Rejected { stream, reason }) => {
            assert_eq!(stream, "audio.stream");
            assert!(reason.contains("streams need a login"), "{reason}");
        }
        other => panic!("expected a rejection, got {:?}", other.map(|_| ())),
    }
    let alice = client_for(&s)
        .token("alice-token")
        .connect(&s.addr)
        .await
        .unwrap();
    let tx = alice.create_stream("audio.stream").await.unwrap();
    tx.send(7u32).await.unwrap();
    tx.finish().await.unwrap();
}
