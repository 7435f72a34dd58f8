use echostream::prelude::*;

#[echostream::service("math")]
pub trait Math {
    async fn add<T>(&self, a: T) -> Result<i64>;
}

fn main() {}
