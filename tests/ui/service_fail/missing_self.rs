use echostream::prelude::*;

#[echostream::service("math")]
pub trait Math {
    async fn add(a: i64, b: i64) -> Result<i64>;
    async fn sub(&mut self, a: i64, b: i64) -> Result<i64>;
}

fn main() {}
