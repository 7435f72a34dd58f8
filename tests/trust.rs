//! Trust modes through the public client API: a client that does not trust
//! the server fails before any request is sent.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::{ClientTrust, ServerIdentity};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn counting_server(calls: Arc<AtomicUsize>) -> echostream::rpc::ServerBuilder {
    RpcServer::builder().handler(handler_fn("hit", move |_c: Context, _: ()| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Error>("hit".to_string()) }
    }))
}

#[tokio::test]
async fn pinned_right_fingerprint_connects() {
    let s = serve(counting_server(Arc::default()));
    let c = RpcClient::builder()
        .pin(s.fingerprint)
        .connect(&s.addr)
        .await
        .unwrap();
    assert_eq!(c.server_fingerprint(), Some(s.fingerprint));
    let r: String = c.request("hit", ()).await.unwrap();
    assert_eq!(r, "hit");
}

#[tokio::test]
async fn pinned_wrong_fingerprint_is_rejected_and_no_request_is_sent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let s = serve(counting_server(calls.clone()));
    let other = serve(counting_server(Arc::default()));
    let err = RpcClient::builder()
        .pin(other.fingerprint)
        .connect(&s.addr)
        .await
        .unwrap_err();
    match &err {
        Error::IdentityRejected { addr, reason } => {
            assert_eq!(addr, &s.addr);
            assert!(
                reason.contains(&s.fingerprint.to_string()),
                "names the presented fingerprint: {reason}"
            );
            assert!(
                reason.contains(&other.fingerprint.to_string()),
                "names the pinned one: {reason}"
            );
        }
        other => panic!("expected identity rejected, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn trust_on_first_use_records_then_refuses_a_changed_identity() {
    let dir = scratch_dir("tofu");
    let file = dir.join("known_hosts");
    let s1 = serve(counting_server(Arc::default()));
    // First contact: accepted and recorded.
    let c = RpcClient::builder()
        .known_hosts(&file)
        .connect(&s1.addr)
        .await
        .unwrap();
    let _: String = c.request("hit", ()).await.unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&s1.addr) && text.contains(&s1.fingerprint.to_string()),
        "{text}"
    );
    // Second contact with the same identity: accepted.
    RpcClient::builder()
        .known_hosts(&file)
        .connect(&s1.addr)
        .await
        .unwrap();
    // A server whose identity differs from what is recorded for its address.
    let calls = Arc::new(AtomicUsize::new(0));
    let s2 = serve(counting_server(calls.clone()));
    std::fs::write(&file, format!("{text}{} sha256:{}\n", s2.addr, s1.fingerprint)).unwrap();
    let err = RpcClient::builder()
        .known_hosts(&file)
        .connect(&s2.addr)
        .await
        .unwrap_err();
    match &err {
        Error::IdentityRejected { reason, .. } => {
            assert!(reason.contains(&s2.fingerprint.to_string()), "{reason}");
            assert!(
                reason.contains(&file.display().to_string()),
                "names the file: {reason}"
            );
        }
        other => panic!("expected identity rejected, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// A CA, and a leaf for "localhost" signed by it.
fn ca_and_leaf() -> (CertificateDer<'static>, ServerIdentity) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "EchoStream test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let identity = ServerIdentity::Der {
        cert_chain: vec![leaf.der().clone(), ca_cert.der().clone()],
        private_key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            leaf_key.serialize_der(),
        ))),
    };
    (ca_cert.der().clone(), identity)
}

#[tokio::test]
async fn ca_issued_chain_is_accepted_by_its_ca_and_refused_by_another() {
    let (ca, identity) = ca_and_leaf();
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(identity)
        .handler(handler_fn("hit", |_c: Context, _: ()| async {
            Ok::<_, Error>(1u8)
        }))
        .build()
        .unwrap();
    let addr = server.local_addr().to_string();
    tokio::spawn(server.run());
    let c = RpcClient::builder()
        .trust(ClientTrust::CaRoots(vec![ca]))
        .server_name("localhost")
        .connect(&addr)
        .await
        .unwrap();
    assert_eq!(c.request::<_, u8>("hit", ()).await.unwrap(), 1);
    let (other_ca, _) = ca_and_leaf();
    let err = RpcClient::builder()
        .trust(ClientTrust::CaRoots(vec![other_ca]))
        .server_name("localhost")
        .connect(&addr)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdentityRejected { .. }), "{err:?}");
}

#[tokio::test]
async fn dangerous_accept_any_connects() {
    let s = serve(counting_server(Arc::default()));
    let c = RpcClient::builder()
        .trust(ClientTrust::dangerous_accept_any_certificate())
        .connect(&s.addr)
        .await
        .unwrap();
    let _: String = c.request("hit", ()).await.unwrap();
}

#[tokio::test]
async fn client_refuses_a_server_speaking_another_protocol_version() {
    use echostream::types::{Frame, FrameDecoder, Hello, Metadata};
    // A raw quinn server that answers every hello with a version-2 welcome.
    let (ep, addr, fp) = raw_server();
    let server = tokio::spawn(async move {
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut buf = bytes::BytesMut::new();
        while FrameDecoder::new(1 << 16).decode(&mut buf).unwrap().is_none() {
            let c = recv.read_chunk(1 << 16, true).await.unwrap().unwrap();
            buf.extend_from_slice(&c.bytes);
        }
        let mut out = bytes::BytesMut::new();
        Frame::Welcome(Hello {
            version: 2,
            max_frame_size: 1 << 20,
            metadata: Metadata::new(),
        })
        .encode(&mut out)
        .unwrap();
        send.write_all(&out).await.unwrap();
        let closed = conn.closed().await;
        (closed, ep)
    });
    let err = RpcClient::builder().pin(fp).connect(&addr).await.unwrap_err();
    match &err {
        Error::ConnectionClosed { code, reason } => {
            assert_eq!(*code, Some(echostream::types::CloseCode::VERSION_MISMATCH));
            assert!(reason.contains("version 2"), "{reason}");
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    // The server side learns the reason too.
    let (closed, _ep) = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    match closed {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(a.error_code.into_inner(), 3);
            assert!(String::from_utf8_lossy(&a.reason).contains("version 2"));
        }
        other => panic!("expected an application close, got {other:?}"),
    }
}
