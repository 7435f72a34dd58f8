//! Typed services: an API module both sides share, a server implementing
//! it, and a client using the generated client. Runs to completion on
//! 127.0.0.1: `cargo run --example typed_service`.

use echostream::prelude::*;
use echostream::{Caller, ServerIdentity};

/// What a shared API crate would hold.
mod api {
    use echostream::prelude::*;

    /// Arithmetic.
    #[echostream::service("math")]
    pub trait Math {
        /// Adds two numbers.
        async fn add(&self, a: i64, b: i64) -> Result<i64>;
        /// Reports a value, one way.
        #[event]
        async fn report(&self, ctx: Context, value: i64);
    }
}

use api::{Math, MathClient, MathServer};

struct Calculator;

impl Math for Calculator {
    async fn add(&self, a: i64, b: i64) -> Result<i64> {
        Ok(a + b)
    }

    async fn report(&self, ctx: Context, value: i64) {
        println!("server: {} reported {value}", ctx.peer_addr());
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .service(MathServer::new(Calculator))
        .build()?;
    let addr = server.local_addr().to_string();
    let fingerprint = server.fingerprint();
    let shutdown = server.shutdown_handle();
    let running = tokio::spawn(server.run());

    let client = RpcClient::builder().pin(fingerprint).connect(&addr).await?;
    let math = MathClient::new(client.clone());
    println!("client: 2 + 3 = {}", math.add(2, 3).await?);
    math.report(5).await?;

    let description = client.describe().await?;
    for m in &description.methods {
        println!("offered: {} ({:?} -> {:?})", m.name, m.request, m.response);
    }

    client.close().await;
    shutdown.shutdown();
    running.await.map_err(|e| Error::Config(e.to_string()))??;
    Ok(())
}
