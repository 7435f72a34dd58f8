//! The tonic baseline: gRPC unary echo over HTTP/2, plaintext (h2c) or TLS.
//!
//! No protoc: the prost message is written by hand and the service is
//! assembled from tonic's codegen building blocks (`tonic::server::Grpc`,
//! `UnaryService`, `NamedService`, `tonic::client::Grpc` with
//! `ProstCodec`), the same calls tonic-build would generate.

use crate::Res;
use bytes::Bytes;
use std::net::SocketAddr;
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// `message Echo { bytes data = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoMsg {
    /// The payload.
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) data: Bytes,
}

const PATH: &str = "/bench.Echo/Echo";

/// The server side of `service Echo { rpc Echo(Echo) returns (Echo); }`.
#[derive(Clone, Copy, Debug)]
struct EchoService;

struct EchoUnary;

impl tonic::server::UnaryService<EchoMsg> for EchoUnary {
    type Response = EchoMsg;
    type Future = BoxFuture<tonic::Response<EchoMsg>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<EchoMsg>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

impl<B> Service<http::Request<B>> for EchoService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic::codec::ProstCodec::default());
                Ok(grpc.unary(EchoUnary, req).await)
            })
        } else {
            Box::pin(async move { Ok(tonic::Status::unimplemented("no such method").into_http()) })
        }
    }
}

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "bench.Echo";
}

/// A running tonic server and how to reach it.
pub(crate) struct GrpcServer {
    addr: SocketAddr,
    /// The CA certificate (PEM) that signed the server's, with TLS.
    ca_pem: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where and how a client connects.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    addr: SocketAddr,
    ca_pem: Option<String>,
}

impl GrpcServer {
    /// Connection details for clients.
    pub(crate) fn target(&self) -> Target {
        Target {
            addr: self.addr,
            ca_pem: self.ca_pem.clone(),
        }
    }
}

/// A CA and a `localhost` certificate it signed (rustls's WebPKI verifier,
/// which tonic uses, does not accept a self-signed leaf as its own root).
fn tls_material() -> Res<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &ca)?;
    Ok((ca.pem(), leaf.pem(), key.serialize_pem()))
}

/// Starts a server on `127.0.0.1:0` (call inside the server runtime).
pub(crate) async fn serve(tls: bool) -> Res<GrpcServer> {
    let incoming = tonic::transport::server::TcpIncoming::bind((std::net::Ipv4Addr::LOCALHOST, 0).into())
        .map_err(|e| format!("bind: {e}"))?
        .with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let mut builder = tonic::transport::Server::builder();
    let mut ca_pem = None;
    if tls {
        let (ca, cert, key) = tls_material()?;
        builder = builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
        ca_pem = Some(ca);
    }
    let router = builder.add_service(EchoService);
    let task = tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            eprintln!("tonic server stopped: {e}");
        }
    });
    Ok(GrpcServer { addr, ca_pem, task })
}

/// A tonic client: the dispatcher generated clients wrap.
pub(crate) type GrpcClient = tonic::client::Grpc<Channel>;

/// Connects one HTTP/2 connection (call inside the client runtime).
pub(crate) async fn connect(target: Target) -> Res<GrpcClient> {
    let channel = match &target.ca_pem {
        None => {
            Endpoint::from_shared(format!("http://{}", target.addr))?
                .tcp_nodelay(true)
                .connect()
                .await?
        }
        Some(ca) => {
            Endpoint::from_shared(format!("https://{}", target.addr))?
                .tcp_nodelay(true)
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .domain_name("localhost"),
                )?
                .connect()
                .await?
        }
    };
    Ok(tonic::client::Grpc::new(channel))
}

/// One unary call, as a generated client method makes it.
pub(crate) async fn echo(client: &mut GrpcClient, payload: &Bytes) -> Res<Bytes> {
    client.ready().await?;
    let reply = client
        .unary(
            tonic::Request::new(EchoMsg {
                data: payload.clone(),
            }),
            http::uri::PathAndQuery::from_static(PATH),
            tonic::codec::ProstCodec::<EchoMsg, EchoMsg>::default(),
        )
        .await?;
    Ok(reply.into_inner().data)
}
