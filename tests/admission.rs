//! Connection admission by identity: the connection decision of `approve_via_event` is made
//! after the hello is validated and the client authenticated, so it sees who connects (the
//! identity a token or a client certificate established, the certificate itself and the hello
//! metadata), not only from where.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::{handler_fn, ConnectionPolicy, ConnectionRequest, PeerIdentity, StaticTokens};
use echostream::{ClientAuth, ClientCertTrust, Fingerprint, ServerIdentity};
use std::sync::{Arc, Mutex};

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

/// What the policy saw of one request: identity name, certificate fingerprint, DER length and
/// the `name` hello metadata.
type Seen = (Option<String>, Option<Fingerprint>, Option<usize>, Option<String>);

#[tokio::test]
async fn admission_admits_by_token_identity_or_certificate_fingerprint_and_rejects_others_with_a_reason() {
    init_tracing();
    let (device, device_fp) = fixed(ServerIdentity::Ephemeral);
    let (policy, mut requests) = ConnectionPolicy::approve_via_event(8);
    let s = serve(
        RpcServer::builder()
            .authenticator(
                StaticTokens::new()
                    .token("alice-token", PeerIdentity::new("alice"))
                    .token("mallory-token", PeerIdentity::new("mallory")),
            )
            .client_auth(ClientAuth::optional(ClientCertTrust::pinned([device_fp])))
            .connection_policy(policy)
            .handler(handler_fn("whoami", |ctx: Context, _: ()| async move {
                Ok::<_, Error>(ctx.peer_certificate().map(|c| c.fingerprint.to_string()))
            })),
    );
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Some(req) = requests.recv().await {
            let req: ConnectionRequest = req;
            seen2.lock().unwrap().push((
                req.identity().map(|i| i.name().to_owned()),
                req.fingerprint(),
                req.certificate().map(|c| c.der.len()),
                req.metadata().get_str("name").map(str::to_owned),
            ));
            let by_identity = req.identity().is_some_and(|i| i.name() == "alice");
            let by_certificate = req.certificate().is_some_and(|c| c.fingerprint == device_fp);
            if by_identity || by_certificate {
                req.approve();
            } else {
                let who = req
                    .identity()
                    .map_or("an anonymous client".to_owned(), |i| format!("`{}`", i.name()));
                req.reject(format!("{who} is not on the admission list"));
            }
        }
    });

    // Admitted by the identity its token maps to.
    let alice = client_for(&s)
        .token("alice-token")
        .metadata("name", "alice's laptop")
        .connect(&s.addr)
        .await
        .unwrap();
    let fp: Option<String> = alice.request("whoami", ()).await.unwrap();
    assert_eq!(fp, None);

    // Admitted by its client certificate's fingerprint, with no token.
    let sensor = client_for(&s)
        .client_identity(device)
        .connect(&s.addr)
        .await
        .unwrap();
    let fp: Option<String> = sensor.request("whoami", ()).await.unwrap();
    assert_eq!(fp, Some(device_fp.to_string()));

    // Authenticated, but not admitted: the client sees the policy's reason.
    let err = client_for(&s)
        .token("mallory-token")
        .connect(&s.addr)
        .await
        .unwrap_err();
    match &err {
        Error::Rejected { addr, reason } => {
            assert_eq!(addr, &s.addr);
            assert!(
                reason.contains("`mallory` is not on the admission list"),
                "{reason}"
            );
        }
        other => panic!("expected a rejection with the policy's reason, got {other:?}"),
    }

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[0],
        (
            Some("alice".to_owned()),
            None,
            None,
            Some("alice's laptop".to_owned())
        )
    );
    let (identity, fp, der_len, _) = &seen[1];
    assert_eq!(
        identity, &None,
        "a token-less client with an authenticator is anonymous"
    );
    assert_eq!(fp, &Some(device_fp));
    assert!(
        der_len.is_some_and(|n| n > 100),
        "the certificate's DER: {der_len:?}"
    );
    assert_eq!(seen[2].0.as_deref(), Some("mallory"));
}
