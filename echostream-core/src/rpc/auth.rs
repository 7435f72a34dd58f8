//! Authentication: who the peer is, decided once per connection.
//!
//! A client puts credentials in its hello ([`ClientBuilder::token`](crate::rpc::ClientBuilder::token)
//! or any metadata); the server's [`Authenticator`] reads them (and the client certificate, with
//! mutual TLS) after the hello and before the welcome, and returns a [`PeerIdentity`], admits the
//! client anonymously, or rejects it with a reason. A rejected client's `connect` fails with
//! [`Error::Rejected`](crate::Error::Rejected) carrying that reason; no handler ever runs for it.
//! The identity is then available to every handler, listener and interceptor as
//! [`Context::identity`](crate::rpc::Context::identity).
//!
//! Without an authenticator, a client that presented a verified certificate (mutual TLS) gets
//! the identity [`PeerIdentity::from_certificate`]; other clients are anonymous.

use crate::connection::client_auth::PeerCertificate;
use bytes::Bytes;
use echostream_types::Metadata;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Hello metadata key under which [`ClientBuilder::token`](crate::rpc::ClientBuilder::token)
/// sends credentials.
pub const AUTH_METADATA_KEY: &str = "authorization";

/// Who a peer is, as established when it connected. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    name: String,
    roles: BTreeSet<String>,
    attributes: BTreeMap<String, String>,
}

impl PeerIdentity {
    /// An identity with a name (user, device or service) and no roles.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Adds a role (checked by [`require_role`](crate::rpc::require_role)).
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.insert(role.into());
        self
    }

    /// Adds a free-form attribute (tenant, device class, ...).
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The identity of a client known only by its verified certificate: named after the
    /// certificate's common name (else its first alternative name, else `sha256:FINGERPRINT`),
    /// no roles, with the attribute `fingerprint`.
    pub fn from_certificate(cert: &PeerCertificate) -> Self {
        let name = cert
            .names()
            .next()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sha256:{}", cert.fingerprint));
        Self::new(name).with_attribute("fingerprint", cert.fingerprint.to_string())
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if the identity has this role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// All roles, sorted.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().map(String::as_str)
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What an [`Authenticator`] sees about a connecting client.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The client's address.
    pub remote: SocketAddr,
    /// The client's verified certificate (mutual TLS), if it presented one.
    pub certificate: Option<PeerCertificate>,
    /// The client's hello metadata.
    pub metadata: Metadata,
}

impl AuthRequest {
    /// The credentials sent with [`ClientBuilder::token`](crate::rpc::ClientBuilder::token) or
    /// [`ClientBuilder::credentials`](crate::rpc::ClientBuilder::credentials).
    pub fn credentials(&self) -> Option<&Bytes> {
        self.metadata.get(AUTH_METADATA_KEY)
    }

    /// The credentials as UTF-8 text (a token), if they are.
    pub fn token(&self) -> Option<&str> {
        self.metadata.get_str(AUTH_METADATA_KEY)
    }
}

/// The outcome of authentication: `Ok(Some(identity))` admits an authenticated client,
/// `Ok(None)` an anonymous one (method-level checks such as
/// [`require_authenticated`](crate::rpc::require_authenticated) then decide), `Err(reason)`
/// refuses the connection with close code `REJECTED` and that reason.
pub type AuthResult = Result<Option<PeerIdentity>, String>;

/// Decides who a connecting client is, from its hello credentials and certificate.
///
/// Runs once per connection, after the hello and before the welcome, within the handshake
/// timeout (a client whose authentication takes longer is closed with `HELLO_TIMEOUT`).
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one client.
    fn authenticate(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult>;
}

impl std::fmt::Debug for dyn Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

/// An [`Authenticator`] from an async closure.
///
/// ```
/// # use echostream_core::rpc::{authenticator_fn, AuthRequest, PeerIdentity};
/// let auth = authenticator_fn(|req: AuthRequest| async move {
///     match req.token() {
///         Some("s3cret") => Ok(Some(PeerIdentity::new("alice").with_role("admin"))),
///         Some(_) => Err("invalid token".to_string()),
///         None => Ok(None), // anonymous: only public methods
///     }
/// });
/// ```
pub fn authenticator_fn<F, Fut>(f: F) -> FnAuthenticator<F>
where
    F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = AuthResult> + Send + 'static,
{
    FnAuthenticator(f)
}

/// See [`authenticator_fn`].
pub struct FnAuthenticator<F>(F);

impl<F> std::fmt::Debug for FnAuthenticator<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnAuthenticator")
    }
}

impl<F, Fut> Authenticator for FnAuthenticator<F>
where
    F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = AuthResult> + Send + 'static,
{
    fn authenticate(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult> {
        Box::pin((self.0)(request))
    }
}

/// A fixed table of bearer tokens, each mapped to an identity.
///
/// Clients without a token are admitted anonymously unless [`StaticTokens::required`] is set;
/// a wrong token is always rejected ("invalid credentials"). Tokens are compared in constant
/// time per entry.
#[derive(Clone, Default)]
pub struct StaticTokens {
    tokens: Arc<HashMap<Vec<u8>, PeerIdentity>>,
    required: bool,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens.
        f.debug_struct("StaticTokens")
            .field("count", &self.tokens.len())
            .field("required", &self.required)
            .finish()
    }
}

impl StaticTokens {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token and the identity it stands for.
    pub fn token(mut self, token: impl AsRef<[u8]>, identity: PeerIdentity) -> Self {
        Arc::make_mut(&mut self.tokens).insert(token.as_ref().to_vec(), identity);
        self
    }

    /// Rejects clients that send no token ("credentials required").
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult> {
        let result = match request.credentials() {
            None if self.required => Err("credentials required: send a token in the hello".to_string()),
            None => Ok(None),
            Some(given) => {
                let mut found = None;
                for (token, identity) in self.tokens.iter() {
                    if constant_time_eq(token, given) {
                        found = Some(identity.clone());
                    }
                }
                found.map(Some).ok_or_else(|| "invalid credentials".to_string())
            }
        };
        Box::pin(std::future::ready(result))
    }
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What one connection knows about who is at the other end.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerAuth {
    pub(crate) identity: Option<Arc<PeerIdentity>>,
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
}

/// Runs the server's authentication for a client that sent `metadata` in its hello.
pub(crate) async fn authenticate(
    authenticator: Option<&Arc<dyn Authenticator>>,
    conn: &quinn::Connection,
    metadata: &Metadata,
) -> Result<PeerAuth, String> {
    let certificate = PeerCertificate::of_connection(conn);
    let identity = match authenticator {
        Some(auth) => {
            let request = AuthRequest {
                remote: conn.remote_address(),
                certificate: certificate.clone(),
                metadata: metadata.clone(),
            };
            let outcome = std::panic::AssertUnwindSafe(auth.authenticate(request));
            match futures::FutureExt::catch_unwind(outcome).await {
                Ok(result) => result.map_err(|reason| format!("authentication failed: {reason}"))?,
                Err(_) => {
                    tracing::error!(remote = %conn.remote_address(), "the authenticator panicked");
                    return Err("authentication failed: internal error in the server".to_string());
                }
            }
        }
        None => certificate.as_ref().map(PeerIdentity::from_certificate),
    };
    Ok(PeerAuth {
        identity: identity.map(Arc::new),
        certificate: certificate.map(Arc::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
