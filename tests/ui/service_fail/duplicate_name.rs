use echostream::prelude::*;

#[echostream::service("math")]
pub trait Math {
    async fn add(&self, a: i64, b: i64) -> Result<i64>;
    #[method(name = "math.add")]
    async fn plus(&self, a: i64, b: i64) -> Result<i64>;
}

fn main() {}
