//! A service with every kind of method compiles, is served and called.
#![deny(missing_docs)]

use echostream::prelude::*;

/// Arithmetic.
#[echostream::service("math")]
pub trait Math {
    /// Adds.
    async fn add(&self, ctx: Context, a: i64, b: i64) -> Result<i64>;
    /// Reads.
    #[idempotent]
    async fn read(&self, id: u32) -> echostream::Result<f32>;
    /// Sums.
    #[method(name = "legacy.sum")]
    async fn sum(&self, xs: Vec<i64>) -> Result<i64>;
    /// An event.
    #[event]
    async fn overflow(&self, ctx: Context, n: u64);
    /// A stream.
    #[stream]
    async fn samples(&self, rx: StreamReceiver<f32>) -> Result<()>;
}

struct Impl;

impl Math for Impl {
    async fn add(&self, _ctx: Context, a: i64, b: i64) -> Result<i64> {
        Ok(a + b)
    }
    async fn read(&self, _id: u32) -> Result<f32> {
        Ok(0.0)
    }
    async fn sum(&self, xs: Vec<i64>) -> Result<i64> {
        Ok(xs.iter().sum())
    }
    async fn overflow(&self, _ctx: Context, _n: u64) {}
    async fn samples(&self, _rx: StreamReceiver<f32>) -> Result<()> {
        Ok(())
    }
}

#[allow(dead_code)]
async fn use_it(client: RpcClient, peer: Peer) -> Result<()> {
    let math = MathClient::new(client);
    let _: i64 = math.add(1, 2).await?;
    let _: f32 = math.read(1).await?;
    math.overflow(3).await?;
    let tx = math.samples().await?;
    tx.send(1.0).await?;
    let _: i64 = MathClient::new(peer).sum(vec![1]).await?;
    Ok(())
}

fn main() {
    let _ = RpcServer::builder().service(MathServer::new(Impl));
    let _ = RpcClient::builder().service(MathServer::new(Impl));
    assert_eq!(math::ADD, "math.add");
}
